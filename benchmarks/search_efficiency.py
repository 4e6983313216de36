"""Does Optuna (TPE) + ASHA find what a grid finds for less compute? Searches replayed on a recorded grid
(issue 15, part 3).

The tabular benchmark (benchmarks/search_grid.csv, recorded by benchmarks/search_record.py) holds per-epoch
validation curves of 30 TransFER settings x 2 seeds on SynthFER. Each search here is a real Ray Tune run -- the
sweep's searcher and scheduler, a function trainable that reports the recorded curve of the proposed setting epoch by
epoch instead of training -- so a search takes seconds, and each method is replayed with many sampler seeds.

    python benchmarks/search_efficiency.py                      # every method, 5 sampler seeds each (~15 min)
    python benchmarks/search_efficiency.py --repeats 20 --methods tpe+asha,random+asha

What it measures, per method over its replays:
- quality of a setting: the mean over the recorded seeds of its best validation accuracy over the epochs (what the
  sweep ranks trials by, `best_val_acc`), and noise: the pooled standard deviation of that over seeds;
- a search succeeds once its incumbent (the trial with the highest `best_val_acc` so far, as the sweep reports it)
  is a setting within one noise of the grid's best; "epochs to target" counts every epoch any trial reported until
  then, as a fraction of the grid's epochs (every setting once, all epochs, one seed);
- and the noise-aware final step (`--confirm K` in the sweeps): the top K settings of the search re-trained with
  every recorded seed, the winner chosen on the mean: how often that pick is within noise, and what it adds.

As in a sweep, all trials of one search use one training seed (replay r uses recorded seed r mod 2), the paper's
point is evaluated first by the TPE methods (`evaluate_paper_point`), and ASHA keys on the epoch.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import pandas as pd
from ray import tune

import rows  # noqa: E402 (benchmarks/rows.py)
from search_record import DEFAULT_CSV, KNOBS, VALUES  # noqa: E402 (this folder is on sys.path as the script's)

METHODS = ("grid", "random", "random+asha", "tpe", "tpe+asha")


def load_grid(path: str) -> dict:
    """{setting tuple: (seeds, epochs) array of val_acc}."""
    df = pd.read_csv(path)
    curves = {}
    for key, g in df.groupby(list(KNOBS)):
        g = g.pivot(index="seed", columns="epoch", values="val_acc").sort_index(axis=1)
        curves[tuple(float(v) for v in key)] = g.to_numpy()
    return curves


def truth(curves: dict) -> tuple[dict, float, float]:
    """(quality per setting, grid's best quality, noise): quality = mean over seeds of the best epoch's val_acc."""
    best_per_seed = {s: c.max(axis=1) for s, c in curves.items()}
    quality = {s: float(b.mean()) for s, b in best_per_seed.items()}
    noise = float(np.sqrt(np.mean([b.var(ddof=1) for b in best_per_seed.values()])))
    return quality, max(quality.values()), noise


def setting_of(config: dict) -> tuple:
    b = float(config["branches"])
    return b, (round(float(config["p1"]), 1) if b > 0 else 0.0), round(float(config["p2"]), 1)


def replay_trainable(config, curves, seeds_per_trial):
    """Reports the recorded curve of the proposed setting (mean over `seeds_per_trial` seeds from this search's
    training seed), one epoch per report, as a trial of the sweep would."""
    c = curves[setting_of(config)]
    rows = [(config["train_seed"] + i) % len(c) for i in range(seeds_per_trial)]
    curve = c[rows].mean(axis=0)
    best = 0.0
    for e, acc in enumerate(curve, 1):
        best = max(best, float(acc))
        tune.report({"epoch": e, "val_acc": float(acc), "best_val_acc": best, "cost": seeds_per_trial})


def define_by_run(trial, train_seed: int):
    """The replay's search space, as the study defines it: p1 only where there are local CNNs (B > 0)."""
    b = trial.suggest_categorical("branches", list(VALUES["branches"]))
    trial.suggest_float("p2", 0.1, 0.5, step=0.2)
    if b > 0:
        trial.suggest_float("p1", 0.4, 0.8, step=0.2)
    return {"train_seed": train_seed, "p1": 0.0} if b == 0 else {"train_seed": train_seed}


def one_search(method: str, r: int, curves: dict, samples: int, grace: int, rf: int, seeds_per_trial: int,
               concurrent: int) -> list[dict]:
    """One replayed search; returns every reported epoch in arrival order."""
    import optuna
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    train_seed = r % len(next(iter(curves.values())))
    epochs = next(iter(curves.values())).shape[1]
    space = {k: tune.choice(list(v)) for k, v in VALUES.items()} | {"train_seed": train_seed}
    search_alg, samples_ = None, samples
    if method == "grid":
        order = np.random.default_rng(r).permutation(len(curves))
        grid = [dict(zip(KNOBS, list(curves)[i])) for i in order]
        space = {"setting": tune.grid_search(grid), "train_seed": train_seed}
        samples_ = 1
    elif method.startswith("tpe"):
        search_alg = OptunaSearch(space=functools.partial(define_by_run, train_seed=train_seed), metric="val_acc",
                                  mode="max",
                                  sampler=optuna.samplers.TPESampler(seed=r),
                                  points_to_evaluate=[{"branches": 2, "p2": 0.3, "p1": 0.6}])
        space = None
    if search_alg is None:
        search_alg = tune.search.BasicVariantGenerator(random_state=r)
    scheduler = None
    if method.endswith("asha"):
        scheduler = ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=grace, reduction_factor=rf)
    log = Arrivals()

    def trainable(config):
        cfg = config["setting"] | {"train_seed": config["train_seed"]} if "setting" in config else config
        replay_trainable(cfg, curves, seeds_per_trial)

    with tempfile.TemporaryDirectory() as storage:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"CPU": 0.1}), param_space=space,
            tune_config=tune.TuneConfig(metric="val_acc", mode="max", search_alg=search_alg, scheduler=scheduler,
                                        num_samples=samples_, max_concurrent_trials=concurrent, reuse_actors=True),
            run_config=tune.RunConfig(storage_path=storage, verbose=0, callbacks=[log]))
        tuner.fit()
    return log.rows


class Arrivals(tune.Callback):
    """Every result in the order the driver received it."""

    def __init__(self):
        self.rows = []

    def on_trial_result(self, iteration, trials, trial, result, **info):
        cfg = trial.config["setting"] if "setting" in trial.config else trial.config
        self.rows.append({"trial": trial.trial_id, "setting": setting_of(cfg), "epoch": result["epoch"],
                          "best_val_acc": result["best_val_acc"], "cost": result["cost"]})


def score(rows: list[dict], quality: dict, target: float, grid_epochs: int, confirm: int, curves: dict) -> dict:
    """Epochs to target (fraction of the grid's), whether the final pick is within noise, and the same for the
    top-`confirm` re-training step."""
    spent, best_trial, hit = 0, {}, None
    for row in rows:
        spent += row["cost"]
        best_trial[row["trial"]] = max(best_trial.get(row["trial"], (0.0, None))[0], row["best_val_acc"]), row["setting"]
        incumbent = max(best_trial.values())[1]
        if hit is None and quality[incumbent] >= target:
            hit = spent
    ranked = sorted(best_trial.values(), reverse=True)
    top = list(dict.fromkeys(s for _, s in ranked))[:confirm]
    picked = max(top, key=lambda s: quality[s])  # re-trained with every recorded seed: chosen on the mean
    seeds, epochs = next(iter(curves.values())).shape
    extra = len(top) * (seeds - 1) * epochs  # each top setting has one seed already
    return {"epochs_to_target": hit / grid_epochs if hit is not None else np.nan, "spent": spent / grid_epochs,
            "final_ok": quality[ranked[0][1]] >= target, "confirmed_ok": quality[picked] >= target,
            "confirm_cost": extra / grid_epochs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", default=DEFAULT_CSV)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--repeats", type=int, default=5, help="replays per method (sampler seeds)")
    p.add_argument("--samples", type=int, default=30, help="trials per search (the grid has 30 settings)")
    p.add_argument("--asha", default="2:2:1",
                   help="ASHA settings for random+asha, the first of --tpe-asha: grace:reduction factor:seeds per "
                        "proposal (the sweep's defaults: 2:2:1)")
    p.add_argument("--tpe-asha", default="2:2:1,1:2:1,3:2:1,2:3:1,2:2:2",
                   help="the ASHA settings TPE + ASHA is replayed with, comma-separated (which default is best?)")
    p.add_argument("--concurrent", type=int, default=2, help="trials at once (the laptop sweep runs 2)")
    p.add_argument("--confirm", type=int, default=3, help="top-k settings re-trained with every seed")
    p.add_argument("--csv", default=os.path.join(rows.DOCS, "search_efficiency.csv"),
                   help="the results CSV the methods' rows are appended to ('' for none)")
    args = p.parse_args(argv)

    import ray

    curves = load_grid(args.grid)
    quality, best, noise = truth(curves)
    seeds, epochs = next(iter(curves.values())).shape
    grid_epochs = len(curves) * epochs
    target = best - noise
    good = sorted(s for s, q in quality.items() if q >= target)
    print(f"{args.grid}: {len(curves)} settings x {seeds} seeds x {epochs} epochs; grid's best {best:.4f} "
          f"{max(quality, key=quality.get)}, seed noise {noise:.4f}; {len(good)} settings within noise: {good}; "
          f"grid = {grid_epochs} epochs", flush=True)
    # a replay needs neither Tune's per-trial log files nor its experiment checkpoints: seconds per search
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "3600")
    logging.getLogger("ray.tune").setLevel(logging.ERROR)  # "could not fetch metrics": no log files, by design
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    out = []
    try:
        for method in args.methods.split(","):
            chosen = args.tpe_asha if method == "tpe+asha" else args.asha if method.endswith("asha") else "0:0:1"
            variants = [tuple(int(v) for v in a.split(":")) for a in chosen.split(",")]
            for grace, rf, k in variants:
                name = method + (f" (grace {grace}, rf {rf}, {k} seed/trial)" if method.endswith("asha") else "")
                t0 = time.perf_counter()
                scores = [score(one_search(method, r, curves, args.samples, grace, rf, k, args.concurrent),
                                quality, target, grid_epochs, args.confirm, curves) for r in range(args.repeats)]
                df = pd.DataFrame(scores)
                hits = df["epochs_to_target"].dropna()
                out.append({"method": name, "reached": f"{len(hits)}/{len(df)}",
                            "epochs_to_target_median": hits.median() if len(hits) else np.nan,
                            "q25": hits.quantile(0.25) if len(hits) else np.nan,
                            "q75": hits.quantile(0.75) if len(hits) else np.nan,
                            "spent": df["spent"].median(), "final_ok": df["final_ok"].mean(),
                            "confirmed_ok": df["confirmed_ok"].mean(), "confirm_cost": df["confirm_cost"].median(),
                            "s_per_search": (time.perf_counter() - t0) / args.repeats})
                print(pd.DataFrame(out[-1:]).to_string(index=False, float_format="%.3f"), flush=True)
    finally:
        ray.shutdown()
    print("\nepochs as a fraction of the grid's (every setting once, all epochs); searches that never reached the "
          "target are left out of the median and counted in `reached`")
    print(pd.DataFrame(out).to_string(index=False, float_format="%.3f"))
    if args.csv:
        rows.append(args.csv, [r | {"repeats": args.repeats, "samples": args.samples} for r in out],
                    cmd=rows.command(__file__, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
