"""What does ferlab's Ray Data + TorchTrainer path cost against a plain PyTorch loop?

Both sides train the same `transfer_tiny` on the same SynthFER shards, in one invocation of this script, with the
same decode (once, before training), the same augmentation function, the same train step and the same number of
torch threads. Only the input path differs:

    ray:   read_parquet -> map_batches(decode) -> materialize -> map_batches(augment) per epoch
           -> TorchTrainer worker -> iter_torch_batches (local shuffle buffer)
    plain: pyarrow -> decode into a numpy array -> torch DataLoader (shuffle, augment in collate_fn, N workers)

It prints the training images/s of each (median over epochs after the first, which includes warm-up) and the
ratio. Target on a 2-core machine: ratio >= 0.9.

    python benchmarks/pipeline_overhead.py [--data SHARDS] [--epochs 4] [--loader-workers 1]
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
import pyarrow.parquet as pq
import torch

from ferlab.config import TrainConfig
from ferlab.data.augment import epoch_batch
from ferlab.data.pipeline import data_config, decode_batch, decoded_splits, training_datasets
from ferlab.data.shards import open_shards
from ferlab.data.synth import cached_synthfer
from ferlab.models import create_model, model_config
from ferlab.train.loop import make_optimizer, train_loop_per_worker, train_step

PRESET = "transfer_tiny"


def plain_loop(shards, tc: TrainConfig, threads: int, loader_workers: int) -> list[float]:
    size = model_config(PRESET).input_size
    table = pq.ParquetDataset(shards.files("train")).read(columns=["image", "label"])
    data = decode_batch({"image": np.array(table.column("image").to_pylist(), dtype=object),
                         "label": table.column("label").to_numpy()}, size)
    images, labels = torch.from_numpy(data["image"]), torch.from_numpy(data["label"])

    def collate(idx):
        idx = torch.tensor(idx)
        b = epoch_batch({"image": images[idx].numpy(), "label": labels[idx].numpy()}, recipe=tc.augment)
        return torch.from_numpy(b["image"]), torch.from_numpy(b["label"])

    loader = torch.utils.data.DataLoader(range(len(labels)), batch_size=tc.batch_size, shuffle=True, drop_last=True,
                                         collate_fn=collate, num_workers=loader_workers,
                                         persistent_workers=loader_workers > 0)
    torch.set_num_threads(threads)
    torch.manual_seed(tc.seed)
    model = create_model(PRESET)
    opt = make_optimizer(model, tc)
    device = torch.device("cpu")
    rates = []
    for _ in range(tc.epochs):
        model.train()
        t0, seen = time.perf_counter(), 0
        for x, y in loader:
            train_step(model, opt, x, y, tc, device)
            seen += len(y)
        rates.append(seen / (time.perf_counter() - t0))
    return rates


def ray_loop(shards, tc: TrainConfig, cpus: float) -> list[float]:
    import ray.train
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    decoded = decoded_splits(shards, model_config(PRESET).input_size)
    with tempfile.TemporaryDirectory() as storage:
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"preset": PRESET, "model": {}, "train": tc.__dict__},
            scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": cpus}),
            datasets=training_datasets(decoded, augment=tc.augment),
            dataset_config=data_config(),
            run_config=ray.train.RunConfig(name="pipeline_overhead", storage_path=storage),
        )
        result = trainer.fit()
        hist = result.metrics_dataframe
        print(f"ray: fraction of training time spent waiting for input, per epoch: "
              f"{[round(w, 3) for w in hist['data_wait_frac']]}; of which before the first batch (s): "
              f"{[round(w, 2) for w in hist['first_batch_wait_s']]}")
        return hist["train_images_per_s"].tolist()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="shard folder (default: cached SynthFER, 3000 faces at 64x64)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--n", type=int, default=3000, help="SynthFER faces when --data is not given (80% train)")
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--shuffle-buffer", type=int, default=TrainConfig.shuffle_buffer,
                   help="rows in the Ray worker's local shuffle buffer (0 = none)")
    p.add_argument("--loader-workers", type=int, default=1, help="DataLoader worker processes on the plain side")
    args = p.parse_args()

    import ray

    from ferlab.tune.resources import init_ray

    shards = open_shards(args.data or cached_synthfer(n=args.n, size=model_config(PRESET).input_size))
    cores = os.cpu_count()
    cpus = max(1.0, cores - 0.5)  # what a local sweep gives its one training worker (see sweep_transfer.py)
    threads = max(1, int(round(cpus)))
    tc = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, torch_threads=threads,
                     shuffle_buffer=args.shuffle_buffer)
    print(f"{shards.count('train')} training images, {PRESET}, batch {tc.batch_size}, {threads} torch threads, "
          f"{tc.epochs} epochs per side, Ray shuffle buffer {tc.shuffle_buffer}")

    plain = plain_loop(shards, tc, threads, args.loader_workers)
    init_ray(num_cpus=cores)
    try:
        via_ray = ray_loop(shards, tc, cpus)
    finally:
        ray.shutdown()

    med_plain, med_ray = statistics.median(plain[1:]), statistics.median(via_ray[1:])
    print(f"plain DataLoader ({args.loader_workers} workers): {med_plain:7.1f} images/s  per epoch "
          f"{[round(r) for r in plain]}")
    print(f"Ray Data + TorchTrainer:       {med_ray:7.1f} images/s  per epoch {[round(r) for r in via_ray]}")
    print(f"ratio ray / plain: {med_ray / med_plain:.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
