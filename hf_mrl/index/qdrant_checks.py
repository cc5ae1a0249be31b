"""Checks of `QdrantMatryoshkaIndex`, all run before any work: the connection, ids, payloads, HNSW settings, and
the layout of a stored collection (its vectors and the hf_mrl settings kept as its metadata)."""

from __future__ import annotations

import numpy as np

from .qdrant_engines import DEFAULT_HNSW, FORMAT_NAME, HNSW_KEYS, VectorSpec, connect, vector_name
from .validation import _check_ids, _check_positive_int

FORMAT_VERSION = 1
DEFAULT_COLLECTION = "hf_mrl"
_SETTINGS = ("dim", "shortlist_dims", "rerank_dims", "shortlist_quantization", "hnsw_config")


def open_engine(collection_name, location, path, url, api_key, client):
    if not isinstance(collection_name, str) or not collection_name or collection_name.strip(".") == "" or any(
        sep in collection_name for sep in "/\\"
    ):
        raise ValueError(f"`collection_name` must be a non-empty name without path separators, got {collection_name!r}.")
    if isinstance(location, str) and location.startswith(("http://", "https://")):
        if url is not None:
            raise ValueError(f"Give the server once: `location` {location!r} and `url` {url!r} are both set.")
        location, url = ":memory:", location
    if location not in (":memory:", None):
        raise ValueError(f"`location` must be ':memory:' or an http(s) URL, got {location!r}; a folder goes to `path`.")
    given = [name for name, value in (("client", client), ("url", url), ("path", path)) if value is not None]
    if len(given) > 1:
        raise ValueError(f"Give one of `client`, `url` and `path`, got {given}.")
    if api_key is not None and url is None:
        raise ValueError("`api_key` goes with `url` (a Qdrant server); the embedded engine takes none.")
    return connect(collection_name, location, path, url, api_key, client)


def _check_point_ids(ids, count: int) -> np.ndarray:
    if ids is None:
        return np.arange(count, dtype=np.int64)
    ids = _check_ids(ids, count)
    if (ids < 0).any():
        raise ValueError(f"`ids` must be non-negative (Qdrant point ids are unsigned), got {int(ids.min())}.")
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"`ids` must be unique (Qdrant keeps one point per id): {int(unique[counts > 1][0])} repeats.")
    return ids


def _check_payloads(payloads, count: int) -> list[dict] | None:
    if payloads is None:
        return None
    payloads = list(payloads)
    if len(payloads) != count or not all(isinstance(payload, dict) for payload in payloads):
        raise ValueError(f"`payloads` must be {count} dicts (one per vector), got {len(payloads)} items.")
    return payloads


def _check_hnsw_config(hnsw_config) -> dict:
    if hnsw_config is None:
        return dict(DEFAULT_HNSW)
    if not isinstance(hnsw_config, dict):
        raise ValueError(f"`hnsw_config` must be a dict, got {type(hnsw_config).__name__}.")
    unknown = sorted(set(hnsw_config) - set(HNSW_KEYS))
    if unknown:
        raise ValueError(f"`hnsw_config` has unknown keys {unknown}; allowed: {list(HNSW_KEYS)}.")
    config = dict(DEFAULT_HNSW, **hnsw_config)
    for key, value in config.items():
        _check_positive_int(value, f"hnsw_config['{key}']")
    return {key: int(value) for key, value in config.items()}


def vector_specs(metadata: dict) -> dict[str, VectorSpec]:
    specs = {vector_name(d): VectorSpec(d) for d in metadata["rerank_dims"]}
    for d in metadata["shortlist_dims"]:
        specs[vector_name(d)] = VectorSpec(d, metadata["shortlist_quantization"], metadata["hnsw_config"])
    return dict(sorted(specs.items(), key=lambda item: item[1].size))


def check_layout(engine, expected: dict | None = None) -> dict:
    """The collection's hf_mrl settings, after checking it stores a cosine vector of the right size at every dim
    they name (and, with `expected`, that they are these settings)."""
    vectors, metadata = engine.describe()
    name = f"collection {engine.collection_name!r} {engine.where}"
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise ValueError(f"{name} was not built by QdrantMatryoshkaIndex (no {FORMAT_NAME!r} metadata).")
    if metadata.get("format_version") != FORMAT_VERSION or any(key not in metadata for key in _SETTINGS):
        raise ValueError(f"{name} has metadata of another version ({metadata.get('format_version')!r}); this reads "
                         f"{FORMAT_VERSION}.")
    wanted = {spec_name: spec.size for spec_name, spec in vector_specs(metadata).items()}
    stored = {key: f"{size}-d {distance}" for key, (size, distance) in vectors.items()}
    needed = {key: f"{size}-d Cosine" for key, size in wanted.items()}
    if any(stored.get(key) != value for key, value in needed.items()):
        raise ValueError(f"{name} stores vectors {stored}, but its settings need {needed}: the stored dims or "
                         "distance do not match.")
    if expected is not None:
        different = {key: (metadata[key], expected[key]) for key in _SETTINGS if metadata[key] != expected[key]}
        if different:
            details = ", ".join(f"{key} {old!r} (asked: {new!r})" for key, (old, new) in different.items())
            raise ValueError(f"{name} already exists with other settings: {details}. Open it with "
                             "QdrantMatryoshkaIndex.open, build into another `collection_name`, or pass "
                             "overwrite=True to replace it.")
    return metadata


def filter_keys(condition) -> list[str]:
    """The payload keys a `qdrant_client.models.Filter` names (the top-level key of `a.b` / `a[]` paths)."""
    from qdrant_client import models

    if condition is None:
        return []
    if isinstance(condition, list):
        return [key for item in condition for key in filter_keys(item)]
    if isinstance(condition, models.Filter):
        parts = [condition.must, condition.should, condition.must_not]
        parts.append(None if condition.min_should is None else condition.min_should.conditions)
        return [key for part in parts for key in filter_keys(part if isinstance(part, list) else [part] if part else [])]
    for key in (
        getattr(condition, "key", None),
        getattr(getattr(condition, "is_empty", None), "key", None),
        getattr(getattr(condition, "is_null", None), "key", None),
        getattr(getattr(condition, "nested", None), "key", None),
    ):
        if isinstance(key, str):
            return [key.split(".", 1)[0].split("[", 1)[0]]
    return []


def check_filter_keys(filter, stored_keys: list[str] | None) -> None:
    """A filter on a payload key that no point has matches nothing (or everything, negated): an error, naming
    the keys the points have. Collections built before the keys were recorded (`None`) are not checked."""
    if stored_keys is None or filter is None or type(filter).__module__.startswith("qdrant_edge"):
        return
    missing = [key for key in dict.fromkeys(filter_keys(filter)) if key not in stored_keys]
    if missing:
        have = f"keys the points have: {stored_keys}" if stored_keys else "the points have no payload"
        raise ValueError(f"`filter` names payload key {missing[0]!r}, which no point has; {have}.")
