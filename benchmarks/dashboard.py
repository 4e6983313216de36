"""The Ray dashboard of a running sweep, photographed in headless Chromium for the docs (docs/img/dashboard_*.png).

    python benchmarks/dashboard.py [--out docs/img]

Starts a local Ray head (`ray start --head`, its dashboard on 127.0.0.1:8265), submits the TransFER smoke sweep as
the Ray job `sweep-smoke` with the sweep's name in its metadata (as docs/results.md tells a user to), photographs
the Jobs page and the job's page (its metadata, its tasks, its driver log: the sweep's console) once the first epoch
is reported, waits for the job, and stops Ray. Needs Debian's `chromium`.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DASHBOARD = "http://127.0.0.1:8265"
JOB = "sweep-smoke"
PAGES = {"jobs": ("#/jobs", 700), "job": (f"#/jobs/{JOB}", 1900)}  # page: (route, window height)


def ray(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ray.scripts.scripts", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def screenshot(chromium: str, url: str, path: str, profile: str, height: int) -> None:
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={profile}", "--virtual-time-budget=15000", f"--window-size=1400,{height}",
                    f"--screenshot={path}", url], capture_output=True, text=True, timeout=180, check=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(REPO, "docs", "img"), help="folder for dashboard_*.png")
    args = p.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("dashboard: error: no chromium on PATH (Debian's `chromium` package)", file=sys.stderr)
        return 2
    # A head on loopback for a browser without a token: authentication off (a cluster keeps Ray 2.60's token on)
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_ADDRESS=DASHBOARD, RAY_AUTH_MODE="disabled")
    start = ray("start", "--head", "--node-ip-address", "127.0.0.1", "--num-cpus", str(os.cpu_count()),
                "--dashboard-host", "127.0.0.1",
                "--include-dashboard", "true", env=dict(env, RAY_ADDRESS=""))
    if start.returncode != 0:
        print(f"dashboard: error: ray start failed: {start.stderr[-2000:]}", file=sys.stderr)
        return 1
    work = tempfile.mkdtemp(prefix="ferlab-dashboard-")
    try:
        submit = ray("job", "submit", "--no-wait", "--submission-id", JOB, "--metadata-json",
                     '{"sweep": "sweep_transfer_smoke"}', "--", sys.executable,
                     os.path.join(REPO, "experiments", "sweep_transfer.py"), "--smoke", "--storage",
                     os.path.join(work, "storage"), "--results-dir", os.path.join(work, "results"), env=env)
        if submit.returncode != 0:
            print(f"dashboard: error: job submit failed: {submit.stderr[-2000:]}", file=sys.stderr)
            return 1
        deadline = time.time() + 600
        while "epoch 1:" not in ray("job", "logs", JOB, env=env).stdout:  # a trial is training: worth a look
            if time.time() > deadline:
                print("dashboard: error: no epoch within 10 minutes", file=sys.stderr)
                return 1
            time.sleep(3)
        os.makedirs(args.out, exist_ok=True)
        for name, (route, height) in PAGES.items():
            path = os.path.join(args.out, f"dashboard_{name}.png")
            screenshot(chromium, f"{DASHBOARD}/{route}", path, os.path.join(work, "chromium"), height)
            print(f"dashboard: {path}", flush=True)
        done = ray("job", "logs", "--follow", JOB, env=env, timeout=900)
        print(f"dashboard: the job ended; its last line: {done.stdout.strip().splitlines()[-1:]}", flush=True)
        # what the job page counts as failed tasks (ended by a kill when a trial or a read ends), by name
        failed = ray("list", "tasks", "--filter", "state=FAILED", "--limit", "10000", "--format", "json", env=env)
        names = collections.Counter(t["name"] for t in json.loads(failed.stdout or "[]"))
        print(f"dashboard: failed tasks by name: {dict(names)}", flush=True)
    finally:
        ray("stop", "--force", env=env)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
