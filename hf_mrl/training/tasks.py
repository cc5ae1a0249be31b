"""What `MatryoshkaTrainer` trains, read off the model and the dataset's columns.

- `MatryoshkaFor*Classification` + a `label` column -> the Matryoshka cross-entropy of the nested heads;
- `MatryoshkaModel` + two text columns (anchor / positive) -> the Matryoshka contrastive loss, one shared tower;
- `MatryoshkaDualEncoderModel` + `image` and `text` columns -> the image-text Matryoshka contrastive loss.

Each task is a small `nn.Module` holding the model whose `forward(batch)` returns `(loss, per_dim_losses)`; the
trainer has its forwards run through the wrapped model (DDP, FSDP, compiled) at each step.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import datasets
import torch
from torch import nn

from ..data import ImageCollator, ImageTextCollator, PairCollator, TextCollator
from ..data.prompts import resolve_prompts
from ..modeling.checks import max_input_tokens
from ..modeling.configuration_matryoshka import MatryoshkaConfig
from ..modeling.losses import matryoshka_contrastive_loss
from ..modeling.modeling_dual_encoder import MatryoshkaDualEncoderModel
from ..modeling.modeling_matryoshka import (
    MatryoshkaForImageClassification,
    MatryoshkaForSequenceClassification,
    MatryoshkaModel,
)
from .cached import CachedBatch

__all__ = [
    "TASKS",
    "ClassificationLoss",
    "PairContrastiveLoss",
    "ImageTextLoss",
    "TaskLoss",
    "infer_task",
    "pair_columns",
    "default_processor",
    "default_collator",
    "default_loss",
]

TASKS = ("classification", "pairs", "image-text")
PAIR_TEMPERATURE = 0.05  # the text-pair loss's default temperature (MultipleNegativesRankingLoss' scale 20)
CLASSIFIERS = (MatryoshkaForImageClassification, MatryoshkaForSequenceClassification)


def _columns(dataset) -> list[str]:
    names = dataset.column_names
    if names is None:  # a stream that does not know its columns yet
        names = list(next(iter(dataset)).keys())
    return list(names)


def infer_task(model, dataset) -> str:
    """The task of `model` on `dataset`, with a clear error when the columns do not fit it."""
    columns = _columns(dataset)
    if isinstance(model, CLASSIFIERS):
        inputs = "image" if model.main_input_name == "pixel_values" else "text"
        missing = [column for column in (inputs, "label") if column not in columns]
        if missing:
            raise ValueError(
                f"A {type(model).__name__} trains on `{inputs}` and `label` columns; the dataset lacks {missing} "
                f"(columns: {columns}). Load it with hf_mrl.data.load_splits, or rename the columns."
            )
        return "classification"
    if isinstance(model, MatryoshkaDualEncoderModel):
        missing = [column for column in ("image", "text") if column not in columns]
        if missing:
            raise ValueError(f"A MatryoshkaDualEncoderModel trains on `image` and `text` columns; missing {missing} (columns: {columns}).")
        return "image-text"
    if isinstance(model, MatryoshkaModel):
        if model.main_input_name != "input_ids":
            raise ValueError("A vision MatryoshkaModel has no pair task; train a MatryoshkaForImageClassification or a dual encoder.")
        return "pairs"
    raise ValueError(
        f"`model` must be a MatryoshkaFor*Classification, MatryoshkaModel or MatryoshkaDualEncoderModel, got {type(model).__name__}."
    )


def _is_label_column(name: str, features) -> bool:
    return name in ("label", "labels") or isinstance(features.get(name), datasets.ClassLabel)


def _negative_columns(columns: list[str], taken: tuple[str, str]) -> list[str]:
    """sentence-transformers' naming: `negative`, `negative_1`, `negative_2`, ... (any column starting with it)."""
    return [name for name in columns if name.startswith("negative") and name not in taken]


def pair_columns(dataset, anchor_column: str | None = None, positive_column: str | None = None) -> tuple[str, ...]:
    """The text columns of a pair dataset, (anchor, positive, *hard negatives): the named ones, else `anchor` /
    `positive`, else its text columns by position (sentence-transformers' rule: first the anchor, then the
    positive, then any number of negatives). With named or `anchor` / `positive` columns, hard negatives are the
    columns named `negative*`."""
    columns = _columns(dataset)
    if anchor_column is None and positive_column is None:
        if {"anchor", "positive"} <= set(columns):
            return ("anchor", "positive", *_negative_columns(columns, ("anchor", "positive")))
        features = getattr(dataset, "features", None) or {}
        texts = [name for name in columns if getattr(features.get(name), "dtype", None) in ("string", "large_string")]
        if len(texts) >= 2:
            labels = [name for name in texts if _is_label_column(name, features)]
            if labels:  # (text, class name) pairs would train the encoder to match texts to their label strings
                raise ValueError(
                    f"The dataset's text columns are {texts}, and {labels[0]!r} is a label column; a pair "
                    "dataset needs text columns to pair (columns: "
                    f"{columns}); pass `--anchor_column` and `--positive_column` (or rename them anchor / positive)."
                )
            negatives = f", then {texts[2:]} as hard negatives" if len(texts) > 2 else ""
            print(f"pairs: training on the text columns {texts[0]!r} (anchor) and {texts[1]!r} (positive){negatives}; "
                  "choose others with --anchor_column / --positive_column", file=sys.stderr)
            return tuple(texts)
        raise ValueError(
            f"Pass `anchor_column` and `positive_column`: the dataset has no `anchor` / `positive` columns and fewer "
            f"than two text columns (columns: {columns})."
        )
    chosen = (anchor_column or "anchor", positive_column or "positive")
    for argument, column in zip(("anchor_column", "positive_column"), chosen):
        if column not in columns:
            raise ValueError(f"`{argument}` {column!r} is not a column of the dataset; columns: {columns}.")
    return (*chosen, *_negative_columns(columns, chosen))


def default_processor(model):
    """The tokenizer (text models, the dual encoder's text tower) or image processor the model encodes with: saved
    with it, or the pretrained encoder's; a vision classifier without one gets the training collators' preprocessing."""
    return model.tokenizer if isinstance(model, MatryoshkaDualEncoderModel) else model.processor


def _image_settings(config) -> dict:
    return {"image_size": config.image_size, "num_channels": config.num_channels}


def default_collator(task: str, model, processor, max_length: int, columns: tuple[str, str] | None = None,
                     prompts=None):
    """The collator that turns the task's rows into model inputs. Texts are cut at `max_length` tokens, or at the
    text encoder's positions when it has fewer (`max_input_tokens`), after the `prompts` of one dataset (a string for
    every text column or `{column: prompt}`; see `hf_mrl.data.prompts.resolve_prompts`) are put before them."""
    text_config = model.config.text_config if task == "image-text" else model.config.backbone_config
    max_length = min(max_length, max_input_tokens(text_config) or max_length)
    image_only = task == "classification" and model.main_input_name == "pixel_values"
    text_columns = () if image_only else tuple(columns or ()) if task == "pairs" else ("text",)
    prompts = resolve_prompts(prompts, None, text_columns)
    if task == "classification":
        if image_only:
            return ImageCollator(**_image_settings(model.config.backbone_config))
        return TextCollator(processor, max_length=max_length, prompts=prompts)
    if task == "pairs":
        return PairCollator(processor, max_length=max_length, columns=columns, prompts=prompts)
    return ImageTextCollator(processor, max_length=max_length, prompts=prompts,
                             **_image_settings(model.config.vision_config))


class TaskLoss(nn.Module):
    """A task's loss over `model` (a Matryoshka model: its config says the dims). The trainer sets `wrapped` to the
    model as training runs it (DDP, FSDP or compiled) and the forward goes through that; `model` stays the plain
    one, whose config and methods the loss reads."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.run_through(None)

    def run_through(self, wrapped) -> None:
        """Forwards go through `wrapped` (None: the model itself) from now on."""
        self.__dict__["wrapped"] = wrapped  # not a submodule: the wrapper's parameters are the model's

    def run(self, **inputs):
        return (self.wrapped if self.wrapped is not None else self.model)(**inputs)


class ClassificationLoss(TaskLoss):
    """The nested heads' weighted cross-entropy, as the classifier's forward computes it (with
    `label_smoothing_factor`, smoothed at every dim)."""

    def __init__(self, model, label_smoothing: float = 0.0):
        super().__init__(model)
        self.label_smoothing = label_smoothing

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        extra = {"label_smoothing": self.label_smoothing} if self.label_smoothing else {}
        outputs = self.run(**_without_dataset_name(batch), **extra)
        return outputs.loss, outputs.matryoshka_losses


@dataclass
class _PairSettings:
    columns: tuple[str, ...] | dict[str, tuple[str, ...]]
    temperature: float
    symmetric: bool
    label_smoothing: float


def _without_dataset_name(batch: dict) -> dict:
    return {key: value for key, value in batch.items() if key != "dataset_name"}


class PairContrastiveLoss(TaskLoss):
    """The Matryoshka contrastive loss on text pairs with one shared tower: the anchor column against the positive
    and any hard-negative columns (sentence-transformers' MultipleNegativesRankingLoss at every dim). With several
    processes the loss sees the global batch (all-gather).

    Args:
        columns: (anchor, positive, *negatives), or {dataset_name: columns} for several training datasets (the
            batch's `dataset_name` picks them).
        mini_batch_size: encode in mini-batches of this many rows with cached gradients (GradCache): the
            in-batch negatives of the whole batch in the memory of a mini-batch. None: one pass with a graph.
    """

    def __init__(self, model: MatryoshkaModel, columns, temperature=0.05, symmetric=True, label_smoothing=0.0,
                 mini_batch_size: int | None = None):
        super().__init__(model)
        columns = {name: tuple(each) for name, each in columns.items()} if isinstance(columns, dict) else tuple(columns)
        self.settings = _PairSettings(columns, temperature, symmetric, label_smoothing)
        self.mini_batch_size = mini_batch_size
        self.gather = False
        self.id_offset = 0

    def columns_of(self, batch: dict) -> tuple[str, ...]:
        columns = self.settings.columns
        return columns[batch["dataset_name"]] if isinstance(columns, dict) else columns

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        columns = self.columns_of(batch)
        cached = None
        if self.mini_batch_size is not None and torch.is_grad_enabled():
            cached = CachedBatch([batch[column] for column in columns],
                                 lambda inputs: (self.run(**inputs).embeddings, None), self.mini_batch_size)
            embeddings = cached.embeddings
        else:
            embeddings = [self.run(**batch[column]).embeddings for column in columns]
        anchor, positive, *negatives = embeddings
        negative_ids = None
        if negatives:  # positives and negatives numbered together by the collator
            candidate_ids = batch["candidate_ids"] + self.id_offset
            text_ids, negative_ids = candidate_ids[: len(anchor)], candidate_ids[len(anchor) :].view(-1, len(anchor)).t()
        else:
            text_ids = batch[f"{columns[1]}_ids"] + self.id_offset
        config: MatryoshkaConfig = self.model.config
        output = matryoshka_contrastive_loss(
            anchor, positive, config.matryoshka_dims, config.matryoshka_weights, self.settings.temperature,
            label_smoothing=self.settings.label_smoothing, symmetric=self.settings.symmetric, gather=self.gather,
            # The collator numbers duplicate texts within the local batch: each process gets its own id range.
            image_ids=batch[f"{columns[0]}_ids"] + self.id_offset, text_ids=text_ids,
            negative_embeds=negatives or None, negative_ids=negative_ids, mini_batch_size=self.mini_batch_size,
        )
        loss = output.loss if cached is None else cached.loss_with_replay(output.loss, self.wrapped)
        return loss, output.per_dim_losses


class ImageTextLoss(TaskLoss):
    """The dual encoder's own image-text Matryoshka loss (`return_loss=True`); with `mini_batch_size`, images and
    captions are encoded in cached mini-batches (GradCache) and the loss taken on the whole batch."""

    def __init__(self, model: MatryoshkaDualEncoderModel, mini_batch_size: int | None = None):
        super().__init__(model)
        self.mini_batch_size = mini_batch_size
        self.gather = False
        self.id_offset = 0

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = {key: value for key, value in _without_dataset_name(batch).items() if key != "labels"}
        for key in ("image_ids", "text_ids"):
            if key in inputs:
                inputs[key] = inputs[key] + self.id_offset
        if self.mini_batch_size is None or not torch.is_grad_enabled():
            output = self.run(**inputs, return_loss=True, gather=self.gather)
            return output.loss, output.matryoshka_losses
        return self._cached(inputs)

    def _cached(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        images = {"pixel_values": inputs["pixel_values"]}
        texts = {key: inputs[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in inputs}

        def encode(part: dict):
            output = self.run(**part)
            features = output.image_features if "pixel_values" in part else output.text_features
            return features, output.logit_scale

        cached = CachedBatch([images, texts], encode, self.mini_batch_size)
        image_features, text_features = cached.embeddings
        output = self.model.contrastive_loss(
            image_features, text_features, image_ids=inputs.get("image_ids"), text_ids=inputs.get("text_ids"),
            gather=self.gather, logit_scale=cached.scale_leaf, mini_batch_size=self.mini_batch_size,
        )
        return cached.loss_with_replay(output.loss, self.wrapped), output.per_dim_losses


def default_loss(task: str, model, args, columns) -> TaskLoss:
    """The task's Matryoshka loss with the training arguments' settings."""
    if task == "classification":
        return ClassificationLoss(model, args.label_smoothing_factor)
    mini_batch_size = getattr(args, "mini_batch_size", None)
    if task == "pairs":
        return PairContrastiveLoss(model, columns, args.temperature or PAIR_TEMPERATURE, args.symmetric,
                                   args.contrastive_label_smoothing, mini_batch_size)
    return ImageTextLoss(model, mini_batch_size)
