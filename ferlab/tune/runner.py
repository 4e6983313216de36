"""One runner for every experiment file. An experiment is a `get_config()` (big_vision's habit): an
`ExperimentConfig` listing only what differs from the defaults, and a `smoke(config)` that shrinks it. The runner
builds its command line (the options every experiment has, one flag per study knob, one per field the experiment
sets), validates everything once, before Ray starts, into a frozen `SweepSpec` and `RunOptions`, and runs it:

    python experiments/sweep_transfer.py [flags]          # the file runs itself through this module
    ferlab run experiments/sweep_transfer.py [flags]      # the same, for any experiment file
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
from dataclasses import dataclass, field

from ferlab import storage
from ferlab.config import TrainConfig
from ferlab.data.synth import SYNTH_N

KINDS = ("search", "ablation", "single")


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
    epochs: int | None = None  # per trial; --epochs, else the recipe's (--recipe paper: 40), else this, else TrainConfig's
    grace_period: int = 2  # search: ASHA's epochs before a trial may be stopped
    tables: str = "all"  # ablation: which of the study's tables (comma-separated) or all
    seeds: int = 1  # ablation: trainings per cell
    synth_n: int = SYNTH_N  # SynthFER faces when no --data is given
    label_noise: float = 0.0  # SynthFER's share of wrong training labels (MVT's relabeling needs some)
    cpus_per_worker: float | None = None  # None: all but the data share on a local Ray, 1 on a cluster or with GPUs
    train: dict = field(default_factory=dict)  # TrainConfig fields that differ (each gets a flag)
    study: dict = field(default_factory=dict)  # the study section's fields that differ (each gets a flag)
    model: dict = field(default_factory=dict)  # model config fields that differ
    prepare: str = ""  # a data set `ferlab prepare` makes from --root into the cache when no --data is given
    root: str = ""  # that data set's folder (default of --root)

    def __post_init__(self):
        from ferlab.studies import get_study

        get_study(self.paper)  # an unknown study fails here, naming the ones there are
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r}: expected one of {KINDS}")


@dataclass(frozen=True)
class RunOptions:
    """How and where an experiment runs (not what it trains): from the command line, never changed after."""

    results_dir: str  # the tables, run.json and the report's input (--results-dir; default results/<name>)
    resume: bool = False  # continue the sweep stored under --storage/--name
    address: str | None = None  # a running Ray cluster to join (else RAY_ADDRESS, else a local Ray)
    num_cpus: int | None = None  # a local Ray's CPUs (default: the machine's cores)
    object_store_mb: int = 1024  # a local Ray's object store
    track: tuple = ()  # "mlflow" and/or "wandb": Ray Tune's logger callbacks
    track_uri: str | None = None  # MLflow's tracking URI
    recipe: str = "cpu"  # "paper": the paper's optimiser, schedule and augmentation for the data set
    confirm: int = 0  # search: re-train its K best settings with fresh seeds afterwards
    confirm_seeds: int = 3  # fresh seeds per confirmed setting
    verbose: bool = False  # Ray Train's and Ray Data's INFO lines on the console too (always in the log files)
    prepare: tuple = ()  # (source, root, size) to prepare into the spec's data once Ray is up, when not cached


def load(path: str):
    """An experiment file as a module (it need not be importable by name)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such experiment file")
    if not path.endswith(".py"):
        raise ValueError(f"{path}: not a Python file (an experiment file defines get_config())")
    spec = importlib.util.spec_from_file_location(f"ferlab_experiment_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "get_config", None)):
        raise ValueError(f"{path}: defines no get_config()")
    return module


def parser(config: ExperimentConfig, doc: str, prog: str):
    from ferlab.console import Parser
    from ferlab.tune.experiment import add_confirm_args, add_run_args, add_study_args

    p = Parser(prog=prog, description=(doc or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    default_epochs = config.epochs or f"the recipe's, else {TrainConfig.epochs}"
    p.add_argument("--epochs", type=int, help=f"epochs per trial (default {default_epochs})")
    if config.kind == "search":
        p.add_argument("--samples", type=int, help=f"trials (default {config.samples})")
        p.add_argument("--grace-period", type=int, help=f"ASHA: epochs before a trial may be stopped "
                                                        f"(default {config.grace_period})")
    if config.kind == "ablation":
        p.add_argument("--table", help=f"the study's tables, comma-separated, or all (default {config.tables})")
        p.add_argument("--seeds", type=int, help=f"trainings per cell (default {config.seeds})")
        p.add_argument("--folds", type=int, default=0, help="k-fold protocol: each cell once per fold of shards "
                                                            "prepared with `ferlab prepare folder --folds K`")
    if config.label_noise:
        p.add_argument("--label-noise", type=float, help=f"SynthFER label noise when --data is not given "
                                                         f"(default {config.label_noise})")
    if config.prepare:
        p.add_argument("--root", default=config.root, help=f"the {config.prepare} folder `ferlab prepare` reads when "
                                                            f"no --data is given (default {config.root})")
    own = {"batch_size", "lr", "augment", "balance"}  # already flags of every experiment
    from ferlab.config import field_comments
    from ferlab.studies import get_study

    meaning = {"train": field_comments(TrainConfig),
               "study": field_comments(get_study(config.paper).study_config or TrainConfig)}
    for section in ("train", "study"):
        for key, value in getattr(config, section).items():
            if key not in own:  # the field's own comment is its help; the file's value its default
                p.add_argument(f"--{key.replace('_', '-')}", dest=f"{section}__{key}", type=type(value),
                               metavar=key.upper(),
                               help=f"{meaning[section].get(key) or section + '.' + key} (default {value})"
                               .replace("%", "%%"))
    add_study_args(p, config.paper, fix_knobs=config.kind == "search")
    if config.kind == "search":
        add_confirm_args(p, RunOptions)
    add_run_args(p, config.name, f" (default {config.synth_n})")
    return p


def build(config: ExperimentConfig, args):
    """(SweepSpec, ablation grid or None, its tables, RunOptions): everything validated, before Ray starts."""
    from ferlab.data.shards import open_shards
    from ferlab.studies import get_study
    from ferlab.tune.ablation import ablation_grid, table_keys
    from ferlab.tune.experiment import eval_data, local_cpus_per_worker, sections_from_args
    from ferlab.tune.spec import SweepSpec

    name = args.name or config.name + ("_smoke" if args.smoke else "")
    data, prepare = (args.data, ()) if args.data else _default_data(config, args)
    shards = open_shards(data) if data and not prepare else None  # a malformed folder fails here, naming it
    dataset = shards.dataset if shards else (config.prepare or None)
    study = get_study(config.paper)
    # PRECEDENCE (ferlab.tune.experiment): explicit > the recipe's for the data set > the experiment file > default
    epochs, sources = next((v, layer) for v, layer in (
        (args.epochs, "explicit"), (study.recipe(args.recipe, dataset).get("epochs"), "recipe"),
        (config.epochs, "experiment file"), (TrainConfig.epochs, "default")) if v is not None)
    explicit = {section: {k: getattr(args, f"{section}__{k}") for k in getattr(config, section)
                          if getattr(args, f"{section}__{k}", None) is not None} for section in ("train", "study")}
    sections = sections_from_args(args, config.paper, dataset, train=config.train, settings=config.study,
                                  explicit=explicit["train"])
    sources = sections.pop("sources") | {"epochs": sources}
    sections["study"] |= explicit["study"]
    model = dict(config.model) | sections["model"]
    if config.kind == "single":  # the paper's point for this data set, every knob fixed
        point = study.nest(study.paper_point(dataset or "synthfer"))
        model = point["model"] | model
        sections["study"] = point["study"] | sections["study"]
        sources = dict.fromkeys(point["train"], "paper point") | sources
        sections["train"] = point["train"] | sections["train"]
    spec = SweepSpec(
        data=data or "", study=config.paper, preset=args.preset, epochs=epochs,
        samples=_given(args.samples, config.samples) if config.kind == "search" else 1,
        grace_period=_given(args.grace_period, config.grace_period) if config.kind == "search" else epochs,
        workers_per_trial=args.workers_per_trial, gpus_per_trial=args.gpus_per_trial,
        cpus_per_worker=_given(args.cpus_per_worker, config.cpus_per_worker or local_cpus_per_worker(args)),
        storage=args.storage, name=name, seed=args.seed,
        model=model, train=sections["train"], settings=sections["study"], pretrained=sections["pretrained"],
        max_concurrent=args.max_concurrent, limit=args.limit, eval_data=eval_data(args),
        folds=getattr(args, "folds", 0), evaluate_paper_point=config.kind == "search",
        lock_dir=storage.normalize(args.lock_dir) if args.lock_dir else "", optuna_storage=args.optuna_storage)
    if shards:
        spec = spec.fit(shards)
    grid = keys = None
    if config.kind == "ablation":
        splits = shards.splits if shards else ["train", "val", "test"]  # SynthFER's, drawn later
        keys = table_keys(config.paper, _given(args.table, config.tables), splits)
        grid = ablation_grid(config.paper, keys, dataset or "synthfer", _given(args.seeds, config.seeds), args.seed,
                             spec.folds)
    run = RunOptions(results_dir=args.results_dir or os.path.join("results", name), resume=args.resume,
                     address=args.address, num_cpus=args.num_cpus, object_store_mb=args.object_store_mb,
                     track=tuple(args.track), track_uri=args.track_uri, recipe=args.recipe,
                     confirm=getattr(args, "confirm", RunOptions.confirm),
                     confirm_seeds=getattr(args, "confirm_seeds", RunOptions.confirm_seeds),
                     verbose=args.verbose,
                     prepare=prepare)
    return spec, grid, keys, run, {"dataset": dataset, "sources": sources,
                                   "alignment": (shards.manifest.get("source", {}).get("alignment") if shards else None)}


def _given(value, default):
    """An option's value when it was given (0 included: it must fail validation, not fall back), else the default."""
    return default if value is None else value


def _default_data(config: ExperimentConfig, args) -> tuple[str, tuple]:
    """Where the data comes from without --data: the data set the experiment prepares (into the cache, from --root,
    once), else "" (SynthFER, drawn into the cache by the runner); and (source, root, size) when that data set is
    not prepared yet. It is prepared by run_experiment once Ray is up: never here, where options are still checked."""
    if not config.prepare:
        return "", ()
    if args.root != config.root and not os.path.isdir(args.root):  # given, and wrong: said even when cached
        raise ValueError(f"--root {args.root}: no such folder")
    from ferlab.data.shards import MANIFEST
    from ferlab.data.synth import default_cache
    from ferlab.models import model_config

    size = model_config(args.preset).input_size
    shards = os.path.join(default_cache(), f"{config.prepare}-majority-s{size}")
    if storage.is_file(storage.join(shards, MANIFEST)):
        return shards, ()
    if not os.path.isdir(args.root):
        raise ValueError(f"--root {args.root}: no {config.prepare} folder here; pass --root or --data")
    return shards, (config.prepare, args.root, size)


def parse(module, argv=None):
    """(config, args, synth) of an experiment module and its command line: the config after --smoke's smoke()."""
    config = module.get_config()
    args = parser(config, module.__doc__, _prog(module)).parse_args(argv)
    if args.smoke:
        config = module.smoke(config)
    noise = getattr(args, "label_noise", None)
    synth = {"n": config.synth_n if args.synth_n is None else args.synth_n,
             "label_noise": config.label_noise if noise is None else noise}
    return config, args, synth


def _prog(module) -> str:
    """The name --help and errors give: the module's PROG (`ferlab sweep mvt`), else its file's name."""
    return getattr(module, "PROG", None) or os.path.basename(getattr(module, "__file__", "experiment.py"))[:-3]


def main(module, argv=None) -> int:
    """Parse, build and run an experiment (a module, or its file: what `python experiments/FILE.py` and `ferlab run`
    do)."""
    module = load(module) if isinstance(module, str) else module
    config, args, synth = parse(module, argv)
    try:
        spec, grid, keys, run, facts = build(config, args)
    except (ValueError, OSError) as e:
        print(f"{_prog(module)}: error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        from ferlab.tune.plan import dry_run

        return dry_run(spec, run, grid, keys, facts, experiment=dataclasses.asdict(config))
    if grid is not None:
        seeds, folds = _given(args.seeds, config.seeds), spec.folds
        per = f"{seeds} seeds" + (f" x {folds} folds" if folds else "")
        print(f"{_prog(module)}: {', '.join(keys)}: {len(grid)} trials ({len(grid) // seeds // max(1, folds)} "
              f"settings x {per}), {spec.epochs} epochs each", flush=True)
    from ferlab.tune.experiment import run_experiment

    return run_experiment(spec, run, synth=synth, grid=grid, tables=keys, experiment=dataclasses.asdict(config))


USAGE = "usage: ferlab run EXPERIMENT_FILE.py [its options]   (ferlab run FILE.py --help: the file's options)"


def run_file(argv=None) -> int:
    """`ferlab run experiments/FILE.py [flags]`; `ferlab run --help` lists the experiment files there are."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        import glob

        here = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                            "experiments")
        files = sorted({os.path.realpath(f) for f in glob.glob("experiments/*.py") + glob.glob(os.path.join(here,
                                                                                                          "*.py"))})
        print(USAGE + "\n\nRun an experiment file (a get_config() and a smoke()) with its options; the files here:")
        for path in files:
            doc = (load(path).__doc__ or "").strip().splitlines()
            print(f"  {os.path.relpath(path)}: {doc[0] if doc else ''}")
        return 0
    if not argv or argv[0].startswith("-"):
        print("ferlab run: error: give an experiment file first: ferlab run EXPERIMENT_FILE.py [its options] "
              "(`ferlab run --help` lists them)", file=sys.stderr)
        return 2
    try:
        module = load(argv[0])
    except (OSError, ValueError, SyntaxError) as e:
        print(f"ferlab run: error: {e}", file=sys.stderr)
        return 2
    return main(module, argv[1:])


def replace(config: ExperimentConfig, **changes) -> ExperimentConfig:
    """`smoke()`'s helper: sections are merged (train={"lr": 1} changes lr and keeps the rest), fields replaced."""
    for section in ("train", "study", "model"):
        if section in changes:
            changes[section] = getattr(config, section) | changes[section]
    return dataclasses.replace(config, **changes)
