"""Argument checks of `MatryoshkaIndex`, all run before any work."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import torch

from ..modeling.checks import check_positive_int as _check_positive_int
from ..modeling.checks import is_int as _is_int
from ..modeling.nesting import resolve_dims
from .shortlists import DEFAULT_INDEX_PARAMS


def _check_choice(value, allowed: Sequence[str], name: str) -> str:
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {list(allowed)}, got {value!r}.")
    return value


def _check_dim(value, upper: int, name: str, upper_name: str) -> int:
    if not _is_int(value) or not 1 <= value <= upper:
        raise ValueError(f"`{name}` must be an integer from 1 to {upper} ({upper_name}), got {value!r}.")
    return int(value)


def _to_float_matrix(array, name: str) -> np.ndarray:
    """numpy / torch (any float dtype, any device) -> C-contiguous float32 numpy (n, d); rejects NaN / inf."""
    if isinstance(array, torch.Tensor):
        array = array.detach().to(device="cpu", dtype=torch.float32).numpy()
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"`{name}` must be a 2-D array (num_vectors, dim), got shape {array.shape}.")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"`{name}` must hold numbers, got dtype {array.dtype}.")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(f"`{name}` holds a non-finite value (NaN or inf) at row {bad[0]}, column {bad[1]}.")
    return array


def _check_queries(queries, dim: int) -> np.ndarray:
    """Query embeddings (nq, `dim`), numpy or torch -> float32 numpy; rejects other widths and NaN / inf."""
    if isinstance(queries, torch.Tensor):
        queries = queries.detach().to(device="cpu", dtype=torch.float32).numpy()
    queries = np.asarray(queries)
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise ValueError(
            f"`queries` must have shape (num_queries, {dim}) (the index's embedding dim), got {queries.shape}."
        )
    return _check_nonzero_rows(_to_float_matrix(queries, "queries"), dim, "queries")


def _shown(values) -> str:
    """The first five of `values`, comma-separated, and how many more."""
    values = list(values)
    return ", ".join(str(value) for value in values[:5]) + (f" (and {len(values) - 5} more)" if len(values) > 5 else "")


def _zero_rows(array: np.ndarray, dim: int) -> np.ndarray:
    """Row numbers of `array` whose first `dim` features are all zero."""
    return np.flatnonzero(~array[:, :dim].any(axis=1))


def _refuse_zero_rows(array: np.ndarray, dim: int, name: str, where: str, consequence: str) -> np.ndarray:
    """Refuses the rows of `array` whose first `dim` features are all zero (`where` says which dim that is when it
    is not the full width; `consequence` what such a row would do)."""
    rows = _zero_rows(array, dim)
    if len(rows):
        where = "" if dim == array.shape[1] else f" in the first {dim} features ({where})"
        rows_are = f"rows {_shown(rows)} are" if len(rows) > 1 else f"row {rows[0]} is"
        raise ValueError(f"`{name}` {rows_are} all zeros{where}: a zero vector has no direction, so {consequence}.")
    return array


def _check_nonzero_rows(queries: np.ndarray, dim: int, name: str) -> np.ndarray:
    """Refuses query rows whose first `dim` features are all zero: every cosine is 0 and the "best" ids would be
    arbitrary."""
    return _refuse_zero_rows(queries, dim, name, "the smallest dim searched",
                             "its scores would be 0 and its ids arbitrary; pass non-zero query embeddings")


def _check_nonzero_database(embeddings: np.ndarray, dim: int, dim_name: str, name: str = "embeddings") -> np.ndarray:
    """Refuses database rows whose first `dim` features (the smallest dim the index stores or searches) are all
    zero: they score 0 against every query and could never be found."""
    return _refuse_zero_rows(embeddings, dim, name, dim_name, "it would score 0 against every query and never be "
                             "found; remove it or pass a non-zero embedding")


def _check_dim_list(value, upper: int, name: str, upper_name: str) -> list[int]:
    """An int or a non-empty list of ints, each 1..`upper` -> sorted unique list."""
    dims = [value] if _is_int(value) else value
    if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence) or len(dims) == 0:
        raise ValueError(f"`{name}` must be an integer or a non-empty list of integers, got {value!r}.")
    for item in dims:
        _check_dim(item, upper, name, upper_name)
    return sorted({int(item) for item in dims})


def _check_shortlist_dims(shortlist_dim, stored_dim: int, shortlist_storage: str) -> list[int]:
    binary = shortlist_storage == "binary"
    if shortlist_dim is None:
        if binary:
            if stored_dim < 8:
                raise ValueError(f"A binary shortlist needs at least 8 dims, but `stored_dim` is {stored_dim}.")
            return [max(8, stored_dim // 2 // 8 * 8)]
        return [max(min(8, stored_dim), stored_dim // 8)]
    dims = _check_dim_list(shortlist_dim, stored_dim, "shortlist_dim", "the stored dim")
    for value in dims:
        if binary and value % 8:
            raise ValueError(f"`shortlist_dim` must be a multiple of 8 for a binary shortlist, got {value!r}.")
    return dims


def _check_index_params(index_params, count: int) -> dict:
    params = dict(DEFAULT_INDEX_PARAMS)
    if index_params is not None:
        if not isinstance(index_params, dict):
            raise ValueError(f"`index_params` must be a dict, got {type(index_params).__name__}.")
        unknown = sorted(set(index_params) - set(DEFAULT_INDEX_PARAMS))
        if unknown:
            raise ValueError(f"`index_params` has unknown keys {unknown}; allowed: {sorted(DEFAULT_INDEX_PARAMS)}.")
        params.update(index_params)
    if params["nlist"] is None:  # 4 sqrt(N) lists, but at least 39 training points per list (faiss's minimum)
        params["nlist"] = max(1, min(int(4 * math.sqrt(count)), count // 39))
    for key, value in params.items():
        if value is not None or key != "cluster_dim":
            _check_positive_int(value, f"index_params['{key}']")
    if params["nlist"] > count:
        raise ValueError(f"`index_params['nlist']` is {params['nlist']}, more than the {count} vectors to cluster.")
    return {key: None if value is None else int(value) for key, value in params.items()}


def _check_cluster_dim(cluster_dim, shortlist_index: str, shortlist_storage: str, stored_dim: int) -> None:
    """`index_params['cluster_dim']` (AdANNS-IVF) needs float IVF shortlists and a dim within the stored ones."""
    if cluster_dim is None:
        return
    if shortlist_index != "ivf" or shortlist_storage == "binary":
        raise ValueError(
            f"`index_params['cluster_dim']` is {cluster_dim}, but it sets the clusters of IVF shortlists over float "
            f"codes, and this index has shortlist_index={shortlist_index!r}, shortlist_storage={shortlist_storage!r}. "
            "Allowed: shortlist_index='ivf' with a float shortlist_storage, or leave cluster_dim out."
        )
    if cluster_dim > stored_dim:
        raise ValueError(f"`index_params['cluster_dim']` is {cluster_dim}, above the stored dim {stored_dim}; allowed: "
                         f"1 to {stored_dim}.")


def _check_nesting_dims(nesting_dims, stored_dim: int) -> list[int]:
    if nesting_dims is None:
        return resolve_dims(stored_dim)
    if isinstance(nesting_dims, (str, bytes)) or not isinstance(nesting_dims, Sequence) or not nesting_dims:
        raise ValueError(f"`nesting_dims` must be a non-empty list of integers, got {nesting_dims!r}.")
    for value in nesting_dims:
        _check_dim(value, stored_dim, "nesting_dims", "the stored dim")
    return sorted({int(value) for value in nesting_dims} | {stored_dim})


_MAX_ID = 2**63 - 1  # ids are stored as int64


def _check_ids(ids, count: int, unique_because: str = "a search would return one id for several vectors") -> np.ndarray | None:
    """One id per vector: unique integers from 0 to 2**63 - 1 (-1 marks "not found" in search results) -> int64.
    Shared by `MatryoshkaIndex` and `QdrantMatryoshkaIndex`; `unique_because` says why repeats are refused."""
    if ids is None:
        return None
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    ids = np.asarray(ids)
    if ids.dtype == object and ids.shape == (count,) and all(_is_int(value) for value in ids):
        values = [int(value) for value in ids]  # Python ints beyond 64 bits: numpy keeps them as objects
        big = [value for value in values if value > _MAX_ID]
        if big:
            raise ValueError(f"`ids` must be integers from 0 to 2**63 - 1 (stored as int64), got {_shown(big)}.")
        ids = np.asarray(values, dtype=np.int64)
    if ids.shape != (count,) or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
        raise ValueError(f"`ids` must be {count} integers (one per vector), got shape {ids.shape} dtype {ids.dtype}.")
    if ids.size and np.issubdtype(ids.dtype, np.unsignedinteger) and ids.max() > _MAX_ID:
        big = ids[ids > _MAX_ID]
        raise ValueError(f"`ids` must be integers from 0 to 2**63 - 1 (stored as int64), got {_shown(big.tolist())}.")
    ids = ids.astype(np.int64)
    if ids.size and ids.min() < 0:
        raise ValueError(f"`ids` must be non-negative (-1 marks \"not found\" in search results, and Qdrant point ids "
                         f"are unsigned), got {_shown(ids[ids < 0].tolist())}.")
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"`ids` must be unique ({unique_because}): {_shown(unique[counts > 1].tolist())} repeats.")
    return ids


def _check_funnel_sizes(sizes, num_stages: int, k: int) -> list[int]:
    if sizes is None:
        sizes = [max(800 >> stage, k) for stage in range(num_stages - 1)] + [max(k, 10)]
        return [max(size, sizes[-1]) for size in sizes]
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or len(sizes) != num_stages:
        raise ValueError(f"`shortlist_sizes` must be a list of {num_stages} integers (one per dim), got {sizes!r}.")
    for value in sizes:
        _check_positive_int(value, "shortlist_sizes")
    if any(later > earlier for earlier, later in pairwise(sizes)):
        raise ValueError(f"`shortlist_sizes` must not rise from stage to stage, got {list(sizes)!r}.")
    if sizes[-1] < k:
        raise ValueError(f"`shortlist_sizes` ends with {sizes[-1]}, fewer than `k`={k}; the last size must be >= k.")
    return [int(value) for value in sizes]
