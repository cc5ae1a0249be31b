"""Evaluation results as people read them: JSON on disk, markdown tables, PNG plots.

Results are the evaluators' flat dicts, `{name}_dim{k}_{metric}: value`. `group_by_dim` turns one
into `{dim: {metric: value}}`; tables and plots take `{model or baseline label: flat dict}`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence

from ..modeling.files import write_file_atomically

__all__ = [
    "save_results",
    "load_results",
    "parse_metric_key",
    "group_by_dim",
    "markdown_table",
    "draw_metric_vs_dim",
    "draw_qps_vs_metric",
    "plot_metric_vs_dim",
    "plot_qps_vs_metric",
    "pyplot",
    "save_figure",
]

_KEY = re.compile(r"^(?P<name>.+?)_dim(?P<dim>\d+)_(?P<metric>.+)$")


def _plain(value):
    """numpy scalars and arrays -> Python numbers and lists, so results stay plain JSON."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _atomic_write(path, write) -> None:
    """Calls `write(handle)` on a temporary file beside `path`, then renames it over `path`
    (`hf_mrl.modeling.files.write_file_atomically`: a full disk is reported in plain words, with the path)."""

    def write_file(temporary) -> None:
        with open(temporary, "wb") as handle:
            write(handle)

    write_file_atomically(path, write_file)


def save_results(results: Mapping, path) -> None:
    """Writes `results` (a dict of numbers, nested dicts or lists) as JSON, atomically (temp file + rename)."""
    if not isinstance(results, Mapping):
        raise ValueError(f"`results` must be a dict, got {type(results).__name__}.")
    text = json.dumps(_plain(results), indent=2, sort_keys=True).encode()
    _atomic_write(path, lambda file: file.write(text))


def load_results(path) -> dict:
    """Reads results written by `save_results` (a JSON dict)."""
    with open(path) as file:
        try:
            results = json.load(file)
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"results file {path} is corrupted or not a results file: it is not valid JSON "
                             f"({error}).") from None
    if not isinstance(results, dict):
        raise ValueError(
            f"results file {str(path)!r} holds a JSON {type(results).__name__}, not a dict of "
            "'{name}_dim{k}_{metric}' results."
        )
    return results


def parse_metric_key(key: str) -> tuple[str, int, str]:
    """`"fmnist_dim16_top1"` -> `("fmnist", 16, "top1")`."""
    match = _KEY.match(key)
    if match is None:
        raise ValueError(f"metric key {key!r} is not of the form '{{name}}_dim{{k}}_{{metric}}'.")
    return match["name"], int(match["dim"]), match["metric"]


def group_by_dim(results: Mapping[str, float]) -> dict[int, dict[str, float]]:
    """A flat results dict -> `{dim: {metric: value}}` (the evaluator name dropped); other keys are skipped."""
    grouped: dict[int, dict[str, float]] = {}
    for key, value in results.items():
        if _KEY.match(key):
            _, dim, metric = parse_metric_key(key)
            grouped.setdefault(dim, {})[metric] = value
    return dict(sorted(grouped.items()))


def _check_results_by_label(results_by_label) -> dict[str, dict[int, dict[str, float]]]:
    if not isinstance(results_by_label, Mapping) or not results_by_label:
        raise ValueError("`results_by_label` must be a non-empty dict {label: flat results dict}.")
    return {label: group_by_dim(results) for label, results in results_by_label.items()}


def markdown_table(
    results_by_label: Mapping[str, Mapping[str, float]], metrics: Sequence[str] | None = None, digits: int = 4
) -> str:
    """A markdown table: one row per dim, one column per (label, metric); missing cells are '-'.
    `metrics` picks and orders the metric columns (default: every metric, sorted)."""
    grouped = _check_results_by_label(results_by_label)
    if metrics is None:
        metrics = sorted({metric for by_dim in grouped.values() for row in by_dim.values() for metric in row})
    dims = sorted({dim for by_dim in grouped.values() for dim in by_dim})
    single = len(grouped) == 1
    columns = [(label, metric) for label in grouped for metric in metrics]
    header = ["dim", *(metric if single else f"{label} {metric}" for label, metric in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for dim in dims:
        cells = [str(dim)]
        for label, metric in columns:
            value = grouped[label].get(dim, {}).get(metric)
            cells.append("-" if value is None else f"{value:.{digits}f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def save_figure(figure, path) -> None:
    """Writes a matplotlib `figure` as PNG at `path`, atomically (temp file + rename), then closes it."""
    _atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=120, bbox_inches="tight"))
    pyplot().close(figure)


def pyplot():
    """`matplotlib.pyplot` on the non-interactive Agg backend (imported on first use, never by `import hf_mrl`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_one(path, draw, figsize: tuple[float, float] = (6, 4)) -> None:
    """`draw(axis)` on a new one-panel figure, saved as PNG at `path` (the figure is closed on errors too)."""
    figure, axis = pyplot().subplots(figsize=figsize)
    try:
        draw(axis)
    except BaseException:
        pyplot().close(figure)
        raise
    save_figure(figure, path)


def keep_y_span(axis, values, minimum: float = 0.1) -> None:
    """Widens the y axis to at least `minimum` around `values` (scores in [0, 1]: kept inside [0, 1]), so that
    differences in the third decimal are not drawn across the whole height as if they were a trend."""
    values = [value for value in values if math.isfinite(value)]
    if not values:
        return
    low, high = min(values), max(values)
    if high - low >= minimum:
        return
    middle = (low + high) / 2
    low, high = middle - minimum / 2, middle + minimum / 2
    if 0 <= min(values) and max(values) <= 1:  # a score: the window stays within [0, 1]
        low, high = (0.0, minimum) if low < 0 else (1 - minimum, 1.0) if high > 1 else (low, high)
    axis.set_ylim(low - 0.05 * minimum, high + 0.05 * minimum)


def draw_metric_vs_dim(axis, results_by_label: Mapping[str, Mapping[str, float]], metric: str, title: str | None = None):
    """Draws one line per label: `metric` against dim (log2 axis), on the matplotlib `axis`."""
    grouped = _check_results_by_label(results_by_label)
    series = {
        label: sorted((dim, row[metric]) for dim, row in by_dim.items() if metric in row)
        for label, by_dim in grouped.items()
    }
    if not any(series.values()):
        raise ValueError(f"no results hold the metric {metric!r}.")
    for label, points in series.items():
        if points:
            axis.plot([dim for dim, _ in points], [value for _, value in points], marker="o", label=label)
    keep_y_span(axis, [value for points in series.values() for _, value in points])
    axis.set_xscale("log", base=2)
    axis.set_xlabel("embedding dim")
    axis.set_ylabel(metric)
    axis.set_title(title or f"{metric} vs dim")
    axis.grid(True, alpha=0.3)
    axis.legend()


def plot_metric_vs_dim(
    results_by_label: Mapping[str, Mapping[str, float]], metric: str, path, title: str | None = None
) -> None:
    """One line per label (model or baseline): `metric` against dim (log2 axis), saved as PNG at `path`."""
    _plot_one(path, lambda axis: draw_metric_vs_dim(axis, results_by_label, metric, title))


def _check_points(points, name: str) -> None:
    for point in points:
        if len(point) != 2 or not all(math.isfinite(value) for value in point) or point[1] <= 0:
            raise ValueError(f"`{name}` holds {point!r}; points must be (metric, qps > 0).")


_DOT_COLOURS = ("tab:blue", "tab:purple", "tab:gray")
_LINE_COLOURS = ("tab:red", "tab:orange", "tab:green", "tab:brown", "tab:olive", "tab:cyan", "tab:pink")


def draw_qps_vs_metric(
    axis,
    series: Mapping[str, Sequence[tuple[float, float]]],
    metric: str = "recall@10",
    title: str | None = None,
    *,
    scatter: Sequence[str] = (),
    front: Sequence[tuple[float, float]] = (),
    notes: Sequence[tuple[str, tuple[float, float]]] = (),
    quality_floor: float | None = None,
):
    """Draws speed against quality on the matplotlib `axis`: `series` maps a label (e.g. an index setting)
    to (metric value, queries per second) points, drawn as a line through them (loose dots for the labels in
    `scatter`); the metric across, QPS up on a log axis. `front` (points) is drawn as the "Pareto front" line,
    `notes` ((text, point) pairs) label points, `quality_floor` (a metric value) is the "equal quality" line."""
    if not isinstance(series, Mapping) or not series or not all(len(points) for points in series.values()):
        raise ValueError("`series` must be a non-empty dict {label: [(metric value, qps), ...]} with points.")
    for label, points in series.items():
        _check_points(points, f"series[{label!r}]")
    _check_points(front, "front")
    # Dots and lines from separate palettes, so a set of settings never shares its colour with a baseline's line.
    dot_colours, line_colours = iter(_DOT_COLOURS * len(series)), iter(_LINE_COLOURS * len(series))
    for label, points in series.items():
        points = sorted(points)
        if label in scatter:
            axis.scatter([value for value, _ in points], [qps for _, qps in points], s=18, alpha=0.6, label=label,
                         color=next(dot_colours))
        else:
            axis.plot([value for value, _ in points], [qps for _, qps in points], marker="o", label=label,
                      color=next(line_colours))
    if front:
        front = sorted(front)
        axis.plot([value for value, _ in front], [qps for _, qps in front], "-o", c="black", ms=4, lw=1,
                  label="Pareto front")  # black: never one of the series' cycle colours
    for text, point in notes:
        axis.annotate(text, point, fontsize=7, xytext=(4, 4), textcoords="offset points")
    if quality_floor is not None:
        axis.axvline(quality_floor, ls="--", c="grey", lw=1, label=f"equal quality ({quality_floor:.2f})")
    axis.set_yscale("log")
    axis.set_xlabel(metric)
    axis.set_ylabel("queries per second")
    axis.set_title(title or f"QPS vs {metric}")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)


def plot_qps_vs_metric(
    series: Mapping[str, Sequence[tuple[float, float]]],
    path,
    metric: str = "recall@10",
    title: str | None = None,
    figsize: tuple[float, float] = (6, 4),
    **options,
) -> None:
    """Speed against quality (`draw_qps_vs_metric`, which takes `options`), saved as PNG at `path`."""
    _plot_one(path, lambda axis: draw_qps_vs_metric(axis, series, metric, title, **options), figsize)
