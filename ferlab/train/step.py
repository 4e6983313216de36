"""One optimisation step and what it needs: the input transform, the optimiser, the schedule, the losses. Shared by
the TorchTrainer loop (ferlab.train.loop), the MGN stage and the benchmarks, so that every path trains alike."""

from __future__ import annotations

import contextlib
import functools
import math

import torch
import torch.nn.functional as F

from ferlab.config import TrainConfig
from ferlab.data.augment import augment_batch
from ferlab.pretrained import normalisation


def to_input(images: torch.Tensor, cfg=None) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float normalised as the weights of the model's input layer were trained
    (`cfg`, a model config: ferlab.pretrained.normalisation; None = 0.5 / 0.5), on whatever device `images` is on."""
    mean, std = _normalisation(*normalisation(cfg), images.device)
    return (images.permute(0, 3, 1, 2).float() / 255.0 - mean) / std


@functools.lru_cache(maxsize=8)
def _normalisation(mean: tuple, std: tuple, device) -> tuple:
    """(3, 1, 1) mean and std tensors, built once per (weights, device) instead of at every batch."""
    return (torch.tensor(mean, device=device)[:, None, None], torch.tensor(std, device=device)[:, None, None])


def make_optimizer(model: torch.nn.Module, tc: TrainConfig) -> torch.optim.Optimizer:
    if tc.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)


def lr_at(tc: TrainConfig, epoch: float, step: int = 0) -> float:
    """Learning rate at a (fractional) epoch and global optimiser step: linear warm-up, then step decay at epoch
    milestones, at step milestones, or exponential, else cosine to zero."""
    if epoch < tc.warmup_epochs:
        return tc.lr * (epoch + 1e-3) / tc.warmup_epochs
    if tc.lr_milestone_steps:
        return tc.lr * 0.1 ** sum(step >= m for m in tc.lr_milestone_steps)
    if tc.lr_milestones:
        return tc.lr * 0.1 ** sum(epoch >= m for m in tc.lr_milestones)
    if tc.lr_decay:
        return tc.lr * tc.lr_decay ** (epoch - tc.warmup_epochs)
    span = max(tc.epochs - tc.warmup_epochs, 1e-9)
    return tc.lr * 0.5 * (1 + math.cos(math.pi * (epoch - tc.warmup_epochs) / span))


def loss_fn(logits, labels, soft, tc: TrainConfig) -> torch.Tensor:
    """Cross-entropy on the label, or one of FERPlus's soft-label losses (TrainConfig.label_mode)."""
    if tc.label_mode == "majority" or soft is None:
        return F.cross_entropy(logits, labels, label_smoothing=tc.label_smoothing)
    if tc.label_mode == "probability":  # a label drawn from the vote distribution, fresh every step
        return F.cross_entropy(logits, torch.multinomial(soft, 1)[:, 0], label_smoothing=tc.label_smoothing)
    if tc.label_mode == "crossentropy":
        return -(soft * F.log_softmax(logits, 1)).sum(1).mean()
    # multi_target: FERPlus's -log max_k (t_k p_k): any accepted class may take the probability mass
    return -torch.log((soft * logits.softmax(1)).amax(1).clamp_min(1e-12)).mean()


def train_step(model, opt, images, labels, tc: TrainConfig, device: torch.device, soft=None, gen=None) -> tuple:
    """One optimisation step on a uint8 image batch, augmented on `device` by `tc.augment` with the batch's
    generator `gen` (augment.batch_generator), in `tc.accumulate` micro-batches whose gradients add up to the whole
    batch's; returns (loss, the batch's softmax on the CPU). Shared by Ray's loop and the benchmarks."""
    images = augment_batch(images.to(device, non_blocking=True), tc.augment, gen)
    x = to_input(images, _unwrap(model).cfg)
    y = labels.to(device, non_blocking=True).long()
    soft = soft.to(device, non_blocking=True).float() if soft is not None else None
    opt.zero_grad(set_to_none=True)
    chunks = torch.arange(len(y), device=device).tensor_split(min(tc.accumulate, len(y)))
    loss_sum, probs = 0.0, []
    for i, idx in enumerate(chunks):
        last = i == len(chunks) - 1
        # DDP all-reduces gradients in backward: only once, on the last micro-batch
        sync = model.no_sync() if hasattr(model, "no_sync") and not last else contextlib.nullcontext()
        with sync:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=tc.amp and device.type == "cuda"):
                logits = model(x[idx])
            loss = loss_fn(logits.float(), y[idx], None if soft is None else soft[idx], tc) * (len(idx) / len(y))
            loss.backward()
        loss_sum += loss.item()
        probs.append(logits.detach().float().softmax(1))
    opt.step()
    return loss_sum, torch.cat(probs).cpu()


def _unwrap(model):
    """The model itself under torch.compile's and DDP's wrappers."""
    model = getattr(model, "_orig_mod", model)
    return model.module if hasattr(model, "module") else model
