"""TransFER's encoder: timm ViT blocks whose attention carries Multi-head Self-Attention Dropping (MSAD).

MSAD (TransFER section 3.3): after every multi-head self-attention, per sample and per block, with probability p2,
the output of ONE head chosen uniformly is set to zero before the output projection; no rescaling; identity at
evaluation. We subclass timm's Attention so that parameter names (qkv, proj) and, with p2 = 0, outputs are exactly
timm's: ViT checkpoints load unchanged.
"""

from __future__ import annotations

import functools

import torch.nn.functional as F
from timm.models.vision_transformer import Attention, Block
from torch import nn

from ferlab.models.dropping import drop_one_group, reference_token_keep

MSAD_VARIANTS = ("paper", "reference")


class MSADAttention(Attention):
    """timm Attention plus MSAD. `p2` and `variant` are set by the encoder after construction (timm's Block builds
    it). variant "paper": one head's output zeroed; "reference": the authors' code, one of the first `heads`
    tokens zeroed in q, k and v (see `reference_token_keep`)."""

    p2: float = 0.0
    variant: str = "paper"
    keep_attn: bool = False  # set by TransFER.explain: compute softmax(qk^T) explicitly and keep it in `attn_probs`
    attn_probs = None

    def forward(self, x, attn_mask=None, is_causal=False):
        B, N, C = x.shape  # (B, N, C)
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.variant == "reference" and self.training and self.p2 > 0:
            keep = reference_token_keep(B, N, self.num_heads, self.p2, x.device).to(q.dtype)[:, None, :, None]
            q, k, v = q * keep, k * keep, v * keep
        if self.keep_attn:  # pictures only: the fused kernel does not expose the probabilities
            attn = (q * self.scale) @ k.transpose(-2, -1)
            if attn_mask is not None:
                attn = attn + attn_mask
            attn = attn.softmax(dim=-1)  # (B, heads, N, N)
            self.attn_probs = attn.detach()
            x = self.attn_drop(attn) @ v
        else:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=self.scale,
                                               dropout_p=self.attn_drop.p if self.training else 0.0)
        if self.variant == "paper":
            x = drop_one_group(x, self.p2, self.training)  # MSAD: one whole head's output per dropped sample
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.norm(x)
        return self.proj_drop(self.proj(x))


class MSADEncoder(nn.Module):
    """A stack of timm pre-norm blocks with MSAD, then a final LayerNorm (timm names: blocks.i.*, norm.*)."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float, qkv_bias: bool, p2: float,
                 variant: str = "paper", attn_scale: float | None = None):
        super().__init__()
        if not 0.0 <= p2 < 1.0:
            raise ValueError(f"p2 must be in [0, 1), got {p2}")
        if variant not in MSAD_VARIANTS:
            raise ValueError(f"msad={variant!r}: expected one of {MSAD_VARIANTS}")
        norm = functools.partial(nn.LayerNorm, eps=1e-6)  # timm ViT's eps, so checkpoints match exactly
        self.blocks = nn.Sequential(*[
            Block(dim, heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, norm_layer=norm, attn_layer=MSADAttention)
            for _ in range(depth)])
        for blk in self.blocks:
            blk.attn.p2, blk.attn.variant = p2, variant
            if attn_scale is not None:  # timm's default is head_dim ** -0.5
                blk.attn.scale = attn_scale
        self.norm = norm(dim)

    def forward(self, x):  # (B, N, C) -> (B, N, C)
        return self.norm(self.blocks(x))
