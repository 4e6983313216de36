"""Benchmark results as data (timm's results-CSV habit): every benchmark appends its figures as rows to a CSV under
docs/benchmarks/, each row saying when (date, commit), where (cores, CPU model, GPU) and how (the command) it was
measured. The documentation's Benchmarks page renders these files; prose never carries the figures."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(REPO, "docs", "benchmarks")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def commit() -> str | None:
    """The checkout's short commit, with "+" when it has uncommitted changes (a figure of unsaved code says so)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=REPO).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=REPO).stdout.strip()
    except OSError:
        return None
    return (head + ("+" if dirty else "")) or None


def machine(gpu: str | None = None) -> dict:
    """The columns every row starts with."""
    return {"date": datetime.date.today().isoformat(), "commit": commit(), "cores": os.cpu_count(),
            "cpu": cpu_model(), "gpu": gpu or "none"}


def command(script: str, argv: list[str] | None) -> str:
    return " ".join(["python", f"benchmarks/{os.path.basename(script)}", *(sys.argv[1:] if argv is None else argv)])


def append(path: str, rows: list[dict], *, cmd: str, gpu: str | None = None) -> None:
    """Append `rows` (figures) to the CSV at `path`, each after the machine's columns and the command; a column new
    to the file is added (empty in the older rows)."""
    import pandas as pd

    if not rows:
        return
    head = machine(gpu) | {"command": cmd}
    new = pd.DataFrame([head | r for r in rows])
    if os.path.exists(path):
        new = pd.concat([pd.read_csv(path), new], ignore_index=True)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    new.to_csv(path, index=False, float_format="%.4g")
    print(f"{len(rows)} rows appended to {os.path.relpath(path)}", flush=True)
