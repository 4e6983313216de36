"""Multi-Attention Dropping (MAD), TransFER section 3.2.

MAD treats each of the B attention maps as a whole: during training, for each sample, with probability p1, ONE map
chosen uniformly among the B is set to zero; the others pass unchanged, nothing is rescaled, and evaluation is the
identity. (torch's Dropout would drop elements independently and rescale by 1 / (1 - p), which is not this.)
"""

from __future__ import annotations

import torch
from torch import nn


def drop_one_group(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero, per sample with probability p, exactly one slice of dim 1 (chosen uniformly); no rescaling.

    x is (N, G, ...): G groups per sample (B attention maps for MAD, heads for MSAD).
    """
    if not training or p <= 0.0:
        return x
    n, groups = x.shape[:2]
    drop = torch.rand(n, device=x.device) < p  # (N,) which samples lose a group
    which = torch.randint(groups, (n,), device=x.device)  # (N,) the group they lose, uniform
    keep = torch.ones(n, groups, device=x.device, dtype=x.dtype)
    keep[drop, which[drop]] = 0
    return x * keep.view(n, groups, *([1] * (x.dim() - 2)))


class MultiAttentionDropping(nn.Module):
    """MAD over (N, B, H, W) attention maps. With B = 1 a dropped sample loses its only map, so the aggregated map
    and the local features of that sample are all zero: that is the definition, applied literally."""

    def __init__(self, p1: float):
        super().__init__()
        if not 0.0 <= p1 < 1.0:
            raise ValueError(f"p1 must be in [0, 1), got {p1}")
        self.p1 = p1

    def forward(self, maps):
        return drop_one_group(maps, self.p1, self.training)

    def extra_repr(self):
        return f"p1={self.p1}"
