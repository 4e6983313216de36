"""The per-epoch order of the training rows, on the training worker: class-balanced repetition, then a permutation
of each block's rows (the within-block half of the epoch shuffle; Ray Data's random block order is the other half).

Ray Data streams whole decoded blocks in the epoch's random block order and runs no task per epoch; each worker
repeats and permutes the rows of its blocks with a generator seeded by (seed, epoch, rank, block), and cuts them into
batches. Done here rather than in a Ray Data `map_batches` because every per-epoch task on a small machine started a
worker process beside the training threads (1-2 s of CPU each; benchmarks/pipeline_overhead.py).
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch

from ferlab.data.pipeline import BLOCK_ROWS

BALANCE = ("none", "repeat", "full")


def repeat_factors(counts, mode: str, threshold: float = 0.15) -> np.ndarray:
    """Expected copies of each image of a class per epoch.

    repeat: LVIS's repeat-factor rule (Gupta et al. 2019), r(c) = max(1, sqrt(threshold / f(c))) with f(c) the
            class's share of the training set: rare classes are up-sampled, frequent ones left alone.
    full:   r(c) = n_max / n(c): every class as frequent as the largest one (full balance, in expectation).
    """
    counts = np.asarray(counts, dtype=float)
    if mode == "none":
        return np.ones_like(counts)
    present = counts > 0
    r = np.zeros_like(counts)
    if mode == "repeat":
        r[present] = np.maximum(1.0, np.sqrt(threshold / (counts[present] / counts.sum())))
    elif mode == "full":
        r[present] = counts.max() / counts[present]
    else:
        raise ValueError(f"balance={mode!r}: expected one of {BALANCE}")
    return r


def epoch_order(labels: np.ndarray, factors, rng: np.random.Generator) -> np.ndarray:
    """Row indices of one block for this epoch: each row repeated by its class's factor (stochastic rounding, so the
    expected copies are exactly the factor; copies are augmented independently later), then permuted."""
    idx = np.arange(len(labels))
    if factors is not None:
        r = np.asarray(factors)[labels]
        copies = np.floor(r).astype(int) + (rng.random(len(r)) < r - np.floor(r))
        idx = np.repeat(idx, copies)
    return idx[rng.permutation(len(idx))]


def worker_batches(blocks: Iterable[dict], batch_size: int, seed: int, epoch: int, rank: int,
                   factors=None, min_rows: int = BLOCK_ROWS) -> Iterator[dict]:
    """Whole blocks (dicts of tensors, as `iter_torch_batches(batch_size=None)` yields them) -> batches of
    `batch_size` rows in the epoch's order; rows left at the end of a block start the next block's first batch, and
    the epoch's last partial batch is dropped (as drop_last). Blocks smaller than `min_rows` (a streamed split's,
    sized to the object store) are gathered first, so that each permutation mixes as many rows as a stored block."""
    carry = None
    for i, block in enumerate(_gathered(blocks, min_rows)):
        rng = np.random.default_rng([seed, epoch, rank, i])
        idx = torch.from_numpy(epoch_order(block["label"].numpy(), factors, rng))
        block = {k: v[idx] for k, v in block.items()}
        if carry is not None:
            block = {k: torch.cat([carry[k], v]) for k, v in block.items()}
        n = len(block["label"]) // batch_size * batch_size
        for j in range(0, n, batch_size):
            yield {k: v[j:j + batch_size] for k, v in block.items()}
        carry = {k: v[n:] for k, v in block.items()}


def _gathered(blocks: Iterable[dict], min_rows: int) -> Iterator[dict]:
    pending, rows = [], 0
    for block in blocks:
        pending.append(block)
        rows += len(block["label"])
        if rows >= min_rows:
            yield _cat(pending)
            pending, rows = [], 0
    if pending:
        yield _cat(pending)


def _cat(blocks: list[dict]) -> dict:
    return blocks[0] if len(blocks) == 1 else {k: torch.cat([b[k] for b in blocks]) for k in blocks[0]}
