"""Cached mini-batches (GradCache, Gao et al. 2021): a contrastive batch of thousands of rows in a mini-batch's memory.

1. Every column of the batch is encoded in mini-batches without a graph; the random state before each mini-batch
   is kept. The embeddings become one leaf tensor, on which the loss is computed at every dim as usual (row blocks
   of `mini_batch_size`, so the similarity matrix never exists whole).
2. When the trainer back-propagates the loss, the gradient reaches that leaf: a hook re-encodes each mini-batch
   with a graph, from the same random state (same dropout), under the same autocast, and back-propagates its
   slice of the cached gradient. Only the last mini-batch syncs gradients across processes (`no_sync` before).

The parameter gradients equal those of encoding the whole batch with a graph (mini-batch by mini-batch, the same
random draws) and back-propagating the loss once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch

__all__ = ["CachedBatch", "RandomState", "slice_rows"]


class RandomState:
    """The torch random state of the CPU and of the device (CUDA), captured now, restored by `restore()`."""

    def __init__(self, device: torch.device):
        self.cpu = torch.get_rng_state()
        self.device = device if device.type == "cuda" else None
        self.cuda = torch.cuda.get_rng_state(device) if self.device is not None else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.device is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


def slice_rows(inputs: dict, start: int, end: int) -> dict:
    """Rows start:end of a dict of model inputs; token inputs lose the trailing padding no row of the slice needs
    (only trailing columns: a left-padded batch keeps its width)."""
    part = {key: value[start:end] for key, value in inputs.items()}
    mask = part.get("attention_mask")
    if mask is not None and mask.ndim == 2 and "input_ids" in part and bool(mask.any()):
        length = int(mask.any(0).nonzero().max()) + 1
        for key in ("input_ids", "attention_mask", "token_type_ids", "position_ids"):
            if key in part and part[key].ndim == 2:
                part[key] = part[key][:, :length]
    return part


def _rows(inputs: dict) -> int:
    return next(value.shape[0] for value in inputs.values() if isinstance(value, torch.Tensor))


class CachedBatch:
    """Pass 1 of a cached step: each column's inputs (a dict of tensors) encoded by `encode` in mini-batches of
    `mini_batch_size` rows without a graph. `encode(part)` returns `(embeddings, scale)`, `scale` being a tensor
    the model computes in its forward that the loss also uses (the dual encoder's logit scale), or None.

    `embeddings` holds one leaf tensor per column; compute the loss on them (and on `scale_leaf`), then
    `loss_with_replay(loss, wrapped)` returns the loss to back-propagate."""

    def __init__(self, columns: Sequence[dict], encode: Callable[[dict], tuple], mini_batch_size: int):
        self.encode, self.parts, self.states, pieces, counts = encode, [], [], [], []
        scale = None
        for inputs in columns:
            rows = _rows(inputs)
            counts.append(rows)
            for start in range(0, rows, mini_batch_size):
                part = slice_rows(inputs, start, min(start + mini_batch_size, rows))
                self.states.append(RandomState(_device(part)))
                self.parts.append(part)
                with torch.no_grad():
                    embeddings, scale = encode(part)
                pieces.append(embeddings)
        self.autocast = _autocast_settings(pieces[0].device)
        self.sizes = [piece.shape[0] for piece in pieces]
        self.leaf = torch.cat(pieces).detach().requires_grad_()
        self.embeddings = list(torch.split(self.leaf, counts))
        self.scale_leaf = None if scale is None else scale.detach().requires_grad_()

    def loss_with_replay(self, loss: torch.Tensor, wrapped=None) -> torch.Tensor:
        """The loss's gradients w.r.t. the embeddings (and scale) are taken now; the returned loss, when
        back-propagated, re-encodes every mini-batch with a graph and passes them on (times its own gradient)."""
        inputs = [self.leaf] + ([self.scale_leaf] if self.scale_leaf is not None else [])
        grads = torch.autograd.grad(loss, inputs)
        result = loss.detach().requires_grad_()
        result.register_hook(lambda upstream: self._replay(grads, upstream, wrapped))
        return result

    def _replay(self, grads, upstream: torch.Tensor, wrapped) -> None:
        grad, scale_grad = grads[0] * upstream, (grads[1] * upstream if len(grads) > 1 else None)
        after = RandomState(grad.device)
        no_sync = getattr(wrapped, "no_sync", None)
        start = 0
        with torch.enable_grad(), torch.autocast(**self.autocast):
            for index, (part, state, size) in enumerate(zip(self.parts, self.states, self.sizes, strict=True)):
                last = index == len(self.parts) - 1
                state.restore()
                # Only the last mini-batch's backward all-reduces (DDP / FSDP); the scale's gradient goes with it.
                with no_sync() if no_sync is not None and not last else contextlib.nullcontext():
                    embeddings, scale = self.encode(part)
                    surrogate = (embeddings * grad[start : start + size]).sum()
                    if last and scale_grad is not None:
                        surrogate = surrogate + (scale * scale_grad).sum()
                    surrogate.backward()
                start += size
        after.restore()


def _device(inputs: dict) -> torch.device:
    return next(value.device for value in inputs.values() if isinstance(value, torch.Tensor))


def _autocast_settings(device: torch.device) -> dict:
    """The autocast in force now, to re-enter in the backward (which runs outside the trainer's autocast)."""
    kind = device.type
    enabled = torch.is_autocast_enabled(kind)
    return {"device_type": kind, "enabled": enabled, "dtype": torch.get_autocast_dtype(kind) if enabled else None}
