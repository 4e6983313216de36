"""Search MVT's knobs (mask ratio m, relabel function f) with Ray Tune + Optuna (TPE) + ASHA; two stages per trial.

Paper: Li et al., "MVT: Mask Vision Transformer for Facial Expression Recognition in the Wild", 2021 (Table 1 is the
m axis, Table 2 the f axis, Table 3 the corners m = 0 / f = none).

    python experiments/sweep_mvt.py            # laptop: SynthFER with 20% label noise, mvt_tiny, 8 trials
    python experiments/sweep_mvt.py --smoke    # both stages through Ray, smallest sizes (~2 min)
    python experiments/sweep_mvt.py --data /data/shards/rafdb224 --preset mvt_paper --deit-weights \
        deit_small_patch16_224-cd65a155.pth --recipe paper --gpus-per-trial 1 --samples 24

Each trial: (1) the MGN stage for its m, a Ray Train run trained like a GAN (Eqs. 1-4), stored under the storage
path and reused by every later trial with the same MGN key (a lock in the storage makes concurrent trials wait);
m = 0 means no MGN; (2) the classifier stage with the MGN frozen, relabeling with f from --relabel-start on. The
first trial is the paper's RAF-DB point (m = 0.15, sigmoid).

Expected: with DeiT-S weights and --recipe paper on RAF-DB the paper reports 86.7-88.6%; on SynthFER this shows the
pipeline and relabel precision against SynthFER's clean labels, not the paper's numbers.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout, uninstalled

from ferlab.studies.mvt import CPU_EXPERIMENT  # noqa: E402
from ferlab.run.runner import ExperimentConfig, replace  # noqa: E402


def get_config() -> ExperimentConfig:
    return ExperimentConfig(paper="mvt", name="sweep_mvt", grace_period=4, **CPU_EXPERIMENT)


def smoke(config: ExperimentConfig) -> ExperimentConfig:
    return replace(config, samples=2, epochs=2, grace_period=2, synth_n=600, train={"relabel_start": 1},
                   study={"mgn_epochs": 1})


def main(argv=None) -> int:
    from ferlab.run.runner import main as run

    return run(__file__, argv)


if __name__ == "__main__":
    sys.exit(main())
