"""Fault injection: a sweep killed or interrupted and resumed ends with the tables of an uninterrupted run with the
same seed (every epoch once, the same metrics: training is deterministic on the CPU), with the right exit codes, and
no process of the test's Ray left behind. Each sweep runs in its own process group, which the test kills by its id:
only processes the test started."""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
from conftest import EPOCH_LINE

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "experiments", "sweep_transfer.py")
EPOCHS = 4  # the fault chain needs two epochs after the one a Ctrl-C may still finish
SAME = ["epoch", "val_acc", "val_loss", "train_loss", "best_val_acc"]  # what must not change; times may


def _args(data, tmp, name, extra=(), store=None):
    return ["--data", data, "--samples", "1", "--epochs", str(EPOCHS), "--grace-period", str(EPOCHS), "--p1", "0.3",
            "--storage", store or str(tmp / "storage"), "--results-dir", str(tmp / name), "--num-cpus", "2", "--name", name,
            "--seed", "1", *extra]


def _run(args, timeout=600):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          start_new_session=True)


def _start_and_signal(args, sig, after: str = "", timeout=600, worker_kill: bool = False, driver_only: bool = False):
    """Start a sweep in a new process group; when a line containing `after` appears, send `sig` to the whole group
    (SIGKILL: a crashed machine; SIGINT: Ctrl-C in a terminal). With `worker_kill`, instead: SIGKILL the training
    worker that prints the run's first epoch line (its pid is in Ray's log prefix, and it must be in the sweep's
    session), let the sweep go on, and send `sig` at the first line of a later epoch. Which epoch comes first is not
    fixed: after a Ctrl-C, the interrupted run may finish and checkpoint one more epoch before it stops. Returns
    (exit code, output)."""
    proc = subprocess.Popen([sys.executable, SCRIPT, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=REPO, start_new_session=True)
    lines, seen, killed = [], threading.Event(), []

    def read():
        for line in proc.stdout:
            lines.append(line)
            epoch = EPOCH_LINE.search(line) if worker_kill else None
            if epoch and not killed:
                pid = int(epoch.group(1))
                if os.getsid(pid) == proc.pid:  # Ray's workers have groups of their own, in the sweep's session
                    os.kill(pid, signal.SIGKILL)
                killed.append(int(epoch.group(2)))
            elif (epoch and int(epoch.group(2)) > killed[0]) or (not worker_kill and after in line):
                seen.set()
        seen.set()  # the sweep ended first: the assertions below say so

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert seen.wait(timeout) and proc.poll() is None, "".join(lines)[-3000:]
    sent = time.time()
    (os.kill if driver_only else os.killpg)(proc.pid, sig)  # the driver alone: what Kubernetes signals (PID 1)
    code = proc.wait(timeout=120)
    lines.append(f"[test] exited {time.time() - sent:.1f} s after the signal\n")
    reader.join(timeout=30)
    _reap(proc.pid)
    return code, "".join(lines)


def _group(pgid):
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if os.getpgid(int(pid)) == pgid:
                    out.append(int(pid))
            except ProcessLookupError:
                pass
    return out


def _reap(pgid, wait=60):
    """Every process of the sweep's group is gone (Ray's agents included): killed by the group id if need be."""
    deadline = time.time() + wait
    while _group(pgid) and time.time() < deadline:
        time.sleep(1)
    if _group(pgid):
        os.killpg(pgid, signal.SIGKILL)
        time.sleep(2)
    assert not _group(pgid)


def _tables(folder):
    trials = pd.read_csv(folder / "trials.csv")
    hist = pd.read_csv(folder / "history.csv")
    return trials, hist[SAME].sort_values("epoch", ignore_index=True)


@pytest.fixture(scope="module")
def reference(tiny_synth, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    r = _run(_args(tiny_synth, tmp, "ref"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # on local storage the Optuna study is an SQLite file beside the experiment (optuna-dashboard opens it)
    import json

    import optuna

    run = json.loads((tmp / "ref" / "run.json").read_text())
    # named, and there: SQLite would create an empty database at a missing path (a file named "None" once)
    assert run["optuna_db"] and os.path.isfile(run["optuna_db"]), run.get("optuna_db")
    studies = optuna.get_all_study_summaries(f"sqlite:///{run['optuna_db']}")
    assert len(studies) == 1 and studies[0].n_trials == 1 and studies[0].study_name.startswith("ref-")
    return (*_tables(tmp / "ref"), tmp)


def test_ctrl_c_a_worker_kill_and_a_driver_kill_resume_to_the_same_tables(reference, tiny_synth, tmp_path,
                                                                          s3_server):
    """Three faults in a row (one chain, to keep CI short), with the sweep's storage in a bucket as on a cluster:
    SIGTERM to the driver alone after epoch 1, as Kubernetes, Slurm or a spot reclamation sends it, handled as Ctrl-C
    (Tune's own handler: exit 143 within Kubernetes' 30 s grace, tables marked partial, the resume hint; before,
    Ray's C++ handler ended the driver with exit 134 and no tables: seen once with the handler removed); in the
    resumed sweep, the training worker killed as it
    prints its first epoch (2, or 3 when the interrupted run still finished epoch 2: the trial retries from its newest
    intact checkpoint in the bucket, registered by Ray or not), then the driver killed with its whole process group
    after a later epoch (a crashed head node: its disk is not needed, Tune's state and the lock are in the bucket);
    then a second resume: the tables equal those of the uninterrupted run on local storage, every epoch once, and
    the trial keeps two checkpoint folders."""
    import json
    import uuid

    from ferlab import storage

    store = storage.join(s3_server, "faults-" + uuid.uuid4().hex[:8])
    code, out = _start_and_signal(_args(tiny_synth, tmp_path, "int", store=store), signal.SIGTERM, after="epoch 1:",
                                  driver_only=True)
    assert code == 128 + signal.SIGTERM, out[-3000:]
    assert "interrupted: these tables are partial" in out and "resume with --resume" in out
    assert float(re.search(r"exited ([\d.]+) s after the signal", out).group(1)) < 30
    assert json.loads((tmp_path / "int" / "run.json").read_text())["interrupted"] is True
    assert (pd.read_csv(tmp_path / "int" / "trials.csv")["status"] != "ok").all()
    code, out = _start_and_signal(_args(tiny_synth, tmp_path, "int", ["--resume"], store=store), signal.SIGKILL,
                                  worker_kill=True)
    assert code == -signal.SIGKILL, out[-3000:]
    assert "a training worker failed" in out, out[-3000:]
    r = _run(_args(tiny_synth, tmp_path, "int", ["--resume"], store=store))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "ASHA's rungs rebuilt from the stored histories of 1 trials" in r.stdout  # the restored scheduler found
    trials, hist = _tables(tmp_path / "int")
    pd.testing.assert_frame_equal(hist, reference[1])  # every epoch once, the same numbers
    ref = reference[0]
    assert trials["status"].tolist() == ["ok"] and trials["epochs"].tolist() == [EPOCHS]
    assert trials["best_val_acc"].tolist() == ref["best_val_acc"].tolist()
    assert trials["best_epoch"].tolist() == ref["best_epoch"].tolist()
    # the column of a sweep with a corrupt checkpoint; a copy the kill cut short (no file or one of two) is not one
    assert "corrupt_checkpoints" not in trials
    assert not json.loads((tmp_path / "int" / "run.json").read_text())["interrupted"]
    runs = storage.join(store, "int", "train_runs")
    (trial,) = storage.listdir(runs)
    assert len([n for n, is_dir in storage.listdir(storage.join(runs, trial[0]))
                if is_dir and n.startswith("checkpoint_")]) == 2  # a never-registered or unfinished one is pruned


def test_a_truncated_checkpoint_is_named_and_the_tables_keep_every_epoch(reference, tiny_synth, tmp_path):
    import glob
    import shutil

    shutil.copytree(reference[2] / "storage" / "ref", tmp_path / "storage" / "ref")  # the finished reference sweep
    os.remove(tmp_path / "storage" / "ref" / ".ferlab.lock") if (tmp_path / "storage" / "ref" / ".ferlab.lock").exists() \
        else None
    newest = max(glob.glob(str(tmp_path / "storage" / "ref" / "train_runs" / "*" / "checkpoint_2*")))
    path = os.path.join(newest, "checkpoint.pt")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 3)
    r = _run(_args(tiny_synth, tmp_path, "ref", ["--resume"]))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"checkpoint {newest} is corrupt" in r.stdout
    trials, hist = _tables(tmp_path / "ref")
    pd.testing.assert_frame_equal(hist, reference[1])
    assert trials["checkpoint_path"].iloc[0] != newest and trials["corrupt_checkpoints"].tolist() == [1]


def test_a_second_sweep_on_the_same_name_is_refused_before_ray(tiny_synth, tmp_path):
    from ferlab.lock import FolderLock

    with FolderLock(str(tmp_path / "storage" / "busy"), "sweep"):
        t0 = time.time()
        r = _run(_args(tiny_synth, tmp_path, "busy"), timeout=120)
    assert r.returncode == 2 and f"in use by another sweep: PID {os.getpid()}" in r.stderr
    assert time.time() - t0 < 60 and "Started a local Ray" not in r.stdout + r.stderr
