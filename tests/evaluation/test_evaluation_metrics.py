"""Every metric against a naive pure-Python reference on seeded random data."""

import math
from collections import Counter

import numpy as np
import pytest

from hf_mrl.evaluation import metrics as M

# ---------------------------------------------------------------- naive references (one query at a time)


def naive_precision(ranked, relevant, k):
    return sum(1 for doc in ranked[:k] if doc in relevant) / k


def naive_recall(ranked, relevant, k):
    return sum(1 for doc in ranked[:k] if doc in relevant) / len(relevant) if relevant else 0.0


def naive_ap(ranked, relevant, k, variant):
    total, found = 0.0, 0
    for rank, doc in enumerate(ranked[:k], start=1):
        if doc in relevant:
            found += 1
            total += found / rank
    if variant == "mrl":
        return total / k
    return total / min(k, len(relevant)) if relevant else 0.0


def naive_ndcg(ranked, relevant, k):
    dcg = sum(1 / math.log2(rank + 1) for rank, doc in enumerate(ranked[:k], start=1) if doc in relevant)
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(k, len(relevant)) + 1))
    return dcg / ideal if ideal else 0.0


def naive_rr(ranked, relevant, k):
    for rank, doc in enumerate(ranked[:k], start=1):
        if doc in relevant:
            return 1 / rank
    return 0.0


def naive_mean(function, retrieved, relevant_sets, *args):
    return sum(
        function(list(row), rel, *args) for row, rel in zip(retrieved.tolist(), relevant_sets, strict=True)
    ) / len(relevant_sets)


def random_retrieval(seed, num_queries=40, corpus=60, width=12):
    rng = np.random.default_rng(seed)
    retrieved = np.stack([rng.permutation(corpus)[:width] for _ in range(num_queries)])
    retrieved[rng.random(retrieved.shape) < 0.05] = -1  # some missing results
    relevant_sets = [
        set(rng.choice(corpus, size=rng.integers(0, 15), replace=False).tolist()) for _ in range(num_queries)
    ]
    return retrieved, relevant_sets


def padded(relevant_sets):
    width = max(len(s) for s in relevant_sets)
    out = np.full((len(relevant_sets), width), -1)
    for row, ids in enumerate(relevant_sets):
        out[row, : len(ids)] = sorted(ids)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 5, 12, 15])
def test_retrieval_metrics_match_naive_reference(seed, k):
    retrieved, relevant_sets = random_retrieval(seed)
    for relevant in (relevant_sets, [list(s) for s in relevant_sets], padded(relevant_sets)):
        assert M.precision_at_k(retrieved, relevant, k) == pytest.approx(
            naive_mean(naive_precision, retrieved, relevant_sets, k)
        )
        assert M.recall_at_k(retrieved, relevant, k) == pytest.approx(
            naive_mean(naive_recall, retrieved, relevant_sets, k)
        )
        assert M.mrl_map_at_k(retrieved, relevant, k) == pytest.approx(
            naive_mean(naive_ap, retrieved, relevant_sets, k, "mrl")
        )
        assert M.ir_map_at_k(retrieved, relevant, k) == pytest.approx(
            naive_mean(naive_ap, retrieved, relevant_sets, k, "ir")
        )
        assert M.map_at_k(retrieved, relevant, k, variant="ir") == M.ir_map_at_k(retrieved, relevant, k)
        for variant in ("mrl", "ir"):
            expected = [naive_ap(row, rel, k, variant) for row, rel in zip(retrieved.tolist(), relevant_sets, strict=True)]
            np.testing.assert_allclose(M.average_precisions_at_k(retrieved, relevant, k, variant), expected)
        assert M.ndcg_at_k(retrieved, relevant, k) == pytest.approx(naive_mean(naive_ndcg, retrieved, relevant_sets, k))
        assert M.mrr(retrieved, relevant, k) == pytest.approx(naive_mean(naive_rr, retrieved, relevant_sets, k))


def test_hits_form_equals_ids_form():
    retrieved, relevant_sets = random_retrieval(3)
    hits, counts = M.relevance_from_ids(retrieved, relevant_sets)
    for metric in (M.precision_at_k, M.recall_at_k, M.mrl_map_at_k, M.ir_map_at_k, M.ndcg_at_k, M.mrr):
        assert metric(hits, counts, 7) == metric(retrieved, relevant_sets, 7)


def test_map_variants_differ_as_documented():
    # One query, relevant ids {0, 1}, both found at ranks 1 and 2: IR AP = 1, MRL AP = 2 / k.
    retrieved = np.array([[0, 1, 5, 6, 7]])
    assert M.ir_map_at_k(retrieved, [{0, 1}], 5) == pytest.approx(1.0)
    assert M.mrl_map_at_k(retrieved, [{0, 1}], 5) == pytest.approx(2 / 5)


def test_relevance_from_labels_excludes_the_query_itself():
    rng = np.random.default_rng(4)
    corpus_labels = rng.integers(0, 5, size=50)
    query_ids = np.arange(10)
    retrieved = np.stack([rng.permutation(50)[:8] for _ in range(10)])
    hits, counts = M.relevance_from_labels(retrieved, corpus_labels[query_ids], corpus_labels, query_ids=query_ids)
    for row, query in enumerate(query_ids):
        same = {doc for doc in range(50) if corpus_labels[doc] == corpus_labels[query] and doc != query}
        assert counts[row] == len(same)
        assert hits[row].tolist() == [int(doc) in same for doc in retrieved[row]]


def test_relevance_from_labels_unknown_query_label_has_no_relevant():
    hits, counts = M.relevance_from_labels(np.array([[0, 1]]), np.array([9]), np.array([0, 1, 1]))
    assert counts.tolist() == [0] and not hits.any()


def test_remove_ids_shifts_and_pads():
    out = M.remove_ids(np.array([[3, 1, 2], [4, 5, 6]]), np.array([1, 9]))
    assert out.tolist() == [[3, 2, -1], [4, 5, 6]]


def test_top_k_ids_breaks_ties_by_lower_id():
    scores = np.array([[0.5, 0.9, 0.5, 0.9, 0.1]])
    assert M.top_k_ids(scores, 4).tolist() == [[1, 3, 0, 2]]
    assert M.top_k_ids(scores, 99).shape == (1, 5)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_top_k_accuracy_matches_naive_reference(seed, k):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 4, size=(60, 6)).astype(float)  # many ties on purpose
    labels = rng.integers(0, 6, size=60)

    def naive(row, label):
        order = sorted(range(6), key=lambda c: (-row[c], c))
        return label in order[:k]

    expected = sum(naive(row, label) for row, label in zip(scores.tolist(), labels.tolist(), strict=True)) / 60
    assert M.top_k_accuracy(scores, labels, k) == pytest.approx(expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 2, 4, 7])
def test_knn_accuracy_matches_naive_reference(seed, k):
    rng = np.random.default_rng(seed)
    neighbor_labels = rng.integers(-1, 4, size=(80, 7))  # -1 = missing neighbour
    labels = rng.integers(0, 4, size=80)

    def naive(row):
        votes = Counter(label for label in row[:k] if label >= 0)
        if not votes:
            return -1
        best = max(votes.values())
        return next(label for label in row[:k] if votes.get(label) == best)

    expected = (
        sum(naive(row) == label for row, label in zip(neighbor_labels.tolist(), labels.tolist(), strict=True)) / 80
    )
    assert M.knn_accuracy(neighbor_labels, labels, k) == pytest.approx(expected)


def test_knn_tie_goes_to_nearest_class():
    assert M.knn_accuracy(np.array([[2, 1, 1, 2]]), np.array([2]), 4) == 1.0
    assert M.knn_accuracy(np.array([[1, 2, 1, 2]]), np.array([2]), 4) == 0.0


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_bad_k_is_rejected(k):
    with pytest.raises(ValueError, match="`k` must be a positive integer"):
        M.precision_at_k(np.zeros((2, 3), dtype=int), [[0], [1]], k)
    with pytest.raises(ValueError, match="`k`"):
        M.top_k_accuracy(np.zeros((2, 3)), np.array([0, 1]), k)


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="`relevant_ids` has 1 entries"):
        M.recall_at_k(np.zeros((2, 3), dtype=int), [[0]], 2)
    with pytest.raises(ValueError, match="relevant counts"):
        M.recall_at_k(np.zeros((2, 3), dtype=bool), np.array([1, 2, 3]), 2)
    with pytest.raises(ValueError, match="2-D"):
        M.ndcg_at_k(np.zeros(3, dtype=int), [[0]], 2)
    with pytest.raises(ValueError, match="`labels` must have shape"):
        M.knn_accuracy(np.zeros((2, 3), dtype=int), np.array([0]), 1)
    with pytest.raises(ValueError, match="neighbours given"):
        M.knn_accuracy(np.zeros((2, 3), dtype=int), np.array([0, 1]), 4)
    with pytest.raises(ValueError, match="`labels` must lie"):
        M.top_k_accuracy(np.zeros((2, 3)), np.array([0, 3]), 1)
    with pytest.raises(ValueError, match="`variant`"):
        M.map_at_k(np.zeros((1, 2), dtype=int), [[0]], 2, variant="trec")
    with pytest.raises(ValueError, match="outside the corpus"):
        M.relevance_from_labels(np.array([[5]]), np.array([0]), np.array([0, 1]))


def test_pareto_optimal_against_naive_dominance():
    rng = np.random.default_rng(0)
    for _ in range(50):
        scores = rng.integers(0, 5, (int(rng.integers(1, 20)), int(rng.integers(1, 4)))).astype(float)
        naive = [not any((other >= row).all() and (other > row).any() for other in scores) for row in scores]
        assert M.pareto_optimal(scores).tolist() == naive
    assert M.pareto_optimal([[1.0, 2.0], [1.0, 2.0]]).tolist() == [True, True]  # equal rows: both kept
    with pytest.raises(ValueError, match=r"`scores` must be 2-D"):
        M.pareto_optimal([1.0, 2.0])


def test_standard_error_is_the_sample_deviation_over_root_n():
    values = [0.1, 0.4, 0.4, 0.9]
    mean = sum(values) / 4
    expected = math.sqrt(sum((v - mean) ** 2 for v in values) / 3) / 2
    assert M.standard_error(values) == pytest.approx(expected)
    assert M.standard_error([0.3]) == 0.0 and M.standard_error([]) == 0.0
