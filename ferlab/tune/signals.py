"""SIGTERM on the driver handled as Ctrl-C. Kubernetes, Slurm and a spot reclamation send SIGTERM first (Kubernetes then
waits 30 s before SIGKILL); Ray's driver left it to Ray's C++ handler, which printed a stack trace and ended the
process with exit 134: no tables, no `interrupted` record, no resume hint. Here SIGTERM goes to whatever handles
SIGINT at that moment: during a sweep Tune's own handler (it stops the trials, saves the experiment state and returns
from fit(), as for Ctrl-C; Tune handles SIGUSR1, which Slurm's `--signal` sends, the same way), so the partial tables
are written and the run exits 128 + 15 = 143, as a shell reports a process ended by SIGTERM."""

from __future__ import annotations

import signal

_received: list[int] = []  # the termination signals this process got, in order


def stop_on_termination() -> None:
    """Install the handler (in the main thread, after Ray is initialised: ray.init installs its own)."""

    def handler(signum, frame):
        _received.append(signum)
        on_interrupt = signal.getsignal(signal.SIGINT)
        if callable(on_interrupt) and on_interrupt is not signal.default_int_handler:
            on_interrupt(signal.SIGINT, frame)  # Tune's: stop the sweep as Ctrl-C does
        else:
            raise KeyboardInterrupt  # outside a sweep: as Ctrl-C there

    signal.signal(signal.SIGTERM, handler)


def exit_code() -> int:
    """The exit code of an interrupted run: 143 after SIGTERM, else 130 (Ctrl-C, or SIGUSR1 through Tune)."""
    return 128 + (_received[-1] if _received else signal.SIGINT)
