"""Expression class names shared by every data source.

The order is FERPlus's vote order (neutral first); the 7-class sets drop contempt. Sources whose own label codes
use another order (RAF-DB, AffectNet) map onto these names when they are read, so a label integer means the same
expression in every shard set.
"""

BASIC7 = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear")
BASIC8 = BASIC7 + ("contempt",)
