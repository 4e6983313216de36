"""What every sweep experiment file does after parsing its options: data, Ray, the sweep, the tables, the exit code.
Shared so that experiments/*.py stay about their own knobs (big_vision's habit: the file is the experiment)."""

from __future__ import annotations

import os
import time


def local_cpus_per_worker(args) -> float:
    """Locally, one trial at a time gets the machine: every CPU but the driver's and the data tasks' share;
    on a cluster (or with GPUs), 1 CPU per worker unless --cpus-per-worker says otherwise."""
    if args.cpus_per_worker is not None:
        return args.cpus_per_worker
    local = not (args.address or os.environ.get("RAY_ADDRESS"))
    return max(1.0, (args.num_cpus or os.cpu_count()) - 0.5) if local and args.gpus_per_trial == 0 else 1.0


def run_experiment(spec, args, label_noise: float = 0.0) -> int:
    """SynthFER when no --data, Ray, the sweep (or its resume), trials.csv/md + run.json, and a printed table."""
    from ferlab.data.synth import cached_synthfer
    from ferlab.models import model_config
    from ferlab.tune.sweep import STUDIES, init_ray, run_sweep, to_markdown, write_results

    t0 = time.perf_counter()
    if not spec.data:
        spec.data = cached_synthfer(n=args.synth_n, size=model_config(spec.preset).input_size, seed=args.seed,
                                    label_noise=label_noise)
    init_ray(args.address, args.num_cpus)
    table = run_sweep(spec, resume=args.resume, verbose=1)
    elapsed = time.perf_counter() - t0
    results_dir = args.results_dir or os.path.join("results", spec.name)
    paths = write_results(table, spec, results_dir, extra={"elapsed_s": elapsed, "decode_s": table.attrs["decode_s"]})
    print()
    print(to_markdown(table))
    if "best_val_acc" in table and table["best_val_acc"].notna().any():
        best = table.iloc[0]
        knobs = ", ".join(f"{k}={best[k]:.3g}" if isinstance(best[k], float) else f"{k}={best[k]}"
                          for k in STUDIES[spec.study][1])
        print(f"\nbest: {knobs}: val_acc {best['best_val_acc']:.4f} (epoch {best['best_epoch']})")
    print(f"{len(table)} trials in {elapsed / 60:.1f} min; results in {os.path.abspath(results_dir)} "
          f"({', '.join(os.path.basename(p) for p in paths.values())})")
    return 0 if (table["status"] == "ok").all() else 1
