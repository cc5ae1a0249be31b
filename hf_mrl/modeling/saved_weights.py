"""Where a saved model folder keeps its weights, and its whole state dict read back from them.

A text model's folder holds its encoder once: in `0_Transformer/model.safetensors`, under the plain encoder's
names, which is the file sentence-transformers loads. The root `model.safetensors` holds the rest (projection,
heads; no tensor at all for an encoder with mean pooling and no projection), and its metadata says that the
encoder is kept apart and under which prefix the model holds it (`backbone.`, or `matryoshka.backbone.` in a
classifier). A root file without that metadata (image models, the dual encoder, text models saved before this
layout, which held the encoder in both places) holds every weight itself and loads as it always did.

A flat module (only single-dot imports): the trust_remote_code export copies it beside the modeling files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

__all__ = [
    "DOWNLOAD_KWARGS",
    "ENCODER_FOLDER",
    "WEIGHTS_INDEX_NAME",
    "WEIGHTS_NAME",
    "EncoderApart",
    "encoder_apart",
    "fetch_weights_kept_apart",
    "move_encoder_out_of_root",
    "read_state_dict",
    "saved_weight_files",
    "weight_files",
]

ENCODER_FOLDER = "0_Transformer"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
# Metadata of the root weights file of a folder whose encoder is kept apart.
_PREFIX_KEY = "hf_mrl.encoder_prefix"
_UNUSED_KEY = "hf_mrl.encoder_unused"
# `from_pretrained` keyword arguments that say where a Hub checkpoint's files are.
DOWNLOAD_KWARGS = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only", "subfolder")


@dataclass(frozen=True)
class EncoderApart:
    """The encoder of a saved folder, kept in `ENCODER_FOLDER`: the model holds its weights under `prefix`, all
    but `unused` (weights of the plain encoder class that the model does not have, e.g. a zeroed pooler)."""

    prefix: str
    unused: tuple[str, ...]


def weight_files(folder) -> list[Path]:
    """The safetensors files of the weights saved in `folder`: `model.safetensors`, or the shards its index
    lists; empty when neither is there."""
    folder = Path(folder)
    index = folder / WEIGHTS_INDEX_NAME
    if (folder / WEIGHTS_NAME).is_file():
        return [folder / WEIGHTS_NAME]
    if not index.is_file():
        return []
    try:
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ValueError(f"{index} is corrupted: it is not a JSON object with a `weight_map`.") from None
    return [folder / name for name in shards]


def encoder_apart(folder) -> EncoderApart | None:
    """Where the root weights of `folder` say the encoder is: an `EncoderApart` (in `ENCODER_FOLDER`), or None
    when they hold every weight themselves (or there are none)."""
    root = Path(folder) / WEIGHTS_NAME
    if not root.is_file():
        return None
    with safe_open(str(root), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if _PREFIX_KEY not in metadata:
        return None
    return EncoderApart(metadata[_PREFIX_KEY], tuple(json.loads(metadata.get(_UNUSED_KEY, "[]"))))


def saved_weight_files(folder) -> list[Path]:
    """Every weights file the model saved in `folder` loads: the root's (`weight_files`), then the encoder's
    when kept apart. What a digest of the model's weights reads."""
    files = weight_files(folder)
    if encoder_apart(folder) is not None:
        files += weight_files(Path(folder) / ENCODER_FOLDER)
    return files


def _read(files: list[Path]) -> dict[str, torch.Tensor]:
    state_dict = {}
    for path in files:
        state_dict.update(load_file(path))
    return state_dict


def read_state_dict(folder) -> dict[str, torch.Tensor]:
    """The weights of the model saved in `folder`, under the names its class saves them with: the root's, plus
    the encoder's from `ENCODER_FOLDER` (under its prefix) when kept apart. Safetensors only."""
    folder = Path(folder)
    state_dict = _read(weight_files(folder))
    apart = encoder_apart(folder)
    if apart is None:
        return state_dict
    encoder_files = weight_files(folder / ENCODER_FOLDER)
    if not encoder_files:
        raise ValueError(
            f"{folder / WEIGHTS_NAME} keeps the encoder in {ENCODER_FOLDER}/, which holds no {WEIGHTS_NAME}: the "
            "folder is incomplete; copy or download it again."
        )
    encoder = _read(encoder_files)
    state_dict.update({apart.prefix + name: value for name, value in encoder.items() if name not in apart.unused})
    return state_dict


def move_encoder_out_of_root(folder, prefix: str, unused: list[str]) -> None:
    """Rewrites the root weights of the model saved in `folder` (`model.safetensors` or shards) as one
    `model.safetensors` without the weights under `prefix` (the encoder, which `ENCODER_FOLDER` holds: its
    `unused` weights are not the model's), recording both in the file's metadata."""
    folder = Path(folder)
    files = weight_files(folder)
    rest = {name: value for name, value in _read(files).items() if not name.startswith(prefix)}
    for path in files:
        path.unlink()
    (folder / WEIGHTS_INDEX_NAME).unlink(missing_ok=True)
    metadata = {"format": "pt", _PREFIX_KEY: prefix, _UNUSED_KEY: json.dumps(sorted(unused))}
    save_file(rest, folder / WEIGHTS_NAME, metadata=metadata)


def fetch_weights_kept_apart(name_or_path, **download_kwargs) -> Path | None:
    """The local folder of `name_or_path` (a folder, or a Hub id whose files are downloaded into the cache) when
    its encoder is kept apart, holding the files `read_state_dict` reads; None when its root weights hold every
    weight (transformers loads those as usual). `download_kwargs` are `from_pretrained`'s (`DOWNLOAD_KWARGS`)."""
    from transformers.utils import cached_file

    def fetch(name: str) -> str | None:
        return cached_file(name_or_path, name, _raise_exceptions_for_missing_entries=False, **download_kwargs)

    root = fetch(WEIGHTS_NAME)
    if root is None or encoder_apart(Path(root).parent) is None:
        return None
    if fetch(f"{ENCODER_FOLDER}/{WEIGHTS_NAME}") is None:
        index = fetch(f"{ENCODER_FOLDER}/{WEIGHTS_INDEX_NAME}")
        for path in weight_files(Path(index).parent) if index is not None else []:
            fetch(f"{ENCODER_FOLDER}/{path.name}")
    return Path(root).parent
