"""Per-epoch training transforms in Ray Data's `map_batches`: class-balanced repetition, then the papers' augmentations.

Everything random is drawn from one generator per batch, seeded by the `_r` column that `ray.data.expressions.random`
adds with the trial's seed and `reseed_after_execution=True`: the same seed gives the same epochs, and every epoch
(one Dataset execution) differs. The papers name their augmentations but not their parameters; the values below
are torchvision's defaults where it has one (RandomErasing, ColorJitter-style factors) and small face-safe values
otherwise (rotation +-10 degrees, crops of 87.5-100% of the side).

recipes:
  none      identity (the row permutation still applies)
  light     flip + shift by up to 4 pixels: the cheap default for SynthFER
  transfer  TransFER section 4.1: random rotation and crop, horizontal flip, random erasing
  mvt       MVT section 4.2: random erasing, horizontal flip, colour jitter
"""

from __future__ import annotations

import numpy as np
from PIL import Image

RECIPES = ("none", "light", "transfer", "mvt")
BALANCE = ("none", "repeat", "full")
SEED_COLUMN = "_r"
ROTATION_DEG = 10.0  # TransFER "random rotate": +- this many degrees
CROP_MIN = 0.875  # TransFER "crop": a square window of 87.5-100% of the side, resized back
ERASE_P, ERASE_AREA, ERASE_RATIO = 0.5, (0.02, 0.33), (0.3, 3.3)  # torchvision RandomErasing's defaults
ERASE_VALUE = 128  # mid-grey = 0 after the [-1, 1] normalisation, as torchvision's value=0 on normalised input
JITTER = 0.4  # brightness, contrast and saturation factors in [1 - JITTER, 1 + JITTER]


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


def _rng(batch) -> np.random.Generator:
    seeds = batch.get(SEED_COLUMN)
    if seeds is None:  # used outside the pipeline (tests, benchmarks): fresh randomness
        return np.random.default_rng()
    return np.random.default_rng((np.asarray(seeds, dtype=np.float64) * 2 ** 52).astype(np.uint64))


def _rotate_crop(x: np.ndarray, rng) -> np.ndarray:
    """Per image: rotate about the centre by U(-10, 10) degrees and take a random square crop, in one bilinear
    affine warp (PIL, in C: faster than a vectorised numpy gather on a CPU). Outside the image: black, as
    torchvision's RandomRotation."""
    n, s = x.shape[:2]
    angle = np.deg2rad(rng.uniform(-ROTATION_DEG, ROTATION_DEG, n))
    side = s * rng.uniform(CROP_MIN, 1.0, n)
    off = rng.uniform(0, 1, (n, 2)) * (s - side)[:, None]  # top-left corner of the crop window
    out = np.empty_like(x)
    for i in range(n):
        k = side[i] / s  # output pixel -> window pixel scale
        c, si = np.cos(angle[i]) * k, np.sin(angle[i]) * k
        # output (u, v) -> input: rotate about the window's centre, window placed at off
        cx, cy = off[i, 0] + side[i] / 2, off[i, 1] + side[i] / 2
        a, b = c, -si
        d, e = si, c
        data = (a, b, cx - a * s / 2 - b * s / 2, d, e, cy - d * s / 2 - e * s / 2)
        out[i] = np.asarray(Image.fromarray(x[i]).transform((s, s), Image.AFFINE, data=data,
                                                            resample=Image.BILINEAR))
    return out


def _flip(x, rng):
    flip = rng.random(len(x)) < 0.5
    return np.where(flip[:, None, None, None], x[:, :, ::-1], x)


def _shift(x, rng, pad=4):
    n, s = x.shape[:2]
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    dy, dx = rng.integers(0, 2 * pad + 1, (2, n))
    rows = dy[:, None] + np.arange(s)[None, :]  # (N, S)
    cols = dx[:, None] + np.arange(s)[None, :]
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def _erase(x, rng):
    """torchvision RandomErasing, vectorised: with p 0.5 a rectangle of 2-33% of the area, aspect 0.3-3.3."""
    n, s = x.shape[:2]
    area = rng.uniform(*ERASE_AREA, n) * s * s
    ratio = np.exp(rng.uniform(np.log(ERASE_RATIO[0]), np.log(ERASE_RATIO[1]), n))
    h = np.clip(np.sqrt(area * ratio).astype(int), 1, s)
    w = np.clip(np.sqrt(area / ratio).astype(int), 1, s)
    top = (rng.random(n) * (s - h + 1)).astype(int)
    left = (rng.random(n) * (s - w + 1)).astype(int)
    on = rng.random(n) < ERASE_P
    r = np.arange(s)
    mask = ((r[None, :, None] >= top[:, None, None]) & (r[None, :, None] < (top + h)[:, None, None])
            & (r[None, None, :] >= left[:, None, None]) & (r[None, None, :] < (left + w)[:, None, None])
            & on[:, None, None])  # (N, S, S)
    return np.where(mask[..., None], np.uint8(ERASE_VALUE), x)


def _jitter(x, rng):
    """Brightness b, contrast c and saturation s, each a factor in [0.6, 1.4] per image, applied in that order
    (ColorJitter(0.4, 0.4, 0.4) without the hue). All three are linear, so with g the grey image and m its mean
    the result is one expression: s c b x + (1 - s) c b g + (1 - c) b m."""
    n = len(x)
    b, c, s = rng.uniform(1 - JITTER, 1 + JITTER, (3, n)).astype(np.float32)
    y = x.astype(np.float32)  # (N, S, S, 3); the arithmetic below is in place: this runs on every training image
    g = y[..., 0] * np.float32(0.299) + y[..., 1] * np.float32(0.587) + y[..., 2] * np.float32(0.114)  # (N, S, S)
    m = g.mean((1, 2))
    g *= ((1 - s) * c * b)[:, None, None]
    g += ((1 - c) * b * m + 0.5)[:, None, None]  # + 0.5: round, not truncate
    y *= (s * c * b)[:, None, None, None]
    y += g[..., None]
    np.clip(y, 0, 255, out=y)
    return y.astype(np.uint8)


def augment_images(x: np.ndarray, recipe: str, rng: np.random.Generator) -> np.ndarray:
    """(N, S, S, 3) uint8 -> the same, transformed by `recipe`."""
    if recipe == "none":
        return x
    if recipe == "light":
        return _shift(_flip(x, rng), rng)
    if recipe == "transfer":
        return _erase(_flip(_rotate_crop(x, rng), rng), rng)
    if recipe == "mvt":
        return _jitter(_flip(_erase(x, rng), rng), rng)
    raise ValueError(f"augment={recipe!r}: expected one of {RECIPES}")


def epoch_batch(batch: dict, recipe: str = "light", factors=None) -> dict:
    """The per-epoch step of a training block: repeat rows by their class's factor (stochastic rounding, so the
    expected copies are exactly the factor), permute the rows (the within-block half of the epoch shuffle), then
    augment. Copies of one image are augmented independently. Every column but `_r` is carried along."""
    rng = _rng(batch)
    labels = batch["label"]
    idx = np.arange(len(labels))
    if factors is not None:
        r = np.asarray(factors)[labels]
        copies = np.floor(r).astype(int) + (rng.random(len(r)) < r - np.floor(r))
        idx = np.repeat(idx, copies)
    idx = idx[rng.permutation(len(idx))]
    out = {k: v[idx] for k, v in batch.items() if k != SEED_COLUMN}
    out["image"] = np.ascontiguousarray(augment_images(out["image"], recipe, rng))
    return out
