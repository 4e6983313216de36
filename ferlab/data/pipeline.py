"""Shards -> Ray Data -> Ray Train workers.

    read_parquet(split files) -> map_batches(decode) -> materialize()   once per sweep, shared by every trial
    train: -> map_batches(augment)                                     re-run every epoch (fresh randomness)
    val:   used as decoded                                             every worker sees all of it

Decoding (PNG -> uint8 HWC at the model's input size) happens once for the whole sweep: the decoded splits are
materialized in the object store and handed to every trial with `tune.with_parameters`. Augmentation sits after
`materialize()`, so it runs again each epoch. Images stay uint8 until the worker, which converts and normalises on
its own device: 4x less data through the object store than float32, and the GPU does the arithmetic.

Every Ray Data stage asks for a fraction of a CPU (`DATA_CPUS`): on a 2-CPU machine a 1-CPU trial driver plus a
1-CPU training worker would otherwise leave Ray Data no CPU, and `map_batches` would wait forever.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from ferlab.data.shards import Shards

DATA_CPUS = 0.25  # logical CPUs each Ray Data task reserves; small so that data work always finds room
BLOCK_ROWS = 1024  # rows per block of a decoded split: the unit of the per-epoch shuffle and of augmentation


def decode_image(data: bytes, size: int) -> np.ndarray:
    """PNG/JPEG bytes -> (size, size, 3) uint8 RGB; grayscale sets (FERPlus) are replicated to 3 channels."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def decode_batch(batch: dict, size: int) -> dict:
    return {
        "image": np.stack([decode_image(b, size) for b in batch["image"]]),  # (N, S, S, 3) uint8
        "label": batch["label"].astype(np.int64),
    }


def augment_batch(batch: dict, pad: int = 4) -> dict:
    """Permute the rows, then random horizontal flip and random shift (reflect-pad, crop back), vectorised.

    The row permutation is the within-block half of the epoch shuffle (the other half is the random block order in
    `training_datasets`): together they mix an epoch at almost no cost, where a per-worker shuffle buffer cost ~8%
    of training throughput on 2 cores (benchmarks/pipeline_overhead.py --shuffle-buffer 1024).
    Kept cheap on purpose: it runs every epoch on the CPU budget left over by training. The papers' full recipes
    (rotation, random erasing, colour jitter) come with the real data sets.
    """
    rng = np.random.default_rng()
    order = rng.permutation(len(batch["label"]))
    x = batch["image"][order]  # (N, S, S, 3) uint8
    n, s = x.shape[:2]
    flip = rng.random(n) < 0.5
    x = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
    if pad:
        padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
        dy, dx = rng.integers(0, 2 * pad + 1, (2, n))
        rows = dy[:, None] + np.arange(s)[None, :]  # (N, S)
        cols = dx[:, None] + np.arange(s)[None, :]
        x = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return {"image": np.ascontiguousarray(x), "label": batch["label"][order]}


def quiet_progress():
    """Ray Data's per-operator progress bars, repeated by every trial and epoch, drown Tune's trial table in a
    terminal and flood log files; ferlab prints its own progress lines instead."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False


def decoded_splits(shards: Shards, input_size: int, splits=("train", "val"), limit: int | None = None) -> dict:
    """Decode each split once and keep it in the object store; returns {split: MaterializedDataset}."""
    import ray.data

    quiet_progress()
    out = {}
    for split in splits:
        ds = ray.data.read_parquet(shards.files(split), num_cpus=DATA_CPUS).select_columns(["image", "label"])
        if limit:
            ds = ds.limit(limit)
        decoded = ds.map_batches(decode_batch, fn_kwargs={"size": input_size}, batch_format="numpy",
                                 batch_size=BLOCK_ROWS, num_cpus=DATA_CPUS)
        # Ray Data coalesces the decoded rows into as few blocks as fit its target size (one block for all of
        # SynthFER). Blocks of BLOCK_ROWS rows are what make the per-epoch shuffle (random block order) mean
        # something. Not smaller: with 256-row blocks the augmentation tasks that run beside the training steps
        # cost up to a third of the throughput on 2 cores (benchmarks/pipeline_overhead.py: 200-295 against 295
        # images/s with 1024-row blocks).
        rows = shards.count(split) if not limit else min(limit, shards.count(split))
        out[split] = decoded.repartition(max(1, math.ceil(rows / BLOCK_ROWS))).materialize()
        print(f"decoded {split}: {out[split].count()} faces at {input_size}x{input_size}", flush=True)
    return out


def training_datasets(decoded: dict, augment: bool = True, seed: int = 0) -> dict:
    """The datasets a TorchTrainer gets: train shuffled and augmented per epoch, the other splits as decoded.

    The block order is re-drawn every epoch (RandomSeedConfig with reseed_after_execution: reproducible for a seed,
    different each epoch); `augment_batch` permutes rows within each block.
    """
    from ray.data import RandomSeedConfig

    quiet_progress()  # this runs in the trial driver, whose DataContext travels with the datasets to the workers
    out = dict(decoded)
    train = decoded["train"].randomize_block_order(seed=RandomSeedConfig(seed, reseed_after_execution=True))
    if augment:
        train = train.map_batches(augment_batch, batch_format="numpy", batch_size=BLOCK_ROWS, num_cpus=DATA_CPUS)
    out["train"] = train
    return out


def data_config():
    """Split the train set between workers; every worker evaluates the whole validation set. The split applies even
    to one worker: without it the epoch's execution runs inside the training process and slowed it down
    (benchmarks/pipeline_overhead.py, measured 2026-11-24)."""
    from ray.train import DataConfig

    return DataConfig(datasets_to_split=["train"])
