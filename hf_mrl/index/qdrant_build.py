"""What a Qdrant build records beyond its layout, and the checks that use it:

- a digest of its input (ids, vectors, payloads, settings, model): building again with the same input resumes
  an interrupted build; another input is refused unless `overwrite=True`, so a rebuild is never a mix of two;
- its state, "building" from the first point until the engine has flushed the last one, then "complete":
  `open()` refuses an incomplete collection instead of serving part of it;
- the payload keys its points have and the types of their values, so that a filter naming another key, or
  matching another type, is an error, not an empty answer;
- the disk space the embedded engine needs, checked before it starts (on a full disk Qdrant Edge dies by SIGBUS).
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

BUILDING, COMPLETE = "building", "complete"
_MB = 2**20
# Qdrant Edge maps two 32 MiB WAL segments and a 32 MiB chunk per stored vector and for the payloads up front,
# then writes each point about three times (WAL, segment, optimised segment).
_SEGMENT_BYTES = 32 * _MB
_COPIES = 3


def input_digest(embeddings: np.ndarray, ids: np.ndarray, payloads: list[dict] | None, metadata: dict) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(embeddings, dtype=np.float32).tobytes())
    for part in (payloads, metadata):
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def payload_keys(payloads: list[dict] | None) -> list[str]:
    return sorted({str(key) for payload in payloads or () for key in payload})


def payload_value_type(value) -> list[str]:
    """The Qdrant types of a payload value: "bool", "int", "float", "str", "dict", "null"; a list gives its
    items' types (Qdrant matches a condition against each item)."""
    if value is None:
        return ["null"]
    if isinstance(value, (bool, np.bool_)):
        return ["bool"]
    if isinstance(value, (int, np.integer)):
        return ["int"]
    if isinstance(value, (float, np.floating)):
        return ["float"]
    if isinstance(value, (str, np.str_)):
        return ["str"]
    if isinstance(value, dict):
        return ["dict"]
    if isinstance(value, (list, tuple)):
        return [kind for item in value for kind in payload_value_type(item)]
    return [type(value).__name__]


def payload_types(payloads: list[dict] | None) -> dict[str, list[str]]:
    """For each payload key, the types its values have across the points (see `payload_value_type`), so that a
    filter matching another type (a string on an int key, a range on a string key) is an error, not an empty
    answer."""
    types: dict[str, set[str]] = {}
    for payload in payloads or ():
        for key, value in payload.items():
            types.setdefault(str(key), set()).update(payload_value_type(value))
    return {key: sorted(kinds) for key, kinds in sorted(types.items())}


def build_record(metadata: dict) -> dict:
    """The stored build record; a collection written before records existed counts as complete, input unknown."""
    record = metadata.get("build")
    return record if isinstance(record, dict) else {"state": COMPLETE, "input": None, "points": None}


def incomplete_error(name: str, count: int, record: dict) -> ValueError:
    return ValueError(
        f"{name} is incomplete: its build stopped after {count} of {record.get('points')} points (killed or failed "
        "before the end). Build again with the same arguments to resume it, or with overwrite=True to rebuild it."
    )


def other_build_error(name: str, record: dict) -> ValueError:
    state = "a complete" if record.get("state") == COMPLETE else "an incomplete"
    return ValueError(
        f"{name} already holds {state} build of other data (other vectors, ids, payloads or model); nothing was "
        "changed. Pass overwrite=True to replace it, or build into another `collection_name` or `path`."
    )


def expected_bytes(count: int, stored_dims: list[int], payloads: list[dict] | None) -> int:
    sample = payloads[:1000] if payloads else []
    payload_bytes = len(json.dumps(sample, default=str)) / max(len(sample), 1) if sample else 0
    per_point = 4 * sum(stored_dims) + payload_bytes + 64  # + id, offsets and graph links
    mapped = (len(stored_dims) + 3) * _SEGMENT_BYTES  # vector chunks, payloads, two WAL segments
    return int(mapped + _COPIES * count * per_point)


def free_bytes(folder: Path) -> int:
    while not folder.exists() and folder != folder.parent:  # the folder may not exist yet
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_disk_space(folder: Path, needed: int, where: str) -> None:
    free = free_bytes(folder)
    if free < needed:
        raise OSError(f"disk full: the Qdrant build {where} needs about {needed / _MB:.0f} MB, {free / _MB:.0f} MB "
                      f"free on {str(folder)!r}; free some space or give another `path`. Nothing was written.")


def is_disk_full(error: BaseException, folder: Path | None) -> bool:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    text = str(error).lower()
    return "no space left" in text or "disk full" in text or (folder is not None and free_bytes(folder) < _SEGMENT_BYTES)


def stopped_error(error: BaseException, where: str, done: int, count: int, folder: Path | None) -> BaseException:
    """The error to raise when the engine fails mid-build: a plain "disk full" `OSError`, or the engine's own
    error with a note saying where the build stopped and how to go on."""
    after = f"the Qdrant build {where} stopped after {done} of {count} points"
    if is_disk_full(error, folder):
        free = free_bytes(folder) / _MB if folder is not None else float("nan")
        return OSError(f"disk full: {after} ({free:.0f} MB free); the collection is marked incomplete. Free some "
                       "space, then build again with the same arguments to resume.")
    error.add_note(f"hf_mrl: {after}; the collection is marked incomplete. Build again with the same arguments to "
                   "resume, or with overwrite=True to start over.")
    return error
