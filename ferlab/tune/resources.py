"""Ray set-up and resource arithmetic: how a trial reserves CPUs and GPUs, how many fit at once, and `init_ray`.

- the trial driver only waits on its trainer: it reserves DRIVER_CPUS (a quarter CPU);
- Ray Data tasks reserve DATA_CPUS each, so data work always finds room next to the training workers;
- each training worker reserves `cpus_per_worker` CPUs and its share of `gpus_per_trial` (split evenly over the
  trial's workers: --gpus-per-trial 4 --workers-per-trial 4 is one GPU per DDP rank);
- concurrent trials = --max-concurrent, else what the cluster holds now of (driver + workers), within its GPUs.
"""

from __future__ import annotations

import os

from ferlab.data.pipeline import DATA_CPUS

DRIVER_CPUS = 0.25


_connected = False  # whether init_ray joined a running cluster (which may autoscale) rather than starting Ray here


def concurrent_trials(spec, resources: dict, cluster: bool | None = None) -> int:
    """How many trials of a SweepSpec run at once in `resources` (ray.cluster_resources()).

    On a local Ray: what it holds, capped by `spec.max_concurrent`; a trial bigger than it fails here (it would wait
    forever). On a cluster (`cluster`, default: init_ray joined one), which may autoscale from no worker node (as
    clusters/gpu.yaml does): `spec.max_concurrent` when given, the autoscaler adding nodes for the trials that do
    not fit yet; else what it holds now, and 1 when that is none (its demand makes the autoscaler add a node)."""
    cluster = _connected if cluster is None else cluster
    cpus_needed = DRIVER_CPUS + spec.workers_per_trial * spec.cpus_per_worker
    n = int((resources.get("CPU", 0) - DATA_CPUS) // cpus_needed)
    if spec.gpus_per_trial > 0:
        n = min(n, int(resources.get("GPU", 0) // spec.gpus_per_trial))
    if cluster and spec.max_concurrent:
        return spec.max_concurrent
    if spec.max_concurrent:
        n = min(n, spec.max_concurrent)
    if n < 1 and not cluster:
        raise DoesNotFit(_does_not_fit(spec, resources))
    if n < 1:
        print(f"the cluster holds no trial now (one needs {cpus_needed} CPUs and {spec.gpus_per_trial} GPUs; it has "
              f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs): running 1 trial at a time, for "
              f"which an autoscaling cluster adds a node; --max-concurrent N runs N at once", flush=True)
    return max(n, 1)


class DoesNotFit(ValueError):
    """A trial bigger than the local Ray: said in one line, before Ray starts where it can be."""


def _does_not_fit(spec, resources: dict) -> str:
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    need = DRIVER_CPUS + spec.workers_per_trial * spec.cpus_per_worker
    fits = int((cpus - DATA_CPUS - DRIVER_CPUS) / spec.workers_per_trial * 20) / 20  # in steps of 0.05 CPU
    way = (f"--cpus-per-worker {fits:g} fits" if fits > 0 else "fewer --workers-per-trial fit") + \
        " (or a larger --num-cpus)"
    if spec.gpus_per_trial > gpus:
        way = f"it has {gpus:g} GPUs: --gpus-per-trial {gpus:g} or less"
    return (f"one trial does not fit: it needs {need:g} CPUs ({spec.workers_per_trial} workers x "
            f"{spec.cpus_per_worker:g} + {DRIVER_CPUS} for its driver) + {DATA_CPUS} for data and "
            f"{spec.gpus_per_trial:g} GPUs; this Ray has {cpus:g} CPUs: {way}")


def worker_resources(cpus_per_worker: float, gpus_per_trial: float, workers_per_trial: int) -> dict:
    """What each training worker (DDP rank) of a trial reserves: its CPUs and an even share of the trial's GPUs."""
    gpus = gpus_per_trial / workers_per_trial
    return {"CPU": cpus_per_worker} | ({"GPU": gpus} if gpus else {})


def check_address(address: str | None) -> None:
    """A cluster address (`--address`, or RAY_ADDRESS) where nothing answers fails here within seconds, naming it:
    Ray's own connection attempt retries for minutes, printing time-outs. "auto" and unset are left to Ray."""
    address = address or os.environ.get("RAY_ADDRESS")
    host, _, port = (address or "").split("//")[-1].rpartition(":")  # host:port, also ray://host:port
    if not host or not port.isdigit():
        return
    import socket

    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as e:
        raise ConnectionError(f"--address {address}: no Ray cluster answers there ({e.strerror or e})") from None


def _ray_data_logging_file() -> str:
    """Ray Data's logging configuration with its console at WARNING, as the YAML file RAY_DATA_LOGGING_CONFIG names
    (written under the cache, once per content)."""
    import hashlib

    import yaml

    from ferlab.data.synth import default_cache
    from ferlab.internals import ray_data_logging_config

    text = yaml.safe_dump(ray_data_logging_config("WARNING"))
    path = os.path.join(default_cache(), f"ray_data_logging-{hashlib.sha256(text.encode()).hexdigest()[:8]}.yaml")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    return path


OBJECT_STORE_MB = 1024  # a local Ray's object store (--object-store-mb), in MiB


def init_ray(address: str | None = None, num_cpus: int | None = None, object_store_mb: int = OBJECT_STORE_MB,
             verbose: bool = False):
    """Connect to a cluster (`address`, or RAY_ADDRESS) or start a local Ray sized for this machine.

    The dashboard stays on even for tests: Train V2's placement-group cleaner asks the State API (served by the
    dashboard) whether a trial's controller is gone, and without it the workers of trials that ASHA stops are
    never freed.
    """
    import ray

    if ray.is_initialized():
        return
    global _connected
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        _connected = True
        try:
            ray.init(address=address)
        except ConnectionError as e:
            token = "" if os.environ.get("RAY_AUTH_MODE") == "token" else (
                " If the cluster uses token authentication (the default of `ray start` in Ray 2.60), set "
                "RAY_AUTH_MODE=token (the token is read from ~/.ray/auth_token, or RAY_AUTH_TOKEN).")
            raise ConnectionError(f"could not connect to the Ray cluster at {address}: {str(e)[:200]}.{token}") \
                from None
        return
    # Train V2 starts a preemption watcher per trial: a process that polls the cluster for nodes being drained (spot
    # instances). Nothing drains the one machine of a local Ray, so it is left out: a process (~1 s of CPU) fewer
    # per trial. A local Ray's processes inherit this environment; a value the user set is kept.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # Ray Train's own data manager reads a property Ray Data deprecated, and warns in two lines of 340 characters per
    # trial that no user can act on; that one warning is left out of a local Ray's processes.
    os.environ.setdefault("PYTHONWARNINGS", "ignore:`ExecutionOptions.exclude_resources` is deprecated:DeprecationWarning")
    if not verbose:  # Ray Data's INFO lines in its log file only, also in processes ferlab's code does not run in
        os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", _ray_data_logging_file())
    ray.init(num_cpus=num_cpus or os.cpu_count(), object_store_memory=object_store_mb * 1024 * 1024,
             include_dashboard=True)
