"""One storage layer for a local folder and a bucket (ferlab.storage), checked on both against a real S3-compatible
server process: files, folders, the atomic create the locks rest on, checkpoints and their scan, shards, the locks,
and the one-line errors for a storage that cannot be used."""

import os
import socket
import time
import uuid

import pytest
import torch

from ferlab import storage
from ferlab.train import checkpoints as C
from ferlab import lock as L


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path):
    """A fresh storage folder: a local one, or a prefix in the test server's bucket."""
    if request.param == "local":
        return str(tmp_path / "store")
    return storage.join(request.getfixturevalue("s3_server"), uuid.uuid4().hex[:8])


def test_files_folders_and_the_atomic_create(root):
    storage.write_json(storage.join(root, "a", "x.json"), {"k": 1})
    storage.write_bytes(storage.join(root, "b.bin"), b"\x00\x01")
    assert storage.listdir(root) == [("a", True), ("b.bin", False)]
    assert storage.read_json(storage.join(root, "a", "x.json")) == {"k": 1}
    assert storage.is_dir(storage.join(root, "a")) and storage.is_file(storage.join(root, "b.bin"))
    with pytest.raises(FileNotFoundError, match="nope: no such file"):
        storage.read_bytes(storage.join(root, "nope"))
    assert L.create_exclusive(storage.join(root, "lock"), b"me")
    assert not L.create_exclusive(storage.join(root, "lock"), b"you")  # exactly one creator
    assert storage.read_bytes(storage.join(root, "lock")) == b"me"
    storage.rmtree(storage.join(root, "a"))
    assert storage.listdir(root) == [("b.bin", False), ("lock", False)] and storage.listdir(storage.join(root, "a")) == []


def _checkpoint(run: str, name: str, epoch: int) -> str:
    """A checkpoint folder as Ray Train leaves it on the storage: written locally, then copied there."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        C.save(tmp, {"epoch": epoch, "w": torch.full((3,), float(epoch))}, [{"epoch": e + 1} for e in range(epoch + 1)])
        storage.upload(tmp, storage.join(run, name))
    return storage.join(run, name)


def test_checkpoints_are_scanned_verified_and_pruned_on_the_storage(root):
    run = storage.join(root, "train_runs", "t1")
    for e in range(3):
        _checkpoint(run, f"checkpoint_{e}", e)
    newest = storage.join(run, "checkpoint_2")
    storage.write_bytes(storage.join(newest, C.CHECKPOINT_FILE), b"truncated")  # a corrupt newest checkpoint
    folder, rec, corrupt = C.newest_intact(run)
    assert folder == storage.join(run, "checkpoint_1") and rec["epoch"] == 1 and corrupt == [newest]
    assert C.scan(run)["history"] == [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}]  # read beside the corrupt file
    assert torch.equal(C.load(folder, "cpu")["w"], torch.full((3,), 1.0))
    assert C.prune(run, keep=1) == [storage.join(run, "checkpoint_0")]
    assert [n for n, _ in storage.listdir(run)] == ["checkpoint_1", "checkpoint_2"]  # the corrupt one is evidence
    assert C.newest_intact(storage.join(root, "never_ran")) == (None, None, [])


def test_shards_are_written_to_and_read_from_the_storage(root):
    from ferlab.data.shards import open_shards
    from ferlab.data.synth import SynthSpec, make_synthfer

    make_synthfer(storage.join(root, "shards"), n=40, spec=SynthSpec(size=32), seed=1, progress=False)
    shards = open_shards(storage.join(root, "shards"), check_hash=True)
    assert shards.count("train") + shards.count("val") + shards.count("test") == 40
    assert all(storage.is_file(f) for f in shards.files("train"))


def test_one_holder_of_a_lock_and_a_silent_holder_is_taken_over(root, monkeypatch, capsys):
    folder = storage.join(root, "sweep")
    with L.FolderLock(folder, "sweep"):
        other = {"host": "elsewhere", "pid": 1}  # as another node sees it: not this host, so the PID says nothing
        monkeypatch.setattr(socket, "gethostname", lambda: other["host"])
        with pytest.raises(L.Locked, match=f"in use by another sweep: PID {os.getpid()}"):
            L.FolderLock(folder, "sweep").__enter__()
        monkeypatch.undo()
    assert not storage.exists(storage.join(folder, L.LOCK_FILE))  # released
    # a holder on another node that stopped renewing its heartbeat (the node was lost) is taken over
    storage.write_json(storage.join(folder, L.LOCK_FILE), {"host": "lost-node", "pid": 7, "started": "earlier",
                                                           "heartbeat": time.time() - L.STALE_S - 5})
    with L.FolderLock(folder, "sweep"):
        assert storage.read_json(storage.join(folder, L.LOCK_FILE))["pid"] == os.getpid()
    out = capsys.readouterr().out
    assert "took over the stale lock" in out and "no heartbeat for" in out
    storage.write_json(storage.join(folder, L.LOCK_FILE), {"host": "busy-node", "pid": 7, "started": "now",
                                                           "heartbeat": time.time()})
    with pytest.raises(L.Locked, match="busy-node"):  # a live holder elsewhere is never taken over
        L.FolderLock(folder, "sweep").__enter__()


def test_a_waiting_lock_gets_it_when_the_holder_releases(root, monkeypatch):
    import threading

    monkeypatch.setattr(L, "POLL_S", 0.05)
    folder, order = storage.join(root, "mgn"), []
    first = L.FolderLock(folder, "MGN stage")
    first.__enter__()

    def waiter():
        with L.FolderLock(folder, "MGN stage", wait=True):
            order.append("second")

    monkeypatch.setattr(socket, "gethostname", lambda: "another-node")  # else this process would hold it already
    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.5)
    order.append("first done")
    monkeypatch.undo()
    first.__exit__(None, None, None)
    t.join(timeout=30)
    assert order == ["first done", "second"]


def test_a_storage_that_cannot_be_used_is_one_line(s3_server):
    with pytest.raises(storage.StorageError, match=r"^--storage s3://no-such-bucket/x: no bucket 'no-such-bucket'"):
        storage.check("s3://no-such-bucket/x", "--storage")
    with pytest.raises(storage.StorageError, match=r"^--storage foo://x/y: cannot be opened as storage"):
        storage.check("foo://x/y", "--storage")
    with pytest.raises(storage.StorageError, match=r"^--data s3://ferlab-test/none: no such file or folder"):
        storage.check(s3_server + "/none", "--data", must_exist=True)
    assert storage.check(s3_server + "/new/prefix/", "--storage") == s3_server + "/new/prefix"


def test_a_shard_uri_that_cannot_be_read_is_named(s3_server):
    from ferlab.data.shards import ShardError, open_shards

    with pytest.raises(ShardError, match=r"s3://ferlab-test/nothing-here: no such shard folder"):
        open_shards(s3_server + "/nothing-here")
    storage.write_bytes(s3_server + "/half/train-00000.parquet", b"PAR1")
    with pytest.raises(ShardError, match=r"s3://ferlab-test/half/manifest.json: missing"):
        open_shards(s3_server + "/half")


@pytest.mark.parametrize("uri,match", [
    ("s3://no-such-bucket/runs", "--storage s3://no-such-bucket/runs: no bucket 'no-such-bucket'"),
    ("foo://bucket/runs", "--storage foo://bucket/runs: cannot be opened as storage"),
])
def test_a_sweep_on_storage_it_cannot_use_stops_before_ray(uri, match, s3_server, capsys):
    from conftest import run_experiment_main

    code, lines = run_experiment_main("sweep_transfer.py", ["--smoke", "--storage", uri], capsys)
    assert code == 2 and len(lines) == 1 and match in lines[0], lines
