"""Splits carved when a data set lacks them: seeded, stratified by class, never splitting a subject (when subjects
are known) or identical image bytes across splits; and k-fold assignments for the lab data sets' protocol.

Why by hand: scikit-learn's StratifiedGroupKFold would do the grouped, stratified assignment but is not a dependency
here, and it cannot keep identical files together unless they share a group; the greedy rule below does both in a
few lines and is deterministic for a seed.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict

import numpy as np


def units(samples: list) -> dict:
    """The indivisible units of a carving: a subject's images when subjects are known (`Sample.group`), and always
    every image with identical bytes to another one. Returns {unit key: [sample index, ...]}."""
    parent: dict = {}

    def find(k):
        while parent.setdefault(k, k) != k:
            k = parent[k]
        return k

    for i, s in enumerate(samples):
        look = look_digest(s.path) if s.group is None else None
        keys = [("file", file_digest(s.path))] + ([("group", s.group)] if s.group is not None else
                                                  [("look", look)] if look else [])
        root = find(("i", i))
        for k in keys:
            parent[find(k)] = root
    out = defaultdict(list)
    for i in range(len(samples)):
        out[find(("i", i))].append(i)
    return dict(out)


def look_digest(path: str) -> str | None:
    """An 8x8 difference hash of the image (grey, 9x8, each pixel brighter than its right neighbour): neighbouring
    frames of one video sequence, and resized or re-encoded copies, usually share it. Used only when subjects are
    unknown, to keep such near-identical images in one split. None when the file cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            g = np.asarray(im.convert("L").resize((9, 8), Image.BILINEAR), dtype=np.int16)
    except (OSError, ValueError):
        return None
    return np.packbits(g[:, 1:] > g[:, :-1]).tobytes().hex()


def file_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.blake2b(f.read(), digest_size=16).hexdigest()


def assign(samples: list, fractions: dict, seed: int) -> list[str]:
    """One part name per sample, with each part's share of every class as close to `fractions` ({part: share},
    summing to 1) as whole units allow. Units are placed largest first, in a seeded order, each into the part whose
    class counts are furthest below their target for the unit's classes."""
    groups = list(units(samples).values())
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(groups))
    order = sorted(order, key=lambda g: -len(groups[g]))  # stable: the seeded order breaks ties
    total = Counter(s.label for s in samples)
    target = {p: {c: f * n for c, n in total.items()} for p, f in fractions.items()}
    have = {p: Counter() for p in fractions}
    parts = [""] * len(samples)
    for g in order:
        counts = Counter(samples[i].label for i in groups[g])
        best = max(fractions, key=lambda p: (sum(target[p][c] - have[p][c] for c in counts) / max(1, len(counts)),
                                             fractions[p]))
        have[best].update(counts)
        for i in groups[g]:
            parts[i] = best
    return parts


def carve(listing, val_fraction: float, test_fraction: float, seed: int) -> None:
    """Give a listing the splits it lacks, carved from its training images (which are all of them when the layout
    has no splits): test first when missing (`test_fraction`), then val (`val_fraction` of the rest). Records how
    in `listing.info["splits"]`."""
    have = {s.split for s in listing.samples}
    made = {}
    for split, fraction in (("test", test_fraction), ("val", val_fraction)):
        if split in have or fraction <= 0:
            continue
        pool = [s for s in listing.samples if s.split == "train"]
        if not pool:
            continue
        parts = assign(pool, {split: fraction, "train": 1 - fraction}, seed)
        if split not in parts:  # too few images to carve any
            continue
        for s, part in zip(pool, parts):
            s.split = part
        groups = len({s.group for s in pool if s.group is not None})
        made[split] = (f"carved from train ({fraction:.0%}, seed {seed}, stratified by class"
                       + (f", {groups} subjects kept whole" if groups else "") + ", identical images kept together)")
    if made:
        listing.info["splits"] = made
        listing.eval_split = "val" if any(s.split == "val" for s in listing.samples) else "test"


def kfold(samples: list, k: int, seed: int) -> list[int]:
    """A fold number (0..k-1) per sample: stratified by class, subjects and identical images in one fold."""
    parts = assign(samples, {str(f): 1 / k for f in range(k)}, seed)
    return [int(p) for p in parts]
