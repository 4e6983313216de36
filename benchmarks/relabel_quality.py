"""How well dynamic relabeling (MVT Eq. 6) finds SynthFER's noisy labels, per threshold function f.

    python benchmarks/relabel_quality.py                        # transfer_tiny backbone, 20% label noise
    python benchmarks/relabel_quality.py --preset mvt_tiny      # the MVT classifier (no MGN) instead

One process, the same data, the same seed and the same number of epochs for every f (and for "none"): trains with
relabeling from --start on, then prints, per f, how many training labels were changed, their precision (changed to
the clean label) and recall (noisy labels now clean), and validation accuracy against the clean labels. The
relabeling code is the training loop's own (ferlab.train.relabel); only the Ray plumbing is left out.

Expected (2 cores, measured 2026-11-24; full table in README "MVT"):
    --epochs 20 --start 10 --warmup 1 (transfer_tiny): none 0.903 val; relabeling changes 670-740 labels for 481
        noisy ones, precision 0.54 (constant) to 0.62 (linear), recall 0.82-0.86, val 0.83-0.87; ~2 min per f.
    --preset mvt_tiny --epochs 40 --start 20 --warmup 2 --lr 3e-4: none 0.23 val; every f moves ~1,950 labels
        onto the class the weak model predicts (precision ~0.04, below chance), val 0.16-0.18; ~2.5 min per f.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch

from ferlab.config import TrainConfig, parse_field
from ferlab.data.augment import batch_generator
from ferlab.data.balance import epoch_order
from ferlab.data.pipeline import decode_batch
from ferlab.data.shards import open_shards
from ferlab.data.synth import cached_synthfer
from ferlab.models import create_model, model_config
from ferlab.train.step import lr_at, make_optimizer, to_input, train_step
from ferlab.train.relabel import LabelTable, relabel


def load(shards, split, size):
    t = shards.read(split, columns=["id", "image", "label", "clean_label"])
    d = decode_batch({"image": np.array(t.column("image").to_pylist(), dtype=object),
                      "label": t.column("label").to_numpy(), "id": np.array(t.column("id").to_pylist()),
                      "clean_label": t.column("clean_label").to_numpy()}, size)
    return d


def run(f, data, val, args, size) -> dict:
    torch.manual_seed(args.seed)
    overrides = {k: v for d in args.set for k, v in d.items()}
    if "use_mgn" in model_config(args.preset).to_dict():  # MVT: the classifier alone; relabeling is what is measured
        overrides = {"use_mgn": False} | overrides
    model = create_model(args.preset, **overrides)
    tc = TrainConfig(epochs=args.epochs, lr=args.lr, warmup_epochs=args.warmup, relabel=f, relabel_start=args.start,
                     relabel_delta=args.delta, augment="light")
    opt = make_optimizer(model, tc)
    table, device, rng = LabelTable(), torch.device("cpu"), np.random.default_rng(args.seed)
    for epoch in range(args.epochs):
        model.train()
        for g in opt.param_groups:
            g["lr"] = lr_at(tc, epoch)
        order = epoch_order(data["label"], None, rng)
        b = {k: v[order] for k, v in data.items()}
        for i in range(0, len(b["label"]) - args.batch + 1, args.batch):
            sl = slice(i, i + args.batch)
            keys, given = torch.from_numpy(b["key"][sl]), torch.from_numpy(b["label"][sl])
            y = table.labels(keys, given, b["clean_label"][sl]) if f != "none" else given
            _, probs = train_step(model, opt, torch.from_numpy(b["image"][sl]), y, tc, device,
                                  gen=batch_generator(args.seed, epoch, 0, i, device))
            if f != "none" and epoch + 1 >= args.start:
                table.update(keys, relabel(probs, y, tc))
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(to_input(torch.from_numpy(val["image"][i:i + 256]), model.cfg)).argmax(1)
                          for i in range(0, len(val["label"]), 256)]).numpy()
    return {"f": f, "val_acc_clean": float(np.mean(pred == val["clean_label"]))} | (table.stats() if f != "none" else {})


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="transfer_tiny")
    p.add_argument("--noise", type=float, default=0.2)
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--start", type=int, default=4, help="first epoch that relabels")
    p.add_argument("--delta", type=float, default=0.2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=float, default=0.0, help="epochs of linear learning-rate warm-up")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--functions", default="none,constant,linear,quadratic,sigmoid",
                   help="comma-separated relabel functions to compare (none = no relabeling)")
    p.add_argument("--set", action="append", default=[], type=parse_field, metavar="FIELD=VALUE",
                   help="a model field for every run, e.g. --set branches=0")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    size = model_config(args.preset).input_size
    shards = open_shards(cached_synthfer(n=args.n, size=size, seed=args.seed, label_noise=args.noise))
    data, val = load(shards, "train", size), load(shards, "val", size)
    noisy = int(np.sum(data["label"] != data["clean_label"]))
    print(f"{args.preset}, SynthFER n={args.n} at {size}x{size}, {noisy}/{len(data['label'])} training labels noisy; "
          f"{args.epochs} epochs, relabeling from epoch {args.start}, delta {args.delta}")
    print("| f | relabeled | precision | recall | val acc (clean labels) | seconds |")
    print("|---|---|---|---|---|---|")
    for f in args.functions.split(","):
        t0 = time.perf_counter()
        r = run(f, data, val, args, size)
        print(f"| {f} | {r.get('relabeled', '-')} | {r.get('relabel_precision', float('nan')):.3f} | "
              f"{r.get('relabel_recall', float('nan')):.3f} | {r['val_acc_clean']:.3f} | "
              f"{time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
