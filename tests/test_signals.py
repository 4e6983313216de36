"""SIGTERM on the driver goes where Ctrl-C goes (ferlab.tune.signals); the exit code says which came. The sweep that
gets it is tests/test_faults.py's fault chain."""

import os
import signal
import time

import pytest

from ferlab.tune import signals


@pytest.fixture
def handlers():
    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signals._received.clear()
    yield
    signal.signal(signal.SIGINT, saved[0])
    signal.signal(signal.SIGTERM, saved[1])
    signals._received.clear()


def _deliver(sig):
    os.kill(os.getpid(), sig)
    time.sleep(0.2)  # Python runs the handler in the main thread between bytecodes


def test_sigterm_reaches_the_interrupt_handler_and_exits_143(handlers):
    assert signals.exit_code() == 130  # Ctrl-C (or Tune's SIGUSR1)
    calls = []
    signal.signal(signal.SIGINT, lambda sig, frame: calls.append(sig))  # where Tune's handler stands in a sweep
    signals.stop_on_termination()
    _deliver(signal.SIGTERM)
    assert calls == [signal.SIGINT] and signals.exit_code() == 128 + signal.SIGTERM


def test_sigterm_outside_a_sweep_interrupts_as_ctrl_c(handlers):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signals.stop_on_termination()
    with pytest.raises(KeyboardInterrupt):
        _deliver(signal.SIGTERM)
    assert signals.exit_code() == 143
