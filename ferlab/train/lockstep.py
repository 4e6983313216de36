"""DDP ranks that cannot fall out of step: every rank takes the same number of optimiser steps in every epoch.

Each rank cuts its own part of the epoch into batches (ferlab.data.balance): class-balanced up-sampling rounds the
copies of each row at random, so two ranks' parts differ by a few rows (and by more when one rank's blocks hold more
rare-class faces). A rank that ran out first went on to evaluate while the other waited in a gradient all-reduce that
never came: the trial hung. Drawing the epoch's copies once over the whole split before dividing it would need a Ray
Data task per epoch (what benchmarks/pipeline_overhead.py measured as costly on small machines), and still trusts
every split, limit, stream and restart to divide evenly. Instead the ranks agree before every step: each says
whether it has a batch (and is within max_steps), and all stop at the first step any rank cannot take. Whatever cut
the rows, the step counts are equal by construction; the longer ranks leave their last few batches untrained, as
drop_last leaves a partial batch.

The agreement is one integer all-reduced per step. With NCCL (GPUs) it runs on a CPU (gloo) group of its own, so
that it never waits on the GPU's queue. At the end of an epoch the ranks also exchange their step counts and a
checksum of their parameters: DDP keeps the replicas identical, and a difference means the ranks trained apart.
"""

from __future__ import annotations

import torch

from ferlab.train import metrics as M


class Lockstep:
    """The per-step agreement of a trial's ranks (world 1: no collective at all)."""

    def __init__(self, world: int):
        self.world = world
        self.group = None  # the default group (gloo on CPUs), or a gloo group beside NCCL
        if world > 1:
            import torch.distributed as dist

            if dist.get_backend() != "gloo":
                self.group = dist.new_group(backend="gloo")  # collective: every rank creates it, in the same order

    def stop(self, mine: bool) -> bool:
        """True on every rank when any rank must stop before this step (no batch left, or max_steps reached)."""
        if self.world == 1:
            return mine
        import torch.distributed as dist

        flag = torch.tensor([int(mine)])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return bool(flag.item())

    def gather(self, value) -> list:
        """Every rank's `value` (any picklable object), in rank order."""
        if self.world == 1:
            return [value]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, value, group=self.group)
        return out

    def check(self, model, steps: int, epoch: int) -> dict:
        """The epoch's step count and parameter checksum of every rank; a RuntimeError when they differ (the
        checkpoint holds rank 0's parameters only: a trial whose ranks trained apart must not report a result)."""
        if self.world == 1:
            return {}
        with torch.no_grad():
            checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
        ranks = self.gather((steps, checksum))
        steps_of, sums = [s for s, _ in ranks], [c for _, c in ranks]
        scale = max(1.0, max(abs(c) for c in sums))
        if len(set(steps_of)) > 1 or max(sums) - min(sums) > 1e-9 * scale:
            raise RuntimeError(f"epoch {epoch + 1}: the DDP ranks fell out of step: optimiser steps {steps_of}, "
                               f"parameter checksums {sums}")
        return {M.RANK_STEPS: steps_of, M.RANK_CHECKSUMS: sums}
