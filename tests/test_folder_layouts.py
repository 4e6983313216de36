"""Image folders in the layouts researchers have (class/image, split/class/image, flat files with codes, with
subjects), and the splits carved when a layout lacks them: stratified, subject-disjoint, seeded, identical images
kept together; k-fold assignments; an unrecognisable folder named with what it holds; the real FERPlus test images
as a class/image copy and a flat-name copy."""

from __future__ import annotations

import csv
import os
from collections import Counter

import numpy as np
import pytest

import fixtures_layouts as fx
from ferlab.data.sources import PrepareError, read_source
from ferlab.data.sources.folder import CK_GROUP, JAFFE_GROUP, JAFFE_LABEL
from ferlab.data.splits import kfold

CK = {"anger": 40, "happy": 60, "surprise": 30, "sadness": 20}  # class folder -> images


def ck_like(root, subjects=10, named=True):
    """ROOT/<class>/S<subject>_<seq>_<frame>.png, each subject in every class, plus a text file and a stray;
    `named=False`: the same faces under names that carry no subject (IMG_<n>.png)."""
    n = 0
    for cls, count in CK.items():
        for i in range(count):
            name = f"S{i % subjects:03d}_{i:03d}_0001.png" if named else f"IMG_{n + 1:04d}.png"
            fx.save(os.path.join(root, cls, name), fx.face(n := n + 1, 16))
    (root / "anger" / "notes.txt").write_text("not an image")
    return root


def test_class_image_layout_carves_stratified_val_and_test(tmp_path):
    lst = read_source("folder", ck_like(tmp_path, named=False), val_fraction=0.1, test_fraction=0.2, split_seed=0)
    assert lst.info["subjects"].startswith("unknown")  # no subject in the names: image by image
    assert lst.info["layout"] == "class" and not lst.problems
    assert set(lst.info["splits"]) == {"val", "test"} and "seed 0" in lst.info["splits"]["val"]
    per = Counter((s.split, lst.classes[s.label]) for s in lst.samples)
    names = {"anger": "anger", "happy": "happiness", "surprise": "surprise", "sadness": "sadness"}
    for folder, count in CK.items():
        test = count * 0.2
        assert abs(per[("test", names[folder])] - test) <= 1, (folder, per)
        assert abs(per[("val", names[folder])] - (count - per[("test", names[folder])]) * 0.1) <= 1, (folder, per)
    assert lst.eval_split == "val"


def test_subjects_never_span_two_splits_and_seeds_reproduce(tmp_path):
    root = ck_like(tmp_path)

    def carve(seed):
        lst = read_source("folder", root, group_from_name=CK_GROUP, val_fraction=0.2, test_fraction=0.2,
                          split_seed=seed)
        return {s.id: (s.split, s.group) for s in lst.samples}

    a = carve(0)
    by_subject = {}
    for split, group in a.values():
        by_subject.setdefault(group, set()).add(split)
    assert len(by_subject) == 10 and all(len(v) == 1 for v in by_subject.values())
    assert {v for s in by_subject.values() for v in s} == {"train", "val", "test"}
    assert carve(0) == a and carve(1) != a


@pytest.mark.parametrize("naming", ["ck", "jaffe"])
def test_known_subject_codes_keep_each_subject_out_of_train_by_default(tmp_path, naming):
    """CK+ and JAFFE are evaluated subject-independently: prepared as they ship (CK+'s S###_ names, JAFFE's codes),
    without --group-from-name, no val or test subject appears in train, and the manifest says why. Broken once
    (no recognised naming): the CK+ folder put every test subject in train as well."""
    if naming == "ck":
        root, kw = ck_like(tmp_path), {}
    else:
        root, kw = tmp_path, {"label_from_name": JAFFE_LABEL}
        for i, (subject, code) in enumerate((s, c) for s in ("KA", "KL", "KM", "KR", "MK", "NA", "NM", "TM")
                                             for c in ("AN", "HA", "NE", "SU")):
            fx.save(os.path.join(tmp_path, f"{subject}.{code}{i % 3 + 1}.{i}.tiff"), fx.face(i, 16))
    lst = read_source("folder", root, val_fraction=0.2, test_fraction=0.2, split_seed=0, **kw)
    assert ("CK+" if naming == "ck" else "JAFFE") in lst.info["subjects"]
    subjects = {split: {s.group for s in lst.samples if s.split == split} for split in ("train", "val", "test")}
    assert subjects["test"] and subjects["val"] and None not in subjects["train"]
    assert not (subjects["test"] | subjects["val"]) & subjects["train"], subjects


def test_unknown_subjects_keep_near_identical_images_together(tmp_path):
    """No subject codes: copies of one face resized or re-encoded (as neighbouring video frames are near-identical)
    share an 8x8 difference hash and land in one split; the manifest says the split may not be
    subject-independent."""
    from PIL import Image

    for i in range(40):
        fx.save(os.path.join(tmp_path, "happy", f"IMG_{i:03d}.png"), fx.face(i, 32))
    base = fx.face(1000, 32)
    for j in range(6):  # six near-identical frames: resized and saved as JPEG
        img = Image.fromarray(base).resize((32 + 4 * j, 32 + 4 * j))
        os.makedirs(tmp_path / "anger", exist_ok=True)
        img.save(tmp_path / "anger" / f"FRAME_{j}.jpg", quality=90)
    for i in range(30):
        fx.save(os.path.join(tmp_path, "anger", f"IMG_{i:03d}.png"), fx.face(500 + i, 32))
    lst = read_source("folder", tmp_path, val_fraction=0.2, test_fraction=0.2, split_seed=0)
    assert "may not be subject-independent" in lst.info["subjects"]
    frames = {s.split for s in lst.samples if "FRAME_" in s.id}
    assert len(frames) == 1, frames


def test_flat_jaffe_names_with_codes_and_subjects(tmp_path):
    pairs = [(s, c) for s in ("KA", "KL", "KM", "KR") for c in ("AN", "HA", "NE", "SU")]
    for i, (subject, code) in enumerate(pairs):
        fx.save(os.path.join(tmp_path, f"{subject}.{code}{i % 3 + 1}.{i}.tiff"), fx.face(i, 16))
    fx.save(os.path.join(tmp_path, "README.png"), fx.face(99, 16))  # no code: a problem, not a silent drop
    lst = read_source("folder", tmp_path, label_from_name=JAFFE_LABEL, group_from_name=JAFFE_GROUP,
                      val_fraction=0.25, test_fraction=0.25)
    assert lst.info["layout"] == "flat" and len(lst.samples) == 16
    assert Counter(lst.classes[s.label] for s in lst.samples) == {"anger": 4, "happiness": 4, "neutral": 4,
                                                                   "surprise": 4}
    assert [p.kind for p in lst.problems] == ["unknown_class"] and "README.png" in lst.problems[0].where
    assert {s.group for s in lst.samples} == {"KA", "KL", "KM", "KR"}


def test_fer2013_like_split_layout_gets_a_val_carved_from_train(tmp_path):
    for split, n in (("train", 50), ("test", 10)):
        for cls in ("angry", "happy"):
            for i in range(n):
                fx.save(os.path.join(tmp_path, split, cls, f"{cls}{i}.png"), fx.face(hash((split, cls, i)) % 999, 8))
    lst = read_source("folder", tmp_path)
    per = Counter(s.split for s in lst.samples)
    assert per == {"train": 90, "val": 10, "test": 20} and lst.eval_split == "val"
    assert lst.info["splits"] == {"val": "carved from train (10%, seed 0, stratified by class, identical images "
                                         "kept together)"}


def test_identical_images_stay_in_one_split(tmp_path):
    for i in range(40):
        fx.save(os.path.join(tmp_path, "happy", f"a{i}.png"), fx.face(i % 10, 8))  # each picture four times
    lst = read_source("folder", tmp_path, val_fraction=0.25, test_fraction=0.25)
    by_pixels = {}
    for s in lst.samples:
        by_pixels.setdefault(int(s.id[len("happy/a"):-4]) % 10, set()).add(s.split)
    assert all(len(v) == 1 for v in by_pixels.values())


def test_kfold_covers_every_image_once_and_keeps_subjects(tmp_path):
    lst = read_source("folder", ck_like(tmp_path), group_from_name=CK_GROUP, val_fraction=0, test_fraction=0)
    folds = kfold(lst.samples, 5, seed=0)
    assert len(folds) == len(lst.samples) and set(folds) == set(range(5))
    subject_folds = {}
    for s, f in zip(lst.samples, folds):
        subject_folds.setdefault(s.group, set()).add(f)
    assert all(len(v) == 1 for v in subject_folds.values())


def test_unrecognisable_folder_names_what_it_holds(tmp_path):
    (tmp_path / "misc").mkdir()
    (tmp_path / "misc" / "a.csv").write_text("x")
    fx.save(os.path.join(tmp_path, "misc", "b.png"), fx.face(1, 8))
    with pytest.raises(PrepareError, match=r"no image layout recognised \(tried split/class/image.*found 1 folders "
                                           r"\(misc\) and 1 \.csv, 1 \.png"):
        read_source("folder", tmp_path)
    with pytest.raises(PrepareError, match="needs a group"):
        read_source("folder", tmp_path, label_from_name="[A-Z]+")


def _majority_test_labels(root):
    """FERPlus's majority rule on the test split's label.csv: {file name: class index of BASIC8}."""
    out = {}
    with open(os.path.join(root, "FER2013Test", "label.csv")) as f:
        for row in csv.reader(f):
            votes = np.array([float(v) for v in row[2:12]])
            votes[votes <= 1] = 0
            top = int(votes.argmax())
            if votes.max() > 0.5 * votes.sum() and top < 8:
                out[row[0]] = top
    return out


@pytest.mark.parametrize("layout", ["class", "flat"])
def test_real_ferplus_test_images_as_a_folder(ferplus_root, tmp_path, layout):
    from ferlab.data.labels import BASIC8

    labels = _majority_test_labels(ferplus_root)
    for name, label in labels.items():  # symlinks: a copy in the layout without copying the data
        target = (tmp_path / BASIC8[label] / name) if layout == "class" else (tmp_path / f"{BASIC8[label]}-{name}")
        target.parent.mkdir(exist_ok=True)
        os.symlink(os.path.join(ferplus_root, "FER2013Test", name), target)
    lst = read_source("folder", tmp_path, label_from_name=None if layout == "class" else r"^(?P<label>[a-z]+)-",
                      val_fraction=0, test_fraction=0)
    assert len(lst.samples) == len(labels) == 3137 and not lst.problems
    assert Counter(BASIC8[s.label] for s in lst.samples) == Counter(BASIC8[v] for v in labels.values())
