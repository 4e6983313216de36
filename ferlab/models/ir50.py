"""IR-50 (ArcFace's improved residual network) in face.evoLVe's module layout.

Written here rather than taken from timm because TransFER's stem is face.evoLVe's IR-50 and its MS-Celeb-1M
checkpoint must load without key surgery: `input_layer.{0,1,2}`, `body.0..23` units with `res_layer` and
`shortcut_layer` (a 1x1 projection only where the channel count changes: units 3, 7 and 21 of IR-50).
"""

from __future__ import annotations

from torch import nn

IR50_UNITS = (3, 4, 14, 3)
IR50_WIDTHS = (64, 128, 256, 512)


class BottleneckIR(nn.Module):
    """BN -> conv3x3 -> PReLU -> conv3x3 (stride) -> BN, plus a shortcut; face.evoLVe's `bottleneck_IR`."""

    def __init__(self, in_ch: int, depth: int, stride: int):
        super().__init__()
        if in_ch == depth:
            # MaxPool2d(1, stride) is a strided identity: it carries no weights, as in the published checkpoint.
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_ch, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        )

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class IRStem(nn.Module):
    """The first `stage` stages of an IR network. For a 112x112 input, IR-50 cut at stage 2 / 3 / 4 gives
    128x28x28 / 256x14x14 / 512x7x7 (each stage's first unit halves the resolution)."""

    def __init__(self, stage: int = 3, units=IR50_UNITS, widths=IR50_WIDTHS, stem_width: int | None = None):
        super().__init__()
        if stage not in (2, 3, 4):
            raise ValueError(f"stem stage must be 2, 3 or 4, got {stage}")
        stem_width = stem_width or widths[0]
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, stem_width, 3, 1, 1, bias=False), nn.BatchNorm2d(stem_width), nn.PReLU(stem_width))
        blocks, in_ch = [], stem_width
        for n_units, depth in list(zip(units, widths))[:stage]:
            for u in range(n_units):
                blocks.append(BottleneckIR(in_ch, depth, stride=2 if u == 0 else 1))
                in_ch = depth
        self.body = nn.Sequential(*blocks)
        self.out_channels = in_ch

    def forward(self, x):  # (N, 3, H, W) -> (N, C, H / 2^stage, W / 2^stage)
        return self.body(self.input_layer(x))
