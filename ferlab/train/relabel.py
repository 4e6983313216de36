"""Dynamic relabeling (MVT section 3.3, Eq. 6), with SCN's constant threshold (Eq. 5) as the special case f = 0.

A training sample is relabelled to the predicted class when  P_max - P_gt > f(P_gt) + delta,  P_gt being the
predicted probability of its current label. The paper asks f to be non-negative and increasing and shows linear,
quadratic and sigmoid curves without formulas (Fig. 5a); with delta "the lower limit of the threshold", f(0) = 0:
    constant   f(p) = 0                                      (SCN)
    linear     f(p) = a p
    quadratic  f(p) = a p^2
    sigmoid    f(p) = a (s(k (p - c)) - s(-k c)), s the logistic function
with a = relabel_scale, c = relabel_centre, k = relabel_steepness (TrainConfig). Eq. 6 can fire only while
1 - 2 P_gt > f(P_gt) + delta (P_max <= 1 - P_gt), so below P_gt = 0.4 and lower for a higher curve; there the
curves must differ for Table 2's rows to differ. What the text fixes: "a lower threshold is more suitable for
FERPlus", whose best f is quadratic against RAF-DB's sigmoid: the quadratic curve lies below the sigmoid where
relabeling happens. Chosen (our copy of the paper has Fig. 5a's caption, not its curves): c = 0.25, k = 12, a = 1,
an S-curve that rises within that range (f(0.1) = 0.10, f(0.2) = 0.31: above the quadratic's 0.01 and 0.04 by
0.08-0.27), where the previous s(10 (p - 0.5)) - s(-5) stayed within 0.05 of p^2.
A new label persists for the rest of the training (it can change again only by the same rule); evaluation always
uses the original labels.
"""

from __future__ import annotations

import math

import torch

from ferlab.config import RELABEL_CHOICES as CHOICES  # TrainConfig.relabel's: "none", then the curves below
from ferlab.config import TrainConfig

FUNCTIONS = CHOICES[1:]


def threshold(p_gt: torch.Tensor, tc: TrainConfig) -> torch.Tensor:
    """f(P_gt) + delta of Eq. 6, f = tc.relabel with its curve's parameters (the module's docstring says why)."""
    f, a = tc.relabel, tc.relabel_scale
    if f == "constant":
        extra = torch.zeros_like(p_gt)
    elif f == "linear":
        extra = a * p_gt
    elif f == "quadratic":
        extra = a * p_gt ** 2
    elif f == "sigmoid":
        k, c = tc.relabel_steepness, tc.relabel_centre
        extra = a * (torch.sigmoid(k * (p_gt - c)) - 1 / (1 + math.exp(k * c)))
    else:
        raise ValueError(f"relabel function {f!r}: expected one of {FUNCTIONS}")
    return extra + tc.relabel_delta


def relabel(probs: torch.Tensor, labels: torch.Tensor, tc: TrainConfig) -> torch.Tensor:
    """Eq. 6 for a batch: probs (N, K) softmax outputs, labels (N,) current labels -> the new labels (N,)."""
    p_max, l_max = probs.max(1)
    p_gt = probs.gather(1, labels[:, None])[:, 0]
    return torch.where(p_max - p_gt > threshold(p_gt, tc), l_max, labels)


class LabelTable:
    """The training set's current labels, keyed by each row's `key`; original labels are remembered on first
    sight. Holds what relabeling changed, and scores it against clean labels when the data set has them."""

    def __init__(self):
        self.original: dict[int, int] = {}
        self.current: dict[int, int] = {}
        self.clean: dict[int, int] = {}

    def labels(self, keys, given, clean=None) -> torch.Tensor:
        """The labels to train on for a batch (the stored ones; first sight stores the given label, unless another
        worker already relabeled the row)."""
        out = []
        for i, (k, y) in enumerate(zip(keys.tolist(), given.tolist())):
            if k not in self.original:
                self.original[k] = y
                self.current.setdefault(k, y)  # a relabel merged from another rank wins over the given label
                if clean is not None:
                    self.clean[k] = int(clean[i])
            out.append(self.current[k])
        return torch.tensor(out, dtype=torch.long)

    def update(self, keys, new_labels) -> list[tuple[int, int]]:
        """Store the batch's new labels; returns the (key, label) pairs that changed."""
        changed = []
        for k, y in zip(keys.tolist(), new_labels.tolist()):
            if self.current[k] != y:
                self.current[k] = y
                changed.append((k, y))
        return changed

    def changed(self) -> dict[int, tuple]:
        """{key: (original, current, clean or -1)} of the rows whose label differs from the original."""
        return {k: (self.original[k], y, self.clean.get(k, -1)) for k, y in self.current.items()
                if k in self.original and y != self.original[k]}

    def apply(self, decisions) -> None:
        """Apply relabel decisions (key, label, original, clean or -1) in the order given, the last one for a key
        winning; a row this worker has not met yet is trained with its new label when it meets it."""
        for k, y, original, clean in decisions:
            self.original.setdefault(k, original)
            if clean >= 0:
                self.clean.setdefault(k, clean)
            self.current[k] = y

    def state(self) -> dict:
        return {"original": self.original, "current": self.current, "clean": self.clean}

    def load(self, state: dict) -> None:
        for name in ("original", "current", "clean"):  # relabels persist across a resume too
            setattr(self, name, {int(k): int(v) for k, v in state.get(name, {}).items()})

    def stats(self) -> dict:
        """relabeled: samples whose label differs from the original; with clean labels, precision (relabeled to the
        clean label) and recall (noisy samples whose label is now clean)."""
        changed = {k: y for k, (_, y, _) in self.changed().items()}
        out = {"relabeled": len(changed)}
        if self.clean:
            noisy = [k for k in self.original if self.original[k] != self.clean.get(k, self.original[k])]
            correct = sum(1 for k, y in changed.items() if y == self.clean.get(k))
            out["relabel_precision"] = correct / len(changed) if changed else float("nan")
            out["relabel_recall"] = (sum(1 for k in noisy if self.current[k] == self.clean[k]) / len(noisy)
                                     if noisy else float("nan"))
            out["noisy_labels"] = len(noisy)
        return out


class Relabeler:
    """The training loop's relabeling hook (Eq. 6 from `relabel_start` on, labels persisting in a LabelTable).

    The loop asks it for each batch's labels (`labels`), hands it the batch's softmax after the step (`step`),
    and at the end of an epoch (`end_epoch`) the workers exchange the decisions each made in that epoch. DDP's
    steps run in lockstep (ferlab.train.lockstep), so the epoch's decisions are applied in (step, rank) order: the
    latest decision for a row wins, a re-relabel and a revert to the original label included, and every rank ends
    the epoch with the table one process would hold after the same decisions. (Exchanging each rank's cumulative
    changes instead lost both: a rank's stale relabel from an earlier epoch overrode a newer decision made by a
    lower rank, and a revert is no change from the original.)

    Within an epoch a row is trained by one rank only: Ray Train's streaming split gives each row of the epoch to
    one rank, and class-balanced up-sampling repeats a row on the rank that holds it (ferlab.data.balance). Were a
    row on two ranks in one epoch (a data set with duplicate ids), one rank would train it with a label the other
    had already changed, which no single process does: `end_epoch` refuses that, naming the rows."""

    def __init__(self, tc: TrainConfig):
        self.tc = tc  # relabel (f), relabel_delta, relabel_start and the curve's parameters
        self.table = LabelTable()
        self.steps = 0  # this epoch's steps so far
        self.decisions: list[tuple] = []  # this epoch's: (step, key, label) in the order made
        self.seen: set[int] = set()  # the keys this rank trained in this epoch
        self.merged: list[tuple] = []  # the last epoch's decisions of every rank, applied: (step, rank, key, label)

    def labels(self, batch, given):
        self.seen.update(batch["key"].tolist())
        return self.table.labels(batch["key"], given, batch.get("clean_label"))

    def step(self, batch, probs, labels, epoch: int) -> None:
        """`epoch` counts from 0; relabeling starts at the 1-based epoch `start`, as SCN's "from epoch 10"."""
        if epoch + 1 >= self.tc.relabel_start:
            for k, y in self.table.update(batch["key"], relabel(probs, labels, self.tc)):
                self.decisions.append((self.steps, k, y))
        self.steps += 1

    def sent(self, rank: int) -> list[tuple]:
        """This epoch's decisions as this rank sends them: (step, rank, key, label, original, clean or -1)."""
        t = self.table
        return [(s, rank, k, y, t.original[k], t.clean.get(k, -1)) for s, k, y in self.decisions]

    def end_epoch(self, lockstep=None, rank: int = 0) -> dict:
        """Exchange the epoch's decisions with the other ranks (`lockstep`: ferlab.train.lockstep.Lockstep; None for
        one process) and apply them all in (step, rank) order; returns the epoch's relabel metrics."""
        t, mine = self.table, self.sent(rank)
        if lockstep is not None and lockstep.world > 1:  # every rank relabels its part; all apply every decision
            gathered = lockstep.gather((mine, self.seen))
            _one_rank_per_row([seen for _, seen in gathered])
            mine = sorted((d for ds, _ in gathered for d in ds), key=lambda d: d[:2])  # stable: a batch keeps order
            t.apply(d[2:] for d in mine)
            # every rank must now hold the same relabels (the rows each met unchanged are its own): ints and tuples
            # hash alike in every process
            tables = lockstep.gather(hash(frozenset((k, y) for k, (_, y, _) in t.changed().items())))
            if len(set(tables)) > 1:
                raise RuntimeError(f"relabeling: the ranks' relabels differ after the epoch's merge ({tables})")
        self.merged = [d[:4] for d in mine]
        metrics = {"relabel_changed": len(mine)} | t.stats()
        self.steps, self.decisions, self.seen = 0, [], set()
        return metrics

    def state(self) -> dict:
        """What a checkpoint keeps: the label table, and the epoch's decisions as applied (an audit trail: the
        table of epoch e is that of epoch e-1 with these applied in order)."""
        return self.table.state() | {"epoch_decisions": self.merged}


def _one_rank_per_row(seen: list[set]) -> None:
    """Refuse an epoch in which two ranks trained the same row (see Relabeler)."""
    both = {}
    for a in range(len(seen)):
        for b in range(a + 1, len(seen)):
            for k in seen[a] & seen[b]:
                both.setdefault(k, (a, b))
    if both:
        shown = ", ".join(f"{k} (ranks {a} and {b})" for k, (a, b) in list(both.items())[:5])
        raise RuntimeError(f"relabeling: {len(both)} rows were trained by two ranks in one epoch ({shown}); their "
                           f"relabel decisions would be merged after a rank trained on a stale label. Are the data "
                           f"set's ids unique?")
