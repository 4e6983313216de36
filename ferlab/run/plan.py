"""`--dry-run`: what an experiment would train, resolved, without starting Ray or preparing data.

Standard output: one JSON object (run.json's spec, the resolved train and model configs, the run options, where each
train field's value came from and the learning rate of every epoch), so that it pipes into jq. Standard error: the
recipe's trace for a reader, each value with its source (explicit > the recipe's for the data set > the experiment
file > default, ferlab.run.options.PRECEDENCE) and, where the paper states it, the paper's sentence; "chosen"
where ferlab chose a value the paper does not give.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from ferlab.config import TrainConfig
from ferlab.studies import get_study
from ferlab.run.options import PRECEDENCE


def epoch_rates(tc: TrainConfig) -> list[float]:
    """The learning rate each epoch starts with (ferlab.train.step.lr_at; a schedule in steps: its first step's)."""
    from ferlab.train.step import lr_at

    return [lr_at(tc, e) for e in range(tc.epochs)]


def schedule(tc: TrainConfig) -> str:
    """The learning-rate schedule in words."""
    if tc.lr_milestone_steps:
        return (f"{tc.lr:g}, x0.1 at optimiser steps {', '.join(map(str, tc.lr_milestone_steps))}"
                + (f", {tc.max_steps} steps in all" if tc.max_steps else ""))
    rates = epoch_rates(tc)
    if tc.lr_milestones:
        spans, start = [], 0
        for e in range(1, len(rates) + 1):
            if e == len(rates) or rates[e] != rates[start]:
                spans.append(f"epochs {start + 1}-{e}: {rates[start]:g}")
                start = e
        return f"x0.1 at epochs {', '.join(str(m) for m in tc.lr_milestones)} ({'; '.join(spans)})"
    if tc.lr_decay:
        return f"{tc.lr:g} x {tc.lr_decay:g} per epoch (epoch {tc.epochs}: {rates[-1]:.3g})"
    return f"{tc.lr:g}, cosine to 0 over {tc.epochs} epochs" + (
        f" after {tc.warmup_epochs} warm-up" if tc.warmup_epochs else "")


def trace(spec, run, facts: dict) -> list[str]:
    """The recipe's trace: one line per setting that decides how a trial trains."""
    study = get_study(spec.study)
    tc = spec.train_cfg
    dataset, sources = facts.get("dataset"), facts.get("sources", {})

    def why(*fields: str) -> str:
        layer = min((sources.get(f, "default") for f in fields), key=PRECEDENCE.index)
        note = study.recipe_note(run.recipe, dataset, fields[0]) if layer in ("recipe", "default") else ""
        return f"  [{layer}{'' if layer != 'recipe' else ' ' + run.recipe}]" + (f" {note}" if note else "")

    workers = spec.workers_per_trial
    per = tc.per_worker_batch(workers)
    lines = [f"recipe {run.recipe} on {dataset or 'synthfer'}, {study.name} ({spec.preset}); precedence: "
             + " > ".join(PRECEDENCE),
             f"  epochs        {tc.epochs}" + (f" (a ceiling: {tc.max_steps} optimiser steps)" if tc.max_steps else "")
             + why("epochs", "max_steps"),
             f"  lr            {tc.lr:g}: {schedule(tc)}" + why("lr", "lr_milestones", "lr_decay"),
             f"  batch         {per} per worker x {workers} workers = {per * workers} global" + why(
                 "global_batch", "batch_size"),
             f"  balance       {tc.balance}" + (f" (threshold {tc.balance_threshold})" if tc.balance == "repeat"
                                                else "") + why("balance"),
             f"  augmentation  {tc.augment}" + why("augment"),
             f"  optimiser     {tc.optimizer}" + (f", momentum {tc.momentum}" if tc.optimizer == "sgd" else "")
             + why("optimizer"),
             f"  weight decay  {tc.weight_decay:g}" + why("weight_decay")]
    if tc.relabel != "none":
        lines.append(f"  relabel       {tc.relabel} from epoch {tc.relabel_start}, delta {tc.relabel_delta}"
                     + why("relabel_start"))
    align = facts.get("alignment") or "the shards' (prepared on the first run)"
    lines.append(f"  alignment     {align}" + (f"  [{study.alignment_note(dataset)}]"
                                               if study.alignment_note(dataset) else ""))
    files = ", ".join(f"{k}: {v}" for k, v in spec.pretrained.items()) or "none: from scratch"
    lines.append(f"  weights       {files}")
    return lines


def resolved(spec, run, grid, facts: dict, experiment: dict | None = None) -> dict:
    """The JSON object --dry-run prints: run.json's spec and run options, the configs as the trainer builds them."""
    from ferlab.models import model_config

    tc = spec.train_cfg
    return {"spec": spec.saved(), "run_options": dataclasses.asdict(run), "experiment": experiment,
            "dataset": facts.get("dataset"), "train_config": dataclasses.asdict(tc),
            "model_config": model_config(spec.preset, **spec.model).to_dict(),
            "sources": facts.get("sources", {}), "epoch_lr": epoch_rates(tc),
            "batch": {"per_worker": tc.per_worker_batch(spec.workers_per_trial), "workers": spec.workers_per_trial,
                      "global": tc.per_worker_batch(spec.workers_per_trial) * spec.workers_per_trial},
            "trials": len(grid) if grid is not None else spec.samples}


def dry_run(spec, run, grid, tables, facts: dict, experiment: dict | None = None) -> int:
    for line in trace(spec, run, facts):
        print(line, file=sys.stderr)
    if tables:
        print(f"  tables        {', '.join(tables)}: {len(grid)} trials", file=sys.stderr)
    print(json.dumps(resolved(spec, run, grid, facts, experiment), indent=1, default=str))
    return 0


def departures(history, plan: dict) -> list[str]:
    """How a run's history.csv departs from its --dry-run plan (`plan`, the JSON object): [] when every epoch of
    every trial had equal steps and parameters on every rank, the planned global batch at every step and the
    planned learning rate of the epoch (a schedule in steps is not compared: it sets the rate every step)."""
    import json as _json

    from ferlab.train import metrics as M

    out = []
    tc, batch = plan["train_config"], plan["batch"]
    for trial, rows in history.groupby("trial"):
        for _, row in rows.iterrows():
            where = f"trial {trial}, epoch {int(row[M.EPOCH])}"
            if batch["workers"] > 1:
                steps = _json.loads(row[M.RANK_STEPS])
                sums = _json.loads(row[M.RANK_CHECKSUMS])
                if len(set(steps)) != 1 or len(set(sums)) != 1:
                    out.append(f"{where}: ranks out of step (steps {steps}, checksums {sums})")
            images = sum(_json.loads(row[M.CLASS_COUNTS]))
            if images != row[M.STEPS] * batch["global"]:
                out.append(f"{where}: {images} images in {row[M.STEPS]} steps, not the global batch "
                           f"{batch['global']}")
            want = plan["epoch_lr"][int(row[M.EPOCH]) - 1]
            if not tc["lr_milestone_steps"] and abs(row["lr"] - want) > 1e-9 * want:  # (in steps: set every step)
                out.append(f"{where}: learning rate {row['lr']:g}, planned {want:g}")
    return out
