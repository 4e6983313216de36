"""SynthFER: procedurally drawn faces whose expression is carried by facial geometry.

Why a synthetic set at all: ferlab must run end to end on a laptop with no data set on disk, and the papers'
mechanisms (local attention, masks, relabeling) need something real to find. In SynthFER the class is decided only
by brows, eyes, mouth and a nose wrinkle; everything else (pose, skin, background clutter, occluders) is nuisance.
Every sample keeps its ground truth: the clean label (before optional label noise), a background mask and an
occluder mask, so later tools can score attention maps, MGN masks and relabel decisions against the truth.

Each sample is drawn from its own generator seeded by (seed, index): the set is deterministic for a seed, and any
slice of it can be drawn independently of the others.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ferlab.data.labels import BASIC7

# Nominal geometry per class, in units where 0 is neutral. Columns:
# brow_tilt (+ inner ends up: sad/fear, - inner ends down: anger), brow_raise, eye_open, mouth_curve
# (+ smile), mouth_open, mouth_width, nose_wrinkle.
_GEOMETRY = {
    "neutral": (0.0, 0.0, 0.5, 0.0, 0.0, 0.5, 0.0),
    "happiness": (0.0, 0.1, 0.35, 0.9, 0.3, 0.85, 0.0),
    "surprise": (0.0, 0.9, 0.95, 0.0, 0.9, 0.3, 0.0),
    "sadness": (0.8, 0.1, 0.4, -0.8, 0.0, 0.5, 0.0),
    "anger": (-0.9, -0.5, 0.6, -0.3, 0.1, 0.55, 0.3),
    "disgust": (-0.4, -0.3, 0.3, -0.45, 0.25, 0.6, 1.0),
    "fear": (0.7, 0.7, 0.9, -0.2, 0.55, 0.8, 0.0),
}
_NEUTRAL = np.array(_GEOMETRY["neutral"])
CLASSES = BASIC7


@dataclass(frozen=True)
class SynthSpec:
    """How hard SynthFER is. The defaults were calibrated so that transfer_tiny after the default sweep's 6 epochs
    sits between chance and 100% (about 0.3-0.6 validation accuracy) with visible differences between configurations
    (B = 0 against B = 2: 0.32 against 0.55 in one calibration run); ResNet-18 reaches ~0.65 in 4 epochs."""

    size: int = 112  # stored image side in pixels
    intensity: tuple[float, float] = (0.6, 1.0)  # how far from neutral each face goes toward its class
    jitter: float = 0.10  # per-sample noise on every geometry parameter: overlaps neighbouring classes
    max_rotation: float = 12.0  # degrees of in-plane pose jitter
    occluder_prob: float = 0.2  # chance that a face gets an occluder (hand, bar, blob)
    clutter: int = 3  # background shapes per image
    label_noise: float = 0.0  # chance that the stored label is replaced by another class (clean_label keeps truth)

    def __post_init__(self):
        if self.size < 32:
            raise ValueError(f"SynthFER size must be >= 32 pixels, got {self.size}")
        if not 0.0 <= self.label_noise < 1.0:
            raise ValueError(f"label_noise must be in [0, 1), got {self.label_noise}")
        if not 0.0 <= self.occluder_prob <= 1.0:
            raise ValueError(f"occluder_prob must be in [0, 1], got {self.occluder_prob}")


def _colour(rng, lo=0, hi=256):
    return tuple(int(c) for c in rng.integers(lo, hi, 3))


def _mouth_curve(cx, cy, half_w, bend, n=9):
    """Points of a parabola through the mouth corners; bend > 0 puts the centre lower (a smile)."""
    xs = np.linspace(-1.0, 1.0, n)
    return [(cx + half_w * x, cy + bend * (1.0 - x * x)) for x in xs]


def _draw_face(rng, s: int, geom: np.ndarray) -> Image.Image:
    """Draw an upright face on a transparent RGBA canvas; alpha marks the face."""
    brow_tilt, brow_raise, eye_open, curve, mouth_open, mouth_width, wrinkle = geom
    face = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    d = ImageDraw.Draw(face)
    cx, cy = s / 2, s / 2 + 0.02 * s
    skin = _colour(rng, 90, 240)
    d.ellipse([cx - 0.33 * s, cy - 0.42 * s, cx + 0.33 * s, cy + 0.42 * s], fill=skin + (255,))
    hair = _colour(rng, 0, 120)
    d.chord([cx - 0.34 * s, cy - 0.44 * s, cx + 0.34 * s, cy - 0.05 * s], 180, 360, fill=hair + (255,))
    d.ellipse([cx - 0.31 * s, cy - 0.30 * s, cx + 0.31 * s, cy + 0.40 * s], fill=skin + (255,))
    dark = (20, 20, 30, 255)
    lw = max(1, round(s / 45))
    eye_y = cy - 0.06 * s
    for side in (-1, 1):
        ex = cx + side * 0.13 * s
        eh = (0.01 + 0.06 * float(np.clip(eye_open, 0, 1.3))) * s
        d.ellipse([ex - 0.055 * s, eye_y - eh, ex + 0.055 * s, eye_y + eh], fill=(245, 245, 245, 255))
        pr = min(eh, 0.025 * s)
        d.ellipse([ex - pr, eye_y - pr, ex + pr, eye_y + pr], fill=dark)
        # Brow: inner end near the nose, outer end at the temple; tilt raises the inner end.
        by = eye_y - 0.09 * s - 0.06 * s * brow_raise
        inner = (cx + side * 0.05 * s, by - 0.05 * s * brow_tilt)
        outer = (cx + side * 0.20 * s, by + 0.05 * s * brow_tilt)
        d.line([inner, outer], fill=dark, width=lw + 1)
    # Nose, and the wrinkle lines of disgust across its bridge.
    d.line([(cx, cy - 0.02 * s), (cx - 0.02 * s, cy + 0.08 * s), (cx + 0.02 * s, cy + 0.09 * s)], fill=dark, width=lw)
    for k in range(int(round(float(np.clip(wrinkle, 0, 1)) * 3))):
        wy = cy - 0.03 * s + k * 0.025 * s
        d.line([(cx - 0.05 * s, wy), (cx + 0.05 * s, wy - 0.01 * s)], fill=dark, width=lw)
    # Mouth: upper lip curve, and a filled opening down to the lower lip when open.
    my = cy + 0.21 * s
    half_w = (0.06 + 0.09 * float(np.clip(mouth_width, 0, 1.3))) * s
    upper = _mouth_curve(cx, my, half_w, 0.10 * s * curve)
    gap = 0.13 * s * float(np.clip(mouth_open, 0, 1.3))
    if gap > 1:
        lower = [(x, y + gap * math.sqrt(max(0.0, 1 - ((x - cx) / half_w) ** 2))) for x, y in upper]
        d.polygon(upper + lower[::-1], fill=(90, 10, 20, 255))
    d.line(upper, fill=dark, width=lw + 1)
    return face


def _background(rng, s: int, n_shapes: int) -> Image.Image:
    bg = Image.new("RGB", (s, s), _colour(rng))
    d = ImageDraw.Draw(bg)
    for _ in range(n_shapes):
        x0, y0 = rng.integers(-s // 4, s, 2)
        w, h = rng.integers(s // 8, s // 2, 2)
        box = [int(x0), int(y0), int(x0 + w), int(y0 + h)]
        kind = rng.integers(3)
        if kind == 0:
            d.rectangle(box, fill=_colour(rng))
        elif kind == 1:
            d.ellipse(box, fill=_colour(rng))
        else:
            d.line(box, fill=_colour(rng), width=int(rng.integers(1, 4)))
    return bg


def draw_sample(spec: SynthSpec, seed: int, index: int) -> dict:
    """One face: image (S, S, 3) uint8, label, clean_label, bg_mask and occ_mask (S, S) bool."""
    rng = np.random.default_rng([seed, index])
    s = spec.size
    clean = int(rng.integers(len(CLASSES)))
    target = np.array(_GEOMETRY[CLASSES[clean]])
    strength = rng.uniform(*spec.intensity)
    geom = _NEUTRAL + strength * (target - _NEUTRAL) + rng.normal(0.0, spec.jitter, target.shape)

    face = _draw_face(rng, s, geom)
    # Pose: rotate, scale and shift the face layer about the image centre (inverse map for PIL's AFFINE).
    angle = math.radians(rng.uniform(-spec.max_rotation, spec.max_rotation))
    scale = rng.uniform(0.85, 1.1)
    tx, ty = rng.uniform(-0.07, 0.07, 2) * s
    c, si = math.cos(angle) / scale, math.sin(angle) / scale
    ox, oy = s / 2 + tx, s / 2 + ty
    inv = (c, si, s / 2 - c * ox - si * oy, -si, c, s / 2 + si * ox - c * oy)
    face = face.transform((s, s), Image.AFFINE, inv, resample=Image.BILINEAR)

    img = _background(rng, s, spec.clutter)
    img.paste(face, (0, 0), face)
    bg_mask = np.asarray(face.getchannel("A")) < 128

    occ = Image.new("L", (s, s), 0)
    if rng.random() < spec.occluder_prob:
        draw_img, draw_occ = ImageDraw.Draw(img), ImageDraw.Draw(occ)
        w, h = rng.uniform(0.2, 0.5, 2) * s
        x0, y0 = ox + rng.uniform(-0.35, 0.35) * s - w / 2, oy + rng.uniform(-0.35, 0.35) * s - h / 2
        box = [x0, y0, x0 + w, y0 + h]
        shape = draw_img.rectangle if rng.random() < 0.5 else draw_img.ellipse
        shape(box, fill=_colour(rng))
        (draw_occ.rectangle if shape == draw_img.rectangle else draw_occ.ellipse)(box, fill=255)
    occ_mask = np.asarray(occ) > 0

    pixels = np.asarray(img, dtype=np.int16) + rng.normal(0, 6, (s, s, 1)).astype(np.int16)
    label = clean
    if rng.random() < spec.label_noise:
        label = int((clean + rng.integers(1, len(CLASSES))) % len(CLASSES))
    return {
        "image": np.clip(pixels, 0, 255).astype(np.uint8),
        "label": label,
        "clean_label": clean,
        "bg_mask": bg_mask,
        "occ_mask": occ_mask,
    }


def encode_png(array: np.ndarray) -> bytes:
    """Lossless PNG at the fastest compression: decode gives back the same pixels, and encode stays cheap."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _split_of(index: int, n: int, fractions: tuple[float, float, float]) -> str:
    train_end = round(n * fractions[0])
    val_end = train_end + round(n * fractions[1])
    return "train" if index < train_end else "val" if index < val_end else "test"


SYNTH_N = 3000  # faces drawn when no size is given (`ferlab synth`, an experiment without --data)


def make_synthfer(out, n: int = SYNTH_N, spec: SynthSpec = SynthSpec(), seed: int = 0,
                  fractions=(0.8, 0.1, 0.1), progress: bool = True, rows_per_file: int = 2000):
    """Write n SynthFER faces as shards in `out`; returns the manifest. Splits are contiguous index ranges."""
    from ferlab.data.shards import ShardWriter

    source = {"name": "synthfer", "n": n, "seed": seed, "spec": spec.__dict__ | {"intensity": list(spec.intensity)}}
    t0 = time.perf_counter()
    with ShardWriter(out, classes=CLASSES, image_size=spec.size, source=source, rows_per_file=rows_per_file,
                     extra_columns={"clean_label": "int16", "bg_mask": "binary", "occ_mask": "binary"}) as writer:
        for i in range(n):
            s = draw_sample(spec, seed, i)
            writer.add(
                id=f"synth{seed}_{i:07d}",
                split=_split_of(i, n, fractions),
                label=s["label"],
                image=encode_png(s["image"]),
                clean_label=s["clean_label"],
                bg_mask=encode_png(s["bg_mask"]),
                occ_mask=encode_png(s["occ_mask"]),
            )
            if progress and (i + 1) % 1000 == 0:
                rate = (i + 1) / (time.perf_counter() - t0)
                print(f"synthfer: {i + 1}/{n} faces ({rate:.0f}/s)", flush=True)
    return writer.manifest


def default_cache() -> str:
    import os

    return os.environ.get("FERLAB_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "ferlab"))


def synthfer_folder(n: int, size: int, seed: int, label_noise: float, cache_dir: str | None = None) -> str:
    """Where SynthFER of these settings is (or will be) cached: known before it is drawn."""
    import os

    return os.path.join(cache_dir or default_cache(), f"synthfer-n{n}-s{size}-seed{seed}-noise{label_noise:g}")


def cached_synthfer(n: int = SYNTH_N, size: int = 64, seed: int = 0, label_noise: float = 0.0,
                    cache_dir: str | None = None) -> str:
    """The path of a SynthFER shard folder for these settings, drawn on first use and reused afterwards."""
    import os

    from ferlab.data.shards import MANIFEST

    folder = synthfer_folder(n, size, seed, label_noise, cache_dir)
    if not os.path.isfile(os.path.join(folder, MANIFEST)):
        print(f"drawing SynthFER ({n} faces at {size}x{size}) into {folder}", flush=True)
        make_synthfer(folder, n=n, spec=SynthSpec(size=size, label_noise=label_noise), seed=seed)
    return folder
