"""TransFER's ablations (Xue et al., ICCV 2021): Tables 1-4, Table 3's corners and Figure 3, measured, next to the
published numbers.

    python experiments/ablation_transfer.py --smoke              # every table, smallest sizes (tests run this)
    python experiments/ablation_transfer.py                      # laptop: SynthFER, transfer_tiny, 1 seed
    python experiments/ablation_transfer.py --table table3 --seeds 3
    python experiments/ablation_transfer.py --data /data/shards/rafdb --preset transfer_paper \
        --stem-weights backbone_ir50_ms1m_epoch120.pth --encoder-weights vit_small_p16_224-15ec54c9.pth \
        --recipe paper --seeds 3 --gpus-per-trial 1
    ferlab report results/ablation_transfer                      # tables (Markdown, CSV, LaTeX), plots, HTML

Every distinct setting of (B, p1, p2, stem stage, dropper, drop rate) the chosen tables need, once per seed, all for
the same epochs (a grid, no early stopping: cells of a table are trained alike); the paper's default fills a row of
every table but is trained once. Table 4's alternatives each try drop rates 0.1 / 0.3 / 0.6 and report their best on
validation. All tables: 32 settings per seed.

Expected: --smoke trains the 32 settings for 1 epoch on 420 SynthFER faces, near chance (1/7): it shows the
pipeline filling every table, not what the paper found.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout, uninstalled

from ferlab.run.runner import ExperimentConfig, replace  # noqa: E402


def get_config() -> ExperimentConfig:
    return ExperimentConfig(paper="transfer", name="ablation_transfer", kind="ablation")


def smoke(config: ExperimentConfig) -> ExperimentConfig:
    return replace(config, epochs=1, synth_n=420, cpus_per_worker=0.5)  # half-CPU trials, several at once


def main(argv=None) -> int:
    from ferlab.run.runner import main as run

    return run(__file__, argv)


if __name__ == "__main__":
    sys.exit(main())
