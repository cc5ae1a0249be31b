"""Matryoshka losses. They take tensors, not models: the models return what the losses need.

- `matryoshka_cross_entropy` (here): classification, one cross-entropy per nesting dim, from every dim's logits.
- `nested_linear_cross_entropy` (`fused_cross_entropy.py`): the same loss fused with the nested heads, chunked over
  the labels, never materialising every dim's logits (what the classifiers' forward uses).
- `matryoshka_contrastive_loss` (`contrastive_loss.py`, kernel in `fused_infonce.py`): CLIP / ALIGN /
  sentence-transformers style InfoNCE at every nesting dim, for about the cost of one full-dim similarity matrix.
- `gather_with_grad` (`distributed.py`): all-gathers features across processes with gradients, so the
  contrastive loss sees the global batch under Accelerate / torchrun.

The pieces are flat sibling modules imported with single-dot imports, not a package: a trust_remote_code
folder (`hf_mrl.hub`) copies the modeling files and what they import relatively into one flat folder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .contrastive_loss import MatryoshkaContrastiveOutput, matryoshka_contrastive_loss
from .distributed import gather_with_grad
from .fused_cross_entropy import nested_linear_cross_entropy
from .input_checks import check_class_labels, check_finite, check_number, check_tensor
from .nesting import validate_matryoshka_weights

__all__ = [
    "matryoshka_cross_entropy",
    "nested_linear_cross_entropy",
    "MatryoshkaContrastiveOutput",
    "matryoshka_contrastive_loss",
    "gather_with_grad",
]


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
