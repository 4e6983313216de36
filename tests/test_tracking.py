"""Experiment tracking (`--track mlflow`) through Ray Tune's callback: one MLflow run per trial, its config, its
per-epoch metrics stepped by the epoch, and the results files in a run of their own; MLflow's own client reads
them back from a temporary SQLite store."""

from __future__ import annotations

import pytest

from ferlab.tune.tracking import callbacks, check, log_results


def test_bad_tracking_options_fail_before_ray():
    with pytest.raises(ValueError, match="expected one of mlflow, wandb"):
        check(["tensorboard"], None)
    with pytest.raises(ValueError, match="--track mlflow"):
        check([], "file:/tmp/x")


@pytest.mark.slow
def test_mlflow_run_per_trial_stepped_by_epoch(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    import ray
    from ray import tune

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def trainable(config):  # as a resumed trial reports: epochs 3-5 at Tune iterations 1-3
        for epoch in range(3, 6):
            tune.report({"epoch": epoch, "val_acc": config["model"]["p1"] * epoch})

    ray.init(num_cpus=2, include_dashboard=False)
    try:
        tune.Tuner(tune.with_resources(trainable, {"CPU": 1}),
                   param_space={"model": {"p1": tune.grid_search([0.1, 0.2])}},
                   run_config=tune.RunConfig(storage_path=str(tmp_path / "storage"), verbose=0,
                                             callbacks=callbacks(["mlflow"], uri, "sweep_x"))).fit()
    finally:
        ray.shutdown()
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "trials.csv").write_text("trial,best_val_acc\na,0.6\n")
    log_results(["mlflow"], uri, "sweep_x", str(tmp_path / "results"))

    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name("sweep_x")
    runs = client.search_runs([exp.experiment_id])
    trials = [r for r in runs if not r.info.run_name.endswith("results")]
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    assert sorted(r.data.params["model/p1"] for r in trials) == ["0.1", "0.2"]
    for r in trials:
        hist = client.get_metric_history(r.info.run_id, "val_acc")
        assert [m.step for m in sorted(hist, key=lambda m: m.step)] == [3, 4, 5]  # the epoch, not the iteration
        assert client.list_artifacts(r.info.run_id)  # the trial's Tune folder
    results, = [r for r in runs if r.info.run_name == "sweep_x results"]
    assert [a.path for a in client.list_artifacts(results.info.run_id)] == ["trials.csv"]
