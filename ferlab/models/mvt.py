"""MVT (Li et al. 2021, "MVT: Mask Vision Transformer for Facial Expression Recognition in the Wild"), written from
the paper alone (it has no public code). Section numbers are the paper's own.

    image -> [MGN, frozen: first 6 DeiT-S blocks over the patch tokens -> Linear -> sigmoid = Mp per patch]
          -> mask = 1 - Mp, spread over each patch's P x P x C pixels -> masked image (section 3.1)
          -> DeiT-S classifier (section 3.1)

The MGN is trained beforehand like a GAN against a ViT discriminator (`ferlab/studies/mvt_mgn.py`); the classifier trains
with it frozen, optionally with dynamic relabeling (`ferlab/train/relabel.py`).

Direction of the mask (the paper never writes the MGN stage's multiplier down; README, "Paper vs code"): Mp is high
on unimportant patches ("the higher the value is, the more unimportant this patch is"), and the classifier keeps
1 - Mp ("subtract Mp from 1 to get the patch masks which can filter out the backgrounds"). For the GAN stage to teach
that direction, the discriminator must see what Mp keeps, x * Mp (`MaskGenerator.discriminator_view`), with random
masks that likewise keep round(m N) patches: minimising the variance of D's softmax then drives Mp DOWN on the
patches that carry the expression, and the classifier, keeping 1 - Mp, keeps exactly those.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ferlab.config import checked
from ferlab.pretrained import normalisation


@dataclass(frozen=True)
class MVTConfig:
    input_size: int = 224  # the paper resizes every face to 224x224 (no alignment)
    patch: int = 16  # P: patch side; N = (input_size / P)^2 patches
    dim: int = 384  # D: DeiT-S width
    depth: int = 12  # classifier blocks (DeiT-S)
    heads: int = 6  # attention heads per block (DeiT-S: 6 of 64 dimensions)
    mlp_ratio: float = 4.0  # MLP hidden width / dim (DeiT-S: 4)
    qkv_bias: bool = True  # DeiT has qkv bias
    mgn_depth: int = 6  # the MGN uses the first 6 DeiT-S blocks (section 4.2)
    num_classes: int = 7  # expression classes; a sweep sets it from the shards (FERPlus and AffectNet-8: 8)
    # What the head reads (timm's global_pool): "token" is DeiT's class token, the paper's; "avg" averages the patch
    # tokens, which learns much faster from scratch on a CPU budget (as transfer_tiny's pool="mean").
    pool: str = "token"
    # How patches become tokens: "linear" is ViT / DeiT's (one P x P conv, stride P), the paper's; "conv" is a small
    # convolutional stem with the same total stride (Xiao et al. 2021, "Early convolutions help transformers see
    # better"): a CPU-budget stand-in for ImageNet pretraining, without which a from-scratch ViT does not learn
    # SynthFER in a laptop budget (benchmarks/relabel_quality.py --preset mvt_tiny). Mp stays one value per patch.
    patch_stem: str = "linear"
    # Table 3's first column / Table 1's m = 0: the classifier sees the raw image. With use_mgn the MGN's weights come
    # from the "mgn" pretrained file (written by the MGN stage); without one the MGN is random, which is for tests.
    use_mgn: bool = True
    # What a removed patch becomes. "black": black pixels, as the paper draws them (Fig. 2: "The black area represents
    # the masked regions"; section 3.1 multiplies the image by the mask, which in pixels makes black); the mask is
    # applied to pixel values, before normalisation. "mean": zero after normalisation, the weights' mean colour
    # (ferlab's masking before 2026-12-03, kept as an option).
    mask_fill: str = "black"
    # Not a field: the weight family its input layer starts from (ferlab.pretrained); the input normalisation is that
    # family's (DeiT-S: ImageNet's mean and std), with the file loaded or from scratch
    input_weights = "deit"

    def __post_init__(self):
        checked(self, "MVT config")

    def _check(self):
        checks = [
            ("input_size", self.input_size % self.patch == 0, f"multiples of patch={self.patch}"),
            ("heads", self.heads >= 1 and self.dim % self.heads == 0, "divisors of dim"),
            ("mgn_depth", 1 <= self.mgn_depth <= self.depth, f"1..depth={self.depth}"),
            ("num_classes", self.num_classes >= 2, "integers >= 2"),
            ("pool", self.pool in ("token", "avg"), "'token' or 'avg'"),
            ("mask_fill", self.mask_fill in ("black", "mean"), "'black' or 'mean'"),
            ("patch_stem", self.patch_stem in ("linear", "conv") and (self.patch_stem == "linear" or
                                                                       self.patch & (self.patch - 1) == 0),
             "'linear', or 'conv' with a power-of-two patch"),
        ]
        for knob, ok, allowed in checks:
            if not ok:
                raise ValueError(f"MVT {knob}={getattr(self, knob)!r} is outside its range: {allowed}")

    @property
    def grid(self) -> int:
        return self.input_size // self.patch

    def to_dict(self) -> dict:
        return asdict(self)


def vit(cfg: MVTConfig) -> VisionTransformer:
    """A DeiT-S-shaped timm ViT (class token, learned position embedding, MLP-less linear head)."""
    model = VisionTransformer(img_size=cfg.input_size, patch_size=cfg.patch, embed_dim=cfg.dim, depth=cfg.depth,
                              num_heads=cfg.heads, mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias,
                              num_classes=cfg.num_classes, global_pool=cfg.pool,
                              fc_norm=False)  # keep DeiT's final `norm` (timm would swap it for fc_norm with "avg")
    if cfg.patch_stem == "conv":
        model.patch_embed.proj = conv_stem(cfg.dim, cfg.patch)
    return model


def conv_stem(dim: int, patch: int) -> nn.Sequential:
    """3x3 stride-2 convolutions (BatchNorm, ReLU) halving the image log2(P) times, then a 1x1 to the token width:
    the same (B, D, H / P, W / P) grid as the P x P patch projection it replaces."""
    layers, ch = [], 3
    for i in range(patch.bit_length() - 1):
        out = max(dim // 2 ** (patch.bit_length() - 2 - i), 16)
        layers += [nn.Conv2d(ch, out, 3, 2, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        ch = out
    return nn.Sequential(*layers, nn.Conv2d(ch, dim, 1))


class MaskGenerator(nn.Module):
    """Section 3.2: patch embedding + position embedding over the N patch tokens (no class token), the first
    `mgn_depth` DeiT blocks, a Linear D -> 1 and a sigmoid: Mp in (0, 1) per patch, high = unimportant."""

    def __init__(self, cfg: MVTConfig):
        super().__init__()
        self.cfg = cfg
        donor = vit(cfg)  # the same modules as DeiT, so DeiT's names and init apply
        self.patch_embed = donor.patch_embed
        self.pos_embed = nn.Parameter(donor.pos_embed.detach()[:, 1:].clone())  # (1, N, D): patches only
        self.blocks = nn.Sequential(*[donor.blocks[i] for i in range(cfg.mgn_depth)])
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.to_value = nn.Linear(cfg.dim, 1)
        # what a removed patch becomes once normalised: black pixels, (0 - mean) / std, or the mean colour, 0; built
        # once (moved to the device with the module, not saved: it follows from the config)
        mean, std = normalisation(cfg)
        black = -torch.tensor(mean) / torch.tensor(std)
        self.register_buffer("fill", (black if cfg.mask_fill == "black" else torch.zeros(3))[:, None, None],
                             persistent=False)

    def patch_values(self, x):  # (B, 3, H, W) -> Mp (B, N)
        t = self.patch_embed(x) + self.pos_embed  # (B, N, D)
        return torch.sigmoid(self.to_value(self.norm(self.blocks(t)))).squeeze(-1)

    def spread(self, patch_mask):  # (B, N) -> (B, 1, H, W): each patch's value over its P x P pixels
        g, p = self.cfg.grid, self.cfg.patch
        return patch_mask.view(-1, 1, g, g).repeat_interleave(p, 2).repeat_interleave(p, 3)

    def apply(self, x, keep):
        """x (normalised, (B, 3, H, W)) with each patch kept by `keep` (B, N) in [0, 1]: the pixels times the mask,
        then normalised again (mask_fill "black": a removed patch is black, (0 - mean) / std), or the normalised
        image times the mask ("mean": a removed patch is the mean colour)."""
        k = self.spread(keep)
        return x * k + self.fill.to(x.dtype) * (1.0 - k)  # black: = ((pixels * k) - mean) / std

    def forward(self, x):
        """The classifier's input: (x masked by 1 - Mp, Mp), "the complement of the generated masks" (section 3.2),
        which removes about m of the image, the part the MGN found least useful."""
        mp = self.patch_values(x)
        return self.apply(x, 1.0 - mp), mp

    def discriminator_view(self, x):
        """The MGN stage's "images with the mask generated by MGN": (x masked by Mp, Mp), the image as Mp keeps it.
        Hiding the expression from the discriminator (its softmax flat, Eq. 2) then means LOW Mp on the expression."""
        mp = self.patch_values(x)
        return self.apply(x, mp), mp


def random_patch_mask(batch: int, n: int, ratio: float, device) -> torch.Tensor:
    """The discriminator's "random masked images": per image, round(ratio * N) patches chosen uniformly are kept
    (value 1, as a high Mp keeps a patch in `discriminator_view`), the rest zeroed. Returns (B, N) in {0, 1}."""
    k = int(round(ratio * n))
    order = torch.rand(batch, n, device=device).argsort(1)
    mp = torch.zeros(batch, n, device=device)
    mp.scatter_(1, order[:, :k], 1.0)
    return mp


class MVT(nn.Module):
    """The classifier stage: a frozen MGN (unless use_mgn is off) in front of a DeiT-S classifier."""

    # Local weight files, applied after the architecture is built: "deit", a DeiT-S file ({"model": state_dict})
    # for the classifier and (without an "mgn" file) the MGN's first blocks; "mgn", a trained MGN (`mgn.pt`).
    PRETRAINED = ("deit", "mgn")

    def __init__(self, cfg: MVTConfig):
        super().__init__()
        self.cfg = cfg
        self.classifier = vit(cfg)
        self.mgn = MaskGenerator(cfg) if cfg.use_mgn else None
        self.unused_weights: list[str] = []
        if self.mgn is not None:
            self.mgn.requires_grad_(False).eval()  # section 3.1: only the classifier's parameters are optimised

    def load_pretrained(self, files: dict) -> list[str]:
        """Load the named files strictly; returns the keys of the files this configuration does not use."""
        from ferlab.models.weights import load
        from ferlab.pretrained import DEIT_S, MGN

        unused = []
        if files.get("deit"):
            unused += load(DEIT_S, self.classifier, files["deit"])
        if self.mgn is not None:
            if files.get("mgn"):
                load(MGN, self.mgn, files["mgn"])
            elif files.get("deit"):
                unused += load(DEIT_S, self.mgn, files["deit"])
        return unused

    def train(self, mode: bool = True):
        super().train(mode)
        if self.mgn is not None:
            self.mgn.eval()  # frozen: no dropout, and it never switches to training
        return self

    def masked(self, x):
        if self.mgn is None:
            return x
        with torch.no_grad():
            return self.mgn(x)[0]

    def forward(self, x):
        return self.classifier(self.masked(x))


def discriminator(cfg: MVTConfig) -> VisionTransformer:
    """The MGN stage's "extra ViT" (section 3.2): a DeiT-S-shaped classifier that learns expressions under masks."""
    return vit(cfg)
