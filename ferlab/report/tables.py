"""The papers' ablation tables, filled from a results folder (trials.csv + run.json), measured next to published.

Which numbers, and why all three: papers in this field often report the best epoch on the test set; a reader who
wants to compare must see that number, but also the honest one (test accuracy at the epoch chosen on validation)
and the last epoch's. Where a data set has no validation split (RAF-DB, AffectNet), "validation" is the test split
and the three columns say so.

Seed noise: a row is marked against the table's baseline row with Welch's two-sided t-test on the per-seed
accuracies at the epoch chosen on validation (p < 0.05); with fewer than two seeds on either side no test is made and
the mark says so.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ferlab.report.markdown import to_markdown
from ferlab.report.power import ALPHA as POWER_ALPHA, POWER, gpu_hours_per_training, power_table
from ferlab.studies import get_study
from ferlab.train import metrics as M
from ferlab.studies.base import Row, Study, Table, published_for

ALPHA = 0.05
TEST_NAME = "Welch's t-test, two-sided, p < 0.05"
# Data sets whose tables show mean class accuracy beside accuracy: AffectNet's test set is balanced, and its
# published numbers are read as either.
MEAN_CLASS_ACC = {"affectnet7", "affectnet8"}
DATASET_NAMES = {"rafdb": "RAF-DB", "ferplus": "FERPlus", "affectnet7": "AffectNet-7", "affectnet8": "AffectNet-8",
                 "synthfer": "SynthFER",
                 "folder": "image folder"}


@dataclass
class ReportTable:
    key: str  # "transfer_table1", ...
    title: str
    df: pd.DataFrame  # what is printed: one row per paper row
    notes: list[str] = field(default_factory=list)
    values: pd.DataFrame | None = None  # numbers behind the cells (mean, std, n, p) for plots and CSV
    table: Table | None = None  # the paper table it fills (None: a sweep's trial table)
    row_trials: list = field(default_factory=list)  # (row label, its trials) per paper row, for per-row curves
    more: pd.DataFrame | None = None  # every column, behind the page's toggle (a sweep's 19-column trial table)
    power: pd.DataFrame | None = None  # rows of 2+ seeds against the baseline: what resolves (ferlab.report.power)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", to_markdown(self.df)] + [f"\n{n}" for n in self.notes]
        if self.power is not None:
            lines += ["", f"Seeds a paper-scale run needs (two-sided Welch, alpha {POWER_ALPHA}, power {POWER}; the "
                          f"measured spread stands in until a paper-scale run measures its own; differences in "
                          f"points):", "", to_markdown(self.power)]
        return "\n".join(lines)

    def latex(self) -> str:
        cols = list(self.df.columns)
        lines = [f"% {self.title}", r"\begin{tabular}{l" + "r" * (len(cols) - 1) + "}", r"\hline",
                 " & ".join(_tex(c) for c in cols) + r" \\", r"\hline"]
        lines += [" & ".join(_tex(v) for v in row) + r" \\" for row in self.df.itertuples(index=False)]
        lines += [r"\hline", r"\end{tabular}"] + [f"% {_tex(n)}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _tex(value) -> str:
    # Why by hand: pandas' to_latex needs jinja2 and a Styler for a dozen lines of escaping.
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("↑", r"$\uparrow$"), ("↓", r"$\downarrow$"), ("≥", r"$\geq$"), (">", r"$>$")):
        text = text.replace(a, b)
    return text


def load_results(results_dir: str) -> tuple[pd.DataFrame, dict]:
    """trials.csv and run.json of a results folder, with errors that name the file."""
    trials_path, run_path = os.path.join(results_dir, "trials.csv"), os.path.join(results_dir, "run.json")
    for path in (trials_path, run_path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: not found; RESULTS_DIR is the folder an experiment wrote "
                                    f"(it prints 'results in ...' at the end)")
    try:
        with open(run_path) as f:
            run = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{run_path}: line {e.lineno}: not valid JSON ({e.msg})") from e
    try:
        trials = pd.read_csv(trials_path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise ValueError(f"{trials_path}: {e}") from e
    return trials, run


def matching_trials(trials: pd.DataFrame, setting: dict, knobs: tuple) -> pd.DataFrame:
    """The trials whose `knobs` equal the setting's (numbers compared with a tolerance: trials.csv round-trips)."""
    mask = pd.Series(True, index=trials.index)
    for k in knobs:
        if k not in trials:
            return trials.iloc[0:0]
        v = setting[k]
        col = trials[k]
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            mask &= np.isclose(pd.to_numeric(col, errors="coerce"), float(v))
        else:
            mask &= col.astype(str) == str(v)
    return trials[mask]


def metric_columns(trials: pd.DataFrame, eval_split: str, split: str | None = None) -> dict:
    """Which trials.csv columns hold test accuracy at the validation-chosen, last and test-best epoch."""
    name = split or "test"
    if f"{name}_acc_at_best" in trials:
        return {"chosen": f"{name}_acc_at_best", "last": f"{name}_acc_last", "best": f"{name}_acc_max",
                "mca": f"{name}_mean_class_acc_at_best"}
    if split is None and eval_split == "test":  # no validation split: "val" is the test split
        return {"chosen": M.BEST_VAL_ACC, "last": "last_val_acc", "best": M.BEST_VAL_ACC,
                "mca": "best_val_mean_class_acc"}
    return {}


def welch(a: np.ndarray, b: np.ndarray) -> float | None:
    """Two-sided p-value of Welch's t-test, or None when either side has fewer than two values."""
    if len(a) < 2 or len(b) < 2:
        return None
    if np.std(a) == 0 and np.std(b) == 0:
        return 1.0 if np.mean(a) == np.mean(b) else 0.0
    from scipy.stats import ttest_ind

    return float(ttest_ind(a, b, equal_var=False).pvalue)


def _fmt(values: np.ndarray) -> str:
    if len(values) == 0:
        return "-"
    pct = 100 * values
    if len(values) == 1:
        return f"{pct[0]:.2f} (1)"
    return f"{pct.mean():.2f} ± {pct.std(ddof=1):.2f} ({len(values)})"


def _row_trials(study: Study, row: Row, trials: pd.DataFrame, dataset: str | None) -> tuple[pd.DataFrame, dict, str]:
    """The trials of a row, its full setting, and how a grid choice reads; a row with a grid takes its best value
    on validation."""
    settings = study.row_settings(row, dataset)
    found = [(s, matching_trials(trials, s, study.knob_names)) for s in settings]
    if not row.grid:
        return found[0][1], settings[0], ""
    found = [(s, t) for s, t in found if len(t)]
    if not found:
        return trials.iloc[0:0], settings[0], ""
    s, t = max(found, key=lambda st: st[1][M.BEST_VAL_ACC].mean())
    return t, s, ", ".join(f"{k} {s[k]:g}" for k in row.grid) + " (best on val)"


def build_table(study: Study, table: Table, trials: pd.DataFrame, run: dict) -> ReportTable | None:
    """One paper table from the trials, or None when the results do not hold any of its rows."""
    dataset = run.get("dataset") or "synthfer"
    eval_split = run.get("eval_split") or "val"
    ok = trials[trials["status"] == "ok"] if "status" in trials else trials
    if table.needs and not any(c.startswith(table.needs) for c in ok.columns):
        return None
    per_row, row_trials = [], []
    for row in table.rows:
        t, knobs, setting = _row_trials(study, row, ok, dataset)
        cols = metric_columns(ok, eval_split, row.split)
        get = (lambda key, t=t, cols=cols: t[cols[key]].dropna().to_numpy(float) if key in cols and cols[key] in t
               else np.array([]))
        per_row.append((row, knobs, setting, {k: get(k) for k in ("chosen", "last", "best", "mca")}))
        row_trials.append((row.label, t))
    if not any(len(v["chosen"]) for *_, v in per_row):
        return None
    base = per_row[table.baseline][-1]["chosen"]
    show_mca = dataset in MEAN_CLASS_ACC
    pub_sets = {published_for(dataset, row)[0] for row in table.rows if row.published}
    pub_name = DATASET_NAMES.get(next(iter(pub_sets)), "") if len(pub_sets) == 1 else ""
    chosen_name = "test acc % (epoch chosen on val)" if eval_split != "test" else "test acc % (best epoch = on test)"
    records, values = [], []
    for i, (row, knobs, setting, v) in enumerate(per_row):
        p = welch(v["chosen"], base) if i != table.baseline else None
        if i == table.baseline:
            mark = "baseline"
        elif p is None:
            mark = "n < 2: no test" if len(v["chosen"]) else ""
        elif p < ALPHA:
            mark = f"{'↑' if v['chosen'].mean() > base.mean() else '↓'} p={p:.3f}"
        else:
            mark = f"~ p={p:.2f}"
        src, pub = published_for(dataset, row)
        if not study.at_paper_setting(row, dataset):  # a paper number only beside a row at the paper's setting
            pub = None
        rec = {"row": row.label + (f" [{setting}]" if setting else ""), chosen_name: _fmt(v["chosen"])}
        if eval_split != "test":
            rec["test acc % (last epoch)"] = _fmt(v["last"])
            rec["test acc % (best epoch on test)"] = _fmt(v["best"])
        if show_mca:
            rec["mean class acc %"] = _fmt(v["mca"])
        rec[f"paper ({pub_name or DATASET_NAMES.get(src, src)})" if pub_name else "paper"] = \
            ("-" if pub is None else f"{pub:.2f}" + ("" if pub_name else f" ({DATASET_NAMES.get(src, src)})"))
        rec["vs baseline"] = mark
        records.append(rec)
        values.append({"row": row.label, "setting": setting, "n": len(v["chosen"]),
                       "mean": v["chosen"].mean() if len(v["chosen"]) else np.nan,
                       "std": v["chosen"].std(ddof=1) if len(v["chosen"]) > 1 else np.nan,
                       "last_mean": v["last"].mean() if len(v["last"]) else np.nan,
                       "best_mean": v["best"].mean() if len(v["best"]) else np.nan,
                       "paper": pub, "p_value": p} | knobs)
    notes = []
    if table.note:
        notes.append(table.note)
    over = f"the {run['folds']} held-out folds (and seeds)" if run.get("folds") else "seeds"
    notes.append(f"Measured on {DATASET_NAMES.get(dataset, dataset)}: mean ± std over {over} (n), in %. "
                 f"'vs baseline': {TEST_NAME} against the row marked baseline, on the first accuracy column.")
    if eval_split == "test":
        notes.append("This data set has no validation split: epochs are chosen on the test split, as the papers do.")
    if dataset not in {d for row in table.rows for d in row.published}:
        notes.append("The paper column is the paper's number on its data set, for orientation; it is not the same "
                     "benchmark as the measured one.")
    values = pd.DataFrame(values)
    power = power_table(values, table.baseline, gpu_hours_per_training(study.presets[-1]))
    return ReportTable(key=f"{study.name}_{table.key}", title=f"{study.title}, {table.title}",
                       df=pd.DataFrame(records), notes=notes, values=values, table=table,
                       row_trials=row_trials, power=power)


def build_tables(results_dir: str) -> list[ReportTable]:
    """Every paper table the results allow (an ablation folder), else the sweep's own trial table."""
    trials, run = load_results(results_dir)
    ablation = run.get("ablation") or {}
    paper, chosen = ablation.get("paper"), ablation.get("tables")
    extra = [cross_table(trials, run)] if run.get("cross_data") else []
    if paper:  # the tables the ablation was run for (a shared row alone does not make another table)
        study = get_study(paper)
        wanted = [t for t in study.tables if not isinstance(chosen, list) or t.key in chosen]
        return [t for t in (build_table(study, table, trials, run) for table in wanted) if t is not None] + extra
    return [sweep_table(trials, run)] + extra


def cross_table(trials: pd.DataFrame, run: dict) -> ReportTable:
    """Every trial on each other data set it was tested on, at the epoch chosen on its own validation split, next to
    its own test accuracy: how far a setting carries across data sets."""
    cross = run["cross_data"]
    knobs = [k for k in (run.get("knobs") or []) + ["seed", "fold"] if k in trials]
    own = metric_columns(trials, run.get("eval_split") or "val")
    cols = {"trial": "trial"} | {k: k for k in knobs}
    if own:
        cols[own["chosen"]] = f"{DATASET_NAMES.get(run.get('dataset'), run.get('dataset'))} test acc %"
    for name in cross:
        cols[f"x_{name}_acc_at_best"] = f"{DATASET_NAMES.get(name, name)} acc %"
    df = trials[[c for c in cols if c in trials]].rename(columns=cols)
    for c in df.columns:
        if c.endswith("acc %"):
            df[c] = (100 * df[c]).round(2)
    notes = [f"{DATASET_NAMES.get(n, n)}: {c['faces']} faces of its {c['split']} split, classes mapped by name"
             + (f"; excluded (the training set has no such class): {c['excluded']}"
                if any(c["excluded"].values()) else "")
             + (f"; training classes it lacks: {', '.join(c['unmatched_training_classes'])}"
                if c["unmatched_training_classes"] else "") for n, c in cross.items()]
    return ReportTable(key="cross_data", title="Cross-data-set evaluation", df=df, notes=notes)


def sweep_table(trials: pd.DataFrame, run: dict) -> ReportTable:
    """A search's trials, best first (what `ferlab report` shows for a sweep folder): the columns a reader needs
    first in `df`; every column in `more` (the page's toggle) and in the CSV."""
    keep = [c for c in trials.columns if c not in (M.CHECKPOINT, "train_images_per_s", "node_id")]
    full = trials[keep].copy()
    first = ["trial", *[k for k in run.get("knobs") or [] if k in full and full[k].nunique(dropna=True) > 1],
             M.BEST_VAL_ACC, M.BEST_EPOCH, "epochs", "status"]
    spec = run.get("spec", {})
    return ReportTable(key="trials", title=f"Sweep {spec.get('name', '')}: {spec.get('preset', '')} on "
                                           f"{DATASET_NAMES.get(run.get('dataset'), run.get('dataset'))}",
                       df=full[[c for c in first if c in full]], values=full, more=full,
                       notes=["Trials sorted by best validation accuracy; ASHA stops weak trials early, so "
                              "their epochs differ. Knobs that every trial shared are in the full table."])
