"""The private attributes of Ray (and Optuna) ferlab relies on, in one place. Each is a need with no public API in
the pinned versions; tests/test_internals.py checks every one against the installed Ray and Optuna and names the
version when an upgrade removes or renames one. Nothing else in ferlab reads a private attribute of either."""

from __future__ import annotations

import contextlib
import logging
import os

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


def ray_data_console_handlers() -> list:
    """The handlers of Ray Data's logger that write to the console: Ray Data's logging configuration names its
    console handler "console" (its file handler writes ray-data.log in the session's logs). Raising their level
    keeps Ray Data's INFO lines in the file and off the console."""
    return [h for h in logging.getLogger("ray.data").handlers if h.name == "console"]


def ray_data_logging_config(console_level: str) -> dict:
    """Ray Data's default logging configuration (the one it applies when RAY_DATA_LOGGING_CONFIG names no file),
    with its console handler at `console_level`: for processes ferlab does not run its own code in (the split
    coordinator that executes a streamed train split every epoch)."""
    import copy

    from ray.data._internal.logging import DEFAULT_CONFIG

    config = copy.deepcopy(DEFAULT_CONFIG)
    config["handlers"]["console"]["level"] = console_level
    return config


def train_report_logger() -> logging.Logger:
    """The logger of Train V2's "Reporting training result N: TrainingReport(...)" line (one per report, over 1,000
    characters): named after its module's file, not under "ray.train", so Train's LoggingConfig does not reach it."""
    from ray.train.v2._internal.execution import context

    return logging.getLogger(context.__file__)


# Ray Data says "Progress bars disabled. ..." once per process (ray.util.debug.log_once under this key); ferlab turns
# them off itself, so the notice is marked said.
PROGRESS_NOTICE = "ray_data_progress_manager_disabled"


# Ray Train V2 asks the autoscaler for each run's workers through Ray Data's AutoscalingCoordinator (a detached actor
# of this name and namespace), as requester "train-<run id>", and cancels the request when its controller shuts down.
AUTOSCALING_COORDINATOR = ("AutoscalingCoordinator", "AutoscalingCoordinator")
TRAIN_REQUESTER_PREFIX = "train-"


def cancel_train_resource_requests() -> int:
    """Cancel the Train resource requests still registered with the autoscaling coordinator; returns how many.

    A Tune trial that ends at a report (ASHA's stop, max_t included) has its actor killed with the Train controller
    it owns before the controller's shutdown cancels its request, which then holds the cluster's idle nodes until it
    expires (AUTOSCALING_REQUESTS_EXPIRE_TIME_S, 180 s in Ray 2.60). Called when a sweep ends. A Train run still
    running elsewhere on the cluster loses nothing: its controller sends its request again every 20 s
    (AUTOSCALING_REQUESTS_INTERVAL_S), and its nodes are busy meanwhile. The coordinator has no public listing of
    its requests: its private `_ongoing_reqs` is read on the actor through `__ray_call__` (Ray's DeveloperAPI)."""
    import ray

    name, namespace = AUTOSCALING_COORDINATOR
    try:
        coordinator = ray.get_actor(name, namespace=namespace)
    except ValueError:  # never created: no Train run asked for resources on this cluster
        return 0
    ids = ray.get(coordinator.__ray_call__.remote(
        lambda actor: [r for r in actor._ongoing_reqs if str(r).startswith(TRAIN_REQUESTER_PREFIX)]), timeout=30)
    for requester in ids:
        ray.get(coordinator.cancel_request.remote(requester_id=requester), timeout=30)
    return len(ids)


PARQUET_FOOTER_ACTORS = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"  # Ray Data's default: 32


@contextlib.contextmanager
def parquet_footer_readers(files: int):
    """`read_parquet` calls inside start one Parquet footer reader per 64 files (1 to 32), not Ray Data's 32.

    Ray Data 2.60 reads Parquet footers on a pool of FooterReader actors, a process each, started for every
    listing (the schema sample at read_parquet(), then every execution: each epoch of a streamed split) and killed
    after it. A shard folder holds a few files; for them 32 processes cost several CPU-seconds per read, about
    half of a 2-core machine's time for a second (benchmarks/parquet_listing.py and its rows on the Benchmarks
    page), and a smoke sweep left 92 killed ones as "failed tasks" on its page in the Ray dashboard. The count is read from this environment
    variable when read_parquet builds its file indexer, in the calling process, and travels with the plan to the
    process that executes it. A value the user set is kept."""
    if PARQUET_FOOTER_ACTORS in os.environ:
        yield
        return
    os.environ[PARQUET_FOOTER_ACTORS] = str(max(1, min(32, files // 64)))
    try:
        yield
    finally:
        os.environ.pop(PARQUET_FOOTER_ACTORS, None)


AIR_NEW_OUTPUT = "RAY_AIR_NEW_OUTPUT"  # Tune's output engine: "1" (default) the new one, "0" the legacy one


@contextlib.contextmanager
def tune_console(verbose: bool):
    """Tune's and Optuna's own console lines inside only with --verbose (ferlab prints each epoch and each ended
    trial itself).

    Tune 2.60's new output engine prints a configuration box, the results path and a TensorBoard command at every
    fit(), whatever RunConfig's verbose says (which it reads only for its trial tables); the legacy engine, chosen by
    RAY_AIR_NEW_OUTPUT=0 (RLlib's examples set it the same way), prints nothing at verbose=0. Tune's INFO lines
    (the experiment state it wrote) and Optuna's "A new study created" line are held to warnings: Tune's "Stop
    signal received" is a warning and still reaches StopSignal. A value of RAY_AIR_NEW_OUTPUT the user set is
    kept."""
    import optuna

    if verbose:
        yield
        return
    tune_logger, optuna_level = logging.getLogger(TUNE_LOGGER), optuna.logging.get_verbosity()
    tune_level, engine = tune_logger.level, os.environ.get(AIR_NEW_OUTPUT)
    os.environ.setdefault(AIR_NEW_OUTPUT, "0")
    tune_logger.setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        tune_logger.setLevel(tune_level)
        optuna.logging.set_verbosity(optuna_level)
        if engine is None:
            os.environ.pop(AIR_NEW_OUTPUT, None)


def searcher_study(state) -> tuple:
    """(the Optuna study, the Optuna trials it proposed) from OptunaSearch's saved state (`Searcher.save` pickles
    its __dict__); (None, {}) when the state is not one."""
    if not isinstance(state, dict):
        return None, {}
    return state.get("_ot_study"), state.get("_ot_trials", {})


def mlflow_run_of(callback, trial) -> str:
    """The MLflow run id MLflowLoggerCallback opened for a Tune trial (it keeps them in a private map)."""
    return callback._trial_runs[trial]


def deep_copy_dataset(ds):
    """A Dataset with its own logical plan and DataContext (Dataset.copy's `_deep_copy`), so that changing the
    copy's context (`start_epochs_at`) leaves the original's alone."""
    from ray.data import Dataset

    return Dataset.copy(ds, _deep_copy=True)


@contextlib.contextmanager
def data_context(block_bytes: int):
    """Ray Data's current context with blocks of at most `block_bytes` and the first Parquet datasource
    (`use_datasource_v2`, undocumented: the second adds a file-listing task per epoch that reserves a whole CPU);
    both restored after. ferlab.data.pipeline.decoded_splits says why each is needed."""
    import ray.data

    context = ray.data.DataContext.get_current()
    saved = context.target_max_block_size, context.use_datasource_v2
    context.target_max_block_size, context.use_datasource_v2 = block_bytes, False
    try:
        yield
    finally:
        context.target_max_block_size, context.use_datasource_v2 = saved


def optuna_storage_of(study):
    """An Optuna study's storage (Tune's OptunaSearch keeps the study, not its storage URL)."""
    return study._storage


def optuna_trial_id(trial) -> int:
    """A FrozenTrial's storage id (what the storage's setters take; `number` is per study)."""
    return trial._trial_id
