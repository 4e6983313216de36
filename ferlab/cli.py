"""The `ferlab` command.

    ferlab synth --out DIR [--n N] [--size S] [--seed K] [--label-noise P]   draw SynthFER into a shard folder
    ferlab prepare SOURCE --root ROOT --out OUT [--size 112] [--strict] ...  a data set on disk -> shards
    ferlab run experiments/FILE.py [--smoke] [--set section.field=value] ... run any experiment file
    ferlab sweep [transfer|mvt] [options]                     = ferlab run experiments/sweep_transfer.py (or _mvt)
    ferlab models [NAME]                                                    list model presets / NAME's fields
"""

from __future__ import annotations

import os
import sys
import time

from ferlab.data.labels import LABEL_MODES
from ferlab.data.sources import SOURCES
from ferlab.data.synth import SYNTH_N
from ferlab.console import Parser


def _synth(args) -> int:
    from ferlab.data.synth import SynthSpec, make_synthfer

    from ferlab.run.options import given

    spec = SynthSpec(**given(args, SynthSpec))
    t0 = time.perf_counter()
    manifest = make_synthfer(args.out, n=args.n, spec=spec, seed=args.seed)
    dt = time.perf_counter() - t0
    counts = {split: sum(c.values()) for split, c in manifest["counts"].items()}
    print(f"wrote {args.n} faces ({counts}) to {args.out} in {dt:.1f} s ({args.n / dt:.0f} faces/s)")
    return 0


def _pairs(items, option) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"{option} {item!r}: expected NAME=VALUE")
        out[key] = value
    return out


# `ferlab prepare`'s options that a source's reader takes (ferlab.data.sources.reader_options), by the reader's name
READER_FLAGS = ("labels", "mode", "num_classes", "images", "align", "extra_splits", "class_map", "layout",
                "label_from_name", "group_from_name", "val_fraction", "test_fraction", "split_seed", "folds")
FLAGS = {"num_classes": "classes", "extra_splits": "extra_split"}  # the flags not named as the reader's option


def _defaults(option: str) -> str:
    """" (default ...)" of a reader option, per source when they differ: read from the readers' signatures."""
    from ferlab.data.sources import SOURCES, reader_options

    found = {s: reader_options(s).get(option) for s in SOURCES}
    found = {s: d for s, d in found.items() if d not in (None, [], {})}  # not taken, or no default
    if not found:
        return ""
    if len(set(map(str, found.values()))) == 1:
        return f" (default {next(iter(found.values()))})"
    return " (default " + ", ".join(f"{s} {d}" for s, d in found.items()) + ")"


def _prepare(args) -> int:
    from ferlab import storage
    from ferlab.data.prepare import prepare, require_samples
    from ferlab.tune.resources import check_address, init_ray

    from ferlab.data.sources import read_source, reader_options

    takes = reader_options(args.source)  # the reader's keyword options: what this source accepts
    options = {"strict": args.strict}
    for key in READER_FLAGS:
        value, flag = getattr(args, key), "--" + FLAGS.get(key, key).replace("_", "-")
        if value not in (None, []):
            if key not in takes:
                raise ValueError(f"{flag} does not apply to {args.source}")
            options[key] = _pairs(value, flag) if isinstance(value, list) else value
    listing = read_source(args.source, args.root, **options)  # reader errors (a missing label file, --strict) first
    require_samples(listing, args.source, args.root)  # an empty or unrecognised folder: exit 2 before Ray starts
    storage.check(args.out, "--out")  # a folder, or a bucket that exists and answers
    check_address(args.address)
    init_ray(args.address, args.num_cpus)
    prepare(args.source, args.root, args.out, size=args.size, strict=args.strict, listing=listing)
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


def _report(args) -> int:
    from ferlab.report import build_report

    r = build_report(args.results_dir, args.out, plots=not args.no_plots)
    for t in r["tables"]:
        print(t.markdown(), end="\n\n")
    for reason in r["skipped"]:
        print(f"not drawn: {reason}")
    print(f"{len(r['tables'])} tables, {len(r['figures'])} figures in {r['out']}; page: {r['page']}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:  # the experiment file owns its options (ferlab.run.runner builds them)
        from ferlab.run.runner import run_file

        return run_file(argv[1:])
    if argv[:1] == ["sweep"]:
        from ferlab.studies import DEFAULT, STUDIES
        from ferlab.run.runner import load, main as run

        study = argv[1] if len(argv) > 1 and argv[1] in STUDIES else DEFAULT
        rest = argv[2:] if len(argv) > 1 and argv[1] in STUDIES else argv[1:]
        experiments = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments")
        module = load(os.path.join(experiments, f"sweep_{study}.py"))
        module.PROG = f"ferlab sweep {study}"  # what --help's usage line and the errors name
        return run(module, rest)
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, OSError) as e:  # ConnectionError (an --address where nothing answers) is an OSError
        print(f"ferlab {args.cmd}: error: {e}", file=sys.stderr)
        return 2


def parser() -> Parser:
    """The `ferlab` command line (run and sweep hand their options to the experiment file's own parser)."""
    from ferlab.data.synth import SynthSpec
    from ferlab.run.options import add_fields

    p = Parser(prog="ferlab", description="FER ablation studies on Ray")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synth", help="draw SynthFER into a shard folder")
    s.add_argument("--out", required=True, help="shard folder to write (a local path or a URI)")
    s.add_argument("--n", type=int, default=SYNTH_N, help="faces to draw, split 80/10/10 (default %(default)s)")
    s.add_argument("--seed", type=int, default=0, help="the drawing's seed: the same seed draws the same faces")
    add_fields(s, SynthSpec, ["size", "label_noise", "jitter", "max_rotation", "occluder_prob", "clutter"])
    s.set_defaults(fn=_synth)
    pr = sub.add_parser("prepare", help="a data set on disk -> aligned faces -> shards",
                        description="Read a data set in its own layout, align the faces, write shards + manifest.")
    pr.add_argument("source", choices=SOURCES,
                    help="the data set's layout: rafdb, ferplus, affectnet, or folder (class folders, CK+, JAFFE, ...)")
    pr.add_argument("--root", required=True, help="the data set's folder, as downloaded")
    pr.add_argument("--out", required=True, help="shard folder to write")
    pr.add_argument("--size", type=int, default=112, help="stored face side: 112 for TransFER, 224 for MVT")
    pr.add_argument("--strict", action="store_true", help="stop at the first bad file or line, naming it")
    pr.add_argument("--labels", choices=["label.csv", "fer2013new.csv"],
                    help="ferplus: label source" + _defaults("labels"))
    pr.add_argument("--mode", choices=LABEL_MODES, help="ferplus: label mode" + _defaults("mode"))
    pr.add_argument("--classes", dest="num_classes", type=int, choices=[7, 8],
                    help="ferplus/affectnet/folder: 7 or 8 classes" + _defaults("num_classes")
                    + "; folder: 8 when a contempt class is found")
    pr.add_argument("--images", choices=["aligned", "original"], help="rafdb: which images" + _defaults("images"))
    pr.add_argument("--align", choices=["landmarks", "none"], help="affectnet: align by the 68 landmarks "
                    "or crop the face box only (MVT: \"we do not perform any extra face alignment\")"
                    + _defaults("align"))
    pr.add_argument("--extra-split", dest="extra_splits", action="append", default=[], metavar="NAME=FILE",
                    help="rafdb: a list of test images that becomes an evaluation split (Occlusion-/Pose-RAF-DB)")
    pr.add_argument("--class-map", action="append", default=[], metavar="NAME=CLASS",
                    help="folder: map a class folder name or a file-name code onto a basic expression, e.g. "
                         "--class-map joy=happiness (JAFFE's codes AN, DI, FE, HA, NE, SA, SU are built in)")
    pr.add_argument("--layout", choices=["auto", "split", "class", "flat"],
                    help="folder: split/class/image, class/image, or flat files with the label in the name; "
                         "auto: detected" + _defaults("layout"))
    pr.add_argument("--label-from-name", metavar="REGEX",
                    help=r"folder: the label code in the file name, group 'label', e.g. JAFFE "
                         r"'^[A-Z]{2}\.(?P<label>[A-Z]{2})\d*\.'")
    pr.add_argument("--group-from-name", metavar="REGEX",
                    help=r"folder: the subject in the file name, group 'group', e.g. CK+ '^(?P<group>S\d+)_': "
                         "no subject in two splits or folds")
    pr.add_argument("--val-fraction", type=float,
                    help="folder: share of train carved as val when there is no val split" + _defaults("val_fraction"))
    pr.add_argument("--test-fraction", type=float,
                    help="folder: share carved as test when there is no test split" + _defaults("test_fraction"))
    pr.add_argument("--split-seed", type=int,
                    help="folder: seed of the carved splits and folds" + _defaults("split_seed"))
    pr.add_argument("--folds", type=int, help="folder: K-fold protocol (lab data sets: CK+ uses 10): every image "
                                              "held out in one of K folds, subject-independent with "
                                              "--group-from-name; train with an ablation's --folds")
    pr.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")
    pr.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: all cores)")
    pr.set_defaults(fn=_prepare)
    sub.add_parser("run", help="run an experiment file: ferlab run experiments/FILE.py [options] (`ferlab run "
                   "--help` lists the files, `ferlab run FILE.py --help` a file's options)")
    sub.add_parser("sweep", help="a study's search: ferlab sweep [transfer|mvt] [options] (see --help)")
    rp = sub.add_parser("report", help="paper-shaped tables, figures and an HTML page from a results folder")
    rp.add_argument("results_dir", help="the folder an experiment wrote (trials.csv, history.csv, run.json)")
    rp.add_argument("--out", default=None, help="where to write (default: RESULTS_DIR/report)")
    rp.add_argument("--no-plots", action="store_true", help="tables and the page only")
    rp.set_defaults(fn=_report)
    models = sub.add_parser("models", help="list model presets, or one preset's config fields")
    models.add_argument("name", nargs="?", help="a preset: print its config fields and values")
    models.set_defaults(fn=_models)
    return p


if __name__ == "__main__":
    sys.exit(main())
