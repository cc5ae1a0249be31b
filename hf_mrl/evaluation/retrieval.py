"""Retrieval at every Matryoshka granularity from one encoding pass.

Per dim k, queries search the corpus with the first k features (renormalised, cosine via faiss inner
product; exact or approximate) and the ranked lists are scored against relevance given either by labels
(same label = relevant) or by explicit query -> relevant corpus rows.

The primary metric is nDCG@k (as sentence-transformers' InformationRetrievalEvaluator reports it). Two mAP@k
variants are reported under different keys:
- `mrl_map@k`: the MRL paper's (its ImageNet retrieval code): per query, the sum of precision@i over the
  relevant ranks i <= k, divided by k. It cannot reach 1 when a query has fewer than k relevant items: with one
  relevant item per query it is at most 1/k (0.0014 where ir_map is 0.014). Kept to compare with the paper.
- `ir_map@k`: the IR-standard one: the same sum divided by min(k, number of relevant items).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..modeling.checks import check_positive_ints
from ..modeling.nesting import resolve_dims
from .base import (
    SEARCH_MODES,
    MatryoshkaEvaluator,
    build_search_index,
    check_not_empty,
    collator_from_model,
    encode_dataset,
    per_dim_embeddings,
    run_search,
)
from .metrics import (
    ir_map_at_k,
    mrl_map_at_k,
    mrr,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    relevance_from_ids,
    relevance_from_labels,
    remove_ids,
)

__all__ = ["MatryoshkaRetrievalEvaluator", "retrieval_metrics", "RETRIEVAL_METRICS"]

RETRIEVAL_METRICS = ("mrl_map", "ir_map", "precision", "recall", "ndcg", "mrr")


def _relevant_lists(relevant_ids, num_queries: int) -> list[np.ndarray]:
    """Explicit relevance as one int array of corpus rows per query, from a dict {query row: ids},
    a sequence of id collections, or an int array (num_queries, R) padded with -1."""
    if isinstance(relevant_ids, Mapping):
        bad = [key for key in relevant_ids if not isinstance(key, (int, np.integer)) or not 0 <= key < num_queries]
        if bad:
            raise ValueError(f"`relevant_ids` keys must be query rows from 0 to {num_queries - 1}, got {bad[:5]}.")
        rows = [relevant_ids.get(row, ()) for row in range(num_queries)]
    else:
        if isinstance(relevant_ids, (str, bytes)) or len(relevant_ids) != num_queries:
            raise ValueError(
                f"`relevant_ids` must give relevant corpus rows for each of the {num_queries} queries, "
                f"got {type(relevant_ids).__name__} of length {len(relevant_ids)}."
            )
        rows = relevant_ids
    lists = [np.asarray(list(ids), dtype=np.int64).reshape(-1) for ids in rows]
    return [ids[ids >= 0] for ids in lists]


def retrieval_metrics(
    query_embeddings,
    corpus_embeddings=None,
    dims: Sequence[int] | None = None,
    query_labels=None,
    corpus_labels=None,
    relevant_ids=None,
    ks: Sequence[int] = (10,),
    search: str = "exact",
    search_params: Mapping | None = None,
    name: str = "retrieval",
) -> dict[str, float]:
    """Per-dim retrieval metrics of precomputed embeddings, keyed `{name}_dim{k}_{metric}@{K}`.

    query_embeddings / corpus_embeddings: (n, d) full embeddings or {dim: (n, dim)}; no corpus means the
        queries are the corpus, and each query's own row is neither retrieved nor relevant.
    Relevance: `query_labels` (+ `corpus_labels`, defaulting to the query labels when there is no corpus),
        or `relevant_ids` (corpus rows per query: dict, sequence, or (nq, R) array padded with -1).
    dims: defaults to the mapping's dims, or the powers of two up to the full dim and the full dim.
    Metrics for each K in `ks`: mrl_map, ir_map, precision, recall, ndcg; mrr at the largest K.
    """
    ks = check_positive_ints(ks, "ks")
    if search not in SEARCH_MODES:
        raise ValueError(f"`search` must be one of {list(SEARCH_MODES)}, got {search!r}.")
    queries_are_corpus = corpus_embeddings is None
    first = query_embeddings if not isinstance(query_embeddings, Mapping) else next(iter(query_embeddings.values()))
    num_queries = len(first)
    dims = resolve_dims(query_embeddings, dims)
    if (query_labels is None) == (relevant_ids is None):
        raise ValueError("Give relevance as exactly one of `query_labels` or `relevant_ids`.")
    if query_labels is not None:
        query_labels = np.asarray(query_labels)
        corpus_labels = query_labels if queries_are_corpus else corpus_labels
        if corpus_labels is None:
            raise ValueError("`corpus_labels` are needed with `query_labels` when a corpus is given.")
        corpus_labels = np.asarray(corpus_labels)
        if query_labels.shape != (num_queries,):
            raise ValueError(f"`query_labels` must have shape ({num_queries},), got {query_labels.shape}.")
        relevant_lists = None
    else:
        relevant_lists = _relevant_lists(relevant_ids, num_queries)
        if queries_are_corpus:
            relevant_lists = [ids[ids != row] for row, ids in enumerate(relevant_lists)]

    query_views = per_dim_embeddings(query_embeddings, dims, "query_embeddings")
    corpus_views = query_views if queries_are_corpus else per_dim_embeddings(corpus_embeddings, dims, "corpus_embeddings")
    corpus_size = len(next(iter(corpus_views.values())))
    if corpus_labels is not None and len(corpus_labels) != corpus_size:
        raise ValueError(f"`corpus_labels` has {len(corpus_labels)} entries for a corpus of {corpus_size}.")
    if relevant_lists is not None and any(len(ids) and ids.max() >= corpus_size for ids in relevant_lists):
        raise ValueError(f"`relevant_ids` name corpus rows beyond the corpus of {corpus_size} items.")
    depth = ks[-1]
    self_ids = np.arange(num_queries) if queries_are_corpus else None
    results: dict[str, float] = {}
    for dim in dims:
        index = build_search_index(corpus_views[dim], search, **(search_params or {}))
        _, ids = run_search(index, query_views[dim], min(depth + (1 if queries_are_corpus else 0), corpus_size))
        if queries_are_corpus:
            ids = remove_ids(ids, self_ids)[:, :depth]
        if relevant_lists is None:
            hits, num_relevant = relevance_from_labels(ids, query_labels, corpus_labels, query_ids=self_ids)
        else:
            hits, num_relevant = relevance_from_ids(ids, relevant_lists)
        for k in ks:
            prefix = f"{name}_dim{dim}_"
            results[f"{prefix}mrl_map@{k}"] = mrl_map_at_k(hits, num_relevant, k)
            results[f"{prefix}ir_map@{k}"] = ir_map_at_k(hits, num_relevant, k)
            results[f"{prefix}precision@{k}"] = precision_at_k(hits, num_relevant, k)
            results[f"{prefix}recall@{k}"] = recall_at_k(hits, num_relevant, k)
            results[f"{prefix}ndcg@{k}"] = ndcg_at_k(hits, num_relevant, k)
        results[f"{name}_dim{dim}_mrr@{depth}"] = mrr(hits, num_relevant, depth)
    return results


class MatryoshkaRetrievalEvaluator(MatryoshkaEvaluator):
    """mAP@k (both variants), precision@k, recall@k, nDCG@k and MRR at every dim, from one encoding pass.

    Args:
        queries (`datasets.Dataset`): the query rows.
        corpus (`datasets.Dataset`, *optional*): the searched rows; None searches the queries themselves,
            skipping each query's own row.
        collate_fn / corpus_collate_fn (callable, *optional*): list of rows -> dict of tensors; the corpus
            one defaults to `collate_fn`; None stacks the rows' model-input columns, or encodes a raw "text" /
            "image" column with the model's own tokenizer / image processor (`collator_from_model`).
        label_column (`str`, defaults to "label"): relevance by equal labels (in both datasets).
        relevant_ids (`str`, `dict` or sequence, *optional*): explicit relevance instead of labels: a column
            of `queries` holding lists of corpus rows, a dict {query row: corpus rows}, or one collection of
            corpus rows per query.
        dims (`list[int]`, *optional*): dims to score, any from 1 to the embedding dim (default: the
            model's nesting dims).
        ks (`list[int]`, defaults to (10,)): cut-offs.
        search (`str`, defaults to "exact"): "exact" (faiss IndexFlatIP on normalised vectors), "hnsw" or
            "ivf", with `search_params` as in `build_search_index`.
        primary_metric_name (`str`, defaults to "ndcg"): one of `RETRIEVAL_METRICS`; the primary key is
            that metric at the largest K and the largest dim ("mrl_map" for the MRL paper's mAP, see above).
        name (`str`): the key prefix, e.g. "wordnet" -> "wordnet_dim32_ndcg@10".
    """

    def __init__(
        self,
        queries,
        corpus=None,
        collate_fn: Callable[[list[dict]], dict] | None = None,
        corpus_collate_fn: Callable[[list[dict]], dict] | None = None,
        label_column: str | None = "label",
        relevant_ids=None,
        dims: Sequence[int] | None = None,
        ks: Sequence[int] = (10,),
        search: str = "exact",
        search_params: Mapping | None = None,
        primary_metric_name: str = "ndcg",
        name: str = "retrieval",
        batch_size: int = 64,
    ):
        super().__init__(name=name, dims=dims, batch_size=batch_size)
        check_not_empty({"queries": queries, "corpus": corpus})
        self.ks = check_positive_ints(ks, "ks")
        if search not in SEARCH_MODES:
            raise ValueError(f"`search` must be one of {list(SEARCH_MODES)}, got {search!r}.")
        if primary_metric_name not in RETRIEVAL_METRICS:
            raise ValueError(
                f"`primary_metric_name` must be one of {list(RETRIEVAL_METRICS)}, got {primary_metric_name!r}."
            )
        self.query_labels = self.corpus_labels = None
        if relevant_ids is None:
            for argument, data in (("queries", queries), ("corpus", corpus)):
                if data is not None and label_column not in data.column_names:
                    raise ValueError(
                        f"`{argument}` has no label column {label_column!r} (columns: {data.column_names}); "
                        "pass `label_column` or `relevant_ids`."
                    )
            self.query_labels = np.asarray(queries[label_column])
            self.corpus_labels = None if corpus is None else np.asarray(corpus[label_column])
        elif isinstance(relevant_ids, str):
            if relevant_ids not in queries.column_names:
                raise ValueError(
                    f"`relevant_ids` column {relevant_ids!r} is not in `queries` ({queries.column_names})."
                )
            relevant_ids = queries[relevant_ids]
        self.relevant_ids = None if relevant_ids is None else _relevant_lists(relevant_ids, len(queries))
        self.queries, self.corpus = queries, corpus
        self.collate_fn = collate_fn
        self.corpus_collate_fn = corpus_collate_fn or collate_fn
        self.search = search
        self.search_params = dict(search_params or {})
        self.primary_metric_name = f"{primary_metric_name}@{self.ks[-1]}"
        # A corpus smaller than a cut-off puts every item in the top K: @K metrics near 1.0 whatever the model.
        corpus_size = len(queries) - 1 if corpus is None else len(corpus)
        if self.ks[-1] > corpus_size:
            searched = "`corpus`" if corpus is not None else "the leave-one-out corpus (`queries` less the query)"
            raise ValueError(
                f"`ks` holds {self.ks[-1]}, more than the {corpus_size} items of {searched}; @{self.ks[-1]} metrics "
                f"would rank the whole corpus. Give a corpus of at least {self.ks[-1]} items or smaller `ks`."
            )

    def encode(self, model) -> dict:
        inputs = {
            "query_embeddings": encode_dataset(
                model, self.queries, self.collate_fn or collator_from_model(model, self.queries), self.batch_size,
                f"Encoding {self.name} queries",
            ).embeddings
        }
        if self.corpus is not None:
            inputs["corpus_embeddings"] = encode_dataset(
                model, self.corpus, self.corpus_collate_fn or collator_from_model(model, self.corpus), self.batch_size,
                f"Encoding {self.name} corpus",
            ).embeddings
        return inputs

    def compute_metrics(self, query_embeddings, corpus_embeddings=None, dims: Sequence[int] | None = None) -> dict:
        """Scores precomputed embeddings of this evaluator's queries (and corpus), rows in dataset order."""
        if (self.corpus is None) != (corpus_embeddings is None):
            raise ValueError(
                "Pass `corpus_embeddings` exactly when the evaluator has a `corpus` "
                f"(it {'has none' if self.corpus is None else 'has one'})."
            )
        results = retrieval_metrics(
            query_embeddings,
            corpus_embeddings,
            dims=dims or self.dims,
            query_labels=self.query_labels,
            corpus_labels=self.corpus_labels,
            relevant_ids=self.relevant_ids,
            ks=self.ks,
            search=self.search,
            search_params=self.search_params,
            name=self.name,
        )
        return self.remember(results, self.primary_metric_name)
