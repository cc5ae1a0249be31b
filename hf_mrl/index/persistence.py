"""Saving and loading a `MatryoshkaIndex` folder: arrays, faiss files and a manifest with the sha256 of every
file and of every manifest field, written atomically (`hf_mrl.modeling.files.write_folder_atomically`: staging folder,
then rename; only an index folder is ever replaced) and fully checked on load."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from ..modeling.files import FolderKind, read_json_object, remove_debris, sha256_of_file, write_folder_atomically
from .choices import INT8_SCALES, SHORTLIST_INDEXES, STORAGES
from .storage import _StoredVectors
from .validation import _check_choice, _check_positive_int

if TYPE_CHECKING:
    from .matryoshka_index import MatryoshkaIndex

FORMAT_NAME = "hf_mrl.MatryoshkaIndex"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# sha256 of each manifest field's JSON, written with the manifest: an edited field is named at load.
FIELD_CHECKSUMS = "field_sha256"


def _is_index_folder(folder: Path) -> bool:
    manifest = read_json_object(folder / MANIFEST)
    return manifest is not None and manifest.get("format") == FORMAT_NAME


INDEX_FOLDER = FolderKind("MatryoshkaIndex", _is_index_folder)


def _field_sha256(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def save_index_folder(matryoshka_index: MatryoshkaIndex, path) -> Path:
    """Writes `matryoshka_index` to the folder `path` (see `MatryoshkaIndex.save`)."""

    def write(staging: Path) -> None:
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
            file.name: {"sha256": sha256_of_file(file), "bytes": file.stat().st_size} for file in sorted(staging.iterdir())
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
            "model": matryoshka_index.model,
            "files": files,
        }
        manifest[FIELD_CHECKSUMS] = {key: _field_sha256(value) for key, value in manifest.items()}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")

    return write_folder_atomically(path, write, INDEX_FOLDER)


def load_index_folder(path) -> tuple[dict, _StoredVectors, np.ndarray | None, dict]:
    """Reads and checks a folder written by `save_index_folder` (see `MatryoshkaIndex.load`): returns the
    manifest, the stored vectors, the ids (None: row numbers) and the shortlist indexes by dim."""
    given, path = os.fspath(path), Path(path).expanduser()
    remove_debris(path, INDEX_FOLDER)  # of a killed save, before anything is read
    if not path.is_dir():
        raise FileNotFoundError(f"folder not found: {given} (no saved MatryoshkaIndex there)")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ValueError(f"`path` {str(path)!r} is not a saved MatryoshkaIndex: it has no {MANIFEST}.")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{manifest_path} is corrupted: it is not valid JSON ({error}).") from error
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
        digest = sha256_of_file(file)
        if digest != info["sha256"]:
            raise ValueError(f"{file} fails its checksum (sha256 {digest}, manifest {info['sha256']}): it is corrupted.")

    count, stored_dim, storage = manifest["count"], manifest["stored_dim"], manifest["storage"]
    blocks = [int(value) for value in manifest["nesting_dims"]]
    code_width = (stored_dim + 7) // 8 if storage == "binary" else stored_dim
    code_dtype = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16, "int8": np.int8,
                  "binary": np.uint8}[storage]
    fields = f"count={count}, stored_dim={stored_dim}, storage={storage!r}"
    codes = _load_array(path, manifest, "vectors.npy", (count, code_width), code_dtype, fields)
    scales = None
    if storage == "int8":
        vector_scales = manifest["int8_scale"] == "vector"
        scale_shape = (count, len(blocks)) if vector_scales else (stored_dim,)
        scale_fields = f"count={count}, nesting_dims={blocks}" if vector_scales else f"stored_dim={stored_dim}"
        scales = _load_array(path, manifest, "scales.npy", scale_shape, np.float32, f"int8_scale={manifest['int8_scale']!r}, {scale_fields}")
    ids = None
    if "ids.npy" in manifest["files"]:
        ids = _load_array(path, manifest, "ids.npy", (count,), np.int64, f"count={count}")

    shortlists = {}
    for dim_text, name in manifest["shortlist_files"].items():
        if name not in manifest["files"]:
            raise ValueError(f"{path}: shortlist file {name!r} is not in the manifest's file list.")
        binary = manifest["shortlist_storage"] == "binary"
        try:
            index = (faiss.read_index_binary if binary else faiss.read_index)(str(path / name))
        except RuntimeError as error:
            raise ValueError(
                f"{path / name} is unreadable as a {'binary ' if binary else ''}faiss index (manifest "
                f"shortlist_storage={manifest['shortlist_storage']!r}): {str(error).strip().splitlines()[-1]}"
            ) from None
        if index.ntotal != count or index.d != int(dim_text):
            raise ValueError(
                f"{path / name} holds {index.ntotal} vectors of dim {index.d}, but the manifest says {count} of "
                f"dim {dim_text} (fields count, shortlist_files): the manifest was edited or the folder mixes files "
                "of different indexes."
            )
        shortlists[int(dim_text)] = index
    _check_field_checksums(manifest, manifest_path)
    return manifest, _StoredVectors(storage, stored_dim, codes, scales, blocks), ids, shortlists


def _check_manifest(manifest, manifest_path: Path) -> None:
    """Types and ranges of the fields, and how they fit together; names the field."""
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
    try:
        _check_choice(manifest["storage"], STORAGES, "storage")
        _check_choice(manifest["shortlist_storage"], STORAGES, "shortlist_storage")
        _check_choice(manifest["shortlist_index"], SHORTLIST_INDEXES, "shortlist_index")
        _check_choice(manifest["int8_scale"], INT8_SCALES, "int8_scale")
        for key in ("count", "dim", "stored_dim"):
            _check_positive_int(manifest[key], key)
        blocks = manifest["nesting_dims"]
        if not (isinstance(blocks, list) and blocks and all(isinstance(b, int) and not isinstance(b, bool) for b in blocks)):
            raise ValueError(f"`nesting_dims` must be a list of integers, got {blocks!r}.")
        for key in ("files", "shortlist_files", "index_params"):
            if not isinstance(manifest[key], dict):
                raise ValueError(f"`{key}` must be a JSON object, got {manifest[key]!r}.")
    except ValueError as error:
        raise ValueError(f"{manifest_path}: field {error}") from None
    dim, stored_dim, blocks = manifest["dim"], manifest["stored_dim"], manifest["nesting_dims"]
    if stored_dim > dim:
        raise ValueError(f"{manifest_path}: field `dim` is {dim}, smaller than `stored_dim` {stored_dim}; the manifest was edited.")
    if blocks != sorted(set(blocks)) or blocks[0] < 1 or blocks[-1] != stored_dim:
        raise ValueError(
            f"{manifest_path}: field `nesting_dims` {blocks} must rise and end at `stored_dim` {stored_dim}; the "
            "manifest was edited."
        )
    for dim_text in manifest["shortlist_files"]:
        if not (str(dim_text).isdigit() and 1 <= int(dim_text) <= stored_dim):
            raise ValueError(
                f"{manifest_path}: field `shortlist_files` has dim {dim_text!r}; allowed: 1 to `stored_dim` {stored_dim}."
            )


def _check_field_checksums(manifest: dict, manifest_path: Path) -> None:
    """Every field against the sha256 saved with it: an edit the arrays cannot reveal (e.g. `dim`) is named."""
    checksums = manifest.get(FIELD_CHECKSUMS)
    if checksums is None:
        return  # written before field checksums existed
    if not isinstance(checksums, dict):
        raise ValueError(f"{manifest_path}: field `{FIELD_CHECKSUMS}` must be a JSON object; the manifest is corrupted.")
    for key, digest in checksums.items():
        if key not in manifest:
            raise ValueError(f"{manifest_path}: field `{key}` was removed after the index was saved; the manifest was edited.")
        if _field_sha256(manifest[key]) != digest:
            raise ValueError(
                f"{manifest_path}: field `{key}` was changed after the index was saved (it is now {manifest[key]!r}, "
                "which fails its checksum); the manifest was edited. Re-save or rebuild the index."
            )


def _load_array(path: Path, manifest: dict, name: str, shape: tuple, dtype, fields: str) -> np.ndarray:
    if name not in manifest["files"]:
        raise ValueError(f"{path}: the manifest lists no {name!r}, which this index needs.")
    try:
        array = np.load(path / name, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"{path / name} is corrupted or unreadable: not a readable .npy array ({error}).") from error
    if array.shape != shape or array.dtype != np.dtype(dtype):
        raise ValueError(
            f"{path / name} has shape {array.shape} and dtype {array.dtype}, but the manifest's {fields} imply shape "
            f"{shape} and dtype {np.dtype(dtype)}: the manifest was edited or the folder mixes files of different indexes."
        )
    return array
