"""MVT's mask generation network learns the paper's direction: LOW Mp where the expression is, so that the classifier,
keeping 1 - Mp, keeps it (issue 12). Checked on a toy task whose truth is known, with the stage's own step
(`mgn_step`: Eqs. 1-4 and the alternation), and the SynthFER mask-quality metric on hand-made inputs.

Broken once locally to see these fail: the discriminator shown x * (1 - Mp) with random masks removing round(mN)
patches (the code before the fix) keeps 0.82-0.88 of the informative patches after 300 steps (0.77 after 600)."""

import torch

from ferlab.models.mvt import MaskGenerator, MVTConfig, discriminator
from ferlab.pretrained import normalisation
from ferlab.studies.mvt_mask_quality import nuisance_hits, patch_share
from ferlab.studies.mvt_mgn import mgn_step

INFORMATIVE = [5, 10]  # of the 4 x 4 patch grid: the only patches that carry the label
_I = torch.arange(8)
# The label is a shape (which survives scaling, as an expression does), not a brightness.
TEMPLATES = torch.stack([
    (_I[:, None] % 2 * 2 - 1).expand(8, 8),  # horizontal stripes
    (_I[None, :] % 2 * 2 - 1).expand(8, 8),  # vertical stripes
    (_I[:, None] + _I[None, :]) % 2 * 2 - 1,  # checkerboard
    (_I[:, None] // 4 + _I[None, :] // 4) % 2 * 2 - 1,  # quadrants
]).float()


def toy_batch(g: torch.Generator, n: int = 64):
    y = torch.randint(0, len(TEMPLATES), (n,), generator=g)
    x = 0.5 * torch.randn(n, 3, 32, 32, generator=g)  # (B, 3, 32, 32): noise everywhere
    for i in INFORMATIVE:
        r, c = divmod(i, 4)
        x[:, :, 8 * r:8 * r + 8, 8 * c:8 * c + 8] += TEMPLATES[y][:, None]
    return x, y


def test_mgn_learns_low_mp_on_the_expression_and_the_classifier_keeps_it():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    cfg = MVTConfig(input_size=32, patch=8, dim=32, depth=2, heads=2, mlp_ratio=2.0, mgn_depth=1, num_classes=4,
                    pool="avg")
    mgn, disc = MaskGenerator(cfg), discriminator(cfg)
    opt_g, opt_d = (torch.optim.AdamW(mgn.parameters(), lr=1e-3), torch.optim.AdamW(disc.parameters(), lr=1e-3))
    m = 0.25
    for _ in range(300):
        mgn_step(mgn, disc, opt_g, opt_d, *toy_batch(g), m)
    x, _ = toy_batch(g, 256)
    with torch.no_grad():
        masked, mp = mgn.eval()(x)  # the classifier stage's view: the pixels times 1 - Mp (removed = black)
    others = [i for i in range(16) if i not in INFORMATIVE]
    rank = mp.argsort(1).argsort(1).float()  # 0 = the lowest Mp of the image
    assert rank[:, INFORMATIVE].mean() < 1.0, "the informative patches must have the LOWEST Mp"
    kept = 1 - mp[:, INFORMATIVE]
    assert kept.mean() >= 0.95, f"the classifier keeps only {kept.mean():.3f} of the informative patches"
    assert abs(mp.mean().item() - m) < 0.05  # the area term holds the mask at m (Eq. 4)
    assert mp[:, others].mean() > 5 * mp[:, INFORMATIVE].mean()
    mean, std = normalisation(mgn.cfg)
    black = -torch.tensor(mean)[:, None, None] / torch.tensor(std)[:, None, None]
    k = kept[:, 0, None, None, None]
    assert torch.allclose(masked[:, :, 8:16, 8:16], x[:, :, 8:16, 8:16] * k + black * (1 - k), atol=1e-5)


def test_patch_share_and_nuisance_hits_by_hand():
    mask = torch.zeros(1, 4, 4)
    mask[0, :2, :2] = 1  # patch 0 all nuisance
    mask[0, 0, 2] = 1  # patch 1: a quarter
    share = patch_share(mask, 2)
    assert share.tolist() == [[1.0, 0.25, 0.0, 0.0]]
    mp = torch.tensor([[0.9, 0.1, 0.8, 0.2]])  # top half by Mp: patches 0 and 2
    hit, chance, n = nuisance_hits(mp, share, m=0.5)
    assert (hit, chance, n) == (0.5, 1.25 / 4, 1)
    hit, _, _ = nuisance_hits(mp, share, m=0.25)  # top quarter: patch 0 only
    assert hit == 1.0


def test_attention_mass_by_hand():
    from ferlab.train.metrics import attention_mass

    maps = torch.tensor([[[3.0, 1.0], [0.0, 0.0]]])  # (1, 2, 2): 3/4 of the mass on the top-left cell
    occ = torch.zeros(1, 4, 4, dtype=torch.uint8)
    occ[0, :2, :2] = 1  # the top-left quarter is an occluder
    bg = torch.zeros(1, 4, 4, dtype=torch.uint8)
    bg[0, 2:, :] = 1  # the bottom half is background
    r = attention_mass(maps, occ, bg)
    assert r["mass_occluder"] == 0.75 and r["mass_face"] == 0.25 and r["mass_background"] == 0.0
    assert (r["area_occluder"], r["area_face"], r["area_background"]) == (0.25, 0.25, 0.5)
    uniform = attention_mass(torch.ones(1, 2, 2), occ, bg)
    assert uniform["mass_occluder"] == 0.25 and abs(uniform["spread"] - 1.0) < 1e-6


def test_warm_start_gives_the_discriminator_expressions_and_the_mgn_its_first_blocks():
    """mgn_warm_start (the CPU stand-in for DeiT-S weights): the discriminator, trained on the full images, tells the
    toy's classes apart before the GAN stage, and the MGN starts from its patch embedding, position embedding
    (patches) and first block. Off, a stored MGN's key is what it was before the option existed.
    Broken once locally to see this fail: the copy into the MGN left out (the MGN's first block stays random)."""
    from ferlab.studies.mvt_mgn import MGNStage, warm_start
    from ferlab.studies.mvt_mgn_store import mgn_config, mgn_key

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    cfg = MVTConfig(input_size=32, patch=8, dim=32, depth=2, heads=2, mlp_ratio=2.0, mgn_depth=1, num_classes=4,
                    pool="avg")
    mgn, disc = MaskGenerator(cfg), discriminator(cfg)
    acc = warm_start(mgn, disc, 3, 1e-3, lambda e: (toy_batch(g) for _ in range(60)))
    x, y = toy_batch(g, 256)
    with torch.no_grad():
        held_out = (disc.eval()(x).argmax(1) == y).float().mean().item()
    assert acc > 0.9 and held_out > 0.9, (acc, held_out)  # chance is 0.25
    own, theirs = mgn.state_dict(), disc.state_dict()
    for k in ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.0.mlp.fc2.weight"):
        assert torch.equal(own[k], theirs[k]), k
    assert torch.equal(own["pos_embed"], theirs["pos_embed"][:, 1:])
    assert "blocks.1.attn.qkv.weight" not in own  # mgn_depth = 1
    off = mgn_config(MGNStage("h", "mvt_tiny", 0.1, 0, 2))
    assert "warm_start" not in off and mgn_key(off) == mgn_key(mgn_config(MGNStage("h", "mvt_tiny", 0.1, 0, 2,
                                                                                    warm_start=0)))
    assert mgn_key(mgn_config(MGNStage("h", "mvt_tiny", 0.1, 0, 2, warm_start=3))) != mgn_key(off)
    # an MGN trained on a --limit run's first rows is never a full run's (and earlier keys stay valid)
    assert "limit" not in off and mgn_key(mgn_config(MGNStage("h", "mvt_tiny", 0.1, 0, 2, limit=500))) != mgn_key(off)


def test_the_mgn_stage_is_keyed_by_the_runs_rows_and_trains_at_the_recipes_batch():
    """MVT's hook hands the MGN stage the run's --limit (the rows it trains on) and the recipe's global batch (the
    paper's 32 per step; batch_size alone was the CPU default)."""
    from unittest import mock

    from ferlab.studies.mvt import before_trial
    from ferlab.tune.spec import SweepSpec

    spec = SweepSpec(data="x", study="mvt", limit=500, train={"global_batch": 48, "batch_size": 8})
    from ferlab.studies.base import TrialContext

    cfg = spec.trial_config({"study": {"mask_ratio": 0.1}})
    with mock.patch("ferlab.studies.mvt_mgn_store.ensure_mgn", return_value="mgn.pt") as ensure, \
            mock.patch("ferlab.studies.mvt_mgn_store.mgn_metrics", return_value={}):
        cfg, _ = before_trial(cfg, TrialContext(spec=spec, data_hash="h", datasets={}, gpus=0))
    assert cfg.pretrained["mgn"] == "mgn.pt" and cfg.model["use_mgn"]
    stage = ensure.call_args.args[1]
    assert stage.limit == 500 and stage.batch_size == 48
