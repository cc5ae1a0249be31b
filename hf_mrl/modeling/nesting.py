"""Shared Matryoshka primitives: nesting dims, their validation, truncate + renormalise,
and the nested (MRL / MRL-E) linear heads.

Everything that works "at every granularity" goes through these functions, so the rules
(truncate first, then L2-normalise; dims strictly inside the embedding) live in one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_bool, check_number, is_int

__all__ = [
    "default_matryoshka_dims",
    "resolve_dims",
    "validate_eval_dims",
    "validate_matryoshka_dims",
    "validate_matryoshka_weights",
    "MATRYOSHKA_WEIGHT_PRESETS",
    "matryoshka_weights_preset",
    "validate_dim",
    "check_head_inputs",
    "truncate_embeddings",
    "block_bounds",
    "default_direct_dims",
    "NestedLinear",
    "check_saved_head_shapes",
]


def default_matryoshka_dims(embedding_dim: int) -> list[int]:
    """Powers of two from 8 up to `embedding_dim`, with `embedding_dim` itself always included."""
    dims = []
    dim = 8
    while dim < embedding_dim:
        dims.append(dim)
        dim *= 2
    dims.append(embedding_dim)
    return dims


def _full_and_nesting_dims(source) -> tuple[int | None, list[int] | None]:
    if isinstance(source, Mapping):  # precomputed {dim: (n, dim)} embeddings: their dims are all there is
        return None, sorted(source)
    if is_int(source):
        return int(source), None
    config = getattr(source, "config", source)
    if hasattr(config, "embedding_dim") or hasattr(config, "projection_dim"):
        full = getattr(config, "projection_dim", None) or getattr(config, "embedding_dim", None)
        return full, getattr(config, "matryoshka_dims", None)
    if hasattr(source, "shape") or isinstance(source, (list, tuple)):  # (n, d) embeddings
        return int(np.asarray(source).shape[-1]), None
    return None, getattr(config, "matryoshka_dims", None)


def resolve_dims(source, dims=None, *, nesting_dims=None, name: str = "dims") -> list[int]:
    """Which dims to score, index or document: the one rule every part of hf_mrl uses.

    `source`: a model, its config, the full embedding dim (an int), (n, d) embeddings, or precomputed per-dim
    embeddings `{dim: (n, dim)}`. The full dim is a config's `projection_dim` (dual encoder) or `embedding_dim`.

    1. `dims` given: checked (distinct integers from 1 to the full dim, see `validate_eval_dims`), ascending.
    2. Otherwise the nesting dims (`nesting_dims`, else the config's `matryoshka_dims`; a mapping's own dims) when
       there are two or more (a mapping's, however many).
    3. Otherwise (no nesting dims, or one: a fixed-feature or non-MRL model, raw embeddings)
       `default_matryoshka_dims(full dim)`: the powers of two from 8 below the full dim, and the full dim, the
       truncations a non-MRL baseline is scored at.
    """
    full, own_nesting_dims = _full_and_nesting_dims(source)
    if dims is not None:
        return validate_eval_dims(list(dims) if isinstance(dims, (tuple, range)) else dims, full, name=name)
    if isinstance(source, Mapping):
        return own_nesting_dims
    nesting_dims = own_nesting_dims if nesting_dims is None else nesting_dims
    if nesting_dims is not None and len(nesting_dims) > 1:
        return sorted(nesting_dims)
    if full is None:
        raise ValueError(f"`{name}` must be given for a model whose config has no `embedding_dim`.")
    return default_matryoshka_dims(full)


def validate_eval_dims(dims, embedding_dim: int | None, name: str = "dims") -> list[int]:
    """Evaluation dims: distinct integers from 1 to `embedding_dim` (any, not only nesting dims; no upper
    bound when None), ascending."""
    if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence) or len(dims) == 0:
        raise ValueError(f"`{name}` must be a non-empty list of integers, got {dims!r}.")
    for dim in dims:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"`{name}` must hold positive integers, got {dim!r} in {list(dims)!r}.")
    checked = [validate_dim(dim, embedding_dim, name=name) for dim in dims] if embedding_dim else list(dims)
    if len(set(checked)) != len(checked):
        raise ValueError(f"`{name}` holds duplicates in {list(dims)!r}; each dim must appear once.")
    return sorted(checked)


def validate_matryoshka_dims(dims, embedding_dim: int, name: str = "matryoshka_dims") -> list[int]:
    """Checks nesting dims and returns them sorted ascending.

    Raises `ValueError` naming `name`, the offending value and what is allowed.
    """
    if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence) or len(dims) == 0:
        raise ValueError(f"`{name}` must be a non-empty list of positive integers, got {dims!r}.")
    for dim in dims:
        if not is_int(dim) or dim <= 0:
            raise ValueError(
                f"`{name}` must hold positive integers, got {dim!r} in {list(dims)!r}."
            )
        if dim > embedding_dim:
            raise ValueError(
                f"`{name}` holds {dim}, above the embedding dim {embedding_dim}; "
                f"allowed: integers from 1 to {embedding_dim}."
            )
    duplicates = sorted({dim for dim in dims if list(dims).count(dim) > 1})
    if duplicates:
        raise ValueError(f"`{name}` holds duplicate dims {duplicates} in {list(dims)!r}; each dim must appear once.")
    return sorted(dims)


def validate_matryoshka_weights(weights, num_dims: int, name: str = "matryoshka_weights") -> list[float]:
    """Checks per-dim loss weights: `num_dims` finite non-negative numbers, not all zero."""
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise ValueError(f"`{name}` must be a list of {num_dims} non-negative numbers, got {weights!r}.")
    if len(weights) != num_dims:
        raise ValueError(
            f"`{name}` has {len(weights)} entries ({list(weights)!r}) but there are {num_dims} matryoshka dims; "
            "give one weight per dim."
        )
    for weight in weights:
        try:
            check_number(weight, name, 0)
        except ValueError:
            raise ValueError(f"`{name}` must hold finite numbers >= 0, got {weight!r} in {list(weights)!r}.") from None
    if all(weight == 0 for weight in weights):
        raise ValueError(f"`{name}` are all zero ({list(weights)!r}); at least one weight must be > 0.")
    return [float(weight) for weight in weights]


# Named loss weightings: {dim: weight}, every other nesting dim 1.0. The "paper_" ones are the MRL paper's
# ablation of relative weights (the 8-d loss boosted 2x, then also the 16-d loss 1.5x).
MATRYOSHKA_WEIGHT_PRESETS: dict[str, dict[int, float]] = {
    "uniform": {},
    "paper_8x2": {8: 2.0},
    "paper_8x2_16x1.5": {8: 2.0, 16: 1.5},
}


def matryoshka_weights_preset(preset: str, dims: Sequence[int], name: str = "matryoshka_weights") -> list[float]:
    """The weights of a named preset (`MATRYOSHKA_WEIGHT_PRESETS`) for nesting `dims`, in the order given."""
    if preset not in MATRYOSHKA_WEIGHT_PRESETS:
        raise ValueError(
            f"`{name}` {preset!r} is not a preset; allowed: {list(MATRYOSHKA_WEIGHT_PRESETS)} or one number per dim."
        )
    boosted = MATRYOSHKA_WEIGHT_PRESETS[preset]
    missing = sorted(set(boosted) - set(dims))
    if missing:
        raise ValueError(
            f"`{name}` preset {preset!r} weights dims {missing}, which are not among the nesting dims {list(dims)}."
        )
    return [float(boosted.get(dim, 1.0)) for dim in dims]


def validate_dim(dim, embedding_dim: int, name: str = "dim") -> int:
    """Checks a truncation dim: an integer from 1 to `embedding_dim` (None means the full dim)."""
    if dim is None:
        return embedding_dim
    if not is_int(dim) or not 1 <= dim <= embedding_dim:
        raise ValueError(f"`{name}` must be an integer from 1 to {embedding_dim} (the embedding dim), got {dim!r}.")
    return dim


def truncate_embeddings(embeddings: torch.Tensor, dim: int | None = None, normalize: bool = True) -> torch.Tensor:
    """The first `dim` features of each embedding, L2-renormalised AFTER truncation when `normalize`."""
    check_bool(normalize, "normalize")
    dim = validate_dim(dim, embeddings.shape[-1])
    truncated = embeddings[..., :dim]
    return F.normalize(truncated, p=2, dim=-1) if normalize else truncated


def check_head_inputs(inputs, dims: Sequence[int], name: str = "inputs") -> None:
    """Embeddings nested heads read: a tensor at least as wide as the largest nesting dim."""
    if not isinstance(inputs, torch.Tensor) or inputs.ndim == 0:
        raise ValueError(f"`{name}` must be a tensor (..., features), got {type(inputs).__name__}.")
    if inputs.shape[-1] < dims[-1]:
        raise ValueError(
            f"`{name}` has {inputs.shape[-1]} features; the heads read the first {dims[-1]} (the largest nesting dim), "
            f"so it needs at least {dims[-1]}."
        )


def block_bounds(dims: Sequence[int]) -> list[tuple[int, int]]:
    """`[(0, d1), (d1, d2), ...]`: the slice of new features each nesting dim adds."""
    starts = [0, *dims[:-1]]
    return list(zip(starts, dims))


def default_direct_dims(dims: Sequence[int]) -> int:
    """How many of the smallest nesting dims MRL-E computes directly rather than by running sum.

    A running-sum step costs a full pass over a (batch, labels) tensor, while a direct head at dim d costs
    d extra multiply-adds per logit: cheaper for tiny d, where the matmul is memory-bound anyway.
    """
    return sum(1 for dim in dims[:-1] if dim <= dims[-1] // 32)


class _EfficientNestedLinearFunction(torch.autograd.Function):
    """MRL-E logits at every nesting dim for about the cost of one full-dim matmul.

    Logits at dim d_j = sum over blocks i <= j of x[:, block_i] @ W[:, block_i].T, so each block's
    product is computed once and accumulated (a running sum, written straight into the output).
    The backward pass mirrors it with a reverse running sum of the incoming gradients. The
    `num_direct` smallest dims are computed directly (x[:, :d] @ W[:, :d].T), which saves passes
    over the large logit tensors when there are many labels.
    """

    @staticmethod
    def forward(ctx, inputs, weight, bias, dims, num_direct):
        out = inputs.new_empty(len(dims), inputs.shape[0], weight.shape[0])
        bias_rows = bias.expand(inputs.shape[0], -1) if bias is not None else None
        for index in range(num_direct):
            _matmul_into(out[index], bias_rows, inputs[:, : dims[index]], weight[:, : dims[index]].t())
        previous, start = bias_rows, 0
        for index in range(num_direct, len(dims)):
            end = dims[index]
            _matmul_into(out[index], previous, inputs[:, start:end], weight[:, start:end].t())
            previous, start = out[index], end
        ctx.save_for_backward(inputs, weight)
        ctx.dims, ctx.num_direct, ctx.has_bias = tuple(dims), num_direct, bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out):
        inputs, weight = ctx.saved_tensors
        dims, num_direct = ctx.dims, ctx.num_direct
        # Gradients are written block by block straight into column slices of tensors in the parameters'
        # own layout (BLAS takes the row stride), so autograd accumulates them without a copy. The blocks
        # cover columns [0, dims[-1]) whenever one dim takes the running sum; only the rest needs zeros.
        covered = dims[-1] if num_direct < len(dims) else 0
        grad_inputs = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_inputs = torch.empty_like(inputs)
            grad_inputs[:, covered:].zero_()
        if ctx.needs_input_grad[1]:
            grad_weight = torch.empty_like(weight)
            grad_weight[:, covered:].zero_()
        # Block i feeds the logits of every dim j >= i: its gradient is the sum of those.
        running = None
        for index in reversed(range(num_direct, len(dims))):
            running = grad_out[index].clone() if running is None else running.add_(grad_out[index])
            start = dims[index - 1] if index > num_direct else 0
            end = dims[index]
            if grad_inputs is not None:
                torch.mm(running, weight[:, start:end], out=grad_inputs[:, start:end])
            if grad_weight is not None:
                torch.mm(running.t(), inputs[:, start:end], out=grad_weight[:, start:end])
        for index in range(num_direct):
            grad, dim = grad_out[index], dims[index]
            if grad_inputs is not None:
                grad_inputs[:, :dim].addmm_(grad, weight[:, :dim])
            if grad_weight is not None:
                grad_weight[:, :dim].addmm_(grad.t(), inputs[:, :dim])
        grad_bias = None
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out[:num_direct].sum(dim=(0, 1))
            if running is not None:
                grad_bias = grad_bias + running.sum(0)
        return grad_inputs, grad_weight, grad_bias, None, None


def _matmul_into(out: torch.Tensor, addend: torch.Tensor | None, left: torch.Tensor, right: torch.Tensor) -> None:
    if addend is None:
        torch.mm(left, right, out=out)
    else:
        torch.addmm(addend, left, right, out=out)


class _SeparateNestedLinearFunction(torch.autograd.Function):
    """MRL logits: one head per nesting dim, each reading the first d_j features, written into
    one preallocated (num_dims, batch, labels) tensor instead of stacking per-head outputs."""

    @staticmethod
    def forward(ctx, inputs, dims, *params):
        weights, biases = params[0::2], params[1::2]
        out = inputs.new_empty(len(dims), inputs.shape[0], weights[0].shape[0])
        for index, (dim, weight, bias) in enumerate(zip(dims, weights, biases)):
            torch.addmm(bias, inputs[:, :dim], weight.t(), out=out[index])
        ctx.save_for_backward(inputs, *weights)
        ctx.dims = tuple(dims)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        inputs, *weights = ctx.saved_tensors
        grad_inputs = torch.zeros_like(inputs) if ctx.needs_input_grad[0] else None
        grads = []
        for index, (dim, weight) in enumerate(zip(ctx.dims, weights)):
            grad = grad_out[index]
            if grad_inputs is not None:
                grad_inputs[:, :dim].addmm_(grad, weight)
            grads.append(grad.t().mm(inputs[:, :dim]) if ctx.needs_input_grad[2 + 2 * index] else None)
            grads.append(grad.sum(0) if ctx.needs_input_grad[3 + 2 * index] else None)
        return grad_inputs, None, *grads


def check_saved_head_shapes(shapes: dict, dims: Sequence[int], out_features: int, efficient: bool, source) -> None:
    """Checks the saved weights of `NestedLinear` heads (`shapes`: parameter name relative to the module -> shape)
    against the config that would build them, so no head's weights are dropped or reinitialised on load. Raises
    `ValueError` naming the config field (`efficient`, `matryoshka_dims`, `num_labels`), its value and what the
    weights in `source` hold. No saved heads (an embedding model's weights) pass: the heads start fresh."""
    weights = {name: shape for name, shape in shapes.items() if name.endswith("weight")}
    if not weights:
        return
    saved_efficient = "classifier.weight" in weights
    if saved_efficient != efficient:
        layout = "one shared matrix (MRL-E)" if saved_efficient else "one head per nesting dim (MRL)"
        raise ValueError(
            f"The config says `efficient={efficient}`, but the weights in {source} hold {layout}; "
            f"set `efficient={saved_efficient}` to load them."
        )
    if saved_efficient:
        saved_dims, rows = None, {weights["classifier.weight"][0]}
        if weights["classifier.weight"][1] != dims[-1]:
            saved_dims = f"a shared head over {weights['classifier.weight'][1]} features"
    else:
        heads = sorted((int(name.split(".")[1]), shape) for name, shape in weights.items() if name.startswith("heads."))
        rows = {shape[0] for _, shape in heads}
        held = [shape[1] for _, shape in heads]
        saved_dims = f"heads at dims {held}" if held != list(dims) else None
    if saved_dims is not None:
        raise ValueError(
            f"The config's `matryoshka_dims` is {list(dims)}, but the weights in {source} hold {saved_dims}; "
            "loading would drop or reinitialise heads. Load with the saved dims (leave `matryoshka_dims` unset and "
            "use the folder's config.json)."
        )
    if rows != {out_features}:
        raise ValueError(
            f"The config's `num_labels` is {out_features}, but the heads in {source} have {sorted(rows)} outputs; "
            "load with the saved `num_labels`."
        )


class NestedLinear(nn.Module):
    """Linear classifiers over the first d dims of an embedding, for every nesting dim d.

    `efficient=False` (MRL): one `nn.Linear(d, out_features)` per nesting dim, in `heads`.
    `efficient=True` (MRL-E): one `nn.Linear(max_dim, out_features)`, in `classifier`, whose first
    d input columns form the head at dim d.

    `forward(x)` returns logits of shape (num_dims, batch, out_features), in `dims` order.
    """

    def __init__(
        self,
        dims: Sequence[int],
        out_features: int,
        efficient: bool = False,
        bias: bool = True,
        num_direct: int | None = None,
    ):
        super().__init__()
        self.dims = validate_matryoshka_dims(list(dims), max(dims) if len(dims) else 0, name="dims")
        self.efficient = efficient
        # MRL-E only: how many of the smallest dims skip the running sum (see `default_direct_dims`).
        self.num_direct = default_direct_dims(self.dims) if num_direct is None else num_direct
        self.out_features = out_features
        if efficient:
            self.classifier = nn.Linear(self.dims[-1], out_features, bias=bias)
        else:
            self.heads = nn.ModuleList(nn.Linear(dim, out_features, bias=bias) for dim in self.dims)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        check_head_inputs(inputs, self.dims)
        leading = inputs.shape[:-1]
        flat = inputs.reshape(-1, inputs.shape[-1])
        device_type = flat.device.type
        if torch.is_autocast_enabled(device_type):
            # The fused paths write into preallocated outputs, which autocast cannot retype:
            # cast once here (differentiably) and run them with autocast off.
            dtype = torch.get_autocast_dtype(device_type)
            with torch.autocast(device_type, enabled=False):
                return self._forward(flat.to(dtype), dtype).reshape(len(self.dims), *leading, self.out_features)
        return self._forward(flat, flat.dtype).reshape(len(self.dims), *leading, self.out_features)

    def _forward(self, flat: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.efficient:
            bias = self.classifier.bias
            return _EfficientNestedLinearFunction.apply(
                flat, self.classifier.weight.to(dtype), None if bias is None else bias.to(dtype), self.dims, self.num_direct
            )
        if all(head.bias is not None for head in self.heads):
            params = [p.to(dtype) for head in self.heads for p in (head.weight, head.bias)]
            return _SeparateNestedLinearFunction.apply(flat, self.dims, *params)
        return torch.stack([head(flat[:, :dim]) for dim, head in zip(self.dims, self.heads)])

    def check_dim(self, dim) -> int:
        """Validates a head dim: MRL-E allows any dim from 1 to the full dim (its heads are slices of one
        matrix); MRL allows only its nesting dims."""
        if self.efficient:
            return validate_dim(dim, self.dims[-1])
        if not is_int(dim) or dim not in self.dims:  # an int: 8.0 == 8, but it would not slice
            raise ValueError(
                f"`dim` must be one of the nesting dims {self.dims} for separate (MRL) heads, got {dim!r}; "
                "MRL-E heads (efficient=True) accept any dim."
            )
        return int(dim)

    def logits_at(self, inputs: torch.Tensor, dim: int) -> torch.Tensor:
        """Logits of the head at `dim` alone, shape (..., out_features)."""
        dim = self.check_dim(dim)
        if self.efficient:
            return F.linear(inputs[..., :dim], self.classifier.weight[:, :dim], self.classifier.bias)
        return self.heads[self.dims.index(dim)](inputs[..., :dim])
