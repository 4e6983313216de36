"""clusters/gpu.yaml's autoscaling on one machine: Ray's fake multi-node provider (clusters/local.yaml), a sweep
submitted as a Ray job, with data and storage in a bucket of a real S3-compatible server."""

import os
import re
import subprocess
import sys
import time
import uuid

import pandas as pd
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAKE_HEAD = "f" * 51 + "00000"  # ray.autoscaler._private.fake_multi_node.node_provider.FAKE_HEAD_NODE_ID


def _status(cluster) -> str:
    """`ray status`, once the autoscaler has reported (right after the head starts it says "No cluster status")."""
    deadline = time.time() + 60
    while True:
        r = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "status", "--address", cluster.address],
                           capture_output=True, text=True, timeout=60, env=cluster.env)
        if "Active:" in r.stdout or time.time() > deadline:
            return r.stdout
        time.sleep(2)


def _workers(status: str) -> int:
    """Active worker nodes in `ray status` output."""
    active = status.split("Active:")[1].split("Pending:")[0]
    return sum(int(n) for n, kind in re.findall(r"^\s*(\d+) (\S+)", active, re.M) if kind != "ray.head.default")


@pytest.mark.slow
def test_autoscaled_sweep_as_a_job_from_zero_workers_and_back(tmp_path, s3_server):
    """The cluster recipe of clusters/gpu.yaml, with the fake provider standing in for AWS: a head that holds no
    training worker (1 CPU, as gpu.yaml's CPU-only head holds no GPU) and no worker node; `ray job submit` of a
    TransFER smoke sweep of 2 trials with --max-concurrent 2, each trial's worker asking for 1.5 CPUs (a node type
    of 2 CPUs stands for one GPU). The autoscaler adds worker nodes for the two pending trials, the trials run on
    them, read the shards from the bucket and write their checkpoints to it, the job succeeds, and the idle nodes are
    terminated after the sweep. Before, the sweep failed at once on such a cluster: its concurrency
    was what the cluster held when it started (no trial)."""
    from ferlab import storage
    from ferlab.emulation import LocalCluster

    prefix = storage.join(s3_server, uuid.uuid4().hex[:8])
    data, store = storage.join(prefix, "shards"), storage.join(prefix, "runs")
    synth = subprocess.run([sys.executable, "-m", "ferlab.cli", "synth", "--out", data, "--n", "300", "--size", "64"],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert synth.returncode == 0, synth.stderr[-2000:]
    results = tmp_path / "results"
    with LocalCluster(autoscaling=os.path.join(REPO, "clusters", "local.yaml")) as cluster:
        assert _workers(_status(cluster)) == 0
        job = subprocess.run(
            [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address", cluster.dashboard,
             "--submission-id", "sweep-1", "--", sys.executable, os.path.join(REPO, "experiments", "sweep_transfer.py"),
             "--smoke", "--samples", "2", "--grace-period", "2", "--data", data, "--storage", store,
             "--cpus-per-worker", "1.5", "--max-concurrent", "2", "--results-dir", str(results)],
            capture_output=True, text=True, timeout=900, env=cluster.env, cwd=REPO)
        out = job.stdout + job.stderr
        assert job.returncode == 0 and "Job 'sweep-1' succeeded" in out, out[-4000:]
        # Scale-down: the sweep cancels Ray Train's resource requests when it ends (ASHA's stop at the last epoch
        # ends a trial's controller before it cancels its own, and they would hold the nodes 180 s), then
        # idle_timeout_minutes (12 s) and the autoscaler's 5-s updates.
        deadline = time.time() + 120
        while _workers(status := _status(cluster)) and time.time() < deadline:
            time.sleep(5)
        assert _workers(status) == 0, status
    df = pd.read_csv(results / "trials.csv")
    assert len(df) == 2 and (df["status"] == "ok").all() and (df["epochs"] == 2).all(), df
    # nodes the autoscaler launched (two gpu_small or one gpu_large, as Ray's scheduler picks), never the head
    assert FAKE_HEAD not in set(df["node_id"]) and all(n.startswith("f" * 51) for n in df["node_id"]), df
    runs = storage.join(store, "sweep_transfer_smoke", "train_runs")
    assert sorted(n for n, _ in storage.listdir(runs)) == sorted(df["trial"])
