"""The sweep page's search figures and the ablation page's per-row curves, on hand-made histories whose answers are
known (ferlab.report.curves)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from ferlab.report import curves as C

MAX_EPOCHS = 6


A, B, C3 = "f3a91c02", "1279e760", "0b4d5e61"  # Tune's ids: 8 hex digits, no order in them ("1279e760" is a float)


def _sweep():
    """Three trials started in the order A, B, C3 (history's trial_start; trials.csv lists them best first, and
    neither the ids' text nor their value sorts them so): B stopped by ASHA after epoch 2, C3 failed at epoch 3,
    A ran all six."""
    curves = {A: [0.2, 0.3, 0.4, 0.45, 0.5, 0.55], B: [0.15, 0.18], C3: [0.1, 0.2, 0.6]}
    starts = {A: 100.0, B: 110.0, C3: 120.0}
    history = pd.DataFrame([{"trial": t, "epoch": e, "val_acc": a, "trial_start": starts[t]}
                            for t, accs in curves.items() for e, a in enumerate(accs, 1)])
    trials = pd.DataFrame([
        {"trial": C3, "branches": 4, "p1": 0.2, "p2": 0.5, "stem_stage": 3, "best_val_acc": 0.6, "epochs": 3,
         "status": "error"},
        {"trial": A, "branches": 2, "p1": 0.6, "p2": 0.3, "stem_stage": 3, "best_val_acc": 0.55, "epochs": 6,
         "status": "ok"},
        {"trial": B, "branches": 0, "p1": 0.0, "p2": 0.1, "stem_stage": 3, "best_val_acc": 0.18, "epochs": 2,
         "status": "ok"},
    ])
    return trials, history


def test_a_stopped_trials_curve_ends_where_asha_stopped_it():
    trials, history = _sweep()
    data = {c["trial"]: c for c in C.curve_data(trials, history, MAX_EPOCHS)}
    assert data[B]["stopped"] and list(data[B]["epoch"]) == [1, 2]
    assert not data[A]["stopped"]  # ran every epoch
    assert not data[C3]["stopped"]  # failed, not stopped: ASHA did not end it
    assert data[C3]["best"] and not data[A]["best"]


def test_optimisation_history_in_creation_order():
    trials, history = _sweep()
    h = C.history_data(trials, history)
    assert list(h["trial"]) == [A, B, C3]  # as started: not trials.csv's best-first order, nor the ids'
    assert list(h["order_started"]) == [1, 2, 3]
    assert list(h["epochs_spent"]) == [6, 8, 11]
    assert list(h["best_so_far"]) == [0.55, 0.55, 0.6]


def test_parallel_coordinates_and_slices_show_only_searched_knobs(tmp_path):
    trials, history = _sweep()
    knobs = ["branches", "p2", "stem_stage", "p1"]
    assert C.searched_knobs(trials, knobs) == ["branches", "p2", "p1"]  # stem_stage was fixed
    scaled = C._numeric(trials, ["branches"])["branches"][0]
    assert scaled.min() == 0 and scaled.max() == 1
    for paths in (C.parallel_coordinates(trials, knobs, str(tmp_path)),
                  C.knob_slices(trials, knobs, history, str(tmp_path))):
        assert [os.path.splitext(p)[1] for p in paths] == [".png", ".svg"] and all(map(os.path.isfile, paths))
    assert C.parallel_coordinates(trials.iloc[:1], knobs, str(tmp_path)) == []  # one trial: nothing to compare


def test_learning_curves_and_history_files(tmp_path):
    trials, history = _sweep()
    assert len(C.learning_curves(trials, history, MAX_EPOCHS, str(tmp_path))) == 2
    assert len(C.optimisation_history(trials, history, str(tmp_path))) == 2
    assert C.learning_curves(trials, history.iloc[0:0], MAX_EPOCHS, str(tmp_path)) == []


def test_row_curves_are_mean_and_std_over_a_rows_seeds(tmp_path):
    history = pd.DataFrame([{"trial": t, "epoch": e, "val_acc": a}
                            for t, accs in {"a0": [0.2, 0.4], "a1": [0.4, 0.6], "b0": [0.1, 0.1]}.items()
                            for e, a in enumerate(accs, 1)])
    rows = [("row A", pd.DataFrame({"trial": ["a0", "a1"]})), ("row B", pd.DataFrame({"trial": ["b0"]})),
            ("row C, not trained", pd.DataFrame({"trial": []}))]
    data = dict(C.row_curve_data(rows, history))
    assert list(data) == ["row A", "row B"]
    assert data["row A"]["mean"].tolist() == pytest.approx([0.3, 0.5])
    assert data["row A"]["std"].tolist() == pytest.approx([np.sqrt(0.02)] * 2)
    assert data["row B"]["std"].tolist() == [0, 0] and data["row B"]["n"].tolist() == [1, 1]

    class Table:
        title, key = "Table 1", "transfer_table1"

    assert len(C.row_curves(Table, rows, history, str(tmp_path))) == 2
    assert C.row_curves(Table, rows[1:], history, str(tmp_path)) == []  # one row: no comparison


def test_timeline_puts_start_up_before_the_first_epoch_and_marks_asha_stops(tmp_path):
    """The report's timeline on hand-made times: trial B starts 10 s after A, spends 4 s starting up
    (its driver, the study's hook, its workers) and is stopped by ASHA after 2 epochs; the figure and the
    distribution of results are written. Broken once locally: each epoch drawn from its end onward instead of up to
    it (the first epoch then began 3 s late)."""
    from ferlab.report import timeline as T

    trials, history = _sweep()  # started at 100, 110 and 120 s
    history["epoch_time_s"] = 3.0
    history["epoch_end"] = history["trial_start"] + 4.0 + 3.5 * history["epoch"] - 0.5  # 0.5 s between epochs
    rows = {r["trial"]: r for r in T.timeline_data(trials, history, MAX_EPOCHS)}
    assert [r["trial"] for r in T.timeline_data(trials, history, MAX_EPOCHS)] == [A, B, C3]
    r = rows[B]
    assert r["start"] == 10.0 and r["epochs"][0] == (14.0, 17.0) and r["epochs"][1] == (17.5, 20.5)
    assert r["stopped"] and not rows[A]["stopped"] and not rows[C3]["stopped"]
    assert [os.path.basename(p) for p in T.timeline(trials, history, MAX_EPOCHS, str(tmp_path))] == \
        ["timeline.png", "timeline.svg"]
    assert T.result_distribution(trials, str(tmp_path))
    assert T.timeline_data(trials, history.drop(columns="epoch_end"), MAX_EPOCHS) == []  # older results: no times
