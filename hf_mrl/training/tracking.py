"""Per-dim results as a table, for the scripts' final report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..evaluation.report import group_by_dim, markdown_table

__all__ = ["results_table"]


def results_table(results: Mapping[str, float], label: str = "model", metrics: Sequence[str] | None = None) -> str:
    """A per-dim markdown table (one row per dim) of an evaluator's flat results."""
    if not group_by_dim(results):
        raise ValueError("`results` has no '{name}_dim{k}_{metric}' keys to tabulate.")
    return markdown_table({label: results}, metrics=metrics)
