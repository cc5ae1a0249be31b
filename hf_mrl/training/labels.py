"""The class labels a classifier trains on: string labels encoded, class names into the config, ids checked against
the heads, all before any training."""

from __future__ import annotations

import datasets
import numpy as np

from ..data.generic import encode_string_labels

__all__ = ["set_class_names", "check_label_range", "encode_label_strings"]


def set_class_names(model, dataset) -> None:
    """Class names of a `ClassLabel` column go into `config.id2label`, so predictions, reports and the card show
    them; a dataset with more classes than the heads is refused before training."""
    feature = (getattr(dataset, "features", None) or {}).get("label")
    if not isinstance(feature, datasets.ClassLabel):
        return
    config = model.config
    if feature.num_classes > config.num_labels:
        raise ValueError(
            f"The dataset has {feature.num_classes} classes but the model's heads have num_labels="
            f"{config.num_labels} (`config.num_labels`); build the model with num_labels={feature.num_classes}."
        )
    if all(name == f"LABEL_{index}" for index, name in config.id2label.items()):
        names = feature.names + [f"LABEL_{index}" for index in range(feature.num_classes, config.num_labels)]
        config.id2label = dict(enumerate(names))
        config.label2id = {name: index for index, name in enumerate(names)}


def check_label_range(dataset, num_labels: int, where: str = "The dataset") -> None:
    """The class ids of a map-style dataset must fit the heads (or be -100, left out of the loss), and at least one
    must not be -100 (a set whose every label is -100 has nothing to score: NaN loss): checked before training,
    rather than found by the loss at the batch that holds the first bad id. `where` names the dataset."""
    if not isinstance(dataset, datasets.Dataset) or "label" not in dataset.column_names or len(dataset) == 0:
        return
    labels = np.asarray(dataset["label"])
    kept = labels[labels != -100]
    if not kept.size:
        raise ValueError(
            f"{where}'s `label` column holds only -100 (left out of the loss) in its {len(labels)} rows: nothing to "
            f"train or score on (the loss would be NaN); give class ids from 0 to {num_labels - 1}."
        )
    if kept.size and (kept.min() < 0 or kept.max() >= num_labels):
        bad = int(kept.max()) if kept.max() >= num_labels else int(kept.min())
        raise ValueError(
            f"{where}'s `label` column holds label {bad}, but the model's heads have num_labels={num_labels} "
            f"(`config.num_labels`: class ids 0 to {num_labels - 1}); build the model with num_labels={max(int(kept.max()) + 1, num_labels)} "
            "or fix the labels."
        )


def encode_label_strings(train_dataset, eval_dataset):
    """String labels (e.g. a CSV read with `load_dataset("csv", ...)`) become one `ClassLabel` over both sets, so
    the heads see class ids and the class names reach the config."""
    parts = {key: part for key, part in (("train", train_dataset), ("eval", eval_dataset))
             if isinstance(part, datasets.Dataset)}
    feature = next(iter(parts.values())).features.get("label") if parts else None
    if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
        return train_dataset, eval_dataset
    encoded = encode_string_labels(datasets.DatasetDict(parts))
    return encoded.get("train", train_dataset), encoded.get("eval", eval_dataset)
