"""Expression class names shared by every data source.

The order is FERPlus's vote order (neutral first); the 7-class sets drop contempt. Sources whose own label codes
use another order (RAF-DB, AffectNet) map onto these names when they are read, so a label integer means the same
expression in every shard set.
"""

BASIC7 = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear")
BASIC8 = BASIC7 + ("contempt",)

# FERPlus's four training modes (Barsoum et al. 2016), which `ferlab prepare ferplus --mode` writes into the shards'
# manifest and TrainConfig.label_mode trains with.
LABEL_MODES = ("majority", "probability", "crossentropy", "multi_target")
