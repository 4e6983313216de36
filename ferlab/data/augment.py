"""The papers' training augmentations, applied to a uint8 batch on the training worker's device.

Ray Data streams and shuffles the decoded images (`ferlab.data.balance`); the augmentation runs here, as batched
tensor operations on the worker, on the GPU when there is one (as timm's and DALI's GPU augmentation do). Written by
hand rather than with torchvision.transforms.v2 because each transform must draw its random parameters per image
from one seeded generator (`batch_generator`): the same seed gives the same epochs, epoch k after a restart gets
epoch k's augmentation, and every epoch differs. Moving the augmentation off Ray Data's tasks took it off the two
CPUs the training threads need (benchmarks/pipeline_overhead.py).

The papers name their augmentations but not their parameters; the values below are torchvision's defaults where it
has one (RandomErasing, ColorJitter-style factors) and small face-safe values otherwise (rotation +-10 degrees,
crops of 87.5-100% of the side).

recipes:
  none      identity
  light     flip + shift by up to 4 pixels: the cheap default for SynthFER
  transfer  TransFER section 4.1: random rotation and crop, horizontal flip, random erasing
  mvt       MVT section 4.2: random erasing, horizontal flip, colour jitter
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# Each recipe is its list of operations, applied in this order (the order is the draw order of the generator, so it
# is part of what a seed reproduces). The studies name theirs (Study.data_augment).
RECIPES = {
    "none": (),
    "light": ("flip", "shift"),
    "transfer": ("rotate_crop", "flip", "erase"),
    "mvt": ("erase", "flip", "jitter"),
}
ROTATION_DEG = 10.0  # TransFER "random rotate": +- this many degrees
CROP_MIN = 0.875  # TransFER "crop": a square window of 87.5-100% of the side, resized back
SHIFT = 4  # "light": shift by up to this many pixels, reflecting at the border
ERASE_P, ERASE_AREA, ERASE_RATIO = 0.5, (0.02, 0.33), (0.3, 3.3)  # torchvision RandomErasing's defaults
ERASE_VALUE = 128  # mid-grey = 0 after the [-1, 1] normalisation, as torchvision's value=0 on normalised input
JITTER = 0.4  # brightness, contrast and saturation factors in [1 - JITTER, 1 + JITTER]


def derived_seed(*keys: int) -> int:
    """A 63-bit seed that is a function of `keys` only (numpy's SeedSequence mixes them)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def batch_generator(seed: int, epoch: int, rank: int, step: int, device) -> torch.Generator:
    """The generator of one training batch: a function of (seed, epoch, rank, step) only, so a run and its restart
    draw the same augmentation for the same batch."""
    g = torch.Generator(device=device)
    g.manual_seed(derived_seed(seed, epoch, rank, step))
    return g


def augment_batch(images: torch.Tensor, recipe: str, gen: torch.Generator | None = None) -> torch.Tensor:
    """(N, S, S, 3) uint8 -> the same, transformed by `recipe`, on the device `images` is on."""
    if recipe not in RECIPES:
        raise ValueError(f"augment={recipe!r}: expected one of {tuple(RECIPES)}")
    if not RECIPES[recipe] or len(images) == 0:
        return images
    x = images.permute(0, 3, 1, 2).float()  # (N, 3, S, S) in [0, 255]
    for op in RECIPES[recipe]:
        x = OPS[op](x, gen)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def _rand(gen, n: int, lo: float, hi: float, device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, device=device)


def _rotate_crop(x: torch.Tensor, gen) -> torch.Tensor:
    """Per image: rotate about the crop window's centre by U(-10, 10) degrees and take a random square window of
    87.5-100% of the side, resized back, in one bilinear affine warp. Outside the image: black (0), as
    torchvision's RandomRotation."""
    n, dev = len(x), x.device
    angle = _rand(gen, n, -ROTATION_DEG, ROTATION_DEG, dev) * (math.pi / 180)
    k = _rand(gen, n, CROP_MIN, 1.0, dev)  # window side / image side
    corner = torch.rand(n, 2, generator=gen, device=dev) * (1 - k)[:, None]  # window's top-left, image fraction
    centre = 2 * (corner + k[:, None] / 2) - 1  # in grid_sample's [-1, 1] coordinates, (x, y)
    cos, sin = torch.cos(angle) * k, torch.sin(angle) * k
    theta = torch.stack([torch.stack([cos, -sin, centre[:, 0]], 1), torch.stack([sin, cos, centre[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (N, S, S, 2): output pixel -> input
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _flip(x, gen):
    flip = torch.rand(len(x), generator=gen, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _shift(x, gen):
    """Shift each image by up to SHIFT pixels in each direction, reflecting at the border (np.pad's "reflect")."""
    n, _, s, _ = x.shape
    padded = F.pad(x, (SHIFT,) * 4, mode="reflect")  # (N, 3, S + 2 SHIFT, S + 2 SHIFT)
    dy, dx = torch.randint(0, 2 * SHIFT + 1, (2, n), generator=gen, device=x.device)
    ar = torch.arange(s, device=x.device)
    rows, cols = dy[:, None] + ar, dx[:, None] + ar  # (N, S)
    out = padded[torch.arange(n, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)  # advanced indexing put the channels last: (N, S, S, 3) -> (N, 3, S, S)


def _erase(x, gen):
    """torchvision RandomErasing, batched: with p 0.5 a rectangle of 2-33% of the area, aspect 0.3-3.3, set to
    ERASE_VALUE."""
    n, _, s, _ = x.shape
    dev = x.device
    area = _rand(gen, n, *ERASE_AREA, dev) * s * s
    ratio = torch.exp(_rand(gen, n, math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1]), dev))
    h = torch.sqrt(area * ratio).long().clamp(1, s)
    w = torch.sqrt(area / ratio).long().clamp(1, s)
    top = (torch.rand(n, generator=gen, device=dev) * (s - h + 1)).long()
    left = (torch.rand(n, generator=gen, device=dev) * (s - w + 1)).long()
    on = torch.rand(n, generator=gen, device=dev) < ERASE_P
    r = torch.arange(s, device=dev)
    rows = (r >= top[:, None]) & (r < (top + h)[:, None])  # (N, S)
    cols = (r >= left[:, None]) & (r < (left + w)[:, None])
    mask = rows[:, :, None] & cols[:, None, :] & on[:, None, None]  # (N, S, S)
    return x.masked_fill(mask[:, None], float(ERASE_VALUE))


def _jitter(x, gen):
    """Brightness b, contrast c and saturation s, each a factor in [0.6, 1.4] per image, applied in that order
    (ColorJitter(0.4, 0.4, 0.4) without the hue). All three are linear, so with g the grey image and m its mean
    the result is one expression: s c b x + (1 - s) c b g + (1 - c) b m."""
    n, dev = len(x), x.device
    b, c, s = (_rand(gen, n, 1 - JITTER, 1 + JITTER, dev)[:, None, None, None] for _ in range(3))
    g = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]  # (N, 1, S, S)
    m = g.mean((2, 3), keepdim=True)
    return (s * c * b * x + (1 - s) * c * b * g + (1 - c) * b * m).clamp(0, 255)


OPS = {"flip": _flip, "shift": _shift, "rotate_crop": _rotate_crop, "erase": _erase, "jitter": _jitter}
