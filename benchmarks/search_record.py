"""Record the tabular benchmark that benchmarks/search_efficiency.py replays searches over (issue 15, part 3).

Every setting of a small TransFER grid -- B in {0, 1, 2, 4} x p1 in {0.4, 0.6, 0.8} x p2 in {0.1, 0.3, 0.5}, p1
dropped where B = 0 (MAD has no maps to drop), 30 settings holding Table 3's corner and centre values and the
paper's point -- trained on SynthFER with several seeds for the sweep's default epochs, one row per (setting, seed,
epoch) in a CSV. A full cross (not Table 3's cross-shaped rows) so that a replayed search can propose any knob
combination and find it recorded.

    python benchmarks/search_record.py                       # all of it, into benchmarks/search_grid.csv
    python benchmarks/search_record.py --part 0/2 &  python benchmarks/search_record.py --part 1/2   # two processes

Each run is the trial's own training code (ferlab.train.loop.train_epoch and evaluate, the sweep's TrainConfig with
the run's seed, the same per-epoch reseeding) fed from memory instead of Ray Data: the numbers are what a sweep
trial reports, without Ray's fixed costs. Resumable: runs already in the CSV are skipped, and a run's rows are
appended only when all its epochs are done.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch

from ferlab.config import TrainConfig
from ferlab.data.augment import derived_seed
from ferlab.data.pipeline import decode_batch
from ferlab.data.shards import open_shards
from ferlab.data.synth import cached_synthfer
from ferlab.models import create_model, model_config
from ferlab.studies import get_study
from ferlab.train import metrics as M
from ferlab.train.loop import MODEL_STREAM, evaluate, train_epoch
from ferlab.train.step import make_optimizer

PRESET = "transfer_tiny"
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CSV = os.path.join(HERE, "search_grid.csv")
KNOBS = ("branches", "p1", "p2")
VALUES = {"branches": (0, 1, 2, 4), "p1": (0.4, 0.6, 0.8), "p2": (0.1, 0.3, 0.5)}
COLUMNS = (*KNOBS, "seed", M.EPOCH, M.VAL_ACC, "val_loss", M.TRAIN_LOSS, "seconds")


def settings() -> list[dict]:
    """The grid's distinct settings; where the study's knob rule says p1 is unused (B = 0) it takes its `otherwise`."""
    p1 = get_study("transfer").knob("p1")
    out = []
    for b, v1, v2 in itertools.product(*(VALUES[k] for k in KNOBS)):
        s = {"branches": b, "p1": v1 if p1.when(({"branches": b})) else p1.otherwise, "p2": v2}
        if s not in out:
            out.append(s)
    return out


class MemoryShard:
    """What train_epoch and evaluate read from a Ray dataset shard, served from one in-memory block."""

    def __init__(self, block: dict):
        self.block = block

    def iter_torch_batches(self, batch_size=None, device="cpu"):
        n = len(self.block["label"])
        step = batch_size or n
        for i in range(0, n, step):
            yield {k: v[i:i + step] for k, v in self.block.items()}


def load(shards, split: str, size: int) -> MemoryShard:
    t = shards.read(split, columns=["image", "label"])
    d = decode_batch({"image": np.array(t.column("image").to_pylist(), dtype=object),
                      "label": t.column("label").to_numpy()}, size)
    return MemoryShard({"image": torch.from_numpy(d["image"]), "label": torch.from_numpy(d["label"])})


def run(setting: dict, seed: int, epochs: int, train: MemoryShard, val: MemoryShard) -> list[dict]:
    """One trial's curve: what train_loop_per_worker reports per epoch, on one worker."""
    tc = TrainConfig(epochs=epochs, seed=seed)  # the sweep's trial config: spec.train_config() on SynthFER
    torch.manual_seed(tc.seed)
    model = create_model(PRESET, **setting)
    opt = make_optimizer(model, tc)
    device = torch.device("cpu")
    rows = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        torch.manual_seed(derived_seed(tc.seed, epoch, 0, MODEL_STREAM))
        m = train_epoch(model, opt, train, tc, epoch, 0, 1, device, None)
        m |= evaluate(model, val.iter_torch_batches(256), model.cfg.num_classes, device, tc.amp)
        rows.append(setting | {"seed": seed, M.EPOCH: epoch + 1, M.VAL_ACC: round(m[M.VAL_ACC], 5),
                               "val_loss": round(m["val_loss"], 5), M.TRAIN_LOSS: round(m[M.TRAIN_LOSS], 5),
                               "seconds": round(time.perf_counter() - t0, 2)})
    return rows


def done_runs(path: str, epochs: int) -> set:
    if not os.path.isfile(path):
        return set()
    with open(path) as f:
        return {tuple(float(r[k]) for k in (*KNOBS, "seed")) for r in csv.DictReader(f) if int(r[M.EPOCH]) == epochs}


def write_header(path: str):
    """The header, once, even with several --part processes appending to one file."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as f:
        f.write(",".join(COLUMNS) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=DEFAULT_CSV)
    p.add_argument("--n", type=int, default=3000, help="SynthFER faces (the sweep's default 3000)")
    p.add_argument("--epochs", type=int, default=6, help="epochs per run (the sweep's default 6)")
    p.add_argument("--seeds", type=int, default=2, help="seeds per setting (search_grid.csv: 2)")
    p.add_argument("--part", default="0/1", help="i/k: this process records every k-th run from the i-th")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    i, k = (int(x) for x in args.part.split("/"))
    torch.set_num_threads(args.threads)
    size = model_config(PRESET).input_size
    shards = open_shards(cached_synthfer(n=args.n, size=size))
    train, val = load(shards, "train", size), load(shards, "val", size)
    runs = [(s, seed) for seed in range(args.seeds) for s in settings()][i::k]
    done = done_runs(args.out, args.epochs)
    todo = [(s, seed) for s, seed in runs if (*map(float, s.values()), float(seed)) not in done]
    print(f"{len(runs)} runs in part {args.part}, {len(runs) - len(todo)} already in {args.out}", flush=True)
    t0 = time.perf_counter()
    for j, (s, seed) in enumerate(todo):
        rows = run(s, seed, args.epochs, train, val)
        write_header(args.out)
        with open(args.out, "a", newline="") as f:  # whole runs only: a killed recorder loses at most one run
            csv.DictWriter(f, fieldnames=COLUMNS).writerows(rows)
        el = time.perf_counter() - t0
        print(f"[{j + 1}/{len(todo)}] {s} seed {seed}: val_acc {[r[M.VAL_ACC] for r in rows]}; "
              f"{el / 60:.1f} min, about {el / (j + 1) * (len(todo) - j - 1) / 60:.0f} min left", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
