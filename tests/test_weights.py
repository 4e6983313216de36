"""Weights from local files: face.evoLVe's IR-50 layout and timm's ViT layout, strict, with named errors."""

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from ferlab.models import create_model
from ferlab.models.ir50 import IRStem
from ferlab.models.weights import WeightsError, read_state_dict


@pytest.fixture(scope="module")
def evolve_ir50(tmp_path_factory):
    """A checkpoint with face.evoLVe's IR-50 keys and shapes (all 24 units + output_layer), random values."""
    torch.manual_seed(0)
    sd = IRStem(4).state_dict()
    sd["output_layer.0.weight"] = torch.ones(512)  # the embedding head face.evoLVe saves too
    sd = {k: (v + torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    path = tmp_path_factory.mktemp("w") / "backbone_ir50_ms1m_epoch120.pth"
    torch.save(sd, path)
    return path, sd


@pytest.mark.parametrize("stage,units", [(2, 7), (3, 21), (4, 24)])
def test_ir50_checkpoint_loads_at_every_stage_cut(evolve_ir50, stage, units):
    path, sd = evolve_ir50
    m = create_model("transfer_paper", stem_stage=stage, depth=1, pretrained={"stem": str(path)})
    own = m.stem.state_dict()
    assert all(torch.equal(own[k], sd[k]) for k in own)
    assert "output_layer.0.weight" in m.unused_weights
    assert sum(k.startswith(f"body.{units}.") for k in m.unused_weights) == (0 if units == 24 else
                                                                           sum(k.startswith(f"body.{units}.") for k in sd))


def _vit_file(tmp_path, wrap, **kw):
    torch.manual_seed(1)
    vit = VisionTransformer(img_size=224, patch_size=16, **kw)
    sd = vit.state_dict()
    obj = {"model": sd} if wrap == "model" else {"state_dict": {f"module.{k}": v for k, v in sd.items()}} \
        if wrap == "module" else sd
    path = tmp_path / f"vit_{wrap}.pth"
    torch.save(obj, path)
    return path, sd


@pytest.mark.parametrize("wrap", ["plain", "model", "module"])
@pytest.mark.parametrize("stage,tokens", [(2, 784), (3, 196), (4, 49)])
def test_timm_vit_loads_and_pos_embed_is_resampled(tmp_path, wrap, stage, tokens):
    dims = dict(embed_dim=128, depth=2, num_heads=4, mlp_ratio=2.0, qkv_bias=False)
    path, sd = _vit_file(tmp_path, wrap, **dims)
    m = create_model("transfer_tiny", input_size=112, stem_stage=stage, pretrained={"encoder": str(path)})
    assert m.pos_embed.shape == (1, tokens + 1, 128)
    enc = m.encoder.state_dict()
    assert torch.equal(enc["blocks.1.attn.qkv.weight"], sd["blocks.1.attn.qkv.weight"])
    assert torch.equal(enc["norm.weight"], sd["norm.weight"])
    assert torch.equal(m.cls_token, sd["cls_token"])
    assert torch.equal(m.pos_embed[:, 0], sd["pos_embed"][:, 0])  # the class token's position is not resampled
    if stage == 3:
        assert torch.allclose(m.pos_embed, sd["pos_embed"])  # 14x14 -> 14x14 is the identity
    assert {"head.weight", "patch_embed.proj.weight"} <= set(m.unused_weights)
    assert m.head.weight.shape == (7, 128)


def test_wrong_architecture_names_the_file_and_keys(tmp_path):
    path, _ = _vit_file(tmp_path, "plain", embed_dim=64, depth=2, num_heads=4, mlp_ratio=2.0, qkv_bias=True)
    with pytest.raises(WeightsError) as e:
        create_model("transfer_tiny", input_size=112, pretrained={"encoder": str(path)})
    msg = str(e.value)
    assert str(path) in msg and "unexpected blocks.0.attn.qkv.bias" in msg
    assert "mis-shaped" in msg and "blocks.0.attn.proj.weight: file (64, 64) vs model (128, 128)" in msg
    with pytest.raises(WeightsError, match=r"does not fit the IR stem.*missing body.0.res_layer.0.bias.*unexpected blocks"):
        create_model("transfer_tiny", pretrained={"stem": str(path)})


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "notes.pth"
    bad.write_text("hello")
    with pytest.raises(WeightsError, match=f"{bad}: not a PyTorch checkpoint"):
        read_state_dict(bad)
    with pytest.raises(WeightsError, match="no such weight file"):
        read_state_dict(tmp_path / "missing.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(WeightsError, match="holds no state dict"):
        read_state_dict(tmp_path / "list.pth")


def test_paper_preset_loads_full_size_files(evolve_ir50, tmp_path):
    """The real shapes: face.evoLVe's whole IR-50 and the legacy ViT-Small file (768 dims, 8 blocks, 8 heads,
    MLP ratio 3, no qkv bias, 14x14 patches + class token) into transfer_paper, then forward and backward."""
    stem_path, stem_sd = evolve_ir50
    vit_path, vit_sd = _vit_file(tmp_path, "plain", embed_dim=768, depth=8, num_heads=8, mlp_ratio=3.0,
                                 qkv_bias=False)
    assert vit_sd["pos_embed"].shape == (1, 197, 768)
    m = create_model("transfer_paper", pretrained={"stem": str(stem_path), "encoder": str(vit_path)})
    assert torch.equal(m.encoder.state_dict()["blocks.7.mlp.fc1.weight"], vit_sd["blocks.7.mlp.fc1.weight"])
    assert torch.equal(m.stem.state_dict()["body.20.res_layer.3.weight"], stem_sd["body.20.res_layer.3.weight"])
    assert torch.equal(m.pos_embed, vit_sd["pos_embed"])  # stage 3 at 112: 14x14, the file's own grid
    out = m(torch.randn(2, 3, 112, 112))
    out.sum().backward()
    assert out.shape == (2, 7) and m.proj.weight.grad is not None


def test_every_weight_family_is_written_once_and_sets_the_input_normalisation():
    """ferlab.pretrained holds each family's facts once: every model takes its files by family key, its input
    normalisation is its input family's (a white face is (1 - mean) / std once normalised, from scratch too), and a
    study's weight flags name families its models take."""
    from ferlab.models import _PRESETS, model_config
    from ferlab.pretrained import FAMILIES
    from ferlab.studies import STUDIES
    from ferlab.train.step import to_input

    for name, (_, cls) in _PRESETS.items():
        cfg = model_config(name)
        assert set(cls.PRETRAINED) <= set(FAMILIES) and cfg.input_weights in cls.PRETRAINED, name
        family = FAMILIES[cfg.input_weights]
        white = to_input(torch.full((1, 8, 8, 3), 255, dtype=torch.uint8), cfg)[0, :, 0, 0]
        assert torch.allclose(white, (1 - torch.tensor(family.mean)) / torch.tensor(family.std)), name
    for study in STUDIES.values():
        takes = {k for p in study.presets for k in _PRESETS[p][1].PRETRAINED}
        assert set(study.weight_files) <= takes, study.name
    assert FAMILIES["deit"].mean == (0.485, 0.456, 0.406) and FAMILIES["stem"].std == (0.5, 0.5, 0.5)
