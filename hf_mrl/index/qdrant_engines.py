"""The two Qdrant engines behind `QdrantMatryoshkaIndex`, with one small interface (create, describe, upsert,
count, query, payloads, finish, close):

- `_EdgeCollection`: Qdrant Edge (`qdrant-edge-py`), Qdrant's engine in process, for `location=":memory:"`
  (a temporary folder) and `path=DIR` (the shard lives in `DIR/<collection_name>`). No server.
- `_ClientCollection`: `qdrant_client.QdrantClient`, for `url=` / `api_key=` (a Qdrant server or cluster) or
  any client passed in (its local mode included). Its calls are the same for every deployment.

Both store one named cosine vector per dim (`dim_<d>`), take the same plan of search stages (one request per
batch of queries: the shortlist as the innermost prefetch, each re-rank stage around it) and return
`(id, score)` lists. The index's own settings travel as metadata: the collection's `metadata` on a server,
`hf_mrl.json` inside the shard folder on Edge.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VECTOR_PREFIX = "dim_"
EDGE_METADATA = "hf_mrl.json"
QUANTIZATIONS = ("binary", "int8")
HNSW_KEYS = ("m", "ef_construct", "full_scan_threshold")
DEFAULT_HNSW = {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000}  # Qdrant's defaults


def vector_name(dim: int) -> str:
    return f"{VECTOR_PREFIX}{dim}"


@dataclass(frozen=True)
class VectorSpec:
    """One named vector: its size, the quantisation of its index (None, "binary", "int8") and its HNSW graph
    settings (None: no graph, the vector only re-ranks prefetched points)."""

    size: int
    quantization: str | None = None
    hnsw: dict | None = None


@dataclass(frozen=True)
class Stage:
    """One search stage: score by the `dim`-wide named vector, keep `limit` points."""

    dim: int
    limit: int


def _unit_rows(queries: np.ndarray, dim: int) -> list[list[float]]:
    head = queries[:, :dim]
    return (head / np.maximum(np.linalg.norm(head, axis=1, keepdims=True), np.finfo(np.float32).tiny)).tolist()


# -- Qdrant Edge ------------------------------------------------------------------------------------------------


def _close_edge(shard, temporary: str | None) -> None:
    shard.close()
    if temporary is not None:
        shutil.rmtree(temporary, ignore_errors=True)


class _EdgeCollection:
    """A Qdrant Edge shard at `root / collection_name` (`root=None`: a temporary folder, removed on close)."""

    def __init__(self, root: str | os.PathLike | None, collection_name: str):
        self._temporary = tempfile.mkdtemp(prefix="hf_mrl_qdrant_") if root is None else None
        self.root = Path(self._temporary or root)
        self.collection_name = collection_name
        self.folder = self.root / collection_name
        self._shard = None
        self._finalizer = None
        self.where = "in memory (Qdrant Edge)" if root is None else f"at {str(self.root)!r} (Qdrant Edge)"

    def exists(self) -> bool:
        return (self.folder / "edge_config.json").is_file()

    def collections(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if (p / "edge_config.json").is_file()) if self.root.is_dir() else []

    def _attach(self, shard) -> None:
        self._shard = shard
        self._finalizer = weakref.finalize(self, _close_edge, shard, self._temporary)

    def create(self, vectors: dict[str, VectorSpec], metadata: dict) -> None:
        import qdrant_edge as qe

        params = {}
        for name, spec in vectors.items():
            hnsw = dict(DEFAULT_HNSW, m=0) if spec.hnsw is None else spec.hnsw
            quantization = None
            if spec.quantization == "binary":
                quantization = qe.BinaryQuantizationConfig()
            elif spec.quantization == "int8":
                quantization = qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8)
            params[name] = qe.EdgeVectorParams(
                size=spec.size, distance=qe.Distance.Cosine, quantization_config=quantization,
                hnsw_config=qe.HnswIndexConfig(**hnsw),
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        # The metadata goes first: a shard folder never exists without it.
        staging = self.folder / f".{EDGE_METADATA}.tmp"
        staging.write_text(json.dumps(metadata, indent=2) + "\n")
        os.replace(staging, self.folder / EDGE_METADATA)
        self._attach(qe.EdgeShard.create(str(self.folder), qe.EdgeConfig(vectors=params)))

    def open(self) -> None:
        import qdrant_edge as qe

        if self._shard is None:
            self._attach(qe.EdgeShard.load(str(self.folder)))

    def describe(self) -> tuple[dict[str, tuple[int, str]], dict | None]:
        """The stored vectors {name: (size, distance)} and the hf_mrl metadata (None when absent)."""
        config = json.loads((self.folder / "edge_config.json").read_text())
        vectors = {name: (int(spec["size"]), str(spec["distance"])) for name, spec in config.get("vectors", {}).items()}
        metadata_file = self.folder / EDGE_METADATA
        return vectors, json.loads(metadata_file.read_text()) if metadata_file.is_file() else None

    def upsert(self, ids: list[int], vectors: dict[str, np.ndarray], payloads: list[dict] | None) -> None:
        import qdrant_edge as qe

        rows = {name: array.tolist() for name, array in vectors.items()}
        points = [
            qe.Point(point_id, {name: rows[name][i] for name in rows}, None if payloads is None else payloads[i])
            for i, point_id in enumerate(ids)
        ]
        self._shard.update(qe.UpdateOperation.upsert_points(points))

    def count(self) -> int:
        import qdrant_edge as qe

        return int(self._shard.count(qe.CountRequest(exact=True)))

    def query(self, queries: np.ndarray, stages: list[Stage], k: int, filter, exact: bool, ef_search: int | None):
        import qdrant_edge as qe

        quantization = qe.QuantizationSearchParams(ignore=True) if exact else qe.QuantizationSearchParams(rescore=False)
        params = qe.SearchParams(hnsw_ef=ef_search, exact=exact, quantization=quantization)
        filter = edge_filter(filter)
        per_stage = {stage.dim: _unit_rows(queries, stage.dim) for stage in stages}
        requests = []
        for row in range(len(queries)):
            prefetches = None
            for depth, stage in enumerate(stages[:-1]):
                first = depth == 0
                prefetches = [qe.Prefetch(
                    limit=stage.limit, query=qe.Query.Nearest(per_stage[stage.dim][row], using=vector_name(stage.dim)),
                    prefetches=prefetches, params=params if first else None, filter=filter if first else None,
                )]
            last = stages[-1]
            requests.append(qe.QueryRequest(
                limit=k, query=qe.Query.Nearest(per_stage[last.dim][row], using=vector_name(last.dim)),
                prefetches=prefetches, params=None if prefetches else params, filter=None if prefetches else filter,
            ))
        return [[(point.id, point.score) for point in hits] for hits in self._shard.query_batch(qe.QueryBatchRequest(requests))]

    def payloads(self, ids: list[int]) -> dict[int, dict]:
        return {record.id: record.payload or {} for record in self._shard.retrieve(ids, with_payload=True, with_vector=False)}

    def finish(self) -> None:
        """Builds the HNSW graphs and quantised copies (Edge's optimisers), then flushes to disk."""
        self._shard.optimize()
        self._shard.flush()

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        elif self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)


_EDGE_MATCHES = {"MatchValue": ("value",), "MatchAny": ("any",), "MatchExcept": ("except_",), "MatchText": ("text",)}


def edge_filter(condition):
    """A `qdrant_client.models.Filter` (or condition) as the same Qdrant Edge object; Edge objects pass as is.
    Covers must / should / must_not / min_should, field match (value, any, except, text), range, values count,
    empty, null, id and nested conditions."""
    if condition is None or type(condition).__module__.startswith("qdrant_edge"):
        return condition
    import qdrant_edge as qe
    from qdrant_client import models

    if isinstance(condition, models.Filter):
        convert = lambda items: None if items is None else [edge_filter(item) for item in (  # noqa: E731
            items if isinstance(items, list) else [items])]
        min_should = condition.min_should
        if min_should is not None:
            min_should = qe.MinShould(conditions=convert(min_should.conditions), min_count=min_should.min_count)
        return qe.Filter(must=convert(condition.must), should=convert(condition.should),
                         must_not=convert(condition.must_not), min_should=min_should)
    if isinstance(condition, models.FieldCondition):
        match = condition.match
        if match is not None:
            fields = _EDGE_MATCHES.get(type(match).__name__)
            if fields is None:
                raise ValueError(f"`filter` uses {type(match).__name__}, which this adapter does not translate for "
                                 f"Qdrant Edge; allowed matches: {sorted(_EDGE_MATCHES)}.")
            match = getattr(qe, type(match).__name__)(*(getattr(match, field) for field in fields))
        bounds = lambda value: None if value is None else {  # noqa: E731
            key: getattr(value, key) for key in ("gte", "gt", "lte", "lt")}
        if condition.range is not None and not isinstance(condition.range, models.Range):
            raise ValueError(f"`filter` uses a {type(condition.range).__name__} range; Qdrant Edge takes numeric ranges "
                             "(models.Range) here.")
        return qe.FieldCondition(
            key=condition.key, match=match,
            range=None if condition.range is None else qe.RangeFloat(**bounds(condition.range)),
            values_count=None if condition.values_count is None else qe.ValuesCount(**bounds(condition.values_count)),
            is_empty=condition.is_empty, is_null=condition.is_null,
        )
    if isinstance(condition, models.HasIdCondition):
        return qe.HasIdCondition(set(condition.has_id))
    if isinstance(condition, models.IsEmptyCondition):
        return qe.IsEmptyCondition(condition.is_empty.key)
    if isinstance(condition, models.IsNullCondition):
        return qe.IsNullCondition(condition.is_null.key)
    if isinstance(condition, models.NestedCondition):
        return qe.NestedCondition(condition.nested.key, edge_filter(condition.nested.filter))
    raise ValueError(f"`filter` must be a qdrant_client.models.Filter (or a qdrant_edge.Filter), got "
                     f"{type(condition).__name__}.")


# -- qdrant-client (servers, clusters, the client's local mode) -------------------------------------------------------


class _ClientCollection:
    """A collection reached through a `qdrant_client.QdrantClient` (the same calls for a server, a cluster or
    the client's local mode)."""

    def __init__(self, client, collection_name: str, where: str, owns_client: bool):
        self.client, self.collection_name, self.where = client, collection_name, where
        self._owns_client = owns_client  # a client passed in stays open for its owner

    def exists(self) -> bool:
        return self.client.collection_exists(self.collection_name)

    def collections(self) -> list[str]:
        return sorted(c.name for c in self.client.get_collections().collections)

    def create(self, vectors: dict[str, VectorSpec], metadata: dict) -> None:
        from qdrant_client import models

        params = {}
        for name, spec in vectors.items():
            quantization = None
            if spec.quantization == "binary":
                quantization = models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=True))
            elif spec.quantization == "int8":
                quantization = models.ScalarQuantization(
                    scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, always_ram=True))
            hnsw = models.HnswConfigDiff(m=0) if spec.hnsw is None else models.HnswConfigDiff(**spec.hnsw)
            params[name] = models.VectorParams(size=spec.size, distance=models.Distance.COSINE,
                                               quantization_config=quantization, hnsw_config=hnsw)
        self.client.create_collection(self.collection_name, vectors_config=params, metadata=metadata)

    def open(self) -> None:
        pass

    def describe(self) -> tuple[dict[str, tuple[int, str]], dict | None]:
        config = self.client.get_collection(self.collection_name).config
        stored = config.params.vectors
        stored = stored if isinstance(stored, dict) else {} if stored is None else {"": stored}  # unnamed: ""
        vectors = {name: (int(params.size), str(getattr(params.distance, "value", params.distance)))
                   for name, params in stored.items()}
        return vectors, getattr(config, "metadata", None)

    def upsert(self, ids: list[int], vectors: dict[str, np.ndarray], payloads: list[dict] | None) -> None:
        from qdrant_client import models

        batch = models.Batch(ids=ids, vectors={name: array.tolist() for name, array in vectors.items()}, payloads=payloads)
        self.client.upsert(self.collection_name, points=batch, wait=True)

    def count(self) -> int:
        return int(self.client.count(self.collection_name, exact=True).count)

    def query(self, queries: np.ndarray, stages: list[Stage], k: int, filter, exact: bool, ef_search: int | None):
        from qdrant_client import models

        quantization = models.QuantizationSearchParams(ignore=True) if exact else models.QuantizationSearchParams(rescore=False)
        params = models.SearchParams(hnsw_ef=ef_search, exact=exact, quantization=quantization)
        per_stage = {stage.dim: _unit_rows(queries, stage.dim) for stage in stages}
        requests = []
        for row in range(len(queries)):
            prefetch = None
            for depth, stage in enumerate(stages[:-1]):
                first = depth == 0
                prefetch = models.Prefetch(
                    query=per_stage[stage.dim][row], using=vector_name(stage.dim), limit=stage.limit, prefetch=prefetch,
                    params=params if first else None, filter=filter if first else None,
                )
            last = stages[-1]
            requests.append(models.QueryRequest(
                query=per_stage[last.dim][row], using=vector_name(last.dim), limit=k, prefetch=prefetch,
                params=None if prefetch else params, filter=None if prefetch else filter,
            ))
        responses = self.client.query_batch_points(self.collection_name, requests)
        return [[(point.id, point.score) for point in response.points] for response in responses]

    def payloads(self, ids: list[int]) -> dict[int, dict]:
        records = self.client.retrieve(self.collection_name, ids, with_payload=True, with_vectors=False)
        return {record.id: record.payload or {} for record in records}

    def finish(self) -> None:
        pass  # a server indexes in the background

    def close(self) -> None:
        if self._owns_client:
            self.client.close()


def connect(collection_name: str, location, path, url, api_key, client):
    """The engine for one connection: `client` as given, else `url` (qdrant-client), else `path` or
    `location=":memory:"` (Qdrant Edge). Checks happen in the caller."""
    if client is not None:
        return _ClientCollection(client, collection_name, f"through the given {type(client).__name__}", False)
    if url is not None:
        from qdrant_client import QdrantClient

        return _ClientCollection(QdrantClient(url=url, api_key=api_key), collection_name, f"at {url}", True)
    return _EdgeCollection(path, collection_name)
