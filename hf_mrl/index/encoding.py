"""Encoding a dataset into the full embeddings an index is built from, and reading its ids and payloads."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..modeling_matryoshka import as_matryoshka_model
from .validation import _check_positive_int


def encode_embeddings(
    model,
    dataset,
    collate_fn,
    batch_size: int = 64,
    *,
    accelerator=None,
    exclude_keys: Sequence[str] = ("labels",),
    show_progress: bool = True,
) -> np.ndarray:
    """Full embeddings (N, D) float32 of every row of `dataset`, in order: `model(**batch).embeddings` for
    `batch = collate_fn(rows)` (minus `exclude_keys`), batched, without gradients.

    With an `accelerate.Accelerator` (one is made when none is given and the script runs under
    `accelerate launch` / torchrun with several processes), batches are split across its processes and
    gathered back with `gather_for_metrics` (which drops the duplicated samples that even out the last
    batch); every process gets all N rows in dataset order.
    """
    batch_size = _check_positive_int(batch_size, "batch_size")
    model = as_matryoshka_model(model)  # a SentenceTransformer is encoded through the same computation
    if len(dataset) == 0:
        raise ValueError("`dataset` is empty (0 rows); there is nothing to encode.")
    if accelerator is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=not torch.cuda.is_available())
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn)
    if accelerator is not None:
        loader = accelerator.prepare(loader)
        device = accelerator.device
        model = model.to(device)
        show_progress = show_progress and accelerator.is_local_main_process
    else:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    parts = []
    try:
        with torch.inference_mode():
            for batch in tqdm(loader, desc="encoding", disable=not show_progress):
                inputs = {
                    key: value.to(device) if isinstance(value, torch.Tensor) else value
                    for key, value in batch.items()
                    if key not in exclude_keys
                }
                embeddings = model(**inputs).embeddings
                if accelerator is not None:
                    embeddings = accelerator.gather_for_metrics(embeddings)
                parts.append(embeddings.float().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(parts)


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
