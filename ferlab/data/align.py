"""Face alignment onto the stored square: a 5-point similarity transform when landmarks exist, a box crop with a
margin otherwise, a plain resize for faces that are aligned already.

The template is the standard 112x112 ArcFace / insightface 5-point template (eye centres, nose tip, mouth corners,
in image coordinates: the first eye is the one on the image's left), scaled to the stored size. The similarity
(rotation, uniform scale, translation) is Umeyama's least-squares fit: written here because it is ten lines and
avoids a scikit-image dependency for one function.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]])
BOX_MARGIN = 0.1  # extra context on each side of a detector box, as a fraction of the box's longer side


def landmarks68_to_5(points: np.ndarray) -> np.ndarray:
    """iBUG 68 points -> 5: eye centres (points 36-41 lie on the image's left, 42-47 right), nose tip, mouth corners."""
    p = np.asarray(points, dtype=float).reshape(68, 2)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]])


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity matrix M minimising sum |M [src; 1] - dst|^2 (Umeyama 1991, no reflection)."""
    src, dst = np.asarray(src, float), np.asarray(dst, float)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    sc, dc = src - mu_s, dst - mu_d
    u, s, vt = np.linalg.svd(dc.T @ sc / len(src))
    d = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ d @ vt
    scale = np.trace(np.diag(s) @ d) / (sc ** 2).sum(1).mean()
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def align_5pt(img: Image.Image, points, size: int) -> Image.Image:
    m = np.vstack([similarity(points, TEMPLATE_112 * size / 112.0), [0, 0, 1]])
    inv = np.linalg.inv(m)  # PIL maps each output pixel back to the input
    return img.transform((size, size), Image.AFFINE, data=tuple(inv[:2].ravel()), resample=Image.BILINEAR)


def crop_box(img: Image.Image, box, size: int, margin: float = BOX_MARGIN) -> Image.Image:
    """A square around the box's centre, side = longer side * (1 + 2 margin); outside the image is black."""
    x, y, w, h = box
    side = max(w, h) * (1 + 2 * margin)
    cx, cy = x + w / 2, y + h / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    crop = img.crop((left, top, left + int(round(side)), top + int(round(side))))
    return crop.resize((size, size), Image.BILINEAR)


def to_stored(img: Image.Image, size: int, landmarks=None, box=None) -> Image.Image:
    if landmarks is not None:
        return align_5pt(img, landmarks, size)
    if box is not None:
        return crop_box(img, box, size)
    return img if img.size == (size, size) else img.resize((size, size), Image.BILINEAR)
