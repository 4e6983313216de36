"""A study of one's own, for the tutorial (docs/tutorial.md): MSAD alone, on TransFER's CPU model.

One knob (p2, MSAD's drop probability, a field of TransFERConfig: section "model"), one table (MSAD off and on) and
the model presets it trains. Importing this module registers the study; FERLAB_STUDIES=msad_study makes every
process of a run import it (the experiment file sets it for a local Ray).
"""

from ferlab.studies import register
from ferlab.studies.base import Knob, Row, Study, Table

KNOBS = (
    # name, section, kind, search range, the paper's value per data set ("default": every other), help
    Knob("p2", "model", "float", (0.0, 0.9), {"default": 0.3}, "MSAD drop probability"),
)

TABLES = (
    Table("msad", "MSAD off and on", (
        Row("MSAD off (p2 = 0)", {"p2": 0.0}),  # how the row differs from the paper's point
        Row("MSAD on (p2 = 0.3)", {}, {"rafdb": 90.91}),  # the paper's point; TransFER's published RAF-DB number
    )),
)

STUDY = register(Study(name="msad_only", title="MSAD alone (the tutorial's study)", knobs=KNOBS, tables=TABLES,
                       presets=("transfer_tiny", "transfer_paper")))
