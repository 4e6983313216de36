"""The tutorial's study (docs/tutorial.md, docs/tutorial/*.py) runs as the page says: `ferlab run` on its experiment
file trains both rows of its one table on a real local Ray whose workers know the study (FERLAB_STUDIES), and
`ferlab report` prints the table with the paper's number beside it."""

import os
import subprocess
import sys

import pandas as pd
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIAL = os.path.join(REPO, "docs", "tutorial")


def test_a_study_name_is_registered_once():
    from ferlab.studies import STUDIES, register

    with pytest.raises(ValueError, match="'transfer' is already registered"):
        register(STUDIES["mvt"].__class__(**{**STUDIES["mvt"].__dict__, "name": "transfer"}))


@pytest.mark.slow
def test_the_tutorials_study_is_swept_by_ferlab_run_and_reported(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("FERLAB_STUDIES", "PYTHONPATH")}
    results = tmp_path / "results"
    r = subprocess.run([sys.executable, "-m", "ferlab.cli", "run", os.path.join(TUTORIAL, "ablation_msad.py"),
                        "--smoke", "--storage", str(tmp_path / "ray"), "--results-dir", str(results)],
                       capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    trials = pd.read_csv(results / "trials.csv")
    assert sorted(trials["p2"]) == [0.0, 0.3] and (trials["status"] == "ok").all()
    rep = subprocess.run([sys.executable, "-m", "ferlab.cli", "report", str(results)], capture_output=True,
                         text=True, timeout=300, cwd=REPO, env=env | {"FERLAB_STUDIES": "msad_study",
                                                                      "PYTHONPATH": TUTORIAL})
    assert rep.returncode == 0, rep.stderr[-3000:]
    assert "MSAD off and on" in rep.stdout and "MSAD off (p2 = 0)" in rep.stdout and "90.91" in rep.stdout
