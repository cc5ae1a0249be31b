"""sentence-transformers' `MatryoshkaLoss(MultipleNegativesRankingLoss)` as a `MatryoshkaTrainer` loss, on the
weights of an hf_mrl `MatryoshkaModel`: the side-by-side baseline for the Matryoshka contrastive loss (its cached
variant with `mini_batch_size`; hard-negative columns passed on as MultipleNegativesRankingLoss takes them)."""

from __future__ import annotations

import torch
from torch import nn

from .tasks import PAIR_TEMPERATURE

__all__ = ["SentenceTransformersMatryoshkaLoss"]


class SentenceTransformersMatryoshkaLoss(nn.Module):
    """Builds sentence-transformers' model from `model_name_or_path` and swaps its encoder for `model.backbone`
    (shared weights, so evaluation and saving see what sentence-transformers trained). `forward(batch)` takes the
    pair collator's batch and returns `(loss, None)`: the wrapped loss reports no per-dim values."""

    def __init__(self, model, model_name_or_path: str, columns, args, matryoshka_dims, matryoshka_weights=None):
        super().__init__()
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.losses import (
            CachedMultipleNegativesRankingLoss,
            MatryoshkaLoss,
            MultipleNegativesRankingLoss,
        )

        self.model = model
        self.columns = tuple(columns)
        st_model = SentenceTransformer(model_name_or_path, device="cpu")
        st_model.max_seq_length = args.max_seq_length
        st_model[0].model = model.backbone
        directions = ("query_to_doc", "doc_to_query") if args.symmetric else ("query_to_doc",)
        settings = dict(scale=1.0 / (args.temperature or PAIR_TEMPERATURE), directions=directions,
                        partition_mode="per_direction" if args.symmetric else "joint")
        mini_batch_size = getattr(args, "mini_batch_size", None)
        if mini_batch_size is not None:  # sentence-transformers' GradCache loss, as `--mini_batch_size` asks
            self.ranking = CachedMultipleNegativesRankingLoss(st_model, mini_batch_size=mini_batch_size, **settings)
        else:
            self.ranking = MultipleNegativesRankingLoss(st_model, **settings)
        self.st_model = st_model
        self.loss = MatryoshkaLoss(st_model, self.ranking, matryoshka_dims, matryoshka_weights)

    @property
    def gather(self) -> bool:
        return self.ranking.gather_across_devices

    @gather.setter
    def gather(self, value: bool) -> None:
        self.ranking.gather_across_devices = value

    def forward(self, batch: dict) -> tuple[torch.Tensor, None]:
        # anchor, positive and any hard-negative columns, as MultipleNegativesRankingLoss takes them
        return self.loss([batch[column] for column in self.columns], None), None
