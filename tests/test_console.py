"""ferlab.console's progress bars: off a terminal (a log file, a Ray worker's forwarded lines) each redraw is a
line with the count, rate and ETA, never a run of carriage returns."""

import io
import sys

from ferlab import console


def test_a_bar_off_a_terminal_writes_lines_with_rate_and_eta(monkeypatch):
    err = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(console, "QUIET_S", 0)
    bar = console.progress_bar(None, "MGN stage (2 epochs)", "batches")
    for _ in range(5):
        bar.update()
    bar.total = 10  # known after the first pass
    for _ in range(5):
        bar.update()
    bar.close()
    out = err.getvalue()
    assert "\r" not in out and out.endswith("\n")
    lines = out.splitlines()
    assert len(lines) >= 2 and all(line.startswith("MGN stage (2 epochs)") for line in lines), lines
    assert "10/10" in lines[-1] and "batches/s" in lines[-1] and "<00:00" in lines[-1], lines[-1]


def test_a_short_step_off_a_terminal_prints_no_bar(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    bar = console.progress_bar(3, "prepare ferplus", "faces")
    bar.update(3)
    bar.close()
    assert err.getvalue() == ""  # under QUIET_S: its start and end lines say enough
