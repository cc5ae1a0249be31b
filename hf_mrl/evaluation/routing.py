"""Routing over the nested heads compared at equal cost: every head alone, the confidence cascade, disagreement
routing, and the cascade with agreement checks, as (expected dims, accuracy) points on a test split.

Cascades are fit on a validation split for a range of targets (the full-dim head's validation accuracy minus
each of `target_drops`); disagreement routing has no thresholds, so every (pair, route_to) with route_to above
the pair is one point.
`accuracy_at_budget` reads a method's best accuracy within a budget of expected dims, which compares methods
at equal expected dims.
"""

from __future__ import annotations

from collections.abc import Sequence

from .adaptive import (
    _check_logits,
    evaluate_cascade,
    evaluate_disagreement,
    fit_cascade_thresholds,
    oracle_accuracy,
)
from .metrics import pareto_optimal

__all__ = ["ROUTING_METHODS", "accuracy_at_budget", "cost_accuracy_envelope", "routing_tradeoffs"]

ROUTING_METHODS = ("single head", "cascade", "disagreement", "cascade + agreement")
DEFAULT_TARGET_DROPS = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08)


def routing_tradeoffs(
    val_logits_per_dim,
    val_labels,
    test_logits_per_dim,
    test_labels,
    dims: Sequence[int],
    target_drops: Sequence[float] = DEFAULT_TARGET_DROPS,
) -> dict:
    """{"points": {method: [{"expected_dim", "accuracy", ...setting}]}, "oracle_accuracy", "full_dim_accuracy"}
    on the test split, for the methods of `ROUTING_METHODS`; logits (num_dims, n, num_labels) in ascending `dims`."""
    val_logits, val_labels, dims = _check_logits(val_logits_per_dim, val_labels, dims)
    test_logits, test_labels, _ = _check_logits(test_logits_per_dim, test_labels, dims)
    if val_logits.shape[2] != test_logits.shape[2]:
        raise ValueError(
            f"Validation logits have {val_logits.shape[2]} labels but test logits have {test_logits.shape[2]}."
        )
    if isinstance(target_drops, (str, bytes)) or not target_drops or not all(
        isinstance(drop, (int, float)) and not isinstance(drop, bool) and 0 <= drop <= 1 for drop in target_drops
    ):
        raise ValueError(f"`target_drops` must be a non-empty list of numbers in [0, 1], got {target_drops!r}.")
    val_full = float((val_logits[-1].argmax(-1) == val_labels).mean())
    points: dict[str, list[dict]] = {method: [] for method in ROUTING_METHODS}
    for index, dim in enumerate(dims):
        accuracy = float((test_logits[index].argmax(-1) == test_labels).mean())
        points["single head"].append({"expected_dim": float(dim), "accuracy": accuracy, "dim": dim})
    for method, agreement in (("cascade", False), ("cascade + agreement", True)):
        for drop in target_drops:
            target = max(0.0, val_full - drop)
            thresholds = fit_cascade_thresholds(val_logits, val_labels, dims, target_accuracy=target, agreement=agreement)
            report = evaluate_cascade(test_logits, test_labels, dims, thresholds, agreement=agreement)
            points[method].append(
                {"expected_dim": report["expected_dim"], "accuracy": report["accuracy"], "target_drop": float(drop)}
            )
    for low_index, low in enumerate(dims[:-1]):
        for high_index in range(low_index + 1, len(dims)):
            for route_to in dims[high_index + 1 :]:  # routing to pair[1] itself would be that head alone
                report = evaluate_disagreement(test_logits, test_labels, dims, (low, dims[high_index]), route_to)
                points["disagreement"].append({
                    "expected_dim": report["expected_dim"], "accuracy": report["accuracy"],
                    "pair": report["pair"], "route_to": route_to, "agreement": report["agreement"],
                })
    return {
        "points": points,
        "oracle_accuracy": oracle_accuracy(test_logits, test_labels, dims),
        "full_dim_accuracy": float((test_logits[-1].argmax(-1) == test_labels).mean()),
        "dims": dims,
    }


def accuracy_at_budget(points: Sequence[dict], budget: float) -> float | None:
    """The best `accuracy` among `points` whose `expected_dim` is at most `budget` (None when none is)."""
    within = [point["accuracy"] for point in points if point["expected_dim"] <= budget + 1e-9]
    return max(within) if within else None


def cost_accuracy_envelope(points: Sequence[dict]) -> list[tuple[float, float]]:
    """(expected_dim, accuracy) of the points no cheaper point beats, ascending in cost (for plots): the Pareto
    front of (cost, accuracy), each point once."""
    pairs = [(point["expected_dim"], point["accuracy"]) for point in points]
    if not pairs:
        return []
    front = pareto_optimal([(-cost, accuracy) for cost, accuracy in pairs])
    return sorted(dict.fromkeys(pair for pair, kept in zip(pairs, front, strict=True) if kept))
