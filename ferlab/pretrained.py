"""The weight files the papers start from, one config per family (timm's PretrainedCfg habit): what the file is, the
input normalisation and size it was trained with, and the keys of it that no ferlab model takes.

A model's input normalisation is its input weights' (`normalisation(cfg)`), whether a file is loaded or the model
starts from scratch: a run with weights and one without see the same inputs. Plain data: importing this module loads
neither torch nor the models (the studies and every trial driver read it). The loader is ferlab.models.weights.load.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PretrainedCfg:
    key: str  # how an experiment names the file: pretrained.<key>, --<key>-weights
    file: str  # the file the paper starts from (its published name)
    about: str  # what it is and what takes it, one line (the flag's help)
    mean: tuple  # RGB in [0, 1] minus mean, over std: how the file's training inputs were normalised
    std: tuple
    input_size: int  # the face side it was trained at (a ViT's position embedding is resampled from its grid)
    # Key prefixes of the file that no ferlab model takes (heads, embedding layers the model builds itself): reported
    # as unused by every load, never an error. Which of the other keys a model takes is the model's shape (how many
    # stem units, how many MGN blocks): ferlab.models.weights.
    skip: tuple = ()
    pos_embed: bool = False  # holds a ViT position embedding, class token first: resampled to the model's grid


# TransFER section 4.1: "IR-50 ... pre-trained on Ms-Celeb-1M", face.evoLVe's checkpoint, trained on RGB in [-1, 1]
IR50 = PretrainedCfg(
    key="stem", file="backbone_ir50_ms1m_epoch120.pth", about="face.evoLVe's IR-50 (MS-Celeb-1M) for TransFER's stem",
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), input_size=112, skip=("output_layer.",))
# TransFER section 4.1: "ViT ... pre-trained on ImageNet"; the legacy timm ViT-Small (768 dims, 8 blocks, 8 heads,
# MLP ratio 3, no qkv bias), whose timm config normalised with 0.5 / 0.5
VIT_SMALL = PretrainedCfg(
    key="encoder", file="vit_small_p16_224-15ec54c9.pth",
    about="a timm-named ViT for TransFER's encoder, e.g. the legacy ViT-Small vit_small_p16_224-15ec54c9.pth",
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), input_size=224,
    skip=("patch_embed.", "head.", "pre_logits.", "fc_norm."), pos_embed=True)
# MVT section 4.2: classifier, MGN and discriminator start from ImageNet DeiT-S ({"model": state_dict})
DEIT_S = PretrainedCfg(
    key="deit", file="deit_small_patch16_224-cd65a155.pth",
    about="DeiT-S ({'model': state_dict}) for MVT's MGN, discriminator and classifier",
    mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=224, skip=("head.", "pre_logits.", "fc_norm."), pos_embed=True)
# ferlab's own: the MGN stage's mgn.pt, trained on MVT's inputs (so DeiT's normalisation) at the model's size
MGN = PretrainedCfg(
    key="mgn", file="mgn.pt", about="a trained MGN, written by ferlab's MGN stage",
    mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=0)  # 0: the model's own size (it was trained at it)

FAMILIES = {f.key: f for f in (IR50, VIT_SMALL, DEIT_S, MGN)}


def normalisation(cfg) -> tuple[tuple, tuple]:
    """(mean, std) of a model config's inputs: those of the weights its input layer starts from (the config class
    names them, `input_weights`); no config, or one that names no family (a test's small stand-in model), is
    0.5 / 0.5."""
    key = getattr(type(cfg), "input_weights", None)
    if key is None:
        return (0.5,) * 3, (0.5,) * 3
    family = FAMILIES[key]
    return family.mean, family.std
