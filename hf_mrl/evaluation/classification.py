"""Classification at every Matryoshka granularity from one encoding pass.

Two families of metrics per dim k:
- heads: top-1 / top-5 accuracy of the nested linear head at k (`matryoshka_logits`, one forward
  pass gives every nesting dim). Separate (MRL) heads exist only at the nesting dims; MRL-E heads are
  slices of one matrix, so any k works (computed from the stored embeddings, no re-encoding).
- k-NN: majority-vote accuracy of the nearest reference embeddings (cosine, faiss), for any k
  between 1 and the full dim, nesting dim or not.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from ..modeling.checks import check_positive_ints
from ..modeling.nesting import resolve_dims
from .base import (
    SEARCH_MODES,
    MatryoshkaEvaluator,
    build_search_index,
    check_not_empty,
    check_several_classes,
    collator_from_model,
    encode_dataset,
    per_dim_embeddings,
    run_search,
)
from .metrics import knn_accuracy, remove_ids, top_k_accuracy
from .report import group_by_dim

__all__ = ["MatryoshkaClassificationEvaluator", "classification_metrics"]


def _num_rows(embeddings) -> int:
    if isinstance(embeddings, Mapping):
        return len(next(iter(embeddings.values())))
    return len(embeddings)


def classification_metrics(
    embeddings,
    labels,
    dims: Sequence[int] | None = None,
    reference_embeddings=None,
    reference_labels=None,
    matryoshka_logits: np.ndarray | None = None,
    nesting_dims: Sequence[int] | None = None,
    logits_at: Callable[[int], np.ndarray] | None = None,
    top_k: Sequence[int] = (1, 5),
    knn_k: Sequence[int] = (1, 20),
    search: str = "exact",
    search_params: Mapping | None = None,
    name: str = "classification",
) -> dict[str, float]:
    """Per-dim classification metrics of precomputed embeddings, keyed `{name}_dim{k}_{metric}`.

    embeddings: (n, d) full embeddings (sliced and renormalised per dim) or {dim: (n, dim)}.
    labels: (n,) class of each row.
    dims: defaults to the mapping's dims, else `nesting_dims`, else powers of two up to the full dim and it.
    reference_embeddings / reference_labels: the k-NN database (same forms); None means leave-one-out
        k-NN within `embeddings` (each row's own entry is skipped).
    matryoshka_logits: (len(nesting_dims), n, num_labels) head logits, row j for `nesting_dims[j]`.
    logits_at: dim -> (n, num_labels) logits for dims outside `nesting_dims` (MRL-E heads), optional.
    Metrics: `top{t}` for t in `top_k` (heads; t above num_labels is skipped), `{m}nn` for m in `knn_k`.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != _num_rows(embeddings):
        raise ValueError(
            f"`labels` must have shape ({_num_rows(embeddings)},) like the embeddings, got {labels.shape}."
        )
    top_k, knn_k = check_positive_ints(top_k, "top_k"), check_positive_ints(knn_k, "knn_k")
    if search not in SEARCH_MODES:
        raise ValueError(f"`search` must be one of {list(SEARCH_MODES)}, got {search!r}.")
    dims = resolve_dims(embeddings, dims, nesting_dims=nesting_dims)
    if (reference_embeddings is None) != (reference_labels is None):
        raise ValueError("Give both `reference_embeddings` and `reference_labels`, or neither (leave-one-out).")
    leave_one_out = reference_embeddings is None
    reference_labels = labels if leave_one_out else np.asarray(reference_labels)
    if not leave_one_out and len(reference_labels) != _num_rows(reference_embeddings):
        raise ValueError(
            f"`reference_labels` has {len(reference_labels)} entries for {_num_rows(reference_embeddings)} "
            "reference embeddings."
        )
    database_size = len(reference_labels) - (1 if leave_one_out else 0)
    if knn_k[-1] > database_size:
        raise ValueError(f"`knn_k` holds {knn_k[-1]}, more than the {database_size} reference items.")
    if matryoshka_logits is not None:
        matryoshka_logits = np.asarray(matryoshka_logits)
        if nesting_dims is None or matryoshka_logits.shape[:2] != (len(nesting_dims), len(labels)):
            raise ValueError(
                f"`matryoshka_logits` must have shape (len(nesting_dims), {len(labels)}, num_labels) with "
                f"`nesting_dims` given; got shape {matryoshka_logits.shape} and nesting_dims={nesting_dims!r}."
            )
    # Integer codes shared by queries and references, so labels of any type vote.
    classes, codes = np.unique(np.concatenate([labels, reference_labels]), return_inverse=True)
    query_codes, reference_codes = codes[: len(labels)], codes[len(labels) :]

    query_views = per_dim_embeddings(embeddings, dims, "embeddings")
    reference_views = query_views if leave_one_out else per_dim_embeddings(reference_embeddings, dims, "reference_embeddings")
    results: dict[str, float] = {}
    for dim in dims:
        head_logits = None
        if matryoshka_logits is not None and dim in nesting_dims:
            head_logits = matryoshka_logits[list(nesting_dims).index(dim)]
        elif logits_at is not None:
            head_logits = np.asarray(logits_at(dim))
        if head_logits is not None:
            for t in top_k:
                if t == 1 or t <= head_logits.shape[1]:
                    results[f"{name}_dim{dim}_top{t}"] = top_k_accuracy(head_logits, labels, t)
        index = build_search_index(reference_views[dim], search, **(search_params or {}))
        _, ids = run_search(index, query_views[dim], knn_k[-1] + (1 if leave_one_out else 0))
        if leave_one_out:
            ids = remove_ids(ids, np.arange(len(labels)))[:, : knn_k[-1]]
        neighbor_codes = np.where(ids >= 0, reference_codes[np.clip(ids, 0, None)], -1)
        for m in knn_k:
            results[f"{name}_dim{dim}_{m}nn"] = knn_accuracy(neighbor_codes, query_codes, m)
    return results


def check_labels_in_reference(labels, reference_labels, label_column: str = "label") -> None:
    """The k-NN scores vote with reference labels: when no test label occurs in the reference set every vote is
    wrong (0.0 whatever the model), so that is refused; test labels missing from it (only some) are warned about
    once, as their rows can never score."""
    test, known = np.unique(np.asarray(labels)), set(np.unique(np.asarray(reference_labels)).tolist())
    missing = [label for label in test.tolist() if label not in known]
    if not missing:
        return
    shown = ", ".join(map(repr, missing[:10])) + (f", ... ({len(missing)} in all)" if len(missing) > 10 else "")
    if len(missing) == len(test):
        raise ValueError(
            f"No label of `dataset` (column {label_column!r}: {shown}) occurs in `reference_dataset`'s labels "
            f"({', '.join(map(repr, sorted(known)[:10]))}{', ...' if len(known) > 10 else ''}): every k-NN vote "
            "would be wrong (0.0 whatever the model); give a reference set of the same classes (or the same label "
            "encoding)."
        )
    warnings.warn(
        f"`dataset` labels {shown} (column {label_column!r}) do not occur in `reference_dataset`: their rows can "
        "never score in k-NN.",
        stacklevel=3,
    )


class MatryoshkaClassificationEvaluator(MatryoshkaEvaluator):
    """Nested-head top-k and k-NN accuracy at every dim, from one encoding pass per dataset.

    Args:
        dataset (`datasets.Dataset`): the evaluation split (k-NN queries, head predictions).
        reference_dataset (`datasets.Dataset`, *optional*): the k-NN database (e.g. the train split);
            None means leave-one-out k-NN within `dataset`.
        collate_fn (callable, *optional*): list of rows -> dict of tensors (`ImageCollator`, `TextCollator`,
            ...); None stacks the rows' model-input columns. `reference_collate_fn` defaults to it.
        label_column (`str`, defaults to "label"): the class column of both datasets.
        dims (`list[int]`, *optional*): dims to score, any from 1 to the embedding dim (defaults to the
            model's nesting dims). Heads are scored at nesting dims (any dim for MRL-E heads).
        top_k / knn_k: which top-k head accuracies and which k-NN votes to report.
        search (`str`, defaults to "exact"): faiss search for k-NN ("exact", "hnsw" or "ivf"), with
            `search_params` as in `build_search_index`.
        name (`str`): the key prefix, e.g. "fmnist" -> "fmnist_dim16_top1".

    `primary_metric` is top-1 head accuracy at the largest dim (the smallest k-NN vote when there is no
    head there).
    """

    def __init__(
        self,
        dataset,
        reference_dataset=None,
        collate_fn: Callable[[list[dict]], dict] | None = None,
        reference_collate_fn: Callable[[list[dict]], dict] | None = None,
        label_column: str = "label",
        dims: Sequence[int] | None = None,
        top_k: Sequence[int] = (1, 5),
        knn_k: Sequence[int] = (1, 20),
        use_heads: bool = True,
        search: str = "exact",
        search_params: Mapping | None = None,
        name: str = "classification",
        batch_size: int = 64,
    ):
        super().__init__(name=name, dims=dims, batch_size=batch_size)
        check_not_empty({"dataset": dataset, "reference_dataset": reference_dataset})
        for argument, data in (("dataset", dataset), ("reference_dataset", reference_dataset)):
            if data is not None and label_column not in getattr(data, "column_names", ()):
                raise ValueError(
                    f"`{argument}` has no label column {label_column!r}; its columns: {getattr(data, 'column_names', None)}."
                )
        if search not in SEARCH_MODES:
            raise ValueError(f"`search` must be one of {list(SEARCH_MODES)}, got {search!r}.")
        self.top_k, self.knn_k = check_positive_ints(top_k, "top_k"), check_positive_ints(knn_k, "knn_k")
        database_size = len(dataset) - 1 if reference_dataset is None else len(reference_dataset)
        if self.knn_k[-1] > database_size:
            raise ValueError(f"`knn_k` holds {self.knn_k[-1]}, more than the {database_size} reference items.")
        self.dataset, self.reference_dataset = dataset, reference_dataset
        self.collate_fn = collate_fn
        self.reference_collate_fn = reference_collate_fn or collate_fn
        self.labels = np.asarray(dataset[label_column])
        self.reference_labels = None if reference_dataset is None else np.asarray(reference_dataset[label_column])
        # k-NN votes among one class are always right: 1.0 whatever the model (the class named, not its id).
        all_labels = self.labels if self.reference_labels is None else np.concatenate([self.labels, self.reference_labels])
        feature = (getattr(dataset, "features", None) or {}).get(label_column)
        if len(np.unique(all_labels)) == 1 and hasattr(feature, "int2str") and all_labels.dtype.kind in "iu":
            all_labels = np.asarray(feature.int2str([int(label) for label in all_labels[:1]]) * len(all_labels))
        check_several_classes(all_labels, "dataset" if reference_dataset is None else "dataset and reference_dataset")
        if self.reference_labels is not None:
            check_labels_in_reference(self.labels, self.reference_labels, label_column)
        self.use_heads = use_heads
        self.search = search
        self.search_params = dict(search_params or {})
        self.primary_metric_name = "top1" if use_heads else f"{self.knn_k[0]}nn"

    def encode(self, model) -> dict:
        return encode_classification_inputs(self, model)

    def compute_metrics(
        self,
        embeddings,
        reference_embeddings=None,
        matryoshka_logits: np.ndarray | None = None,
        nesting_dims: Sequence[int] | None = None,
        logits_at: Callable[[int], np.ndarray] | None = None,
        dims: Sequence[int] | None = None,
    ) -> dict[str, float]:
        """Scores precomputed embeddings of this evaluator's datasets (rows in dataset order); see
        `classification_metrics` for the forms each argument takes."""
        if self.reference_dataset is not None and reference_embeddings is None:
            raise ValueError("This evaluator has a `reference_dataset`: pass its `reference_embeddings` too.")
        if self.reference_dataset is None and reference_embeddings is not None:
            raise ValueError(
                "This evaluator has no `reference_dataset` (leave-one-out k-NN); drop `reference_embeddings`."
            )
        if not self.use_heads:
            matryoshka_logits = logits_at = None
        results = classification_metrics(
            embeddings,
            self.labels,
            dims=dims or self.dims,
            reference_embeddings=reference_embeddings,
            reference_labels=self.reference_labels,
            matryoshka_logits=matryoshka_logits,
            nesting_dims=nesting_dims,
            logits_at=logits_at,
            top_k=self.top_k,
            knn_k=self.knn_k,
            search=self.search,
            search_params=self.search_params,
            name=self.name,
        )
        largest = max(group_by_dim(results))
        has_head = self.key(largest, "top1") in results
        return self.remember(results, "top1" if has_head else f"{self.knn_k[0]}nn")


def _efficient_logits_at(heads, embeddings: np.ndarray) -> Callable[[int], np.ndarray]:
    """MRL-E head logits at any dim, computed from the stored full embeddings (no re-encoding)."""
    parameter = next(heads.parameters())
    stored = torch.from_numpy(embeddings).to(device=parameter.device, dtype=parameter.dtype)

    @torch.no_grad()
    def logits_at(dim: int) -> np.ndarray:
        return heads.logits_at(stored, dim).float().cpu().numpy()

    return logits_at


def encode_classification_inputs(evaluator, model) -> dict:
    """The `compute_metrics` inputs of a classification-style evaluator (`dataset`, `collate_fn`, `batch_size`,
    `name`, `reference_dataset`, `reference_collate_fn`, `use_heads`): embeddings in one encoding pass, the
    reference's, and the nested heads' logits (MRL-E: a function giving the logits at any dim)."""
    collate_fn = evaluator.collate_fn or collator_from_model(model, evaluator.dataset)
    encoded = encode_dataset(model, evaluator.dataset, collate_fn, evaluator.batch_size, f"Encoding {evaluator.name}")
    inputs = {"embeddings": encoded.embeddings}
    if evaluator.reference_dataset is not None:
        reference_collate_fn = evaluator.reference_collate_fn or collator_from_model(model, evaluator.reference_dataset)
        inputs["reference_embeddings"] = encode_dataset(
            model, evaluator.reference_dataset, reference_collate_fn, evaluator.batch_size,
            f"Encoding {evaluator.name} reference",
        ).embeddings
    if evaluator.use_heads and encoded.matryoshka_logits is not None:
        inputs["matryoshka_logits"] = encoded.matryoshka_logits
        inputs["nesting_dims"] = list(model.config.matryoshka_dims)
        heads = getattr(model, "heads", None)
        if getattr(heads, "efficient", False):
            inputs["logits_at"] = _efficient_logits_at(heads, encoded.embeddings)
    return inputs
