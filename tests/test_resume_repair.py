"""What a resume repairs (ferlab.tune.resume): Optuna's orphaned proposals are told as failed (a proposal made after
Tune last saved the searcher, then lost with the driver, must not stay RUNNING in optuna.db), and ASHA's rungs are
rebuilt from the stored histories."""

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


def _asha():
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=8, grace_period=2,
                         reduction_factor=2)


# per trial: val_acc at epochs 1..n, as a sweep reported them (interleaved below)
HISTORIES = {"a": [0.30, 0.50, 0.55, 0.60, 0.62, 0.63], "b": [0.20, 0.25, 0.30, 0.35],
             "c": [0.25, 0.45, 0.50, 0.52], "d": [0.10, 0.40]}


def _live_rungs():
    from types import SimpleNamespace

    live = _asha()
    trials = {k: SimpleNamespace(trial_id=k) for k in HISTORIES}
    for t in trials.values():
        live.on_trial_add(None, t)
    for epoch in range(1, 7):  # the trials report in turn, epoch by epoch
        for k, accs in HISTORIES.items():
            if epoch <= len(accs):
                live.on_trial_result(None, trials[k], {"epoch": epoch, "val_acc": accs[epoch - 1]})
    return live._brackets[0]._rungs


def test_asha_rungs_are_rebuilt_from_the_stored_histories(tmp_path):
    """Tune saves no scheduler state, so a resumed ASHA started with empty rungs and let weak trials run on (issue
    16, finding 5). Replayed from the histories stored with the checkpoints, every rung records what the live
    sweep's did, and a weak newcomer is stopped at the first rung as it would have been."""
    from types import SimpleNamespace

    from ferlab.train import checkpoints
    from ferlab.tune.resume import rebuild_rungs

    for k, accs in HISTORIES.items():  # what the trials left on disk: the newest checkpoint holds every epoch
        (folder := tmp_path / "train_runs" / k / "checkpoint_0").mkdir(parents=True)
        checkpoints.save(str(folder), {"epoch": len(accs) - 1},
                         [{"epoch": e + 1, "val_acc": a} for e, a in enumerate(accs)])
    rebuilt = _asha()
    assert rebuild_rungs(rebuilt, str(tmp_path), "val_acc", "max") == 4
    assert rebuilt._brackets[0]._rungs == _live_rungs()
    assert any(recorded for _, recorded in rebuilt._brackets[0]._rungs)

    weak = SimpleNamespace(trial_id="e")
    empty = _asha()
    for scheduler in (rebuilt, empty):
        scheduler.on_trial_add(None, weak)
    assert rebuilt.on_trial_result(None, weak, {"epoch": 2, "val_acc": 0.3}) == "STOP"
    assert empty.on_trial_result(None, weak, {"epoch": 2, "val_acc": 0.3}) == "CONTINUE"  # without the rebuild


def test_no_rungs_to_rebuild_for_a_grid(tmp_path):
    from ray.tune.schedulers import FIFOScheduler

    from ferlab.tune.resume import rebuild_rungs

    assert rebuild_rungs(FIFOScheduler(), str(tmp_path), "val_acc", "max") == 0
