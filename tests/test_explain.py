"""TransFER.explain: the data behind the pictures (LANet maps, aggregated map, attention rollout), and rebuilding a
trained model from its checkpoint."""

import pytest
import torch

from ferlab.models import create_model, load_trained
from ferlab.models.transfer import attention_rollout
from ferlab.models.weights import WeightsError


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_explain_matches_forward_and_aggregates_by_max(pool):
    torch.manual_seed(0)
    m = create_model("transfer_tiny", branches=3, pool=pool).train()  # explain must not drop, even from train()
    x = torch.randn(4, 3, 64, 64)
    out = m.explain(x)
    assert m.training  # mode restored
    assert all(not blk.attn.keep_attn for blk in m.encoder.blocks)
    with torch.no_grad():
        ref = m.eval()(x)  # the fused attention kernel; explain computes the probabilities explicitly
    assert torch.allclose(out["logits"], ref, atol=1e-5)
    maps, agg = out["lanet_maps"], out["aggregated"]
    assert maps.shape == (4, 3, 8, 8) and agg.shape == (4, 8, 8)
    assert torch.equal(agg, maps.amax(1)) and (maps > 0).all() and (maps < 1).all()
    assert len(out["attention"]) == 2 and out["attention"][0].shape == (4, 4, 65, 65)
    assert torch.allclose(out["attention"][0].sum(-1), torch.ones(4, 4, 65))
    assert out["rollout"].shape == (4, 8, 8) and (out["rollout"] >= 0).all()
    assert (out["rollout"].sum((1, 2)) <= 1 + 1e-5).all()


def test_explain_without_local_cnns():
    out = create_model("transfer_tiny", branches=0).explain(torch.randn(2, 3, 64, 64))
    assert out["lanet_maps"] is None and out["aggregated"] is None and out["rollout"].shape == (2, 8, 8)


def test_rollout_by_hand():
    # Three tokens (class, patch 1, patch 2). Block 1: the class token attends only to patch 2, the patches to
    # themselves. Block 2: every token attends only to patch 1.
    a1 = torch.tensor([[0.0, 0, 1], [0, 1, 0], [0, 0, 1]])
    a2 = torch.tensor([[0.0, 1, 0], [0, 1, 0], [0, 1, 0]])
    r = attention_rollout([a1[None, None], a2[None, None]])[0]
    # With the residual: A1' row 0 = [.5, 0, .5]; A2' rows = [.5, .5, 0], [0, 1, 0], [0, .5, .5].
    # R[0] = A2'[0] @ A1' = .5 * [.5, 0, .5] + .5 * [0, 1, 0] = [.25, .5, .25].
    assert torch.allclose(r[0], torch.tensor([0.25, 0.5, 0.25]))
    assert torch.allclose(r.sum(-1), torch.ones(3))
    # Heads are averaged: two heads that disagree count half each.
    two = torch.stack([a1, torch.eye(3)])[None]
    assert torch.allclose(attention_rollout([two])[0, 0], torch.tensor([0.75, 0, 0.25]))


def test_load_trained_reads_checkpoints_that_name_weight_files(tmp_path):
    torch.manual_seed(0)
    m = create_model("transfer_tiny", branches=1)
    # an older checkpoint: a path in the config, and the input normalisation before it moved to ferlab.pretrained
    cfg = m.cfg.to_dict() | {"stem_weights": "/elsewhere/ir50.pth", "input_mean": [0.5] * 3, "input_std": [0.5] * 3}
    torch.save({"model": m.state_dict(), "preset": "transfer_tiny", "model_config": cfg, "epoch": 0},
               tmp_path / "checkpoint.pt")
    back = load_trained(tmp_path)
    assert back.cfg.branches == 1 and not back.training
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(back(x), m.eval()(x))
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="other.pt: not a ferlab training checkpoint"):
        load_trained(tmp_path / "other.pt")
