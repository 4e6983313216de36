"""Search MVT's knobs (mask ratio m, relabel function f) with Ray Tune + Optuna (TPE) + ASHA; two stages per trial.

Paper: Li et al., "MVT: Mask Vision Transformer for Facial Expression Recognition in the Wild", 2021 (Table 1 is the
m axis, Table 2 the f axis, Table 3 the corners m = 0 / f = none).

    python experiments/sweep_mvt.py            # laptop: SynthFER with 20% label noise, mvt_tiny, 8 trials
    python experiments/sweep_mvt.py --smoke    # both stages through Ray, smallest sizes (~2 min)
    python experiments/sweep_mvt.py --data /data/shards/rafdb224 --preset mvt_paper --deit-weights \
        deit_small_patch16_224-cd65a155.pth --gpus-per-trial 1 --epochs 40 --relabel-start 10 --samples 24

Each trial: (1) the MGN stage for its m, a Ray Train run trained like a GAN (Eqs. 1-4) and stored under the storage
path as one mgn.pt per (data, preset, m, seed, MGN epochs), reused by every later trial with the same m (a file lock
makes concurrent trials wait instead of training it twice); m = 0 means no MGN; (2) the classifier stage with the
MGN frozen, relabeling with f from --relabel-start on (f = none: off). The first trial is the paper's RAF-DB point
(m = 0.15, sigmoid). Prints one row per trial (m, f, accuracy, relabel precision / recall against SynthFER's clean
labels) and writes trials.csv, trials.md, run.json.

Expected on a 2-core CPU laptop (measured 2026-11-24): --smoke 1.3 minutes (2 trials, 2 MGNs trained). With no
arguments: 9.6 minutes for 8 trials (MGNs trained once per m and reused). Accuracy: `mvt_tiny` from scratch stays
near chance (best validation 0.18, chance 0.14) on SynthFER with 20% label noise in 6 epochs, and relabeling changes
no label at that accuracy; a ViT without pretraining needs far more epochs (README "MVT": 0.23 after 40 with noise).
With DeiT-S weights on real data the paper reports 86.7-88.6% on RAF-DB.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    from ferlab.tune.experiment import add_run_args

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="mvt_tiny", help="mvt_tiny (CPU) or mvt_paper (DeiT-S, 224x224)")
    p.add_argument("--samples", type=int, help="trials (default 8; --smoke 2)")
    p.add_argument("--epochs", type=int, help="classifier epochs per trial (default 6; --smoke 2)")
    p.add_argument("--mgn-epochs", type=int, help="MGN stage epochs (default 2; --smoke 1)")
    p.add_argument("--grace-period", type=int, help="ASHA grace period in epochs (default 4; --smoke 2)")
    p.add_argument("--mask-ratio", type=float, help="fix m instead of searching it (0 = no MGN)")
    p.add_argument("--relabel", choices=["none", "constant", "linear", "quadratic", "sigmoid"],
                   help="fix f instead of searching it")
    p.add_argument("--relabel-delta", type=float, default=0.2, help="delta of Eq. 6 (the paper's 0.2)")
    p.add_argument("--relabel-start", type=int, help="first epoch that relabels (default 3; paper-scale runs: 10)")
    p.add_argument("--deit-weights", help="local DeiT-S file ({'model': state_dict}) for MGN, D and classifier")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (the paper: 9e-5 with DeiT weights)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--augment", choices=["none", "light", "transfer", "mvt"], default=None,
                   help="default: mvt with --data (erasing, flip, colour jitter), light on SynthFER")
    p.add_argument("--label-noise", type=float, default=0.2, help="SynthFER label noise when --data is not given")
    add_run_args(p, "sweep_mvt", " (default 3000; --smoke 600)")
    return p.parse_args(argv)


def build_spec(args):
    from ferlab.data.shards import open_shards
    from ferlab.tune.experiment import fill_defaults, local_cpus_per_worker, model_overrides
    from ferlab.tune.sweep import SweepSpec

    fill_defaults(args, smoke={"samples": 2, "epochs": 2, "mgn_epochs": 1, "grace_period": 2, "synth_n": 600,
                               "relabel_start": 1},
                  full={"samples": 8, "epochs": 6, "mgn_epochs": 2, "grace_period": 4, "synth_n": 3000,
                        "relabel_start": 3})
    if args.data:
        open_shards(args.data)
    fixed = {k: v for k, v in (("mask_ratio", args.mask_ratio), ("relabel", args.relabel)) if v is not None}
    model = model_overrides(args, args.preset)  # a DeiT file of the wrong shape fails here, naming the keys
    train = {"batch_size": args.batch_size, "lr": args.lr, "relabel_delta": args.relabel_delta,
             "relabel_start": args.relabel_start, "augment": args.augment or ("mvt" if args.data else "light")}
    cpus = local_cpus_per_worker(args)
    return SweepSpec(data=args.data or "", preset=args.preset, samples=args.samples, epochs=args.epochs,
                     grace_period=args.grace_period, workers_per_trial=args.workers_per_trial,
                     gpus_per_trial=args.gpus_per_trial, cpus_per_worker=cpus, storage=args.storage,
                     name=args.name or ("sweep_mvt_smoke" if args.smoke else "sweep_mvt"), seed=args.seed,
                     train=train, model=model, study="mvt", fixed=fixed, mgn_epochs=args.mgn_epochs,
                     max_concurrent=args.max_concurrent, limit=args.limit)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        spec = build_spec(args)
    except (ValueError, OSError) as e:
        print(f"sweep_mvt: error: {e}", file=sys.stderr)
        return 2

    from ferlab.tune.experiment import run_experiment

    return run_experiment(spec, args, label_noise=0.0 if args.data else args.label_noise)


if __name__ == "__main__":
    sys.exit(main())
