"""Adaptive classification over the nested heads: a confidence cascade that stops at the smallest dim whose
prediction is confident enough, and routing on the disagreement between two dims.

For each input, heads are read from the smallest nesting dim up; at dim j the cascade stops and
predicts when the head's maximum softmax probability reaches the threshold t_j (the largest dim always
stops). Thresholds are fit on a validation split to reach a target accuracy with the fewest expected
dims; the savings are in the heads / downstream search, the embedding itself is computed once.

Fitting (`fit_cascade_thresholds`) is a greedy descent on a grid: every threshold starts at +inf
(nobody stops early, so the cascade equals the full-dim head); each step lowers ONE threshold by one
grid step (the grid per dim: quantiles of that head's validation confidences), choosing, among the
steps that keep validation accuracy >= target, the one that saves the most expected dims per unit of
accuracy lost. It stops when no step is allowed. Greedy, so not always the global optimum.

Disagreement routing (`disagreement_predict`): read the heads at two dims a < b; where they agree, predict
their class (cost: b dims read); where they disagree, route the input to a larger dim (default the largest).
Combined with the cascade (`agreement=True` in the cascade functions): a stop at dim j also needs the head
at the next nesting dim to agree with it, so that stop reads, and costs, the next dim. In every report the
cost of an input is the largest dim whose head was read ("expected dim" is its mean); the embedding itself is
computed once either way. `oracle_accuracy` is the ceiling of any routing: the share of inputs that at least
one head gets right.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from ..modeling.nesting import validate_matryoshka_dims

__all__ = [
    "MatryoshkaCascade",
    "cascade_predict",
    "disagreement_predict",
    "evaluate_cascade",
    "evaluate_disagreement",
    "fit_cascade_thresholds",
    "oracle_accuracy",
]


def _check_logits(logits_per_dim, labels, dims) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
    if hasattr(logits_per_dim, "detach"):
        logits_per_dim = logits_per_dim.detach().float().cpu().numpy()
    logits = np.asarray(logits_per_dim, dtype=np.float64)
    if logits.ndim != 3:
        raise ValueError(f"`logits_per_dim` must be 3-D (num_dims, n, num_labels), got shape {logits.shape}.")
    dims = _check_dims(dims)
    if len(dims) != logits.shape[0]:
        raise ValueError(f"`dims` has {len(dims)} entries but `logits_per_dim` has {logits.shape[0]} heads.")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (logits.shape[1],):
            raise ValueError(f"`labels` must have shape ({logits.shape[1]},), got {labels.shape}.")
    return logits, labels, dims


def _check_dims(dims) -> list[int]:
    checked = validate_matryoshka_dims(dims, sys.maxsize, name="dims")
    if list(dims) != checked:
        raise ValueError(f"`dims` must be the nesting dims in ascending order (the logits' order), got {dims!r}.")
    return checked


def _confidences(logits: np.ndarray) -> np.ndarray:
    """Maximum softmax probability (num_dims, n), computed stably."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return 1.0 / np.exp(shifted).sum(axis=-1)


def _stop_index(confidence: np.ndarray, thresholds: np.ndarray, agree: np.ndarray | None = None) -> np.ndarray:
    """(n,) index of the first dim whose confidence reaches its threshold (and, with `agree` (num_dims - 1, n),
    whose head agrees with the next one); the last dim when none does."""
    confident = confidence[:-1] >= thresholds[:, None]
    if agree is not None:
        confident &= agree
    last = confidence.shape[0] - 1
    return np.where(confident.any(axis=0), confident.argmax(axis=0), last)


def _agreement(logits: np.ndarray) -> np.ndarray:
    """(num_dims - 1, n): whether the head at each dim predicts what the head at the next dim predicts."""
    predicted = logits.argmax(axis=-1)
    return predicted[:-1] == predicted[1:]


def _cost_of_stop(dims: Sequence[int], agreement: bool) -> np.ndarray:
    """The dims read when stopping at each dim: that dim, or the next one when the stop checks agreement."""
    return np.asarray([*dims[1:], dims[-1]] if agreement else dims)


def _check_agreement(agreement) -> bool:
    if not isinstance(agreement, bool):
        raise ValueError(f"`agreement` must be True or False, got {agreement!r}.")
    return agreement


def _check_thresholds(thresholds, num_dims: int) -> np.ndarray:
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.shape != (num_dims - 1,) or np.isnan(thresholds).any():
        raise ValueError(
            f"`thresholds` must be {num_dims - 1} numbers (one per dim but the last; +inf = never stop there), "
            f"got {thresholds.tolist()}."
        )
    return thresholds


def cascade_predict(
    logits_per_dim, dims: Sequence[int], thresholds, agreement: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted classes (n,) and the dims each input used (n,: the largest head read), from head logits
    (num_dims, n, num_labels) in ascending `dims` order and `thresholds` (num_dims - 1,). `agreement`: a stop
    also needs the next dim's head to agree (see the module docstring)."""
    logits, _, dims = _check_logits(logits_per_dim, None, dims)
    agree = _agreement(logits) if _check_agreement(agreement) else None
    stop = _stop_index(_confidences(logits), _check_thresholds(thresholds, len(dims)), agree)
    predictions = logits.argmax(axis=-1)[stop, np.arange(logits.shape[1])]
    return predictions, _cost_of_stop(dims, agreement)[stop]


def fit_cascade_thresholds(
    val_logits_per_dim,
    val_labels,
    dims: Sequence[int],
    target_accuracy: float | None = None,
    num_candidates: int = 50,
    agreement: bool = False,
) -> np.ndarray:
    """Confidence thresholds (num_dims - 1,) reaching `target_accuracy` on the validation split (default:
    the full-dim head's validation accuracy) with the fewest expected dims; see the module docstring
    for the greedy search. +inf means "never stop at this dim". If even the start point (every input at
    the full dim) misses the target, the start point is returned. `agreement`: fit the cascade whose stops
    also need the next dim's head to agree."""
    logits, labels, dims = _check_logits(val_logits_per_dim, val_labels, dims)
    agree = _agreement(logits) if _check_agreement(agreement) else None
    if isinstance(num_candidates, bool) or not isinstance(num_candidates, int) or num_candidates < 1:
        raise ValueError(f"`num_candidates` must be a positive integer, got {num_candidates!r}.")
    correct = logits.argmax(axis=-1) == labels[None, :]
    if target_accuracy is None:
        target_accuracy = float(correct[-1].mean())
    elif (
        isinstance(target_accuracy, bool)
        or not isinstance(target_accuracy, (int, float))
        or not 0 <= target_accuracy <= 1
    ):
        raise ValueError(f"`target_accuracy` must be a number in [0, 1] or None, got {target_accuracy!r}.")
    confidence = _confidences(logits)
    columns = np.arange(logits.shape[1])
    dim_sizes = _cost_of_stop(dims, agreement).astype(np.float64)
    levels = np.linspace(1.0, 0.0, num_candidates + 1)
    # Per dim: +inf, then descending distinct confidence quantiles.
    grids = [np.concatenate([[np.inf], np.unique(np.quantile(row, levels))[::-1]]) for row in confidence[:-1]]
    positions = np.zeros(len(dims) - 1, dtype=np.int64)

    def score(candidate_positions) -> tuple[float, float]:
        thresholds = np.array([grid[p] for grid, p in zip(grids, candidate_positions, strict=True)])
        stop = _stop_index(confidence, thresholds, agree)
        return float(correct[stop, columns].mean()), float(dim_sizes[stop].mean())

    accuracy, cost = score(positions)
    tolerance = 1e-12
    while True:
        best = None
        for dim_index in range(len(positions)):
            if positions[dim_index] + 1 >= len(grids[dim_index]):
                continue
            trial = positions.copy()
            trial[dim_index] += 1
            trial_accuracy, trial_cost = score(trial)
            if trial_accuracy < target_accuracy - tolerance:
                continue
            efficiency = (cost - trial_cost) / max(accuracy - trial_accuracy, tolerance)
            if best is None or efficiency > best[0]:
                best = (efficiency, trial, trial_accuracy, trial_cost)
        if best is None:
            break
        _, positions, accuracy, cost = best
    return np.array([grid[p] for grid, p in zip(grids, positions, strict=True)])


def _routing_report(logits: np.ndarray, labels: np.ndarray, dims: list[int], predictions, used_dims) -> dict:
    expected_dim = float(used_dims.mean())
    return {
        "accuracy": float((predictions == labels).mean()),
        "full_dim_accuracy": float((logits[-1].argmax(axis=-1) == labels).mean()),
        "expected_dim": expected_dim,
        "full_dim": dims[-1],
        "speedup": dims[-1] / expected_dim,
        "stop_share": {dim: float((used_dims == dim).mean()) for dim in dims},
    }


def evaluate_cascade(logits_per_dim, labels, dims: Sequence[int], thresholds, agreement: bool = False) -> dict:
    """The cascade on a (test) split: `accuracy`, `full_dim_accuracy` (the largest head alone),
    `expected_dim` (mean dims used), `full_dim`, `speedup` (full dim / expected dim), `stop_share`
    ({dim: share of inputs using that many dims}) and `thresholds` ({dim: threshold}, the last dim omitted)."""
    logits, labels, dims = _check_logits(logits_per_dim, labels, dims)
    predictions, used_dims = cascade_predict(logits, dims, thresholds, agreement)
    report = _routing_report(logits, labels, dims, predictions, used_dims)
    report["thresholds"] = {dim: float(t) for dim, t in zip(dims[:-1], thresholds, strict=True)}
    return report


def _check_routing_dims(dims: list[int], pair, route_to) -> tuple[int, int, int]:
    low, high = (dims[0], dims[1]) if pair is None else _pair(pair)
    route_to = dims[-1] if route_to is None else route_to
    for argument, dim in (("pair", low), ("pair", high), ("route_to", route_to)):
        if dim not in dims or isinstance(dim, bool):
            raise ValueError(f"`{argument}` must name nesting dims from {dims}, got {dim!r}.")
    if not low < high <= route_to:
        raise ValueError(f"Need pair[0] < pair[1] <= route_to, got pair=({low}, {high}) and route_to={route_to}.")
    return low, high, route_to


def _pair(pair) -> tuple:
    if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
        raise ValueError(f"`pair` must be two nesting dims (smaller first), got {pair!r}.")
    return tuple(pair)


def disagreement_predict(
    logits_per_dim, dims: Sequence[int], pair: Sequence[int] | None = None, route_to: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted classes (n,) and dims used (n,): where the heads at `pair` (default: the two smallest dims)
    agree, their class at a cost of pair[1] dims; elsewhere the head at `route_to` (default: the largest dim)."""
    logits, _, dims = _check_logits(logits_per_dim, None, dims)
    low, high, route_to = _check_routing_dims(dims, pair, route_to)
    predicted = logits.argmax(axis=-1)
    agree = predicted[dims.index(low)] == predicted[dims.index(high)]
    predictions = np.where(agree, predicted[dims.index(high)], predicted[dims.index(route_to)])
    return predictions, np.where(agree, high, route_to)


def evaluate_disagreement(
    logits_per_dim, labels, dims: Sequence[int], pair: Sequence[int] | None = None, route_to: int | None = None
) -> dict:
    """Disagreement routing on a (test) split: the keys of `evaluate_cascade` (no thresholds), plus `pair`,
    `route_to` and `agreement` (the share of inputs whose two heads agree)."""
    logits, labels, dims = _check_logits(logits_per_dim, labels, dims)
    low, high, route_to = _check_routing_dims(dims, pair, route_to)
    predictions, used_dims = disagreement_predict(logits, dims, (low, high), route_to)
    predicted = logits.argmax(axis=-1)
    agree = predicted[dims.index(low)] == predicted[dims.index(high)]
    report = _routing_report(logits, labels, dims, predictions, used_dims)
    report.update(pair=[low, high], route_to=route_to, agreement=float(agree.mean()))
    return report


def oracle_accuracy(logits_per_dim, labels, dims: Sequence[int]) -> float:
    """The share of inputs that at least one head gets right: the accuracy of a perfect router."""
    logits, labels, _ = _check_logits(logits_per_dim, labels, dims)
    return float((logits.argmax(axis=-1) == labels[None, :]).any(axis=0).mean())


class MatryoshkaCascade:
    """Adaptive classifier over nested heads: `fit` thresholds on validation logits, `predict` classes
    and stop dims, `report` accuracy / expected dims on test logits.

    Logits are `(num_dims, n, num_labels)` in ascending `dims` order: the `matryoshka_logits` of a
    Matryoshka classifier (e.g. `encode_dataset(model, dataset, collate_fn).matryoshka_logits` with
    `dims=model.config.matryoshka_dims`). `agreement=True`: a stop also needs the next dim's head to agree.
    """

    def __init__(self, dims: Sequence[int], agreement: bool = False):
        self.dims = _check_dims(dims)
        self.agreement = _check_agreement(agreement)
        self.thresholds: np.ndarray | None = None

    def fit(self, val_logits_per_dim, val_labels, target_accuracy: float | None = None, num_candidates: int = 50):
        """Fits the thresholds (see `fit_cascade_thresholds`); returns self."""
        self.thresholds = fit_cascade_thresholds(
            val_logits_per_dim, val_labels, self.dims, target_accuracy=target_accuracy, num_candidates=num_candidates,
            agreement=self.agreement,
        )
        return self

    def _fitted(self) -> np.ndarray:
        if self.thresholds is None:
            raise ValueError("This MatryoshkaCascade is not fitted yet: call `fit(val_logits_per_dim, val_labels)`.")
        return self.thresholds

    def predict(self, logits_per_dim) -> tuple[np.ndarray, np.ndarray]:
        """Predicted classes (n,) and the dims each input used (n,)."""
        return cascade_predict(logits_per_dim, self.dims, self._fitted(), self.agreement)

    def report(self, logits_per_dim, labels) -> dict:
        """`evaluate_cascade` with the fitted thresholds."""
        return evaluate_cascade(logits_per_dim, labels, self.dims, self._fitted(), self.agreement)
