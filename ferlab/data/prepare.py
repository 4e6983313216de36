"""`ferlab prepare`: a data set on disk -> aligned faces at the stored size -> shards with a manifest.

    reader (sources/*)  lists samples, label-level problems and exclusions        in the driver, no image opened
    Ray Data            read, check, align, PNG-encode each image                 in parallel, on every node
    ShardWriter         Parquet shards + manifest (counts, problems, exclusions)  in the driver, seeded random order

Bad input never crashes a run and is never dropped silently: every problem is counted and listed in the manifest
(and in problems.csv beside it) and summarised at the end; with strict=True the first one is an error naming the
file and the line.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from dataclasses import asdict

import numpy as np
from PIL import Image

from ferlab import storage
from ferlab.data.align import to_stored
from ferlab.data.shards import ShardWriter
from ferlab.data.sources import PROBLEM_KINDS, Listing, Problem, Sample, PrepareError, read_source

PREPARE_CPUS = 0.5  # logical CPUs per image task: two tasks per core, since reading files waits on the disk
BATCH = 64  # images per Ray Data task call


def load_face(sample: dict, size: int) -> tuple[bytes | None, str, str]:
    """One sample -> (PNG bytes at size x size, "", "") or (None, problem kind, detail). Grayscale stays 1 channel."""
    try:
        with open(sample["path"], "rb") as f:
            data = f.read()
        img = Image.open(io.BytesIO(data))
        img.load()  # decode now: a truncated file fails here, not later in training
    except FileNotFoundError:
        return None, "missing_file", f"{sample['path']} does not exist"
    except Exception as e:  # PIL raises many types for a corrupt file
        return None, "unreadable_image", f"{sample['path']}: {type(e).__name__}: {str(e)[:120]}"
    img = img.convert("L" if img.mode in ("L", "LA", "I", "I;16", "1", "P") and _is_gray(img) else "RGB")
    if np.ptp(np.asarray(img)) == 0:
        return None, "blank_image", f"{sample['path']}: every pixel is {np.asarray(img).flat[0]}"
    face = to_stored(img, size, landmarks=sample["landmarks"], box=sample["box"])
    out = io.BytesIO()
    face.save(out, format="PNG")
    return out.getvalue(), "", ""


def _is_gray(img: Image.Image) -> bool:
    if img.mode != "P":
        return True
    rgb = np.asarray(img.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def _process(batch: dict, size: int) -> dict:
    out = {"i": batch["i"], "image": [], "kind": [], "detail": []}
    for s in batch["sample"]:
        image, kind, detail = load_face(json.loads(s), size)
        out["image"].append(image or b"")
        out["kind"].append(kind)
        out["detail"].append(detail)
    return out


def require_samples(listing: Listing, source: str, root) -> Listing:
    """A listing with no usable image is an error naming the folder and the first problem (before Ray starts)."""
    if not listing.samples:
        raise PrepareError(f"{root}: {source} reader found no usable image ({len(listing.problems)} problems: "
                           f"{listing.problems[0].message() if listing.problems else 'none'})")
    return listing


def prepare(source: str, root, out, size: int = 112, strict: bool = False, progress: bool = True,
            listing: Listing | None = None, **reader_options) -> dict:
    """Read `source` at `root`, write shards to `out`; returns the manifest. Needs a connected Ray (ray.init).
    `listing`: the reader's result when the caller already has it (the CLI reads before starting Ray)."""
    import ray.data

    from ferlab.console import progress_bar
    from ferlab.data.pipeline import quiet_progress

    t0 = time.perf_counter()
    listing = require_samples(listing or read_source(source, root, strict=strict, **reader_options), source, root)
    n = len(listing.samples)
    if progress:
        print(f"prepare {source}: {n} faces listed from {root} in {time.perf_counter() - t0:.1f} s "
              f"({len(listing.problems)} label problems, {sum(listing.excluded.values())} excluded by the "
              f"data set's rules)", flush=True)

    # Shards in a seeded random order, not the listing's: a folder layout lists class by class, so each block (the
    # unit of the per-epoch shuffle, ferlab.data.pipeline) and so each batch would hold one class. A fixed seed: the
    # same input still gives the same shards and hash.
    listing.samples = [listing.samples[i] for i in np.random.default_rng(0).permutation(n)]
    quiet_progress()
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # shards in the order above: the same input gives the same hash
    items = [{"i": i, "sample": json.dumps(asdict(s))} for i, s in enumerate(listing.samples)]
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(n // BATCH, 4 * 64)))
    ds = ds.map_batches(_process, fn_kwargs={"size": size}, batch_size=BATCH, num_cpus=PREPARE_CPUS,
                        batch_format="numpy")

    has_soft = any(s.soft is not None for s in listing.samples)
    has_folds = any(s.fold is not None for s in listing.samples)
    manifest_extra = {}
    writer = ShardWriter(out, classes=listing.classes, image_size=size,
                         source={"name": source, "root": os.path.abspath(str(root))} | listing.info,
                         extra_columns=({"soft": "list<float32>"} if has_soft else {}) |
                                       ({"fold": "int16"} if has_folds else {}),
                         extra_manifest=manifest_extra)
    seen_hash: dict[str, str] = {}
    duplicates: dict[str, int] = {}
    bar = progress_bar(n, f"prepare {source}", "faces", disable=not progress)
    for batch in ds.iter_batches(batch_size=BATCH, batch_format="numpy"):
        for i, image, kind, detail in zip(batch["i"], batch["image"], batch["kind"], batch["detail"]):
            s: Sample = listing.samples[int(i)]
            if kind:
                listing.problem(kind, s.where, detail)  # raises under strict, naming the label line and file
            else:
                row = dict(id=s.id, split=s.split, label=s.label, image=bytes(image))
                if has_soft:
                    row["soft"] = s.soft or [float(c == s.label) for c in range(len(listing.classes))]
                if has_folds:
                    row["fold"] = s.fold
                writer.add(**row)
                if s.split in ("train", "val", "test"):  # extra evaluation splits repeat test rows on purpose
                    digest = hashlib.sha1(image).hexdigest()
                    other = seen_hash.setdefault(digest, s.split)
                    if other != s.split:
                        pair = "-".join(sorted((other, s.split), key=("train", "val", "test").index))
                        duplicates[pair] = duplicates.get(pair, 0) + 1
        bar.set_postfix(problems=len(listing.problems), refresh=False)
        bar.update(len(batch["i"]))
    bar.close()

    manifest_extra.update(problem_summary(listing) | {
        "excluded": listing.excluded, "eval_split": listing.eval_split,
        "cross_split_duplicates": duplicates,  # identical stored images in two splits (FER2013 has some)
    })
    manifest = writer.close()
    _write_problems_csv(storage.join(out, "problems.csv"), listing.problems)
    if progress:
        print(summary(manifest, time.perf_counter() - t0), flush=True)
    return manifest


def problem_summary(listing: Listing) -> dict:
    counts = {k: 0 for k in PROBLEM_KINDS}
    for p in listing.problems:
        counts[p.kind] += 1
    return {"problems": {"counts": {k: v for k, v in counts.items() if v},
                         "items": [asdict(p) for p in listing.problems]}}


def _write_problems_csv(path, problems: list[Problem]) -> None:
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(["kind", "where", "detail"])
    for p in problems:
        w.writerow([p.kind, p.where, p.detail])
    storage.write_bytes(path, f.getvalue().encode())  # beside the shards: a folder or a bucket


def summary(manifest: dict, seconds: float) -> str:
    lines = [f"wrote {manifest['image_size']}x{manifest['image_size']} shards in {seconds:.0f} s:"]
    for split, per_class in sorted(manifest["counts"].items()):
        lines.append(f"  {split:16s} {sum(per_class.values()):7d}  " +
                     " ".join(f"{c}={n}" for c, n in per_class.items()))
    problems = manifest.get("problems", {}).get("counts", {})
    lines.append("  problems: " + (", ".join(f"{k.replace('_', ' ')} {v}" for k, v in problems.items()) or "none")
                 + ("  (listed in manifest.json and problems.csv)" if problems else ""))
    if manifest.get("excluded"):
        lines.append("  excluded by the data set's rules: " +
                     ", ".join(f"{k} {v}" for k, v in manifest["excluded"].items()))
    if manifest.get("cross_split_duplicates"):
        lines.append("  identical images in two splits: " +
                     ", ".join(f"{k} {v}" for k, v in manifest["cross_split_duplicates"].items()))
    return "\n".join(lines)
