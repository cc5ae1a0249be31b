"""Retrieval and classification metrics: small pure-numpy functions over arrays.

Retrieval metrics take ranked results and the relevance of each query, in one of two forms:

- ids: `retrieved` is an int array (num_queries, K) of corpus ids, best first (faiss order; -1 marks
  "no result" and never counts as relevant), and `relevant` gives the relevant corpus ids of each
  query: an int array (num_queries, R) padded with -1, or a sequence of num_queries id collections.
  Example: recall of an approximate index against exact search is
  `recall_at_k(ann_ids, exact_ids[:, :k], k)`.
- hits: `retrieved` is a bool array (num_queries, K), True where the result at that rank is
  relevant, and `relevant` is an int array (num_queries,) holding how many relevant items each query
  has in the whole corpus (see `relevance_from_labels` for label-based relevance).

Every metric is averaged over queries. A query with no relevant item scores 0 on every metric
(it is kept in the mean, not skipped). Ranks are taken in the order given: exact ties between
scores are whatever order the search returned; `top_k_ids` breaks them by lower id first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..modeling.checks import check_positive_int

__all__ = [
    "top_k_ids",
    "relevance_from_ids",
    "relevance_from_labels",
    "remove_ids",
    "precision_at_k",
    "recall_at_k",
    "average_precisions_at_k",
    "standard_error",
    "map_at_k",
    "mrl_map_at_k",
    "ir_map_at_k",
    "ndcg_at_k",
    "mrr",
    "top_k_accuracy",
    "knn_accuracy",
    "pareto_optimal",
]

MAP_VARIANTS = ("mrl", "ir")


def _check_2d(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim != 2:
        raise ValueError(f"`{name}` must be 2-D (num_queries, K), got shape {array.shape}.")
    return array


def top_k_ids(scores: np.ndarray, k: int) -> np.ndarray:
    """Ids (num_queries, k) of the k highest scores per row of `scores` (num_queries, N), best first;
    ties go to the lower id (stable sort on descending score). `k` above N is clipped to N."""
    scores = _check_2d(np.asarray(scores), "scores")
    k = min(check_positive_int(k, "k"), scores.shape[1])
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def relevance_from_ids(retrieved_ids: np.ndarray, relevant_ids) -> tuple[np.ndarray, np.ndarray]:
    """Hits (num_queries, K) bool and relevant counts (num_queries,) from explicit relevant ids per query:
    an int array (num_queries, R) padded with -1, or a sequence of num_queries id collections."""
    retrieved_ids = _check_2d(np.asarray(retrieved_ids), "retrieved_ids")
    num_queries = retrieved_ids.shape[0]
    if isinstance(relevant_ids, np.ndarray) and relevant_ids.ndim == 2:
        if relevant_ids.shape[0] != num_queries:
            raise ValueError(
                f"`relevant_ids` has {relevant_ids.shape[0]} rows but `retrieved_ids` has {num_queries} queries."
            )
        relevant_sets = [row[row >= 0] for row in relevant_ids]
    else:
        if isinstance(relevant_ids, (str, bytes)) or not isinstance(relevant_ids, (Sequence, np.ndarray)):
            raise ValueError(
                "`relevant_ids` must be an int array (num_queries, R) padded with -1 or a sequence of id "
                f"collections, got {type(relevant_ids).__name__}."
            )
        if len(relevant_ids) != num_queries:
            raise ValueError(
                f"`relevant_ids` has {len(relevant_ids)} entries but `retrieved_ids` has {num_queries} queries."
            )
        relevant_sets = [np.asarray(list(ids), dtype=np.int64) for ids in relevant_ids]
    hits = np.zeros(retrieved_ids.shape, dtype=bool)
    num_relevant = np.zeros(num_queries, dtype=np.int64)
    for row, ids in enumerate(relevant_sets):
        ids = np.unique(ids[ids >= 0]) if ids.size else ids
        num_relevant[row] = ids.size
        hits[row] = np.isin(retrieved_ids[row], ids) & (retrieved_ids[row] >= 0)
    return hits, num_relevant


def relevance_from_labels(
    retrieved_ids: np.ndarray,
    query_labels: np.ndarray,
    corpus_labels: np.ndarray,
    query_ids: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Hits (num_queries, K) and relevant counts (num_queries,): a corpus item is relevant when its label
    equals the query's. `query_ids` (num_queries,), when queries are corpus items, are the queries' own
    corpus ids: the query itself is then neither a hit nor counted as relevant."""
    retrieved_ids = _check_2d(np.asarray(retrieved_ids), "retrieved_ids")
    query_labels, corpus_labels = np.asarray(query_labels), np.asarray(corpus_labels)
    num_queries = retrieved_ids.shape[0]
    if query_labels.shape != (num_queries,):
        raise ValueError(f"`query_labels` must have shape ({num_queries},), got {query_labels.shape}.")
    if corpus_labels.ndim != 1:
        raise ValueError(f"`corpus_labels` must be 1-D, got shape {corpus_labels.shape}.")
    if retrieved_ids.size and retrieved_ids.max() >= len(corpus_labels):
        raise ValueError(
            f"`retrieved_ids` holds id {retrieved_ids.max()}, outside the corpus of {len(corpus_labels)} items."
        )
    valid = retrieved_ids >= 0
    hits = valid & (corpus_labels[np.where(valid, retrieved_ids, 0)] == query_labels[:, None])
    classes, corpus_codes = np.unique(corpus_labels, return_inverse=True)
    class_sizes = np.bincount(corpus_codes, minlength=len(classes))
    positions = np.searchsorted(classes, query_labels).clip(max=max(len(classes) - 1, 0))
    known = classes[positions] == query_labels if len(classes) else np.zeros(num_queries, dtype=bool)
    num_relevant = np.where(known, class_sizes[positions], 0).astype(np.int64)
    if query_ids is not None:
        query_ids = np.asarray(query_ids)
        if query_ids.shape != (num_queries,):
            raise ValueError(f"`query_ids` must have shape ({num_queries},), got {query_ids.shape}.")
        hits &= retrieved_ids != query_ids[:, None]
        in_corpus = (query_ids >= 0) & (query_ids < len(corpus_labels))
        own_label = corpus_labels[np.where(in_corpus, query_ids, 0)]
        num_relevant -= (in_corpus & (own_label == query_labels)).astype(np.int64)
    return hits, num_relevant


def remove_ids(retrieved_ids: np.ndarray, ids_to_remove: np.ndarray) -> np.ndarray:
    """`retrieved_ids` (num_queries, K) with each row's `ids_to_remove[row]` dropped, later results moved up
    and the freed slots at the end set to -1 (for queries that are themselves in the corpus)."""
    retrieved_ids = _check_2d(np.asarray(retrieved_ids), "retrieved_ids")
    ids_to_remove = np.asarray(ids_to_remove)
    if ids_to_remove.shape != (retrieved_ids.shape[0],):
        raise ValueError(f"`ids_to_remove` must have shape ({retrieved_ids.shape[0]},), got {ids_to_remove.shape}.")
    keep = retrieved_ids != ids_to_remove[:, None]
    # A stable sort on "not kept" moves kept entries to the front in their original order.
    order = np.argsort(~keep, axis=1, kind="stable")
    moved = np.take_along_axis(retrieved_ids, order, axis=1)
    return np.where(np.take_along_axis(keep, order, axis=1), moved, -1)


def _hits_at_k(retrieved, relevant, k) -> tuple[np.ndarray, np.ndarray, int]:
    """Both input forms -> hits (num_queries, k) (padded with False when fewer than k results), counts."""
    k = check_positive_int(k, "k")
    retrieved = _check_2d(np.asarray(retrieved), "retrieved")
    if retrieved.dtype == bool:
        hits = retrieved
        num_relevant = np.asarray(relevant)
        if num_relevant.shape != (hits.shape[0],):
            raise ValueError(
                f"With boolean hits, `relevant` must be the relevant counts, shape ({hits.shape[0]},); "
                f"got shape {num_relevant.shape}."
            )
        if (num_relevant < hits.sum(axis=1)).any():
            raise ValueError("`relevant` counts must be at least the number of hits in each row.")
    elif np.issubdtype(retrieved.dtype, np.integer):
        hits, num_relevant = relevance_from_ids(retrieved, relevant)
    else:
        raise ValueError(f"`retrieved` must hold int ids or bool hits, got dtype {retrieved.dtype}.")
    hits = hits[:, :k]
    if hits.shape[1] < k:
        hits = np.pad(hits, ((0, 0), (0, k - hits.shape[1])))
    return hits, num_relevant.astype(np.float64), k


def precision_at_k(retrieved, relevant, k: int) -> float:
    """Mean over queries of (relevant results among the first k) / k; missing results count as misses."""
    hits, _, k = _hits_at_k(retrieved, relevant, k)
    return float(hits.sum(axis=1).mean() / k) if len(hits) else 0.0


def recall_at_k(retrieved, relevant, k: int) -> float:
    """Mean over queries of (relevant results among the first k) / (relevant items of the query)."""
    hits, num_relevant, _ = _hits_at_k(retrieved, relevant, k)
    found = hits.sum(axis=1)
    return float(np.mean(np.divide(found, num_relevant, out=np.zeros_like(num_relevant), where=num_relevant > 0)))


def average_precisions_at_k(retrieved, relevant, k: int, variant: str = "mrl") -> np.ndarray:
    """Each query's average precision at k (float64 (nq,)), the terms `map_at_k` averages; `variant` as there. Their
    spread gives the standard error of a mAP (`score_results`' `map@k_stderr`)."""
    if variant not in MAP_VARIANTS:
        raise ValueError(f"`variant` must be one of {list(MAP_VARIANTS)}, got {variant!r}.")
    hits, num_relevant, k = _hits_at_k(retrieved, relevant, k)
    precision_at_rank = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    summed = (precision_at_rank * hits).sum(axis=1)
    if variant == "mrl":
        return summed / k
    denominator = np.minimum(num_relevant, k)
    return np.divide(summed, denominator, out=np.zeros_like(summed), where=denominator > 0)


def standard_error(values) -> float:
    """Standard error of the mean of `values` (sample standard deviation / sqrt(n)); 0.0 for fewer than two."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def map_at_k(retrieved, relevant, k: int, variant: str = "mrl") -> float:
    """Mean average precision at k; `variant` picks the normaliser of each query's sum of precision@i
    over its relevant ranks i <= k: "mrl" divides by k (the MRL paper's mAP@k), "ir" by min(k, relevant)."""
    per_query = average_precisions_at_k(retrieved, relevant, k, variant)
    return float(per_query.mean()) if len(per_query) else 0.0


def mrl_map_at_k(retrieved, relevant, k: int) -> float:
    """The MRL paper's mAP@k: per query, the sum of precision@i over relevant ranks i <= k, divided by k."""
    return map_at_k(retrieved, relevant, k, variant="mrl")


def ir_map_at_k(retrieved, relevant, k: int) -> float:
    """The IR-standard mAP@k: per query, the sum of precision@i over relevant ranks i <= k, divided by
    min(k, number of relevant items)."""
    return map_at_k(retrieved, relevant, k, variant="ir")


def ndcg_at_k(retrieved, relevant, k: int) -> float:
    """Mean binary nDCG@k: sum of 1/log2(rank+1) over relevant ranks <= k, over the same sum for an ideal
    ranking of min(k, relevant) hits."""
    hits, num_relevant, k = _hits_at_k(retrieved, relevant, k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discounts).sum(axis=1)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[np.minimum(num_relevant, k).astype(np.int64)]
    return float(np.mean(np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0))) if len(dcg) else 0.0


def mrr(retrieved, relevant, k: int | None = None) -> float:
    """Mean reciprocal rank of the first relevant result within the first k (all results when None); 0 if none."""
    hits, _, _ = _hits_at_k(retrieved, relevant, np.asarray(retrieved).shape[-1] if k is None else k)
    first = hits.argmax(axis=1)
    reciprocal = np.where(hits.any(axis=1), 1.0 / (first + 1), 0.0)
    return float(reciprocal.mean()) if len(reciprocal) else 0.0


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    """Share of rows of `scores` (n, num_classes) whose true class (`labels` (n,)) ranks in the top k; ties
    rank the lower class index first (as `argmax` does)."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.ndim != 2:
        raise ValueError(f"`scores` must be 2-D (n, num_classes), got shape {scores.shape}.")
    if labels.shape != (scores.shape[0],):
        raise ValueError(f"`labels` must have shape ({scores.shape[0]},), got {labels.shape}.")
    k = check_positive_int(k, "k")
    if not np.isfinite(scores).all():
        raise ValueError(f"`scores` holds NaN or inf values (first in row {int(np.argwhere(~np.isfinite(scores))[0, 0])}); "
                         "scores must be finite.")
    if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"`labels` must lie in [0, {scores.shape[1] - 1}], got values {labels.min()}..{labels.max()}.")
    if not len(labels):
        return 0.0
    true_score = scores[np.arange(len(labels)), labels][:, None]
    lower_index = np.arange(scores.shape[1])[None, :] < labels[:, None]
    rank = (scores > true_score).sum(axis=1) + ((scores == true_score) & lower_index).sum(axis=1)
    return float((rank < k).mean())


def knn_accuracy(neighbor_labels: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Accuracy of a majority vote over the first k of `neighbor_labels` (n, K), nearest first, against
    `labels` (n,). Ties between classes go to the class whose nearest member ranks first (so k=2 falls
    back to 1-NN); negative labels mark missing neighbours and do not vote."""
    neighbor_labels, labels = np.asarray(neighbor_labels), np.asarray(labels)
    neighbor_labels = _check_2d(neighbor_labels, "neighbor_labels")
    if labels.shape != (neighbor_labels.shape[0],):
        raise ValueError(f"`labels` must have shape ({neighbor_labels.shape[0]},), got {labels.shape}.")
    k = check_positive_int(k, "k")
    if k > neighbor_labels.shape[1]:
        raise ValueError(f"`k`={k} is more than the {neighbor_labels.shape[1]} neighbours given.")
    if not len(labels):
        return 0.0
    votes_for = neighbor_labels[:, :k]
    classes, codes = np.unique(votes_for, return_inverse=True)
    codes = codes.reshape(votes_for.shape)
    num_rows, num_classes = votes_for.shape[0], len(classes)
    valid = votes_for >= 0
    counts = np.zeros((num_rows, num_classes), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(num_rows), k), codes.ravel()), valid.ravel().astype(np.int64))
    first_rank = np.full((num_rows, num_classes), k, dtype=np.int64)
    ranks = np.broadcast_to(np.arange(k), votes_for.shape)
    np.minimum.at(first_rank, (np.repeat(np.arange(num_rows), k), codes.ravel()), np.where(valid, ranks, k).ravel())
    # More votes wins; among equal votes the earlier first occurrence wins.
    preference = counts * (k + 1) + (k - first_rank)
    winner = preference.argmax(axis=1)
    predicted = np.where(counts[np.arange(num_rows), winner] > 0, classes[winner], -1)
    return float(((predicted == labels) & (predicted >= 0)).mean())


def pareto_optimal(scores) -> np.ndarray:
    """Bool mask (n,) of the rows of `scores` (n, m), higher is better in every column, that no other row
    dominates (at least as good in every column, better in one); equal rows are all kept. Negate a column
    where lower is better (a cost)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"`scores` must be 2-D (n, m), got shape {scores.shape}.")
    return np.array([
        not ((scores >= row).all(axis=1) & (scores > row).any(axis=1)).any() for row in scores
    ], dtype=bool)
