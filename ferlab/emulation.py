"""A Ray cluster of several nodes on one machine whose nodes share no disk, for the tests and the chaos benchmark.

The head runs in this machine's file system; every other node is a `ray start` in a mount namespace of its own
(`unshare --mount`, as root) with its own /tmp, home and working directory, so a path one node writes outside the
shared storage does not exist on another, as on the machines of a real cluster. Only the code and its Python are
seen by every node, as a cluster launcher's file mounts put them on each. A node can be killed whole, its raylet
and every process in its namespace at once, as a spot reclamation does. Written here because Ray's own
`ray.cluster_utils.Cluster` starts every node in one file system (and in its own process), which cannot show what
a node reads from another's disk. Loopback addresses only; token authentication on, as on a real cluster.
Beside it, the servers a cluster's users run with it, as real processes: an S3-compatible store and Prometheus.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray() -> str:
    ray = shutil.which("ray", path=os.path.dirname(sys.executable)) or shutil.which("ray")
    if ray is None:
        raise RuntimeError("the `ray` command is not installed next to this Python")
    return ray


def _namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _private_tmp(name: str) -> str:
    """Shell commands that give a node a fresh /tmp (the head's session files, pytest's folders and anything written
    there are not in it) while it keeps what every node must see, the code and its Python, when they lie under /tmp
    (bind-mounted aside first, then back in place)."""
    code = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    keep = sorted({p for p in (code, sys.prefix, os.path.realpath(sys.prefix)) if p.startswith("/tmp/")})
    aside = [f"/run/ferlab-{name}-{i}" for i in range(len(keep))]
    steps = [f"mkdir -p {a} && mount --bind {p} {a}" for p, a in zip(keep, aside)]
    steps.append(f"mount -t tmpfs ferlab-{name} /tmp")
    steps += [f"mkdir -p {p} && mount --bind {a} {p}" for p, a in zip(keep, aside)]
    return " && ".join(steps)


class LocalCluster:
    """`with LocalCluster() as c: c.add_node(); ...`: a head of `head_cpus` logical CPUs, then nodes added with
    `add_node`; `c.address` and `c.env` (the environment a driver needs: address, token) for the sweep. Everything
    is stopped at the end, and no process of the cluster may be left."""

    def __init__(self, head_cpus: float = 2, object_store_bytes: int = 300_000_000, env: dict | None = None,
                 autoscaling: str | None = None):
        """`autoscaling`: a cluster file for Ray's fake multi-node provider (clusters/local.yaml): the head runs the
        autoscaler, which starts and stops worker nodes (raylets of this machine's file system) of its node types
        as the demand asks; `head_cpus` is then the head type's CPU count."""
        self.head_cpus, self.store, self.autoscaling = head_cpus, object_store_bytes, autoscaling
        # each node's session files in a folder of its own (a node joining without --temp-dir uses the head's, and
        # two log monitors then forward every worker line twice); short: Ray's socket paths must fit in 107 bytes
        self.temp = tempfile.mkdtemp(prefix="ferlab-ray-", dir="/tmp")
        token = os.path.join(self.temp, "auth_token")
        with open(token, "w") as f:
            f.write(secrets.token_hex(32))
        self.token = token
        self.env = dict(env or os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token",
                        RAY_AUTH_TOKEN_PATH=token)
        self.env.pop("RAY_ADDRESS", None)
        self.address = f"127.0.0.1:{free_port()}"
        self.dashboard = f"http://127.0.0.1:{free_port()}"  # the Jobs API: `ray job submit --address`
        if autoscaling:
            # the provider starts its nodes with this machine's IP unless Ray takes the machine for a one-node one
            # (ray_constants.ENABLE_RAY_CLUSTER); so every node, and every driver of this env, stays on loopback
            self.env |= {"RAY_FAKE_CLUSTER": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        self.nodes: list[str] = []  # each added node's name (its --temp-dir under self.temp)

    def _start(self, args: list[str], private: bool, name: str):
        cmd = [_ray(), "start", "--node-ip-address=127.0.0.1", f"--object-store-memory={self.store}",
               f"--temp-dir={self.temp}/{name}", "--disable-usage-stats", *args]
        if not private:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=self.env)
        else:
            with open(self.token) as f:
                token = f.read()
            script = (f"{_private_tmp(name)} && mkdir -p {self.temp} /tmp/home /tmp/work && cd /tmp/work && "
                      f"printf %s {token} > /tmp/home/auth_token && "
                      f"HOME=/tmp/home RAY_AUTH_TOKEN_PATH=/tmp/home/auth_token FERLAB_CACHE=/tmp/home/cache "
                      f"exec {' '.join(cmd)}")
            r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                               capture_output=True, text=True, timeout=180, env=self.env)
        if r.returncode != 0:
            raise RuntimeError(f"`ray start` of node {name} failed: {(r.stdout + r.stderr)[-2000:]}")

    def __enter__(self):
        port = self.address.rsplit(":", 1)[1]
        args = ["--head", f"--port={port}", "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard.rsplit(':', 1)[1]}"]
        if self.autoscaling:
            import yaml

            with open(self.autoscaling) as f:
                config = yaml.safe_load(f)
            config["provider"]["gcs_address"] = self.address
            self.head_cpus = config["available_node_types"][config["head_node_type"]]["resources"]["CPU"]
            path = os.path.join(self.temp, "autoscaling.yaml")
            with open(path, "w") as f:
                yaml.safe_dump(config, f)
            args.append(f"--autoscaling-config={path}")
        try:
            self._start([*args, f"--num-cpus={self.head_cpus}"], private=False, name="head")
        except BaseException:
            self.stop()
            raise
        return self

    def add_node(self, cpus: float = 2, private: bool = True) -> str:
        """Start a node that joins the head; returns its name."""
        name = f"n{len(self.nodes)}"
        self._start([f"--address={self.address}", f"--num-cpus={cpus}"], private, name)
        self.nodes.append(name)
        return name

    def processes(self, name: str) -> list[int]:
        """The pids of a node's processes: those of its mount namespace, or for a node in this file system, those
        whose command line names its session folder."""
        mine = [int(p) for p in subprocess.run(["pgrep", "-f", f"{self.temp}/{name}"], capture_output=True,
                                               text=True).stdout.split()]
        spaces = {_namespace(p) for p in mine} - {_namespace(os.getpid()), None}
        if not spaces:
            return mine
        return [int(p) for p in os.listdir("/proc") if p.isdigit() and _namespace(int(p)) in spaces]

    def node_of(self, pid: int) -> str | None:
        """Which added node a process runs on (by its mount namespace)."""
        space = _namespace(pid)
        return next((name for name in self.nodes if space in {_namespace(p) for p in self.processes(name)}), None)

    def kill_node(self, name: str) -> int:
        """SIGKILL every process of a node at once (a machine lost); returns how many."""
        pids = self.processes(name)
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def stop(self) -> None:
        subprocess.run([_ray(), "stop", "--force"], capture_output=True, text=True, timeout=180, env=self.env)
        for name in self.nodes:  # a private node's processes are stopped by `ray stop` too; make sure of it
            self.kill_node(name)
        deadline = time.time() + 30
        while time.time() < deadline and subprocess.run(["pgrep", "-f", self.temp], capture_output=True).stdout:
            time.sleep(0.5)
        left = subprocess.run(["pgrep", "-af", self.temp], capture_output=True, text=True).stdout.strip()
        shutil.rmtree(self.temp, ignore_errors=True)
        if left:
            raise RuntimeError(f"Ray processes left running: {left}")

    def __exit__(self, *exc):
        self.stop()
        return False


class S3Server:
    """`with S3Server() as env:` a real S3-compatible server process on 127.0.0.1 (moto's server mode, from the dev
    extra) holding `bucket`; `env` holds the standard variables (AWS_ENDPOINT_URL, keys, region) that point every
    client at it, Ray's workers included when their nodes get them. Raises when the server does not start."""

    def __init__(self, bucket: str = "ferlab-test", log: str | None = None, moto_path: str | None = None):
        self.bucket, self.log, self.moto_path = bucket, log or os.devnull, moto_path
        self.uri = f"s3://{bucket}"

    def __enter__(self) -> dict:
        port = free_port()
        env = None
        if self.moto_path:  # another moto release, installed with `pip install --target` (LEGACY_MOTO)
            cmd = [sys.executable, "-m", "moto.server"]
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([self.moto_path, os.environ.get("PYTHONPATH", "")]))
        else:
            server = shutil.which("moto_server", path=os.path.dirname(sys.executable)) or shutil.which("moto_server")
            if server is None:
                raise RuntimeError("moto_server not found: install ferlab's dev extra (moto[server])")
            cmd = [server]
        self._log = open(self.log, "w")
        self.proc = subprocess.Popen(cmd + ["-H", "127.0.0.1", "-p", str(port)], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env)
        self.env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "ferlab",
                    "AWS_SECRET_ACCESS_KEY": "ferlab-secret", "AWS_DEFAULT_REGION": "us-east-1"}
        import boto3

        client = boto3.client("s3", endpoint_url=self.env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                              aws_access_key_id="ferlab", aws_secret_access_key="ferlab-secret")
        deadline = time.time() + 30
        while True:
            try:
                client.create_bucket(Bucket=self.bucket)
                return self.env
            except Exception:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"moto_server did not start on 127.0.0.1:{port} (log: {self.log})") from None
                time.sleep(0.2)

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self._log.close()
        return False


# An S3-compatible server that ignores conditional writes (If-None-Match, If-Match): moto before 5.0.12 accepts every
# PUT, as MinIO did before August 2024. The lock tests start it beside the current one.
LEGACY_MOTO = "moto==5.0.11"


def legacy_moto(folder: str) -> str:
    """LEGACY_MOTO installed into `folder` (pip --target, its dependencies being the current moto's), once."""
    target = os.path.join(folder, LEGACY_MOTO.replace("==", "-"))
    if not os.path.isdir(os.path.join(target, "moto")):
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", target,
                        LEGACY_MOTO], check=True)
    return target


class Prometheus:
    """`with Prometheus(folder) as prom: ... prom.query("ray_ferlab_val_acc")`: a real Prometheus process (Debian's
    `prometheus` package) on 127.0.0.1, scraping every second the Ray nodes listed in Ray's service-discovery file
    (what Ray's own prometheus.yml reads, at a 10-s interval); its data in `folder`. Raises when it does not start."""

    SD_FILE = "/tmp/ray/prom_metrics_service_discovery.json"  # Ray keeps it pointing at the newest session's nodes

    def __init__(self, folder: str):
        self.folder = folder

    def __enter__(self) -> "Prometheus":
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus not found: `apt-get install prometheus` (.ci/run installs it)")
        os.makedirs(self.folder, exist_ok=True)
        config = os.path.join(self.folder, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\nscrape_configs:\n- job_name: ray\n  file_sd_configs:\n"
                    f"  - files: ['{self.SD_FILE}']\n    refresh_interval: 1s\n")
        self.url = f"http://127.0.0.1:{free_port()}"
        self._log = open(os.path.join(self.folder, "prometheus.log"), "w")
        self.proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={self.folder}/data",
                                      f"--web.listen-address={self.url[len('http://'):]}"], stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(self.url + "/-/ready", timeout=2)
                return self
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"prometheus did not start at {self.url} (log: {self._log.name})") from None
                time.sleep(0.5)

    def query(self, expr: str) -> list[dict]:
        """An instant query's result: [{"metric": {labels}, "value": [time, "value"]}, ...]."""
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}",
                                    timeout=10) as r:
            return json.load(r)["data"]["result"]

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self._log.close()
        return False
