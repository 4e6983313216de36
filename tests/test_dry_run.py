"""`--dry-run` and the precedence it shows (ferlab.run.options.PRECEDENCE): explicit options > the recipe's value
for the data set > the experiment file > defaults. Each command line runs in this process with Ray forbidden; the
JSON on standard output is what the trainer would get."""

from __future__ import annotations

import importlib.util
import json
import os
from unittest import mock

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dry(script: str, args: list[str], capsys) -> tuple[int, dict | None, str]:
    path = os.path.join(REPO, "experiments", script)
    spec = importlib.util.spec_from_file_location(f"dry_{script[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    capsys.readouterr()
    with mock.patch("ferlab.tune.resources.init_ray", side_effect=AssertionError("Ray would start")), \
            mock.patch("ferlab.data.prepare.prepare", side_effect=AssertionError("data would be prepared")):
        code = module.main(["--dry-run", *args])
    out = capsys.readouterr()
    return code, json.loads(out.out) if code == 0 else None, out.err


def test_the_paper_recipe_beats_the_experiment_files_cpu_defaults(capsys):
    """ferplus_transfer.py sets 12 CPU epochs; --recipe paper is the paper's 40 with the rate /10 at 15 and 30."""
    code, plan, err = dry("ferplus_transfer.py", ["--recipe", "paper"], capsys)
    assert code == 0 and plan["dataset"] == "ferplus"
    tc = plan["train_config"]
    assert tc["epochs"] == 40 and tc["lr_milestones"] == [15, 30] and plan["sources"]["epochs"] == "recipe"
    assert plan["epoch_lr"][14] == 1e-3 and plan["epoch_lr"][15] == pytest.approx(1e-4)
    assert plan["epoch_lr"][30] == pytest.approx(1e-5)
    assert '"For RAF-DB and FERPlus, we train 40 epochs" (4.2)' in err  # the paper's sentence beside the value
    assert "MTCNN" in err  # FERPlus's alignment in the paper, and what ferlab does instead
    code, plan, _ = dry("ferplus_transfer.py", [], capsys)  # the cpu recipe: the file's 12
    assert plan["train_config"]["epochs"] == 12 and plan["sources"]["epochs"] == "experiment file"
    code, plan, _ = dry("ferplus_transfer.py", ["--recipe", "paper", "--epochs", "3"], capsys)
    assert plan["train_config"]["epochs"] == 3 and plan["sources"]["epochs"] == "explicit"
    code, plan, _ = dry("sweep_transfer.py", [], capsys)
    assert plan["train_config"]["epochs"] == 6 and plan["sources"]["epochs"] == "default"


def test_explicit_options_win_over_the_recipe(capsys):
    code, plan, _ = dry("sweep_transfer.py", ["--recipe", "paper", "--workers-per-trial", "2"], capsys)
    assert plan["batch"] == {"per_worker": 128, "workers": 2, "global": 256}  # the paper's 256 over two GPUs
    code, plan, err = dry("sweep_transfer.py", ["--recipe", "paper", "--batch-size", "16"], capsys)
    assert plan["batch"] == {"per_worker": 16, "workers": 1, "global": 16} and "[explicit]" in err
    code, plan, _ = dry("sweep_transfer.py", ["--recipe", "paper", "--lr", "0.01", "--balance", "none"], capsys)
    assert plan["train_config"]["lr"] == 0.01 and plan["train_config"]["balance"] == "none"
    # MVT: the experiment file's CPU rate < the recipe's < an explicit one
    mvt = [dry("sweep_mvt.py", a, capsys)[1]["train_config"]["lr"]
           for a in ([], ["--recipe", "paper"], ["--recipe", "paper", "--lr", "1e-4"])]
    assert mvt == [5e-4, 9e-5, 1e-4]


def test_an_option_the_recipe_cannot_honour_is_one_line(capsys):
    code, _, err = dry("sweep_transfer.py", ["--recipe", "paper", "--workers-per-trial", "3"], capsys)
    assert code == 2 and err.strip().splitlines() == [
        "sweep_transfer: error: train.global_batch=256 does not divide over 3 workers per trial: choose a divisor "
        "of it, or --batch-size per worker"]
    code, _, err = dry("sweep_transfer.py", ["--recipe", "paper", "--batch-size", "8", "--set",
                                             "train.global_batch=64"], capsys)
    assert code == 2 and "give one of them" in err and len(err.strip().splitlines()) == 1


def test_chosen_values_are_labelled(capsys):
    """MVT's weight decay and epoch count are not in the paper: the trace says chosen."""
    code, plan, err = dry("ablation_mvt.py", ["--recipe", "paper"], capsys)
    assert plan["train_config"]["weight_decay"] == 0.01
    assert "weight decay  0.01  [recipe paper] chosen: the paper states none" in err
    assert "chosen: the paper gives no epoch count" in err
    assert "we do not perform any extra face alignment" in err


def test_a_trial_that_cannot_fit_is_one_line_before_ray(capsys, tmp_path, tiny_synth):
    from conftest import run_experiment_main

    code, err = run_experiment_main("sweep_transfer.py", ["--data", tiny_synth, "--workers-per-trial", "2",
                                                          "--cpus-per-worker", "1", "--num-cpus", "2", "--storage",
                                                          str(tmp_path / "s")], capsys)
    assert code == 2 and err == ["error: one trial does not fit: it needs 2.25 CPUs (2 workers x 1 + 0.25 for its "
                                 "driver) + 0.25 for data and 0 GPUs; this Ray has 2 CPUs: --cpus-per-worker 0.75 "
                                 "fits (or a larger --num-cpus)"]
