"""A GitHub Markdown table from a DataFrame. Written here (a dozen lines) to avoid pandas' optional `tabulate`."""

from __future__ import annotations

import math

import pandas as pd


def to_markdown(df: pd.DataFrame, floatfmt: str = ".4f") -> str:
    def cell(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else format(v, floatfmt)
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)
