"""The `ferlab` command.

    ferlab synth --out DIR [--n N] [--size S] [--seed K] [--label-noise P]   draw SynthFER into a shard folder
    ferlab sweep [options]                                                  = python experiments/sweep_transfer.py
    ferlab models [NAME]                                                    list model presets / NAME's fields
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _synth(args) -> int:
    from ferlab.data.synth import SynthSpec, make_synthfer

    spec = SynthSpec(size=args.size, label_noise=args.label_noise)
    t0 = time.perf_counter()
    manifest = make_synthfer(args.out, n=args.n, spec=spec, seed=args.seed)
    dt = time.perf_counter() - t0
    counts = {split: sum(c.values()) for split, c in manifest["counts"].items()}
    print(f"wrote {args.n} faces ({counts}) to {args.out} in {dt:.1f} s ({args.n / dt:.0f} faces/s)")
    return 0


def _models(args) -> int:
    from ferlab.models import create_model, list_models, model_config
    from ferlab.models.transfer import num_params

    if args.name:  # one preset's config: the fields --set and create_model(**overrides) accept
        for key, value in model_config(args.name).to_dict().items():
            print(f"{key:16s} {value!r}")
        return 0
    for name in list_models():
        m = create_model(name)
        print(f"{name:16s} input {m.cfg.input_size}x{m.cfg.input_size}  {num_params(m) / 1e6:6.2f} M parameters")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sweep"]:  # the experiment script owns the sweep's options; one place, not two
        experiments = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")
        if not os.path.isfile(os.path.join(experiments, "sweep_transfer.py")):
            print(f"ferlab sweep: error: {experiments}/sweep_transfer.py not found; install from a checkout with "
                  f"`pip install -e .` or run the experiment file directly", file=sys.stderr)
            return 2
        sys.path.insert(0, experiments)
        from sweep_transfer import main as sweep_main

        return sweep_main(argv[1:])
    p = argparse.ArgumentParser(prog="ferlab", description="FER ablation studies on Ray")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synth", help="draw SynthFER into a shard folder")
    s.add_argument("--out", required=True)
    s.add_argument("--n", type=int, default=3000)
    s.add_argument("--size", type=int, default=112)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--label-noise", type=float, default=0.0)
    s.set_defaults(fn=_synth)
    sub.add_parser("sweep", help="run a sweep (options: ferlab sweep --help)")
    models = sub.add_parser("models", help="list model presets, or one preset's config fields")
    models.add_argument("name", nargs="?", help="a preset: print its config fields and values")
    models.set_defaults(fn=_models)
    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, OSError) as e:
        print(f"ferlab {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
