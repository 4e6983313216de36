"""What every experiment does once its spec is built: the checks before Ray, the locks, its data made when it is not
cached yet (SynthFER drawn, a data set prepared), Ray, the sweep or ablation, the results folder, the printed tables
and the exit code."""

from __future__ import annotations

import os
import sys
import time

from ferlab import storage
from ferlab.studies import get_study
from ferlab.tune.signals import exit_code, stop_on_termination


def run_experiment(spec, run, synth: dict | None = None, grid: list[dict] | None = None,
                   tables: list[str] | None = None, experiment: dict | None = None) -> int:
    """SynthFER (drawn with `synth`: n, label_noise) into the spec's folder when it is not cached yet, Ray, the sweep (or with `grid`, the
    ablation of the study's `tables`), its results folder (trials.csv/md, history.csv, run.json), and a printed
    table: the search's trials, or the paper tables. `run`: a runner.RunOptions; `experiment`: the experiment file's
    config as run (saved whole in run.json with the run options, beside the resolved spec)."""
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
            if synth:  # the spec was built for this folder (ferlab.run.runner); drawn once, then cached
                from ferlab.data.synth import cached_synthfer
                from ferlab.models import model_config

                folder = cached_synthfer(n=synth["n"], size=model_config(spec.preset).input_size, seed=spec.seed,
                                         label_noise=synth["label_noise"])
                assert folder == spec.data, (folder, spec.data)
            init_ray(run.address, run.num_cpus, run.object_store_mb, verbose=run.verbose)
            stop_on_termination()  # SIGTERM as Ctrl-C (ferlab.tune.signals)
            if run.prepare:  # the data set the experiment prepares, not cached yet: needs Ray (Ray Data)
                from ferlab.data.prepare import prepare

                source, root, size = run.prepare
                print(f"preparing {source} from {root} into {spec.data} (once)", flush=True)
                prepare(source, root, spec.data, size=size)  # the sweep checks the spec was built for it
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
    from ferlab.report.results import write_results
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
