"""Readers for data sets as they lie on disk: one module per format, each returning a `Listing`.

A reader only lists: which image file, which split, which label (and soft label, box or landmarks when the format
has them), and where in the label file the row came from. It opens no image; `ferlab.data.prepare` does that in
parallel. Every row a reader cannot use is either a `Problem` (bad input: a malformed line, a missing file, a label
out of range, ...) or counted in `excluded` (the data set's own rule leaves it out: FERPlus's "unknown" faces,
AffectNet's codes 8-10, contempt in a 7-class set). Nothing is dropped without a count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PROBLEM_KINDS = ("malformed_line", "missing_file", "label_out_of_range", "unknown_class", "unreadable_image",
                 "blank_image")


class PrepareError(ValueError):
    """Bad input under --strict, or input that cannot be read at all; the message names the file (and line)."""


@dataclass
class Sample:
    id: str  # unique within the data set, e.g. "FER2013Train/fer0000000.png"
    split: str  # train / val / test / an extra evaluation split
    path: str  # the image file
    label: int  # index into Listing.classes
    where: str  # "file:line" of the label row that named the image, for messages
    soft: list | None = None  # a distribution over Listing.classes (FERPlus's soft label modes)
    box: tuple | None = None  # (x, y, w, h) face box in the image's pixels
    landmarks: list | None = None  # 5 (x, y) points: eye centres (image left, right), nose tip, mouth corners
    aligned: bool = False  # already an aligned face crop: resize only
    group: str | None = None  # the subject, when known: never in two splits or folds
    fold: int | None = None  # k-fold protocol: the fold this image is held out in (0..K-1)


@dataclass
class Problem:
    kind: str  # one of PROBLEM_KINDS
    where: str  # file:line, or the file
    detail: str

    def message(self) -> str:
        return f"{self.where}: {self.kind.replace('_', ' ')}: {self.detail}"


@dataclass
class Listing:
    name: str  # the source's name, e.g. "ferplus"
    classes: tuple
    samples: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    excluded: dict = field(default_factory=dict)  # reason -> rows left out by the data set's own rule
    info: dict = field(default_factory=dict)  # reader options worth keeping in the manifest (label mode, ...)
    eval_split: str = "val"  # the split a sweep selects on; "test" where the papers have no separate validation
    strict: bool = False  # raise on the first problem instead of counting it

    def problem(self, kind: str, where: str, detail: str) -> None:
        p = Problem(kind, where, detail)
        if self.strict:
            raise PrepareError(p.message())
        self.problems.append(p)

    def exclude(self, reason: str) -> None:
        self.excluded[reason] = self.excluded.get(reason, 0) + 1


SOURCES = ("rafdb", "ferplus", "affectnet", "folder")


def _reader(name: str):
    from ferlab.data.sources import affectnet, ferplus, folder, rafdb

    if name not in SOURCES:
        raise PrepareError(f"unknown source {name!r}; known: {', '.join(SOURCES)}")
    return dict(zip(SOURCES, (rafdb.read, ferplus.read, affectnet.read, folder.read)))[name]


def read_source(name: str, root, **options) -> Listing:
    """Dispatch to the reader of `name` (rafdb, ferplus, affectnet, folder)."""
    return _reader(name)(root, **options)


def reader_options(name: str) -> dict:
    """{option: its default} of the reader of `name`: what `ferlab prepare` lets a source take, and the defaults its
    --help shows (written once, in the reader's signature)."""
    import inspect

    params = list(inspect.signature(_reader(name)).parameters.values())[1:]  # after root
    return {p.name: p.default for p in params}
