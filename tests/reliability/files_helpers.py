"""Shared pieces of the file-safety tests: tiny models, folder snapshots, debris listing, foreign folders."""

import json
from pathlib import Path

import numpy as np
import torch

from hf_mrl import MatryoshkaConfig, MatryoshkaForImageClassification, MatryoshkaModel
from hf_mrl.modeling.configuration_matryoshka import MatryoshkaDualEncoderConfig
from hf_mrl.modeling.modeling_dual_encoder import MatryoshkaDualEncoderModel

from ..tiny import tiny_bert_config, tiny_vit_config


def tiny_model(kind: str = "embedding", seed: int = 0):
    """A tiny random hf_mrl model: "embedding" (ViT, 24-d), "classifier" (ViT, 3 classes) or "dual"."""
    torch.manual_seed(seed)
    if kind == "embedding":
        return MatryoshkaModel(MatryoshkaConfig(backbone_config=tiny_vit_config(), embedding_dim=24, matryoshka_dims=[8, 24]))
    if kind == "classifier":
        return MatryoshkaForImageClassification(MatryoshkaConfig(backbone_config=tiny_vit_config(), num_labels=3))
    config = MatryoshkaDualEncoderConfig(vision_config=tiny_vit_config(), text_config=tiny_bert_config(), projection_dim=16)
    return MatryoshkaDualEncoderModel(config)


def tiny_index(count: int = 40, dim: int = 16, seed: int = 0, **kwargs):
    from hf_mrl.index import MatryoshkaIndex

    vectors = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    kwargs.setdefault("shortlist_dim", 8)
    return MatryoshkaIndex(vectors, show_progress=False, **kwargs)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes)."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def debris(parent: Path) -> list[str]:
    """Temporary folders and files hf_mrl writes while saving (`.<name>.tmp-*`, `.<name>.old-*`, `.<name>.del-*`)."""
    marks = (".tmp", ".old-", ".del-")
    return sorted(path.name for path in parent.iterdir() if path.name.startswith(".") and any(m in path.name for m in marks))


FOREIGN_FOLDERS = {
    # another project's model: a transformers config.json of its own, and the user's data beside it
    "other-config": {"config.json": json.dumps({"model_type": "bert", "hidden_size": 8}), "data.csv": "id,text\n1,keep me\n"},
    # another tool's index manifest
    "other-manifest": {"manifest.json": json.dumps({"format": "other-tool", "count": 3}), "data.csv": "a,b\n1,2\n"},
    # a folder of notes
    "plain-files": {"data.csv": "x\n1\n", "notes.txt": "mine"},
    # a sentence-transformers model that hf_mrl did not export (no nesting dims in its config)
    "st-model": {"modules.json": "[]", "config.json": json.dumps({"model_type": "bert"}), "data.csv": "x\n"},
}


def make_foreign_folder(path: Path, name: str) -> dict[str, bytes]:
    path.mkdir(parents=True)
    for file, text in FOREIGN_FOLDERS[name].items():
        (path / file).write_text(text)
    return snapshot(path)
