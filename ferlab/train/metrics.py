"""Classification metrics from a confusion matrix: overall accuracy and mean class accuracy.

Mean class accuracy is AffectNet's headline metric and the honest one on imbalanced test sets; both come from the
same confusion matrix so they can never disagree about what was counted.
"""

from __future__ import annotations

import numpy as np
import torch


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
