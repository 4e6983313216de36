"""What a resume repairs before Tune restores a sweep (issue 16).

Tune saves the searcher's state (OptunaSearch pickles itself, with the Tune trial id -> Optuna trial map) every few
seconds, while the Optuna study in optuna.db is written at every proposal. A driver killed between the two leaves
proposals in optuna.db that the restored searcher does not know: they would stay RUNNING forever, and TPE would
model them as pending. They are told as FAIL here, so every RUNNING Optuna trial after a resume is one that a Tune
trial will finish.
"""

from __future__ import annotations

import glob
import os
import pickle

from ray.tune.search.searcher import Searcher

from ferlab import storage
from ferlab.internals import asha_bracket, optuna_storage_of, optuna_trial_id, searcher_study


def fail_orphan_proposals(experiment_dir: str) -> list[int]:
    """Mark as FAIL the RUNNING trials of the saved searcher's Optuna study that the saved searcher does not know;
    returns their Optuna trial numbers (nothing to do without a saved OptunaSearch with a database study)."""
    import optuna

    if storage.is_remote(experiment_dir):
        return []  # a remote sweep's study is in memory, saved inside the searcher's state (ferlab.tune.sweep)
    saved = glob.glob(os.path.join(experiment_dir, Searcher.CKPT_FILE_TMPL.format("*")))
    if not saved:
        return []
    with open(max(saved), "rb") as f:
        state = pickle.load(f)
    study, proposed = searcher_study(state)
    if study is None or isinstance(optuna_storage_of(study), optuna.storages.InMemoryStorage):
        return []  # an in-memory study died with the driver: nothing is left RUNNING anywhere
    known = {optuna_trial_id(t) for t in proposed.values()}
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if optuna_trial_id(t) not in known:
            optuna_storage_of(study).set_trial_state_values(optuna_trial_id(t), optuna.trial.TrialState.FAIL)
            failed.append(t.number)
    return failed


def rebuild_rungs(scheduler, experiment_dir: str, metric: str, mode: str) -> int:
    """Refill ASHA's rung records from the histories stored with every trial's checkpoints; returns how many trials
    were replayed. Tune saves no scheduler state (AsyncHyperBandScheduler.save exists, nothing calls it): a resumed
    sweep's ASHA starts with empty rungs, so a weak trial that the uninterrupted sweep stops would run on (issue 16,
    finding 5). No-op for any other scheduler (an ablation's grid has none)."""
    from ray.tune.schedulers import AsyncHyperBandScheduler

    from ferlab.train.checkpoints import scan

    if not isinstance(scheduler, AsyncHyperBandScheduler):
        return 0
    histories = {}
    runs = storage.join(experiment_dir, "train_runs")
    for name, is_dir in storage.listdir(runs):  # a local folder or a bucket
        history = scan(storage.join(runs, name))["history"] if is_dir else None
        if history:
            histories[name] = history
    replay_rungs(scheduler, histories, metric, mode)
    return len(histories)


def replay_rungs(scheduler, histories: dict[str, list[dict]], metric: str, mode: str) -> None:
    """Feed every stored epoch of every trial to ASHA's bracket in epoch order, as the live sweep did: each rung then
    records the same value per trial (its first result at or past the milestone). ferlab's ASHA has one bracket."""
    from types import SimpleNamespace

    bracket, time_attr = asha_bracket(scheduler)  # tests/test_resume_repair.py fails if their meaning changes
    sign = 1.0 if mode == "max" else -1.0
    for trial_id, history in histories.items():
        trial = SimpleNamespace(trial_id=trial_id)
        for row in sorted(history, key=lambda r: r.get(time_attr, 0)):
            if row.get(time_attr) is not None and row.get(metric) is not None:
                bracket.on_result(trial, row[time_attr], sign * row[metric])


def check_resumable(spec) -> None:
    """--resume of a sweep that was never stored under --storage/--name: one line naming what is there (a typo in
    --name would otherwise start a new sweep and leave the one meant untouched)."""
    from ray import tune

    if tune.Tuner.can_restore(storage.join(spec.storage, spec.name)):
        return
    stored = [n for n, is_dir in storage.listdir(spec.storage)
              if is_dir and tune.Tuner.can_restore(storage.join(spec.storage, n))]
    raise storage.StorageError(f"--resume: nothing stored under {storage.join(spec.storage, spec.name)} to resume; "
                               f"the sweeps stored there are: {', '.join(stored) or 'none'}")
