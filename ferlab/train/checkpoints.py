"""A trial's checkpoints as the record of its run: each holds the model state and the trial's whole per-epoch
history, with a checksum written beside it.

    <run>/checkpoint_<time>/checkpoint.pt    model, optimiser, epoch, label table (torch.save)
    <run>/checkpoint_<time>/history.json     {"epoch", "sha256" of checkpoint.pt, "history": every epoch's metrics}

Tune's own per-trial records restart their iteration count after a resume and miss epochs reported while the
driver was down; the history in the newest intact checkpoint has every epoch the trial trained, once, keyed by the
epoch. A checkpoint is verified when written (the checksum is of the file as it lies on disk) and before it is
restored; a corrupt one is named and skipped for the newest intact one in the same run folder.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os

import torch

CHECKPOINT_FILE = "checkpoint.pt"
HISTORY_FILE = "history.json"


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(folder: str, state: dict, history: list[dict]) -> None:
    """checkpoint.pt, then history.json with the checksum of checkpoint.pt as written."""
    path = os.path.join(folder, CHECKPOINT_FILE)
    torch.save(state, path)
    record = {"epoch": state["epoch"], "sha256": _sha256(path), "history": history}
    with open(os.path.join(folder, HISTORY_FILE), "w") as f:
        json.dump(record, f, default=_plain)


def _plain(value):
    return value.tolist() if hasattr(value, "tolist") else str(value)


def record(folder: str) -> dict | None:
    """history.json of an intact checkpoint folder (its checkpoint.pt matches its checksum), else None."""
    try:
        with open(os.path.join(folder, HISTORY_FILE)) as f:
            rec = json.load(f)
        return rec if _sha256(os.path.join(folder, CHECKPOINT_FILE)) == rec["sha256"] else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def newest_intact(run_dir: str, prefer: str | None = None) -> tuple[str | None, dict | None, list[str]]:
    """(folder, record, corrupt folders) of the intact checkpoint with the highest epoch in a Train run folder,
    `prefer` (Ray's registered checkpoint) first among equals. Folders without history.json (older ferlab, or a
    write cut short) count as corrupt."""
    folders = sorted(f for f in glob.glob(os.path.join(run_dir, "checkpoint_*")) if os.path.isdir(f))
    if prefer and prefer not in folders and os.path.isdir(prefer):
        folders.append(prefer)
    best, best_rec, corrupt = None, None, []
    for folder in folders:
        rec = record(folder)
        if rec is None:
            corrupt.append(folder)
        elif best_rec is None or rec["epoch"] > best_rec["epoch"] or (rec["epoch"] == best_rec["epoch"]
                                                                       and folder == prefer):
            best, best_rec = folder, rec
    return best, best_rec, corrupt


def latest_history(run_dir: str) -> list[dict] | None:
    """The longest per-epoch history stored in a Train run folder, read even from a checkpoint whose model file is
    corrupt (the history file is checked on its own): the tables keep every epoch trained."""
    best = None
    for path in glob.glob(os.path.join(run_dir, "checkpoint_*", HISTORY_FILE)):
        try:
            with open(path) as f:
                rec = json.load(f)
            if best is None or rec["epoch"] > best["epoch"]:
                best = rec
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return best["history"] if best else None
