"""`ferlab report RESULTS_DIR`: the paper tables (Markdown, CSV, LaTeX), the figures and one HTML page."""

from __future__ import annotations

import os


def build_report(results_dir: str, out_dir: str | None = None, plots: bool = True) -> dict:
    """Write <out_dir or RESULTS_DIR/report>/{tables/*.md|csv|tex, plots/*.png|svg, index.html}; returns
    {"tables": [ReportTable], "figures": [paths], "skipped": [reasons], "page": path}."""
    import pandas as pd

    from ferlab.report import curves as C, html, plots as P, timeline as T
    from ferlab.report.tables import DATASET_NAMES, build_tables, load_results
    from ferlab.studies import get_study

    trials, run = load_results(results_dir)
    out = out_dir or os.path.join(results_dir, "report")
    tdir, pdir = os.path.join(out, "tables"), os.path.join(out, "plots")
    os.makedirs(tdir, exist_ok=True)
    report_tables = build_tables(results_dir)
    sections = []
    for t in report_tables:
        files = {}
        for ext, text in (("md", t.markdown() + "\n"), ("tex", t.latex())):
            files[ext] = os.path.join("tables", f"{t.key}.{ext}")
            with open(os.path.join(out, files[ext]), "w") as f:
                f.write(text)
        files["csv"] = os.path.join("tables", f"{t.key}.csv")
        (t.values if t.values is not None else t.df).to_csv(os.path.join(out, files["csv"]), index=False)
        sections.append({"title": t.title, "table_html": html.table_html(t.df), "notes": t.notes, "files": files,
                         "more_html": html.table_html(t.more) if t.more is not None else ""})

    figures, skipped = [], []
    hist_path = os.path.join(results_dir, "history.csv")
    history = pd.read_csv(hist_path) if os.path.isfile(hist_path) else pd.DataFrame()
    if not run.get("ablation") and "best_val_acc" in trials and trials["best_val_acc"].notna().any():
        # the optimisation history's data, in the order the trials started (with or without the figures)
        C.history_data(trials, history).to_csv(os.path.join(out, "optimisation_history.csv"), index=False)
    if plots:
        label = "measured acc % (" + DATASET_NAMES.get(run.get("dataset"), str(run.get("dataset"))) + ")"

        def draw(caption, fn, *args):
            try:
                paths = fn(*args)
            except Exception as e:  # a figure that fails must not lose the tables: say which and why
                paths, caption = [], f"{caption}: failed ({type(e).__name__}: {e})"
            if paths:
                figures.append((os.path.relpath(paths[0], out), caption))
            else:
                skipped.append(caption if "failed" in caption else f"{caption}: the results do not hold it")

        epochs = int(run.get("spec", {}).get("epochs") or 0)
        if not run.get("ablation"):  # the search itself
            knobs = list(run.get("knobs") or [])
            draw("Learning curves (x: ASHA stopped the trial there)", C.learning_curves, trials, history, epochs, pdir)
            draw("Optimisation history", C.optimisation_history, trials, history, pdir)
            draw("Parallel coordinates of the searched knobs", C.parallel_coordinates, trials, knobs, pdir)
            draw("Accuracy against each searched knob", C.knob_slices, trials, knobs, history, pdir)
            draw("Distribution of the trials' results", T.result_distribution, trials, pdir)
        draw("Where the sweep's time went: each trial's start-up (grey) and epochs on the wall clock (x: stopped by "
             "ASHA)", T.timeline, trials, history, epochs, pdir)
        for t in report_tables:
            if t.row_trials:
                draw(f"{t.title}: validation curves per row", C.row_curves, t, t.row_trials, history, pdir)
            if t.table is not None and t.table.slices:
                draw(f"{t.title} as curves", P.slices_plot, t, pdir, label)
            elif t.table is not None and t.table.axis:
                draw(f"{t.title} against its knob", P.axis_plot, t, pdir, label)
        paper = (run.get("ablation") or {}).get("paper")
        for figure in (get_study(paper).figures if paper else ()):
            draw(figure.title, P.knob_curves, figure, trials, history, pdir)
        draw("Confusion matrix of the best trial", P.confusion_plot, trials, history, run.get("classes"),
             run.get("eval_split") or "val", pdir)
        if not run.get("ablation"):
            draw("Optuna parameter importance", P.importance_plot, run.get("optuna_db"), pdir)
        draw("What the mechanism looks at (TransFER: LANet attention; MVT: the MGN's mask) over validation faces",
             P.attention_plot,
             trials, run, pdir)

    spec = run.get("spec", {})
    intro = [f"{spec.get('name', '')}: preset {spec.get('preset', '')}, data {spec.get('data', '')} "
             f"({DATASET_NAMES.get(run.get('dataset'), run.get('dataset'))}), {len(trials)} trials, "
             f"{spec.get('epochs', '?')} epochs each, git {str(run.get('git_commit') or '?')[:10]}.",
             f"Tune experiment: {run.get('tune_experiment', '?')} (TensorBoard: tensorboard --logdir "
             f"{run.get('tune_experiment', '?')})."]
    page = html.write_page(out, f"ferlab report: {spec.get('name', os.path.basename(results_dir))}", intro,
                           sections, figures, skipped)
    return {"tables": report_tables, "figures": figures, "skipped": skipped, "page": page, "out": out}
