"""Training configuration: one dataclass, every field commented with why it exists.

Model knobs live in the model's own config (`ferlab.models`), a study's own settings in its study
(`ferlab.studies`); this holds what the training loop needs (`TrainConfig`) and what one trial's workers get
(`TrialConfig`). A sweep's sections are the fields the user set, `{"model": {...}, "train": {...}, "study": {...}}`
(what run.json records and Tune searches by name); each is validated once by building its dataclass, and a trial
gets them as config objects.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ferlab.data.labels import LABEL_MODES

# TrainConfig.relabel: "none", or the threshold function f of MVT's Eq. 6 (each curve is in ferlab.train.relabel)
RELABEL_CHOICES = ("none", "constant", "linear", "quadratic", "sigmoid")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 6  # passes over the training split
    # per worker; the global batch is batch_size * workers. Small batches = more steps, which is what a from-scratch
    # model needs on a CPU budget (SynthFER, 6 epochs: 0.55 at 32 against 0.29 at 64)
    batch_size: int = 32
    # The papers state the global batch (TransFER: 256 over two GPUs); when set, it is split evenly over the workers
    # and replaces batch_size (0 = use batch_size per worker).
    global_batch: int = 0
    optimizer: str = "adamw"  # "sgd" (the paper's, momentum 0.9) or "adamw" (faster from scratch on SynthFER)
    lr: float = 1e-3  # peak learning rate (2e-3 was unstable from scratch on SynthFER)
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.01  # decoupled for AdamW, L2 for SGD
    lr_milestones: tuple = ()  # epochs at which lr is divided by 10 (TransFER: 15 and 30 of 40)
    # A schedule in optimiser steps, as the papers state some ("we train 20K iterations ... decayed by a factor of 10
    # at 9.6K and 19.2K iterations", TransFER on AffectNet). 0 / () = off.
    max_steps: int = 0  # end training after this many steps (epochs is then a ceiling; the last epoch may end early)
    lr_milestone_steps: tuple = ()  # divide lr by 10 at these steps (the rate is then set every step)
    lr_decay: float = 0.0  # exponential decay: lr * lr_decay ** epoch (MVT "decreased at an exponential rate")
    # With neither milestones nor lr_decay the schedule is a cosine to zero (the CPU default).
    warmup_epochs: int = 0  # linear warm-up before the schedule
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    amp: bool = True  # bfloat16 autocast on CUDA; ignored on CPU where it would only slow the small models
    # Split each worker's batch into this many micro-batches, summing their gradients before one optimiser step: the
    # papers' batch 256 on one GPU whose memory holds fewer images (the result equals one step on the whole batch,
    # BatchNorm statistics aside).
    accumulate: int = 1
    compile: bool = False  # torch.compile the model (after DDP): faster steps on GPUs, minutes of compile first
    channels_last: bool = True  # on CUDA, NHWC memory for the convolutions (the IR-50 stem) that tensor cores want
    seed: int = 0  # model initialisation and shuffle order; worker rank is added
    torch_threads: int = 0  # intra-op threads per worker; 0 = the CPUs Ray gave the worker
    # Per-epoch augmentation recipe (ferlab.data.augment): "light" (flip + shift, SynthFER's cheap default),
    # "transfer" (the TransFER paper's: rotation and crop, flip, random erasing), "mvt" (erasing, flip, colour
    # jitter) or "none". Evaluation is never augmented (the papers only resize at test time).
    augment: str = "light"
    # Class-balanced up-sampling, as TransFER does for imbalanced classes: "none", "repeat" (LVIS repeat factor
    # with balance_threshold) or "full" (every class as frequent as the largest). Each epoch reports its class
    # histogram (`train_class_counts`).
    balance: str = "none"
    balance_threshold: float = 0.15  # LVIS rule: classes rarer than this share of the training set are repeated
    # FERPlus's training modes (Barsoum et al. 2016): "majority" (cross-entropy on the majority label),
    # "probability" (a label drawn from the vote distribution every step), "crossentropy" (cross-entropy against the
    # distribution), "multi_target" (-log max_k t_k p_k over the accepted classes). The sweep takes it from the
    # shards' manifest (`ferlab prepare ferplus --mode ...`); the soft modes need shards with a `soft` column.
    label_mode: str = "majority"
    # MVT's dynamic relabeling (ferlab.train.relabel): relabel a training sample when P_max - P_gt > f(P_gt) + delta
    relabel: str = "none"  # f: "none" (off), "constant" (SCN), "linear", "quadratic" or "sigmoid"
    relabel_delta: float = 0.2  # delta of Eq. 6, the threshold's lower limit (MVT: 0.2)
    relabel_start: int = 10  # the epoch relabeling starts at (MVT: "in 10-th epoch"; a CPU sweep starts earlier)
    # The curves' parameters (ferlab/train/relabel.py says what the paper fixes and what is chosen)
    relabel_scale: float = 1.0  # a: scales the linear, quadratic and sigmoid curves
    relabel_centre: float = 0.25  # c: where the sigmoid curve rises (in P_gt)
    relabel_steepness: float = 12.0  # k: how steeply the sigmoid curve rises

    def __post_init__(self):
        checked(self, "train config")

    def per_worker_batch(self, workers: int) -> int:
        return max(1, self.global_batch // workers) if self.global_batch else self.batch_size

    @staticmethod
    def choices() -> dict:
        """{field: the values it takes} of the fields that name a choice: the check and the command line use it."""
        from ferlab.data.augment import RECIPES
        from ferlab.data.balance import BALANCE

        return {"optimizer": ("sgd", "adamw"), "augment": tuple(RECIPES), "balance": tuple(BALANCE),
                "label_mode": tuple(LABEL_MODES), "relabel": RELABEL_CHOICES}

    def _check(self):
        for knob in ("epochs", "batch_size", "accumulate"):
            if getattr(self, knob) < 1:
                raise ValueError(f"{knob}={getattr(self, knob)} must be >= 1")
        if self.lr <= 0:
            raise ValueError(f"lr={self.lr} must be > 0")
        for knob, allowed in self.choices().items():
            if getattr(self, knob) not in allowed:
                raise ValueError(f"{knob}={getattr(self, knob)!r}: expected one of {tuple(allowed)}")
        if self.relabel_delta < 0:
            raise ValueError(f"relabel_delta={self.relabel_delta} is outside its range: >= 0")
        if self.relabel_scale < 0 or self.relabel_steepness <= 0 or not 0 <= self.relabel_centre <= 1:
            raise ValueError(f"relabel_scale={self.relabel_scale} (>= 0), relabel_steepness={self.relabel_steepness} "
                             f"(> 0), relabel_centre={self.relabel_centre} ([0, 1]): f must be non-negative and "
                             f"increasing")
        if not 0 < self.balance_threshold <= 1:
            raise ValueError(f"balance_threshold={self.balance_threshold} is outside its range: (0, 1]")
        if self.max_steps < 0 or any(s <= 0 for s in self.lr_milestone_steps):
            raise ValueError(f"max_steps={self.max_steps} must be >= 0 and lr_milestone_steps="
                             f"{self.lr_milestone_steps} positive")
        if not 0 <= self.lr_decay < 1 or self.global_batch < 0:
            raise ValueError(f"lr_decay={self.lr_decay} must be in [0, 1) and global_batch={self.global_batch} >= 0")


@dataclass(frozen=True)
class TrialConfig:
    """One trial as its training workers get it: built once by the trial driver (ferlab.tune.trial) from the spec
    and the trial's cell, after the study's hook, and read by the training loop (ferlab.train.loop). Frozen: nothing
    changes it on the way."""

    preset: str  # model registry name (ferlab.models)
    train: TrainConfig  # the trial's training settings, its seed included
    model: dict = dataclasses.field(default_factory=dict)  # the model config's fields that differ from the preset's
    study: object = None  # the study's own section as its config (MVT: MVTStudyConfig), None without one
    pretrained: dict = dataclasses.field(default_factory=dict)  # weight files by the model's PRETRAINED keys
    eval_splits: tuple = ()  # the extra splits every epoch is evaluated on (test, x_<name> of --eval-data)
    balance_factors: tuple | None = None  # copies per class of class-balanced up-sampling, None without it
    run_dir: str = ""  # the trial's Train run folder on the storage: its checkpoints, read from any node
    constants: dict = dataclasses.field(default_factory=dict)  # metrics of the work before the trial, every epoch
    label: str = ""  # the trial and its knobs, for the epoch line
    metric_tags: dict = dataclasses.field(default_factory=dict)  # {"sweep", "trial"} of its Ray metrics
    verbose: bool = False  # Ray Data's INFO lines on the console too


def checked(cfg, where: str) -> None:
    """Run a config dataclass's `_check`; a value of the wrong type ("abc" where a number goes) becomes one
    ValueError naming the field, instead of a TypeError from deep inside a comparison."""
    try:
        cfg._check()
    except TypeError:
        bad = [f"{f.name}={getattr(cfg, f.name)!r} (expected a number)" for f in dataclasses.fields(cfg)
               if isinstance(f.default, (int, float)) and not isinstance(f.default, bool)
               and not isinstance(getattr(cfg, f.name), (int, float))]
        raise ValueError(f"{where}: wrong type: {', '.join(bad) or 'a value'}") from None


def field_comments(cls) -> dict[str, str]:
    """{field: the comment written beside it} of a config dataclass; a comment on lines of its own above a field is
    its start (and a group's). The one place a field's meaning is written: --help and the Reference page read it."""
    import inspect
    import re

    comments, above = {}, []
    for line in inspect.getsource(cls).splitlines():
        if re.match(r"\s+#", line):
            above.append(line.strip()[1:].strip())
            continue
        m = re.match(r"\s+(\w+)\s*:\s*[^=#]+(?:=[^#]*)?(?:#\s*(.*))?$", line)
        if m:
            comments[m.group(1)] = " ".join(above + [m.group(2) or ""]).strip()
        above = []
    return comments


def build(cls, values: dict, section: str):
    """A config section from user input: an unknown field is one ValueError naming the section, the field and the
    fields there are (a dataclass alone raises a TypeError)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown field(s) {[f'{section}.{k}' for k in unknown]}; {section} has: "
                         f"{', '.join(sorted(known))}")
    return cls(**values)


def parse_field(item: str) -> dict:
    """"msad=reference" -> {"msad": "reference"}; values are Python literals when they parse as one."""
    import ast

    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ValueError(f"--set {item!r}: expected FIELD=VALUE")
    try:
        value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        pass  # a bare word stays a string
    return {key.strip(): value}
