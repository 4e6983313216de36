"""The shard format: Parquet files of faces plus one manifest.json.

Layout of a shard folder:

    manifest.json            classes, counts per split and class, stored image size, source, content hash
    train-00000.parquet      one row per face: id, split, label, image (PNG bytes) and optional extra columns
    val-00000.parquet
    ...

Every later stage (Ray Data pipeline, reports) reads shards only through `open_shards`, which validates the
manifest and each file's schema, so a wrong or missing file is one error naming it, not a crash deep in Ray. A
shard folder is a local folder or a URI (s3://BUCKET/shards/NAME): read and written through ferlab.storage, so a
cluster's nodes need no copy of their own.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from ferlab import storage

FORMAT = "ferlab-shards/1"
MANIFEST = "manifest.json"
BASE_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("split", pa.string()),
    ("label", pa.int16()),
    ("image", pa.binary()),
])
_TYPES = {"int16": pa.int16(), "int32": pa.int32(), "float32": pa.float32(), "binary": pa.binary(),
          "string": pa.string(), "list<float32>": pa.list_(pa.float32())}


class ShardError(ValueError):
    """A shard folder, manifest or Parquet file that cannot be used; the message names the file."""


class ShardWriter:
    """Buffers rows per split and writes a Parquet file every `rows_per_file` rows; `close` writes the manifest.

    Used as a context manager; the manifest is written only when every row went in, so a crashed run leaves no
    manifest and `open_shards` refuses the half-written folder instead of training on part of it.
    """

    def __init__(self, out, classes, image_size: int, source: dict, extra_columns: dict | None = None,
                 rows_per_file: int = 2000, extra_manifest: dict | None = None):
        self.out = storage.normalize(out)
        storage.makedirs(self.out)
        storage.remove(storage.join(self.out, MANIFEST))  # the folder is being rewritten: not valid until close()
        self.classes = list(classes)
        self.image_size = int(image_size)
        self.source = source
        self.extra = dict(extra_columns or {})
        unknown = [t for t in self.extra.values() if t not in _TYPES]
        if unknown:
            raise ShardError(f"unknown extra column types {unknown}; known: {sorted(_TYPES)}")
        self.schema = pa.schema(list(BASE_SCHEMA) + [(k, _TYPES[t]) for k, t in self.extra.items()])
        self.rows_per_file = rows_per_file
        self._buffers: dict[str, list[dict]] = {}
        self._files: dict[str, list[str]] = {}
        self.counts: dict[str, dict[str, int]] = {}
        self.manifest: dict | None = None
        self.extra_manifest = extra_manifest if extra_manifest is not None else {}  # read at close(): may fill late

    def add(self, **row):
        split, label = row["split"], row["label"]
        if not 0 <= label < len(self.classes):
            raise ShardError(f"label {label} of {row['id']!r} is outside 0..{len(self.classes) - 1}")
        self._buffers.setdefault(split, []).append(row)
        per_class = self.counts.setdefault(split, {c: 0 for c in self.classes})
        per_class[self.classes[label]] += 1
        if len(self._buffers[split]) >= self.rows_per_file:
            self._flush(split)

    def _flush(self, split):
        rows = self._buffers.get(split)
        if not rows:
            return
        name = f"{split}-{len(self._files.get(split, [])):05d}.parquet"
        table = pa.Table.from_pylist(rows, schema=self.schema)
        # Small row groups let Ray Data read a file in several blocks, so decoding spreads over workers.
        fs, path = storage.resolve(storage.join(self.out, name))
        pq.write_table(table, path, row_group_size=512, compression="none", filesystem=fs)
        self._files.setdefault(split, []).append(name)
        self._buffers[split] = []

    def close(self):
        for split in list(self._buffers):
            self._flush(split)
        self.manifest = {
            "format": FORMAT,
            "classes": self.classes,
            "image_size": self.image_size,
            "source": self.source,
            "columns": {f.name: str(f.type) for f in self.schema},
            "files": self._files,
            "counts": self.counts,
            "content_hash": content_hash(self.out, self._files),
        } | self.extra_manifest
        storage.write_json(storage.join(self.out, MANIFEST), self.manifest, indent=2)  # whole or absent
        return self.manifest

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()


def content_hash(folder: str, files: dict[str, list[str]]) -> str:
    h = hashlib.sha256()
    for split in sorted(files):
        for name in files[split]:
            h.update(name.encode())
            h.update(storage.read_bytes(storage.join(folder, name)))
    return "sha256:" + h.hexdigest()


@dataclass(frozen=True)
class Shards:
    """A validated shard folder."""

    root: str
    manifest: dict

    @property
    def classes(self) -> list[str]:
        return self.manifest["classes"]

    @property
    def image_size(self) -> int:
        return self.manifest["image_size"]

    @property
    def dataset(self) -> str:
        """Which data set the shards hold ("rafdb", "ferplus", "affectnet7", "affectnet8", ...; "synthfer" for drawn
        faces). AffectNet is named with its class count: its 7- and 8-class tasks have their own published numbers."""
        name = self.manifest.get("source", {}).get("name", "synthfer")
        return f"{name}{len(self.classes)}" if name == "affectnet" else name

    @property
    def splits(self) -> list[str]:
        return sorted(self.manifest["files"])

    def files(self, split: str) -> list[str]:
        if split not in self.manifest["files"]:
            raise ShardError(f"{self.root}/{MANIFEST}: no split {split!r}; it has {self.splits}")
        return [storage.join(self.root, name) for name in self.manifest["files"][split]]

    def read(self, split: str, columns: list[str] | None = None) -> pa.Table:
        """A whole split as one Arrow table (small reads: reports, tests; training reads through Ray Data)."""
        files = self.files(split)
        fs, _ = storage.resolve(files[0]) if files else (None, None)
        return pq.ParquetDataset([storage.resolve(f)[1] for f in files], filesystem=fs).read(columns=columns)

    def count(self, split: str) -> int:
        return sum(self.manifest["counts"].get(split, {}).values())


def open_shards(root, check_hash: bool = False) -> Shards:
    """Read and validate a shard folder: the manifest's fields, every listed file's presence and schema."""
    root = storage.normalize(root)
    path = storage.join(root, MANIFEST)
    try:
        if not storage.is_dir(root):
            raise ShardError(f"{root}: no such shard folder")
        manifest = json.loads(storage.read_bytes(path))
    except storage.StorageError as e:
        raise ShardError(str(e)) from None
    except FileNotFoundError:
        raise ShardError(f"{path}: missing; {root} is not a finished shard folder (make one with "
                         f"`ferlab synth` or `ferlab prepare`)") from None
    except OSError as e:  # an unreachable endpoint, refused credentials
        raise ShardError(f"{root}: cannot be read ({str(e).splitlines()[0][:300]})") from None
    except json.JSONDecodeError as e:
        raise ShardError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    missing = [k for k in ("format", "classes", "image_size", "files", "counts", "columns") if k not in manifest]
    if missing:
        raise ShardError(f"{path}: missing fields {missing}")
    if manifest["format"] != FORMAT:
        raise ShardError(f"{path}: format {manifest['format']!r}, expected {FORMAT!r}")
    for split, names in manifest["files"].items():
        for name in names:
            file = storage.join(root, name)
            fs, in_fs = storage.resolve(file)
            if not storage.is_file(file):
                raise ShardError(f"{file}: listed in {path} under {split!r} but missing")
            try:
                schema = pq.read_schema(in_fs, filesystem=fs)
            except Exception as e:  # pyarrow raises several types for a non-Parquet file
                raise ShardError(f"{file}: not a readable Parquet file ({e})") from None
            for field in BASE_SCHEMA:
                if schema.get_field_index(field.name) < 0:
                    raise ShardError(f"{file}: column {field.name!r} missing; has {schema.names}")
                if not schema.field(field.name).type.equals(field.type):
                    raise ShardError(f"{file}: column {field.name!r} is {schema.field(field.name).type}, "
                                     f"expected {field.type}")
    if check_hash:
        actual = content_hash(root, manifest["files"])
        if actual != manifest.get("content_hash"):
            raise ShardError(f"{path}: content hash {manifest.get('content_hash')} does not match the files "
                             f"({actual}); the folder changed after it was written")
    return Shards(root=root, manifest=manifest)
