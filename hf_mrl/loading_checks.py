"""Checks a model folder passes before any weights are read: pickled weights are refused by name
(`refuse_pickled_weights`), and the shapes of the saved weights are read from the safetensors headers without
loading a tensor (`saved_weight_shapes`).

Imports only the standard library at module level: the modeling files import it, and they travel as
trust_remote_code files to machines without hf_mrl.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

__all__ = ["PICKLE_PATTERNS", "refuse_pickled_weights", "saved_weight_shapes"]

# Files `torch.load` would unpickle, weights first (the name an error shows is the first match).
PICKLE_PATTERNS = ("pytorch_model*.bin", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")


def _local_folder(name_or_path) -> Path | None:
    if not isinstance(name_or_path, (str, os.PathLike)) or not os.fspath(name_or_path):
        return None
    folder = Path(os.fspath(name_or_path)).expanduser()
    return folder if folder.is_dir() else None


def refuse_pickled_weights(name_or_path) -> None:
    """`ValueError` naming the file when a local model folder holds its weights only as a pickle
    (`pytorch_model.bin`, a `.bin` / `.pt` checkpoint): unpickling runs code, so hf_mrl never does it. A folder
    with safetensors weights, or a Hub id, passes."""
    folder = _local_folder(name_or_path)
    if folder is None or any(folder.glob("*.safetensors")):
        return
    for pattern in PICKLE_PATTERNS:
        found = sorted(path for path in folder.glob(pattern) if path.is_file())
        if found:
            raise ValueError(
                f"{found[0]}: this file is a pickle; hf_mrl loads safetensors only (unpickling can run code). "
                "Convert it where you trust it: `model.save_pretrained(folder)` writes model.safetensors."
            )


def _safetensors_header(path: Path) -> dict:
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    return header


def saved_weight_shapes(name_or_path) -> dict[str, tuple[int, ...]] | None:
    """`{parameter name: shape}` of the weights in a local model folder (`model.safetensors` or the shards of
    its index), read from the headers only; None for a Hub id or a folder without safetensors weights."""
    folder = _local_folder(name_or_path)
    if folder is None:
        return None
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        return None
    shapes = {}
    for name in files:
        for key, entry in _safetensors_header(folder / name).items():
            shapes[key] = tuple(entry["shape"])
    return shapes
