"""One Tune trial: the Train V2 driver that builds a `TorchTrainer` for the trial's configuration and fits it.

Train V2 (on by default in Ray 2.60) does not accept `Tuner(TorchTrainer(...))`. The supported pattern, used here:
each Tune trial is a small driver function that builds a `TorchTrainer` and calls `fit()`. The trainer's run is
named after the Tune trial id, so a resumed sweep finds each trial's own checkpoints, and `TuneReportCallback`
forwards rank 0's per-epoch metrics to Tune, where ASHA and Optuna see them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ferlab import storage
from ferlab.studies import get_study
from ferlab.studies.base import SECTIONS
from ferlab.train import metrics as M
from ferlab.tune.resources import worker_resources
from ferlab.tune.spec import SweepSpec

WORKER_RETRIES = 1  # a trial whose training worker dies is retried once from its newest intact checkpoint
KEEP_CHECKPOINTS = 2  # per trial: the newest two (the newest intact one is what a resume and the tables read)


@dataclass(frozen=True)
class DataFacts:
    """What the sweep learnt of its data before any trial: facts of the shards, not configuration, so they travel
    beside the spec instead of in it."""

    data_hash: str | None  # the shards' content hash (the MGN stage keys its stored MGNs by it)
    balance_factors: tuple | None  # copies per class of class-balanced up-sampling, None without it


def train_worker(config: dict):
    """The trainer's function: the training loop, imported only in the training workers. The trial driver holds the
    function to pass it on; importing the loop there would load timm and the models (~2 s of CPU) into every trial
    driver for nothing. `config`: {"trial": the trial's TrialConfig}."""
    from ferlab.train.loop import train_loop_per_worker

    train_loop_per_worker(config)


def trial_driver(config: dict, *, datasets: dict, spec: SweepSpec, facts: DataFacts, verbose: bool = False):
    """Build and fit a TorchTrainer for this trial; the study's hook runs first (MVT: the MGN stage). `config` is
    what Tune gave the trial, `spec` the sweep's validated spec itself (never a copy rebuilt as a dict), `verbose`
    Ray's own INFO lines on the console (--verbose). The training workers get one frozen TrialConfig."""
    import dataclasses

    import ray.train
    from ray import tune
    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from ferlab.data.pipeline import data_config, fold_datasets, quiet_progress, training_datasets
    from ferlab.studies.base import TrialContext
    from ferlab.train.checkpoints import newest_intact

    quiet_progress(verbose)
    started = time.time()  # the report's timeline: start-up is from here to the first epoch
    resources = worker_resources(spec.cpus_per_worker, spec.gpus_per_trial, spec.workers_per_trial)
    gpus = resources.get("GPU", 0.0)
    cell = config.get("cell", config)  # a searched point, or an ablation cell under "cell"
    cfg = spec.trial_config(cell, verbose=verbose)
    if "fold" in cell:  # k-fold: this trial trains on the other folds and is evaluated on its own
        datasets = fold_datasets(datasets, cell["fold"])
    study = get_study(spec.study)
    constants = {}  # metrics of the work before the trial, reported with every epoch
    if study.before_trial is not None:
        cfg, constants = study.before_trial(cfg, TrialContext(spec=spec, data_hash=facts.data_hash, datasets=datasets,
                                                              gpus=gpus, fold=cell.get("fold"), verbose=verbose))
    trial_id = tune.get_context().get_trial_id()
    varied = study.flatten({s: cell.get(s) or {} for s in SECTIONS})  # what Tune gave this trial
    label = ", ".join([trial_id] + [f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in varied.items()]
                      + [f"{k} {cell[k]}" for k in ("seed", "fold") if k in cell])
    runs = storage.join(spec.storage, spec.name, "train_runs")
    run_dir = storage.join(runs, trial_id)  # read from any node: a local or shared folder, or a bucket
    for attempt in range(1 + WORKER_RETRIES):
        # Rebuilt for every attempt: a retried run starts at the epoch of its newest intact checkpoint and must get
        # that epoch's block order (Train's own retry reuses the datasets, whose epoch count starts again).
        restored = newest_intact(run_dir)[1]
        trainer = TorchTrainer(
            train_worker,
            # the trial's config as the spec and the study's hook made it, then the run's facts
            train_loop_config={"trial": dataclasses.replace(
                cfg, eval_splits=tuple(k for k in datasets if k not in ("train", "val")),
                balance_factors=facts.balance_factors, run_dir=run_dir, label=label,
                constants=constants | {M.TRIAL_START: started},
                metric_tags={"sweep": spec.name, "trial": trial_id})},
            scaling_config=ScalingConfig(num_workers=spec.workers_per_trial, use_gpu=gpus > 0,
                                         resources_per_worker=resources),
            datasets=training_datasets(datasets, seed=cfg.train.seed,
                                       first_epoch=restored["epoch"] + 1 if restored else 0),
            dataset_config=data_config(datasets, workers=spec.workers_per_trial),
            run_config=ray.train.RunConfig(
                name=trial_id,  # stable across resume and retry; never a timestamp
                storage_path=runs,
                callbacks=[TuneReportCallback()],
                checkpoint_config=CheckpointConfig(num_to_keep=KEEP_CHECKPOINTS),
                # Retried here, not by Train. Train V2 retries a controller that cannot get resources forever by
                # default; fail instead.
                failure_config=FailureConfig(max_failures=0, controller_failure_limit=2),
                # Train's own INFO lines (each report's whole TrainingReport, checkpoint paths, worker-group start-up)
                # stay in the session's ray-train-*.log files unless --verbose
                logging_config=ray.train.LoggingConfig(log_level="INFO" if verbose else "WARNING"),
            ),
        )
        try:
            trainer.fit()
            break
        except TrainingFailedError as e:
            if attempt == WORKER_RETRIES:
                raise
            print(f"trial {trial_id}: a training worker failed ({str(e).splitlines()[0][:200]}); retrying from its "
                  f"newest intact checkpoint", flush=True)
