"""Loaders for any image-text or classification dataset: a Hub id, a `save_to_disk` folder, a
data file or an `imagefolder`, with its columns renamed to this package's standard names
(`image`, `text`, `label`), so the collators and scripts work unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

import datasets
import pyarrow.compute as pc

from ._common import AnyDataset, _describe, apply_limit, check_limit, column_names, load_source, rename_to_standard

__all__ = [
    "load_image_text_dataset",
    "load_classification_dataset",
    "standardize_classification_columns",
    "standardize_image_text_columns",
]

_INTEGER_TEXT = r"^\s*[+-]?\d+\s*$"  # a label text that reads as a class id


def load_image_text_dataset(
    source,
    image_column: str = "image",
    text_column: str = "text",
    split: str | None = None,
    limit: int | None = None,
    streaming: bool = False,
    **load_kwargs,
) -> AnyDataset:
    """Any image-caption dataset with its columns renamed to `image` and `text`.

    Args:
        source: a Hub id, a local folder (`save_to_disk` output, `imagefolder` with a
            metadata file, ...), a data file, or a `datasets.Dataset` / `DatasetDict`.
        image_column, text_column: the source's column names.
        split: the split to return; None returns every split.
        limit: keep the first `limit` rows of each split.
        streaming: return an `IterableDataset` (works with the collators too).
        load_kwargs: passed to `datasets.load_dataset`.
    """
    _check_column_argument(image_column, "image_column")
    _check_column_argument(text_column, "text_column")
    check_limit(limit)
    dataset = load_source(source, split, streaming=streaming, **load_kwargs)
    return apply_limit(standardize_image_text_columns(dataset, image_column, text_column, source=source), limit)


def standardize_image_text_columns(
    dataset: AnyDataset, image_column: str = "image", text_column: str = "text", label_column: str | None = None, source=None
) -> AnyDataset:
    """Renames the image, text (and, when given, label) columns of a loaded dataset to `image`, `text`
    and `label`; a missing column raises a `ValueError` naming the argument and the available columns."""
    mapping = {image_column: "image", text_column: "text"}
    arguments = {image_column: "image_column", text_column: "text_column"}
    if label_column is not None:
        mapping[label_column], arguments[label_column] = "label", "label_column"
    return rename_to_standard(dataset, mapping, arguments, source if source is not None else dataset)


def load_classification_dataset(
    source,
    text_column: str | None = None,
    image_column: str | None = None,
    label_column: str = "label",
    split: str | None = None,
    limit: int | None = None,
    streaming: bool = False,
    **load_kwargs,
) -> AnyDataset:
    """Any text or image classification dataset with its columns renamed to `text` or `image`
    and `label`. String labels become a `ClassLabel` whose sorted names are shared by all splits.

    Args:
        source: as in `load_image_text_dataset`.
        text_column, image_column: the input column (give at most one); with neither, the
            source's `image` column is used, else its `text` column.
        label_column: the source's label column.
        split, limit, streaming, load_kwargs: as in `load_image_text_dataset`.
    """
    if text_column is not None and image_column is not None:
        raise ValueError(f"Pass `text_column` or `image_column`, not both (got {text_column!r} and {image_column!r}).")
    for value, name in ((text_column, "text_column"), (image_column, "image_column")):
        if value is not None:
            _check_column_argument(value, name)
    _check_column_argument(label_column, "label_column")
    check_limit(limit)
    dataset = load_source(source, split, streaming=streaming, **load_kwargs)
    return apply_limit(standardize_classification_columns(dataset, text_column, image_column, label_column, source), limit)


def standardize_classification_columns(
    dataset: AnyDataset,
    text_column: str | None = None,
    image_column: str | None = None,
    label_column: str = "label",
    source=None,
) -> AnyDataset:
    """Renames the input column of a loaded dataset (or every split of a `DatasetDict`) to `text` or
    `image` and its label column to `label`; string labels become one `ClassLabel` (sorted names)
    shared by all splits. With neither input column given, `image` is used if present, else `text`.
    Float labels raise a `ValueError`: classification needs integer ids or strings."""
    source = source if source is not None else dataset
    if text_column is None and image_column is None:
        available = column_names(dataset) or []
        if "image" in available:
            image_column = "image"
        elif "text" in available:
            text_column = "text"
        else:
            raise ValueError(
                f"{_describe(source)} has no `image` or `text` column; pass `image_column` or `text_column` "
                f"(available columns: {available})."
            )
    input_column, standard, argument = (
        (image_column, "image", "image_column") if image_column is not None else (text_column, "text", "text_column")
    )
    dataset = rename_to_standard(
        dataset,
        {input_column: standard, label_column: "label"},
        {input_column: argument, label_column: "label_column"},
        source,
    )
    check_label_dtype(dataset, label_column)
    return encode_string_labels(dataset)


def _check_column_argument(value, name: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"`{name}` must be a non-empty column name, got {value!r}.")


def check_label_dtype(dataset: AnyDataset, label_column: str) -> None:
    """Refuses a `label` column classification cannot use, naming `label_column`, the row and what is allowed: an
    empty cell (missing, or NaN in a number column), float labels, mixed kinds (numbers and texts in one JSON
    column, or texts of which some are integers and some are not). Streams are checked by their type only."""
    parts = dict(dataset) if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)) else {"": dataset}
    for split, part in parts.items():
        feature = (part.features or {}).get("label")
        if isinstance(part, datasets.Dataset) and feature is not None and not isinstance(feature, datasets.ClassLabel):
            _check_label_cells(part, feature, f"`label_column` {label_column!r}", f" of split {split!r}" if split else "")
        if isinstance(feature, datasets.Value) and feature.dtype.startswith("float"):
            values = [value for value in part["label"][:1000] if value is not None] if isinstance(part, datasets.Dataset) else []
            example = next((value for value in values if not float(value).is_integer()), values[0] if values else None)
            raise ValueError(
                f"`label_column` {label_column!r} holds floats (e.g. {example}); classification needs integer ids "
                "or strings."
            )


def _check_label_cells(part: datasets.Dataset, feature, column: str, where: str) -> None:
    """One pass over the label cells (arrow kernels): the first empty, NaN or odd-kind cell, by row."""
    values = part.with_format("arrow")["label"]
    if values.null_count:
        row = pc.index(pc.is_null(values), True).as_py()
        raise ValueError(f"{column} is empty at row {row}{where}; every row needs a label (fill the cell or drop the row).")
    if isinstance(feature, datasets.Value) and feature.dtype.startswith("float"):
        nan = pc.is_nan(values)
        if pc.any(nan).as_py():
            row = pc.index(nan, True).as_py()
            raise ValueError(f"{column} is NaN at row {row}{where} (an empty cell read as a number); every row needs "
                             "a label (fill the cell or drop the row).")
    elif isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        integer = pc.match_substring_regex(values, _INTEGER_TEXT)
        if 0 < (pc.sum(integer).as_py() or 0) < len(values):
            first_id, first_name = pc.index(integer, True).as_py(), pc.index(integer, False).as_py()
            raise ValueError(
                f"{column} mixes class ids and class names{where} (row {first_id}: {values[first_id].as_py()!r}, row "
                f"{first_name}: {values[first_name].as_py()!r}); use one kind: integer ids or names."
            )
    elif not isinstance(feature, datasets.Value):
        cells = part["label"]
        kinds = [type(cell) for cell in cells]
        row = next((index for index, kind in enumerate(kinds) if kind is not kinds[0]), None)
        if row is not None:
            raise ValueError(
                f"{column} mixes {kinds[0].__name__} and {kinds[row].__name__} labels{where} (row 0: {cells[0]!r}, row "
                f"{row}: {cells[row]!r}); use one kind: integer ids or names."
            )
        if kinds[0] not in (int, str):
            raise ValueError(f"{column} holds {kinds[0].__name__} values (row 0: {cells[0]!r}); classification needs "
                             "integer ids or names.")


def encode_string_labels(dataset: AnyDataset) -> AnyDataset:
    """Casts a string `label` column to one `ClassLabel` computed over every split (the
    per-split `class_encode_column` would number the classes differently in each split)."""
    parts = dict(dataset) if isinstance(dataset, datasets.DatasetDict) else {"": dataset}
    if not all(isinstance(part, datasets.Dataset) for part in parts.values()):
        return dataset  # streams are left as they come: their label set is not known up front
    feature = next(iter(parts.values())).features["label"]
    if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
        return dataset
    names = sorted({label for part in parts.values() for label in part.unique("label")})
    encoded = {name: part.cast_column("label", datasets.ClassLabel(names=names)) for name, part in parts.items()}
    return datasets.DatasetDict(encoded) if isinstance(dataset, datasets.DatasetDict) else encoded[""]


def align_class_labels(dataset, id2label: Mapping) -> AnyDataset:
    """Renumbers a `ClassLabel` `label` column to a model's classes, by name: the data's "positive" becomes the
    id the model's heads use for "positive", whatever order the data's own numbering has. Data without class
    names, or a model with the default `LABEL_i` names, is returned as it is; a class the model does not know is
    an error. A string `label` column (a CSV scored after training) is numbered by the model's class names."""
    feature = (getattr(dataset, "features", None) or {}).get("label")
    names = [str(id2label[key]) for key in sorted(id2label, key=int)]
    if names == [f"LABEL_{index}" for index in range(len(names))]:
        return dataset
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string") \
            and isinstance(dataset, datasets.Dataset):
        unknown = sorted(set(dataset.unique("label")) - set(names))
        if unknown:
            raise ValueError(f"The data has classes {unknown} that the model does not know; the model's classes: {names}.")
        return dataset.cast_column("label", datasets.ClassLabel(names=names))
    if not isinstance(feature, datasets.ClassLabel):
        return dataset
    if feature.names == names:
        return dataset
    unknown = [name for name in feature.names if name not in names]
    if unknown:
        raise ValueError(f"The data has classes {unknown} that the model does not know; the model's classes: {names}.")
    new_ids = [names.index(name) for name in feature.names]
    renumbered = dataset.cast_column("label", datasets.Value("int64")).map(
        lambda batch: {"label": [new_ids[label] for label in batch["label"]]}, batched=True
    )
    return renumbered.cast_column("label", datasets.ClassLabel(names=names))
