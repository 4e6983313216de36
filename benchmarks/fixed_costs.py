"""What a sweep pays per trial and per epoch besides training: read from a finished sweep's Tune records.

    python experiments/sweep_transfer.py && python benchmarks/fixed_costs.py ~/ferlab_results/sweep_transfer \
        /tmp/ray/session_latest/logs

Per trial: its wall time as Tune measured it (`time_total_s` at its last result, from the trial's start), the sum of
its epochs' training + evaluation time (`epoch_time_s`, measured in the worker), and the difference: the fixed cost
of the trial (the trial driver, the TorchTrainer's controller and worker group, the model build, the dataset split,
the checkpoint writes and reports). Tune's clock starts once the trial's driver runs, so the time between a trial's
last result and the next trial's start on the freed slot (a new driver process, or a reused one in a grid) is
printed apart. Per epoch: the wait for its first batch (`first_batch_wait_s`), epoch 1 apart (it includes the first
execution's start-up). Targets (issue 15): <= 3 s per trial, <= 0.3 s per epoch start.

With the Ray session's log folder of the same sweep (second argument), the fixed cost is split into the stages
that Ray Train V2 logs with timestamps (logs/train/ray-train-sys-controller-*.log, one JSON record per line, per
Train run; a run is named after its Tune trial): from the trial's start to its TorchTrainer's controller, the
worker group's start-up as Ray Train times it (worker actors created, train context, train function launched),
and from the launch to the end of the first epoch minus that epoch's own time (model build, first data).
"""

from __future__ import annotations

import bisect
import glob
import json
import os
import re
import statistics
import sys


def main():
    folder = os.path.expanduser(sys.argv[1] if len(sys.argv) > 1 else "~/ferlab_results/sweep_transfer")
    rows, began, first_epoch_end, ended = [], {}, {}, {}
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
        began[results[-1]["trial_id"]] = results[0]["timestamp"] - results[0]["time_total_s"]
        first_epoch_end[results[-1]["trial_id"]] = (results[0]["timestamp"], results[0]["epoch_time_s"])
        ended[results[-1]["trial_id"]] = results[-1]["timestamp"]
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

    gaps = slot_gaps([(began[r[0]], ended[r[0]]) for r in rows])
    if gaps:
        print(f"between trials (a trial's last result to the start of the next trial on its freed slot: Tune "
              f"starting, or reusing, a trial driver): median {statistics.median(gaps):.1f} s "
              f"(range {min(gaps):.1f}-{max(gaps):.1f}, {len(gaps)} trials)")

    if len(sys.argv) > 2:
        ray_stages(sys.argv[2], began, first_epoch_end)


def slot_gaps(spans: list[tuple[float, float]]) -> list[float]:
    """Per trial that started after another ended: its start minus the latest end before it (when a trial slot
    came free). A trial's own wall time (Tune's time_total_s) starts once its driver runs, so this is the rest."""
    ends = sorted(end for _, end in spans)
    before = [(start, bisect.bisect_right(ends, start)) for start, _ in spans]  # how many trials ended by then
    return [start - ends[n - 1] for start, n in before if n]


# Ray Train V2's own start-up records ("[Worker Group Initialization] <stage> in <s>s."), by stage
STAGE = re.compile(r"\[Worker Group Initialization\] (.+?) (?:completed )?in ([0-9.]+)s")


def ray_stages(logs: str, began: dict, first_epoch_end: dict) -> None:
    """Median seconds per start-up stage over the sweep's trials, from the controller logs of the Ray session."""
    stages: dict[str, list[float]] = {}
    for path in glob.glob(os.path.join(logs, "train", "ray-train-sys-controller-*.log")):
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        for r in records:
            trial = r.get("run_name")
            if trial not in began:
                continue  # an MGN stage's run, or another sweep's
            m = STAGE.search(r["message"])
            if m:
                stages.setdefault(m.group(1), []).append(float(m.group(2)))
            if r["message"].startswith("Requesting resources"):
                stages.setdefault("trial start -> TorchTrainer controller up (trial driver, data split set-up)",
                                  []).append(r["timestamp_ns"] / 1e9 - began[trial])
            if r["message"].startswith("Started training worker group") and trial in first_epoch_end:
                end, epoch_s = first_epoch_end[trial]
                stages.setdefault("train function launched -> epoch 1 reported, minus the epoch (model build, "
                                  "dataset split, first report)", []).append(end - r["timestamp_ns"] / 1e9 - epoch_s)
    if not stages:
        sys.exit(f"{logs}: no Ray Train controller log of these trials (the session's logs/ folder of this sweep?)")
    print("\n| stage | median s | runs |\n| --- | --- | --- |")
    for name, values in stages.items():
        print(f"| {name} | {statistics.median(values):.2f} | {len(values)} |")


if __name__ == "__main__":
    main()
