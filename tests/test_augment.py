"""Per-epoch transforms (ferlab.data.augment) and the soft-label losses, against their definitions."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ferlab.config import TrainConfig
from ferlab.data import augment as A
from ferlab.train.loop import loss_fn


def _batch(n=64, s=32, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8), "label": np.arange(n) % 4,
            "id": np.arange(n), A.SEED_COLUMN: rng.random(n)}


def test_rows_travel_with_their_labels_and_seed_column_is_dropped():
    b = _batch()
    out = A.epoch_batch(dict(b), recipe="none")
    assert A.SEED_COLUMN not in out and sorted(out["id"].tolist()) == list(range(64))
    assert out["id"].tolist() != list(range(64))  # permuted
    assert all(np.array_equal(b["image"][i], img) and b["label"][i] == lab
               for i, img, lab in zip(out["id"], out["image"], out["label"]))


@pytest.mark.parametrize("recipe", A.RECIPES)
def test_same_seed_column_same_epoch(recipe):
    a, b = A.epoch_batch(_batch(), recipe), A.epoch_batch(_batch(), recipe)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    other = _batch()
    other[A.SEED_COLUMN] = np.random.default_rng(9).random(64)
    c = A.epoch_batch(other, recipe)
    assert not np.array_equal(a["id"], c["id"])
    if recipe != "none":
        assert a["image"].shape == c["image"].shape and a["image"].dtype == np.uint8


def test_repeat_factors_follow_the_lvis_rule_and_full_balance():
    counts = [900, 90, 10]  # shares 0.9, 0.09, 0.01
    r = A.repeat_factors(counts, "repeat", threshold=0.15)
    assert r == pytest.approx([1.0, math.sqrt(0.15 / 0.09), math.sqrt(15.0)])
    assert A.repeat_factors(counts, "full") == pytest.approx([1.0, 10.0, 90.0])
    assert A.repeat_factors(counts, "none").tolist() == [1, 1, 1]
    assert A.repeat_factors([5, 0], "full").tolist() == [1.0, 0.0]  # an empty class stays empty


def test_repetition_matches_the_factors_in_expectation():
    n = 20000
    rng = np.random.default_rng(1)
    b = {"image": np.zeros((n, 2, 2, 3), np.uint8), "label": rng.integers(0, 2, n), A.SEED_COLUMN: rng.random(n)}
    out = A.epoch_batch(b, "none", factors=[1.0, 2.5])
    got = np.bincount(out["label"], minlength=2) / np.bincount(b["label"], minlength=2)
    assert got[0] == 1.0  # an integer factor is exact
    assert abs(got[1] - 2.5) < 4 * math.sqrt(0.25 / (n / 2))  # stochastic rounding: 2 or 3 copies, mean 2.5


def test_erasing_hits_half_the_images_with_torchvisions_areas():
    x = np.full((4000, 32, 32, 3), 7, np.uint8)
    out = A._erase(x, np.random.default_rng(0))
    erased = (out == A.ERASE_VALUE).all(-1)  # (N, S, S)
    frac = erased.mean((1, 2))
    hit = frac > 0
    assert abs(hit.mean() - A.ERASE_P) < 4 * math.sqrt(0.25 / 4000)
    assert frac[hit].min() >= 0.005 and frac[hit].max() <= 0.34  # 2-33% of the area, after rounding the sides
    assert (out[~hit] == 7).all()


def test_rotation_and_crop_are_the_identity_at_zero(monkeypatch):
    monkeypatch.setattr(A, "ROTATION_DEG", 0.0)
    monkeypatch.setattr(A, "CROP_MIN", 1.0)
    x = _batch(8)["image"]
    assert np.array_equal(A._rotate_crop(x, np.random.default_rng(0)), x)


def test_rotation_moves_a_dot_around_the_centre(monkeypatch):
    x = np.zeros((200, 33, 33, 3), np.uint8)
    x[:, 16, 28] = 255  # 12 pixels right of the centre
    monkeypatch.setattr(A, "CROP_MIN", 1.0)
    out = A._rotate_crop(x, np.random.default_rng(0)).max(-1)
    ys, xs = np.unravel_index(out.reshape(200, -1).argmax(1), (33, 33))
    radius = np.hypot(ys - 16, xs - 16)
    assert (abs(radius - 12) <= 1.5).all()  # stays on its circle
    angles = np.degrees(np.arctan2(ys - 16, xs - 16))
    assert abs(angles).max() <= A.ROTATION_DEG + 5 and angles.std() > 3  # within +-10 degrees, and it varies


def test_colour_jitter_is_the_identity_at_zero_and_keeps_grey_grey(monkeypatch):
    x = _batch(8)["image"]
    monkeypatch.setattr(A, "JITTER", 0.0)
    assert np.abs(A._jitter(x, np.random.default_rng(0)).astype(int) - x).max() <= 1
    monkeypatch.setattr(A, "JITTER", 0.4)
    grey = np.repeat(x[..., :1], 3, axis=-1)
    out = A._jitter(grey, np.random.default_rng(0)).astype(int)
    assert np.abs(out[..., 0] - out[..., 1]).max() <= 1  # saturation has nothing to act on


def test_soft_losses_reduce_to_cross_entropy_on_one_hot_targets():
    torch.manual_seed(0)
    logits, y = torch.randn(16, 8), torch.randint(8, (16,))
    one_hot = F.one_hot(y, 8).float()
    ce = F.cross_entropy(logits, y)
    for mode in ("probability", "crossentropy", "multi_target"):
        assert torch.allclose(loss_fn(logits, y, one_hot, TrainConfig(label_mode=mode)), ce, atol=1e-6)
    # multi-target: the loss takes the better of two accepted classes, cross-entropy against the mix does not
    soft = torch.zeros(1, 8)
    soft[0, :2] = 0.5
    logits = torch.tensor([[5.0, -5.0, 0, 0, 0, 0, 0, 0]])
    mt = loss_fn(logits, None, soft, TrainConfig(label_mode="multi_target"))
    assert torch.allclose(mt, -torch.log(0.5 * logits.softmax(1)[0, 0]))
    xe = loss_fn(logits, None, soft, TrainConfig(label_mode="crossentropy"))
    assert xe > mt + 3


def test_probability_mode_draws_labels_from_the_distribution():
    torch.manual_seed(0)
    soft = torch.tensor([[0.7, 0.3]]).repeat(4000, 1)
    logits = torch.tensor([[0.0, 10.0]]).repeat(4000, 1)  # loss ~10 for class 0 and ~0 for class 1
    loss = loss_fn(logits, None, soft, TrainConfig(label_mode="probability"))
    assert abs(loss.item() / 10.0 - 0.7) < 0.03


def test_train_config_names_bad_choices():
    with pytest.raises(ValueError, match="augment='rotate'"):
        TrainConfig(augment="rotate")
    with pytest.raises(ValueError, match="balance_threshold=0"):
        TrainConfig(balance_threshold=0)
