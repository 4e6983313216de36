"""Checkpoints as the record of a run (ferlab.train.checkpoints) and the one-sweep-per-folder lock
(ferlab.lock): checksums, the newest intact checkpoint, corrupt ones skipped, stale locks taken over."""

import json
import os
import subprocess
import sys

import pytest
import torch

from ferlab.train import checkpoints as C
from ferlab.lock import LOCK_FILE, FolderLock, Locked


def _write(run, name, epoch):
    folder = os.path.join(run, f"checkpoint_{name}")
    os.makedirs(folder)
    C.save(folder, {"epoch": epoch, "w": torch.full((3,), float(epoch))},
           [{"epoch": e + 1, "val_acc": e / 10} for e in range(epoch + 1)])
    return folder


def test_the_newest_intact_checkpoint_carries_every_epoch(tmp_path):
    run = str(tmp_path)
    _write(run, "a", 0)
    newest = _write(run, "b", 2)
    folder, rec, corrupt = C.newest_intact(run)
    assert folder == newest and rec["epoch"] == 2 and corrupt == []
    assert [h["epoch"] for h in rec["history"]] == [1, 2, 3]


def test_a_truncated_checkpoint_is_named_and_skipped_for_the_older_intact_one(tmp_path):
    run = str(tmp_path)
    older = _write(run, "a", 1)
    newest = _write(run, "b", 2)
    path = os.path.join(newest, C.CHECKPOINT_FILE)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    assert C.record(newest) is None
    folder, rec, corrupt = C.newest_intact(run)
    assert folder == older and rec["epoch"] == 1 and corrupt == [newest]


def test_checkpoints_beyond_the_newest_two_are_pruned_but_corrupt_ones_stay(tmp_path):
    """A worker killed after writing a checkpoint and before Ray registered it left a folder that Train's num_to_keep
    never removes (issue 16, finding 1); after the trial, only the newest intact ones remain, and corrupt ones stay
    as evidence (the trial's row counts them)."""
    run = str(tmp_path)
    old = [_write(run, "a", 0), _write(run, "b", 1)]  # "b": the orphan, never registered
    kept = [_write(run, "c", 2), _write(run, "e", 3)]
    bad = _write(run, "d", 4)
    with open(os.path.join(bad, C.CHECKPOINT_FILE), "r+b") as f:
        f.truncate(10)
    assert sorted(C.prune(run, keep=2)) == old
    assert sorted(f for f in os.listdir(run)) == ["checkpoint_c", "checkpoint_d", "checkpoint_e"]
    assert C.newest_intact(run)[0] == kept[1] and C.prune(run, keep=2) == []


def test_an_unfinished_checkpoint_folder_is_not_corrupt_and_is_pruned(tmp_path):
    """A worker or node killed as it reported: Ray had made the checkpoint folder and copied nothing into it, or one
    file of the two (both seen in the fault chain of test_faults, the second on a bucket, which stores each object
    whole or not at all). The write was cut short, nothing written was damaged: none is corrupt, the folders are
    removed with the old ones, and the restore ignores them."""
    run = str(tmp_path)
    kept = [_write(run, "a", 0), _write(run, "b", 1)]
    empty = os.path.join(run, "checkpoint_c")
    os.makedirs(empty)
    no_record = _write(run, "d", 2)
    os.remove(os.path.join(no_record, C.HISTORY_FILE))  # killed between the two files
    no_state = _write(run, "e", 3)
    os.remove(os.path.join(no_state, C.CHECKPOINT_FILE))  # the other order
    folder, rec, corrupt = C.newest_intact(run)
    assert folder == kept[1] and rec["epoch"] == 1 and corrupt == []
    assert len(C.scan(run)["history"]) == 4  # the history beside a missing checkpoint.pt still counts
    assert sorted(C.prune(run, keep=2)) == [empty, no_record, no_state]
    assert sorted(os.listdir(run)) == ["checkpoint_a", "checkpoint_b"]


def test_a_checkpoint_whose_record_cannot_be_read_counts_as_corrupt(tmp_path):
    run = str(tmp_path)
    _write(run, "a", 0)
    damaged = _write(run, "b", 1)
    with open(os.path.join(damaged, C.HISTORY_FILE), "w") as f:
        f.write('{"epoch": 1, "sha')  # both files there, one of them damaged
    folder, rec, corrupt = C.newest_intact(run)
    assert rec["epoch"] == 0 and corrupt == [damaged]


def test_a_second_sweep_on_the_same_folder_is_refused_naming_the_holder(tmp_path):
    with FolderLock(str(tmp_path), "sweep"):
        holder = subprocess.run(
            [sys.executable, "-c", f"from ferlab.lock import FolderLock\nwith FolderLock({str(tmp_path)!r}, "
                                   f"'sweep'): pass"], capture_output=True, text=True)
        assert holder.returncode != 0 and f"PID {os.getpid()}" in holder.stderr and "in use" in holder.stderr
    assert not os.path.exists(tmp_path / LOCK_FILE)  # released


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout),
                                                  "started": "earlier", "command": "killed"}))
    with FolderLock(str(tmp_path), "sweep"):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert "took over the stale lock" in capsys.readouterr().out


def test_the_same_process_may_lock_one_folder_twice(tmp_path):
    with FolderLock(str(tmp_path), "sweep"), FolderLock(str(tmp_path), "sweep"):
        assert os.path.exists(tmp_path / LOCK_FILE)
    assert not os.path.exists(tmp_path / LOCK_FILE)


def test_a_lock_held_on_another_host_is_never_taken_over(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": "now"}))
    with pytest.raises(Locked, match="elsewhere"), FolderLock(str(tmp_path), "sweep"):
        pass
