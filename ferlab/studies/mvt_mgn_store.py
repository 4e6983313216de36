"""The stored MGNs of MVT's mask-network stage: one `mgn.pt` per `MGNStage` (data set, preset, m, seed, epochs, and
everything else that changes it) under the sweep's storage path (a local or shared folder, or a bucket:
ferlab.storage), keyed by a hash of its resolved config. `ensure_mgn` trains it only when it is not there yet, under
the storage's lock (ferlab.lock), so a sweep never trains the same MGN twice, also when trials run at the same time
on different nodes; every trial reads it from the storage.
"""

from __future__ import annotations

import os

from ferlab import storage
from ferlab.lock import FolderLock
from ferlab.studies.mvt_mask_quality import QUALITY
from ferlab.studies.mvt_mgn import MGN_FILE, MGNStage, mgn_loop_per_worker

MGN_METRICS = "mgn.json"  # the stage's per-epoch metrics, beside the file they describe
MGN_CONFIG = "mgn_config.json"  # everything the MGN was trained with (mgn_config), whose hash ends its key


# Part of every stored MGN's key: MGNs trained before the direction fix (issue 12) learned the opposite mask and must
# never be reused.
MGN_VERSION = 3  # 3: removed patches black in pixels (mask_fill), the key hashing the whole configuration


def mgn_config(stage: MGNStage) -> dict:
    """Everything that changes a trained MGN, resolved: its data (the shards' content, the held-out fold and
    --limit's first rows: the rows it trains on), architecture (preset and overrides), m, seed, epochs, optimiser
    settings, augmentation, the DeiT weight file's checksum (a path names a file, not its content), the warm start's
    epochs and the stage's code version. Stored as mgn_config.json beside the MGN it describes."""
    deit = stage.pretrained.get("deit")
    return {"version": MGN_VERSION, "data": stage.data_hash, "preset": stage.preset,
            "model": dict(sorted(stage.model.items())), "mask_ratio": stage.mask_ratio, "seed": stage.seed,
            "epochs": stage.epochs, "lr": stage.lr, "batch_size": stage.batch_size, "augment": stage.augment,
            "fold": stage.fold, "deit_sha256": _sha256(deit) if deit else None} | (
                {"warm_start": stage.warm_start} if stage.warm_start else {}) | (  # absent when off: earlier keys
                {"limit": stage.limit} if stage.limit else {})  # stay valid; a --limit run's MGN is never a full run's


def mgn_key(config: dict) -> str:
    """The stored MGN's folder name: readable settings, then a hash of the whole `mgn_config`, so that a run whose
    settings differ in anything that changes the MGN (a --recipe paper run with weights, after a CPU run without)
    never reuses it."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
    held_out = "" if config["fold"] is None else f"-fold{config['fold']}"  # never trained on its evaluation fold
    return f"{config['preset']}-m{config['mask_ratio']:.3f}-seed{config['seed']}-e{config['epochs']}{held_out}-{digest}"


def _sha256(path: str) -> str:
    import hashlib

    h = hashlib.sha256()
    with storage.open_binary(path) as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def mgn_metrics(path: str) -> dict:
    """The last epoch's metrics of a stored MGN (`mgn.json` beside `mgn.pt`), prefixed `mgn_`: its losses, mean
    mask value and, on SynthFER, the background/occluder precision against chance."""
    try:
        last = storage.read_json(storage.join(storage.dirname(path), MGN_METRICS))[-1]
    except (OSError, ValueError, IndexError):
        return {}
    return {(k if k.startswith("mgn_") else f"mgn_{k}"): v for k, v in last.items()
            if isinstance(v, (int, float)) and k not in ("epoch", "mask_ratio")}


def ensure_mgn(datasets: dict, stage: MGNStage, *, storage_path: str, cpus_per_worker: float, gpus: float,
               lock_dir: str = "", verbose: bool = False) -> str:
    """The path (or URI) of the trained MGN of `stage`: trained now (one Ray Train run) if no earlier trial did it.
    Concurrent callers with the same key, on any node, wait on the storage's lock and then reuse the file.
    `datasets` holds "train" and, for the per-epoch mask quality, a "val" split decoded with its `nuisance` masks
    (SynthFER)."""
    import ray.train
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    from ferlab.data.pipeline import data_config, training_datasets

    config = mgn_config(stage)
    key = mgn_key(config)
    folder = storage.join(storage.normalize(storage_path), "mgn", key)
    path = storage.join(folder, MGN_FILE)
    with FolderLock(folder, f"MGN stage {key}", wait=True, lock_dir=lock_dir):  # taken over when its holder dies
        if storage.is_file(path):
            print(f"MGN {key}: reusing {path}", flush=True)
            return path
        warm = f", after {stage.warm_start} epochs of the discriminator on full images" if stage.warm_start else ""
        print(f"MGN {key}: training ({stage.epochs} epochs, m={stage.mask_ratio}{warm})", flush=True)
        storage.write_json(storage.join(folder, MGN_CONFIG), config, indent=1)
        train = {"train": training_datasets(datasets, seed=stage.seed)["train"]}
        has_val = "val" in datasets
        trainer = TorchTrainer(
            mgn_loop_per_worker,
            train_loop_config={"stage": stage, "has_val": has_val, "verbose": verbose},
            scaling_config=ScalingConfig(num_workers=1, use_gpu=gpus > 0, resources_per_worker={"CPU": cpus_per_worker}
                                         | ({"GPU": gpus} if gpus else {})),
            datasets=train | ({"val": datasets["val"]} if has_val else {}),
            dataset_config=data_config(datasets, workers=1),
            run_config=ray.train.RunConfig(name=f"mgn-{key}", storage_path=storage.join(storage_path, "mgn_runs"),
                                           logging_config=ray.train.LoggingConfig(
                                               log_level="INFO" if verbose else "WARNING")),
        )
        result = trainer.fit()
        history = result.metrics_dataframe
        storage.write_json(storage.join(folder, MGN_METRICS), history.select_dtypes("number").to_dict("records")
                           if history is not None else [result.metrics], indent=1)
        with result.checkpoint.as_directory() as d, open(os.path.join(d, MGN_FILE), "rb") as f:
            storage.write_bytes(path, f.read())  # complete or absent, never half-written; metrics first
        last = result.metrics
        share, chance = QUALITY
        quality = (f", background/occluder share of the top-m patches {last[share]:.3f} (chance {last[chance]:.3f})"
                   if share in last else "")
        if "warm_start_acc" in last:
            quality += f"; the warm start's classifier reached {last['warm_start_acc']:.3f} training accuracy"
        print(f"MGN {key}: done, mean mask value {last['mask_mean']:.3f} (target {stage.mask_ratio}), "
              f"discriminator loss {last['loss_d']:.3f}, variance {last['variance']:.4f}{quality}", flush=True)
        return path
