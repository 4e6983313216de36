"""MVT's mask generation network (MGN) stage (section 3.2), trained like a GAN against a ViT discriminator.

Alternating per batch:
  discriminator step, MGN frozen:  L_D = CE(D(x * Mp)) + CE(D(x * R))                                    (Eq. 1)
  generator step, D frozen:        L_G = var(softmax(D(x * Mp))) + |mean(Mp) - m|                     (Eqs. 2-4)
with var over the K class probabilities with the K - 1 denominator, Mp the MGN's per-patch values spread over
each patch's pixels, R a random mask keeping round(m N) patches (so the discriminator sees both kinds of masks at
the same area) and m the mask ratio. Hiding the expression from D means LOW Mp on it; the classifier stage keeps
x * (1 - Mp). Why this direction is the paper's: ferlab/models/mvt.py and README, "Paper vs code".

The stage runs as its own Ray Train job and writes one `mgn.pt` per (data set, preset, m, seed, epochs) under the
sweep's storage path (a local or shared folder, or a bucket: ferlab.storage). `ensure_mgn` trains it only when it
is not there yet, under the storage's lock (ferlab.lock), so a sweep never trains the same MGN twice, also
when trials run at the same time on different nodes; every trial reads it from the storage.
"""

from __future__ import annotations

import os
import tempfile
import time

import torch
import torch.nn.functional as F

from ferlab import storage
from ferlab.studies.mvt_mask_quality import QUALITY, mask_quality
from ferlab.lock import FolderLock

MGN_FILE = "mgn.pt"
MGN_METRICS = "mgn.json"  # the stage's per-epoch metrics, beside the file they describe
MGN_CONFIG = "mgn_config.json"  # everything the MGN was trained with (mgn_config), whose hash ends its key


def discriminator_loss(logits_generated: torch.Tensor, logits_random: torch.Tensor, labels: torch.Tensor):
    """Eq. 1: the discriminator learns expressions under both kinds of masks."""
    return F.cross_entropy(logits_generated, labels) + F.cross_entropy(logits_random, labels)


def generator_loss(logits_generated: torch.Tensor, patch_values: torch.Tensor, m: float):
    """Eqs. 2-4, averaged over the batch: (total, variance term, area term). A mask that hides the expression makes
    the discriminator's probabilities equal (variance 0); the area term holds the mean of Mp at m."""
    probs = logits_generated.softmax(1)  # (B, K)
    variance = probs.var(dim=1, unbiased=True).mean()  # K - 1 denominator, Eq. 3
    area = (patch_values.mean(1) - m).abs().mean()  # |M_avg - m|, Eq. 4 per image
    return variance + area, variance, area


def mgn_step(mgn, disc, opt_g, opt_d, x: torch.Tensor, y: torch.Tensor, m: float) -> dict:
    """One alternation of section 3.2 on a batch (x normalised, (B, 3, H, W)): a discriminator step with the MGN
    fixed, then a generator step with the discriminator fixed. The discriminator sees the image as Mp keeps it
    (`MaskGenerator.discriminator_view`) and random masks keeping round(m N) patches (see ferlab/models/mvt.py for
    why this direction). Returns the step's losses as floats."""
    from ferlab.models.mvt import random_patch_mask

    with torch.no_grad():  # discriminator step: the MGN's masks are inputs here, not trained
        x_gen, _ = mgn.discriminator_view(x)
    keep = random_patch_mask(len(x), mgn.cfg.grid ** 2, m, x.device)
    loss_d = discriminator_loss(disc(x_gen), disc(mgn.apply(x, keep)), y)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    average_gradients(disc)
    opt_d.step()
    # generator step: gradients flow through the discriminator, whose weights do not move
    x_gen, mp = mgn.discriminator_view(x)
    loss_g, variance, _ = generator_loss(disc(x_gen), mp, m)
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    average_gradients(mgn)
    opt_g.step()
    opt_d.zero_grad(set_to_none=True)  # the generator step's gradients on D are discarded
    return {"loss_d": loss_d.item(), "loss_g": loss_g.item(), "variance": variance.item(),
            "mask_mean": mp.mean().item()}


def warm_start(mgn, disc, epochs: int, lr: float, epoch_batches) -> float:
    """The discriminator trained `epochs` epochs as a classifier on the full images, then its patch embedding,
    position embedding and first blocks copied into the MGN. Not in the paper: the CPU stand-in for section 4.2's
    start of both from ImageNet DeiT-S ("the MGN ... initialized with the first 6 blocks of DeiT-S"), a discriminator
    that already tells expressions apart when the GAN stage begins. From scratch it never learns SynthFER's
    expressions from the m of the image it is shown, and Eq. 2 then gives the MGN no direction.
    `epoch_batches(e)` yields (x normalised, y). Returns the last epoch's training accuracy."""
    from ferlab.models.weights import load
    from ferlab.pretrained import DEIT_S

    opt = torch.optim.AdamW(disc.parameters(), lr=lr)
    disc.train()
    right = seen = 0
    for e in range(epochs):
        right = seen = 0
        for x, y in epoch_batches(e):
            logits = disc(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(disc)
            opt.step()
            right, seen = right + (logits.argmax(1) == y).sum().item(), seen + len(y)
    # the discriminator is DeiT-shaped: its state dict is a DeiT-S file's, loaded as one
    load(DEIT_S, mgn, {k: v.detach().clone() for k, v in disc.state_dict().items()}, "the warm-started discriminator")
    return right / max(seen, 1)


def average_gradients(module) -> None:
    """Data parallelism by hand for the MGN stage: with several Ray Train workers, average each gradient over the
    ranks. Not DDP, because the MGN is called through `discriminator_view` rather than its forward, and the
    discriminator runs forward twice per backward, neither of which DDP's reducer supports."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    world = torch.distributed.get_world_size()
    for p in module.parameters():
        if p.grad is not None and world > 1:
            torch.distributed.all_reduce(p.grad)
            p.grad /= world


def mgn_loop_per_worker(config: dict):
    """config = {"preset", "model": overrides, "pretrained": {"deit": file}, "mask_ratio", "epochs", "lr",
    "batch_size", "seed", "has_val", "augment", "warm_start": epochs of `warm_start` (0: none)}."""
    import ray.train
    import ray.train.torch

    from ferlab.models import model_config
    from ferlab.models.mvt import MaskGenerator, discriminator
    from ferlab.models.weights import load
    from ferlab.pretrained import DEIT_S
    from ferlab.config import TrainConfig
    from ferlab.data.augment import augment_batch, batch_generator
    from ferlab.data.balance import worker_batches
    from ferlab.train.loop import worker_threads
    from ferlab.train.step import to_input
    from ferlab.data.pipeline import quiet_progress
    from ferlab.console import progress_bar

    quiet_progress(config.get("verbose", False))
    torch.set_num_threads(worker_threads(TrainConfig()))
    torch.manual_seed(config["seed"])
    cfg = model_config(config["preset"], **config.get("model", {}))
    m = config["mask_ratio"]
    mgn, disc = MaskGenerator(cfg), discriminator(cfg)
    deit = (config.get("pretrained") or {}).get("deit")
    if deit:  # section 4.2: both start from DeiT-S (the MGN from its first blocks)
        load(DEIT_S, mgn, deit)
        load(DEIT_S, disc, deit)
    device = ray.train.torch.get_device()
    mgn, disc = mgn.to(device), disc.to(device)  # not DDP-wrapped: see average_gradients
    shard = ray.train.get_dataset_shard("train")
    val = ray.train.get_dataset_shard("val") if config.get("has_val") else None
    rank = ray.train.get_context().get_world_rank()

    # One bar for the stage's passes over the data (warm start and GAN epochs); its length is known after the first.
    passes = config["epochs"] + config.get("warm_start", 0)
    bar = progress_bar(None, f"MGN stage ({passes} epochs)", "batches", disable=rank != 0)

    def batches(epoch):  # (x normalised and augmented, y) of this worker's share of an epoch
        blocks = shard.iter_torch_batches(batch_size=None)  # whole blocks, in the epoch's random block order
        steps = 0
        for step, batch in enumerate(worker_batches(blocks, config["batch_size"], config["seed"], epoch, rank)):
            gen = batch_generator(config["seed"], epoch, rank, step, device)
            x = to_input(augment_batch(batch["image"].to(device), config.get("augment", "none"), gen), cfg)
            bar.update()
            steps += 1
            yield x, batch["label"].to(device).long()
        if bar.total is None:  # one pass seen: the stage's length, and so its ETA
            bar.total = steps * passes

    warm = {}
    if config.get("warm_start"):  # its epochs numbered after the GAN stage's: their own shuffles and augmentation
        acc = warm_start(mgn, disc, config["warm_start"], config["lr"], lambda e: batches(config["epochs"] + e))
        warm = {"warm_start_acc": acc}
    opt_g = torch.optim.AdamW(mgn.parameters(), lr=config["lr"])
    opt_d = torch.optim.AdamW(disc.parameters(), lr=config["lr"])
    for epoch in range(config["epochs"]):
        mgn.train()
        disc.train()
        sums, steps, t0 = {}, 0, time.perf_counter()
        for x, y in batches(epoch):
            losses = mgn_step(mgn, disc, opt_g, opt_d, x, y, m)
            sums = {k: sums.get(k, 0.0) + v for k, v in losses.items()}
            steps += 1
        metrics = {k: v / max(steps, 1) for k, v in sums.items()} | warm | {
            "epoch": epoch + 1, "mask_ratio": m, "images_per_s": steps * config["batch_size"] / (time.perf_counter() - t0)}
        if val is not None:  # SynthFER: does Mp find background and occluders? (issue 12: report it per epoch)
            metrics |= mask_quality(mgn, val.iter_torch_batches(batch_size=256), m, device)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if ray.train.get_context().get_world_rank() == 0 and epoch + 1 == config["epochs"]:
                torch.save(mgn.state_dict(), os.path.join(tmp, MGN_FILE))
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)
    bar.close()


# Part of every stored MGN's key: MGNs trained before the direction fix (issue 12) learned the opposite mask and must
# never be reused.
MGN_VERSION = 3  # 3: removed patches black in pixels (mask_fill), the key hashing the whole configuration


def mgn_config(data_hash: str | None, preset: str, m: float, seed: int, epochs: int, fold: int | None = None, *,
               model: dict | None = None, lr: float = 1e-3, batch_size: int = 32, augment: str = "none",
               pretrained: dict | None = None, warm_start: int = 0, limit: int = 0) -> dict:
    """Everything that changes a trained MGN, resolved: its data (the shards' content, the held-out fold and
    --limit's first rows: the rows it trains on), architecture (preset and overrides), m, seed, epochs, optimiser
    settings, augmentation, the DeiT weight file's checksum (a path names a file, not its content), the warm start's
    epochs and the stage's code version. Stored as mgn_config.json beside the MGN it describes."""
    deit = (pretrained or {}).get("deit")
    return {"version": MGN_VERSION, "data": data_hash, "preset": preset, "model": dict(sorted((model or {}).items())),
            "mask_ratio": m, "seed": seed, "epochs": epochs, "lr": lr, "batch_size": batch_size, "augment": augment,
            "fold": fold, "deit_sha256": _sha256(deit) if deit else None} | (
                {"warm_start": warm_start} if warm_start else {}) | (  # absent when off: earlier keys stay valid
                {"limit": limit} if limit else {})  # an MGN of a --limit run's rows is never a full run's


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


def ensure_mgn(datasets: dict, *, storage_path: str, preset: str, model: dict, m: float, seed: int, epochs: int,
               lr: float, batch_size: int, data_hash: str | None, cpus_per_worker: float, gpus: float,
               augment: str = "none", pretrained: dict | None = None, fold: int | None = None,
               warm_start: int = 0, limit: int = 0, lock_dir: str = "", verbose: bool = False) -> str:
    """The path (or URI) of the trained MGN for these settings: trained now (one Ray Train run) if no earlier trial
    did it. Concurrent callers with the same key, on any node, wait on the storage's lock and then reuse the file.
    `datasets` holds "train" and, for the per-epoch mask quality, a "val" split decoded with its `nuisance` masks
    (SynthFER)."""
    import ray.train
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    from ferlab.data.pipeline import data_config, training_datasets

    config = mgn_config(data_hash, preset, m, seed, epochs, fold, model=model, lr=lr, batch_size=batch_size,
                        augment=augment, pretrained=pretrained, warm_start=warm_start, limit=limit)
    key = mgn_key(config)
    folder = storage.join(storage.normalize(storage_path), "mgn", key)
    path = storage.join(folder, MGN_FILE)
    with FolderLock(folder, f"MGN stage {key}", wait=True, lock_dir=lock_dir):  # taken over when its holder dies
        if storage.is_file(path):
            print(f"MGN {key}: reusing {path}", flush=True)
            return path
        warm = f", after {warm_start} epochs of the discriminator on full images" if warm_start else ""
        print(f"MGN {key}: training ({epochs} epochs, m={m}{warm})", flush=True)
        storage.write_json(storage.join(folder, MGN_CONFIG), config, indent=1)
        train = {"train": training_datasets(datasets, seed=seed)["train"]}
        has_val = "val" in datasets
        trainer = TorchTrainer(
            mgn_loop_per_worker,
            train_loop_config={"preset": preset, "model": model, "mask_ratio": m, "epochs": epochs, "lr": lr,
                               "batch_size": batch_size, "seed": seed, "has_val": has_val, "augment": augment,
                               "warm_start": warm_start, "verbose": verbose,
                               "pretrained": {k: v for k, v in (pretrained or {}).items() if k == "deit"}},
            scaling_config=ScalingConfig(num_workers=1, use_gpu=gpus > 0,
                                         resources_per_worker={"CPU": cpus_per_worker} | ({"GPU": gpus} if gpus else {})),
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
        print(f"MGN {key}: done, mean mask value {last['mask_mean']:.3f} (target {m}), "
              f"discriminator loss {last['loss_d']:.3f}, variance {last['variance']:.4f}{quality}", flush=True)
        return path
