"""RAF-DB basic (Li et al. 2017).

On disk: `EmoLabel/list_patition_label.txt` (the spelling is RAF-DB's), lines `train_00001.jpg 5`; labels 1..7 =
Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral; split by the name's train/test prefix. Images either
`Image/aligned/<stem>_aligned.jpg` (100x100, already aligned: resized only) or `Image/original/<name>`, aligned
with the 5 manual landmarks of `Annotation/manual/<stem>_manu_attri.txt` when present, else cropped to the box of
`Annotation/boundingbox/<stem>_boundingbox.txt` (x1 y1 x2 y2), else resized whole.

Occlusion-RAF-DB and Pose-RAF-DB are lists of test image names; each list given becomes an extra evaluation split
holding copies of those test rows. RAF-DB has no validation set: the test set is where the papers evaluate.
"""

from __future__ import annotations

import os

from ferlab.data.labels import BASIC7
from ferlab.data.sources import Listing, PrepareError, Sample

LABEL_FILE = os.path.join("EmoLabel", "list_patition_label.txt")
# RAF-DB's codes 1..7 -> BASIC7 indices (neutral, happiness, surprise, sadness, anger, disgust, fear)
RAF_TO_BASIC = {1: 2, 2: 6, 3: 5, 4: 1, 5: 3, 6: 4, 7: 0}


def _floats(path, per_line):
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if parts:
                rows.append([float(v) for v in parts[:per_line]])
    return rows


def read(root, images: str = "aligned", extra_splits: dict | None = None, strict: bool = False) -> Listing:
    root = str(root)
    label_file = os.path.join(root, LABEL_FILE)
    if not os.path.isfile(label_file):
        raise PrepareError(f"{label_file}: missing (is {root} a RAF-DB basic folder?)")
    if images not in ("aligned", "original"):
        raise PrepareError(f"RAF-DB images {images!r}: expected 'aligned' or 'original'")
    listing = Listing("rafdb", BASIC7, strict=strict, eval_split="test", info={"images": images})
    by_name = {}
    with open(label_file) as f:
        for lineno, line in enumerate(f, start=1):
            where = f"{label_file}:{lineno}"
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit() or not parts[0].startswith(("train_", "test_")):
                listing.problem("malformed_line", where, f"expected '<train|test>_NNNNN.jpg <label>', got {line.strip()!r}")
                continue
            name, code = parts[0], int(parts[1])
            if code not in RAF_TO_BASIC:
                listing.problem("label_out_of_range", where, f"label {code} is outside 1..7")
                continue
            stem = os.path.splitext(name)[0]
            sample = Sample(id=stem, split=name.split("_")[0], path="", label=RAF_TO_BASIC[code], where=where)
            if images == "aligned":
                sample.path, sample.aligned = os.path.join(root, "Image", "aligned", f"{stem}_aligned.jpg"), True
            else:
                sample.path = os.path.join(root, "Image", "original", name)
                manual = os.path.join(root, "Annotation", "manual", f"{stem}_manu_attri.txt")
                box = os.path.join(root, "Annotation", "boundingbox", f"{stem}_boundingbox.txt")
                try:
                    if os.path.isfile(manual):
                        sample.landmarks = _floats(manual, 2)[:5]
                    elif os.path.isfile(box):
                        x1, y1, x2, y2 = _floats(box, 4)[0]
                        sample.box = (x1, y1, x2 - x1, y2 - y1)
                    else:
                        sample.aligned = True
                except (ValueError, IndexError):
                    listing.problem("malformed_line", manual if os.path.isfile(manual) else box,
                                    "expected numbers (5 landmark lines of 'x y', or 'x1 y1 x2 y2')")
                    continue
            if not os.path.isfile(sample.path):
                listing.problem("missing_file", where, f"{sample.path} does not exist")
                continue
            listing.samples.append(sample)
            by_name[stem] = sample
    for split, list_file in (extra_splits or {}).items():
        if not os.path.isfile(list_file):
            raise PrepareError(f"{list_file}: missing (extra split {split!r})")
        with open(list_file) as f:
            for lineno, line in enumerate(f, start=1):
                parts = line.split()
                if not parts:
                    continue
                stem = os.path.splitext(os.path.basename(parts[0]))[0].removesuffix("_aligned")
                base = by_name.get(stem)
                if base is None or base.split != "test":
                    listing.problem("missing_file", f"{list_file}:{lineno}", f"{parts[0]} is not a listed test image")
                    continue
                listing.samples.append(Sample(**{**base.__dict__, "split": split, "id": f"{split}/{stem}",
                                                 "where": f"{list_file}:{lineno}"}))
    return listing
