"""The noise-aware last step of a search (`--confirm K`): re-train the K best settings with fresh seeds and report
each as mean +/- std, so the setting a sweep calls best is not a lucky seed.

A search trains each proposal once, with one seed, and ranks by the best epoch: its top trial is the maximum of
noisy numbers and overstates its setting (the winner's curse). The confirmation runs use seeds the search never
used (seed + 1, ...), run every epoch (no early stopping), and are ranked by their mean.
"""

from __future__ import annotations

import os
import sys

import pandas as pd

from ferlab.report.tables import matching_trials
from ferlab.train import metrics as M


def top_settings(table: pd.DataFrame, study, k: int) -> list[dict]:
    """The k best distinct settings ({knob: value}) of a search's finished trials, best first."""
    done = table[(table["status"] == "ok") & table[M.BEST_VAL_ACC].notna()] if M.BEST_VAL_ACC in table else table[:0]
    out = []
    for _, row in done.sort_values(M.BEST_VAL_ACC, ascending=False).iterrows():
        s = {n: _plain(row[n]) for n in study.knob_names if n in row and pd.notna(row[n])}
        if s not in out:
            out.append(s)
        if len(out) == k:
            break
    return out


def confirm_grid(settings: list[dict], study, seed: int, seeds: int) -> list[dict]:
    """Nested cells (as an ablation's): every setting once per fresh seed."""
    if seeds < 1:
        raise ValueError(f"--confirm-seeds must be >= 1, got {seeds}")
    return [study.nest(s) | {"seed": seed + 1 + i} for i in range(seeds) for s in settings]


def confirm_table(runs: pd.DataFrame, settings: list[dict], search: pd.DataFrame) -> pd.DataFrame:
    """One row per setting, best mean first: the search's own number beside the fresh seeds' mean +/- std (sample
    standard deviation; n = the finished runs)."""
    rows = []
    for s in settings:
        mine = matching_trials(runs, s, tuple(s))
        mine = mine[mine["status"] == "ok"]
        found = matching_trials(search, s, tuple(s))[M.BEST_VAL_ACC].max()
        acc = mine[M.BEST_VAL_ACC]
        rows.append(s | {"search_val_acc": found, "n": len(acc), "mean_val_acc": acc.mean(),
                         "std_val_acc": acc.std(ddof=1) if len(acc) > 1 else float("nan"),
                         "seeds": " ".join(str(int(v)) for v in sorted(mine["seed"]))})
    return pd.DataFrame(rows).sort_values("mean_val_acc", ascending=False, na_position="last").reset_index(drop=True)


def describe(summary: pd.DataFrame, knobs: tuple) -> str:
    """The printed summary: each setting as mean +/- std (n), beside what the search saw."""
    lines = [f"confirmation: the search's top {len(summary)} settings re-trained with fresh seeds (best mean first)"]
    for _, r in summary.iterrows():
        setting = ", ".join(f"{k}={r[k]:.3g}" if isinstance(r[k], float) else f"{k}={r[k]}" for k in knobs if k in r)
        spread = f" +/- {r['std_val_acc']:.4f}" if pd.notna(r["std_val_acc"]) else ""
        lines.append(f"  {setting}: {r['mean_val_acc']:.4f}{spread} (n = {r['n']}, seeds {r['seeds']}); "
                     f"the search saw {r['search_val_acc']:.4f}")
    return "\n".join(lines)


def _plain(v):
    """numpy scalars as Python values: they go into Tune configs and JSON."""
    return v.item() if hasattr(v, "item") else v


def run_confirmation(spec, run, search, results_dir: str, track: list) -> bool:
    """Re-train the search's best settings with fresh seeds (a grid run of its own, `<name>_confirm`, resumable like
    the search); writes confirm.csv (mean +/- std per setting) and confirm/ (its trials and history). Returns whether
    it was interrupted."""
    import dataclasses

    from ferlab.report.results import write_results
    from ferlab.tune.sweep import run_sweep

    from ferlab.studies import get_study

    study = get_study(spec.study)
    settings = top_settings(search, study, run.confirm)
    if not settings:
        print("confirmation skipped: no finished trial", file=sys.stderr)
        return False
    grid = confirm_grid(settings, study, spec.seed, run.confirm_seeds)
    cspec = dataclasses.replace(spec, name=f"{spec.name}_confirm", samples=len(grid))
    print(f"\nconfirming the top {len(settings)} settings with {run.confirm_seeds} fresh seeds each "
          f"({len(grid)} trials, every epoch)", flush=True)
    runs, history = run_sweep(cspec, resume=run.resume, grid=grid, callbacks=track, ray_logs=run.verbose)
    write_results(runs, cspec, os.path.join(results_dir, "confirm"), history=history)
    summary = confirm_table(runs, settings, search)
    summary.to_csv(os.path.join(results_dir, "confirm.csv"), index=False)
    print(describe(summary, study.knob_names))
    return bool(runs.attrs.get("interrupted"))
