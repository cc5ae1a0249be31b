"""The fused kernel of `matryoshka_contrastive_loss`: InfoNCE at every nesting dim from one running sum of
block matmuls, as an autograd Function, and the `_Plan` (targets, direction weights) it computes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from .cpu_threads import threads_within_cpus
from .nesting import block_bounds

# F.normalize's eps: a truncated embedding whose norm is below it is divided by it instead.
_NORM_EPS = 1e-12
# Up to this logit scale, one shared shift (the scale itself, the largest possible logit) keeps every
# exp(logit - shift) within float32's normal range (exp(-2 * 40) > 1e-38): one exp serves both softmax
# directions. Above it, each direction shifts by its own max (two exps).
_SHARED_SHIFT_MAX_SCALE = 40.0


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


# Rows per block of the blocked path: one (rows, cols) float32 block of about 1 MiB, so the per-dim elementwise
# work (logits, exp, sums, the gradient's rank-2 factor, its product with the dots) stays in cache and the big
# (R, C) matrices are read and written a few times per dim instead of a dozen.
_BLOCK_ELEMENTS = 1 << 18


# Dims at most this fraction of the largest hand their gradient on at once (its products with the inputs' first d
# features, about 6% more FLOPs in all) instead of keeping a (rows, cols) slot for backward: each kept slot is fresh
# memory (page faults), freed after, and folded in backward. Batch 4,096, dim 1,024, 2 threads: 4 slots fewer.
_IMMEDIATE_FRACTION = 1 / 32


def _num_immediate(dims: tuple[int, ...]) -> int:
    """How many of the smallest dims hand their gradient on in the forward; at least one dim keeps a slot."""
    count = sum(dim <= dims[-1] * _IMMEDIATE_FRACTION for dim in dims)
    return min(count, len(dims) - 1)


def _blocked_on_cpu(tensor: torch.Tensor) -> bool:
    """Whether the row-blocked path applies: on a CPU (the kernel runs within the usable CPUs, `threads_within_cpus`).
    On a GPU its many small operations cost more than the passes over memory they save."""
    return tensor.device.type == "cpu"


def _block_elements() -> int:
    """Elements per row block: about 1 MiB of float32 per thread (each thread's share stays in its cache, and every
    elementwise operation has enough work for all threads). Read inside the kernel, where torch's threads are
    already capped at the usable CPUs."""
    return _BLOCK_ELEMENTS * torch.get_num_threads()


def _row_blocks(rows: int, cols: int, elements: int | None = None):
    size = max(1, (elements or _block_elements()) // max(cols, 1))
    for start in range(0, rows, size):
        yield start, min(start + size, rows)


def _blocked_dim(dots, slot, block, a, b, weight, plan: _Plan, scale_value: float, ones):
    """One nesting dim of the common case (shared shift, targets on a diagonal), row block by row block.

    Pass 1: logits - scale, the positives, exp (into the dim's gradient slot when there is one) and its row and
    column sums. Pass 2 (needs the finished column sums): the slot becomes d loss / d dots, and its products with
    the dots give the norms' gradients. Returns (loss, row_total, col_total); the totals are None without a slot.
    """
    rows, cols = dots.shape
    two_way, offset = plan.col_coef > 0, plan.offset
    row_sum, positive = dots.new_empty(rows), dots.new_empty(rows)
    col_sum = dots.new_zeros(cols) if two_way else None
    row_mean = dots.new_empty(rows) if plan.smoothing else None
    col_mean = dots.new_zeros(cols) if plan.smoothing and two_way else None
    row_index = torch.arange(rows, device=dots.device)
    for start, end in _row_blocks(rows, cols):
        work, count = block[: end - start], end - start
        torch.mul(dots[start:end], a[start:end, None], out=work)
        torch.addcmul(dots.new_tensor(-scale_value), work, b[None, :], out=work)
        positive[start:end] = work[row_index[:count], row_index[start:end] + offset]
        if row_mean is not None:
            row_mean[start:end] = work.sum(1) / cols
            if col_mean is not None:
                col_mean += torch.mv(work.t(), ones[:count]) / rows
        exp = work.exp_() if slot is None else torch.exp(work, out=slot[start:end])
        row_sum[start:end] = exp.sum(1)
        if two_way:
            col_sum += torch.mv(exp.t(), ones[:count])
    loss = plan.row_coef * _one_positive_loss(row_sum.log(), 0.0, positive, row_mean, plan.smoothing)
    if two_way:
        loss = loss + plan.col_coef * _one_positive_loss(col_sum.log(), 0.0, positive, col_mean, plan.smoothing)
    if slot is None:
        return loss, None, None
    row_factor = (weight * plan.row_coef) * a / row_sum
    col_factor = plan.col_coef * b / col_sum if two_way else None
    diagonal = (weight * plan.diag_value) * a * b[offset : offset + rows]
    row_total, col_total = dots.new_empty(rows), dots.new_zeros(cols)
    for start, end in _row_blocks(rows, cols):
        work, count, grad = block[: end - start], end - start, slot[start:end]
        torch.outer(row_factor[start:end], b, out=work)
        if two_way:
            work.addr_(weight * a[start:end], col_factor)
        grad.mul_(work)
        grad[row_index[:count], row_index[start:end] + offset] -= diagonal[start:end]
        if plan.uniform:
            grad.addr_(a[start:end], b, alpha=-weight * plan.uniform)
        weighted = torch.mul(grad, dots[start:end], out=work)
        row_total[start:end] = weighted.sum(1)
        col_total += torch.mv(weighted.t(), ones[:count])
    return loss, row_total, col_total


class _MatryoshkaInfoNCE(torch.autograd.Function):
    """Contrastive loss of `queries` (R, D) against `keys` (C, D) at every nesting dim.

    The raw dot products at dim d_k are a running sum over blocks of dims (one (R, C) matmul per block,
    one full-dim matmul in all); the truncated norms come from cumulative sums of squares. Each dim's
    logits, softmax statistics and gradient w.r.t. its dot products are computed straight after its block
    is added, so at most a few (R, C) buffers are live besides the gradient store: one (R, C) slot per dim,
    except the smallest dims (`_IMMEDIATE_FRACTION`), whose gradients are multiplied by the first d features of
    the other side at once, in the forward. Backward turns the stored gradients into a reverse running sum and
    multiplies each block once (the first kept dim's over every smaller dim's block too).
    """

    @staticmethod
    def forward(ctx, queries, keys, scale, plan: _Plan, compute_grad: bool):
        ctx.kernel_device = queries.device
        with threads_within_cpus(queries.device):
            return _MatryoshkaInfoNCE._forward(ctx, queries, keys, scale, plan, compute_grad)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_total, _grad_per_dim):
        with threads_within_cpus(ctx.kernel_device):
            return _MatryoshkaInfoNCE._backward(ctx, grad_total)

    @staticmethod
    def _forward(ctx, queries, keys, scale, plan: _Plan, compute_grad: bool):
        rows, cols = queries.shape[0], keys.shape[0]
        num_dims = len(plan.dims)
        bounds = block_bounds(plan.dims)
        scale_value = float(scale)
        two_way = plan.col_coef > 0
        query_sq = torch.stack([queries[:, lo:hi].square().sum(1) for lo, hi in bounds]).cumsum(0)  # (K, R)
        key_sq = torch.stack([keys[:, lo:hi].square().sum(1) for lo, hi in bounds]).cumsum(0)  # (K, C)
        query_scale = scale_value / query_sq.sqrt().clamp_min(_NORM_EPS)  # logits = dots * a_i * b_j
        key_scale = 1.0 / key_sq.sqrt().clamp_min(_NORM_EPS)

        shared_shift = scale_value <= _SHARED_SHIFT_MAX_SCALE
        # The common case (one shared shift, targets on a diagonal) runs row block by row block (`_blocked_dim`) on
        # a CPU: 1.31x -> 1.22x one CLIP loss (batch 4,096, 1 thread). Blocks grow with the threads (fewer, larger
        # parallel regions): at 2 threads 1.45x (whole matrices) -> 1.29x. The kernel runs with torch's threads capped
        # at the usable CPUs (`threads_within_cpus`): with more, every region waited for threads sharing a core
        # (15-40 s instead of 2 s).
        blocked = shared_shift and plan.targets is None and _blocked_on_cpu(queries)
        dots = queries.new_empty(rows, cols)
        if blocked:
            block_rows = min(rows, max(1, _block_elements() // max(cols, 1)))
            work = queries.new_empty(block_rows, cols)
        else:
            work = queries.new_empty(rows, cols)
        # The column-shifted exp of the high-scale path lives in the dim's gradient slot when there is one.
        col_buffer = queries.new_empty(rows, cols) if two_way and not compute_grad and not blocked else None
        ones = queries.new_ones(rows)
        per_dim = queries.new_empty(num_dims)
        if compute_grad:
            # The smallest dims' gradients (w.r.t. their dots) go into one scratch slot and straight on into the
            # (transposed) input gradients; the others' are kept, one slot each, for backward.
            num_immediate = _num_immediate(plan.dims)
            grad_dots = queries.new_empty(num_dims - num_immediate, rows, cols)
            scratch = queries.new_empty(rows, cols) if num_immediate else None
            grad_queries_t = queries.new_zeros(queries.shape[1], rows)
            grad_keys_t = keys.new_zeros(keys.shape[1], cols)
            grad_query_sq = queries.new_zeros(num_dims, rows)
            grad_key_sq = queries.new_zeros(num_dims, cols)
            grad_scale = queries.new_zeros(())

        def slot_of(index):
            return scratch if index < num_immediate else grad_dots[index - num_immediate]

        def hand_on(index):
            """The products of an immediate dim's gradient with the first d features of the other side."""
            if index < num_immediate:
                dim = plan.dims[index]
                grad_queries_t[:dim].addmm_(keys[:, :dim].t(), scratch.t())
                grad_keys_t[:dim].addmm_(queries[:, :dim].t(), scratch)

        def norm_grads(index, row_total, col_total):
            grad_scale.add_(row_total.sum() / scale_value)
            # logits scale as 1 / sqrt(cumulative sum of squares), unless clamped at eps (then no gradient).
            grad_query_sq[index] = torch.where(
                query_sq[index].sqrt() > _NORM_EPS, -row_total / (2 * query_sq[index]), 0
            )
            grad_key_sq[index] = torch.where(key_sq[index].sqrt() > _NORM_EPS, -col_total / (2 * key_sq[index]), 0)

        neg_scale = queries.new_tensor(-scale_value)
        zero = queries.new_zeros(())
        for index, (lo, hi) in enumerate(bounds):
            if index == 0:
                torch.mm(queries[:, lo:hi], keys[:, lo:hi].t(), out=dots)
            else:
                dots.addmm_(queries[:, lo:hi], keys[:, lo:hi].t())
            a, b, weight = query_scale[index], key_scale[index], plan.weights[index]
            if blocked:
                slot = slot_of(index) if compute_grad else None
                per_dim[index], row_total, col_total = _blocked_dim(dots, slot, work, a, b, weight, plan, scale_value,
                                                                    ones)
                if compute_grad:
                    norm_grads(index, row_total, col_total)
                    hand_on(index)
                continue
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
                    col_target = slot_of(index) if compute_grad else col_buffer
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
            slot = slot_of(index)
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
            norm_grads(index, weighted.sum(1), torch.mv(weighted.t(), ones))
            hand_on(index)

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
            ctx.grad_inputs_t, ctx.num_immediate = (grad_queries_t, grad_keys_t), num_immediate
        return total, per_dim

    @staticmethod
    def _backward(ctx, grad_total):
        if getattr(ctx, "grad_dots", None) is None:
            raise RuntimeError("Trying to backward through the Matryoshka contrastive loss a second time.")
        queries, keys = ctx.saved_tensors
        grad_dots = ctx.grad_dots
        ctx.grad_dots = None
        # Block k's dot products feed every dim j >= k: reverse running sum, in place.
        # On a CPU, row block by row block, so that each block's dims stay in cache.
        num_dims, rows, cols = grad_dots.shape
        for start, end in _row_blocks(rows, cols * num_dims) if _blocked_on_cpu(queries) else [(0, rows)]:
            for index in range(num_dims - 2, -1, -1):
                grad_dots[index, start:end].add_(grad_dots[index + 1, start:end])
        # Gradients are built transposed, (D, rows): each block's product lands in contiguous rows. They already
        # hold the immediate dims' products (features below the first kept dim).
        grad_queries_t, grad_keys_t = ctx.grad_inputs_t
        num_immediate, ctx.grad_inputs_t = ctx.num_immediate, None
        bounds = block_bounds(ctx.dims)
        for slot, index in enumerate(range(num_immediate, len(bounds))):
            # block^T @ G^T and block^T @ G: with the narrow strided block on the left, BLAS runs these at
            # full-matmul speed (G @ block is up to 2x slower on CPU). The first kept dim's gradient also feeds
            # every immediate dim's block.
            lo, hi = (0, bounds[index][1]) if slot == 0 else bounds[index]
            if slot == 0 and num_immediate:
                grad_queries_t[lo:hi].addmm_(keys[:, lo:hi].t(), grad_dots[slot].t())
                grad_keys_t[lo:hi].addmm_(queries[:, lo:hi].t(), grad_dots[slot])
            else:
                torch.mm(keys[:, lo:hi].t(), grad_dots[slot].t(), out=grad_queries_t[lo:hi])
                torch.mm(queries[:, lo:hi].t(), grad_dots[slot], out=grad_keys_t[lo:hi])
        # Through the norms: block k's squares feed the norms of every dim j >= k (reverse running sum);
        # d(sum of squares)/dx = 2x, one factor per block and row, broadcast over the block's features.
        max_dim = ctx.dims[-1]
        scaled = bool(grad_total != 1)  # a loss's usual upstream gradient is 1: nothing to scale
        for grad_t, inputs, grad_sq in (
            (grad_queries_t, queries, ctx.grad_query_sq),
            (grad_keys_t, keys, ctx.grad_key_sq),
        ):
            per_block = grad_sq.flip(0).cumsum(0).flip(0)  # (num_dims, rows)
            for index, (lo, hi) in enumerate(bounds):
                grad_t[lo:hi].addcmul_(inputs[:, lo:hi].t(), per_block[index], value=2)
            if scaled:
                grad_t[:max_dim].mul_(grad_total)
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
