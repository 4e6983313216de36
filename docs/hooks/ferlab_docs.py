"""MkDocs hook: the pages' generated parts, made from the code and the data when the site is built, never copied.

A page holds a marker on a line of its own; this hook replaces it:

    <!-- ferlab:commands -->        every `ferlab` command's and experiment file's options, as tables, from the parsers
    <!-- ferlab:configs -->         every config dataclass's fields: type, default and the comment written beside it
    <!-- ferlab:weights -->         the weight families of ferlab.pretrained: file, normalisation, size, skipped keys
    <!-- ferlab:recipes -->         each study's recipes per data set: every value beside the paper's sentence for it
    <!-- ferlab:benchmarks NAME --> the rows of docs/benchmarks/NAME.csv, as a table
    <!-- ferlab:real_faces -->      the real-faces benchmark: a figure of every cell's seeds and a Welch table
    <!-- ferlab:changelog -->       CHANGELOG.md
    <!-- ferlab:layout -->          every module and what its docstring says it is
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import figures  # noqa: E402  (beside this hook: the figures drawn from the benchmarks' CSV files)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MARKER = re.compile(r"^<!-- ferlab:(\w+)(?: ([\w-]+))? -->$", re.M)


def on_page_markdown(markdown, page, config, files):
    return MARKER.sub(lambda m: GENERATORS[m.group(1)](m.group(2)), markdown)


def _options(parser) -> list[tuple[str, str]]:
    """(option, its help with the default) of each option a parser has, in order (argparse's own list)."""
    import argparse

    out = []
    for a in parser._actions:
        if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = ", ".join(a.option_strings) or a.dest
        if a.option_strings and a.nargs != 0:
            name += " " + (a.metavar or ("{" + ",".join(map(str, a.choices)) + "}" if a.choices else a.dest.upper()))
        text = (a.help or "") % {"default": a.default} if a.help else ""
        if a.default not in (None, False, [], "", argparse.SUPPRESS) and "default" not in text:
            text += f" (default {a.default})"
        out.append((name, text.strip()))
    return out


def _table(rows) -> list[str]:
    cell = lambda t: t.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("[", "\\[")  # noqa: E731
    return ["| option | meaning |", "| --- | --- |"] + [f"| `{cell(o)}` | {cell(h)} |" for o, h in rows] + [""]


def commands(_=None) -> str:
    """Every command's options as tables (they wrap at the page's width); the experiment files' shared options once,
    then each file's own."""
    from ferlab import cli
    from ferlab.run.options import parser
    from ferlab.run.runner import _prog, load

    os.environ["COLUMNS"] = "100"  # the usage lines, wrapped alike on every machine
    top = cli.parser()
    sub = next(a for a in top._actions if a.__class__.__name__ == "_SubParsersAction")
    parts = ["### `ferlab`", "", "| command | what it does |", "| --- | --- |"]
    parts += [f"| `ferlab {c.dest}` | {c.help.replace('|', chr(92) + '|').replace('[', chr(92) + '[')} |"
              for c in sub._choices_actions] + [""]
    for name, p in sub.choices.items():
        if name in ("run", "sweep"):
            continue
        parts += [f"### `ferlab {name}`", "", "```text", p.format_usage().strip(), "```", ""]
        parts += _table(_options(p))
    files = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "experiments", "*.py"))):
        module = load(path)
        p = parser(module.get_config(), module.__doc__, _prog(module))
        stem = os.path.basename(path)[:-3]  # a default named after the file reads as <file> in the shared table
        files[os.path.basename(path)] = (p.description, {o: h.replace(ROOT, "<checkout>").replace(stem, "<file>")
                                                         for o, h in _options(p)})
    shared = [o for o in next(iter(files.values()))[1] if all(o in opts for _, opts in files.values())]
    first = next(iter(files.values()))[1]
    parts += ["### Experiment files", "", "`ferlab run FILE [options]` or `python experiments/FILE [options]` runs an "
              "experiment file; `ferlab sweep transfer` and `ferlab sweep mvt` are `sweep_transfer.py` and "
              "`sweep_mvt.py`. The options every file has:", ""]
    parts += _table([(o, first[o]) for o in shared])
    for name, (doc, opts) in files.items():
        own = [(o, h) for o, h in opts.items() if o not in shared]
        parts += [f"#### `experiments/{name}`", "", doc or "", "", "Its own options:", ""] + _table(own)
    return "\n".join(parts)


def _fields(cls) -> list[tuple[str, str, str, str]]:
    """(name, type, default, the comment written on the field's line) of a dataclass, in order."""
    from ferlab.config import field_comments

    comments = field_comments(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "required"
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        kind = kind.replace(" | ", " or ")  # a pipe would split the table's cell
        out.append((f.name, kind, default, comments.get(f.name, "")))
    return out


def configs(_=None) -> str:
    from ferlab.config import TrainConfig, TrialConfig
    from ferlab.models.mvt import MVTConfig
    from ferlab.models.transfer import TransFERConfig
    from ferlab.studies.mvt import MVTStudyConfig
    from ferlab.run.options import ExperimentConfig, RunOptions
    from ferlab.tune.spec import SweepSpec

    parts = []
    for cls, where in ((ExperimentConfig, "what an experiment file's get_config() returns"),
                       (RunOptions, "how and where an experiment runs, from its command line"),
                       (SweepSpec, "what the runner builds and the sweep trains: every section's fixed settings"),
                       (TrialConfig, "what one trial's training workers get, built by its driver"),
                       (TrainConfig, "section train (`--set train.FIELD=VALUE`)"),
                       (TransFERConfig, "section model of TransFER (`--set model.FIELD=VALUE`)"),
                       (MVTConfig, "section model of MVT"),
                       (MVTStudyConfig, "section study of MVT (`--set study.FIELD=VALUE`)")):
        parts += [f"### `{cls.__name__}`", "", f"{where}; `{cls.__module__}`.", "",
                  "| field | type | default | meaning |", "| --- | --- | --- | --- |"]
        for name, kind, default, comment in _fields(cls):
            cell = comment.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
            parts.append(f"| `{name}` | `{kind}` | `{default}` | {cell} |".replace("``", "` `"))
        parts.append("")
    return "\n".join(parts)


def weights(_=None) -> str:
    from ferlab.pretrained import FAMILIES

    rows = ["| key | flag | file | what it is | mean | std | trained at | keys no model takes |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for f in FAMILIES.values():
        flag = f"`--{f.key}-weights`" if f.key != "mgn" else "(the MGN stage's own)"
        rows.append(f"| `{f.key}` | {flag} | `{f.file}` | {f.about} | {f.mean} | {f.std} | "
                    f"{f'{f.input_size}x{f.input_size}' if f.input_size else 'the model'} | "
                    f"{', '.join(f'`{k}`' for k in f.skip) or '-'} |")
    return "\n".join(rows)


def recipes(_=None) -> str:
    from ferlab.studies import STUDIES

    rows = ["| study | recipe | data set | field | value | the paper, or why chosen |", "| --- | --- | --- | --- | --- | --- |"]
    for study in STUDIES.values():
        for name, per in study.recipes.items():
            for dataset, values in per.items():
                for field, value in values.items():
                    note = study.recipe_notes.get(name, {}).get(dataset, {}).get(field, "")
                    rows.append(f"| {study.name} | {name} | {dataset} | `{field}` | `{value}` | {note} |")
    return "\n".join(rows)


def benchmarks(name: str) -> str:
    """A benchmark's section body: the newest run's figure, then its rows (the machine and the command said once),
    older runs folded away. A benchmark with no row yet says which command writes the first."""
    import pandas as pd

    path = os.path.join(ROOT, "docs", "benchmarks", f"{name}.csv")
    if not os.path.exists(path):
        return f"*No rows yet: the command above writes `docs/benchmarks/{name}.csv` when it first runs.*"
    now, older = figures.current(name, pd.read_csv(path))
    parts = [figures.bench_figure(name, now)]
    for rows in figures.runs(now):  # the machine and the command once per run
        first = rows.iloc[0]
        shown = rows.drop(columns=figures.MACHINE)
        parts += [f"{first['date']}, commit {first['commit']}, {first['cores']} cores {first['cpu']}, GPU: "
                  f"{first['gpu']}: `{first['command']}`",
                  _rows_table(shown[[c for c in figures.KEY.get(name, shown.columns) if c in shown]])]
    if len(older):
        table = _rows_table(older.drop(columns=["cores", "cpu", "gpu"]))
        parts.append(f'??? note "{len(older)} older rows, superseded by the rows above"\n\n'
                     + "\n".join("    " + line for line in table.splitlines()))
    parts.append(f"[{name}.csv](benchmarks/{name}.csv)")
    return "\n\n".join(p for p in parts if p)


def _rows_table(df) -> str:
    """A Markdown table of the rows, without the columns that are empty in all of them."""
    df = df.dropna(axis=1, how="all")
    lines = ["| " + " | ".join(df.columns) + " |", "|" + " --- |" * len(df.columns)]
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append("" if v != v else f"{v:.4g}")
            else:
                cells.append(str(v).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def layout(_=None) -> str:
    """Every module of the checkout's code folders and what its docstring says it is (its first sentence), so that the
    page lists what is there now."""
    import ast

    def first_sentence(path: str) -> str:
        with open(path) as f:
            doc = ast.get_docstring(ast.parse(f.read())) or ""
        text = " ".join(doc.split("\n\n")[0].split())
        # the first sentence: up to a full stop before a capital, not one of "et al.", "Eq.", "e.g.", "i.e."
        m = re.search(r"^(.+?)(?<!\bal)(?<!\bEq)(?<!e\.g)(?<!i\.e)[.?](\s+[A-Z`(]|$)", text)
        text = m.group(1) if m else text
        return (text if len(text) <= 170 else text[:text.rfind(" ", 0, 165)] + " ...").replace("|", "\\|")

    rows = ["| file | lines | what it is |", "| --- | --- | --- |"]
    for folder in ("ferlab", "experiments", "benchmarks", "clusters"):
        for path in sorted(glob.glob(os.path.join(ROOT, folder, "**", "*.*"), recursive=True)):
            rel = os.path.relpath(path, ROOT)
            if not path.endswith((".py", ".yaml")) or "__pycache__" in rel:
                continue
            with open(path) as f:
                lines = sum(1 for _ in f)
            if path.endswith(".yaml"):
                with open(path) as f:  # its leading comment, to the first sentence's end
                    head = " ".join(ln[1:].strip() for ln in f.read().split("\n\n")[0].splitlines()
                                    if ln.startswith("#"))
                what = head.split(". ")[0].rstrip(".")
            else:
                what = first_sentence(path)
            if rel.endswith("__init__.py") and not what:
                continue
            rows.append(f"| `{rel}` | {lines} | {what} |")
    return "\n".join(rows)


def changelog(_=None) -> str:
    with open(os.path.join(ROOT, "CHANGELOG.md")) as f:
        text = f.read()
    return text.split("\n", 1)[1] if text.startswith("# ") else text  # the page has its own title


GENERATORS = {"commands": commands, "configs": configs, "weights": weights, "recipes": recipes,
              "benchmarks": benchmarks, "changelog": changelog, "real_faces": figures.real_faces, "layout": layout}
