"""One registry for every model: `create_model(name, **overrides)`, `list_models()`.

Presets are small functions registered by name (timm's habit): each returns a config; overrides replace fields of
that config strictly, so a misspelt knob is an error, never silently ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from torch import nn

from ferlab.models.ir50 import IR50_UNITS, IR50_WIDTHS
from ferlab.models.mvt import MVT, MVTConfig
from ferlab.models.transfer import TransFER, TransFERConfig

RETIRED = ("input_mean", "input_std")  # model config fields of older checkpoints, now the weight families' (mean, std)
_PRESETS: dict[str, tuple[Callable[[], object], type[nn.Module]]] = {}


def register_model(model_cls):
    def wrap(fn):
        _PRESETS[fn.__name__] = (fn, model_cls)
        return fn
    return wrap


def list_models() -> list[str]:
    return sorted(_PRESETS)


def model_config(name: str, **overrides):
    """The preset's config with overrides applied; unknown preset or field names are errors that list the valid ones."""
    if name not in _PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {', '.join(list_models())}")
    cfg = _PRESETS[name][0]()
    known = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} for preset {name!r}; fields: {', '.join(sorted(known))}")
    return dataclasses.replace(cfg, **overrides)


def create_model(name: str, pretrained: dict | None = None, **overrides) -> nn.Module:
    """The preset's model with overrides; `pretrained` ({"stem": path, ...}, the keys of the model class's
    PRETRAINED) names local weight files, loaded strictly after the architecture is built (timm's habit)."""
    cfg = model_config(name, **overrides)  # validates the name and every override first
    cls = _PRESETS[name][1]
    files = {k: v for k, v in (pretrained or {}).items() if v}
    unknown = sorted(set(files) - set(cls.PRETRAINED))
    if unknown:
        raise ValueError(f"pretrained file(s) {unknown} for preset {name!r}; it takes {', '.join(cls.PRETRAINED)}")
    model = cls(cfg)
    if files:
        model.unused_weights = model.load_pretrained(files)
    return model


@register_model(TransFER)
def transfer_paper():
    """The paper's sizes: 112x112, IR-50 to stage 3 (256x14x14), 768-dim tokens, 8 blocks, 8 heads, MLP ratio 3,
    with the legacy ViT-Small's attention scale (see TransFERConfig.attn_scale)."""
    return TransFERConfig(input_size=112, stem_units=IR50_UNITS, stem_widths=IR50_WIDTHS,
                          dim=768, depth=8, heads=8, mlp_ratio=3.0, attn_scale=768 ** -0.5)


@register_model(TransFER)
def transfer_tiny():
    """The same architecture at CPU size: 64x64 input, one or two IR units per stage at a quarter of the width,
    128-dim tokens, 2 blocks of 4 heads. Same grid per stage relative to the input (8x8 tokens at stage 3).
    The head reads the mean token, not the class token: see TransFERConfig.pool for why."""
    return TransFERConfig(input_size=64, stem_units=(1, 1, 2, 1), stem_widths=(16, 32, 64, 128),
                          lanet_reduction=4, dim=128, depth=2, heads=4, mlp_ratio=2.0, pool="mean")


@register_model(MVT)
def mvt_paper():
    """The paper's sizes: DeiT-S at 224x224, patch 16 (196 patches), 384 dims, 12 blocks of 6 heads; MGN = blocks 0-5."""
    return MVTConfig(input_size=224, patch=16, dim=384, depth=12, heads=6, mlp_ratio=4.0, mgn_depth=6)


@register_model(MVT)
def mvt_tiny():
    """CPU size: 64x64, patch 8 (64 patches), 96 dims, 4 blocks of 3 heads, MLP ratio 2; MGN = blocks 0-1; the head
    averages the patch tokens (see MVTConfig.pool) and patches become tokens through a small convolutional stem
    (MVTConfig.patch_stem): with DeiT's linear patch projection and no pretraining it stayed at chance on SynthFER
    (0.14 after 10 epochs, 0.23 after 40, 20% label noise); with the stem, 0.35 after 10 and 0.54 after 20 at
    lr 5e-4 (benchmarks/relabel_quality.py --preset mvt_tiny --functions none, measured 2026-11-24)."""
    return MVTConfig(input_size=64, patch=8, dim=96, depth=4, heads=3, mlp_ratio=2.0, mgn_depth=2, pool="avg",
                     patch_stem="conv")


def load_trained(path, map_location="cpu") -> nn.Module:
    """Rebuild a model from a ferlab training checkpoint (`checkpoint.pt`, or the directory holding it).

    The state dict holds every weight; checkpoints written before weight files left the architecture config name
    them among the config's fields, and those written before the input normalisation moved to the weight families
    (ferlab.pretrained) hold input_mean and input_std: those names are dropped here.
    """
    import os

    import torch

    from ferlab.models.weights import WeightsError

    path = os.path.join(path, "checkpoint.pt") if os.path.isdir(path) else path
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such checkpoint") from None
    if not isinstance(state, dict) or not {"preset", "model_config", "model"} <= set(state):
        raise WeightsError(f"{path}: not a ferlab training checkpoint (needs preset, model_config and model)")
    if state["preset"] not in _PRESETS:
        raise WeightsError(f"{path}: preset {state['preset']!r} is not registered here; known: {list_models()}")
    make_cfg, model_cls = _PRESETS[state["preset"]]
    saved = {k: tuple(v) if isinstance(v, list) else v for k, v in state["model_config"].items()
             if not k.endswith("_weights") and k not in RETIRED}
    model = model_cls(type(make_cfg())(**saved))
    model.load_state_dict(state["model"], strict=True)
    return model.eval()
