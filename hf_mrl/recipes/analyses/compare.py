"""MRL against fixed-feature (FF) models at equal dims: scoring both with one evaluator, markdown tables of the
two side by side, and writing an analysis (markdown, JSON, plots) to its folder.

An MRL model is scored at every nesting dim; the FF model of dim d (a separate model trained at d alone) at d.
Merging the FF models' flat results gives one dict with MRL's keys, so every table and plot takes
`{"MRL": results, "FF": results}`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ...evaluation import group_by_dim, save_results
from ...evaluation.report import pyplot, save_figure
from ...modeling.files import write_file_atomically
from .runs import load_classifier

__all__ = ["comparison_table", "evaluate_mrl_and_ff", "plot_panels", "score_models", "write_analysis"]


def score_models(make_evaluator: Callable, mrl_run, ff_runs: Mapping[int, str | Path], score: Callable | None = None) -> dict:
    """{"MRL": score(evaluator, model), "FF": {dim: score(...)}}: a fresh `make_evaluator(collate_fn)` for the MRL
    run's model and each FF run's model; `score` defaults to `evaluator(model)` (the flat metrics)."""
    score = score or (lambda evaluator, model: evaluator(model))
    model, collate_fn = load_classifier(mrl_run)
    scores = {"MRL": score(make_evaluator(collate_fn), model), "FF": {}}
    for dim, run in sorted(ff_runs.items()):
        model, collate_fn = load_classifier(run)
        evaluator = make_evaluator(collate_fn)
        evaluator.dims = list(model.config.matryoshka_dims)  # an FF model is scored at the one dim it was trained at
        scores["FF"][dim] = score(evaluator, model)
    return scores


def evaluate_mrl_and_ff(make_evaluator: Callable, mrl_run, ff_runs: Mapping[int, str | Path]) -> dict[str, dict]:
    """{"MRL": results, "FF": results}: the flat metrics of the MRL run's model (every nesting dim) and of each FF
    run's model (its one dim), the FF models' merged."""
    scores = score_models(make_evaluator, mrl_run, ff_runs)
    return {"MRL": scores["MRL"], "FF": {key: value for flat in scores["FF"].values() for key, value in flat.items()}}


def comparison_table(
    results_by_label: Mapping[str, Mapping[str, float]],
    columns: Sequence[tuple[str, str]],
    percent: bool = True,
    difference: bool = True,
) -> str:
    """Markdown, one row per dim: for each (metric, title) of `columns`, MRL, FF and (with `difference`) MRL - FF;
    values in % (points for differences) when `percent`. A cell is '-' where a model has no value."""
    grouped = {label: group_by_dim(results) for label, results in results_by_label.items()}
    dims = sorted({dim for by_dim in grouped.values() for dim in by_dim})
    scale = 100 if percent else 1
    header = ["dim"]
    for _, title in columns:
        header += [f"{label} {title}" for label in grouped] + ([f"MRL - FF {title}"] if difference else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for dim in dims:
        cells = [str(dim)]
        for metric, _ in columns:
            values = {label: by_dim.get(dim, {}).get(metric) for label, by_dim in grouped.items()}
            cells += ["-" if value is None else f"{scale * value:.2f}" for value in values.values()]
            if difference:
                mrl, ff = values.get("MRL"), values.get("FF")
                cells.append("-" if mrl is None or ff is None else f"{scale * (mrl - ff):+.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_panels(path, panels: Sequence[tuple[str, Callable]], columns: int = 2) -> None:
    """One figure of `panels` ((title, draw(axis)) each), `columns` per row, saved as PNG at `path`."""
    rows = -(-len(panels) // columns)
    figure, axes = pyplot().subplots(rows, columns, figsize=(5.5 * columns, 3.8 * rows), squeeze=False)
    try:
        for axis, (title, draw) in zip(axes.flat, panels):
            draw(axis)
            axis.set_title(title)
            axis.grid(True, alpha=0.3)
        for axis in list(axes.flat)[len(panels):]:
            axis.axis("off")
        figure.tight_layout()
    except BaseException:
        pyplot().close(figure)
        raise
    save_figure(figure, path)


def write_analysis(folder, name: str, markdown: str, data: Mapping) -> Path:
    """Writes `<folder>/<name>.md` and `<folder>/<name>.json`, atomically; returns the markdown's path."""
    folder = Path(folder)
    save_results(data, folder / f"{name}.json")
    path = folder / f"{name}.md"
    write_file_atomically(path, lambda file: file.write_bytes(markdown.encode()))
    return path
