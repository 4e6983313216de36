"""Image folders in the layouts FER data sets are passed around in:

    split     ROOT/<split>/<class>/<image>   FER2013's Kaggle copy (train/angry/*.jpg, test/...)
    class     ROOT/<class>/<image>           the common CK+ copies (CK+48/anger/S010_004_00000017.png)
    flat      ROOT/**/<image>, the label in the file name (--label-from-name): JAFFE's KA.AN1.39.tiff

`layout="auto"` picks the first that fits: split when the top folders are split names holding class folders,
class when they are class names holding images, flat when a label pattern is given; a folder that fits none is an
error naming the layouts tried and what was found (folders, files by extension).

Class names map onto the basic expressions through common spellings (angry -> anger, happy -> happiness, ...), the
JAFFE codes (AN, DI, FE, HA, NE, SA, SU) and the user's `class_map` ({name or code: basic name}). A subject pattern
(`group_from_name`, a regex whose group `group`, or first group, is the subject) keeps each subject's images in one
split and one fold. Missing splits are carved by `ferlab.data.splits.carve`.
"""

from __future__ import annotations

import os
import re
from collections import Counter

from ferlab.data.labels import BASIC7, BASIC8
from ferlab.data.sources import Listing, PrepareError, Sample

SYNONYMS = {
    "neutral": "neutral", "happy": "happiness", "happiness": "happiness", "joy": "happiness",
    "surprise": "surprise", "surprised": "surprise", "sad": "sadness", "sadness": "sadness",
    "angry": "anger", "anger": "anger", "disgust": "disgust", "disgusted": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "contempt": "contempt",
}
# JAFFE's expression codes (KA.AN1.39.tiff: subject KA, anger, first pose); CK+ copies use class folder names.
CODES = {"an": "anger", "di": "disgust", "fe": "fear", "ha": "happiness", "ne": "neutral", "sa": "sadness",
         "su": "surprise", "co": "contempt"}
SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm")
LAYOUTS = ("auto", "split", "class", "flat")
JAFFE_LABEL = r"^[A-Z]{2}\.(?P<label>[A-Z]{2})\d*\."  # KA.AN1.39.tiff -> AN
JAFFE_GROUP = r"^(?P<group>[A-Z]{2})\."  # KA.AN1.39.tiff -> KA
CK_GROUP = r"^(?P<group>S\d+)_"  # S010_004_00000017.png -> S010
# Subject codes recognised in file names when --group-from-name is not given: the lab data sets are evaluated
# subject-independently, so their carved splits and folds keep each subject whole by default.
KNOWN_SUBJECTS = (("CK+ subject codes (S###)", CK_GROUP), ("JAFFE subject codes (KA, KL, ...)", JAFFE_GROUP))


def read(root, num_classes: int | None = None, class_map: dict | None = None, strict: bool = False,
         layout: str = "auto", label_from_name: str | None = None, group_from_name: str | None = None,
         val_fraction: float = 0.1, test_fraction: float = 0.1, split_seed: int = 0, folds: int = 0) -> Listing:
    from ferlab.data.splits import carve, kfold

    root = str(root)
    if not os.path.isdir(root):
        raise PrepareError(f"{root}: no such folder")
    if layout not in LAYOUTS:
        raise PrepareError(f"--layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    names = dict(SYNONYMS) | {k.lower(): v for k, v in (class_map or {}).items()}
    bad = sorted(v for v in names.values() if v not in BASIC8)
    if bad:
        raise PrepareError(f"class map targets {bad} are not basic expressions {list(BASIC8)}")
    label_re = _regex(label_from_name, "label", "--label-from-name")
    group_re = _regex(group_from_name, "group", "--group-from-name")
    layout = detect(root, names, label_re) if layout == "auto" else layout
    found = list(_files(root, layout, label_re, names))  # (split, path, label name or None, where it came from)
    subjects = f"from --group-from-name {group_from_name!r}" if group_re is not None else None
    if group_re is None:
        group_re, subjects = _known_subjects([os.path.basename(p) for _, p, label, _ in found if label])
    if num_classes is None:  # 8 only when some image is contempt
        num_classes = 8 if any(label == "contempt" for _, _, label, _ in found) else 7
    classes = BASIC8 if num_classes == 8 else BASIC7
    listing = Listing("folder", classes, strict=strict,
                      info={"num_classes": num_classes, "layout": layout} |
                           ({"label_from_name": label_from_name} if label_from_name else {}) |
                           ({"group_from_name": group_from_name} if group_from_name else {}) |
                           {"subjects": subjects or "unknown: splits and folds keep near-identical images together "
                                                   "(the same 8x8 difference hash), but may not be "
                                                   "subject-independent (give --group-from-name)"})
    if subjects is None and found and (folds or val_fraction or test_fraction):
        print(f"prepare folder: warning: no subject codes recognised in the file names of {root}; carved splits "
              f"keep near-identical images together but may share subjects (give --group-from-name REGEX)",
              flush=True)
    elif found:
        print(f"prepare folder: subjects {subjects}: each kept whole in one split or fold", flush=True)
    for split, path, label, source in found:
        rel = os.path.relpath(path, root)
        if label is None or label not in classes:
            listing.problem("unknown_class", path, f"{source} maps to none of {list(classes)} (give --class-map)")
            continue
        group = None
        if group_re is not None:
            m = group_re.search(os.path.basename(path))
            if m is None:
                listing.problem("malformed_line", path, f"file name does not match --group-from-name "
                                                        f"{group_re.pattern!r}")
                continue
            group = m.group("group") if "group" in group_re.groupindex else m.group(1)
        listing.samples.append(Sample(id=rel, split=split, path=path, label=classes.index(label), where=path,
                                      aligned=True, group=group))
    if listing.samples and folds:  # the lab protocol: every image in one of K held-out folds, no carved splits
        if folds < 2:
            raise PrepareError(f"--folds {folds}: expected 2 or more")
        for s, f in zip(listing.samples, kfold(listing.samples, folds, split_seed)):
            s.split, s.fold = "train", f
        groups = len({s.group for s in listing.samples if s.group is not None})
        listing.info["folds"] = (f"{folds} folds (seed {split_seed}, stratified by class"
                                 + (f", {groups} subjects each in one fold" if groups else "") + ")")
    elif listing.samples:
        carve(listing, val_fraction, test_fraction, split_seed)
    if listing.samples and "val" not in {s.split for s in listing.samples}:
        listing.eval_split = "test"
    return listing


def _known_subjects(names: list[str]):
    """(the subject regex, what it is) of the first known naming every file follows, else (None, None)."""
    for what, pattern in KNOWN_SUBJECTS:
        r = re.compile(pattern)
        if names and all(r.search(n) for n in names):
            return r, f"from the file names' {what}"
    return None, None


def _regex(pattern: str | None, group: str, option: str):
    if not pattern:
        return None
    try:
        r = re.compile(pattern)
    except re.error as e:
        raise PrepareError(f"{option} {pattern!r}: not a regular expression ({e})") from None
    if group not in r.groupindex and r.groups < 1:
        raise PrepareError(f"{option} {pattern!r}: needs a group, named (?P<{group}>...) or the first one")
    return r


def _dirs(path: str) -> list[str]:
    return sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTS)


def detect(root: str, names: dict, label_re) -> str:
    """The layout of `root`, or an error naming the layouts tried and what the folder holds."""
    top = _dirs(root)
    if top and all(d.lower() in SPLITS for d in top) and any(_dirs(os.path.join(root, d)) for d in top):
        return "split"
    if top and any(d.lower() in names for d in top) and any(
            _is_image(f) for d in top for f in os.listdir(os.path.join(root, d))):
        return "class"
    if label_re is not None:
        return "flat"
    folders, exts = 0, Counter()
    for _, dirs, files in os.walk(root):
        folders += len(dirs)
        exts.update(os.path.splitext(f)[1].lower() or "(none)" for f in files)
    seen = ", ".join(f"{n} {e}" for e, n in exts.most_common(6)) or "no files"
    raise PrepareError(f"{root}: no image layout recognised (tried split/class/image: top folders named "
                       f"train/val/test; class/image: top folders named after expressions; flat: needs "
                       f"--label-from-name); found {folders} folders ({', '.join(top[:5]) or 'none at the top'}) "
                       f"and {seen}")


def _files(root: str, layout: str, label_re, names: dict):
    """(split, image path, basic class name or None, what named the class) for every image of the layout."""
    if layout == "split":
        for split_dir in _dirs(root):
            split = SPLITS.get(split_dir.lower(), split_dir.lower())  # another name: an extra evaluation split
            for class_dir in _dirs(os.path.join(root, split_dir)):
                yield from _class_folder(os.path.join(root, split_dir, class_dir), split, class_dir, label_re, names)
    elif layout == "class":
        for class_dir in _dirs(root):
            yield from _class_folder(os.path.join(root, class_dir), "train", class_dir, label_re, names)
    else:
        if label_re is None:
            raise PrepareError("--layout flat needs --label-from-name REGEX (e.g. JAFFE: "
                               f"'{JAFFE_LABEL}')")
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                if _is_image(name):
                    yield ("train", os.path.join(folder, name), *_label_from_name(name, label_re, names))


def _class_folder(folder: str, split: str, class_dir: str, label_re, names: dict):
    for name in sorted(os.listdir(folder)):
        if _is_image(name):
            if label_re is not None:  # a pattern wins over the folder name when both are there
                yield (split, os.path.join(folder, name), *_label_from_name(name, label_re, names))
            else:
                yield split, os.path.join(folder, name), names.get(class_dir.lower()), f"class folder {class_dir!r}"


def _label_from_name(name: str, label_re, names: dict) -> tuple:
    m = label_re.search(name)
    if m is None:
        return None, f"file name (no match for {label_re.pattern!r})"
    code = (m.group("label") if "label" in label_re.groupindex else m.group(1)).lower()
    return names.get(code) or CODES.get(code), f"code {code!r}"
