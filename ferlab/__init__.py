"""ferlab: reproduce and extend the ablation studies of TransFER and MVT with Ray Tune + Optuna."""

import os

__version__ = "0.1.0"

# A trial's "epoch N: ..." line is its progress. Ray's driver merges lines of different workers that differ only in
# their numbers into one "[repeated 2x across cluster]" line, printed seconds later or not at all: two trials' epoch
# lines, or a restarted worker's next epoch, would vanish. Ray reads this pattern once, when it is first imported,
# so it is set here, before any ferlab module imports Ray; a value the user set is kept.
EPOCH_LINE = r"^epoch (\d+): "  # how ferlab.train.loop's progress lines start; the tests read them with it too
os.environ.setdefault("RAY_DEDUP_LOGS_ALLOW_REGEX", EPOCH_LINE)
