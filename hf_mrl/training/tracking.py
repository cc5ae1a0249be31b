"""Per-dim loss and metric logging for the training loops, and their progress bars."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from tqdm.auto import tqdm

from ..evaluation.report import group_by_dim, markdown_table

__all__ = ["PerDimLossMeter", "progress_bar", "prefixed", "results_table"]


class PerDimLossMeter:
    """Running means of the total loss and of the unweighted loss at each nesting dim, between two logs.

    `update(loss, per_dim_losses)` takes the scalar loss and the (num_dims,) `matryoshka_losses`;
    `logs(accelerator)` averages them over the steps seen (and over processes), returns
    `{"train/loss": ..., "train/loss_dim8": ..., ...}` and starts a new window.
    """

    def __init__(self, dims: Sequence[int], prefix: str = "train"):
        self.dims = list(dims)
        self.prefix = prefix
        self._total = torch.zeros(len(self.dims) + 1, dtype=torch.float64)
        self._count = 0

    def update(self, loss: torch.Tensor, per_dim_losses: torch.Tensor) -> None:
        values = torch.cat([loss.detach().reshape(1), per_dim_losses.detach().reshape(-1)]).double().cpu()
        if values.numel() != len(self.dims) + 1:
            raise ValueError(f"`per_dim_losses` has {values.numel() - 1} entries for {len(self.dims)} dims.")
        self._total += values
        self._count += 1

    @property
    def count(self) -> int:
        return self._count

    def logs(self, accelerator=None) -> dict[str, float]:
        """The window's means (averaged across processes when `accelerator` is given); resets the window."""
        means = self._total / max(self._count, 1)
        if accelerator is not None and accelerator.num_processes > 1:
            means = accelerator.reduce(means.to(accelerator.device), reduction="mean").cpu()
        self._total.zero_()
        self._count = 0
        logs = {f"{self.prefix}/loss": float(means[0])}
        logs.update({f"{self.prefix}/loss_dim{dim}": float(value) for dim, value in zip(self.dims, means[1:])})
        return logs


def progress_bar(accelerator, total: int | None, initial: int = 0, desc: str = "Training") -> tqdm:
    """A tqdm bar shown on the local main process only (None `total` for streams of unknown length)."""
    return tqdm(total=total, initial=initial, desc=desc, disable=not accelerator.is_local_main_process, dynamic_ncols=True)


def prefixed(results: Mapping[str, float], prefix: str) -> dict[str, float]:
    """`{"test_dim8_top1": v}` -> `{"<prefix>/test_dim8_top1": v}`, for trackers (tensorboard groups by prefix)."""
    return {f"{prefix}/{key}": float(value) for key, value in results.items()}


def results_table(results: Mapping[str, float], label: str = "model", metrics: Sequence[str] | None = None) -> str:
    """A per-dim markdown table (one row per dim) of an evaluator's flat results."""
    if not group_by_dim(results):
        raise ValueError("`results` has no '{name}_dim{k}_{metric}' keys to tabulate.")
    return markdown_table({label: results}, metrics=metrics)
