"""Chaos: a sweep whose every trial loses its training worker (or its whole node) once, against the same sweep
undisturbed.

The pattern of Ray's own Tune fault-tolerance release test (workers killed while the sweep runs, every trial must
still reach its last epoch from its checkpoints), made stricter: the tables after the faults must equal the tables
of the undisturbed run with the same seed (training is deterministic on the CPU).

Both runs are `experiments/sweep_transfer.py` with the same arguments (no early stopping: --grace-period equals
--epochs, so every trial is expected to train every epoch), each in its own process group. In the chaos run, the
first time a trial's worker reports an epoch (Ray's log line names the worker's pid and the trial's checkpoint
path), the worker is SIGKILLed, as a node losing a process would: one kill per trial, at a random moment of its
first epoch's report, `--delay` seconds after it at most. It prints, per run, the wall time and trials completed;
then the kills, the epochs lost (expected epochs missing from history.csv, target 0), epochs reported twice, whether
every metric equals the undisturbed run's, and the time the faults cost.

With `--kill node`, as a spot reclamation does: both runs go to an emulated cluster on this machine
(ferlab.emulation: a head of 1 CPU for the drivers, two worker nodes of 2 CPUs that share no disk, each in a mount
namespace of its own; root only) with the data and the sweep's storage in a bucket (`--storage s3://...`, or by
default a local S3-compatible server started here). At a trial's first report, the node its training worker runs on
is killed whole (its raylet and every process on it) and a fresh node joins in its place, as an autoscaler replaces
a reclaimed one; the trial must continue on another node from its newest checkpoint in the bucket. It also prints
the epochs trained twice (epochs whose line a worker printed more than once: lost before their checkpoint landed).

    python benchmarks/chaos.py                      # 4 trials x 4 epochs of transfer_tiny on SynthFER
    python benchmarks/chaos.py --samples 8 --epochs 6
    python benchmarks/chaos.py --kill node --samples 2 --epochs 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pandas as pd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rows  # noqa: E402
sys.path.insert(0, REPO)
SCRIPT = os.path.join(REPO, "experiments", "sweep_transfer.py")
SAME = ["trial", "epoch", "val_acc", "val_loss", "train_loss"]  # what a fault must not change


def run(args: list[str], chaos: bool, delay: float, rng: random.Random, cluster=None, env=None,
        runs: str = "") -> dict:
    """One sweep in its own process group; with `chaos`, each trial's worker is killed once, or with `cluster`
    (ferlab.emulation.LocalCluster) its whole node, replaced by a fresh one. The trigger is the trial's first
    checkpoint appearing in the storage (`runs`: the sweep's train_runs folder), whose history names the worker's
    pid and node (ferlab.train.metrics.WORKER_PID, NODE): nothing depends on what the console prints (a trigger on
    a console line once stopped firing when the line left the console, and the benchmark reported success without
    a fault). Returns its wall time, exit code, the (pid, trial) of every kill and the epoch lines per (worker pid,
    epoch)."""
    from ferlab import EPOCH_LINE

    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, SCRIPT, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=REPO, start_new_session=True, env=env)
    kills, timers, epochs, trial_of, done = [], [], [], {}, threading.Event()
    epoch_line = re.compile(r"RayTrainWorker pid=(\d+)\).*?\b" + EPOCH_LINE.lstrip("^") + "val_acc")

    def kill(pid: int, trial: str):
        try:
            if cluster is not None:
                node = cluster.node_of(pid)
                n = cluster.kill_node(node)
                kills.append((pid, trial))
                print(f"  killed node {node} ({n} processes) running trial {trial}; a fresh node joins", flush=True)
                cluster.add_node(cpus=2)
            elif os.getsid(pid) == proc.pid:  # only a process of this sweep (Ray's workers: own group, same session)
                os.kill(pid, signal.SIGKILL)
                kills.append((pid, trial))
                print(f"  killed training worker {pid} of trial {trial}", flush=True)
        except ProcessLookupError:
            pass

    def watch():  # a trial's first checkpoint in the storage -> its worker (or node) killed once
        killed = set()
        while not done.wait(0.5):
            for trial, pid in first_checkpoints(runs, env):
                trial_of[pid] = trial
                if trial not in killed:
                    killed.add(trial)
                    timer = threading.Timer(rng.uniform(0, delay), kill, (pid, trial))
                    timer.start()
                    timers.append(timer)

    watcher = threading.Thread(target=watch, daemon=True)
    if chaos:
        watcher.start()
    for line in proc.stdout:
        e = epoch_line.search(line)
        if e:
            epochs.append((int(e.group(1)), int(e.group(2))))
        if "Trial status:" in line or "epoch " in line and "val_acc" in line:
            print("  " + line.rstrip()[-150:], flush=True)
    code = proc.wait()
    done.set()
    for timer in timers:
        timer.cancel()
    trained = [(trial_of.get(pid, f"worker {pid}"), epoch) for pid, epoch in epochs]
    return {"wall_s": time.perf_counter() - t0, "code": code, "kills": kills,
            "twice": len(trained) - len(set(trained))}


def first_checkpoints(runs: str, env: dict | None) -> list[tuple[str, int]]:
    """(trial, rank 0's worker pid) of every trial with a checkpoint in the sweep's train_runs folder (local or a
    bucket), read from the checkpoint's history."""
    from ferlab import storage
    from ferlab.train import checkpoints as C
    from ferlab.train import metrics as M

    if env:
        os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    out = []
    try:
        trials = [n for n, is_dir in storage.listdir(runs) if is_dir]
    except (OSError, storage.StorageError):
        return out
    for trial in trials:
        folders = sorted(n for n, is_dir in storage.listdir(storage.join(runs, trial))
                         if is_dir and n.startswith("checkpoint_"))
        for folder in folders[:1]:
            try:
                history = storage.read_json(storage.join(runs, trial, folder, C.HISTORY_FILE))["history"]
            except (OSError, ValueError, KeyError):
                continue  # being written
            if history and M.WORKER_PID in history[-1]:
                out.append((trial, int(history[-1][M.WORKER_PID])))
    return out


def normalised(trials: pd.DataFrame, hist: pd.DataFrame) -> pd.DataFrame:
    """history.csv's metrics with each trial id replaced by the trial's setting (its knobs in trials.csv): the two
    runs' ids differ, and the sampler, seeded alike, proposes the same settings."""
    from ferlab.studies import get_study

    knobs = [k for k in get_study("transfer").knob_names if k in trials]
    setting = {t: str(row) for t, row in zip(trials["trial"], trials[knobs].to_dict("records"))}
    return hist.assign(trial=hist["trial"].map(setting))[SAME].sort_values(["trial", "epoch"], ignore_index=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kill", choices=("worker", "node"), default="worker",
                   help="what each trial loses once: its training worker, or its whole node (an emulated cluster)")
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--synth-n", type=int, default=1000)
    p.add_argument("--delay", type=float, default=1.0, help="a kill lands up to this many seconds after the report")
    p.add_argument("--storage", default=None, help="--kill node: the sweep's storage, a bucket URI (default: a "
                                                   "local S3-compatible server started here)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--csv", default=os.path.join(rows.DOCS, "chaos.csv"), help="results CSV ('' for none)")
    args = p.parse_args()
    from ferlab import storage

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        common = ["--samples", str(args.samples), "--epochs", str(args.epochs), "--grace-period", str(args.epochs),
                  "--synth-n", str(args.synth_n), "--seed", str(args.seed), "--max-concurrent", "1"]
        cluster, env, store = None, None, os.path.join(tmp, "s")
        if args.kill == "node":
            cluster, env, store, data = emulated_cluster(stack, args, tmp)
            common += ["--address", cluster.address, "--cpus-per-worker", "1.5", "--data", data]
        common += ["--storage", store]
        runs, tables = {}, {}
        for name in ("undisturbed", "chaos"):
            print(f"{name} run:", flush=True)
            runs[name] = run(common + ["--name", name, "--results-dir", os.path.join(tmp, name)], name == "chaos",
                             args.delay, rng, cluster if name == "chaos" else None, env,
                             runs=storage.join(storage.normalize(store), name, "train_runs"))
            trials = pd.read_csv(os.path.join(tmp, name, "trials.csv"))
            hist = pd.read_csv(os.path.join(tmp, name, "history.csv"))
            tables[name] = trials, hist
            print(f"{name}: exit {runs[name]['code']}, {runs[name]['wall_s']:.0f} s, "
                  f"{(trials['status'] == 'ok').sum()}/{args.samples} trials completed", flush=True)
    hist = tables["chaos"][1]
    expected = {(t, e) for t in tables["chaos"][0]["trial"] for e in range(1, args.epochs + 1)}
    got = list(zip(hist["trial"], hist["epoch"]))
    lost, twice = expected - set(got), len(got) - len(set(got))
    same = normalised(*tables["chaos"]).equals(normalised(*tables["undisturbed"]))
    kills = len(runs["chaos"]["kills"])
    print(f"\n{args.kill}s killed: {kills} (one per trial: {kills == args.samples}); epochs lost: {len(lost)} (target "
          f"0); epochs reported twice: {twice}; epochs trained twice: {runs['chaos']['twice']} (target 0); every "
          f"metric equal to the undisturbed run's: {same}; time the faults cost: "
          f"{runs['chaos']['wall_s'] - runs['undisturbed']['wall_s']:+.0f} s "
          f"({runs['chaos']['wall_s'] / runs['undisturbed']['wall_s'] - 1:+.0%})")
    if kills < args.samples:  # a run that injected fewer faults than asked measured nothing: no row
        print(f"FAILED: {kills} {args.kill}s killed of the {args.samples} asked (one per trial); no row written",
              file=sys.stderr)
        return 1
    if args.csv:
        rows.append(args.csv, [{"kill": args.kill, "trials": args.samples, "epochs": args.epochs, "kills": kills,
                                "epochs_lost": len(lost), "reported_twice": twice,
                                "trained_twice": runs["chaos"]["twice"], "metrics_equal": same,
                                "undisturbed_s": runs["undisturbed"]["wall_s"], "chaos_s": runs["chaos"]["wall_s"]}],
                    cmd=rows.command(__file__, None))
    return 0


def emulated_cluster(stack, args, tmp: str):
    """--kill node: a head of 1 CPU (the drivers; no training worker fits there), two private worker nodes of 2 CPUs,
    and the data and storage in a bucket (the nodes share no disk). Returns (cluster, env, storage, data)."""
    from ferlab import storage
    from ferlab.emulation import LocalCluster, S3Server

    env = dict(os.environ)
    if args.storage is None:
        server = S3Server(log=os.path.join(tmp, "s3.log"))
        env |= stack.enter_context(server)
        store = storage.join(server.uri, "chaos")
    else:
        store = args.storage.rstrip("/")
    data = storage.join(store, "shards")
    synth = subprocess.run([sys.executable, "-m", "ferlab.cli", "synth", "--out", data, "--n", str(args.synth_n),
                            "--size", "64", "--seed", str(args.seed)], env=env, capture_output=True, text=True)
    if synth.returncode != 0:
        raise SystemExit(synth.stderr[-2000:])
    cluster = stack.enter_context(LocalCluster(head_cpus=1, env=env))
    for _ in range(2):
        cluster.add_node(cpus=2)
    return cluster, cluster.env, store, data


if __name__ == "__main__":
    sys.exit(main())
