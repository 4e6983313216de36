"""A resume tells Optuna's orphaned proposals as failed (ferlab.tune.resume): a proposal made after Tune last saved
the searcher, then lost with the driver, must not stay RUNNING in optuna.db."""

from __future__ import annotations

import optuna
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from ferlab.tune.resume import fail_orphan_proposals


def test_a_proposal_made_after_the_last_save_is_failed_on_resume(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    searcher = OptunaSearch(space={"p1": optuna.distributions.FloatDistribution(0, 0.9)}, metric="val_acc",
                            mode="max", storage=storage, study_name="sweep-1", seed=0)
    searcher.suggest("trial_a")
    searcher.suggest("trial_b")
    searcher.on_trial_complete("trial_a", {"val_acc": 0.5})
    searcher.save_to_dir(str(tmp_path), "session")  # what Tune saved last
    searcher.suggest("trial_c")  # proposed, then the driver died before the next save
    assert fail_orphan_proposals(str(tmp_path)) == [2]
    states = {t.number: t.state for t in optuna.load_study(study_name="sweep-1", storage=storage).trials}
    T = optuna.trial.TrialState
    assert states == {0: T.COMPLETE, 1: T.RUNNING, 2: T.FAIL}  # trial_b: Tune restarts it and tells its result
    assert fail_orphan_proposals(str(tmp_path)) == []  # idempotent


def test_nothing_to_repair_without_a_saved_database_study(tmp_path):
    assert fail_orphan_proposals(str(tmp_path)) == []
    in_memory = OptunaSearch(space={"p1": tune.uniform(0, 1)}, metric="val_acc", mode="max")
    in_memory.suggest("trial_a")
    in_memory.save_to_dir(str(tmp_path), "session")
    assert fail_orphan_proposals(str(tmp_path)) == []
