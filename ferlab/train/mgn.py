"""MVT's mask generation network (MGN) stage (section 3.2), trained like a GAN against a ViT discriminator.

Alternating per batch:
  discriminator step, MGN frozen:  L_D = CE(D(MGN-masked image)) + CE(D(randomly masked image))          (Eq. 1)
  generator step, D frozen:        L_G = var(softmax(D(MGN-masked image))) + |mean(Mp) - m|         (Eqs. 2-4)
with var over the K class probabilities with the K - 1 denominator, Mp the MGN's per-patch values (the masked
share of the image) and m the mask ratio. The random masks cover round(m N) patches, so the discriminator sees
both kinds of masks at the same area.

The stage runs as its own Ray Train job and writes one `mgn.pt` per (data set, preset, m, seed, epochs) under the
sweep's storage path. `ensure_mgn` trains it only when it is not there yet, under a file lock, so a sweep never
trains the same MGN twice, also when trials run at the same time (the storage must be a shared file system for
that; an object-store URI such as s3:// is not supported for the MGN stage).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time

import torch
import torch.nn.functional as F

MGN_FILE = "mgn.pt"


def discriminator_loss(logits_generated: torch.Tensor, logits_random: torch.Tensor, labels: torch.Tensor):
    """Eq. 1: the discriminator learns expressions under both kinds of masks."""
    return F.cross_entropy(logits_generated, labels) + F.cross_entropy(logits_random, labels)


def generator_loss(logits_generated: torch.Tensor, patch_values: torch.Tensor, m: float):
    """Eqs. 2-4, averaged over the batch: (total, variance term, area term). A mask that hides the expression makes
    the discriminator's probabilities equal (variance 0); the area term holds the mean masked share at m."""
    probs = logits_generated.softmax(1)  # (B, K)
    variance = probs.var(dim=1, unbiased=True).mean()  # K - 1 denominator, Eq. 3
    area = (patch_values.mean(1) - m).abs().mean()  # |M_avg - m|, Eq. 4 per image
    return variance + area, variance, area


def mgn_loop_per_worker(config: dict):
    """config = {"preset", "model": overrides, "mask_ratio", "epochs", "lr", "batch_size", "seed"}."""
    import ray.train
    import ray.train.torch

    from ferlab.models import model_config
    from ferlab.models.mvt import MaskGenerator, discriminator, random_patch_mask
    from ferlab.models.weights import load_deit, load_deit_into_mgn
    from ferlab.train.loop import _unwrap, _worker_threads, to_input
    from ferlab.config import TrainConfig

    torch.set_num_threads(_worker_threads(TrainConfig()))
    torch.manual_seed(config["seed"])
    cfg = model_config(config["preset"], **config.get("model", {}))
    m = config["mask_ratio"]
    mgn, disc = MaskGenerator(cfg), discriminator(cfg)
    if cfg.deit_weights:  # section 4.2: both start from DeiT-S (the MGN from its first blocks)
        load_deit_into_mgn(mgn, cfg.deit_weights)
        load_deit(disc, cfg.deit_weights)
    mgn, disc = ray.train.torch.prepare_model(mgn), ray.train.torch.prepare_model(disc)
    opt_g = torch.optim.AdamW(mgn.parameters(), lr=config["lr"])
    opt_d = torch.optim.AdamW(disc.parameters(), lr=config["lr"])
    device = ray.train.torch.get_device()
    n_patches = cfg.grid ** 2
    shard = ray.train.get_dataset_shard("train")
    for epoch in range(config["epochs"]):
        mgn.train()
        disc.train()
        sums, steps, t0 = {"loss_d": 0.0, "loss_g": 0.0, "variance": 0.0, "mask_mean": 0.0}, 0, time.perf_counter()
        for batch in shard.iter_torch_batches(batch_size=config["batch_size"], drop_last=True):
            x = to_input(batch["image"].to(device))
            y = batch["label"].to(device).long()
            # discriminator step: the MGN's masks are inputs here, not trained
            with torch.no_grad():
                x_gen, _ = mgn(x)
            rand = random_patch_mask(len(x), n_patches, m, device)
            x_rand = x * _unwrap(mgn).spread(1.0 - rand)
            loss_d = discriminator_loss(disc(x_gen), disc(x_rand), y)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            # generator step: gradients flow through the discriminator, whose weights do not move
            x_gen, mp = mgn(x)
            loss_g, variance, _ = generator_loss(disc(x_gen), mp, m)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            opt_d.zero_grad(set_to_none=True)  # the generator step's gradients on D are discarded
            for k, v in (("loss_d", loss_d), ("loss_g", loss_g), ("variance", variance), ("mask_mean", mp.mean())):
                sums[k] += v.item()
            steps += 1
        metrics = {k: v / max(steps, 1) for k, v in sums.items()} | {
            "epoch": epoch + 1, "mask_ratio": m, "images_per_s": steps * config["batch_size"] / (time.perf_counter() - t0)}
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if ray.train.get_context().get_world_rank() == 0 and epoch + 1 == config["epochs"]:
                torch.save(_unwrap(mgn).state_dict(), os.path.join(tmp, MGN_FILE))
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)


def mgn_key(data_hash: str | None, preset: str, m: float, seed: int, epochs: int) -> str:
    digest = (data_hash or "nohash").split(":")[-1][:12]
    return f"{preset}-{digest}-m{m:.3f}-seed{seed}-e{epochs}"


def ensure_mgn(datasets: dict, *, storage: str, preset: str, model: dict, m: float, seed: int, epochs: int,
               lr: float, batch_size: int, data_hash: str | None, cpus_per_worker: float, gpus: float,
               augment: str = "none") -> str:
    """The path of the trained MGN for these settings: trained now (one Ray Train run) if no earlier trial did it.
    Concurrent callers with the same key wait on a file lock and then reuse the file."""
    import ray.train
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    from ferlab.data.pipeline import data_config, training_datasets

    key = mgn_key(data_hash, preset, m, seed, epochs)
    folder = os.path.join(storage, "mgn", key)
    path = os.path.join(folder, MGN_FILE)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        if os.path.isfile(path):
            print(f"MGN {key}: reusing {path}", flush=True)
            return path
        print(f"MGN {key}: training ({epochs} epochs, m={m})", flush=True)
        trainer = TorchTrainer(
            mgn_loop_per_worker,
            train_loop_config={"preset": preset, "model": model, "mask_ratio": m, "epochs": epochs, "lr": lr,
                               "batch_size": batch_size, "seed": seed},
            scaling_config=ScalingConfig(num_workers=1, use_gpu=gpus > 0,
                                         resources_per_worker={"CPU": cpus_per_worker} | ({"GPU": gpus} if gpus else {})),
            datasets={"train": training_datasets(datasets, augment=augment, seed=seed)["train"]},
            dataset_config=data_config(),
            run_config=ray.train.RunConfig(name=f"mgn-{key}", storage_path=os.path.join(storage, "mgn_runs")),
        )
        result = trainer.fit()
        with result.checkpoint.as_directory() as d:
            shutil.copyfile(os.path.join(d, MGN_FILE), path + ".tmp")
        os.replace(path + ".tmp", path)  # complete or absent, never half-written
        last = result.metrics
        print(f"MGN {key}: done, mean mask value {last['mask_mean']:.3f} (target {m}), "
              f"discriminator loss {last['loss_d']:.3f}, variance {last['variance']:.4f}", flush=True)
        return path
