"""Search TransFER's knobs (B, p1, p2, stem stage) with Ray Tune + Optuna (TPE) + ASHA.

Paper: Xue et al., "TransFER: Learning Relation-aware Facial Expression Representations with Transformers",
ICCV 2021 (Fig. 3, Tables 2 and 3 are slices of this search space).

    python experiments/sweep_transfer.py            # laptop: SynthFER, transfer_tiny, 8 trials, local Ray
    python experiments/sweep_transfer.py --smoke    # the smallest run that exercises every piece (~2 min)
    python experiments/sweep_transfer.py --data /data/shards/rafdb --preset transfer_paper \
        --recipe paper --gpus-per-trial 1 --storage s3://bucket/ferlab --samples 32

Each trial is a Ray Train TorchTrainer run reporting validation accuracy every epoch; the first is the paper's
setting (B=2, p1=0.6, p2=0.3, stage 3). Writes trials.csv, trials.md, history.csv and run.json.

Expected (no arguments, a 2-core CPU, measured 2026-12-04: docs/benchmarks/commands.csv): 15 minutes; the paper's
point best, at 0.417 validation accuracy on SynthFER (chance 0.14), ASHA stopping five of the eight trials.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout, uninstalled

from ferlab.run.runner import ExperimentConfig, replace  # noqa: E402


def get_config() -> ExperimentConfig:
    return ExperimentConfig(paper="transfer", name="sweep_transfer")


def smoke(config: ExperimentConfig) -> ExperimentConfig:
    return replace(config, samples=2, epochs=2, grace_period=1, synth_n=700)


def main(argv=None) -> int:
    from ferlab.run.runner import main as run

    return run(__file__, argv)


if __name__ == "__main__":
    sys.exit(main())
