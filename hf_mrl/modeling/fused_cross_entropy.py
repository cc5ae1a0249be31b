"""Nested linear heads + cross-entropy at every nesting dim, without materialising every dim's logits.

`nested_linear_cross_entropy` computes what `matryoshka_cross_entropy(nested_linear(x), labels, weights)` does
(MRL-E: column slices of one weight matrix, whose block products and their running sums give every dim's logits;
MRL: one weight matrix per dim) in one of two ways:

- Few labels (all fit one chunk): one pass over chunks of rows. Each row chunk's logits at every dim are complete,
  so its softmax, loss and gradients (of the input, the weights and the biases) are computed right away, in the
  forward; backward only scales them by the upstream gradient. Nothing is recomputed and only one row chunk's
  (num_dims, rows, labels) buffer exists at a time.
- Many labels: two passes over chunks of labels. The forward keeps each chunk's log-sum-exp per dim and row (in
  float32 at least) and combines them; backward recomputes each chunk's softmax, rescales it by exp(chunk's
  log-sum-exp - overall one), and folds the per-dim softmax gradients (minus the smoothed one-hot, times the dim's
  weight) into the gradients (MRL-E: through the reverse running sum over the blocks). The largest dims' logits
  are written straight into tensors kept for backward (the full-dim one is the models' `logits` output; the others
  are stored chunk by chunk), so backward recomputes only the small dims' blocks.
Softmaxes run in torch's fused softmax kernel (one pass per row; its exp is faster than `torch.exp`), and a row's
log-sum-exp is its largest logit minus the log of its largest probability. Either way no (num_dims, batch, labels)
tensor is allocated.

A flat sibling module with single-dot imports only: the trust_remote_code export copies it next to the modeling files.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from .checks import check_class_labels, check_finite, check_number, check_tensor, is_int
from .cpu_threads import kernel_threads, threads_within_cpus
from .nesting import NestedLinear, block_bounds, check_head_inputs, validate_matryoshka_weights

__all__ = ["DEFAULT_CHUNK_SIZE", "NestedCrossEntropyOutput", "nested_linear_cross_entropy", "nested_heads_cross_entropy"]

# Labels per chunk. Measured with `scripts/bench_heads.py --chunk-sizes 256 512 1024 2048 --clock cpu --threads 1`
# (batch 256, dim 2048, 9 dims, float32, forward+backward, median of 3, MRL-E / MRL vs one nn.Linear + CE):
# 20,000 labels: 256: 1.42x / 2.61x, 512: 1.29x / 2.43x, 1024: 1.34x / 2.36x, 2048: 1.35x / 2.55x (512-1024 within
# noise). At most this many labels take the one-pass path. On a CPU both chunk sizes (labels, and the one-pass
# path's row chunks below) scale with the kernel's threads (`kernel_threads`: torch's, capped at the usable CPUs):
# at 2 threads the chunks of one thread left each product and softmax too small to keep both busy (batch 256, dim
# 2048, 1,000 labels: MRL-E 1.28x one head at 1 thread, 1.46x at 2 with the same chunks, 1.26x with chunks twice as
# large; 100,000 labels: 1.28x, 1.48x, 1.14x).
DEFAULT_CHUNK_SIZE = 1024
# One-pass path: at most this many elements per CPU thread in one row chunk's (num_dims, rows, labels) buffer,
# MRL-E / MRL (measured below before the scaling by threads).
# MRL-E: the most that keeps its peak memory within 1.3x one nn.Linear + CE. Measured (batch 256, dim 2048, 9 dims,
# 1,000 labels, 2 threads, time / peak memory vs one nn.Linear + CE): 3 chunks (2^20): 1.43x / 1.20x, 2 chunks
# (5 MiB): 1.28x / 1.30x, the whole batch: 1.20x / 1.67x. MRL (one head per dim, about 2x the FLOPs and the
# parameter gradients of one head, no memory target): the whole batch up to 16 MiB, 2.53x -> 1.98x.
ROW_CHUNK_ELEMENTS = {True: 5 << 18, False: 1 << 22}
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
    if right.shape[1] < _NARROW or out.dtype != left.dtype:
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

        # Per product (MRL-E: per block of columns; MRL: per head): (input columns, weight, bias), sliced once per call.
        if efficient:
            self.heads = [(slice(low, high), self.weights[0][:, low:high], self.biases[0] if index == 0 else None)
                          for index, (low, high) in enumerate(self.blocks)]
        else:
            self.heads = [(slice(0, dim), weight[:, :dim], bias) for dim, weight, bias in zip(dims, self.weights, self.biases)]
        self.input_blocks = [inputs[:, columns] for columns, _, _ in self.heads]
        self.weights_t = [weight.t() for _, weight, _ in self.heads]

    def head(self, index: int, labels: slice):
        """(input columns, weight, bias) of the product that dim `index` adds, restricted to a slice of labels."""
        columns, weight, bias = self.heads[index]
        if labels.start == 0 and labels.stop == self.num_labels:
            return columns, weight, bias
        return columns, weight[labels], None if bias is None else bias[labels]

    def input_block(self, index: int, rows: slice) -> torch.Tensor:
        block = self.input_blocks[index]
        return block if rows.start == 0 and rows.stop == block.shape[0] else block[rows]

    def logits(self, rows: slice, labels: slice, outs: Sequence[torch.Tensor]) -> None:
        """Writes the logits of (rows, labels) at the first len(outs) nesting dims into outs (MRL-E: running sums)."""
        every_label = labels.start == 0 and labels.stop == self.num_labels
        for index, out in enumerate(outs):
            weight_t, bias = self.weights_t[index], self.heads[index][2]
            if not every_label:
                weight_t, bias = weight_t[:, labels], None if bias is None else bias[labels]
            left = self.input_block(index, rows)
            previous = outs[index - 1] if self.efficient and index else bias
            if previous is None:
                torch.mm(left, weight_t, out=out)
            else:  # a bias broadcasts over the rows
                torch.addmm(previous, left, weight_t, out=out)

    def softmax_grads(self, grads: torch.Tensor, scale: torch.Tensor, targets) -> torch.Tensor:
        """Turns softmax probabilities already times `scale` (num_dims, rows, labels) into d loss / d logits in
        place: minus the scaled, smoothed one-hot. scale: (num_dims, rows); targets: the chunk's, from `_targets`."""
        if self.label_smoothing:
            grads.sub_((self.label_smoothing / self.num_labels) * scale.unsqueeze(2))
        target_rows, target_columns = targets
        grads[:, target_rows, target_columns] -= (1.0 - self.label_smoothing) * scale[:, target_rows]
        return grads

    def fold(self, grads: torch.Tensor) -> None:
        if self.efficient:  # block i feeds the logits of every dim j >= i
            for index in reversed(range(len(self.dims) - 1)):
                grads[index].add_(grads[index + 1])

    def accumulate_grads(self, grads, rows: slice, labels: slice, grad_inputs, grad_params, first_labels: bool,
                         first_rows: bool) -> None:
        """Adds the products' gradients for (rows, labels), given d loss / d product per dim (after `fold`). The
        first chunk of labels writes the input gradient's rows and the first chunk of rows writes the parameters'
        gradients, so none of them needs zeroing first. grad_inputs, grad_params: from `grad_views`."""
        every_label = labels.start == 0 and labels.stop == self.num_labels
        # The largest dim first: under MRL it writes the whole prefix the others add to; and the first write to a
        # fresh gradient's memory, which takes its page faults, is then a large (multi-threaded) product.
        for index, grad in reversed(list(enumerate(grads.unbind(0)))):
            _, weight, _ = self.head(index, labels)
            if grad_inputs[index] is not None:
                write = first_labels and (self.efficient or index == len(self.dims) - 1)
                (_mm_into if write else _add_mm)(grad_inputs[index][rows], grad, weight)
            grad_weight, grad_bias = grad_params[index]
            if grad_weight is not None:
                out = grad_weight if every_label else grad_weight[labels]
                (_mm_into if first_rows else _add_mm)(out, grad.t(), self.input_block(index, rows))
            if grad_bias is not None:
                if first_rows:
                    grad_bias[labels] = grad.sum(dim=0)
                else:
                    grad_bias[labels] += grad.sum(dim=0)

    def grad_views(self, grad_inputs, grad_params):
        """Per product: the input gradient's columns, and (weight gradient's columns, bias gradient or None)."""
        num_heads = len(self.weights)
        inputs = [None if grad_inputs is None else grad_inputs[:, columns] for columns, _, _ in self.heads]
        params = []
        for index, (columns, _, _) in enumerate(self.heads):
            head = 0 if self.efficient else index
            grad_weight, grad_bias = grad_params[head], grad_params[num_heads + head]
            params.append((None if grad_weight is None else grad_weight[:, columns],
                           grad_bias if index == 0 or not self.efficient else None))
        return inputs, params

    def empty_grads(self, want_inputs: bool, want_params: Sequence[bool]):
        """Uninitialised gradients (in the statistics' dtype) for `accumulate_grads` to write; input columns past the
        largest dim, which no head reads, are zero."""
        inputs = self.inputs
        grad_inputs = None
        if want_inputs:
            grad_inputs = torch.empty(inputs.shape, dtype=self.stat, device=inputs.device)
            grad_inputs[:, self.dims[-1]:].zero_()
        params = [*self.weights, *self.biases]
        grad_params = [torch.empty_like(p, dtype=self.stat) if want and p is not None else None
                       for p, want in zip(params, want_params)]
        for (columns, _, _), grad_weight in zip(self.heads[-1:] if self.efficient else self.heads, grad_params):
            if grad_weight is not None:  # columns of a wider weight that no product reads
                grad_weight[:, columns.stop:].zero_()
        return grad_inputs, grad_params


def _softmax_(sources: Sequence[torch.Tensor], scores: torch.Tensor, log_norm: bool = True) -> torch.Tensor | None:
    """scores <- the softmax over labels of the sources (each (dims, rows, labels), stacked along dims) in torch's
    fused softmax (one pass per row, in place when a source is scores' own memory). Returns each row's
    log-sum-exp (num_dims, rows): the largest logit minus the log of the largest probability (1 / sum of exps)."""
    sources = [source for source in sources if source.shape[0]]
    if log_norm:
        row_max = torch.cat([source.amax(dim=2) for source in sources]).to(scores.dtype)
    offset = 0
    for source in sources:
        torch.softmax(source, 2, dtype=scores.dtype, out=scores[offset : offset + source.shape[0]])
        offset += source.shape[0]
    return row_max - torch.log(scores.amax(dim=2)) if log_norm else None


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


def _one_pass(problem: _Problem, want_inputs: bool, want_params: Sequence[bool]):
    """Loss, per-dim losses, logits and (for an upstream gradient of 1) the wanted gradients, row chunk by row
    chunk: every label is in each chunk, so its softmax is final and its gradients are computed right away."""
    inputs, stat = problem.inputs, problem.stat
    num_dims, (batch, num_labels) = len(problem.dims), (inputs.shape[0], problem.num_labels)
    every_label = slice(0, num_labels)
    num_chunks = -(-batch * num_dims * num_labels // (ROW_CHUNK_ELEMENTS[problem.efficient] * kernel_threads(inputs)))
    rows_per_chunk = -(-batch // num_chunks)  # chunks of equal size, rounded up to a multiple of 32 rows for BLAS
    if rows_per_chunk > 32:
        rows_per_chunk = min(batch, -(-rows_per_chunk // 32) * 32)
    logits = inputs.new_empty(batch, num_labels)
    log_norm, target = (torch.zeros(num_dims, batch, dtype=stat, device=inputs.device) for _ in range(2))
    logit_sum = torch.zeros_like(log_norm) if problem.label_smoothing else None
    want_any = want_inputs or any(want_params)
    grad_inputs, grad_params = problem.empty_grads(want_inputs, want_params)
    views = problem.grad_views(grad_inputs, grad_params)
    scale = (problem.loss_weights / problem.count).unsqueeze(1) * problem.valid.to(stat)
    # The largest dim's products go straight into `logits`; the others' into the first slots of `scores` (or of
    # `buffer` in the products' dtype, when it is not the statistics' one), whose softmax is then taken in place.
    # Flat buffers, so that a short last chunk gets contiguous (num_dims, rows, labels) views too.
    flat_scores = torch.empty(num_dims * rows_per_chunk * num_labels, dtype=stat, device=inputs.device)
    flat_buffer = flat_scores if inputs.dtype == stat else inputs.new_empty(flat_scores.shape)
    for start in range(0, batch, rows_per_chunk):
        rows = slice(start, min(start + rows_per_chunk, batch))
        size = rows.stop - start
        scores = flat_scores[: num_dims * size * num_labels].view(num_dims, size, num_labels)
        buffer = flat_buffer[: num_dims * size * num_labels].view(num_dims, size, num_labels)
        products, chunk_logits = buffer[: num_dims - 1], logits[rows]
        problem.logits(rows, every_label, [*products, chunk_logits])
        targets = _targets(problem.labels[rows], problem.valid[rows], 0, num_labels)
        target_rows, target_columns = targets
        target[:, start + target_rows] = torch.cat([products[:, target_rows, target_columns],
                                                    chunk_logits[target_rows, target_columns].unsqueeze(0)]).to(stat)
        if logit_sum is not None:
            logit_sum[:, rows] = torch.cat([products.sum(dim=2, dtype=stat), chunk_logits.sum(dim=1, dtype=stat)[None]])
        log_norm[:, rows] = _softmax_([products, chunk_logits[None]], scores)
        if not want_any:
            continue
        chunk_scale = scale[:, rows]
        grads = problem.softmax_grads(scores.mul_(chunk_scale.unsqueeze(2)), chunk_scale, targets)
        problem.fold(grads)
        if grads.dtype != inputs.dtype:
            grads = buffer.copy_(grads)
        problem.accumulate_grads(grads, rows, every_label, *views, first_labels=True, first_rows=start == 0)
    loss, per_dim = _loss(problem, log_norm, target, logit_sum)
    return loss, per_dim, logits, (grad_inputs, grad_params)


def _two_pass_forward(problem: _Problem):
    """Loss, per-dim losses, the log-sum-exp per dim and row overall and per chunk of labels, and the kept logits
    of the largest dims: the full-dim `logits` (batch, labels) and the others chunk by chunk (`_kept_chunk`)."""
    inputs, stat = problem.inputs, problem.stat
    num_dims, (batch, num_labels) = len(problem.dims), (inputs.shape[0], problem.num_labels)
    num_kept = min(_NUM_KEPT[problem.efficient], num_dims)
    num_free, every_row = num_dims - num_kept, slice(0, batch)
    logits, kept = inputs.new_empty(batch, num_labels), inputs.new_empty((num_kept - 1) * batch * num_labels)
    log_norm = torch.full((num_dims, batch), float("-inf"), dtype=stat, device=inputs.device)
    target = torch.zeros(num_dims, batch, dtype=stat, device=inputs.device)
    logit_sum = torch.zeros_like(target) if problem.label_smoothing else None
    chunk_log_norms = []
    for labels, products, scores in _label_chunks(problem):
        # The kept dims' products go straight into `kept` and `logits`.
        free, chunk_logits = products[:num_free], logits[:, labels]
        kept_chunk = _kept_chunk(kept, num_kept - 1, batch, labels)
        problem.logits(every_row, labels, [*free, *kept_chunk, chunk_logits])
        target_rows, target_columns = _targets(problem.labels, problem.valid, labels.start, labels.stop)
        target[:, target_rows] = torch.cat([free[:, target_rows, target_columns],
                                            kept_chunk[:, target_rows, target_columns],
                                            chunk_logits[None, target_rows, target_columns]]).to(stat)
        if logit_sum is not None:
            logit_sum += torch.cat([free.sum(dim=2, dtype=stat), kept_chunk.sum(dim=2, dtype=stat),
                                    chunk_logits.sum(dim=1, dtype=stat)[None]])
        chunk_log_norms.append(_softmax_([free, kept_chunk, chunk_logits[None]], scores))
        torch.logaddexp(log_norm, chunk_log_norms[-1], out=log_norm)
    loss, per_dim = _loss(problem, log_norm, target, logit_sum)
    return loss, per_dim, log_norm, torch.stack(chunk_log_norms), kept, logits


def _kept_chunk(kept: torch.Tensor, num_kept: int, batch: int, labels: slice) -> torch.Tensor:
    """The (num_kept, batch, chunk) logits of a chunk of labels, contiguous: `kept` is stored chunk after chunk (a
    softmax over a strided (batch, labels) view would copy it first)."""
    per_label = num_kept * batch
    return kept[per_label * labels.start : per_label * labels.stop].view(num_kept, batch, labels.stop - labels.start)


def _two_pass_backward(problem: _Problem, log_norm, chunk_log_norms, kept, logits, scale, grad_logits, want_inputs,
                       want_params):
    inputs = problem.inputs
    batch = inputs.shape[0]
    num_kept = min(_NUM_KEPT[problem.efficient], len(problem.dims))
    num_free, every_row = len(problem.dims) - num_kept, slice(0, batch)
    grad_inputs, grad_params = problem.empty_grads(want_inputs, want_params)
    views = problem.grad_views(grad_inputs, grad_params)
    # A chunk's softmax times exp(its log-sum-exp - the overall one) is the softmax over every label; times the
    # scale (which may be negative or zero) in the same multiplication.
    factors = torch.exp(chunk_log_norms - log_norm) * scale
    for index, (labels, products, grads) in enumerate(_label_chunks(problem)):
        free = products[:num_free]
        problem.logits(every_row, labels, list(free))
        _softmax_([free, _kept_chunk(kept, num_kept - 1, batch, labels), logits[None, :, labels]], grads,
                  log_norm=False)
        targets = _targets(problem.labels, problem.valid, labels.start, labels.stop)
        problem.softmax_grads(grads.mul_(factors[index].unsqueeze(2)), scale, targets)
        if grad_logits is not None:
            grads[-1].add_(grad_logits[:, labels])
        problem.fold(grads)
        if grads is not products:
            grads = products.copy_(grads)
        problem.accumulate_grads(grads, every_row, labels, *views, first_labels=index == 0, first_rows=True)
    return grad_inputs, grad_params


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
        ctx.kernel_device = inputs.device
        with threads_within_cpus(inputs.device):
            return _NestedLinearCrossEntropyFunction._forward(ctx, inputs, labels, settings, *params)

    @staticmethod
    def backward(ctx, grad_loss, _grad_per_dim, grad_logits):
        with threads_within_cpus(ctx.kernel_device):
            return _NestedLinearCrossEntropyFunction._backward(ctx, grad_loss, grad_logits)

    @staticmethod
    def _forward(ctx, inputs, labels, settings, *params):
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
            loss, per_dim, log_norm, chunk_log_norms, kept, logits = _two_pass_forward(problem)
            ctx.one_pass = False
            ctx.save_for_backward(inputs, labels, log_norm, chunk_log_norms, kept, logits, *params)
        ctx.mark_non_differentiable(per_dim)
        return loss, per_dim, logits

    @staticmethod
    def _backward(ctx, grad_loss, grad_logits):
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
            if bool(grad_loss != 1):  # the usual upstream gradient of a loss is 1: nothing to scale
                for grad in [grad_inputs, *grad_params]:
                    if grad is not None:
                        grad.mul_(grad_loss.to(grad.dtype))
            if grad_logits is not None:
                _add_full_dim_logits_grad(problem, grad_logits, grad_inputs, grad_params)
        else:
            log_norm, chunk_log_norms, kept, logits = saved[2:6]
            scale = (grad_loss.to(problem.stat) * problem.loss_weights / problem.count).unsqueeze(1)
            scale = scale * problem.valid.to(problem.stat)
            grad_inputs, grad_params = _two_pass_backward(problem, log_norm, chunk_log_norms, kept, logits, scale,
                                                          grad_logits, want_inputs, want_params)
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
    chunk_size: int | None = None,
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
        chunk_size: labels per chunk (default: `DEFAULT_CHUNK_SIZE` times torch's CPU threads on a CPU); with at
            most this many labels, the gradients are computed in the forward pass (a second backward through the
            same graph is then refused).

    Returns the loss and per-dim losses in float32 (float64 for float64 inputs) and the full-dim logits in the
    products' dtype. Under autocast the products run in the autocast dtype; softmax statistics stay float32.
    """
    efficient = isinstance(weight, torch.Tensor)
    weights = [weight] if efficient else list(weight)
    biases = [bias] if efficient else (list(bias) if bias is not None else [None] * len(weights))
    if (isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence) or not dims
            or not all(is_int(dim) and dim > 0 for dim in dims) or list(dims) != sorted(set(dims))):
        raise ValueError(f"`dims` must be positive integers in ascending order (each head reads the first d features, "
                         f"and each dim's head nests inside the next), got {dims!r}.")
    dims = tuple(dims)
    if not efficient and not len(weights) == len(biases) == len(dims):
        raise ValueError(f"MRL heads need one weight and one bias per dim: {len(dims)} dims, got {len(weights)} weights "
                         f"and {len(biases)} biases.")
    loss_weights = validate_matryoshka_weights(loss_weights, len(dims), "loss_weights")
    for index, head_weight in enumerate(weights):
        name, width = ("weight", dims[-1]) if efficient else (f"weight[{index}]", dims[index])
        check_tensor(head_weight, name, 2, f"(num_labels, {width})", "float")
        if head_weight.shape[1] < width or head_weight.shape[0] != weights[0].shape[0]:
            raise ValueError(f"`{name}` must be a ({weights[0].shape[0]}, {width}) matrix (num_labels, features read at "
                             f"its dim; wider is allowed), got shape {tuple(head_weight.shape)}.")
    for index, head_bias in enumerate(biases):
        name = "bias" if efficient else f"bias[{index}]"
        if head_bias is not None:
            check_tensor(head_bias, name, 1, "(num_labels,)", "float")
            if head_bias.shape[0] != weights[0].shape[0]:
                raise ValueError(f"`{name}` must have shape ({weights[0].shape[0]},) (one value per label, as the "
                                 f"weight's rows), got {tuple(head_bias.shape)}.")
    check_tensor(inputs, "inputs", 2, "(batch, features)", "float")
    check_head_inputs(inputs, dims)
    check_class_labels(labels, inputs.shape[0], weights[0].shape[0], ignore_index)
    if chunk_size is None:
        chunk_size = DEFAULT_CHUNK_SIZE * kernel_threads(inputs)
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
