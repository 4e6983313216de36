"""Experiment tracking through Ray Tune's own logger callbacks (`--track mlflow`, `--track wandb`): every trial a
run with its config, its per-epoch metrics keyed on the epoch, and its Tune folder as artifacts; after the sweep, one
more run holding the results files (trials.csv, history.csv, run.json, ...).

Optional: `pip install "ferlab[mlflow]"` or `"ferlab[wandb]"`; checked before Ray starts.
"""

from __future__ import annotations

import glob
import os

from ferlab.train import metrics as M

TRACKERS = ("mlflow", "wandb")


def check(track: list[str], uri: str | None) -> None:
    """Fail before Ray starts: an unknown tracker, or one that is not installed."""
    for name in track:
        if name not in TRACKERS:
            raise ValueError(f"--track {name}: expected one of {', '.join(TRACKERS)}")
        try:
            __import__(name)
        except ImportError:
            raise ValueError(f"--track {name}: {name} is not installed (pip install \"ferlab[{name}]\")") from None
    if uri and "mlflow" not in track:
        raise ValueError("--track-uri is MLflow's tracking URI: give it with --track mlflow")
    if uri:  # a URI MLflow cannot use, or a server that does not answer: one line now, not a traceback later
        from ferlab.storage import CHECK_S, within

        def ask():
            import mlflow

            mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=1)

        try:
            within(CHECK_S, ask)
        except Exception as e:  # noqa: BLE001: MLflow raises its own, pyarrow's and requests' errors
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ValueError(f"--track-uri {uri}: MLflow cannot use it ({first})") from None


def default_uri() -> str:
    """A local SQLite store, ./mlruns/mlflow.db (`mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db` lists
    it). Not MLflow's plain ./mlruns file store: MLflow 3 refuses it unless MLFLOW_ALLOW_FILE_STORE=true."""
    os.makedirs("mlruns", exist_ok=True)
    return "sqlite:///" + os.path.abspath(os.path.join("mlruns", "mlflow.db"))


def callbacks(track: list[str], uri: str | None, experiment: str) -> list:
    """The Tune callbacks for the chosen trackers (an empty list without --track)."""
    out = []
    if "mlflow" in track:
        uri = uri or default_uri()
        _ensure_experiment(uri, experiment)
        out.append(_mlflow_callback()(uri, experiment_name=experiment, save_artifact=True))
    if "wandb" in track:
        from ray.air.integrations.wandb import WandbLoggerCallback

        if not os.environ.get("WANDB_API_KEY"):
            os.environ.setdefault("WANDB_MODE", "offline")  # no key: written locally, `wandb sync` uploads later
        out.append(WandbLoggerCallback(project=experiment, log_config=True))
    return out


def _ensure_experiment(uri: str, name: str) -> None:
    """With a SQLite store, the experiment's artifacts go beside the database (MLflow would put them in ./mlruns
    of whatever folder the run started in)."""
    import mlflow

    client = mlflow.tracking.MlflowClient(uri)
    if uri.startswith("sqlite:///") and client.get_experiment_by_name(name) is None:
        folder = os.path.join(os.path.dirname(uri[len("sqlite:///"):]), "artifacts")
        client.create_experiment(name, artifact_location=os.path.abspath(folder))


def _mlflow_callback():
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    from ferlab.internals import mlflow_run_of

    class EpochMLflowLoggerCallback(MLflowLoggerCallback):
        """Ray's callback steps metrics by `training_iteration`, which restarts at 1 when a trial is resumed; a
        ferlab trial reports its epoch, so the curves stay right across resumes."""

        def log_trial_result(self, iteration, trial, result):
            step = int(result.get(M.EPOCH) or result["training_iteration"])
            self.mlflow_util.log_metrics(run_id=mlflow_run_of(self, trial), metrics_to_log=result, step=step)

    return EpochMLflowLoggerCallback


def log_results(track: list[str], uri: str | None, experiment: str, results_dir: str) -> None:
    """One more run, `<experiment> results`, with the results folder's files (the tables a report is built from)."""
    if "mlflow" not in track:
        return
    import mlflow

    uri = uri or default_uri()
    _ensure_experiment(uri, experiment)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"{experiment} results"):
        for path in sorted(glob.glob(os.path.join(results_dir, "*.*"))):
            mlflow.log_artifact(path)
