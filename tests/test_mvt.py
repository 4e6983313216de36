"""MVT against the paper's definitions: the MGN's mask, L_D and L_G (Eqs. 1-4), dynamic relabeling (Eq. 6)."""

import math

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from ferlab.config import TrainConfig
from ferlab.models import create_model, model_config
from ferlab.models.mvt import MaskGenerator, discriminator, random_patch_mask
from ferlab.models.weights import WeightsError
from ferlab.pretrained import normalisation
from ferlab.studies.mvt_mgn import discriminator_loss, generator_loss
from ferlab.train.relabel import LabelTable, relabel, threshold


def _tc(f: str, delta: float = 0.2, start: int = 10) -> TrainConfig:
    """Eq. 6's settings as the training loop gets them: f, delta, the start epoch (the curves' defaults)."""
    return TrainConfig(relabel=f, relabel_delta=delta, relabel_start=start)


def test_mask_is_one_minus_mp_spread_over_each_patch():
    cfg = model_config("mvt_tiny", mask_fill="mean")  # in normalised values: the mask itself is masked / x
    mgn = MaskGenerator(cfg).eval()
    x = torch.randn(2, 3, 64, 64)
    masked, mp = mgn(x)
    assert mp.shape == (2, 64) and (mp > 0).all() and (mp < 1).all()
    mask = masked / x  # (2, 3, 64, 64): one value per 8x8 patch, the same for all channels
    patch = mask.reshape(2, 3, 8, 8, 8, 8).permute(0, 2, 4, 1, 3, 5).reshape(2, 64, -1)
    assert torch.allclose(patch, patch[..., :1].expand_as(patch), atol=1e-5)
    assert torch.allclose(patch[..., 0], 1 - mp, atol=1e-5)  # patch (row i, col j) is token i * 8 + j


def test_removed_patches_are_black_as_the_paper_draws_them():
    """Fig. 2: "The black area represents the masked regions". By default the mask multiplies the pixels: a removed
    patch is black (0 in pixels, (0 - mean) / std once normalised), a kept one unchanged, and a half-kept one half
    as bright, in every channel; with mask_fill="mean" a removed patch is the weights' mean colour (0 normalised)."""
    from ferlab.train.step import to_input

    cfg = model_config("mvt_tiny")
    assert cfg.mask_fill == "black"
    mgn = MaskGenerator(cfg).eval()
    pixels = torch.randint(0, 256, (1, 64, 64, 3), dtype=torch.uint8)
    x = to_input(pixels, cfg)
    keep = torch.zeros(1, 64)
    keep[0, 0], keep[0, 1] = 1.0, 0.5  # patch 0 kept, patch 1 half, the rest removed
    out = mgn.apply(x, keep)
    mean, std = (torch.tensor(v)[:, None, None] for v in normalisation(cfg))
    back = (out[0] * std + mean) * 255.0  # the masked image in pixels, (3, 64, 64)
    src = pixels[0].permute(2, 0, 1).float()
    assert torch.allclose(back[:, :8, :8], src[:, :8, :8], atol=1e-3)  # kept
    assert torch.allclose(back[:, :8, 8:16], src[:, :8, 8:16] * 0.5, atol=1e-3)  # half as bright
    assert back[:, 8:, :].abs().max() < 1e-3  # black
    grey = MaskGenerator(model_config("mvt_tiny", mask_fill="mean")).eval().apply(x, keep)
    assert grey[0, :, 8:, :].abs().max() < 1e-6  # the mean colour: zero once normalised


def test_classifier_stage_freezes_the_mgn_and_the_switch_removes_it():
    m = create_model("mvt_tiny").train()
    assert not any(p.requires_grad for p in m.mgn.parameters()) and not m.mgn.training
    x = torch.randn(2, 3, 64, 64)
    m(x).sum().backward()
    assert all(p.grad is None for p in m.mgn.parameters())
    assert all(p.grad is not None for p in m.classifier.parameters())
    off = create_model("mvt_tiny", use_mgn=False).eval()
    assert off.mgn is None and torch.equal(off(x), off.classifier(x))  # Table 3's first column: the raw image


def test_random_masks_keep_m_of_the_patches():
    mp = random_patch_mask(500, 64, 0.2, "cpu")
    assert (mp.sum(1) == round(0.2 * 64)).all()
    assert abs(mp.mean(0) - 0.2).max() < 0.1  # every patch equally likely


def test_discriminator_loss_by_hand():
    gen, rand, y = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 0.0]]), torch.tensor([0])
    expected = -math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(2)
    assert discriminator_loss(gen, rand, y).item() == pytest.approx(expected)


def test_generator_loss_by_hand():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]]))
    mp = torch.tensor([[0.5, 0.3], [0.0, 0.0]])  # mean masked share 0.4 and 0
    total, variance, area = generator_loss(logits, mp, m=0.1)
    var0 = ((0.7 - 1 / 3) ** 2 + (0.2 - 1 / 3) ** 2 + (0.1 - 1 / 3) ** 2) / 2  # K - 1 = 2 (Eq. 3)
    assert variance.item() == pytest.approx(var0 / 2, rel=1e-5)  # the uniform row has variance 0
    assert area.item() == pytest.approx((0.3 + 0.1) / 2)  # |0.4 - 0.1| and |0 - 0.1|
    assert total.item() == pytest.approx(var0 / 2 + 0.2, rel=1e-5)


def test_generator_steps_move_the_mean_mask_toward_m_and_flatten_the_discriminator():
    """Both terms of L_G act: the mean of Mp moves to m (Eq. 4); and with m at the mask's own mean (the area term
    satisfied), D's softmax on x * Mp ends flatter than with the area term alone (Eqs. 2-3). Broken once locally:
    with the variance term deleted the last assertion fails. The equations on random inputs, with the mask applied to
    the normalised values (mask_fill="mean"): a black fill on noise puts one constant in every removed patch, which
    leaves a random discriminator little variance to remove. The default fill is trained in test_mgn_direction."""
    x = torch.randn(16, 3, 64, 64)

    def run(use_loss: bool, m: float = 0.1):
        torch.manual_seed(0)
        cfg = model_config("mvt_tiny", mask_fill="mean")
        mgn, disc = MaskGenerator(cfg), discriminator(cfg).eval()
        with torch.no_grad():  # a confident discriminator, so that there is a variance to remove
            disc.head.weight.mul_(50)
        opt = torch.optim.AdamW(mgn.parameters(), lr=1e-3)
        start = mgn.patch_values(x).mean().item()
        for _ in range(40):
            masked, mp = mgn.discriminator_view(x)
            total, _, area = generator_loss(disc(masked), mp, m=m)
            opt.zero_grad()
            (total if use_loss else area).backward()
            opt.step()
        with torch.no_grad():
            masked, mp = mgn.discriminator_view(x)
            return start, mp.mean().item(), generator_loss(disc(masked), mp, m=m)[1].item()

    start, end, _ = run(use_loss=True)
    assert abs(start - 0.5) < 0.15 and abs(end - 0.1) < abs(start - 0.1) / 3, (start, end)
    _, _, variance = run(use_loss=True, m=start)
    _, _, variance_area_only = run(use_loss=False, m=start)
    assert variance < 0.9 * variance_area_only, (variance, variance_area_only)


@pytest.mark.parametrize("f,p_gt,p_max,expected", [
    # threshold = f(P_gt) + 0.2; relabel iff P_max - P_gt > threshold
    ("constant", 0.3, 0.6, True),    # 0.3 > 0.2
    ("constant", 0.3, 0.45, False),  # 0.15
    ("linear", 0.3, 0.65, False),    # 0.35 vs 0.5
    ("linear", 0.1, 0.65, True),     # 0.55 vs 0.3
    ("quadratic", 0.3, 0.65, True),  # 0.35 vs 0.29
    ("quadratic", 0.5, 0.5, False),  # the label is already the top class
    ("sigmoid", 0.1, 0.5, True),     # 0.4 vs 0.2 + 0.095
    ("sigmoid", 0.4, 0.6, False),    # 0.2 vs 0.2 + 0.81
    # where Eq. 6 can fire the curves differ: P_gt 0.2, P_max 0.6 (0.4) relabels under the quadratic (0.24) only
    ("quadratic", 0.2, 0.6, True),
    ("linear", 0.2, 0.59, False),    # 0.39 vs 0.4
    ("sigmoid", 0.2, 0.6, False),    # 0.4 vs 0.507
])
def test_relabel_truth_table(f, p_gt, p_max, expected):
    rest = 1 - p_gt - p_max
    probs = torch.tensor([[p_gt, p_max, rest]]) if p_max > p_gt else torch.tensor([[p_gt, rest, p_max]])
    new = relabel(probs, torch.tensor([0]), _tc(f))
    assert (new.item() != 0) == expected


def test_the_curves_differ_where_eq6_fires_and_quadratic_is_the_lower():
    """Eq. 6 fires only while 1 - 2 P_gt > f(P_gt) + delta. Over that range of each curve, the sigmoid lies above the
    quadratic by at least 0.05 from P_gt = 0.1 ("a lower threshold is more suitable for FERPlus", whose best f is
    the quadratic), and the curves' parameters are TrainConfig fields that reach the threshold."""
    from ferlab.config import TrainConfig

    p = torch.linspace(0.1, 0.4, 31)
    fires = {f: p[1 - 2 * p > threshold(p, _tc(f))] for f in ("linear", "quadratic", "sigmoid")}
    assert 0.2 < fires["sigmoid"].max() < fires["linear"].max() < fires["quadratic"].max() < 0.36
    q = fires["sigmoid"]
    assert ((threshold(q, _tc("sigmoid")) - threshold(q, _tc("quadratic"))) >= 0.05).all()
    tc = TrainConfig(relabel="sigmoid", relabel_centre=0.5, relabel_steepness=10.0, relabel_scale=0.5)
    at = torch.tensor([0.3])
    assert threshold(at, tc).item() == pytest.approx(0.2 + 0.5 * (0.1192 - 0.0067), abs=1e-3)
    with pytest.raises(ValueError, match="relabel_steepness"):
        TrainConfig(relabel_steepness=0)


def test_threshold_functions_are_nonnegative_increasing_from_delta():
    p = torch.linspace(0, 1, 101)
    for f in ("constant", "linear", "quadratic", "sigmoid"):
        t = threshold(p, _tc(f))
        assert t[0].item() == pytest.approx(0.2, abs=1e-3) and (t.diff() >= -1e-7).all()
    with pytest.raises(ValueError, match="relabel='cubic'"):
        _tc("cubic")


def test_relabels_persist_and_originals_are_kept():
    table = LabelTable()
    keys, given, clean = torch.tensor([10, 11, 12]), torch.tensor([0, 1, 2]), torch.tensor([1, 1, 2])
    assert table.labels(keys, given, clean).tolist() == [0, 1, 2]
    assert table.update(keys, torch.tensor([1, 1, 0])) == [(10, 1), (12, 0)]  # 10: fixed (noisy 0 -> clean 1); 12: broken
    # the next epoch gives the original labels again; the stored ones win
    assert table.labels(keys, given, clean).tolist() == [1, 1, 0]
    assert table.original == {10: 0, 11: 1, 12: 2}
    s = table.stats()
    assert s["relabeled"] == 2 and s["relabel_precision"] == 0.5 and s["relabel_recall"] == 1.0


def test_bad_knobs_are_named():
    with pytest.raises(ValueError, match="relabel_delta=-0.1 is outside its range"):
        TrainConfig(relabel="linear", relabel_delta=-0.1)
    with pytest.raises(ValueError, match="relabel='cubic'"):
        TrainConfig(relabel="cubic")
    with pytest.raises(ValueError, match="MVT input_size=60 is outside its range"):
        model_config("mvt_tiny", input_size=60)


def test_deit_file_loads_into_classifier_and_mgn(tmp_path):
    torch.manual_seed(0)
    deit = VisionTransformer(img_size=32, patch_size=8, embed_dim=96, depth=4, num_heads=3, mlp_ratio=2.0,
                             qkv_bias=True, num_classes=1000)  # a 4x4 grid: resampled to the model's 8x8
    torch.save({"model": deit.state_dict()}, tmp_path / "deit.pth")
    m = create_model("mvt_tiny", patch_stem="linear", pretrained={"deit": str(tmp_path / "deit.pth")})
    sd = deit.state_dict()
    assert torch.equal(m.classifier.blocks[3].attn.qkv.weight, sd["blocks.3.attn.qkv.weight"])
    assert torch.equal(m.mgn.blocks[1].mlp.fc2.weight, sd["blocks.1.mlp.fc2.weight"])
    assert m.classifier.pos_embed.shape == (1, 65, 96) and m.mgn.pos_embed.shape == (1, 64, 96)
    assert m.classifier.head.weight.shape == (7, 96) and "head.weight" in m.unused_weights
    bad = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=4, num_heads=4, qkv_bias=True)
    torch.save({"model": bad.state_dict()}, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match=r"bad.pth: does not fit the DeiT.*mis-shaped"):
        create_model("mvt_tiny", patch_stem="linear", pretrained={"deit": str(tmp_path / "bad.pth")})


def test_paper_preset_is_deit_small():
    m = create_model("mvt_paper", use_mgn=False)
    assert sum(p.numel() for p in m.classifier.parameters()) == 21_668_359  # DeiT-S with a 7-class head
    x = torch.randn(2, 3, 224, 224)
    out = m.eval()(x)
    assert out.shape == (2, 7) and not torch.allclose(out[0], out[1])  # the logits depend on the face
    assert [b.attn.num_heads for b in m.classifier.blocks] == [6] * 12 and m.classifier.patch_embed.num_patches == 196


class _Gathered:
    """Lockstep's exchange without a process group: every rank's object, as all_gather_object returns them."""

    def __init__(self, objects):
        self.world, self.objects = len(objects), objects

    def gather(self, value):
        # the decisions and rows of every rank; the later table digest is only this rank's (the ranks end one at a
        # time here: tests/test_paper_path.py compares the real ranks' tables)
        return self.objects if isinstance(value, tuple) else [value] * self.world


def _two_ranks_exchange(ranks):
    """Relabeler.end_epoch on every rank, each getting every rank's (decisions, rows trained) as Lockstep does."""
    exchange = _Gathered([(r.sent(rank), r.seen) for rank, r in enumerate(ranks)])
    return [r.end_epoch(exchange, rank=rank) for rank, r in enumerate(ranks)]


def test_relabels_exchanged_across_ranks_equal_one_process():
    """DDP: rows move between ranks from one epoch to the next. The decisions of each epoch, applied in (step, rank)
    order on every rank, must leave the table one process holds after the same decisions: a re-relabel by a lower
    rank (rank 1 makes row 2 a 5 in epoch 1, rank 0 makes it a 3 in epoch 2), a revert to the original label (row 4:
    1 -> 6 -> 1) and a first sight (rank 0 meets row 9 only after rank 1 relabeled it). Before the fix both ranks
    ended with 5 for row 2 and 6 for row 4."""
    from ferlab.train.relabel import Relabeler

    def onehot(cls):  # a confident prediction: relabels (delta 0.2, f constant) whenever it differs
        return torch.nn.functional.one_hot(torch.tensor(cls), 7).float()

    ranks = [Relabeler(_tc("constant", start=1)) for _ in range(2)]
    one = Relabeler(_tc("constant", start=1))

    def step(rank, keys, given, predicted, epoch):
        batch = {"key": torch.tensor(keys), "clean_label": torch.tensor(given)}
        for r in (ranks[rank], one):
            y = r.labels(batch, torch.tensor(given))
            r.step(batch, onehot(predicted), y, epoch)

    # epoch 1: rank 0 has rows 4 and 7; rank 1 has rows 2 and 9
    step(0, [4, 7], [1, 0], [6, 0], epoch=0)  # 4: 1 -> 6
    step(1, [2, 9], [0, 0], [5, 2], epoch=0)  # 2: 0 -> 5, 9: 0 -> 2
    _two_ranks_exchange(ranks)
    one.end_epoch()
    # epoch 2: the rows swap ranks
    step(0, [2, 9], [0, 0], [3, 2], epoch=1)  # 2: 5 -> 3 by the lower rank; 9 first met by rank 0, keeps 2
    step(1, [4, 7], [1, 0], [1, 0], epoch=1)  # 4: 6 -> 1, back to the original
    metrics = _two_ranks_exchange(ranks)
    one.end_epoch()

    assert one.table.current == {4: 1, 7: 0, 2: 3, 9: 2}
    for r in ranks:
        assert r.table.current == one.table.current and r.table.original == one.table.original
    assert metrics[0]["relabel_changed"] == 2 and metrics[0]["relabeled"] == 2  # 2 and 9 differ from the original
    assert ranks[0].merged == ranks[1].merged == [(0, 0, 2, 3), (0, 1, 4, 1)]


def test_a_row_on_two_ranks_in_one_epoch_is_refused():
    """A row trained by two ranks in one epoch (duplicate ids) would leave one rank training on a label the other
    had changed: refused, naming the row. Copies of a row on one rank (up-sampling) are one process's case: the
    later decision wins."""
    from ferlab.train.relabel import Relabeler

    probs = torch.nn.functional.one_hot(torch.tensor([3]), 7).float()
    batch = {"key": torch.tensor([8])}
    ranks = [Relabeler(_tc("constant", start=1)) for _ in range(2)]
    ranks[0].step(batch, probs, ranks[0].labels(batch, torch.tensor([0])), 0)  # rank 0: 0 -> 3
    ranks[1].step(batch, torch.zeros(1, 7), ranks[1].labels(batch, torch.tensor([0])), 0)  # rank 1: still 0
    with pytest.raises(RuntimeError, match=r"1 rows were trained by two ranks in one epoch \(8 \(ranks 0 and 1\)"):
        _two_ranks_exchange(ranks)
    one = Relabeler(_tc("constant", start=1))  # two copies of row 8 on one rank: the later step's decision stands
    one.step(batch, probs, one.labels(batch, torch.tensor([0])), 0)
    one.step(batch, probs.roll(1, 1), one.labels(batch, torch.tensor([0])), 0)
    assert _two_ranks_exchange([one, Relabeler(_tc("constant", start=1))])[0]["relabel_changed"] == 2
    assert one.table.current[8] == 4


def test_relabeling_starts_at_its_epoch():
    from ferlab.train.relabel import Relabeler

    r = Relabeler(_tc("constant", start=3))
    batch = {"key": torch.tensor([1])}
    y = r.labels(batch, torch.tensor([0]))
    probs = torch.tensor([[0.1, 0.9]])  # 0.8 > 0.2: relabel to 1 once relabeling has started
    r.step(batch, probs, y, epoch=1)  # the 2nd epoch: not yet
    assert r.labels(batch, torch.tensor([0])).tolist() == [0]
    r.step(batch, probs, y, epoch=2)  # the 3rd epoch (start=3, counted from 1 as SCN's "from epoch 10")
    assert r.labels(batch, torch.tensor([0])).tolist() == [1]
    assert r.end_epoch()["relabel_changed"] == 1


def test_ranks_whose_relabels_differ_after_the_merge_are_stopped():
    """The merge's own check: a rank whose relabels differ from another's after the epoch stops the trial (broken
    once, the check removed: passes no more)."""
    from ferlab.train.relabel import Relabeler

    class Disagreeing(_Gathered):
        def gather(self, value):
            return self.objects if isinstance(value, tuple) else [value, value + 1]

    r = Relabeler(_tc("constant", start=1))
    with pytest.raises(RuntimeError, match="the ranks' relabels differ after the epoch's merge"):
        r.end_epoch(Disagreeing([([], set()), ([], set())]), rank=0)
