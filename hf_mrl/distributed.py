"""Distributed all-gather with gradients, so the contrastive loss sees the global batch under Accelerate /
torchrun. Apart from the loss, as in open_clip."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.autograd.function import once_differentiable


def _distributed_world(group=None) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def _gather_row_counts(rows: int, device: torch.device, group=None) -> list[int]:
    counts = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(dist.get_world_size(group))]
    dist.all_gather(counts, torch.tensor([rows], dtype=torch.long, device=device), group=group)
    return [int(count) for count in counts]


class _AllGatherRows(torch.autograd.Function):
    """All-gather along dim 0 (row counts may differ between processes). Backward: every process holds the
    gradient of its own loss w.r.t. the global tensor; they are summed (all-reduce) and each process keeps
    its own rows. All-reduce works on every backend (gloo has no reduce-scatter)."""

    @staticmethod
    def forward(ctx, tensor, counts, group):
        rank = dist.get_rank(group)
        most = max(counts)
        padded = tensor.contiguous()
        if tensor.shape[0] < most:
            padded = torch.cat([padded, padded.new_zeros(most - tensor.shape[0], *tensor.shape[1:])])
        pieces = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(pieces, padded, group=group)
        ctx.group = group
        ctx.rows = slice(sum(counts[:rank]), sum(counts[: rank + 1]))
        return torch.cat([piece[:count] for piece, count in zip(pieces, counts, strict=True)])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_gathered):
        grad = grad_gathered.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.rows], None, None


def _gather_rows(tensor: torch.Tensor, group=None, counts: list[int] | None = None) -> tuple[torch.Tensor, int]:
    """(global tensor, offset of this process's rows in it); the tensor itself when not distributed."""
    if _distributed_world(group) == 1:
        return tensor, 0
    if counts is None:
        counts = _gather_row_counts(tensor.shape[0], tensor.device, group)
    gathered = _AllGatherRows.apply(tensor, counts, group)
    return gathered, sum(counts[: dist.get_rank(group)])


def gather_with_grad(tensor: torch.Tensor, group=None) -> torch.Tensor:
    """All-gathers `tensor` (local_batch, ...) from every process, keeping gradients.

    Returns (global_batch, ...): the processes' rows concatenated in rank order (local batch sizes may
    differ). Gradients flow back to every process's own rows, summed over the processes' losses. Without
    an initialised process group of more than one process, returns `tensor` unchanged.

    Gradient scale: each process's loss, back-propagated through the gather, gives its local rows the
    sum over processes of d(loss_p)/d(rows). DDP then averages parameter gradients over processes, so
    each process's loss should be world_size x its share of the global loss (as `matryoshka_contrastive_loss`
    arranges); a per-process mean over local rows is exactly that when local batches are equal.
    """
    return _gather_rows(tensor, group)[0]
