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
import torch

from ferlab.data.pipeline import decode_batch
from ferlab.data.shards import open_shards
from ferlab.data.synth import cached_synthfer
from ferlab.models import model_config
from ferlab.train.step import to_input
from ferlab.train.metrics import attention_mass


def load(shards, split, size) -> dict:
    """A split decoded as the pipeline decodes it (with SynthFER's `nuisance` masks), as numpy arrays."""
    cols = ["image", "label", "clean_label", "bg_mask", "occ_mask"]
    t = shards.read(split, columns=cols)
    batch = {c: (np.array(t.column(c).to_pylist(), dtype=object) if c in ("image", "bg_mask", "occ_mask")
                 else t.column(c).to_numpy()) for c in cols}
    return decode_batch(batch, size)


def splits(preset: str, args) -> tuple[dict, dict]:
    """SynthFER's train and val splits at the preset's input size, decoded with their ground truth."""
    size = model_config(preset).input_size
    shards = open_shards(cached_synthfer(n=args.n, size=size, seed=args.seed))
    return load(shards, "train", size), load(shards, "val", size)


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
                x = to_input(torch.from_numpy(train["image"][idx]), cfg)
                mgn_step(mgn, disc, opt_g, opt_d, x, torch.from_numpy(train["label"][idx]), m)
            q = mask_quality(mgn, val_batches, m, "cpu")
            disc.eval()
            with torch.no_grad():  # is there an expression signal for the MGN to hide? D on the whole image
                mean_mp = torch.cat([mgn.patch_values(to_input(b["image"], cfg)) for b in val_batches]).mean().item()
                pred = torch.cat([disc(to_input(b["image"], cfg)).argmax(1) for b in val_batches]).numpy()
            d_acc = float(np.mean(pred == val["label"]))
            rows.append({"m": m, "epoch": epoch, "precision": q["mgn_nuisance_precision"],
                         "chance": q["mgn_nuisance_chance"], "mean_mp": mean_mp, "d_acc": d_acc,
                         "s": time.perf_counter() - t0})
            print(f"| {m} | {epoch} | {rows[-1]['precision']:.3f} | {rows[-1]['chance']:.3f} | "
                  f"{rows[-1]['precision'] / rows[-1]['chance']:.2f} | {mean_mp:.3f} | {d_acc:.3f} | "
                  f"{rows[-1]['s']:.0f} |", flush=True)
    return rows


def train_plain(preset: str, overrides: dict, train: dict, epochs: int, args):
    """A model trained in-process with the training loop's own step (no Ray): SynthFER, the light augmentation."""
    from ferlab.config import TrainConfig
    from ferlab.data.augment import batch_generator
    from ferlab.data.balance import epoch_order
    from ferlab.models import create_model
    from ferlab.train.step import lr_at, make_optimizer, train_step

    torch.manual_seed(args.seed)
    model = create_model(preset, **overrides)
    tc = TrainConfig(epochs=epochs, lr=args.lr_classifier, augment="light")
    opt, rng = make_optimizer(model, tc), np.random.default_rng(args.seed)
    for epoch in range(epochs):
        model.train()
        for g in opt.param_groups:
            g["lr"] = lr_at(tc, epoch)
        order = epoch_order(train["label"], None, rng)
        b = {"image": train["image"][order], "label": train["label"][order]}
        for i in range(0, len(b["label"]) - args.batch + 1, args.batch):
            train_step(model, opt, torch.from_numpy(b["image"][i:i + args.batch]),
                       torch.from_numpy(b["label"][i:i + args.batch]), tc, torch.device("cpu"),
                       gen=batch_generator(args.seed, epoch, 0, i, "cpu"))
    return model.eval()


def lanet_attention(train, val, args) -> list[dict]:
    """TransFER's aggregated LANet map on validation faces, MAD on (p1 = 0.6) and off (p1 = 0): where its mass is."""
    from ferlab.train.step import to_input

    masks = val_masks(args.n, args.seed, model_config("transfer_tiny").input_size)
    rows = []
    for p1 in (0.6, 0.0):
        t0 = time.perf_counter()
        model = train_plain("transfer_tiny", {"p1": p1}, train, args.lanet_epochs, args)
        with torch.no_grad():
            x = to_input(torch.from_numpy(val["image"]), model.cfg)
            agg = model.explain(x)["aggregated"]
            acc = float((model(x).argmax(1).numpy() == val["label"]).mean())
        r = {"p1": p1, "val_acc": acc, "s": time.perf_counter() - t0} | attention_mass(agg, *masks)
        rows.append(r)
        print(f"| {p1} | {acc:.3f} | {r['mass_occluder']:.3f} ({r['area_occluder']:.3f}) | "
              f"{r['mass_face']:.3f} ({r['area_face']:.3f}) | {r['mass_background']:.3f} ({r['area_background']:.3f})"
              f" | {r['spread']:.3f} | {r['s']:.0f} |", flush=True)
    return rows


def val_masks(n: int, seed: int, size: int):
    """SynthFER's occluder and background masks of the validation split, at the model's input size."""
    from ferlab.data.pipeline import decode_mask

    shards = open_shards(cached_synthfer(n=n, size=size, seed=seed))
    t = shards.read("val", columns=["bg_mask", "occ_mask"])
    occ = np.stack([decode_mask(b, size) for b in t.column("occ_mask").to_pylist()])
    bg = np.stack([decode_mask(b, size) for b in t.column("bg_mask").to_pylist()])
    return torch.from_numpy(occ), torch.from_numpy(bg)


def relabel_quality(args):
    """benchmarks/relabel_quality.py's measurement (the loop's own relabeling), on a backbone that learns."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import relabel_quality as rq

    ns = argparse.Namespace(preset=args.relabel_preset, set=[], epochs=args.relabel_epochs, lr=args.lr_classifier,
                            warmup=1.0, start=args.relabel_epochs // 2, delta=0.2, batch=args.batch, seed=args.seed)
    size = model_config(args.relabel_preset).input_size
    shards = open_shards(cached_synthfer(n=args.n, size=size, seed=args.seed, label_noise=0.2))
    data, val = rq.load(shards, "train", size), rq.load(shards, "val", size)
    noisy = int(np.sum(data["label"] != data["clean_label"]))
    print(f"\nRelabeling ({args.relabel_preset}, {ns.epochs} epochs, from epoch {ns.start}, delta 0.2) on SynthFER "
          f"n={args.n} with 20% label noise ({noisy}/{len(data['label'])} training labels noisy)")
    print("| f | relabeled | precision | recall | val acc (clean labels) | seconds |\n|---|---|---|---|---|---|")
    for f in ("none", "constant", "linear", "quadratic", "sigmoid"):
        t0 = time.perf_counter()
        r = rq.run(f, data, val, ns, size)
        print(f"| {f} | {r.get('relabeled', '-')} | {r.get('relabel_precision', float('nan')):.3f} | "
              f"{r.get('relabel_recall', float('nan')):.3f} | {r['val_acc_clean']:.3f} | "
              f"{time.perf_counter() - t0:.0f} |", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default="mgn,relabel,lanet", help="comma-separated: mgn, relabel, lanet")
    p.add_argument("--n", type=int, default=3000, help="SynthFER faces")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate of the MGN stage")
    p.add_argument("--mgn-preset", default="mvt_tiny")
    p.add_argument("--mgn-epochs", type=int, default=4)
    p.add_argument("--ratios", type=lambda s: [float(v) for v in s.split(",")], default=[0.1, 0.2, 0.3])
    p.add_argument("--lr-classifier", type=float, default=1e-3, help="AdamW learning rate of the classifiers")
    p.add_argument("--lanet-epochs", type=int, default=8)
    p.add_argument("--relabel-preset", default="transfer_tiny")
    p.add_argument("--relabel-epochs", type=int, default=12)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    only = set(args.only.split(","))
    if "mgn" in only:
        train, val = splits(args.mgn_preset, args)
        print(f"MGN ({args.mgn_preset}, {args.mgn_epochs} epochs, lr {args.lr}) on SynthFER n={args.n}: share of "
              f"the top-m patches by Mp on background or occluder (val split), against random patches")
        print("| m | epoch | top-m share | chance | ratio | mean Mp | D acc (whole image) | seconds |\n"
              "|---|---|---|---|---|---|---|---|")
        mgn_quality(train, val, args)
    if "relabel" in only:
        relabel_quality(args)
    if "lanet" in only:
        train, val = splits("transfer_tiny", args)
        print(f"\nLANet attention (transfer_tiny, {args.lanet_epochs} epochs) on SynthFER n={args.n}, validation "
              f"faces: share of the aggregated map's mass on each region (the region's share of the area)")
        print("| p1 (MAD) | val acc | occluder | visible face | background | spread | seconds |\n"
              "|---|---|---|---|---|---|---|")
        lanet_attention(train, val, args)


if __name__ == "__main__":
    main()
