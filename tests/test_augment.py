"""Per-epoch row order (ferlab.data.balance), the worker-side augmentation (ferlab.data.augment) and the soft-label
losses, against their definitions."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ferlab.config import TrainConfig
from ferlab.data import augment as A
from ferlab.data import balance as B
from ferlab.train.step import loss_fn


def _batch(n=64, s=32, seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8), "label": np.arange(n) % 4,
            "id": np.arange(n)}


def _images(n=8, s=32, seed=0):
    return torch.from_numpy(_batch(n, s, seed)["image"])


def _blocks(sizes=(40, 40, 30)):
    out, start = [], 0
    for n in sizes:
        b = _batch(n, 4, seed=start)
        b["id"] = np.arange(start, start + n)
        out.append({k: torch.from_numpy(v) for k, v in b.items()})
        start += n
    return out


def test_worker_batches_keep_rows_whole_cover_the_epoch_once_and_drop_the_last_partial_batch():
    blocks = _blocks()
    batches = list(B.worker_batches(blocks, 16, seed=0, epoch=0, rank=0))
    assert all(len(b["label"]) == 16 for b in batches) and len(batches) == 110 // 16  # rows carried across blocks
    ids = torch.cat([b["id"] for b in batches])
    assert len(set(ids.tolist())) == len(ids) == 96 and ids.tolist() != sorted(ids.tolist())  # once each, permuted
    rows = {int(i): (img, lab) for blk in blocks for i, img, lab in zip(blk["id"], blk["image"], blk["label"])}
    assert all(torch.equal(rows[int(i)][0], img) and rows[int(i)][1] == lab
               for b in batches for i, img, lab in zip(b["id"], b["image"], b["label"]))


def test_small_streamed_blocks_are_gathered_before_the_permutation():
    """A streamed split arrives in blocks of a few faces (sized to the object store): permuting each alone would
    leave every batch made of 1-2 neighbouring blocks. Gathered to min_rows first, a batch mixes rows from across
    the gathered blocks, and every row still comes once."""
    blocks = _blocks(sizes=(8,) * 12)  # 96 rows in blocks of 8

    def spread(min_rows):  # how many source blocks the rows of each 16-row batch come from, on average
        batches = list(B.worker_batches(iter(blocks), 16, seed=0, epoch=0, rank=0, min_rows=min_rows))
        ids = torch.cat([b["id"] for b in batches])
        assert sorted(ids.tolist()) == list(range(96))
        return np.mean([len(set((b["id"] // 8).tolist())) for b in batches])

    assert spread(1) <= 2.5  # each block permuted alone: a batch is two or three neighbouring blocks
    assert spread(96) >= 5  # one permutation over all 96 rows: a batch of 16 draws from many of the 12 blocks


def test_worker_batches_same_seed_and_epoch_same_order_other_epoch_other_order():
    def ids(**kw):
        return torch.cat([b["id"] for b in B.worker_batches(_blocks(), 16, **kw)]).tolist()

    a = ids(seed=0, epoch=2, rank=0)
    assert a == ids(seed=0, epoch=2, rank=0)
    for other in ({"seed": 1, "epoch": 2, "rank": 0}, {"seed": 0, "epoch": 3, "rank": 0},
                  {"seed": 0, "epoch": 2, "rank": 1}):
        assert a != ids(**other)


@pytest.mark.parametrize("recipe", A.RECIPES)
def test_same_batch_generator_same_augmentation_other_epoch_other(recipe):
    x = _images()
    a = A.augment_batch(x, recipe, A.batch_generator(0, 3, 0, 5, "cpu"))
    b = A.augment_batch(x, recipe, A.batch_generator(0, 3, 0, 5, "cpu"))
    assert a.dtype == torch.uint8 and a.shape == x.shape and torch.equal(a, b)
    if recipe != "none":
        for other in [(0, 4, 0, 5), (1, 3, 0, 5), (0, 3, 1, 5), (0, 3, 0, 6)]:  # epoch, seed, rank, step
            assert not torch.equal(a, A.augment_batch(x, recipe, A.batch_generator(*other, "cpu")))


def test_repeat_factors_follow_the_lvis_rule_and_full_balance():
    counts = [900, 90, 10]  # shares 0.9, 0.09, 0.01
    r = B.repeat_factors(counts, "repeat", threshold=0.15)
    assert r == pytest.approx([1.0, math.sqrt(0.15 / 0.09), math.sqrt(15.0)])
    assert B.repeat_factors(counts, "full") == pytest.approx([1.0, 10.0, 90.0])
    assert B.repeat_factors(counts, "none").tolist() == [1, 1, 1]
    assert B.repeat_factors([5, 0], "full").tolist() == [1.0, 0.0]  # an empty class stays empty


def test_repetition_matches_the_factors_in_expectation():
    n = 20000
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, n)
    idx = B.epoch_order(labels, [1.0, 2.5], np.random.default_rng(2))
    got = np.bincount(labels[idx], minlength=2) / np.bincount(labels, minlength=2)
    assert got[0] == 1.0  # an integer factor is exact
    assert abs(got[1] - 2.5) < 4 * math.sqrt(0.25 / (n / 2))  # stochastic rounding: 2 or 3 copies, mean 2.5
    counts = np.bincount(idx, minlength=n)
    assert set(counts[labels == 1].tolist()) == {2, 3}  # every image of the class: 2 or 3 copies


def test_erasing_hits_half_the_images_with_torchvisions_areas():
    x = torch.full((4000, 3, 32, 32), 7.0)
    out = A._erase(x, torch.Generator().manual_seed(0))
    erased = (out == A.ERASE_VALUE).all(1)  # (N, S, S)
    frac = erased.float().mean((1, 2))
    hit = frac > 0
    assert abs(hit.float().mean().item() - A.ERASE_P) < 4 * math.sqrt(0.25 / 4000)
    assert frac[hit].min() >= 0.005 and frac[hit].max() <= 0.34  # 2-33% of the area, after rounding the sides
    assert (out[~hit] == 7).all()
    rows, cols = erased.any(2), erased.any(1)  # a rectangle: its area is its height times its width
    assert torch.equal(erased.sum((1, 2)), rows.sum(1) * cols.sum(1))


def test_rotation_and_crop_are_the_identity_at_zero(monkeypatch):
    monkeypatch.setattr(A, "ROTATION_DEG", 0.0)
    monkeypatch.setattr(A, "CROP_MIN", 1.0)
    x = _images()
    out = A._rotate_crop(x.permute(0, 3, 1, 2).float(), torch.Generator().manual_seed(0))
    assert (out - x.permute(0, 3, 1, 2).float()).abs().max() < 1e-3


def test_rotation_moves_a_dot_around_the_centre(monkeypatch):
    x = torch.zeros(200, 3, 33, 33)
    x[:, :, 16, 28] = 255  # 12 pixels right of the centre
    monkeypatch.setattr(A, "CROP_MIN", 1.0)
    out = A._rotate_crop(x, torch.Generator().manual_seed(0)).amax(1)
    ys, xs = np.unravel_index(out.reshape(200, -1).argmax(1).numpy(), (33, 33))
    radius = np.hypot(ys - 16, xs - 16)
    assert (abs(radius - 12) <= 1.5).all()  # stays on its circle
    angles = np.degrees(np.arctan2(ys - 16, xs - 16))
    assert abs(angles).max() <= A.ROTATION_DEG + 5 and angles.std() > 3  # within +-10 degrees, and it varies


def test_crop_magnifies_towards_its_window(monkeypatch):
    monkeypatch.setattr(A, "ROTATION_DEG", 0.0)
    monkeypatch.setattr(A, "CROP_MIN", 0.5)
    x = torch.zeros(100, 3, 32, 32)
    x[:, :, 12:20, 12:20] = 255  # an 8x8 square in the middle
    area = (A._rotate_crop(x, torch.Generator().manual_seed(0)).amax(1) > 127).sum((1, 2)).float()
    assert area.min() >= 60 and area.max() > 100  # never smaller; a window of half the side makes it 4x larger


def test_flip_and_shift_move_pixels_as_they_should():
    x = torch.arange(8.0).repeat(4, 3, 8, 1)  # (4, 3, 8, 8): each row 0..7
    flipped = A._flip(x.repeat(8, 1, 1, 1), torch.Generator().manual_seed(0))
    kept = [torch.equal(f, x[0]) for f in flipped]
    assert all(k or torch.equal(f, x[0].flip(-1)) for k, f in zip(kept, flipped)) and 0 < sum(kept) < 32
    shifted = A._shift(x.repeat(8, 1, 1, 1), torch.Generator().manual_seed(1))
    assert shifted.shape == (32, 3, 8, 8)
    row = torch.nn.functional.pad(x[0, :1, :1], (A.SHIFT, A.SHIFT), mode="reflect")[0, 0]  # 4 3 2 1 0 1 .. 7 6 5 4
    windows = [row[d:d + 8] for d in range(2 * A.SHIFT + 1)]  # a shift by d - 4, reflected at the border
    moved = [next(d for d, w in enumerate(windows) if torch.equal(s[0, 0], w)) for s in shifted]
    assert all((s == s[0, 0]).all() for s in shifted)  # every row and channel moved alike
    assert len(set(moved)) >= 5  # the shifts vary


def test_colour_jitter_is_the_identity_at_zero_and_keeps_grey_grey(monkeypatch):
    x = _images().permute(0, 3, 1, 2).float()
    monkeypatch.setattr(A, "JITTER", 0.0)
    assert (A._jitter(x, torch.Generator().manual_seed(0)) - x).abs().max() < 1e-3
    monkeypatch.setattr(A, "JITTER", 0.4)
    grey = x[:, :1].repeat(1, 3, 1, 1)
    out = A._jitter(grey, torch.Generator().manual_seed(0))
    assert (out[:, 0] - out[:, 1]).abs().max() < 1e-3  # saturation has nothing to act on
    assert (out - grey).abs().max() > 10  # and brightness and contrast did act


def test_augmentation_runs_where_the_batch_is_and_keeps_its_layout():
    x = _images(4, 16)
    for recipe in A.RECIPES:
        out = A.augment_batch(x, recipe, torch.Generator().manual_seed(0))
        assert out.device == x.device and out.shape == (4, 16, 16, 3) and out.dtype == torch.uint8


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


def test_colour_jitter_scales_the_mean_by_brightness_and_the_spread_by_contrast():
    """On grey images (saturation has nothing to act on) away from the clamp: mean' = b mean, std' = c b std, with
    b and c the factors the generator draws (in the order _jitter draws them)."""
    g = torch.Generator().manual_seed(3)
    x = (100 + 40 * torch.rand(64, 1, 8, 8, generator=g)).repeat(1, 3, 1, 1)  # values 100-140
    out = A._jitter(x, torch.Generator().manual_seed(0))
    draws = torch.Generator().manual_seed(0)
    b, c = (A._rand(draws, 64, 1 - A.JITTER, 1 + A.JITTER, "cpu") for _ in range(2))
    assert torch.allclose(out.mean((1, 2, 3)), b * x.mean((1, 2, 3)), rtol=1e-4)
    assert torch.allclose(out.std((1, 2, 3)), c * b * x.std((1, 2, 3)), rtol=1e-4)


def test_a_data_set_streams_when_its_decoded_splits_need_more_than_half_the_object_store(monkeypatch):
    import ray

    from ferlab.data.pipeline import streams

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"object_store_memory": 1000})
    assert streams(500) == (False, 1000) and streams(501) == (True, 1000)
    assert streams(10, stream=True) == (True, 1000) and streams(10 ** 6, stream=False) == (False, 1000)
