"""One Study per paper (ferlab.studies.base.Study): `get_study(name)`, `study_of_preset(preset)`, `register(study)`.

A study of a user's own lives in a module of theirs that calls `register(STUDY)` when imported; FERLAB_STUDIES
names such modules (comma-separated), imported with this package, so that every process of a run knows the study:
the driver, and the Ray workers that inherit the environment (on a cluster, pass it in the job's runtime_env).
"""

from __future__ import annotations

import importlib
import os

from ferlab.studies import mvt, transfer
from ferlab.studies.base import Study

STUDIES: dict[str, Study] = {s.name: s for s in (transfer.STUDY, mvt.STUDY)}
DEFAULT = transfer.STUDY.name  # the study of `ferlab sweep` and of a SweepSpec that names none
ENV = "FERLAB_STUDIES"  # modules that register studies of their own, imported with this package


def register(study: Study) -> Study:
    """Add a study of one's own (the tutorial's): experiment files name it by `study.name` as `paper`. A name
    already taken by another study is refused."""
    if STUDIES.get(study.name, study) is not study:
        raise ValueError(f"study {study.name!r} is already registered; choose another name")
    STUDIES[study.name] = study
    return study


def get_study(name: str) -> Study:
    if name not in STUDIES:
        raise ValueError(f"study {name!r}: expected one of {', '.join(STUDIES)}")
    return STUDIES[name]


def search_space(trial, study: str, fixed: dict, searched: tuple) -> dict:
    """Optuna's define-by-run function for a study, by name: what OptunaSearch pickles with a sweep's state is this
    function and three plain values, never the Study object."""
    return get_study(study).space(trial, fixed=fixed, searched=searched)


def study_of_preset(preset: str) -> Study:
    """The study whose model a preset builds (transfer_tiny -> TransFER)."""
    for s in STUDIES.values():
        if preset in s.presets:
            return s
    raise ValueError(f"preset {preset!r} belongs to no study; presets: "
                     f"{', '.join(p for s in STUDIES.values() for p in s.presets)}")


for _module in filter(None, (m.strip() for m in os.environ.get(ENV, "").split(","))):
    try:
        importlib.import_module(_module)
    except ImportError as e:
        raise ImportError(f"{ENV}={os.environ[ENV]!r}: cannot import {_module!r} ({e}); the module must be on the "
                          f"Python path of every process of the run") from e
