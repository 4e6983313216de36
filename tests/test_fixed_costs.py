"""benchmarks/fixed_costs.py: the time between trials, from the trials' (start, end) spans."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from fixed_costs import slot_gaps  # noqa: E402 (benchmarks/ is a folder of scripts, not a package)


def test_one_slot_gaps_are_start_minus_the_previous_end():
    assert slot_gaps([(0.0, 10.0), (13.0, 20.0), (27.0, 30.0)]) == [3.0, 7.0]


def test_two_slots_a_trial_starts_on_the_slot_that_came_free_last():
    # two trials at once; the third starts 2 s after the first ends, the fourth 1 s after the second
    spans = [(0.0, 10.0), (0.5, 15.0), (12.0, 30.0), (16.0, 31.0)]
    assert slot_gaps(spans) == [2.0, 1.0]
