"""A sweep: Ray Tune + OptunaSearch (TPE) + ASHA, each trial a Train V2 TorchTrainer run.

Train V2 (on by default in Ray 2.60) does not accept `Tuner(TorchTrainer(...))`. The supported pattern, used here:
each Tune trial is a small driver function (`trial_driver`) that builds a `TorchTrainer` and calls `fit()`. The
trainer's run is named after the Tune trial id, so a resumed sweep finds each trial's own checkpoints, and
`TuneReportCallback` forwards rank 0's per-epoch metrics to Tune, where ASHA and Optuna see them.

Resources (why each number is what it is):
- the trial driver only waits on its trainer: it reserves DRIVER_CPUS (a quarter CPU);
- Ray Data tasks reserve DATA_CPUS each, so data work always finds room next to the training workers;
- each training worker reserves `cpus_per_worker` CPUs and its share of `gpus_per_trial` (split evenly over the
  trial's workers: --gpus-per-trial 4 --workers-per-trial 4 is one GPU per DDP rank);
- concurrent trials = what the cluster holds of (driver + workers), and never more than its GPUs allow.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import time
from dataclasses import asdict, dataclass, field, fields

import pandas as pd

from ferlab.config import TrainConfig
from ferlab.data.pipeline import DATA_CPUS
from ferlab.models import model_config
from ferlab.tune.spaces import STUDIES

DRIVER_CPUS = 0.25
METRIC, MODE = "val_acc", "max"
SEARCHED = STUDIES["transfer"][1]
TRAIN_FIELDS = {f.name for f in fields(TrainConfig)}
OPTUNA_DB = "optuna.db"


@dataclass
class SweepSpec:
    data: str  # shard folder (local path or URI)
    preset: str = "transfer_tiny"  # model registry name
    samples: int = 8  # Tune trials
    epochs: int = 6  # max epochs per trial (ASHA may stop a trial earlier)
    grace_period: int = 2  # ASHA: epochs every trial gets before it can be stopped
    workers_per_trial: int = 1  # Ray Train workers (DDP ranks) per trial
    gpus_per_trial: float = 0.0  # GPUs per trial, split evenly over its workers; 0 = CPU only
    cpus_per_worker: float = 1.0  # logical CPUs per training worker (also its torch threads)
    storage: str = "~/ferlab_results"  # Ray Tune storage path (a local folder or a remote URI such as s3://)
    name: str = "sweep_transfer"  # experiment name under storage; resume finds it by this name
    seed: int = 0  # TPE sampler seed and training seed
    train: dict = field(default_factory=dict)  # TrainConfig overrides shared by all trials
    model: dict = field(default_factory=dict)  # model overrides for every trial; searched knobs given here are fixed
    max_concurrent: int = 0  # 0 = as many as the cluster holds
    limit: int = 0  # use only the first `limit` rows of each split (smoke runs); 0 = all
    evaluate_paper_point: bool = True  # try the paper's (B, p1, p2, stage) first
    study: str = "transfer"  # which paper's knobs are searched: "transfer" or "mvt" (see STUDIES)
    fixed: dict = field(default_factory=dict)  # searched knobs that are not model fields, fixed (MVT's m and f)
    mgn_epochs: int = 2  # MVT: epochs of the MGN stage (one stored MGN per data set, m and seed)

    def __post_init__(self):
        self.storage = _expand(self.storage)
        # Fail before Ray starts: every config must build, and every knob must be known.
        model_config(self.preset, **self.model)
        TrainConfig(**(self.train | {"epochs": self.epochs}))
        if self.study not in STUDIES:
            raise ValueError(f"study={self.study!r}: expected one of {list(STUDIES)}")
        m = self.fixed.get("mask_ratio", 0.0)
        if not isinstance(m, (int, float)) or not 0.0 <= m < 1.0:
            raise ValueError(f"mask_ratio={m!r} is outside its range: [0, 1)")
        if "relabel" in self.fixed:
            TrainConfig(relabel=self.fixed["relabel"])  # an unknown f is named here
        if self.samples < 1 or self.epochs < 1 or self.workers_per_trial < 1:
            raise ValueError("samples, epochs and workers_per_trial must be >= 1")
        if self.gpus_per_trial < 0 or self.cpus_per_worker <= 0:
            raise ValueError("gpus_per_trial must be >= 0 and cpus_per_worker > 0")

    def train_config(self) -> dict:
        return self.train | {"epochs": self.epochs, "seed": self.seed}


def _expand(path: str) -> str:
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def concurrent_trials(spec: SweepSpec, resources: dict) -> int:
    """How many trials fit at once in `resources` (ray.cluster_resources())."""
    cpus_needed = DRIVER_CPUS + spec.workers_per_trial * spec.cpus_per_worker
    by_cpu = int((resources.get("CPU", 0) - DATA_CPUS) // cpus_needed)
    n = by_cpu
    if spec.gpus_per_trial > 0:
        n = min(n, int(resources.get("GPU", 0) // spec.gpus_per_trial))
    if spec.max_concurrent:
        n = min(n, spec.max_concurrent)
    if n < 1:
        raise RuntimeError(f"one trial needs {cpus_needed} CPUs + {DATA_CPUS} for data and "
                           f"{spec.gpus_per_trial} GPUs; the cluster has {resources}")
    return n


def worker_resources(cpus_per_worker: float, gpus_per_trial: float, workers_per_trial: int) -> dict:
    """What each training worker (DDP rank) of a trial reserves: its CPUs and an even share of the trial's GPUs."""
    gpus = gpus_per_trial / workers_per_trial
    return {"CPU": cpus_per_worker} | ({"GPU": gpus} if gpus else {})


def trial_driver(config: dict, *, datasets: dict, spec: dict):
    """One Tune trial: build and fit a TorchTrainer for this configuration."""
    import ray.train
    from ray import tune
    from ray.train import CheckpointConfig, FailureConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from ferlab.data.pipeline import data_config, training_datasets
    from ferlab.train.loop import train_loop_per_worker

    resources = worker_resources(spec["cpus_per_worker"], spec["gpus_per_trial"], spec["workers_per_trial"])
    gpus = resources.get("GPU", 0.0)
    knobs = dict(config.get("cell", config))  # an ablation trial's config is its cell: knobs and seed
    seed = knobs.pop("seed", spec["seed"])
    m = knobs.pop("mask_ratio", None)
    train = spec["train"] | {k: knobs.pop(k) for k in list(knobs) if k in TRAIN_FIELDS} | {"seed": seed}
    model = spec["model"] | knobs
    tc = TrainConfig(**train)
    constants = {}  # metrics of the work before the trial, reported with every epoch (MVT: the MGN's quality)
    if m is not None:  # MVT: m selects (and if needed trains) the stored MGN; m = 0 is the model without MGN
        from ferlab.train.mgn import ensure_mgn, mgn_metrics

        model["use_mgn"] = m > 0
        if m > 0:
            model["mgn_weights"] = ensure_mgn(
                datasets, storage=spec["storage"], preset=spec["preset"], model=spec["model"], m=m,
                seed=seed, epochs=spec["mgn_epochs"], lr=tc.lr, batch_size=tc.batch_size,
                data_hash=spec["data_hash"], cpus_per_worker=spec["cpus_per_worker"], gpus=gpus, augment=tc.augment)
            constants = mgn_metrics(model["mgn_weights"])
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"preset": spec["preset"], "model": model, "train": train,
                           "eval_splits": [k for k in datasets if k not in ("train", "val")], "constants": constants},
        scaling_config=ScalingConfig(num_workers=spec["workers_per_trial"], use_gpu=gpus > 0,
                                     resources_per_worker=resources),
        datasets=training_datasets(datasets, augment=tc.augment, seed=seed, factors=spec["balance_factors"]),
        dataset_config=data_config(),
        run_config=ray.train.RunConfig(
            name=tune.get_context().get_trial_id(),  # stable across resume; never a timestamp
            storage_path=os.path.join(spec["storage"], spec["name"], "train_runs"),
            callbacks=[TuneReportCallback()],
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            # Train V2 retries a controller that cannot get resources forever by default; fail instead.
            failure_config=FailureConfig(max_failures=1, controller_failure_limit=2),
        ),
    )
    trainer.fit()


def run_sweep(spec: SweepSpec, resume: bool = False, verbose: int = 1, grid: list[dict] | None = None):
    """Run (or resume) the sweep on the Ray cluster this process is connected to.

    Without `grid`: Optuna (TPE) proposes `spec.samples` settings of the study's knobs and ASHA stops weak trials
    early; the study is kept in <storage>/<name>/optuna.db (SQLite, for optuna-dashboard). With `grid` (an ablation):
    one trial per given cell (knobs and seed), every trial runs all epochs, no searcher, no early stopping, so every
    cell of a table is trained alike. Returns (one row per trial, one row per trial and epoch)."""
    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from ferlab.data.augment import repeat_factors
    from ferlab.data.pipeline import decoded_splits, eval_split
    from ferlab.data.shards import open_shards

    shards = open_shards(spec.data)
    mcfg = model_config(spec.preset, **spec.model)
    if shards.classes and len(shards.classes) != mcfg.num_classes:
        spec.model = spec.model | {"num_classes": len(shards.classes)}
    mode = shards.manifest.get("source", {}).get("label_mode")
    if mode and "label_mode" not in spec.train:  # the shards were prepared for this FERPlus mode
        spec.train = spec.train | {"label_mode": mode}
    tc = TrainConfig(**spec.train_config())
    if tc.label_mode != "majority" and "soft" not in shards.manifest["columns"]:
        raise ValueError(f"label_mode={tc.label_mode!r} needs soft labels; {spec.data} has none (prepare FERPlus "
                         f"with --mode {tc.label_mode})")
    factors = None
    if tc.balance != "none":
        counts = [shards.manifest["counts"]["train"][c] for c in shards.classes]
        factors = repeat_factors(counts, tc.balance, tc.balance_threshold).tolist()
        expected = [round(n * r) for n, r in zip(counts, factors)]
        print(f"class balance {tc.balance!r}: repeat factors {[round(r, 2) for r in factors]}; expected images per "
              f"epoch {expected} instead of {counts} ({', '.join(shards.classes)})", flush=True)
    t0 = time.perf_counter()
    if grid is not None:
        relabels = any(cell.get("relabel", tc.relabel) != "none" for cell in grid)
    else:
        relabels = spec.study == "mvt" and (spec.fixed.get("relabel", "any") != "none" or tc.relabel != "none")
    decoded = decoded_splits(shards, mcfg.input_size, limit=spec.limit or None, soft=tc.label_mode != "majority",
                             keys=relabels, masks=spec.study == "mvt")
    decode_s = time.perf_counter() - t0

    driver_spec = asdict(spec) | {"train": spec.train_config(), "balance_factors": factors,
                                  "data_hash": shards.manifest.get("content_hash")}
    trainable = tune.with_resources(tune.with_parameters(trial_driver, datasets=decoded, spec=driver_spec),
                                    {"CPU": DRIVER_CPUS})
    path = os.path.join(spec.storage, spec.name)
    run_config = tune.RunConfig(name=spec.name, storage_path=spec.storage, verbose=verbose,
                                failure_config=tune.FailureConfig(max_failures=1))
    concurrent = concurrent_trials(spec, ray.cluster_resources())
    if resume and tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable, resume_errored=True)
    elif grid is not None:
        tuner = tune.Tuner(
            trainable, param_space={"cell": tune.grid_search(grid)}, run_config=run_config,
            tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, max_concurrent_trials=concurrent))
    else:
        space, searched, paper = STUDIES[spec.study]
        fixed = {k: v for k, v in (spec.model | spec.fixed).items() if k in searched}
        point = {k: v for k, v in paper.items() if k not in fixed}
        searcher = OptunaSearch(
            space=functools.partial(space, fixed=fixed), metric=METRIC, mode=MODE,
            sampler=optuna.samplers.TPESampler(seed=spec.seed),
            points_to_evaluate=[point] if spec.evaluate_paper_point and point else None,
            **optuna_storage(spec),
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                metric=METRIC, mode=MODE, search_alg=searcher, num_samples=spec.samples,
                scheduler=ASHAScheduler(time_attr="training_iteration", max_t=spec.epochs,
                                        grace_period=min(spec.grace_period, spec.epochs), reduction_factor=2),
                max_concurrent_trials=concurrent,
            ),
            run_config=run_config,
        )
    results = tuner.fit()
    table = results_table(results, STUDIES[spec.study][1] if grid is None else None)
    table.attrs["decode_s"] = decode_s
    table.attrs["data_manifest_hash"] = shards.manifest.get("content_hash")
    table.attrs["eval_split"] = eval_split(shards)
    table.attrs["dataset"] = shards.dataset
    table.attrs["classes"] = list(shards.classes)
    return table, history_table(results)


def optuna_storage(spec: SweepSpec) -> dict:
    """OptunaSearch's storage arguments: an SQLite file next to the Tune experiment (local storage only; a remote
    storage path keeps Optuna in memory). Each fresh sweep is its own study in that file; a resumed sweep keeps its
    study through the searcher's saved state."""
    if "://" in spec.storage:
        return {}
    import optuna

    folder = os.path.join(spec.storage, spec.name)
    os.makedirs(folder, exist_ok=True)
    return {"storage": optuna.storages.RDBStorage(f"sqlite:///{os.path.join(folder, OPTUNA_DB)}"),
            "study_name": f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"}


def results_table(results, searched=SEARCHED) -> pd.DataFrame:
    """One row per trial: its knobs (`searched`; None = every key of the trial's config), validation accuracy at
    its best and last epoch, every other evaluated split at the epoch chosen on validation, at the last epoch and at
    its own best epoch (what papers that pick the best epoch on test report), epochs run and status."""
    rows = []
    for r in results:
        cfg = r.config or {}
        cfg = cfg.get("cell", cfg)
        hist = r.metrics_dataframe
        row = {"trial": _trial_id(r)}
        row.update({k: cfg.get(k) for k in (searched if searched is not None else cfg)})
        if hist is not None and METRIC in hist:
            best_i = hist[METRIC].idxmax()
            row.update(best_val_acc=hist[METRIC].max(), best_epoch=int(hist.loc[best_i, "epoch"]),
                       best_val_mean_class_acc=hist.loc[best_i, "val_mean_class_acc"],
                       last_val_acc=hist[METRIC].iloc[-1],
                       last_val_mean_class_acc=hist["val_mean_class_acc"].iloc[-1],
                       epochs=int(hist["epoch"].max()),
                       train_images_per_s=hist["train_images_per_s"].mean())
            for col in hist.columns:  # other evaluated splits
                if col.endswith("_acc") and not col.startswith(("val_", "best_")):
                    row[f"{col}_at_best"] = hist.loc[best_i, col]  # at the epoch chosen on validation
                    row[f"{col}_last"] = hist[col].iloc[-1]
                    row[f"{col}_max"] = hist[col].max()  # the best epoch on this split itself
            for col in ("relabeled", "relabel_precision", "relabel_recall", "mgn_nuisance_precision",
                        "mgn_nuisance_chance"):  # MVT: the relabeling at the end, the MGN's mask quality
                if col in hist:
                    row[col] = hist[col].iloc[-1]
            row["checkpoint_path"] = hist["checkpoint_path"].iloc[-1] if "checkpoint_path" in hist else None
            row["node_id"] = hist["node_id"].iloc[-1] if "node_id" in hist else None  # rank 0's Ray node
        row["status"] = "error" if r.error else "ok"
        rows.append(row)
    df = pd.DataFrame(rows)
    return df.sort_values("best_val_acc", ascending=False, na_position="last").reset_index(drop=True) \
        if "best_val_acc" in df else df


def _trial_id(result) -> str:
    return (result.metrics or {}).get("trial_id", os.path.basename(result.path))


def history_table(results) -> pd.DataFrame:
    """Every trial's per-epoch metrics (numbers only; confusion matrices as JSON text), one row per (trial, epoch):
    what convergence curves and the best trial's confusion matrix are drawn from."""
    frames = []
    for r in results:
        hist = r.metrics_dataframe
        if hist is None or hist.empty:
            continue
        keep = [c for c in hist.columns if c == "confusion" or c.endswith("_confusion")
                or (pd.api.types.is_numeric_dtype(hist[c]) and c not in ("timestamp", "pid", "done")
                    and not c.startswith("config/"))]  # the trial's knobs are in trials.csv
        frame = hist[keep].copy()
        frame.insert(0, "trial", _trial_id(r))
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def to_markdown(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    """A GitHub Markdown table. Written here (a dozen lines) to avoid pandas' optional `tabulate` dependency."""
    def cell(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else format(v, floatfmt)
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def write_results(df: pd.DataFrame, spec: SweepSpec, results_dir: str, extra: dict | None = None,
                  history: pd.DataFrame | None = None) -> dict:
    """trials.csv/md, history.csv (per epoch) and run.json (resolved spec, git commit, data manifest hash, data set,
    the Tune and Optuna storage) in results_dir: everything `ferlab report` reads."""
    os.makedirs(results_dir, exist_ok=True)
    paths = {"csv": os.path.join(results_dir, "trials.csv"), "md": os.path.join(results_dir, "trials.md"),
             "run": os.path.join(results_dir, "run.json")}
    df.to_csv(paths["csv"], index=False)
    if history is not None:
        paths["history"] = os.path.join(results_dir, "history.csv")
        history.to_csv(paths["history"], index=False)
    with open(paths["md"], "w") as f:
        f.write(f"# {spec.name}: {spec.preset} on {spec.data}\n\n{to_markdown(df)}\n")
    experiment = os.path.join(spec.storage, spec.name)
    run = {"spec": asdict(spec), "model_config": model_config(spec.preset, **spec.model).to_dict(),
           "train_config": asdict(TrainConfig(**spec.train_config())), "git_commit": _git_commit(),
           "data_manifest_hash": df.attrs.get("data_manifest_hash"), "dataset": df.attrs.get("dataset"),
           "classes": df.attrs.get("classes"),
           "eval_split": df.attrs.get("eval_split"), "tune_experiment": experiment,
           "optuna_db": os.path.join(experiment, OPTUNA_DB) if "://" not in experiment else None} | (extra or {})
    with open(paths["run"], "w") as f:
        json.dump(run, f, indent=2, default=str)
    return paths


def _git_commit() -> str | None:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def init_ray(address: str | None = None, num_cpus: int | None = None, object_store_mb: int = 1024):
    """Connect to a cluster (`address`, or RAY_ADDRESS) or start a local Ray sized for this machine.

    The dashboard stays on even for tests: Train V2's placement-group cleaner asks the State API (served by the
    dashboard) whether a trial's controller is gone, and without it the workers of trials that ASHA stops are
    never freed.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        return
    ray.init(num_cpus=num_cpus or os.cpu_count(), object_store_memory=object_store_mb * 1024 * 1024,
             include_dashboard=True)
