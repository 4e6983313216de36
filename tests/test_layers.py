"""The house has no arrow back up: import-linter's layers contract in pyproject.toml ([tool.importlinter]), and no
study's name is compared outside ferlab/studies (each study declares what is its own: knobs, recipes, augmentation,
final metrics)."""

import pathlib
import re
import shutil
import subprocess

import ferlab
from ferlab.studies import STUDIES

ROOT = pathlib.Path(ferlab.__file__).parent


def test_no_import_runs_back_up_a_layer():
    lint = shutil.which("lint-imports")
    assert lint, "lint-imports not found: pip install -e '.[dev]' brings import-linter"
    out = subprocess.run([lint, "--config", str(ROOT.parent / "pyproject.toml")], capture_output=True, text=True,
                         cwd=ROOT.parent)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


def test_no_study_name_is_compared_outside_the_studies():
    names = "|".join(map(re.escape, STUDIES))
    compared = re.compile(rf"""[=!]=\s*["']({names})["']|["']({names})["']\s*[=!]=|in\s*\(["']({names})["']""")
    found = [f"{p.relative_to(ROOT.parent)}:{i}" for p in ROOT.rglob("*.py") if "studies" not in p.parts
             for i, line in enumerate(p.read_text().splitlines(), 1) if compared.search(line)]
    assert not found, f"a study's name compared in generic code: {found}"
