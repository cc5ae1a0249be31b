"""Disagreement routing and the cascade with agreement checks: synthetic heads with known answers, a naive
per-input reference, and the comparison at equal expected dims."""

import numpy as np
import pytest

from hf_mrl.evaluation import (
    MatryoshkaCascade,
    accuracy_at_budget,
    cascade_predict,
    cost_accuracy_envelope,
    disagreement_predict,
    evaluate_cascade,
    evaluate_disagreement,
    fit_cascade_thresholds,
    oracle_accuracy,
    routing_tradeoffs,
)

DIMS = [8, 16, 32]


def one_hot_logits(predicted, confidence, num_labels=4):
    """(n, num_labels) logits whose argmax is `predicted`, sharper where `confidence` is high."""
    logits = np.zeros((len(predicted), num_labels))
    logits[np.arange(len(predicted)), predicted] = confidence
    return logits


def heads(predictions, confidences):
    return np.stack([one_hot_logits(p, c) for p, c in zip(predictions, confidences)])


def naive_disagreement(logits, dims, pair, route_to):
    predictions, used = [], []
    for row in range(logits.shape[1]):
        low = logits[dims.index(pair[0]), row].argmax()
        high = logits[dims.index(pair[1]), row].argmax()
        if low == high:
            predictions.append(high)
            used.append(pair[1])
        else:
            predictions.append(logits[dims.index(route_to), row].argmax())
            used.append(route_to)
    return np.array(predictions), np.array(used)


def test_disagreement_routing_matches_a_naive_reference():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 200, 4))
    for pair, route_to in (((8, 16), 32), ((8, 32), 32), ((16, 32), 32), ((8, 16), 16)):
        predictions, used = disagreement_predict(logits, DIMS, pair, route_to)
        expected_predictions, expected_used = naive_disagreement(logits, DIMS, pair, route_to)
        np.testing.assert_array_equal(predictions, expected_predictions)
        np.testing.assert_array_equal(used, expected_used)


def test_disagreement_report_on_known_heads():
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    low = np.array([0, 1, 2, 3, 1, 2, 2, 3])  # rows 4, 5 wrong at 8
    mid = np.array([0, 1, 2, 0, 0, 2, 3, 3])  # disagrees with 8 on rows 3, 4, 6
    full = labels.copy()
    logits = heads([low, mid, full], [np.ones(8)] * 3)
    report = evaluate_disagreement(logits, labels, DIMS)  # pair (8, 16), route to 32
    # Agree on rows 0, 1, 2, 5, 7 (row 5 agreeing on a wrong class); rows 3, 4, 6 go to 32 and are right.
    assert report["agreement"] == 5 / 8
    assert report["accuracy"] == 7 / 8
    assert report["expected_dim"] == pytest.approx((5 * 16 + 3 * 32) / 8)
    assert report["stop_share"] == {8: 0.0, 16: 5 / 8, 32: 3 / 8}
    assert report["full_dim_accuracy"] == 1.0 and report["pair"] == [8, 16] and report["route_to"] == 32
    assert oracle_accuracy(logits, labels, DIMS) == 1.0
    wrong_everywhere = heads([(labels + 1) % 4] * 3, [np.ones(8)] * 3)
    assert oracle_accuracy(wrong_everywhere, labels, DIMS) == 0.0


def test_agreement_cascade_stops_only_where_the_next_head_agrees():
    labels = np.zeros(6, dtype=int)
    low = np.array([0, 0, 1, 1, 0, 0])  # confident everywhere; wrong on rows 2, 3
    mid = np.array([0, 0, 0, 0, 1, 0])
    full = labels.copy()
    logits = heads([low, mid, full], [np.full(6, 8.0), np.full(6, 8.0), np.full(6, 8.0)])
    thresholds = np.array([0.5, 0.5])
    predictions, used = cascade_predict(logits, DIMS, thresholds)  # plain cascade: everyone stops at 8
    assert (used == 8).all() and (predictions == low).all()
    predictions, used = cascade_predict(logits, DIMS, thresholds, agreement=True)
    # Rows 0, 1, 5: 8 agrees with 16 -> stop at 8, reading 16. Rows 2, 3: disagree at 8; 16 agrees with 32 -> read 32.
    # Row 4: 8 disagrees with 16 and 16 disagrees with 32 -> the last head.
    np.testing.assert_array_equal(used, [16, 16, 32, 32, 32, 16])
    np.testing.assert_array_equal(predictions, [0, 0, 0, 0, 0, 0])
    report = evaluate_cascade(logits, labels, DIMS, thresholds, agreement=True)
    assert report["accuracy"] == 1.0 and report["expected_dim"] == pytest.approx((3 * 16 + 3 * 32) / 6)
    cascade = MatryoshkaCascade(DIMS, agreement=True).fit(logits, labels)
    assert cascade.report(logits, labels)["accuracy"] == 1.0
    # The fit reaches the target with the cheapest stops the agreement rule allows.
    fitted = fit_cascade_thresholds(logits, labels, DIMS, agreement=True)
    assert evaluate_cascade(logits, labels, DIMS, fitted, agreement=True)["expected_dim"] == pytest.approx(24.0)


def test_tradeoffs_compare_methods_at_equal_expected_dims():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, size=400)
    # Each head is right with a probability growing with the dim; confidence is higher when right.
    logits = []
    for chance in (0.6, 0.75, 0.9):
        right = rng.random(400) < chance
        predicted = np.where(right, labels, (labels + 1 + rng.integers(0, 3, size=400)) % 4)
        logits.append(one_hot_logits(predicted, np.where(right, 3.0, 1.0) + rng.random(400)))
    logits = np.stack(logits)
    tradeoffs = routing_tradeoffs(logits[:, :200], labels[:200], logits[:, 200:], labels[200:], DIMS)
    points = tradeoffs["points"]
    assert [point["dim"] for point in points["single head"]] == DIMS
    assert [(p["pair"], p["route_to"]) for p in points["disagreement"]] == [([8, 16], 32)]  # others: one head alone
    assert len(points["cascade"]) == len(points["cascade + agreement"]) == 7
    for method_points in points.values():
        for point in method_points:
            assert 8 <= point["expected_dim"] <= 32 and 0 <= point["accuracy"] <= tradeoffs["oracle_accuracy"]
    full = tradeoffs["full_dim_accuracy"]
    assert accuracy_at_budget(points["single head"], 32) >= full
    assert accuracy_at_budget(points["single head"], 7) is None
    envelope = cost_accuracy_envelope(points["cascade"])
    assert [cost for cost, _ in envelope] == sorted(cost for cost, _ in envelope)
    assert [accuracy for _, accuracy in envelope] == sorted(accuracy for _, accuracy in envelope)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"pair": (8, 12)}, r"`pair` must name nesting dims from \[8, 16, 32\], got 12"),
        ({"pair": (16, 8)}, r"Need pair\[0\] < pair\[1\] <= route_to, got pair=\(16, 8\)"),
        ({"pair": (8, 32), "route_to": 16}, r"Need pair\[0\] < pair\[1\] <= route_to"),
        ({"pair": 8}, r"`pair` must be two nesting dims"),
        ({"route_to": 64}, r"`route_to` must name nesting dims from \[8, 16, 32\], got 64"),
    ],
)
def test_bad_routing_arguments_are_rejected(arguments, message):
    logits = np.zeros((3, 5, 4))
    with pytest.raises(ValueError, match=message):
        evaluate_disagreement(logits, np.zeros(5, dtype=int), DIMS, **arguments)


def test_bad_agreement_and_target_drops_are_rejected():
    logits = np.zeros((3, 5, 4))
    with pytest.raises(ValueError, match=r"`agreement` must be True or False, got 'yes'"):
        cascade_predict(logits, DIMS, [0.5, 0.5], agreement="yes")
    with pytest.raises(ValueError, match=r"`target_drops` must be a non-empty list of numbers in \[0, 1\]"):
        routing_tradeoffs(logits, np.zeros(5, int), logits, np.zeros(5, int), DIMS, target_drops=[2.0])
