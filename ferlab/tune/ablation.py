"""Ablation grids: the distinct knob settings that the chosen paper tables need, each trained once per seed.

Rows of different tables that mean the same setting (TransFER's default is Table 1's last row, Table 2's stage 3,
Figure 3's B = 2, Table 3's (0.6, 0.3) twice and Table 4's MAD) are one trial per seed, not six: the report finds a
row's trials by their knobs (Study.row_settings), not by a label.
"""

from __future__ import annotations

import sys

from ferlab.studies import get_study


def table_keys(study_name: str, wanted: str = "all", splits: list[str] | None = None) -> list[str]:
    """The tables to train ("all" or a comma-separated list). With the data's `splits`, a table that needs a split
    the data lacks (MVT Table 5: Occlusion-RAF-DB) is an error when asked for by name and left out, saying so, from
    "all"."""
    study = get_study(study_name)
    keys = [t.key for t in study.tables]
    chosen = keys if wanted == "all" else [k.strip() for k in wanted.split(",")]
    for k in chosen:
        study.table(k)  # an unknown key is named with the study's tables
    missing = [k for k in chosen if splits is not None and study.table(k).needs not in (None, *splits)]
    if missing and wanted != "all":
        raise ValueError(f"--table {','.join(missing)} needs the split(s) "
                         f"{', '.join(study.table(k).needs for k in missing)}; the data has {splits}")
    for k in missing:
        print(f"ablation {study_name}: {k} left out: the data has no {study.table(k).needs} split", file=sys.stderr,
              flush=True)
    return [k for k in chosen if k not in missing]


def ablation_grid(study_name: str, keys: list[str], dataset: str | None, seeds: int, seed: int = 0,
                  folds: int = 0) -> list[dict]:
    """One nested cell per distinct setting of the study's knobs (in table order), seed and, with the k-fold
    protocol, fold (folds are to seeds what grids are to cells: one trial each):
    {"model": {...}, "train": {...}, "study": {...}, "seed": s[, "fold": f]}."""
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    study = get_study(study_name)
    settings: list[dict] = []
    for key in keys:
        for row in study.table(key).rows:
            for s in study.row_settings(row, dataset):
                if s not in settings:
                    settings.append(s)
    cells = [study.nest(s) | {"seed": seed + i} for i in range(seeds) for s in settings]
    return [c | {"fold": f} for c in cells for f in range(folds)] if folds else cells
