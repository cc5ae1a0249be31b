"""Reading a sentence-transformers folder (`modules.json` + module folders) into what a `MatryoshkaConfig` needs, with
no sentence-transformers import: where the encoder is, its pooling, the Dense layer's weights and whether the
output is normalised.

A flat module (only single-dot imports): the trust_remote_code export copies it beside the modeling files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

__all__ = ["SentenceTransformersLayout", "MODULES_FILE", "read_sentence_transformers_folder", "is_sentence_transformers_folder"]

MODULES_FILE = "modules.json"
# Pooling modes of sentence-transformers' Pooling module that hf_mrl's pooling computes identically.
_POOLING_MODES = {"mean": "mean", "cls": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}
_IDENTITY = ("torch.nn.modules.linear.Identity", "torch.nn.Identity")


@dataclass
class SentenceTransformersLayout:
    """What a sentence-transformers folder computes: encoder (`transformer_path`) -> pooling -> optional Dense
    (identity activation) -> optional Normalize."""

    transformer_path: Path
    pooling: str
    dense_weight: torch.Tensor | None
    dense_bias: torch.Tensor | None
    normalize: bool
    matryoshka_dims: list[int] | None
    max_seq_length: int | None


def is_sentence_transformers_folder(path) -> bool:
    return Path(str(path)).expanduser().joinpath(MODULES_FILE).is_file()


def _kind(module: dict) -> str:
    return module.get("type", "").rsplit(".", 1)[-1]


def _pooling(folder: Path) -> str:
    config = json.loads((folder / "config.json").read_text())
    if "pooling_mode" in config:
        modes = [config["pooling_mode"]]
    else:
        modes = [key for key, value in config.items() if key.startswith("pooling_mode_") and value is True]
    if len(modes) != 1 or modes[0] not in _POOLING_MODES:
        raise ValueError(
            f"{folder}: pooling {modes} is not supported; hf_mrl pools with one of mean or cls (the first token)."
        )
    return _POOLING_MODES[modes[0]]


def _dense(folder: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    config = json.loads((folder / "config.json").read_text())
    activation = config.get("activation_function", "torch.nn.modules.activation.Tanh")
    if activation not in _IDENTITY:
        raise ValueError(
            f"{folder}: a Dense layer with activation {activation!r} has no hf_mrl equivalent (the projection is linear); "
            "only an identity activation is supported."
        )
    weights = load_file(folder / "model.safetensors") if (folder / "model.safetensors").is_file() else None
    if weights is None:
        raise ValueError(f"{folder}: the Dense layer's weights must be in model.safetensors (pickled weights are never loaded).")
    return weights["linear.weight"], weights.get("linear.bias")


def _module_folder(root: Path, module: dict) -> Path:
    """The folder of a module listed in modules.json: inside `root` (symbolic links resolved), never beside it."""
    relative = module.get("path", "")
    folder = root / str(relative)
    if not folder.resolve().is_relative_to(root.resolve()):
        raise ValueError(
            f"{root / MODULES_FILE}: module {module.get('name', module.get('idx'))!r} ({module.get('type')}) has path "
            f"{relative!r}, which points outside the model folder; a module's path must be a folder inside it."
        )
    return folder


def read_sentence_transformers_folder(path) -> SentenceTransformersLayout:
    """The layout of the sentence-transformers folder at `path`; a clear `ValueError` for modules hf_mrl cannot
    reproduce exactly (other poolings, non-linear Dense layers, several Dense layers, unknown modules)."""
    root = Path(str(path)).expanduser()
    modules = json.loads((root / MODULES_FILE).read_text())
    transformer = pooling = dense = None
    normalize = False
    for module in modules:
        kind, folder = _kind(module), _module_folder(root, module)
        if kind == "Transformer" and transformer is None:
            transformer = folder
        elif kind == "Pooling" and pooling is None:
            pooling = _pooling(folder)
        elif kind == "Dense" and dense is None:
            dense = _dense(folder)
        elif kind == "Normalize":
            normalize = True
        else:
            raise ValueError(
                f"{root}: module {module.get('type')!r} (#{module.get('idx')}) is not supported; hf_mrl reads "
                "Transformer -> Pooling -> optional Dense (identity) -> optional Normalize."
            )
    if transformer is None or pooling is None:
        raise ValueError(f"{root}: a sentence-transformers folder needs a Transformer and a Pooling module.")
    config = json.loads((transformer / "config.json").read_text()) if (transformer / "config.json").is_file() else {}
    settings = transformer / "sentence_bert_config.json"
    max_seq_length = json.loads(settings.read_text()).get("max_seq_length") if settings.is_file() else None
    return SentenceTransformersLayout(
        transformer_path=transformer, pooling=pooling,
        dense_weight=dense[0] if dense else None, dense_bias=dense[1] if dense else None,
        normalize=normalize, matryoshka_dims=config.get("matryoshka_dimensions"), max_seq_length=max_seq_length,
    )
