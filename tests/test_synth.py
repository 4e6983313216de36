import numpy as np
import pytest

from ferlab.data.shards import open_shards
from ferlab.data.synth import CLASSES, SynthSpec, draw_sample


def test_deterministic_for_a_seed():
    spec = SynthSpec(size=64)
    a, b = draw_sample(spec, 7, 11), draw_sample(spec, 7, 11)
    assert np.array_equal(a["image"], b["image"]) and a["label"] == b["label"]
    c = draw_sample(spec, 8, 11)
    assert not np.array_equal(a["image"], c["image"])


def test_ground_truth_masks():
    spec = SynthSpec(size=112, occluder_prob=0.0)
    s = draw_sample(spec, 0, 0)
    assert s["image"].shape == (112, 112, 3) and s["image"].dtype == np.uint8
    assert not s["occ_mask"].any()  # no occluder asked for, none drawn
    bg = s["bg_mask"]
    assert bg[0, 0] and bg[-1, -1]  # corners are background
    assert not bg[56, 56]  # the centre is face
    assert 0.3 < bg.mean() < 0.8
    occluded = [draw_sample(SynthSpec(size=64, occluder_prob=1.0), 0, i)["occ_mask"].mean() for i in range(20)]
    assert all(m > 0 for m in occluded)


def test_label_noise_rate_and_clean_label():
    spec = SynthSpec(size=32, label_noise=0.3, clutter=0)
    samples = [draw_sample(spec, 1, i) for i in range(600)]
    flipped = np.mean([s["label"] != s["clean_label"] for s in samples])
    assert abs(flipped - 0.3) < 0.06  # binomial sd ~0.019
    assert all(0 <= s["label"] < len(CLASSES) for s in samples)
    clean = SynthSpec(size=32, label_noise=0.0)
    assert all(draw_sample(clean, 1, i)["label"] == draw_sample(clean, 1, i)["clean_label"] for i in range(50))


def test_class_is_carried_by_the_face():
    """The expression must be visible where the mouth is: there, the mean faces of two classes differ far more
    than two random halves of one class do (skin, background and noise average out; geometry does not)."""
    spec = SynthSpec(size=64, jitter=0.0, intensity=(1.0, 1.0), max_rotation=0.0, occluder_prob=0.0, clutter=0)
    by_class = {}
    for i in range(2100):
        s = draw_sample(spec, 2, i)
        mouth = s["image"].astype(float).mean(-1)[40:56, 20:44]
        by_class.setdefault(CLASSES[s["clean_label"]], []).append(mouth - np.median(mouth))  # minus skin tone
    happy, sad = np.array(by_class["happiness"]), np.array(by_class["sadness"])
    between = np.abs(happy.mean(0) - sad.mean(0)).mean()
    within = np.abs(happy[::2].mean(0) - happy[1::2].mean(0)).mean()
    assert between > 2 * within, (between, within)  # measured: ~13.7 against ~4.7


def test_bad_spec():
    with pytest.raises(ValueError, match="label_noise"):
        SynthSpec(label_noise=1.0)
    with pytest.raises(ValueError, match="size"):
        SynthSpec(size=8)


def test_make_synthfer_writes_shards(tiny_synth):
    shards = open_shards(tiny_synth, check_hash=True)
    assert shards.classes == list(CLASSES)
    assert shards.image_size == 64
    assert shards.count("train") == 160 and shards.count("val") == 20 and shards.count("test") == 20
    assert {"clean_label", "bg_mask", "occ_mask"} <= set(shards.manifest["columns"])
