import os

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: starts a real local Ray or trains for a while")


@pytest.fixture(scope="session")
def ferplus_root():
    root = os.environ.get("FERLAB_FERPLUS", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                                         "ferplus"))
    if not os.path.isdir(root):
        pytest.skip(f"FERPlus copy not found at {root} (set FERLAB_FERPLUS)")
    return root


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory):
    """A small SynthFER shard folder at transfer_tiny's input size, shared by the tests of a session."""
    from ferlab.data.synth import SynthSpec, make_synthfer

    out = tmp_path_factory.mktemp("synth")
    make_synthfer(out, n=200, spec=SynthSpec(size=64), seed=3, progress=False)
    return str(out)


@pytest.fixture(scope="module")
def ray_local():
    """A 2-CPU local Ray with a small object store for one test module, shut down after it."""
    import ray

    ray.init(num_cpus=2, object_store_memory=300 * 1024 * 1024, include_dashboard=False)
    yield
    ray.shutdown()
