"""One direction of the Matryoshka contrastive loss (queries against candidates, row targets only), scored whole or
a block of query rows at a time.

The two-way fused kernel (`fused_infonce._MatryoshkaInfoNCE` with both coefficients) needs every candidate to be
a query of the other direction too. With hard negatives, or all-gathered rows, the two directions have different
candidates: each is one call here. Row blocks (`mini_batch_size`) hold the kernel's per-dim gradient store to
(dims x block x candidates) floats instead of (dims x rows x candidates): a cached (GradCache) batch of thousands of
rows and their negatives is scored in the memory of a mini-batch, with the same loss and gradients.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from .fused_infonce import _make_plan, _MatryoshkaInfoNCE

__all__ = ["score_direction", "positive_pairs"]


def positive_pairs(query_ids, candidate_ids, num_pairs: int, num_candidates: int, device) -> torch.Tensor | None:
    """(num_pairs, num_candidates) bool: query i and candidate c are positives when some pair p < `num_pairs`
    (query p with candidate p) has query i's id and candidate c's id. A missing id list means every item is
    distinct, so candidates past the pairs (hard negatives) are positives only through their ids. None: no ids."""
    if query_ids is None and candidate_ids is None:
        return None
    _, query_index = torch.unique(torch.arange(num_pairs, device=device) if query_ids is None else query_ids,
                                  return_inverse=True)
    _, candidate_index = torch.unique(
        torch.arange(num_candidates, device=device) if candidate_ids is None else candidate_ids, return_inverse=True
    )
    seen = torch.zeros(int(query_index.max()) + 1, int(candidate_index.max()) + 1, dtype=torch.bool, device=device)
    seen[query_index, candidate_index[:num_pairs]] = True
    return seen[query_index][:, candidate_index]


class _RowBlockInfoNCE(torch.autograd.Function):
    """The kernel on one block of query rows at a time; each block's gradients are taken at once (kernel forward
    and backward) and summed, so only one block's per-dim store is ever alive."""

    @staticmethod
    def forward(ctx, queries, keys, scale, blocks, num_dims: int, compute_grad: bool):
        total, per_dim = queries.new_zeros(()), queries.new_zeros(num_dims)
        if compute_grad:
            grad_queries, grad_keys = torch.zeros_like(queries), torch.zeros_like(keys)
            grad_scale = torch.zeros_like(scale)
        for start, end, plan in blocks:
            if not compute_grad:
                block_total, block_per_dim = _MatryoshkaInfoNCE.apply(queries[start:end], keys, scale, plan, False)
            else:
                with torch.enable_grad():
                    block = queries[start:end].detach().requires_grad_()
                    all_keys, block_scale = keys.detach().requires_grad_(), scale.detach().requires_grad_()
                    block_total, block_per_dim = _MatryoshkaInfoNCE.apply(block, all_keys, block_scale, plan, True)
                    grads = torch.autograd.grad(block_total, (block, all_keys, block_scale))
                grad_queries[start:end] = grads[0]
                grad_keys += grads[1]
                grad_scale += grads[2]
            total = total + block_total.detach()
            per_dim += block_per_dim
        ctx.mark_non_differentiable(per_dim)
        ctx.grads = (grad_queries, grad_keys, grad_scale) if compute_grad else None
        return total, per_dim

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_total, _grad_per_dim):
        if ctx.grads is None:
            raise RuntimeError("Trying to backward through the Matryoshka contrastive loss a second time.")
        grad_queries, grad_keys, grad_scale = ctx.grads
        ctx.grads = None
        return grad_queries * grad_total, grad_keys * grad_total, grad_scale * grad_total, None, None, None


def score_direction(queries, keys, scale, dims, weights, coef: float, offset: int, positives, smoothing: float,
                    block_rows: int | None, compute_grad: bool):
    """(weighted total, per-dim losses) of `queries` (R, D) against `keys` (C, D), row i's positive being column
    `offset + i` (plus `positives` (R, C), when given); each row weighs `coef`. `block_rows`: score that many
    query rows at a time (None: all at once)."""
    rows, cols = queries.shape[0], keys.shape[0]
    if block_rows is None or block_rows >= rows:
        plan = _make_plan(dims, weights, coef, 0.0, offset, positives, smoothing, (rows, cols), queries.dtype)
        return _MatryoshkaInfoNCE.apply(queries, keys, scale, plan, compute_grad)
    blocks = []
    for start in range(0, rows, block_rows):
        end = min(start + block_rows, rows)
        block_positives = None if positives is None else positives[start:end]
        plan = _make_plan(dims, weights, coef, 0.0, offset + start, block_positives, smoothing, (end - start, cols),
                          queries.dtype)
        blocks.append((start, end, plan))
    return _RowBlockInfoNCE.apply(queries, keys, scale, blocks, len(dims), compute_grad)
