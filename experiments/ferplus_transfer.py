"""TransFER (CPU size) on the real FERPlus: prepare once, train the paper's point, report test accuracy.

Paper: Xue et al., ICCV 2021, Table 6 (TransFER 90.83% on FERPlus with the paper-sized model, ImageNet/MS-Celeb
weights, 40 epochs on GPUs). This run is the CPU counterpart: `transfer_tiny` from scratch at 64x64.

    python experiments/ferplus_transfer.py                       # ../shared/data/ferplus or $FERLAB_FERPLUS
    python experiments/ferplus_transfer.py --epochs 2 --limit 2000   # a quick look
    python experiments/ferplus_transfer.py --root /data/FERPlus --preset transfer_paper --gpus-per-trial 1 \
        --epochs 40 --stem-weights ir50.pth --encoder-weights vit_small_p16_224-15ec54c9.pth

What it does: `ferlab prepare ferplus` into the cache (majority labels, 8 classes: 25,045 train / 3,191 val / 3,137
test faces) unless it is there already; one Ray Train run of the paper's point (B=2, p1=0.6, p2=0.3, stage 3) with
the paper's augmentation (rotation and crop, flip, random erasing) through the sweep machinery; selects the epoch
on FERPlus's validation set and reports test accuracy at that epoch (never the best epoch on test).

Expected on a 2-core CPU (measured 2026-11-24, see README "Measured"): 12 epochs in about 40 minutes, test
accuracy 0.78 (mean class accuracy 0.52: disgust and contempt have ~120 training faces) at the epoch chosen
on validation (the last of the 12 here); a timm ResNet-18 from scratch at 48x48 reaches about 0.80 in 12 epochs.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def default_root() -> str:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.environ.get("FERLAB_FERPLUS", os.path.join(here, "..", "shared", "data", "ferplus"))


def main(argv=None) -> int:
    from ferlab.cli import Parser

    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=default_root(), help="FERPlus folder (FER2013Train/Valid/Test + label.csv)")
    p.add_argument("--shards", default=None, help="prepared shard folder (default: in the ferlab cache)")
    p.add_argument("--preset", default="transfer_tiny")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--augment", default="transfer", choices=["none", "light", "transfer", "mvt"])
    p.add_argument("--balance", default="none", choices=["none", "repeat", "full"])
    p.add_argument("--limit", type=int, default=0, help="first N faces of each split only (quick looks)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0)
    p.add_argument("--stem-weights")
    p.add_argument("--encoder-weights")
    p.add_argument("--storage", default="~/ferlab_results")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-cpus", type=int, default=None)
    p.add_argument("--address", default=None)
    args = p.parse_args(argv)

    from ferlab import storage
    from ferlab.data.prepare import prepare
    from ferlab.data.shards import MANIFEST, ShardError, open_shards
    from ferlab.data.synth import default_cache
    from ferlab.models import model_config
    from ferlab.report.markdown import to_markdown
    from ferlab.studies import get_study
    from ferlab.tune.resources import init_ray
    from ferlab.tune.results import write_results
    from ferlab.tune.spec import SweepSpec
    from ferlab.tune.sweep import run_sweep

    size = model_config(args.preset).input_size
    shards = args.shards or os.path.join(default_cache(), f"ferplus-majority-s{size}")
    study = get_study("transfer")
    model = study.nest(study.paper_point("ferplus"))["model"]  # the paper's FERPlus point, every knob fixed
    pretrained = {k: os.path.abspath(getattr(args, f"{k}_weights")) for k in ("stem", "encoder")
                  if getattr(args, f"{k}_weights")}
    try:
        spec = SweepSpec(data=shards, preset=args.preset, samples=1, epochs=args.epochs, grace_period=args.epochs,
                         gpus_per_trial=args.gpus_per_trial, cpus_per_worker=1.0 if args.gpus_per_trial else
                         max(1.0, (args.num_cpus or os.cpu_count()) - 0.5),
                         storage=args.storage, name=f"ferplus_{args.preset}_s{args.seed}", seed=args.seed,
                         train={"batch_size": args.batch_size, "lr": args.lr, "augment": args.augment,
                                "balance": args.balance},
                         model=model, pretrained=pretrained, limit=args.limit)
        if not storage.is_file(storage.join(shards, MANIFEST)) and \
                not os.path.isdir(os.path.join(args.root, "FER2013Train")):
            raise ShardError(f"{args.root}: no FERPlus copy here (FER2013Train/...); pass --root or set FERLAB_FERPLUS")
    except ValueError as e:
        print(f"ferplus_transfer: error: {e}", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    init_ray(args.address, args.num_cpus)
    if not storage.is_file(storage.join(shards, MANIFEST)):  # a folder or a bucket (--shards s3://...)
        prepare("ferplus", args.root, shards, size=size)
    open_shards(shards)
    table, history = run_sweep(spec, verbose=1)
    elapsed = time.perf_counter() - t0
    results_dir = os.path.join("results", spec.name)
    write_results(table, spec, results_dir, extra={"elapsed_s": elapsed}, history=history)
    print()
    print(to_markdown(table))
    row = table.iloc[0]
    if "test_acc_at_best" in row:
        print(f"\nFERPlus test accuracy {row['test_acc_at_best']:.4f} (mean class "
              f"{row['test_mean_class_acc_at_best']:.4f}) at epoch {row['best_epoch']}, chosen on validation "
              f"({row['best_val_acc']:.4f}); {args.epochs} epochs in {elapsed / 60:.1f} min")
    return 0 if (table["status"] == "ok").all() else 1


if __name__ == "__main__":
    sys.exit(main())
