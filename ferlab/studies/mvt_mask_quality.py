"""How well an MGN's mask finds what the classifier can do without, on SynthFER, which stores every face's
background and occluder: the share of the patches the MGN marks unimportant (highest Mp, the round(m N) the
classifier removes) that lie on background or occluder pixels, against the same share for random patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

QUALITY = ("mgn_nuisance_precision", "mgn_nuisance_chance")  # what mask_quality reports (a trials row keeps both)


def patch_share(mask: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, H, W) {0, 1} pixel mask -> (B, N): the share of each P x P patch that the mask covers."""
    return F.avg_pool2d(mask[:, None].float(), patch).flatten(1)


def nuisance_hits(mp: torch.Tensor, nuisance: torch.Tensor, m: float) -> tuple[float, float, int]:
    """How well Mp finds what the classifier can do without (SynthFER's background and occluder pixels).
    mp, nuisance: (B, N), nuisance = the share of each patch on background or occluder. Returns (sum over images of
    the mean nuisance share of the round(m N) patches with the highest Mp, the same for random patches (its
    expectation: the mean over all patches), images)."""
    k = max(1, int(round(m * mp.shape[1])))
    top = mp.topk(k, dim=1).indices
    return nuisance.gather(1, top).mean(1).sum().item(), nuisance.mean(1).sum().item(), len(mp)


@torch.no_grad()
def mask_quality(mgn, batches, m: float, device) -> dict:
    """On a split with ground-truth masks (decoded with `nuisance`): `mgn_nuisance_precision`, the share of the
    top-m-area patches by Mp that lie on background or occluder, and `mgn_nuisance_chance`, the same share for
    random patches. An MGN that learned the paper's direction is above chance."""
    from ferlab.train.step import to_input

    mgn.eval()
    hit = chance = n = 0
    for batch in batches:
        if "nuisance" not in batch:
            return {}
        mp = mgn.patch_values(to_input(batch["image"].to(device), mgn.cfg))
        h, c, b = nuisance_hits(mp, patch_share(batch["nuisance"].to(device), mgn.cfg.patch), m)
        hit, chance, n = hit + h, chance + c, n + b
    return dict(zip(QUALITY, (hit / n, chance / n))) if n else {}
