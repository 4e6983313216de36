"""Locks that hold or refuse (ferlab.lock), on the stores they meet: a folder, a real S3-compatible server that honours
conditional writes (the current moto) and a real one that ignores them (LEGACY_MOTO: every PUT accepted, as MinIO
before August 2024). Eight processes on one stale lock: exactly one holds it (the old read-remove-create gave two
holders: seen once with it put back)."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time

import pytest

from ferlab import lock as L
from ferlab import storage


def _fresh_clients():
    """Clients made anew for the endpoint now in the environment (they are cached per process)."""
    storage.s3_client.cache_clear()
    storage._filesystem.cache_clear()
    L.conditional_writes.cache_clear()


@pytest.fixture(scope="module")
def legacy_store(s3_server, tmp_path_factory):
    """A second server that ignores If-None-Match and If-Match, on 127.0.0.1; the standard variables point at it
    for the test and back at the current server after it. Yields its bucket's URI."""
    from ferlab.data.synth import default_cache
    from ferlab.emulation import S3Server, legacy_moto

    server = S3Server(bucket="ferlab-legacy", moto_path=legacy_moto(default_cache()),
                      log=str(tmp_path_factory.mktemp("legacy") / "moto.log"))
    with server as env:
        yield server.uri, env


@pytest.fixture
def on_legacy(legacy_store, monkeypatch):
    uri, env = legacy_store
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    _fresh_clients()
    yield uri
    monkeypatch.undo()
    _fresh_clients()


def test_the_probe_tells_the_stores_apart(s3_server, on_legacy):
    assert "If-None-Match: * ignored" in L.conditional_writes(on_legacy)
    assert L.create_exclusive(f"{on_legacy}/k", b"1") and L.create_exclusive(f"{on_legacy}/k", b"2")  # two creators
    with pytest.raises(L.Locked, match=r"s3://ferlab-legacy \(http://127.0.0.1:\d+\) cannot hold ferlab's locks: "
                                       r"it accepted a second create .* --lock-dir DIR"):
        with L.FolderLock(f"{on_legacy}/sweeps/a", "sweep"):
            pass


def test_the_honouring_store_passes_the_probe(s3_server):
    _fresh_clients()
    assert L.conditional_writes(s3_server) == ""


def test_a_sweep_on_a_store_that_cannot_lock_is_refused_before_ray(on_legacy, tmp_path, capsys):
    from conftest import run_experiment_main

    code, err = run_experiment_main("sweep_transfer.py", ["--smoke", "--storage", f"{on_legacy}/st", "--name", "bar",
                                                          "--results-dir", str(tmp_path / "r")], capsys)
    assert code == 2 and len(err) == 1 and "cannot hold ferlab's locks" in err[0], err


def test_lock_dir_holds_the_lock_of_a_store_that_cannot(on_legacy, tmp_path):
    folder = f"{on_legacy}/sweeps/b"
    with L.FolderLock(folder, "sweep", lock_dir=str(tmp_path)):
        other = subprocess.run([sys.executable, "-c", f"from ferlab.lock import FolderLock\nwith FolderLock("
                                f"{folder!r}, 'sweep', lock_dir={str(tmp_path)!r}): pass"],
                               capture_output=True, text=True, env=os.environ.copy())
        assert other.returncode != 0 and "is in use by another sweep" in other.stderr
        assert len(os.listdir(tmp_path)) == 1
    assert os.listdir(tmp_path) == []


def _taker(path: str, barrier, out):
    _fresh_clients()  # a forked process must not share the parent's connections
    barrier.wait()
    try:
        with L.FolderLock(path, "sweep"):
            t0 = time.time()
            time.sleep(1.5)
            out.put(("held", t0, time.time()))
    except L.Locked:
        out.put(("refused", 0, 0))
    except Exception as e:  # noqa: BLE001: shown by the test
        out.put((repr(e), 0, 0))


@pytest.mark.parametrize("where", ["folder", "bucket"])
def test_eight_takers_of_one_stale_lock_give_one_holder(where, s3_server, tmp_path):
    _fresh_clients()
    folder = str(tmp_path) if where == "folder" else f"{s3_server}/stale-{time.time_ns()}"
    if where == "folder":  # a holder on this host whose process is gone
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True)
        holder = {"host": socket.gethostname(), "pid": int(dead.stdout), "started": "earlier"}
    else:  # a holder on a node that is gone: no heartbeat for long
        holder = {"host": "gone-node", "pid": 1, "started": "earlier", "heartbeat": time.time() - 10 * L.STALE_S}
    assert L.create_exclusive(storage.join(folder, L.LOCK_FILE), json.dumps(holder).encode())
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_taker, args=(folder, barrier, out)) for _ in range(8)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    held = sorted((t0, t1) for kind, t0, t1 in results if kind == "held")
    overlapping = any(b[0] < a[1] for a, b in zip(held, held[1:]))
    assert not overlapping and {kind for kind, _, _ in results} <= {"held", "refused"}, results
    assert len(held) == 1, results  # the others found a live holder and were refused (wait=False)
