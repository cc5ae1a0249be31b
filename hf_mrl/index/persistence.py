"""Saving and loading a `MatryoshkaIndex` folder: arrays, faiss files and a manifest with the sha256 of every
file, written atomically (staging folder, then rename) and fully checked on load."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from .shortlists import SHORTLIST_INDEXES
from .storage import INT8_SCALES, STORAGES, _StoredVectors
from .validation import _check_choice, _check_positive_int

if TYPE_CHECKING:
    from .matryoshka_index import MatryoshkaIndex

FORMAT_NAME = "hf_mrl.MatryoshkaIndex"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**22), b""):
            digest.update(block)
    return digest.hexdigest()


def save_index_folder(matryoshka_index: MatryoshkaIndex, path) -> Path:
    """Writes `matryoshka_index` to the folder `path` (see `MatryoshkaIndex.save`)."""
    path = Path(path)
    if path.exists() and not (path.is_dir() and (path / MANIFEST).is_file()):
        raise ValueError(f"`path` {str(path)!r} exists and is not a saved MatryoshkaIndex; refusing to overwrite it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        vectors = matryoshka_index._vectors
        arrays = {"vectors.npy": vectors.codes, "scales.npy": vectors.scales, "ids.npy": matryoshka_index.ids}
        for name, array in arrays.items():
            if array is not None:
                np.save(staging / name, array, allow_pickle=False)
        shortlist_files = {}
        for dim, index in sorted(matryoshka_index._shortlists.items()):
            shortlist_files[str(dim)] = name = f"shortlist_{dim}.faiss"
            writer = faiss.write_index_binary if isinstance(index, faiss.IndexBinary) else faiss.write_index
            writer(index, str(staging / name))
        files = {
            file.name: {"sha256": _sha256(file), "bytes": file.stat().st_size} for file in sorted(staging.iterdir())
        }
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "count": matryoshka_index.count,
            "dim": matryoshka_index.dim,
            "stored_dim": matryoshka_index.stored_dim,
            "storage": matryoshka_index.storage,
            "int8_scale": matryoshka_index.int8_scale,
            "nesting_dims": vectors.blocks,
            "shortlist_index": matryoshka_index.shortlist_index,
            "shortlist_storage": matryoshka_index.shortlist_storage,
            "shortlist_files": shortlist_files,
            "index_params": matryoshka_index.index_params,
            "files": files,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _move_into_place(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def _move_into_place(staging: Path, path: Path) -> None:
    if not path.exists():
        os.replace(staging, path)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    os.replace(path, retired / path.name)
    os.replace(staging, path)
    shutil.rmtree(retired, ignore_errors=True)


def load_index_folder(path) -> tuple[dict, _StoredVectors, np.ndarray | None, dict]:
    """Reads and checks a folder written by `save_index_folder` (see `MatryoshkaIndex.load`): returns the
    manifest, the stored vectors, the ids (None: row numbers) and the shortlist indexes by dim."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ValueError(f"`path` {str(path)!r} is not a saved MatryoshkaIndex: it has no {MANIFEST}.")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{manifest_path} is not valid JSON ({error}); the index folder is corrupted.") from error
    _check_manifest(manifest, manifest_path)
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

    count, stored_dim, storage = manifest["count"], manifest["stored_dim"], manifest["storage"]
    blocks = [int(value) for value in manifest["nesting_dims"]]
    code_width = (stored_dim + 7) // 8 if storage == "binary" else stored_dim
    code_dtype = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16, "int8": np.int8,
                  "binary": np.uint8}[storage]
    codes = _load_array(path, manifest, "vectors.npy", (count, code_width), code_dtype)
    scales = None
    if storage == "int8":
        scale_shape = (stored_dim,) if manifest["int8_scale"] == "dimension" else (count, len(blocks))
        scales = _load_array(path, manifest, "scales.npy", scale_shape, np.float32)
    ids = _load_array(path, manifest, "ids.npy", (count,), np.int64) if "ids.npy" in manifest["files"] else None

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
    return manifest, _StoredVectors(storage, stored_dim, codes, scales, blocks), ids, shortlists


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
