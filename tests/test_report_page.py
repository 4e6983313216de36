"""The results page in a real headless Chromium (Debian's `chromium`, which .ci/run installs): it renders, every
table is there, every figure decodes; and the check notices a figure that is gone (so it can fail)."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from ferlab.report import build_report
from ferlab.studies import get_study
from test_report import fake_trials, write_results

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def dump_dom(page: str, tmp_path) -> str:
    """The page's DOM after its scripts ran, or a skip saying why the browser could not give it."""
    if not CHROMIUM:
        pytest.skip("no chromium on PATH: install Debian's `chromium` package (.ci/run does) for the browser test")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--allow-file-access-from-files",
           "--virtual-time-budget=5000", "--window-size=1280,1000", "--dump-dom", f"file://{page}"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"chromium could not start or did not finish: {e}")
    if "<html" not in out.stdout:
        pytest.skip(f"chromium gave no page (exit {out.returncode}): {out.stderr[-500:]}")
    return out.stdout


def check(dom: str) -> dict:
    m = re.search(r'<div id="ferlab-check"([^>]*)>', dom)
    assert m, "the page's check element is missing"
    return dict(re.findall(r'data-([a-z]+)="([^"]*)"', m.group(1)))


def fake_history(trials: pd.DataFrame, epochs: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for t in trials["trial"]:
        for e in range(1, epochs + 1):
            cm = rng.integers(0, 9, size=(7, 7)) + np.eye(7, dtype=int) * 10
            rows.append({"trial": t, "epoch": e, "val_acc": 0.2 + 0.1 * e, "confusion": json.dumps(cm.tolist()),
                         "test_confusion": json.dumps(cm.tolist())})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def transfer_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("results") / "ablation"
    trials = fake_trials("transfer", ["table1", "table2", "fig3", "table3", "table3_corners", "table4"], seeds=2,
                         acc=lambda c: 0.4 + 0.01 * c["branches"])
    write_results(folder, trials, "transfer", history=fake_history(trials))
    return build_report(str(folder))


def test_page_renders_every_table_and_figure(transfer_report, tmp_path):
    r = transfer_report
    assert len(r["tables"]) == 6
    # Fig. 3 and Table 2 against their knob, Table 3 over p1 and p2, the confusion matrix; no checkpoint, so no
    # attention maps (said in the page, not drawn)
    names = sorted(os.path.basename(p) for p, _ in r["figures"])
    curves = [f"transfer_{t}_curves.png" for t in ("fig3", "table1", "table2", "table3", "table3_corners", "table4")]
    assert names == sorted(["confusion_best.png", "transfer_fig3_branches.png", "transfer_table2_stem_stage.png",
                            "transfer_table3_p1_p2.png", *curves])
    assert any("mechanism looks at" in s for s in r["skipped"])
    for p, _ in r["figures"]:
        assert os.path.getsize(os.path.join(r["out"], p[:-4] + ".svg")) > 1000
    dom = dump_dom(r["page"], tmp_path)
    c = check(dom)
    assert c.get("done") == "1", "the page's load handler did not run"
    assert c["tables"] == "6" and dom.count('<table class="ferlab">') == 6
    assert c["images"] == "10" and c["broken"] == ""
    assert int(c["width"]) <= int(c["view"]) == 1280  # no horizontal scroll at 1280 px
    for t in r["tables"]:
        assert t.title.replace("&", "&amp;") in dom
    assert "90.91" in dom  # the paper column is on the page


@pytest.fixture(scope="module")
def sweep_report(tmp_path_factory):
    """A sweep's folder: 8 trials with trials.csv's every column, ASHA-stopped ones among them, no ablation."""
    folder = tmp_path_factory.mktemp("results") / "sweep"
    rng = np.random.default_rng(1)
    rows, hist = [], []
    for i in range(8):
        epochs = 6 if i % 3 == 0 else 2
        accs = 0.2 + 0.05 * np.arange(1, epochs + 1) + rng.normal(0, 0.01, epochs)
        trial = f"trial_driver_ab12c_{i:05d}"
        rows.append({"trial": trial, "branches": int(rng.integers(0, 9)), "p2": rng.uniform(0, 0.9),
                     "stem_stage": int(rng.choice([2, 3, 4])), "p1": rng.uniform(0, 0.9), "dropper": "mad",
                     "drop_rate": 0.1, "drop_block_size": 7, "best_val_acc": accs.max(),
                     "best_epoch": int(accs.argmax()) + 1, "best_val_mean_class_acc": accs.max() - 0.05,
                     "last_val_acc": accs[-1], "last_val_mean_class_acc": accs[-1] - 0.05, "epochs": epochs,
                     "train_images_per_s": 150.0, "checkpoint_path": f"/tmp/storage/ckpt_{i}",
                     "node_id": "a" * 56, "status": "ok"})
        hist += [{"trial": trial, "epoch": e, "val_acc": a} for e, a in enumerate(accs, 1)]
    trials = pd.DataFrame(rows).sort_values("best_val_acc", ascending=False)
    os.makedirs(folder)
    trials.to_csv(folder / "trials.csv", index=False)
    pd.DataFrame(hist).to_csv(folder / "history.csv", index=False)
    run = {"spec": {"name": "sweep_transfer", "preset": "transfer_tiny", "data": "", "epochs": 6},
           "dataset": "synthfer", "eval_split": "val", "knobs": list(get_study("transfer").knob_names)}
    (folder / "run.json").write_text(json.dumps(run))
    return build_report(str(folder))


def test_sweep_page_shows_the_search_and_fits_1280_px(sweep_report, tmp_path):
    r = sweep_report
    names = {os.path.basename(p) for p, _ in r["figures"]}
    assert {"learning_curves.png", "optimisation_history.png", "parallel_coordinates.png",
            "knob_slices.png"} <= names
    table = r["tables"][0]
    assert list(table.df.columns) == ["trial", "branches", "p2", "stem_stage", "p1", "best_val_acc", "best_epoch",
                                      "epochs", "status"]  # the searched knobs first; the fixed ones folded away
    assert "node_id" not in table.more and "dropper" in table.more
    dom = dump_dom(r["page"], tmp_path)
    c = check(dom)
    assert c.get("done") == "1" and c["broken"] == ""
    assert int(c["images"]) == len(r["figures"]) >= 4
    assert int(c["width"]) <= int(c["view"]) == 1280, "the page scrolls sideways at 1280 px"
    assert "<details>" in dom and "every column" in dom


def test_check_names_a_missing_figure(transfer_report, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(transfer_report["out"], out)
    os.remove(out / "plots" / "confusion_best.png")
    c = check(dump_dom(str(out / "index.html"), tmp_path))
    assert c["broken"] == "plots/confusion_best.png"


def test_report_files_per_table(transfer_report):
    out = transfer_report["out"]
    for t in transfer_report["tables"]:
        for ext in ("md", "csv", "tex"):
            assert os.path.getsize(os.path.join(out, "tables", f"{t.key}.{ext}")) > 100
    csv = pd.read_csv(os.path.join(out, "tables", "transfer_fig3.csv"))
    assert list(csv["branches"]) == list(range(9)) and (csv["n"] == 2).all()
    # every row carries its full setting, also the default row that names no knob (the x of the stage plot)
    stages = pd.read_csv(os.path.join(out, "tables", "transfer_table2.csv"))
    assert list(stages["stem_stage"]) == [2, 3, 4] and list(stages["p1"]) == [0.6] * 3


def test_optuna_importance_from_the_sweeps_sqlite_study(tmp_path):
    """The study a sweep keeps in optuna.db: the knob that decides the value must come out most important."""
    import optuna

    from ferlab.report.plots import importance_plot

    db = tmp_path / "optuna.db"
    study = optuna.create_study(study_name="sweep-20261124", storage=f"sqlite:///{db}", direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("p1", 0, 0.9) + 0.001 * t.suggest_float("p2", 0, 0.9), n_trials=30)
    paths = importance_plot(str(db), str(tmp_path / "plots"))
    assert [os.path.basename(p) for p in paths] == ["optuna_importance.png", "optuna_importance.svg"]
    imp = optuna.importance.get_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    assert max(imp, key=imp.get) == "p1"
    assert importance_plot(str(tmp_path / "absent.db"), str(tmp_path / "plots")) == []


def test_relabel_curves_one_line_per_function(tmp_path):
    from ferlab.report.plots import knob_curves

    figure, = get_study("mvt").figures
    relabel_curves = functools.partial(knob_curves, figure)
    trials = fake_trials("mvt", ["table2", "table1"], seeds=2)
    history = fake_history(trials, epochs=4)
    paths = relabel_curves(trials, history, str(tmp_path))
    assert [os.path.basename(p) for p in paths] == ["mvt_relabel_curves.png", "mvt_relabel_curves.svg"]
    assert os.path.getsize(paths[0]) > 5000
    import matplotlib.pyplot as plt  # the figure is closed after saving: nothing leaks between tests

    assert plt.get_fignums() == []
    assert relabel_curves(trials[trials["relabel"] == "none"], history, str(tmp_path / "x")) == []


def test_table3_is_drawn_as_its_two_slices(transfer_report, tmp_path, monkeypatch):
    """Table.slices: p1 against accuracy among the rows at p2 = 0.3 (five: 0.4-0.8), p2 among those at p1 = 0.6
    (five: 0.1-0.5), each point the row's measured mean."""
    from ferlab.report import plots as P

    drawn = {}

    def keep(fig, out_dir, name):
        drawn[name] = [(ax.get_xlabel(), list(ax.lines[0].get_xdata())) for ax in fig.axes if ax.get_xlabel()]
        return []

    monkeypatch.setattr(P, "save", keep)
    table3, = [t for t in transfer_report["tables"] if t.key.endswith("table3")]
    P.slices_plot(table3, str(tmp_path), "measured")
    assert drawn == {"transfer_table3_p1_p2": [("p1 (p2 = 0.3)", [0.4, 0.5, 0.6, 0.7, 0.8]),
                                               ("p2 (p1 = 0.6)", [0.1, 0.2, 0.3, 0.4, 0.5])]}
