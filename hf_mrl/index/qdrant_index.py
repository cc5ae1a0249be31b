"""QdrantMatryoshkaIndex: `MatryoshkaIndex`'s adaptive retrieval on a Qdrant collection (scale-out).

The collection holds one named cosine vector per stored dim (`dim_<d>`: the embedding truncated to d features,
then renormalised): the shortlist dim(s), with an HNSW graph and optional binary / int8 quantisation, and the
re-rank dim(s), kept only to re-score prefetched points. A search is one Query API request per batch of
queries: the shortlist is the innermost `prefetch`, each re-rank stage the query around it, so the whole
funnel runs inside the engine.

Where the collection lives (see `qdrant_engines.py`): Qdrant Edge, the embedded engine, for
`location=":memory:"` (default) or `path=DIR`; a Qdrant server or cluster for `url=` / `api_key=`, or any
`QdrantClient` passed as `client=`. Nothing else changes between them. Argument and layout checks live in
`qdrant_checks.py`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..modeling.checks import check_bool
from ..modeling.progress import should_show_progress
from .base import MatryoshkaIndexBase
from .encoding import check_model_record, dataset_payloads
from .qdrant_build import (
    BUILDING,
    COMPLETE,
    build_record,
    check_disk_space,
    expected_bytes,
    incomplete_error,
    input_digest,
    other_build_error,
    payload_keys,
    payload_types,
    stopped_error,
)
from .qdrant_checks import (
    DEFAULT_COLLECTION,
    FORMAT_NAME,
    FORMAT_VERSION,
    _check_hnsw_config,
    _check_payloads,
    _check_point_ids,
    check_filter_keys,
    check_layout,
    open_engine,
    vector_specs,
)
from .qdrant_engines import QUANTIZATIONS, Stage, vector_name
from .storage import _l2_normalize
from .validation import (
    _check_choice,
    _check_dim_list,
    _check_nonzero_database,
    _check_nonzero_rows,
    _check_positive_int,
    _check_shortlist_dims,
    _is_int,
    _to_float_matrix,
)

_CONNECTION = {"collection_name": DEFAULT_COLLECTION, "location": None, "path": None, "url": None,
               "api_key": None, "client": None, "max_search_threads": None}


class QdrantMatryoshkaIndex(MatryoshkaIndexBase):
    """Adaptive retrieval (low-dim shortlist, higher-dim re-rank) served by Qdrant: the same `search` /
    `funnel_search` as `MatryoshkaIndex`, each one Query API request per batch of queries.

    Building uploads the points in batches (upserts keyed by id) and records the collection "complete" only
    after the last one is flushed; `open` refuses an incomplete collection. Building again with the same input
    resumes an interrupted build (or, when complete, just opens it); a collection of other data or settings is
    replaced only with `overwrite=True`. An existing collection is opened with `QdrantMatryoshkaIndex.open`.

    Args:
        embeddings (`np.ndarray` or `torch.Tensor` of shape (N, D)): database embeddings, un-normalised is fine.
        ids (array of N ints, *optional*): unique point ids from 0 to 2**63 - 1 (Qdrant keys points by id); searches
            return them. Defaults to the row numbers 0..N-1.
        payloads (list of N `dict`, *optional*): stored with each point (e.g. the text, the label name);
            filters match on them and `payloads(ids)` reads them back. Values: None, bool, int, float (finite),
            str, and lists / dicts of them.
        shortlist_dim (`int` or list of `int`, *optional*): dim(s) of the shortlist vectors (HNSW, optional
            quantisation). Defaults as `MatryoshkaIndex`: D // 8 (at least 8), D // 2 for a binary shortlist.
        rerank_dim (`int` or list of `int`, *optional*, defaults to D): dim(s) of the re-rank vectors. A
            search re-ranks at a stored dim; a funnel passes through stored dims.
        shortlist_quantization (`str`, *optional*): "binary" or "int8": Qdrant quantisation of the shortlist
            vectors (the re-rank stays float32).
        hnsw_config (`dict`, *optional*): HNSW of the shortlist vectors, Qdrant's names: `m`, `ef_construct`,
            `full_scan_threshold` (kilobytes below which a segment is scanned, not graph-searched).
        location (`str`, *optional*): ":memory:" keeps the collection in a temporary folder (Qdrant Edge,
            embedded; also what happens when no `path`, `url` or `client` is given); an http(s) URL works as
            `url`. ":memory:" together with `path`, `url` or `client` is refused.
        path (`str` or `os.PathLike`, *optional*): a folder for the embedded engine (Qdrant Edge); the
            collection is its sub-folder `collection_name`.
        url, api_key (`str`, *optional*): a Qdrant server or cluster (through qdrant-client).
        client (`qdrant_client.QdrantClient`, *optional*): an existing client (any deployment, its local mode
            included); it stays open when the index closes.
        collection_name (`str`, defaults to "hf_mrl"): the collection.
        max_search_threads (`int`, *optional*): threads the embedded engine (Qdrant Edge) searches with, kept in
            the collection's engine config (0: one per CPU, Qdrant's default). Match it to the CPUs the process
            may use: with more threads than CPUs every re-rank stage waits on a hand-over between threads
            (1,000,000 points, one CPU: 1 thread re-ranks a 28-candidate shortlist in about 30 us per query
            instead of 48). A Qdrant server sets it in its own configuration.
        batch_size (`int`, defaults to 256): points per upsert.
        show_progress (`bool`, *optional*): a tqdm bar over the upserts (default: where
            `hf_mrl.modeling.progress.should_show_progress` allows it).
        overwrite (`bool`, defaults to False): replace a collection of the same name that holds another build
            (other vectors, ids, payloads, settings or model); without it such a build is refused.
    """

    _shortlists_held = "shortlist vectors are stored only"

    def __init__(
        self,
        embeddings,
        ids=None,
        *,
        payloads: Sequence[dict] | None = None,
        shortlist_dim: int | Sequence[int] | None = None,
        rerank_dim: int | Sequence[int] | None = None,
        shortlist_quantization: str | None = None,
        hnsw_config: dict | None = None,
        location: str | None = None,
        path=None,
        url: str | None = None,
        api_key: str | None = None,
        client=None,
        collection_name: str = DEFAULT_COLLECTION,
        max_search_threads: int | None = None,
        batch_size: int = 256,
        show_progress: bool | None = None,
        model: dict | None = None,
        overwrite: bool = False,
    ):
        embeddings = _to_float_matrix(embeddings, "embeddings")
        count, dim = embeddings.shape
        if count == 0 or dim == 0:
            raise ValueError(f"`embeddings` has shape {embeddings.shape}; an index needs at least one vector and one feature.")
        if shortlist_quantization is not None:
            _check_choice(shortlist_quantization, QUANTIZATIONS, "shortlist_quantization")
        if shortlist_dim is None:
            shortlist_dims = _check_shortlist_dims(None, dim, "binary" if shortlist_quantization == "binary" else "float32")
        else:
            shortlist_dims = _check_dim_list(shortlist_dim, dim, "shortlist_dim", "the embedding dim")
        rerank_dims = [dim] if rerank_dim is None else _check_dim_list(rerank_dim, dim, "rerank_dim", "the embedding dim")
        ids = _check_point_ids(ids, count)
        _check_nonzero_database(embeddings, min(shortlist_dims + rerank_dims), "the smallest stored dim")
        payloads = _check_payloads(payloads, count)
        batch_size = _check_positive_int(batch_size, "batch_size")
        metadata = {
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "dim": dim, "shortlist_dims": shortlist_dims,
            "rerank_dims": rerank_dims, "shortlist_quantization": shortlist_quantization,
            "hnsw_config": _check_hnsw_config(hnsw_config),
        }
        if check_model_record(model) is not None:  # the model that encoded the embeddings (`from_dataset`)
            metadata["model"] = model
        if not isinstance(overwrite, bool):
            raise ValueError(f"`overwrite` must be True or False, got {overwrite!r}.")
        metadata["payload_keys"] = payload_keys(payloads)
        stored = sorted(set(shortlist_dims) | set(rerank_dims))
        record = {"state": BUILDING, "points": count, "input": input_digest(embeddings, ids, payloads, metadata)}
        metadata["payload_types"] = payload_types(payloads)  # derived from the payloads: not part of the digest
        engine = open_engine(collection_name, location, path, url, api_key, client, max_search_threads)
        try:
            resume = self._prepare(engine, metadata, record, overwrite)
            if resume is None:  # the same build, complete already
                engine.open(vector_specs(metadata))
                self._attach(engine, metadata)
                return
            if engine.disk_folder is not None:
                check_disk_space(engine.disk_folder, expected_bytes(count, stored, payloads), engine.where)
            if resume:
                engine.open(vector_specs(metadata))
            else:
                if engine.exists():
                    engine.drop()  # overwrite=True
                engine.create(vector_specs(metadata), {**metadata, "build": record})
            done = 0
            try:
                starts = range(0, count, batch_size)
                for done in tqdm(starts, desc=f"upserting to {collection_name}", disable=not should_show_progress(show_progress)):
                    rows = slice(done, done + batch_size)
                    vectors = {vector_name(d): _l2_normalize(embeddings[rows, :d]) for d in stored}
                    engine.upsert(ids[rows].tolist(), vectors, None if payloads is None else payloads[rows])
                done = count
                engine.finish()
            except Exception as error:
                plain = stopped_error(error, engine.where, done, count, engine.disk_folder)
                if plain is error:
                    raise
                raise plain from error
            engine.set_metadata({**metadata, "build": {**record, "state": COMPLETE}})  # last: the build is whole
        except BaseException:
            engine.close()
            raise
        self._attach(engine, metadata)

    @staticmethod
    def _prepare(engine, metadata: dict, record: dict, overwrite: bool) -> bool | None:
        """Checks the target before any work. Returns None when the same build is there, complete; True to
        resume an incomplete build of the same input; False to build anew (an existing collection is dropped,
        which needs `overwrite=True`)."""
        engine.check_target()
        if not engine.exists():
            return False
        if overwrite:
            check_layout(engine)  # only a collection hf_mrl built is dropped
            return False
        found = build_record(check_layout(engine, expected=metadata))
        if found.get("input") != record["input"]:
            raise other_build_error(f"collection {engine.collection_name!r} {engine.where}", found)
        return None if found.get("state") == COMPLETE else True

    # -- building from a dataset, opening a collection -------------------------------------------------------

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
        payload_columns: Sequence[str] | None = None,
        exclude_keys: Sequence[str] = ("labels",),
        show_progress: bool | None = None,
        **index_kwargs,
    ) -> QdrantMatryoshkaIndex:
        """Encodes `dataset` with `model` (see `encode_embeddings`) and builds an index over the embeddings, with
        the values of `payload_columns` as payloads (default: every text, number or class-label column; a
        class label also stores its name as `<column>_name`). `id_column` names an int column of ids;
        `index_kwargs` go to `__init__`."""
        connection = {name: index_kwargs.get(name, default) for name, default in _CONNECTION.items()}
        probe = open_engine(**connection)  # a server that does not answer, or a user's folder: refused before encoding
        try:
            probe.check_target()
        finally:
            probe.close()
        payloads = dataset_payloads(dataset, payload_columns)
        return super().from_dataset(
            model, dataset, collate_fn, batch_size, accelerator=accelerator, id_column=id_column,
            exclude_keys=exclude_keys, show_progress=show_progress, payloads=payloads, **index_kwargs,
        )

    @classmethod
    def open(
        cls,
        collection_name: str = DEFAULT_COLLECTION,
        *,
        location: str | None = None,
        path=None,
        url: str | None = None,
        api_key: str | None = None,
        client=None,
        max_search_threads: int | None = None,
    ) -> QdrantMatryoshkaIndex:
        """Opens a collection built by `QdrantMatryoshkaIndex` (same connection arguments as `__init__`, and
        `max_search_threads`, which changes the one the collection keeps), checking that it stores a cosine
        vector of the right size at each dim its settings name."""
        engine = open_engine(collection_name, location, path, url, api_key, client, max_search_threads)
        if not engine.exists():
            engine.close()
            raise ValueError(
                f"`collection_name` {collection_name!r} is not a collection {engine.where}; collections there: "
                f"{engine.collections()}."
            )
        try:
            metadata = check_layout(engine)
            engine.open(vector_specs(metadata))
            record = build_record(metadata)
            if record.get("state") != COMPLETE:
                raise incomplete_error(f"collection {collection_name!r} {engine.where}", engine.count(), record)
        except BaseException:
            engine.close()
            raise
        self = cls.__new__(cls)
        self._attach(engine, metadata)
        return self

    def _attach(self, engine, metadata: dict) -> None:
        self.model = metadata.get("model")
        self.payload_keys = metadata.get("payload_keys")  # None: built before the keys were recorded
        self.payload_types = metadata.get("payload_types")  # None: built before the value types were recorded
        self._engine = engine
        self.dim = int(metadata["dim"])
        self.shortlist_dims = [int(d) for d in metadata["shortlist_dims"]]
        self.rerank_dims = [int(d) for d in metadata["rerank_dims"]]
        self.shortlist_quantization = metadata["shortlist_quantization"]
        self.hnsw_config = dict(metadata["hnsw_config"])

    # -- properties ------------------------------------------------------------------------------------------

    @property
    def collection_name(self) -> str:
        return self._engine.collection_name

    @property
    def stored_dims(self) -> list[int]:
        return sorted(set(self.shortlist_dims) | set(self.rerank_dims))

    @property
    def stored_dim(self) -> int:
        """The largest stored dim (the default re-rank dim)."""
        return self.stored_dims[-1]

    def __len__(self) -> int:
        return self._engine.count()

    def __repr__(self) -> str:
        return (
            f"QdrantMatryoshkaIndex(collection={self.collection_name!r} {self._engine.where}, count={len(self)}, "
            f"dim={self.dim}, shortlist_dims={self.shortlist_dims}, rerank_dims={self.rerank_dims}, "
            f"shortlist_quantization={self.shortlist_quantization!r})"
        )

    def payloads(self, ids) -> list[dict]:
        """The payloads of `ids` (e.g. the ids a search returned), in order; {} for -1 or unknown ids."""
        wanted = [int(i) for i in np.asarray(ids).reshape(-1)]
        found = self._engine.payloads(sorted({i for i in wanted if i >= 0}))
        return [found.get(i, {}) for i in wanted]

    def close(self) -> None:
        """Releases the collection (the embedded engine's lock; an in-memory collection is deleted)."""
        self._engine.close()

    def __enter__(self) -> QdrantMatryoshkaIndex:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- search ----------------------------------------------------------------------------------------------

    def search(
        self,
        queries,
        k: int,
        shortlist_dim: int | None = None,
        shortlist_size: int | None = None,
        rerank_dim: int | None = None,
        *,
        ef_search: int | None = None,
        exact: bool = False,
        exact_shortlist: bool = False,
        filter=None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Adaptive retrieval in one request: the engine shortlists `shortlist_size` points at `shortlist_dim`
        (a prefetch) and re-ranks them at `rerank_dim` (the query), like `MatryoshkaIndex.search`; a quantised
        shortlist re-ranked at its own dim is one search that the engine rescores itself (Qdrant's oversampling). With
        `exact=True`: Qdrant's exact search (`SearchParams(exact=True)`, a full scan without HNSW or quantisation)
        of the `rerank_dim` vector (default: `stored_dim`, the full dim) over every point, no shortlist.

        Args:
            queries (`np.ndarray` or `torch.Tensor` (nq, D)): full-dim query embeddings (un-normalised is fine).
            k (`int`): results per query.
            shortlist_dim (`int`, *optional*): one of `shortlist_dims` (default: the smallest).
            shortlist_size (`int`, *optional*): candidates kept by the shortlist, at least k (default: max(k, 200)).
            rerank_dim (`int`, *optional*): one of `stored_dims` (default: `stored_dim`).
            ef_search (`int`, *optional*): HNSW search breadth of the shortlist (Qdrant's `hnsw_ef`).
            exact (`bool`, defaults to False): search every point exactly at `rerank_dim`; `shortlist_dim`,
                `shortlist_size`, `ef_search` and `exact_shortlist` must be left out. The same ids and scores as
                `MatryoshkaIndex.search(exact=True)` and a numpy brute force.
            exact_shortlist (`bool`, defaults to False): an exact shortlist (full scan, no quantisation), then
                the re-rank: the same ids as `MatryoshkaIndex`'s flat float32 shortlist.
            filter (`qdrant_client.models.Filter`, *optional*): only points whose payload matches.

        Returns:
            `(scores, ids)`: float32 (nq, k) cosines at `rerank_dim`, best first, and int64 (nq, k) point ids;
            -1 ids / -inf scores where fewer were found (a small collection, a narrow filter).
        """
        if check_bool(exact, "exact"):
            options = {"shortlist_dim": shortlist_dim, "shortlist_size": shortlist_size, "ef_search": ef_search,
                       "exact_shortlist": exact_shortlist or None}
            queries, k, rerank_dim = self._check_exact_search(queries, k, rerank_dim, options)
            return self._query(queries, [Stage(rerank_dim, k)], k, None, True, filter)
        queries, k, shortlist_dim, size, rerank_dim = self._check_search(queries, k, shortlist_dim, shortlist_size, rerank_dim)
        return self._query(queries, [Stage(shortlist_dim, size), Stage(rerank_dim, k)], k, ef_search, exact_shortlist,
                           filter)

    def funnel_search(
        self,
        queries,
        k: int,
        dims: Sequence[int] | None = None,
        shortlist_sizes: Sequence[int] | None = None,
        *,
        ef_search: int | None = None,
        exact_shortlist: bool = False,
        filter=None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The MRL paper's funnel in one request of nested prefetches: shortlist `shortlist_sizes[0]` at `dims[0]`
        (a shortlist dim), re-rank the survivors at each later (stored) dim keeping `shortlist_sizes[i]`, and
        return the top k of the last stage, like `MatryoshkaIndex.funnel_search`. `dims[1]` may equal `dims[0]`:
        with a quantised shortlist that stage is the engine's rescoring of its own search (Qdrant's oversampling,
        ~0.1 us per point against ~0.5 us for a prefetch pass), which lets a shorter funnel reach the same quality.

        Defaults: `dims` = the smallest shortlist dim, then every larger stored dim; `shortlist_sizes` = 800
        halved at each stage, the last being max(k, 10). `ef_search`, `exact_shortlist` and `filter` as in
        `search` (an exact search of every point is `search(exact=True)`).
        """
        queries, k, dims, sizes = self._check_funnel(queries, k, dims, shortlist_sizes)
        stages = [Stage(dim, size) for dim, size in zip(dims[:-1], sizes[:-1], strict=True)] + [Stage(dims[-1], k)]
        return self._query(queries, stages, k, ef_search, exact_shortlist, filter)

    def _query(self, queries: np.ndarray, stages: list[Stage], k: int, ef_search, exact, filter):
        """One request: `stages` nested (the first the innermost prefetch), the first searched with `exact` (full
        scan, no quantisation) or with `ef_search`."""
        if ef_search is not None:
            ef_search = _check_positive_int(ef_search, "ef_search")
        check_bool(exact, "exact_shortlist")
        _check_nonzero_rows(queries, min(stage.dim for stage in stages), "queries")
        check_filter_keys(filter, self.payload_keys, self.payload_types)
        if len(stages) > 1 and stages[0].dim == stages[1].dim and self.shortlist_quantization and not exact:
            # A re-rank at the shortlist's own dim is the engine's rescoring of its quantised search: one stage, no
            # second pass over the prefetched ids (1M x 384, binary shortlist of 28: 8.4k -> 12.7k queries/s).
            stages = [Stage(stages[1].dim, stages[1].limit, candidates=stages[0].limit), *stages[2:]]
        hits = self._engine.query(queries, stages, k, filter, exact, ef_search)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for row, (found_ids, found_scores) in enumerate(hits):
            count = min(len(found_ids), k)
            ids[row, :count], scores[row, :count] = found_ids[:count], found_scores[:count]
        return scores, ids

    def _check_stage_dim(self, value, name: str) -> int:
        if not _is_int(value) or value not in self.stored_dims:
            raise ValueError(
                f"`{name}` is {value!r}, but the collection stores vectors only at dims {self.stored_dims} "
                "(chosen at build time with `shortlist_dim` and `rerank_dim`)."
            )
        return int(value)

    def _default_funnel_dims(self) -> list[int]:
        first = self.shortlist_dims[0]
        return [first] + [d for d in self.stored_dims if d > first]
