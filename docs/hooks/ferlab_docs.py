"""MkDocs hook: the pages' generated parts, made from the code and the data when the site is built, never copied.

A page holds a marker on a line of its own; this hook replaces it:

    <!-- ferlab:commands -->        every `ferlab` command's and every experiment file's --help, from their parsers
    <!-- ferlab:configs -->         every config dataclass's fields: type, default and the comment written beside it
    <!-- ferlab:weights -->         the weight families of ferlab.pretrained: file, normalisation, size, skipped keys
    <!-- ferlab:recipes -->         each study's recipes per data set: every value beside the paper's sentence for it
    <!-- ferlab:benchmarks NAME --> the rows of docs/benchmarks/NAME.csv, as a table
    <!-- ferlab:real_faces -->      the real-faces benchmark: a figure of every cell's seeds and a Welch table
    <!-- ferlab:changelog -->       CHANGELOG.md
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import inspect
import io
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import figures  # noqa: E402  (beside this hook: the figures drawn from the benchmarks' CSV files)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MARKER = re.compile(r"^<!-- ferlab:(\w+)(?: ([\w-]+))? -->$", re.M)


def on_page_markdown(markdown, page, config, files):
    return MARKER.sub(lambda m: GENERATORS[m.group(1)](m.group(2)), markdown)


def _help(argv=None, parser=None) -> str:
    """A parser's --help at a fixed width (the same text on every machine)."""
    os.environ["COLUMNS"] = "110"
    if parser is not None:
        return parser.format_help()
    from ferlab import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        cli.main(argv)
    return out.getvalue()


def commands(_=None) -> str:
    from ferlab.tune.runner import _prog, load, parser

    parts = ["### `ferlab`", "", "```text", _help(["--help"]).rstrip(), "```", ""]
    for cmd in ("synth", "prepare", "report", "models"):
        parts += [f"### `ferlab {cmd}`", "", "```text", _help([cmd, "--help"]).rstrip(), "```", ""]
    parts += ["`ferlab run FILE [options]` runs an experiment file with the options below; `ferlab sweep transfer` and "
              "`ferlab sweep mvt` are `ferlab run experiments/sweep_transfer.py` and `sweep_mvt.py`.", ""]
    for path in sorted(glob.glob(os.path.join(ROOT, "experiments", "*.py"))):
        module = load(path)
        text = parser(module.get_config(), module.__doc__, _prog(module)).format_help()
        parts += [f"### `experiments/{os.path.basename(path)}`", "", "```text", text.rstrip(), "```", ""]
    return "\n".join(parts)


def _fields(cls) -> list[tuple[str, str, str, str]]:
    """(name, type, default, the comment written on the field's line) of a dataclass, in order."""
    source = inspect.getsource(cls)
    comments, above = {}, []
    for line in source.splitlines():
        if re.match(r"\s+#", line):  # a comment on lines of its own describes the field below it
            above.append(line.strip()[1:].strip())
            continue
        m = re.match(r"\s+(\w+)\s*:\s*[^=#]+(?:=[^#]*)?(?:#\s*(.*))?$", line)
        if m:
            comments[m.group(1)] = " ".join(above + [m.group(2) or ""]).strip()
        above = []
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
    from ferlab.config import TrainConfig
    from ferlab.models.mvt import MVTConfig
    from ferlab.models.transfer import TransFERConfig
    from ferlab.studies.mvt import MVTStudyConfig
    from ferlab.tune.runner import ExperimentConfig, RunOptions
    from ferlab.tune.spec import SweepSpec

    parts = []
    for cls, where in ((ExperimentConfig, "what an experiment file's get_config() returns"),
                       (RunOptions, "how and where an experiment runs, from its command line"),
                       (SweepSpec, "what the runner builds and the sweep trains: every section's fixed settings"),
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
    import pandas as pd

    path = os.path.join(ROOT, "docs", "benchmarks", f"{name}.csv")
    if not os.path.exists(path):
        return f"*No rows yet: `docs/benchmarks/{name}.csv` is written by the benchmark when it runs.*"
    df = pd.read_csv(path)
    machine = ["date", "commit", "cores", "cpu", "gpu"]
    if set(machine) <= set(df):  # one column for when and where, so that the figures fit the page
        where = (df["date"].astype(str) + " " + df["commit"].astype(str) + ", " + df["cores"].astype(str) + " cores "
                 + df["cpu"].astype(str) + ", GPU: " + df["gpu"].astype(str))
        df = pd.concat([where.rename("measured"), df.drop(columns=machine)], axis=1)
    lines = ["| " + " | ".join(df.columns) + " |", "|" + " --- |" * len(df.columns)]
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append("" if v != v else f"{v:.4g}")
            else:
                cells.append(str(v).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\n[{name}.csv](benchmarks/{name}.csv)"


def changelog(_=None) -> str:
    with open(os.path.join(ROOT, "CHANGELOG.md")) as f:
        text = f.read()
    return text.split("\n", 1)[1] if text.startswith("# ") else text  # the page has its own title


GENERATORS = {"commands": commands, "configs": configs, "weights": weights, "recipes": recipes,
              "benchmarks": benchmarks, "changelog": changelog, "real_faces": figures.real_faces}
