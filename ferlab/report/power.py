"""How many seeds a comparison needs: the power of the report's test (two-sided Welch) at a table's measured spread.

For every row of an ablation table with 2+ seeds, against the table's baseline row:
- the difference the run as measured resolves (two-sided Welch, alpha 0.05, power 0.8: the smallest true difference
  its test finds four times in five), and
- the seeds per cell a run needs to resolve the paper's published difference between the two rows at that spread,
  and what they cost in GPU-hours at paper scale (benchmarks/gpu_hours.py's per-training estimate).
The laptop's spread stands in for the paper-scale run's until one measures its own; the papers report cells 0.3-1.0
points apart (TransFER Table 1: 89.93 / 90.03 / 90.35 / 90.91 on RAF-DB).

Power from the noncentral t distribution with the Welch-Satterthwaite degrees of freedom (scipy.stats.nct), written
here because scipy has no Welch power function and statsmodels' equal-variance one would be a dependency for 20
lines.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

ALPHA, POWER = 0.05, 0.8
MOST_SEEDS = 1000  # beyond this a difference counts as unresolvable at the spread


def welch_power(delta: float, sd1: float, n1: int, sd2: float, n2: int, alpha: float = ALPHA) -> float:
    """The probability that a two-sided Welch test at `alpha` finds a true difference `delta` between two cells with
    standard deviations sd1, sd2 over n1, n2 runs."""
    from scipy import stats

    v1, v2 = sd1 ** 2 / n1, sd2 ** 2 / n2
    se = math.sqrt(v1 + v2)
    if se == 0:
        return 1.0 if delta else alpha
    df = (v1 + v2) ** 2 / (v1 ** 2 / (n1 - 1) + v2 ** 2 / (n2 - 1))
    t = stats.t.ppf(1 - alpha / 2, df)
    nc = abs(delta) / se
    p = float(stats.nct.sf(t, df, nc) + stats.nct.cdf(-t, df, nc))
    return p if p == p else float(nc > t)  # scipy's nct gives NaN far in the tail, where the answer is plain


def resolvable(sd1: float, n1: int, sd2: float, n2: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest difference the test resolves with `power` at these spreads and counts."""
    from scipy.optimize import brentq

    scale = math.sqrt(sd1 ** 2 / n1 + sd2 ** 2 / n2)
    if scale == 0:
        return 0.0
    return float(brentq(lambda d: welch_power(d, sd1, n1, sd2, n2, alpha) - power, 1e-9 * scale, 30 * scale))


def seeds_needed(delta: float, sd1: float, sd2: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """The fewest seeds per cell (both cells alike) that resolve `delta` with `power`; None beyond MOST_SEEDS."""
    if delta == 0:
        return None
    lo, hi = 2, 2
    while welch_power(delta, sd1, hi, sd2, hi, alpha) < power:
        if hi >= MOST_SEEDS:
            return None
        lo, hi = hi, min(2 * hi, MOST_SEEDS)
    while lo < hi:  # the power grows with n: bisect for the first n that reaches it
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if welch_power(delta, sd1, mid, sd2, mid, alpha) < power else (lo, mid)
    return hi


def gpu_hours_per_training(preset: str) -> float | None:
    """GPU-hours of one training at paper scale, from the newest docs/benchmarks/gpu_hours.csv row of `preset`
    (an estimate: counted FLOPs at an assumed utilisation); None where the checkout has no such row."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "docs",
                        "benchmarks", "gpu_hours.csv")
    if not os.path.isfile(path):
        return None
    rows = pd.read_csv(path)
    rows = rows[rows["preset"] == preset]
    return None if rows.empty else float(rows.iloc[-1]["gpu_hours_estimate"] / rows.iloc[-1]["trainings"])


def power_table(values: pd.DataFrame, baseline: int, per_training_h: float | None = None) -> pd.DataFrame | None:
    """A table's rows (ReportTable.values: row, n, mean and std as fractions, paper in %) against its baseline row,
    in percentage points: the difference each resolves, the paper's difference, the seeds per cell that resolve it
    at the measured spread and their GPU-hours at paper scale (two cells). None when the baseline or no other row
    has 2+ seeds."""
    values = values.assign(mean=100 * values["mean"], std=100 * values["std"])
    base = values.iloc[baseline]
    if not base["n"] >= 2:
        return None
    out = []
    for i, row in values.iterrows():
        if i == baseline or not row["n"] >= 2:
            continue
        paper_diff = (row["paper"] - base["paper"]) if pd.notna(row["paper"]) and pd.notna(base["paper"]) else None
        seeds = seeds_needed(paper_diff, row["std"], base["std"]) if paper_diff else None
        out.append({"row": row["row"], "n": int(row["n"]), "baseline n": int(base["n"]),
                    "measured difference": row["mean"] - base["mean"],
                    "resolvable difference": resolvable(row["std"], int(row["n"]), base["std"], int(base["n"])),
                    "paper difference": paper_diff,
                    "seeds per cell for it": seeds if seeds is not None else (
                        f"> {MOST_SEEDS}" if paper_diff else "-"),
                    "GPU-hours (estimate)": (2 * seeds * per_training_h) if seeds and per_training_h else np.nan})
    return pd.DataFrame(out).round({"measured difference": 2, "resolvable difference": 2, "paper difference": 2,
                                    "GPU-hours (estimate)": 1}) if out else None
