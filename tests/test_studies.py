"""The Study is where a paper's settings live: each experiment reaches both papers' recipes with one option, knob
flags come from the knobs, --set reaches every section, and every section is validated once, naming the knob."""

import importlib.util
import os

import pytest

from ferlab.studies import get_study

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _experiment(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "experiments", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _spec(name, argv):
    from ferlab.run import runner

    config, args, synth = runner.parse(_experiment(name), argv)
    return runner.build(config, args, synth)[0]


@pytest.mark.parametrize("name,study", [("sweep_transfer", "transfer"), ("ablation_transfer", "transfer"),
                                        ("sweep_mvt", "mvt"), ("ablation_mvt", "mvt")])
def test_recipe_paper_reaches_the_papers_recipe_from_every_experiment(name, study, tmp_path):
    spec = _spec(name, ["--recipe", "paper", "--storage", str(tmp_path)])
    recipe = get_study(study).recipe("paper")
    assert spec.epochs == recipe["epochs"] == 40
    for key, value in recipe.items():
        if key != "epochs":
            assert spec.train[key] == value, key
    if study == "transfer":  # SGD, momentum 0.9, no weight decay, batch 256, lr 1e-3 / 10 at 15 and 30
        assert (spec.train["optimizer"], spec.train["global_batch"], spec.train["lr_milestones"]) == \
            ("sgd", 256, (15, 30)) and spec.train["weight_decay"] == 0.0
    else:  # AdamW, a global batch of 32 (one GPU in the paper), lr 9e-5 with exponential decay, relabeling from 10
        assert (spec.train["optimizer"], spec.train["global_batch"], spec.train["lr"], spec.train["relabel_start"]) \
            == ("adamw", 32, 9e-5, 10) and spec.train["lr_decay"] > 0
    cpu = _spec(name, ["--storage", str(tmp_path)])
    assert cpu.epochs == 6 and "global_batch" not in cpu.train


def test_explicit_options_and_set_win_over_the_recipe(tmp_path):
    spec = _spec("sweep_transfer", ["--recipe", "paper", "--lr", "0.01", "--set", "train.momentum=0.5",
                                    "--set", "model.msad=reference", "--p1", "0.4", "--storage", str(tmp_path)])
    assert spec.train["lr"] == 0.01 and spec.train["momentum"] == 0.5 and spec.model["msad"] == "reference"
    assert spec.fixed_knobs() == {"p1": 0.4}
    mvt = _spec("sweep_mvt", ["--recipe", "paper", "--relabel-start", "4", "--mask-ratio", "0.12",
                              "--relabel", "linear", "--storage", str(tmp_path)])
    assert mvt.train["relabel_start"] == 4 and mvt.settings["mask_ratio"] == 0.12 and mvt.train["relabel"] == "linear"
    assert mvt.fixed_knobs() == {"mask_ratio": 0.12, "relabel": "linear"}


@pytest.mark.parametrize("argv,match", [
    (["--set", "train.lr=abc"], r"train config: wrong type: lr='abc'"),
    (["--set", "p2=None"], r"TransFER config: wrong type: p2=None"),
    (["--set", "heads=abc"], r"TransFER config: wrong type: heads='abc'"),
    (["--set", "optimiser.lr=1"], "the section must be one of model, train, study"),
    (["--set", "study.m=0.1"], "transfer has no study settings"),
])
def test_bad_set_values_are_one_valueerror(argv, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        _spec("sweep_transfer", argv + ["--storage", str(tmp_path)])


def test_each_knob_is_declared_once_with_its_paper_values():
    transfer, mvt = get_study("transfer"), get_study("mvt")
    assert transfer.paper_point("rafdb") == {"branches": 2, "p2": 0.3, "stem_stage": 3, "p1": 0.6, "dropper": "mad",
                                             "drop_rate": 0.1, "drop_block_size": 7}
    assert transfer.paper_point("affectnet")["branches"] == 4
    assert mvt.paper_point("ferplus") == {"mask_ratio": 0.2, "relabel": "quadratic"}
    assert mvt.nest({"mask_ratio": 0.1, "relabel": "linear"}) == {
        "model": {}, "train": {"relabel": "linear"}, "study": {"mask_ratio": 0.1}}
    with pytest.raises(ValueError, match="mask_ratio=1.5 is outside its range"):
        mvt.check_study_section({"mask_ratio": 1.5})


# A knob's paper default that is not its field's default, and why (every other knob must agree with its field).
KNOB_DEFAULT_DIFFERS = {
    ("mvt", "relabel"): "TrainConfig serves both studies: its default, none, is TransFER's (no relabeling)",
}


@pytest.mark.parametrize("study_name", ["transfer", "mvt"])
def test_every_knobs_default_and_choices_agree_with_its_field(study_name):
    """Each fact once: a knob's paper default (the value for every data set not named) is the default of the config
    field it sets, and every value a knob can take passes that field's validation. Before, drop_block_size was 3 in
    TransFERConfig and 7 in the study, so a sweep with DropBlock and Table 4 trained different blocks."""
    import dataclasses

    from ferlab.config import TrainConfig
    from ferlab.models import model_config

    study = get_study(study_name)
    classes = {"model": type(model_config(study.presets[0])), "train": TrainConfig, "study": study.study_config}
    for k in study.knobs:
        cls = classes[k.section]
        default = {f.name: f.default for f in dataclasses.fields(cls)}[k.name]
        if (study_name, k.name) not in KNOB_DEFAULT_DIFFERS:
            assert k.paper["default"] == default, (k.name, k.paper["default"], default)
        values = list(k.search) + list(k.paper.values())
        for value in values:  # every choice and paper value builds its section (ranges: both ends)
            if k.section == "model":
                model_config(study.presets[0], **{k.name: value})
            else:
                cls(**{k.name: value})
