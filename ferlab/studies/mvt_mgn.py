"""MVT's mask generation network (MGN) stage (section 3.2), trained like a GAN against a ViT discriminator.

Alternating per batch:
  discriminator step, MGN frozen:  L_D = CE(D(x * Mp)) + CE(D(x * R))                                    (Eq. 1)
  generator step, D frozen:        L_G = var(softmax(D(x * Mp))) + |mean(Mp) - m|                     (Eqs. 2-4)
with var over the K class probabilities with the K - 1 denominator, Mp the MGN's per-patch values spread over
each patch's pixels, R a random mask keeping round(m N) patches (so the discriminator sees both kinds of masks at
the same area) and m the mask ratio. Hiding the expression from D means LOW Mp on it; the classifier stage keeps
x * (1 - Mp). Why this direction is the paper's: ferlab/models/mvt.py and README, "Paper vs code".

The stage runs as its own Ray Train job (`mgn_loop_per_worker`, given an `MGNStage`); ferlab.studies.mvt_mgn_store
keeps one trained MGN per stage and trains it only when it is not stored yet.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ferlab.studies.mvt_mask_quality import mask_quality

MGN_FILE = "mgn.pt"


@dataclass(frozen=True)
class MGNStage:
    """Everything that changes a trained MGN: what MVT's hook builds from the trial's config, what the stage's
    worker gets, and (resolved by mgn_config) the stored MGN's key."""

    data_hash: str | None  # the shards' content
    preset: str  # the MVT preset whose MGN this is
    mask_ratio: float  # m
    seed: int
    epochs: int  # of the GAN stage
    fold: int | None = None  # k-fold: the held-out fold it never trains on
    model: dict = field(default_factory=dict)  # the sweep's fixed model overrides (not the trial's)
    lr: float = 1e-3
    batch_size: int = 32  # per step, on the stage's one worker
    augment: str = "none"  # the trial's augmentation recipe (ferlab.data.augment)
    pretrained: dict = field(default_factory=dict)  # {"deit": file}: both networks start from DeiT-S
    warm_start: int = 0  # epochs of the discriminator on full images first (`warm_start`; 0: none)
    limit: int = 0  # --limit: the first rows of each split it trains on (0: all)


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
    """config = {"stage": MGNStage, "has_val": a val split with SynthFER's masks to score, "verbose"}."""
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

    stage: MGNStage = config["stage"]
    quiet_progress(config.get("verbose", False))
    torch.set_num_threads(worker_threads(TrainConfig()))
    torch.manual_seed(stage.seed)
    cfg = model_config(stage.preset, **stage.model)
    m = stage.mask_ratio
    mgn, disc = MaskGenerator(cfg), discriminator(cfg)
    deit = stage.pretrained.get("deit")
    if deit:  # section 4.2: both start from DeiT-S (the MGN from its first blocks)
        load(DEIT_S, mgn, deit)
        load(DEIT_S, disc, deit)
    device = ray.train.torch.get_device()
    mgn, disc = mgn.to(device), disc.to(device)  # not DDP-wrapped: see average_gradients
    shard = ray.train.get_dataset_shard("train")
    val = ray.train.get_dataset_shard("val") if config.get("has_val") else None
    rank = ray.train.get_context().get_world_rank()

    # One bar for the stage's passes over the data (warm start and GAN epochs); its length is known after the first.
    passes = stage.epochs + stage.warm_start
    bar = progress_bar(None, f"MGN stage ({passes} epochs)", "batches", disable=rank != 0)

    def batches(epoch):  # (x normalised and augmented, y) of this worker's share of an epoch
        blocks = shard.iter_torch_batches(batch_size=None)  # whole blocks, in the epoch's random block order
        steps = 0
        for step, batch in enumerate(worker_batches(blocks, stage.batch_size, stage.seed, epoch, rank)):
            gen = batch_generator(stage.seed, epoch, rank, step, device)
            x = to_input(augment_batch(batch["image"].to(device), stage.augment, gen), cfg)
            bar.update()
            steps += 1
            yield x, batch["label"].to(device).long()
        if bar.total is None:  # one pass seen: the stage's length, and so its ETA
            bar.total = steps * passes

    warm = {}
    if stage.warm_start:  # its epochs numbered after the GAN stage's: their own shuffles and augmentation
        acc = warm_start(mgn, disc, stage.warm_start, stage.lr, lambda e: batches(stage.epochs + e))
        warm = {"warm_start_acc": acc}
    opt_g = torch.optim.AdamW(mgn.parameters(), lr=stage.lr)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=stage.lr)
    for epoch in range(stage.epochs):
        mgn.train()
        disc.train()
        sums, steps, t0 = {}, 0, time.perf_counter()
        for x, y in batches(epoch):
            losses = mgn_step(mgn, disc, opt_g, opt_d, x, y, m)
            sums = {k: sums.get(k, 0.0) + v for k, v in losses.items()}
            steps += 1
        metrics = {k: v / max(steps, 1) for k, v in sums.items()} | warm | {
            "epoch": epoch + 1, "mask_ratio": m, "images_per_s": steps * stage.batch_size / (time.perf_counter() - t0)}
        if val is not None:  # SynthFER: does Mp find background and occluders? (issue 12: report it per epoch)
            metrics |= mask_quality(mgn, val.iter_torch_batches(batch_size=256), m, device)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if ray.train.get_context().get_world_rank() == 0 and epoch + 1 == stage.epochs:
                torch.save(mgn.state_dict(), os.path.join(tmp, MGN_FILE))
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)
    bar.close()
