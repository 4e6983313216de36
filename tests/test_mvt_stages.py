"""MVT's two stages through a real local Ray: the stored MGN is trained once and reused; the sweep runs both stages
and reports relabeling; bad input is one line before Ray starts."""

import functools
import json
import os
import re
import subprocess
import sys

import pytest
from conftest import run_experiment_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "experiments", "sweep_mvt.py")


def _run(args, timeout=900):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.mark.parametrize("args,match", [
    (["--mask-ratio", "1.0"], r"mask_ratio=1.0 is outside its range: \[0, 1\)"),
    (["--mask-ratio", "-0.1"], r"mask_ratio=-0.1 is outside its range"),
    (["--relabel-delta", "-0.5"], r"relabel_delta=-0.5 is outside its range: >= 0"),
    (["--deit-weights", "/nonexistent/deit.pth"], "/nonexistent/deit.pth: no such weight file"),
])
def test_bad_input_is_one_line_before_ray(args, match, tmp_path, capsys):
    code, lines = run_experiment_main("sweep_mvt.py", args + ["--storage", str(tmp_path)], capsys)
    assert code == 2 and len(lines) == 1 and re.search(match, lines[0]), lines


def test_unknown_relabel_function_is_refused(capsys):
    code, lines = run_experiment_main("sweep_mvt.py", ["--relabel", "cubic"], capsys)
    assert code == 2 and "invalid choice: 'cubic'" in lines[-1]


@pytest.mark.slow
def test_mgn_is_trained_once_and_reused(ray_local, tiny_synth, tmp_path, capsys):
    from ferlab.data.pipeline import decoded_splits
    from ferlab.data.shards import open_shards
    from ferlab.studies.mvt_mgn import MGNStage
    from ferlab.studies.mvt_mgn_store import ensure_mgn, mgn_key, mgn_metrics

    shards = open_shards(tiny_synth)
    decoded = decoded_splits(shards, 64, splits=("train", "val"), masks=True)
    assert "nuisance" not in decoded["train"].columns() and "nuisance" in decoded["val"].columns()
    stage = functools.partial(MGNStage, shards.manifest["content_hash"], "mvt_tiny", seed=0, epochs=1)
    kw = dict(storage_path=str(tmp_path), cpus_per_worker=1.0, gpus=0)
    first = ensure_mgn(decoded, stage(0.2, lr=1e-3, batch_size=16), **kw)
    stamp = os.stat(first).st_mtime_ns
    second = ensure_mgn(decoded, stage(0.2, lr=1e-3, batch_size=16), **kw)
    assert second == first and os.stat(second).st_mtime_ns == stamp  # not trained again
    out = capsys.readouterr().out
    assert out.count(": training (") == 1 and out.count(": reusing ") == 1
    # stored under its settings key: another m, fold, learning rate, batch, augmentation, architecture or DeiT weight
    # file is another MGN (a CPU run's MGN is never reused by a --recipe paper run with weights); none trained here
    from ferlab.studies.mvt_mgn_store import MGN_CONFIG, mgn_config

    settings = dict(model={}, lr=1e-3, batch_size=16, augment="none")

    def cfg(m, **kw):
        return mgn_config(stage(m, **kw))

    assert os.path.basename(os.path.dirname(first)) == mgn_key(cfg(0.2, **settings))
    assert json.loads(open(os.path.join(os.path.dirname(first), MGN_CONFIG)).read()) == cfg(0.2, **settings)
    weights = tmp_path / "deit.pth"
    weights.write_bytes(b"not really weights")
    others = [cfg(0.1, **settings), cfg(0.2, fold=0, **settings), cfg(0.2, **settings | {"lr": 9e-5}),
              cfg(0.2, **settings | {"batch_size": 32}), cfg(0.2, **settings | {"augment": "mvt"}),
              cfg(0.2, **settings | {"model": {"mgn_depth": 6}}), cfg(0.2, **settings, pretrained={"deit": str(weights)})]
    assert len({mgn_key(c) for c in [cfg(0.2, **settings)] + others}) == 1 + len(others)
    quality = mgn_metrics(first)  # the stage's last epoch, with SynthFER's background/occluder precision
    assert 0 <= quality["mgn_nuisance_precision"] <= 1 and 0 < quality["mgn_nuisance_chance"] < 1
    assert abs(quality["mgn_mask_mean"] - 0.2) < 0.3
    from ferlab.models import create_model

    m = create_model("mvt_tiny", pretrained={"mgn": first})  # the stored file loads strictly into the classifier stage
    assert not m.mgn.training
