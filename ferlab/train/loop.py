"""The per-worker training loop that Ray Train's TorchTrainer runs (`train_loop_per_worker`).

One function, Ray's own pattern: build the model from the trial config, iterate this worker's shard of the train
dataset every epoch, evaluate on the whole validation set, and `ray.train.report` the metrics with a checkpoint.
The same code runs on a CPU laptop and on GPUs: `ray.train.torch.get_device()` and `prepare_model` choose the device
and wrap the model in DistributedDataParallel when there is more than one worker.
"""

from __future__ import annotations

import math
import os
import tempfile
import time

import torch
import torch.nn.functional as F

from ferlab.config import TrainConfig
from ferlab.models import create_model
from ferlab.train.metrics import accuracy, confusion, mean_class_accuracy
from ferlab.train.relabel import LabelTable, relabel

CHECKPOINT_FILE = "checkpoint.pt"
# face.evoLVe's IR-50 was trained on RGB scaled to [-1, 1] (mean 0.5, std 0.5); its weights expect that input.
MEAN, STD = 0.5, 0.5


def to_input(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float in [-1, 1], on whatever device `images` is on."""
    return (images.permute(0, 3, 1, 2).float() / 255.0 - MEAN) / STD


def make_optimizer(model: torch.nn.Module, tc: TrainConfig) -> torch.optim.Optimizer:
    if tc.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)


def lr_at(tc: TrainConfig, epoch: float) -> float:
    """Learning rate at a (fractional) epoch: linear warm-up, then step decay at milestones or cosine to zero."""
    if epoch < tc.warmup_epochs:
        return tc.lr * (epoch + 1e-3) / tc.warmup_epochs
    if tc.lr_milestones:
        return tc.lr * 0.1 ** sum(epoch >= m for m in tc.lr_milestones)
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


def train_step(model, opt, images, labels, tc: TrainConfig, device: torch.device, soft=None, probs_out=None):
    """One optimisation step on a uint8 image batch; returns the loss. Shared by Ray's loop and the benchmark.
    `probs_out`, a list, receives the batch's softmax outputs (for relabeling)."""
    x = to_input(images.to(device, non_blocking=True))
    y = labels.to(device, non_blocking=True).long()
    soft = soft.to(device, non_blocking=True).float() if soft is not None else None
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=tc.amp and device.type == "cuda"):
        logits = model(x)
    loss = loss_fn(logits.float(), y, soft, tc)
    if probs_out is not None:
        probs_out.append(logits.detach().float().softmax(1).cpu())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


@torch.no_grad()
def evaluate(model, batches, num_classes: int, device: torch.device, amp: bool, prefix: str = "val") -> dict:
    model.eval()
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    loss_sum, n = 0.0, 0
    for batch in batches:
        x, y = to_input(batch["image"].to(device)), batch["label"].to(device).long()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        n += len(y)
        cm += confusion(logits.argmax(1), y, num_classes)
    cm = cm.cpu().numpy()
    return {f"{prefix}_loss": loss_sum / max(n, 1), f"{prefix}_acc": accuracy(cm),
            f"{prefix}_mean_class_acc": mean_class_accuracy(cm), f"{prefix}_images": n,
            "confusion" if prefix == "val" else f"{prefix}_confusion": cm.tolist()}


def _worker_threads(tc: TrainConfig) -> int:
    if tc.torch_threads:
        return tc.torch_threads
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, int(round(cpus)))


def train_loop_per_worker(config: dict):
    """config = {"preset": name, "model": {overrides}, "train": {TrainConfig fields}}."""
    import ray
    import ray.train
    import ray.train.torch

    tc = TrainConfig(**config.get("train", {}))
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.set_num_threads(_worker_threads(tc))
    torch.manual_seed(tc.seed)  # same init on every rank; DDP would broadcast rank 0's anyway
    device = ray.train.torch.get_device()

    model = create_model(config["preset"], **config.get("model", {}))
    mcfg = model.cfg
    model = ray.train.torch.prepare_model(model)
    opt = make_optimizer(model, tc)
    start_epoch, best = 0, 0.0
    table = LabelTable()  # the training set's current labels, when relabeling is on

    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # a restored trial (or a retried worker group) continues where its last report left it
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, CHECKPOINT_FILE), map_location=device, weights_only=True)
        _unwrap(model).load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, best = state["epoch"] + 1, state["best_val_acc"]
        for name, saved in state.get("labels", {}).items():  # relabels persist across a resume too
            setattr(table, name, {int(k): int(v) for k, v in saved.items()})

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")  # the selection split: "val", or "test" where there is no val
    # Every other split the trainer was given (test beside val, Occlusion-/Pose-RAF-DB, ...) is evaluated each epoch
    # too, so a table can report test accuracy at the epoch chosen on validation, never the best epoch on test.
    others = {name: ray.train.get_dataset_shard(name) for name in config.get("eval_splits", [])}
    for epoch in range(start_epoch, tc.epochs):
        model.train()
        for group in opt.param_groups:  # the schedule steps once per epoch, like the paper's /10 milestones
            group["lr"] = lr_at(tc, epoch)
        t0, seen, loss_sum, steps, wait, first_wait = time.perf_counter(), 0, 0.0, 0, 0.0, 0.0
        class_counts = torch.zeros(mcfg.num_classes, dtype=torch.long)  # the epoch's effective histogram
        relabeled = 0
        batches = iter(train_shard.iter_torch_batches(batch_size=tc.batch_size, device="cpu", drop_last=True,
                                                      local_shuffle_buffer_size=tc.shuffle_buffer or None,
                                                      local_shuffle_seed=tc.seed + 1000 * epoch + rank))
        while True:
            tw = time.perf_counter()
            batch = next(batches, None)
            wait += time.perf_counter() - tw  # time the model waited for input: the pipeline's visible cost
            if steps == 0:
                first_wait = wait  # the per-epoch start-up of the Ray Data execution
            if batch is None:
                break
            y, probs = batch["label"], None
            if tc.relabel != "none":  # train on the stored labels; relabel from relabel_start on (Eq. 6)
                y, probs = table.labels(batch["key"], y, batch.get("clean_label")), []
            loss_sum += train_step(model, opt, batch["image"], y, tc, device, batch.get("soft"), probs)
            if probs and epoch + 1 >= tc.relabel_start:
                relabeled += table.update(batch["key"], relabel(probs[0], y, tc.relabel, tc.relabel_delta))
            seen += len(y)
            class_counts += torch.bincount(y.long(), minlength=mcfg.num_classes)
            steps += 1
        train_time = time.perf_counter() - t0
        metrics = evaluate(model, val_shard.iter_torch_batches(batch_size=256, device="cpu"),
                           mcfg.num_classes, device, tc.amp)
        for name, shard in others.items():
            metrics |= evaluate(model, shard.iter_torch_batches(batch_size=256, device="cpu"), mcfg.num_classes,
                                device, tc.amp, prefix=name)
        best = max(best, metrics["val_acc"])
        metrics.update(epoch=epoch + 1, train_loss=loss_sum / max(steps, 1), best_val_acc=best,
                       lr=opt.param_groups[0]["lr"], train_images_per_s=seen * ctx.get_world_size() / train_time,
                       data_wait_frac=wait / train_time, first_batch_wait_s=first_wait,
                       train_class_counts=class_counts.tolist(),  # this worker's; with balancing, the effect
                       node_id=ray.get_runtime_context().get_node_id())  # where rank 0 ran (which cluster node)
        metrics |= config.get("constants", {})  # what the work before the trial measured (MVT: the MGN's quality)
        if tc.relabel != "none":
            if ctx.get_world_size() > 1:  # every worker relabels its part of the epoch; all keep every change
                gathered = [None] * ctx.get_world_size()
                torch.distributed.all_gather_object(gathered, table.changed())
                for changes in gathered:
                    table.merge(changes)
            metrics |= {"relabel_changed": relabeled} | table.stats()
        if rank == 0:
            print(f"epoch {epoch + 1}: val_acc {metrics['val_acc']:.4f}, train class histogram "
                  f"{class_counts.tolist()}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                torch.save({"model": _unwrap(model).state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                            "best_val_acc": best, "preset": config["preset"], "model_config": mcfg.to_dict(),
                            "labels": {"original": table.original, "current": table.current,
                                       "clean": table.clean}},
                           os.path.join(tmp, CHECKPOINT_FILE))
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)


def _unwrap(model):
    return model.module if hasattr(model, "module") else model
