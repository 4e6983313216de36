"""The noise-aware last step of a search (ferlab.tune.confirm): what it re-trains and how it ranks."""

import pandas as pd
import pytest

from ferlab.studies import get_study
from ferlab.tune.confirm import confirm_grid, confirm_table, describe, top_settings

STUDY = get_study("transfer")


def _search():
    # a lucky trial (0.60 for B = 1) on top, the same setting twice, an unfinished trial above everything
    return pd.DataFrame([
        {"branches": 1, "p1": 0.4, "p2": 0.1, "stem_stage": 3, "best_val_acc": 0.60, "status": "ok"},
        {"branches": 2, "p1": 0.6, "p2": 0.3, "stem_stage": 3, "best_val_acc": 0.55, "status": "ok"},
        {"branches": 2, "p1": 0.6, "p2": 0.3, "stem_stage": 3, "best_val_acc": 0.54, "status": "ok"},
        {"branches": 4, "p1": 0.2, "p2": 0.6, "stem_stage": 3, "best_val_acc": 0.90, "status": "unfinished"},
        {"branches": 0, "p1": 0.0, "p2": 0.5, "stem_stage": 2, "best_val_acc": 0.40, "status": "ok"},
    ])


def test_top_settings_are_distinct_finished_and_best_first():
    top = top_settings(_search(), STUDY, 2)
    assert top == [{"branches": 1, "p1": 0.4, "p2": 0.1, "stem_stage": 3},
                   {"branches": 2, "p1": 0.6, "p2": 0.3, "stem_stage": 3}]
    assert all(type(v) in (int, float) for s in top for v in s.values())  # Python values for Tune and JSON
    assert len(top_settings(_search(), STUDY, 10)) == 3


def test_confirm_grid_uses_fresh_seeds_only():
    cells = confirm_grid(top_settings(_search(), STUDY, 2), STUDY, seed=5, seeds=3)
    assert len(cells) == 6
    assert sorted({c["seed"] for c in cells}) == [6, 7, 8]  # never the search's own seed 5
    assert cells[0]["model"] == {"branches": 1, "p1": 0.4, "p2": 0.1, "stem_stage": 3}
    with pytest.raises(ValueError, match="confirm-seeds"):
        confirm_grid([], STUDY, 0, 0)


def test_confirmation_ranks_by_mean_not_by_the_lucky_seed():
    settings = top_settings(_search(), STUDY, 2)
    runs = pd.DataFrame([s | {"seed": seed, "best_val_acc": acc, "status": "ok"}
                         for s, accs in zip(settings, ([0.41, 0.43, 0.45], [0.52, 0.50, 0.54]))
                         for seed, acc in zip((1, 2, 3), accs)]
                        + [settings[1] | {"seed": 4, "best_val_acc": 0.99, "status": "error"}])  # not counted
    summary = confirm_table(runs, settings, _search())
    first, second = summary.iloc[0], summary.iloc[1]
    assert first["branches"] == 2 and first["n"] == 3 and first["mean_val_acc"] == pytest.approx(0.52)
    assert first["std_val_acc"] == pytest.approx(0.02)
    assert first["search_val_acc"] == pytest.approx(0.55)  # the better of its two search trials
    assert second["branches"] == 1 and second["search_val_acc"] == pytest.approx(0.60)
    assert "0.5200 +/- 0.0200 (n = 3, seeds 1 2 3); the search saw 0.5500" in describe(summary, STUDY.knob_names)


def test_confirm_options_are_checked_before_ray(capsys):
    """The flags are RunOptions' fields (generated, ferlab.run.options); RunOptions checks them."""
    from conftest import run_experiment_main

    code, lines = run_experiment_main("sweep_transfer.py", ["--confirm-seeds", "0"], capsys)
    assert code == 2 and "--confirm-seeds 0: must be >= 1" in lines[-1]
    code, lines = run_experiment_main("sweep_transfer.py", ["--confirm", "-1"], capsys)
    assert code == 2 and "--confirm -1: must be >= 0" in lines[-1]
