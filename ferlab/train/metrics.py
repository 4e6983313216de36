"""Classification metrics from a confusion matrix: overall accuracy and mean class accuracy.

Mean class accuracy is AffectNet's headline metric and the honest one on imbalanced test sets; both come from the
same confusion matrix so they can never disagree about what was counted.
"""

from __future__ import annotations

import numpy as np
import torch

# The per-epoch metric names: a contract between the training loop (which reports them), the sweep (which selects
# on VAL_ACC and tabulates them) and the report (which reads trials.csv / history.csv). Written once, here.
EPOCH = "epoch"
STEPS = "steps"  # the epoch's optimiser steps (a schedule in steps counts them across epochs and restarts)
RANK_STEPS = "rank_steps"  # several DDP ranks: each rank's optimiser steps of the epoch (equal: ferlab.train.lockstep)
RANK_CHECKSUMS = "rank_param_checksums"  # each rank's parameter sum at the end of the epoch (equal)
CLASS_COUNTS = "train_class_counts"  # the epoch's trained images per stored class, all ranks (the balance)
LISTS = (RANK_STEPS, RANK_CHECKSUMS, CLASS_COUNTS)  # list-valued, kept in history.csv as JSON text like confusions
VAL_ACC = "val_acc"  # accuracy on the selection split ("val", or "test" where a data set has none)
VAL_MCA = "val_mean_class_acc"
BEST_VAL_ACC = "best_val_acc"
BEST_EPOCH = "best_epoch"  # the epoch of BEST_VAL_ACC: where a trial's test figures are read
TRAIN_LOSS = "train_loss"
IMAGES_PER_S = "train_images_per_s"
DATA_WAIT = "data_wait_frac"  # share of the epoch's training time spent waiting for input
FIRST_BATCH_WAIT = "first_batch_wait_s"
EPOCH_TIME = "epoch_time_s"  # wall time of the epoch's training and evaluation, without the report
EPOCH_END = "epoch_end"  # when that ended (Unix time): the report's timeline
TRIAL_START = "trial_start"  # when the trial's driver started (Unix time), before the study's hook (MVT's MGN stage)
CHECKPOINT = "checkpoint_path"  # added by Tune's TuneReportCallback
NODE = "node_id"
WORKER_PID = "worker_pid"  # rank 0's process: with NODE, where the trial trains (benchmarks/chaos.py kills it)
CONFUSION = "confusion"  # the selection split's; other splits: <split>_confusion
RELABEL = ("relabeled", "relabel_precision", "relabel_recall")  # the label table at the end of an epoch
MODE = "max"  # VAL_ACC is maximised


def split_metrics(prefix: str) -> dict:
    """Names of an evaluated split's metrics."""
    return {"loss": f"{prefix}_loss", "acc": f"{prefix}_acc", "mca": f"{prefix}_mean_class_acc",
            "images": f"{prefix}_images", "confusion": CONFUSION if prefix == "val" else f"{prefix}_confusion"}


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts, rows = true class, columns = predicted class."""
    idx = target.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def accuracy(cm: np.ndarray) -> float:
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def mean_class_accuracy(cm: np.ndarray) -> float:
    """Mean over classes present in the ground truth of per-class recall; absent classes are not counted."""
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float((np.diag(cm)[present] / support[present]).mean())


def attention_mass(maps: torch.Tensor, occluder: torch.Tensor, background: torch.Tensor) -> dict:
    """maps (B, h, w) >= 0, occluder / background (B, S, S) {0, 1}: the share of each map's mass (upsampled to the
    image, nearest) on occluder, on background and on the visible face, and each region's share of the area (what
    a uniform map would give). `spread`: exp(entropy) of the normalised map over its cells, / cells (1 = uniform)."""
    size = occluder.shape[-1]
    up = torch.nn.functional.interpolate(maps[:, None].float(), size=(size, size), mode="nearest")[:, 0]
    w = up / up.flatten(1).sum(1).clamp_min(1e-12)[:, None, None]
    occ = occluder.float()
    bg = background.float() * (1 - occ)
    face = 1 - occ - bg
    cells = maps.flatten(1) / maps.flatten(1).sum(1, keepdim=True).clamp_min(1e-12)
    entropy = -(cells * cells.clamp_min(1e-12).log()).sum(1)
    out = {}
    for name, region in (("occluder", occ), ("background", bg), ("face", face)):
        out[f"mass_{name}"] = (w * region).flatten(1).sum(1).mean().item()
        out[f"area_{name}"] = region.flatten(1).mean(1).mean().item()
    out["spread"] = (entropy.exp() / cells.shape[1]).mean().item()
    return out
