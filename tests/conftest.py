import os
import re
import subprocess

import pytest

import ferlab

# A training worker's epoch line as the driver prints it: (worker pid, epoch)
EPOCH_LINE = re.compile(r"RayTrainWorker pid=(\d+)\).*?\b" + ferlab.EPOCH_LINE.lstrip("^") + "val_acc")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: starts a real local Ray or trains for a while")


@pytest.fixture(scope="session")
def ferplus_root():
    root = os.environ.get("FERLAB_FERPLUS", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                         "ferplus"))
    if not os.path.isdir(root):
        pytest.skip(f"FERPlus copy not found at {root} (set FERLAB_FERPLUS)")
    return root


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory):
    """A small SynthFER shard folder at transfer_tiny's input size, shared by the tests of a session."""
    from ferlab.data.synth import SynthSpec, make_synthfer

    out = tmp_path_factory.mktemp("synth")
    make_synthfer(out, n=200, spec=SynthSpec(size=64), seed=3, progress=False)
    return str(out)


@pytest.fixture(scope="module")
def ray_local():
    """A 2-CPU local Ray with a small object store for one test module, shut down after it."""
    import ray

    ray.init(num_cpus=2, object_store_memory=300 * 1024 * 1024, include_dashboard=False)
    yield
    ray.shutdown()


def run_experiment_main(script: str, args: list[str], capsys) -> tuple[int, list[str]]:
    """An experiment's main(argv) in this process (its bad-input checks need no subprocess: a Python start with
    torch costs ~6 s, and these checks must run before Ray anyway); returns (exit code, non-blank stderr lines) and
    checks that no Ray was started."""
    import importlib.util

    import ray

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", script)
    spec = importlib.util.spec_from_file_location(f"experiment_{script[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    capsys.readouterr()
    from unittest import mock

    try:  # an input that is not refused would start Ray and train: fail at once instead
        with mock.patch("ferlab.tune.resources.init_ray", side_effect=AssertionError(f"{script} {args}: Ray would "
                                                                                        f"start")):
            code = module.main(args)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert not ray.is_initialized(), f"{script} {args} started Ray before refusing its input"
    return code, [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-compatible server process on 127.0.0.1 (ferlab.emulation.S3Server: moto's server mode) with one
    bucket; the standard variables (AWS_ENDPOINT_URL, keys, region) point every client at it, Ray's workers included
    (they inherit this process's environment). Yields the bucket's URI. A server that does not start fails the test:
    no skip."""
    from ferlab.emulation import S3Server

    server = S3Server(log=str(tmp_path_factory.mktemp("s3") / "moto.log"))
    with server as env:
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield server.uri
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """A real PostgreSQL server (Debian's `postgresql` package, which .ci/run installs) in a folder of its own on
    127.0.0.1, started as the `postgres` user (the server refuses root), with a database `optuna`; yields its
    SQLAlchemy URL. A server that does not start fails the test: no skip."""
    import glob
    import shutil
    import socket

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    assert found, "PostgreSQL not found: apt-get install postgresql (.ci/run installs it)"
    bindir = os.path.dirname(found[-1])
    folder = tmp_path_factory.mktemp("postgres")
    data = folder / "data"
    os.chmod(folder, 0o777)
    for parent in list(folder.parents)[:-1]:  # the server's user must reach its folder
        os.chmod(parent, os.stat(parent).st_mode | 0o711)
    shutil.chown(folder, "postgres", "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def as_postgres(*args):
        r = subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"{args[0]}: {r.stdout[-1500:]}{r.stderr[-1500:]}"

    as_postgres(f"{bindir}/initdb", "-D", str(data), "-U", "ferlab", "--auth=trust")
    as_postgres(f"{bindir}/pg_ctl", "-D", str(data), "-l", str(folder / "log"), "-w", "-o",
                f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start")
    try:
        as_postgres(f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "ferlab", "optuna")
        yield f"postgresql+psycopg2://ferlab@127.0.0.1:{port}/optuna"
    finally:
        as_postgres(f"{bindir}/pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
