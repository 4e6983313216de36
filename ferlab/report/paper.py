"""The papers' ablation tables as data: what each row means (its knobs) and what the paper published for it.

One place for both, so the ablation experiments (which train one trial per distinct row setting) and the report
(which finds each row's trials again by those knobs) cannot disagree about what a row is. Every published number is
copied from the papers in ../shared/papers (accuracy in %, as printed); a row the paper does not state has no value
rather than a guessed one.

Knobs are model fields (TransFERConfig / MVTConfig), TrainConfig fields (relabel) or MVT's mask ratio; a knob a row
does not name keeps its study's default (the paper's own setting, DEFAULTS below).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# What each study varies; a trial's values of these knobs say which rows it fills.
KNOBS = {
    "transfer": ("branches", "p1", "p2", "stem_stage", "dropper", "drop_rate"),
    "mvt": ("mask_ratio", "relabel"),
}

# The paper's default setting (RAF-DB): every row differs from it only in the knobs it names.
DEFAULTS = {
    "transfer": {"branches": 2, "p1": 0.6, "p2": 0.3, "stem_stage": 3, "dropper": "mad", "drop_rate": 0.1},
    "mvt": {"mask_ratio": 0.15, "relabel": "sigmoid"},
}

# MVT chooses m and f per data set (section 4.3: m = 15% and sigmoid for RAF-DB and AffectNet, 20% and quadratic for
# FERPlus). Table 3's "MGN" and "D-Relabel" columns mean these. Other data sets (SynthFER, folders) use RAF-DB's.
MVT_DATASET_DEFAULTS = {
    "ferplus": {"mask_ratio": 0.2, "relabel": "quadratic"},
    "rafdb": {"mask_ratio": 0.15, "relabel": "sigmoid"},
    "affectnet": {"mask_ratio": 0.15, "relabel": "sigmoid"},
}

PAPER_NAMES = {
    "transfer": "TransFER (Xue et al., ICCV 2021)",
    "mvt": "MVT (Li et al., 2021)",
}


@dataclass(frozen=True)
class Row:
    label: str  # the row as the paper prints it
    knobs: dict  # how it differs from DEFAULTS; "DATASET" as a value means the data set's own MVT setting
    published: dict = field(default_factory=dict)  # data set -> accuracy % as printed; absent = not stated
    grid: dict = field(default_factory=dict)  # knob -> values tried; the row reports the best on validation
    split: str | None = None  # read this evaluated split instead of the test split (MVT Table 5)


@dataclass(frozen=True)
class Table:
    paper: str  # "transfer" or "mvt"
    key: str  # "table1", "fig3", ...: what --table picks
    title: str
    rows: tuple
    baseline: int = 0  # the row every other row is tested against
    axis: str | None = None  # a numeric knob the rows sweep: the report plots accuracy against it
    needs: str | None = None  # a split the results must have evaluated, or the table is skipped
    note: str = ""


DATASET = "DATASET"  # a knob value: the data set's own setting (MVT_DATASET_DEFAULTS)

_TRANSFER = (
    Table("transfer", "table1", "Table 1: the components", (
        Row("baseline (IR-50 + ViT)", {"branches": 0, "p1": 0.0, "p2": 0.0}, {"rafdb": 89.93, "affectnet": 65.63}),
        Row("+ local CNNs", {"p1": 0.0, "p2": 0.0}, {"rafdb": 90.03, "affectnet": 65.74}),
        Row("+ MAD", {"p2": 0.0}, {"rafdb": 90.35, "affectnet": 65.94}),
        Row("+ MSAD (TransFER)", {}, {"rafdb": 90.91, "affectnet": 66.23}),
    )),
    Table("transfer", "table2", "Table 2: stem CNN stage", (
        Row("stage 2", {"stem_stage": 2}, {"rafdb": 84.94}),
        Row("stage 3", {}, {"rafdb": 90.91}),
        Row("stage 4", {"stem_stage": 4}, {"rafdb": 90.32}),
    ), baseline=1, axis="stem_stage"),
    # The text states only B = 2 (90.91); "small B ... only achieved 89.60%" does not name the B, so it is left out.
    Table("transfer", "fig3", "Figure 3: branch number B", tuple(
        Row(f"B = {b}", {"branches": b} | ({"p1": 0.0} if b == 0 else {}), {"rafdb": 90.91} if b == 2 else {})
        for b in range(9)), axis="branches",
        note="The paper plots B = 0..8 and states only B = 2 (90.91%); B = 0 has no MAD (nothing to drop)."),
    Table("transfer", "table3", "Table 3: drop rates p1 (MAD) and p2 (MSAD)", tuple(
        Row(f"p1 = {p1}, p2 = {p2}", {"p1": p1, "p2": p2}, {"rafdb": acc})
        for p1, p2, acc in ((0.4, 0.3, 89.28), (0.5, 0.3, 89.24), (0.6, 0.3, 90.91), (0.7, 0.3, 89.89),
                            (0.8, 0.3, 89.89), (0.6, 0.1, 89.80), (0.6, 0.2, 89.83), (0.6, 0.4, 89.93),
                            (0.6, 0.5, 89.24))), baseline=2),
    # "We replace our MAD with these methods and perform a grid search to find the best hyper-parameters."
    Table("transfer", "table4", "Table 4: MAD against Dropout, DropBlock and Spatial Dropout", (
        Row("MAD", {}, {"rafdb": 90.91, "affectnet": 66.23}),
        Row("Dropout", {"dropper": "dropout"}, {"rafdb": 90.35, "affectnet": 66.06},
            grid={"drop_rate": (0.1, 0.3, 0.6)}),
        Row("DropBlock", {"dropper": "dropblock"}, {"rafdb": 90.25, "affectnet": 66.03},
            grid={"drop_rate": (0.1, 0.3, 0.6)}),
        Row("Spatial Dropout", {"dropper": "spatial"}, {"rafdb": 89.99, "affectnet": 65.54},
            grid={"drop_rate": (0.1, 0.3, 0.6)}),
    ), note="Each alternative at the best of its own drop rates, chosen on validation (the paper: Dropout was best "
            "at rate 0 on RAF-DB and 0.1 on AffectNet)."),
)

_MVT = (
    Table("mvt", "table1", "Table 1: mask ratio m (MGN, no relabeling)", tuple(
        Row(f"m = {m:.0%}" + (" (baseline)" if m == 0 else ""), {"mask_ratio": m, "relabel": "none"},
            {"rafdb": r, "ferplus": f})
        for m, r, f in ((0.0, 86.7, 87.92), (0.1, 87.52, 88.45), (0.15, 87.91, 88.58), (0.2, 87.45, 88.88))),
        axis="mask_ratio"),
    Table("mvt", "table2", "Table 2: relabel threshold function f (no MGN)", tuple(
        Row(name.capitalize() + (" (SCN, baseline)" if name == "constant" else ""),
            {"mask_ratio": 0.0, "relabel": name}, {"rafdb": r, "ferplus": f})
        for name, r, f in (("constant", 86.86, 88.22), ("linear", 87.09, 88.32), ("quadratic", 87.2, 88.68),
                           ("sigmoid", 87.45, 88.52))),
        note="Convergence curves per f are plotted (the paper's Fig. 5b)."),
    Table("mvt", "table3", "Table 3: MGN and dynamic relabeling", (
        Row("DeiT-S (no MGN, no relabeling)", {"mask_ratio": 0.0, "relabel": "none"},
            {"rafdb": 86.67, "ferplus": 87.92, "affectnet": 63.79}),
        Row("+ MGN", {"mask_ratio": DATASET, "relabel": "none"},
            {"rafdb": 87.91, "ferplus": 88.88, "affectnet": 64.57}),
        Row("+ D-Relabel", {"mask_ratio": 0.0, "relabel": DATASET}, {"rafdb": 87.45, "ferplus": 88.68}),
        Row("+ MGN + D-Relabel (MVT)", {"mask_ratio": DATASET, "relabel": DATASET},
            {"rafdb": 88.62, "ferplus": 89.22}),
    ), note="MGN and D-Relabel at the data set's setting (RAF-DB: m = 15%, sigmoid; FERPlus: 20%, quadratic)."),
    Table("mvt", "table5", "Table 5: Occlusion- and Pose-RAF-DB", (
        Row("Occlusion", {}, {"rafdb": 85.17}, split="test_occlusion"),
        Row("Pose > 30", {}, {"rafdb": 87.99}, split="test_pose30"),
        Row("Pose > 45", {}, {"rafdb": 88.40}, split="test_pose45"),
    ), needs="test_occlusion",
        note="MVT at the data set's setting, evaluated on RAF-DB's occlusion and pose lists (prepare with "
             "--extra-split test_occlusion=... --extra-split test_pose30=... --extra-split test_pose45=...)."),
)

TABLES = {(t.paper, t.key): t for t in _TRANSFER + _MVT}


def tables(paper: str) -> list[Table]:
    return [t for (p, _), t in TABLES.items() if p == paper]


def dataset_defaults(paper: str, dataset: str | None) -> dict:
    """The study's defaults on this data set (MVT picks m and f per data set)."""
    base = dict(DEFAULTS[paper])
    if paper == "mvt":
        base |= MVT_DATASET_DEFAULTS.get(dataset or "", MVT_DATASET_DEFAULTS["rafdb"])
    return base


def row_settings(paper: str, row: Row, dataset: str | None) -> list[dict]:
    """Every full knob setting a row needs trained: the defaults, the row's knobs, and each value of its grid."""
    base = dataset_defaults(paper, dataset)
    knobs = {k: (base[k] if v == DATASET else v) for k, v in row.knobs.items()}
    settings = [base | knobs]
    for name, values in row.grid.items():
        settings = [s | {name: v} for s in settings for v in values]
    return settings


def published_for(dataset: str | None, row: Row) -> tuple[str, float | None]:
    """(data set the number is from, value): the run's own data set when the paper has it, else RAF-DB's (the
    papers' main benchmark), so a SynthFER run still shows what the paper found."""
    if dataset in row.published:
        return dataset, row.published[dataset]
    return "rafdb", row.published.get("rafdb")
