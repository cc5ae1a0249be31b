"""Nested linear heads + cross-entropy at every nesting dim, without materialising every dim's logits.

`nested_linear_cross_entropy` computes what `matryoshka_cross_entropy(nested_linear(x), labels, weights)` does
(MRL-E: column slices of one weight matrix, whose block products and their running sums give every dim's logits;
MRL: one weight matrix per dim) in one of two ways:

- Few labels (all fit one chunk): one pass over chunks of rows. Each row chunk's logits at every dim are complete,
  so its softmax, loss and gradients (of the input, the weights and the biases) are computed right away, in the
  forward; backward only scales them by the upstream gradient. Nothing is recomputed and only one row chunk's
  (num_dims, rows, labels) buffer exists at a time.
- Many labels: two passes over chunks of labels. The forward keeps an online log-sum-exp per dim (in float32 at
  least); backward recomputes each chunk's logits and folds the per-dim softmax gradients (minus the smoothed
  one-hot, times the dim's weight) into the gradients (MRL-E: through the reverse running sum over the blocks).
  The largest dims' (batch, labels) logits are written straight into tensors kept for backward (the largest is
  the models' `logits` output), so backward recomputes only the small dims' blocks.
Either way no (num_dims, batch, labels) tensor is allocated.

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
# noise). At most this many labels take the one-pass path.
DEFAULT_CHUNK_SIZE = 1024
# One-pass path: at most this many elements in one row chunk's (num_dims, rows, labels) buffer (4 MiB float32).
# Measured (batch 256, dim 2048, 9 dims, 1,000 labels; MRL-E time / peak memory vs one nn.Linear + CE, 1 thread):
# 2^19: 1.20x / 1.07x, 2^20: 1.13x / 1.20x, 2^21 (two chunks): 1.07x / 1.30x, the whole batch: 1.05x / 1.67x.
ROW_CHUNK_ELEMENTS = 1 << 20
# Two-pass path: how many of the largest dims' logits the forward keeps for backward, MRL-E / MRL. Each is one
# (batch, labels) tensor and spares backward the products of its dim (MRL-E: half the remaining block columns).
# Measured (batch 256, dim 2048, 100,000 labels): MRL-E with 4 kept, peak memory 1.2x one nn.Linear + CE.
_NUM_KEPT = {True: 4, False: 5}


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


class _Problem:
    """The tensors of one call: inputs, heads and the settings, and the products both paths share."""

    def __init__(self, inputs, labels, params, settings):
        dims, efficient, loss_weights, label_smoothing, ignore_index, chunk_size, grad_enabled = settings
        num_heads = 1 if efficient else len(dims)
        self.inputs, self.labels = inputs, labels
        self.weights, self.biases = list(params[:num_heads]), list(params[num_heads:])
        self.dims, self.efficient, self.blocks = dims, efficient, block_bounds(dims)
        self.label_smoothing, self.chunk_size = label_smoothing, chunk_size
        self.num_labels = self.weights[0].shape[0]
        self.stat = torch.promote_types(inputs.dtype, torch.float32)
        self.valid = labels != ignore_index
        self.count = self.valid.sum()
        self.loss_weights = torch.tensor(loss_weights, dtype=self.stat, device=inputs.device)

    def head(self, index: int, labels: slice):
        """(input columns, weight, bias) of the product that dim `index` adds, restricted to a slice of labels."""
        if self.efficient:
            low, high = self.blocks[index]
            bias = self.biases[0] if index == 0 else None
            return slice(low, high), self.weights[0][labels, low:high], None if bias is None else bias[labels]
        bias = self.biases[index]
        return slice(0, self.dims[index]), self.weights[index][labels], None if bias is None else bias[labels]

    def logits(self, rows: slice, labels: slice, outs: Sequence[torch.Tensor]) -> None:
        """Writes the logits of (rows, labels) at the first len(outs) nesting dims into outs (MRL-E: running sums)."""
        for index, out in enumerate(outs):
            columns, weight, bias = self.head(index, labels)
            left = self.inputs[rows, columns]
            previous = outs[index - 1] if self.efficient and index else bias
            if previous is None:
                torch.mm(left, weight.t(), out=out)
            else:
                torch.addmm(previous.expand_as(out), left, weight.t(), out=out)

    def softmax_grads(self, grads: torch.Tensor, rows: slice, labels: slice, scale: torch.Tensor,
                      scaled: bool = False) -> torch.Tensor:
        """Turns softmax probabilities (num_dims, rows, labels) into d loss / d logits in place: times `scale`
        (num_dims, all rows) unless already `scaled`, minus the scaled, smoothed one-hot."""
        scale = scale[:, rows]
        if not scaled:
            grads.mul_(scale.unsqueeze(2))
        if self.label_smoothing:
            grads.sub_((self.label_smoothing / self.num_labels) * scale.unsqueeze(2))
        target_rows, target_columns = _targets(self.labels[rows], self.valid[rows], labels.start, labels.stop)
        grads[:, target_rows, target_columns] -= (1.0 - self.label_smoothing) * scale[:, target_rows]
        return grads

    def fold(self, grads: torch.Tensor) -> None:
        if self.efficient:  # block i feeds the logits of every dim j >= i
            for index in reversed(range(len(self.dims) - 1)):
                grads[index].add_(grads[index + 1])

    def accumulate_grads(self, grads, rows: slice, labels: slice, grad_inputs, grad_weights, grad_biases,
                         accumulate_weights: bool) -> None:
        """Adds the products' gradients for (rows, labels), given d loss / d product per dim (after `fold`)."""
        for index in range(len(self.dims)):
            grad = grads[index]
            columns, weight, _ = self.head(index, labels)
            head = 0 if self.efficient else index
            if grad_inputs is not None:
                _add_mm(grad_inputs[rows, columns], grad, weight)
            if grad_weights[head] is not None:
                out = grad_weights[head][labels, columns]
                if accumulate_weights:
                    _add_mm(out, grad.t(), self.inputs[rows, columns])
                else:
                    _mm_into(out, grad.t(), self.inputs[rows, columns])
            if grad_biases[head] is not None and (index == 0 or not self.efficient):
                grad_biases[head][labels] += grad.sum(dim=0)


def _targets(labels, valid, start, end):
    """(rows whose label lies in [start, end), their column in the chunk)."""
    rows = (valid & (labels >= start) & (labels < end)).nonzero().squeeze(1)
    return rows, labels[rows] - start


def _loss(problem: _Problem, log_norm, target, logit_sum):
    per_row = log_norm - (1.0 - problem.label_smoothing) * target
    if logit_sum is not None:
        per_row = per_row - (problem.label_smoothing / problem.num_labels) * logit_sum
    per_dim = torch.where(problem.valid, per_row, 0.0).sum(dim=1) / problem.count
    return (per_dim * problem.loss_weights).sum(), per_dim


def _zeros_like_params(problem: _Problem, wanted):
    return [torch.zeros_like(p) if want and p is not None else None
            for p, want in zip([*problem.weights, *problem.biases], wanted)]


def _one_pass(problem: _Problem, want_inputs: bool, want_params: Sequence[bool]):
    """Loss, per-dim losses, logits and (for an upstream gradient of 1) the wanted gradients, row chunk by row
    chunk: every label is in each chunk, so its softmax is final and its gradients are computed right away."""
    inputs, stat = problem.inputs, problem.stat
    num_dims, (batch, num_labels) = len(problem.dims), (inputs.shape[0], problem.num_labels)
    every_label = slice(0, num_labels)
    num_chunks = -(-batch * num_dims * num_labels // ROW_CHUNK_ELEMENTS)
    rows_per_chunk = -(-batch // num_chunks)  # chunks of equal size, rounded up to a multiple of 32 rows for BLAS
    rows_per_chunk = min(batch, -(-rows_per_chunk // 32) * 32)
    logits = inputs.new_empty(batch, num_labels)
    log_norm, target = (torch.zeros(num_dims, batch, dtype=stat, device=inputs.device) for _ in range(2))
    logit_sum = torch.zeros_like(log_norm) if problem.label_smoothing else None
    want_any = want_inputs or any(want_params)
    grad_inputs = torch.zeros(inputs.shape, dtype=stat, device=inputs.device) if want_inputs else None
    grad_params = [None if g is None else g.to(stat) for g in _zeros_like_params(problem, want_params)]
    num_heads = len(problem.weights)
    scale = (problem.loss_weights / problem.count).unsqueeze(1) * problem.valid.to(stat)
    buffer = inputs.new_empty(num_dims, rows_per_chunk, num_labels)
    scratch = buffer if buffer.dtype == stat else torch.empty_like(buffer, dtype=stat)
    for start in range(0, batch, rows_per_chunk):
        rows = slice(start, min(start + rows_per_chunk, batch))
        size = rows.stop - start
        products, scores = buffer[:, :size], scratch[:, :size]
        problem.logits(rows, every_label, list(products))
        logits[rows] = products[-1]
        if scores is not products:
            scores.copy_(products)
        target_rows, target_columns = _targets(problem.labels[rows], problem.valid[rows], 0, num_labels)
        target[:, start + target_rows] = scores[:, target_rows, target_columns]
        if logit_sum is not None:
            logit_sum[:, rows] = scores.sum(dim=2)
        row_max = scores.amax(dim=2)
        row_sum = scores.sub_(row_max.unsqueeze(2)).exp_().sum(dim=2)
        log_norm[:, rows] = row_max + torch.log(row_sum)
        if not want_any:
            continue
        probabilities = scores.mul_((scale[:, rows] / row_sum).unsqueeze(2))  # already scaled
        grads = problem.softmax_grads(probabilities, rows, every_label, scale, scaled=True)
        problem.fold(grads)
        if grads is not products:
            grads = products.copy_(grads)
        problem.accumulate_grads(grads, rows, every_label, grad_inputs, grad_params[:num_heads],
                                 grad_params[num_heads:], accumulate_weights=True)
    loss, per_dim = _loss(problem, log_norm, target, logit_sum)
    return loss, per_dim, logits, (grad_inputs, grad_params)


def _two_pass_forward(problem: _Problem):
    """Loss, per-dim losses and the kept logits of the largest dims (the last is the full-dim `logits`), over chunks
    of labels with an online log-sum-exp per dim."""
    inputs, stat = problem.inputs, problem.stat
    num_dims, (batch, num_labels) = len(problem.dims), (inputs.shape[0], problem.num_labels)
    num_kept = min(_NUM_KEPT[problem.efficient], num_dims)
    num_free, every_row = num_dims - num_kept, slice(0, batch)
    kept = [inputs.new_empty(batch, num_labels) for _ in range(num_kept)]
    row_max = torch.full((num_dims, batch), float("-inf"), dtype=stat, device=inputs.device)
    row_sum, target = (torch.zeros(num_dims, batch, dtype=stat, device=inputs.device) for _ in range(2))
    logit_sum = torch.zeros_like(row_sum) if problem.label_smoothing else None
    for labels, products, scores in _label_chunks(problem):
        views = [tensor[:, labels] for tensor in kept]
        # The kept dims' products go straight into the kept tensors; their slots of `scores` take their exp.
        problem.logits(every_row, labels, [*products[:num_free], *views])
        if scores is not products:
            scores[:num_free].copy_(products[:num_free])
        free = scores[:num_free]
        target_rows, target_columns = _targets(problem.labels, problem.valid, labels.start, labels.stop)
        target[:, target_rows] = torch.cat([free[:, target_rows, target_columns],
                                            torch.stack([view[target_rows, target_columns] for view in views]).to(stat)])
        if logit_sum is not None:
            logit_sum += torch.cat([free.sum(dim=2), torch.stack([view.sum(dim=1, dtype=stat) for view in views])])
        new_max = torch.maximum(row_max, torch.cat([free.amax(dim=2),
                                                    torch.stack([view.amax(dim=1) for view in views]).to(stat)]))
        free.sub_(new_max[:num_free].unsqueeze(2))
        for offset, view in enumerate(views):
            torch.sub(view, new_max[num_free + offset].unsqueeze(1), out=scores[num_free + offset])
        row_sum.mul_(torch.exp(row_max - new_max)).add_(scores.exp_().sum(dim=2))
        row_max = new_max
    log_norm = row_max + torch.log(row_sum)
    loss, per_dim = _loss(problem, log_norm, target, logit_sum)
    return loss, per_dim, log_norm, kept


def _two_pass_backward(problem: _Problem, log_norm, kept, scale, grad_logits, want_inputs, want_params):
    inputs, stat = problem.inputs, problem.stat
    num_free, every_row = len(problem.dims) - len(kept), slice(0, inputs.shape[0])
    grad_inputs = torch.zeros(inputs.shape, dtype=stat, device=inputs.device) if want_inputs else None
    num_heads = len(problem.weights)
    params = [*problem.weights, *problem.biases]
    grad_weights = [torch.empty_like(p) if want else None for p, want in zip(params[:num_heads], want_params)]
    grad_biases = _zeros_like_params(problem, [False] * num_heads + list(want_params[num_heads:]))[num_heads:]
    # exp(logits - log_norm + log(scale)) is the scaled softmax in one pass (scale 0 gives exp(-inf) = 0); a
    # negative upstream gradient makes the scale negative, which then takes its own pass.
    scaled = bool((scale >= 0).all())
    shift = log_norm - torch.log(scale) if scaled else log_norm
    for labels, products, grads in _label_chunks(problem):
        problem.logits(every_row, labels, list(products[:num_free]))
        if grads is not products:
            grads[:num_free].copy_(products[:num_free])
        grads[:num_free].sub_(shift[:num_free].unsqueeze(2))
        for offset, tensor in enumerate(kept):
            torch.sub(tensor[:, labels], shift[num_free + offset].unsqueeze(1), out=grads[num_free + offset])
        problem.softmax_grads(grads.exp_(), every_row, labels, scale, scaled=scaled)
        if grad_logits is not None:
            grads[-1].add_(grad_logits[:, labels])
        problem.fold(grads)
        if grads is not products:
            grads = products.copy_(grads)
        problem.accumulate_grads(grads, every_row, labels, grad_inputs, grad_weights, grad_biases,
                                 accumulate_weights=False)
    return grad_inputs, [*grad_weights, *grad_biases]


def _label_chunks(problem: _Problem):
    """(labels, products, scores) per chunk of labels: (num_dims, batch, chunk) tensors in the products' dtype and in
    the statistics' dtype (the same tensor when they agree), allocated once and reused (fresh allocations of this
    size cost page faults every chunk)."""
    inputs, chunk_size = problem.inputs, problem.chunk_size
    buffer = inputs.new_empty(len(problem.dims), inputs.shape[0], min(chunk_size, problem.num_labels))
    scratch = buffer if buffer.dtype == problem.stat else torch.empty_like(buffer, dtype=problem.stat)
    for start in range(0, problem.num_labels, chunk_size):
        end = min(start + chunk_size, problem.num_labels)
        yield slice(start, end), buffer[:, :, : end - start], scratch[:, :, : end - start]


class _NestedLinearCrossEntropyFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs, labels, settings, *params):
        ctx.set_materialize_grads(False)  # an unused `logits` output then costs nothing in backward
        problem = _Problem(inputs, labels, params, settings)
        grad_enabled = settings[-1]
        want_inputs = grad_enabled and ctx.needs_input_grad[0]
        want_params = [grad_enabled and need and p is not None for need, p in zip(ctx.needs_input_grad[3:], params)]
        ctx.problem_args = (settings, len(params))
        if problem.num_labels <= problem.chunk_size:
            loss, per_dim, logits, ctx.precomputed = _one_pass(problem, want_inputs, want_params)
            ctx.one_pass = True
            ctx.save_for_backward(inputs, labels, *params)
        else:
            loss, per_dim, log_norm, kept = _two_pass_forward(problem)
            logits, ctx.one_pass = kept[-1], False
            ctx.num_kept = len(kept)
            ctx.save_for_backward(inputs, labels, log_norm, *kept, *params)
        ctx.mark_non_differentiable(per_dim)
        return loss, per_dim, logits

    @staticmethod
    def backward(ctx, grad_loss, _grad_per_dim, grad_logits):
        settings, num_params = ctx.problem_args
        saved = ctx.saved_tensors
        inputs, labels, params = saved[0], saved[1], saved[len(saved) - num_params:]
        problem = _Problem(inputs, labels, params, settings)
        want_inputs = ctx.needs_input_grad[0]
        want_params = [need and p is not None for need, p in zip(ctx.needs_input_grad[3:], params)]
        if grad_loss is None:
            grad_loss = torch.zeros((), dtype=problem.stat, device=inputs.device)
        if ctx.one_pass:
            if ctx.precomputed is None:
                raise RuntimeError("Trying to backward through the fused Matryoshka cross-entropy a second time: its "
                                   "gradients were computed in the forward pass and handed over by the first backward.")
            (grad_inputs, grad_params), ctx.precomputed = ctx.precomputed, None
            for grad in [grad_inputs, *grad_params]:
                if grad is not None:
                    grad.mul_(grad_loss.to(grad.dtype))
            if grad_logits is not None:
                _add_full_dim_logits_grad(problem, grad_logits, grad_inputs, grad_params)
        else:
            log_norm, kept = saved[2], saved[3 : 3 + ctx.num_kept]
            scale = (grad_loss.to(problem.stat) * problem.loss_weights / problem.count).unsqueeze(1)
            scale = scale * problem.valid.to(problem.stat)
            grad_inputs, grad_params = _two_pass_backward(problem, log_norm, kept, scale, grad_logits, want_inputs,
                                                          want_params)
        grad_params = [None if grad is None else grad.to(param.dtype) for grad, param in zip(grad_params, params)]
        if grad_inputs is not None:
            grad_inputs = grad_inputs.to(inputs.dtype)
        return grad_inputs, None, None, *grad_params


def _add_full_dim_logits_grad(problem: _Problem, grad_logits, grad_inputs, grad_params) -> None:
    """Adds the gradient of the `logits` output (the full-dim head, used outside the loss) to the one-pass path's."""
    num_heads, dim = len(problem.weights), problem.dims[-1]
    head = 0 if problem.efficient else num_heads - 1
    weight, grad_logits = problem.weights[head][:, :dim], grad_logits.to(problem.inputs.dtype)
    if grad_inputs is not None:
        grad_inputs[:, :dim] += torch.mm(grad_logits, weight)
    if grad_params[head] is not None:
        grad_params[head][:, :dim] += torch.mm(grad_logits.t(), problem.inputs[:, :dim])
    if grad_params[num_heads + head] is not None:
        grad_params[num_heads + head] += grad_logits.sum(dim=0)


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
        chunk_size: labels per chunk (see `DEFAULT_CHUNK_SIZE`); with at most this many labels, the gradients are
            computed in the forward pass (a second backward through the same graph is then refused).

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
    # Gradients are computed only when autograd will ask for them (the one-pass path computes them in the forward).
    grad_enabled = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (inputs, *weights, *biases))
    settings = (dims, efficient, tuple(float(w) for w in loss_weights), float(label_smoothing), ignore_index, chunk_size,
                grad_enabled)
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
