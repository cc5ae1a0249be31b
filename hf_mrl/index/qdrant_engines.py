"""The two Qdrant engines behind `QdrantMatryoshkaIndex`, with one small interface (create, describe, upsert,
count, query, payloads, finish, close):

- `_EdgeCollection`: Qdrant Edge (`qdrant-edge-py`), Qdrant's engine in process, for `location=":memory:"`
  (a temporary folder) and `path=DIR` (the shard lives in `DIR/<collection_name>`). No server.
- `_ClientCollection`: `qdrant_client.QdrantClient`, for `url=` / `api_key=` (a Qdrant server or cluster) or
  any client passed in (its local mode included). Its calls are the same for every deployment.

Both store one named cosine vector per dim (`dim_<d>`), take the same plan of search stages (one request per
batch of queries: the shortlist as the innermost prefetch, each re-rank stage around it) and return one
`(ids, scores)` pair of lists per query. The index's own settings travel as metadata: the collection's `metadata`
on a server, `hf_mrl.json` inside the shard folder on Edge.
"""

from __future__ import annotations

import json
import os
import shutil
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..modeling.files import new_temporary_folder
from .storage import _l2_normalize, _peak_scaled

FORMAT_NAME = "hf_mrl.QdrantMatryoshkaIndex"
VECTOR_PREFIX = "dim_"
EDGE_METADATA = "hf_mrl.json"
_STAGING = f".{EDGE_METADATA}.tmp"
QUANTIZATIONS = ("binary", "int8")
HNSW_KEYS = ("m", "ef_construct", "full_scan_threshold")
DEFAULT_HNSW = {"m": 16, "ef_construct": 100, "full_scan_threshold": 10000}  # Qdrant's defaults


# Re-rank stages score their prefetched candidates exactly (at full precision). Without `exact`, a stage on a
# vector that has an HNSW graph (a shortlist dim re-ranked in a funnel) searched that graph restricted to the
# candidates: 100,000 points, shortlist 80 at 16 dims re-ranked at 32: 0.7k queries/s, exact 3.7k (the same
# candidates re-ranked at a graph-less 64 dims: 4k either way).


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
    """One search stage: score by the `dim`-wide named vector, keep `limit` points. `candidates` (the shortlist
    stage only): search the quantised copy for this many points and let the engine rescore them with the original
    vectors (Qdrant's oversampling), the same result as a prefetch of `candidates` re-ranked at the same dim."""

    dim: int
    limit: int
    candidates: int | None = None

    def oversampling(self) -> float | None:
        # Qdrant keeps int(oversampling * limit) candidates: the half keeps float rounding from losing one.
        return (self.candidates + 0.5) / self.limit if self.candidates and self.candidates > self.limit else None


def _is_hf_mrl_metadata(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("format") == FORMAT_NAME
    except (OSError, ValueError, AttributeError):
        return False


def _unit_rows(queries: np.ndarray, dim: int) -> list[list[float]]:
    return _l2_normalize(queries[:, :dim]).tolist()


# -- Qdrant Edge ------------------------------------------------------------------------------------------------


TEMPORARY_PREFIX = "hf_mrl_qdrant_"


def _release_edge(held: dict) -> None:
    """Closes the shard, then removes the temporary folder of an in-memory collection (on close, garbage
    collection or interpreter exit)."""
    shard, held["shard"] = held["shard"], None
    if shard is not None:
        shard.close()
    if held["temporary"] is not None:
        shutil.rmtree(held["temporary"], ignore_errors=True)


def _lock_error(error: Exception, where: str, collection_name: str) -> Exception:
    if "WouldBlock" not in str(error):
        return error
    return BlockingIOError(
        f"`path` {where}: collection {collection_name!r} is open in another process (or another index of this one); "
        "Qdrant Edge lets one open it at a time. Close it there first, or serve it with a Qdrant server (`url=`)."
    )


class _EdgeCollection:
    """A Qdrant Edge shard at `root / collection_name` (`root=None`: a temporary folder, removed on close)."""

    def __init__(self, root: str | os.PathLike | None, collection_name: str, max_search_threads: int | None = None):
        temporary = None
        if root is None:
            temporary = str(new_temporary_folder(TEMPORARY_PREFIX))  # the pid in its name tells a later build it is stale
        self._held = {"shard": None, "temporary": temporary}
        self._finalizer = weakref.finalize(self, _release_edge, self._held)
        self.root = Path(temporary or root)
        self.collection_name = collection_name
        self.folder = self.root / collection_name
        self.disk_folder = self.root  # where the disk space is checked
        self.where = "in memory (Qdrant Edge)" if root is None else f"at {str(self.root)!r} (Qdrant Edge)"
        self.max_search_threads = max_search_threads

    @property
    def _shard(self):
        return self._held["shard"]

    def exists(self) -> bool:
        return (self.folder / "edge_config.json").is_file()

    def collections(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if (p / "edge_config.json").is_file()) if self.root.is_dir() else []

    def check_target(self) -> None:
        """Refuses a `path` that is a file, and a collection folder that hf_mrl did not write (before any work)."""
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"`path` {str(self.root)!r} is a file; allowed: a folder (new, or one that "
                             "QdrantMatryoshkaIndex wrote).")
        if not self.folder.exists() and not self.folder.is_symlink():
            return
        ours = self.folder.is_dir() and not self.folder.is_symlink() and _is_hf_mrl_metadata(self.folder / EDGE_METADATA)
        leftovers = self.folder.is_dir() and {p.name for p in self.folder.iterdir()} <= {_STAGING}
        if not (ours or leftovers):
            raise ValueError(
                f"`path` {str(self.root)!r} already holds {self.collection_name!r}, which QdrantMatryoshkaIndex did "
                f"not write (no {EDGE_METADATA} of its own); nothing was changed. Allowed: another `collection_name` "
                "or `path`."
            )

    def _config(self, vectors: dict[str, VectorSpec]):
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
        return qe.EdgeConfig(vectors=params, max_search_threads=self.max_search_threads)

    def create(self, vectors: dict[str, VectorSpec], metadata: dict) -> None:
        import qdrant_edge as qe

        config = self._config(vectors)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.set_metadata(metadata)  # first: a shard folder never exists without it
        try:
            self._held["shard"] = qe.EdgeShard.create(str(self.folder), config)
        except Exception as error:
            raise _lock_error(error, repr(str(self.root)), self.collection_name) from error

    def open(self, vectors: dict[str, VectorSpec] | None = None) -> None:
        """Loads the shard; with `max_search_threads` set (and the collection's `vectors`), the engine's config
        is loaded with it (Qdrant Edge checks it matches and keeps it in the shard's config)."""
        import qdrant_edge as qe

        if self._shard is None:
            config = None if self.max_search_threads is None or vectors is None else self._config(vectors)
            try:
                self._held["shard"] = qe.EdgeShard.load(str(self.folder), config)
            except Exception as error:
                raise _lock_error(error, repr(str(self.root)), self.collection_name) from error

    def set_metadata(self, metadata: dict) -> None:
        """Writes `hf_mrl.json` atomically (a staging file renamed over it, after an fsync)."""
        staging = self.folder / _STAGING
        with open(staging, "w") as handle:
            handle.write(json.dumps(metadata, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, self.folder / EDGE_METADATA)

    def drop(self) -> None:
        """Deletes the collection (hf_mrl's own folder, checked by `check_target`) after taking its lock, so a
        collection open in another process is refused, not deleted under it."""
        self.open()
        self._held["shard"].close()
        self._held["shard"] = None
        shutil.rmtree(self.folder)

    def describe(self) -> tuple[dict[str, tuple[int, str]], dict | None]:
        """The stored vectors {name: (size, distance)} and the hf_mrl metadata (None when absent)."""
        config = json.loads((self.folder / "edge_config.json").read_text())
        vectors = {name: (int(spec["size"]), str(spec["distance"])) for name, spec in config.get("vectors", {}).items()}
        metadata_file = self.folder / EDGE_METADATA
        return vectors, json.loads(metadata_file.read_text()) if metadata_file.is_file() else None

    def upsert(self, ids: list[int], vectors: dict[str, np.ndarray], payloads: list[dict] | None) -> None:
        import qdrant_edge as qe

        # Rows read through memoryviews, like the queries: no Python float per value.
        rows = {name: np.ascontiguousarray(array, dtype=np.float32) for name, array in vectors.items()}
        points = [
            qe.Point(point_id, {name: memoryview(array[i]) for name, array in rows.items()},
                     None if payloads is None else payloads[i])
            for i, point_id in enumerate(ids)
        ]
        self._shard.update(qe.UpdateOperation.upsert_points(points))

    def count(self) -> int:
        import qdrant_edge as qe

        return int(self._shard.count(qe.CountRequest(exact=True)))

    def query(self, queries: np.ndarray, stages: list[Stage], k: int, filter, exact: bool, ef_search: int | None):
        import qdrant_edge as qe

        first = stages[0]
        quantization = qe.QuantizationSearchParams(ignore=True) if exact else qe.QuantizationSearchParams(
            rescore=first.candidates is not None, oversampling=first.oversampling())
        params = qe.SearchParams(hnsw_ef=ef_search, exact=exact, quantization=quantization)
        rescore = qe.SearchParams(exact=True, quantization=qe.QuantizationSearchParams(ignore=True))
        filter = edge_filter(filter)
        # The engine normalises cosine queries itself: each row is divided by its largest magnitude first so that
        # the engine's squares neither overflow nor underflow. Each stage reads a prefix of the row through a
        # memoryview: no Python float per value (1,000 x 384 queries: 18 -> 5 ms, against `tolist`).
        rows = np.ascontiguousarray(_peak_scaled(queries[:, : max(stage.dim for stage in stages)]), dtype=np.float32)
        requests = []
        for row in rows:
            prefetches = None
            for depth, stage in enumerate(stages[:-1]):
                first = depth == 0
                query = qe.Query.Nearest(memoryview(row[: stage.dim]), using=vector_name(stage.dim))
                prefetches = [qe.Prefetch(
                    limit=stage.limit, query=query, prefetches=prefetches, params=params if first else rescore,
                    filter=filter if first else None,
                )]
            last = stages[-1]
            requests.append(qe.QueryRequest(
                limit=k, query=qe.Query.Nearest(memoryview(row[: last.dim]), using=vector_name(last.dim)),
                prefetches=prefetches, params=rescore if prefetches else params, filter=None if prefetches else filter,
            ))
        return [([point.id for point in hits], [point.score for point in hits])
                for hits in self._shard.query_batch(qe.QueryBatchRequest(requests))]

    def payloads(self, ids: list[int]) -> dict[int, dict]:
        return {record.id: record.payload or {} for record in self._shard.retrieve(ids, with_payload=True, with_vector=False)}

    def finish(self) -> None:
        """Builds the HNSW graphs and quantised copies (Edge's optimisers), then flushes to disk."""
        self._shard.optimize()
        self._shard.flush()

    def close(self) -> None:
        self._finalizer()


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
        self.disk_folder = None  # the server's disk: not ours to check

    def check_target(self) -> None:
        pass  # a server's collections are all made through its API

    def set_metadata(self, metadata: dict) -> None:
        # Qdrant merges the update into the stored metadata, and a null deletes its key: send only the rest.
        update = {key: value for key, value in metadata.items() if value is not None}
        self.client.update_collection(self.collection_name, metadata=update)

    def drop(self) -> None:
        self.client.delete_collection(self.collection_name)

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

    def open(self, vectors: dict[str, VectorSpec] | None = None) -> None:
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

        first = stages[0]
        quantization = models.QuantizationSearchParams(ignore=True) if exact else models.QuantizationSearchParams(
            rescore=first.candidates is not None, oversampling=first.oversampling())
        params = models.SearchParams(hnsw_ef=ef_search, exact=exact, quantization=quantization)
        rescore = models.SearchParams(exact=True, quantization=models.QuantizationSearchParams(ignore=True))
        per_stage = {stage.dim: _unit_rows(queries, stage.dim) for stage in stages}
        requests = []
        for row in range(len(queries)):
            prefetch = None
            for depth, stage in enumerate(stages[:-1]):
                first = depth == 0
                prefetch = models.Prefetch(
                    query=per_stage[stage.dim][row], using=vector_name(stage.dim), limit=stage.limit, prefetch=prefetch,
                    params=params if first else rescore, filter=filter if first else None,
                )
            last = stages[-1]
            requests.append(models.QueryRequest(
                query=per_stage[last.dim][row], using=vector_name(last.dim), limit=k, prefetch=prefetch,
                params=rescore if prefetch else params, filter=None if prefetch else filter,
            ))
        responses = self.client.query_batch_points(self.collection_name, requests)
        return [([point.id for point in response.points], [point.score for point in response.points])
                for response in responses]

    def payloads(self, ids: list[int]) -> dict[int, dict]:
        records = self.client.retrieve(self.collection_name, ids, with_payload=True, with_vectors=False)
        return {record.id: record.payload or {} for record in records}

    def finish(self) -> None:
        pass  # a server indexes in the background

    def close(self) -> None:
        if self._owns_client:
            self.client.close()


def connect(collection_name: str, location, path, url, api_key, client, max_search_threads=None):
    """The engine for one connection: `client` as given, else `url` (qdrant-client), else `path` or
    `location=":memory:"` (Qdrant Edge). Checks happen in the caller."""
    if client is not None:
        return _ClientCollection(client, collection_name, f"through the given {type(client).__name__}", False)
    if url is not None:
        return _ClientCollection(_server_client(url, api_key), collection_name, f"at {url}", True)
    return _EdgeCollection(path, collection_name, max_search_threads)


def _server_client(url: str, api_key: str | None):
    """A client of the server at `url`, after one request: nothing listening is a `ConnectionError` now, not a
    transport error deep inside a build."""
    from qdrant_client import QdrantClient
    from qdrant_client.http.exceptions import UnexpectedResponse

    probe = QdrantClient(url=url, api_key=api_key, check_compatibility=False)  # its version check warns from a thread
    try:
        probe.get_collections()
    except UnexpectedResponse:  # a server answered (e.g. 401): its own message says more, on first use
        pass
    except Exception as error:
        raise ConnectionError(
            f"`url` {url!r}: no Qdrant server answers there ({type(error).__name__}); allowed: the URL of a "
            "running Qdrant server, e.g. http://localhost:6333, or `path=` for the embedded engine."
        ) from error
    finally:
        probe.close()
    return QdrantClient(url=url, api_key=api_key)
