"""A sweep: Ray Tune + OptunaSearch (TPE) + ASHA over a study's knobs, each trial a Train V2 TorchTrainer run
(ferlab.tune.trial). With a grid (an ablation), one trial per cell, no searcher, no early stopping."""

from __future__ import annotations

import functools
import logging
import os
import time

from ferlab import storage
from ferlab.models import model_config
from ferlab.studies import get_study, search_space
from ferlab.train import metrics as M
from ferlab.internals import (TUNE_LOGGER, StopSignal, cancel_train_resource_requests, restored_scheduler,
                                   tune_console)
from ferlab.tune.resources import DRIVER_CPUS, concurrent_trials
from ferlab.report.results import OPTUNA_DB, history_table, results_table, trial_histories
from ferlab.tune.spec import SweepSpec
from ferlab.tune.trial import KEEP_CHECKPOINTS, DataFacts, trial_driver


def prepare_data(spec: SweepSpec, relabels: bool, ray_logs: bool = False):
    """Open the shards, fit the spec to them (class count, FERPlus label mode) and decode each split once into the
    object store, with every --eval-data set as an extra split `x_<name>`. Returns (shards, decoded splits,
    class-balance factors, seconds spent decoding, what each cross-data-set split holds)."""
    from ferlab.data.balance import repeat_factors
    from ferlab.data.pipeline import cross_dataset, decoded_splits, quiet_progress
    from ferlab.data.shards import open_shards

    quiet_progress(ray_logs)
    shards = open_shards(spec.data)
    if not spec.fits(shards):  # the runner builds the spec for its data before Ray starts; never changed here
        raise ValueError(f"{spec.data}: the spec was not built for these shards (class count or label mode): "
                         f"ferlab.tune.spec.fit_sections")
    mcfg = model_config(spec.preset, **spec.model)
    tc = spec.train_cfg
    if tc.label_mode != "majority" and "soft" not in shards.manifest["columns"]:
        raise ValueError(f"label_mode={tc.label_mode!r} needs soft labels; {spec.data} has none (prepare FERPlus "
                         f"with --mode {tc.label_mode})")
    factors = None
    if tc.balance != "none":
        counts = [shards.manifest["counts"]["train"][c] for c in shards.classes]
        factors = tuple(repeat_factors(counts, tc.balance, tc.balance_threshold).tolist())
        expected = [round(n * r) for n, r in zip(counts, factors)]
        print(f"class balance {tc.balance!r}: repeat factors {[round(r, 2) for r in factors]}; expected images per "
              f"epoch {expected} instead of {counts} ({', '.join(shards.classes)})", flush=True)
    t0 = time.perf_counter()
    if spec.folds and "fold" not in shards.manifest["columns"]:
        raise ValueError(f"--folds: {spec.data} has no fold assignments (prepare it with `ferlab prepare folder "
                         f"--folds K`)")
    decoded = decoded_splits(shards, mcfg.input_size, limit=spec.limit or None, soft=tc.label_mode != "majority",
                             keys=relabels, masks=get_study(spec.study).masks,
                             folds=bool(spec.folds), splits=("train",) if spec.folds else None, seed=spec.seed)
    cross = {}
    for name, path in spec.eval_data.items():  # cross-data-set evaluation: e.g. train on RAF-DB, test on FERPlus
        decoded[f"x_{name}"], cross[name] = cross_dataset(open_shards(path), list(shards.classes), mcfg.input_size,
                                                          limit=spec.limit or None)
        c = cross[name]
        print(f"cross-data-set {name}: {c['faces']} faces of its {c['split']} split"
              + (f"; excluded (no such training class): {c['excluded']}" if any(c["excluded"].values()) else "")
              + (f"; training classes it lacks: {c['unmatched_training_classes']}"
                 if c["unmatched_training_classes"] else ""), flush=True)
    return shards, decoded, factors, time.perf_counter() - t0, cross


def run_sweep(spec: SweepSpec, resume: bool = False, grid: list[dict] | None = None, callbacks: list | None = None,
              ray_logs: bool = False):
    """Run (or resume) the sweep on the Ray cluster this process is connected to.

    Without `grid`: Optuna (TPE) proposes `spec.samples` settings of the study's knobs and ASHA stops weak trials
    early; the study is kept in <storage>/<name>/optuna.db (SQLite, for optuna-dashboard). With `grid` (an ablation):
    one trial per given cell (nested knobs and seed), every trial runs all epochs, no searcher, no early stopping,
    so every cell of a table is trained alike. `callbacks`: Tune callbacks (experiment tracking). `ray_logs`: Ray
    Train's and Ray Data's INFO lines and Tune's trial tables on the console too (--verbose).
    Returns (one row per trial, one row per trial and epoch)."""
    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from ferlab.data.pipeline import eval_split

    study = get_study(spec.study)
    fixed = spec.fixed_knobs()
    # rows carry their keys when a trial may relabel (the loop's relabel table is keyed by them)
    relabels = spec.train_values("relabel", grid) != {"none"}
    shards, decoded, factors, decode_s, cross = prepare_data(spec, relabels, ray_logs)

    facts = DataFacts(data_hash=shards.manifest.get("content_hash"), balance_factors=factors)
    trainable = tune.with_resources(tune.with_parameters(trial_driver, datasets=decoded, spec=spec, facts=facts,
                                                         verbose=ray_logs), {"CPU": DRIVER_CPUS})
    path = storage.join(spec.storage, spec.name)
    from ferlab.tune.progress import Progress

    total = len(grid) if grid is not None else spec.samples
    # Tune's own trial tables only with --verbose: the workers' epoch lines and Progress's line per ended trial say
    # what a researcher watches
    run_config = tune.RunConfig(name=spec.name, storage_path=spec.storage, verbose=1 if ray_logs else 0,
                                failure_config=tune.FailureConfig(max_failures=1),
                                callbacks=[*(callbacks or []), Progress(spec.epochs, grid is None, total)])
    concurrent = concurrent_trials(spec, ray.cluster_resources())
    with tune_console(ray_logs):  # Tune's box and paths, Optuna's study line: only with --verbose
        if resume and tune.Tuner.can_restore(path):
            from ferlab.tune.resume import fail_orphan_proposals, rebuild_rungs

            orphans = fail_orphan_proposals(path)
            if orphans:
                print(f"resume: Optuna proposals {orphans} were made after the sweep last saved its searcher and "
                      f"never ran; marked FAIL in {OPTUNA_DB}", flush=True)
            tuner = tune.Tuner.restore(path, trainable, resume_errored=True)
            replayed = rebuild_rungs(restored_scheduler(tuner), path, M.VAL_ACC, M.MODE)
            if replayed:
                print(f"resume: ASHA's rungs rebuilt from the stored histories of {replayed} trials", flush=True)
        elif grid is not None:
            tuner = tune.Tuner(
                trainable, param_space={"cell": tune.grid_search(grid)}, run_config=run_config,
                # A grid's trials all run to their end, so a finished trial's driver process can start the next trial
                # (about 4 s less per trial on 2 cores: a new actor imports Tune and Train). Not in the search below:
                # when ASHA stops a trial, its driver is still inside `fit()`, Tune's reset gives up after 2 s and
                # fails the next trial instead (tried: the sweep then hung).
                tune_config=tune.TuneConfig(metric=M.VAL_ACC, mode=M.MODE, max_concurrent_trials=concurrent,
                                            reuse_actors=True))
        else:
            searched = study.searched_knobs(fixed)
            paper = study.paper_point(shards.dataset)
            point = {f"{study.knob(k).section}/{k}": paper[k] for k in searched}
            searcher = OptunaSearch(
                space=functools.partial(search_space, study=study.name, fixed=fixed, searched=searched),
                metric=M.VAL_ACC, mode=M.MODE,
                sampler=optuna.samplers.TPESampler(seed=spec.seed),
                points_to_evaluate=[point] if spec.evaluate_paper_point and point else None,
                **optuna_storage(spec),
            )
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    metric=M.VAL_ACC, mode=M.MODE, search_alg=searcher, num_samples=spec.samples,
                    # keyed on the reported epoch: Tune's training_iteration restarts at 1 when a trial is resumed
                    scheduler=ASHAScheduler(time_attr=M.EPOCH, max_t=spec.epochs,
                                            grace_period=min(spec.grace_period, spec.epochs), reduction_factor=2),
                    max_concurrent_trials=concurrent,
                ),
                run_config=run_config,
            )
        stop = StopSignal()
        logging.getLogger(TUNE_LOGGER).addHandler(stop)
        try:
            results = tuner.fit()
        finally:
            logging.getLogger(TUNE_LOGGER).removeHandler(stop)
            try:  # an autoscaling cluster's idle nodes go now, not after Train's requests expire
                cancel_train_resource_requests()
            except Exception as e:  # best effort: the requests still expire by themselves
                print(f"sweep: could not cancel Ray Train's resource requests ({e}); they expire in 3 minutes",
                      flush=True)
    # Checkpoint folders beyond each trial's newest KEEP_CHECKPOINTS: written by a worker that died before Ray
    # registered them, they escaped Train's num_to_keep (issue 16, finding 1). Here, not in the trial: a trial whose
    # driver was killed is not run again once finished.
    trials = trial_histories(results, path, keep=KEEP_CHECKPOINTS)
    expected = len(grid) if grid is not None else spec.samples
    unfinished = max(0, expected - len(trials))  # never started
    for t in trials:
        # Ctrl-C: Tune saves its state, ends the running trials and returns; a trial that had not reached its last
        # epoch did not finish (in a search, one that ASHA had stopped is counted too: it did stop early)
        hist = t["history"]
        last = int(hist[M.EPOCH].max()) if hist is not None and M.EPOCH in hist and len(hist) else 0
        if t["status"] == "unfinished" or (stop.seen and t["status"] == "ok" and last < spec.epochs):
            t["status"] = "unfinished"
            unfinished += 1
    table = results_table(trials, study)
    table.attrs.update(interrupted=stop.seen or unfinished > 0, unfinished=unfinished)
    table.attrs.update(decode_s=decode_s, data_manifest_hash=shards.manifest.get("content_hash"),
                       eval_split="test" if spec.folds else eval_split(shards),  # k-fold: the held-out fold
                       dataset=shards.dataset, classes=list(shards.classes), folds=spec.folds, cross_data=cross)
    return table, history_table(trials)


def optuna_storage(spec: SweepSpec) -> dict:
    """OptunaSearch's storage arguments: an SQLite file next to the Tune experiment on local or shared storage (for
    optuna-dashboard). On an object store SQLite cannot live, so Optuna keeps the study in memory: Tune saves the
    searcher, study included, with the experiment's state in the bucket, so a resume after the head node is lost
    gets the study back. Each fresh sweep is its own study; a resumed sweep keeps its study through the searcher's
    saved state."""
    import optuna

    name = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if spec.optuna_storage:  # a database of the user's (--optuna-storage): the study lives there, on any storage
        print(f"optuna: study {name} in {storage.redacted(spec.optuna_storage)} (optuna-dashboard "
              f"{storage.redacted(spec.optuna_storage)} shows it live)", flush=True)
        return {"storage": optuna.storages.RDBStorage(spec.optuna_storage), "study_name": name}
    if storage.is_remote(spec.storage):
        return {}
    folder = os.path.join(spec.storage, spec.name)
    os.makedirs(folder, exist_ok=True)
    return {"storage": optuna.storages.RDBStorage(f"sqlite:///{os.path.join(folder, OPTUNA_DB)}"),
            "study_name": name}


def check_optuna_storage(url: str) -> None:
    """--optuna-storage opens, before Ray starts: one ValueError naming the URL (its password hidden) otherwise."""
    if not url:
        return
    import optuna

    try:
        optuna.storages.RDBStorage(url)
    except Exception as e:  # SQLAlchemy's and the driver's errors: a missing driver, a refused connection, ...
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ValueError(f"--optuna-storage {storage.redacted(url)}: Optuna cannot open it ({first})") from None
