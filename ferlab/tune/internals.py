"""The private attributes of Ray (and Optuna) ferlab relies on, in one place. Each is a need with no public API in
the pinned versions; tests/test_internals.py checks every one against the installed Ray and Optuna and names the
version when an upgrade removes or renames one. Nothing else in ferlab reads a private attribute of either."""

from __future__ import annotations

import logging

TUNE_LOGGER = "ray.tune.tune"  # where Tune logs "Stop signal received" (Ctrl-C, SIGUSR1)


def restored_scheduler(tuner):
    """The scheduler a `Tuner.restore`d tuner will use (its TuneConfig is kept on the private local tuner)."""
    return tuner._local_tuner._tune_config.scheduler


def asha_bracket(scheduler):
    """ASHA's one bracket (ferlab's ASHA has one) and the attribute its milestones are counted in."""
    (bracket,) = scheduler._brackets
    return bracket, scheduler._time_attr


def result_trials(results) -> list:
    """The Tune Trials behind a ResultGrid, in the order of its Results: they carry the trial id and the status."""
    return results._experiment_analysis.trials


def start_epochs_at(ds, first_epoch: int):
    """`ds` with a DataContext of its own whose execution count starts at `first_epoch`. Ray numbers executions
    (epochs) on the context a dataset was built with, and datasets derived from one materialized dataset share it;
    a private count makes epoch k of seed s the same in every run, resumed or not (tests/test_train_loop.py)."""
    ctx = ds.context.copy()
    ctx._execution_idx = first_epoch
    ds._context = ds._logical_plan.context = ctx  # the executor counts on one, the planner seeds from the other
    return ds


class StopSignal(logging.Handler):
    """Notices Tune's "Stop signal received" (Ctrl-C, SIGUSR1) on TUNE_LOGGER: Tune then returns from fit() as if it
    had finished, with the running trials marked terminated, and says so only in this log line."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.seen = False

    def emit(self, record):
        self.seen = self.seen or "Stop signal received" in record.getMessage()


def optuna_storage_of(study):
    """An Optuna study's storage (Tune's OptunaSearch keeps the study, not its storage URL)."""
    return study._storage


def optuna_trial_id(trial) -> int:
    """A FrozenTrial's storage id (what the storage's setters take; `number` is per study)."""
    return trial._trial_id
