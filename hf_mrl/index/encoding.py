"""Encoding a dataset into the full embeddings a `MatryoshkaIndex` is built from, and the fingerprint that ties
an index to the model that encoded it."""

from __future__ import annotations

import hashlib
import json
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
    model = as_matryoshka_model(model)
    digest = hashlib.sha256()
    digest.update(json.dumps(_stable_config(model.config.to_dict()), sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()
