"""Two views of a sweep that optuna-dashboard does not draw: where its wall-clock time went (a timeline of every
trial's start-up, epochs and end) and the empirical distribution of its trials' results."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ferlab.report.curves import stopped_early
from ferlab.report.plots import MEASURED, plt, save
from ferlab.train import metrics as M


def timeline_data(trials: pd.DataFrame, history: pd.DataFrame, max_epochs: int) -> list[dict]:
    """Per trial, on seconds since the sweep's first trial started: `start` (its driver started, before the study's
    hook, e.g. MVT's MGN stage), `epochs` as (begin, end) of each epoch's training and evaluation, whether ASHA
    `stopped` it, and its `best` accuracy. Trials in order of their start."""
    if history.empty or not {M.TRIAL_START, M.EPOCH_END, M.EPOCH_TIME} <= set(history):
        return []
    h = history.dropna(subset=[M.TRIAL_START, M.EPOCH_END]).sort_values(["trial", M.EPOCH])
    t0 = h[M.TRIAL_START].min()
    stopped = dict(zip(trials["trial"], stopped_early(trials, max_epochs))) if "trial" in trials else {}
    best = dict(zip(trials["trial"], trials[M.BEST_VAL_ACC])) if M.BEST_VAL_ACC in trials else {}
    out = []
    for trial, g in h.groupby("trial", sort=False):
        ends = g[M.EPOCH_END].to_numpy() - t0
        out.append({"trial": trial, "start": g[M.TRIAL_START].iloc[0] - t0,
                    "epochs": list(zip(ends - g[M.EPOCH_TIME].to_numpy(), ends)),
                    "stopped": bool(stopped.get(trial, False)), "best": best.get(trial)})
    return sorted(out, key=lambda r: r["start"])


def timeline(trials: pd.DataFrame, history: pd.DataFrame, max_epochs: int, out_dir: str) -> list[str]:
    """A bar per trial on the wall clock: start-up (grey: from its driver's start to its first epoch, the MGN stage
    included), each epoch (blue), an x where ASHA stopped it. Gaps between epochs are reporting and checkpointing."""
    rows = timeline_data(trials, history, max_epochs)
    if not rows:
        return []
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.32 * len(rows)))
    for i, r in enumerate(rows):
        first = r["epochs"][0][0]
        ax.broken_barh([(r["start"], max(first - r["start"], 0))], (i - 0.35, 0.7), color="0.75")
        ax.broken_barh([(b, e - b) for b, e in r["epochs"]], (i - 0.35, 0.7), color=MEASURED, edgecolor="white",
                       linewidth=0.5)
        if r["stopped"]:
            ax.plot(r["epochs"][-1][1], i, "x", color="#c62828", ms=8, mew=2)
    ax.set_yticks(range(len(rows)), [r["trial"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the first trial started")
    ax.broken_barh([], (0, 0), color="0.75", label="start-up (driver, hook, workers)")
    ax.broken_barh([], (0, 0), color=MEASURED, label="epochs")
    ax.legend(fontsize=7, loc="upper right")  # trials start left to right, top to bottom: that corner is free
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Where the sweep's time went", fontsize=10)
    return save(fig, out_dir, "timeline")


def result_distribution(trials: pd.DataFrame, out_dir: str) -> list[str]:
    """The empirical distribution (ECDF) of the trials' best validation accuracy: how many settings reach a value."""
    if M.BEST_VAL_ACC not in trials or trials[M.BEST_VAL_ACC].notna().sum() < 2:
        return []
    v = np.sort(trials[M.BEST_VAL_ACC].dropna().to_numpy())
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.step(np.concatenate([[v[0]], v]), np.arange(len(v) + 1) / len(v), where="post", color=MEASURED, lw=2)
    ax.plot(v, np.arange(1, len(v) + 1) / len(v), "o", color=MEASURED, ms=3)
    ax.set_xlabel("best validation accuracy")
    ax.set_ylabel("share of trials at or below")
    ax.set_title(f"Distribution of {len(v)} trials' results", fontsize=10)
    ax.grid(alpha=0.3)
    return save(fig, out_dir, "result_distribution")
