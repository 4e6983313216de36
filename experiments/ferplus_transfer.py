"""TransFER on the real FERPlus: prepared once from --root, the paper's FERPlus point trained, test accuracy reported.

Paper: Xue et al., ICCV 2021, Table 6 (TransFER 90.83% on FERPlus with the paper-sized model, ImageNet/MS-Celeb
weights, 40 epochs on GPUs). On a CPU this is `transfer_tiny` from scratch at 64x64.

    python experiments/ferplus_transfer.py                       # ../shared/data/ferplus or $FERLAB_FERPLUS
    python experiments/ferplus_transfer.py --epochs 2 --limit 2000   # a quick look
    python experiments/ferplus_transfer.py --root /data/FERPlus --preset transfer_paper --gpus-per-trial 1 \
        --recipe paper --stem-weights ir50.pth --encoder-weights vit_small_p16_224-15ec54c9.pth

`ferlab prepare ferplus` into the cache (majority labels, 8 classes: 25,045 train / 3,191 val / 3,137 test faces)
unless it is there (or --data names prepared shards); one training of the paper's point (B=2, p1=0.6, p2=0.3,
stage 3) with the paper's augmentation; the epoch is chosen on FERPlus's validation set and test accuracy is read at
that epoch (test_acc_at_best), never the best epoch on test.

Expected: test accuracy well above the mean class accuracy at the epoch chosen on validation, since disgust and
contempt have about 120 training faces each (of 25,045).
"""

import os
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)  # run from a checkout, uninstalled

from ferlab.run.runner import ExperimentConfig, replace  # noqa: E402


def get_config() -> ExperimentConfig:
    return ExperimentConfig(
        paper="transfer", name="ferplus_transfer", kind="single", epochs=12,
        prepare="ferplus", root=os.environ.get("FERLAB_FERPLUS", os.path.join(HERE, "..", "shared", "data", "ferplus")))


def smoke(config: ExperimentConfig) -> ExperimentConfig:
    return replace(config, epochs=1)  # with --limit for a quick look


def main(argv=None) -> int:
    from ferlab.run.runner import main as run

    return run(__file__, argv)


if __name__ == "__main__":
    sys.exit(main())
