"""MVT's ablations (Li et al., 2021): Tables 1 (mask ratio), 2 (relabel function), 3 (MGN x relabeling) and 5
(Occlusion- / Pose-RAF-DB, when the data has those splits), measured, next to the published numbers.

    python experiments/ablation_mvt.py --smoke                  # every table, smallest sizes (tests run this)
    python experiments/ablation_mvt.py                          # laptop: SynthFER with 20% label noise, mvt_tiny
    python experiments/ablation_mvt.py --table table2 --seeds 3
    python experiments/ablation_mvt.py --data /data/shards/rafdb224 --preset mvt_paper \
        --deit-weights deit_small_patch16_224-cd65a155.pth --recipe paper --mgn-epochs 5 --seeds 3 \
        --gpus-per-trial 1
    ferlab report results/ablation_mvt                          # tables (Markdown, CSV, LaTeX), plots, HTML

Each distinct (m, f) the chosen tables need, once per seed, all for the same epochs. A trial with m > 0 first needs
the MGN for its key: trained once as its own Ray Train job, stored under the storage path and reused. Table 3's MGN
and relabel function are the data set's own (RAF-DB and SynthFER: m = 15%, sigmoid; FERPlus: 20%, quadratic). All
tables on SynthFER: 9 settings per seed (3 MGNs per seed).

Expected: --smoke trains the 9 settings for 1 epoch on 420 SynthFER faces, near chance (1/7): the pipeline filling
every table, not the paper's result. The published numbers are RAF-DB / FERPlus / AffectNet with ImageNet DeiT-S
weights; on SynthFER they are shown for orientation only.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout, uninstalled

from ferlab.studies.mvt import CPU_EXPERIMENT  # noqa: E402
from ferlab.run.runner import ExperimentConfig, replace  # noqa: E402


def get_config() -> ExperimentConfig:
    return ExperimentConfig(paper="mvt", name="ablation_mvt", kind="ablation", **CPU_EXPERIMENT)


def smoke(config: ExperimentConfig) -> ExperimentConfig:
    return replace(config, epochs=1, synth_n=420, cpus_per_worker=0.5, train={"relabel_start": 1},
                   study={"mgn_epochs": 1})


def main(argv=None) -> int:
    from ferlab.run.runner import main as run

    return run(__file__, argv)


if __name__ == "__main__":
    sys.exit(main())
