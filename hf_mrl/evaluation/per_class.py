"""Per-class accuracy at every Matryoshka granularity: which classes lose accuracy at low dims, whether rare
classes lose more, and whether the errors stay within a super-class ("graceful failure").

Predictions per dim come from the nested heads where the model has one at that dim (MRL-E: any dim), else from
the 1-nearest neighbour in a reference set. From them, per dim:
- accuracy per class, overall and balanced (the mean over classes);
- head / torso / tail buckets by training frequency: the mean per-class accuracy of the most frequent third of
  the classes, the middle third and the rarest third (or classes with at least / fewer than given counts);
- with a super-class mapping (e.g. `wordnet_noun_super_classes()` for the WordNet categories): accuracy at the
  super-class level and the share of errors that stay within the true super-class, next to that share if
  errors fell on the other classes uniformly (`..._chance`);
- a confusion summary: the most frequent (true, predicted) pairs among the errors.

`per_class_accuracy` returns the full report (JSON-ready); `per_class_metrics` flattens it to the evaluators'
`{name}_dim{k}_{metric}` keys: `acc`, `balanced_acc`, `head_acc`, `torso_acc`, `tail_acc`, `class{i}_acc` (i:
the class's position in the report's sorted `classes`), `super_class_acc`, `errors_within_super_class` and
`errors_within_super_class_chance`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ..modeling.modeling_matryoshka import as_matryoshka_model
from ..modeling.nesting import resolve_dims
from .base import (
    MatryoshkaEvaluator,
    build_search_index,
    check_not_empty,
    per_dim_embeddings,
    run_search,
)
from .classification import _num_rows, encode_classification_inputs
from .metrics import remove_ids

__all__ = [
    "FREQUENCY_BUCKETS",
    "MatryoshkaPerClassEvaluator",
    "frequency_buckets",
    "per_class_accuracy",
    "per_class_metrics",
    "per_dim_predictions",
    "top_confusions",
]

FREQUENCY_BUCKETS = ("head", "torso", "tail")


def frequency_buckets(train_counts: Mapping, bounds: tuple[int, int] | None = None) -> dict[str, list]:
    """{"head": classes, "torso": ..., "tail": ...} from {class: training rows}.

    bounds None: classes ranked by count (most first; ties by class order), cut in thirds (the head gets the
    remainder first, then the torso). bounds (many, few): head = at least `many` rows, tail = fewer than `few`.
    """
    if not isinstance(train_counts, Mapping) or not train_counts:
        raise ValueError("`train_counts` must be a non-empty dict {class: number of training rows}.")
    if bounds is None:
        ranked = sorted(train_counts, key=lambda label: (-train_counts[label], label))
        third, extra = divmod(len(ranked), 3)
        head_end = third + (extra > 0)
        torso_end = head_end + third + (extra > 1)
        return {"head": ranked[:head_end], "torso": ranked[head_end:torso_end], "tail": ranked[torso_end:]}
    if (
        not isinstance(bounds, (tuple, list))
        or len(bounds) != 2
        or not all(isinstance(value, int) and not isinstance(value, bool) and value >= 0 for value in bounds)
        or bounds[0] < bounds[1]
    ):
        raise ValueError(f"`frequency_bounds` must be (many, few) with integers many >= few >= 0, got {bounds!r}.")
    many, few = bounds
    labels = sorted(train_counts)
    return {
        "head": [label for label in labels if train_counts[label] >= many],
        "torso": [label for label in labels if few <= train_counts[label] < many],
        "tail": [label for label in labels if train_counts[label] < few],
    }


def top_confusions(predictions, labels, num: int = 5, super_classes: Mapping | None = None) -> list[dict]:
    """The `num` most frequent (true, predicted) pairs among the errors, most first (ties: smaller labels
    first): `true`, `predicted`, `count`, `share_of_errors` and, with `super_classes`, `same_super_class`."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or predictions.ndim != 1:
        raise ValueError(f"`predictions` {predictions.shape} and `labels` {labels.shape} must be 1-D of one length.")
    wrong = predictions != labels
    pairs = Counter(zip(labels[wrong].tolist(), predictions[wrong].tolist()))
    total = int(wrong.sum())
    ranked = sorted(pairs.items(), key=lambda item: (-item[1], item[0]))[:num]
    summary = []
    for (true, predicted), count in ranked:
        entry = {"true": true, "predicted": predicted, "count": count, "share_of_errors": count / total}
        if super_classes is not None:
            entry["same_super_class"] = super_classes[true] == super_classes.get(predicted)
        summary.append(entry)
    return summary


def _check_super_classes(super_classes, classes) -> dict | None:
    if super_classes is None:
        return None
    if not isinstance(super_classes, Mapping):
        raise ValueError(f"`super_classes` must be a dict {{class: super-class}}, got {type(super_classes).__name__}.")
    missing = [label for label in classes if label not in super_classes]
    if missing:
        raise ValueError(f"`super_classes` has no super-class for classes {missing}; map every class.")
    return dict(super_classes)


def per_class_accuracy(
    predictions: Mapping[int, np.ndarray],
    labels,
    train_labels=None,
    super_classes: Mapping | None = None,
    class_names: Mapping | Sequence | None = None,
    frequency_bounds: tuple[int, int] | None = None,
    num_confusions: int = 5,
    prediction_sources: Mapping[int, str] | None = None,
) -> dict:
    """The per-class report of predictions {dim: (n,) predicted classes} against `labels` (n,).

    train_labels: the training rows' classes, for the head / torso / tail buckets (None: no buckets).
    super_classes: {class: super-class}; class_names: {class: name} or a list indexed by class, for the
    confusion summary. Returns `classes`, `train_counts`, `buckets`, `super_classes`, `class_names` and
    `per_dim`: {dim: accuracy, balanced_accuracy, per_class {class: accuracy}, bucket accuracies, super-class
    metrics, `confusions`, `source` (where the predictions came from, if `prediction_sources` says)}.
    """
    labels = np.asarray(labels)
    if not isinstance(predictions, Mapping) or not predictions:
        raise ValueError("`predictions` must be a non-empty dict {dim: (n,) predicted classes}.")
    for dim, predicted in predictions.items():
        if np.asarray(predicted).shape != labels.shape:
            raise ValueError(f"`predictions[{dim}]` has shape {np.asarray(predicted).shape}; `labels` has {labels.shape}.")
    if isinstance(num_confusions, bool) or not isinstance(num_confusions, int) or num_confusions < 0:
        raise ValueError(f"`num_confusions` must be an integer >= 0, got {num_confusions!r}.")
    classes = sorted(set(labels.tolist()))
    super_classes = _check_super_classes(super_classes, classes)
    train_counts = buckets = None
    if train_labels is not None:
        counts = Counter(np.asarray(train_labels).tolist())
        train_counts = {label: counts.get(label, 0) for label in sorted(set(classes) | set(counts))}
        buckets = frequency_buckets(train_counts, frequency_bounds)
    rows_of = {label: labels == label for label in classes}
    per_dim = {}
    for dim in sorted(predictions):
        predicted = np.asarray(predictions[dim])
        correct = predicted == labels
        per_class = {label: float(correct[rows].mean()) for label, rows in rows_of.items()}
        entry = {
            "accuracy": float(correct.mean()),
            "balanced_accuracy": float(np.mean(list(per_class.values()))),
            "per_class": per_class,
            "confusions": top_confusions(predicted, labels, num_confusions, super_classes),
        }
        if prediction_sources is not None:
            entry["source"] = prediction_sources[dim]
        if buckets is not None:
            for bucket, members in buckets.items():
                scored = [per_class[label] for label in members if label in per_class]
                entry[f"{bucket}_accuracy"] = float(np.mean(scored)) if scored else None
        if super_classes is not None:
            entry.update(_super_class_metrics(predicted, labels, super_classes, classes))
        per_dim[dim] = entry
    return {
        "classes": classes,
        "class_names": _names(class_names, classes),
        "train_counts": train_counts,
        "buckets": buckets,
        "super_classes": super_classes,
        "per_dim": per_dim,
    }


def _names(class_names, classes) -> dict | None:
    if class_names is None:
        return None
    if isinstance(class_names, Mapping):
        return {label: class_names.get(label, str(label)) for label in classes}
    return {label: class_names[label] if isinstance(label, int) and 0 <= label < len(class_names) else str(label)
            for label in classes}


def _super_class_metrics(predicted, labels, super_classes, classes) -> dict:
    """Super-class accuracy, the share of errors within the true super-class, and that share if each error
    fell uniformly on the other classes."""
    true_super = np.array([super_classes[label] for label in labels.tolist()], dtype=object)
    predicted_super = np.array([super_classes.get(label) for label in predicted.tolist()], dtype=object)
    wrong = predicted != labels
    size = Counter(super_classes[label] for label in classes)
    chance = [(size[super_classes[label]] - 1) / max(len(classes) - 1, 1) for label in labels[wrong].tolist()]
    return {
        "super_class_accuracy": float((true_super == predicted_super).mean()),
        "errors_within_super_class": float((true_super == predicted_super)[wrong].mean()) if wrong.any() else None,
        "errors_within_super_class_chance": float(np.mean(chance)) if wrong.any() else None,
    }


def per_class_metrics(report: Mapping, name: str = "per_class") -> dict[str, float]:
    """The report of `per_class_accuracy` as flat `{name}_dim{k}_{metric}` floats (see the module docstring)."""
    flat_names = {
        "accuracy": "acc", "balanced_accuracy": "balanced_acc", "head_accuracy": "head_acc",
        "torso_accuracy": "torso_acc", "tail_accuracy": "tail_acc", "super_class_accuracy": "super_class_acc",
        "errors_within_super_class": "errors_within_super_class",
        "errors_within_super_class_chance": "errors_within_super_class_chance",
    }
    results = {}
    for dim, entry in report["per_dim"].items():
        for field, metric in flat_names.items():
            if entry.get(field) is not None:
                results[f"{name}_dim{dim}_{metric}"] = entry[field]
        for index, label in enumerate(report["classes"]):
            results[f"{name}_dim{dim}_class{index}_acc"] = entry["per_class"][label]
    return results


def per_dim_predictions(
    embeddings,
    dims: Sequence[int],
    reference_embeddings=None,
    reference_labels=None,
    matryoshka_logits: np.ndarray | None = None,
    nesting_dims: Sequence[int] | None = None,
    logits_at: Callable[[int], np.ndarray] | None = None,
    labels=None,
    search: str = "exact",
) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """({dim: predicted classes}, {dim: "head" or "1nn"}): the nested head's argmax where there is one at the
    dim, else the label of the nearest reference row (leave-one-out within `embeddings`, labelled `labels`,
    when there is no reference)."""
    predictions, sources = {}, {}
    views = reference_views = None
    for dim in dims:
        if matryoshka_logits is not None and nesting_dims is not None and dim in nesting_dims:
            predictions[dim], sources[dim] = np.asarray(matryoshka_logits)[list(nesting_dims).index(dim)].argmax(-1), "head"
            continue
        if logits_at is not None:
            predictions[dim], sources[dim] = np.asarray(logits_at(dim)).argmax(-1), "head"
            continue
        leave_one_out = reference_embeddings is None
        if leave_one_out and labels is None:
            raise ValueError("1-NN predictions without `reference_embeddings` need the rows' own `labels`.")
        views = views or per_dim_embeddings(embeddings, dims)
        reference_views = reference_views or (views if leave_one_out else per_dim_embeddings(reference_embeddings, dims))
        database = np.asarray(labels if leave_one_out else reference_labels)
        _, ids = run_search(build_search_index(reference_views[dim], search), views[dim], 2 if leave_one_out else 1)
        if leave_one_out:
            ids = remove_ids(ids, np.arange(len(ids)))
        predictions[dim], sources[dim] = database[ids[:, 0]], "1nn"
    return predictions, sources


class MatryoshkaPerClassEvaluator(MatryoshkaEvaluator):
    """Per-class accuracy at every dim, head / torso / tail buckets, super-class errors and confusions.

    Args:
        dataset (`datasets.Dataset`): the evaluation split.
        train_labels (sequence, *optional*): the classes of the rows the model was trained on, for the buckets
            (e.g. `train_split["label"]`); None gives no buckets.
        reference_dataset (`datasets.Dataset`, *optional*): the 1-NN database for dims without a head; None
            means leave-one-out within `dataset`.
        super_classes (`dict`, *optional*): {class: super-class}, e.g. `wordnet_noun_super_classes()`.
        class_names (`dict` or `list`, *optional*): names for the confusion summary (default: the dataset's
            `ClassLabel` names when it has them).
        frequency_bounds (`(int, int)`, *optional*): (many, few) training rows for head / tail (default: thirds).
        num_confusions (`int`, defaults to 5): confused pairs listed per dim.
        collate_fn / reference_collate_fn, label_column, dims, use_heads, search, name, batch_size: as in
            `MatryoshkaClassificationEvaluator`.

    `evaluator(model)` returns the flat metrics; `evaluator.report(model)` the full report (confusions,
    per-class accuracy by class). `primary_metric` is the tail bucket's accuracy at the largest dim (the
    balanced accuracy without `train_labels`).
    """

    def __init__(
        self,
        dataset,
        train_labels=None,
        reference_dataset=None,
        super_classes: Mapping | None = None,
        class_names: Mapping | Sequence | None = None,
        frequency_bounds: tuple[int, int] | None = None,
        num_confusions: int = 5,
        collate_fn: Callable[[list[dict]], dict] | None = None,
        reference_collate_fn: Callable[[list[dict]], dict] | None = None,
        label_column: str = "label",
        dims: Sequence[int] | None = None,
        use_heads: bool = True,
        search: str = "exact",
        name: str = "per_class",
        batch_size: int = 64,
    ):
        super().__init__(name=name, dims=dims, batch_size=batch_size)
        check_not_empty({"dataset": dataset, "reference_dataset": reference_dataset})
        if frequency_bounds is not None:
            frequency_buckets({0: 1}, frequency_bounds)  # checks the bounds now
            if train_labels is None:
                raise ValueError(
                    f"`frequency_bounds`={frequency_bounds!r} sets the head / tail buckets, which need `train_labels` "
                    "(the classes of the training rows); pass them or drop `frequency_bounds`."
                )
        for argument, data in (("dataset", dataset), ("reference_dataset", reference_dataset)):
            if data is not None and label_column not in getattr(data, "column_names", ()):
                raise ValueError(f"`{argument}` has no label column {label_column!r}; its columns: {getattr(data, 'column_names', None)}.")
        self.labels = np.asarray(dataset[label_column])
        self.train_labels = None if train_labels is None else np.asarray(train_labels)
        self.super_classes = _check_super_classes(super_classes, sorted(set(self.labels.tolist())))
        if class_names is None:
            class_names = getattr(dataset.features.get(label_column), "names", None) if hasattr(dataset, "features") else None
        self.class_names = class_names
        self.frequency_bounds = frequency_bounds
        if isinstance(num_confusions, bool) or not isinstance(num_confusions, int) or num_confusions < 0:
            raise ValueError(f"`num_confusions` must be an integer >= 0, got {num_confusions!r}.")
        self.num_confusions = num_confusions
        self.dataset, self.reference_dataset = dataset, reference_dataset
        self.reference_labels = None if reference_dataset is None else np.asarray(reference_dataset[label_column])
        self.collate_fn = collate_fn
        self.reference_collate_fn = reference_collate_fn or collate_fn
        self.use_heads = use_heads
        self.search = search
        self.primary_metric_name = "tail_acc" if train_labels is not None else "balanced_acc"

    def encode(self, model) -> dict:
        return encode_classification_inputs(self, model)

    def compute_report(
        self,
        embeddings,
        reference_embeddings=None,
        matryoshka_logits: np.ndarray | None = None,
        nesting_dims: Sequence[int] | None = None,
        logits_at: Callable[[int], np.ndarray] | None = None,
        dims: Sequence[int] | None = None,
    ) -> dict:
        """The full report (see `per_class_accuracy`) of precomputed embeddings / logits of this evaluator's data."""
        if (self.reference_dataset is None) != (reference_embeddings is None):
            raise ValueError(
                "Pass `reference_embeddings` exactly when the evaluator has a `reference_dataset` "
                f"(it {'has none' if self.reference_dataset is None else 'has one'})."
            )
        if _num_rows(embeddings) != len(self.labels):
            raise ValueError(f"`embeddings` has {_num_rows(embeddings)} rows for the {len(self.labels)} rows of `dataset`.")
        if not self.use_heads:
            matryoshka_logits = logits_at = None
        dims = resolve_dims(embeddings, dims or self.dims, nesting_dims=nesting_dims)
        predictions, sources = per_dim_predictions(
            embeddings, dims, reference_embeddings, self.reference_labels, matryoshka_logits, nesting_dims, logits_at,
            labels=self.labels, search=self.search,
        )
        return per_class_accuracy(
            predictions, self.labels, self.train_labels, self.super_classes, self.class_names, self.frequency_bounds,
            self.num_confusions, prediction_sources=sources,
        )

    def compute_metrics(self, embeddings, reference_embeddings=None, matryoshka_logits=None, nesting_dims=None,
                        logits_at=None, dims: Sequence[int] | None = None) -> dict[str, float]:
        """The flat metrics (see `per_class_metrics`) of precomputed embeddings / logits."""
        report = self.compute_report(embeddings, reference_embeddings, matryoshka_logits, nesting_dims, logits_at, dims)
        return self.remember(per_class_metrics(report, self.name), self.primary_metric_name)

    def report(self, model) -> dict:
        """Encodes the data once with `model` and returns the full report."""
        model = as_matryoshka_model(model)
        return self.compute_report(dims=self.resolve_dims(model), **self.encode(model))
