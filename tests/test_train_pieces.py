import dataclasses
import os
import subprocess
import sys

import optuna
import pytest
import torch

from ferlab.config import TrainConfig
from ferlab.train.step import lr_at, to_input
from ferlab.train.metrics import accuracy, confusion, mean_class_accuracy
from ferlab.report.markdown import to_markdown
from ferlab.studies import get_study
from ferlab.tune.resources import DoesNotFit, concurrent_trials, worker_resources
from ferlab.tune.spec import SweepSpec

TRANSFER = get_study("transfer")
SEARCHED = TRANSFER.searched_knobs({})


def test_confusion_and_mean_class_accuracy():
    pred = torch.tensor([0, 0, 1, 1, 1, 2])
    true = torch.tensor([0, 1, 1, 1, 1, 0])
    cm = confusion(pred, true, 3).numpy()
    assert cm.tolist() == [[1, 0, 1], [1, 3, 0], [0, 0, 0]]
    assert accuracy(cm) == pytest.approx(4 / 6)
    assert mean_class_accuracy(cm) == pytest.approx((1 / 2 + 3 / 4) / 2)  # class 2 has no samples: not counted


def test_to_input_range_and_layout():
    x = torch.tensor([[[[0, 255, 128]]]], dtype=torch.uint8)  # (1, 1, 1, 3)
    y = to_input(x)
    assert y.shape == (1, 3, 1, 1)
    assert y.flatten().tolist() == pytest.approx([-1.0, 1.0, 128 / 255 * 2 - 1], abs=1e-6)


def test_lr_schedule():
    tc = TrainConfig(epochs=40, lr=1e-3, lr_milestones=(15, 30))
    assert [lr_at(tc, e) for e in (0, 14, 15, 30)] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-5])
    cos = TrainConfig(epochs=10, lr=1.0)
    assert lr_at(cos, 0) == 1.0 and lr_at(cos, 5) == pytest.approx(0.5)
    exp = TrainConfig(epochs=10, lr=1.0, lr_decay=0.9)  # MVT's "decreased at an exponential rate"
    assert [lr_at(exp, e) for e in (0, 1, 3)] == pytest.approx([1.0, 0.9, 0.729])
    assert TrainConfig(global_batch=256).per_worker_batch(2) == 128 and TrainConfig().per_worker_batch(2) == 32


def test_space_is_conditional_and_respects_fixed_knobs():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        t = study.ask()
        const = TRANSFER.space(t, searched=SEARCHED)
        if t.params["model/branches"] == 0:
            assert const == {"model/p1": 0.0} and "model/p1" not in t.params
        else:
            assert 0.0 <= t.params["model/p1"] <= 0.9
        assert t.params["model/stem_stage"] in (2, 3, 4)
        study.tell(t, 0.0)
    t = study.ask()
    fixed = {"branches": 2, "stem_stage": 3}
    assert TRANSFER.space(t, fixed=fixed, searched=TRANSFER.searched_knobs(fixed)) == {
        "model/branches": 2, "model/stem_stage": 3}
    assert set(t.params) == {"model/p1", "model/p2"}


def test_a_sweep_decodes_row_keys_exactly_when_a_trial_may_relabel():
    """The relabel table is keyed by each row's key: the data carries keys when some trial's train.relabel is not
    "none": MVT's search (f searched), not when f is fixed to none; an ablation grid when one of its cells relabels;
    TransFER (no f knob) only when train.relabel is set."""
    mvt = SweepSpec(data="x", study="mvt")
    assert mvt.train_values("relabel") == {"none", "constant", "linear", "quadratic", "sigmoid"}
    assert SweepSpec(data="x", study="mvt", train={"relabel": "none"}).train_values("relabel") == {"none"}
    grid = [{"train": {"relabel": "none"}, "seed": 0}, {"train": {"relabel": "sigmoid"}, "seed": 0}]
    assert mvt.train_values("relabel", grid) == {"none", "sigmoid"}
    assert mvt.train_values("relabel", grid[:1]) == {"none"}
    assert SweepSpec(data="x").train_values("relabel") == {"none"}
    assert SweepSpec(data="x", train={"relabel": "linear"}).train_values("relabel") == {"linear"}


def test_sweep_spec_validates_before_ray():
    with pytest.raises(ValueError, match="p1"):
        SweepSpec(data="x", model={"p1": 1.5})
    with pytest.raises(ValueError, match="unknown model preset"):
        SweepSpec(data="x", preset="nope")
    with pytest.raises(ValueError, match="batch_size"):
        SweepSpec(data="x", train={"batch_size": 0})


def test_concurrent_trials():
    spec = SweepSpec(data="x", cpus_per_worker=1.0)
    assert concurrent_trials(spec, {"CPU": 8}) == 6  # (8 - 0.25 data) // 1.25
    gpu = SweepSpec(data="x", gpus_per_trial=2, workers_per_trial=2)  # two DDP ranks of one GPU each
    assert concurrent_trials(gpu, {"CPU": 64, "GPU": 4}) == 2
    assert worker_resources(1.0, 2, 2) == {"CPU": 1.0, "GPU": 1.0}
    assert concurrent_trials(SweepSpec(data="x", gpus_per_trial=1), {"CPU": 64, "GPU": 4}) == 4
    assert concurrent_trials(SweepSpec(data="x", gpus_per_trial=0.5), {"CPU": 64, "GPU": 4}) == 8  # shared GPUs
    assert worker_resources(2.0, 0, 1) == {"CPU": 2.0}  # no GPU asked: the same command runs on CPU
    with pytest.raises(DoesNotFit, match="and 4 GPUs; .* it has 2 GPUs"):  # a DDP trial bigger than the cluster
        concurrent_trials(SweepSpec(data="x", gpus_per_trial=4, workers_per_trial=4), {"CPU": 64, "GPU": 2})
    with pytest.raises(DoesNotFit, match="it needs 4.25 CPUs .* this Ray has 2 CPUs: --cpus-per-worker 1.5 fits"):
        concurrent_trials(SweepSpec(data="x", cpus_per_worker=4), {"CPU": 2})
    # a cluster may autoscale (clusters/gpu.yaml starts with no GPU node): --max-concurrent as given, 1 when none fits
    one_gpu = SweepSpec(data="x", gpus_per_trial=1)
    assert concurrent_trials(one_gpu, {"CPU": 8}, cluster=True) == 1
    assert concurrent_trials(dataclasses.replace(one_gpu, max_concurrent=8), {"CPU": 8, "GPU": 1}, cluster=True) == 8
    assert concurrent_trials(dataclasses.replace(one_gpu, max_concurrent=8), {"CPU": 8, "GPU": 1}) == 1  # local Ray


def test_markdown_table():
    import pandas as pd

    md = to_markdown(pd.DataFrame({"a": [1, 2], "b": [0.5, float("nan")]}))
    assert md.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.5000 |", "| 2 |  |"]


def _printed_in_a_new_process(code: str, env: dict | None = None) -> str:
    """What `code` prints in a fresh Python: what a process imports at its start cannot be seen from this one."""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip()


def test_two_workers_epoch_lines_both_print_at_once_through_rays_log_dedup():
    """Ray's driver deduplicates worker lines that differ only in numbers; a trial's epoch line (a second trial's,
    or a restarted worker's next epoch) must print when it arrives. The driver's own deduplicator, in a new process
    that imports ferlab's sweep code first, as experiments/ and the CLI do."""
    code = ("import ferlab.run.execute\n"
            "from ray._private.worker import stdout_deduplicator as d\n"
            "line = 'epoch {}: val_acc 0.1000, train class histogram [3, 4]'\n"
            "out = [ln for pid, e in [(11, 2), (12, 3)]\n"
            "       for b in d.deduplicate({'ip': 'a', 'pid': pid, 'lines': [line.format(e)]}) for ln in b['lines']]\n"
            "print(len(out))")
    env = {k: v for k, v in os.environ.items() if k != "RAY_DEDUP_LOGS_ALLOW_REGEX"}
    assert _printed_in_a_new_process(code, env) == "2"


def test_a_trial_driver_does_not_load_the_models(tmp_path):
    """Every trial starts a driver process that only builds and fits its TorchTrainer: it must not import the
    training loop's timm and models (~2 s of CPU per trial). What the driver imports, in a new process, and what
    unpickling the SweepSpec it is given (whole, as `tune.with_parameters` stores it) imports."""
    from ray import cloudpickle

    spec = SweepSpec(data=str(tmp_path), study="mvt", model={"dim": 48}, storage=str(tmp_path / "runs"))
    (tmp_path / "spec.pkl").write_bytes(cloudpickle.dumps(spec))
    code = ("import sys, pickle, ferlab.tune.trial, ferlab.config, ferlab.data.pipeline, ferlab.train.checkpoints\n"
            "import ray.train.torch, ray.tune.integration.ray_train\n"
            f"spec = pickle.loads(open({str(tmp_path / 'spec.pkl')!r}, 'rb').read())\n"
            "print(spec.trial_config({'model': {'depth': 2}}).model,\n"
            "      sorted(m for m in ('timm', 'ferlab.train.loop', 'ferlab.models') if m in sys.modules))")
    assert _printed_in_a_new_process(code) == "{'dim': 48, 'depth': 2} []"


def test_a_schedule_in_steps_decays_and_ends_where_the_paper_says():
    """TransFER on AffectNet: "we train 20K iterations with an initial learning rate of 3e-4 decayed by a factor of 10
    at 9.6K and 19.2K iterations" (section 4.2): in the recipe, in lr_at, and in the loop, which stops at max_steps
    counted across epochs (start_step: the steps of the epochs before) and sets the rate of every step."""
    from ferlab.models import create_model
    from ferlab.train.loop import train_epoch
    from ferlab.train.step import make_optimizer

    recipe = get_study("transfer").recipe("paper", "affectnet")
    assert (recipe["lr"], recipe["max_steps"], recipe["lr_milestone_steps"], recipe["lr_milestones"]) == \
        (3e-4, 20_000, (9_600, 19_200), ())
    tc = TrainConfig(**{k: v for k, v in recipe.items()})
    assert [lr_at(tc, 2, s) for s in (0, 9_599)] == [3e-4, 3e-4]
    assert lr_at(tc, 2, 9_600) == pytest.approx(3e-5) and lr_at(tc, 5, 19_200) == pytest.approx(3e-6)

    class Shard:  # what a worker's dataset shard yields: whole blocks of uint8 images and labels
        def iter_torch_batches(self, batch_size=None, device="cpu"):
            g = torch.Generator().manual_seed(0)
            for _ in range(2):
                yield {"image": torch.randint(0, 256, (64, 64, 64, 3), dtype=torch.uint8, generator=g),
                       "label": torch.randint(0, 7, (64,), generator=g)}

    model = create_model("transfer_tiny")
    small = TrainConfig(lr=1.0, batch_size=16, augment="none", max_steps=5, lr_milestone_steps=(4,), epochs=3,
                        torch_threads=1)
    opt = make_optimizer(model, small)
    m = train_epoch(model, opt, Shard(), small, epoch=1, rank=0, world=1, device=torch.device("cpu"),
                    relabeler=None, start_step=2)
    assert m["steps"] == 3  # steps 2, 3, 4 of 5 (8 batches were there)
    assert m["lr"] == pytest.approx(0.1)  # step 4 is past the milestone
    full = train_epoch(model, opt, Shard(), dataclasses.replace(small, max_steps=0), epoch=1, rank=0, world=1,
                       device=torch.device("cpu"), relabeler=None)
    assert full["steps"] == 8  # without max_steps, the whole epoch
