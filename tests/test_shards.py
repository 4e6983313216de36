import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ferlab.data.pipeline import decode_batch, decode_image
from ferlab.data.shards import MANIFEST, ShardError, ShardWriter, open_shards


def _png(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _write(tmp_path, n=5):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(n)]
    with ShardWriter(tmp_path, classes=["a", "b"], image_size=8, source={"name": "test"}, rows_per_file=2) as w:
        for i, im in enumerate(imgs):
            w.add(id=f"x{i}", split="train" if i < 4 else "val", label=i % 2, image=_png(im))
    return imgs


def test_roundtrip_counts_and_pixels(tmp_path):
    imgs = _write(tmp_path)
    shards = open_shards(tmp_path, check_hash=True)
    assert shards.manifest["counts"] == {"train": {"a": 2, "b": 2}, "val": {"a": 1, "b": 0}}
    assert len(shards.files("train")) == 2  # 4 rows at 2 per file
    table = pa.concat_tables(pq.read_table(f) for f in shards.files("train"))
    assert table.column("id").to_pylist() == ["x0", "x1", "x2", "x3"]
    decoded = decode_batch({"image": np.array(table.column("image").to_pylist(), dtype=object),
                            "label": np.array(table.column("label").to_pylist())}, size=8)
    assert np.array_equal(decoded["image"], np.stack(imgs[:4]))  # PNG is lossless: the same pixels come back


def test_missing_manifest_names_the_file(tmp_path):
    with pytest.raises(ShardError, match=str(tmp_path / MANIFEST)):
        open_shards(tmp_path)
    with pytest.raises(ShardError, match="no such shard folder"):
        open_shards(tmp_path / "nope")


def test_missing_or_wrong_parquet_is_named(tmp_path):
    _write(tmp_path)
    (tmp_path / "train-00001.parquet").unlink()
    with pytest.raises(ShardError, match="train-00001.parquet.*missing"):
        open_shards(tmp_path)
    pq.write_table(pa.table({"id": ["a"], "label": [1]}), tmp_path / "train-00001.parquet")
    with pytest.raises(ShardError, match="train-00001.parquet: column 'split' missing"):
        open_shards(tmp_path)
    (tmp_path / "train-00001.parquet").write_text("not parquet")
    with pytest.raises(ShardError, match="train-00001.parquet: not a readable Parquet"):
        open_shards(tmp_path)


def test_bad_manifest_json_names_the_line(tmp_path):
    _write(tmp_path)
    (tmp_path / MANIFEST).write_text('{\n  "format": "ferlab-shards/1",\n  oops\n}')
    with pytest.raises(ShardError, match=r"manifest.json:3: not valid JSON"):
        open_shards(tmp_path)


def test_hash_detects_changed_files(tmp_path):
    _write(tmp_path)
    m = json.loads((tmp_path / MANIFEST).read_text())
    m["content_hash"] = "sha256:0"
    (tmp_path / MANIFEST).write_text(json.dumps(m))
    open_shards(tmp_path)  # the hash is only checked on request
    with pytest.raises(ShardError, match="content hash"):
        open_shards(tmp_path, check_hash=True)


def test_label_out_of_range(tmp_path):
    with pytest.raises(ShardError, match="label 2 of 'z'"):
        with ShardWriter(tmp_path, classes=["a", "b"], image_size=8, source={}) as w:
            w.add(id="z", split="train", label=2, image=b"")
    assert not (tmp_path / MANIFEST).exists()  # a failed write leaves no manifest: the folder is not usable


def test_decode_grayscale_and_resize():
    gray = np.arange(48 * 48, dtype=np.uint8).reshape(48, 48)
    out = decode_image(_png(gray), 48)
    assert out.shape == (48, 48, 3) and np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 2], gray)
    assert decode_image(_png(gray), 64).shape == (64, 64, 3)
