"""A sweep's result files: trials.csv/md (one row per trial), history.csv (one row per trial and epoch) and run.json
(resolved spec, git commit, data manifest hash): everything `ferlab report` reads."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict

import pandas as pd

from ferlab import storage
from ferlab.models import model_config
from ferlab.report.markdown import to_markdown
from ferlab.studies import get_study
from ferlab.train import metrics as M

OPTUNA_DB = "optuna.db"


def trial_knobs(config: dict, study) -> dict:
    """A trial's knob values (and an ablation cell's seed) from its Tune config."""
    cell = (config or {}).get("cell", config or {})
    return study.flatten({s: cell.get(s) or {} for s in ("model", "train", "study")}) | \
        {k: cell[k] for k in ("seed", "fold") if k in cell}


STATUS = {"TERMINATED": "ok", "ERROR": "error"}  # any other Tune status: the sweep stopped before the trial ended


def trial_histories(results, experiment: str, keep: int | None = None) -> list[dict]:
    """Per trial: its id, status, config, per-epoch history, the checkpoint that history came from, and how many
    corrupt checkpoints were skipped. The history is the one stored with the trial's newest intact checkpoint
    (ferlab.train.checkpoints: every epoch the trial trained, once, also across resumes and worker restarts); Tune's
    own records only where there is none (a trial that never reported). `experiment`: the sweep's folder or URI on
    the storage (<storage>/<name>; Tune's own `experiment_path` drops a bucket's scheme). `keep`: also remove each
    trial's intact checkpoint folders beyond its newest `keep`, and its unfinished ones (ferlab.train.checkpoints.prune)."""
    from ferlab.train.checkpoints import prune, scan
    from ferlab.internals import result_trials

    out = []
    # ResultGrid builds its Results from these Trials, in this order; the Trial carries the id and the status.
    for trial, r in zip(result_trials(results), results):
        run_dir = storage.join(experiment, "train_runs", trial.trial_id)
        found = scan(run_dir)  # an absent folder (never reported) finds nothing
        folder, corrupt, stored = found["folder"], found["corrupt"], found["history"]
        for c in corrupt:
            print(f"trial {trial.trial_id}: checkpoint {c} is corrupt (checksum mismatch or unreadable); the "
                  f"table points at the newest intact one", flush=True)
        removed = prune(run_dir, keep, found) if keep else []
        if removed:
            print(f"trial {trial.trial_id}: removed {len(removed)} checkpoint folders, beyond its newest {keep} or "
                  f"unfinished (a copy cut short when a worker died, never registered by Ray)", flush=True)
        if stored:
            hist = pd.DataFrame(stored)
            hist[M.CHECKPOINT] = folder  # the newest checkpoint that loads (None: none does)
        else:
            hist = r.metrics_dataframe
        out.append({"trial": trial.trial_id, "status": STATUS.get(trial.status, "unfinished"), "config": r.config,
                    "history": hist, "corrupt_checkpoints": len(corrupt)})
    return out


def results_table(trials: list[dict], study) -> pd.DataFrame:
    """One row per trial: its knobs, validation accuracy at its best and last epoch, every other evaluated split at
    the epoch chosen on validation, at the last epoch and at its own best epoch (what papers that pick the best
    epoch on test report), epochs run and status."""
    rows = []
    for t in trials:
        hist = t["history"]
        row = {"trial": t["trial"]} | trial_knobs(t["config"], study)
        if hist is not None and M.VAL_ACC in hist:
            hist = hist.sort_values(M.EPOCH).reset_index(drop=True)
            best_i = hist[M.VAL_ACC].idxmax()
            row.update({M.BEST_VAL_ACC: hist[M.VAL_ACC].max(), M.BEST_EPOCH: int(hist.loc[best_i, M.EPOCH]),
                        f"best_{M.VAL_MCA}": hist.loc[best_i, M.VAL_MCA], f"last_{M.VAL_ACC}": hist[M.VAL_ACC].iloc[-1],
                        f"last_{M.VAL_MCA}": hist[M.VAL_MCA].iloc[-1], "epochs": int(hist[M.EPOCH].max()),
                        M.IMAGES_PER_S: hist[M.IMAGES_PER_S].mean()})
            for col in hist.columns:  # other evaluated splits
                if col.endswith("_acc") and not col.startswith(("val_", "best_")):
                    row[f"{col}_at_best"] = hist.loc[best_i, col]  # at the epoch chosen on validation
                    row[f"{col}_last"] = hist[col].iloc[-1]
                    row[f"{col}_max"] = hist[col].max()  # the best epoch on this split itself
            for col in M.RELABEL + study.final_metrics:  # the relabeling at the end; the study's own (MVT's MGN)
                if col in hist:
                    row[col] = hist[col].iloc[-1]
            for col in (M.CHECKPOINT, M.NODE):  # the last checkpoint; rank 0's Ray node
                row[col] = hist[col].iloc[-1] if col in hist else None
        if t["corrupt_checkpoints"]:
            row["corrupt_checkpoints"] = t["corrupt_checkpoints"]
        row["status"] = t["status"]
        rows.append(row)
    df = pd.DataFrame(rows)
    return df.sort_values(M.BEST_VAL_ACC, ascending=False, na_position="last").reset_index(drop=True) \
        if M.BEST_VAL_ACC in df else df


def history_table(trials: list[dict]) -> pd.DataFrame:
    """Every trial's per-epoch metrics (numbers only; confusion matrices as JSON text), one row per (trial, epoch):
    what convergence curves and the best trial's confusion matrix are drawn from."""
    frames = []
    for t in trials:
        hist = t["history"]
        if hist is None or hist.empty:
            continue
        lists = [c for c in hist.columns if c in M.LISTS or c == M.CONFUSION or c.endswith("_" + M.CONFUSION)]
        keep = lists + [c for c in hist.columns if c not in lists and pd.api.types.is_numeric_dtype(hist[c])
                        and c not in ("timestamp", "pid", "done")
                        and not c.startswith("config/")]  # the trial's knobs are in trials.csv
        frame = hist[[c for c in hist.columns if c in keep]].copy()
        for c in lists:  # lists (also from a stored history): JSON text
            frame[c] = [v if isinstance(v, str) or v is None or v != v else json.dumps(v) for v in frame[c]]
        frame.insert(0, "trial", t["trial"])
        frames.append(frame.sort_values(M.EPOCH) if M.EPOCH in frame else frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_results(df: pd.DataFrame, spec, results_dir: str, extra: dict | None = None,
                  history: pd.DataFrame | None = None) -> dict:
    """trials.csv/md, history.csv (per epoch) and run.json (resolved spec, git commit, data manifest hash, data set,
    the Tune and Optuna storage) in results_dir."""
    os.makedirs(results_dir, exist_ok=True)
    paths = {"csv": os.path.join(results_dir, "trials.csv"), "md": os.path.join(results_dir, "trials.md"),
             "run": os.path.join(results_dir, "run.json")}
    df.to_csv(paths["csv"], index=False)
    if history is not None:
        paths["history"] = os.path.join(results_dir, "history.csv")
        history.to_csv(paths["history"], index=False)
    with open(paths["md"], "w") as f:
        f.write(f"# {spec.name}: {spec.preset} on {spec.data}\n\n{to_markdown(df)}\n")
    experiment = storage.join(spec.storage, spec.name)
    run = {"spec": spec.saved(), "study": spec.study, "study_title": get_study(spec.study).title,
           "knobs": list(get_study(spec.study).knob_names),
           "model_config": model_config(spec.preset, **spec.model).to_dict(),
           "train_config": asdict(spec.train_cfg), "git_commit": _git_commit(),
           "data_manifest_hash": df.attrs.get("data_manifest_hash"), "dataset": df.attrs.get("dataset"),
           "classes": df.attrs.get("classes"),
           "eval_split": df.attrs.get("eval_split"), "tune_experiment": experiment,
           "folds": df.attrs.get("folds"), "cross_data": df.attrs.get("cross_data"),
           "optuna_db": None if storage.is_remote(experiment) or spec.optuna_storage
           else os.path.join(experiment, OPTUNA_DB),
           "optuna_storage": storage.redacted(spec.optuna_storage) or None} | (extra or {})
    with open(paths["run"], "w") as f:
        json.dump(run, f, indent=2, default=str)
    return paths


def _git_commit() -> str | None:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
