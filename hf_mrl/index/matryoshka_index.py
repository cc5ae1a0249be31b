"""MatryoshkaIndex: adaptive retrieval over Matryoshka embeddings (a low-dim shortlist, then a high-dim re-rank).

One database of full embeddings serves every granularity: a search at dim k reads the first k features of
each stored vector and L2-renormalises them (truncate first, then normalise), so scores at dim k are the
cosine similarities of the k-dim embeddings.

Two pieces of storage:

- the **stored vectors** (`storage`), read by the exact re-rank at any dim up to `stored_dim`;
- one faiss **shortlist index** per shortlist dim (`shortlist_index` = flat / hnsw / ivf, with
  `shortlist_storage`), built at build time over the truncated, renormalised vectors (sign bits for binary).

How quantisation stays correct under truncation (why the vectors are stored the way they are):

- Every vector is first L2-normalised at `stored_dim`. A uniform scale does not change any truncated,
  renormalised vector, so this is free, and it puts all vectors on one scale before quantising.
- float16 / bfloat16 round each feature on its own: the first k features of the rounded vector are the
  rounded first k features.
- int8 with `int8_scale="dimension"` (default): one symmetric scale per feature (its largest magnitude over
  the database / 127). Features never share a scale, so the codes of the first k features are exactly the
  codes the k-dim slice would get on its own.
- int8 with `int8_scale="vector"`: a symmetric scale per vector *per nesting block* (`nesting_dims`, e.g.
  [0, 8), [8, 16), [16, 32) ...). A single scale over the whole vector would let late features (which a
  k-dim search never reads) set the resolution of the early ones; per block, the codes of a slice that ends
  on a nesting dim depend only on features inside the slice.
- binary keeps the sign bit of each feature (1 where > 0) and reads them as +-1: the sign of a slice is
  the slice of the signs, and every k-dim sign vector has norm sqrt(k).
- After dequantising a slice it is renormalised by its own norm, so scores are cosines at every dim.

Memory per vector: `memory_per_vector()` (total bytes) and `memory_breakdown()` (bytes per component).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import faiss
import numpy as np
import torch
from tqdm.auto import tqdm

from ..nesting import default_matryoshka_dims

__all__ = ["MatryoshkaIndex", "STORAGES", "SHORTLIST_INDEXES", "INT8_SCALES", "encode_embeddings", "faiss_index_nbytes"]

STORAGES = ("float32", "float16", "bfloat16", "int8", "binary")
SHORTLIST_INDEXES = ("flat", "hnsw", "ivf")
INT8_SCALES = ("dimension", "vector")
DEFAULT_INDEX_PARAMS = {"hnsw_m": 32, "ef_construction": 80, "ef_search": 64, "nlist": None, "nprobe": 16}
DEFAULT_SHORTLIST_SIZE = 200  # the MRL paper's adaptive-retrieval shortlist
DEFAULT_FUNNEL_SIZES = (800, 400, 200, 50, 10)  # the MRL paper's funnel
FORMAT_NAME = "hf_mrl.MatryoshkaIndex"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_RERANK_BATCH_BYTES = 32 * 2**20  # candidate vectors gathered at once during a re-rank
_ADD_CHUNK = 65536
_FAISS_SQ_TYPES = {"float16": "QT_fp16", "bfloat16": "QT_bf16", "int8": "QT_8bit"}


# ----------------------------------------------------------------------------------------------------------
# Argument checks (all run before any work)
# ----------------------------------------------------------------------------------------------------------


def _check_choice(value, allowed: Sequence[str], name: str) -> str:
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {list(allowed)}, got {value!r}.")
    return value


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_positive_int(value, name: str) -> int:
    if not _is_int(value) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


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


def _l2_normalize(array: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(array, axis=-1, keepdims=True)
    return array / np.maximum(norms, np.finfo(np.float32).tiny)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**22), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------------
# Stored vectors: quantise once, dequantise any slice
# ----------------------------------------------------------------------------------------------------------


class _StoredVectors:
    """The re-rank vectors at `dim` features, in one of `STORAGES` (see the module docstring)."""

    def __init__(self, storage: str, dim: int, codes: np.ndarray, scales: np.ndarray | None, blocks: list[int]):
        self.storage, self.dim, self.codes, self.scales, self.blocks = storage, dim, codes, scales, blocks

    @classmethod
    def quantize(cls, unit: np.ndarray, storage: str, int8_scale: str, blocks: list[int]) -> _StoredVectors:
        """`unit` (N, dim) float32, L2-normalised rows. `blocks` are the nesting dims ending at `dim`."""
        scales = None
        if storage == "float32":
            codes = unit
        elif storage == "float16":
            codes = unit.astype(np.float16)
        elif storage == "bfloat16":
            # numpy has no bfloat16: keep the raw 16 bits (round-to-nearest-even done by torch).
            codes = torch.from_numpy(unit).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        elif storage == "binary":
            codes = np.packbits(unit > 0, axis=1)
        elif int8_scale == "dimension":
            scales = (np.abs(unit).max(axis=0) / 127).astype(np.float32)
            scales[scales == 0] = 1.0
            codes = np.rint(unit / scales).clip(-127, 127).astype(np.int8)
        else:
            bounds = list(zip([0, *blocks[:-1]], blocks, strict=True))
            scales = np.stack([np.abs(unit[:, start:end]).max(axis=1) / 127 for start, end in bounds], axis=1)
            scales = scales.astype(np.float32)
            scales[scales == 0] = 1.0
            codes = np.rint(unit / cls._expand_block_scales(scales, blocks, unit.shape[1])).clip(-127, 127)
            codes = codes.astype(np.int8)
        return cls(storage, unit.shape[1], np.ascontiguousarray(codes), scales, blocks)

    @staticmethod
    def _expand_block_scales(scales: np.ndarray, blocks: list[int], dim: int) -> np.ndarray:
        """(..., num_blocks) per-block scales -> (..., dim) per-feature scales for the first `dim` features."""
        sizes = np.diff([0, *blocks])
        return np.repeat(scales, sizes, axis=-1)[..., :dim]

    def gather(self, rows: np.ndarray, dim: int) -> np.ndarray:
        """Dequantised first `dim` features of `rows` (any int shape S) -> float32 (*S, dim), not renormalised."""
        # np.take copies whole rows and is ~10x faster than fancy indexing `codes[rows, :dim]` here.
        codes = np.take(self.codes, rows, axis=0)
        if self.storage == "binary":
            bits = np.unpackbits(codes[..., : (dim + 7) // 8], axis=-1, count=dim)
            return bits.astype(np.float32) * 2 - 1
        codes = codes[..., :dim]
        if self.storage == "bfloat16":
            return (codes.astype(np.uint32) << 16).view(np.float32)
        if self.storage != "int8":
            return codes if codes.dtype == np.float32 else codes.astype(np.float32)
        if self.scales.ndim == 1:
            return codes.astype(np.float32) * self.scales[:dim]
        scales = np.take(self.scales, rows, axis=0)
        return codes.astype(np.float32) * self._expand_block_scales(scales, self.blocks, dim)

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + (0 if self.scales is None else self.scales.nbytes)


# ----------------------------------------------------------------------------------------------------------
# faiss shortlist indexes
# ----------------------------------------------------------------------------------------------------------


def _new_faiss_index(kind: str, storage: str, dim: int, params: dict):
    metric = faiss.METRIC_INNER_PRODUCT
    if storage == "binary":
        if kind == "flat":
            return faiss.IndexBinaryFlat(dim)
        if kind == "hnsw":
            index = faiss.IndexBinaryHNSW(dim, params["hnsw_m"])
            index.hnsw.efConstruction = params["ef_construction"]
            return index
        return faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(dim), dim, params["nlist"])
    if storage == "float32":
        if kind == "flat":
            return faiss.IndexFlatIP(dim)
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, params["hnsw_m"], metric)
            index.hnsw.efConstruction = params["ef_construction"]
            return index
        return faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, params["nlist"], metric)
    qtype = getattr(faiss.ScalarQuantizer, _FAISS_SQ_TYPES[storage])
    if kind == "flat":
        return faiss.IndexScalarQuantizer(dim, qtype, metric)
    if kind == "hnsw":
        index = faiss.IndexHNSWSQ(dim, qtype, params["hnsw_m"], metric)
        index.hnsw.efConstruction = params["ef_construction"]
        return index
    return faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, params["nlist"], qtype, metric)


def faiss_index_nbytes(index) -> int:
    """Approximate memory of a faiss index: codes, plus graph links (HNSW) or ids and centroids (IVF)."""
    if hasattr(index, "hnsw"):
        storage = index.storage if isinstance(index, faiss.IndexBinary) else faiss.downcast_index(index.storage)
        hnsw = index.hnsw
        links = hnsw.neighbors.size() * 4 + hnsw.levels.size() * 4 + hnsw.offsets.size() * 8
        return storage.code_size * index.ntotal + links
    if hasattr(index, "nlist"):
        centroid_bytes = index.d // 8 if isinstance(index, faiss.IndexBinary) else index.d * 4
        return (index.code_size + 8) * index.ntotal + index.nlist * centroid_bytes
    return index.code_size * index.ntotal


def _search_params(index, shortlist_size: int, ef_search: int, nprobe: int):
    if hasattr(index, "hnsw"):
        return faiss.SearchParametersHNSW(efSearch=max(ef_search, shortlist_size))
    if hasattr(index, "nlist"):
        return faiss.SearchParametersIVF(nprobe=min(nprobe, index.nlist))
    return None


# ----------------------------------------------------------------------------------------------------------
# The index
# ----------------------------------------------------------------------------------------------------------


class MatryoshkaIndex:
    """Adaptive retrieval over Matryoshka embeddings: a faiss shortlist at a low dim, an exact re-rank at a
    higher dim (see the module docstring for the storage rules).

    Args:
        embeddings (`np.ndarray` or `torch.Tensor` of shape (N, D)): database embeddings, un-normalised is fine.
        ids (array of N ints, *optional*): an int64 id per vector (duplicates allowed, e.g. several views of
            one item); searches return these ids. Defaults to the row numbers 0..N-1.
        storage (`str`, defaults to "float32"): dtype of the stored re-rank vectors, one of `STORAGES`.
        stored_dim (`int`, *optional*, defaults to D): how many leading features are stored for the re-rank.
        shortlist_index (`str`, defaults to "flat"): faiss structure of the shortlist: "flat" (exact),
            "hnsw" (graph) or "ivf" (inverted lists).
        shortlist_dim (`int` or list of `int`, *optional*): dim(s) at which shortlist indexes are built (one
            faiss index per dim). Defaults to D // 8 (at least 8), or D // 2 rounded down to a multiple of 8
            for a binary shortlist. Binary dims must be multiples of 8.
        shortlist_storage (`str`, defaults to "float32"): what the shortlist index stores: float32, float16,
            bfloat16, int8 (faiss scalar quantisers; int8 is faiss's per-feature min/max 8-bit) or binary
            (sign bits, Hamming distance: faiss IndexBinaryFlat / IndexBinaryHNSW / IndexBinaryIVF).
        index_params (`dict`, *optional*): overrides of `DEFAULT_INDEX_PARAMS`: `hnsw_m`, `ef_construction`,
            `ef_search` (HNSW; raised to the shortlist size at search time), `nlist` (IVF lists, default
            4 * sqrt(N), at most N / 39), `nprobe` (IVF lists visited).
        int8_scale (`str`, defaults to "dimension"): int8 scale per feature ("dimension") or per vector and
            nesting block ("vector").
        nesting_dims (list of `int`, *optional*): the nesting blocks of `int8_scale="vector"`; defaults to
            `default_matryoshka_dims(stored_dim)`.
        show_progress (`bool`, defaults to True): tqdm bars while adding vectors to the shortlist indexes.
    """

    def __init__(
        self,
        embeddings,
        ids=None,
        *,
        storage: str = "float32",
        stored_dim: int | None = None,
        shortlist_index: str = "flat",
        shortlist_dim: int | Sequence[int] | None = None,
        shortlist_storage: str = "float32",
        index_params: dict | None = None,
        int8_scale: str = "dimension",
        nesting_dims: Sequence[int] | None = None,
        show_progress: bool = True,
    ):
        _check_choice(storage, STORAGES, "storage")
        _check_choice(shortlist_storage, STORAGES, "shortlist_storage")
        _check_choice(shortlist_index, SHORTLIST_INDEXES, "shortlist_index")
        _check_choice(int8_scale, INT8_SCALES, "int8_scale")
        embeddings = _to_float_matrix(embeddings, "embeddings")
        count, dim = embeddings.shape
        if count == 0:
            raise ValueError("`embeddings` is empty (0 vectors); an index needs at least one vector.")
        if dim == 0:
            raise ValueError("`embeddings` has 0 features per vector; it needs at least one.")
        stored_dim = dim if stored_dim is None else _check_dim(stored_dim, dim, "stored_dim", "the embedding dim")
        shortlist_dims = self._check_shortlist_dims(shortlist_dim, stored_dim, shortlist_storage)
        params = self._check_index_params(index_params, count)
        blocks = self._check_nesting_dims(nesting_dims, stored_dim)
        ids = self._check_ids(ids, count)

        self.dim, self.count, self.ids = dim, count, ids
        self.storage, self.int8_scale = storage, int8_scale
        self.shortlist_index, self.shortlist_storage, self.index_params = shortlist_index, shortlist_storage, params
        unit = _l2_normalize(embeddings[:, :stored_dim])
        self._vectors = _StoredVectors.quantize(unit, storage, int8_scale, blocks)
        self._shortlists = {d: self._build_shortlist(unit[:, :d], show_progress) for d in shortlist_dims}

    # -- construction helpers ------------------------------------------------------------------------------

    @staticmethod
    def _check_shortlist_dims(shortlist_dim, stored_dim: int, shortlist_storage: str) -> list[int]:
        binary = shortlist_storage == "binary"
        if shortlist_dim is None:
            if binary:
                if stored_dim < 8:
                    raise ValueError(f"A binary shortlist needs at least 8 dims, but `stored_dim` is {stored_dim}.")
                return [max(8, stored_dim // 2 // 8 * 8)]
            return [max(min(8, stored_dim), stored_dim // 8)]
        dims = [shortlist_dim] if _is_int(shortlist_dim) else shortlist_dim
        if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence) or len(dims) == 0:
            raise ValueError(f"`shortlist_dim` must be an integer or a non-empty list of integers, got {shortlist_dim!r}.")
        for value in dims:
            _check_dim(value, stored_dim, "shortlist_dim", "the stored dim")
            if binary and value % 8:
                raise ValueError(f"`shortlist_dim` must be a multiple of 8 for a binary shortlist, got {value!r}.")
        return sorted({int(value) for value in dims})

    @staticmethod
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
            _check_positive_int(value, f"index_params['{key}']")
        if params["nlist"] > count:
            raise ValueError(f"`index_params['nlist']` is {params['nlist']}, more than the {count} vectors to cluster.")
        return {key: int(value) for key, value in params.items()}

    @staticmethod
    def _check_nesting_dims(nesting_dims, stored_dim: int) -> list[int]:
        if nesting_dims is None:
            return default_matryoshka_dims(stored_dim)
        if isinstance(nesting_dims, (str, bytes)) or not isinstance(nesting_dims, Sequence) or not nesting_dims:
            raise ValueError(f"`nesting_dims` must be a non-empty list of integers, got {nesting_dims!r}.")
        for value in nesting_dims:
            _check_dim(value, stored_dim, "nesting_dims", "the stored dim")
        return sorted({int(value) for value in nesting_dims} | {stored_dim})

    @staticmethod
    def _check_ids(ids, count: int) -> np.ndarray | None:
        if ids is None:
            return None
        if isinstance(ids, torch.Tensor):
            ids = ids.detach().cpu().numpy()
        ids = np.asarray(ids)
        if ids.shape != (count,) or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
            raise ValueError(f"`ids` must be {count} integers (one per vector), got shape {ids.shape} dtype {ids.dtype}.")
        return ids.astype(np.int64)

    def _build_shortlist(self, unit: np.ndarray, show_progress: bool):
        """One faiss index over `unit` (N, d) truncated vectors (renormalised here, or their sign bits)."""
        dim = unit.shape[1]
        index = _new_faiss_index(self.shortlist_index, self.shortlist_storage, dim, self.index_params)
        binary = self.shortlist_storage == "binary"

        def encode(rows: np.ndarray) -> np.ndarray:
            return np.packbits(rows > 0, axis=1) if binary else np.ascontiguousarray(_l2_normalize(rows))

        if not index.is_trained:
            sample_size = min(self.count, 64 * self.index_params["nlist"], 262144)
            sample = np.random.default_rng(0).choice(self.count, size=sample_size, replace=False)
            index.train(encode(unit[np.sort(sample)]))
        chunks = range(0, self.count, _ADD_CHUNK)
        for start in tqdm(chunks, desc=f"shortlist index @{dim}", disable=not show_progress or len(chunks) < 2):
            index.add(encode(unit[start : start + _ADD_CHUNK]))
        return index

    # -- building from a dataset -----------------------------------------------------------------------------

    @classmethod
    def from_dataset(
        cls,
        model,
        dataset,
        collate_fn,
        batch_size: int = 64,
        *,
        accelerator=None,
        id_column: str | None = None,
        exclude_keys: Sequence[str] = ("labels",),
        show_progress: bool = True,
        **index_kwargs,
    ) -> MatryoshkaIndex:
        """Encodes `dataset` with `model` (see `encode_embeddings`) and builds an index over the embeddings.
        `id_column` names an int column of `dataset` holding each row's id; `index_kwargs` go to `__init__`."""
        ids = None
        if id_column is not None:
            if id_column not in dataset.column_names:
                raise ValueError(f"`id_column` {id_column!r} is not a column of the dataset; columns: {dataset.column_names}.")
            ids = np.asarray(dataset[id_column])
        embeddings = encode_embeddings(
            model, dataset, collate_fn, batch_size, accelerator=accelerator, exclude_keys=exclude_keys,
            show_progress=show_progress,
        )
        return cls(embeddings, ids, show_progress=show_progress, **index_kwargs)

    # -- properties ------------------------------------------------------------------------------------------

    @property
    def stored_dim(self) -> int:
        return self._vectors.dim

    @property
    def shortlist_dims(self) -> list[int]:
        return sorted(self._shortlists)

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return (
            f"MatryoshkaIndex(count={self.count}, dim={self.dim}, stored_dim={self.stored_dim}, storage={self.storage!r}, "
            f"shortlist_index={self.shortlist_index!r}, shortlist_storage={self.shortlist_storage!r}, "
            f"shortlist_dims={self.shortlist_dims}, {self.memory_per_vector():.1f} bytes/vector)"
        )

    def memory_breakdown(self) -> dict[str, int]:
        """Bytes held, per component: stored vectors (+ int8 scales), each shortlist index, ids."""
        parts = {"vectors": self._vectors.nbytes}
        parts.update({f"shortlist@{dim}": faiss_index_nbytes(index) for dim, index in sorted(self._shortlists.items())})
        parts["ids"] = 0 if self.ids is None else self.ids.nbytes
        return parts

    @property
    def nbytes(self) -> int:
        """Total bytes held (see `memory_breakdown`)."""
        return sum(self.memory_breakdown().values())

    def memory_per_vector(self) -> float:
        """Bytes per database vector, everything included (see `memory_breakdown`)."""
        return self.nbytes / self.count

    # -- search ----------------------------------------------------------------------------------------------

    def _check_queries(self, queries) -> np.ndarray:
        if isinstance(queries, torch.Tensor):
            queries = queries.detach().to(device="cpu", dtype=torch.float32).numpy()
        queries = np.asarray(queries)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(
                f"`queries` must have shape (num_queries, {self.dim}) (the index's embedding dim), got {queries.shape}."
            )
        return _to_float_matrix(queries, "queries")

    def _check_k(self, k) -> int:
        k = _check_positive_int(k, "k")
        if k > self.count:
            raise ValueError(f"`k` is {k}, more than the {self.count} vectors in the index; allowed: 1 to {self.count}.")
        return k

    def _check_shortlist_dim(self, shortlist_dim, name: str = "shortlist_dim") -> int:
        if shortlist_dim is None:
            return self.shortlist_dims[0]
        if shortlist_dim not in self._shortlists:
            raise ValueError(
                f"`{name}` is {shortlist_dim!r}, but shortlist indexes exist only at dims {self.shortlist_dims} "
                "(chosen at build time with `shortlist_dim`)."
            )
        return int(shortlist_dim)

    def _shortlist(self, queries: np.ndarray, dim: int, size: int, ef_search, nprobe) -> np.ndarray:
        """Row numbers (nq, size) of the best `size` vectors at `dim` from its faiss index; -1 where none."""
        index = self._shortlists[dim]
        ef_search = self.index_params["ef_search"] if ef_search is None else _check_positive_int(ef_search, "ef_search")
        nprobe = self.index_params["nprobe"] if nprobe is None else _check_positive_int(nprobe, "nprobe")
        head = queries[:, :dim]
        encoded = np.packbits(head > 0, axis=1) if self.shortlist_storage == "binary" else _l2_normalize(head)
        params = _search_params(index, size, ef_search, nprobe)
        _, rows = index.search(np.ascontiguousarray(encoded), size, params=params)
        return rows

    def _rerank(self, queries: np.ndarray, candidates: np.ndarray, dim: int, keep: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact cosine at `dim` between `queries` (nq, D) and their `candidates` (nq, S) rows (-1 = none);
        returns the best `keep` per query: scores (nq, keep) float32 (-inf where none) and rows (nq, keep)."""
        num_queries, size = candidates.shape
        keep = min(keep, size)
        unit_queries = _l2_normalize(queries[:, :dim])
        out_scores = np.empty((num_queries, keep), dtype=np.float32)
        out_rows = np.empty((num_queries, keep), dtype=np.int64)
        batch = max(1, _RERANK_BATCH_BYTES // (4 * self.stored_dim * max(size, 1)))
        for start in range(0, num_queries, batch):
            rows = candidates[start : start + batch]
            valid = rows >= 0
            vectors = self._vectors.gather(np.where(valid, rows, 0), dim)  # (b, S, dim)
            dots = np.matmul(vectors, unit_queries[start : start + batch, :, None])[..., 0]
            norms = np.sqrt(np.einsum("bsd,bsd->bs", vectors, vectors))
            scores = np.where(valid, dots / np.maximum(norms, np.finfo(np.float32).tiny), -np.inf)
            if keep < size:
                best = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
                scores, rows = np.take_along_axis(scores, best, 1), np.take_along_axis(rows, best, 1)
            order = np.argsort(-scores, axis=1, kind="stable")
            out_scores[start : start + batch] = np.take_along_axis(scores, order, 1)
            out_rows[start : start + batch] = np.where(np.isfinite(out_scores[start : start + batch]),
                                                       np.take_along_axis(rows, order, 1), -1)
        return out_scores, out_rows

    def _to_ids(self, rows: np.ndarray) -> np.ndarray:
        if self.ids is None:
            return rows
        return np.where(rows >= 0, self.ids[np.maximum(rows, 0)], -1)

    def search(
        self,
        queries,
        k: int,
        shortlist_dim: int | None = None,
        shortlist_size: int | None = None,
        rerank_dim: int | None = None,
        *,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Adaptive retrieval: shortlist `shortlist_size` vectors at `shortlist_dim` with the faiss index built
        there, then re-rank them exactly at `rerank_dim` with the stored vectors.

        Args:
            queries (`np.ndarray` or `torch.Tensor` (nq, D)): full-dim query embeddings (un-normalised is fine).
            k (`int`): results per query, 1 to N.
            shortlist_dim (`int`, *optional*): one of `shortlist_dims` (default: the smallest).
            shortlist_size (`int`, *optional*): candidates kept by the shortlist, at least k (default:
                max(k, 200)); clipped to N, so `shortlist_size=N` makes the search exact at `rerank_dim`.
            rerank_dim (`int`, *optional*): dim of the exact re-rank, 1 to `stored_dim` (default: `stored_dim`).
            ef_search / nprobe (`int`, *optional*): HNSW / IVF search breadth (default: `index_params`).

        Returns:
            `(scores, ids)`: float32 (nq, k) cosines at `rerank_dim`, best first, and int64 (nq, k) ids
            (the `ids` given at build time, else row numbers); -1 ids / -inf scores where fewer were found.
        """
        queries = self._check_queries(queries)
        k = self._check_k(k)
        shortlist_dim = self._check_shortlist_dim(shortlist_dim)
        size = max(k, DEFAULT_SHORTLIST_SIZE) if shortlist_size is None else _check_positive_int(shortlist_size, "shortlist_size")
        if size < k:
            raise ValueError(f"`shortlist_size` is {size}, fewer than `k`={k}; allowed: at least k.")
        rerank_dim = self.stored_dim if rerank_dim is None else _check_dim(
            rerank_dim, self.stored_dim, "rerank_dim", "the stored dim")
        candidates = self._shortlist(queries, shortlist_dim, min(size, self.count), ef_search, nprobe)
        scores, rows = self._rerank(queries, candidates, rerank_dim, k)
        return scores, self._to_ids(rows)

    def funnel_search(
        self,
        queries,
        k: int,
        dims: Sequence[int] | None = None,
        shortlist_sizes: Sequence[int] | None = None,
        *,
        ef_search: int | None = None,
        nprobe: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The MRL paper's funnel: shortlist `shortlist_sizes[0]` at `dims[0]` (a built shortlist dim), then
        re-rank the survivors at each later dim, keeping `shortlist_sizes[i]` after stage i; returns the top k
        of the last stage (scores at `dims[-1]`, ids) like `search`.

        Defaults: `dims` = the smallest shortlist dim, doubled until `stored_dim` (which ends the list);
        `shortlist_sizes` = 800 halved at each stage, the last being max(k, 10) (the paper's
        [800, 400, 200, 50, 10] for five stages is a good explicit choice). Sizes are clipped to N.
        """
        queries = self._check_queries(queries)
        k = self._check_k(k)
        dims = self._check_funnel_dims(dims)
        sizes = self._check_funnel_sizes(shortlist_sizes, len(dims), k)
        sizes = [min(size, self.count) for size in sizes]
        candidates = self._shortlist(queries, dims[0], sizes[0], ef_search, nprobe)
        scores = None
        for dim, size in zip(dims[1:], sizes[1:], strict=True):
            scores, candidates = self._rerank(queries, candidates, dim, size)
        if scores is None:  # a one-stage funnel is a plain shortlist: score it at its dim
            scores, candidates = self._rerank(queries, candidates, dims[0], k)
        return scores[:, :k], self._to_ids(candidates[:, :k])

    def _check_funnel_dims(self, dims) -> list[int]:
        if dims is None:
            dims = [self.shortlist_dims[0]]
            while dims[-1] * 2 < self.stored_dim:
                dims.append(dims[-1] * 2)
            return dims + [self.stored_dim] if dims[-1] < self.stored_dim else dims
        if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence) or len(dims) == 0:
            raise ValueError(f"`dims` must be a non-empty list of rising integers, got {dims!r}.")
        for value in dims:
            _check_dim(value, self.stored_dim, "dims", "the stored dim")
        if any(later <= earlier for earlier, later in pairwise(dims)):
            raise ValueError(f"`dims` must be strictly rising, got {list(dims)!r}.")
        self._check_shortlist_dim(dims[0], name="dims[0]")
        return [int(value) for value in dims]

    @staticmethod
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

    # -- save / load -----------------------------------------------------------------------------------------

    def save(self, path) -> Path:
        """Writes the index to the folder `path`: `vectors.npy` (+ `scales.npy`, `ids.npy`), one
        `shortlist_<dim>.faiss` per shortlist dim and `manifest.json` (settings, shapes, sha256 of every file).
        Everything is written into a temporary folder beside `path`, then renamed into place, so `path` never
        holds a half-written index. An existing index folder at `path` is replaced; any other existing path
        is refused."""
        path = Path(path)
        if path.exists() and not (path.is_dir() and (path / MANIFEST).is_file()):
            raise ValueError(f"`path` {str(path)!r} exists and is not a saved MatryoshkaIndex; refusing to overwrite it.")
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            arrays = {"vectors.npy": self._vectors.codes, "scales.npy": self._vectors.scales, "ids.npy": self.ids}
            for name, array in arrays.items():
                if array is not None:
                    np.save(staging / name, array, allow_pickle=False)
            shortlist_files = {}
            for dim, index in sorted(self._shortlists.items()):
                shortlist_files[str(dim)] = name = f"shortlist_{dim}.faiss"
                writer = faiss.write_index_binary if isinstance(index, faiss.IndexBinary) else faiss.write_index
                writer(index, str(staging / name))
            files = {
                file.name: {"sha256": _sha256(file), "bytes": file.stat().st_size} for file in sorted(staging.iterdir())
            }
            manifest = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "count": self.count,
                "dim": self.dim,
                "stored_dim": self.stored_dim,
                "storage": self.storage,
                "int8_scale": self.int8_scale,
                "nesting_dims": self._vectors.blocks,
                "shortlist_index": self.shortlist_index,
                "shortlist_storage": self.shortlist_storage,
                "shortlist_files": shortlist_files,
                "index_params": self.index_params,
                "files": files,
            }
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            self._move_into_place(staging, path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return path

    @staticmethod
    def _move_into_place(staging: Path, path: Path) -> None:
        if not path.exists():
            os.replace(staging, path)
            return
        retired = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
        os.replace(path, retired / path.name)
        os.replace(staging, path)
        shutil.rmtree(retired, ignore_errors=True)

    @classmethod
    def load(cls, path) -> MatryoshkaIndex:
        """Reads an index written by `save`. Every file's size and sha256 are checked against the manifest and
        every array's shape against the manifest's count and dims: a truncated, corrupted or mismatched folder
        raises `ValueError` naming the file, before anything is used."""
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise ValueError(f"`path` {str(path)!r} is not a saved MatryoshkaIndex: it has no {MANIFEST}.")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{manifest_path} is not valid JSON ({error}); the index folder is corrupted.") from error
        cls._check_manifest(manifest, manifest_path)
        for name, info in manifest["files"].items():
            file = path / name
            if Path(name).name != name or not file.is_file():
                raise ValueError(f"{path}: the manifest lists {name!r}, which is missing; the index folder is incomplete.")
            size = file.stat().st_size
            if size != info["bytes"]:
                raise ValueError(
                    f"{file} has {size} bytes but the manifest says {info['bytes']}: the file is truncated or replaced."
                )
            digest = _sha256(file)
            if digest != info["sha256"]:
                raise ValueError(f"{file} fails its checksum (sha256 {digest}, manifest {info['sha256']}): it is corrupted.")

        count, dim, stored_dim, storage = manifest["count"], manifest["dim"], manifest["stored_dim"], manifest["storage"]
        blocks = [int(value) for value in manifest["nesting_dims"]]
        code_width = (stored_dim + 7) // 8 if storage == "binary" else stored_dim
        code_dtype = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16, "int8": np.int8,
                      "binary": np.uint8}[storage]
        codes = cls._load_array(path, manifest, "vectors.npy", (count, code_width), code_dtype)
        scales = None
        if storage == "int8":
            scale_shape = (stored_dim,) if manifest["int8_scale"] == "dimension" else (count, len(blocks))
            scales = cls._load_array(path, manifest, "scales.npy", scale_shape, np.float32)
        ids = cls._load_array(path, manifest, "ids.npy", (count,), np.int64) if "ids.npy" in manifest["files"] else None

        shortlists = {}
        for dim_text, name in manifest["shortlist_files"].items():
            if name not in manifest["files"]:
                raise ValueError(f"{path}: shortlist file {name!r} is not in the manifest's file list.")
            binary = manifest["shortlist_storage"] == "binary"
            index = (faiss.read_index_binary if binary else faiss.read_index)(str(path / name))
            if index.ntotal != count or index.d != int(dim_text):
                raise ValueError(
                    f"{path / name} holds {index.ntotal} vectors of dim {index.d}, but the manifest says {count} of "
                    f"dim {dim_text}: the folder mixes files of different indexes."
                )
            shortlists[int(dim_text)] = index

        self = cls.__new__(cls)
        self.dim, self.count, self.ids = dim, count, ids
        self.storage, self.int8_scale = storage, manifest["int8_scale"]
        self.shortlist_index, self.shortlist_storage = manifest["shortlist_index"], manifest["shortlist_storage"]
        self.index_params = {key: int(value) for key, value in manifest["index_params"].items()}
        self._vectors = _StoredVectors(storage, stored_dim, codes, scales, blocks)
        self._shortlists = shortlists
        return self

    @staticmethod
    def _check_manifest(manifest, manifest_path: Path) -> None:
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise ValueError(f"{manifest_path} is not a MatryoshkaIndex manifest (its `format` is not {FORMAT_NAME!r}).")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{manifest_path} has format_version {manifest.get('format_version')!r}; this version reads {FORMAT_VERSION}."
            )
        required = ["count", "dim", "stored_dim", "storage", "int8_scale", "nesting_dims", "shortlist_index",
                    "shortlist_storage", "shortlist_files", "index_params", "files"]
        missing = [key for key in required if key not in manifest]
        if missing:
            raise ValueError(f"{manifest_path} lacks the keys {missing}; the manifest is corrupted.")
        _check_choice(manifest["storage"], STORAGES, "manifest storage")
        _check_choice(manifest["shortlist_storage"], STORAGES, "manifest shortlist_storage")
        _check_choice(manifest["shortlist_index"], SHORTLIST_INDEXES, "manifest shortlist_index")
        _check_choice(manifest["int8_scale"], INT8_SCALES, "manifest int8_scale")
        for key in ("count", "dim", "stored_dim"):
            _check_positive_int(manifest[key], f"manifest {key}")

    @staticmethod
    def _load_array(path: Path, manifest: dict, name: str, shape: tuple, dtype) -> np.ndarray:
        if name not in manifest["files"]:
            raise ValueError(f"{path}: the manifest lists no {name!r}, which this index needs.")
        try:
            array = np.load(path / name, allow_pickle=False)
        except ValueError as error:
            raise ValueError(f"{path / name} is not a readable .npy array ({error}).") from error
        if array.shape != shape or array.dtype != np.dtype(dtype):
            raise ValueError(
                f"{path / name} has shape {array.shape} and dtype {array.dtype}, but the manifest implies shape "
                f"{shape} and dtype {np.dtype(dtype)}: the folder mixes files of different indexes."
            )
        return array


# ----------------------------------------------------------------------------------------------------------
# Encoding a dataset
# ----------------------------------------------------------------------------------------------------------


def encode_embeddings(
    model,
    dataset,
    collate_fn,
    batch_size: int = 64,
    *,
    accelerator=None,
    exclude_keys: Sequence[str] = ("labels",),
    show_progress: bool = True,
) -> np.ndarray:
    """Full embeddings (N, D) float32 of every row of `dataset`, in order: `model(**batch).embeddings` for
    `batch = collate_fn(rows)` (minus `exclude_keys`), batched, without gradients.

    With an `accelerate.Accelerator` (one is made when none is given and the script runs under
    `accelerate launch` / torchrun with several processes), batches are split across its processes and
    gathered back with `gather_for_metrics` (which drops the duplicated samples that even out the last
    batch); every process gets all N rows in dataset order.
    """
    batch_size = _check_positive_int(batch_size, "batch_size")
    if len(dataset) == 0:
        raise ValueError("`dataset` is empty (0 rows); there is nothing to encode.")
    if accelerator is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=not torch.cuda.is_available())
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn)
    if accelerator is not None:
        loader = accelerator.prepare(loader)
        device = accelerator.device
        model = model.to(device)
        show_progress = show_progress and accelerator.is_local_main_process
    else:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    parts = []
    try:
        with torch.inference_mode():
            for batch in tqdm(loader, desc="encoding", disable=not show_progress):
                inputs = {
                    key: value.to(device) if isinstance(value, torch.Tensor) else value
                    for key, value in batch.items()
                    if key not in exclude_keys
                }
                embeddings = model(**inputs).embeddings
                if accelerator is not None:
                    embeddings = accelerator.gather_for_metrics(embeddings)
                parts.append(embeddings.float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(parts)
