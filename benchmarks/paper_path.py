"""The `--recipe paper` commands the docs show, walked on this machine: each shrunk (the tiny presets, --limit, two
epochs, the global batch and milestones scaled down) but with two DDP workers per trial, on the real FERPlus and on
a folder data set of real faces. For each: `--dry-run` says what it will train; the run must finish, and its
history must match that plan (ferlab.run.plan.departures: equal steps and parameters on both ranks every epoch, the
global batch at every step, the planned rate at every epoch). A row per command goes to docs/benchmarks/paper_path.csv
only when every command passed; any departure is printed and the exit is 1.

    python benchmarks/paper_path.py                       # all five (about 25 minutes on 2 cores)
    python benchmarks/paper_path.py --only ferplus_transfer --ferplus ../shared/data/ferplus
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)
import rows  # noqa: E402

SHRINK = ["--recipe", "paper", "--workers-per-trial", "2", "--cpus-per-worker", "0.5", "--epochs", "2",
          "--limit", "1000", "--set", "train.global_batch=32"]
STEP_DECAY = ["--set", "train.lr_milestones=(1,)"]  # TransFER's /10 at 15 and 30, at 1 of 2 here
# (experiment file, data: "ferplus" or "folder", its own shrinking): the docs' --recipe paper commands
COMMANDS = {
    "sweep_transfer": ("sweep_transfer.py", "ferplus", STEP_DECAY + ["--samples", "2", "--grace-period", "2"]),
    "ablation_transfer": ("ablation_transfer.py", "folder", STEP_DECAY + ["--table", "table1", "--seeds", "1"]),
    "ferplus_transfer": ("ferplus_transfer.py", "ferplus", STEP_DECAY),
    "sweep_mvt": ("sweep_mvt.py", "ferplus", ["--samples", "2", "--grace-period", "2", "--mgn-epochs", "1"]),
    "ablation_mvt": ("ablation_mvt.py", "folder", ["--table", "table3", "--seeds", "1", "--mgn-epochs", "1"]),
}


def prepare(ferplus: str, tmp: str) -> dict:
    """{"ferplus": the real FERPlus at 64x64 (the experiments' own cache folder), "folder": 1,500 FERPlus training
    faces as a class folder (imbalanced as FERPlus is), prepared}."""
    from ferlab.data.labels import BASIC8
    from ferlab.data.synth import default_cache

    out = {"ferplus": os.path.join(default_cache(), "ferplus-majority-s64"), "folder": os.path.join(tmp, "folder")}
    if not os.path.isfile(os.path.join(out["ferplus"], "manifest.json")):
        _cli("prepare", "ferplus", "--root", ferplus, "--out", out["ferplus"], "--size", "64")
    faces = os.path.join(tmp, "faces")
    with open(os.path.join(ferplus, "FER2013Train", "label.csv")) as f:
        for row in list(csv.reader(f))[:1500]:
            votes = [float(v) for v in row[2:9]]
            os.makedirs(os.path.join(faces, BASIC8[votes.index(max(votes))]), exist_ok=True)
            os.symlink(os.path.join(ferplus, "FER2013Train", row[0]),
                       os.path.join(faces, BASIC8[votes.index(max(votes))], row[0]))
    _cli("prepare", "folder", "--root", faces, "--out", out["folder"], "--size", "64", "--classes", "7")
    return out


def _cli(*argv):
    r = subprocess.run([sys.executable, "-m", "ferlab.cli", *argv, "--num-cpus", "2"], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"ferlab {' '.join(argv)}: exit {r.returncode}\n{r.stderr[-2000:]}")


def walk(name: str, data: dict, tmp: str) -> tuple[dict, list[str]]:
    import pandas as pd

    from ferlab.run.plan import departures

    script, which, own = COMMANDS[name]
    argv = [sys.executable, os.path.join(REPO, "experiments", script), "--data", data[which], *SHRINK, *own,
            "--storage", os.path.join(tmp, "storage"), "--results-dir", os.path.join(tmp, name)]
    dry = subprocess.run(argv + ["--dry-run"], capture_output=True, text=True)
    if dry.returncode:
        return {}, [f"--dry-run: exit {dry.returncode}: {dry.stderr[-500:]}"]
    plan = json.loads(dry.stdout)
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    with open(os.path.join(tmp, f"{name}.console.log"), "w") as f:
        f.write(r.stdout + r.stderr)
    if r.returncode:
        return {}, [f"exit {r.returncode}: {(r.stdout + r.stderr)[-1500:]}"]
    history = pd.read_csv(os.path.join(tmp, name, "history.csv"))
    problems = departures(history, plan)
    counts = [json.loads(c) for c in history["train_class_counts"]]
    balance = min(min(c) / max(c) for c in counts)  # the least balanced epoch's rarest over commonest class
    steps = [json.loads(s) for s in history["rank_steps"]]
    return {"experiment": name, "data": which, "trials": history["trial"].nunique(), "epochs": len(history),
            "workers": plan["batch"]["workers"], "global_batch": plan["batch"]["global"],
            "balance": plan["train_config"]["balance"], "class_min_over_max": balance,
            "steps_per_epoch": f"{min(s[0] for s in steps)}-{max(s[0] for s in steps)}",
            "ranks_equal": all(len(set(s)) == 1 for s in steps), "as_planned": not problems,
            "wall_s": wall}, problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ferplus", default=os.environ.get("FERLAB_FERPLUS",
                                                       os.path.join(REPO, "..", "shared", "data", "ferplus")))
    p.add_argument("--only", action="append", choices=list(COMMANDS), help="these commands only (repeatable)")
    p.add_argument("--out", default=os.path.join(rows.DOCS, "paper_path.csv"))
    args = p.parse_args(argv)
    if not os.path.isdir(args.ferplus):
        raise SystemExit(f"--ferplus {args.ferplus}: no FERPlus copy there")
    with tempfile.TemporaryDirectory() as tmp:
        data = prepare(args.ferplus, tmp)
        results, failed = [], False
        for name in args.only or COMMANDS:
            row, problems = walk(name, data, tmp)
            print(f"{name}: " + ("as planned" if not problems else "DEPARTS FROM ITS PLAN") +
                  (f", {row['trials']} trials, {row['wall_s'] / 60:.1f} min" if row else ""), flush=True)
            for line in problems:
                print(f"  {line}", flush=True)
            failed |= bool(problems)
            results.append(row)
    if failed:
        print("no rows written: a command departed from its plan", file=sys.stderr)
        return 1
    rows.append(args.out, results, cmd=rows.command(__file__, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
