"""benchmarks/cpu_share.py: which process trained, and what the others took, from sampled CPU times."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from cpu_share import CpuSampler  # noqa: E402 (benchmarks/ is a folder of scripts, not a package)


def test_the_training_process_is_found_after_it_exited_and_the_others_are_counted_up_to_their_exit():
    s = CpuSampler()
    # pid 1 trains on 2 cores until t = 10 and exits, as Ray Train's worker does before the sampler stops;
    # pid 2 (a daemon) takes 0.1 core throughout; pid 3 takes 0.5 core and exits at t = 5
    for t in range(15):
        cpu = {2: 0.1 * t} | ({1: 2.0 * t} if t <= 10 else {}) | ({3: 0.5 * t} if t <= 5 else {})
        s.samples.append((float(t), cpu))
    s.names = {1: "ray::RayTrainWorker", 2: "raylet", 3: "ray::SplitCoordinator"}
    share = s.share(6)  # the window: the last 6 s of pid 1's work, t = 4..10
    assert share["training"] == pytest.approx(2.0)
    assert share["others"] == pytest.approx(0.1 + 0.5 / 6)
    assert [n for n, _ in share["top"]] == ["raylet", "ray::SplitCoordinator"]
    assert share["processes"] == 2
