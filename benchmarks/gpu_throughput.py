"""Training throughput of the paper-sized models: forward + backward + optimiser step, images/s and achieved TFLOPS
(FLOPs counted by torch's FlopCounterMode on the same step, divided by the measured time), without and with the
worker's input work.

    python benchmarks/gpu_throughput.py                          # CUDA if there is one, else the CPU at batch 8
    python benchmarks/gpu_throughput.py --batch 0 --steps 20     # on a GPU: the papers' batches (256 and 32)

"model" feeds a float batch already on the device; "with input" feeds uint8 blocks from host memory through what
the training worker does per batch (ferlab.data.balance: permute and cut; ferlab.data.augment: the paper's
augmentation on the device; normalisation), the same code as ferlab.train.loop. The ratio of the two is what the
input work costs on the device. Both run in one process on the same model; the first steps (warm-up, cuDNN
autotuning, torch.compile) are not timed. On a GPU, bf16 autocast and channels_last are on as in training.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
from torch.utils.flop_counter import FlopCounterMode

from ferlab.config import TrainConfig
from ferlab.data.augment import batch_generator
from ferlab.data.balance import worker_batches
from ferlab.models import create_model
from ferlab.train.step import make_optimizer, train_step

# preset -> (the paper's per-GPU batch with one GPU, its augmentation recipe): TransFER 256 (section 4.1), MVT 32
PAPER = {"transfer_paper": (256, "transfer"), "mvt_paper": (32, "mvt")}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_flops(model, opt, images, labels, tc, device) -> float:
    with FlopCounterMode(display=False) as counter:
        train_step(model, opt, images, labels, tc, device)
    return float(counter.get_total_flops())


def timed(fn, steps: int, device) -> float:
    fn(0)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    for i in range(steps):
        fn(i + 1)
    sync(device)
    return time.perf_counter() - t0


def measure(preset: str, batch: int, steps: int, device, compile_: bool) -> dict:
    paper_batch, recipe = PAPER.get(preset, (8, "light"))  # a CPU-size preset: batch 8, light augmentation
    batch = batch or paper_batch
    torch.manual_seed(0)
    model = create_model(preset).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if compile_:
        model = torch.compile(model)
    size, classes = model.cfg.input_size, model.cfg.num_classes
    tc_model = TrainConfig(augment="none", batch_size=batch)
    tc_input = TrainConfig(augment=recipe, batch_size=batch)
    opt = make_optimizer(model, tc_model)
    images = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8)
    labels = torch.randint(0, classes, (batch,))
    on_device = images.to(device), labels.to(device)
    flops = step_flops(model, opt, *on_device, tc_model, device)

    model_s = timed(lambda i: train_step(model, opt, *on_device, tc_model, device), steps, device)
    # host memory blocks of 4 batches, as Ray Data hands them to the worker
    blocks = [{"image": images.repeat(4, 1, 1, 1), "label": labels.repeat(4)} for _ in range(steps // 4 + 2)]
    stream = worker_batches(iter(blocks), batch, seed=0, epoch=0, rank=0)

    def with_input(i):
        b = next(stream)
        train_step(model, opt, b["image"], b["label"], tc_input, device, gen=batch_generator(0, 0, 0, i, device))

    input_s = timed(with_input, steps, device)
    return {"preset": preset, "device": device.type, "batch": batch, "recipe": recipe,
            "gflops_per_step": flops / 1e9, "model_images_s": steps * batch / model_s,
            "model_tflops": flops * steps / model_s / 1e12, "input_images_s": steps * batch / input_s,
            "input_tflops": flops * steps / input_s / 1e12}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default="transfer_paper,mvt_paper")
    p.add_argument("--batch", type=int, default=None, help="per-step batch; 0 = the paper's (default: 8 on CPU)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default: 3 on CPU, 20)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model first")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cpu = device.type == "cpu"
    batch = args.batch if args.batch is not None else (8 if cpu else 0)
    steps = args.steps or (3 if cpu else 20)
    if cpu:
        torch.set_num_threads(os.cpu_count())
    name = torch.cuda.get_device_name() if not cpu else f"CPU, {os.cpu_count()} threads"
    print(f"{name}; torch {torch.__version__}; {steps} timed steps after one warm-up step"
          + ("; bf16 autocast, channels_last" if not cpu else ""), flush=True)
    print("| preset | device | batch | GFLOPs per step (counted) | model images/s | model TFLOPS | with input "
          "images/s | with input TFLOPS | input / model |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for preset in args.presets.split(","):
        r = measure(preset, batch, steps, device, args.compile)
        print(f"| {r['preset']} | {r['device']} | {r['batch']} | {r['gflops_per_step']:.1f} | "
              f"{r['model_images_s']:.1f} | {r['model_tflops']:.3f} | {r['input_images_s']:.1f} "
              f"({r['recipe']}) | {r['input_tflops']:.3f} | {r['input_images_s'] / r['model_images_s']:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
