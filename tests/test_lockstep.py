"""DDP ranks in lockstep (ferlab.train.lockstep), in two real gloo processes without Ray: each rank gets a part of
the epoch that holds a different number of rows and classes (as Ray's streaming split and class-balanced
up-sampling give them), and every rank must take the same optimiser steps and end each epoch with the same
parameters. Without the agreement the ranks' gradient all-reduces pair up wrongly and the run hangs: the test's
time-out fails it (seen once with `lockstep.stop` returning each rank's own answer)."""

from __future__ import annotations

import multiprocessing
import socket
import types

import pytest
import torch

WORLD = 2


class Tiny(torch.nn.Module):
    """A model train_step accepts: (N, 3, H, W) -> logits, with a cfg."""

    def __init__(self, classes=3):
        super().__init__()
        self.cfg = types.SimpleNamespace(num_classes=classes)
        self.head = torch.nn.Linear(3 * 4 * 4, classes)

    def forward(self, x):
        return self.head(x.flatten(1))


class Shard:
    """One rank's part of the epoch as Ray hands it (whole blocks of uint8 images and labels): `rows` rows whose
    labels are drawn from `weights`, different on every rank."""

    def __init__(self, rows: int, weights, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.label = torch.multinomial(torch.tensor(weights, dtype=torch.float), rows, True, generator=g)
        self.image = torch.randint(0, 256, (rows, 4, 4, 3), dtype=torch.uint8, generator=g)

    def iter_torch_batches(self, batch_size=None, device="cpu"):
        for i in range(0, len(self.label), 64):  # blocks of 64 rows
            yield {"image": self.image[i:i + 64], "label": self.label[i:i + 64]}


def _rank(rank: int, port: int, case: dict, out):
    import torch.distributed as dist

    from ferlab.config import TrainConfig
    from ferlab.data.balance import repeat_factors
    from ferlab.train.lockstep import Lockstep
    from ferlab.train.loop import train_epoch
    from ferlab.train.step import make_optimizer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(0)
        model = torch.nn.parallel.DistributedDataParallel(Tiny())
        tc = TrainConfig(epochs=3, batch_size=8, balance=case["balance"], max_steps=case.get("max_steps", 0),
                         augment="none", lr=0.1)
        counts = [300, 60, 12]
        factors = repeat_factors(counts, tc.balance).tolist() if tc.balance != "none" else None
        shard = Shard(case["rows"][rank], case["weights"][rank], seed=rank)
        lockstep = Lockstep(WORLD)
        steps, done = [], case.get("start_step", 0)
        for epoch in range(tc.epochs):
            m = train_epoch(model, make_optimizer(model, tc), shard, tc, epoch, rank, WORLD, torch.device("cpu"),
                            None, factors, done, lockstep)
            done += m["steps"]
            steps.append(lockstep.check(model.module, m["steps"], epoch))
        out.put((rank, steps))
    except Exception as e:  # noqa: BLE001: the test shows what failed in the rank
        out.put((rank, repr(e)))
    finally:
        dist.destroy_process_group()


CASES = {
    # Ray's split gives equal rows; up-sampling's random rounding then differs per rank
    "full, equal rows": {"balance": "full", "rows": (200, 200), "weights": ((5, 1, 1), (1, 5, 1))},
    "repeat, equal rows": {"balance": "repeat", "rows": (200, 200), "weights": ((5, 1, 1), (1, 1, 5))},
    # a --limit or a streamed split that did not divide evenly
    "none, unequal rows": {"balance": "none", "rows": (200, 170), "weights": ((1, 1, 1), (1, 1, 1))},
    # a schedule in steps that ends mid-epoch, after a restart that had already taken 10 steps
    "max_steps after a restart": {"balance": "full", "rows": (200, 200), "weights": ((5, 1, 1), (1, 5, 1)),
                                  "max_steps": 40, "start_step": 10},
}


@pytest.mark.parametrize("name", CASES)
def test_ranks_take_the_same_steps_and_keep_the_same_parameters(name):
    case = CASES[name]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(r, port, case, out), daemon=True) for r in range(WORLD)]
    for p in procs:
        p.start()
    try:
        results = dict(out.get(timeout=45) for _ in range(WORLD))  # a hang (ranks out of step) fails here
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    assert all(isinstance(v, list) for v in results.values()), results
    epochs = results[0]
    assert epochs == results[1]
    for e in epochs:
        assert len(set(e["rank_steps"])) == 1 and len(set(e["rank_param_checksums"])) == 1, e
    total = sum(e["rank_steps"][0] for e in epochs)
    if "max_steps" in case:  # the schedule's last step is the same on both ranks
        assert total == case["max_steps"] - case["start_step"]
    else:
        assert total > 0


def _apart(rank: int, port: int, out):
    import torch.distributed as dist

    from ferlab.train.lockstep import Lockstep

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        model = Tiny()
        torch.nn.init.constant_(model.head.weight, 0.1 * (1 + rank))  # the replicas differ: trained apart
        Lockstep(WORLD).check(model, steps=5, epoch=0)
        out.put((rank, "no error"))
    except RuntimeError as e:
        out.put((rank, str(e)))
    finally:
        dist.destroy_process_group()


def test_ranks_whose_parameters_differ_are_stopped():
    """The epoch's check itself: replicas that differ stop the trial on every rank, naming both checksums (seen
    passing with the raise removed: fails)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_apart, args=(r, port, out), daemon=True) for r in range(WORLD)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=45) for _ in range(WORLD))
    for p in procs:
        p.join(timeout=10)
    assert all("epoch 1: the DDP ranks fell out of step: optimiser steps [5, 5], parameter checksums" in v
               for v in results.values()), results
