"""What a sweep pays per trial and per epoch besides training: read from a finished sweep's Tune records.

    python experiments/sweep_transfer.py && python benchmarks/fixed_costs.py ~/ferlab_results/sweep_transfer

Per trial: its wall time as Tune measured it (`time_total_s` at its last result, from the trial's start), the sum of
its epochs' training + evaluation time (`epoch_time_s`, measured in the worker), and the difference: the fixed cost
of the trial (the trial driver, the TorchTrainer's controller and worker group, the model build, the dataset split,
the checkpoint writes and reports). Per epoch: the wait for its first batch (`first_batch_wait_s`), epoch 1 apart
(it includes the first execution's start-up). Targets (issue 15): <= 3 s per trial, <= 0.3 s per epoch start.
"""

from __future__ import annotations

import glob
import json
import os
import statistics
import sys


def main():
    folder = os.path.expanduser(sys.argv[1] if len(sys.argv) > 1 else "~/ferlab_results/sweep_transfer")
    rows = []
    for path in sorted(glob.glob(os.path.join(folder, "trial_driver_*", "result.json"))):
        with open(path) as f:
            results = [json.loads(line) for line in f if line.strip()]
        results = [r for r in results if "epoch_time_s" in r]
        if not results:
            continue
        wall = results[-1]["time_total_s"]
        epochs = sum(r["epoch_time_s"] for r in results)
        starts = [r["first_batch_wait_s"] for r in results]
        rows.append((results[-1]["trial_id"], len(results), wall, epochs, wall - epochs, starts[0], starts[1:]))
    if not rows:
        sys.exit(f"{folder}: no trial with epoch_time_s in its result.json (a sweep of this ferlab version?)")
    print("| trial | epochs | wall s | epochs s | fixed s | first batch, epoch 1 s | first batch, later epochs s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for trial, n, wall, ep, fixed, first, later in rows:
        print(f"| {trial} | {n} | {wall:.1f} | {ep:.1f} | {fixed:.1f} | {first:.2f} | "
              f"{', '.join(f'{s:.2f}' for s in later) or '-'} |")
    later = [s for r in rows for s in r[6]]
    print(f"\nfixed cost per trial: median {statistics.median(r[4] for r in rows):.1f} s "
          f"(range {min(r[4] for r in rows):.1f}-{max(r[4] for r in rows):.1f}); first batch of epoch 1: median "
          f"{statistics.median(r[5] for r in rows):.2f} s; of later epochs: median "
          f"{statistics.median(later) if later else float('nan'):.2f} s (max {max(later, default=float('nan')):.2f})")


if __name__ == "__main__":
    main()
