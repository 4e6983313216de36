"""The GPU path, measured in one command: the paper models' training steps, trials sharing the GPU through Ray, and
the input path against a plain loop, written to OUT/gpu_check.json and appended to docs/benchmarks/gpu_check.csv.

    python benchmarks/gpu_check.py --out OUT                      # on a GPU machine: under 8 minutes on one H200
    python benchmarks/gpu_check.py --device cpu --tiny --out OUT  # the same code at tiny sizes (tests run this)

1. models: `transfer_paper` at 112x112, batch 256, and `mvt_paper` at 224x224, batch 32 and the largest batch that
   fits (doubling until out of memory), forward + backward + optimiser step in bf16 autocast with channels_last,
   without and with torch.compile: images/s, achieved TFLOP/s from FLOPs counted by torch's FlopCounterMode on the
   same step, and that as a share of the GPU's dense bf16 peak (PEAK_TFLOPS, from the datasheet);
2. trials through Ray: `experiments/sweep_transfer.py` with 4 trials sharing the GPU (--gpus-per-trial 0.25) on
   SynthFER at 112x112 for 2 epochs, then 1 trial alone (--gpus-per-trial 1): per trial images/s and data_wait_frac
   (from its history), the GPU's utilisation sampled by nvidia-smi while it runs, and the total of the shared trials
   against the one alone;
3. the input path: benchmarks/pipeline_overhead.py's Ray Data + TorchTrainer side against its plain loop on the same
   device and data: images/s of each and their ratio.
Targets (a benchmark, not a test): transfer_paper at >= 40% of the bf16 peak; the Ray path >= 0.95x the plain loop
with data_wait_frac < 2%; 4 shared trials >= 1.5x one trial's images/s. Downloads nothing (random weights).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

import pandas as pd  # noqa: E402
import rows  # noqa: E402
import torch  # noqa: E402

# Dense bf16 tensor-core TFLOP/s from NVIDIA's datasheets, by a name nvidia-smi reports (substring match).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "A10": 125.0, "L4": 121.0}
CSV = os.path.join(rows.DOCS, "gpu_check.csv")


def peak(device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def models(device, tiny: bool) -> list[dict]:
    """Part 1, through benchmarks/gpu_throughput.py's measure (the same step as training)."""
    from gpu_throughput import measure

    runs = [("transfer_tiny", 4), ("mvt_tiny", 4)] if tiny else [("transfer_paper", 256), ("mvt_paper", 32)]
    steps = 1 if tiny else 15
    if not tiny:
        runs.append(("mvt_paper", largest_batch("mvt_paper", device)))
    out, top = [], peak(device)
    for preset, batch in runs:
        for compiled in (False,) if tiny else (False, True):  # --tiny: no compile (a minute per model on a CPU)
            r = measure(preset, batch, steps, device, compiled) | {"compile": compiled}
            r["peak_share"] = r["model_tflops"] / top if top else None
            out.append(r)
            print(f"models: {preset} batch {batch} compile={compiled}: {r['model_images_s']:.1f} images/s, "
                  f"{r['model_tflops']:.1f} TFLOP/s" + (f" ({r['peak_share']:.0%} of {top:g})" if top else ""),
                  flush=True)
    return out


def largest_batch(preset: str, device, start: int = 32, limit: int = 4096) -> int:
    """The largest power-of-two batch (from `start`) whose training step fits in the GPU's memory."""
    from gpu_throughput import measure

    batch, fits = start, start
    while batch <= limit:
        try:
            measure(preset, batch, 1, device, False)
            fits, batch = batch, batch * 2
        except torch.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
    return fits


class Utilisation:
    """nvidia-smi's GPU utilisation sampled every 0.5 s while a block runs (nothing without a GPU)."""

    def __init__(self, device):
        self.on = device.type == "cuda"

    def __enter__(self):
        if self.on:
            self.file = tempfile.NamedTemporaryFile("w+", suffix=".csv")
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,"
                                          "nounits", "-lms", "500"], stdout=self.file, stderr=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc):
        self.samples = []
        if self.on:
            self.proc.terminate()
            self.proc.wait()
            self.file.seek(0)
            self.samples = [float(v) for v in self.file.read().split() if v.replace(".", "").isdigit()]
        return False

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def sweep(out: str, tiny: bool, device, trials: int, share: float) -> dict:
    """Part 2: `trials` trials of transfer_paper at once, each with `share` of the GPU, through the sweep."""
    name = f"gpu_share_{trials}"
    preset = "transfer_tiny" if tiny else "transfer_paper"
    args = [sys.executable, os.path.join(REPO, "experiments", "sweep_transfer.py"), "--preset", preset,
            "--samples", str(trials), "--epochs", "2", "--grace-period", "2", "--max-concurrent", str(trials),
            "--synth-n", "300" if tiny else "6000", "--storage", os.path.join(out, "storage"), "--name", name,
            "--results-dir", os.path.join(out, name), "--branches", "2", "--stage", "3"]
    if device.type == "cuda":
        args += ["--gpus-per-trial", str(share), "--cpus-per-worker", "2"]
    else:
        args += ["--cpus-per-worker", "0.5", "--limit", "64"]
    t0 = time.perf_counter()
    with Utilisation(device) as util:
        r = subprocess.run(args, capture_output=True, text=True, cwd=REPO)
    if r.returncode != 0:
        raise RuntimeError(f"the {name} sweep failed: {(r.stdout + r.stderr)[-3000:]}")
    history = pd.read_csv(os.path.join(out, name, "history.csv"))
    last = history.sort_values("epoch").groupby("trial").tail(1)  # each trial's last epoch (the first warms up)
    per_trial = last[["trial", "train_images_per_s", "data_wait_frac"]].to_dict("records")
    return {"trials": trials, "gpus_per_trial": share if device.type == "cuda" else 0.0,
            "wall_s": time.perf_counter() - t0, "per_trial": per_trial,
            "total_images_s": float(last["train_images_per_s"].sum()),
            "max_data_wait_frac": float(last["data_wait_frac"].max()), "gpu_util_mean": util.mean}


def input_path(tiny: bool, device) -> dict:
    """Part 3: pipeline_overhead.py's two sides on this device and the same data (the Ray side on a local Ray of its
    own): images/s of the epochs after the first, the Ray side's input wait, and the ratio."""
    import ray
    from pipeline_overhead import later, plain_loop, ray_loop

    from ferlab.config import TrainConfig
    from ferlab.data.shards import open_shards
    from ferlab.data.synth import cached_synthfer
    from ferlab.models import model_config
    from ferlab.tune.resources import init_ray

    preset = "transfer_tiny" if tiny else "transfer_paper"
    shards = open_shards(cached_synthfer(n=300 if tiny else 6000, size=model_config(preset).input_size, seed=0))
    tc = TrainConfig(epochs=2 if tiny else 3, augment="transfer", batch_size=32 if tiny else 256)
    limit, gpu = (96 if tiny else 0), device.type == "cuda"
    plain = later(plain_loop(shards, tc, os.cpu_count(), 0 if tiny else 4, limit, device=device.type, preset=preset))
    init_ray(num_cpus=os.cpu_count())
    try:
        on_ray = later(ray_loop(shards, tc, 2.0 if gpu else 1.0, limit, gpus=1.0 if gpu else 0.0, preset=preset))
    finally:
        ray.shutdown()
    rate = {side: sorted(e["train_images_per_s"] for e in epochs)[len(epochs) // 2]
            for side, epochs in (("plain", plain), ("ray", on_ray))}
    return rate | {"ratio": rate["ray"] / rate["plain"],
                   "ray_data_wait_frac": max(e["data_wait_frac"] for e in on_ray)}


def machine(device) -> dict:
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else None
    info = rows.machine(gpu) | {"gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda, "driver": None}
    if device.type == "cuda":
        q = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                           text=True)
        info["driver"] = q.stdout.strip() or None
    return info


def headline(result: dict) -> dict:
    """The figures of a run that its CSV row keeps."""
    transfer = next((r for r in result["models"] if r["preset"].startswith("transfer") and not r["compile"]), {})
    shared, alone = result["sweeps"]
    return {"transfer_images_s": transfer.get("model_images_s"), "transfer_tflops": transfer.get("model_tflops"),
            "transfer_peak_share": transfer.get("peak_share"),
            "shared_over_alone": shared["total_images_s"] / alone["total_images_s"],
            "ray_over_plain": result["input"]["ratio"], "max_data_wait_frac": shared["max_data_wait_frac"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for gpu_check.json and the runs' results")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cuda", "cpu"))
    p.add_argument("--tiny", action="store_true", help="tiny presets and data, no torch.compile: the same code in a "
                                                       "few minutes on a CPU")
    p.add_argument("--csv", default=CSV, help="the results CSV a row is appended to ('' for none)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: error: --device cuda but torch sees no GPU", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    result = {"machine": machine(device), "tiny": args.tiny}
    print(f"gpu_check: {result['machine']['gpu'] or 'CPU'}, torch {torch.__version__}, CUDA {torch.version.cuda}",
          flush=True)
    result["models"] = models(device, args.tiny)
    result["sweeps"] = [sweep(args.out, args.tiny, device, 4 if not args.tiny else 2, 0.25),
                        sweep(args.out, args.tiny, device, 1, 1.0)]
    shared, alone = result["sweeps"]
    print(f"trials: {shared['trials']} sharing: {shared['total_images_s']:.0f} images/s in all, 1 alone: "
          f"{alone['total_images_s']:.0f} ({shared['total_images_s'] / alone['total_images_s']:.2f}x); GPU "
          f"utilisation {shared['gpu_util_mean']} against {alone['gpu_util_mean']}", flush=True)
    result["input"] = input_path(args.tiny, device)
    print(f"input path: Ray {result['input']['ray']:.0f} images/s, plain {result['input']['plain']:.0f}: "
          f"{result['input']['ratio']:.2f}x", flush=True)
    with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
    if args.csv:
        rows.append(args.csv, [headline(result)], cmd=rows.command(__file__, argv), gpu=result["machine"]["gpu"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
