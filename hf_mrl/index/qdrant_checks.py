"""Checks of `QdrantMatryoshkaIndex`, all run before any work: the connection, ids, payloads, HNSW settings, and
the layout of a stored collection (its vectors and the hf_mrl settings kept as its metadata)."""

from __future__ import annotations

import numpy as np

from .qdrant_engines import DEFAULT_HNSW, FORMAT_NAME, HNSW_KEYS, VectorSpec, connect, vector_name
from .validation import _check_ids, _check_positive_int, _is_int

FORMAT_VERSION = 1
DEFAULT_COLLECTION = "hf_mrl"
_SETTINGS = ("dim", "shortlist_dims", "rerank_dims", "shortlist_quantization", "hnsw_config")


def open_engine(collection_name, location, path, url, api_key, client, max_search_threads=None):
    if not isinstance(collection_name, str) or not collection_name or collection_name.strip(".") == "" or any(
        sep in collection_name for sep in "/\\"
    ):
        raise ValueError(f"`collection_name` must be a non-empty name without path separators, got {collection_name!r}.")
    if isinstance(location, str) and location.startswith(("http://", "https://")):
        if url is not None:
            raise ValueError(f"Give the server once: `location` {location!r} and `url` {url!r} are both set.")
        location, url = None, location
    if location not in (":memory:", None):
        raise ValueError(f"`location` must be ':memory:' or an http(s) URL, got {location!r}; a folder goes to `path`.")
    if location == ":memory:":
        for name, value in (("path", path), ("url", url), ("client", client)):
            if value is not None:
                shown = repr(str(value)) if name == "path" else repr(value) if name == "url" else type(value).__name__
                raise ValueError(f"`location` ':memory:' (a temporary collection) and `{name}` {shown} are both "
                                 f"set; give one of them.")
    given = [name for name, value in (("client", client), ("url", url), ("path", path)) if value is not None]
    if len(given) > 1:
        raise ValueError(f"Give one of `client`, `url` and `path`, got {given}.")
    if api_key is not None and url is None:
        raise ValueError("`api_key` goes with `url` (a Qdrant server); the embedded engine takes none.")
    max_search_threads = check_max_search_threads(max_search_threads, server=client is not None or url is not None)
    return connect(collection_name, location, path, url, api_key, client, max_search_threads)


def check_max_search_threads(max_search_threads, server: bool) -> int | None:
    """`max_search_threads` as an int (None stays None): >= 0, and only for the embedded engine (`server`: a `url`
    or `client` was given)."""
    if max_search_threads is None:
        return None
    if not _is_int(max_search_threads) or max_search_threads < 0:
        raise ValueError(f"`max_search_threads` must be an int >= 0 (0: Qdrant's default, one per CPU), got "
                         f"{max_search_threads!r}.")
    if server:
        raise ValueError(f"`max_search_threads` {max_search_threads!r} sets the embedded engine's search threads "
                         "(`path` or `location=':memory:'`); a Qdrant server takes it from its own configuration "
                         "(`performance.max_search_threads`).")
    return int(max_search_threads)


def _check_point_ids(ids, count: int) -> np.ndarray:
    if ids is None:
        return np.arange(count, dtype=np.int64)
    return _check_ids(ids, count, unique_because="Qdrant keeps one point per id")


def _check_payloads(payloads, count: int) -> list[dict] | None:
    """One dict per vector, each value a JSON value Qdrant stores (None, bool, int, float, str, lists and dicts of
    them; numpy scalars too); floats finite, ints within 64 bits, dict keys strings. Names the row and key."""
    if payloads is None:
        return None
    if isinstance(payloads, (str, bytes, dict)):
        raise ValueError(f"`payloads` must be a list of {count} dicts (one per vector), got a {type(payloads).__name__}.")
    payloads = list(payloads)
    if len(payloads) != count:
        raise ValueError(f"`payloads` must be {count} dicts (one per vector), got {len(payloads)} items.")
    for row, payload in enumerate(payloads):
        if not isinstance(payload, dict):
            raise ValueError(f"`payloads[{row}]` must be a dict (the payload of vector {row}), got "
                             f"{type(payload).__name__} {_short_repr(payload)}.")
        for key, value in payload.items():
            if not isinstance(key, str):
                raise ValueError(f"`payloads[{row}]` has key {key!r} of type {type(key).__name__}; allowed: string keys.")
            problem = _payload_value_problem(value)
            if problem is not None:
                raise ValueError(f"`payloads[{row}][{key!r}]` {problem}.")
    return payloads


def _short_repr(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _payload_value_problem(value) -> str | None:
    """Why Qdrant cannot store `value` as a payload value (None when it can)."""
    if value is None or isinstance(value, (bool, str, np.bool_, np.str_)):
        return None
    if isinstance(value, (int, np.integer)):
        if not -(2**63) <= int(value) < 2**64:
            return f"is {value}, beyond 64 bits; allowed: integers from -2**63 to 2**64 - 1"
        return None
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return f"is {float(value)}; allowed: finite numbers (Qdrant stores no NaN or inf)"
        return None
    if isinstance(value, (list, tuple)):
        for position, item in enumerate(value):
            problem = _payload_value_problem(item)
            if problem is not None:
                return f"item {position} {problem}"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"has key {key!r} of type {type(key).__name__}; allowed: string keys"
            problem = _payload_value_problem(item)
            if problem is not None:
                return f"key {key!r} {problem}"
        return None
    return (f"is a {type(value).__name__} ({_short_repr(value)}); allowed: None, bool, int, float, str, and lists or "
            "dicts of them (a set: pass a list)")


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


def _leaf_conditions(condition) -> list:
    """The conditions of a `qdrant_client.models.Filter` (or a list of them) that are not filters themselves:
    must, should, must_not and min_should, walked down through nested filters (not into nested conditions)."""
    from qdrant_client import models

    if condition is None:
        return []
    if isinstance(condition, list):
        return [leaf for item in condition for leaf in _leaf_conditions(item)]
    if isinstance(condition, models.Filter):
        parts = [condition.must, condition.should, condition.must_not]
        parts.append(None if condition.min_should is None else condition.min_should.conditions)
        return [leaf for part in parts for leaf in _leaf_conditions(part if isinstance(part, list) else [part] if part else [])]
    return [condition]


def filter_keys(condition) -> list[str]:
    """The payload keys a `qdrant_client.models.Filter` names (the top-level key of `a.b` / `a[]` paths)."""
    keys = []
    for leaf in _leaf_conditions(condition):
        for key in (
            getattr(leaf, "key", None),
            getattr(getattr(leaf, "is_empty", None), "key", None),
            getattr(getattr(leaf, "is_null", None), "key", None),
            getattr(getattr(leaf, "nested", None), "key", None),
        ):
            if isinstance(key, str):
                keys.append(key.split(".", 1)[0].split("[", 1)[0])
                break
    return keys


def field_conditions(condition) -> list:
    """The `models.FieldCondition`s of a `qdrant_client.models.Filter` outside nested conditions."""
    from qdrant_client import models

    return [leaf for leaf in _leaf_conditions(condition) if isinstance(leaf, models.FieldCondition)]


def _matched_types(field) -> tuple[str, list[str]] | None:
    """(what the condition gives, the payload types it can match) for a match or range condition, else None."""
    from qdrant_client import models

    match, bounds = field.match, field.range
    if isinstance(match, (models.MatchValue, models.MatchAny, models.MatchExcept)):
        value = match.value if isinstance(match, models.MatchValue) else (
            match.any if isinstance(match, models.MatchAny) else match.except_)
        values = value if isinstance(value, list) else [value]
        if not values:
            return None
        given = sorted({"bool" if isinstance(v, bool) else "int" if isinstance(v, int) else "str" for v in values})
        return f"{type(match).__name__} of {'/'.join(given)}", given
    if isinstance(match, models.MatchText):
        return "MatchText (a str)", ["str"]
    if isinstance(bounds, models.Range):
        return "Range (numbers)", ["int", "float"]
    return None


def check_filter_keys(filter, stored_keys: list[str] | None, stored_types: dict[str, list[str]] | None = None) -> None:
    """A filter on a payload key that no point has matches nothing (or everything, negated), and so does a match
    of another type than the key's values (a string on an int key, a range on a string key): errors, naming the
    keys the points have or the key's types. Collections built before the keys (types) were recorded (`None`)
    are not checked."""
    if stored_keys is None or filter is None or type(filter).__module__.startswith("qdrant_edge"):
        return
    missing = [key for key in dict.fromkeys(filter_keys(filter)) if key not in stored_keys]
    if missing:
        have = f"keys the points have: {stored_keys}" if stored_keys else "the points have no payload"
        raise ValueError(f"`filter` names payload key {missing[0]!r}, which no point has; {have}.")
    if stored_types is None:
        return
    from qdrant_client import models

    for field in field_conditions(filter):
        kinds = stored_types.get(field.key)
        found = _matched_types(field)
        if kinds is None or found is None:  # a path into nested values ("a.b", "a[]"), or no typed match
            continue
        given, matchable = found
        effect = "exclude nothing" if isinstance(field.match, models.MatchExcept) else "match nothing"
        if not set(matchable) & set(kinds):
            raise ValueError(f"`filter` matches payload key {field.key!r} with {given}, but the points hold "
                             f"{'/'.join(kinds)} values there: it would {effect}. Allowed: a condition of "
                             "the type the points hold.")
