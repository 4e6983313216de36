"""Ablation grids: the distinct knob settings that the chosen paper tables need, each trained once per seed.

Rows of different tables that mean the same setting (TransFER's default is Table 1's last row, Table 2's stage 3,
Figure 3's B = 2, Table 3's (0.6, 0.3) twice and Table 4's MAD) are one trial per seed, not six: the report finds a
row's trials by their knobs (ferlab.report.paper), not by a label.
"""

from __future__ import annotations

from ferlab.report.paper import KNOBS, TABLES, row_settings, tables


def table_keys(paper: str, wanted: str = "all", splits: list[str] | None = None) -> list[str]:
    """The tables to train ("all" or a comma-separated list). With the data's `splits`, a table that needs a split
    the data lacks (MVT Table 5: Occlusion-RAF-DB) is an error when asked for by name and left out, saying so, from
    "all"."""
    keys = [t.key for t in tables(paper)]
    chosen = keys if wanted == "all" else [k.strip() for k in wanted.split(",")]
    unknown = [k for k in chosen if k not in keys]
    if unknown:
        raise ValueError(f"--table {','.join(unknown)}: {paper} has the tables {', '.join(keys)} (or all)")
    missing = [k for k in chosen if splits is not None and TABLES[(paper, k)].needs not in (None, *splits)]
    if missing and wanted != "all":
        raise ValueError(f"--table {','.join(missing)} needs the split(s) "
                         f"{', '.join(TABLES[(paper, k)].needs for k in missing)}; the data has {splits}")
    for k in missing:
        print(f"ablation {paper}: {k} left out: the data has no {TABLES[(paper, k)].needs} split", flush=True)
    return [k for k in chosen if k not in missing]


def ablation_grid(paper: str, keys: list[str], dataset: str | None, seeds: int, seed: int = 0) -> list[dict]:
    """One cell per distinct setting of the study's knobs (in table order) and seed: {knob: value, ..., "seed": s}."""
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    settings: list[dict] = []
    for key in keys:
        for row in TABLES[(paper, key)].rows:
            for s in row_settings(paper, row, dataset):
                s = {k: s[k] for k in KNOBS[paper]}
                if s not in settings:
                    settings.append(s)
    return [s | {"seed": seed + i} for i in range(seeds) for s in settings]
