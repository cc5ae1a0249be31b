"""Reference oracles the tests hold the fast paths to: naive per-dim loops, never used by the library itself
(and never shipped with a checkpoint). `matryoshka_contrastive_loss_reference` for the fused contrastive loss,
`nested_linear_reference` for the nested heads."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .modeling.losses import MatryoshkaContrastiveOutput
from .modeling.nesting import NestedLinear


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
    negative_embeds: torch.Tensor | None = None,
    negative_ids: torch.Tensor | None = None,
) -> MatryoshkaContrastiveOutput:
    """The naive per-dim loop (truncate, `F.normalize`, full matmul, cross-entropy at every dim) that the
    fused `matryoshka_contrastive_loss` is tested against; same arguments, no checks, no gather. Hard negatives
    (batch, n, D) are extra candidates of the first direction, after the positives, column by column."""
    batch = image_embeds.shape[0]
    candidates, candidate_ids = text_embeds, text_ids
    if negative_embeds is not None:
        count = negative_embeds.shape[1]
        candidates = torch.cat([text_embeds] + [negative_embeds[:, j] for j in range(count)])
        if text_ids is not None:
            extra = (negative_ids.t().reshape(-1) if negative_ids is not None
                     else torch.arange(batch * count) + int(text_ids.max()) + 1)
            candidate_ids = torch.cat([text_ids, extra])
    num_candidates = candidates.shape[0]
    if image_ids is None and text_ids is None:
        positives = torch.zeros(batch, num_candidates, dtype=image_embeds.dtype)
        positives[torch.arange(batch), torch.arange(batch)] = 1
    else:
        same_image = torch.eye(batch, dtype=torch.bool) if image_ids is None else image_ids[:, None] == image_ids[None, :]
        pair_texts = torch.arange(batch) if text_ids is None else text_ids
        all_texts = torch.arange(num_candidates) if candidate_ids is None else candidate_ids
        same_text = pair_texts[:, None] == all_texts[None, :]  # (pairs, candidates)
        # [image i, candidate k] positive when some pair p has image i's image and candidate k's text.
        positives = (same_image.double() @ same_text.double() > 0).to(image_embeds.dtype)
    row_targets = positives / positives.sum(1, keepdim=True)
    back = positives[:, :batch].t()
    col_targets = back / back.sum(1, keepdim=True)
    per_dim = []
    for dim in dims:
        images = F.normalize(image_embeds[:, :dim], dim=-1)
        texts = F.normalize(candidates[:, :dim], dim=-1)
        logits = images @ texts.t() / temperature
        loss = F.cross_entropy(logits, row_targets, label_smoothing=label_smoothing)
        if symmetric:
            back_loss = F.cross_entropy(logits[:, :batch].t(), col_targets, label_smoothing=label_smoothing)
            loss = (loss + back_loss) / 2
        per_dim.append(loss)
    per_dim = torch.stack(per_dim)
    total = (per_dim * torch.as_tensor(weights, dtype=per_dim.dtype, device=per_dim.device)).sum()
    return MatryoshkaContrastiveOutput(loss=total, per_dim_losses=per_dim.detach())


def nested_linear_reference(module: NestedLinear, inputs: torch.Tensor) -> torch.Tensor:
    """Naive per-dim loop (one full matmul per nesting dim): the reference the fast paths are tested against."""
    if module.efficient:
        weight, bias = module.classifier.weight, module.classifier.bias
        return torch.stack([F.linear(inputs[..., :dim], weight[:, :dim], bias) for dim in module.dims])
    return torch.stack([head(inputs[..., :dim]) for dim, head in zip(module.dims, module.heads)])
