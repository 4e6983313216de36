"""What a Parquet read costs with Ray Data's 32 footer-reader actors against ferlab's one per 64 files
(ferlab.internals.parquet_footer_readers), both in one process on one local Ray and the same shards,
alternated: wall seconds and the whole machine's CPU-seconds per `read_parquet(...).materialize()`.

    python benchmarks/parquet_listing.py [--reps 3] [--n 3000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rows  # noqa: E402

CSV = os.path.join(rows.DOCS, "parquet_listing.csv")


def machine_cpu_s() -> float:
    """Busy CPU-seconds of the whole machine so far (/proc/stat): Ray's actor processes included."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--n", type=int, default=3000, help="SynthFER faces")
    p.add_argument("--csv", default=CSV, help="the results CSV a row is appended to ('' for none)")
    args = p.parse_args(argv)
    import contextlib

    import ray

    from ferlab.data.shards import open_shards
    from ferlab.data.synth import cached_synthfer
    from ferlab.internals import parquet_footer_readers

    files = open_shards(cached_synthfer(n=args.n, size=64)).files("train")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    sides = {"ray_default": contextlib.nullcontext, "ferlab": lambda: parquet_footer_readers(len(files))}
    times = {k: [] for k in sides}
    cpus = {k: [] for k in sides}
    try:
        ray.data.read_parquet(files).materialize()  # warm-up: the first read starts Ray Data's own actors
        for _ in range(args.reps):
            for side, ctx in sides.items():
                c0, t0 = machine_cpu_s(), time.perf_counter()
                with ctx():
                    ds = ray.data.read_parquet(files)
                ds.materialize()
                times[side].append(time.perf_counter() - t0)
                cpus[side].append(machine_cpu_s() - c0)
    finally:
        ray.shutdown()
    out = {"files": len(files)}
    for side in sides:
        out[f"{side}_wall_s"] = statistics.median(times[side])
        out[f"{side}_cpu_s"] = statistics.median(cpus[side])
        print(f"{side}: {out[f'{side}_wall_s']:.2f} s wall (runs {', '.join(f'{t:.2f}' for t in times[side])}), "
              f"{out[f'{side}_cpu_s']:.1f} CPU-s", flush=True)
    out["wall_ratio"] = out["ray_default_wall_s"] / out["ferlab_wall_s"]
    print(f"{len(files)} files: Ray's default takes {out['wall_ratio']:.2f}x the wall time of ferlab's", flush=True)
    if args.csv:
        rows.append(args.csv, [out], cmd=rows.command(__file__, argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
