"""Ablation experiments end to end through a real local Ray (subprocesses: one Ray at a time), then `ferlab report`
on their folder: the paper tables with their paper column, the figures, and the page in a real browser.

The full `--smoke` (every table: 32 TransFER settings, 8 MVT settings) takes many minutes on 2 cores, most of it
Ray's fixed cost per trial; the tests run one table per paper (TransFER Table 2 with two folds of a FERPlus-
derived folder: plain rows, the stage axis plot, the attention figure from a checkpoint; MVT Table 3 with `--smoke`:
the MGN stage and relabeling) to keep CI within its budget. A grid row picked on validation (Table 4) is covered on fabricated results in test_report.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import run_experiment_main
from test_report_page import check, dump_dom

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, args, timeout=900):
    return subprocess.run([sys.executable, os.path.join(REPO, "experiments", script), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=dict(os.environ))


def _report(results):
    return subprocess.run([sys.executable, "-m", "ferlab.cli", "report", str(results)], capture_output=True,
                          text=True, timeout=300, cwd=REPO)


@pytest.mark.parametrize("script,args,match", [
    ("ablation_transfer.py", ["--table", "table7"], "--table table7: transfer has the tables table1, table2"),
    ("ablation_transfer.py", ["--seeds", "0"], "--seeds must be >= 1"),
    ("ablation_mvt.py", ["--table", "table5"], "--table table5 needs the split(s) test_occlusion"),
    ("ablation_mvt.py", ["--data", "/nonexistent/shards"], "/nonexistent/shards: no such shard folder"),
])
def test_bad_input_is_one_line_before_ray(script, args, match, tmp_path, capsys):
    code, lines = run_experiment_main(script, args + ["--storage", str(tmp_path)], capsys)
    assert code == 2 and len(lines) == 1 and match in lines[0], lines


def test_report_on_a_folder_that_is_not_results(tmp_path):
    r = _report(tmp_path)
    assert r.returncode == 2 and f"{tmp_path}/trials.csv: not found" in r.stderr


@pytest.mark.slow
def test_mvt_ablation_smoke_and_report(tmp_path):
    results = tmp_path / "results"
    r = _run("ablation_mvt.py", ["--smoke", "--table", "table3", "--storage", str(tmp_path / "ray"),
                                 "--results-dir", str(results)])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    trials = pd.read_csv(results / "trials.csv")
    assert sorted(zip(trials["mask_ratio"], trials["relabel"])) == \
        [(0.0, "none"), (0.0, "sigmoid"), (0.15, "none"), (0.15, "sigmoid")]
    assert len(os.listdir(tmp_path / "ray" / "mgn")) == 1  # one MGN (m = 15%, seed 0) for both trials with m > 0
    relabeling = trials[trials["relabel"] == "sigmoid"]
    assert (relabeling["relabel_precision"].notna() | (relabeling["relabeled"] == 0)).all()
    rep = _report(results)
    assert rep.returncode == 0, rep.stderr[-3000:]
    assert "Table 3: MGN and dynamic relabeling" in rep.stdout and "88.62" in rep.stdout
    assert (results / "report" / "plots" / "mvt_attention.png").is_file()
    c = check(dump_dom(str(results / "report" / "index.html"), tmp_path))
    assert c["tables"] == "1" and c["broken"] == ""


@pytest.mark.slow
def test_kfold_ablation_on_a_ferplus_derived_folder_and_its_report(ferplus_root, tmp_path):
    """A CK+-style class/image folder (FERPlus test faces, symlinked) prepared with --folds 2 and subjects, then an
    ablation of Table 2 that trains each cell once per fold: the rows are mean ± std over the two folds; then
    `ferlab report` on it: the paper table with its paper column, the stage plot, the curves, the attention figure
    from the best trial's checkpoint, and the page in a real browser, no wider than its window."""
    import csv

    from ferlab.data.labels import BASIC8

    folder = tmp_path / "folder"
    with open(os.path.join(ferplus_root, "FER2013Test", "label.csv")) as f:
        rows = list(csv.reader(f))[:400]
    for i, row in enumerate(rows):
        votes = [float(v) for v in row[2:9]]  # the 7 basic classes: majority of raw votes is enough here
        cls = BASIC8[votes.index(max(votes))]
        (folder / cls).mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.join(ferplus_root, "FER2013Test", row[0]), folder / cls / f"S{i % 20:03d}_{row[0]}")
    shards = tmp_path / "shards"
    prep = subprocess.run([sys.executable, "-m", "ferlab.cli", "prepare", "folder", "--root", str(folder), "--out",
                           str(shards), "--size", "64", "--folds", "2", "--group-from-name", r"^(?P<group>S\d+)_",
                           "--classes", "7", "--num-cpus", "2"], capture_output=True, text=True, timeout=300)
    assert prep.returncode == 0, prep.stderr[-2000:]
    results = tmp_path / "results"
    r = _run("ablation_transfer.py", ["--data", str(shards), "--folds", "2", "--table", "table2", "--epochs", "1",
                                      "--cpus-per-worker", "0.5", "--storage", str(tmp_path / "ray"),
                                      "--results-dir", str(results)])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    trials = pd.read_csv(results / "trials.csv")
    assert len(trials) == 6 and sorted(trials["fold"].unique()) == [0, 1]
    assert "6 trials (3 settings x 1 seeds x 2 folds)" in r.stdout
    assert "± " in r.stdout and "(2)" in r.stdout  # mean ± std over the 2 folds
    # Table 2's three stem stages, each trained once per fold, every epoch
    assert sorted(trials["stem_stage"]) == [2, 2, 3, 3, 4, 4] and (trials["status"] == "ok").all()
    assert (trials["epochs"] == 1).all()
    # a grid's finished trial drivers start the next trials (Tune's reuse_actors): fewer processes than trials
    drivers = {json.loads(f.read_text().splitlines()[-1])["pid"]
               for f in (tmp_path / "ray").glob("*/trial_driver_*/result.json")}
    assert 1 <= len(drivers) < len(trials), drivers
    # the report on the same folder (one ablation for both: Ray's fixed cost per trial is most of CI's time)
    rep = _report(results)
    assert rep.returncode == 0, rep.stderr[-3000:]
    out = rep.stdout
    assert "Table 2: stem CNN stage" in out
    assert "| paper (RAF-DB) |" in out and "| stage 3 |" in out and "90.91" in out and "84.94" in out
    assert "Table 1" not in out  # not trained, not printed
    plots = results / "report" / "plots"
    assert (plots / "transfer_attention.png").is_file()  # from the best trial's checkpoint
    assert (plots / "transfer_table2_stem_stage.png").is_file() and (plots / "transfer_table2_curves.png").is_file()
    c = check(dump_dom(str(results / "report" / "index.html"), tmp_path))
    assert c["tables"] == "1" and c["broken"] == "" and int(c["images"]) >= 3
    assert int(c["width"]) <= int(c["view"])
