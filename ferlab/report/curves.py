"""The sweep page's figures about the search itself (issue 17): learning curves with ASHA's stops, the optimisation
history, parallel coordinates and per-knob slices; and the ablation page's per-row curves (mean +/- std over seeds).

What optuna-dashboard and W&B sweeps show first, drawn with matplotlib from trials.csv and history.csv so the page
stays a static file set. Each function returns the paths it wrote, or [] when the results cannot draw it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ferlab.report.plots import MEASURED, plt, save
from ferlab.train import metrics as M


def trial_order(trials: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Trials in the order they started (history.csv's trial_start: when each trial's driver started), not
    trials.csv's best-first order. Tune's trial ids carry no order (8 hex digits; "1279e760" even parses as a
    number), so without start times the order is unknown and trials.csv's is kept."""
    if M.TRIAL_START not in history or "trial" not in history:
        return trials
    started = trials["trial"].map(history.groupby("trial")[M.TRIAL_START].min())
    return trials.assign(_started=started).sort_values("_started", kind="stable").drop(columns="_started")


def stopped_early(trials: pd.DataFrame, max_epochs: int) -> pd.Series:
    """Finished trials that ended before the last epoch: ASHA stopped them."""
    if "epochs" not in trials:
        return pd.Series(False, index=trials.index)
    return (trials["status"] == "ok") & (trials["epochs"] < max_epochs)


def curve_data(trials: pd.DataFrame, history: pd.DataFrame, max_epochs: int) -> list[dict]:
    """Per trial: its epochs and validation accuracies, whether ASHA stopped it, whether it is the best trial."""
    stopped = set(trials.loc[stopped_early(trials, max_epochs), "trial"])
    best = trials.sort_values(M.BEST_VAL_ACC, ascending=False)["trial"].iloc[0] if M.BEST_VAL_ACC in trials else None
    return [{"trial": trial, "epoch": h[M.EPOCH].to_numpy(), "val_acc": h[M.VAL_ACC].to_numpy(),
             "stopped": trial in stopped, "best": trial == best}
            for trial, h in ((t, h.sort_values(M.EPOCH)) for t, h in history.groupby("trial", sort=False))]


def learning_curves(trials: pd.DataFrame, history: pd.DataFrame, max_epochs: int, out_dir: str) -> list[str]:
    """Validation accuracy per epoch of every trial; an x where ASHA stopped a trial, the best trial in bold."""
    if history.empty or M.VAL_ACC not in history or "trial" not in trials:
        return []
    curves = curve_data(trials, history, max_epochs)
    stopped = [c for c in curves if c["stopped"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    for c in curves:
        bold = c["best"]
        ax.plot(c["epoch"], c["val_acc"], color=MEASURED if bold else "0.55", lw=2.2 if bold else 1,
                alpha=1 if bold else 0.8, marker="o", ms=3, label=f"best trial ({c['trial']})" if bold else None,
                zorder=3 if bold else 2)
        if c["stopped"]:
            ax.plot(c["epoch"][-1], c["val_acc"][-1], "x", color="#c62828", ms=9, mew=2, zorder=4)
    if stopped:
        ax.plot([], [], "x", color="#c62828", ms=9, mew=2, label=f"stopped by ASHA ({len(stopped)} trials)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_xlim(0.5, max(max_epochs, int(history[M.EPOCH].max())) + 0.5)
    ax.set_title(f"Learning curves of {history['trial'].nunique()} trials", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return save(fig, out_dir, "learning_curves")


def history_data(trials: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Finished trials in the order they started, with that order, the epochs spent up to each and the best
    accuracy so far: the optimisation history's data (written as report/optimisation_history.csv)."""
    t = trial_order(trials.dropna(subset=[M.BEST_VAL_ACC]), history)
    epochs = t["epochs"] if "epochs" in t else pd.Series(1, index=t.index)
    return pd.DataFrame({"trial": t["trial"].to_numpy(), "order_started": np.arange(1, len(t) + 1),
                         "epochs_spent": epochs.cumsum().to_numpy(), M.BEST_VAL_ACC: t[M.BEST_VAL_ACC].to_numpy(),
                         "best_so_far": t[M.BEST_VAL_ACC].cummax().to_numpy()})


def optimisation_history(trials: pd.DataFrame, history: pd.DataFrame, out_dir: str) -> list[str]:
    """Best validation accuracy so far against trials started and against epochs spent (trials in creation order;
    each trial's epochs counted when it ends, as a sequential search would spend them)."""
    if M.BEST_VAL_ACC not in trials or trials[M.BEST_VAL_ACC].notna().sum() < 2:
        return []
    h = history_data(trials, history)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, x, label in ((axes[0], h["order_started"], "trials, in the order started"),
                         (axes[1], h["epochs_spent"], "epochs spent")):
        ax.scatter(x, h[M.BEST_VAL_ACC], color="0.55", s=18, label="trial")
        ax.step(x, h["best_so_far"], where="post", color=MEASURED, lw=2, label="best so far")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("best validation accuracy")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Optimisation history", fontsize=10)
    return save(fig, out_dir, "optimisation_history")


def _numeric(trials: pd.DataFrame, knobs: list[str]) -> dict:
    """Each knob as numbers in [0, 1] for a shared axis, with its tick labels (choices keep their own order)."""
    out = {}
    for k in knobs:
        col = trials[k]
        if pd.api.types.is_numeric_dtype(col):
            lo, hi = float(col.min()), float(col.max())
            scaled = (col - lo) / (hi - lo) if hi > lo else col * 0 + 0.5
            ticks = [(0.0, f"{lo:.3g}"), (1.0, f"{hi:.3g}")] if hi > lo else [(0.5, f"{lo:.3g}")]
        else:
            values = sorted(col.astype(str).unique())
            pos = {v: i / max(len(values) - 1, 1) for i, v in enumerate(values)}
            scaled = col.astype(str).map(pos)
            ticks = [(p, v) for v, p in pos.items()]
        out[k] = (scaled.to_numpy(dtype=float), ticks)
    return out


def searched_knobs(trials: pd.DataFrame, knobs: list[str]) -> list[str]:
    """The knobs that took more than one value in the trials (a fixed knob is not worth an axis)."""
    return [k for k in knobs if k in trials and trials[k].nunique(dropna=True) > 1]


def parallel_coordinates(trials: pd.DataFrame, knobs: list[str], out_dir: str) -> list[str]:
    """One line per trial through every searched knob to its best validation accuracy, coloured by it."""
    t = trials.dropna(subset=[M.BEST_VAL_ACC]) if M.BEST_VAL_ACC in trials else trials.iloc[0:0]
    axes_knobs = searched_knobs(t, knobs)
    if len(t) < 2 or not axes_knobs:
        return []
    scaled = _numeric(t.fillna({k: -1 for k in axes_knobs}), axes_knobs + [M.BEST_VAL_ACC])
    acc = t[M.BEST_VAL_ACC].to_numpy(dtype=float)
    colour = plt.get_cmap("viridis")((acc - acc.min()) / (np.ptp(acc) or 1))
    fig, ax = plt.subplots(figsize=(1.6 * len(scaled) + 1.5, 4))
    names = list(scaled)
    ys = np.stack([scaled[n][0] for n in names], axis=1)
    for i in np.argsort(acc):  # the best drawn last, on top
        ax.plot(range(len(names)), ys[i], color=colour[i], lw=1.6, alpha=0.9)
    for j, n in enumerate(names):
        ax.axvline(j, color="0.3", lw=0.8)
        for pos, text in scaled[n][1]:
            ax.annotate(text, (j, pos), xytext=(4, 0), textcoords="offset points", fontsize=7, va="center")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(names) - 0.6)
    sm = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(acc.min(), acc.max()))
    fig.colorbar(sm, ax=ax, label="best validation accuracy")
    ax.set_title(f"Parallel coordinates of {len(t)} trials", fontsize=10)
    return save(fig, out_dir, "parallel_coordinates")


def knob_slices(trials: pd.DataFrame, knobs: list[str], history: pd.DataFrame, out_dir: str) -> list[str]:
    """Best validation accuracy against each searched knob, one panel per knob, shaded by when the trial started."""
    t = trial_order(trials.dropna(subset=[M.BEST_VAL_ACC]), history) if M.BEST_VAL_ACC in trials \
        else trials.iloc[0:0]
    shown = searched_knobs(t, knobs)
    if len(t) < 2 or not shown:
        return []
    fig, axes = plt.subplots(1, len(shown), figsize=(2.8 * len(shown) + 0.6, 3.2), sharey=True, squeeze=False)
    order = np.arange(1, len(t) + 1)
    for ax, k in zip(axes[0], shown):
        x = t[k] if pd.api.types.is_numeric_dtype(t[k]) else t[k].astype(str)
        sc = ax.scatter(x, t[M.BEST_VAL_ACC], c=order, cmap="viridis", vmin=1, vmax=len(t), edgecolor="0.3",
                        s=30)
        ax.set_xlabel(k)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("best validation accuracy")
    fig.colorbar(sc, ax=axes[0][-1], label="trial number (order started)")
    fig.suptitle("Slices: accuracy against each knob", fontsize=10)
    return save(fig, out_dir, "knob_slices")


def row_curve_data(row_trials: list[tuple[str, pd.DataFrame]], history: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(row label, per-epoch mean, std (0 with one run) and n of validation accuracy over the row's trials), rows
    with any history only."""
    out = []
    for label, t in row_trials:
        h = history[history["trial"].isin(t["trial"])]
        if not h.empty:
            g = h.groupby(M.EPOCH)[M.VAL_ACC]
            out.append((label, pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1).fillna(0), "n": g.count()})))
    return out


def row_curves(report_table, row_trials: list[tuple[str, pd.DataFrame]], history: pd.DataFrame,
               out_dir: str) -> list[str]:
    """An ablation table's rows as validation curves, mean +/- std over each row's seeds (and folds) per epoch: do
    rows differ during training or only at the end?"""
    if history.empty or M.VAL_ACC not in history:
        return []
    rows = row_curve_data(row_trials, history)
    if len(rows) < 2:
        return []
    fig, ax = plt.subplots(figsize=(7, 4))
    colours = plt.get_cmap("tab10")
    for i, (label, d) in enumerate(rows):
        c = colours(i % 10)
        ax.plot(d.index, d["mean"], color=c, marker="o", ms=3, label=f"{label} (n = {int(d['n'].max())})")
        ax.fill_between(d.index, d["mean"] - d["std"], d["mean"] + d["std"], color=c, alpha=0.15)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (mean +/- std)")
    ax.set_title(f"{report_table.title}: per-epoch curves", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return save(fig, out_dir, f"{report_table.key}_curves")
