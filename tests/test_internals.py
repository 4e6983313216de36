"""Every private attribute of Ray and Optuna that ferlab reads (ferlab.internals), checked against the installed
versions without starting Ray: an upgrade that removes or renames one fails here, naming the version, instead of in
the middle of a resumed sweep. What each one means is tested where it is used (tests/test_resume_repair.py,
tests/test_train_loop.py, tests/test_faults.py)."""

import inspect
import logging
import os
import re

import optuna
import pytest
import ray

from ferlab import internals

WHERE = f"Ray {ray.__version__}, Optuna {optuna.__version__}"


def test_a_fresh_tuner_keeps_its_scheduler_where_restore_reads_it():
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    asha = ASHAScheduler(time_attr="epoch", max_t=4, grace_period=1, metric="val_acc", mode="max")
    tuner = tune.Tuner(lambda config: None, tune_config=tune.TuneConfig(scheduler=asha))
    assert internals.restored_scheduler(tuner) is asha, WHERE
    bracket, time_attr = internals.asha_bracket(asha)
    assert time_attr == "epoch" and callable(getattr(bracket, "on_result", None)), WHERE


def test_a_result_grid_is_built_on_the_trials():
    from ray.tune import ResultGrid

    assert "self._experiment_analysis" in inspect.getsource(ResultGrid.__init__), WHERE


def test_a_dataset_counts_its_executions_on_a_context_of_its_own():
    from ray.data import DataContext
    from ray.data.dataset import Dataset

    assert hasattr(DataContext.get_current(), "_execution_idx"), WHERE
    assert "self._context" in inspect.getsource(Dataset.__init__), WHERE
    assert "_logical_plan" in inspect.getsource(Dataset.__init__), WHERE


def test_ray_data_names_its_console_handler():
    """quiet_progress raises the level of Ray Data's console handler (found by the name Ray Data's logging
    configuration gives it), and of no other: its INFO lines stay in ray-data.log."""
    import ray.data  # noqa: F401  (its import configures the logger)

    from ferlab.data.pipeline import quiet_progress

    handlers = logging.getLogger("ray.data").handlers
    assert len(internals.ray_data_console_handlers()) == 1 and len(handlers) >= 2, (WHERE, handlers)
    try:
        quiet_progress()
        levels = {h.name: h.level for h in handlers}
        assert levels["console"] == logging.WARNING and all(v < logging.WARNING for k, v in levels.items()
                                                            if k != "console"), (WHERE, levels)
    finally:
        quiet_progress(verbose=True)


def test_ray_data_default_logging_config_has_a_console_handler_and_trains_report_logger_is_its_files():
    """The two other pieces of the quiet console: Ray Data's default configuration (copied with its console at
    WARNING for RAY_DATA_LOGGING_CONFIG), and the module whose logger writes Train's per-report line, and the key
    Ray Data says its progress-bar notice once under."""
    import ray.data._internal.progress as progress
    from ray.train.v2._internal.execution import context

    config = internals.ray_data_logging_config("WARNING")
    assert config["handlers"]["console"]["level"] == "WARNING" and "console" in config["loggers"]["ray.data"][
        "handlers"], WHERE
    assert "Reporting training result" in inspect.getsource(context), WHERE
    assert internals.train_report_logger().name == context.__file__, WHERE
    assert internals.PROGRESS_NOTICE in inspect.getsource(progress), WHERE


def test_tune_says_stop_on_its_logger():
    import ray.tune.tune as tune_module

    assert tune_module.logger.name == internals.TUNE_LOGGER, WHERE
    assert "Stop signal received" in inspect.getsource(tune_module), WHERE
    handler = internals.StopSignal()
    handler.emit(logging.LogRecord(internals.TUNE_LOGGER, logging.WARNING, "", 0, "Stop signal received ...", None,
                                   None))
    assert handler.seen


def test_tunes_console_is_quiet_inside_tune_console_and_as_it_was_after(monkeypatch):
    """Tune picks its output engine from RAY_AIR_NEW_OUTPUT at every fit (the legacy one, at verbose 0, prints no
    box or paths), and says stop as a warning: inside tune_console(False) the legacy engine, Tune's INFO and Optuna's
    INFO are off and the stop warning still passes; after it, everything is as it was; with --verbose, untouched."""
    from ray.tune.experimental.output import get_air_verbosity

    monkeypatch.delenv(internals.AIR_NEW_OUTPUT, raising=False)
    tune_logger = logging.getLogger(internals.TUNE_LOGGER)
    before = (tune_logger.level, optuna.logging.get_verbosity())
    assert get_air_verbosity(0) is not None, WHERE  # the new engine by default
    with internals.tune_console(False):
        assert get_air_verbosity(0) is None, WHERE  # the legacy engine
        assert not tune_logger.isEnabledFor(logging.INFO) and tune_logger.isEnabledFor(logging.WARNING)
        assert optuna.logging.get_verbosity() == optuna.logging.WARNING
    assert (tune_logger.level, optuna.logging.get_verbosity()) == before
    assert internals.AIR_NEW_OUTPUT not in os.environ
    with internals.tune_console(True):
        assert get_air_verbosity(0) is not None
    monkeypatch.setenv(internals.AIR_NEW_OUTPUT, "1")  # the user's choice is kept
    with internals.tune_console(False):
        assert get_air_verbosity(0) is not None


def test_train_asks_the_autoscaling_coordinator_by_a_requester_id_it_can_be_cancelled_by():
    """cancel_train_resource_requests: Train V2's requester id, the coordinator's name and namespace, its private
    table of requests and its cancel method (the coordinator built in this process, without Ray: no thread)."""
    from ray.data._internal.cluster_autoscaler import default_autoscaling_coordinator as dac
    from ray.train.v2._internal.execution.scaling_policy.scaling_policy import ScalingPolicy

    assert f'f"{internals.TRAIN_REQUESTER_PREFIX}{{' in inspect.getsource(ScalingPolicy.after_controller_start), WHERE
    name, namespace = internals.AUTOSCALING_COORDINATOR
    get = inspect.getsource(dac.get_or_create_autoscaling_coordinator)
    assert f'name="{name}"' in get and f'namespace="{namespace}"' in get, WHERE
    actor = dac._AutoscalingCoordinatorActor(send_resources_request=lambda *a, **k: None, get_cluster_nodes=list)
    actor.request_resources(requester_id="train-abc", resources=[{"CPU": 1}], expire_after_s=60)
    assert list(actor._ongoing_reqs) == ["train-abc"], WHERE
    actor.cancel_request(requester_id="train-abc")
    assert not actor._ongoing_reqs, WHERE


def test_read_parquet_takes_its_footer_reader_count_from_the_environment_at_the_call(monkeypatch):
    """parquet_footer_readers: read_parquet builds its file indexer when called (so the count travels with the
    plan), and the indexer reads the count from the environment then."""
    from ray.data import read_api
    from ray.data._internal.datasource_v2.formats.parquet.footer_file_indexer import FooterFileIndexer

    assert "indexer = datasource._get_file_indexer()" in inspect.getsource(read_api), WHERE
    monkeypatch.delenv(internals.PARQUET_FOOTER_ACTORS, raising=False)
    assert FooterFileIndexer(ignore_missing_paths=False)._num_actors == 32, WHERE  # Ray's default
    with internals.parquet_footer_readers(3):
        assert FooterFileIndexer(ignore_missing_paths=False)._num_actors == 1, WHERE
    with internals.parquet_footer_readers(640):
        assert FooterFileIndexer(ignore_missing_paths=False)._num_actors == 10, WHERE
    assert internals.PARQUET_FOOTER_ACTORS not in __import__("os").environ
    monkeypatch.setenv(internals.PARQUET_FOOTER_ACTORS, "5")  # the user's value is kept
    with internals.parquet_footer_readers(3):
        assert FooterFileIndexer(ignore_missing_paths=False)._num_actors == 5, WHERE


def test_optuna_trials_and_studies_carry_their_storage_ids():
    study = optuna.create_study()
    trial = study.ask()
    study.tell(trial, 1.0)
    (frozen,) = study.get_trials(deepcopy=False)
    assert isinstance(internals.optuna_trial_id(frozen), int), WHERE
    assert isinstance(internals.optuna_storage_of(study), optuna.storages.BaseStorage), WHERE


def test_the_saved_searcher_state_holds_the_study_and_its_trials():
    """searcher_study reads what OptunaSearch.save pickles (its __dict__)."""
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(space={"x": optuna.distributions.FloatDistribution(0, 1)}, metric="m", mode="max")
    searcher.suggest("t1")
    study, proposed = internals.searcher_study(searcher.__dict__)
    assert isinstance(study, optuna.Study) and list(proposed) == ["t1"], WHERE
    assert internals.searcher_study(None) == (None, {})


def test_the_mlflow_callback_the_dataset_copy_and_the_data_context_are_where_ferlab_reads_them():
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.data import Dataset, DataContext

    assert "self._trial_runs[trial]" in inspect.getsource(MLflowLoggerCallback.log_trial_result), WHERE
    assert "_deep_copy" in inspect.signature(Dataset.copy).parameters, WHERE
    context = DataContext.get_current()
    before = context.target_max_block_size, context.use_datasource_v2
    with internals.data_context(1234):
        assert (context.target_max_block_size, context.use_datasource_v2) == (1234, False), WHERE
    assert (context.target_max_block_size, context.use_datasource_v2) == before


PRIVATE = re.compile(r"\.(_local_tuner|_tune_config|_brackets|_time_attr|_experiment_analysis|_execution_idx|"
                     r"_logical_plan|_storage|_trial_id|_trial_runs|_context)\b|_deep_copy|\"_ot_|use_datasource_v2")


def _ferlab_modules():
    import pathlib

    root = pathlib.Path(internals.__file__).parent
    return sorted(str(p.relative_to(root.parent)) for p in root.rglob("*.py") if p.name != "internals.py")


@pytest.mark.parametrize("path", _ferlab_modules())
def test_no_private_ray_or_optuna_attribute_outside_internals(path):
    import pathlib

    source = (pathlib.Path(internals.__file__).parent.parent / path).read_text()
    found = PRIVATE.findall(source)
    assert not found, f"{path} reads {found}: move it to ferlab/internals.py"
