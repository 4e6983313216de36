"""Image folders: `ROOT/<split>/<class>/<image>` (e.g. FER2013's common Kaggle copy: train/angry/*.jpg).

Class folder names map onto the basic expressions through a table of common spellings (angry -> anger, happy ->
happiness, ...) plus the user's own `class_map` ({folder name: basic name}); a class folder that maps to nothing
is an `unknown_class` problem for each of its images. Split folder names map train -> train, val/valid/validation
-> val, test -> test; any other split folder keeps its name (an extra evaluation split).
"""

from __future__ import annotations

import os

from ferlab.data.labels import BASIC7, BASIC8
from ferlab.data.sources import Listing, PrepareError, Sample

SYNONYMS = {
    "neutral": "neutral", "happy": "happiness", "happiness": "happiness", "joy": "happiness",
    "surprise": "surprise", "surprised": "surprise", "sad": "sadness", "sadness": "sadness",
    "angry": "anger", "anger": "anger", "disgust": "disgust", "disgusted": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "contempt": "contempt",
}
SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def read(root, num_classes: int | None = None, class_map: dict | None = None, strict: bool = False) -> Listing:
    root = str(root)
    if not os.path.isdir(root):
        raise PrepareError(f"{root}: no such folder")
    names = dict(SYNONYMS) | {k.lower(): v for k, v in (class_map or {}).items()}
    split_dirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    class_dirs = {c.lower() for s in split_dirs for c in os.listdir(os.path.join(root, s))
                  if os.path.isdir(os.path.join(root, s, c))}
    if num_classes is None:  # 8 only when some folder is contempt
        num_classes = 8 if any(names.get(c) == "contempt" for c in class_dirs) else 7
    classes = BASIC8 if num_classes == 8 else BASIC7
    bad = sorted(v for v in names.values() if v not in BASIC8)
    if bad:
        raise PrepareError(f"class map targets {bad} are not basic expressions {list(BASIC8)}")
    listing = Listing("folder", classes, strict=strict, info={"num_classes": num_classes})
    for split_dir in split_dirs:
        split = SPLITS.get(split_dir.lower(), split_dir.lower())
        for class_dir in sorted(os.listdir(os.path.join(root, split_dir))):
            folder = os.path.join(root, split_dir, class_dir)
            if not os.path.isdir(folder):
                continue
            target = names.get(class_dir.lower())
            for name in sorted(os.listdir(folder)):
                path = os.path.join(folder, name)
                if not name.lower().endswith(IMAGE_EXTS):
                    continue
                if target is None or target not in classes:
                    listing.problem("unknown_class", path, f"class folder {class_dir!r} maps to none of "
                                                           f"{list(classes)} (give a class map)")
                    continue
                listing.samples.append(Sample(id=f"{split_dir}/{class_dir}/{name}", split=split, path=path,
                                              label=classes.index(target), where=path, aligned=True))
    if "val" not in {s.split for s in listing.samples}:
        listing.eval_split = "test"
    return listing
