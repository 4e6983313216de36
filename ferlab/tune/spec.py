"""What a sweep or an ablation runs: the study, the data, the trials' fixed settings per config section, and the
resources, validated before Ray starts.

The spec itself reaches every trial driver (`tune.with_parameters`), so this module imports no model code at module
level: unpickling a spec must not load timm and the models into a process that only builds a TorchTrainer.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field

from ferlab import storage
from ferlab.config import TrainConfig, TrialConfig, build
from ferlab.studies import DEFAULT, get_study


NAME = re.compile(r"[A-Za-z0-9._-]+")  # a sweep's name: one folder under the storage


@dataclass(frozen=True)
class SweepSpec:
    data: str  # shard folder from `ferlab synth` or `ferlab prepare` (a local path or a URI); "" = SynthFER
    study: str = DEFAULT  # which paper's knobs are searched (ferlab.studies)
    preset: str = ""  # model preset (`ferlab models` lists them); "" = the study's CPU preset
    samples: int = 8  # trials of the search
    epochs: int = TrainConfig.epochs  # max epochs per trial (ASHA may stop a trial earlier)
    grace_period: int = 2  # ASHA: epochs every trial gets before it can be stopped
    workers_per_trial: int = 1  # Ray Train workers (DDP ranks) per trial
    gpus_per_trial: float = 0.0  # GPUs per trial, split evenly over its workers (0 = CPU: the same command runs)
    # logical CPUs per training worker (also its torch threads); the runner's default: all but the data share on a
    # local Ray, 1 on a cluster or with GPUs
    cpus_per_worker: float = 1.0
    storage: str = "~/ferlab_results"  # Ray Tune's storage: a local folder or a remote URI such as s3://BUCKET/PATH
    name: str = ""  # the sweep's folder under the storage; --resume finds it by this name ("" = sweep_<study>)
    seed: int = 0  # data, sampler and (first) training seed
    # The trials' fixed settings, one dict per section of the nested trial config; a study knob given here is
    # fixed, not searched.
    model: dict = field(default_factory=dict)  # model config fields
    train: dict = field(default_factory=dict)  # TrainConfig fields
    settings: dict = field(default_factory=dict)  # the study's own section (MVT: mask_ratio, mgn_epochs)
    pretrained: dict = field(default_factory=dict)  # local weight files by the model's PRETRAINED keys (not searched)
    max_concurrent: int = 0  # trials at once (0 = what the cluster holds; on a cluster the autoscaler adds nodes)
    limit: int = 0  # use only the first N faces of each split (quick checks); 0 = all
    evaluate_paper_point: bool = True  # try the paper's setting first
    folds: int = 0  # k-fold protocol (an ablation's cells once per fold, from shards prepared with --folds); 0 = off
    # cross-data-set evaluation, NAME=SHARDS (repeatable): every trial is tested on another prepared data set too,
    # its classes mapped onto the training set's by name
    eval_data: dict = field(default_factory=dict)
    # A local or NFS folder that holds the sweep's and the MGN stage's locks instead of the storage: for a store
    # that ignores conditional writes (ferlab.lock); every node must see the same folder. "" = on the storage.
    lock_dir: str = ""
    # A database URL Optuna takes (postgresql://USER@HOST/DB, mysql+pymysql://..., sqlite:///FILE) that holds the
    # search's study, open to optuna-dashboard while the sweep runs. "" = SQLite beside the Tune experiment on local
    # or shared storage, and in memory (saved with Tune's state) when the storage is a bucket.
    optuna_storage: str = ""

    def __post_init__(self):
        from ferlab.models import model_config

        object.__setattr__(self, "storage", _expand(self.storage))  # frozen: normalised once, here
        object.__setattr__(self, "name", self.name or f"sweep_{self.study}")
        object.__setattr__(self, "lock_dir", _expand(self.lock_dir) if self.lock_dir else "")
        for knob, low in (("samples", 1), ("epochs", 1), ("grace_period", 1), ("workers_per_trial", 1), ("limit", 0),
                          ("max_concurrent", 0), ("folds", 0), ("gpus_per_trial", 0)):
            if getattr(self, knob) < low:
                raise ValueError(f"--{knob.replace('_', '-')} {getattr(self, knob)}: must be >= {low}")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"--cpus-per-worker {self.cpus_per_worker}: must be > 0")
        if storage.is_remote(self.lock_dir):
            raise ValueError(f"--lock-dir {self.lock_dir}: a local or NFS folder (it holds the locks a bucket cannot)")
        if not NAME.fullmatch(self.name) or ".." in self.name:  # a folder under the storage, never beside it
            raise ValueError(f"--name {self.name!r}: a plain name (letters, digits, '.', '_', '-'; no '/' or '..'): "
                             f"the sweep's folder under {self.storage}")
        study = get_study(self.study)
        object.__setattr__(self, "preset", self.preset or study.presets[0])
        # Fail before Ray starts: every section must build, and every knob must be known (built once, kept).
        model_config(self.preset, **self.model)
        tc = self.train_cfg
        if tc.global_batch % self.workers_per_trial:  # the recipe's global batch must be what the trial trains
            raise ValueError(f"train.global_batch={tc.global_batch} does not divide over {self.workers_per_trial} "
                             f"workers per trial: choose a divisor of it, or --batch-size per worker")
        self.study_cfg  # noqa: B018 (built: validated)

    # The sections as config objects, built once (a frozen dataclass keeps them in its __dict__; not fields, so
    # run.json keeps the fields the user set). Not the model's: unpickling it would load the models into every
    # trial driver (this module's docstring).
    @functools.cached_property
    def train_cfg(self) -> TrainConfig:
        """The fixed train section as a TrainConfig (a trial replaces what its cell varies, and its seed)."""
        return build(TrainConfig, self.train_config(), "train")

    @functools.cached_property
    def study_cfg(self):
        """The study section as the study's config object (None for a study without one)."""
        return get_study(self.study).check_study_section(self.settings)

    def check_weights(self) -> None:
        """Build the model with the weight files once, before Ray starts: a file that does not fit fails, naming the
        file and the keys (the runner calls it once; a spec derived with dataclasses.replace does not read them
        again)."""
        if any(self.pretrained.values()):
            from ferlab.models import create_model

            create_model(self.preset, pretrained=self.pretrained, **self.model)

    def saved(self) -> dict:
        """The spec as run.json and --dry-run show it: every field, the Optuna database's password hidden."""
        return dataclasses.asdict(self) | {"optuna_storage": storage.redacted(self.optuna_storage)}

    def train_config(self) -> dict:
        return self.train | {"epochs": self.epochs, "seed": self.seed}

    def sections(self) -> dict:
        """The fixed part of every trial's nested config."""
        return {"model": dict(self.model), "train": self.train_config(), "study": dict(self.settings)}

    def trial_config(self, cell: dict, **run) -> TrialConfig:
        """One trial's config: the fixed sections with what Tune gave the trial (a searched point, or an ablation
        cell with its own seed) replaced in, as config objects; `run`: the other TrialConfig fields. The weight
        files are carried alongside: never searched."""
        study = dataclasses.replace(self.study_cfg, **cell["study"]) if cell.get("study") else self.study_cfg
        train = dataclasses.replace(self.train_cfg, **(cell.get("train") or {}), seed=cell.get("seed", self.seed))
        return TrialConfig(preset=self.preset, train=train, model=self.model | (cell.get("model") or {}),
                           study=study, pretrained=dict(self.pretrained), **run)

    def train_values(self, field: str, grid: list[dict] | None = None) -> set:
        """Every value the train section's `field` takes in this sweep's trials: each grid cell's, or in a search the
        knob's search values when the study searches it, else the fixed value (or TrainConfig's default)."""
        default = getattr(self.train_cfg, field)
        if grid is not None:
            return {getattr(self.trial_config(cell).train, field) for cell in grid}
        study = get_study(self.study)
        if field in study.searched_knobs(self.fixed_knobs()) and study.knob(field).section == "train":
            return set(study.knob(field).search)
        return {self.train.get(field, default)}

    def fits(self, shards) -> bool:
        """Whether this spec was built for these shards (class count, FERPlus label mode): fit_sections."""
        mode = shards.manifest.get("source", {}).get("label_mode")
        return fit_sections(self.preset, self.model, self.train, shards.classes, mode) == (self.model, self.train)

    def fixed_knobs(self) -> dict:
        """{knob: value} of the study's knobs that this spec fixes."""
        return get_study(self.study).flatten(self.sections())


def _expand(path: str) -> str:
    return storage.normalize(path)


def fit_sections(preset: str, model: dict, train: dict, classes, label_mode: str | None) -> tuple[dict, dict]:
    """The model and train sections for the data they train on: the model's class count is the data's, and shards
    prepared for a FERPlus label mode train with that mode unless the train section chose one."""
    from ferlab.models import model_config

    model, train = dict(model), dict(train)
    if classes and len(classes) != model_config(preset, **model).num_classes:
        model["num_classes"] = len(classes)
    if label_mode and "label_mode" not in train:
        train["label_mode"] = label_mode
    return model, train
