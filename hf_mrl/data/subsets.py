"""Training subsets for analyses: novel classes held out, and long-tailed class frequencies."""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import numpy as np

from ._common import check_seed

__all__ = ["long_tailed_counts", "long_tailed_subset", "split_classes"]


def _labels(dataset, label_column: str) -> np.ndarray:
    if label_column not in getattr(dataset, "column_names", ()):
        raise ValueError(
            f"`dataset` has no label column {label_column!r}; its columns: {getattr(dataset, 'column_names', None)}."
        )
    return np.asarray(dataset[label_column])


def split_classes(dataset: datasets.Dataset, classes: Sequence, label_column: str = "label"):
    """(`dataset` without the rows of `classes`, the rows of `classes`): holds novel classes out of training."""
    labels = _labels(dataset, label_column)
    if isinstance(classes, (str, bytes)) or not isinstance(classes, (Sequence, np.ndarray)) or len(classes) == 0:
        raise ValueError(f"`classes` must be a non-empty list of labels, got {classes!r}.")
    unknown = sorted(set(classes) - set(labels.tolist()))
    if unknown:
        raise ValueError(f"`classes` holds labels {unknown} absent from `dataset` (it has {sorted(set(labels.tolist()))}).")
    held_out = np.isin(labels, list(classes))
    return dataset.select(np.flatnonzero(~held_out)), dataset.select(np.flatnonzero(held_out))


def long_tailed_counts(max_count: int, num_classes: int, imbalance: float) -> list[int]:
    """Rows per class, most first: `max_count` for the first class, falling exponentially to
    `max_count / imbalance` for the last (at least 1 each)."""
    steps = max(num_classes - 1, 1)
    return [max(1, int(round(max_count * imbalance ** (-rank / steps)))) for rank in range(num_classes)]


def long_tailed_subset(
    dataset: datasets.Dataset, imbalance: float = 100.0, label_column: str = "label", seed: int = 0
) -> datasets.Dataset:
    """A long-tailed sample of `dataset`: classes ranked in a seeded random order; the first keeps as many rows as
    the smallest class has, each next one exponentially fewer, down to 1/`imbalance` of that for the last (rows
    drawn at random, seeded; kept in dataset order)."""
    if isinstance(imbalance, bool) or not isinstance(imbalance, (int, float)) or not imbalance >= 1:
        raise ValueError(f"`imbalance` must be a number >= 1 (largest class / smallest class), got {imbalance!r}.")
    check_seed(seed)
    labels = _labels(dataset, label_column)
    classes = sorted(set(labels.tolist()))
    rng = np.random.default_rng(seed)
    order = [classes[index] for index in rng.permutation(len(classes))]
    rows_of = {label: np.flatnonzero(labels == label) for label in classes}
    smallest = min(len(rows) for rows in rows_of.values())
    counts = long_tailed_counts(smallest, len(classes), float(imbalance))
    keep = np.concatenate(
        [rng.choice(rows_of[label], size=count, replace=False) for label, count in zip(order, counts)]
    )
    return dataset.select(np.sort(keep))
