"""FERPlus (Barsoum et al. 2016): FER2013's 48x48 faces relabelled by 10 annotators each.

On disk: FER2013Train / FER2013Valid / FER2013Test, each with ferNNNNNNN.png files and a headerless label.csv
(`name,"(x, y, w, h)",` then 10 vote counts: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt,
unknown, NF). `fer2013new.csv` (header `Usage,Image name,...`) holds the same votes, but the two disagree on about
1,600 rows; FERPlus's own training code reads label.csv, so that is the default.

The four label modes are FERPlus's (`_process_data` in its training code, reproduced here because the kept set
and the soft targets depend on its exact rules): single votes are removed as outliers, then
  majority      keep the top class if it has more than half of the remaining votes, else "unknown";
  probability,  take classes in order of votes until 75% of the votes (at most 3 classes), if that covers more
  crossentropy  than half of the votes; the target is their normalised vote distribution;
  multi_target  every class with at least 30% of the votes.
Faces whose top entry is unknown or NF are left out (counted in `excluded`). 8 classes, or 7 without contempt
(contempt faces are then excluded and contempt's share removed from soft targets). As FERPlus's code does, only the
training split follows the mode: validation and test are always read in majority mode (3,191 / 3,137 faces with
label.csv), so every mode is evaluated on the same faces. The multi_target target is the official one
(`_process_target`): 1 for every accepted class, then (1 - eps) t + eps with eps = 0.001, not vote shares.
"""

from __future__ import annotations

import csv
import os
import sys

from ferlab.data.labels import BASIC7, BASIC8, LABEL_MODES
from ferlab.data.sources import Listing, PrepareError, Sample

FOLDERS = {"FER2013Train": "train", "FER2013Valid": "val", "FER2013Test": "test"}
USAGE = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}
MODES = LABEL_MODES  # Barsoum et al.'s four training modes (ferlab.data.labels: written once)
N_VOTES = 10  # 8 expressions + unknown + NF
MULTI_TARGET_EPS = 0.001  # FERPlus's "small epsilon in order to avoid ill-conditioned computation"


def process_votes(votes: list[float], mode: str) -> list[float]:
    """FERPlus's target for one face: a distribution over the 10 entries (index 8 = unknown means 'leave out')."""
    raw = [0.0 if v < 1.0 + sys.float_info.epsilon else float(v) for v in votes]  # single votes are outliers
    total = sum(raw)
    unknown = [0.0] * N_VOTES
    unknown[8] = 1.0
    emotion = [0.0] * N_VOTES
    if total <= 0:
        return unknown
    if mode == "majority":
        top = max(raw)
        if top > 0.5 * total:
            emotion[raw.index(top)] = top
        else:
            return unknown
    elif mode in ("probability", "crossentropy"):
        part, count, valid = 0.0, 0, True
        while part < 0.75 * total and count < 3 and valid:
            top = max(raw)
            for i in range(N_VOTES):
                if raw[i] == top:
                    emotion[i], raw[i] = top, 0.0
                    part += top
                    count += 1
                    if i >= 8:  # unknown or NF tie with the top classes
                        valid = False
                        if sum(emotion) > top:  # other classes came first: keep them, drop unknown / NF
                            emotion[i] = 0.0
                            count -= 1
                        break
        if sum(emotion) <= 0.5 * total or count > 3:
            return unknown
    elif mode == "multi_target":
        emotion = [v if v >= 0.3 * total else 0.0 for v in raw]
        if sum(emotion) <= 0.5 * total:
            return unknown
    else:
        raise PrepareError(f"FERPlus label mode {mode!r}; known: {', '.join(MODES)}")
    s = sum(emotion)
    return [v / s for v in emotion]


def read(root, labels: str = "label.csv", mode: str = "majority", num_classes: int = 8,
         strict: bool = False) -> Listing:
    root = str(root)
    if mode not in MODES:
        raise PrepareError(f"FERPlus label mode {mode!r}; known: {', '.join(MODES)}")
    if num_classes not in (7, 8):
        raise PrepareError(f"FERPlus has 8 classes, or 7 without contempt; got {num_classes}")
    classes = BASIC8 if num_classes == 8 else BASIC7
    listing = Listing("ferplus", classes, strict=strict, eval_split="val",
                      info={"labels": labels, "label_mode": mode, "num_classes": num_classes,
                            # TransFER 4.2: "For FERPlus dataset, the MTCNN is used to detect and align faces": not
                            # done (no MTCNN weights here); FER2013's faces are already registered crops
                            "alignment": "none: FER2013's 48x48 face crops as distributed"})
    if labels == "label.csv":
        rows = _label_csv_rows(root, listing)
    elif labels == "fer2013new.csv":
        rows = _fer2013new_rows(root, listing)
    else:
        raise PrepareError(f"FERPlus labels {labels!r}: expected label.csv or fer2013new.csv")
    for folder, name, votes, where in rows:
        path = os.path.join(root, folder, name)
        if not os.path.isfile(path):
            listing.problem("missing_file", where, f"{path} does not exist")
            continue
        split_mode = mode if FOLDERS[folder] == "train" else "majority"  # FERPlus evaluates in majority mode
        target = process_votes(votes, split_mode)
        top = max(range(N_VOTES), key=lambda i: target[i])  # first maximum, as numpy's argmax
        if top >= 8:
            listing.exclude(f"unknown, non-face or no agreement ({split_mode})")
            continue
        if num_classes == 7 and top == 7:
            listing.exclude("contempt (7 classes)")
            continue
        soft = target[:num_classes]
        s = sum(soft)
        soft = [v / s for v in soft]
        if split_mode == "multi_target":
            soft = [(1 - MULTI_TARGET_EPS) * (1.0 if v > 0 else 0.0) + MULTI_TARGET_EPS for v in soft]
        listing.samples.append(Sample(id=f"{folder}/{name}", split=FOLDERS[folder], path=path, label=top,
                                      where=where, soft=None if mode == "majority" else soft, aligned=True))
    return listing


def _votes(cells, where, listing):
    try:
        votes = [float(c) for c in cells]
    except ValueError:
        listing.problem("malformed_line", where, f"vote counts are not numbers: {cells}")
        return None
    if any(v < 0 for v in votes) or sum(votes) <= 0:
        listing.problem("label_out_of_range", where, f"vote counts must be >= 0 with a positive sum: {cells}")
        return None
    return votes


def _label_csv_rows(root, listing):
    found = False
    for folder in FOLDERS:
        label_file = os.path.join(root, folder, "label.csv")
        if not os.path.isfile(label_file):
            continue
        found = True
        with open(label_file, newline="") as f:
            for lineno, row in enumerate(csv.reader(f), start=1):
                where = f"{label_file}:{lineno}"
                if not row or not "".join(row).strip():
                    continue
                if len(row) < 2 + N_VOTES or not row[0].strip():
                    listing.problem("malformed_line", where, f"expected name, box and {N_VOTES} vote counts")
                    continue
                votes = _votes(row[2:2 + N_VOTES], where, listing)
                if votes is not None:
                    yield folder, row[0].strip(), votes, where
    if not found:
        raise PrepareError(f"{root}: no FER2013Train/FER2013Valid/FER2013Test folder with a label.csv")


def _fer2013new_rows(root, listing):
    label_file = os.path.join(root, "fer2013new.csv")
    if not os.path.isfile(label_file):
        raise PrepareError(f"{label_file}: missing")
    with open(label_file, newline="") as f:
        reader = csv.reader(f)
        next(reader, None)  # header
        for lineno, row in enumerate(reader, start=2):
            where = f"{label_file}:{lineno}"
            if len(row) < 2 + N_VOTES or row[0] not in USAGE:
                listing.problem("malformed_line", where, f"expected Usage, Image name and {N_VOTES} vote counts")
                continue
            if not row[1].strip():  # 173 rows of the release have no image name (faces FERPlus dropped)
                listing.exclude("no image name (fer2013new.csv)")
                continue
            votes = _votes(row[2:2 + N_VOTES], where, listing)
            if votes is not None:
                yield USAGE[row[0]], row[1].strip(), votes, where
