"""TransFER's ablations (Xue et al., ICCV 2021): Tables 1-4 and Figure 3, measured, next to the published numbers.

    python experiments/ablation_transfer.py --smoke              # every table, smallest sizes (tests run this)
    python experiments/ablation_transfer.py                      # laptop: SynthFER, transfer_tiny, 1 seed
    python experiments/ablation_transfer.py --table table3 --seeds 3
    python experiments/ablation_transfer.py --data /data/shards/rafdb --preset transfer_paper \
        --stem-weights backbone_ir50_ms1m_epoch120.pth --encoder-weights vit_small_p16_224-15ec54c9.pth \
        --recipe paper --seeds 3 --gpus-per-trial 1
    ferlab report results/ablation_transfer                      # tables (Markdown, CSV, LaTeX), plots, HTML

What it trains: every distinct setting of (B, p1, p2, stem stage, dropper, drop rate) that the chosen tables need,
once per seed, all for the same number of epochs (a grid, no early stopping: cells of a table must be trained
alike). The paper's default (B = 2, p1 = 0.6, p2 = 0.3, stage 3, MAD) fills a row of every table but is trained once.
Table 4's alternatives each try drop rates 0.1 / 0.3 / 0.6 and report their best on validation. All tables: 31
settings per seed.

Expected (2-core CPU laptop, SynthFER, measured 2026-11-24): --smoke trains 31 settings x 1 seed, 1 epoch each on
420 faces (two half-CPU trials at once) in 6.9 minutes. It shows that the pipeline fills every table, not what the
paper found: one epoch on 420 faces is near chance (1/7). The published numbers are RAF-DB (and AffectNet) at
112x112 with pretrained IR-50 and ViT weights; on SynthFER they are shown for orientation only.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout, uninstalled


def parse_args(argv=None):
    from ferlab.tune.experiment import add_run_args, add_study_args
    from ferlab.cli import Parser

    p = Parser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", default="all", help="table1, table2, fig3, table3, table4 (comma-separated) or all")
    p.add_argument("--seeds", type=int, default=1, help="trainings per cell, seeds --seed, --seed + 1, ...")
    p.add_argument("--folds", type=int, default=0, help="k-fold protocol: each cell once per fold of shards prepared "
                                                        "with `ferlab prepare folder --folds K` (give that K)")
    p.add_argument("--epochs", type=int, help="epochs per trial (default 6; --smoke 1; --recipe paper 40)")
    add_study_args(p, "transfer", fix_knobs=False)
    add_run_args(p, "ablation_transfer", " (default 3000; --smoke 420)")
    return p.parse_args(argv)


def build(args):
    """The spec and the grid, validated before Ray starts."""
    from ferlab.data.shards import open_shards
    from ferlab.tune.ablation import ablation_grid, table_keys
    from ferlab.tune.experiment import (eval_data, fill_defaults, local_cpus_per_worker, recipe_epochs,
                                        sections_from_args)
    from ferlab.tune.spec import SweepSpec

    shards = open_shards(args.data) if args.data else None
    dataset = shards.dataset if shards else "synthfer"
    fill_defaults(args, smoke={"epochs": 1, "synth_n": 420},
                  full={"epochs": recipe_epochs(args, "transfer", dataset) or 6, "synth_n": 3000})
    keys = table_keys("transfer", args.table, shards.splits if shards else None)
    sections = sections_from_args(args, "transfer", dataset)
    # --smoke runs several small trials at once (half a logical CPU each); otherwise one trial gets the machine.
    cpus = args.cpus_per_worker or (0.5 if args.smoke else local_cpus_per_worker(args))
    spec = SweepSpec(data=args.data or "", study="transfer", preset=args.preset, epochs=args.epochs,
                     workers_per_trial=args.workers_per_trial, gpus_per_trial=args.gpus_per_trial,
                     cpus_per_worker=cpus, storage=args.storage,
                     name=args.name or ("ablation_transfer_smoke" if args.smoke else "ablation_transfer"),
                     seed=args.seed, model=sections["model"], train=sections["train"], settings=sections["study"],
                     pretrained=sections["pretrained"],
                     max_concurrent=args.max_concurrent, limit=args.limit, eval_data=eval_data(args), folds=args.folds)
    return spec, ablation_grid("transfer", keys, dataset, args.seeds, args.seed, args.folds), keys


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        spec, grid, keys = build(args)
    except (ValueError, OSError) as e:
        print(f"ablation_transfer: error: {e}", file=sys.stderr)
        return 2
    per = f"{args.seeds} seeds" + (f" x {args.folds} folds" if args.folds else "")
    print(f"ablation_transfer: {', '.join(keys)}: {len(grid)} trials "
          f"({len(grid) // args.seeds // max(1, args.folds)} settings x {per}), {args.epochs} epochs each", flush=True)

    from ferlab.tune.experiment import run_experiment

    return run_experiment(spec, args, grid=grid, tables=keys)


if __name__ == "__main__":
    sys.exit(main())
