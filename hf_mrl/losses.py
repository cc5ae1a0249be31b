"""Matryoshka losses. They take tensors, not models: the models return what the losses need.

- `matryoshka_cross_entropy`: classification, one cross-entropy per nesting dim.
- `matryoshka_contrastive_loss`: CLIP / ALIGN / sentence-transformers style InfoNCE at every nesting dim, for
  about the cost of one full-dim similarity matrix.
- `gather_with_grad`: all-gathers features across processes with gradients, so the contrastive loss sees the
  global batch under Accelerate / torchrun.
- `matryoshka_contrastive_loss_reference`: the naive per-dim loop the fast loss is tested against.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from transformers.utils import ModelOutput

from .nesting import block_bounds, default_matryoshka_dims, validate_matryoshka_dims, validate_matryoshka_weights

__all__ = [
    "matryoshka_cross_entropy",
    "MatryoshkaContrastiveOutput",
    "matryoshka_contrastive_loss",
    "matryoshka_contrastive_loss_reference",
    "gather_with_grad",
]

# F.normalize's eps: a truncated embedding whose norm is below it is divided by it instead.
_NORM_EPS = 1e-12
# Up to this logit scale, one shared shift (the scale itself, the largest possible logit) keeps every
# exp(logit - shift) within float32's normal range (exp(-2 * 40) > 1e-38): one exp serves both softmax
# directions. Above it, each direction shifts by its own max (two exps).
_SHARED_SHIFT_MAX_SCALE = 40.0


def matryoshka_cross_entropy(
    matryoshka_logits: torch.Tensor,
    labels: torch.Tensor,
    weights: Sequence[float],
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted sum over nesting dims of the cross-entropy of each dim's logits.

    Args:
        matryoshka_logits: (num_dims, batch, num_labels) logits, one slice per nesting dim.
        labels: (batch,) class ids.
        weights: one relative weight per nesting dim.

    Returns:
        (loss, per_dim_losses): the weighted scalar loss, and the (num_dims,) unweighted losses (detached).
    """
    num_dims, batch, num_labels = matryoshka_logits.shape
    if len(weights) != num_dims:
        raise ValueError(f"`weights` has {len(weights)} entries but `matryoshka_logits` has {num_dims} dims.")
    if labels.shape != (batch,):
        raise ValueError(f"`labels` must have shape ({batch},) to match the logits, got {tuple(labels.shape)}.")
    # One cross-entropy call over all dims at once: (num_dims * batch, num_labels).
    per_item = F.cross_entropy(
        matryoshka_logits.reshape(-1, num_labels).float(),
        labels.repeat(num_dims),
        reduction="none",
        label_smoothing=label_smoothing,
    )
    per_dim = per_item.view(num_dims, batch).mean(dim=1)
    weight_tensor = torch.as_tensor(weights, dtype=per_dim.dtype, device=per_dim.device)
    return (per_dim * weight_tensor).sum(), per_dim.detach()


@dataclass
class MatryoshkaContrastiveOutput(ModelOutput):
    """
    Output of `matryoshka_contrastive_loss`.

    Args:
        loss (`torch.FloatTensor` of shape `()`):
            Weighted sum over nesting dims of the contrastive loss at each dim; differentiable. With an
            all-gather over several processes it is the loss of the global batch on every process.
        per_dim_losses (`torch.FloatTensor` of shape `(num_dims,)`):
            Unweighted loss at each nesting dim, in the order `dims` was given; detached, for logging.
    """

    loss: torch.FloatTensor | None = None
    per_dim_losses: torch.FloatTensor | None = None


# ----------------------------------------------------------------------------------------------------------
# Distributed all-gather with gradients
# ----------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------
# The fused loss
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """What one call of the fused kernel computes.

    Loss at dim k = row_coef * sum_i lse_row_i + col_coef * sum_j lse_col_j - sum_ij T_ij logits_ij, where
    T = row_coef * (row targets) + col_coef * (column targets), each direction's targets a distribution
    (`smoothing` of it uniform). T is either dense (`targets`, (rows, cols)) or `diag_value` on the
    diagonal `offset` plus `uniform` everywhere.
    """

    dims: tuple[int, ...]
    weights: tuple[float, ...]
    row_coef: float
    col_coef: float
    offset: int = 0
    smoothing: float = 0.0
    diag_value: float = 0.0
    uniform: float = 0.0
    targets: torch.Tensor | None = None


def _one_positive_loss(log_sum, shift, positive, mean, smoothing: float) -> torch.Tensor:
    """sum over items of lse - (1 - smoothing) * positive - smoothing * mean, with lse = shift + log_sum.
    As in log_softmax, (shift - positive) is taken first: exact when both are large and close."""
    per_item = log_sum + (1 - smoothing) * (shift - positive)
    if smoothing:
        per_item = per_item + smoothing * (shift - mean)
    return per_item.sum()


class _MatryoshkaInfoNCE(torch.autograd.Function):
    """Contrastive loss of `queries` (R, D) against `keys` (C, D) at every nesting dim.

    The raw dot products at dim d_k are a running sum over blocks of dims (one (R, C) matmul per block,
    one full-dim matmul in all); the truncated norms come from cumulative sums of squares. Each dim's
    logits, softmax statistics and gradient w.r.t. its dot products are computed straight after its block
    is added, so at most a few (R, C) buffers are live besides the (num_dims, R, C) gradient store.
    Backward turns the stored gradients into a reverse running sum and multiplies each block once.
    """

    @staticmethod
    def forward(ctx, queries, keys, scale, plan: _Plan, compute_grad: bool):
        rows, cols = queries.shape[0], keys.shape[0]
        num_dims = len(plan.dims)
        bounds = block_bounds(plan.dims)
        scale_value = float(scale)
        two_way = plan.col_coef > 0
        query_sq = torch.stack([queries[:, lo:hi].square().sum(1) for lo, hi in bounds]).cumsum(0)  # (K, R)
        key_sq = torch.stack([keys[:, lo:hi].square().sum(1) for lo, hi in bounds]).cumsum(0)  # (K, C)
        query_scale = scale_value / query_sq.sqrt().clamp_min(_NORM_EPS)  # logits = dots * a_i * b_j
        key_scale = 1.0 / key_sq.sqrt().clamp_min(_NORM_EPS)

        dots = queries.new_empty(rows, cols)
        work = queries.new_empty(rows, cols)
        # The column-shifted exp of the high-scale path lives in the dim's gradient slot when there is one.
        col_buffer = queries.new_empty(rows, cols) if two_way and not compute_grad else None
        ones = queries.new_ones(rows)
        per_dim = queries.new_empty(num_dims)
        if compute_grad:
            grad_dots = queries.new_empty(num_dims, rows, cols)
            grad_query_sq = queries.new_zeros(num_dims, rows)
            grad_key_sq = queries.new_zeros(num_dims, cols)
            grad_scale = queries.new_zeros(())

        shared_shift = scale_value <= _SHARED_SHIFT_MAX_SCALE
        neg_scale = queries.new_tensor(-scale_value)
        zero = queries.new_zeros(())
        for index, (lo, hi) in enumerate(bounds):
            if index == 0:
                torch.mm(queries[:, lo:hi], keys[:, lo:hi].t(), out=dots)
            else:
                dots.addmm_(queries[:, lo:hi], keys[:, lo:hi].t())
            a, b, weight = query_scale[index], key_scale[index], plan.weights[index]
            torch.mul(dots, a[:, None], out=work)
            if shared_shift:
                # logits - scale in one pass (every logit is <= scale, so exp stays <= 1); the constant
                # shift cancels between log-partitions and targets, so `work` stands in for the logits.
                torch.addcmul(neg_scale, work, b[None, :], out=work)
            else:
                work.mul_(b)
            # What the targets need, read before exp overwrites `work`.
            if plan.targets is not None:
                target_dot = torch.dot(plan.targets.view(-1), work.view(-1))
            else:
                positive = work.diagonal(plan.offset).clone()
                row_mean = work.sum(1) / cols if plan.smoothing else None
                col_mean = torch.mv(work.t(), ones) / rows if plan.smoothing and two_way else None

            # `exp` = exp(logits - shift); its row (and column) sums give each direction's log-partition.
            if shared_shift:
                row_shift = col_shift = zero
                exp = work.exp_()
                row_sum = exp.sum(1)
                if two_way:
                    col_sum = torch.mv(exp.t(), ones)
            else:
                row_shift = work.amax(1)
                if two_way:
                    col_shift = work.amax(0)
                    col_target = grad_dots[index] if compute_grad else col_buffer
                    col_exp = torch.sub(work, col_shift[None, :], out=col_target).exp_()
                    col_sum = torch.mv(col_exp.t(), ones)
                exp = work.sub_(row_shift[:, None]).exp_()
                row_sum = exp.sum(1)
            if plan.targets is not None:
                loss = plan.row_coef * (row_shift + row_sum.log()).sum() - target_dot
                if two_way:
                    loss = loss + plan.col_coef * (col_shift + col_sum.log()).sum()
            else:
                loss = plan.row_coef * _one_positive_loss(row_sum.log(), row_shift, positive, row_mean, plan.smoothing)
                if two_way:
                    loss = loss + plan.col_coef * _one_positive_loss(
                        col_sum.log(), col_shift, positive, col_mean, plan.smoothing
                    )
            per_dim[index] = loss
            if not compute_grad:
                continue

            # d(weighted loss)/d(dots_k) = w_k * (row_coef * P_row + col_coef * P_col - T) * a_i * b_j, where
            # P_row = exp / row_sum and P_col = exp / col_sum: `exp` times a rank-2 matrix (outer + addr).
            row_factor = (weight * plan.row_coef) * a / row_sum
            slot = grad_dots[index]
            if two_way and shared_shift:
                torch.outer(row_factor, b, out=slot).addr_(weight * a, plan.col_coef * b / col_sum).mul_(exp)
            elif two_way:  # slot holds col_exp
                slot.mul_((weight * a)[:, None]).mul_((plan.col_coef * b / col_sum)[None, :])
                slot.addcmul_(exp.mul_(row_factor[:, None]), b[None, :])
            else:
                torch.mul(exp, row_factor[:, None], out=slot).mul_(b)
            if plan.targets is not None:
                slot.addcmul_(torch.mul(plan.targets, (weight * a)[:, None], out=work), b[None, :], value=-1)
            else:
                slot.diagonal(plan.offset).sub_((weight * plan.diag_value) * a * b[plan.offset : plan.offset + rows])
                if plan.uniform:
                    slot.addr_(a, b, alpha=-weight * plan.uniform)
            # Through the norms: with G = dLoss/dlogits, sum_j G_ij logits_ij = sum_j slot_ij dots_ij.
            weighted = torch.mul(slot, dots, out=work)
            row_total, col_total = weighted.sum(1), torch.mv(weighted.t(), ones)
            grad_scale += row_total.sum() / scale_value
            # logits scale as 1 / sqrt(cumulative sum of squares), unless clamped at eps (then no gradient).
            grad_query_sq[index] = torch.where(
                query_sq[index].sqrt() > _NORM_EPS, -row_total / (2 * query_sq[index]), 0
            )
            grad_key_sq[index] = torch.where(key_sq[index].sqrt() > _NORM_EPS, -col_total / (2 * key_sq[index]), 0)

        weights = torch.tensor(plan.weights, dtype=per_dim.dtype, device=per_dim.device)
        total = (per_dim * weights).sum()
        ctx.mark_non_differentiable(per_dim)
        ctx.dims = plan.dims
        if compute_grad:
            ctx.save_for_backward(queries, keys)
            ctx.grad_dots, ctx.grad_query_sq, ctx.grad_key_sq, ctx.grad_scale = (
                grad_dots,
                grad_query_sq,
                grad_key_sq,
                grad_scale,
            )
        return total, per_dim

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_total, _grad_per_dim):
        if getattr(ctx, "grad_dots", None) is None:
            raise RuntimeError("Trying to backward through the Matryoshka contrastive loss a second time.")
        queries, keys = ctx.saved_tensors
        grad_dots = ctx.grad_dots
        ctx.grad_dots = None
        # Block k's dot products feed every dim j >= k: reverse running sum, in place.
        for index in range(len(ctx.dims) - 2, -1, -1):
            grad_dots[index].add_(grad_dots[index + 1])
        # Gradients are built transposed, (D, rows): each block's product lands in contiguous rows.
        grad_queries_t = queries.new_zeros(queries.shape[1], queries.shape[0])
        grad_keys_t = keys.new_zeros(keys.shape[1], keys.shape[0])
        bounds = block_bounds(ctx.dims)
        for index, (lo, hi) in enumerate(bounds):
            # block^T @ G^T and block^T @ G: with the narrow strided block on the left, BLAS runs these at
            # full-matmul speed (G @ block is up to 2x slower on CPU).
            torch.mm(keys[:, lo:hi].t(), grad_dots[index].t(), out=grad_queries_t[lo:hi])
            torch.mm(queries[:, lo:hi].t(), grad_dots[index], out=grad_keys_t[lo:hi])
        # Through the norms: block k's squares feed the norms of every dim j >= k (reverse running sum);
        # d(sum of squares)/dx = 2x, one factor per block, spread over its features.
        widths = torch.tensor([hi - lo for lo, hi in bounds], device=queries.device)
        max_dim = ctx.dims[-1]
        for grad_t, inputs, grad_sq in (
            (grad_queries_t, queries, ctx.grad_query_sq),
            (grad_keys_t, keys, ctx.grad_key_sq),
        ):
            per_feature = grad_sq.flip(0).cumsum(0).flip(0).repeat_interleave(widths, dim=0)  # (max_dim, rows)
            grad_t[:max_dim].addcmul_(inputs[:, :max_dim].t(), per_feature, value=2).mul_(grad_total)
        return grad_queries_t.t(), grad_keys_t.t(), ctx.grad_scale * grad_total, None, None


def _make_plan(
    dims: tuple[int, ...],
    weights: tuple[float, ...],
    row_coef: float,
    col_coef: float,
    offset: int,
    positives: torch.Tensor | None,
    smoothing: float,
    shape: tuple[int, int],
    dtype: torch.dtype,
) -> _Plan:
    """Targets of each direction: uniform over the positives, mixed with `smoothing` of uniform over all
    candidates (as `F.cross_entropy(..., label_smoothing=...)` does). `positives` (rows, cols) bool always
    holds the diagonal `offset`; when it holds nothing else, the targets stay implicit (no dense matrix)."""
    rows, cols = shape
    uniform = smoothing * (row_coef / cols + col_coef / rows)
    if positives is None or int(positives.sum()) == rows:
        diag_value = (1 - smoothing) * (row_coef + col_coef)
        return _Plan(dims, weights, row_coef, col_coef, offset, smoothing, diag_value=diag_value, uniform=uniform)
    mask = positives.to(dtype).contiguous()
    targets = mask * ((1 - smoothing) * row_coef / mask.sum(1, keepdim=True))
    if col_coef:
        targets += mask * ((1 - smoothing) * col_coef / mask.sum(0, keepdim=True))
    if uniform:
        targets += uniform
    return _Plan(dims, weights, row_coef, col_coef, offset, smoothing, targets=targets.contiguous())


def _positive_pairs(
    image_ids: torch.Tensor | None, text_ids: torch.Tensor | None, batch: int, device
) -> torch.Tensor | None:
    """(batch, batch) bool: image i and text k are positives when some pair p of the batch has image i's
    image id and text k's text id (a missing id list means every item is distinct). None: no ids."""
    if image_ids is None and text_ids is None:
        return None
    distinct = torch.arange(batch, device=device)
    _, image_index = torch.unique(distinct if image_ids is None else image_ids, return_inverse=True)
    _, text_index = torch.unique(distinct if text_ids is None else text_ids, return_inverse=True)
    seen = torch.zeros(int(image_index.max()) + 1, int(text_index.max()) + 1, dtype=torch.bool, device=device)
    seen[image_index, text_index] = True
    return seen[image_index][:, text_index]


def _check_embeddings(name: str, embeds) -> None:
    if not isinstance(embeds, torch.Tensor) or embeds.ndim != 2 or not embeds.is_floating_point():
        shape = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
        raise ValueError(f"`{name}` must be a 2-D floating-point tensor (batch, embedding_dim), got {shape}.")
    if embeds.shape[0] == 0 or embeds.shape[1] == 0:
        raise ValueError(f"`{name}` is empty (shape {tuple(embeds.shape)}); the loss needs at least one pair.")


def _check_ids(name: str, ids, batch: int, device) -> torch.Tensor | None:
    if ids is None:
        return None
    allowed = f"a 1-D integer tensor or list of {batch} ints (one per item; hash strings to ints with a stable hash)"
    try:
        tensor = torch.as_tensor(ids, device=device)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"`{name}` must be {allowed}, got {type(ids).__name__}.") from None
    if tensor.ndim != 1 or tensor.shape[0] != batch or tensor.is_floating_point() or tensor.dtype == torch.bool:
        raise ValueError(f"`{name}` must be {allowed}, got dtype {tensor.dtype} and shape {tuple(tensor.shape)}.")
    return tensor.long()


def _check_scale(temperature, logit_scale) -> torch.Tensor | float:
    if (temperature is None) == (logit_scale is None):
        raise ValueError(
            "Give exactly one of `temperature` (logits = cosine / temperature) and `logit_scale` "
            f"(logits = cosine * logit_scale), got temperature={temperature!r} and logit_scale={logit_scale!r}."
        )
    name, value = ("temperature", temperature) if temperature is not None else ("logit_scale", logit_scale)
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or not value.is_floating_point():
            raise ValueError(
                f"`{name}` must be a positive float or a one-element float tensor, got shape {tuple(value.shape)}."
            )
        number = float(value.detach())
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        raise ValueError(f"`{name}` must be a positive float or a one-element float tensor, got {value!r}.")
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0, got {number!r}.")
    return value


def matryoshka_contrastive_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    dims: Sequence[int] | None = None,
    weights: Sequence[float] | None = None,
    temperature: float | torch.Tensor | None = None,
    *,
    logit_scale: float | torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    symmetric: bool = True,
    image_ids: torch.Tensor | Sequence[int] | None = None,
    text_ids: torch.Tensor | Sequence[int] | None = None,
    gather: bool | Callable[[torch.Tensor], torch.Tensor] = False,
) -> MatryoshkaContrastiveOutput:
    """Matryoshka InfoNCE: the contrastive loss at every nesting dim, weighted and summed.

    At each dim d the embeddings are truncated to their first d features, THEN L2-normalised; the logits
    are their cosine similarities / temperature; the loss is the cross-entropy of each image against all
    texts of the batch (row i's target: text i), and with `symmetric=True` also of each text against all
    images, the two averaged (CLIP / ALIGN). The result is `sum_k weights[k] * loss_at(dims[k])`.

    Cost: about one full-dim similarity matrix (one (B, B) matmul forward, two backward, whatever the
    number of dims), since the dot products at each dim are a running sum over blocks of dims, plus a few
    elementwise passes per dim. Memory: the gradient w.r.t. each dim's dot products is kept from forward to
    backward, (num_dims + 2) x B x B floats at the peak (float32, or float64 for float64 inputs).

    Args:
        image_embeds: (batch, embedding_dim) un-normalised embeddings of the first tower (images, queries).
        text_embeds: (batch, embedding_dim) un-normalised embeddings of the second tower (texts, documents);
            for text-text pairs (word <-> definition, query <-> passage) both come from the same tower.
        dims: nesting dims, each at most `embedding_dim`, any order. Defaults to the powers of two from 8
            up to `embedding_dim`, with `embedding_dim` included.
        weights: one non-negative weight per dim, in the order of `dims`; defaults to all 1.0.
        temperature: logits = cosine / temperature; a float or a one-element tensor (learnable: gradients
            flow to it). sentence-transformers' `scale=20` is `temperature=0.05`.
        logit_scale: instead of `temperature`: logits = cosine * logit_scale, the already exponentiated
            scale of CLIP models (`model.logit_scale.exp()`). Give exactly one of the two.
        label_smoothing: in [0, 1); each direction's target mixes this much of the uniform distribution over
            its candidates, as `F.cross_entropy` does (ALIGN uses 0.1).
        symmetric: False keeps one direction only, image (first) -> text (second): with `temperature=0.05`
            this equals sentence-transformers' `MatryoshkaLoss(model, MultipleNegativesRankingLoss(model))`.
            True averages both directions, like `MultipleNegativesRankingLoss(..., directions=("query_to_doc",
            "doc_to_query"), partition_mode="per_direction")` and CLIP.
        image_ids, text_ids: optional (batch,) integer ids (e.g. class ids, or caption strings hashed to ints).
            Image i and text k are positives when some pair of the batch has image i's image id and text k's
            text id; so captions sharing a text id are all positives of each other's images, and are not
            pushed apart. Each direction's target is then uniform over its positives. Duplicates are found
            only through ids, never by comparing embeddings. Under `gather`, ids must mean the same thing on
            every process.
        gather: with True and an initialised process group of more than one process, the embeddings (and
            ids) are all-gathered with gradients (`gather_with_grad`), so each process scores its own rows
            against the global batch. A callable replaces `gather_with_grad`: it takes a (local_batch, ...)
            tensor and returns every process's rows in rank order over the default group, with equal local
            batch sizes (e.g. `torch.cat(torch.distributed.nn.functional.all_gather(t))`).

    Returns:
        `MatryoshkaContrastiveOutput` with `loss` (scalar) and `per_dim_losses` ((num_dims,), detached, in
        the order of `dims`). Under a multi-process gather, both are the global-batch values on every
        process (one small all-reduce), while the gradient is that of world_size x this process's share:
        after DDP averages gradients over processes, parameters get the gradient of the global loss.
    """
    _check_embeddings("image_embeds", image_embeds)
    _check_embeddings("text_embeds", text_embeds)
    batch, embedding_dim = image_embeds.shape
    if text_embeds.shape[0] != batch:
        raise ValueError(
            f"`image_embeds` has {batch} rows but `text_embeds` has {text_embeds.shape[0]}; "
            "the loss needs one text per image (row i of each is pair i)."
        )
    if text_embeds.shape[1] != embedding_dim:
        raise ValueError(
            f"`image_embeds` has width {embedding_dim} but `text_embeds` has width {text_embeds.shape[1]}; "
            "both towers must embed into the same space."
        )
    given_dims = list(default_matryoshka_dims(embedding_dim) if dims is None else dims)
    validate_matryoshka_dims(given_dims, embedding_dim, name="dims")
    given_weights = (
        [1.0] * len(given_dims) if weights is None else validate_matryoshka_weights(weights, len(given_dims), "weights")
    )
    scale_arg = _check_scale(temperature, logit_scale)
    if (
        isinstance(label_smoothing, bool)
        or not isinstance(label_smoothing, (int, float))
        or not 0 <= label_smoothing < 1
    ):
        raise ValueError(f"`label_smoothing` must be a number in [0, 1), got {label_smoothing!r}.")
    if not isinstance(symmetric, bool):
        raise ValueError(f"`symmetric` must be True or False, got {symmetric!r}.")
    if not isinstance(gather, bool) and not callable(gather):
        raise ValueError(f"`gather` must be True, False or an all-gather callable, got {gather!r}.")
    device = image_embeds.device
    image_ids = _check_ids("image_ids", image_ids, batch, device)
    text_ids = _check_ids("text_ids", text_ids, batch, device)
    for name, embeds in (("image_embeds", image_embeds), ("text_embeds", text_embeds)):
        # One reduction instead of an elementwise isfinite: any NaN / inf makes the float64 sum non-finite.
        if not math.isfinite(float(embeds.detach().sum(dtype=torch.float64))):
            raise ValueError(f"`{name}` holds NaN or infinite values; embeddings must be finite.")

    order = sorted(range(len(given_dims)), key=given_dims.__getitem__)
    sorted_dims = tuple(given_dims[i] for i in order)
    sorted_weights = tuple(float(given_weights[i]) for i in order)
    dtype = torch.float64 if torch.float64 in (image_embeds.dtype, text_embeds.dtype) else torch.float32
    if isinstance(scale_arg, torch.Tensor):
        scale_tensor = scale_arg.to(device=device, dtype=dtype).reshape(())
    else:
        scale_tensor = torch.tensor(float(scale_arg), dtype=dtype, device=device)
    scale = 1.0 / scale_tensor if temperature is not None else scale_tensor

    world = _distributed_world() if gather else 1
    with torch.autocast(device.type, enabled=False):
        images, texts = image_embeds.to(dtype), text_embeds.to(dtype)
        if world == 1:
            total, per_dim = _local_loss(
                images, texts, scale, sorted_dims, sorted_weights, label_smoothing, symmetric, image_ids, text_ids
            )
        else:
            total, per_dim = _gathered_loss(
                images,
                texts,
                scale,
                sorted_dims,
                sorted_weights,
                label_smoothing,
                symmetric,
                image_ids,
                text_ids,
                gather,
                world,
            )
    inverse = torch.empty(len(order), dtype=torch.long, device=per_dim.device)
    inverse[torch.tensor(order, device=per_dim.device)] = torch.arange(len(order), device=per_dim.device)
    return MatryoshkaContrastiveOutput(loss=total, per_dim_losses=per_dim[inverse].detach())


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(tensor.requires_grad for tensor in tensors)


def _local_loss(images, texts, scale, dims, weights, smoothing, symmetric, image_ids, text_ids):
    batch = images.shape[0]
    coef = 0.5 / batch if symmetric else 1.0 / batch
    positives = _positive_pairs(image_ids, text_ids, batch, images.device)
    plan = _make_plan(
        dims, weights, coef, coef if symmetric else 0.0, 0, positives, smoothing, (batch, batch), images.dtype
    )
    return _MatryoshkaInfoNCE.apply(images, texts, scale, plan, _needs_grad(images, texts, scale))


def _gathered_loss(images, texts, scale, dims, weights, smoothing, symmetric, image_ids, text_ids, gather, world):
    """Each process scores its own images against all texts (and its own texts against all images): the
    union over processes is the global batch's loss, each row computed once."""
    batch, embedding_dim = images.shape
    both = torch.cat([images, texts], dim=1)  # one collective for both towers
    if callable(gather):
        gathered, offset = gather(both), dist.get_rank() * batch
        if gathered.shape[0] != world * batch:
            raise ValueError(
                f"`gather` returned {gathered.shape[0]} rows for a local batch of {batch} on {world} processes; "
                f"a custom all-gather must return world_size x local_batch = {world * batch} rows."
            )
        gather_ids = gather
    else:
        counts = _gather_row_counts(batch, images.device)
        gathered, offset = _gather_rows(both, counts=counts)

        def gather_ids(ids):
            return _gather_rows(ids, counts=counts)[0]

    all_images, all_texts = gathered[:, :embedding_dim], gathered[:, embedding_dim:]
    total_batch = gathered.shape[0]
    all_image_ids = None if image_ids is None else gather_ids(image_ids)
    all_text_ids = None if text_ids is None else gather_ids(text_ids)
    positives = _positive_pairs(all_image_ids, all_text_ids, total_batch, images.device)
    mine = slice(offset, offset + batch)
    # world x this process's share (see gather_with_grad): DDP's average then gives the global gradient.
    coef = world * (0.5 if symmetric else 1.0) / total_batch
    directions = [(images, all_texts, None if positives is None else positives[mine])]
    if symmetric:
        directions.append((texts, all_images, None if positives is None else positives[:, mine].t()))
    share = per_dim_share = None
    for queries, keys, rows_positives in directions:
        plan = _make_plan(
            dims, weights, coef, 0.0, offset, rows_positives, smoothing, (batch, total_batch), images.dtype
        )
        total, per_dim = _MatryoshkaInfoNCE.apply(queries, keys, scale, plan, _needs_grad(queries, keys, scale))
        share = total if share is None else share + total
        per_dim_share = per_dim if per_dim_share is None else per_dim_share + per_dim
    # Report the global-batch values on every process; the gradient stays that of this process's share.
    values = torch.cat([share.detach().reshape(1), per_dim_share]) / world
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return share + (values[0] - share).detach(), values[1:]


def matryoshka_contrastive_loss_reference(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    dims: Sequence[int],
    weights: Sequence[float],
    temperature: float | torch.Tensor,
    label_smoothing: float = 0.0,
    symmetric: bool = True,
    image_ids: torch.Tensor | None = None,
    text_ids: torch.Tensor | None = None,
) -> MatryoshkaContrastiveOutput:
    """The naive per-dim loop (truncate, `F.normalize`, full matmul, cross-entropy at every dim) that the
    fused `matryoshka_contrastive_loss` is tested against; same arguments, no checks, no gather."""
    batch = image_embeds.shape[0]
    if image_ids is None and text_ids is None:
        row_targets = col_targets = torch.arange(batch, device=image_embeds.device)
    else:
        eye = torch.eye(batch, dtype=torch.bool, device=image_embeds.device)
        same_image = eye if image_ids is None else image_ids[:, None] == image_ids[None, :]
        same_text = eye if text_ids is None else text_ids[:, None] == text_ids[None, :]
        # [image i, text k] positive when some pair p has image i's image and text k's text.
        positives = (same_image.double() @ same_text.double() > 0).to(image_embeds.dtype)
        row_targets = positives / positives.sum(1, keepdim=True)
        col_targets = positives.t() / positives.t().sum(1, keepdim=True)
    per_dim = []
    for dim in dims:
        images = F.normalize(image_embeds[:, :dim], dim=-1)
        texts = F.normalize(text_embeds[:, :dim], dim=-1)
        logits = images @ texts.t() / temperature
        loss = F.cross_entropy(logits, row_targets, label_smoothing=label_smoothing)
        if symmetric:
            loss = (loss + F.cross_entropy(logits.t(), col_targets, label_smoothing=label_smoothing)) / 2
        per_dim.append(loss)
    per_dim = torch.stack(per_dim)
    total = (per_dim * torch.as_tensor(weights, dtype=per_dim.dtype, device=per_dim.device)).sum()
    return MatryoshkaContrastiveOutput(loss=total, per_dim_losses=per_dim.detach())
