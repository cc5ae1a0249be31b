"""Collators: lists of dataset rows -> model input tensors.

They are plain callables for `torch.utils.data.DataLoader(dataset, collate_fn=...)` (map-style
or streaming `IterableDataset`) and the HF `Trainer`'s `data_collator`.

Output keys:
- `ImageCollator`: `pixel_values` float (B, C, H, W), `labels` long (B,).
- `TextCollator`: the tokenizer's `input_ids`, `attention_mask` (+ `token_type_ids`) (B, T),
  `labels` long (B,).
- `ImageTextCollator`: `pixel_values`, `input_ids`, `attention_mask` (+ `token_type_ids`),
  `text_ids` long (B,) (rows with equal captions share an id: duplicate positives), and
  `image_ids` long (B,) when `image_id_column` is set (rows showing the same thing share one).
- `PairCollator` (text-text): one nested dict of tokenizer outputs per column, e.g.
  `batch["anchor"]["input_ids"]`, `batch["positive"]["attention_mask"]`, plus
  `anchor_ids` / `positive_ids` long (B,) where equal texts share an id; with hard-negative
  columns (a third column on), `candidate_ids` long (B * (columns - 1),) numbers the positives
  then each negative column together, so a negative equal to another row's positive is known. Nested dicts keep the
  two towers' inputs apart without renaming them; `accelerate` and the `Trainer` move nested
  dicts to the device as they do flat ones.

The text collators take `prompts`: a prefix for every text column, or `{column: prefix}` (see `hf_mrl.data.prompts`),
put before each text of the column before tokenisation; the `*_ids` number the texts as the rows give them.
"""

from __future__ import annotations

import io
import random
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from ..modeling.encoding import image_array, prepared_image
from .prompts import column_prompts

__all__ = ["ids_by_value", "ImageCollator", "TextCollator", "ImageTextCollator", "PairCollator", "collator_for_model"]

_GREY_MODES = ("1", "L", "I", "I;16", "F")


def ids_by_value(values: Sequence[Hashable]) -> torch.Tensor:
    """Long tensor (B,) numbering `values` by first appearance: equal values share an id.

    >>> ids_by_value(["cat", "dog", "cat"])
    tensor([0, 1, 0])
    """
    numbering: dict = {}
    ids = [numbering.setdefault(tuple(value) if isinstance(value, list) else value, len(numbering)) for value in values]
    return torch.tensor(ids, dtype=torch.long)


def _column(examples: Sequence[dict], column: str, argument: str) -> list:
    if not examples:
        raise ValueError("Cannot collate an empty batch.")
    if column not in examples[0]:
        raise ValueError(
            f"`{argument}`={column!r} is not a key of the examples; available keys: {sorted(examples[0])}."
        )
    missing = [index for index, example in enumerate(examples) if column not in example]
    if missing:
        raise ValueError(f"`{argument}`={column!r} is missing from rows {missing} of the batch.")
    return [example[column] for example in examples]


def _labels(examples: Sequence[dict], label_column: str | None, required: bool = False) -> dict[str, torch.Tensor]:
    """`labels` from `label_column`; rows without that key give none unless `required`."""
    if label_column is None or (not required and examples and label_column not in examples[0]):
        return {}
    labels = torch.as_tensor(_column(examples, label_column, "label_column"))
    return {"labels": labels.long() if not labels.is_floating_point() else labels}


def _to_pil(image, name: str) -> Image.Image:
    """PIL images; arrays (numpy, torch, nested lists) read as `encode` reads them (`image_array`: floats in [0, 1]
    scaled by 255, NaN refused); undecoded `datasets.Image` dicts. `name` words the item in errors."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (np.ndarray, torch.Tensor, list)):
        return Image.fromarray(image_array(image, name))
    if isinstance(image, dict) and (image.get("bytes") or image.get("path")):
        source = image.get("path") or "(embedded bytes)"
        try:
            with Image.open(io.BytesIO(image["bytes"]) if image.get("bytes") else image["path"]) as opened:
                opened.load()
                return opened.copy()
        except (OSError, SyntaxError) as error:
            raise ValueError(f"{name}: image {source!r} cannot be read ({error}); fix the file or drop the row.") from None
    raise ValueError(
        f"{name} is a {type(image).__name__}; expected a PIL image, an image array (numpy, torch) or a datasets.Image dict."
    )


def _check_size(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) and not isinstance(image_size, bool) else image_size
    if not (
        isinstance(size, (tuple, list))
        and len(size) == 2
        and all(isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in size)
    ):
        raise ValueError(f"`image_size` must be None, a positive int or a (height, width) pair, got {image_size!r}.")
    return int(size[0]), int(size[1])


def _check_stats(value, name: str, num_channels: int | None) -> torch.Tensor:
    stats = torch.tensor([value] if isinstance(value, (int, float)) else list(value), dtype=torch.float32)
    if stats.ndim != 1 or len(stats) == 0 or (num_channels is not None and len(stats) not in (1, num_channels)):
        raise ValueError(f"`{name}` must be a number or one number per channel, got {value!r}.")
    if name == "std" and (stats <= 0).any():
        raise ValueError(f"`std` must be positive, got {value!r}.")
    return stats


class ImageCollator:
    """Rows with an image (+ label) -> `{"pixel_values": (B, C, H, W) float, "labels": (B,) long}`.

    Without `image_processor`: convert to `num_channels` (None: 1 when every image of the batch
    is grey, else 3), resize to `image_size` if given, scale to [0, 1], then `(x - mean) / std`.
    With a transformers image processor, it does the resizing and normalising instead.

    Args:
        image_processor: optional transformers image processor (e.g. `ViTImageProcessor`).
        image_size: None (images must share a size), an int, or (height, width).
        num_channels: 1 (grey) or 3 (RGB); None infers it per batch.
        mean, std: a number or one number per channel (default 0.5 / 0.5: [-1, 1] range).
        image_column: the rows' image key.
        label_column: the rows' label key; rows without it (or None) give no `labels`.
    """

    def __init__(
        self,
        image_processor=None,
        image_size: int | Sequence[int] | None = None,
        num_channels: int | None = None,
        mean: float | Sequence[float] = 0.5,
        std: float | Sequence[float] = 0.5,
        image_column: str = "image",
        label_column: str | None = "label",
    ):
        if num_channels not in (None, 1, 3):
            raise ValueError(f"`num_channels` must be None, 1 or 3, got {num_channels!r}.")
        if image_processor is not None and not callable(image_processor):
            raise ValueError(
                f"`image_processor` must be a transformers image processor, got {type(image_processor).__name__}."
            )
        self.image_processor = image_processor
        self.image_size = _check_size(image_size)
        self.num_channels = num_channels
        self.mean = _check_stats(mean, "mean", num_channels)
        self.std = _check_stats(std, "std", num_channels)
        self.image_column = image_column
        self.label_column = label_column

    def pixel_values(self, images: Sequence) -> torch.Tensor:
        """Images -> float tensor (B, C, H, W)."""
        images = [_to_pil(image, f"`{self.image_column}` row {row}") for row, image in enumerate(images)]
        channels = self.num_channels or (1 if all(image.mode in _GREY_MODES for image in images) else 3)
        images = [prepared_image(image, channels, f"`{self.image_column}` row {row}")  # as `encode` prepares them
                  for row, image in enumerate(images)]
        if self.image_processor is not None:
            return self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        if self.image_size is not None:
            height, width = self.image_size
            images = [
                image if image.size == (width, height) else image.resize((width, height), Image.Resampling.BILINEAR)
                for image in images
            ]
        sizes = sorted({image.size for image in images})
        if len(sizes) > 1:
            raise ValueError(
                f"Images of one batch differ in size {sizes} (width, height); pass `image_size=` to resize them."
            )
        if len(self.mean) not in (1, channels) or len(self.std) not in (1, channels):
            raise ValueError(
                f"`mean`/`std` have {len(self.mean)}/{len(self.std)} values for {channels}-channel images."
            )
        array = np.stack([np.asarray(image, dtype=np.uint8) for image in images])  # (B, H, W[, C])
        pixels = torch.from_numpy(array if channels == 3 else array[..., None]).permute(0, 3, 1, 2).float() / 255.0
        return (pixels - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = {"pixel_values": self.pixel_values(_column(examples, self.image_column, "image_column"))}
        batch.update(_labels(examples, self.label_column))
        return batch


def _check_tokenizer(tokenizer, max_length: int | None) -> None:
    if not callable(tokenizer):
        raise ValueError(f"`tokenizer` must be a transformers tokenizer, got {type(tokenizer).__name__}.")
    if max_length is not None and (not isinstance(max_length, int) or isinstance(max_length, bool) or max_length <= 0):
        raise ValueError(f"`max_length` must be None or a positive integer, got {max_length!r}.")


def _tokenize(tokenizer, texts: list, max_length: int | None, argument: str, prompt: str = "") -> dict[str, torch.Tensor]:
    if not all(isinstance(text, str) for text in texts):
        bad = next(text for text in texts if not isinstance(text, str))
        raise ValueError(f"`{argument}` must hold strings, got {type(bad).__name__}: {bad!r}.")
    texts = [prompt + text for text in texts] if prompt else texts
    return dict(tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))


class TextCollator:
    """Rows with a text (+ label) -> tokenizer outputs (B, T) and `labels` (B,).

    Args:
        tokenizer: a transformers tokenizer; pads to the longest text of the batch.
        max_length: truncate longer texts (tokens).
        text_column: the rows' text key.
        label_column: the rows' label key; rows without it (or None) give no `labels`.
        prompts: a prefix put before every text (or `{text_column: prefix}`).
    """

    def __init__(
        self, tokenizer, max_length: int | None = 128, text_column: str = "text", label_column: str | None = "label",
        prompts: str | Mapping[str, str] | None = None,
    ):
        _check_tokenizer(tokenizer, max_length)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.text_column = text_column
        self.label_column = label_column
        self.prompts = column_prompts(prompts, (text_column,))

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        texts = _column(examples, self.text_column, "text_column")
        batch = _tokenize(self.tokenizer, texts, self.max_length, "text_column", self.prompts.get(self.text_column, ""))
        batch.update(_labels(examples, self.label_column))
        return batch


class PairCollator:
    """Text-text rows (e.g. `anchor`, `positive`) -> one nested dict of token inputs per column
    plus `<column>_ids` (B,) long where equal texts share an id (duplicate positives).

    Args:
        tokenizer: a transformers tokenizer, shared by every column.
        max_length: truncate longer texts (tokens).
        columns: the text columns, in order (two for pairs, three for triplets).
        prompts: a prefix put before every column's texts, or `{column: prefix}` (e.g. `{"anchor": "query: ",
            "positive": "passage: "}`); columns it does not name get none.
    """

    def __init__(self, tokenizer, max_length: int | None = 128, columns: Sequence[str] = ("anchor", "positive"),
                 prompts: str | Mapping[str, str] | None = None):
        _check_tokenizer(tokenizer, max_length)
        if isinstance(columns, str) or len(columns) < 2 or len(set(columns)) != len(columns):
            raise ValueError(f"`columns` must name at least two distinct text columns, got {columns!r}.")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.columns = tuple(columns)
        self.prompts = column_prompts(prompts, self.columns)

    def __call__(self, examples: Sequence[dict]) -> dict:
        batch: dict = {}
        for column in self.columns:
            texts = _column(examples, column, "columns")
            batch[column] = _tokenize(self.tokenizer, texts, self.max_length, "columns", self.prompts.get(column, ""))
            batch[f"{column}_ids"] = ids_by_value(texts)
        if len(self.columns) > 2:  # positives and hard negatives numbered together
            candidates = [text for column in self.columns[1:] for text in _column(examples, column, "columns")]
            batch["candidate_ids"] = ids_by_value(candidates)
        return batch


class ImageTextCollator:
    """Image-caption rows -> `pixel_values`, token inputs, `text_ids` (+ `image_ids`, `labels`).

    A row whose text is a list (e.g. emoji `keywords`) contributes one of its texts, drawn with
    a `random.Random(seed)` owned by the collator, so each epoch sees different captions.

    Args:
        tokenizer: a transformers tokenizer.
        image_processor, image_size, num_channels, mean, std: as in `ImageCollator`.
        max_length: truncate longer captions (tokens).
        image_column, text_column: the rows' image and text keys.
        image_id_column: optional key naming what an image shows (e.g. "emoji", or "label"
            for Fashion-MNIST); gives `image_ids` where equal values share an id.
        label_column: optional label key (required in every row once set), passed as `labels`.
        seed: seeds the choice among list captions.
        prompts: a prefix put before every caption (or `{text_column: prefix}`).
    """

    def __init__(
        self,
        tokenizer,
        image_processor=None,
        image_size: int | Sequence[int] | None = None,
        num_channels: int | None = None,
        mean: float | Sequence[float] = 0.5,
        std: float | Sequence[float] = 0.5,
        max_length: int | None = 64,
        image_column: str = "image",
        text_column: str = "text",
        image_id_column: str | None = None,
        label_column: str | None = None,
        seed: int = 0,
        prompts: str | Mapping[str, str] | None = None,
    ):
        _check_tokenizer(tokenizer, max_length)
        self.images = ImageCollator(
            image_processor, image_size, num_channels, mean, std, image_column, label_column=None
        )
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.text_column = text_column
        self.image_id_column = image_id_column
        self.label_column = label_column
        self._random = random.Random(seed)
        self.prompts = column_prompts(prompts, (text_column,))

    def _caption(self, value):
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError(f"`text_column`={self.text_column!r} holds an empty list of captions.")
            return self._random.choice(value)
        return value

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        texts = [self._caption(value) for value in _column(examples, self.text_column, "text_column")]
        batch = {"pixel_values": self.images.pixel_values(_column(examples, self.images.image_column, "image_column"))}
        batch.update(_tokenize(self.tokenizer, texts, self.max_length, "text_column", self.prompts.get(self.text_column, "")))
        batch["text_ids"] = ids_by_value(texts)
        if self.image_id_column is not None:
            batch["image_ids"] = ids_by_value(_column(examples, self.image_id_column, "image_id_column"))
        batch.update(_labels(examples, self.label_column, required=True))
        return batch


def collator_for_model(model, name_or_path, processor: str | None = None, label_column: str | None = "label"):
    """The collator a saved classifier / encoder at `name_or_path` reads data with: a `TextCollator` with its (or
    `processor`'s) tokenizer at the length it was trained with, or an `ImageCollator` with its image processor when
    the folder has one, else resizing to the backbone's image size and channels and scaling to [-1, 1], as the
    training scripts do."""
    from pathlib import Path

    from transformers import AutoImageProcessor, AutoTokenizer

    from ..modeling.encoding import tokenizer_max_length

    if model.main_input_name == "input_ids":
        # The model's own tokenizer carries its one max length (a sentence-transformers folder's max_seq_length
        # included); a `processor` given by name replaces it.
        own = None if processor is not None else getattr(model, "processor", None)
        tokenizer = own if callable(own) else AutoTokenizer.from_pretrained(processor or name_or_path)
        # The length the model was trained with travels as the tokenizer's model_max_length.
        return TextCollator(tokenizer, max_length=tokenizer_max_length(tokenizer) or 128, label_column=label_column)
    source = processor or name_or_path
    if processor is not None or (Path(source) / "preprocessor_config.json").is_file():
        return ImageCollator(AutoImageProcessor.from_pretrained(source), label_column=label_column)
    backbone = model.config.backbone_config
    return ImageCollator(image_size=backbone.image_size, num_channels=backbone.num_channels, label_column=label_column)
