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


# Table 4 of the paper puts standard droppers in MAD's place; each keeps its own, standard definition (including
# the 1 / (1 - rate) rescaling of Dropout and Spatial Dropout, which MAD deliberately does not do).
DROPPERS = ("mad", "dropout", "dropblock", "spatial")


def make_dropper(cfg) -> nn.Module:
    """The module applied to the (N, B, H, W) attention maps: MAD (cfg.p1) or a Table 4 alternative (cfg.dropper,
    at cfg.drop_rate; DropBlock's block cfg.drop_block_size). `cfg`: TransFERConfig."""
    kind, p1, rate, block_size = cfg.dropper, cfg.p1, cfg.drop_rate, cfg.drop_block_size
    if kind == "mad":
        return MultiAttentionDropping(p1)
    if kind == "dropout":  # element-wise
        return nn.Dropout(rate)
    if kind == "dropblock":  # contiguous block_size x block_size regions, each map on its own
        from timm.layers import DropBlock2d

        return DropBlock2d(rate, block_size, couple_channels=False)
    if kind == "spatial":  # whole maps (channels), each independently
        return nn.Dropout2d(rate)
    raise ValueError(f"dropper={kind!r}: expected one of {DROPPERS}")


def reference_token_keep(n: int, tokens: int, choices: int, p: float, device) -> torch.Tensor:
    """The authors' later code's "MSAD": per sample with probability p, ONE TOKEN among the first `choices`
    (it indexes the token axis with a head count) is zeroed in q, k and v. Returns an (N, tokens) keep mask."""
    drop = torch.rand(n, device=device) < p
    which = torch.randint(min(choices, tokens), (n,), device=device)
    keep = torch.ones(n, tokens, device=device)
    keep[drop, which[drop]] = 0
    return keep
