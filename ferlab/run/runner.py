"""One runner for every experiment file. An experiment is a `get_config()` (big_vision's habit): an
`ExperimentConfig` listing only what differs from the defaults, and a `smoke(config)` that shrinks it. The runner
builds its command line (the options every experiment has, one flag per study knob, one per field the experiment
sets), validates everything once, before Ray starts, into a frozen `SweepSpec` and `RunOptions`, and runs it:

    python experiments/sweep_transfer.py [flags]          # the file runs itself through this module
    ferlab run experiments/sweep_transfer.py [flags]      # the same, for any experiment file
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys

from ferlab import storage
from ferlab.config import TrainConfig
from ferlab.run import options as O
from ferlab.run.options import ExperimentConfig, RunOptions
from ferlab.studies import get_study
from ferlab.tune.spec import SweepSpec, fit_sections

__all__ = ["ExperimentConfig", "RunOptions", "build", "load", "main", "replace", "run_file"]

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


def build(config: ExperimentConfig, args, synth: dict):
    """(SweepSpec, ablation grid or None, its tables, RunOptions, facts): everything resolved and validated once,
    before Ray starts; the data set first, so that the spec is built for the data it trains on."""
    from ferlab.tune.ablation import ablation_grid, table_keys

    study = get_study(config.paper)
    own = O.given(args, ExperimentConfig)  # the experiment file's fields given on the command line
    name = args.name or config.name + ("_smoke" if args.smoke else "")
    preset = args.preset or study.presets[0]
    data, shards, classes, make = _resolve_data(config, own.get("root", config.root), args, synth, preset)
    run = RunOptions(**(O.given(args, RunOptions) | {"results_dir": args.results_dir or os.path.join("results", name),
                                                       "track": tuple(args.track or ()),
                                                       "prepare": make.get("prepare", ())}))
    dataset = shards.dataset if shards else (config.prepare or None)
    # PRECEDENCE (ferlab.run.options): explicit > the recipe's for the data set > the experiment file > default
    epochs, layer = next((v, layer) for v, layer in (
        (args.epochs, "explicit"), (study.recipe(run.recipe, dataset).get("epochs"), "recipe"),
        (config.epochs, "experiment file"), (TrainConfig.epochs, "default")) if v is not None)
    sections, sources = O.sections(args, config, run.recipe, dataset)
    sources["epochs"] = layer
    if config.kind == "single":  # the paper's point for this data set, every knob fixed
        point = study.nest(study.paper_point(dataset or "synthfer"))
        for s in ("model", "study", "train"):
            sections[s] = point[s] | sections[s]
        sources = dict.fromkeys(point["train"], "paper point") | sources
    mode = shards.manifest.get("source", {}).get("label_mode") if shards else None
    model, train = fit_sections(preset, sections["model"], sections["train"], classes, mode)
    search = config.kind == "search"
    spec = SweepSpec(**(O.given(args, SweepSpec) | {
        "data": data, "study": config.paper, "preset": preset, "epochs": epochs, "name": name,
        "samples": own.get("samples", config.samples) if search else 1,
        "grace_period": own.get("grace_period", config.grace_period) if search else epochs,
        "cpus_per_worker": _given(args.cpus_per_worker, config.cpus_per_worker or O.local_cpus_per_worker(args)),
        "model": model, "train": train, "settings": sections["study"], "pretrained": sections["pretrained"],
        "eval_data": O.eval_data(args.eval_data), "evaluate_paper_point": search}))
    spec.check_weights()  # the weight files read once, here
    grid = keys = None
    if config.kind == "ablation":
        splits = shards.splits if shards else ["train", "val", "test"]  # SynthFER's, drawn later
        keys = table_keys(config.paper, own.get("tables", config.tables), splits)
        grid = ablation_grid(config.paper, keys, dataset or "synthfer", own.get("seeds", config.seeds), spec.seed,
                             spec.folds)
    alignment = shards.manifest.get("source", {}).get("alignment") if shards else None
    return spec, grid, keys, run, {"dataset": dataset, "sources": sources, "synth": make.get("synth"),
                                   "alignment": alignment}


def _given(value, default):
    """An option's value when it was given (0 included: it must fail validation, not fall back), else the default."""
    return default if value is None else value


def _resolve_data(config: ExperimentConfig, root: str, args, synth: dict, preset: str):
    """(shard folder, its shards when they exist, its class names, how to make it when they do not): --data; else
    the data set the experiment prepares into the cache from --root, once ({"prepare": (source, root, size)}, done
    by run_experiment once Ray is up: never here, where options are still checked); else SynthFER in the cache
    ({"synth": its settings}, drawn by run_experiment)."""
    from ferlab.data.shards import MANIFEST, open_shards
    from ferlab.data.synth import CLASSES, default_cache, synthfer_folder
    from ferlab.models import model_config

    size = model_config(preset).input_size
    if args.data:
        shards = open_shards(args.data)  # a malformed folder fails here, naming it
        return args.data, shards, shards.classes, {}
    if not config.prepare:
        folder = synthfer_folder(synth["n"], size, _given(args.seed, SweepSpec.seed), synth["label_noise"])
        return folder, None, CLASSES, {"synth": synth}
    if root != config.root and not os.path.isdir(root):  # given, and wrong: said even when cached
        raise ValueError(f"--root {root}: no such folder")
    folder = os.path.join(default_cache(), f"{config.prepare}-majority-s{size}")
    if storage.is_file(storage.join(folder, MANIFEST)):
        shards = open_shards(folder)
        return folder, shards, shards.classes, {}
    if not os.path.isdir(root):
        raise ValueError(f"--root {root}: no {config.prepare} folder here; pass --root or --data")
    from ferlab.data.sources import read_source

    return folder, None, read_source(config.prepare, root).classes, {"prepare": (config.prepare, root, size)}


def parse(module, argv=None):
    """(config, args, synth) of an experiment module and its command line: the config after --smoke's smoke()."""
    config = module.get_config()
    args = O.parser(config, module.__doc__, _prog(module)).parse_args(argv)
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
        spec, grid, keys, run, facts = build(config, args, synth)
    except (ValueError, OSError) as e:
        print(f"{_prog(module)}: error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        from ferlab.run.plan import dry_run

        return dry_run(spec, run, grid, keys, facts, experiment=dataclasses.asdict(config))
    if grid is not None:
        seeds, folds = O.given(args, ExperimentConfig).get("seeds", config.seeds), spec.folds
        per = f"{seeds} seeds" + (f" x {folds} folds" if folds else "")
        print(f"{_prog(module)}: {', '.join(keys)}: {len(grid)} trials ({len(grid) // seeds // max(1, folds)} "
              f"settings x {per}), {spec.epochs} epochs each", flush=True)
    from ferlab.run.execute import run_experiment

    return run_experiment(spec, run, synth=facts["synth"], grid=grid, tables=keys,
                          experiment=dataclasses.asdict(config))


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
