"""Every model preset, measured on this machine: parameters, forward FLOPs per image, training images/s; a row per
preset appended to docs/benchmarks/model_table.csv.

    python benchmarks/model_table.py [--threads N] [--steps 6]

FLOPs are counted by torch.utils.flop_counter (matmuls and convolutions, 2 FLOPs per multiply-add) for one image
in evaluation mode. Training images/s is a plain loop (forward, backward, AdamW step) on random uint8 batches,
median of the timed steps after two warm-up steps, with N torch threads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import rows
import torch
from torch.utils.flop_counter import FlopCounterMode

from ferlab.config import TrainConfig
from ferlab.models import create_model, list_models
from ferlab.models.transfer import num_params
from ferlab.train.step import make_optimizer, train_step

BATCH = {"transfer_tiny": 32, "transfer_paper": 8}


def measure(name: str, steps: int) -> dict:
    model = create_model(name)
    s = model.cfg.input_size
    model.eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.zeros(1, 3, s, s))
    model.train()
    tc = TrainConfig(batch_size=BATCH.get(name, 16), augment="none")  # the model alone
    opt = make_optimizer(model, tc)
    x = torch.randint(0, 256, (tc.batch_size, s, s, 3), dtype=torch.uint8)
    y = torch.randint(0, model.cfg.num_classes, (tc.batch_size,))
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        train_step(model, opt, x, y, tc, torch.device("cpu"))
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return {"preset": name, "input": f"{s}x{s}", "params_M": num_params(model) / 1e6,
            "gflops": fc.get_total_flops() / 1e9, "train_img_s": tc.batch_size / statistics.median(times),
            "batch": tc.batch_size}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--csv", default=os.path.join(rows.DOCS, "model_table.csv"), help="results CSV ('' for none)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"| preset | input | parameters | forward GFLOPs / image | training images/s ({args.threads} threads, batch) |")
    print("|---|---|---|---|---|")
    out = []
    for name in list_models():
        r = measure(name, args.steps)
        out.append(r | {"threads": args.threads})
        print(f"| {r['preset']} | {r['input']} | {r['params_M']:.2f} M | {r['gflops']:.3f} | "
              f"{r['train_img_s']:.1f} (batch {r['batch']}) |", flush=True)
    if args.csv:
        rows.append(args.csv, out, cmd=rows.command(__file__, None))


if __name__ == "__main__":
    main()
