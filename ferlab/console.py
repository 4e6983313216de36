"""What ferlab says on the console: its argument parser (errors in one line) and progress bars for its long steps
(`ferlab prepare`, MVT's MGN stage): tqdm, with its count, rate and ETA.

Off a terminal (a log file, a pipe, a Ray worker whose lines Ray forwards to the driver) tqdm's redraws would pile
up on one line of carriage returns: there each redraw is a line of its own, at most every 30 s, and a step shorter
than that prints no bar (its start and end lines say enough).
"""

from __future__ import annotations

import argparse

import sys

from tqdm import tqdm

QUIET_S = 30  # off a terminal: seconds between two lines of a bar, and before its first


class _Lines:
    """tqdm's stream off a terminal: each redraw (tqdm starts it with a carriage return) a line of its own."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.strip("\r\n ")
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()



class Parser(argparse.ArgumentParser):
    """argparse with its errors as one line and a pointer to --help, instead of the whole usage (22 lines for a
    wrong --recipe); the exit code stays 2. Every ferlab command and experiment file parses with it."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

def progress_bar(total: int | None, desc: str, unit: str, disable: bool = False) -> tqdm:
    """A bar on stderr: live on a terminal; elsewhere a line every QUIET_S seconds and one at the end. `total`
    None: unknown for now (set `bar.total` when it is known; rate and ETA follow)."""
    live = sys.stderr.isatty()
    if live:
        return tqdm(total=total, desc=desc, unit=" " + unit, disable=disable, mininterval=0.2, dynamic_ncols=True)
    return tqdm(total=total, desc=desc, unit=" " + unit, disable=disable, mininterval=QUIET_S, delay=QUIET_S,
                file=_Lines(sys.stderr), ncols=100)
