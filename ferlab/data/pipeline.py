"""Shards -> Ray Data -> Ray Train workers.

    read_parquet(split files) -> map_batches(decode) -> materialize()   once per sweep, shared by every trial
    train: -> random block order                                      re-drawn every epoch (seeded), no task
    eval:  used as decoded                                             every worker sees all of it
    worker: whole blocks -> repeat by class, permute, cut into batches (ferlab.data.balance)
            -> augment each uint8 batch on the worker's device (ferlab.data.augment) -> normalise -> model

Decoding (PNG -> uint8 HWC at the model's input size) happens once for the whole sweep: the decoded splits are
materialized in the object store and handed to every trial with `tune.with_parameters`. The random block order
sits after `materialize()`, so it is drawn again each epoch; everything else per epoch happens on the training
worker (on 2 CPUs, per-epoch Ray Data tasks beside the training threads cost up to half the throughput:
benchmarks/pipeline_overhead.py). Images stay uint8 until the worker, which converts and normalises on its own
device: 4x less data through the object store than float32, and the GPU does the arithmetic.

When the decoded splits would not fit in half of the cluster's object store (AffectNet's ~290k training faces are
~44 GB at 224x224), nothing is materialized: each split streams from its Parquet shards and is decoded again every
epoch, in blocks small enough for the store; the training split's file order is drawn per epoch instead of its block
order. Chosen automatically by `decoded_splits`, and printed.

Every Ray Data stage asks for a fraction of a CPU (`DATA_CPUS`): on a 2-CPU machine a 1-CPU trial driver plus a
1-CPU training worker would otherwise leave Ray Data no CPU, and `map_batches` would wait forever.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math

import numpy as np
from PIL import Image

from ferlab.data.shards import Shards

DATA_CPUS = 0.25  # logical CPUs each Ray Data task reserves; small so that data work always finds room
BLOCK_ROWS = 1024  # rows per block of a decoded split: the unit of the per-epoch shuffle
STORE_SHARE = 0.5  # decode once into the object store only when every split fits in this share of it
STREAM_BLOCK_BYTES = 16 * 2 ** 20  # largest streamed block (and at most 1/64 of the object store)


def decode_image(data: bytes, size: int) -> np.ndarray:
    """PNG/JPEG bytes -> (size, size, 3) uint8 RGB; grayscale sets (FERPlus) are replicated to 3 channels."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def decode_batch(batch: dict, size: int) -> dict:
    out = {
        "image": np.stack([decode_image(b, size) for b in batch["image"]]),  # (N, S, S, 3) uint8
        "label": batch["label"].astype(np.int64),
    }
    if "soft" in batch:  # FERPlus's soft label modes: (N, classes) float32
        out["soft"] = np.stack([np.asarray(v, dtype=np.float32) for v in batch["soft"]])
    if "id" in batch:  # relabeling needs a stable integer per row: 63 bits of the id's hash
        out["key"] = np.array([int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "little")
                               >> 1 for i in batch["id"]], dtype=np.int64)
    if "clean_label" in batch:  # SynthFER's truth, to score relabeling
        out["clean_label"] = batch["clean_label"].astype(np.int64)
    if "fold" in batch:
        out["fold"] = batch["fold"].astype(np.int64)
    if "bg_mask" in batch:  # SynthFER's truth, to score the MGN: (N, S, S) uint8, 1 = background or occluder
        out["nuisance"] = np.stack([decode_mask(b, size) | decode_mask(o, size)
                                    for b, o in zip(batch["bg_mask"], batch["occ_mask"])])
    return out


def decode_mask(data: bytes, size: int) -> np.ndarray:
    """A stored PNG mask -> (size, size) uint8 in {0, 1}, resized with nearest neighbour (stays binary)."""
    img = Image.open(io.BytesIO(data)).convert("L")
    if img.size != (size, size):
        img = img.resize((size, size), Image.NEAREST)
    return (np.asarray(img) > 0).astype(np.uint8)


_RAY_INFO = [False]  # this process's choice: Ray Data's and Train's INFO lines on the console (--verbose)


def quiet_progress(verbose: bool | None = None):
    """Ray Data's per-operator progress bars, repeated by every trial and epoch, drown Tune's trial table in a
    terminal and flood log files; ferlab prints its own progress lines instead. Unless `verbose`, Ray Data's INFO
    lines (each dataset's execution plan, start and end) leave the console of this process too (they stay in the
    session's ray-data.log), as do Train's per-report lines (in a training worker) and Ray Data's notice that the
    bars are off. Called in every process that runs Ray Data (driver, trial drivers, training workers);
    `verbose` None keeps the process's earlier choice (default: quiet)."""
    import ray.data
    from ray.util.debug import log_once

    from ferlab.internals import PROGRESS_NOTICE, ray_data_console_handlers, train_report_logger

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    if verbose is not None:
        _RAY_INFO[0] = verbose
    for handler in ray_data_console_handlers():
        handler.setLevel("INFO" if _RAY_INFO[0] else "WARNING")
    # in a training worker: dropped (what it says is in Tune's records and trials.csv), as no filter separates it
    train_report_logger().setLevel("INFO" if _RAY_INFO[0] else "WARNING")
    if not _RAY_INFO[0]:
        log_once(PROGRESS_NOTICE)


def eval_split(shards: Shards) -> str:
    """The split a sweep selects on: the manifest's choice ("test" for RAF-DB and AffectNet, which have no separate
    validation set and where the papers evaluate on test), else "val"."""
    return shards.manifest.get("eval_split", "val")


def decoded_splits(shards: Shards, input_size: int, splits=None, limit: int | None = None,
                   soft: bool = False, keys: bool = False, masks: bool = False, folds: bool = False,
                   stream: bool | None = None, seed: int = 0) -> dict:
    """Decode each split once and keep it in the object store; returns {name: Dataset}.

    By default {"train": train, "val": the evaluation split} plus every other split under its own name (FERPlus's
    test beside its val, RAF-DB's occlusion and pose lists): the trainer's dataset names stay the same for every
    data set. `soft` keeps FERPlus's soft labels (when the shards have them); `keys` adds a per-row integer `key`
    (and SynthFER's `clean_label`) for relabeling; `masks` adds SynthFER's background/occluder mask as `nuisance` to
    the evaluation splits (to score MVT's mask network), never to train, whose augmentation would misalign it.
    `stream`: None chooses (`streams`), True/False forces; streamed splits are lazy datasets decoded every epoch,
    the training split's file order drawn per epoch from `seed`.
    """
    import ray.data

    from ferlab.internals import data_context, parquet_footer_readers

    quiet_progress()
    # Decoded blocks in input order, so that a seed fixes the epochs' order and augmentation (see augment.py).
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    if not splits:
        splits = {"train": "train", "val": eval_split(shards)}
        splits |= {s: s for s in shards.splits if s not in splits.values()}
    splits = dict(zip(splits, splits)) if not isinstance(splits, dict) else splits
    columns = ["image", "label"] + (["soft"] if soft and "soft" in shards.manifest["columns"] else [])
    if keys:
        columns += ["id"] + (["clean_label"] if "clean_label" in shards.manifest["columns"] else [])
    if folds:  # the k-fold protocol: each trial holds out one fold of the training split
        columns += ["fold"]
    has_masks = masks and {"bg_mask", "occ_mask"} <= set(shards.manifest["columns"])
    rows = {name: min(limit or math.inf, shards.count(split)) for name, split in splits.items()}
    row_bytes = input_size * input_size * (3 + has_masks) + 64  # the image (and mask) plus labels and keys
    stream, capacity = streams(sum(rows.values()) * row_bytes, stream)
    block_rows = BLOCK_ROWS
    if stream:
        block_rows = max(16, min(BLOCK_ROWS, min(STREAM_BLOCK_BYTES, capacity // 64) // row_bytes))
    print(f"data: {sum(rows.values()) * row_bytes / 2 ** 20:,.0f} MiB decoded at {input_size}x{input_size}, "
          f"object store {capacity / 2 ** 20:,.0f} MiB: " + (
              f"streamed from the shards and decoded every epoch in blocks of {block_rows} faces (in the store "
              f"when under {STORE_SHARE:.0%} of it)" if stream else "decoded once into the object store"),
          flush=True)
    out = {}
    for name, split in splits.items():
        cols = columns + (["bg_mask", "occ_mask"] if has_masks and name != "train" else [])
        # Streamed training split: a new file order every epoch (the per-epoch shuffle's coarse half; rows are
        # permuted on the worker). Not with --limit, which would then take other faces every epoch.
        shuffle = ray.data.FileShuffleConfig(seed, reseed_after_execution=True) \
            if stream and name == "train" and not limit else None
        files = shards.files(split)
        # A streamed split's settings, sealed into the datasets made inside (Ray Data copies the current context):
        # blocks of at most block_rows faces (Ray Data would coalesce up to 128 MiB, more than a small store holds),
        # and the first Parquet datasource (the second adds a file-listing task per epoch that reserves a whole CPU,
        # which a trial whose worker holds all but a quarter of the CPUs never gets: the sweep hung).
        with data_context(block_rows * row_bytes) if stream else contextlib.nullcontext(), \
                parquet_footer_readers(len(files)):
            ds = ray.data.read_parquet(files, num_cpus=DATA_CPUS, shuffle=shuffle)
        ds = ds.select_columns(cols)
        if limit:
            ds = ds.limit(limit)
        decoded = ds.map_batches(decode_batch, fn_kwargs={"size": input_size}, batch_format="numpy",
                                 batch_size=block_rows, num_cpus=DATA_CPUS)
        if stream:
            out[name] = decoded
        else:
            # Ray Data coalesces the decoded rows into as few blocks as fit its target size (one block for all of
            # SynthFER). Blocks of BLOCK_ROWS rows are what make the per-epoch shuffle (random block order) mean
            # something; each block is also what a worker permutes and class-balances at once (ferlab.data.balance).
            out[name] = decoded.repartition(max(1, math.ceil(rows[name] / BLOCK_ROWS))).materialize()
        print(f"{'streaming' if stream else 'decoded'} {split}: {rows[name]} faces at {input_size}x{input_size}"
              + (f" (evaluation split, as {name!r})" if name != split else ""), flush=True)
    return out


def streams(decoded_bytes: int, stream: bool | None = None) -> tuple[bool, int]:
    """(stream?, object store bytes of the cluster): stream when the decoded splits would take more than
    STORE_SHARE of the store, whose rest is Ray Data's working room for every trial's epochs. Forced by `stream`."""
    import ray

    capacity = int(ray.cluster_resources().get("object_store_memory", 0))
    return (decoded_bytes > STORE_SHARE * capacity) if stream is None else stream, capacity


def training_datasets(decoded: dict, seed: int = 0, first_epoch: int = 0) -> dict:
    """The datasets a TorchTrainer gets: train in a random block order that is re-drawn every epoch
    (RandomSeedConfig with reseed_after_execution: reproducible for a seed, different every epoch), the others as
    decoded. No Ray Data task runs per epoch: each worker repeats, permutes (ferlab.data.balance) and augments
    (ferlab.data.augment) the rows of the blocks it receives. A streamed train split (see `decoded_splits`) keeps its
    per-epoch file order instead and is decoded by Ray Data tasks every epoch. A trial restored at epoch k passes
    `first_epoch=k`: its next epoch gets epoch k's block (or file) order, as in the run it continues."""
    from ray.data import RandomSeedConfig
    from ray.data.dataset import MaterializedDataset

    from ferlab.internals import deep_copy_dataset, start_epochs_at

    quiet_progress()  # this runs in the trial driver, whose DataContext travels with the datasets to the workers
    out = dict(decoded)
    train = decoded["train"]
    if isinstance(train, MaterializedDataset):
        train = train.randomize_block_order(seed=RandomSeedConfig(seed, reseed_after_execution=True))
    else:
        train = deep_copy_dataset(train)  # its own plan and context, changed below
    # whatever else ran on `decoded` would shift this pipeline's epoch numbers, and so its seeds
    out["train"] = start_epochs_at(train, first_epoch)
    return out


def cross_dataset(shards: Shards, classes: list[str], input_size: int, limit: int | None = None):
    """Another prepared data set as an extra evaluation split of a training set with `classes`: its test split (or
    its evaluation split), labels mapped onto the training classes by name. Faces of a class the training set does
    not have (contempt against 7 classes) are excluded and counted. Returns (dataset, info)."""
    split = "test" if "test" in shards.splits else eval_split(shards)
    mapping = np.array([classes.index(c) if c in classes else -1 for c in shards.classes])
    counts = shards.manifest["counts"][split]
    missing = {c: counts.get(c, 0) for c in shards.classes if c not in classes}

    def remap(batch):
        batch["label"] = mapping[batch["label"]]
        return batch

    from ray.data.dataset import MaterializedDataset

    ds = decoded_splits(shards, input_size, splits={split: split}, limit=limit)[split]
    in_store = isinstance(ds, MaterializedDataset)
    ds = ds.map_batches(remap, batch_format="numpy", num_cpus=DATA_CPUS)
    # every Ray Data stage takes DATA_CPUS, never a whole CPU (a trial's workers would starve it)
    decoded = ds.filter(expr=_label_kept(), num_cpus=DATA_CPUS)
    if in_store:  # else streamed and decoded every epoch, like the training set's splits (see decoded_splits)
        decoded = decoded.materialize()
    faces = decoded.count() if in_store or limit else sum(counts.get(c, 0) for c in shards.classes if c in classes)
    info = {"split": split, "faces": faces, "excluded": missing,
            "unmatched_training_classes": [c for c in classes if c not in shards.classes]}
    return decoded, info


def _label_kept():
    from ray.data.expressions import col

    return col("label") >= 0


def fold_datasets(decoded: dict, fold: int) -> dict:
    """The k-fold protocol's datasets for one held-out fold: train = the other folds, "val" = the held-out fold
    (the literature reports accuracy on it; there is no separate validation set)."""
    from ray.data.expressions import col

    return {"train": decoded["train"].filter(expr=col("fold") != fold, num_cpus=DATA_CPUS),
            "val": decoded["train"].filter(expr=col("fold") == fold, num_cpus=DATA_CPUS)}


def data_config(datasets: dict | None = None, *, workers: int):
    """How Train hands the datasets to its `workers`; every worker evaluates the whole validation set.

    - Several workers: the train set is split between them (`streaming_split`, run by a coordinator actor).
    - One worker and only materialized datasets (a local trial): nothing is split. The epoch's execution (a random
      block order, no task) runs in the worker itself, where a per-thread count found no measurable CPU, and the
      trial starts no coordinator actor: the first batch of epoch 1 came after 0.6-0.7 s instead of 2.8-3.7 s
      (benchmarks/pipeline_overhead.py --side ray, FERPlus, 2026-12-02).
    - Lazy datasets (streamed splits, a k-fold's filtered folds) run Ray Data tasks every epoch: train is split even
      for one worker, so that this execution runs in the coordinator, not in the training process (where it slowed
      the training: benchmarks/pipeline_overhead.py, measured 2026-11-24); their executions keep the input order
      (parallel tasks must not decide the epoch's order) and each may hold only a small share of the store: Ray
      Data's default (half of it per execution) overflowed an 80-MiB store into spilling.
    """
    from ray.data import ExecutionResources
    from ray.data.dataset import MaterializedDataset
    from ray.train import DataConfig

    if not datasets or all(isinstance(d, MaterializedDataset) for d in datasets.values()):
        return DataConfig(datasets_to_split=["train"] if workers > 1 else [])
    options = DataConfig.default_ingest_options()
    options.preserve_order = True
    options.resource_limits = ExecutionResources(object_store_memory=stream_budget())
    return DataConfig(datasets_to_split=["train"], execution_options=options)


def stream_budget() -> int:
    """Object-store bytes one streamed execution may hold: an eighth of a node's store, at most 256 MiB (a few dozen
    blocks of at most STREAM_BLOCK_BYTES: enough to keep the decode tasks busy; several trials' executions share a
    node)."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    per_node = ray.cluster_resources().get("object_store_memory", 0) / max(1, len(nodes))
    return int(min(per_node / 8, 256 * 2 ** 20))
