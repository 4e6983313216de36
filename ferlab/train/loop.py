"""The per-worker training loop that Ray Train's TorchTrainer runs (`train_loop_per_worker`).

One function, Ray's own pattern: build the model from the trial config, iterate this worker's shard of the train
dataset every epoch, evaluate on the whole validation set, and `ray.train.report` the metrics with a checkpoint.
The same code runs on a CPU laptop and on GPUs: `ray.train.torch.get_device()` and `prepare_model` choose the device
and wrap the model in DistributedDataParallel when there is more than one worker.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

from ferlab.config import TrainConfig, TrialConfig
from ferlab.data.augment import batch_generator, derived_seed
from ferlab.data.balance import worker_batches
from ferlab.models import create_model
from ferlab import storage
from ferlab.train import checkpoints as ckpts
from ferlab.train import metrics as M
from ferlab.train.metrics import accuracy, confusion, mean_class_accuracy
from ferlab.train.lockstep import Lockstep
from ferlab.train.relabel import Relabeler
from ferlab.train.step import _unwrap, lr_at, make_optimizer, to_input, train_step
from ferlab.train.telemetry import EpochGauges

MODEL_STREAM = 2 ** 32 - 1  # the seed key of the model's own randomness per epoch; batch keys are step numbers


def say(line: str):
    """A line for the driver's console, printed once. Train V2 replaces `print` in its workers by one that logs the
    line and, because a Ray worker's sys.stdout is a wrapper, prints it as well: every line reached the console twice.
    Printed to the process's own stdout, which Ray forwards to the driver, it passes that replacement by."""
    print(line, file=sys.__stdout__, flush=True)


@torch.no_grad()
def evaluate(model, batches, num_classes: int, device: torch.device, amp: bool, prefix: str = "val",
             rank: int = 0, world: int = 1) -> dict:
    """Accuracy, mean class accuracy, loss and confusion matrix on a whole split. With several DDP ranks each
    evaluates every world-th batch and the sums are all-reduced: every image counted once, every rank gets the
    result."""
    model.eval()
    net = _unwrap(model)  # the plain module: DDP's forward is a collective, and ranks run different batch counts
    if world > 1:
        import torch.distributed as dist

        for buf in net.buffers():  # every rank evaluates with rank 0's BatchNorm statistics, as one model would
            dist.broadcast(buf, 0)
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # on the device: no sync per batch
    n = torch.zeros((), dtype=torch.long, device=device)
    for i, batch in enumerate(batches):
        if i % world != rank:
            continue
        x, y = to_input(batch["image"].to(device), net.cfg), batch["label"].to(device).long()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            logits = net(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        n += len(y)
        cm += confusion(logits.argmax(1), y, num_classes)
    if world > 1:
        for total in (cm, loss_sum, n):
            dist.all_reduce(total)
    loss_sum, n = loss_sum.item(), int(n.item())
    cm = cm.cpu().numpy()
    names = M.split_metrics(prefix)
    return {names["loss"]: loss_sum / max(n, 1), names["acc"]: accuracy(cm), names["mca"]: mean_class_accuracy(cm),
            names["images"]: n, names["confusion"]: cm.tolist()}


def worker_threads(tc: TrainConfig) -> int:
    """Intra-op threads of a worker: TrainConfig.torch_threads, or the CPUs Ray gave it."""
    if tc.torch_threads:
        return tc.torch_threads
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, int(round(cpus)))


def restore(model, opt, relabeler, device, run_dir: str | None) -> tuple[int, float, list, dict]:
    """Continue a restored trial (or a retried worker group) from the newest intact checkpoint of its run folder, on
    local or remote storage alike: (next epoch, best, the history so far, what the restore found). That is Ray's
    registered checkpoint, or a newer one written before a worker died and never registered (its epoch is not
    trained again), or, when the newest is corrupt, the newest intact one (named in the log and counted in the
    trial's row)."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    registered = storage.uri_of(checkpoint.filesystem, checkpoint.path) if checkpoint is not None else None
    run_dir = run_dir or (storage.dirname(registered) if registered else None)  # a trainer run outside a sweep
    if not run_dir:
        return 0, 0.0, [], {}
    folder, rec, corrupt = ckpts.newest_intact(run_dir, prefer=registered)
    for c in corrupt:
        say(f"checkpoint {c} is corrupt (checksum mismatch or unreadable): skipped")
    if registered and folder and folder != registered:
        say(f"restoring {folder} (epoch {rec['epoch'] + 1}) instead of Ray's registered {registered}")
    info = {"corrupt_checkpoints": len(corrupt)} if corrupt else {}
    if folder is None:
        return 0, 0.0, [], info
    state = ckpts.load(folder, device)
    _unwrap(model).load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    if relabeler is not None:
        relabeler.table.load(state.get("labels", {}))
    return state["epoch"] + 1, state["best_val_acc"], rec["history"], info


def train_epoch(model, opt, shard, tc: TrainConfig, epoch: int, rank: int, world: int, device, relabeler,
                factors=None, start_step: int = 0, lockstep: Lockstep | None = None) -> dict:
    """One pass over this worker's shard of the training set (whole blocks, repeated by class `factors`, permuted
    and cut into batches here: ferlab.data.balance), or up to tc.max_steps optimiser steps in all (`start_step`:
    those before this epoch); with several ranks, until any rank has no batch left (`lockstep`: every rank takes
    the same steps); returns the epoch's training metrics."""
    lockstep = lockstep or Lockstep(1)
    model.train()
    for group in opt.param_groups:  # the schedule steps once per epoch, like the paper's /10 milestones
        group["lr"] = lr_at(tc, epoch, start_step)
    num_classes = _unwrap(model).cfg.num_classes
    t0, seen, loss_sum, steps, wait, first_wait = time.perf_counter(), 0, 0.0, 0, 0.0, 0.0
    class_counts = torch.zeros(num_classes, dtype=torch.long)  # the epoch's effective histogram
    blocks = shard.iter_torch_batches(batch_size=None, device="cpu")  # whole blocks, in the epoch's block order
    batches = worker_batches(blocks, tc.per_worker_batch(world), tc.seed, epoch, rank, factors)
    while True:
        tw = time.perf_counter()
        batch = next(batches, None)
        wait += time.perf_counter() - tw  # time the model waited for input: the pipeline's visible cost
        if steps == 0:
            first_wait = wait  # the per-epoch start-up of the Ray Data execution
        if lockstep.stop(batch is None or bool(tc.max_steps and start_step + steps >= tc.max_steps)):
            break  # every rank stops at the same step, whatever its own part of the epoch holds
        if tc.lr_milestone_steps:  # a schedule in steps: the rate of this very step
            for group in opt.param_groups:
                group["lr"] = lr_at(tc, epoch, start_step + steps)
        y = batch["label"] if relabeler is None else relabeler.labels(batch, batch["label"])
        gen = batch_generator(tc.seed, epoch, rank, steps, device)  # epoch k's augmentation, also after a restart
        loss, probs = train_step(model, opt, batch["image"], y, tc, device, batch.get("soft"), gen)
        if relabeler is not None:
            relabeler.step(batch, probs, y, epoch)
        loss_sum += loss
        seen += len(y)
        class_counts += torch.bincount(batch["label"].long(), minlength=num_classes)  # stored labels: the balance
        steps += 1
    train_time = time.perf_counter() - t0
    return {M.TRAIN_LOSS: loss_sum / max(steps, 1), "lr": opt.param_groups[0]["lr"], M.STEPS: steps,
            M.IMAGES_PER_S: seen * world / train_time, M.DATA_WAIT: wait / train_time,
            M.FIRST_BATCH_WAIT: first_wait,
            M.CLASS_COUNTS: class_counts.tolist()}  # this worker's: the loop sums the ranks'


def report(model, opt, metrics: dict, epoch: int, best: float, cfg: TrialConfig, relabeler, rank: int,
           history: list) -> None:
    """Report the epoch's metrics with a checkpoint (rank 0 writes it) that carries everything a resume needs,
    the trial's whole history included (ferlab.train.checkpoints)."""
    import ray.train

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = None
        if rank == 0:
            ckpts.save(tmp, {"model": _unwrap(model).state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                             "best_val_acc": best, "preset": cfg.preset,
                             "model_config": _unwrap(model).cfg.to_dict(),
                             "pretrained": cfg.pretrained,  # provenance: the files it started from
                             "labels": relabeler.state() if relabeler is not None else {}}, history)
            ckpt = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=ckpt)


def train_loop_per_worker(config: dict):
    """One trial's training on this worker, `config` = {"trial": its ferlab.config.TrialConfig} (Ray Train passes
    the trainer's train_loop_config, a dict; the trial driver builds the TrialConfig): restore, then per epoch
    train, evaluate, report."""
    import ray
    import ray.train
    import ray.train.torch

    from ferlab.data.pipeline import quiet_progress

    cfg: TrialConfig = config["trial"]
    quiet_progress(cfg.verbose)
    tc = cfg.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(worker_threads(tc))
    torch.manual_seed(tc.seed)  # same init on every rank; DDP would broadcast rank 0's anyway
    device = ray.train.torch.get_device()
    model = create_model(cfg.preset, pretrained=cfg.pretrained, **cfg.model)
    if device.type == "cuda" and tc.channels_last:
        model = model.to(memory_format=torch.channels_last)  # to_input's (N, 3, H, W) is already NHWC in memory
    model = ray.train.torch.prepare_model(model)  # to the device; DDP with several workers
    if tc.compile:
        model = torch.compile(model)
    num_classes = _unwrap(model).cfg.num_classes
    opt = make_optimizer(model, tc)
    relabeler = Relabeler(tc) if tc.relabel != "none" else None
    start_epoch, best, history, restored = restore(model, opt, relabeler, device, cfg.run_dir)
    done_steps = sum(h.get(M.STEPS, 0) for h in history)  # optimiser steps of the epochs restored
    if history and (start_epoch >= tc.epochs or 0 < tc.max_steps <= done_steps):  # a finished trial restarted (its
        # driver died before Tune saw the end)
        ray.train.report(history[-1] | restored)  # Tune gets the final result again; nothing is trained
        return

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")  # the selection split: "val", or "test" where there is no val
    # Every other split the trainer was given (test beside val, Occlusion-/Pose-RAF-DB, ...) is evaluated each epoch
    # too, so a table can report test accuracy at the epoch chosen on validation, never the best epoch on test.
    others = {name: ray.train.get_dataset_shard(name) for name in cfg.eval_splits}
    gauges = EpochGauges(cfg.metric_tags) if rank == 0 and cfg.metric_tags else None
    lockstep = Lockstep(world)
    for epoch in range(start_epoch, tc.epochs):
        t0 = time.perf_counter()
        # the model's own randomness (MAD, MSAD, dropout) per (seed, epoch, rank): epoch k draws the same after a
        # restart as in the run it continues
        torch.manual_seed(derived_seed(tc.seed, epoch, rank, MODEL_STREAM))
        metrics = train_epoch(model, opt, train_shard, tc, epoch, rank, world, device, relabeler,
                              cfg.balance_factors, done_steps, lockstep)
        done_steps += metrics[M.STEPS]
        metrics |= lockstep.check(_unwrap(model), metrics[M.STEPS], epoch)  # equal steps and parameters on every rank
        metrics[M.CLASS_COUNTS] = [sum(c) for c in zip(*lockstep.gather(metrics[M.CLASS_COUNTS]))]
        metrics |= evaluate(model, val_shard.iter_torch_batches(batch_size=256, device="cpu"), num_classes, device,
                            tc.amp, rank=rank, world=world)
        for name, shard in others.items():
            metrics |= evaluate(model, shard.iter_torch_batches(batch_size=256, device="cpu"), num_classes, device,
                                tc.amp, prefix=name, rank=rank, world=world)
        best = max(best, metrics[M.VAL_ACC])
        metrics |= {M.EPOCH: epoch + 1, M.BEST_VAL_ACC: best, M.EPOCH_TIME: time.perf_counter() - t0,
                    M.EPOCH_END: time.time(),
                    M.NODE: ray.get_runtime_context().get_node_id(),  # where rank 0 ran (which cluster node)
                    M.WORKER_PID: os.getpid()}
        metrics |= cfg.constants  # what the work before the trial measured (MVT: the MGN's quality)
        metrics |= restored  # corrupt checkpoints skipped at the restore
        if relabeler is not None:
            metrics |= relabeler.end_epoch(lockstep, rank)
        if rank == 0:  # the line's start is ferlab.EPOCH_LINE (Ray prints each such line as it comes)
            say(f"epoch {epoch + 1}: val_acc {metrics[M.VAL_ACC]:.4f} (epoch {epoch + 1} of {tc.epochs}), "
                f"{metrics[M.IMAGES_PER_S]:.0f} images/s, trial {cfg.label}")
        if gauges is not None:
            gauges.set(metrics)  # Ray metrics for Prometheus (ferlab.train.telemetry)
        history.append(metrics)
        report(model, opt, metrics, epoch, best, cfg, relabeler, rank, history)
        if tc.max_steps and done_steps >= tc.max_steps:
            break  # the paper's iterations are done: the trial ends here (Tune sees its last result)
