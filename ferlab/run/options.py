"""An experiment file's command line, generated from the config dataclasses: a flag per field, the field's comment its
help, the field's (or the experiment file's) value its default, the field's type its type; each Study knob adds the
flag its Knob declares. Nothing here restates a default or a meaning.

Generated with argparse by hand rather than with tyro or simple_parsing: a run must know which options were *given*
(they win over the recipe, which wins over the experiment file: PRECEDENCE), which those libraries lose by filling in
each field's default; and a flag's default here is the experiment file's value, not the dataclass's.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from dataclasses import dataclass, field

from ferlab import storage
from ferlab.config import TrainConfig, field_comments, parse_field
from ferlab.data.synth import SYNTH_N
from ferlab.pretrained import FAMILIES
from ferlab.studies import get_study
from ferlab.studies.base import SECTIONS
from ferlab.tune.resources import OBJECT_STORE_MB
from ferlab.tune.spec import SweepSpec

KINDS = ("search", "ablation", "single")
# Where a train field's value comes from, strongest first ("paper point": a single run's knob at the paper's value)
PRECEDENCE = ("explicit", "recipe", "experiment file", "paper point", "default")
SHARED_TRAIN = ("batch_size", "lr", "augment", "balance")  # the train fields every experiment file has a flag for


@dataclass(frozen=True)
class ExperimentConfig:
    """What an experiment file declares. Every field's default is the default of every experiment; a file lists only
    what differs. Sections are plain dicts of a section's fields, validated by the section's dataclass when built."""

    paper: str  # the Study whose knobs and tables these are: "transfer" or "mvt" (ferlab.studies)
    name: str  # under --storage, and results/<name>; "_smoke" is appended by --smoke
    # "search": Optuna (TPE) + ASHA over the study's knobs; "ablation": the study's tables, a grid of cells, every
    # cell trained alike; "single": one training of the paper's point for the data set (every knob fixed)
    kind: str = "search"
    samples: int = 8  # search: trials
    epochs: int | None = None  # epochs per trial (the recipe's wins over this: --recipe paper trains the paper's)
    grace_period: int = 2  # search: ASHA's epochs before a trial may be stopped
    tables: str = field(default="all", metadata={"flag": "table"})  # ablation: the study's tables (a,b) or all
    seeds: int = 1  # ablation: trainings per cell
    synth_n: int = SYNTH_N  # SynthFER faces when no --data is given (--smoke: fewer)
    label_noise: float = 0.0  # SynthFER's share of wrong training labels (MVT's relabeling needs some)
    cpus_per_worker: float | None = None  # None: all but the data share on a local Ray, 1 on a cluster or with GPUs
    train: dict = field(default_factory=dict)  # TrainConfig fields that differ (each gets a flag)
    study: dict = field(default_factory=dict)  # the study section's fields that differ (each gets a flag)
    model: dict = field(default_factory=dict)  # model config fields that differ
    prepare: str = ""  # a data set `ferlab prepare` makes from --root into the cache when no --data is given
    root: str = ""  # the folder of that data set `ferlab prepare` reads when no --data is given

    def __post_init__(self):
        get_study(self.paper)  # an unknown study fails here, naming the ones there are
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r}: expected one of {KINDS}")


@dataclass(frozen=True)
class RunOptions:
    """How and where an experiment runs (not what it trains): from the command line, never changed after."""

    results_dir: str  # where trials.csv, history.csv, run.json and the report go
    resume: bool = False  # continue the run of the same --name and --storage
    address: str | None = None  # Ray cluster address (default: RAY_ADDRESS, else a local Ray)
    num_cpus: int | None = None  # CPUs of a local Ray (default: the machine's cores)
    # object store of a local Ray, in MiB (data sets whose decoded splits need more than half of it are streamed and
    # decoded every epoch)
    object_store_mb: int = OBJECT_STORE_MB
    # log every trial (config, per-epoch metrics, its files) to "mlflow" (SQLite in ./mlruns/mlflow.db unless
    # --track-uri) and/or "wandb" (offline without WANDB_API_KEY); needs ferlab[mlflow|wandb] (repeatable)
    track: tuple = ()
    track_uri: str | None = None  # MLflow's tracking URI (default: sqlite:///mlruns/mlflow.db)
    # training recipe: cpu (the laptop defaults) or paper (the paper's optimiser, schedule, batch, epochs and
    # augmentation, per data set); explicit options win over it
    recipe: str = "cpu"
    confirm: int = 0  # after the search, re-train its K best settings with fresh seeds and report mean +/- std (0: off)
    confirm_seeds: int = 3  # fresh seeds per confirmed setting
    # Ray Train's and Ray Data's own INFO lines on the console too (each report, checkpoint paths, execution plans);
    # they are always in the Ray session's log files
    verbose: bool = False
    prepare: tuple = ()  # (source, root, size) to prepare into the spec's data once Ray is up, when not cached

    def __post_init__(self):
        for knob, low in (("object_store_mb", 75), ("confirm", 0), ("confirm_seeds", 1)):
            if getattr(self, knob) < low:
                raise ValueError(f"--{knob.replace('_', '-')} {getattr(self, knob)}: must be >= {low}")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ValueError(f"--num-cpus {self.num_cpus}: must be >= 1")


def add_fields(p, cls, names, shown: dict | None = None, section: str = "", choices: dict | None = None) -> None:
    """A flag per field of the dataclass `cls` in `names`: `--field-name` (or the field's metadata "flag"), its
    comment as help, its type's parser; `shown`: the default to print when it is not the field's (the experiment
    file's value, or words). Every flag's parsed default is None, "not given", so the layers below it still apply;
    `section`: the dest is "section.field" (a trial config section's field)."""
    hints, meaning = typing.get_type_hints(cls), field_comments(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    choices = {**(TrainConfig.choices() if cls is TrainConfig else {}), **(choices or {})}
    for name in names:
        f = fields[name]
        default = (shown or {}).get(name, f.default)
        kind = next((t for t in typing.get_args(hints[name]) if t is not type(None)), hints[name])
        kw = {"dest": f"{section}.{name}" if section else name, "default": None}
        if kind is bool:
            kw["action"] = "store_true"
        elif kind in (tuple, list, dict):
            kw |= {"action": "append", "metavar": name.upper()}
        else:
            kw |= {"type": None if kind is str else kind, "choices": choices.get(name),
                   "metavar": None if name in choices else name.upper()}
        silent = default is None or default is False or default is dataclasses.MISSING or default == ""
        note = "" if silent or kind in (tuple, list, dict) else f" (default {default})"
        p.add_argument("--" + f.metadata.get("flag", name).replace("_", "-"),
                       help=(meaning.get(name, "") + note).replace("%", "%%"), **kw)


def given(args, cls=None) -> dict:
    """{field: value} of the options given on the command line; with `cls`, only that dataclass's fields (the flat
    ones); without it, {section: {field: value}} of the trial config sections' ("section.field" dests)."""
    values = {k: v for k, v in vars(args).items() if v is not None}
    if cls is not None:
        return {f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values}
    out = {s: {} for s in SECTIONS}
    for key, value in values.items():
        section, dot, name = key.partition(".")
        if dot:
            out[section][name] = value
    return out


def parser(config: ExperimentConfig, doc: str, prog: str):
    """An experiment file's command line: its own fields (the kind's), the study's options, where it runs."""
    from ferlab.console import Parser

    p = Parser(prog=prog, description=(doc or "").split("\n\n")[0],
               formatter_class=argparse.RawDescriptionHelpFormatter)
    shown = dataclasses.asdict(config) | {"epochs": config.epochs or f"the recipe's, else {TrainConfig.epochs}"}
    own = ["epochs"] + {"search": ["samples", "grace_period"], "ablation": ["tables", "seeds"]}.get(config.kind, [])
    add_fields(p, ExperimentConfig, own + ["label_noise"] * bool(config.label_noise) + ["root"] * bool(config.prepare),
               shown)
    if config.kind == "ablation":
        add_fields(p, SweepSpec, ["folds"])
    study = get_study(config.paper)
    add_fields(p, SweepSpec, ["preset"], {"preset": f"{study.presets[0]}; the study's: {', '.join(study.presets)}"})
    add_fields(p, RunOptions, ["recipe"], choices={"recipe": ("cpu", *study.recipes)})
    # the train fields every experiment has, then those the file sets (its value their default), then its study fields
    add_fields(p, TrainConfig, SHARED_TRAIN,
               {"lr": "the recipe's, else TrainConfig's", "augment": "the recipe's; on the cpu recipe, the paper's "
                "with --data, light on SynthFER", "balance": "the recipe's, else none"}, section="train")
    add_fields(p, TrainConfig, [k for k in config.train if k not in SHARED_TRAIN],
               config.train, section="train")
    if config.study:
        add_fields(p, study.study_config, list(config.study), config.study, section="study")
    if config.kind == "search":  # a knob's flag fixes it instead of searching it; type and choices from the knob
        for k in study.knobs:
            if k.search:
                p.add_argument(f"--{(k.flag or k.name).replace('_', '-')}", dest=f"{k.section}.{k.name}",
                               type=k.parse, choices=k.choices, metavar=None if k.choices else k.name.upper(),
                               help=f"fix {k.help} instead of searching it")
    for key in study.weight_files:
        p.add_argument(f"--{key}-weights", help=f"{FAMILIES[key].about} (a path every worker can read, or a URI)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="any config field: model.FIELD (or plain FIELD), train.FIELD or study.FIELD, e.g. "
                        "--set model.msad=reference --set train.label_smoothing=0.1 (repeatable)")
    if config.kind == "search":
        add_fields(p, RunOptions, ["confirm", "confirm_seeds"])
    add_fields(p, ExperimentConfig, ["synth_n"], shown)
    add_fields(p, SweepSpec, ["data", "limit", "workers_per_trial", "gpus_per_trial", "cpus_per_worker",
                              "max_concurrent", "seed", "storage", "lock_dir", "optuna_storage", "name", "eval_data"],
               {"cpus_per_worker": None, "name": f"{config.name}[_smoke]"})
    add_fields(p, RunOptions, ["results_dir", "resume", "address", "num_cpus", "object_store_mb", "track",
                               "track_uri", "verbose"], {"results_dir": "results/<name>"})
    p.add_argument("--smoke", action="store_true", help="the experiment's smoke(): the smallest run that exercises "
                                                        "every piece")
    p.add_argument("--dry-run", action="store_true", help="print the resolved configuration (run.json's spec, the "
                   "train config and the run options) as JSON on standard output and the recipe's trace on standard "
                   "error, then exit: no Ray, no data prepared")
    return p


def eval_data(items) -> dict:
    """--eval-data NAME=SHARDS items, each folder checked before Ray starts."""
    from ferlab.data.shards import open_shards

    out = {}
    for item in items or ():
        name, sep, path = item.partition("=")
        if not sep or not name or not path or not name.isidentifier():
            raise ValueError(f"--eval-data {item!r}: expected NAME=SHARDS with NAME a plain word")
        open_shards(path)  # a missing or malformed folder fails here, naming the file
        out[name] = path
    return out


def sections(args, config: ExperimentConfig, recipe: str, dataset: str | None) -> tuple[dict, dict]:
    """({"model", "train", "study", "pretrained"} fixed settings, {train field: where its value came from}), in order
    of precedence (PRECEDENCE): the options given (the section flags, the knob flags, then --set) over the recipe's
    value for the data set over the experiment file's over the defaults."""
    study = get_study(config.paper)
    explicit = given(args)
    for item in args.set:
        (key, value), = parse_field(item).items()
        section, _, name = key.rpartition(".")
        if (section or "model") not in SECTIONS:
            raise ValueError(f"--set {item!r}: the section must be one of {', '.join(SECTIONS)}")
        explicit[section or "model"][name] = value
    train = explicit["train"]
    from_recipe = {k: v for k, v in study.recipe(recipe, dataset).items() if k != "epochs"}
    if "batch_size" in train and from_recipe.get("global_batch"):
        if "global_batch" in train:
            raise ValueError(f"--batch-size {train['batch_size']} (per worker) and train.global_batch="
                             f"{train['global_batch']}: give one of them")
        train["global_batch"] = 0  # an explicit per-worker batch wins over the recipe's global batch
    out, sources = {"model": dict(config.model), "train": {}, "study": dict(config.study)}, {}
    for layer, values in (("experiment file", config.train), ("recipe", from_recipe), ("explicit", train)):
        out["train"] |= values
        sources |= dict.fromkeys(values, layer)
    if "augment" not in out["train"]:
        out["train"]["augment"] = study.data_augment if dataset else "light"  # no data set: SynthFER drawn later
        sources["augment"] = "default"
    out["model"] |= explicit["model"]
    out["study"] |= explicit["study"]
    out["pretrained"] = {key: storage.normalize(getattr(args, f"{key}_weights")) for key in study.weight_files
                         if getattr(args, f"{key}_weights", None)}  # a local file every node has, or a URI
    return out, sources


def local_cpus_per_worker(args) -> float:
    """Locally, one trial at a time gets the machine: every CPU but the driver's and the data tasks' share;
    on a cluster (or with GPUs), 1 CPU per worker unless --cpus-per-worker says otherwise."""
    local = not (args.address or os.environ.get("RAY_ADDRESS"))
    return max(1.0, (args.num_cpus or os.cpu_count()) - 0.5) if local and not args.gpus_per_trial else 1.0
