"""The README's two commands, timed end to end as a user runs them: the smoke sweep and the main job (the default
TransFER sweep on SynthFER); a row each appended to docs/benchmarks/commands.csv with the wall time and what the
sweep reached.

    python benchmarks/commands.py                 # both (the main job: about half an hour on 2 cores)
    python benchmarks/commands.py --only smoke

Each runs in a fresh results folder and storage, in its own process, as `python experiments/sweep_transfer.py`;
SynthFER comes from the cache when it is there (the row says whether it was).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)
import rows  # noqa: E402

COMMANDS = {"smoke": ["--smoke"], "main": []}


def run(name: str, tmp: str) -> dict:
    from ferlab.data.synth import default_cache

    results = os.path.join(tmp, name)
    before = set(os.listdir(default_cache())) if os.path.isdir(default_cache()) else set()
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, os.path.join(REPO, "experiments", "sweep_transfer.py"), *COMMANDS[name],
                        "--results-dir", results, "--storage", os.path.join(tmp, "storage")],
                       capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    with open(os.path.join(tmp, f"{name}.console.log"), "w") as f:  # what the user saw (stdout, then stderr)
        f.write(r.stdout + r.stderr)
    if r.returncode != 0:
        raise SystemExit(f"{name}: exit {r.returncode}\n{(r.stdout + r.stderr)[-3000:]}")
    after = set(os.listdir(default_cache()))
    df = pd.read_csv(os.path.join(results, "trials.csv"))
    best = df.sort_values("best_val_acc", ascending=False).iloc[0]
    return {"run": name, "command": "python experiments/sweep_transfer.py " + " ".join(COMMANDS[name]),
            "wall_s": wall, "synthfer_drawn": bool(after - before), "trials": len(df),
            "trials_all_epochs": int((df["epochs"] == df["epochs"].max()).sum()),
            "console_lines": len((r.stdout + r.stderr).splitlines()),
            "best_val_acc": best["best_val_acc"], "best_setting": ", ".join(
                f"{k}={best[k]:.3g}" if isinstance(best[k], float) else f"{k}={best[k]}"
                for k in ("branches", "p1", "p2", "stem_stage") if k in best)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=sorted(COMMANDS), default=None)
    p.add_argument("--csv", default=os.path.join(rows.DOCS, "commands.csv"), help="results CSV ('' for none)")
    p.add_argument("--keep", default=None, help="keep the runs' results folders here (default: a temporary folder)")
    args = p.parse_args(argv)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in [args.only] if args.only else list(COMMANDS):
            out.append(run(name, args.keep or tmp))
            print(f"{name}: {out[-1]['wall_s'] / 60:.1f} min, best val acc {out[-1]['best_val_acc']:.3f} "
                  f"({out[-1]['best_setting']})", flush=True)
    if args.csv:
        rows.append(args.csv, [{k: v for k, v in r.items() if k != "command"} | {"sweep": r["command"]} for r in out],
                    cmd=rows.command(__file__, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
