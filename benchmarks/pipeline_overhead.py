"""What does ferlab's Ray Data + TorchTrainer input path cost against a plain PyTorch loop?

Both sides train the same `transfer_tiny` on the same shards, in one invocation of this script, with the same decode
(once, before training), the same augmentation (`--augment`, applied to each uint8 batch on the training device by
ferlab.data.augment with the same per-batch generators), the same train step and the same number of torch threads.
Only the input path differs:

    ray:   read_parquet -> map_batches(decode) -> materialize -> per epoch: random block order
           -> TorchTrainer worker -> iter_torch_batches(whole blocks) -> permute rows, cut into batches
    plain: pyarrow -> decode into one in-memory array -> torch DataLoader over shuffled indices

It prints, per side, the training images/s (median over the epochs after the first, which includes warm-up), the
share of training time spent waiting for input and the wait for each epoch's first batch, then the ratio. Target
(issue 15): ratio >= 0.95 on the real FERPlus with the paper's augmentation. On a shared VM a rate moves by 10-20%
between identical runs minutes apart, so `--rounds N` repeats the pair, alternating which side goes first, and
reports the median of the rounds' ratios with their range; each Ray side runs on a local Ray of its own.
`--beside-idle-ray` adds a third side, the plain loop with an idle local Ray running beside it, and splits the ratio
into what a running Ray costs any training on the machine and what the input path costs on top of that.

    python benchmarks/pipeline_overhead.py                                   # SynthFER, light augmentation
    python benchmarks/pipeline_overhead.py --data SHARDS --augment transfer  # e.g. FERPlus from `ferlab prepare`
    python benchmarks/pipeline_overhead.py --side ray --streamed             # what streaming costs (part 5)
    python benchmarks/pipeline_overhead.py --data SHARDS --augment transfer --rounds 4 --limit 8000 --epochs 2
    python benchmarks/pipeline_overhead.py --data SHARDS --augment transfer --rounds 3 --limit 8000 --epochs 2 \
        --beside-idle-ray
    python benchmarks/pipeline_overhead.py --data SHARDS --augment transfer --rounds 3 --limit 8000 --epochs 2 \
        --threads 1   # a core left to Ray's own processes
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch

import rows  # noqa: E402 (benchmarks/rows.py)
from cpu_share import CpuSampler  # noqa: E402 (this folder is on sys.path as the script's)
from ferlab.config import TrainConfig, TrialConfig
from ferlab.data.augment import RECIPES, batch_generator
from ferlab.data.pipeline import data_config, decode_batch, decoded_splits, training_datasets
from ferlab.data.shards import open_shards
from ferlab.data.synth import cached_synthfer
from ferlab.models import create_model, model_config
from ferlab.train import metrics as M
from ferlab.train.loop import train_loop_per_worker
from ferlab.train.step import make_optimizer, train_step

PRESET = "transfer_tiny"
CPUS = max(1.0, os.cpu_count() - 0.5)  # what a local sweep gives its one training worker (see sweep_transfer.py)


def model_overrides(shards) -> dict:
    """The model the sweep would build for these shards: as many classes as the data set has (FERPlus: 8)."""
    return {"num_classes": len(shards.classes)} if shards.classes else {}


def plain_loop(shards, tc: TrainConfig, threads: int, loader_workers: int, limit: int = 0, device: str = "cpu",
               preset: str = PRESET) -> list[dict]:
    size = model_config(preset).input_size
    table = shards.read("train", columns=["image", "label"]).slice(0, limit or None)
    data = decode_batch({"image": np.array(table.column("image").to_pylist(), dtype=object),
                         "label": table.column("label").to_numpy()}, size)
    images, labels = torch.from_numpy(data["image"]), torch.from_numpy(data["label"])

    def collate(idx):
        idx = torch.tensor(idx)
        return images[idx], labels[idx]

    loader = torch.utils.data.DataLoader(range(len(labels)), batch_size=tc.batch_size, shuffle=True, drop_last=True,
                                         collate_fn=collate, num_workers=loader_workers,
                                         persistent_workers=loader_workers > 0)
    torch.set_num_threads(threads)
    torch.manual_seed(tc.seed)
    device = torch.device(device)
    model = create_model(preset, **model_overrides(shards)).to(device)
    opt = make_optimizer(model, tc)
    epochs = []
    for epoch in range(tc.epochs):
        model.train()
        t0, seen, wait, first, step = time.perf_counter(), 0, 0.0, 0.0, 0
        batches = iter(loader)
        while True:
            tw = time.perf_counter()
            batch = next(batches, None)
            wait += time.perf_counter() - tw
            first = wait if step == 0 else first
            if batch is None:
                break
            x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
            train_step(model, opt, x, y, tc, device, gen=batch_generator(tc.seed, epoch, 0, step, device))
            seen, step = seen + len(y), step + 1
        dt = time.perf_counter() - t0
        epochs.append({M.IMAGES_PER_S: seen / dt, M.DATA_WAIT: wait / dt, M.FIRST_BATCH_WAIT: first,
                       M.EPOCH_TIME: dt})
    return epochs


def ray_loop(shards, tc: TrainConfig, cpus: float, limit: int = 0, stream: bool = False, gpus: float = 0.0,
             preset: str = PRESET) -> list[dict]:
    import ray.train
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    decoded = decoded_splits(shards, model_config(preset).input_size, limit=limit or None, splits=("train", "val"),
                             stream=stream)
    with tempfile.TemporaryDirectory() as storage:
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"trial": TrialConfig(preset, tc, model_overrides(shards))},
            scaling_config=ScalingConfig(num_workers=1, use_gpu=gpus > 0,
                                         resources_per_worker={"CPU": cpus} | ({"GPU": gpus} if gpus else {})),
            datasets=training_datasets(decoded, seed=tc.seed),
            dataset_config=data_config(decoded, workers=1),
            run_config=ray.train.RunConfig(name="pipeline_overhead", storage_path=storage),
        )
        hist = trainer.fit().metrics_dataframe
        return hist[[M.IMAGES_PER_S, M.DATA_WAIT, M.FIRST_BATCH_WAIT, M.EPOCH_TIME]].to_dict("records")


def later(epochs: list[dict]) -> list[dict]:
    """The epochs compared: those after the first (which includes warm-up), or the only one."""
    return epochs[1:] or epochs


def summary(name: str, epochs: list[dict], cpu: dict | None) -> float:
    rate = statistics.median(e[M.IMAGES_PER_S] for e in later(epochs))
    print(f"{name:36s} {rate:7.1f} images/s; per epoch {[round(e[M.IMAGES_PER_S]) for e in epochs]} images/s, "
          f"waiting for input {[round(e[M.DATA_WAIT], 3) for e in epochs]} of the time, first batch after "
          f"{[round(e[M.FIRST_BATCH_WAIT], 2) for e in epochs]} s", flush=True)
    if cpu and cpu["span"] < 10:  # a few 1-s samples cannot say which process trained, nor its share
        print(f"{'':36s} CPU: {cpu['span']:.0f} s of training, too short to count per process", flush=True)
    elif cpu:
        print(f"{'':36s} CPU over the last {cpu['span']:.0f} s of training: the training process "
              f"{cpu['training']:.2f} cores ({rate / cpu['training']:.1f} images per CPU-second: the rate without "
              f"the cores others took), all other processes {cpu['others']:.2f} ({cpu['processes']} ran; the largest: "
              + ", ".join(f"{n} {c:.2f}" for n, c in cpu["top"]) + ")", flush=True)
    return rate


SIDES = {"plain": "plain DataLoader", "beside": "plain DataLoader, an idle Ray beside it",
         "ray": "Ray Data + TorchTrainer", "streamed": "the same, streamed"}


def measure(side: str, shards, tc: TrainConfig, args) -> tuple[list[dict], dict | None]:
    """One side's per-epoch records and who used the CPUs meanwhile (benchmarks/cpu_share.py). A Ray side gets a
    local Ray of its own, shut down after it, so that the plain side has the machine to itself and no round inherits
    another's Ray. The "beside" side is the plain loop with a local Ray started and left idle."""
    import ray

    from ferlab.tune.resources import init_ray

    if side != "plain":
        init_ray(num_cpus=os.cpu_count())
    try:
        with CpuSampler() as sampler:
            if side in ("plain", "beside"):
                epochs = plain_loop(shards, tc, tc.torch_threads, args.loader_workers, args.limit)
            else:
                epochs = ray_loop(shards, tc, CPUS, args.limit, stream=side == "streamed")
        return epochs, sampler.share(sum(e[M.EPOCH_TIME] for e in later(epochs)))
    finally:
        ray.shutdown()


def spread(values: list[float], digits: int = 3) -> str:
    """The median of the rounds, and their range."""
    f = f".{digits}f"
    return f"{statistics.median(values):{f}}" + (f" (rounds {min(values):{f}}-{max(values):{f}})"
                                                 if len(values) > 1 else "")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="shard folder (default: cached SynthFER, 3000 faces at 64x64)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--n", type=int, default=3000, help="SynthFER faces when --data is not given (80%% train)")
    p.add_argument("--limit", type=int, default=0, help="first N faces of each split only (0 = all)")
    p.add_argument("--augment", default="light", choices=RECIPES, help="the same recipe on both sides")
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--loader-workers", type=int, default=0, help="DataLoader worker processes on the plain side")
    p.add_argument("--side", choices=["both", "plain", "ray"], default="both", help="measure one side only")
    p.add_argument("--streamed", action="store_true",
                   help="also the Ray side streamed from the shards and decoded every epoch, as a data set too big "
                        "for the object store is (ratio against the stored Ray side)")
    p.add_argument("--beside-idle-ray", action="store_true",
                   help="also measure the plain loop with an idle local Ray beside it, and split the ratio into the "
                        "cost of a running Ray (beside / plain) and the cost of the input path (ray / beside)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads of both sides (default: the CPUs a local sweep gives its worker, rounded). "
                        "Fewer than the cores leaves Ray's own processes a core of their own, as on a GPU node")
    p.add_argument("--rounds", type=int, default=1,
                   help="measure the sides this many times, the order reversed every other round (plain, Ray, Ray, "
                        "plain, ...), and report the median of the rounds' ratios: on a shared VM one run's rate "
                        "moves by 10-20%% from one minute to the next, so one pair of runs cannot resolve 5%%")
    p.add_argument("--csv", default=os.path.join(rows.DOCS, "pipeline_overhead.csv"),
                   help="the results CSV a row is appended to ('' for none)")
    args = p.parse_args()

    shards = open_shards(args.data or cached_synthfer(n=args.n, size=model_config(PRESET).input_size))
    threads = args.threads or max(1, int(round(CPUS)))  # as the Ray worker would (ferlab.train.loop.worker_threads)
    tc = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, torch_threads=threads, augment=args.augment)
    train = min(args.limit or shards.count("train"), shards.count("train"))
    print(f"{shards.dataset}: {train} training images, {PRESET}, batch {tc.batch_size}, {threads} torch threads, "
          f"{tc.epochs} epochs per side, augment {tc.augment}, {args.rounds} round(s)", flush=True)
    wanted = {"plain": args.side in ("both", "plain"), "beside": args.beside_idle_ray,
              "ray": args.side in ("both", "ray"), "streamed": args.streamed}
    sides = [s for s in SIDES if wanted[s]]  # in SIDES's order: each round's order is the previous one's mirror
    rates = {s: [] for s in sides}
    for r in range(args.rounds):
        for side in sides if r % 2 == 0 else sides[::-1]:
            name = SIDES[side] + (f" ({args.loader_workers} workers)" if side in ("plain", "beside") else "")
            rates[side].append(summary(f"[{r + 1}] {name}", *measure(side, shards, tc, args)))
    for side in sides:
        print(f"{SIDES[side]}: median {spread(rates[side], 1)} images/s")
    ratios = {  # each over the rounds, both sides of a ratio from the same round
        "ray / plain": ("ray", "plain", "  (target >= 0.95)"),
        "beside / plain": ("beside", "plain", "  (what a running, idle Ray costs a plain loop)"),
        "ray / beside": ("ray", "beside", "  (what the input path costs beyond a running Ray)"),
        "streamed / stored": ("streamed", "ray", "")}
    row = {"data": shards.dataset, "train_images": train, "epochs": tc.epochs, "augment": tc.augment,
           "rounds": args.rounds} | {f"{side}_images_s": statistics.median(rates[side]) for side in sides}
    for name, (a, b, says) in ratios.items():
        if a in rates and b in rates:
            each = [x / y for x, y in zip(rates[a], rates[b])]
            print(f"ratio {name}: {spread(each)}{says}")
            key = name.replace(" / ", "_over_")
            row |= {key: statistics.median(each), f"{key}_min": min(each), f"{key}_max": max(each)}
    if args.csv:
        rows.append(args.csv, [row], cmd=rows.command(__file__, None))


if __name__ == "__main__":
    main()
