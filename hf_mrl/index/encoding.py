"""Encoding a dataset into the full embeddings an index is built from, its ids and payloads, and the fingerprint
that ties an index to the model that encoded it."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence

import numpy as np
import torch

from ..modeling.encoding import encode_dataset
from ..modeling.modeling_matryoshka import as_matryoshka_model


def encode_embeddings(
    model,
    dataset,
    collate_fn,
    batch_size: int = 64,
    *,
    accelerator=None,
    exclude_keys: Sequence[str] = ("labels",),
    show_progress: bool | None = None,
) -> np.ndarray:
    """Full embeddings (N, D) float32 of every row of `dataset`, in order: `model(**batch).embeddings` for
    `batch = collate_fn(rows)` (minus `exclude_keys`), batched, without gradients (`hf_mrl.modeling.encoding.
    encode_dataset`; a `SentenceTransformer` is encoded through the `MatryoshkaModel` computing the same embeddings).

    With an `accelerate.Accelerator` (one is made when none is given and the script runs under
    `accelerate launch` / torchrun with several processes), batches are split across its processes and
    gathered back; every process gets all N rows in dataset order.
    """
    return _encode(as_matryoshka_model(model), dataset, collate_fn, batch_size, accelerator, exclude_keys, show_progress)


def _encode(model, dataset, collate_fn, batch_size, accelerator, exclude_keys, show_progress) -> np.ndarray:
    """`encode_embeddings` for a model converted already."""
    if accelerator is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=not torch.cuda.is_available())
    return encode_dataset(model, dataset, collate_fn, batch_size, "encoding", accelerator=accelerator,
                          exclude_keys=tuple(exclude_keys), show_progress=show_progress).embeddings


def dataset_ids(dataset, id_column: str | None) -> np.ndarray | None:
    """The int ids in `dataset[id_column]` (None without an `id_column`: the indexes use row numbers)."""
    if id_column is None:
        return None
    if id_column not in dataset.column_names:
        raise ValueError(f"`id_column` {id_column!r} is not a column of the dataset; columns: {dataset.column_names}.")
    return np.asarray(dataset[id_column])


def dataset_payloads(dataset, payload_columns: Sequence[str] | None) -> list[dict] | None:
    """One payload dict per row of `dataset`: the values of `payload_columns` (default: text, number and
    class-label columns); class labels also give their name as `<column>_name`."""
    import datasets

    features = dataset.features
    if payload_columns is None:
        scalar = lambda feature: isinstance(feature, datasets.ClassLabel) or (  # noqa: E731
            isinstance(feature, datasets.Value) and feature.dtype.startswith(("string", "large_string", "int", "float", "bool")))
        payload_columns = [column for column, feature in features.items() if scalar(feature)]
    else:
        missing = [column for column in payload_columns if column not in dataset.column_names]
        if isinstance(payload_columns, str) or missing:
            raise ValueError(f"`payload_columns` must be a list of columns of the dataset ({dataset.column_names}), "
                             f"got {payload_columns!r}.")
    if not payload_columns:
        return None
    columns = {column: dataset[column] for column in payload_columns}
    for column in payload_columns:
        if isinstance(features[column], datasets.ClassLabel):
            columns[f"{column}_name"] = [features[column].int2str(value) for value in columns[column]]
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
# Config keys that change with where and how a model was saved, not with what it computes.
_VOLATILE_CONFIG_KEYS = {"transformers_version", "architectures", "auto_map", "dtype", "torch_dtype"}


def _stable_config(value):
    if isinstance(value, dict):
        return {  # keys as strings: a saved config.json turns id2label's int keys into strings
            str(key): _stable_config(item) for key, item in value.items()
            if not str(key).startswith("_") and key not in _VOLATILE_CONFIG_KEYS
        }
    if isinstance(value, (list, tuple)):
        return [_stable_config(item) for item in value]
    return value


def model_fingerprint(model) -> str:
    """sha256 of a model's config (less its paths and library versions) and of every tensor of its state dict
    (name, dtype, shape, bytes), in name order. Deterministic: the same weights and settings give the same
    digest in any process, before and after `save_pretrained` / `from_pretrained`; one changed weight changes it.
    Reads the weights once (about 0.1 s per 100 MB)."""
    return _fingerprint(as_matryoshka_model(model))


def _fingerprint(model) -> str:
    """`model_fingerprint` of a model converted already."""
    digest = hashlib.sha256()
    digest.update(json.dumps(_stable_config(model.config.to_dict()), sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def model_record(model) -> dict:
    """What an index built by `model` (converted already) records of it: `{"fingerprint": model_fingerprint(model),
    "name_or_path": ...}`."""
    return {"fingerprint": _fingerprint(model), "name_or_path": getattr(model, "name_or_path", "") or ""}


def check_model_record(record) -> dict | None:
    """The `model` argument of the indexes' constructors: None, or a `model_record`."""
    if record is not None and not (isinstance(record, dict) and isinstance(record.get("fingerprint"), str)):
        raise ValueError(f"`model` must be None or a dict with a 'fingerprint' string, got {record!r}.")
    return record


def encode_for_index(model, dataset, collate_fn, batch_size: int, *, accelerator, id_column: str | None,
                     exclude_keys: Sequence[str], show_progress: bool | None):
    """What an index's `from_dataset` builds from: (embeddings, ids, model record) of `dataset` encoded with
    `model` (see `encode_embeddings`, `dataset_ids`, `model_record`)."""
    ids = dataset_ids(dataset, id_column)
    model = as_matryoshka_model(model)  # once: a SentenceTransformer is converted for both uses below
    embeddings = _encode(model, dataset, collate_fn, batch_size, accelerator, exclude_keys, show_progress)
    return embeddings, ids, model_record(model)


def check_index_model(built_with: dict | None, model, name: str | None = None) -> None:
    """Raises `ValueError` when an index recorded the model that built it (`built_with`, see `model_record`) and
    `model` is another one: its embeddings would not match the stored ones, whatever their width. An index built
    from raw embeddings (`built_with` None) accepts any model."""
    if built_with is None:
        return
    fingerprint = model_fingerprint(model)
    if fingerprint != built_with["fingerprint"]:
        built = built_with.get("name_or_path") or "a model"
        given = name or getattr(model, "name_or_path", "") or "the given model"
        raise ValueError(
            f"this index was built by {built} (fingerprint {built_with['fingerprint'][:16]}), but the model given is "
            f"{given} (fingerprint {fingerprint[:16]}): another model's embeddings do not match the stored ones. "
            "Search with the model that built the index, or rebuild the index with this one."
        )
