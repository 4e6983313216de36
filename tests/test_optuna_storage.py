"""--optuna-storage URL: the search's Optuna study lives in a database of the user's (here a real PostgreSQL), where
optuna-dashboard and Optuna's own API read it while and after the sweep runs; the password never reaches the console
or run.json; a URL Optuna cannot open is one line before Ray starts."""

import json
import os
import subprocess
import sys

import pytest

from conftest import run_experiment_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_database_optuna_cannot_open_is_one_line_before_ray(tmp_path, capsys):
    url = "postgresql+psycopg2://ferlab:secret@127.0.0.1:1/optuna"  # nothing listens on port 1
    code, lines = run_experiment_main("sweep_transfer.py", ["--smoke", "--storage", str(tmp_path),
                                                            "--optuna-storage", url], capsys)
    assert code == 2 and len(lines) == 1, lines
    assert "--optuna-storage postgresql+psycopg2://ferlab:***@127.0.0.1:1/optuna: Optuna cannot open it" in lines[0]
    assert "secret" not in lines[0]


@pytest.mark.slow
def test_a_smoke_sweep_keeps_its_study_in_postgresql_and_resumes(postgres, tmp_path):
    import optuna

    args = [sys.executable, os.path.join(REPO, "experiments", "sweep_transfer.py"), "--smoke",
            "--storage", str(tmp_path / "ray"), "--optuna-storage", postgres]
    r = subprocess.run(args + ["--results-dir", str(tmp_path / "results")], capture_output=True, text=True,
                       timeout=900, cwd=REPO)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (study,) = optuna.get_all_study_summaries(storage=postgres)
    assert f"optuna: study {study.study_name} in {postgres}" in r.stdout
    trials = optuna.load_study(study_name=study.study_name, storage=postgres).get_trials()
    assert len(trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    run = json.loads((tmp_path / "results" / "run.json").read_text())
    assert run["optuna_storage"] == postgres and run["optuna_db"] is None
    # --resume restores the finished sweep, its searcher's study still the database's: nothing added to it
    again = subprocess.run(args + ["--resume", "--results-dir", str(tmp_path / "again")], capture_output=True,
                           text=True, timeout=600, cwd=REPO)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert len(optuna.get_all_study_summaries(storage=postgres)) == 1
    assert len(optuna.load_study(study_name=study.study_name, storage=postgres).get_trials()) == 2
