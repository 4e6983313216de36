"""What every experiment file does after parsing its options: data, Ray, the sweep or ablation, the tables, the exit
code. Shared so that experiments/*.py stay about their own knobs (big_vision's habit: the file is the experiment)."""

from __future__ import annotations

import os
import time


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
    p.add_argument("--max-concurrent", type=int, default=0, help="cap on concurrent trials (0 = what fits)")
    p.add_argument("--seed", type=int, default=0, help="data, sampler and (first) training seed")
    p.add_argument("--storage", default="~/ferlab_results", help="Ray Tune storage path (folder or s3://...)")
    p.add_argument("--name", default=None, help=f"experiment name under storage (default: {name}[_smoke])")
    p.add_argument("--results-dir", default=None, help="where trials.csv, history.csv, run.json and the report go "
                                                       "(default: results/<name>)")
    p.add_argument("--resume", action="store_true", help="continue the run of the same --name and --storage")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: os.cpu_count())")
    p.add_argument("--smoke", action="store_true", help="tiny run that still exercises every piece")


def fill_defaults(args, smoke: dict, full: dict) -> None:
    """--smoke changes the defaults only; an option given explicitly always wins."""
    for key, value in (smoke if args.smoke else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def model_overrides(args, preset: str) -> dict:
    """--set FIELD=VALUE items and the weight-file options as model overrides. With a weight file the model is
    built once here, so a file that does not fit fails before Ray starts, naming the file and the keys."""
    from ferlab.config import parse_field

    model = {}
    for item in getattr(args, "set", []):
        model.update(parse_field(item))
    for key in ("stem_weights", "encoder_weights", "deit_weights"):
        if getattr(args, key, None):
            model[key] = os.path.abspath(os.path.expanduser(getattr(args, key)))
    if any(k.endswith("_weights") for k in model):
        from ferlab.models import create_model

        create_model(preset, **model)
    return model


def local_cpus_per_worker(args) -> float:
    """Locally, one trial at a time gets the machine: every CPU but the driver's and the data tasks' share;
    on a cluster (or with GPUs), 1 CPU per worker unless --cpus-per-worker says otherwise."""
    if args.cpus_per_worker is not None:
        return args.cpus_per_worker
    local = not (args.address or os.environ.get("RAY_ADDRESS"))
    return max(1.0, (args.num_cpus or os.cpu_count()) - 0.5) if local and args.gpus_per_trial == 0 else 1.0


def run_experiment(spec, args, label_noise: float = 0.0, grid: list[dict] | None = None,
                   paper: str | None = None, tables: list[str] | None = None) -> int:
    """SynthFER when no --data, Ray, the sweep (or with `grid`, the ablation of `paper`'s `tables`), its results
    folder (trials.csv/md, history.csv, run.json), and a printed table: the search's trials, or the paper tables."""
    from ferlab.data.synth import cached_synthfer
    from ferlab.models import model_config
    from ferlab.tune.sweep import STUDIES, init_ray, run_sweep, to_markdown, write_results

    t0 = time.perf_counter()
    if not spec.data:
        spec.data = cached_synthfer(n=args.synth_n, size=model_config(spec.preset).input_size, seed=args.seed,
                                    label_noise=label_noise)
    init_ray(args.address, args.num_cpus)
    table, history = run_sweep(spec, resume=args.resume, verbose=1, grid=grid)
    elapsed = time.perf_counter() - t0
    results_dir = args.results_dir or os.path.join("results", spec.name)
    extra = {"elapsed_s": elapsed, "decode_s": table.attrs["decode_s"]}
    if grid is not None:
        extra |= {"ablation": {"paper": paper, "tables": tables, "cells": len(grid)}}
    paths = write_results(table, spec, results_dir, extra=extra, history=history)
    print()
    if grid is not None:
        from ferlab.report.tables import build_tables

        for t in build_tables(results_dir):
            print(t.markdown(), end="\n\n")
    else:
        print(to_markdown(table.drop(columns=["checkpoint_path", "node_id"], errors="ignore")))  # both in trials.csv
        if "best_val_acc" in table and table["best_val_acc"].notna().any():
            best = table.iloc[0]
            knobs = ", ".join(f"{k}={best[k]:.3g}" if isinstance(best[k], float) else f"{k}={best[k]}"
                              for k in STUDIES[spec.study][1])
            print(f"\nbest: {knobs}: val_acc {best['best_val_acc']:.4f} (epoch {best['best_epoch']})")
    print(f"{len(table)} trials in {elapsed / 60:.1f} min; results in {os.path.abspath(results_dir)} "
          f"({', '.join(os.path.basename(p) for p in paths.values())}); `ferlab report {results_dir}` for the "
          f"tables, plots and HTML page")
    return 0 if (table["status"] == "ok").all() else 1
