"""What every experiment file does after parsing its options: the options every experiment shares (taken from its
Study: knob flags, recipes, `--set section.field=value`), the spec, data, Ray, the sweep or ablation, the tables and
the exit code. Shared so that experiments/*.py stay about what differs from the defaults (big_vision's habit: the
file is the experiment)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from ferlab import storage
from ferlab.config import TrainConfig
from ferlab.pretrained import FAMILIES
from ferlab.studies import get_study
from ferlab.studies.base import SECTIONS
from ferlab.tune.signals import exit_code, stop_on_termination


def add_run_args(p, name: str, smoke_note: str = "") -> None:
    """The options every experiment has: where the data is, where it runs, where results go."""
    p.add_argument("--data", help="shard folder (from `ferlab synth` or `ferlab prepare`); default: SynthFER")
    p.add_argument("--synth-n", type=int, help="SynthFER faces when --data is not given" + smoke_note)
    p.add_argument("--limit", type=int, default=0, help="use only the first N faces of each split (quick checks)")
    p.add_argument("--workers-per-trial", type=int, default=1, help="Ray Train workers (DDP ranks) per trial")
    p.add_argument("--gpus-per-trial", type=float, default=0.0,
                   help="GPUs per trial, split evenly over its workers (0 = CPU: the same command runs without GPUs)")
    p.add_argument("--cpus-per-worker", type=float, default=None,
                   help="CPUs per training worker; default: 1 on a cluster, all but the data share locally")
    p.add_argument("--max-concurrent", type=int, default=0,
                   help="trials at once (0 = what the cluster holds; on a cluster the autoscaler adds nodes for N)")
    p.add_argument("--seed", type=int, default=0, help="data, sampler and (first) training seed")
    from ferlab.tune.spec import SweepSpec

    p.add_argument("--storage", default=SweepSpec.storage, help="Ray Tune storage path (folder or s3://...)")
    p.add_argument("--lock-dir", default="", help="a local or NFS folder every node sees, to hold the locks (one "
                   "sweep per --name, one MGN stage per key) when the --storage bucket ignores conditional writes")
    p.add_argument("--optuna-storage", default="", metavar="URL",
                   help="searches: a database URL Optuna takes (postgresql://USER@HOST/DB, ...): the study lives "
                        "there, for optuna-dashboard while the sweep runs (default: SQLite beside the experiment; "
                        "in memory with a bucket)")
    p.add_argument("--name", default=None, help=f"experiment name under storage (default: {name}[_smoke])")
    p.add_argument("--results-dir", default=None, help="where trials.csv, history.csv, run.json and the report go "
                                                       "(default: results/<name>)")
    p.add_argument("--resume", action="store_true", help="continue the run of the same --name and --storage")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: os.cpu_count())")
    p.add_argument("--object-store-mb", type=_at_least(75), default=1024, help="object store of a local Ray, in MiB (data "
                   "sets whose decoded splits need more than half of it are streamed and decoded every epoch)")
    p.add_argument("--eval-data", action="append", default=[], metavar="NAME=SHARDS",
                   help="cross-data-set evaluation: test every trial on another prepared data set too, its classes "
                        "mapped onto the training set's by name (repeatable; e.g. --eval-data ferplus=shards/ferplus)")
    p.add_argument("--track", action="append", default=[], metavar="{mlflow,wandb}",
                   help="log every trial (config, per-epoch metrics, its files) to MLflow (SQLite in ./mlruns/mlflow.db "
                        "unless --track-uri) or W&B (offline without WANDB_API_KEY); needs ferlab[mlflow|wandb]")
    p.add_argument("--track-uri", default=None, help="MLflow tracking URI (default: sqlite:///mlruns/mlflow.db)")
    p.add_argument("--verbose", action="store_true", help="Ray Train's and Ray Data's own INFO lines on the console too "
                   "(each report, checkpoint paths, execution plans); they are always in the Ray session's log files")
    p.add_argument("--smoke", action="store_true", help="the experiment's smoke(): the smallest run that exercises "
                                                        "every piece")
    p.add_argument("--dry-run", action="store_true", help="print the resolved configuration (run.json's spec, the "
                   "train config and the run options) as JSON on standard output and the recipe's trace on standard "
                   "error, then exit: no Ray, no data prepared")


def add_study_args(p, study_name: str, fix_knobs: bool = True) -> None:
    """The options that come from the study: its presets, one flag per searched knob (fixes it instead of searching
    it; type and choices from the knob), its recipes, weight files and `--set`."""
    from ferlab.data.augment import RECIPES
    from ferlab.data.balance import BALANCE

    study = get_study(study_name)
    p.add_argument("--preset", default=study.presets[0],
                   help=f"model preset: {', '.join(study.presets)} (default {study.presets[0]}: CPU size)")
    p.add_argument("--recipe", default="cpu", choices=("cpu", *study.recipes),
                   help="training recipe: cpu (the laptop defaults) or paper (the paper's optimiser, schedule, "
                        "batch, epochs and augmentation, per data set); explicit options win over it")
    p.add_argument("--batch-size", type=int, help=f"per-worker batch size (default {TrainConfig.batch_size})")
    p.add_argument("--lr", type=float, help="learning rate (default: the recipe's, else TrainConfig's)")
    p.add_argument("--augment", choices=RECIPES, help="training augmentation (default: the recipe's; on the "
                                                      "cpu recipe, the paper's with --data, light on SynthFER)")
    p.add_argument("--balance", choices=BALANCE, help="class-balanced up-sampling (default: the recipe's, else none)")
    if fix_knobs:
        for k in study.knobs:
            if k.search:
                p.add_argument(f"--{(k.flag or k.name).replace('_', '-')}", dest=k.name, type=k.parse,
                               choices=k.choices,
                               help=f"fix {k.help} instead of searching it")
    for key in study.weight_files:
        p.add_argument(f"--{key}-weights", help=f"{FAMILIES[key].about} (a path every worker can read, or a URI)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="any config field: model.FIELD (or plain FIELD), train.FIELD or study.FIELD, e.g. "
                        "--set model.msad=reference --set train.label_smoothing=0.1 (repeatable)")


def add_confirm_args(p, defaults) -> None:
    """A search's noise-aware last step (ferlab.tune.confirm); `defaults`: RunOptions, which holds them."""
    p.add_argument("--confirm", type=_at_least(0), default=defaults.confirm, metavar="K",
                   help="after the search, re-train its K best settings with fresh seeds and report mean +/- std "
                        "(default %(default)s: off)")
    p.add_argument("--confirm-seeds", type=_at_least(1), default=defaults.confirm_seeds, metavar="S",
                   help="fresh seeds per confirmed setting (default %(default)s)")


def _at_least(low: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def eval_data(args) -> dict:
    """--eval-data NAME=SHARDS items, each folder checked before Ray starts."""
    from ferlab.data.shards import open_shards

    out = {}
    for item in args.eval_data:
        name, sep, path = item.partition("=")
        if not sep or not name or not path or not name.isidentifier():
            raise ValueError(f"--eval-data {item!r}: expected NAME=SHARDS with NAME a plain word")
        open_shards(path)  # a missing or malformed folder fails here, naming the file
        out[name] = path
    return out


# Where a train field's value comes from, strongest first ("paper point": a single run's knob at the paper's value)
PRECEDENCE = ("explicit", "recipe", "experiment file", "paper point", "default")


def sections_from_args(args, study_name: str, dataset: str | None, train: dict | None = None,
                       settings: dict | None = None, explicit: dict | None = None) -> dict:
    """{"model", "train", "study"} fixed settings from the options, in order of precedence (PRECEDENCE): explicit
    options (the shared flags, `explicit`: the experiment's own train options that were given, the knob flags, then
    --set) over the recipe's value for the data set over the experiment file's (`train`, `settings`) over the
    defaults; "pretrained", the weight files given; and "sources", where each train field's value came from."""
    from ferlab.config import parse_field

    study = get_study(study_name)
    out = {"model": {}, "train": {}, "study": dict(settings or {}), "pretrained": {}}
    recipe = {k: v for k, v in study.recipe(args.recipe, dataset).items() if k != "epochs"}
    given = {"batch_size": args.batch_size, "lr": args.lr, "augment": args.augment, "balance": args.balance}
    sets = {}
    for item in args.set:
        (key, value), = parse_field(item).items()
        section, _, field = key.rpartition(".")
        section = section or "model"
        if section not in SECTIONS:
            raise ValueError(f"--set {item!r}: the section must be one of {', '.join(SECTIONS)}")
        sets[(section, field)] = value
    explicit_train = {k: v for k, v in (given | (explicit or {})).items() if v is not None}
    explicit_train |= {k.name: getattr(args, k.name) for k in study.knobs
                       if k.section == "train" and getattr(args, k.name, None) is not None}
    explicit_train |= {f: v for (sec, f), v in sets.items() if sec == "train"}
    if "batch_size" in explicit_train and recipe.get("global_batch"):
        if "global_batch" in explicit_train:
            raise ValueError(f"--batch-size {explicit_train['batch_size']} (per worker) and train.global_batch="
                             f"{explicit_train['global_batch']}: give one of them")
        # an explicit per-worker batch wins over the recipe's global batch, which would otherwise replace it
        explicit_train["global_batch"] = 0
    sources = {}
    for layer, values in (("experiment file", train or {}), ("recipe", recipe), ("explicit", explicit_train)):
        out["train"] |= values
        sources |= dict.fromkeys(values, layer)
    if "augment" not in out["train"]:
        out["train"]["augment"] = study.data_augment if dataset else "light"  # no data set: SynthFER drawn later
        sources["augment"] = "default"
    for k in study.knobs:
        if k.section != "train" and getattr(args, k.name, None) is not None:
            out[k.section][k.name] = getattr(args, k.name)
    for key in study.weight_files:
        path = getattr(args, f"{key}_weights", None)
        if path:
            out["pretrained"][key] = storage.normalize(path)  # a local file every node has, or a URI
    for (section, field), value in sets.items():
        if section != "train":
            out[section][field] = value
    out["sources"] = sources
    return out


def local_cpus_per_worker(args) -> float:
    """Locally, one trial at a time gets the machine: every CPU but the driver's and the data tasks' share;
    on a cluster (or with GPUs), 1 CPU per worker unless --cpus-per-worker says otherwise."""
    if args.cpus_per_worker is not None:
        return args.cpus_per_worker
    local = not (args.address or os.environ.get("RAY_ADDRESS"))
    return max(1.0, (args.num_cpus or os.cpu_count()) - 0.5) if local and args.gpus_per_trial == 0 else 1.0


def run_experiment(spec, run, synth: dict | None = None, grid: list[dict] | None = None,
                   tables: list[str] | None = None, experiment: dict | None = None) -> int:
    """SynthFER (drawn with `synth`: n, label_noise) when the spec has no data, Ray, the sweep (or with `grid`, the
    ablation of the study's `tables`), its results folder (trials.csv/md, history.csv, run.json), and a printed
    table: the search's trials, or the paper tables. `run`: a runner.RunOptions; `experiment`: the experiment file's
    config as run (saved whole in run.json with the run options, beside the resolved spec)."""
    import dataclasses

    from ferlab.data.synth import SYNTH_N, cached_synthfer
    from ferlab.models import model_config
    from ferlab.lock import FolderLock, Locked
    from ferlab.tune.resources import DoesNotFit, check_address, concurrent_trials, init_ray
    from ferlab.tune.resume import check_resumable
    from ferlab.tune.tracking import check

    t0 = time.perf_counter()
    try:
        check(run.track, run.track_uri)
        from ferlab.tune.sweep import check_optuna_storage

        check_optuna_storage(spec.optuna_storage)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:  # the storage reachable; one sweep per experiment and per results folder at a time; before Ray starts
        storage.check(spec.storage, "--storage")
        storage.check(run.results_dir, "--results-dir")
        if spec.lock_dir:
            storage.check(spec.lock_dir, "--lock-dir")
        check_address(run.address)
        if not (run.address or os.environ.get("RAY_ADDRESS")):  # a local Ray: a trial must fit it, said before it starts
            concurrent_trials(spec, {"CPU": run.num_cpus or os.cpu_count()}, cluster=False)
        if run.resume:
            check_resumable(spec)
        with FolderLock(storage.join(spec.storage, spec.name), "sweep", lock_dir=spec.lock_dir), \
                FolderLock(run.results_dir, "sweep"):
            if not spec.data:
                from ferlab.data.shards import open_shards

                synth = synth or {}
                spec = dataclasses.replace(spec, data=cached_synthfer(
                    n=synth.get("n", SYNTH_N), size=model_config(spec.preset).input_size, seed=spec.seed,
                    label_noise=synth.get("label_noise", 0.0)))
                spec = spec.fit(open_shards(spec.data))
            init_ray(run.address, run.num_cpus, run.object_store_mb, verbose=run.verbose)
            stop_on_termination()  # SIGTERM as Ctrl-C (ferlab.tune.signals)
            if run.prepare:  # the data set the experiment prepares, not cached yet: needs Ray (Ray Data)
                from ferlab.data.prepare import prepare
                from ferlab.data.shards import open_shards

                source, root, size = run.prepare
                print(f"preparing {source} from {root} into {spec.data} (once)", flush=True)
                prepare(source, root, spec.data, size=size)
                spec = spec.fit(open_shards(spec.data))
            return _run_locked(spec, run, grid, tables, t0, experiment)
    except (Locked, ConnectionError, storage.StorageError, DoesNotFit) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the sweep started (Tune handles it during the sweep): nothing was trained
        print("interrupted before the sweep started: nothing trained, nothing to resume", file=sys.stderr)
        return exit_code()


def _run_locked(spec, run, grid, tables, t0: float, experiment: dict | None = None) -> int:
    import dataclasses

    from ferlab.report.markdown import to_markdown
    from ferlab.train import metrics as M
    from ferlab.tune.results import write_results
    from ferlab.tune.sweep import run_sweep

    from ferlab.tune.confirm import run_confirmation
    from ferlab.tune.tracking import callbacks, log_results

    results_dir = run.results_dir
    track = callbacks(run.track, run.track_uri, spec.name)
    table, history = run_sweep(spec, resume=run.resume, grid=grid, callbacks=track, ray_logs=run.verbose)
    elapsed = time.perf_counter() - t0
    interrupted = table.attrs.get("interrupted", False)
    extra = {"elapsed_s": elapsed, "decode_s": table.attrs["decode_s"], "recipe": run.recipe,
             "interrupted": interrupted, "experiment": experiment, "run_options": dataclasses.asdict(run)}
    if grid is not None:
        extra |= {"ablation": {"paper": spec.study, "tables": tables, "cells": len(grid)}}
    paths = write_results(table, spec, results_dir, extra=extra, history=history)
    print()
    if grid is not None:
        from ferlab.report.tables import build_tables

        for t in build_tables(results_dir):
            print(t.markdown(), end="\n\n")
    else:
        # the console's table: the knobs and what a reader ranks by (every column is in trials.csv and trials.md)
        shown = ["trial", *get_study(spec.study).knob_names, M.BEST_VAL_ACC, M.BEST_EPOCH, "epochs",
                 M.IMAGES_PER_S, "test_acc_at_best", "status"]
        print(to_markdown(table[[c for c in shown if c in table]]))
        if "best_val_acc" in table and table["best_val_acc"].notna().any():
            best = table.iloc[0]
            knobs = ", ".join(f"{k}={best[k]:.3g}" if isinstance(best[k], float) else f"{k}={best[k]}"
                              for k in get_study(spec.study).knob_names if k in best)
            print(f"\nbest: {knobs}: val_acc {best['best_val_acc']:.4f} (epoch {best[M.BEST_EPOCH]})")
    if grid is None and run.confirm and not interrupted:
        interrupted = run_confirmation(spec, run, table, results_dir,
                                       callbacks(run.track, run.track_uri, spec.name))
        elapsed = time.perf_counter() - t0
    log_results(run.track, run.track_uri, spec.name, results_dir)
    print(f"{len(table)} trials in {elapsed / 60:.1f} min; results in {os.path.abspath(results_dir)} "
          f"({', '.join(os.path.basename(p) for p in paths.values())}); `ferlab report {results_dir}` for the "
          f"tables, plots and HTML page")
    if interrupted:
        print(f"interrupted: these tables are partial ({table.attrs.get('unfinished', 0)} trials unfinished); "
              f"resume with --resume (the same --name and --storage)", file=sys.stderr)
        return exit_code()  # 130 after Ctrl-C, 143 after SIGTERM: as a shell reports them
    return 0 if (table["status"] == "ok").all() else 1
