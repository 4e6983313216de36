"""An experiment file's command line is generated from the config dataclasses (ferlab.run.options): every option is
a field, a Study knob, a weight file or one of three words, none restates a default, each field's help is its
comment, and a value given reaches its field of the built SweepSpec, RunOptions or TrainConfig with no mapping."""

from __future__ import annotations

import argparse
import dataclasses
import glob
import os

import pytest

from ferlab.config import TrainConfig, field_comments
from ferlab.run import options as O
from ferlab.run.options import ExperimentConfig, RunOptions
from ferlab.run.runner import _prog, build, load, parse
from ferlab.studies import get_study
from ferlab.tune.spec import SweepSpec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = sorted(glob.glob(os.path.join(REPO, "experiments", "*.py"))) + [os.path.join(REPO, "docs", "tutorial",
                                                                                      "ablation_msad.py")]
WORDS = {"help", "set", "smoke", "dry_run"}  # what the command does, not what it configures


@pytest.mark.parametrize("path", FILES, ids=os.path.basename)
def test_every_option_is_a_field_a_knob_or_a_weight_file_and_restates_no_default(path):
    module = load(path)
    config = module.get_config()
    study = get_study(config.paper)
    fields = {cls: {f.name for f in dataclasses.fields(cls)} for cls in (ExperimentConfig, SweepSpec, RunOptions)}
    knobs = {f"{k.section}.{k.name}" for k in study.knobs}
    weights = {f"{key}_weights" for key in study.weight_files}
    section_fields = {"train": {f.name for f in dataclasses.fields(TrainConfig)},
                      "study": {f.name for f in dataclasses.fields(study.study_config)} if study.study_config else set()}
    for action in O.parser(config, module.__doc__, _prog(module))._actions:
        dest = action.dest
        section, dot, name = dest.partition(".")
        known = (dest in WORDS or dest in knobs or dest in weights or any(dest in f for f in fields.values())
                 or (dot and name in section_fields.get(section, ())))
        assert known, f"{action.option_strings}: not a config field, knob or weight file"
        if dest not in WORDS:  # "not given": the dataclass's default (or the layers of PRECEDENCE) applies
            assert action.default is None, f"{action.option_strings} restates a default: {action.default!r}"


def test_a_fields_help_is_its_comment():
    config = load(os.path.join(REPO, "experiments", "sweep_mvt.py")).get_config()
    helps = {a.dest: a.help for a in O.parser(config, "", "x")._actions}
    for cls, names in ((SweepSpec, ["limit", "storage", "lock_dir"]), (RunOptions, ["object_store_mb", "track"]),
                       (ExperimentConfig, ["samples", "label_noise"])):
        for name in names:
            assert field_comments(cls)[name].replace("%", "%%") in helps[name], name
    assert field_comments(TrainConfig)["relabel_start"] in helps["train.relabel_start"]
    assert "(default 3)" in helps["train.relabel_start"]  # the experiment file's value, not TrainConfig's 10


def test_every_value_given_reaches_its_field(tiny_synth, tmp_path):
    """One command line with a value for every SweepSpec and RunOptions flag: each arrives in its field. Broken once
    locally (the spec built without `given(args, SweepSpec)`): --limit, --seed, ... keep their defaults; fails."""
    module = load(os.path.join(REPO, "experiments", "sweep_transfer.py"))
    values = {"data": tiny_synth, "limit": 7, "workers_per_trial": 2, "gpus_per_trial": 1.0, "cpus_per_worker": 2.0,
              "max_concurrent": 3, "seed": 5, "storage": str(tmp_path / "st"), "lock_dir": str(tmp_path / "lk"),
              "optuna_storage": "sqlite:///" + str(tmp_path / "o.db"), "name": "n1",
              "results_dir": str(tmp_path / "res"), "address": "127.0.0.1:6379", "num_cpus": 3,
              "object_store_mb": 500, "track_uri": "sqlite:///m.db", "confirm": 2, "confirm_seeds": 4}
    argv = [a for k, v in values.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    argv += ["--resume", "--verbose", "--track", "mlflow", "--eval-data", f"x={tiny_synth}", "--samples", "3",
             "--grace-period", "1", "--epochs", "2", "--batch-size", "4", "--lr", "0.01", "--p1", "0.5"]
    config, args, synth = parse(module, argv)
    spec, _, _, run, _ = build(config, args, synth)
    for name, value in values.items():
        obj = spec if name in {f.name for f in dataclasses.fields(SweepSpec)} else run
        assert getattr(obj, name) == value, name
    assert run.resume and run.verbose and run.track == ("mlflow",) and spec.eval_data == {"x": tiny_synth}
    assert (spec.samples, spec.grace_period, spec.epochs) == (3, 1, 2)
    assert (spec.train_cfg.batch_size, spec.train_cfg.lr, spec.model["p1"]) == (4, 0.01, 0.5)


@pytest.mark.parametrize("argv,words", [
    (["--workers-per-trial", "0"], "--workers-per-trial 0: must be >= 1"),  # was a ZeroDivisionError
    (["--limit", "-1"], "--limit -1: must be >= 0"),  # was accepted
    (["--object-store-mb", "10"], "--object-store-mb 10: must be >= 75"),
])
def test_a_bad_value_names_its_option_before_ray(argv, words, capsys):
    from conftest import run_experiment_main

    code, lines = run_experiment_main("sweep_transfer.py", argv, capsys)
    assert code == 2 and words in lines[-1]


def test_flags_are_argparse_typed():
    p = argparse.ArgumentParser()
    O.add_fields(p, SweepSpec, ["limit", "gpus_per_trial", "storage"])
    O.add_fields(p, RunOptions, ["resume", "track"])
    args = p.parse_args(["--limit", "3", "--gpus-per-trial", "0.5", "--resume", "--track", "a", "--track", "b"])
    assert (args.limit, args.gpus_per_trial, args.storage, args.resume, args.track) == (3, 0.5, None, True, ["a", "b"])
    with pytest.raises(SystemExit):
        p.parse_args(["--limit", "x"])
