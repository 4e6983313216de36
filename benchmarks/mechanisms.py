"""The papers' mechanisms against SynthFER's ground truth (issue 12): does each find what it claims to find?

    python benchmarks/mechanisms.py                  # all three, a few minutes on 2 cores
    python benchmarks/mechanisms.py --only mgn       # one of: mgn, relabel, lanet

- mgn: MVT's mask generation network, trained with the stage's own step (ferlab.train.mgn.mgn_step) for m in
  {0.1, 0.2, 0.3}; per epoch, the share of the round(m N) patches with the highest Mp (what the classifier removes)
  that lie on background or occluder pixels, against the same share for random patches (chance).
- relabel: see benchmarks/relabel_quality.py (precision / recall of the changed labels per f against clean labels).
- lanet: TransFER's LANet attention mass (max over branches) on occluders and on the face, MAD on and off.

Each figure is a measurement, printed with chance beside it; nothing here passes or fails. One process, the same
data and seed for every setting; the Ray plumbing is left out, the mechanisms' code is the training loop's own.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import pyarrow.parquet as pq
import torch

from ferlab.data.pipeline import decode_batch
from ferlab.data.shards import open_shards
from ferlab.data.synth import cached_synthfer
from ferlab.models import model_config
from ferlab.train.loop import to_input


def load(shards, split, size) -> dict:
    """A split decoded as the pipeline decodes it (with SynthFER's `nuisance` masks), as numpy arrays."""
    cols = ["image", "label", "clean_label", "bg_mask", "occ_mask"]
    t = pq.ParquetDataset(shards.files(split)).read(columns=cols)
    batch = {c: (np.array(t.column(c).to_pylist(), dtype=object) if c in ("image", "bg_mask", "occ_mask")
                 else t.column(c).to_numpy()) for c in cols}
    return decode_batch(batch, size)


def mgn_quality(train, val, args) -> list[dict]:
    """Per m and epoch: the MGN's background/occluder share of its top-m patches against chance."""
    from ferlab.models.mvt import MaskGenerator, discriminator
    from ferlab.train.mgn import mask_quality, mgn_step

    cfg = model_config(args.mgn_preset)
    rows = []
    for m in args.ratios:
        torch.manual_seed(args.seed)
        mgn, disc = MaskGenerator(cfg), discriminator(cfg)
        opt_g = torch.optim.AdamW(mgn.parameters(), lr=args.lr)
        opt_d = torch.optim.AdamW(disc.parameters(), lr=args.lr)
        rng = np.random.default_rng(args.seed)
        val_batches = [{k: torch.from_numpy(v[i:i + 256]) for k, v in val.items() if k in ("image", "nuisance")}
                       for i in range(0, len(val["label"]), 256)]
        for epoch in range(1, args.mgn_epochs + 1):
            t0 = time.perf_counter()
            mgn.train()
            disc.train()
            order = rng.permutation(len(train["label"]))
            for i in range(0, len(order) - args.batch + 1, args.batch):
                idx = order[i:i + args.batch]
                x = to_input(torch.from_numpy(train["image"][idx]))
                mgn_step(mgn, disc, opt_g, opt_d, x, torch.from_numpy(train["label"][idx]), m)
            q = mask_quality(mgn, val_batches, m, "cpu")
            disc.eval()
            with torch.no_grad():  # is there an expression signal for the MGN to hide? D on the whole image
                mean_mp = torch.cat([mgn.patch_values(to_input(b["image"])) for b in val_batches]).mean().item()
                pred = torch.cat([disc(to_input(b["image"])).argmax(1) for b in val_batches]).numpy()
            d_acc = float(np.mean(pred == val["label"]))
            rows.append({"m": m, "epoch": epoch, "precision": q["mgn_nuisance_precision"],
                         "chance": q["mgn_nuisance_chance"], "mean_mp": mean_mp, "d_acc": d_acc,
                         "s": time.perf_counter() - t0})
            print(f"| {m} | {epoch} | {rows[-1]['precision']:.3f} | {rows[-1]['chance']:.3f} | "
                  f"{rows[-1]['precision'] / rows[-1]['chance']:.2f} | {mean_mp:.3f} | {d_acc:.3f} | "
                  f"{rows[-1]['s']:.0f} |", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="mgn", help="comma-separated: mgn (more to come in this file)")
    p.add_argument("--n", type=int, default=3000, help="SynthFER faces")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate of the MGN stage")
    p.add_argument("--mgn-preset", default="mvt_tiny")
    p.add_argument("--mgn-epochs", type=int, default=4)
    p.add_argument("--ratios", type=lambda s: [float(v) for v in s.split(",")], default=[0.1, 0.2, 0.3])
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    only = set(args.only.split(","))
    if "mgn" in only:
        size = model_config(args.mgn_preset).input_size
        shards = open_shards(cached_synthfer(n=args.n, size=size, seed=args.seed))
        train, val = load(shards, "train", size), load(shards, "val", size)
        print(f"MGN ({args.mgn_preset}, {args.mgn_epochs} epochs, lr {args.lr}) on SynthFER n={args.n}: share of "
              f"the top-m patches by Mp on background or occluder (val split), against random patches")
        print("| m | epoch | top-m share | chance | ratio | mean Mp | D acc (whole image) | seconds |\n"
              "|---|---|---|---|---|---|---|---|")
        mgn_quality(train, val, args)


if __name__ == "__main__":
    main()
