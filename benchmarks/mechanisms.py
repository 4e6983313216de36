"""The papers' mechanisms against SynthFER's ground truth (issue 12): does each find what it claims to find?

    python benchmarks/mechanisms.py                  # all three; rows appended to docs/benchmarks/mechanisms_*.csv
    python benchmarks/mechanisms.py --only mgn       # one of: mgn, relabel, lanet

- mgn: MVT's mask generation network, trained with the stage's own step (ferlab.studies.mvt_mgn.mgn_step) for m in
  {0.1, 0.2, 0.3}, cold (from scratch) and warm (the stage's warm start, mgn_warm_start: the discriminator trained
  on the full images first, a CPU stand-in for the paper's DeiT-S weights); per epoch, the share of the round(m N)
  patches with the highest Mp (what the classifier removes) that lie on background or occluder pixels, against the
  same share for random patches (chance); then the classifier stage with each MGN against no MGN.
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import rows
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


def _batches(data: dict, cfg, batch: int, rng):
    """An epoch of (x normalised, y) in a random order, as the MGN stage's loop gives them."""
    order = rng.permutation(len(data["label"]))
    for i in range(0, len(order) - batch + 1, batch):
        idx = order[i:i + batch]
        yield to_input(torch.from_numpy(data["image"][idx]), cfg), torch.from_numpy(data["label"][idx]).long()


def mgn_quality(train, val, args) -> tuple[list[dict], dict]:
    """Per start (cold: from scratch; warm: the stage's warm start, a classifier trained on the full images first),
    m and epoch: the MGN's background/occluder share of its top-m patches against chance. Returns the rows and the
    trained MGNs' state dicts by (start, m)."""
    import copy

    from ferlab.models.mvt import MaskGenerator, discriminator
    from ferlab.studies.mvt_mask_quality import mask_quality
    from ferlab.studies.mvt_mgn import mgn_step, warm_start

    cfg = model_config(args.mgn_preset)
    val_batches = [{k: torch.from_numpy(v[i:i + 256]) for k, v in val.items() if k in ("image", "nuisance")}
                   for i in range(0, len(val["label"]), 256)]
    torch.manual_seed(args.seed)
    cold = (MaskGenerator(cfg), discriminator(cfg))
    starts = {"cold": cold}
    if args.warm_epochs:
        t0 = time.perf_counter()
        warm = copy.deepcopy(cold)
        rng = np.random.default_rng(args.seed + 1)
        acc = warm_start(*warm, args.warm_epochs, args.lr_classifier, lambda e: _batches(train, cfg, args.batch, rng))
        print(f"warm start: the discriminator trained {args.warm_epochs} epochs on the full images at lr "
              f"{args.lr_classifier} (training "
              f"accuracy {acc:.3f}, {time.perf_counter() - t0:.0f} s), its first blocks copied into the MGN",
              flush=True)
        starts["warm"] = warm
    rows, trained = [], {}
    for start, (mgn0, disc0) in starts.items():
        for m in args.ratios:
            torch.manual_seed(args.seed)
            mgn, disc = copy.deepcopy(mgn0), copy.deepcopy(disc0)
            opt_g = torch.optim.AdamW(mgn.parameters(), lr=args.lr)
            opt_d = torch.optim.AdamW(disc.parameters(), lr=args.lr)
            rng = np.random.default_rng(args.seed)
            for epoch in range(1, args.mgn_epochs + 1):
                t0 = time.perf_counter()
                mgn.train()
                disc.train()
                for x, y in _batches(train, cfg, args.batch, rng):
                    mgn_step(mgn, disc, opt_g, opt_d, x, y, m)
                q = mask_quality(mgn, val_batches, m, "cpu")
                disc.eval()
                with torch.no_grad():  # is there an expression signal for the MGN to hide? D on the whole image
                    mean_mp = torch.cat([mgn.patch_values(to_input(b["image"], cfg)) for b in val_batches]).mean()
                    pred = torch.cat([disc(to_input(b["image"], cfg)).argmax(1) for b in val_batches]).numpy()
                r = {"start": start, "m": m, "epoch": epoch, "top_m_share": q["mgn_nuisance_precision"],
                     "chance": q["mgn_nuisance_chance"], "mean_mp": mean_mp.item(),
                     "d_acc": float(np.mean(pred == val["label"])), "seconds": time.perf_counter() - t0}
                r["ratio"] = r["top_m_share"] / r["chance"]
                rows.append(r)
                print(f"| {start} | {m} | {epoch} | {r['top_m_share']:.3f} | {r['chance']:.3f} | {r['ratio']:.2f} | "
                      f"{r['mean_mp']:.3f} | {r['d_acc']:.3f} | {r['seconds']:.0f} |", flush=True)
            trained[start, m] = mgn.state_dict()
    return rows, trained


def classifier_gain(train, val, trained: dict, args) -> list[dict]:
    """The classifier stage (MVT's classifier from scratch, the MGN frozen in front) with each trained MGN at
    --gain-m, against the same classifier without an MGN: validation accuracy on clean labels."""
    rows = []
    for start in ["none"] + [s for s, m in trained if m == args.gain_m]:
        t0 = time.perf_counter()
        overrides = {"use_mgn": start != "none"}
        model = train_plain(args.mgn_preset, overrides, train, args.classifier_epochs, args,
                            mgn=trained.get((start, args.gain_m)))
        with torch.no_grad():
            x = to_input(torch.from_numpy(val["image"]), model.cfg)
            acc = float((model(x).argmax(1).numpy() == val["label"]).mean())
        rows.append({"mgn": start, "m": args.gain_m if start != "none" else 0.0, "epochs": args.classifier_epochs,
                     "val_acc": acc, "seconds": time.perf_counter() - t0})
        print(f"| {start} | {rows[-1]['m']} | {acc:.3f} | {rows[-1]['seconds']:.0f} |", flush=True)
    return rows


def train_plain(preset: str, overrides: dict, train: dict, epochs: int, args, mgn: dict | None = None):
    """A model trained in-process with the training loop's own step (no Ray): SynthFER, the light augmentation.
    `mgn`: a trained MGN's state dict for an MVT model's frozen MGN."""
    from ferlab.config import TrainConfig
    from ferlab.data.augment import batch_generator
    from ferlab.data.balance import epoch_order
    from ferlab.models import create_model
    from ferlab.train.step import lr_at, make_optimizer, train_step

    torch.manual_seed(args.seed)
    model = create_model(preset, **overrides)
    if mgn is not None:
        model.mgn.load_state_dict(mgn)
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
    out = []
    for f in ("none", "constant", "linear", "quadratic", "sigmoid"):
        t0 = time.perf_counter()
        r = rq.run(f, data, val, ns, size)
        out.append({"f": f, "relabeled": r.get("relabeled"), "precision": r.get("relabel_precision"),
                    "recall": r.get("relabel_recall"), "val_acc_clean": r["val_acc_clean"],
                    "seconds": time.perf_counter() - t0})
        print(f"| {f} | {r.get('relabeled', '-')} | {r.get('relabel_precision', float('nan')):.3f} | "
              f"{r.get('relabel_recall', float('nan')):.3f} | {r['val_acc_clean']:.3f} | "
              f"{out[-1]['seconds']:.0f} |", flush=True)
    return out


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
    p.add_argument("--warm-epochs", type=int, default=12, help="the MGN stage's warm start (mgn_warm_start): epochs "
                   "of the discriminator on the full images before the GAN stage, at --lr-classifier (a classifier "
                   "that tells the expressions apart: 4 epochs left it at 0.20 training accuracy); 0 = cold only")
    p.add_argument("--classifier-epochs", type=int, default=6, help="epochs of the classifier stage compared with "
                   "and without each MGN")
    p.add_argument("--gain-m", type=float, default=0.2, help="the m whose MGNs the classifier stage uses")
    p.add_argument("--csv-dir", default=rows.DOCS, help="where the result rows are appended ('' for none)")
    p.add_argument("--lr-classifier", type=float, default=1e-3, help="AdamW learning rate of the classifiers")
    p.add_argument("--lanet-epochs", type=int, default=8)
    p.add_argument("--relabel-preset", default="transfer_tiny")
    p.add_argument("--relabel-epochs", type=int, default=12)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    only = set(args.only.split(","))
    cmd = rows.command(__file__, argv)

    def save(name, table):
        if args.csv_dir:
            rows.append(os.path.join(args.csv_dir, f"mechanisms_{name}.csv"), table, cmd=cmd)

    if "mgn" in only:
        train, val = splits(args.mgn_preset, args)
        print(f"MGN ({args.mgn_preset}, {args.mgn_epochs} epochs, lr {args.lr}) on SynthFER n={args.n}: share of "
              f"the top-m patches by Mp on background or occluder (val split), against random patches; cold = from "
              f"scratch, warm = after the warm start (a CPU stand-in for DeiT-S weights, not the paper's)")
        print("| start | m | epoch | top-m share | chance | ratio | mean Mp | D acc (whole image) | seconds |\n"
              "|---|---|---|---|---|---|---|---|---|")
        table, trained = mgn_quality(train, val, args)
        save("mgn", table)
        if args.classifier_epochs:
            print(f"\nClassifier stage ({args.mgn_preset} from scratch, {args.classifier_epochs} epochs, lr "
                  f"{args.lr_classifier}) without an MGN and with each MGN at m={args.gain_m}: val accuracy")
            print("| MGN | m | val acc | seconds |\n|---|---|---|---|")
            save("mgn_classifier", classifier_gain(train, val, trained, args))
    if "relabel" in only:
        save("relabel", relabel_quality(args))
    if "lanet" in only:
        train, val = splits("transfer_tiny", args)
        print(f"\nLANet attention (transfer_tiny, {args.lanet_epochs} epochs) on SynthFER n={args.n}, validation "
              f"faces: share of the aggregated map's mass on each region (the region's share of the area)")
        print("| p1 (MAD) | val acc | occluder | visible face | background | spread | seconds |\n"
              "|---|---|---|---|---|---|---|")
        save("lanet", lanet_attention(train, val, args))


if __name__ == "__main__":
    main()
