"""Small data sets in each real on-disk layout, written by the tests themselves (a few images each, bad ones
included). Each writer returns what a correct reader must find."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from ferlab.data.align import TEMPLATE_112


def face(seed: int, size: int = 48, gray: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (size, size) if gray else (size, size, 3), dtype=np.uint8)


def save(path, arr, fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)


def corrupt(path, kind="garbage"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if kind == "garbage":
        with open(path, "wb") as f:
            f.write(b"this is not an image")
    else:  # a JPEG cut short: the header opens, the pixels do not decode
        save(path, face(99, 64), fmt="JPEG")
        data = open(path, "rb").read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 3])


def blank(path, value=128, size=48):
    save(path, np.full((size, size, 3), value, np.uint8))


def ferplus(root):
    """Train: 2 kept, 1 unknown (excluded), 1 malformed line, 1 missing file, 1 negative vote, 1 corrupt image.
    Test: 1 kept (contempt), 1 blank image. Votes in FERPlus's order."""
    rows = {
        "FER2013Train": [
            ("fer0000000.png", [0, 9, 1, 0, 0, 0, 0, 0, 0, 0]),  # happiness
            ("fer0000001.png", [4, 0, 0, 1, 3, 2, 0, 0, 0, 0]),  # no majority: excluded in majority mode
            ("fer0000002.png", None),  # malformed line
            ("fer0000003.png", [0, 0, 10, 0, 0, 0, 0, 0, 0, 0]),  # missing file
            ("fer0000004.png", [0, 0, -1, 0, 0, 0, 0, 0, 0, 0]),  # label out of range
            ("fer0000005.png", [0, 0, 0, 0, 0, 0, 10, 0, 0, 0]),  # corrupt image
            ("fer0000006.png", [7, 0, 0, 3, 0, 0, 0, 0, 0, 0]),  # neutral (7 of 10)
        ],
        "FER2013Test": [
            ("fer0000100.png", [2, 0, 0, 0, 0, 0, 0, 8, 0, 0]),  # contempt
            ("fer0000101.png", [10, 0, 0, 0, 0, 0, 0, 0, 0, 0]),  # blank image
        ],
    }
    for folder, items in rows.items():
        os.makedirs(os.path.join(root, folder), exist_ok=True)
        lines = []
        for i, (name, votes) in enumerate(items):
            if votes is None:
                lines.append(f'{name},"(0, 0, 48, 48)",1,2\n')
                continue
            lines.append(f'{name},"(0, 0, 48, 48)",' + ",".join(map(str, votes)) + "\n")
            path = os.path.join(root, folder, name)
            if name == "fer0000005.png":
                corrupt(path)
            elif name == "fer0000101.png":
                save(path, np.full((48, 48), 0, np.uint8))
            elif name != "fer0000003.png":
                save(path, face(i, 48, gray=True))
        with open(os.path.join(root, folder, "label.csv"), "w") as f:
            f.writelines(lines)
    with open(os.path.join(root, "fer2013new.csv"), "w") as f:
        f.write("Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n")
        f.write("Training,fer0000000.png,0,9,1,0,0,0,0,0,0,0\n")
        f.write("Training,,0,0,0,0,0,0,0,0,0,10\n")  # FERPlus's rows without an image name
        f.write("PrivateTest,fer0000100.png,2,0,0,0,0,0,0,8,0,0\n")
    return root


def rafdb(root):
    """Aligned images; lines: 2 good train, 1 label out of range, 1 malformed, test: 1 good, 1 missing file,
    1 corrupt (truncated JPEG), 1 blank. An occlusion list naming one good test image and one unknown name."""
    lines = ["train_00001.jpg 4", "train_00002.jpg 7", "train_00003.jpg 9", "this line is wrong",
             "test_00001.jpg 1", "test_00002.jpg 2", "test_00003.jpg 3", "test_00004.jpg 5"]
    os.makedirs(os.path.join(root, "EmoLabel"), exist_ok=True)
    with open(os.path.join(root, "EmoLabel", "list_patition_label.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    img = lambda stem: os.path.join(root, "Image", "aligned", f"{stem}_aligned.jpg")  # noqa: E731
    for i, stem in enumerate(["train_00001", "train_00002", "train_00003", "test_00001"]):
        save(img(stem), face(i, 100), fmt="JPEG")
    corrupt(img("test_00003"), kind="truncated")
    blank(img("test_00004"), size=100)
    with open(os.path.join(root, "occlusion_list.txt"), "w") as f:
        f.write("test_00001.jpg\nnot_a_test_image.jpg\n")
    return root


def affectnet_csv(root):
    """training.csv: a face with 68 landmarks, one with a box only, code 8 (None: excluded), code 12 (out of
    range), 10 landmark values (malformed), a missing image, a corrupt image; validation.csv: one good face."""
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
    marks = ";".join(f"{v:.1f}" for v in np.tile([60.0, 70.0], 68) + np.arange(136) * 0.1)
    rows = [("1/a.jpg", marks, 1), ("1/b.jpg", "", 6), ("1/c.jpg", marks, 8), ("1/d.jpg", marks, 12),
            ("1/e.jpg", "1;2;3;4;5;6;7;8;9;10", 2), ("1/missing.jpg", marks, 3), ("1/corrupt.jpg", marks, 4)]
    images = os.path.join(root, "Manually_Annotated_Images")
    for i, (path, _, _) in enumerate(rows):
        if path == "1/corrupt.jpg":
            corrupt(os.path.join(images, path))
        elif path != "1/missing.jpg":
            save(os.path.join(images, path), face(i, 160), fmt="JPEG")
    with open(os.path.join(root, "training.csv"), "w") as f:
        f.write(header)
        for path, m, code in rows:
            f.write(f'{path},20,20,120,120,"{m}",{code},0.1,0.2\n')
    save(os.path.join(images, "2/v.jpg"), face(50, 160), fmt="JPEG")
    with open(os.path.join(root, "validation.csv"), "w") as f:
        f.write(header + f'2/v.jpg,10,10,140,140,"{marks}",0,0,0\n')
    return root


def affectnet_npy(root):
    """train_set: image 1 (code 3, landmarks), image 2 (no annotation: missing file), image 3 (code 10:
    excluded); val_set: image 4 (code 7, contempt: excluded from 7 classes)."""
    def put(folder, stem, code, lnd=True):
        save(os.path.join(root, folder, "images", f"{stem}.jpg"), face(int(stem), 224), fmt="JPEG")
        notes = os.path.join(root, folder, "annotations")
        os.makedirs(notes, exist_ok=True)
        if code is not None:
            np.save(os.path.join(notes, f"{stem}_exp.npy"), np.array(str(code)))
        if lnd:
            np.save(os.path.join(notes, f"{stem}_lnd.npy"), (np.tile([100.0, 110.0], 68) + np.arange(136)).astype(str))
    put("train_set", "1", 3)
    put("train_set", "2", None)
    put("train_set", "3", 10)
    put("val_set", "4", 7, lnd=False)
    return root


def folder(root):
    """train/happy, train/angry, train/weird (unknown class), test/sad (one blank), test/neutral (one corrupt)."""
    save(os.path.join(root, "train", "happy", "a.png"), face(1))
    save(os.path.join(root, "train", "angry", "b.png"), face(2))
    save(os.path.join(root, "train", "weird", "c.png"), face(3))
    save(os.path.join(root, "test", "sad", "d.png"), face(4))
    blank(os.path.join(root, "test", "sad", "blank.png"))
    corrupt(os.path.join(root, "test", "neutral", "broken.jpg"))
    return root


def landmark_face(size=200):
    """An image with 5 bright dots at the template's points under a known similarity (rotation 20 degrees, scale
    1.5, shift), and those 5 points: aligning it must bring the dots back onto the template."""
    theta = np.deg2rad(20)
    rot = 1.5 * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    pts = TEMPLATE_112 @ rot.T + np.array([40.0, 10.0])
    img = np.zeros((size, size, 3), np.uint8)
    for x, y in pts:
        img[int(round(y)) - 1:int(round(y)) + 2, int(round(x)) - 1:int(round(x)) + 2] = 255
    return img, pts
