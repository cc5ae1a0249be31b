"""Image-text evaluation at every Matryoshka granularity from one encoding pass: text -> image and
image -> text retrieval (R@K) and zero-shot classification with class prompts.

R@K here is the image-text benchmarks' recall (COCO, Flickr30k, CLIP): the share of queries whose top K
holds at least one relevant item. With one relevant item per query it is plain recall@K.

Relevance comes from pairs: text j describes image `text_to_image[j]` (or several images, e.g. one caption
shared by many rows). `image_ids` (images showing the same thing, e.g. one emoji or one Fashion-MNIST class)
and `text_ids` (equal captions) widen it: image i is relevant to text j when i shows what some text with j's
id describes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.collators import ImageCollator, ids_by_value
from ..modeling.checks import check_positive_ints
from ..modeling.progress import should_show_progress
from .base import (
    MatryoshkaEvaluator,
    build_search_index,
    check_not_empty,
    per_dim_embeddings,
    run_search,
    validate_eval_dims,
)

__all__ = [
    "DEFAULT_PROMPT_TEMPLATE",
    "MatryoshkaImageTextEvaluator",
    "image_text_relevance",
    "image_text_retrieval_metrics",
    "zero_shot_accuracy",
]

DEFAULT_PROMPT_TEMPLATE = "a photo of a {}."


def _group_ids(ids, length: int, name: str) -> np.ndarray:
    """(length,) int codes: `ids` renumbered by first appearance, or one group per row when None."""
    if ids is None:
        return np.arange(length)
    ids = np.asarray(ids)
    if ids.shape != (length,):
        raise ValueError(f"`{name}` must have shape ({length},), got {ids.shape}.")
    return ids_by_value(ids.tolist()).numpy()


def _pairs(text_to_image, num_images: int) -> tuple[np.ndarray, np.ndarray]:
    """(text rows, image rows) of every described pair, from (M,) ints or M collections of image rows."""
    if isinstance(text_to_image, np.ndarray) and text_to_image.ndim == 1 and np.issubdtype(text_to_image.dtype, np.integer):
        texts, images = np.arange(len(text_to_image)), text_to_image
    else:
        if isinstance(text_to_image, (str, bytes)) or not isinstance(text_to_image, (Sequence, np.ndarray)):
            raise ValueError(f"`text_to_image` must be (M,) ints or M collections of image rows, got {type(text_to_image).__name__}.")
        rows = [np.atleast_1d(np.asarray(item)).reshape(-1) for item in text_to_image]
        if any(row.size and not np.issubdtype(row.dtype, np.integer) for row in rows):
            raise ValueError("`text_to_image` must hold integer image rows.")
        texts = np.repeat(np.arange(len(rows)), [len(row) for row in rows])
        images = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, dtype=np.int64)
    if images.size and (images.min() < 0 or images.max() >= num_images):
        raise ValueError(f"`text_to_image` must hold image rows from 0 to {num_images - 1}, got {images.min()}..{images.max()}.")
    return texts, images


def image_text_relevance(
    num_images: int, text_to_image, image_ids=None, text_ids=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relevance of texts to images, as group codes.

    Args:
        num_images: number of images N.
        text_to_image: the image(s) each of the M texts describes: (M,) ints, or M collections of image rows.
        image_ids: optional (N,) ids; images sharing one show the same thing.
        text_ids: optional (M,) ids; texts sharing one are the same caption.

    Returns:
        (image_group (N,), text_group (M,), table (num_text_groups, num_image_groups) bool): text j and image i
        are relevant exactly when `table[text_group[j], image_group[i]]`.
    """
    if isinstance(text_to_image, (list, tuple)) and all(isinstance(item, (int, np.integer)) for item in text_to_image):
        text_to_image = np.asarray(text_to_image, dtype=np.int64)
    texts, images = _pairs(text_to_image, num_images)
    image_group = _group_ids(image_ids, num_images, "image_ids")
    text_group = _group_ids(text_ids, len(text_to_image), "text_ids")
    table = np.zeros((text_group.max(initial=-1) + 1, image_group.max(initial=-1) + 1), dtype=bool)
    table[text_group[texts], image_group[images]] = True
    return image_group, text_group, table


def _recall_from_ids(ids: np.ndarray, hits: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """R@K for each K from the (queries, depth) hit matrix of the top results (ids -1 never hit)."""
    hits = hits & (ids >= 0)
    found_by = np.cumsum(hits, axis=1) > 0
    return {k: float(found_by[:, min(k, hits.shape[1]) - 1].mean()) if len(hits) else 0.0 for k in ks}


def image_text_retrieval_metrics(
    image_embeds,
    text_embeds,
    dims: Sequence[int] | None = None,
    ks: Sequence[int] = (1, 5, 10),
    text_to_image=None,
    image_ids=None,
    text_ids=None,
    name: str = "image_text",
) -> dict[str, float]:
    """Text -> image and image -> text R@K at every dim, keyed `{name}_dim{k}_t2i_recall@K` / `..._i2t_recall@K`.

    Args:
        image_embeds: (N, d) full-dim image embeddings (any norm; each dim's slice is renormalised).
        text_embeds: (M, d) full-dim text embeddings.
        dims: dims to score, from 1 to d (default: d only).
        ks: cut-offs K.
        text_to_image: the image each text describes, (M,) ints, or M collections of image rows (a caption of
            several images); default `arange(M)` (requires M == N).
        image_ids, text_ids: optional ids widening relevance (see `image_text_relevance`).
        name: the key prefix.
    """
    ks = check_positive_ints(ks, "ks")
    image_embeds = np.asarray(image_embeds, dtype=np.float32)
    text_embeds = np.asarray(text_embeds, dtype=np.float32)
    if image_embeds.ndim != 2 or text_embeds.ndim != 2 or image_embeds.shape[1] != text_embeds.shape[1]:
        raise ValueError(
            f"`image_embeds` and `text_embeds` must be 2-D with the same width, got {image_embeds.shape} and {text_embeds.shape}."
        )
    num_images, num_texts = len(image_embeds), len(text_embeds)
    if text_to_image is None:
        if num_images != num_texts:
            raise ValueError(f"Give `text_to_image` when the numbers of images ({num_images}) and texts ({num_texts}) differ.")
        text_to_image = np.arange(num_texts)
    if len(text_to_image) != num_texts:
        raise ValueError(f"`text_to_image` has {len(text_to_image)} entries for {num_texts} texts.")
    image_group, text_group, table = image_text_relevance(num_images, text_to_image, image_ids, text_ids)
    dims = validate_eval_dims(list(dims or [image_embeds.shape[1]]), image_embeds.shape[1])
    image_views = per_dim_embeddings(image_embeds, dims, "image_embeds")
    text_views = per_dim_embeddings(text_embeds, dims, "text_embeds")
    depth = ks[-1]
    results: dict[str, float] = {}
    for dim in dims:
        _, image_hits = run_search(build_search_index(image_views[dim]), text_views[dim], min(depth, num_images))
        _, text_hits = run_search(build_search_index(text_views[dim]), image_views[dim], min(depth, num_texts))
        t2i = table[text_group[:, None], image_group[np.where(image_hits >= 0, image_hits, 0)]]
        i2t = table[text_group[np.where(text_hits >= 0, text_hits, 0)], image_group[:, None]]
        for direction, recall in (("t2i", _recall_from_ids(image_hits, t2i, ks)), ("i2t", _recall_from_ids(text_hits, i2t, ks))):
            for k, value in recall.items():
                results[f"{name}_dim{dim}_{direction}_recall@{k}"] = value
    return results


def _class_views(class_text_embeds: torch.Tensor, dim: int) -> torch.Tensor:
    """(C, dim) class embeddings at `dim`: each prompt truncated and normalised, averaged, renormalised."""
    prompts = torch.nn.functional.normalize(class_text_embeds[..., :dim], dim=-1)
    if prompts.ndim == 3:
        prompts = prompts.mean(dim=1)
    return torch.nn.functional.normalize(prompts, dim=-1)


def zero_shot_accuracy(
    image_embeds,
    class_text_embeds,
    labels,
    dims: Sequence[int] | None = None,
    ks: Sequence[int] = (1,),
    name: str = "image_text",
) -> dict[str, float]:
    """Zero-shot classification accuracy at every dim, keyed `{name}_dim{k}_zero_shot_top{K}`.

    Each image's class is the class whose prompt embedding is nearest (cosine). With several prompts per
    class, their per-dim normalised embeddings are averaged (CLIP's prompt ensembling).

    Args:
        image_embeds: (N, d) full-dim image embeddings.
        class_text_embeds: (C, d) one prompt per class, or (C, P, d) P prompts per class.
        labels: (N,) true class ids in [0, C).
        dims: dims to score (default: d only).
        ks: top-K accuracies to report.
    """
    ks = check_positive_ints(ks, "ks")
    images = torch.as_tensor(np.asarray(image_embeds, dtype=np.float32))
    classes = torch.as_tensor(np.asarray(class_text_embeds, dtype=np.float32))
    labels = torch.as_tensor(np.asarray(labels)).long()
    if images.ndim != 2 or classes.ndim not in (2, 3) or classes.shape[-1] != images.shape[1]:
        raise ValueError(
            f"`image_embeds` must be (N, d) and `class_text_embeds` (C, d) or (C, P, d) of the same d, got "
            f"{tuple(images.shape)} and {tuple(classes.shape)}."
        )
    if labels.shape != (len(images),):
        raise ValueError(f"`labels` must have shape ({len(images)},), got {tuple(labels.shape)}.")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise ValueError(f"`labels` must lie in [0, {len(classes) - 1}], got {int(labels.min())}..{int(labels.max())}.")
    dims = validate_eval_dims(list(dims or [images.shape[1]]), images.shape[1])
    results = {}
    for dim in dims:
        scores = torch.nn.functional.normalize(images[:, :dim], dim=-1) @ _class_views(classes, dim).T
        top = scores.topk(min(ks[-1], scores.shape[1]), dim=1).indices
        for k in ks:
            results[f"{name}_dim{dim}_zero_shot_top{k}"] = float((top[:, :k] == labels[:, None]).any(1).float().mean())
    return results


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


class MatryoshkaImageTextEvaluator(MatryoshkaEvaluator):
    """Text -> image and image -> text R@K (and zero-shot accuracy when class prompts are given) at every dim
    of a dual encoder (`get_image_features` / `get_text_features`), encoding each image and each distinct
    caption once at the full dim.

    Args:
        dataset (`datasets.Dataset`): image-caption rows.
        tokenizer: the text tower's tokenizer.
        image_collator (callable, *optional*): rows -> `{"pixel_values": ...}`; default `ImageCollator` on
            `image_column` (no resizing: give one with `image_size=` for images of mixed sizes).
        image_column, text_column (`str`): the rows' image and caption keys (captions must be strings).
        image_id_column (`str`, *optional*): rows with equal values show the same thing (e.g. "emoji", or
            "label" for Fashion-MNIST captions); their images are each other's positives.
        class_prompts (list, *optional*): per class, a prompt or a list of prompts; with `label_column`, adds
            zero-shot top-1 (and top-K for the other `zero_shot_ks`) accuracy.
        label_column (`str`, *optional*): the rows' class ids, for zero-shot accuracy.
        dims (`list[int]`, *optional*): dims to score (default: the model's nesting dims).
        ks (`list[int]`): R@K cut-offs. zero_shot_ks (`list[int]`): zero-shot top-K.
        max_length (`int`): tokenizer truncation.
        primary_metric_name (`str`, *optional*): default `t2i_recall@<largest K>`.
        name (`str`): the key prefix, e.g. "emoji" -> "emoji_dim32_t2i_recall@1".
    """

    def __init__(
        self,
        dataset,
        tokenizer,
        image_collator: Callable[[list[dict]], dict] | None = None,
        image_column: str = "image",
        text_column: str = "text",
        image_id_column: str | None = None,
        class_prompts: Sequence[str | Sequence[str]] | None = None,
        label_column: str | None = None,
        dims: Sequence[int] | None = None,
        ks: Sequence[int] = (1, 5, 10),
        zero_shot_ks: Sequence[int] = (1,),
        max_length: int = 64,
        primary_metric_name: str | None = None,
        name: str = "image_text",
        batch_size: int = 64,
    ):
        super().__init__(name=name, dims=dims, batch_size=batch_size)
        columns = dataset.column_names
        for argument, column in (
            ("image_column", image_column),
            ("text_column", text_column),
            ("image_id_column", image_id_column),
            ("label_column", label_column),
        ):
            if column is not None and column not in columns:
                raise ValueError(f"`{argument}`={column!r} is not a column of `dataset`; columns: {columns}.")
        check_not_empty({"dataset": dataset})
        if (class_prompts is None) != (label_column is None):
            raise ValueError("Zero-shot accuracy needs both `class_prompts` and `label_column` (or neither).")
        self.ks = check_positive_ints(ks, "ks")
        self.zero_shot_ks = check_positive_ints(zero_shot_ks, "zero_shot_ks")
        captions = dataset[text_column]
        bad = next((caption for caption in captions if not isinstance(caption, str)), None)
        if bad is not None:
            raise ValueError(f"`text_column`={text_column!r} must hold one caption string per row, got {bad!r}.")
        # Each distinct caption is encoded once and describes the images of every row carrying it.
        rows_of: dict[str, list[int]] = {}
        for row, caption in enumerate(captions):
            rows_of.setdefault(caption, []).append(row)
        self.texts = list(rows_of)
        self.text_to_image = list(rows_of.values())
        self.image_ids = None if image_id_column is None else ids_by_value(dataset[image_id_column]).numpy()
        self.prompts = None
        if class_prompts is not None:
            self.prompts = [[prompt] if isinstance(prompt, str) else list(prompt) for prompt in class_prompts]
            if not self.prompts or len({len(group) for group in self.prompts}) != 1 or not self.prompts[0]:
                raise ValueError("`class_prompts` must give every class the same number (>= 1) of prompts.")
            self.labels = np.asarray(dataset[label_column])
        self.dataset = dataset
        self.tokenizer = tokenizer
        self.image_collator = image_collator or ImageCollator(image_column=image_column, label_column=None)
        self.max_length = max_length
        default_primary = f"t2i_recall@{self.ks[-1]}"
        self.primary_metric_name = primary_metric_name or default_primary

    @torch.no_grad()
    def _encode_texts(self, model, texts: list[str], description: str) -> np.ndarray:
        device, chunks = _model_device(model), []
        for start in tqdm(range(0, len(texts), self.batch_size), desc=description, leave=False,
                          disable=not should_show_progress()):
            tokens = self.tokenizer(
                texts[start : start + self.batch_size], padding=True, truncation=True,
                max_length=self.max_length, return_tensors="pt",
            )
            tokens = {key: value.to(device) for key, value in tokens.items()}
            chunks.append(model.get_text_features(**tokens, dim=None).float().cpu())
        return torch.cat(chunks).numpy()

    @torch.no_grad()
    def _encode_images(self, model) -> np.ndarray:
        device, chunks = _model_device(model), []
        loader = DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False, collate_fn=self.image_collator)
        for batch in tqdm(loader, desc=f"Encoding {self.name} images", leave=False,
                          disable=not should_show_progress()):
            chunks.append(model.get_image_features(batch["pixel_values"].to(device), dim=None).float().cpu())
        return torch.cat(chunks).numpy()

    def encode(self, model) -> dict:
        was_training = model.training
        model.eval()
        try:
            inputs = {
                "image_embeddings": self._encode_images(model),
                "text_embeddings": self._encode_texts(model, self.texts, f"Encoding {self.name} captions"),
            }
            if self.prompts is not None:
                flat = [prompt for group in self.prompts for prompt in group]
                encoded = self._encode_texts(model, flat, f"Encoding {self.name} class prompts")
                inputs["class_embeddings"] = encoded.reshape(len(self.prompts), len(self.prompts[0]), -1)
        finally:
            model.train(was_training)
        return inputs

    def compute_metrics(
        self, image_embeddings, text_embeddings, class_embeddings=None, dims: Sequence[int] | None = None
    ) -> dict[str, float]:
        """Scores precomputed embeddings: images in dataset order, texts in `self.texts` order, class prompts
        (C, P, d) in `class_prompts` order."""
        dims = list(dims or self.dims or [np.asarray(image_embeddings).shape[1]])
        results = image_text_retrieval_metrics(
            image_embeddings, text_embeddings, dims, self.ks, self.text_to_image, self.image_ids, None, self.name
        )
        if self.prompts is not None and class_embeddings is not None:
            results.update(zero_shot_accuracy(image_embeddings, class_embeddings, self.labels, dims, self.zero_shot_ks, self.name))
        return self.remember(results, self.primary_metric_name)
