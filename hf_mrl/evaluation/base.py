"""What every Matryoshka evaluator shares: encoding a dataset once (`hf_mrl.modeling.encoding.encode_dataset`),
per-dim views of the embeddings, faiss search, and the evaluator contract.

The contract (as in sentence-transformers): an evaluator is built once from its data, then
`evaluator(model)` encodes the data once at the full dim and returns a flat dict of floats keyed
`{name}_dim{k}_{metric}`; it declares `primary_metric` (one of those keys) and `greater_is_better`.
`evaluator.compute_metrics(...)` scores embeddings computed elsewhere (other models, baselines).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path

import datasets
import faiss
import numpy as np
import torch
from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

from ..modeling.checks import check_finite, check_positive_int
from ..modeling.encoding import (
    FALLBACK_MAX_LENGTH,
    MODEL_INPUT_NAMES,
    EncodedDataset,
    encode_dataset,
    has_text,
    tokenizer_max_length,
)
from ..modeling.modeling_matryoshka import as_matryoshka_model
from ..modeling.nesting import resolve_dims, truncate_embeddings, validate_eval_dims
from .report import group_by_dim, save_results

__all__ = [
    "MODEL_INPUT_NAMES",
    "SEARCH_MODES",
    "EncodedDataset",
    "MatryoshkaEvaluator",
    "encode_dataset",
    "per_dim_embeddings",
    "build_search_index",
    "check_not_empty",
    "check_text_cells",
    "check_several_classes",
    "run_search",
    "validate_eval_dims",
]

SEARCH_MODES = ("exact", "hnsw", "ivf")


def check_not_empty(named: Mapping) -> None:
    """Refuses, at construction (before any encoding), an evaluation dataset with no rows, or one whose `text`
    column holds a cell with nothing to embed (missing, not a string, empty, blank or control characters only: all
    would embed as one [CLS][SEP] vector), naming the argument, column and row; `named` maps each argument's name
    to its dataset (None: not given)."""
    for argument, data in named.items():
        if data is not None and len(data) == 0:
            raise ValueError(f"`{argument}` is empty (0 rows); the evaluator needs at least one row to score.")
        if isinstance(data, datasets.Dataset) and "text" in data.column_names:
            check_text_cells(data, argument)


def check_text_cells(dataset: datasets.Dataset, argument: str, column: str = "text") -> None:
    """Every cell of `column` must be a string with something to embed (`has_text`); the first that is not is
    named by argument, column and row."""
    for row, text in enumerate(dataset.with_format("arrow")[column].to_pylist()):
        if not isinstance(text, str):
            raise ValueError(
                f"`{argument}` column {column!r} row {row} is {type(text).__name__} {text!r}, not a string; fill or "
                "drop the row."
            )
        if not has_text(text):
            raise ValueError(
                f"`{argument}` column {column!r} row {row} is empty ({text!r}): nothing to embed; fill or drop the row."
            )


def check_several_classes(labels, argument: str) -> None:
    """Refuses labels of a single class where a score compares classes (k-NN votes, same-class retrieval): with one
    class every neighbour is right, so the score is 1 whatever the model."""
    classes = np.unique(np.asarray(labels))
    if len(classes) < 2:
        raise ValueError(
            f"`{argument}` holds a single class ({classes[0].item()!r}, {len(labels)} rows); a k-NN or retrieval score "
            "of one class is 1 whatever the model; give rows of at least two classes."
        )


def per_dim_embeddings(embeddings, dims: Sequence[int], name: str = "embeddings") -> dict[int, np.ndarray]:
    """{dim: (n, dim) float32} L2-normalised, from either a full (n, d) array (first `dim` features,
    truncated THEN normalised) or a mapping {dim: (n, dim) array} (e.g. a baseline's projections). NaN / inf
    values raise (`name` words the error)."""
    if isinstance(embeddings, Mapping):
        missing = [dim for dim in dims if dim not in embeddings]
        if missing:
            raise ValueError(f"per-dim `{name}` lack dims {missing}; they hold {sorted(embeddings)}.")
        views = {}
        for dim in dims:
            array = torch.as_tensor(np.asarray(embeddings[dim], dtype=np.float32))
            if array.ndim != 2 or array.shape[1] != dim:
                raise ValueError(f"`{name}[{dim}]` must have shape (n, {dim}), got {tuple(array.shape)}.")
            views[dim] = truncate_embeddings(check_finite(array, f"{name}[{dim}]"), dim).numpy()
        return views
    full = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
    if full.ndim != 2:
        raise ValueError(f"`{name}` must be 2-D (n, d), got shape {tuple(full.shape)}.")
    check_finite(full, name)
    validate_eval_dims(list(dims), full.shape[1])
    return {dim: np.ascontiguousarray(truncate_embeddings(full, dim).numpy()) for dim in dims}


def build_search_index(vectors: np.ndarray, mode: str = "exact", **params) -> faiss.Index:
    """A faiss inner-product index over L2-normalised `vectors` (n, dim): "exact" (IndexFlatIP), "hnsw"
    (params `m`=32, `ef_construction`=80, `ef_search`=64) or "ivf" (params `nlist`=about sqrt(n), `nprobe`=8)."""
    if mode not in SEARCH_MODES:
        raise ValueError(f"`search` must be one of {list(SEARCH_MODES)}, got {mode!r}.")
    unknown = sorted(set(params) - {"m", "ef_construction", "ef_search", "nlist", "nprobe"})
    if unknown:
        raise ValueError(
            f"`search_params` has unknown keys {unknown}; allowed: m, ef_construction, ef_search, nlist, nprobe."
        )
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    if mode == "exact":
        index = faiss.IndexFlatIP(dim)
    elif mode == "hnsw":
        index = faiss.IndexHNSWFlat(dim, params.get("m", 32), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.get("ef_construction", 80)
        index.hnsw.efSearch = params.get("ef_search", 64)
    else:
        # faiss wants ~39 training points per list; fewer lists for small corpora.
        nlist = params.get("nlist", max(1, min(int(np.sqrt(len(vectors))), len(vectors) // 39)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(params.get("nprobe", 8), nlist)
    index.add(vectors)
    return index


def run_search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss search: scores and ids (num_queries, k), best first; ids are -1 past the corpus size."""
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)



def collator_from_model(model, dataset):
    """The collate function an evaluator given none encodes `dataset` with: None (the rows' model inputs stacked)
    when the dataset holds model inputs, else a collator with the model's own tokenizer / image processor at the
    length `encode` cuts at, so raw texts or images are embedded as `model.encode` embeds them."""
    columns = list(getattr(dataset, "column_names", None) or [])
    if any(name in columns for name in MODEL_INPUT_NAMES):
        return None
    from ..data.collators import ImageCollator, TextCollator

    reads_text = model.main_input_name == "input_ids"
    wanted = "text" if reads_text else "image"
    column = wanted if wanted in columns else None
    if column is None:
        features = getattr(dataset, "features", None) or {}
        kind = (lambda f: isinstance(f, datasets.Value) and f.dtype in ("string", "large_string")) if reads_text \
            else (lambda f: isinstance(f, datasets.Image))
        candidates = [name for name, feature in features.items() if kind(feature)]
        if len(candidates) != 1:
            raise ValueError(
                f"`dataset` holds no model inputs ({', '.join(MODEL_INPUT_NAMES)}) and not one {wanted} column to "
                f"encode (columns: {columns}); name it {wanted!r}, or pass `collate_fn`."
            )
        column = candidates[0]
    processor = model.processor
    if reads_text:
        length = tokenizer_max_length(processor) or FALLBACK_MAX_LENGTH
        return TextCollator(processor, max_length=length, text_column=column, label_column=None)
    return ImageCollator(processor, image_column=column, label_column=None)

class MatryoshkaEvaluator(SentenceEvaluator, ABC):
    """Base of the evaluators: naming of keys, `primary_metric`, and `__call__(model)` -> flat dict. They are
    sentence-transformers `SentenceEvaluator`s: `SentenceTransformerTrainer(evaluator=...)` runs them on its model
    (a `SentenceTransformer` is scored through the `MatryoshkaModel` computing the same embeddings).

    Subclasses set `name`, `dims` (None until known: then the model's nesting dims) and implement
    `encode(model)` -> the keyword arguments of `compute_metrics`, and `compute_metrics(...)`.
    """

    greater_is_better = True
    primary_metric_name = ""

    def __init__(self, name: str, dims: Sequence[int] | None, batch_size: int):
        if not isinstance(name, str) or not name or "_dim" in name:
            raise ValueError(f"`name` must be a non-empty string without '_dim', got {name!r}.")
        check_positive_int(batch_size, "batch_size")
        self.name = name
        self.dims = None if dims is None else validate_eval_dims(dims, None)
        self.batch_size = batch_size
        self._last_dims: list[int] | None = None

    def key(self, dim: int, metric: str) -> str:
        return f"{self.name}_dim{dim}_{metric}"

    @property
    def primary_metric(self) -> str | None:
        """The key of the main metric at the largest evaluated dim (None until the dims are known)."""
        dims = self.dims or self._last_dims
        return self.key(dims[-1], self.primary_metric_name) if dims else None

    def resolve_dims(self, model) -> list[int]:
        """The evaluation dims for `model`: `hf_mrl.modeling.nesting.resolve_dims` of the dims given."""
        return resolve_dims(model, self.dims)

    @primary_metric.setter
    def primary_metric(self, value) -> None:
        """Set by `SentenceEvaluator.__init__` / `prefix_name_to_metrics`; the key is always derived from the dims."""

    def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
        """Encodes the data once with `model` (an hf_mrl model or a `SentenceTransformer`), scores every dim; writes
        the dict as JSON to `output_path` if given (a folder gets `<name>_results.json`)."""
        model = as_matryoshka_model(model)
        dims = self.resolve_dims(model)
        results = self.compute_metrics(dims=dims, **self.encode(model))
        if output_path is not None:
            path = Path(output_path)
            save_results(results, path / f"{self.name}_results.json" if path.is_dir() else path)
        return results

    def remember(self, results: dict[str, float], primary_metric_name: str) -> dict[str, float]:
        """Records the dims and main metric of the latest results (for `primary_metric`); returns them."""
        self._last_dims = sorted(group_by_dim(results))
        self.primary_metric_name = primary_metric_name
        return results

    @abstractmethod
    def encode(self, model) -> dict:
        """Encodes the evaluator's data with `model` once: the keyword arguments for `compute_metrics`."""

    @abstractmethod
    def compute_metrics(self, *, dims: Sequence[int] | None = None, **embeddings) -> dict[str, float]:
        """Scores precomputed embeddings at every dim: the flat `{name}_dim{k}_{metric}` dict."""
