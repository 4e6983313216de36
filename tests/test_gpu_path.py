"""The GPU path's pieces, on the CPU with the same code: gradient accumulation, evaluation sharded over DDP ranks,
the model under torch.compile's and DDP's wrappers."""

import os
import types

import pytest
import torch
import torch.multiprocessing as mp

from ferlab.config import TrainConfig
from ferlab.train.loop import evaluate
from ferlab.train.step import _unwrap, train_step


class Tiny(torch.nn.Module):
    """A model train_step and evaluate accept: (N, 3, H, W) -> logits, with a cfg and a BatchNorm buffer."""

    def __init__(self, classes=3):
        super().__init__()
        self.cfg = types.SimpleNamespace(num_classes=classes)
        self.norm = torch.nn.BatchNorm2d(3, affine=False)
        self.head = torch.nn.Linear(3 * 4 * 4, classes)

    def forward(self, x):
        return self.head(self.norm(x).flatten(1))


def _data(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 4, 4, 3), generator=g, dtype=torch.uint8), torch.randint(0, 3, (n,), generator=g)


def _grads(accumulate):
    torch.manual_seed(0)
    model = Tiny()
    model.norm = torch.nn.Identity()  # micro-batches would see other BatchNorm statistics: compare without it
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _data()
    loss, probs = train_step(model, opt, x, y, TrainConfig(augment="none", accumulate=accumulate), torch.device("cpu"))
    return loss, probs, [p.grad.clone() for p in model.parameters()], [p.detach().clone() for p in model.parameters()]


def test_accumulated_micro_batches_give_the_whole_batch_step():
    loss1, probs1, grads1, params1 = _grads(1)
    loss4, probs4, grads4, params4 = _grads(4)
    assert loss4 == pytest.approx(loss1, rel=1e-5)
    assert torch.allclose(probs4, probs1, atol=1e-6) and probs4.shape == (24, 3)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads1, grads4))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(params1, params4))


def _batches(n=70, size=16):
    x, y = _data(n, seed=1)
    return [{"image": x[i:i + size], "label": y[i:i + size]} for i in range(0, n, size)]  # 5 batches, last short


def _evaluate_rank(rank, world, port, out):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = Tiny()
    if rank:  # a rank whose BatchNorm statistics drifted: evaluation must use rank 0's
        model.norm.running_mean += 5.0
    out[rank] = evaluate(model, _batches(), 3, torch.device("cpu"), amp=False, rank=rank, world=world)
    dist.destroy_process_group()


def test_sharded_evaluation_counts_every_image_once_and_equals_one_rank():
    torch.manual_seed(0)
    alone = evaluate(Tiny(), _batches(), 3, torch.device("cpu"), amp=False)
    with mp.Manager() as manager:
        out = manager.dict()
        port = 29500 + os.getpid() % 1000
        mp.spawn(_evaluate_rank, args=(2, port, out), nprocs=2, join=True)
        results = dict(out)
    for rank in (0, 1):
        r = results[rank]
        assert r["val_images"] == 70 and r["confusion"] == alone["confusion"]
        assert r["val_acc"] == alone["val_acc"] and r["val_loss"] == pytest.approx(alone["val_loss"])


def test_unwrap_reaches_the_model_under_compile():
    model = Tiny()
    assert _unwrap(torch.compile(model)) is model  # compiles lazily: nothing is compiled here
