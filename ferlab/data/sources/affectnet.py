"""AffectNet (Mollahosseini et al. 2017), in its two releases.

Original: `training.csv` / `validation.csv` with header
`subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal`; images under
`Manually_Annotated_Images/` (or the root itself); 68 landmarks as `;`-separated x;y floats, reduced to 5 points for
alignment (the box is used when they are absent). Later release: `train_set/images/<id>.jpg` with
`train_set/annotations/<id>_exp.npy` (and `_lnd.npy`), likewise `val_set/`.

Expression codes: 0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger, 7 Contempt, 8 None,
9 Uncertain, 10 Non-Face. AffectNet-7 keeps codes < 7, AffectNet-8 codes < 8; the others are `excluded` by code.
The validation set (500 per class) is the test set, and mean class accuracy is the headline metric.
"""

from __future__ import annotations

import csv
import glob
import os

import numpy as np

from ferlab.data.align import landmarks68_to_5
from ferlab.data.labels import BASIC7, BASIC8
from ferlab.data.sources import Listing, PrepareError, Sample

CODE_TO_BASIC = {0: 0, 1: 1, 2: 3, 3: 2, 4: 6, 5: 5, 6: 4, 7: 7}  # -> neutral, happiness, surprise, sadness, ...
OTHER_CODES = {7: "contempt (7 classes)", 8: "None", 9: "Uncertain", 10: "Non-Face"}
CSV_SPLITS = {"training.csv": "train", "validation.csv": "test"}
NPY_SPLITS = {"train_set": "train", "val_set": "test"}


ALIGN = {  # how faces become the stored square (`ferlab prepare affectnet --align`)
    "landmarks": "5-point similarity transform from the 68 annotated landmarks (the box where they are absent)",
    # MVT section 4.2: "we do not perform any extra face alignment on all FER in the wild datasets"
    "none": "no alignment: the annotated face box cropped (the later release's images as distributed)",
}


def read(root, num_classes: int = 7, strict: bool = False, align: str = "landmarks") -> Listing:
    root = str(root)
    if num_classes not in (7, 8):
        raise PrepareError(f"AffectNet has 7 or 8 classes; got {num_classes}")
    if align not in ALIGN:
        raise PrepareError(f"AffectNet alignment {align!r}: expected one of {', '.join(ALIGN)}")
    listing = Listing("affectnet", BASIC8 if num_classes == 8 else BASIC7, strict=strict, eval_split="test",
                      info={"num_classes": num_classes, "headline_metric": "mean class accuracy",
                            "alignment": f"{align}: {ALIGN[align]}"})
    if any(os.path.isfile(os.path.join(root, f)) for f in CSV_SPLITS):
        _read_csv(root, listing, num_classes)
    elif any(os.path.isdir(os.path.join(root, d)) for d in NPY_SPLITS):
        _read_npy(root, listing, num_classes)
    else:
        raise PrepareError(f"{root}: neither training.csv/validation.csv nor train_set/val_set (AffectNet layouts)")
    if align == "none":
        for sample in listing.samples:
            sample.landmarks = None
            sample.aligned = sample.box is None  # a box is cropped; an image without one is used as it is
    return listing


def _code(value, where, listing, num_classes):
    try:
        code = int(float(value))
    except (TypeError, ValueError):
        listing.problem("malformed_line", where, f"expression {value!r} is not a number")
        return None
    if not 0 <= code <= 10:
        listing.problem("label_out_of_range", where, f"expression {code} is outside 0..10")
        return None
    if code >= num_classes:
        listing.exclude(f"code {code}: {OTHER_CODES[code]}")
        return None
    return CODE_TO_BASIC[code]


def _read_csv(root, listing, num_classes):
    images = os.path.join(root, "Manually_Annotated_Images")
    images = images if os.path.isdir(images) else root
    for file, split in CSV_SPLITS.items():
        label_file = os.path.join(root, file)
        if not os.path.isfile(label_file):
            continue
        with open(label_file, newline="") as f:
            reader = csv.DictReader(f)
            needed = {"subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
                      "expression"}
            if not needed <= set(reader.fieldnames or []):
                raise PrepareError(f"{label_file}:1: header lacks {sorted(needed - set(reader.fieldnames or []))}")
            for lineno, row in enumerate(reader, start=2):
                where = f"{label_file}:{lineno}"
                if None in row or any(row[k] is None for k in needed):
                    listing.problem("malformed_line", where, "wrong number of fields")
                    continue
                label = _code(row["expression"], where, listing, num_classes)
                if label is None:
                    continue
                try:
                    box = tuple(float(row[k]) for k in ("face_x", "face_y", "face_width", "face_height"))
                    marks = [float(v) for v in row["facial_landmarks"].split(";") if v.strip()]
                except ValueError:
                    listing.problem("malformed_line", where, "box or landmarks are not numbers")
                    continue
                if marks and len(marks) != 136:
                    listing.problem("malformed_line", where, f"{len(marks)} landmark values, expected 136 (68 x;y)")
                    continue
                path = os.path.join(images, row["subDirectory_filePath"])
                if not os.path.isfile(path):
                    listing.problem("missing_file", where, f"{path} does not exist")
                    continue
                listing.samples.append(Sample(
                    id=row["subDirectory_filePath"], split=split, path=path, label=label, where=where, box=box,
                    landmarks=landmarks68_to_5(np.array(marks).reshape(68, 2)).tolist() if marks else None))


def _read_npy(root, listing, num_classes):
    for folder, split in NPY_SPLITS.items():
        for path in sorted(glob.glob(os.path.join(root, folder, "images", "*"))):
            stem = os.path.splitext(os.path.basename(path))[0]
            notes = os.path.join(root, folder, "annotations", stem)
            exp = notes + "_exp.npy"
            if not os.path.isfile(exp):
                listing.problem("missing_file", path, f"{exp} does not exist")
                continue
            try:
                label = _code(np.load(exp, allow_pickle=False).item(), exp, listing, num_classes)
            except (ValueError, OSError) as e:
                listing.problem("malformed_line", exp, f"not a one-value .npy file ({e})")
                continue
            if label is None:
                continue
            landmarks = None
            if os.path.isfile(notes + "_lnd.npy"):
                try:
                    landmarks = landmarks68_to_5(np.load(notes + "_lnd.npy").astype(float).reshape(68, 2)).tolist()
                except (ValueError, OSError):
                    listing.problem("malformed_line", notes + "_lnd.npy", "expected 136 landmark values")
                    continue
            listing.samples.append(Sample(id=f"{folder}/{stem}", split=split, path=path, label=label, where=exp,
                                          landmarks=landmarks, aligned=landmarks is None))
