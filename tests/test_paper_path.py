"""The papers' own setup, walked: `--recipe paper` with two DDP workers per trial on imbalanced real faces (a folder
data set of FERPlus training faces, up-sampled by the recipe's class balance), shrunk to two epochs. What the
trainer did must match what `--dry-run` said it would do: the learning rate at each epoch, the global batch, the
balanced class histogram; and the ranks must step together (equal steps, equal parameters, equal relabels). Before
ferlab.train.lockstep this run hung after its first epoch. The unshrunk commands of the docs run in
benchmarks/paper_path.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from ferlab.run.plan import departures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def imbalanced_faces(ferplus_root, tmp_path_factory):
    """600 FERPlus training faces as a class folder (symlinks), prepared at 64x64: neutral 367 ... disgust 3."""
    import csv

    from ferlab.data.labels import BASIC8

    tmp = tmp_path_factory.mktemp("faces")
    with open(os.path.join(ferplus_root, "FER2013Train", "label.csv")) as f:
        rows = list(csv.reader(f))[:600]
    for row in rows:
        votes = [float(v) for v in row[2:9]]
        folder = tmp / "folder" / BASIC8[votes.index(max(votes))]
        folder.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.join(ferplus_root, "FER2013Train", row[0]), folder / row[0])
    prep = subprocess.run([sys.executable, "-m", "ferlab.cli", "prepare", "folder", "--root", str(tmp / "folder"),
                           "--out", str(tmp / "shards"), "--size", "64", "--classes", "7", "--num-cpus", "2"],
                          capture_output=True, text=True, timeout=300)
    assert prep.returncode == 0, prep.stderr[-2000:]
    return str(tmp / "shards")


ARGS = ["--recipe", "paper", "--workers-per-trial", "2", "--cpus-per-worker", "0.5", "--epochs", "2",
        "--set", "train.global_batch=32", "--set", "train.lr_milestones=(1,)",  # the recipe's, shrunk
        "--set", "train.relabel=quadratic", "--set", "train.relabel_start=1", "--set", "train.relabel_delta=0.0"]


@pytest.mark.slow
def test_the_paper_recipe_on_two_workers_does_what_its_dry_run_says(imbalanced_faces, tmp_path):
    cmd = [sys.executable, os.path.join(REPO, "experiments", "ferplus_transfer.py"), "--data", imbalanced_faces,
           "--storage", str(tmp_path / "ray"), "--results-dir", str(tmp_path / "results"), *ARGS]
    dry = subprocess.run(cmd + ["--dry-run"], capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr[-2000:]
    plan = json.loads(dry.stdout)
    assert plan["batch"] == {"per_worker": 16, "workers": 2, "global": 32}
    assert plan["train_config"]["balance"] == "full" and plan["sources"]["balance"] == "recipe"
    assert "[recipe paper]" in dry.stderr and "x0.1 at epochs 1" in dry.stderr

    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    history = pd.read_csv(tmp_path / "results" / "history.csv")
    assert list(history["epoch"]) == [1, 2]  # every epoch: no hang, no failed rank
    # equal steps and parameters on both ranks, the global batch at every step, the planned rate at every epoch
    assert departures(history, plan) == []
    assert history["lr"].tolist() == pytest.approx([1e-3, 1e-4]) == plan["epoch_lr"]
    for _, epoch in history.iterrows():
        assert json.loads(epoch["rank_steps"]) == [epoch["steps"]] * 2
        # up-sampled to the largest class: every class near neutral's count (stored: 367 neutral, 3 disgust)
        counts = json.loads(epoch["train_class_counts"])
        assert min(counts) > 0.4 * max(counts), counts
    assert history["relabeled"].notna().all()  # the merge ran, and every rank ended with the same relabels
