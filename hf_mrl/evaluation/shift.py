"""Robustness under distribution shift at every Matryoshka granularity, from one encoding pass per test set.

The same model is scored on an in-distribution test set ("clean") and on any number of shifted ones: given
by the user (e.g. sketches of the same classes) or built from the clean set with the image corruptions of
`hf_mrl.data.corruptions` (noise, blur, contrast, rotation at severities 1 to 5). Per dim and per set it
reports what the classification and retrieval evaluators report (nested-head top-k, k-NN, retrieval against
the reference set), and the drop from the clean set: `clean - shifted`, so a larger drop means less robust.

Keys: `{name}_dim{k}_{set}_{metric}` and `{name}_dim{k}_{set}_{metric}_drop` for each shifted set, and the
means over the shifted sets `{name}_dim{k}_shifted_{metric}` / `..._shifted_{metric}_drop`. Set names hold
no "_" (use "-", as in "noise-3"), so `{set}` is the part of the metric before the first "_".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..data.corruptions import corrupted_datasets
from ..modeling.checks import check_positive_ints
from .base import SEARCH_MODES, MatryoshkaEvaluator, check_not_empty, check_several_classes, encode_dataset
from .classification import _efficient_logits_at, classification_metrics
from .report import parse_metric_key
from .retrieval import RETRIEVAL_METRICS, retrieval_metrics

__all__ = ["CLEAN_SET", "MatryoshkaShiftEvaluator", "shift_metrics"]

CLEAN_SET = "clean"
SHIFTED_MEAN = "shifted"


def _check_set_names(names, argument: str) -> list[str]:
    names = list(names)
    for set_name in names:
        if not isinstance(set_name, str) or not set_name or "_" in set_name:
            raise ValueError(
                f"`{argument}` names must be non-empty strings without '_' (use '-', e.g. 'noise-3'), got {set_name!r}."
            )
    if SHIFTED_MEAN in names:
        raise ValueError(f"`{argument}` may not name a set {SHIFTED_MEAN!r}: that key holds the mean over shifted sets.")
    return names


def _check_retrieval_names(names) -> list[str]:
    if isinstance(names, str) or not all(metric in RETRIEVAL_METRICS for metric in names):
        raise ValueError(f"`retrieval_metric_names` must be a list drawn from {list(RETRIEVAL_METRICS)}, got {names!r}.")
    return list(names)


def _per_set(metrics: Mapping[str, float], set_name: str, name: str, keep=None) -> dict[str, float]:
    """`x_dim8_top1` -> `{name}_dim8_{set_name}_top1` (only metrics `keep` accepts, when given)."""
    renamed = {}
    for key, value in metrics.items():
        _, dim, metric = parse_metric_key(key)
        if keep is None or keep(metric):
            renamed[f"{name}_dim{dim}_{set_name}_{metric}"] = value
    return renamed


def shift_metrics(
    embeddings: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    dims: Sequence[int] | None = None,
    reference_embeddings=None,
    reference_labels=None,
    matryoshka_logits: Mapping[str, np.ndarray] | None = None,
    nesting_dims: Sequence[int] | None = None,
    logits_at: Mapping[str, Callable[[int], np.ndarray]] | None = None,
    top_k: Sequence[int] = (1,),
    knn_k: Sequence[int] = (1,),
    retrieval_ks: Sequence[int] | None = (10,),
    retrieval_metric_names: Sequence[str] = ("recall", "mrl_map"),
    search: str = "exact",
    search_params: Mapping | None = None,
    name: str = "shift",
) -> dict[str, float]:
    """Per-dim metrics of every test set and their drop from the clean set (see the module docstring).

    embeddings: {set name: (n_s, d) full embeddings or {dim: (n_s, dim)}}, with `CLEAN_SET` ("clean") and at
        least one shifted set.
    labels: {set name: (n_s,) classes}, the same set names.
    reference_embeddings / reference_labels: the k-NN database and retrieval corpus (e.g. the clean training
        split), shared by every set; None means leave-one-out within each set.
    matryoshka_logits: {set name: (len(nesting_dims), n_s, num_labels)} head logits; `logits_at`: {set name:
        dim -> logits} for MRL-E heads at other dims (as in `classification_metrics`).
    top_k / knn_k: head top-k and k-NN votes; retrieval_ks: retrieval cut-offs (None: no retrieval), scored
        with the metrics in `retrieval_metric_names` (relevant = same label).
    """
    if not isinstance(embeddings, Mapping) or not isinstance(labels, Mapping):
        raise ValueError("`embeddings` and `labels` must be dicts {set name: array}.")
    set_names = _check_set_names(embeddings, "embeddings")
    if CLEAN_SET not in set_names or len(set_names) < 2:
        raise ValueError(f"`embeddings` must hold the in-distribution set {CLEAN_SET!r} and at least one shifted set, got {set_names}.")
    if sorted(labels) != sorted(set_names):
        raise ValueError(f"`labels` must name the same sets as `embeddings` ({sorted(set_names)}), got {sorted(labels)}.")
    for argument, per_set in (("matryoshka_logits", matryoshka_logits), ("logits_at", logits_at)):
        if per_set is not None and sorted(per_set) != sorted(set_names):
            raise ValueError(f"`{argument}` must name the same sets as `embeddings` ({sorted(set_names)}), got {sorted(per_set)}.")
    if search not in SEARCH_MODES:
        raise ValueError(f"`search` must be one of {list(SEARCH_MODES)}, got {search!r}.")
    retrieval_metric_names = _check_retrieval_names(retrieval_metric_names)
    if retrieval_ks is not None:
        retrieval_ks = check_positive_ints(retrieval_ks, "retrieval_ks")
    if (reference_embeddings is None) != (reference_labels is None):
        raise ValueError("Give both `reference_embeddings` and `reference_labels`, or neither (leave-one-out).")

    results: dict[str, float] = {}
    for set_name in set_names:
        set_labels = np.asarray(labels[set_name])
        classification = classification_metrics(
            embeddings[set_name], set_labels, dims=dims, reference_embeddings=reference_embeddings,
            reference_labels=reference_labels,
            matryoshka_logits=None if matryoshka_logits is None else matryoshka_logits[set_name],
            nesting_dims=nesting_dims, logits_at=None if logits_at is None else logits_at[set_name],
            top_k=top_k, knn_k=knn_k, search=search, search_params=search_params, name="set",
        )
        results.update(_per_set(classification, set_name, name))
        if retrieval_ks is not None:
            retrieval = retrieval_metrics(
                embeddings[set_name], reference_embeddings, dims=dims, query_labels=set_labels,
                corpus_labels=reference_labels, ks=retrieval_ks, search=search, search_params=search_params, name="set",
            )
            results.update(_per_set(retrieval, set_name, name, keep=lambda m: m.split("@")[0] in retrieval_metric_names))
    return _with_drops(results, [set_name for set_name in set_names if set_name != CLEAN_SET], name)


def _with_drops(results: dict[str, float], shifted: list[str], name: str) -> dict[str, float]:
    """Adds each shifted set's drop from the clean set and the means over the shifted sets."""
    clean = {}
    for key, value in results.items():
        _, dim, metric = parse_metric_key(key)
        set_name, _, base_metric = metric.partition("_")
        if set_name == CLEAN_SET:
            clean[dim, base_metric] = value
    extra: dict[str, float] = {}
    for (dim, metric), clean_value in clean.items():
        values = [results[f"{name}_dim{dim}_{set_name}_{metric}"] for set_name in shifted]
        for set_name, value in zip(shifted, values):
            extra[f"{name}_dim{dim}_{set_name}_{metric}_drop"] = clean_value - value
        extra[f"{name}_dim{dim}_{SHIFTED_MEAN}_{metric}"] = float(np.mean(values))
        extra[f"{name}_dim{dim}_{SHIFTED_MEAN}_{metric}_drop"] = clean_value - float(np.mean(values))
    return {**results, **extra}


class MatryoshkaShiftEvaluator(MatryoshkaEvaluator):
    """Accuracy / recall at every dim on an in-distribution test set and on shifted ones, and the drops.

    Args:
        dataset (`datasets.Dataset`): the in-distribution test set (named "clean" in the keys).
        shifted_datasets (`dict[str, datasets.Dataset]`, *optional*): user-given shifted sets by name (names
            without "_"), with the same label column.
        corruptions (`list[str]`, *optional*): built-in image corruptions of `dataset` to add, from
            `hf_mrl.data.CORRUPTIONS` ("noise", "blur", "contrast", "rotation"), each at every `severities`
            (integers 1 to 5, defaults to (1, 3, 5)); named "{corruption}-{severity}". Deterministic (`seed`).
        reference_dataset (`datasets.Dataset`, *optional*): the k-NN database and retrieval corpus (e.g. the
            clean training split); None means leave-one-out within each set.
        collate_fn / reference_collate_fn: list of rows -> dict of tensors (the reference one defaults to
            `collate_fn`); None stacks the rows' model-input columns.
        label_column (`str`, defaults to "label"), image_column (`str`, defaults to "image"): the columns read.
        dims (`list[int]`, *optional*): dims to score (defaults to the model's nesting dims).
        top_k, knn_k, use_heads, search, search_params: as in `MatryoshkaClassificationEvaluator`.
        retrieval_ks (`list[int]` or None, defaults to (10,)), retrieval_metric_names: retrieval of the
            reference set (or each set itself) by every set's rows, relevant = same label.
        name (`str`, defaults to "shift"): the key prefix.

    `primary_metric` is the mean over shifted sets of top-1 head accuracy at the largest dim (of the first
    k-NN vote when there is no head there).
    """

    def __init__(
        self,
        dataset,
        shifted_datasets: Mapping | None = None,
        corruptions: Sequence[str] | None = None,
        severities: Sequence[int] = (1, 3, 5),
        reference_dataset=None,
        collate_fn: Callable[[list[dict]], dict] | None = None,
        reference_collate_fn: Callable[[list[dict]], dict] | None = None,
        label_column: str = "label",
        image_column: str = "image",
        dims: Sequence[int] | None = None,
        top_k: Sequence[int] = (1,),
        knn_k: Sequence[int] = (1,),
        retrieval_ks: Sequence[int] | None = (10,),
        retrieval_metric_names: Sequence[str] = ("recall", "mrl_map"),
        use_heads: bool = True,
        search: str = "exact",
        search_params: Mapping | None = None,
        seed: int = 0,
        name: str = "shift",
        batch_size: int = 64,
    ):
        super().__init__(name=name, dims=dims, batch_size=batch_size)
        if shifted_datasets is not None and not isinstance(shifted_datasets, Mapping):
            raise ValueError(f"`shifted_datasets` must be a dict {{name: dataset}}, got {type(shifted_datasets).__name__}.")
        shifted = dict(shifted_datasets or {})
        _check_set_names(shifted, "shifted_datasets")
        if CLEAN_SET in shifted:
            raise ValueError(f"`shifted_datasets` may not name a set {CLEAN_SET!r}: that is `dataset`.")
        if search not in SEARCH_MODES:
            raise ValueError(f"`search` must be one of {list(SEARCH_MODES)}, got {search!r}.")
        self.top_k, self.knn_k = check_positive_ints(top_k, "top_k"), check_positive_ints(knn_k, "knn_k")
        self.retrieval_ks = None if retrieval_ks is None else check_positive_ints(retrieval_ks, "retrieval_ks")
        self.retrieval_metric_names = _check_retrieval_names(retrieval_metric_names)
        given = {"dataset": dataset, **{f"shifted_datasets[{key!r}]": data for key, data in shifted.items()},
                 "reference_dataset": reference_dataset}
        check_not_empty(given)
        for argument, data in given.items():
            if data is not None and label_column not in getattr(data, "column_names", ()):
                raise ValueError(
                    f"`{argument}` has no label column {label_column!r}; its columns: {getattr(data, 'column_names', None)}."
                )
            if data is not None:
                check_several_classes(data[label_column], argument)
        if corruptions:
            built = corrupted_datasets(dataset, corruptions, severities, seed=seed, image_column=image_column)
            clashes = sorted(set(built) & set(shifted))
            if clashes:
                raise ValueError(f"`shifted_datasets` names {clashes} clash with the built-in corruptions' names.")
            shifted.update(built)
        if not shifted:
            raise ValueError("Give at least one shifted set: `shifted_datasets` and/or `corruptions`.")
        self.datasets = {CLEAN_SET: dataset, **shifted}
        smallest = min(len(data) for data in self.datasets.values())
        database_size = smallest - 1 if reference_dataset is None else len(reference_dataset)
        if self.knn_k[-1] > database_size:
            raise ValueError(f"`knn_k` holds {self.knn_k[-1]}, more than the {database_size} reference items.")
        self.labels = {set_name: np.asarray(data[label_column]) for set_name, data in self.datasets.items()}
        self.reference_dataset = reference_dataset
        self.reference_labels = None if reference_dataset is None else np.asarray(reference_dataset[label_column])
        self.collate_fn = collate_fn
        self.reference_collate_fn = reference_collate_fn or collate_fn
        self.use_heads = use_heads
        self.search = search
        self.search_params = dict(search_params or {})
        self.primary_metric_name = f"{SHIFTED_MEAN}_top1" if use_heads else f"{SHIFTED_MEAN}_{self.knn_k[0]}nn"

    @property
    def set_names(self) -> list[str]:
        """"clean" then the shifted sets, in the order they were given."""
        return list(self.datasets)

    def encode(self, model) -> dict:
        inputs: dict = {"embeddings": {}}
        logits, logits_at = {}, {}
        heads = getattr(model, "heads", None)
        for set_name, data in self.datasets.items():
            encoded = encode_dataset(model, data, self.collate_fn, self.batch_size, f"Encoding {self.name} {set_name}")
            inputs["embeddings"][set_name] = encoded.embeddings
            if self.use_heads and encoded.matryoshka_logits is not None:
                logits[set_name] = encoded.matryoshka_logits
                if getattr(heads, "efficient", False):
                    logits_at[set_name] = _efficient_logits_at(heads, encoded.embeddings)
        if logits:
            inputs["matryoshka_logits"] = logits
            inputs["nesting_dims"] = list(model.config.matryoshka_dims)
        if logits_at:
            inputs["logits_at"] = logits_at
        if self.reference_dataset is not None:
            inputs["reference_embeddings"] = encode_dataset(
                model, self.reference_dataset, self.reference_collate_fn, self.batch_size, f"Encoding {self.name} reference"
            ).embeddings
        return inputs

    def compute_metrics(
        self,
        embeddings: Mapping[str, np.ndarray],
        reference_embeddings=None,
        matryoshka_logits: Mapping[str, np.ndarray] | None = None,
        nesting_dims: Sequence[int] | None = None,
        logits_at: Mapping[str, Callable[[int], np.ndarray]] | None = None,
        dims: Sequence[int] | None = None,
    ) -> dict[str, float]:
        """Scores precomputed embeddings {set name: array} of this evaluator's sets (`set_names`, rows in
        dataset order); see `shift_metrics` for the forms each argument takes."""
        if (self.reference_dataset is None) != (reference_embeddings is None):
            raise ValueError(
                "Pass `reference_embeddings` exactly when the evaluator has a `reference_dataset` "
                f"(it {'has none' if self.reference_dataset is None else 'has one'})."
            )
        if not self.use_heads:
            matryoshka_logits = logits_at = None
        results = shift_metrics(
            embeddings, self.labels, dims=dims or self.dims, reference_embeddings=reference_embeddings,
            reference_labels=self.reference_labels, matryoshka_logits=matryoshka_logits, nesting_dims=nesting_dims,
            logits_at=logits_at, top_k=self.top_k, knn_k=self.knn_k, retrieval_ks=self.retrieval_ks,
            retrieval_metric_names=self.retrieval_metric_names, search=self.search, search_params=self.search_params,
            name=self.name,
        )
        largest = max(parse_metric_key(key)[1] for key in results)
        has_head = self.key(largest, f"{SHIFTED_MEAN}_top1") in results
        return self.remember(results, f"{SHIFTED_MEAN}_top1" if has_head else f"{SHIFTED_MEAN}_{self.knn_k[0]}nn")
