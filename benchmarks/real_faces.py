"""The first ablation tables on real faces: TransFER's Table 1 and Table 3's corners, MVT's Tables 1 and 3, on the
real FERPlus at laptop scale, several seeds per cell. A row per (table, cell, seed) goes to
docs/benchmarks/real_faces.csv; `ferlab report` on the two results folders prints the tables with Welch's test, the
difference each comparison resolves and the seeds a paper-scale run needs.

Laptop scale: the tiny presets from scratch at 64x64 (no pretrained weights), each study's paper augmentation (the
cpu recipe's default on real data), FERPlus's majority labels, `--limit` faces of each split and a few epochs; the
epoch is chosen on validation and the test accuracy read at that epoch (ferlab's FERPlus protocol). This is not the
papers' setting (ImageNet/MS-Celeb weights, 224 or 112 px, 40 epochs, the whole training split): the numbers say
what the mechanisms do at this scale, and how noisy a cell is between seeds.

    python benchmarks/real_faces.py                          # both studies, 3 seeds (about 75 minutes on 2 cores)
    python benchmarks/real_faces.py --only transfer --seeds 2 --epochs 2 --limit 500   # a quick look
    ferlab report results/real_faces_transfer                # the tables, power lines, plots
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, REPO)
import rows  # noqa: E402

# study -> (experiment file, its tables, options of its own)
RUNS = {
    "transfer": ("ablation_transfer.py", "table1,table3_corners", []),
    # MGN stage: 2 epochs of its own before each m's trials (trained once per (m, seed), shared by the cells)
    "mvt": ("ablation_mvt.py", "table1,table3", ["--mgn-epochs", "2", "--relabel-start", "2"]),
}


def prepare(ferplus: str) -> str:
    """The real FERPlus at 64x64, majority labels, in the experiments' cache (prepared once)."""
    from ferlab.data.synth import default_cache

    out = os.path.join(default_cache(), "ferplus-majority-s64")
    if not os.path.isfile(os.path.join(out, "manifest.json")):
        if not os.path.isdir(os.path.join(ferplus, "FER2013Train")):
            sys.exit(f"real_faces: {ferplus}: no FERPlus copy here (FER2013Train/ missing); pass --ferplus")
        subprocess.run([sys.executable, "-m", "ferlab.cli", "prepare", "ferplus", "--root", ferplus, "--out", out,
                        "--size", "64"], check=True, cwd=REPO)
    return out


def seconds(results: str) -> dict:
    """trial -> wall seconds from its driver's start (before MVT's MGN stage) to its last epoch's end."""
    hist = pd.read_csv(os.path.join(results, "history.csv"))
    return {t: float(h["epoch_end"].max() - h["trial_start"].min()) for t, h in hist.groupby("trial")}


def cell_rows(results: str, study: str, epochs: int, limit: int) -> list[dict]:
    """One row per (table, cell, seed) of a finished ablation: the cells as the report builds them."""
    from ferlab.report.tables import build_tables

    took = seconds(results)
    out = []
    for rt in build_tables(results):
        if rt.table is None:
            continue
        for label, trials in rt.row_trials:
            for _, t in trials.sort_values("seed").iterrows():
                out.append({"dataset": "ferplus", "study": study, "table": rt.table.key, "cell": label,
                            "seed": int(t["seed"]), "epochs": epochs, "limit": limit,
                            "val_acc": t["best_val_acc"], "test_acc": t["test_acc_at_best"],
                            "test_mca": t["test_mean_class_acc_at_best"], "seconds": round(took[t["trial"]], 1)})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ferplus", default=os.path.join(REPO, "..", "shared", "data", "ferplus"),
                   help="the FERPlus folder (FER2013Train/, FER2013Valid/, FER2013Test/ with label.csv)")
    p.add_argument("--only", choices=sorted(RUNS), help="one study (default both)")
    p.add_argument("--seeds", type=int, default=3, help="trainings per cell (default 3)")
    p.add_argument("--epochs", type=int, default=4, help="epochs per training (default 4)")
    p.add_argument("--limit", type=int, default=3000, help="faces of each split (default 3000)")
    p.add_argument("--results", default=os.path.join(REPO, "results"), help="where the results folders go")
    p.add_argument("--csv", default=os.path.join(rows.DOCS, "real_faces.csv"), help="the rows' file (default: the "
                   "docs' docs/benchmarks/real_faces.csv)")
    args = p.parse_args(argv)
    data = prepare(os.path.abspath(args.ferplus))
    out = []
    for study in [args.only] if args.only else list(RUNS):
        script, tables, own = RUNS[study]
        results = os.path.join(args.results, f"real_faces_{study}")
        cmd = [sys.executable, os.path.join(REPO, "experiments", script), "--data", data, "--table", tables,
               "--seeds", str(args.seeds), "--epochs", str(args.epochs), "--limit", str(args.limit),
               "--name", f"real_faces_{study}", "--results-dir", results, *own]
        print("real_faces:", " ".join(cmd[1:]), flush=True)
        start = time.time()
        code = subprocess.run(cmd, cwd=REPO).returncode
        if code != 0:
            print(f"real_faces: {script} exited {code}; no row written", file=sys.stderr)
            return 1
        got = cell_rows(results, study, args.epochs, args.limit)
        cells = {(r["table"], r["cell"]) for r in got}
        short = sorted({c for c in cells if sum((r["table"], r["cell"]) == c for r in got) < args.seeds})
        if not got or short:
            print(f"real_faces: {results}: cells with fewer than {args.seeds} seeds: {short or 'no cell'}; no row "
                  f"written", file=sys.stderr)
            return 1
        print(f"real_faces: {study}: {len(cells)} cells x {args.seeds} seeds in {time.time() - start:.0f} s",
              flush=True)
        out += got
    rows.append(args.csv, out, cmd=rows.command(__file__, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
