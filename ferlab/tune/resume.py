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


def fail_orphan_proposals(experiment_dir: str) -> list[int]:
    """Mark as FAIL the RUNNING trials of the saved searcher's Optuna study that the saved searcher does not know;
    returns their Optuna trial numbers (nothing to do without a saved OptunaSearch with a database study)."""
    import optuna

    saved = glob.glob(os.path.join(experiment_dir, Searcher.CKPT_FILE_TMPL.format("*")))
    if not saved:
        return []
    with open(max(saved), "rb") as f:
        state = pickle.load(f)
    study = state.get("_ot_study") if isinstance(state, dict) else None
    if study is None or isinstance(study._storage, optuna.storages.InMemoryStorage):
        return []  # an in-memory study died with the driver: nothing is left RUNNING anywhere
    known = {t._trial_id for t in state.get("_ot_trials", {}).values()}
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t._trial_id not in known:
            study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
            failed.append(t.number)
    return failed
