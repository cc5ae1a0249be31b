"""Stored vectors of a `MatryoshkaIndex`: quantise once, dequantise any slice, re-rank candidates exactly.

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
  the slice of the signs, and every k-dim sign vector has norm sqrt(k). No float vector is kept, so a re-rank on
  binary storage scores (float query) x (sign vector): about half of the exact top 10 even when every vector is
  re-ranked (0.4-0.5 on the test vectors). A binary shortlist with a float re-rank is `shortlist_storage="binary"`
  with `storage="float32"`.
- After dequantising a slice it is renormalised by its own norm, so scores are cosines at every dim.
"""

from __future__ import annotations

import numpy as np
import torch

_RERANK_BATCH_BYTES = 32 * 2**20  # candidate vectors gathered at once during a re-rank


def _peak_scaled(array: np.ndarray) -> np.ndarray:
    """Rows divided by their largest magnitude (float32; an all-zero row stays zero): their squares then neither
    overflow (values near 1e38: a norm of inf would zero the row) nor underflow (values near 1e-25: a norm of 0)."""
    peak = np.abs(array).max(axis=-1, keepdims=True) if array.shape[-1] else np.ones((*array.shape[:-1], 1))
    return (array / np.maximum(peak, np.finfo(np.float32).tiny)).astype(np.float32, copy=False)


def _l2_normalize(array: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (float32; an all-zero row stays zero), peak-scaled first (`_peak_scaled`)."""
    scaled = _peak_scaled(array)
    norms = np.linalg.norm(scaled, axis=-1, keepdims=True)
    return scaled / np.maximum(norms, np.finfo(np.float32).tiny)


class _StoredVectors:
    """The re-rank vectors at `dim` features, in one of `STORAGES` (see the module docstring)."""

    def __init__(self, storage: str, dim: int, codes: np.ndarray, scales: np.ndarray | None, blocks: list[int]):
        self.storage, self.dim, self.codes, self.scales, self.blocks = storage, dim, codes, scales, blocks
        self._inverse_norms: dict[int, np.ndarray] = {}

    def inverse_norms(self, dim: int) -> np.ndarray:
        """float32 (N,): 1 / the norm of each float32 vector's first `dim` features (0 for an all-zero prefix),
        computed once per dim (N floats each)."""
        if dim not in self._inverse_norms:
            norms = np.linalg.norm(self.codes[:, :dim], axis=1)
            self._inverse_norms[dim] = np.where(norms > 0, 1 / np.maximum(norms, np.finfo(np.float32).tiny), 0).astype(np.float32)
        return self._inverse_norms[dim]

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

    def zero_rows(self, dim: int) -> np.ndarray:
        """Row numbers whose first `dim` stored features are all zero (never for binary: signs read as +-1)."""
        if self.storage == "binary":
            return np.zeros(0, dtype=np.int64)
        codes = self.codes[:, :dim]
        if self.storage == "bfloat16":
            codes = codes & np.uint16(0x7FFF)  # -0.0 is zero too
        return np.flatnonzero(~codes.any(axis=1))

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + (0 if self.scales is None else self.scales.nbytes)


def _rerank(
    vectors: _StoredVectors, queries: np.ndarray, candidates: np.ndarray, dim: int, keep: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine at `dim` between `queries` (nq, D) and their `candidates` (nq, S) rows (-1 = none) of the
    stored `vectors`; returns the best `keep` per query: scores (nq, keep) float32 (-inf where none) and rows
    (nq, keep)."""
    num_queries, size = candidates.shape
    keep = min(keep, size)
    unit_queries = _l2_normalize(queries[:, :dim])
    out_scores = np.empty((num_queries, keep), dtype=np.float32)
    out_rows = np.empty((num_queries, keep), dtype=np.int64)
    fast = vectors.storage == "float32"  # scored in place by faiss: no gathered copy of the candidates
    batch = max(1, _RERANK_BATCH_BYTES // ((16 if fast else 4 * vectors.dim) * max(size, 1)))
    for start in range(0, num_queries, batch):
        rows = candidates[start : start + batch]
        valid = rows >= 0
        if fast:
            scores = _float32_cosines(vectors, unit_queries[start : start + batch], rows, valid, dim)
        else:
            gathered = vectors.gather(np.where(valid, rows, 0), dim)  # (b, S, dim)
            dots = np.matmul(gathered, unit_queries[start : start + batch, :, None])[..., 0]
            norms = np.sqrt(np.einsum("bsd,bsd->bs", gathered, gathered))
            scores = np.where(valid, dots / np.maximum(norms, np.finfo(np.float32).tiny), -np.inf)
        if keep < size:
            best = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
            scores, rows = np.take_along_axis(scores, best, 1), np.take_along_axis(rows, best, 1)
        order = np.argsort(-scores, axis=1, kind="stable")
        out_scores[start : start + batch] = np.take_along_axis(scores, order, 1)
        out_rows[start : start + batch] = np.where(np.isfinite(out_scores[start : start + batch]),
                                                   np.take_along_axis(rows, order, 1), -1)
    return out_scores, out_rows


def _float32_cosines(vectors: _StoredVectors, unit_queries: np.ndarray, rows: np.ndarray, valid: np.ndarray,
                     dim: int) -> np.ndarray:
    """Cosines at `dim` (b, S) between unit queries (b, dim) and stored float32 rows (b, S) (-inf where not
    `valid`). faiss's `fvec_inner_products_by_idx` (C++, OpenMP) reads the candidates where they lie; its rows
    are whole stored vectors, so the queries are zero-padded past `dim`, and the dots are divided by the
    candidates' norms at `dim` (1 at the stored dim: the vectors are stored L2-normalised)."""
    import faiss

    count, stored_dim = vectors.codes.shape
    padded = np.zeros((len(rows), stored_dim), dtype=np.float32)
    padded[:, :dim] = unit_queries
    safe_rows = np.ascontiguousarray(np.where(valid, rows, -1), dtype=np.int64)
    dots = np.empty(rows.shape, dtype=np.float32)
    faiss.fvec_inner_products_by_idx(faiss.swig_ptr(dots), faiss.swig_ptr(padded), faiss.swig_ptr(vectors.codes),
                                     faiss.swig_ptr(safe_rows), stored_dim, rows.shape[0], rows.shape[1])
    if dim != stored_dim:
        dots *= vectors.inverse_norms(dim)[np.maximum(rows, 0)]
    return np.where(valid, dots, -np.inf).astype(np.float32, copy=False)


def _exact_search(vectors: _StoredVectors, queries: np.ndarray, dim: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: the cosine at `dim` between `queries` (nq, D) and every stored float32 vector, in blocks of
    database rows; returns the best `k` per query, best first (ties: lower row first): scores (nq, k) float32 and
    rows (nq, k). The caller checks that `vectors` are float32."""
    count, num_queries = len(vectors.codes), len(queries)
    unit_queries = _l2_normalize(queries[:, :dim])
    best_scores = np.empty((num_queries, 0), dtype=np.float32)
    best_rows = np.empty((num_queries, 0), dtype=np.int64)
    block = max(1, _RERANK_BATCH_BYTES // (4 * (dim + num_queries)))
    for start in range(0, count, block):
        rows = vectors.codes[start : start + block, :dim]
        norms = np.linalg.norm(rows, axis=1)
        scores = (unit_queries @ rows.T) / np.maximum(norms, np.finfo(np.float32).tiny)
        scores = np.concatenate([best_scores, scores], axis=1)
        numbers = np.broadcast_to(np.arange(start, start + len(rows)), (num_queries, len(rows)))
        found = np.concatenate([best_rows, numbers], axis=1)
        if scores.shape[1] > k:
            keep = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            scores, found = np.take_along_axis(scores, keep, 1), np.take_along_axis(found, keep, 1)
        best_scores, best_rows = scores, found
    order = np.lexsort((best_rows, -best_scores), axis=1)
    return np.take_along_axis(best_scores, order, 1), np.take_along_axis(best_rows, order, 1)
