"""Readers of each on-disk layout, on fixtures the tests write themselves (bad rows included), and alignment."""

import collections

import numpy as np
import pytest
from PIL import Image

import fixtures_layouts as fx
from ferlab.data.align import TEMPLATE_112, landmarks68_to_5, similarity, to_stored
from ferlab.data.sources import PrepareError, read_source
from ferlab.data.sources.ferplus import process_votes


def kinds(listing):
    return collections.Counter(p.kind for p in listing.problems)


def test_ferplus_label_csv(tmp_path):
    root = fx.ferplus(tmp_path)
    lst = read_source("ferplus", root)
    got = {s.id: (s.split, lst.classes[s.label]) for s in lst.samples}
    # the corrupt and the blank image are listed: the reader opens no image, prepare finds them
    assert got == {"FER2013Train/fer0000000.png": ("train", "happiness"),
                   "FER2013Train/fer0000005.png": ("train", "fear"),
                   "FER2013Train/fer0000006.png": ("train", "neutral"),
                   "FER2013Test/fer0000100.png": ("test", "contempt"),
                   "FER2013Test/fer0000101.png": ("test", "neutral")}
    assert kinds(lst) == {"malformed_line": 1, "missing_file": 1, "label_out_of_range": 1}
    assert {p.where.rsplit(":", 1)[1] for p in lst.problems} == {"3", "4", "5"}  # the label.csv lines
    assert all(p.where.startswith(str(tmp_path / "FER2013Train" / "label.csv")) for p in lst.problems)
    assert lst.excluded == {"unknown, non-face or no agreement (majority)": 1}
    seven = read_source("ferplus", root, num_classes=7)
    assert "FER2013Test/fer0000100.png" not in {s.id for s in seven.samples}
    assert seven.excluded["contempt (7 classes)"] == 1 and seven.classes[-1] == "fear"


def test_ferplus_modes_match_ferplus_rules():
    votes = [4, 0, 0, 1, 3, 2, 0, 0, 0, 0]  # FERPlus's first training row: single votes are dropped first
    assert process_votes(votes, "majority")[8] == 1.0  # 4 of 9 is no majority -> unknown
    assert process_votes(votes, "crossentropy")[:6] == pytest.approx([4 / 7, 0, 0, 0, 3 / 7, 0])
    assert process_votes(votes, "multi_target")[:6] == pytest.approx([4 / 7, 0, 0, 0, 3 / 7, 0])  # 2 < 30% of 9
    assert process_votes([0, 9, 1, 0, 0, 0, 0, 0, 0, 0], "majority")[1] == 1.0
    assert process_votes([3, 3, 0, 0, 0, 0, 0, 0, 4, 0], "probability")[8] == 1.0  # unknown leads: left out


def test_ferplus_soft_modes_keep_distributions(tmp_path):
    lst = read_source("ferplus", fx.ferplus(tmp_path), mode="crossentropy")
    s = {x.id: x for x in lst.samples}["FER2013Train/fer0000001.png"]  # no majority, but a soft target
    assert s.soft == pytest.approx([4 / 7, 0, 0, 0, 3 / 7, 0, 0, 0]) and s.label == 0


def test_ferplus_fer2013new(tmp_path):
    lst = read_source("ferplus", fx.ferplus(tmp_path), labels="fer2013new.csv")
    assert {s.id for s in lst.samples} == {"FER2013Train/fer0000000.png", "FER2013Test/fer0000100.png"}
    assert lst.excluded == {"no image name (fer2013new.csv)": 1}


def test_rafdb(tmp_path):
    root = fx.rafdb(tmp_path)
    lst = read_source("rafdb", root, extra_splits={"test_occlusion": str(tmp_path / "occlusion_list.txt")})
    got = {s.id: (s.split, lst.classes[s.label]) for s in lst.samples}
    assert got == {"train_00001": ("train", "happiness"), "train_00002": ("train", "neutral"),
                   "test_00001": ("test", "surprise"), "test_00003": ("test", "disgust"),
                   "test_00004": ("test", "sadness"), "test_occlusion/test_00001": ("test_occlusion", "surprise")}
    assert kinds(lst) == {"label_out_of_range": 1, "malformed_line": 1, "missing_file": 2}
    assert lst.eval_split == "test" and all(s.aligned for s in lst.samples)
    with pytest.raises(PrepareError, match=r"list_patition_label.txt:3: label out of range: label 9"):
        read_source("rafdb", root, strict=True)
    with pytest.raises(PrepareError, match="list_patition_label.txt: missing"):
        read_source("rafdb", tmp_path / "nowhere")


def test_affectnet_csv(tmp_path):
    lst = read_source("affectnet", fx.affectnet_csv(tmp_path))
    got = {s.id: (s.split, lst.classes[s.label]) for s in lst.samples}
    assert got == {"1/a.jpg": ("train", "happiness"), "1/b.jpg": ("train", "anger"),
                   "1/corrupt.jpg": ("train", "fear"), "2/v.jpg": ("test", "neutral")}
    assert kinds(lst) == {"label_out_of_range": 1, "malformed_line": 1, "missing_file": 1}
    assert lst.excluded == {"code 8: None": 1}
    by_id = {s.id: s for s in lst.samples}
    assert len(by_id["1/a.jpg"].landmarks) == 5 and by_id["1/b.jpg"].landmarks is None
    assert by_id["1/b.jpg"].box == (20.0, 20.0, 120.0, 120.0)
    assert lst.eval_split == "test" and lst.info["headline_metric"] == "mean class accuracy"


def test_affectnet_npy(tmp_path):
    lst = read_source("affectnet", fx.affectnet_npy(tmp_path))
    assert [(s.id, lst.classes[s.label]) for s in lst.samples] == [("train_set/1", "surprise")]
    assert kinds(lst) == {"missing_file": 1}
    assert lst.excluded == {"code 10: Non-Face": 1, "code 7: contempt (7 classes)": 1}
    eight = read_source("affectnet", tmp_path, num_classes=8)
    assert {s.id for s in eight.samples} == {"train_set/1", "val_set/4"}


def test_image_folder(tmp_path):
    root = fx.folder(tmp_path)
    lst = read_source("folder", root)
    got = {s.id: (s.split, lst.classes[s.label]) for s in lst.samples}
    assert got == {"train/happy/a.png": ("train", "happiness"), "train/angry/b.png": ("train", "anger"),
                   "test/sad/d.png": ("test", "sadness"), "test/sad/blank.png": ("test", "sadness"),
                   "test/neutral/broken.jpg": ("test", "neutral")}
    assert kinds(lst) == {"unknown_class": 1} and "weird" in lst.problems[0].detail
    mapped = read_source("folder", root, class_map={"weird": "contempt"})
    assert len(mapped.classes) == 8 and not mapped.problems
    with pytest.raises(PrepareError, match="not basic expressions"):
        read_source("folder", root, class_map={"weird": "smug"})


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.random((5, 2)) * 100
    theta, scale, shift = 0.3, 1.7, np.array([5.0, -3.0])
    rot = scale * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    m = similarity(src, src @ rot.T + shift)
    assert np.allclose(m[:, :2], rot) and np.allclose(m[:, 2], shift)


@pytest.mark.parametrize("size", [112, 224])
def test_five_point_alignment_puts_the_landmarks_on_the_template(size):
    img, pts = fx.landmark_face()
    out = np.asarray(to_stored(Image.fromarray(img), size, landmarks=pts.tolist()))[..., 0]
    for x, y in TEMPLATE_112 * size / 112:
        yy, xx = int(round(y)), int(round(x))
        assert out[yy - 2:yy + 3, xx - 2:xx + 3].max() > 100  # a dot landed here
    assert (out > 100).mean() < 0.05  # and nowhere much else


def test_68_to_5_points():
    pts = np.zeros((68, 2))
    pts[36:42] = [10, 20]
    pts[42:48] = [30, 20]
    pts[30], pts[48], pts[54] = [20, 30], [12, 40], [28, 40]
    assert landmarks68_to_5(pts).tolist() == [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]]


def test_box_crop_and_plain_resize():
    img = Image.fromarray(fx.face(0, 100))
    assert to_stored(img, 112).size == (112, 112)
    crop = np.asarray(to_stored(img, 50, box=(25, 25, 50, 50)))
    assert crop.shape == (50, 50, 3)
    assert np.asarray(to_stored(img, 100)).tobytes() == np.asarray(img).tobytes()  # already the size: untouched


def test_prepare_cli_bad_input_is_one_line_before_ray(tmp_path):
    import subprocess
    import sys

    def run(*args):
        return subprocess.run([sys.executable, "-m", "ferlab.cli", "prepare", *args], capture_output=True,
                              text=True, timeout=120)

    r = run("rafdb", "--root", str(tmp_path), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and r.stderr.strip().endswith("list_patition_label.txt: missing (is "
                                                          f"{tmp_path} a RAF-DB basic folder?)"), r.stderr
    fx.rafdb(tmp_path)
    r = run("rafdb", "--root", str(tmp_path), "--out", str(tmp_path / "out"), "--strict")
    assert r.returncode == 2 and "list_patition_label.txt:3: label out of range" in r.stderr
    r = run("rafdb", "--root", str(tmp_path), "--out", str(tmp_path / "out"), "--mode", "majority")
    assert r.returncode == 2 and "--mode does not apply to rafdb" in r.stderr
    assert "Started a local Ray" not in r.stdout + r.stderr
    (tmp_path / "empty" / "nothing").mkdir(parents=True)  # a folder with no image: refused before Ray starts
    r = run("folder", "--root", str(tmp_path / "empty"), "--out", str(tmp_path / "out2"))
    assert r.returncode == 2 and "no image layout recognised" in r.stderr and "Ray" not in r.stdout + r.stderr
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("mode", ["majority", "probability", "crossentropy", "multi_target"])
def test_real_ferplus_evaluates_every_mode_on_the_majority_faces(ferplus_root, mode):
    """FERPlus's code reads validation and test in majority mode whatever the training mode: the same 3,191 / 3,137
    faces in every mode (before the fix, probability mode's test set had 3,507)."""
    from collections import Counter

    from ferlab.data.sources.ferplus import MULTI_TARGET_EPS, read

    listing = read(ferplus_root, mode=mode)
    counts = Counter(s.split for s in listing.samples)
    assert (counts["val"], counts["test"]) == (3191, 3137)
    if mode == "multi_target":  # the official target: 1 per accepted class, then (1 - eps) t + eps
        train = [s.soft for s in listing.samples if s.split == "train"]
        assert {round(v, 6) for t in train for v in t} == {round(MULTI_TARGET_EPS, 6), 1.0}
        assert any(sum(v > 0.5 for v in t) > 1 for t in train)  # faces with more than one accepted class


def test_affectnet_without_alignment_crops_the_box(tmp_path):
    """MVT 4.2: "we do not perform any extra face alignment": `--align none` stores the annotated box's crop, where
    the default aligns the same face by its landmarks; the manifest's source says which."""
    from dataclasses import asdict

    from ferlab.data.prepare import load_face

    root = fx.affectnet_csv(tmp_path)
    aligned, plain = (read_source("affectnet", root, **opts) for opts in ({}, {"align": "none"}))
    a = {s.id: s for s in aligned.samples}["1/a.jpg"]
    p = {s.id: s for s in plain.samples}["1/a.jpg"]
    assert a.landmarks is not None and p.landmarks is None and p.box == a.box and not p.aligned
    assert plain.info["alignment"].startswith("none:") and aligned.info["alignment"].startswith("landmarks:")
    by_box = load_face(asdict(p) | {"landmarks": None}, 64)[0]
    assert load_face(asdict(p), 64)[0] == by_box != load_face(asdict(a), 64)[0]
    with pytest.raises(PrepareError, match="alignment 'mtcnn'"):
        read_source("affectnet", root, align="mtcnn")
