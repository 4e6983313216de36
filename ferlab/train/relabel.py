"""Dynamic relabeling (MVT section 3.3, Eq. 6), with SCN's constant threshold (Eq. 5) as the special case f = 0.

A training sample is relabelled to the predicted class when  P_max - P_gt > f(P_gt) + delta,  P_gt being the
predicted probability of its current label. The paper asks f to be non-negative and increasing and shows linear,
quadratic and sigmoid curves without formulas; with delta "the lower limit of the threshold", f(0) = 0 here:
    constant   f(p) = 0                        (SCN)
    linear     f(p) = p
    quadratic  f(p) = p^2
    sigmoid    f(p) = s(10 (p - 0.5)) - s(-5), s the logistic function   (an S-curve from 0 to ~0.99)
A new label persists for the rest of the training (it can change again only by the same rule); evaluation always
uses the original labels.
"""

from __future__ import annotations

import math

import torch

FUNCTIONS = ("constant", "linear", "quadratic", "sigmoid")


def threshold(p_gt: torch.Tensor, f: str, delta: float) -> torch.Tensor:
    if f == "constant":
        extra = torch.zeros_like(p_gt)
    elif f == "linear":
        extra = p_gt
    elif f == "quadratic":
        extra = p_gt ** 2
    elif f == "sigmoid":
        extra = torch.sigmoid(10 * (p_gt - 0.5)) - 1 / (1 + math.exp(5))
    else:
        raise ValueError(f"relabel function {f!r}: expected one of {FUNCTIONS}")
    return extra + delta


def relabel(probs: torch.Tensor, labels: torch.Tensor, f: str, delta: float) -> torch.Tensor:
    """Eq. 6 for a batch: probs (N, K) softmax outputs, labels (N,) current labels -> the new labels (N,)."""
    p_max, l_max = probs.max(1)
    p_gt = probs.gather(1, labels[:, None])[:, 0]
    return torch.where(p_max - p_gt > threshold(p_gt, f, delta), l_max, labels)


class LabelTable:
    """The training set's current labels, keyed by each row's `key`; original labels are remembered on first
    sight. Holds what relabeling changed, and scores it against clean labels when the data set has them."""

    def __init__(self):
        self.original: dict[int, int] = {}
        self.current: dict[int, int] = {}
        self.clean: dict[int, int] = {}

    def labels(self, keys, given, clean=None) -> torch.Tensor:
        """The labels to train on for a batch (the stored ones; first sight stores the given label)."""
        out = []
        for i, (k, y) in enumerate(zip(keys.tolist(), given.tolist())):
            if k not in self.original:
                self.original[k] = self.current[k] = y
                if clean is not None:
                    self.clean[k] = int(clean[i])
            out.append(self.current[k])
        return torch.tensor(out, dtype=torch.long)

    def update(self, keys, new_labels) -> int:
        """Store the batch's new labels; returns how many changed."""
        changed = 0
        for k, y in zip(keys.tolist(), new_labels.tolist()):
            if self.current[k] != y:
                self.current[k] = y
                changed += 1
        return changed

    def merge(self, other: dict[int, int]) -> None:
        """Take relabels made by other workers (DDP: each sees a different part of the epoch)."""
        for k, y in other.items():
            if k in self.current:
                self.current[k] = y

    def changed(self) -> dict[int, int]:
        return {k: y for k, y in self.current.items() if y != self.original[k]}

    def stats(self) -> dict:
        """relabeled: samples whose label differs from the original; with clean labels, precision (relabeled to the
        clean label) and recall (noisy samples whose label is now clean)."""
        changed = self.changed()
        out = {"relabeled": len(changed)}
        if self.clean:
            noisy = [k for k in self.original if self.original[k] != self.clean.get(k, self.original[k])]
            correct = sum(1 for k, y in changed.items() if y == self.clean.get(k))
            out["relabel_precision"] = correct / len(changed) if changed else float("nan")
            out["relabel_recall"] = (sum(1 for k in noisy if self.current[k] == self.clean[k]) / len(noisy)
                                     if noisy else float("nan"))
            out["noisy_labels"] = len(noisy)
        return out
