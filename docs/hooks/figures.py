"""Figures the Benchmarks page draws from its CSV files when the site is built (matplotlib, inlined as SVG so that the
page needs no generated file beside it). Imported by ferlab_docs.py."""

from __future__ import annotations

import io
import os

import numpy as np
import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def svg(fig) -> str:
    """A matplotlib figure as an inline <svg> element (its XML prologue dropped), in a centred block."""
    import matplotlib.pyplot as plt

    out = io.StringIO()
    fig.savefig(out, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = out.getvalue()
    return '<div class="ferlab-figure" markdown="0">' + text[text.index("<svg"):].replace("\n", " ") + "</div>"


def newest_run(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of each study's newest command (its latest date and commit): earlier runs stay in the CSV."""
    keep = []
    for _, rows in df.groupby("study", sort=False):
        last = rows.iloc[-1]
        keep.append(rows[(rows["date"] == last["date"]) & (rows["commit"] == last["commit"])
                         & (rows["command"] == last["command"])])
    return pd.concat(keep)


def _published(study_name: str, table_key: str, cell: str) -> tuple[str, float | None]:
    """(data set, value) the paper publishes for a table's row: FERPlus when it does, else RAF-DB's."""
    from ferlab.studies import get_study
    from ferlab.studies.base import published_for

    row = next(r for r in get_study(study_name).table(table_key).rows if r.label == cell)
    return published_for("ferplus", row)


def real_faces_figure(df: pd.DataFrame) -> str:
    """Per study, each cell's seeds as points and their mean +/- std (test accuracy at the epoch chosen on
    validation); beside it, on an axis of its own, the paper's published value for that row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    studies = list(dict.fromkeys(df["study"]))
    cells = {s: list(dict.fromkeys(zip(df[df["study"] == s]["table"], df[df["study"] == s]["cell"])))
             for s in studies}
    fig, axes = plt.subplots(len(studies), 2, figsize=(11, 0.42 * sum(map(len, cells.values())) + 1.4 * len(studies)),
                             gridspec_kw={"width_ratios": (3, 1), "height_ratios": [len(cells[s]) for s in studies]},
                             squeeze=False)
    for (ax, pub), study in zip(axes, studies):
        labels = []
        for y, (table, cell) in enumerate(cells[study]):
            acc = 100 * df[(df["study"] == study) & (df["table"] == table) & (df["cell"] == cell)]["test_acc"]
            ax.scatter(acc, np.full(len(acc), y) + np.linspace(-0.12, 0.12, len(acc)), s=14, color="0.55", zorder=2)
            ax.errorbar(acc.mean(), y, xerr=acc.std(ddof=1) if len(acc) > 1 else None, fmt="o", color="C0",
                        capsize=3, zorder=3)
            source, value = _published(study, table, cell)
            if value is not None:
                pub.plot(value, y, "D", color="C3" if source == "ferplus" else "C1")
            labels.append(f"{table}: {cell}")
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(f"{study}: test accuracy % (laptop, epoch chosen on validation)", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        pub.set_ylim(ax.get_ylim())
        pub.set_yticks([])
        pub.set_xlabel("published % (red: FERPlus, orange: RAF-DB)", fontsize=8)
        pub.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return svg(fig)


def real_faces_table(df: pd.DataFrame) -> str:
    """Each cell's mean +/- std, and Welch's test against its table's baseline row."""
    from ferlab.report.tables import welch
    from ferlab.studies import get_study

    lines = ["| study | table | cell | seeds | test acc % | val acc % | mean class acc % | vs baseline (Welch) | "
             "published % |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (study, table), rows in df.groupby(["study", "table"], sort=False):
        t = get_study(study).table(table)
        base = rows[rows["cell"] == t.rows[t.baseline].label]["test_acc"].to_numpy(float)
        for cell, c in rows.groupby("cell", sort=False):
            acc = c["test_acc"].to_numpy(float)
            p = welch(acc, base) if cell != t.rows[t.baseline].label else None
            mark = "baseline" if cell == t.rows[t.baseline].label else (
                "-" if p is None else f"{100 * (acc.mean() - base.mean()):+.2f} pt, p = {p:.2f}")
            source, value = _published(study, table, cell)
            pub = "-" if value is None else f"{value:.2f} ({'FERPlus' if source == 'ferplus' else 'RAF-DB'})"
            lines.append(f"| {study} | {table} | {cell} | {len(acc)} | {_ms(acc)} | {_ms(c['val_acc'])} | "
                         f"{_ms(c['test_mca'])} | {mark} | {pub} |")
    return "\n".join(lines)


def _trainings(df: pd.DataFrame) -> pd.DataFrame:
    """One row per training: a trial that fills a cell of two tables appears in the CSV once per table."""
    return df.drop_duplicates(["study", "seed", "val_acc", "test_acc", "test_mca", "seconds"])


def _ms(values) -> str:
    v = 100 * np.asarray(values, float)
    return f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1 else f"{v.mean():.2f}"


def real_faces(_=None) -> str:
    path = os.path.join(ROOT, "docs", "benchmarks", "real_faces.csv")
    if not os.path.exists(path):
        return "*`python benchmarks/real_faces.py` writes this section's first rows.*"
    df = newest_run(pd.read_csv(path))
    first = df.iloc[0]
    where = (f"Measured {first['date']} at {first['commit']} on {first['cores']} cores ({first['cpu']}), "
             f"{first['epochs']} epochs, `--limit {first['limit']}`, with `{first['command']}`; "
             f"{_trainings(df)['seconds'].sum() / 60:.0f} minutes from the trials' starts to their last epochs "
             f"(a cell shared by two tables counted once).")
    return "\n\n".join([where, real_faces_figure(df), real_faces_table(df),
                        "[real_faces.csv](benchmarks/real_faces.csv): one row per cell and seed."])


# Per benchmark CSV: what its figure plots from the newest run's rows: (label columns, value columns, axis title).
# A bar per row and value; the newest rows only, so that the figure says what the newest code measured.
BARS = {
    "commands": (("run",), ("wall_s",), "seconds, end to end"),
    "chaos": (("kill",), ("undisturbed_s", "chaos_s"), "seconds: undisturbed against with the faults"),
    "gpu_hours": (("preset",), ("gpu_hours_estimate",), "GPU-hours, estimated"),
    "mechanisms_mgn_classifier": (("mgn", "m"), ("val_acc",), "validation accuracy"),
    "model_table": (("preset",), ("train_img_s",), "training images/s"),
    "paper_path": (("experiment",), ("wall_s",), "seconds"),
    "parquet_listing": (("files",), ("ray_default_wall_s", "ferlab_wall_s"), "seconds per read"),
    "pipeline_overhead": (("augment",), ("plain_images_s", "ray_images_s"), "training images/s"),
    "search_efficiency": (("method",), ("epochs_to_target_median",), "share of the grid's epochs to the target"),
}
# Lines: (x column, y column, series columns, reference column drawn dashed, axis title)
LINES = {"mechanisms_mgn": ("epoch", "top_m_share", ("start", "m"), "chance",
                            "share of the top-m patches on background or occluder (dashed: chance)")}
MACHINE = ["date", "commit", "cores", "cpu", "gpu", "command"]


def identity(name: str, df: pd.DataFrame) -> list[str]:
    """The columns that say what a row measured (a run, a preset, an m and epoch): a newer row with the same values
    supersedes an older one."""
    if name in BARS:
        return list(BARS[name][0])
    if name in LINES:
        return [LINES[name][0], *LINES[name][2]]
    return [c for c in df.columns if c not in MACHINE and df[c].dtype == object][:2]


def current(name: str, df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the newest row of each identity, the rows they superseded)."""
    key = df[identity(name, df)].astype(str).agg(" ".join, axis=1) if identity(name, df) else df.index.astype(str)
    newest = ~key.duplicated(keep="last")
    return df[newest], df[~newest]


def runs(df: pd.DataFrame) -> list[pd.DataFrame]:
    """Rows of one run (one date, commit, machine and command), newest run first."""
    key = df[MACHINE].astype(str).agg(" ".join, axis=1)
    return [df[key == k] for k in reversed(list(dict.fromkeys(key)))]


def bench_figure(name: str, rows: pd.DataFrame) -> str:
    """The newest run's figure, or "" for a benchmark without one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if name in BARS:
        labels, values, title = BARS[name]
        names = rows[list(labels)].astype(str).agg(", ".join, axis=1).tolist()
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) * len(values) + 1.2))
        height = 0.8 / len(values)
        for i, v in enumerate(values):
            ax.barh(np.arange(len(rows)) + i * height, pd.to_numeric(rows[v], errors="coerce"), height, label=v)
        ax.set_yticks(np.arange(len(rows)) + height * (len(values) - 1) / 2, names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(title, fontsize=9)
        if len(values) > 1:
            ax.legend(fontsize=8)
    elif name in LINES:
        x, y, series, ref, title = LINES[name]
        fig, ax = plt.subplots(figsize=(8, 3.2))
        for i, (key, s) in enumerate(rows.groupby(list(series), sort=False)):
            label = ", ".join(f"{c} {k}" for c, k in zip(series, key if isinstance(key, tuple) else (key,)))
            ax.plot(s[x], s[y], "o-", color=f"C{i}", label=label)
            ax.plot(s[x], s[ref], "--", color=f"C{i}", alpha=0.6)
        ax.set_xlabel(x)
        ax.set_ylabel(title, fontsize=8)
        ax.legend(fontsize=7, ncol=2)
    else:
        return ""
    ax.grid(axis="x" if name in BARS else "both", alpha=0.3)
    fig.tight_layout()
    return svg(fig)

# The columns a reader wants first, where a CSV has more than fit the page (the CSV keeps them all)
KEY = {
    "commands": ("run", "wall_s", "trials", "trials_all_epochs", "best_val_acc", "best_setting"),
    "gpu_hours": ("preset", "trainings", "epochs", "gpu_model", "utilisation_assumed", "gpu_hours_estimate",
                  "usd_estimate"),
    "mechanisms_mgn": ("start", "m", "epoch", "top_m_share", "chance", "d_acc"),
    "paper_path": ("experiment", "data", "epochs", "workers", "global_batch", "balance", "class_min_over_max",
                   "as_planned", "wall_s"),
    "pipeline_overhead": ("data", "train_images", "epochs", "augment", "plain_images_s", "ray_images_s",
                          "ray_over_plain", "ray_over_plain_min", "ray_over_plain_max"),
    "search_efficiency": ("method", "reached", "epochs_to_target_median", "q25", "q75", "final_ok", "confirmed_ok",
                          "repeats"),
}
