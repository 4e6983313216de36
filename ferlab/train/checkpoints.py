"""A trial's checkpoints as the record of its run: each holds the model state and the trial's whole per-epoch
history, with a checksum written beside it.

    <run>/checkpoint_<time>/checkpoint.pt    model, optimiser, epoch, label table (torch.save)
    <run>/checkpoint_<time>/history.json     {"epoch", "sha256" of checkpoint.pt, "history": every epoch's metrics}

Tune's own per-trial records restart their iteration count after a resume and miss epochs reported while the
driver was down; the history in the newest intact checkpoint has every epoch the trial trained, once, keyed by the
epoch. A checkpoint is verified when written (the checksum is of the file as it lies on disk) and before it is
restored; a corrupt one is named and skipped for the newest intact one in the same run folder. The run folder is
read through ferlab.storage: a local folder or a bucket alike.
"""

from __future__ import annotations

import hashlib
import json
import os

import torch

from ferlab import storage

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


def _read(folder: str) -> dict | None:
    """history.json of a checkpoint folder, parsed, or None."""
    try:
        rec = storage.read_json(storage.join(folder, HISTORY_FILE))
        return rec if isinstance(rec, dict) and "epoch" in rec else None
    except (OSError, ValueError):
        return None


def _intact(folder: str, rec: dict | None) -> bool:
    if rec is None:
        return False
    try:
        data = storage.read_bytes(storage.join(folder, CHECKPOINT_FILE))
    except OSError:
        return False
    return hashlib.sha256(data).hexdigest() == rec.get("sha256")


def record(folder: str) -> dict | None:
    """history.json of an intact checkpoint folder (its checkpoint.pt matches its checksum), else None."""
    rec = _read(folder)
    return rec if _intact(folder, rec) else None


def load(folder: str, device) -> dict:
    """checkpoint.pt of a checkpoint folder."""
    return torch.load(storage.open_binary(storage.join(folder, CHECKPOINT_FILE)), map_location=device,
                      weights_only=True)


def scan(run_dir: str, prefer: str | None = None) -> dict:
    """One pass over a Train run folder's checkpoints (each history.json read once): {"folder", "record": the intact
    checkpoint with the highest epoch, `prefer` (Ray's registered checkpoint) first among equals; "corrupt": the
    folders that hold both files but whose checkpoint.pt fails its checksum or whose history.json cannot be read
    (damage to what was written); "unfinished": folders that lack one of the two files or both (a copy cut short:
    Ray made the folder, or uploaded one file of the two, and the worker or node died before the other; a bucket
    stores each object whole or not at all, so a missing file is the only trace of a kill mid-copy, not damage);
    "history": the longest stored history, read even beside a corrupt checkpoint.pt, so the tables keep every epoch
    trained; "intact": (epoch, folder) of every intact checkpoint, newest first}."""
    folders = [storage.join(run_dir, name) for name, is_dir in storage.listdir(run_dir)
               if is_dir and name.startswith("checkpoint_")]
    if prefer and prefer not in folders and storage.is_dir(prefer):
        folders.append(prefer)
    out = {"folder": None, "record": None, "corrupt": [], "unfinished": [], "history": None, "intact": []}
    longest = None
    for folder in folders:
        rec = _read(folder)
        if rec is not None and (longest is None or rec["epoch"] > longest["epoch"]):
            longest = rec
        if {CHECKPOINT_FILE, HISTORY_FILE} - {name for name, _ in storage.listdir(folder)}:
            out["unfinished"].append(folder)
            continue
        if not _intact(folder, rec):
            out["corrupt"].append(folder)
            continue
        out["intact"].append((rec["epoch"], folder))
        if out["record"] is None or rec["epoch"] > out["record"]["epoch"] or (
                rec["epoch"] == out["record"]["epoch"] and folder == prefer):
            out["folder"], out["record"] = folder, rec
    out["history"] = longest.get("history") if longest else None
    out["intact"].sort(reverse=True)
    return out


def newest_intact(run_dir: str, prefer: str | None = None) -> tuple[str | None, dict | None, list[str]]:
    """(folder, record, corrupt folders) of `scan`."""
    found = scan(run_dir, prefer)
    return found["folder"], found["record"], found["corrupt"]


def prune(run_dir: str, keep: int, found: dict | None = None) -> list[str]:
    """Remove the intact checkpoint folders older than the newest `keep` (Train keeps `keep` of the checkpoints it
    registered; one written by a worker that died before registering it is Train's to forget, and stayed on disk)
    and the unfinished ones (a copy cut short); returns the removed folders. Corrupt ones are kept: the trial's
    row counts them, and they are evidence. `found`: the run folder's `scan`, when the caller has it (each scan
    hashes every checkpoint.pt)."""
    found = found or scan(run_dir)
    removed = [f for _, f in found["intact"][keep:]] + found["unfinished"]
    for f in removed:
        storage.rmtree(f)
    return removed
