"""A bad value for every option of every experiment file and of `ferlab prepare` and `ferlab report`, generated from
their parsers (a new option is covered the day it is added, or this test names it): each must exit 2 with at most
two lines on stderr and no traceback, before Ray starts. In this process: a refusal must not need Ray."""

import argparse
import contextlib
import importlib.util
import os
from unittest import mock

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = ["sweep_transfer.py", "sweep_mvt.py", "ablation_transfer.py", "ablation_mvt.py", "ferplus_transfer.py"]

# Options whose value is a free string: a bad one per option, by what the value names. Typed options get "abc",
# options with choices get "nope", flags have no value to get wrong, and a name (--name) is any word.
BAD = {"data": "/nonexistent/shards", "storage": "/proc/ferlab", "results_dir": "/proc/ferlab", "lock_dir": "/proc/ferlab",
       "address": "127.0.0.1:9", "optuna_storage": "postgresql+psycopg2://ferlab@127.0.0.1:1/optuna",
       "set": "nope", "eval_data": "x=/nonexistent/shards", "track": "nope", "track_uri": "nope",
       "root": "/nonexistent/root", "out": "/proc/ferlab", "shards": "/proc/ferlab/shards", "labels": "/nonexistent.csv",
       "images": "/nonexistent/images", "extra_splits": "nope", "class_map": "nope", "label_from_name": "(",
       "group_from_name": "(", "preset": "nope", "results_dir_pos": "/nonexistent/results", "tables": "nope"}
ANY_WORD = {"name"}
NO_VALUE = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction, argparse._SubParsersAction)


class _Parsed(Exception):
    pass


def _module(script: str):
    spec = importlib.util.spec_from_file_location(f"bad_input_{script[:-3]}", os.path.join(REPO, "experiments", script))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _parser(main) -> argparse.ArgumentParser:
    """The parser an entry point builds, caught as it parses."""
    from ferlab.console import Parser

    seen = []

    def catch(self, args=None, namespace=None):
        seen.append(self)
        raise _Parsed

    with mock.patch.object(Parser, "parse_args", catch), contextlib.suppress(_Parsed):
        main([])
    return seen[0]


def _cases():
    from ferlab import cli

    out = []
    for script in EXPERIMENTS:
        main = _module(script).main
        for action in _parser(main)._actions:
            out.append((script, action, []))
    subparsers = next(a for a in _parser(cli.main)._actions if isinstance(a, argparse._SubParsersAction))
    for cmd in ("prepare", "report"):
        for action in subparsers.choices[cmd]._actions:
            out.append((f"ferlab {cmd}", action, [cmd]))
    return out


def _bad(action) -> str | None:
    if isinstance(action, NO_VALUE) or action.dest in ANY_WORD:
        return None
    if action.choices:
        return "nope"
    if action.type is not None:
        return "abc"
    key = action.dest if action.option_strings else f"{action.dest}_pos"
    if key not in BAD and action.dest.endswith("_weights"):
        return "/nonexistent/weights.pth"
    assert key in BAD or action.dest in BAD, f"no bad value known for {action.option_strings or action.dest}: add one"
    return BAD.get(key, BAD.get(action.dest))


CASES = [(entry, action, prefix) for entry, action, prefix in _cases() if _bad(action) is not None]


@pytest.mark.parametrize("entry,action,prefix", CASES,
                         ids=[f"{e}:{(a.option_strings or [a.dest])[0]}" for e, a, _ in CASES])
def test_every_bad_option_is_one_line_before_ray(entry, action, prefix, tmp_path, capsys, monkeypatch):
    """An empty cache, as on a fresh machine (CI): an experiment that prepares its data set (ferplus_transfer.py)
    must check every option before it prepares (which needs Ray); it once prepared first, and Ray started."""
    import fixtures_layouts as fx
    import ray

    from ferlab import cli

    monkeypatch.setenv("FERLAB_CACHE", str(tmp_path / "cache"))
    value = _bad(action)
    if entry.startswith("ferlab"):
        main = cli.main
        cmd = prefix[0]
        args = {"prepare": ["folder", "--root", str(fx.folder(tmp_path / "src")), "--out", str(tmp_path / "out")],
                "report": [str(tmp_path)]}[cmd]
        if not action.option_strings:  # the positional's bad value in its place
            args = [value] + args[1:]
        argv = [cmd] + args
    else:
        main = _module(entry).main
        argv = ["--smoke", "--storage", str(tmp_path / "storage"), "--results-dir", str(tmp_path / "results")]
    if action.option_strings:
        argv += [action.option_strings[0], value]
    capsys.readouterr()
    with mock.patch("ferlab.tune.resources.init_ray", side_effect=AssertionError("Ray would start")):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    started = ray.is_initialized()
    ray.shutdown()  # a Ray this case started must not fail the tests after it
    assert not started, (argv, "Ray started")
    assert code == 2 and 1 <= len(err) <= 2 and not any("Traceback" in ln for ln in err), (argv, code, err)


@pytest.mark.parametrize("argv,match", [
    (["run"], "give an experiment file first"),
    (["run", "/nonexistent/exp.py"], "/nonexistent/exp.py: no such experiment file"),
    (["run", os.path.join(REPO, "README.md")], "README.md: not a Python file"),
    (["run", os.path.join(REPO, "experiments", "sweep_mvt.py"), "--set", "study.nonexistent=1"],
     r"unknown field\(s\) \['study.nonexistent'\]"),
    (["sweep", "mvt", "--relabel", "cubic"], "invalid choice: 'cubic'"),
])
def test_ferlab_run_refuses_in_one_line(argv, match, capsys):
    """`ferlab run FILE` and `ferlab sweep STUDY`: a missing or wrong file, or a bad option of the experiment."""
    import re

    from ferlab import cli

    with mock.patch("ferlab.tune.resources.init_ray", side_effect=AssertionError("Ray would start")):
        try:
            code = cli.main(argv)
        except SystemExit as e:
            code = e.code
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and re.search(match, lines[0]), (code, lines)


@pytest.mark.parametrize("args,match", [
    (["--name", "../../etc/x"], r"--name '../../etc/x': a plain name .* no '/' or '..'"),
    (["--name", "a/b"], "--name 'a/b': a plain name"),
    (["--name", ".."], "--name '..': a plain name"),
    (["--storage", "gs://ferlab-no-such-bucket/x"], r"--storage gs://ferlab-no-such-bucket/x: (no answer within 1 s|.)"),
    (["--track", "mlflow", "--track-uri", "://junk"], r"--track-uri ://junk: MLflow cannot use it"),
])
def test_names_stores_and_tracking_uris_are_checked_in_one_line(args, match, tmp_path, capsys, monkeypatch):
    """A sweep name stays one folder under --storage (it once wrote to DIR/../../etc/x); a store that does not
    answer is said within CHECK_S (gs:// on a machine with no route to Google printed nothing for 180 s); a tracking
    URI MLflow cannot use is one line, not a 46-line traceback."""
    import re
    import time

    from conftest import run_experiment_main

    from ferlab import storage

    monkeypatch.setattr(storage, "CHECK_S", 1.0)
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    code, err = run_experiment_main("sweep_transfer.py", ["--smoke", "--storage", str(tmp_path / "s"), *args], capsys)
    assert code == 2 and len(err) == 1 and re.search(match, err[0]), err
    assert time.perf_counter() - t0 < 30


def test_ferlab_run_help_lists_the_experiment_files(capsys):
    from ferlab import cli

    assert cli.main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ferlab run EXPERIMENT_FILE.py")
    assert "experiments/sweep_transfer.py: Search TransFER's knobs" in out and out.count("sweep_mvt.py") == 1
