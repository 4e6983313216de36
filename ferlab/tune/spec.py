"""What a sweep or an ablation runs: the study, the data, the trials' fixed settings per config section, and the
resources, validated before Ray starts.

The spec itself reaches every trial driver (`tune.with_parameters`), so this module imports no model code at module
level: unpickling a spec must not load timm and the models into a process that only builds a TorchTrainer.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from ferlab import storage
from ferlab.config import TrainConfig, build
from ferlab.studies import DEFAULT, get_study
from ferlab.studies.base import SECTIONS


NAME = re.compile(r"[A-Za-z0-9._-]+")  # a sweep's name: one folder under the storage


@dataclass(frozen=True)
class SweepSpec:
    data: str  # shard folder (local path or URI)
    study: str = DEFAULT  # which paper's knobs are searched (ferlab.studies)
    preset: str = ""  # model registry name; "" = the study's CPU preset
    samples: int = 8  # Tune trials
    epochs: int = TrainConfig.epochs  # max epochs per trial (ASHA may stop a trial earlier)
    grace_period: int = 2  # ASHA: epochs every trial gets before it can be stopped
    workers_per_trial: int = 1  # Ray Train workers (DDP ranks) per trial
    gpus_per_trial: float = 0.0  # GPUs per trial, split evenly over its workers; 0 = CPU only
    cpus_per_worker: float = 1.0  # logical CPUs per training worker (also its torch threads)
    storage: str = "~/ferlab_results"  # Ray Tune storage path (a local folder or a remote URI such as s3://)
    name: str = ""  # experiment name under storage; resume finds it by this name ("" = sweep_<study>)
    seed: int = 0  # TPE sampler seed and training seed
    # The trials' fixed settings, one dict per section of the nested trial config; a study knob given here is
    # fixed, not searched.
    model: dict = field(default_factory=dict)  # model config fields
    train: dict = field(default_factory=dict)  # TrainConfig fields
    settings: dict = field(default_factory=dict)  # the study's own section (MVT: mask_ratio, mgn_epochs)
    pretrained: dict = field(default_factory=dict)  # local weight files by the model's PRETRAINED keys (not searched)
    max_concurrent: int = 0  # 0 = as many as the cluster holds
    limit: int = 0  # use only the first `limit` rows of each split (smoke runs); 0 = all
    evaluate_paper_point: bool = True  # try the paper's setting first
    folds: int = 0  # k-fold protocol (an ablation's cells once per fold, from shards prepared with --folds); 0 = off
    eval_data: dict = field(default_factory=dict)  # name -> shard folder: other data sets every trial is tested on
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
        if storage.is_remote(self.lock_dir):
            raise ValueError(f"--lock-dir {self.lock_dir}: a local or NFS folder (it holds the locks a bucket cannot)")
        if not NAME.fullmatch(self.name) or ".." in self.name:  # a folder under the storage, never beside it
            raise ValueError(f"--name {self.name!r}: a plain name (letters, digits, '.', '_', '-'; no '/' or '..'): "
                             f"the sweep's folder under {self.storage}")
        study = get_study(self.study)
        object.__setattr__(self, "preset", self.preset or study.presets[0])
        # Fail before Ray starts: every section must build, and every knob must be known.
        model_config(self.preset, **self.model)
        if any(self.pretrained.values()):  # a file that does not fit fails now, naming the file and the keys
            from ferlab.models import create_model

            create_model(self.preset, pretrained=self.pretrained, **self.model)
        tc = build(TrainConfig, self.train_config(), "train")
        if tc.global_batch % self.workers_per_trial:  # the recipe's global batch must be what the trial trains
            raise ValueError(f"train.global_batch={tc.global_batch} does not divide over {self.workers_per_trial} "
                             f"workers per trial: choose a divisor of it, or --batch-size per worker")
        study.check_study_section(self.settings)
        if self.samples < 1 or self.epochs < 1 or self.workers_per_trial < 1:
            raise ValueError("samples, epochs and workers_per_trial must be >= 1")
        if self.gpus_per_trial < 0 or self.cpus_per_worker <= 0:
            raise ValueError("gpus_per_trial must be >= 0 and cpus_per_worker > 0")

    def saved(self) -> dict:
        """The spec as run.json and --dry-run show it: every field, the Optuna database's password hidden."""
        return dataclasses.asdict(self) | {"optuna_storage": redacted(self.optuna_storage)}

    def train_config(self) -> dict:
        return self.train | {"epochs": self.epochs, "seed": self.seed}

    def sections(self) -> dict:
        """The fixed part of every trial's nested config."""
        return {"model": dict(self.model), "train": self.train_config(), "study": dict(self.settings)}

    def trial_sections(self, cell: dict) -> dict:
        """One trial's nested config: the fixed sections, then what Tune gave the trial (a searched point, or an
        ablation cell with its own seed), and the weight files (carried alongside: never searched)."""
        fixed = self.sections()
        nested = {s: fixed[s] | dict(cell.get(s) or {}) for s in SECTIONS}
        nested["train"]["seed"] = cell.get("seed", self.seed)
        nested["pretrained"] = dict(self.pretrained)
        return nested

    def train_values(self, field: str, grid: list[dict] | None = None) -> set:
        """Every value the train section's `field` takes in this sweep's trials: each grid cell's, or in a search the
        knob's search values when the study searches it, else the fixed value (or TrainConfig's default)."""
        default = getattr(TrainConfig(), field)
        if grid is not None:
            return {self.trial_sections(cell)["train"].get(field, default) for cell in grid}
        study = get_study(self.study)
        if field in study.searched_knobs(self.fixed_knobs()) and study.knob(field).section == "train":
            return set(study.knob(field).search)
        return {self.train.get(field, default)}

    def fit(self, shards) -> "SweepSpec":
        """This spec for the data it trains on (a new, validated spec): the model's class count is the shards',
        and shards prepared for a FERPlus label mode train with that mode unless the spec chose one."""
        from ferlab.models import model_config

        model, train = dict(self.model), dict(self.train)
        if shards.classes and len(shards.classes) != model_config(self.preset, **self.model).num_classes:
            model["num_classes"] = len(shards.classes)
        mode = shards.manifest.get("source", {}).get("label_mode")
        if mode and "label_mode" not in train:
            train["label_mode"] = mode
        return self if (model, train) == (self.model, self.train) else dataclasses.replace(self, model=model,
                                                                                             train=train)

    def fixed_knobs(self) -> dict:
        """{knob: value} of the study's knobs that this spec fixes."""
        return get_study(self.study).flatten(self.sections())


def redacted(url: str) -> str:
    """A database URL without its password (for the console, run.json and --dry-run)."""
    if not url:
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: refused before Ray starts (ferlab.tune.sweep)
        return url


def _expand(path: str) -> str:
    return storage.normalize(path)
