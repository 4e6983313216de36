"""One Study per paper (ferlab.studies.base.Study): `get_study(name)`, `study_of_preset(preset)`."""

from __future__ import annotations

from ferlab.studies import mvt, transfer
from ferlab.studies.base import Study

STUDIES: dict[str, Study] = {s.name: s for s in (transfer.STUDY, mvt.STUDY)}
DEFAULT = transfer.STUDY.name  # the study of `ferlab sweep` and of a SweepSpec that names none


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
