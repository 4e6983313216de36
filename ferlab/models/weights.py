"""Pretrained weights from local files or the sweep's storage (a URI; nothing is downloaded from a hub), one loader for
every family of ferlab.pretrained: `load(family, target, file)`.

The family says what the file is (its keys no model takes, whether it holds a position embedding); the target says
which of the other keys it takes, by its shape: an IR stem the units up to its stage cut, TransFER the encoder blocks
with the class token and position embedding, a DeiT-shaped ViT everything but the head, the MGN the patch embedding
and its first blocks (or a whole trained MGN). Loading is strict: a missing, unexpected or mis-shaped key is an error
that names the file and the keys. Keys that are legitimately unused (face.evoLVe's `output_layer`, units past the
stage cut, a ViT's patch embedding and ImageNet head) are returned in a report, never dropped silently.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ferlab import storage
from ferlab.pretrained import MGN, PretrainedCfg


class WeightsError(ValueError):
    """A weight file that does not fit; the message names the file and the keys."""


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """torch.load(weights_only=True), then unwrap `model` / `state_dict` / `module` wrappers and `module.` prefixes."""
    try:
        obj = torch.load(storage.open_binary(path), map_location="cpu", weights_only=True)  # a file or a URI
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such weight file") from None
    except Exception as e:  # torch.load raises many types for a file that is not a checkpoint (KeyError included)
        raise WeightsError(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
    for wrapper in ("model", "state_dict", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: holds no state dict (found {type(obj).__name__})")
    return {re.sub(r"^module\.", "", k): v for k, v in obj.items()}


def _strict_copy(target: nn.Module, source: dict, path, what: str) -> None:
    own = target.state_dict()
    missing = sorted(set(own) - set(source))
    unexpected = sorted(set(source) - set(own))
    shapes = sorted(f"{k}: file {tuple(source[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(source) if source[k].shape != own[k].shape)
    problems = [f"missing {_few(missing)}" if missing else "", f"unexpected {_few(unexpected)}" if unexpected else "",
                f"mis-shaped {_few(shapes)}" if shapes else ""]
    problems = [p for p in problems if p]
    if problems:
        raise WeightsError(f"{path}: does not fit the {what}: " + "; ".join(problems))
    target.load_state_dict(source, strict=True)


def _few(keys, n=6) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def load(family: PretrainedCfg, target: nn.Module, source, name: str | None = None) -> list[str]:
    """Load a file of `family` (or a state dict already read: `source` a dict, `name` what it is) into `target`
    strictly; returns the file's keys left unused (the family's skipped keys and what the target does not take)."""
    sd = dict(source) if isinstance(source, dict) else read_state_dict(source)
    path = name or source
    unused = [k for k in sd if k.startswith(family.skip)]
    sd = {k: v for k, v in sd.items() if not k.startswith(family.skip)}
    if family.pos_embed and "pos_embed" not in sd:
        raise WeightsError(f"{path}: missing pos_embed (not a timm ViT/DeiT file)")
    take = _TAKES[type(target).__name__]
    placed, rest, what = take(sd, target, family, path)
    _strict_copy(target, placed, path, what)
    return unused + rest


class TransFEREncoder:
    """The part of TransFER that a ViT file fills, under the file's own key names (so errors name the file's keys):
    the encoder's blocks and norm, the class token and the position embedding."""

    OWN = ("cls_token", "pos_embed")  # TransFER's own parameters; the rest lives under `encoder.`

    def __init__(self, model: nn.Module):
        self.model = model

    def state_dict(self) -> dict:
        return {k.removeprefix("encoder."): v for k, v in self.model.state_dict().items()
                if k.startswith("encoder.") or k in self.OWN}

    def load_state_dict(self, sd: dict, strict: bool = True) -> None:
        self.model.load_state_dict({k if k in self.OWN else f"encoder.{k}": v for k, v in sd.items()}, strict=False)


def _resampled(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """A ViT position embedding (class token first) resampled from the file's patch grid to `grid` x `grid`
    (timm's bicubic resampling; the file's own grid is returned unchanged)."""
    from timm.layers import resample_abs_pos_embed

    return resample_abs_pos_embed(pos_embed.float(), [grid, grid], num_prefix_tokens=1)


def _stem_keys(sd, stem, family, path):
    """face.evoLVe's IR checkpoint into an IRStem cut at any stage: the units past the cut are not taken."""
    n_units = len(stem.body)
    past = [k for k in sd if (m := re.match(r"body\.(\d+)\.", k)) and int(m.group(1)) >= n_units]
    return {k: v for k, v in sd.items() if k not in past}, past, f"IR stem ({n_units} units)"


def _encoder_keys(sd, part, family, path):
    """A timm-named ViT into TransFER's encoder, class token and position embedding, the position embedding
    resampled to the stem stage's token grid (14x14 -> 28x28 / 14x14 / 7x7 for stage 2 / 3 / 4 at 112x112)."""
    model = part.model
    return sd | {"pos_embed": _resampled(sd["pos_embed"], model.cfg.grid)}, [], \
        f"encoder ({len(model.encoder.blocks)} blocks)"


def _vit_keys(sd, vit, family, path):
    """DeiT-S into a timm VisionTransformer of the same shape (MVT's classifier, the MGN stage's discriminator); the
    head stays the model's, sized for the class count."""
    if any(k.startswith(("head_dist.", "dist_token")) for k in sd):
        raise WeightsError(f"{path}: a distilled DeiT (dist_token, head_dist); use deit_small_patch16_224")
    own = vit.state_dict()
    placed = sd | {"pos_embed": _resampled(sd["pos_embed"], vit.patch_embed.grid_size[0])}
    return placed | {k: own[k] for k in own if k.startswith("head.")}, [], \
        f"DeiT ({len(vit.blocks)} blocks, {vit.embed_dim} dims)"


def _mgn_keys(sd, mgn, family, path):
    """Into the MGN: a trained MGN file whole; else (MVT section 4.2: the MGN starts from DeiT-S, "the first 6
    blocks") a ViT's patch embedding, the patch part of its position embedding and its first `mgn_depth` blocks, the
    MGN's own new layers (norm, to_value) kept; the ViT's other keys are not taken."""
    n = len(mgn.blocks)
    if family is MGN:
        return sd, [], "MGN"
    placed, rest = {}, []
    for k, v in sd.items():
        m = re.match(r"blocks\.(\d+)\.", k)
        if k.startswith("patch_embed.") or (m and int(m.group(1)) < n):
            placed[k] = v
        elif k == "pos_embed":
            placed[k] = _resampled(v, mgn.cfg.grid)[:, 1:]
        else:
            rest.append(k)
    own = mgn.state_dict()
    return placed | {k: own[k] for k in own if k.startswith(("norm.", "to_value."))}, rest, f"MGN ({n} DeiT blocks)"


# Which keys of a file each kind of target takes, by the target's class (the models import this module, so their
# classes are named here rather than imported)
_TAKES = {"IRStem": _stem_keys, "TransFEREncoder": _encoder_keys, "VisionTransformer": _vit_keys,
          "MaskGenerator": _mgn_keys}
