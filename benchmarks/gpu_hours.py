"""What an ablation costs in GPU-hours at the paper's settings: measured FLOPs per image times images seen, over a
named GPU's throughput at an assumed utilisation.

    python benchmarks/gpu_hours.py                                  # TransFER Table 3 on RAF-DB, A10G (g5)
    python benchmarks/gpu_hours.py --preset mvt_paper --settings 4 --epochs 40 --train-images 12271

How: torch's FlopCounterMode counts the forward pass of the preset on one image (multiply-adds counted as 2 FLOPs);
a training step costs about 3x the forward (forward + backward for activations and weights); evaluation of the test
split each epoch adds one forward per test image. GPU throughput: the datasheet's dense BF16 tensor-core rate times
--utilisation (model FLOPs utilisation; 0.3-0.5 is typical for mid-sized vision transformers with AMP; small
batches and the data pipeline lower it). The result is an estimate to budget with, not a measurement on a GPU.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch
from torch.utils.flop_counter import FlopCounterMode

from ferlab.models import create_model

import rows  # noqa: E402  (benchmarks/rows.py)

# Dense BF16 tensor-core TFLOPS from NVIDIA's datasheets (A10: the part in AWS g5 as "A10G"; AWS lists the A10G
# slightly lower, so this is an upper bound for g5).
GPUS = {"A10G": 125.0, "L4": 121.0, "A100": 312.0, "H100": 989.0}


def forward_flops(preset: str) -> float:
    model = create_model(preset).eval()
    x = torch.zeros(1, 3, model.cfg.input_size, model.cfg.input_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return float(counter.get_total_flops())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="transfer_paper")
    p.add_argument("--settings", type=int, default=9, help="trainings (TransFER Table 3: nine (p1, p2) pairs)")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--epochs", type=int, default=40, help="the paper: 40 epochs on RAF-DB")
    p.add_argument("--train-images", type=int, default=12271, help="RAF-DB basic training set")
    p.add_argument("--eval-images", type=int, default=3068, help="RAF-DB test set, evaluated every epoch")
    p.add_argument("--gpu", choices=sorted(GPUS), default="A10G")
    p.add_argument("--utilisation", type=float, default=0.35, help="model FLOPs utilisation assumed")
    p.add_argument("--price", type=float, default=1.006, help="USD per GPU-hour (g5.xlarge on-demand, us-east-1)")
    p.add_argument("--csv", default=os.path.join(rows.DOCS, "gpu_hours.csv"),
                   help="the results CSV a row is appended to ('' for none)")
    args = p.parse_args()

    f = forward_flops(args.preset)
    per_training = args.epochs * (3 * f * args.train_images + f * args.eval_images)
    total = per_training * args.settings * args.seeds
    rate = GPUS[args.gpu] * 1e12 * args.utilisation
    hours = total / rate / 3600
    print(f"{args.preset}: {f / 1e9:.2f} GFLOPs per image forward (FlopCounterMode, one image)")
    print(f"one training: {args.epochs} epochs x ({args.train_images} train x 3 + {args.eval_images} eval) "
          f"forwards = {per_training / 1e15:.1f} PFLOPs")
    print(f"{args.settings} settings x {args.seeds} seeds = {total / 1e15:.1f} PFLOPs; {args.gpu} at "
          f"{GPUS[args.gpu]:.0f} TFLOPS x {args.utilisation:.0%} = {rate / 1e12:.0f} TFLOPS effective")
    print(f"estimate: {hours:.1f} GPU-hours ({hours / args.settings / args.seeds * 60:.0f} min per training), "
          f"about ${hours * args.price:.0f} at ${args.price}/GPU-hour")
    if args.csv:  # an estimate from counted FLOPs and an assumed utilisation, not a GPU measurement
        rows.append(args.csv, [{"preset": args.preset, "trainings": args.settings * args.seeds, "epochs": args.epochs,
                                "gflops_forward": f / 1e9, "pflops_total": total / 1e15, "gpu_model": args.gpu,
                                "utilisation_assumed": args.utilisation, "gpu_hours_estimate": hours,
                                "usd_estimate": hours * args.price}], cmd=rows.command(__file__, None))


if __name__ == "__main__":
    main()
