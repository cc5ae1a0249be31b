"""MatryoshkaIndex: adaptive retrieval over Matryoshka embeddings (a low-dim shortlist, then a high-dim re-rank).

One database of full embeddings serves every granularity: a search at dim k reads the first k features of
each stored vector and L2-renormalises them (truncate first, then normalise), so scores at dim k are the
cosine similarities of the k-dim embeddings.

Two pieces of storage:

- the **stored vectors** (`storage`), read by the exact re-rank at any dim up to `stored_dim`;
- one faiss **shortlist index** per shortlist dim (`shortlist_index` = flat / hnsw / ivf, with
  `shortlist_storage`), built at build time over the truncated, renormalised vectors (sign bits for binary).

`search(exact=True)` skips the shortlist: brute force over the stored vectors (float32 storage only).

Storage, shortlists, argument checks and save / load live in the sibling modules (`storage.py`,
`shortlists.py`, `validation.py`, `persistence.py`); this class ties them together.

Memory per vector: `memory_per_vector()` (total bytes) and `memory_breakdown()` (bytes per component).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..modeling.checks import check_bool
from .base import DEFAULT_SHORTLIST_SIZE, MatryoshkaIndexBase
from .choices import INT8_SCALES, SHORTLIST_INDEXES, STORAGES
from .encoding import check_model_record
from .persistence import load_index_folder, save_index_folder
from .shortlists import DEFAULT_INDEX_PARAMS, _build_shortlist, _search_shortlist, faiss_index_nbytes
from .storage import _exact_search, _l2_normalize, _rerank, _StoredVectors
from .validation import (
    _check_choice,
    _check_cluster_dim,
    _check_dim,
    _check_ids,
    _check_index_params,
    _check_nesting_dims,
    _check_nonzero_database,
    _check_nonzero_rows,
    _check_positive_int,
    _check_shortlist_dims,
    _shown,
    _to_float_matrix,
)

__all__ = ["MatryoshkaIndex", "DEFAULT_SHORTLIST_SIZE", "DEFAULT_FUNNEL_SIZES"]

DEFAULT_FUNNEL_SIZES = (800, 400, 200, 50, 10)  # the MRL paper's funnel


class MatryoshkaIndex(MatryoshkaIndexBase):
    """Adaptive retrieval over Matryoshka embeddings: a faiss shortlist at a low dim, an exact re-rank at a
    higher dim (see `storage.py` for the storage rules).

    Args:
        embeddings (`np.ndarray` or `torch.Tensor` of shape (N, D)): database embeddings, un-normalised is fine;
            rows that are all zeros in the first `min(shortlist_dim)` features are refused (never found).
        ids (array of N ints, *optional*): a unique id per vector, 0 to 2**63 - 1 (-1 marks "not found" in
            search results); searches return these ids. Defaults to the row numbers 0..N-1.
        storage (`str`, defaults to "float32"): dtype of the stored re-rank vectors, one of `STORAGES`. Only
            "float32" keeps full-precision vectors (what `search(exact=True)` reads). "binary" keeps sign bits
            alone and re-ranks on them, with a warning: expect about half of the exact top 10 (0.4-0.5 on random
            vectors) even with the whole database shortlisted. For a binary shortlist with a float re-rank, keep
            `storage="float32"` and set `shortlist_storage="binary"`.
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
            4 * sqrt(N), at most N / 39), `nprobe` (IVF lists visited), `cluster_dim` (AdANNS-IVF: IVF shortlists
            at dims above it take their clusters from the first `cluster_dim` features and score their lists at
            their own dim; default: each shortlist's own dim).
        int8_scale (`str`, defaults to "dimension"): int8 scale per feature ("dimension") or per vector and
            nesting block ("vector").
        nesting_dims (list of `int`, *optional*): the nesting blocks of `int8_scale="vector"`; defaults to
            `default_matryoshka_dims(stored_dim)`.
        show_progress (`bool`, *optional*): tqdm bars while adding vectors to the shortlist indexes (default: where
            `hf_mrl.modeling.progress.should_show_progress` allows them: stderr a terminal, bars not switched off).
        model (`dict`, *optional*): the model that encoded `embeddings`, as `{"fingerprint": model_fingerprint(m),
            "name_or_path": ...}`; `from_dataset` fills it in. Saved in the manifest, and `check_model` then refuses
            any other model. None (raw embeddings): no check.
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
        show_progress: bool | None = None,
        model: dict | None = None,
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
        shortlist_dims = _check_shortlist_dims(shortlist_dim, stored_dim, shortlist_storage)
        params = _check_index_params(index_params, count)
        _check_cluster_dim(params["cluster_dim"], shortlist_index, shortlist_storage, stored_dim)
        blocks = _check_nesting_dims(nesting_dims, stored_dim)
        ids = _check_ids(ids, count)
        _check_nonzero_database(embeddings, shortlist_dims[0], "the smallest shortlist dim")
        _warn_binary_storage(storage)
        self.model = check_model_record(model)
        self.dim, self.count, self.ids = dim, count, ids
        self.storage, self.int8_scale = storage, int8_scale
        self.shortlist_index, self.shortlist_storage, self.index_params = shortlist_index, shortlist_storage, params
        unit = _l2_normalize(embeddings[:, :stored_dim])
        self._vectors = _StoredVectors.quantize(unit, storage, int8_scale, blocks)
        self._shortlists = {
            d: _build_shortlist(unit[:, :d], shortlist_index, shortlist_storage, params, show_progress)
            for d in shortlist_dims
        }

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

    def _check_k(self, k) -> int:
        k = super()._check_k(k)
        if k > self.count:
            raise ValueError(f"`k` is {k}, more than the {self.count} vectors in the index; allowed: 1 to {self.count}.")
        return k

    def _check_stage_dim(self, value, name: str) -> int:
        return _check_dim(value, self.stored_dim, name, "the stored dim")

    def _default_funnel_dims(self) -> list[int]:
        dims = [self.shortlist_dims[0]]
        while dims[-1] * 2 < self.stored_dim:
            dims.append(dims[-1] * 2)
        return dims + [self.stored_dim] if dims[-1] < self.stored_dim else dims

    def _check_stored_rows(self, dim: int, what: str = "`rerank_dim` is") -> None:
        """Refuses a re-rank at `dim` when some stored vectors are all zeros in their first `dim` features (below
        the smallest shortlist dim, which the build checked, or zeroed by quantisation): they would score 0 against
        every query. Each dim is checked once per index."""
        checked = self.__dict__.setdefault("_nonzero_dims", set())
        if dim in checked:
            return
        rows = self._vectors.zero_rows(dim)
        if len(rows):
            raise ValueError(
                f"{what} {dim}, but stored vector rows {_shown(rows)} are all zeros in their first {dim} "
                "features: they would score 0 against every query and never be found; allowed: larger "
                f"dims (up to {self.stored_dim})."
            )
        checked.add(dim)

    def _shortlist(self, queries: np.ndarray, dim: int, size: int, ef_search, nprobe) -> np.ndarray:
        """Row numbers (nq, size) of the best `size` vectors at `dim` from its faiss index; -1 where none."""
        ef_search = self.index_params["ef_search"] if ef_search is None else _check_positive_int(ef_search, "ef_search")
        nprobe = self.index_params["nprobe"] if nprobe is None else _check_positive_int(nprobe, "nprobe")
        binary = self.shortlist_storage == "binary"
        return _search_shortlist(self._shortlists[dim], queries[:, :dim], size, binary, ef_search, nprobe)

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
        exact: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Adaptive retrieval: shortlist `shortlist_size` vectors at `shortlist_dim` with the faiss index built
        there, then re-rank them exactly at `rerank_dim` with the stored vectors. With `exact=True`: brute force,
        the cosine at `rerank_dim` (default: `stored_dim`, the full dim) with every stored vector, no shortlist.

        Args:
            queries (`np.ndarray` or `torch.Tensor` (nq, D)): full-dim query embeddings (un-normalised is fine).
            k (`int`): results per query, 1 to N.
            shortlist_dim (`int`, *optional*): one of `shortlist_dims` (default: the smallest).
            shortlist_size (`int`, *optional*): candidates kept by the shortlist, at least k (default:
                max(k, 200)); clipped to N, so `shortlist_size=N` makes the search exact at `rerank_dim`.
            rerank_dim (`int`, *optional*): dim of the exact re-rank, 1 to `stored_dim` (default: `stored_dim`).
            ef_search / nprobe (`int`, *optional*): HNSW / IVF search breadth (default: `index_params`).
            exact (`bool`, defaults to False): search the whole database by brute force on the float32 stored
                vectors (an index with another `storage` refuses it); `shortlist_dim`, `shortlist_size`,
                `ef_search` and `nprobe` must be left out. Equal to a numpy brute force at `rerank_dim`.

        Returns:
            `(scores, ids)`: float32 (nq, k) cosines at `rerank_dim`, best first, and int64 (nq, k) ids
            (the `ids` given at build time, else row numbers); -1 ids / -inf scores where fewer were found.
        """
        if check_bool(exact, "exact"):
            options = {"shortlist_dim": shortlist_dim, "shortlist_size": shortlist_size, "ef_search": ef_search,
                       "nprobe": nprobe}
            queries, k, rerank_dim = self._check_exact_search(queries, k, rerank_dim, options)
            if self.storage != "float32":
                raise ValueError(
                    f"`exact=True` reads full-precision vectors, but this index stores {self.storage} codes "
                    f"(`storage={self.storage!r}`); allowed: an index built with storage='float32' "
                    "(shortlist_storage='binary' keeps a binary shortlist beside it)."
                )
            _check_nonzero_rows(queries, rerank_dim, "queries")
            self._check_stored_rows(rerank_dim)
            scores, rows = _exact_search(self._vectors, queries, rerank_dim, k)
            return scores, self._to_ids(rows)
        queries, k, shortlist_dim, size, rerank_dim = self._check_search(queries, k, shortlist_dim, shortlist_size, rerank_dim)
        _check_nonzero_rows(queries, min(shortlist_dim, rerank_dim), "queries")
        self._check_stored_rows(rerank_dim)
        candidates = self._shortlist(queries, shortlist_dim, min(size, self.count), ef_search, nprobe)
        scores, rows = _rerank(self._vectors, queries, candidates, rerank_dim, k)
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
        of the last stage (scores at `dims[-1]`, ids) like `search`. `dims[1]` may equal `dims[0]`: a quantised
        shortlist re-ranked at its own dim from the stored float vectors before the later dims.

        Defaults: `dims` = the smallest shortlist dim, doubled until `stored_dim` (which ends the list);
        `shortlist_sizes` = 800 halved at each stage, the last being max(k, 10) (the paper's
        [800, 400, 200, 50, 10] for five stages is a good explicit choice). Sizes are clipped to N.
        """
        queries, k, dims, sizes = self._check_funnel(queries, k, dims, shortlist_sizes)
        sizes = [min(size, self.count) for size in sizes]
        _check_nonzero_rows(queries, dims[0], "queries")
        for dim in dims:
            self._check_stored_rows(dim, "`dims` includes")
        candidates = self._shortlist(queries, dims[0], sizes[0], ef_search, nprobe)
        scores = None
        for dim, size in zip(dims[1:], sizes[1:], strict=True):
            scores, candidates = _rerank(self._vectors, queries, candidates, dim, size)
        if scores is None:  # a one-stage funnel is a plain shortlist: score it at its dim
            scores, candidates = _rerank(self._vectors, queries, candidates, dims[0], k)
        return scores[:, :k], self._to_ids(candidates[:, :k])

    # -- save / load -----------------------------------------------------------------------------------------

    def save(self, path) -> Path:
        """Writes the index to the folder `path`: `vectors.npy` (+ `scales.npy`, `ids.npy`), one
        `shortlist_<dim>.faiss` per shortlist dim and `manifest.json` (settings, the model's fingerprint, sha256 of
        every file and field). Everything is written into a temporary folder beside `path`, then renamed into
        place, so `path` never holds a half-written index. An existing index folder at `path` is replaced (files
        in it that the index did not write are kept); any other existing path is refused. Temporary folders left
        by a killed save are removed."""
        return save_index_folder(self, path)

    @classmethod
    def load(cls, path) -> MatryoshkaIndex:
        """Reads an index written by `save`. Every file's size and sha256 are checked against the manifest and
        every array's shape against the manifest's count and dims, every manifest field against its saved sha256:
        a truncated, corrupted, edited or mismatched folder raises `ValueError` naming the file (and the field),
        before anything is used."""
        manifest, vectors, ids, shortlists = load_index_folder(path)
        self = cls.__new__(cls)
        self.model = manifest.get("model")
        self.dim, self.count, self.ids = manifest["dim"], manifest["count"], ids
        self.storage, self.int8_scale = manifest["storage"], manifest["int8_scale"]
        self.shortlist_index, self.shortlist_storage = manifest["shortlist_index"], manifest["shortlist_storage"]
        saved = {key: None if value is None else int(value) for key, value in manifest["index_params"].items()}
        self.index_params = {**DEFAULT_INDEX_PARAMS, **saved}  # folders saved before `cluster_dim` lack it
        self._vectors = vectors
        self._shortlists = shortlists
        _warn_binary_storage(self.storage)
        return self


def _warn_binary_storage(storage: str) -> None:
    """Binary storage keeps no float vector: its re-rank is far from exact, which nothing else would say."""
    if storage == "binary":
        warnings.warn(
            "storage='binary' re-ranks on the sign bits (no float vectors are kept): expect about half of the exact "
            "top 10, even with the whole database shortlisted. For a binary shortlist with a float re-rank, build with "
            "storage='float32', shortlist_storage='binary'.",
            UserWarning,
            stacklevel=3,
        )
