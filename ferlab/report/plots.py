"""The report's figures (matplotlib, PNG for the page and SVG for papers), each drawn from a results folder.

Every function returns the paths it wrote, or an empty list with nothing written when the results cannot draw it
(the caller says why). Measured and published accuracies share a figure but not an axis: the published ones are on
the paper's data set at full scale, so each has its own y axis.
"""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")  # files only; no display on a cluster node or in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ferlab.studies import get_study  # noqa: E402
from ferlab.train import metrics as M  # noqa: E402

MEASURED, PUBLISHED = "#1f6fb4", "#d9822b"


def save(fig, out_dir: str, name: str) -> list[str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, f"{name}.{ext}") for ext in ("png", "svg")]
    fig.tight_layout()
    for p in paths:
        fig.savefig(p, dpi=110)
    plt.close(fig)
    return paths


def _series(ax, x, values: pd.DataFrame, label: str, xlabel: str):
    """Measured mean +/- std on ax, published on a twin axis."""
    ax.errorbar(x, 100 * values["mean"], yerr=100 * values["std"].fillna(0), marker="o", color=MEASURED,
                capsize=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(label, color=MEASURED)
    pub = values["paper"].astype(float)
    if pub.notna().any():
        twin = ax.twinx()
        twin.plot(np.asarray(x)[pub.notna().to_numpy()], pub.dropna(), "s--", color=PUBLISHED, label="paper")
        twin.set_ylabel("paper accuracy %", color=PUBLISHED)


def axis_plot(report_table, out_dir: str, measured_label: str) -> list[str]:
    """Accuracy against the knob a table sweeps (TransFER Fig. 3's B, Table 2's stage, MVT Table 1's m)."""
    table = report_table.table
    values = report_table.values
    if table.axis is None or values is None or values["mean"].notna().sum() < 2:
        return []
    x = values[table.axis].astype(float)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    _series(ax, x, values, measured_label, table.axis)
    ax.set_title(table.title, fontsize=10)
    return save(fig, out_dir, f"{report_table.key}_{table.axis}")


def slices_plot(report_table, out_dir: str, measured_label: str) -> list[str]:
    """A table as one series per slice (Table.slices): accuracy against a knob with the others held (TransFER
    Table 3: p1 with p2 = 0.3, and p2 with p1 = 0.6)."""
    table, v = report_table.table, report_table.values
    if v is None or v["mean"].notna().sum() < 2:
        return []
    fig, axes = plt.subplots(1, len(table.slices), figsize=(4.5 * len(table.slices), 3.6), squeeze=False)
    for ax, (knob, held) in zip(axes[0], table.slices):
        part = v[np.logical_and.reduce([np.isclose(v[k].astype(float), at) for k, at in held.items()])]
        part = part.sort_values(knob)
        _series(ax, part[knob].astype(float), part, measured_label,
                f"{knob} ({', '.join(f'{k} = {at}' for k, at in held.items())})")
    fig.suptitle(table.title, fontsize=10)
    return save(fig, out_dir, f"{report_table.key}_{'_'.join(k for k, _ in table.slices)}")


def knob_curves(figure, trials: pd.DataFrame, history: pd.DataFrame, out_dir: str) -> list[str]:
    """A study's Curves figure: validation accuracy per epoch for each value of its knob among the finished trials
    where its `where` holds, mean over seeds (MVT Fig. 5b: per relabel function without MGN)."""
    if history.empty or figure.knob not in trials or any(k not in trials for k in figure.where):
        return []
    held = np.logical_and.reduce([np.isclose(trials[k].astype(float), v) if isinstance(v, float) else trials[k] == v
                                  for k, v in figure.where.items()] + [trials["status"] == "ok"])
    cells = trials[held]
    if cells[figure.knob].nunique() < 2:
        return []
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for value, group in cells.groupby(figure.knob):
        h = history[history["trial"].isin(group["trial"])]
        curve = h.groupby(M.EPOCH)[M.VAL_ACC].mean()
        ax.plot(curve.index, 100 * curve.to_numpy(), marker=".", label=str(value))
    ax.set_xlabel("epoch")
    ax.set_ylabel("val accuracy %")
    ax.set_title(figure.title, fontsize=10)
    ax.legend(fontsize=8)
    return save(fig, out_dir, figure.name)


def best_trial(trials: pd.DataFrame, where=None) -> pd.Series | None:
    ok = trials[trials["status"] == "ok"] if "status" in trials else trials
    if where is not None:
        ok = ok[where(ok)]
    ok = ok.dropna(subset=[M.BEST_VAL_ACC]) if M.BEST_VAL_ACC in ok else ok.iloc[0:0]
    return None if ok.empty else ok.loc[ok[M.BEST_VAL_ACC].idxmax()]


def confusion_plot(trials: pd.DataFrame, history: pd.DataFrame, classes: list[str] | None, eval_split: str,
                   out_dir: str) -> list[str]:
    """Row-normalised confusion matrix of the best trial (on validation) at its chosen epoch, on the test split
    when there is one."""
    best = best_trial(trials)
    if best is None or history.empty:
        return []
    h = history[(history["trial"] == best["trial"]) & (history[M.EPOCH] == best[M.BEST_EPOCH])]
    col = "test_confusion" if "test_confusion" in h and h["test_confusion"].notna().any() else "confusion"
    if h.empty or col not in h:
        return []
    cm = np.array(json.loads(h[col].iloc[0]), dtype=float)
    split = "test" if col == "test_confusion" else ("test" if eval_split == "test" else "validation")
    names = classes or [str(i) for i in range(len(cm))]
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(cm)):
        for j in range(len(cm)):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"best trial {best['trial']}, {split} split, epoch {int(best[M.BEST_EPOCH])}", fontsize=9)
    return save(fig, out_dir, "confusion_best")


def importance_plot(optuna_db: str | None, out_dir: str) -> list[str]:
    """Optuna's parameter importance (PED-ANOVA: needs no scikit-learn) of the newest study in the sweep's
    SQLite file."""
    if not optuna_db or not os.path.isfile(optuna_db):
        return []
    import optuna

    storage = f"sqlite:///{optuna_db}"
    studies = optuna.get_all_study_summaries(storage)
    if not studies:
        return []
    newest = max(studies, key=lambda s: s.datetime_start or pd.Timestamp.min.to_pydatetime())
    study = optuna.load_study(study_name=newest.study_name, storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) < 3:
        return []
    imp = _importances(done, study.direction)
    if not imp:
        return []
    spread = _bootstrap(done, study.direction, list(imp))
    fig, ax = plt.subplots(figsize=(5.5, 0.9 + 0.45 * len(imp)))
    names = list(imp)[::-1]
    err = None
    if spread:
        err = np.clip([[imp[n] - np.percentile(spread[n], 5) for n in names],
                       [np.percentile(spread[n], 95) - imp[n] for n in names]], 0, None)
    ax.barh(names, [imp[n] for n in names], color=MEASURED, xerr=err, capsize=3)
    ax.set_xlabel("importance (PED-ANOVA, normalised)")
    ax.set_title(f"Optuna study {newest.study_name}: n = {len(done)} trials\n"
                 + (f"bars: 5-95% over {BOOTSTRAP} bootstrap resamples of the trials" if spread else "")
                 + ("; few trials: read as a hint" if len(done) < 20 else ""), fontsize=8)
    return save(fig, out_dir, "optuna_importance")


BOOTSTRAP = 30  # resamples for the importance's spread: enough for a 5-95% band, milliseconds each


def _importances(trials: list, direction) -> dict:
    """PED-ANOVA importances of completed trials (an in-memory study of them), {} when Optuna cannot tell."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not one "study created" line per resample
    study = optuna.create_study(direction=direction)
    study.add_trials(trials)
    try:
        return dict(optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()))
    except (ValueError, RuntimeError):
        return {}


def _bootstrap(trials: list, direction, names: list[str]) -> dict:
    """{knob: importances over resamples of the trials (with replacement)}; {} when too few resamples work."""
    rng = np.random.default_rng(0)
    out = {n: [] for n in names}
    for _ in range(BOOTSTRAP):
        imp = _importances([trials[i] for i in rng.integers(0, len(trials), len(trials))], direction)
        for n in names:
            out[n].append(imp.get(n, 0.0))
    return out if all(len(v) == BOOTSTRAP for v in out.values()) else {}


def faces(data: str, split: str, size: int, n: int = 6) -> np.ndarray | None:
    """The first n faces of a split, decoded at the model's size: (n, S, S, 3) uint8."""
    from ferlab.data.pipeline import decode_batch
    from ferlab.data.shards import open_shards

    try:
        shards = open_shards(data)
        if not shards.files(split):
            return None
        t = shards.read(split, columns=["image", "label"]).slice(0, n)
    except (OSError, ValueError, KeyError):
        return None
    return decode_batch({"image": np.array(t.column("image").to_pylist(), dtype=object),
                         "label": t.column("label").to_numpy()}, size)["image"]


def attention_plot(trials: pd.DataFrame, run: dict, out_dir: str, n: int = 6, tries: int = 5) -> list[str]:
    """What the study's mechanism looks at (Study.attention: TransFER's LANet attention, MVT's mask 1 - Mp) over a
    few validation faces, from the best trial whose model has one (the first of the `tries` best)."""
    import torch

    from ferlab.models import load_trained
    from ferlab.train.step import to_input

    study = get_study(run.get("study") or (run.get("ablation") or {}).get("paper") or run["spec"]["study"])
    ok = trials[trials["status"] == "ok"] if "status" in trials else trials
    if M.BEST_VAL_ACC not in ok or M.CHECKPOINT not in ok:
        return []
    for _, best in ok.dropna(subset=[M.BEST_VAL_ACC]).sort_values(M.BEST_VAL_ACC, ascending=False).head(tries).iterrows():
        if not isinstance(best.get(M.CHECKPOINT), str):
            continue
        try:
            model = load_trained(best[M.CHECKPOINT])
        except (OSError, ValueError):
            continue
        # the evaluation split's faces, else train's (a k-fold set has only train, every face held out in one fold)
        split = "val" if run.get("eval_split") != "test" else "test"
        data = run.get("spec", {}).get("data", "")
        images = faces(data, split, model.cfg.input_size, n)
        images = faces(data, "train", model.cfg.input_size, n) if images is None else images
        if images is None:
            return []
        with torch.no_grad():
            shown = study.attention(model.eval(), to_input(torch.from_numpy(images), model.cfg))
        if shown is not None:
            break
    else:
        return []
    maps, title, overlay = shown
    maps = maps.numpy()
    fig, axes = plt.subplots(2 if overlay else 3, len(images), figsize=(1.6 * len(images), 1.7 * (2 if overlay else 3)),
                             squeeze=False)
    for i, img in enumerate(images):
        axes[0, i].imshow(img)
        if overlay:  # a heat map over the face
            axes[1, i].imshow(img)
            axes[1, i].imshow(maps[i], cmap="jet", alpha=0.5, interpolation="bilinear",
                              extent=(-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5))
        else:  # a mask: itself, then what the classifier sees, the face times the mask
            axes[1, i].imshow(maps[i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            axes[2, i].imshow((img * maps[i][..., None]).astype(np.uint8))
        for ax in axes[:, i]:
            ax.axis("off")
    fig.suptitle(f"{title}: best trial {best['trial']}", fontsize=9)
    return save(fig, out_dir, f"{study.name}_attention")
