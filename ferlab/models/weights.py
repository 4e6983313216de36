"""Pretrained weights from local files or the sweep's storage (a URI; nothing is downloaded from a hub): face.evoLVe's
IR-50 for the stem and any timm-named ViT checkpoint (the legacy ViT-Small file among them) for TransFER's encoder.

Loading is strict: a missing, unexpected or mis-shaped key is an error that names the file and the keys. Keys that
are legitimately unused (face.evoLVe's `output_layer`, units past the stage cut, a ViT's patch embedding and
ImageNet head) are returned in a report, never dropped silently.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ferlab import storage


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


def load_stem(stem: nn.Module, path) -> list[str]:
    """Load face.evoLVe's IR checkpoint into an IRStem cut at any stage; returns the keys left unused."""
    sd = read_state_dict(path)
    n_units = len(stem.body)
    keep, unused = {}, []
    for k, v in sd.items():
        m = re.match(r"body\.(\d+)\.", k)
        if k.startswith("input_layer.") or (m and int(m.group(1)) < n_units):
            keep[k] = v
        elif k.startswith("output_layer.") or (m and int(m.group(1)) >= n_units):
            unused.append(k)  # the embedding head and the units past the stage cut
        else:
            keep[k] = v  # anything else is unexpected, and _strict_copy names it
    _strict_copy(stem, keep, path, f"IR stem ({n_units} units)")
    return unused


def load_encoder(model: nn.Module, path) -> list[str]:
    """Load a timm-named ViT checkpoint into TransFER's encoder, class token and position embedding.

    The position embedding is resampled (timm's bicubic resampling) from the checkpoint's patch grid to the token
    grid of the chosen stem stage: 14x14 -> 28x28 / 14x14 / 7x7 for stage 2 / 3 / 4 at 112x112 input. Returns the
    keys left unused (patch embedding, ImageNet head, pre-logits).
    """
    from timm.layers import resample_abs_pos_embed

    sd = read_state_dict(path)
    enc, unused = {}, []
    for k, v in sd.items():
        if k.startswith(("blocks.", "norm.")):
            enc[k] = v
        elif k.startswith(("patch_embed.", "head.", "pre_logits.", "fc_norm.")):
            unused.append(k)
        elif k not in ("cls_token", "pos_embed"):
            enc[k] = v  # unexpected: named by _strict_copy
    _strict_copy(model.encoder, enc, path, f"encoder ({len(model.encoder.blocks)} blocks)")
    for name in ("cls_token", "pos_embed"):
        if name not in sd:
            raise WeightsError(f"{path}: missing {name}")
    grid = model.cfg.grid
    pos = resample_abs_pos_embed(sd["pos_embed"].float(), [grid, grid], num_prefix_tokens=1)
    for name, value in (("cls_token", sd["cls_token"]), ("pos_embed", pos)):
        own = getattr(model, name)
        if value.shape != own.shape:
            raise WeightsError(f"{path}: {name} is {tuple(sd[name].shape)}, the model needs {tuple(own.shape)}")
        with torch.no_grad():
            own.copy_(value)
    return unused


def _deit_state(path, grid: int) -> tuple[dict, list[str]]:
    """A DeiT/ViT file's state dict with the position embedding resampled to `grid` x `grid` patches."""
    from timm.layers import resample_abs_pos_embed

    sd = dict(read_state_dict(path))
    if "pos_embed" not in sd:
        raise WeightsError(f"{path}: missing pos_embed (not a timm ViT/DeiT file)")
    sd["pos_embed"] = resample_abs_pos_embed(sd["pos_embed"].float(), [grid, grid], num_prefix_tokens=1)
    unused = [k for k in sd if k.startswith(("head.", "head_dist.", "dist_token", "pre_logits.", "fc_norm."))]
    if any(k.startswith(("head_dist.", "dist_token")) for k in sd):
        raise WeightsError(f"{path}: a distilled DeiT (dist_token, head_dist); use deit_small_patch16_224")
    return {k: v for k, v in sd.items() if k not in unused}, unused


def load_deit(vit: nn.Module, path) -> list[str]:
    """DeiT-S weights into a timm VisionTransformer of the same shape; the head stays sized for the class count."""
    sd, unused = _deit_state(path, vit.patch_embed.grid_size[0])
    own = vit.state_dict()
    sd |= {k: own[k] for k in own if k.startswith("head.")}
    _strict_copy(vit, sd, path, f"DeiT ({len(vit.blocks)} blocks, {vit.embed_dim} dims)")
    return unused


def load_deit_into_mgn(mgn: nn.Module, path) -> list[str]:
    """MVT section 4.2: the MGN starts from DeiT-S's patch embedding, position embedding (patch part) and first
    blocks. Returns the keys left unused (the later blocks, class token, final norm, head)."""
    sd, unused = _deit_state(path, mgn.cfg.grid)
    return unused + vit_into_mgn(mgn, sd, path)


def vit_into_mgn(mgn: nn.Module, sd: dict, source) -> list[str]:
    """A ViT state dict of the MGN's width and grid (a DeiT file's, or a discriminator's) into the MGN: its patch
    embedding, the patch part of its position embedding and its first `mgn_depth` blocks; the MGN's own layers (norm,
    to_value) are kept. Returns the keys not taken."""
    n = len(mgn.blocks)
    take, rest = {}, []
    for k, v in sd.items():
        m = re.match(r"blocks\.(\d+)\.", k)
        if k.startswith("patch_embed.") or (m and int(m.group(1)) < n):
            take[k] = v
        elif k == "pos_embed":
            take[k] = v[:, 1:]
        else:
            rest.append(k)
    own = mgn.state_dict()
    take |= {k: own[k] for k in own if k.startswith(("norm.", "to_value."))}  # the MGN's own, new layers
    _strict_copy(mgn, take, source, f"MGN ({n} DeiT blocks)")
    return rest


def load_mgn(mgn: nn.Module, path) -> None:
    """A trained MGN (`mgn.pt` from ferlab's MGN stage), strictly."""
    _strict_copy(mgn, read_state_dict(path), path, "MGN")
