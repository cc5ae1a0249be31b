"""Matryoshka losses. They take tensors, not models: the models return what the losses need.

- `matryoshka_cross_entropy`: classification, one cross-entropy per nesting dim, from every dim's logits.
- `nested_linear_cross_entropy` (`fused_cross_entropy.py`): the same loss fused with the nested heads, chunked over
  the labels, never materialising every dim's logits (what the classifiers' forward uses).
- `matryoshka_contrastive_loss` (kernel in `fused_infonce.py`): CLIP / ALIGN / sentence-transformers style
  InfoNCE at every nesting dim, for about the cost of one full-dim similarity matrix; this file checks the
  arguments and arranges the batch (local, or all-gathered across processes).
- `gather_with_grad`: all-gathers features across processes with gradients, so the contrastive loss sees the
  global batch under Accelerate / torchrun (apart from the loss, as in open_clip).

Single-dot imports only: a trust_remote_code folder (`hf_mrl.hub`) copies the modeling files and what they
import relatively into one flat folder.
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

from .checks import check_class_labels, check_finite, check_group_ids, check_number, check_positive_int, check_tensor
from .fused_cross_entropy import nested_linear_cross_entropy
from .fused_infonce import _make_plan, _MatryoshkaInfoNCE
from .infonce_rows import positive_pairs, score_direction
from .nesting import default_matryoshka_dims, validate_matryoshka_dims, validate_matryoshka_weights

__all__ = [
    "matryoshka_cross_entropy",
    "nested_linear_cross_entropy",
    "MatryoshkaContrastiveOutput",
    "matryoshka_contrastive_loss",
    "gather_with_grad",
]


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


def _check_embeddings(name: str, embeds) -> None:
    if not isinstance(embeds, torch.Tensor) or embeds.ndim != 2 or not embeds.is_floating_point():
        shape = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
        raise ValueError(f"`{name}` must be a 2-D floating-point tensor (batch, embedding_dim), got {shape}.")
    if embeds.shape[0] == 0 or embeds.shape[1] == 0:
        raise ValueError(f"`{name}` is empty (shape {tuple(embeds.shape)}); the loss needs at least one pair.")


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
    negative_embeds: torch.Tensor | Sequence[torch.Tensor] | None = None,
    negative_ids: torch.Tensor | Sequence[Sequence[int]] | None = None,
    mini_batch_size: int | None = None,
) -> MatryoshkaContrastiveOutput:
    """Matryoshka InfoNCE: the contrastive loss at every nesting dim, weighted and summed.

    At each dim d the embeddings are truncated to their first d features, THEN L2-normalised; the logits
    are their cosine similarities / temperature; the loss is the cross-entropy of each image against all
    texts of the batch (row i's target: text i), and with `symmetric=True` also of each text against all
    images, the two averaged (CLIP / ALIGN). The result is `sum_k weights[k] * loss_at(dims[k])`.

    Cost: about one full-dim similarity matrix (one (B, B) matmul forward, two backward, whatever the
    number of dims), since the dot products at each dim are a running sum over blocks of dims, plus a few
    elementwise passes per dim. Memory: the gradient w.r.t. each dim's dot products is kept from forward to
    backward, except for the smallest dims (at most 1/32 of the largest), whose gradients are passed on to the
    embeddings at once: about (num_dims + 3) x B x B floats at the peak, fewer with small dims (float32, or
    float64 for float64 inputs).

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
        negative_embeds: optional hard negatives of the second tower: (batch, num_negatives, embedding_dim), or a
            list of (batch, embedding_dim) tensors (one per negative column, as sentence-transformers' `negative_1`,
            `negative_2`, ... columns). Each first-tower item is scored against every positive AND every negative of
            the batch (sentence-transformers' MultipleNegativesRankingLoss); with `symmetric=True` the second
            direction scores the positives against the first tower only (negatives have no pair of their own).
            Under `gather`, negatives are all-gathered like positives.
        negative_ids: optional (batch, num_negatives) ids of the negatives in `text_ids`' numbering: a negative
            with a positive's id is a positive of that positive's pairs (not pushed away). Needs `text_ids`.
        mini_batch_size: score this many rows of the similarity matrix at a time: the loss keeps (num_dims + 3) x
            mini_batch_size x candidates floats instead of x batch, with the same value and gradients (what a
            cached, GradCache, batch of thousands of rows needs). None: all rows at once.

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
    if mini_batch_size is not None:
        check_positive_int(mini_batch_size, "mini_batch_size")
    device = image_embeds.device
    image_ids = check_group_ids(image_ids, batch, "image_ids", device)
    text_ids = check_group_ids(text_ids, batch, "text_ids", device)
    negatives = _check_negatives(negative_embeds, batch, embedding_dim)
    negative_ids = _check_negative_ids(negative_ids, negatives, text_ids, device)
    check_finite(image_embeds, "image_embeds")
    check_finite(text_embeds, "text_embeds")
    if negatives is not None:
        check_finite(negatives, "negative_embeds")

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
    settings = _Settings(sorted_dims, sorted_weights, label_smoothing, symmetric, mini_batch_size)
    with torch.autocast(device.type, enabled=False):
        images, texts = image_embeds.to(dtype), text_embeds.to(dtype)
        negatives = None if negatives is None else negatives.to(dtype)
        if world == 1 and negatives is None and mini_batch_size is None:
            total, per_dim = _local_loss(
                images, texts, scale, sorted_dims, sorted_weights, label_smoothing, symmetric, image_ids, text_ids
            )
        elif world == 1:
            total, per_dim = _directional_loss(images, texts, negatives, scale, settings, image_ids, text_ids,
                                               negative_ids)
        else:
            total, per_dim = _gathered_loss(images, texts, negatives, scale, settings, image_ids, text_ids,
                                            negative_ids, gather, world)
    inverse = torch.empty(len(order), dtype=torch.long, device=per_dim.device)
    inverse[torch.tensor(order, device=per_dim.device)] = torch.arange(len(order), device=per_dim.device)
    return MatryoshkaContrastiveOutput(loss=total, per_dim_losses=per_dim[inverse].detach())


def _needs_grad(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(tensor.requires_grad for tensor in tensors)


def _local_loss(images, texts, scale, dims, weights, smoothing, symmetric, image_ids, text_ids):
    batch = images.shape[0]
    coef = 0.5 / batch if symmetric else 1.0 / batch
    positives = positive_pairs(image_ids, text_ids, batch, batch, images.device)
    plan = _make_plan(
        dims, weights, coef, coef if symmetric else 0.0, 0, positives, smoothing, (batch, batch), images.dtype
    )
    return _MatryoshkaInfoNCE.apply(images, texts, scale, plan, _needs_grad(images, texts, scale))


@dataclass(frozen=True)
class _Settings:
    dims: tuple[int, ...]
    weights: tuple[float, ...]
    smoothing: float
    symmetric: bool
    block_rows: int | None


def _check_negatives(negative_embeds, batch: int, embedding_dim: int) -> torch.Tensor | None:
    """Hard negatives as one (batch, num_negatives, embedding_dim) tensor."""
    if negative_embeds is None:
        return None
    if isinstance(negative_embeds, torch.Tensor) and negative_embeds.ndim == 2:
        negative_embeds = negative_embeds[:, None]
    elif not isinstance(negative_embeds, torch.Tensor):
        columns = list(negative_embeds)
        for index, column in enumerate(columns):
            _check_embeddings(f"negative_embeds[{index}]", column)
        if not columns:
            return None
        if len({tuple(column.shape) for column in columns}) != 1:
            shapes = [tuple(column.shape) for column in columns]
            raise ValueError(f"`negative_embeds` columns must share one shape (batch, embedding_dim), got {shapes}.")
        negative_embeds = torch.stack(columns, dim=1)
    allowed = f"(batch={batch}, num_negatives, embedding_dim={embedding_dim})"
    if negative_embeds.ndim != 3 or not negative_embeds.is_floating_point():
        raise ValueError(f"`negative_embeds` must be a floating-point tensor {allowed}, got {tuple(negative_embeds.shape)}.")
    if negative_embeds.shape[0] != batch or negative_embeds.shape[2] != embedding_dim or negative_embeds.shape[1] == 0:
        raise ValueError(f"`negative_embeds` must have shape {allowed}, got {tuple(negative_embeds.shape)}.")
    return negative_embeds


def _check_negative_ids(negative_ids, negatives, text_ids, device) -> torch.Tensor | None:
    if negative_ids is None:
        return None
    if negatives is None:
        raise ValueError("`negative_ids` needs `negative_embeds`: they number the hard negatives.")
    if text_ids is None:
        raise ValueError("`negative_ids` needs `text_ids`: negatives are numbered in the positives' ids.")
    batch, count = negatives.shape[:2]
    ids = check_group_ids(torch.as_tensor(negative_ids, device=device).reshape(-1), batch * count, "negative_ids",
                          device)
    return ids.reshape(batch, count)


def _candidates(texts, negatives, text_ids, negative_ids):
    """The candidates of the first tower's items: every positive, then each negative column's rows (as
    sentence-transformers orders them), with their ids (None without `text_ids`)."""
    if negatives is None:
        return texts, text_ids
    columns = negatives.transpose(0, 1).reshape(-1, texts.shape[1])
    ids = None
    if text_ids is not None and negative_ids is not None:
        ids = torch.cat([text_ids, negative_ids.t().reshape(-1)])
    elif text_ids is not None:  # negatives without ids are distinct from everything
        ids = torch.cat([text_ids, torch.arange(columns.shape[0], device=text_ids.device) + int(text_ids.max()) + 1])
    return torch.cat([texts, columns]), ids


def _score(queries, candidates, scale, settings: _Settings, coef: float, offset: int, positives):
    return score_direction(queries, candidates, scale, settings.dims, settings.weights, coef, offset, positives,
                           settings.smoothing, settings.block_rows, _needs_grad(queries, candidates, scale))


def _both_directions(images, texts, all_images, all_texts, negatives, scale, settings: _Settings, image_ids,
                     text_ids, negative_ids, offset: int, coef: float):
    """This process's rows (`images`, `texts`, at `offset` in the global batch) scored against every candidate
    (`all_texts`, then the hard negatives) and, symmetric, its positives against every first-tower item."""
    candidates, candidate_ids = _candidates(all_texts, negatives, text_ids, negative_ids)
    total_batch = all_images.shape[0]
    positives = positive_pairs(image_ids, candidate_ids, total_batch, candidates.shape[0], images.device)
    mine = slice(offset, offset + images.shape[0])
    total, per_dim = _score(images, candidates, scale, settings, coef, offset,
                            None if positives is None else positives[mine])
    if settings.symmetric:
        back = None if positives is None else positives[:, :total_batch][:, mine].t()
        total_back, per_dim_back = _score(texts, all_images, scale, settings, coef, offset, back)
        total, per_dim = total + total_back, per_dim + per_dim_back
    return total, per_dim


def _directional_loss(images, texts, negatives, scale, settings: _Settings, image_ids, text_ids, negative_ids):
    """One process, with hard negatives or in row blocks: each direction is one kernel call."""
    coef = (0.5 if settings.symmetric else 1.0) / images.shape[0]
    return _both_directions(images, texts, images, texts, negatives, scale, settings, image_ids, text_ids,
                            negative_ids, 0, coef)


def _gathered_loss(images, texts, negatives, scale, settings: _Settings, image_ids, text_ids, negative_ids, gather,
                   world):
    """Each process scores its own images against all candidates (and its own texts against all images): the
    union over processes is the global batch's loss, each row computed once."""
    batch, embedding_dim = images.shape
    parts = [images, texts] if negatives is None else [images, texts, negatives.reshape(batch, -1)]
    both = torch.cat(parts, dim=1)  # one collective for both towers and the negatives
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

    all_images, all_texts = gathered[:, :embedding_dim], gathered[:, embedding_dim : 2 * embedding_dim]
    all_negatives = None if negatives is None else gathered[:, 2 * embedding_dim :].reshape(
        gathered.shape[0], -1, embedding_dim)
    all_image_ids = None if image_ids is None else gather_ids(image_ids)
    all_text_ids = None if text_ids is None else gather_ids(text_ids)
    all_negative_ids = None if negative_ids is None else gather_ids(negative_ids)
    # world x this process's share (see gather_with_grad): DDP's average then gives the global gradient.
    coef = world * (0.5 if settings.symmetric else 1.0) / gathered.shape[0]
    share, per_dim_share = _both_directions(images, texts, all_images, all_texts, all_negatives, scale, settings,
                                            all_image_ids, all_text_ids, all_negative_ids, offset, coef)
    # Report the global-batch values on every process; the gradient stays that of this process's share.
    values = torch.cat([share.detach().reshape(1), per_dim_share]) / world
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return share + (values[0] - share).detach(), values[1:]


def matryoshka_cross_entropy(
    matryoshka_logits: torch.Tensor,
    labels: torch.Tensor,
    weights: Sequence[float],
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted sum over nesting dims of the cross-entropy of each dim's logits.

    Args:
        matryoshka_logits: (num_dims, batch, num_labels) logits, one slice per nesting dim.
        labels: (batch,) class ids (-100 leaves a row out, as in `F.cross_entropy`).
        weights: one relative weight per nesting dim (finite, >= 0, not all zero).

    Returns:
        (loss, per_dim_losses): the weighted scalar loss, and the (num_dims,) unweighted losses (detached).
    """
    check_tensor(matryoshka_logits, "matryoshka_logits", 3, "(num_dims, batch, num_labels)", "float")
    num_dims, batch, num_labels = matryoshka_logits.shape
    weights = validate_matryoshka_weights(weights, num_dims, "weights")
    check_class_labels(labels, batch, num_labels)
    check_number(label_smoothing, "label_smoothing", 0, 1)
    check_finite(matryoshka_logits, "matryoshka_logits")
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
