"""The report against fabricated results whose answers are known: rows found by their knobs, the grid's best chosen
on validation, Welch's test marking only real differences, the three accuracies apart, and the published numbers
equal to the papers' (checked against ../shared/REFERENCE.md when it is there)."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pandas as pd
import pytest

from ferlab.report.paper import DEFAULTS, KNOBS, TABLES, row_settings, tables
from ferlab.report.tables import build_table, build_tables, load_results, welch
from ferlab.tune.ablation import ablation_grid, table_keys

REFERENCE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "REFERENCE.md")


def fake_trials(paper: str, keys, seeds=3, acc=None, eval_split="val", seed=0) -> pd.DataFrame:
    """One trials.csv row per grid cell; accuracy = acc(setting) + small seed noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, cell in enumerate(ablation_grid(paper, keys, "synthfer", seeds)):
        a = acc(cell) if acc else 0.5
        val, test = a + rng.normal(0, 0.002), a + rng.normal(0, 0.002)
        row = {"trial": f"t{i}", **cell, "best_val_acc": val, "best_epoch": 3, "last_val_acc": val - 0.01,
               "best_val_mean_class_acc": val - 0.05, "status": "ok"}
        if eval_split == "val":
            row |= {"test_acc_at_best": test, "test_acc_last": test - 0.01, "test_acc_max": test + 0.01,
                    "test_mean_class_acc_at_best": test - 0.05}
        rows.append(row)
    return pd.DataFrame(rows)


def write_results(folder, trials: pd.DataFrame, paper: str, dataset="synthfer", eval_split="val", history=None):
    os.makedirs(folder, exist_ok=True)
    trials.to_csv(os.path.join(folder, "trials.csv"), index=False)
    if history is not None:
        history.to_csv(os.path.join(folder, "history.csv"), index=False)
    run = {"spec": {"name": "fake", "preset": f"{paper}_tiny", "data": "", "epochs": 3}, "dataset": dataset,
           "eval_split": eval_split, "classes": ["neutral", "happiness", "surprise", "sadness", "anger", "disgust",
                                                 "fear"], "ablation": {"paper": paper, "tables": "all"}}
    with open(os.path.join(folder, "run.json"), "w") as f:
        json.dump(run, f)
    return folder


def test_grid_trains_each_distinct_setting_once_per_seed():
    grid = ablation_grid("transfer", table_keys("transfer"), "synthfer", seeds=2, seed=5)
    settings = {tuple(sorted((k, v) for k, v in c.items() if k != "seed")) for c in grid}
    assert len(grid) == 2 * len(settings) and {c["seed"] for c in grid} == {5, 6}
    default = tuple(sorted(DEFAULTS["transfer"].items()))
    assert sum(1 for c in grid if tuple(sorted((k, v) for k, v in c.items() if k != "seed")) == default) == 2
    # Table 4: three drop rates for each of the three alternatives; B = 0..8 for Fig. 3; nine (p1, p2) pairs
    assert {(c["dropper"], c["drop_rate"]) for c in grid if c["dropper"] != "mad"} == \
        {(d, r) for d in ("dropout", "dropblock", "spatial") for r in (0.1, 0.3, 0.6)}
    assert {c["branches"] for c in grid} == set(range(9))
    with pytest.raises(ValueError, match="table9"):
        table_keys("transfer", "table1,table9")


def test_mvt_rows_use_the_datasets_own_setting():
    t3 = TABLES[("mvt", "table3")]
    assert row_settings("mvt", t3.rows[3], "ferplus") == [{"mask_ratio": 0.2, "relabel": "quadratic"}]
    assert row_settings("mvt", t3.rows[3], "rafdb") == [{"mask_ratio": 0.15, "relabel": "sigmoid"}]
    assert row_settings("mvt", t3.rows[1], "synthfer") == [{"mask_ratio": 0.15, "relabel": "none"}]


def test_rows_found_by_knobs_and_marked_by_welch(tmp_path):
    # Fig. 3: accuracy rises with B by 2 points each; B = 1 equals B = 0 (noise only)
    def acc(c):
        return 0.40 + 0.02 * c["branches"] - (0.02 if c["branches"] == 1 else 0.0)

    trials = fake_trials("transfer", ["fig3"], seeds=3, acc=acc)
    rt = build_table(TABLES[("transfer", "fig3")], trials, {"dataset": "synthfer", "eval_split": "val"})
    v = rt.values
    assert list(v["n"]) == [3] * 9
    np.testing.assert_allclose(v["mean"], [acc({"branches": b}) for b in range(9)], atol=0.003)
    marks = list(rt.df["vs baseline"])
    assert marks[0] == "baseline"
    assert marks[1].startswith("~")  # same mean as the baseline: no mark
    assert all(m.startswith("↑") for m in marks[2:])
    # the p-value is scipy's Welch test on exactly these seeds
    b0 = trials[trials["branches"] == 0]["test_acc_at_best"].to_numpy()
    b4 = trials[trials["branches"] == 4]["test_acc_at_best"].to_numpy()
    assert v["p_value"].iloc[4] == pytest.approx(welch(b4, b0))
    # published: only B = 2 is stated (90.91)
    assert list(rt.df["paper (RAF-DB)"]) == ["-", "-", "90.91"] + ["-"] * 6
    # the three accuracies are reported apart
    assert {"test acc % (epoch chosen on val)", "test acc % (last epoch)", "test acc % (best epoch on test)"} <= \
        set(rt.df.columns)


def test_one_seed_makes_no_test_and_says_so():
    trials = fake_trials("transfer", ["table1"], seeds=1, acc=lambda c: 0.3 + 0.1 * c["branches"])
    rt = build_table(TABLES[("transfer", "table1")], trials, {"dataset": "synthfer", "eval_split": "val"})
    assert list(rt.df["vs baseline"]) == ["baseline"] + ["n < 2: no test"] * 3
    assert rt.df.iloc[0, 1].endswith("(1)")


def test_grid_row_takes_its_best_rate_on_validation():
    # Dropout is best at 0.3 on validation; DropBlock at 0.6; Spatial at 0.1
    best = {"dropout": 0.3, "dropblock": 0.6, "spatial": 0.1}

    def acc(c):
        return 0.5 if c["dropper"] == "mad" else (0.45 if c["drop_rate"] == best[c["dropper"]] else 0.3)

    trials = fake_trials("transfer", ["table4"], seeds=2, acc=acc)
    rt = build_table(TABLES[("transfer", "table4")], trials, {"dataset": "synthfer", "eval_split": "val"})
    rows = list(rt.df["row"])
    assert rows[1] == "Dropout [drop_rate 0.3 (best on val)]"
    assert rows[2] == "DropBlock [drop_rate 0.6 (best on val)]"
    assert rows[3] == "Spatial Dropout [drop_rate 0.1 (best on val)]"
    np.testing.assert_allclose(rt.values["mean"], [0.5, 0.45, 0.45, 0.45], atol=0.005)


def test_no_validation_split_reads_val_as_test_and_affectnet_shows_mean_class():
    trials = fake_trials("transfer", ["table1"], seeds=2, acc=lambda c: 0.6, eval_split="test")
    rt = build_table(TABLES[("transfer", "table1")], trials, {"dataset": "affectnet", "eval_split": "test"})
    assert "test acc % (best epoch = on test)" in rt.df.columns
    assert "test acc % (last epoch)" not in rt.df.columns  # the same split: one number, said once
    assert "mean class acc %" in rt.df.columns
    assert list(rt.df["paper (AffectNet)"]) == ["65.63", "65.74", "65.94", "66.23"]
    assert any("no validation split" in n for n in rt.notes)


def test_missing_rows_and_tables(tmp_path):
    trials = fake_trials("mvt", ["table2"], seeds=1)
    run = {"dataset": "synthfer", "eval_split": "val"}
    assert build_table(TABLES[("mvt", "table1")], trials, run) is None  # Table 2 trains no (m, none) setting
    t3 = build_table(TABLES[("mvt", "table3")], trials, run)  # only its "+ D-Relabel" row (m = 0, sigmoid)
    assert list(t3.values["n"]) == [0, 0, 1, 0]
    assert list(t3.df.iloc[:, 1]) == ["-", "-", t3.df.iloc[2, 1], "-"]
    assert build_table(TABLES[("mvt", "table5")], trials, run) is None  # no occlusion split evaluated
    write_results(tmp_path / "r", trials, "mvt")
    keys = [t.key for t in build_tables(str(tmp_path / "r"))]
    assert "mvt_table2" in keys and "mvt_table5" not in keys


def test_bad_results_folder_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="trials.csv"):
        load_results(str(tmp_path))
    write_results(tmp_path, fake_trials("mvt", ["table2"], seeds=1), "mvt")
    (tmp_path / "run.json").write_text('{"spec": {},\n "dataset": oops}')
    with pytest.raises(ValueError, match=r"run.json: line 2"):
        load_results(str(tmp_path))


def test_latex_and_markdown_escape():
    trials = fake_trials("transfer", ["table3"], seeds=2)
    rt = build_table(TABLES[("transfer", "table3")], trials, {"dataset": "synthfer", "eval_split": "val"})
    tex = rt.latex()
    assert r"\begin{tabular}" in tex and r"$\pm$" in tex and "±" not in tex and r"acc \%" in tex
    assert rt.markdown().count("\n| p1 = ") == 9


def _reference_numbers(line: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+\.\d+", line)]


@pytest.mark.skipif(not os.path.isfile(REFERENCE), reason=f"{REFERENCE} is not beside the checkout")
def test_published_numbers_equal_the_reference():
    text = open(REFERENCE).read()

    def line(prefix):
        return next(x for x in text.splitlines() if x.startswith(prefix))

    t3 = _reference_numbers(line("- Table 3 (p1, p2):"))
    published = [n for r in TABLES[("transfer", "table3")].rows for n in (r.knobs["p1"], r.knobs["p2"],
                                                                           r.published["rafdb"])]
    assert published == t3
    t1 = _reference_numbers(line("- Table 1: baseline"))
    assert [v for r in TABLES[("transfer", "table1")].rows for v in (r.published["rafdb"],
                                                                     r.published["affectnet"])] == t1
    t4 = _reference_numbers(line("- Table 4 (MAD vs"))
    rows = TABLES[("transfer", "table4")].rows
    assert [r.published["rafdb"] for r in rows] + [r.published["affectnet"] for r in rows] == t4
    flat = " ".join(text.split())  # the MVT facts wrap over several lines
    m = _reference_numbers(flat.split("Table 1 mask ratio:")[1].split("Table 2")[0])
    rows = TABLES[("mvt", "table1")].rows
    assert [r.published["rafdb"] for r in rows] + [r.published["ferplus"] for r in rows] == m
    f = _reference_numbers(flat.split("Table 2 relabel f:")[1].split("Table 3")[0])
    rows = TABLES[("mvt", "table2")].rows
    assert [r.published["rafdb"] for r in rows] + [r.published["ferplus"] for r in rows] == f
    t3 = _reference_numbers(flat.split("Table 3 (MGN, D-relabel):")[1].split("Table 5")[0])
    rows = TABLES[("mvt", "table3")].rows
    assert [r.published.get(d) for d in ("rafdb", "ferplus", "affectnet") for r in rows if d in r.published] == t3
    assert [r.published["rafdb"] for r in TABLES[("mvt", "table5")].rows] == _reference_numbers(
        flat.split("Pose>45 on RAF-DB):")[1][:30])
    for paper in ("transfer", "mvt"):
        for t in tables(paper):
            for r in t.rows:
                assert set(r.knobs) <= set(KNOBS[paper]) | set(r.grid)
