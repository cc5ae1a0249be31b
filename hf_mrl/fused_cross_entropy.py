"""Nested linear heads + cross-entropy at every nesting dim, without materialising every dim's logits.

`nested_linear_cross_entropy` computes what `matryoshka_cross_entropy(nested_linear(x), labels, weights)` does,
chunk by chunk over the labels: for each chunk, the block products and their running sums give the chunk's
logits at every nesting dim (MRL-E: column slices of one weight matrix; MRL: one weight matrix per dim), and an
online log-sum-exp per dim keeps the softmax statistics (in float32 at least). The backward pass recomputes each
chunk's logits and folds the per-dim softmax gradients (minus the smoothed one-hot, times the dim's weight) into
the gradients of the input, the weights and the biases (MRL-E: through the reverse running sum over the blocks).
Only the (batch, labels) logits of the two largest dims are kept (the largest is the models' `logits` output), so
backward recomputes only the blocks below them, and no (num_dims, batch, labels) tensor is allocated; when all
labels fit one chunk, that chunk is kept and nothing is recomputed.

A flat sibling module with single-dot imports only: the trust_remote_code export copies it next to the modeling files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from .input_checks import check_class_labels, check_finite, check_number, check_tensor, is_int
from .nesting import NestedLinear, block_bounds, check_head_inputs, validate_matryoshka_weights

__all__ = ["DEFAULT_CHUNK_SIZE", "NestedCrossEntropyOutput", "nested_linear_cross_entropy", "nested_heads_cross_entropy"]

# Labels per chunk. Measured with `scripts/bench_heads.py --chunk-sizes 256 512 1024 2048 --clock cpu --threads 1`
# (batch 256, dim 2048, 9 dims, float32, forward+backward, median of 3, MRL-E / MRL vs one nn.Linear + CE):
# 20,000 labels: 256: 1.42x / 2.61x, 512: 1.29x / 2.43x, 1024: 1.34x / 2.36x, 2048: 1.35x / 2.55x (512-1024 within
# noise); 1,000 labels: 512: 1.45x / 2.49x, 1024 (one chunk, nothing recomputed): 1.20x / 2.13x. One chunk's
# (num_dims, batch, chunk) float32 buffer is then 9 MiB.
DEFAULT_CHUNK_SIZE = 1024
# How many of the largest dims' (batch, labels) logits the forward keeps for backward (see the forward).
_NUM_KEPT = 2


class NestedCrossEntropyOutput(NamedTuple):
    """loss: () weighted sum over dims; per_dim_losses: (num_dims,) unweighted, detached; logits: (batch, labels) at
    the largest nesting dim, differentiable."""

    loss: torch.Tensor
    per_dim_losses: torch.Tensor
    logits: torch.Tensor


# Products with fewer than 16 output columns (the 8-wide first blocks) hit a slow BLAS path on CPU: batch 256,
# chunk 1024, 8 columns: 1.1 ms for grad @ weight, 0.08 ms for the same product transposed. They run transposed.
_NARROW = 16


def _mm(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    if right.shape[1] < _NARROW:
        return torch.mm(right.t(), left.t()).t()
    return torch.mm(left, right)


def _add_mm(out: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> None:
    if right.shape[1] < _NARROW or out.dtype != left.dtype:
        out += _mm(left, right)
    else:
        out.addmm_(left, right)


def _mm_into(out: torch.Tensor, left: torch.Tensor, right: torch.Tensor) -> None:
    if right.shape[1] < _NARROW:
        out.t().copy_(torch.mm(right.t(), left.t()))
    else:
        torch.mm(left, right, out=out)


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


class _Problem:
    """The tensors of one call and the chunk loop both passes share."""

    def __init__(self, inputs, weights, biases, dims, efficient):
        self.inputs, self.weights, self.biases = inputs, weights, biases
        self.dims, self.efficient = dims, efficient
        self.blocks = block_bounds(dims)
        self.num_labels = weights[0].shape[0]

    def chunk_logits(self, start: int, end: int, buffer: torch.Tensor, num: int) -> None:
        """Writes the logits of labels [start, end) at the first `num` nesting dims into buffer[:num]."""
        inputs = self.inputs
        for index in range(num):
            if self.efficient:
                low, high = self.blocks[index]
                weight, bias = self.weights[0][start:end, low:high], self.biases[0]
                previous = buffer[index - 1] if index else (None if bias is None else bias[start:end].expand_as(buffer[0]))
                left = inputs[:, low:high]
            else:
                dim = self.dims[index]
                weight, bias = self.weights[index][start:end], self.biases[index]
                previous = None if bias is None else bias[start:end].expand_as(buffer[0])
                left = inputs[:, :dim]
            if previous is None:
                torch.mm(left, weight.t(), out=buffer[index])
            else:
                torch.addmm(previous, left, weight.t(), out=buffer[index])

    def chunks(self, chunk_size: int, stat: torch.dtype):
        """(start, end, buffer, scratch) per chunk: (num_dims, batch, end - start) tensors in the products' dtype
        and in `stat` (the same tensor when the dtypes agree), allocated once and reused (fresh allocations of this
        size cost page faults every chunk)."""
        buffer = scratch = None
        for start in range(0, self.num_labels, chunk_size):
            end = min(start + chunk_size, self.num_labels)
            if buffer is None or buffer.shape[2] != end - start:
                buffer = self.inputs.new_empty(len(self.dims), self.inputs.shape[0], end - start)
                scratch = buffer if buffer.dtype == stat else buffer.new_empty(buffer.shape, dtype=stat)
            yield start, end, buffer, scratch


def _targets_in_chunk(labels, valid, start, end):
    """(rows whose label lies in [start, end), their column in the chunk)."""
    rows = (valid & (labels >= start) & (labels < end)).nonzero().squeeze(1)
    return rows, labels[rows] - start


class _NestedLinearCrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs, labels, settings, *params):
        dims, efficient, loss_weights, label_smoothing, ignore_index, chunk_size = settings
        num_heads = 1 if efficient else len(dims)
        problem = _Problem(inputs, list(params[:num_heads]), list(params[num_heads:]), dims, efficient)
        num_dims, batch, num_labels = len(dims), inputs.shape[0], problem.num_labels
        stat = _stat_dtype(inputs.dtype)
        # The logits of the `num_kept` largest dims are kept for backward (the largest is the `logits` output), so
        # backward recomputes only the blocks below them (MRL-E: a quarter of the matmul; MRL: the small heads). When
        # all labels fit one chunk, its exp(logits - max) are kept instead and nothing is recomputed.
        single_chunk = num_labels <= chunk_size
        num_kept = 1 if single_chunk else min(_NUM_KEPT, num_dims)
        kept = [inputs.new_empty(batch, num_labels) for _ in range(num_kept)]
        logits = kept[-1]
        row_max = torch.full((num_dims, batch), float("-inf"), dtype=stat, device=inputs.device)
        row_sum = torch.zeros(num_dims, batch, dtype=stat, device=inputs.device)
        target = torch.zeros(num_dims, batch, dtype=stat, device=inputs.device)
        logit_sum = torch.zeros(num_dims, batch, dtype=stat, device=inputs.device) if label_smoothing else None
        valid = labels != ignore_index
        for start, end, buffer, scratch in problem.chunks(chunk_size, stat):
            problem.chunk_logits(start, end, buffer, num_dims)
            if not single_chunk:
                for offset, tensor in enumerate(kept):
                    tensor[:, start:end] = buffer[num_dims - num_kept + offset]
            else:
                logits.copy_(buffer[-1])
            # Computed in place: the buffer is rewritten by the next chunk (or kept as exp(logits - max) when single).
            scores = buffer if scratch is buffer else scratch.copy_(buffer)
            rows, columns = _targets_in_chunk(labels, valid, start, end)
            target[:, rows] = scores[:, rows, columns]
            if logit_sum is not None:
                logit_sum.add_(scores.sum(dim=2))
            new_max = torch.maximum(row_max, scores.amax(dim=2))
            row_sum.mul_(torch.exp(row_max - new_max)).add_(scores.sub_(new_max.unsqueeze(2)).exp_().sum(dim=2))
            row_max = new_max
        log_norm = row_max + torch.log(row_sum)
        per_row = log_norm - (1.0 - label_smoothing) * target
        if logit_sum is not None:
            per_row = per_row - (label_smoothing / num_labels) * logit_sum
        count = valid.sum()
        per_dim = torch.where(valid, per_row, 0.0).sum(dim=1) / count
        weight_tensor = torch.tensor(loss_weights, dtype=stat, device=inputs.device)
        loss = (per_dim * weight_tensor).sum()
        saved_logits = [scores] if single_chunk else kept[:-1]
        ctx.save_for_backward(inputs, labels, log_norm, row_max, count, logits, *saved_logits, *params)
        ctx.num_saved_logits = len(saved_logits)
        ctx.settings, ctx.num_heads = settings, num_heads
        ctx.mark_non_differentiable(per_dim)
        return loss, per_dim, logits

    @staticmethod
    def backward(ctx, grad_loss, _grad_per_dim, grad_logits):
        dims, efficient, loss_weights, label_smoothing, ignore_index, chunk_size = ctx.settings
        inputs, labels, log_norm, row_max, count, logits, *rest = ctx.saved_tensors
        saved_logits, params = rest[: ctx.num_saved_logits], rest[ctx.num_saved_logits :]
        num_heads = ctx.num_heads
        problem = _Problem(inputs, params[:num_heads], params[num_heads:], dims, efficient)
        num_dims, num_labels, stat = len(dims), problem.num_labels, log_norm.dtype
        needs = ctx.needs_input_grad
        want_inputs = needs[0]
        want_weights = [needs[3 + index] for index in range(num_heads)]
        want_biases = [needs[3 + num_heads + index] and params[num_heads + index] is not None for index in range(num_heads)]
        valid = labels != ignore_index
        # d loss / d logit[m, b, :] = scale[m, b] * (softmax - (1 - eps) * onehot - eps / labels).
        if grad_loss is None:
            grad_loss = torch.zeros((), dtype=stat, device=inputs.device)
        weight_tensor = torch.tensor(loss_weights, dtype=stat, device=inputs.device)
        scale = (grad_loss.to(stat) * weight_tensor / count).unsqueeze(1) * valid.to(stat)
        grad_inputs = torch.zeros(inputs.shape, dtype=stat, device=inputs.device) if want_inputs else None
        grad_weights = [torch.empty_like(params[index]) if want else None for index, want in enumerate(want_weights)]
        grad_biases = [torch.empty_like(params[num_heads + index]) if want else None for index, want in enumerate(want_biases)]
        single_chunk = num_labels <= chunk_size
        for start, end, buffer, scratch in [(0, num_labels, None, None)] if single_chunk else problem.chunks(chunk_size, stat):
            if single_chunk:
                # The forward's single chunk, kept as exp(logits - max), becomes the softmax in place (a second
                # backward with retain_graph=True is then refused by autograd's version check).
                grads = saved_logits[0].mul_(torch.exp(row_max - log_norm).unsqueeze(2))
            else:
                kept = [*saved_logits, logits]
                problem.chunk_logits(start, end, buffer, num_dims - len(kept))
                for offset, tensor in enumerate(kept):
                    buffer[num_dims - len(kept) + offset] = tensor[:, start:end]
                grads = buffer if scratch is buffer else scratch.copy_(buffer)
                grads.sub_(log_norm.unsqueeze(2)).exp_()
            if label_smoothing:
                grads.sub_(label_smoothing / num_labels)
            rows, columns = _targets_in_chunk(labels, valid, start, end)
            grads[:, rows, columns] -= 1.0 - label_smoothing
            grads.mul_(scale.unsqueeze(2))
            if grad_logits is not None:
                grads[-1].add_(grad_logits[:, start:end])
            if efficient:
                # Block i feeds the logits of every dim j >= i: its gradient is the reverse running sum.
                for index in reversed(range(num_dims - 1)):
                    grads[index].add_(grads[index + 1])
            grads = grads.to(inputs.dtype)
            for index in range(num_dims):
                grad = grads[index]
                if efficient:
                    low, high = problem.blocks[index]
                    weight, columns_in = params[0][start:end, low:high], slice(low, high)
                    grad_weight = grad_weights[0][start:end, low:high] if want_weights[0] else None
                else:
                    weight, columns_in = params[index][start:end], slice(0, dims[index])
                    grad_weight = grad_weights[index][start:end] if want_weights[index] else None
                if grad_inputs is not None:
                    _add_mm(grad_inputs[:, columns_in], grad, weight)
                if grad_weight is not None:
                    _mm_into(grad_weight, grad.t(), inputs[:, columns_in])
                if not efficient and want_biases[index]:
                    grad_biases[index][start:end] = grad.sum(dim=0)
            if efficient and want_biases[0]:
                grad_biases[0][start:end] = grads[0].sum(dim=0)
        if grad_inputs is not None:
            grad_inputs = grad_inputs.to(inputs.dtype)
        return grad_inputs, None, None, *grad_weights, *grad_biases


def nested_linear_cross_entropy(
    inputs: torch.Tensor,
    weight: torch.Tensor | Sequence[torch.Tensor],
    bias: torch.Tensor | Sequence[torch.Tensor | None] | None,
    dims: Sequence[int],
    labels: torch.Tensor,
    loss_weights: Sequence[float],
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> NestedCrossEntropyOutput:
    """Weighted sum over nesting dims of the cross-entropy of each dim's head, fused with the heads.

    Args:
        inputs: (batch, features) embeddings; the head at dim d reads `inputs[:, :d]`.
        weight: MRL-E: one (num_labels, dims[-1]) matrix whose first d columns are the head at d. MRL: a sequence
            of one (num_labels, d) matrix per nesting dim.
        bias: MRL-E: one (num_labels,) vector or None; MRL: one per dim (None entries allowed), or None.
        dims: nesting dims, ascending.
        labels: (batch,) class ids; rows equal to `ignore_index` are left out of the mean, as in
            `nn.CrossEntropyLoss` (all rows ignored gives nan).
        loss_weights: one relative weight per nesting dim.
        label_smoothing: as in `nn.CrossEntropyLoss`.
        chunk_size: labels per chunk (see `DEFAULT_CHUNK_SIZE`).

    Returns the loss and per-dim losses in float32 (float64 for float64 inputs) and the full-dim logits in the
    products' dtype. Under autocast the products run in the autocast dtype; softmax statistics stay float32.
    """
    efficient = isinstance(weight, torch.Tensor)
    weights = [weight] if efficient else list(weight)
    biases = [bias] if efficient else (list(bias) if bias is not None else [None] * len(weights))
    dims = tuple(dims)
    if not efficient and not len(weights) == len(biases) == len(dims):
        raise ValueError(f"MRL heads need one weight and one bias per dim: {len(dims)} dims, got {len(weights)} weights "
                         f"and {len(biases)} biases.")
    loss_weights = validate_matryoshka_weights(loss_weights, len(dims), "loss_weights")
    check_tensor(inputs, "inputs", 2, "(batch, features)", "float")
    check_head_inputs(inputs, dims)
    check_class_labels(labels, inputs.shape[0], weights[0].shape[0], ignore_index)
    if not is_int(chunk_size) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be a positive integer, got {chunk_size!r}.")
    check_number(label_smoothing, "label_smoothing", 0, 1)
    check_finite(inputs, "inputs")
    settings = (dims, efficient, tuple(float(w) for w in loss_weights), float(label_smoothing), ignore_index, chunk_size)
    device_type = inputs.device.type
    if torch.is_autocast_enabled(device_type):
        # The chunk loop writes into preallocated buffers, which autocast cannot retype: cast once here
        # (differentiably) and run with autocast off, as `NestedLinear` does.
        dtype = torch.get_autocast_dtype(device_type)
        params = [None if p is None else p.to(dtype) for p in (*weights, *biases)]
        with torch.autocast(device_type, enabled=False):
            loss, per_dim, logits = _NestedLinearCrossEntropyFunction.apply(inputs.to(dtype), labels, settings, *params)
        return NestedCrossEntropyOutput(loss, per_dim, logits)
    dtype = inputs.dtype
    params = [None if p is None else p.to(dtype) for p in (*weights, *biases)]
    return NestedCrossEntropyOutput(*_NestedLinearCrossEntropyFunction.apply(inputs, labels, settings, *params))


def nested_heads_cross_entropy(
    heads: NestedLinear, inputs: torch.Tensor, labels: torch.Tensor, loss_weights: Sequence[float], **kwargs
) -> NestedCrossEntropyOutput:
    """`nested_linear_cross_entropy` with the parameters of a `NestedLinear` (any leading input shape)."""
    flat = inputs.reshape(-1, inputs.shape[-1])
    if heads.efficient:
        weight, bias = heads.classifier.weight, heads.classifier.bias
    else:
        weight, bias = [head.weight for head in heads.heads], [head.bias for head in heads.heads]
    output = nested_linear_cross_entropy(flat, weight, bias, heads.dims, labels.reshape(-1), loss_weights, **kwargs)
    return output._replace(logits=output.logits.reshape(*inputs.shape[:-1], heads.out_features))
