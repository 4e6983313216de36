"""TransFER (Xue et al., ICCV 2021): IR-50 stem -> local CNNs (B LANets + MAD, max-aggregated) -> 1x1 projection
to tokens -> ViT encoder with MSAD -> classification head. Section numbers are the paper's own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ferlab.config import checked

from ferlab.models.dropping import DROPPERS, make_dropper
from ferlab.models.encoder import MSAD_VARIANTS, MSADEncoder
from ferlab.models.ir50 import IR50_UNITS, IR50_WIDTHS, IRStem


@dataclass(frozen=True)
class TransFERConfig:
    input_size: int = 112  # aligned face side; the paper uses 112x112
    stem_stage: int = 3  # IR-50 cut after stage 2 / 3 / 4 (Table 2): token grid 28 / 14 / 7 at 112 input
    stem_units: tuple = IR50_UNITS  # residual units per IR stage; IR-50 is (3, 4, 14, 3)
    stem_widths: tuple = IR50_WIDTHS  # channels per IR stage; IR-50 is (64, 128, 256, 512)
    branches: int = 2  # B, number of LANet branches (Fig. 3); 0 = no local CNNs, stem goes straight to tokens
    lanet_reduction: int = 16  # r: LANet's first 1x1 conv maps c -> c / r channels (section 3.1)
    lanet_bn: bool = False  # BatchNorm after each LANet conv, as the authors' later code has; the paper has none
    p1: float = 0.6  # MAD: chance per sample that one of the B attention maps is zeroed (Table 3)
    dropper: str = "mad"  # what drops attention maps (Table 4): "mad", "dropout", "dropblock" or "spatial"
    drop_rate: float = 0.1  # the rate of the Table 4 alternatives (element / block / whole-map); MAD uses p1
    # DropBlock's square side, in cells of the attention map (timm clips it to the map): the paper's best on RAF-DB,
    # section 4.3: "the block size is 7 and 9, respectively on RAF-DB and AffectNet"
    drop_block_size: int = 7
    p2: float = 0.3  # MSAD: chance per sample and block that one head's output is zeroed (Table 3)
    msad: str = "paper"  # "paper": a head's output is zeroed; "reference": the authors' code (one token's q, k, v)
    dim: int = 768  # c2, token width after the 1x1 projection; the legacy timm ViT-Small width
    depth: int = 8  # M, encoder blocks
    heads: int = 8  # self-attention heads per block
    mlp_ratio: float = 3.0  # MLP hidden width / dim, as in the legacy timm ViT-Small the paper starts from
    qkv_bias: bool = False  # the legacy ViT-Small has no qkv bias
    # Softmax temperature of q.k; None is the usual head_dim ** -0.5. The legacy ViT-Small file was trained with
    # dim ** -0.5 = 768 ** -0.5 (timm <= 0.4 set qk_scale so for pretrained=True, "my scale was wrong for original
    # weights"), so the paper preset, which starts from that file, uses it: with head_dim ** -0.5 the pretrained
    # attention would be 2.8x sharper than it was trained.
    attn_scale: float | None = None
    num_classes: int = 7  # 7 basic expressions (8 with contempt on FERPlus / AffectNet-8)
    # What the head reads: "cls" is the paper's (ViT's class token); "mean" averages the patch tokens. From scratch
    # on a CPU budget the class token learns far more slowly (SynthFER, 150 steps: 0.16 vs 0.54 validation
    # accuracy), so the CPU preset uses "mean"; the class token is still there and still attends.
    pool: str = "cls"

    # Not a field: the weight family its input layer starts from (ferlab.pretrained); the input normalisation is that
    # family's (face.evoLVe's IR-50: RGB scaled to [-1, 1]), with the file loaded or from scratch
    input_weights = "stem"

    def __post_init__(self):
        checked(self, "TransFER config")

    def _check(self):
        checks = [
            ("stem_stage", self.stem_stage in (2, 3, 4), "{2, 3, 4}"),
            ("branches", isinstance(self.branches, int) and self.branches >= 0, "integers >= 0"),
            ("p1", 0.0 <= self.p1 < 1.0, "[0, 1)"),
            ("p2", 0.0 <= self.p2 < 1.0, "[0, 1)"),
            ("lanet_reduction", self.lanet_reduction >= 1, "integers >= 1"),
            ("num_classes", self.num_classes >= 2, "integers >= 2"),
            ("depth", isinstance(self.depth, int) and self.depth >= 1, "integers >= 1"),
            ("heads", self.heads >= 1 and self.dim % self.heads == 0, "divisors of dim"),
            ("input_size", self.input_size % (2 ** self.stem_stage) == 0, f"multiples of {2 ** self.stem_stage}"),
            ("pool", self.pool in ("cls", "mean"), "'cls' or 'mean'"),
            ("dropper", self.dropper in DROPPERS, str(DROPPERS)),
            ("drop_rate", 0.0 <= self.drop_rate < 1.0, "[0, 1)"),
            ("drop_block_size", self.drop_block_size >= 1, "integers >= 1"),
            ("msad", self.msad in MSAD_VARIANTS, str(MSAD_VARIANTS)),
            ("attn_scale", self.attn_scale is None or self.attn_scale > 0, "None or > 0"),
        ]
        for knob, ok, allowed in checks:
            if not ok:
                raise ValueError(f"TransFER {knob}={getattr(self, knob)!r} is outside its range: {allowed}")

    @property
    def grid(self) -> int:
        return self.input_size // 2 ** self.stem_stage  # tokens per side

    def to_dict(self) -> dict:
        return asdict(self)


class LANet(nn.Module):
    """One local branch (section 3.1): 1x1 conv c -> c/r, ReLU, 1x1 conv -> 1, sigmoid: an (N, 1, H, W) map."""

    def __init__(self, channels: int, reduction: int, bn: bool = False):
        super().__init__()
        hidden = max(1, channels // reduction)
        norm = nn.BatchNorm2d if bn else (lambda c: nn.Identity())
        self.net = nn.Sequential(nn.Conv2d(channels, hidden, 1), norm(hidden), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, 1, 1), norm(1), nn.Sigmoid())

    def forward(self, x):
        return self.net(x)


class LocalCNNs(nn.Module):
    """B LANets -> MAD (or a Table 4 dropper) -> element-wise max over the maps (Eq. 1) -> multiply the features."""

    def __init__(self, cfg: TransFERConfig, channels: int):
        super().__init__()
        self.lanets = nn.ModuleList(LANet(channels, cfg.lanet_reduction, cfg.lanet_bn) for _ in range(cfg.branches))
        self.mad = make_dropper(cfg)

    def attention(self, x):
        maps = torch.cat([lanet(x) for lanet in self.lanets], dim=1)  # (N, B, H, W)
        dropped = self.mad(maps)
        return maps, dropped.amax(dim=1, keepdim=True)  # raw maps, aggregated (N, 1, H, W)

    def forward(self, x):
        return x * self.attention(x)[1]


class TransFER(nn.Module):
    def __init__(self, cfg: TransFERConfig):
        super().__init__()
        self.cfg = cfg
        self.stem = IRStem(cfg.stem_stage, cfg.stem_units, cfg.stem_widths)
        c = self.stem.out_channels
        # B = 0 is Table 1's baseline: no local CNNs, the stem's features go straight to the projection.
        self.local = LocalCNNs(cfg, c) if cfg.branches > 0 else nn.Identity()
        self.proj = nn.Conv2d(c, cfg.dim, 1)  # section 3.3 "Projection": each grid cell becomes one token
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.randn(1, cfg.grid ** 2 + 1, cfg.dim) * 0.02)
        self.encoder = MSADEncoder(cfg.dim, cfg.depth, cfg.heads, cfg.mlp_ratio, cfg.qkv_bias, cfg.p2, cfg.msad,
                                    cfg.attn_scale)
        self.head = nn.Linear(cfg.dim, cfg.num_classes)  # sized for the class count, never loaded from a file
        self.unused_weights: list[str] = []  # keys of the weight files that this configuration does not use

    # Local weight files (nothing is downloaded), applied after the architecture is built (timm's habit), by their
    # family in ferlab.pretrained: "stem" (face.evoLVe's IR-50), "encoder" (a timm-named ViT, e.g. the legacy ViT-Small)
    PRETRAINED = ("stem", "encoder")

    def load_pretrained(self, files: dict) -> list[str]:
        """Load the named files strictly; returns the keys of the files this configuration does not use."""
        from ferlab.models.weights import TransFEREncoder, load
        from ferlab.pretrained import IR50, VIT_SMALL

        unused = []
        if files.get("stem"):
            unused += load(IR50, self.stem, files["stem"])
        if files.get("encoder"):
            unused += load(VIT_SMALL, TransFEREncoder(self), files["encoder"])
        return unused

    def forward_features(self, x):  # (N, 3, S, S) -> (N, dim): the class token (or mean token) after the encoder
        f = self.local(self.stem(x))  # (N, c, h, w)
        t = self.proj(f).flatten(2).transpose(1, 2)  # (N, h*w, dim)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1) + self.pos_embed
        t = self.encoder(t)  # (N, 1 + h*w, dim)
        return t[:, 0] if self.cfg.pool == "cls" else t[:, 1:].mean(1)

    def forward(self, x):
        return self.head(self.forward_features(x))

    @torch.no_grad()
    def explain(self, x) -> dict:
        """What the pictures need, for a batch, in evaluation mode (no dropping); the training mode is restored.

        Returns a dict of tensors on x's device:
          logits     (N, classes)
          lanet_maps (N, B, h, w): each LANet's sigmoid map (None when B = 0)
          aggregated (N, h, w): their element-wise max, the map that multiplies the stem features (None when B = 0)
          rollout    (N, h, w): attention rollout (Abnar & Zuidema 2020) from the token the head reads (the class
                     token, or with pool="mean" the mean of the patch tokens' rows) to every patch: per block the
                     head-averaged attention with the residual as 0.5 A + 0.5 I, rows renormalised, multiplied
                     through the blocks. Rows of the full product sum to 1; the patch part returned here sums to
                     1 minus what stays on the class token.
          attention  list of (N, heads, T, T) per block, T = 1 + h*w
        """
        was_training = self.training
        self.eval()
        attns = [blk.attn for blk in self.encoder.blocks]
        try:
            for a in attns:
                a.keep_attn = True
            f = self.stem(x)
            maps = agg = None
            if self.cfg.branches > 0:
                maps, agg = self.local.attention(f)
                agg = agg[:, 0]
            logits = self.forward(x)
            per_block = [a.attn_probs for a in attns]
        finally:
            for a in attns:
                a.keep_attn, a.attn_probs = False, None
            self.train(was_training)
        rollout = attention_rollout(per_block)  # (N, T, T)
        source = rollout[:, 0] if self.cfg.pool == "cls" else rollout[:, 1:].mean(1)  # (N, T)
        g = self.cfg.grid
        return {"logits": logits, "lanet_maps": maps, "aggregated": agg,
                "rollout": source[:, 1:].reshape(x.shape[0], g, g), "attention": per_block}


def attention_rollout(per_block: list[torch.Tensor]) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): per block average the heads, add the residual as 0.5 A + 0.5 I,
    renormalise the rows, and multiply from the first block up: R = A'_L ... A'_1. per_block: (N, heads, T, T)."""
    n, _, t, _ = per_block[0].shape
    eye = torch.eye(t, device=per_block[0].device, dtype=per_block[0].dtype)
    rollout = eye.expand(n, t, t)
    for attn in per_block:
        a = 0.5 * attn.mean(1) + 0.5 * eye
        rollout = (a / a.sum(-1, keepdim=True)) @ rollout
    return rollout


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
