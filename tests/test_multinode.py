"""A real two-node Ray cluster on this machine: a head and a second node started as separate processes with the
`ray` command (as on a cluster), a small sweep that must place its two trials on both nodes, the results saying
which node ran which trial, and both nodes stopped cleanly.

Why the trials must spread: each node offers 2 logical CPUs and each trial's training worker asks for 1.5, so two
workers cannot share a node; the two concurrent trials land one per node or not at all.
"""

from __future__ import annotations

import json
import secrets
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import pandas as pd
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAY = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray(*args, env, timeout=180):
    return subprocess.run([RAY, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.slow
def test_sweep_spreads_over_two_nodes(tmp_path, tiny_synth):
    if RAY is None:
        pytest.skip("the `ray` command is not installed next to this Python")
    port = _free_port()
    # both nodes' session files here, not in the machine's /tmp/ray; short, because Ray's socket paths must fit
    # in 107 bytes
    temp = tempfile.mkdtemp(prefix="ferlab-ray-", dir="/tmp")
    # Token authentication as on a real cluster: one token, given to every node and to the sweep's driver.
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    env.pop("RAY_ADDRESS", None)
    address = f"127.0.0.1:{port}"
    head = _ray("start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                "--object-store-memory=300000000", f"--temp-dir={temp}", "--dashboard-host=127.0.0.1",
                f"--dashboard-port={_free_port()}", "--disable-usage-stats", env=env)
    try:
        assert head.returncode == 0, head.stdout + head.stderr
        second = _ray("start", f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                      "--object-store-memory=300000000", "--disable-usage-stats", env=env)
        assert second.returncode == 0, second.stdout + second.stderr
        results = tmp_path / "results"
        sweep = subprocess.run(
            [sys.executable, os.path.join(REPO, "experiments", "sweep_transfer.py"), "--address", address,
             "--data", tiny_synth, "--samples", "2", "--epochs", "1", "--grace-period", "1",
             "--cpus-per-worker", "1.5", "--storage", str(tmp_path / "storage"), "--results-dir", str(results),
             "--name", "two_nodes"], capture_output=True, text=True, timeout=900, env=env, cwd=REPO)
        assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
        df = pd.read_csv(results / "trials.csv")
        assert len(df) == 2 and (df["status"] == "ok").all()
        status = _ray("status", f"--address={address}", env=env)
        nodes = json.loads(subprocess.run(
            [sys.executable, "-c", "import json, ray; ray.init(address=%r, logging_level='ERROR'); "
             "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']]))" % address],
            capture_output=True, text=True, timeout=120, env=env).stdout.strip().splitlines()[-1])
        assert len(nodes) == 2, status.stdout
        assert sorted(df["node_id"]) == sorted(nodes), (df["node_id"].tolist(), nodes)  # one trial per node
    finally:
        stop = _ray("stop", "--force", env=env)
    assert stop.returncode == 0, stop.stderr
    left = subprocess.run(["pgrep", "-f", temp], capture_output=True, text=True)
    shutil.rmtree(temp, ignore_errors=True)
    assert left.stdout.strip() == "", f"Ray processes left running: {left.stdout}"
