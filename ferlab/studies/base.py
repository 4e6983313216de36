"""What a Study is: one paper's knobs, search space, paper settings, tables and recipes, declared once as data.

Generic code (the sweep, the ablation grid, the report) asks a Study; nothing outside ferlab/studies/ branches on a
paper's name. A trial's configuration is nested, as in Ray's own Train + Tune examples:

    {"model": {TransFERConfig / MVTConfig fields}, "train": {TrainConfig fields}, "study": {the study's own}}

and each knob says which section carries it, so a sampled or fixed value reaches the module that uses it untouched.
Validity is checked once, by the section's dataclass; a knob's `search` is only the range the search explores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

SECTIONS = ("model", "train", "study")


@dataclass(frozen=True)
class TrialContext:
    """What a study's `before_trial` hook gets beside the trial's TrialConfig (ferlab.config)."""

    spec: object  # the sweep's SweepSpec (ferlab.tune.spec): its fixed sections, storage, limits and lock folder
    data_hash: str | None  # the shards' content hash (a stored artefact of the data is keyed by it)
    datasets: dict  # the trial's Ray datasets by split (its fold's, with k-fold)
    gpus: float  # the trial's GPUs
    fold: int | None = None  # k-fold: the fold this trial is evaluated on
    verbose: bool = False  # Ray's INFO lines on the console (--verbose)
DATASET = "DATASET"  # a row's knob value meaning "the paper's setting for the data set the run uses"


@dataclass(frozen=True)
class Knob:
    """One searched or fixed setting of a study: the config field it sets, the section that carries it, its search
    range or choices and the paper's value per data set. Each knob becomes a column of trials.csv, a flag of the
    experiment files (it fixes the knob) and a dimension of the search."""

    name: str  # the config field it sets, and its column in trials.csv
    section: str  # "model", "train" or "study": which part of the trial config carries it
    kind: str  # "int", "float" or "choice"
    search: tuple  # (low, high) for int and float, the choices for "choice"
    paper: dict  # data set -> the paper's value; "default" for every data set not named
    help: str = ""
    # Searched only when this holds for the values sampled so far (MAD's p1 means nothing without local CNNs);
    # otherwise the knob takes `otherwise`, which keeps TPE from learning noise about an unused knob.
    when: Callable[[dict], bool] | None = None
    otherwise: object = None
    flag: str | None = None  # the command-line option's name when it is not the field's (--stage for stem_stage)

    def paper_value(self, dataset: str | None):
        return by_dataset(self.paper, dataset, self.paper["default"])

    def suggest(self, trial):
        """Optuna's define-by-run suggestion, named section/name so Tune's config comes back nested."""
        key = f"{self.section}/{self.name}"
        if self.kind == "int":
            return trial.suggest_int(key, *self.search)
        if self.kind == "float":
            return trial.suggest_float(key, *self.search)
        return trial.suggest_categorical(key, list(self.search))

    def parse(self, text: str):
        """A command-line value of this knob, as its type (argparse's `type=`)."""
        kind = type(self.search[0]).__name__ if self.kind == "choice" and self.search else self.kind
        return {"int": int, "float": float}.get(kind, str)(text)

    @property
    def choices(self) -> tuple | None:
        """The values a command line may give: a named choice's (f), not a numeric grid's (m: any valid value)."""
        return self.search if self.kind == "choice" and all(isinstance(v, str) for v in self.search) else None


@dataclass(frozen=True)
class Row:
    """One row of a paper's table: how its setting differs from the paper's point, and the accuracy the paper
    publishes for it per data set."""

    label: str  # the row as the paper prints it
    knobs: dict  # how it differs from the study's paper point; DATASET as a value = the data set's own setting
    published: dict = field(default_factory=dict)  # data set -> accuracy % as printed; absent = not stated
    grid: dict = field(default_factory=dict)  # knob -> values tried; the row reports the best on validation
    split: str | None = None  # read this evaluated split instead of the test split (MVT Table 5)


@dataclass(frozen=True)
class Table:
    """One of a paper's tables: its rows, the row every other is tested against, and what the report draws."""

    key: str  # "table1", "fig3", ...: what --table picks
    title: str
    rows: tuple
    baseline: int = 0  # the row every other row is tested against
    axis: str | None = None  # a numeric knob the rows sweep: the report plots accuracy against it
    # Drawn as one series per slice instead of against `axis`: (knob, {other knob: value}), accuracy against the
    # knob among the rows where the others hold those values (TransFER Table 3: p1 at p2 = 0.3, p2 at p1 = 0.6)
    slices: tuple = ()
    needs: str | None = None  # a split the results must have evaluated, or the table is skipped
    note: str = ""


@dataclass(frozen=True)
class Curves:
    """A study-wide figure: validation accuracy per epoch, one curve per value of `knob` (the mean over its trials),
    among the finished trials where every knob of `where` has its value (MVT Fig. 5b: per relabel function f,
    without MGN)."""

    name: str  # the figure's file name
    title: str
    knob: str
    where: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Study:
    """One paper, declared as data: its knobs, tables, model presets, recipes and hooks. Generic code (the sweep,
    the ablation grid, the report) asks the study and never branches on its name; `ferlab.studies.register` adds one
    (the tutorial's), `ferlab.studies.get_study` finds it."""

    name: str  # "transfer", "mvt": what experiments and results folders call it
    title: str  # the paper, as the report names it
    knobs: tuple  # Knob, ...: what the study varies
    tables: tuple  # Table, ...: the paper's ablation tables as data
    presets: tuple  # model presets of this paper, CPU size first (the default)
    # name -> {data set or "default": TrainConfig overrides}: the paper's training recipe per data set
    recipes: dict = field(default_factory=dict)
    study_config: type | None = None  # the dataclass that validates the "study" section (None: must be empty)
    # Work before a trial (MVT's mask-network stage): (TrialConfig, TrialContext) -> (TrialConfig, constant metrics)
    before_trial: Callable | None = None
    masks: bool = False  # its hook scores a mechanism against SynthFER's background/occluder masks: decode them
    weight_files: tuple = ()  # the weight families (ferlab.pretrained keys) whose files an experiment can name
    data_augment: str = "light"  # the paper's augmentation recipe, the default on real data
    figures: tuple = ()  # study-wide figures the report draws from an ablation's trials (Curves)
    attention: Callable | None = None  # (model, x) -> (maps (B, H, W) in [0, 1], title, overlay?) or None
    # recipe -> {data set or "default": {TrainConfig field: the paper's sentence for its value, or "chosen: why"}};
    # --dry-run's trace prints them beside the values
    recipe_notes: dict = field(default_factory=dict)
    alignment: dict = field(default_factory=dict)  # data set or "default" -> what the paper did to align faces
    final_metrics: tuple = ()  # metrics of its own stage a trials row keeps from the last epoch (MVT: mask quality)

    # ---- knobs and the search space
    @property
    def knob_names(self) -> tuple:
        return tuple(k.name for k in self.knobs)

    def knob(self, name: str) -> Knob:
        for k in self.knobs:
            if k.name == name:
                return k
        raise ValueError(f"{self.name} has no knob {name!r}; knobs: {', '.join(self.knob_names)}")

    def paper_point(self, dataset: str | None = None) -> dict:
        """{knob: the paper's value} for this data set (TransFER on AffectNet: B = 4, p1 = 0.2, p2 = 0.6, ...)."""
        return {k.name: k.paper_value(dataset) for k in self.knobs}

    def space(self, trial, fixed: dict | None = None, searched: tuple | None = None) -> dict:
        """Optuna define-by-run over `searched` knobs (default: all); knobs in `fixed` (flat {name: value}) and
        unsearched ones keep their fixed or paper value. Returns the constants, named section/name."""
        fixed = dict(fixed or {})
        values, const = {}, {}
        for k in self.knobs:
            key = f"{k.section}/{k.name}"
            if k.name in fixed:
                values[k.name] = const[key] = fixed[k.name]
            elif searched is not None and k.name not in searched:
                continue
            elif k.when is not None and not k.when(values):
                values[k.name] = const[key] = k.otherwise
            else:
                values[k.name] = k.suggest(trial)
        return const

    def searched_knobs(self, fixed: dict) -> tuple:
        """The knobs a sweep searches: those the study's search varies that are not fixed."""
        return tuple(k.name for k in self.knobs if k.name not in fixed and k.search)

    # ---- nested trial configs
    def nest(self, flat: dict) -> dict:
        """{knob: value} -> {"model": {...}, "train": {...}, "study": {...}}."""
        out = {s: {} for s in SECTIONS}
        for name, value in flat.items():
            out[self.knob(name).section][name] = value
        return out

    def flatten(self, config: dict) -> dict:
        """The study's knob values out of a nested trial config (absent knobs are left out)."""
        return {k.name: config[k.section][k.name] for k in self.knobs
                if k.name in (config.get(k.section) or {})}

    def check_study_section(self, values: dict):
        """The one validation of the "study" section (its dataclass names the knob and its range)."""
        if self.study_config is not None:
            from ferlab.config import build

            return build(self.study_config, values, "study")
        if values:
            raise ValueError(f"{self.name} has no study settings; got {sorted(values)}")
        return None

    # ---- recipes
    def recipe(self, name: str, dataset: str | None = None) -> dict:
        """The TrainConfig overrides of a recipe on a data set ("cpu" = no overrides: the laptop defaults)."""
        if name == "cpu":
            return {}
        if name not in self.recipes:
            raise ValueError(f"recipe {name!r}: {self.name} has {', '.join(['cpu', *self.recipes])}")
        r = self.recipes[name]
        return dict(r["default"]) | dict(by_dataset(r, dataset, {}))

    def recipe_note(self, name: str, dataset: str | None, field_name: str) -> str:
        """The paper's sentence (or "chosen: ...") behind a recipe's value of a TrainConfig field; "" if none."""
        notes = self.recipe_notes.get(name, {})
        return by_dataset(notes, dataset, {}).get(field_name) or notes.get("default", {}).get(field_name, "")

    def alignment_note(self, dataset: str | None) -> str:
        return by_dataset(self.alignment, dataset, self.alignment.get("default", ""))

    # ---- tables
    def table(self, key: str) -> Table:
        for t in self.tables:
            if t.key == key:
                return t
        raise ValueError(f"--table {key}: {self.name} has the tables {', '.join(t.key for t in self.tables)} "
                         f"(or all)")

    def row_settings(self, row: Row, dataset: str | None) -> list[dict]:
        """Every full knob setting a row needs trained: the paper point on this data set, the row's knobs, and each
        value of its grid."""
        base = self.paper_point(dataset)
        knobs = {k: (base[k] if v == DATASET else v) for k, v in row.knobs.items()}
        settings = [base | knobs]
        for name, values in row.grid.items():
            settings = [s | {name: v} for s in settings for v in values]
        return settings

    def at_paper_setting(self, row: Row, dataset: str | None) -> bool:
        """A "paper" number may stand beside a row only when the row was trained at the paper's own setting for
        the data set whose number it shows: its settings differ from the paper's point on that data set exactly
        where the row says. Rows that fix every knob they vary (Table 3's cells) always qualify."""
        src, _ = published_for(dataset, row)
        return self.row_settings(row, dataset)[0] == self.row_settings(row, src)[0]


# A data set's settings may be written for its family: "affectnet" settings serve AffectNet-7 and AffectNet-8 (the
# papers set them per AffectNet), while published numbers are always the exact variant's (a 7-class number never
# stands beside an 8-class run).
FAMILY = {"affectnet7": "affectnet", "affectnet8": "affectnet"}


def by_dataset(values: dict, dataset: str | None, default):
    """`values[dataset]`, else its family's, else `default`."""
    dataset = dataset or ""
    return values.get(dataset, values.get(FAMILY.get(dataset, dataset), default))


def published_for(dataset: str | None, row: Row) -> tuple[str, float | None]:
    """(data set the number is from, value): the run's own data set when the paper has it, else RAF-DB's (the
    papers' main benchmark), so a SynthFER run still shows what the paper found."""
    if dataset in row.published:
        return dataset, row.published[dataset]
    return "rafdb", row.published.get("rafdb")
