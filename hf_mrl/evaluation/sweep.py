"""Configuration sweep for adaptive retrieval with `MatryoshkaIndex`.

For each (shortlist_dim, shortlist_size, rerank_dim, storage) setting, one row (a flat dict) with:
`map@k` (the MRL paper's mAP@k) and `map@k_stderr` (its standard error over the queries: two settings whose mAP@k
differ by less are not told apart), `recall@k` (over the task's relevant items), `precision@k` (share of the k
results that are relevant), `nn_recall@k` (overlap with the exact full-dim top k, when given), measured `qps`
(queries per second over the whole query batch, best of `repeats` runs, or their median with
`timing="median"`), `mflops_per_query` (the estimate below), `bytes_per_vector`, and `pareto` (True on the
front of QPS vs mAP@k: no other row is at least as fast and at least as good, and strictly better in one).

MFLOPs per query, counting one multiply-add per float feature compared:
- shortlist, exact (flat): N * shortlist_dim;
- shortlist, HNSW / IVF: (distance computations per query, as counted by faiss's `hnsw_stats` /
  `indexIVF_stats`) * shortlist_dim, plus nlist * shortlist_dim for the IVF coarse quantiser;
- binary shortlists (Hamming distance): one XOR and one popcount per 64 bits, so 2 * ceil(shortlist_dim / 64)
  operations per distance in place of shortlist_dim;
- re-rank: shortlist_size * rerank_dim (a funnel: the sum over stages of candidates in * stage dim).
Renormalisation, top-k selection and graph bookkeeping are left out: they are small next to the above.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import faiss
import numpy as np
from faiss.contrib.evaluation import RepeatTimer, knn_intersection_measure
from tqdm.auto import tqdm

from ..index import STORAGES, MatryoshkaIndex, faiss_index_nbytes
from ..index.validation import _check_funnel_sizes
from ..modeling.files import write_file_atomically
from ..modeling.progress import should_show_progress
from .metrics import (
    average_precisions_at_k,
    pareto_optimal,
    precision_at_k,
    recall_at_k,
    relevance_from_ids,
    relevance_from_labels,
    standard_error,
)
from .report import plot_qps_vs_metric

__all__ = [
    "label_relevance",
    "id_relevance",
    "TIMINGS",
    "timed_search",
    "search_mflops",
    "score_results",
    "evaluate_faiss_index",
    "evaluate_search",
    "evaluate_funnel",
    "sweep_index",
    "sweep_adaptive_retrieval",
    "mark_pareto_front",
    "save_sweep",
    "plot_sweep",
]

Relevance = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
TIMINGS = ("best", "median")  # how `timed_search` reduces its timed runs to one QPS


def label_relevance(query_labels, database_labels) -> Relevance:
    """Relevance = same label: returns `judge(ids) -> (hits (nq, k) bool, relevant counts (nq,))`, where
    `ids` index `database_labels` (the index's ids must be row numbers into it)."""
    query_labels, database_labels = np.asarray(query_labels), np.asarray(database_labels)
    return lambda ids: relevance_from_labels(ids, query_labels, database_labels)


def id_relevance(relevant_ids) -> Relevance:
    """Relevance = explicit ids per query (an int array (nq, R) padded with -1, or a list of id lists)."""
    return lambda ids: relevance_from_ids(ids, relevant_ids)


def _relevance_from_kwargs(query_labels, database_labels, relevant_ids) -> Relevance:
    if relevant_ids is not None:
        if query_labels is not None or database_labels is not None:
            raise ValueError("Give either `relevant_ids` or (`query_labels`, `database_labels`), not both.")
        return id_relevance(relevant_ids)
    if query_labels is None or database_labels is None:
        raise ValueError("Give the relevance: `query_labels` and `database_labels`, or `relevant_ids`.")
    return label_relevance(query_labels, database_labels)


def _reset_faiss_stats() -> None:
    faiss.cvar.hnsw_stats.reset()
    faiss.cvar.indexIVF_stats.reset()


def _faiss_distance_count() -> int:
    return int(faiss.cvar.hnsw_stats.ndis) + int(faiss.cvar.indexIVF_stats.ndis)


def timed_search(
    search: Callable, queries: np.ndarray, repeats: int = 1, timing: str = "best"
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Runs `search(queries) -> (scores, ids)` on the whole batch `repeats` times after a warm-up on the
    first 16 queries; returns scores, ids, queries per second (wall clock) of the fastest run (`timing="best"`)
    or of the median run (`timing="median"`), and faiss's graph / inverted-list distance computations per
    query (0 for flat indexes) over the timed runs."""
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats <= 0:
        raise ValueError(f"`repeats` must be a positive integer, got {repeats!r}.")
    if timing not in TIMINGS:
        raise ValueError(f"`timing` must be one of {list(TIMINGS)}, got {timing!r}.")
    search(queries[:16])
    _reset_faiss_stats()
    timer = RepeatTimer(runs=repeats)
    for _ in timer:
        scores, ids = search(queries)
    elapsed = float(np.min(timer.times) if timing == "best" else np.median(timer.times))
    distances = _faiss_distance_count() / (repeats * len(queries))
    return scores, ids, len(queries) / max(elapsed, 1e-9), distances


def search_mflops(
    index: MatryoshkaIndex, shortlist_dim: int, stages: Sequence[tuple[int, int]], distances_per_query: float
) -> float:
    """Estimated MFLOPs per query (see the module docstring). `stages` are (candidates in, dim) re-rank
    stages; `distances_per_query` is faiss's count for HNSW / IVF shortlists (ignored for flat ones)."""
    binary = index.shortlist_storage == "binary"
    per_distance = 2 * math.ceil(shortlist_dim / 64) if binary else shortlist_dim
    if index.shortlist_index == "flat":
        shortlist = index.count * per_distance
    else:
        shortlist = distances_per_query * per_distance
        if index.shortlist_index == "ivf":
            shortlist += index.index_params["nlist"] * per_distance
    return (shortlist + sum(size * dim for size, dim in stages)) / 1e6


def score_results(ids: np.ndarray, relevance: Relevance, k: int, exact_ids: np.ndarray | None = None) -> dict:
    """mAP@k (MRL variant) and its standard error over the queries (`map@k_stderr`: whether two settings' mAPs
    differ by more than chance), recall@k, precision@k and, with `exact_ids` (nq, >=k), nn_recall@k of `ids` (nq, k)."""
    hits, num_relevant = relevance(ids)
    per_query = average_precisions_at_k(hits, num_relevant, k)  # mrl_map_at_k is their mean
    scores = {
        f"map@{k}": float(per_query.mean()) if len(per_query) else 0.0,
        f"map@{k}_stderr": standard_error(per_query),
        f"recall@{k}": recall_at_k(hits, num_relevant, k),
        f"precision@{k}": precision_at_k(hits, num_relevant, k),
    }
    if exact_ids is not None:
        scores[f"nn_recall@{k}"] = knn_intersection_measure(ids[:, :k], np.asarray(exact_ids)[:, :k])
    return scores


def evaluate_faiss_index(
    index: faiss.Index,
    queries: np.ndarray,
    relevance: Relevance,
    *,
    method: str,
    k: int = 10,
    params: faiss.SearchParameters | None = None,
    exact_ids: np.ndarray | None = None,
    repeats: int = 1,
    timing: str = "best",
) -> tuple[dict, np.ndarray]:
    """A plain faiss index over L2-normalised vectors (a baseline such as exact full-dim search or full-dim
    HNSW), measured on `queries` (normalised here): the row (`method`, `dim`, `ef_search` for HNSW
    `params`, the scores of `score_results`, `qps`, `mflops_per_query`, `bytes_per_vector`) and the
    ids (nq, k) it returned."""
    unit_queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)

    def search(batch):
        return index.search(batch, k, params=params)

    _, ids, qps, distances = timed_search(search, unit_queries, repeats, timing)
    count = index.ntotal
    row = {"method": method, "dim": index.d, **_params_row(params)}
    row.update(score_results(ids, relevance, k, exact_ids))
    row["qps"] = qps
    row["mflops_per_query"] = (distances if distances else count) * index.d / 1e6
    row["bytes_per_vector"] = faiss_index_nbytes(index) / count
    return row, ids


def _params_row(params) -> dict:
    """The search breadth of faiss search parameters, as row fields (a refine wrapper's and its base index's)."""
    if isinstance(params, faiss.IndexRefineSearchParameters):  # its base parameters come back as the base class
        return {"k_factor": params.k_factor}
    if isinstance(params, faiss.SearchParametersHNSW):
        return {"ef_search": params.efSearch}
    if isinstance(params, faiss.SearchParametersIVF):
        return {"nprobe": params.nprobe}
    return {}


def _search_breadth(index: MatryoshkaIndex, shortlist_size: int, ef_search, nprobe) -> dict:
    """The effective efSearch (HNSW, never below the shortlist size) or nprobe (IVF) of a search."""
    if index.shortlist_index == "hnsw":
        return {"ef_search": max(ef_search or index.index_params["ef_search"], shortlist_size)}
    if index.shortlist_index == "ivf":
        return {"nprobe": min(nprobe or index.index_params["nprobe"], index.index_params["nlist"])}
    return {}


def evaluate_search(
    index: MatryoshkaIndex,
    queries: np.ndarray,
    relevance: Relevance,
    *,
    k: int = 10,
    shortlist_dim: int | None = None,
    shortlist_size: int | None = None,
    rerank_dim: int | None = None,
    ef_search: int | None = None,
    nprobe: int | None = None,
    exact_ids: np.ndarray | None = None,
    repeats: int = 1,
    timing: str = "best",
) -> dict:
    """One `index.search` setting, measured: the row described in the module docstring."""
    shortlist_dim = index.shortlist_dims[0] if shortlist_dim is None else shortlist_dim
    rerank_dim = index.stored_dim if rerank_dim is None else rerank_dim
    size = min(max(k, 200) if shortlist_size is None else shortlist_size, index.count)

    def search(batch):
        return index.search(batch, k, shortlist_dim, size, rerank_dim, ef_search=ef_search, nprobe=nprobe)

    _, ids, qps, distances = timed_search(search, queries, repeats, timing)
    row = {
        "method": "adaptive",
        "shortlist_index": _shortlist_kind(index),
        "shortlist_storage": index.shortlist_storage,
        "storage": index.storage,
        "shortlist_dim": shortlist_dim,
        "shortlist_size": size,
        "rerank_dim": rerank_dim,
    }
    row.update(_search_breadth(index, size, ef_search, nprobe))
    row.update(score_results(ids, relevance, k, exact_ids))
    row["qps"] = qps
    row["mflops_per_query"] = search_mflops(index, shortlist_dim, [(size, rerank_dim)], distances)
    row["bytes_per_vector"] = index.memory_per_vector()
    return row


def evaluate_funnel(
    index: MatryoshkaIndex,
    queries: np.ndarray,
    relevance: Relevance,
    dims: Sequence[int],
    shortlist_sizes: Sequence[int] | None = None,
    *,
    k: int = 10,
    ef_search: int | None = None,
    nprobe: int | None = None,
    exact_ids: np.ndarray | None = None,
    repeats: int = 1,
    timing: str = "best",
) -> dict:
    """One `index.funnel_search` setting, measured (same keys as `evaluate_search`, plus the funnel).
    `shortlist_sizes` defaults to `funnel_search`'s (800 halved at each stage, the last max(k, 10))."""
    sizes = _check_funnel_sizes(shortlist_sizes, len(dims), k)
    dims, sizes = list(dims), [min(size, index.count) for size in sizes]

    def search(batch):
        return index.funnel_search(batch, k, dims, sizes, ef_search=ef_search, nprobe=nprobe)

    _, ids, qps, distances = timed_search(search, queries, repeats, timing)
    row = {
        "method": "funnel",
        "shortlist_index": _shortlist_kind(index),
        "shortlist_storage": index.shortlist_storage,
        "storage": index.storage,
        "shortlist_dim": dims[0],
        "shortlist_size": sizes[0],
        "rerank_dim": dims[-1],
        "funnel_dims": dims,
        "funnel_sizes": sizes,
    }
    row.update(_search_breadth(index, sizes[0], ef_search, nprobe))
    row.update(score_results(ids, relevance, k, exact_ids))
    row["qps"] = qps
    row["mflops_per_query"] = search_mflops(index, dims[0], list(zip(sizes[:-1], dims[1:], strict=True)), distances)
    row["bytes_per_vector"] = index.memory_per_vector()
    return row


def sweep_index(
    index: MatryoshkaIndex,
    queries: np.ndarray,
    relevance: Relevance,
    *,
    k: int = 10,
    shortlist_dims: Sequence[int] | None = None,
    shortlist_sizes: Sequence[int] = (25, 50, 100, 200, 400),
    rerank_dims: Sequence[int | None] = (None,),
    ef_search: int | None = None,
    nprobe: int | None = None,
    exact_ids: np.ndarray | None = None,
    repeats: int = 1,
    timing: str = "best",
    show_progress: bool | None = None,
) -> list[dict]:
    """Every (shortlist_dim, shortlist_size, rerank_dim) of one built index; sizes below k are skipped.
    `shortlist_dims` default to the index's; `None` in `rerank_dims` means the stored dim."""
    shortlist_dims = index.shortlist_dims if shortlist_dims is None else list(shortlist_dims)
    grid = [
        (shortlist_dim, size, rerank_dim)
        for shortlist_dim in shortlist_dims
        for size in shortlist_sizes
        for rerank_dim in rerank_dims
        if size >= k
    ]
    return [
        evaluate_search(
            index, queries, relevance, k=k, shortlist_dim=shortlist_dim, shortlist_size=size, rerank_dim=rerank_dim,
            ef_search=ef_search, nprobe=nprobe, exact_ids=exact_ids, repeats=repeats, timing=timing,
        )
        for shortlist_dim, size, rerank_dim in tqdm(grid, desc=f"sweep {index.storage}", disable=not should_show_progress(show_progress))
    ]


def sweep_adaptive_retrieval(
    database,
    queries,
    *,
    query_labels=None,
    database_labels=None,
    relevant_ids=None,
    storages: Sequence[str | tuple[str, str]] = ("float32",),
    shortlist_index: str = "flat",
    shortlist_dims: Sequence[int] = (8, 16, 32, 64),
    shortlist_sizes: Sequence[int] = (25, 50, 100, 200, 400),
    rerank_dims: Sequence[int | None] = (None,),
    index_params: dict | None = None,
    k: int = 10,
    exact_ids: np.ndarray | None = None,
    repeats: int = 1,
    show_progress: bool | None = None,
) -> list[dict]:
    """Builds one `MatryoshkaIndex` over `database` (N, D) per storage and sweeps each over the grid.

    Args:
        database, queries: embeddings (N, D) and (nq, D), numpy or torch, un-normalised is fine.
        query_labels, database_labels / relevant_ids: the relevance (same label, or explicit row ids).
        storages: each a re-rank storage (the shortlist then stores float32), or a
            (shortlist_storage, storage) pair such as ("binary", "float32").
        shortlist_index: "flat", "hnsw" or "ivf" (`index_params` tunes HNSW / IVF).
        shortlist_dims: dims to shortlist at (those above D are dropped; multiples of 8 for binary).
        shortlist_sizes, rerank_dims: the rest of the grid (`None` = full dim).
        exact_ids: exact full-dim top-k ids (nq, >=k) for `nn_recall@k`, optional.

    Returns:
        One dict per setting (see the module docstring), Pareto front marked over all of them.
    """
    relevance = _relevance_from_kwargs(query_labels, database_labels, relevant_ids)
    pairs = [("float32", storage) if isinstance(storage, str) else tuple(storage) for storage in storages]
    for pair in pairs:
        if len(pair) != 2 or any(storage not in STORAGES for storage in pair):
            raise ValueError(
                f"`storages` entries must be one of {list(STORAGES)} or a (shortlist_storage, storage) pair of "
                f"them, got {pair!r}."
            )
    dim = database.shape[1] if hasattr(database, "shape") else np.asarray(database).shape[1]
    rows = []
    for shortlist_storage, storage in pairs:
        dims = [d for d in shortlist_dims if d <= dim and (shortlist_storage != "binary" or d % 8 == 0)]
        if not dims:
            raise ValueError(
                f"No shortlist dim in {list(shortlist_dims)} fits embeddings of dim {dim} with a "
                f"{shortlist_storage} shortlist."
            )
        index = MatryoshkaIndex(
            database, storage=storage, shortlist_index=shortlist_index, shortlist_dim=dims,
            shortlist_storage=shortlist_storage, index_params=index_params, show_progress=show_progress,
        )
        rows += sweep_index(
            index, queries, relevance, k=k, shortlist_sizes=shortlist_sizes,
            rerank_dims=rerank_dims, exact_ids=exact_ids, repeats=repeats, show_progress=show_progress,
        )
    return mark_pareto_front(rows, y=f"map@{k}")


def mark_pareto_front(rows: list[dict], x: str = "qps", y: str = "map@10") -> list[dict]:
    """Sets `row["pareto"]` on every row: True when no other row has x and y both >= and one of them >.
    Returns `rows` (changed in place)."""
    front = pareto_optimal([(row[x], row[y]) for row in rows]) if rows else []
    for row, kept in zip(rows, front, strict=True):
        row["pareto"] = bool(kept)
    return rows


def _shortlist_kind(index: MatryoshkaIndex) -> str:
    """The shortlist structure as rows name it: "ivf@16" for IVF lists clustered at 16 dims (AdANNS-IVF)."""
    cluster_dim = index.index_params.get("cluster_dim")
    return index.shortlist_index if cluster_dim is None else f"{index.shortlist_index}@{cluster_dim}"


def _label(row: dict) -> str:
    kind = row.get("shortlist_index", "")
    if row.get("shortlist_storage", "float32") != "float32":
        kind = f"{row['shortlist_storage']} {kind}"
    if row.get("method") == "funnel":
        return f"funnel {kind} {row['funnel_dims']}"
    storage = "" if row.get("storage", "float32") == "float32" else f" {row['storage']}"
    return f"{kind} {row['shortlist_dim']}d x{row['shortlist_size']} -> {row['rerank_dim']}d{storage}"


def plot_sweep(
    rows: list[dict], path, y: str = "map@10", title: str | None = None, quality_floor: float | None = None
) -> Path:
    """`y` (in %) against QPS (log scale) through `plot_qps_vs_metric`: our settings as dots, one line per
    baseline `method` (neither "adaptive" nor "funnel"), the Pareto front as a line with our settings on it
    labelled. `quality_floor` (same scale as `y`) draws the "equal quality" line. Saved as PNG at `path`."""

    def point(row):
        return 100 * row[y], row["qps"]

    ours = [row for row in rows if row.get("method", "adaptive") in ("adaptive", "funnel")]
    engine = [row for row in rows if str(row.get("method", "")).endswith("(qdrant)")]  # the same settings on Qdrant
    dots = {"adaptive / funnel settings": ours, "adaptive / funnel on Qdrant": engine}
    series = {label: [point(row) for row in group] for label, group in dots.items() if group}
    for row in rows:
        if row not in ours and row not in engine:
            series.setdefault(row["method"], []).append(point(row))
    front = [row for row in rows if row.get("pareto")]
    plot_qps_vs_metric(
        series, path, f"{y} (%)", title or f"Adaptive retrieval: QPS vs {y}", figsize=(9, 6),
        scatter=list(dots), front=[point(row) for row in front],
        notes=[(_label(row), point(row)) for row in front if row in ours],
        quality_floor=None if quality_floor is None else 100 * quality_floor,
    )
    return Path(path)


def save_sweep(
    rows: list[dict], json_path=None, plot_path=None, y: str = "map@10", title: str | None = None,
    quality_floor: float | None = None,
) -> None:
    """Writes `rows` as JSON (atomically: temp file, then rename) and / or the plot of `plot_sweep`."""
    if json_path is not None:
        text = json.dumps(rows, indent=2, default=float) + "\n"
        write_file_atomically(json_path, lambda file: file.write_text(text, encoding="utf-8"))
    if plot_path is not None:
        plot_sweep(rows, plot_path, y=y, title=title, quality_floor=quality_floor)
