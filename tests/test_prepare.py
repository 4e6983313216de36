"""`ferlab prepare` through a real local Ray: every fixture layout, bad files counted and listed, --strict, and
the real FERPlus copy against FERPlus's own majority rule, pixel for pixel."""

import csv
import io
import os

import numpy as np
import pytest
from PIL import Image

import fixtures_layouts as fx
from ferlab.data.prepare import prepare
from ferlab.data.shards import open_shards
from ferlab.data.sources import PrepareError

pytestmark = pytest.mark.slow


def _rows(shards, split):
    return shards.read(split).to_pylist()


def _problems_csv(out):
    with open(os.path.join(out, "problems.csv")) as f:
        return list(csv.DictReader(f))


def test_ferplus_fixture(ray_local, tmp_path):
    m = prepare("ferplus", fx.ferplus(tmp_path / "src"), tmp_path / "out", size=48, progress=False)
    assert {s: sum(c.values()) for s, c in m["counts"].items()} == {"train": 2, "test": 1}
    assert m["problems"]["counts"] == {"malformed_line": 1, "missing_file": 1, "label_out_of_range": 1,
                                       "unreadable_image": 1, "blank_image": 1}
    assert len(m["problems"]["items"]) == 5 and len(_problems_csv(tmp_path / "out")) == 5
    unreadable = [p for p in m["problems"]["items"] if p["kind"] == "unreadable_image"][0]
    assert unreadable["where"].endswith("FER2013Train/label.csv:6") and "fer0000005.png" in unreadable["detail"]
    assert m["excluded"] == {"unknown, non-face or no agreement (majority)": 1}
    shards = open_shards(tmp_path / "out", check_hash=True)
    row = {r["id"]: r for r in _rows(shards, "train")}["FER2013Train/fer0000000.png"]
    original = np.asarray(Image.open(tmp_path / "src" / "FER2013Train" / "fer0000000.png"))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(row["image"]))), original)  # lossless, 1 channel


def test_shards_go_to_a_bucket(ray_local, tmp_path, s3_server):
    """`ferlab prepare ... --out s3://...`: the shards, the manifest and problems.csv land in the bucket (a real
    S3-compatible server), and they read back as a local folder does, hash included."""
    from ferlab import storage

    out = storage.join(s3_server, "prepared", "ferplus")
    m = prepare("ferplus", fx.ferplus(tmp_path / "src"), out, size=48, progress=False)
    shards = open_shards(out, check_hash=True)
    assert shards.manifest["content_hash"] == m["content_hash"] and len(_rows(shards, "train")) == 2
    assert len(list(csv.DictReader(io.StringIO(storage.read_bytes(storage.join(out, "problems.csv")).decode())))) == 5


def test_strict_stops_at_the_first_bad_image(ray_local, tmp_path):
    root = fx.folder(tmp_path / "src")
    with pytest.raises(PrepareError, match=r"unknown class: class folder 'weird'"):
        prepare("folder", root, tmp_path / "out", strict=True, progress=False)
    with pytest.raises(PrepareError, match=r"broken.jpg: unreadable image"):
        prepare("folder", root, tmp_path / "out", strict=True, class_map={"weird": "contempt"}, progress=False)
    with pytest.raises(ValueError, match="manifest.json: missing"):
        open_shards(tmp_path / "out")  # nothing half-written is usable


@pytest.mark.parametrize("layout,source,options,counts,problems", [
    ("rafdb", "rafdb", {"extra_splits": "occ"}, {"train": 2, "test": 1, "test_occlusion": 1},
     {"label_out_of_range": 1, "malformed_line": 1, "missing_file": 2, "unreadable_image": 1, "blank_image": 1}),
    ("affectnet_csv", "affectnet", {}, {"train": 2, "test": 1},
     {"label_out_of_range": 1, "malformed_line": 1, "missing_file": 1, "unreadable_image": 1}),
    ("affectnet_npy", "affectnet", {"num_classes": 8}, {"train": 1, "test": 1}, {"missing_file": 1}),
    ("folder", "folder", {}, {"train": 2, "test": 1}, {"unknown_class": 1, "unreadable_image": 1, "blank_image": 1}),
])
def test_every_layout(ray_local, tmp_path, layout, source, options, counts, problems):
    root = getattr(fx, layout)(tmp_path / "src")
    if options.get("extra_splits") == "occ":
        options = {"extra_splits": {"test_occlusion": str(tmp_path / "src" / "occlusion_list.txt")}}
    m = prepare(source, root, tmp_path / "out", size=112, progress=False, **options)
    assert {s: sum(c.values()) for s, c in m["counts"].items()} == counts
    assert m["problems"]["counts"] == problems
    shards = open_shards(tmp_path / "out", check_hash=True)
    # AffectNet's data set key says its task: 7- and 8-class have their own published numbers
    assert shards.dataset == {"affectnet": f"affectnet{options.get('num_classes', 7)}"}.get(source, source)
    for split in counts:
        for r in _rows(shards, split):
            assert Image.open(io.BytesIO(r["image"])).size == (112, 112)


def test_class_folders_are_not_written_class_by_class(ray_local, tmp_path):
    """A class/image folder lists its faces class by class; written in that order, every block of the per-epoch
    shuffle, and so every batch, would hold one class. The shards are written in a seeded random order instead,
    the same on every run (the content hash does not change)."""
    for c, cls in enumerate(("anger", "happiness", "sadness", "surprise")):
        for i in range(12):
            fx.save(tmp_path / "src" / cls / f"{i:02d}.png", fx.face(100 * c + i, 24))
    runs = []
    for out in ("a", "b"):
        m = prepare("folder", tmp_path / "src", tmp_path / out, size=24, progress=False, val_fraction=0,
                    test_fraction=0)
        labels = [r["label"] for r in _rows(open_shards(tmp_path / out), "train")]
        runs.append((labels, m["content_hash"]))
    labels = runs[0][0]
    assert len(labels) == 48 and sum(a != b for a, b in zip(labels, labels[1:])) >= 20  # class by class: 3 changes
    assert runs[0] == runs[1]


def _ferplus_majority_counts(root):
    """FERPlus's majority rule, written independently of the reader (vectorised): drop single votes, keep the
    top class when it has more than half of the rest, leave out unknown / NF."""
    out = {}
    for folder, split in (("FER2013Train", "train"), ("FER2013Valid", "val"), ("FER2013Test", "test")):
        with open(os.path.join(root, folder, "label.csv")) as f:
            votes = np.array([[float(v) for v in row[2:12]] for row in csv.reader(f)])
        votes[votes <= 1] = 0
        top = votes.argmax(1)
        keep = (votes.max(1) > 0.5 * votes.sum(1)) & (top < 8)
        out[split] = np.bincount(top[keep], minlength=8).tolist()
    return out


def test_real_ferplus(ray_local, ferplus_root, tmp_path):
    m = prepare("ferplus", ferplus_root, tmp_path / "fp", size=48, progress=False)
    shards = open_shards(tmp_path / "fp", check_hash=True)
    assert shards.count("train") == 25045 and shards.count("test") == 3137
    expected = _ferplus_majority_counts(ferplus_root)
    assert {s: list(c.values()) for s, c in m["counts"].items()} == expected
    assert not m["problems"]["counts"]
    for split in ("train", "test"):
        for r in _rows(shards, split)[::7]:  # every 7th face: decoding gives the original pixels back
            original = np.asarray(Image.open(os.path.join(ferplus_root, r["id"])))
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(r["image"]))), original), r["id"]
