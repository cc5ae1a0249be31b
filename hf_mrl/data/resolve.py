"""One data layer for the training scripts and the CLI.

`DataArguments` (a dataclass `HfArgumentParser` reads) name the data: a built-in dataset, a Hub id,
a local folder (`save_to_disk` output, `imagefolder`), one data file, or separate train / validation /
test files. `load_splits` returns its train / eval / test splits with this package's standard columns
(`text` or `image`, `label`; pairs keep theirs), the split specs used and the class names. Several train files
(contrastive tasks) give several training datasets, `{file name without extension: Dataset}`.

Split specs may slice as in `datasets`: "train[:90%]", "train[100:200]", "test[-10%:]" (percentages
rounded to the closest row). `max_*_samples` keep the first rows after slicing.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets

from ..modeling.file_checks import first_line, looks_like_local_path
from ._common import check_image_cells, first_rows, load_source
from .arguments import _SPEC_EXAMPLES, BUILTIN_DATASETS, DEFAULT_VALIDATION_PERCENTAGE, DataArguments
from .emoji import load_emoji_pairs
from .fashion_mnist import load_fashion_mnist, load_fashion_mnist_captions
from .generic import standardize_classification_columns, standardize_image_text_columns
from .wordnet import load_wordnet_nouns, load_wordnet_pairs

__all__ = [
    "BUILTIN_DATASETS",
    "DataArguments",
    "DatasetSplits",
    "load_split",
    "load_splits",
    "check_splits",
    "slice_split",
    "split_names",
    "train_file_names",
    "validate_data_arguments",
]

TASKS = ("classification", "pairs", "image-text")
DATA_FILE_EXTENSIONS = (".csv", ".tsv", ".json", ".jsonl", ".parquet")

_BUILTIN_SPLITS = {
    "fashion-mnist": ("train", "test"),
    "wordnet-nouns": ("train", "validation", "test"),
    "wordnet-pairs": ("train", "validation", "test"),
    "wordnet-triplets": ("train", "validation", "test"),
    "emoji": ("train", "test"),
    "fashion-mnist-captions": ("train", "test"),
}
HELD_OUT_SEED = 42  # seeds the held-out validation part (the training scripts and `hf-mrl eval --split heldout`)
_FILE_SPLITS = {"train_file": "train", "validation_file": "validation", "test_file": "test"}
_SPLIT_SPEC = re.compile(r"^(?P<name>[^\[\]+]*)(?P<slice>\[[^\[\]]*\])?$")


@dataclass
class DatasetSplits:
    """The splits `load_splits` returns, the specs they came from (for reports) and the class names."""

    train: datasets.Dataset | datasets.IterableDataset | dict[str, datasets.Dataset] | None  # a dict: several files
    eval: datasets.Dataset | None
    test: datasets.Dataset | None
    train_split: str | None
    eval_split: str | None
    test_split: str | None
    class_names: list[str] | None


@dataclass
class _Source:
    """Opened data: its split names and a loader `load(split name, row limit hint)`."""

    description: str
    splits: tuple[str, ...]
    load: Callable[[str, int | None], datasets.Dataset]
    check_images: bool = False  # open every image of a taken split (user files; the built-ins are made here)


# -- checks -------------------------------------------------------------------------------------------------


def _parse_split_spec(spec, argument: str, allow_empty_name: bool = False) -> tuple[str, str | None]:
    """`"train[:90%]"` -> `("train", "[:90%]")`; a `ValueError` naming `argument` for anything else."""
    match = _SPLIT_SPEC.match(spec.strip()) if isinstance(spec, str) else None
    name = match["name"].strip() if match else ""
    if match is None or not (name or allow_empty_name):
        raise ValueError(f"`{argument}` {spec!r} is not a split spec; use a split name such as {_SPEC_EXAMPLES}.")
    if match["slice"] is not None:
        try:
            datasets.ReadInstruction.from_spec(f"split{match['slice']}")
        except (ValueError, AssertionError) as error:
            raise ValueError(
                f"`{argument}` {spec!r} has a bad slice ({first_line(error).replace('split[', name + '[')}); "
                f"use e.g. {_SPEC_EXAMPLES}."
            ) from None
    return name, match["slice"]


def _check_positive(value, argument: str) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
        raise ValueError(f"`{argument}` must be None or a positive integer, got {value!r}.")


def _looks_like_path(name: str) -> bool:
    return looks_like_local_path(name) or bool(Path(name).suffix)


def _check_file(path: str, argument: str) -> None:
    if not isinstance(path, str) or not path:
        raise ValueError(f"`{argument}` must be a file path, got {path!r}.")
    if Path(path).suffix.lower() not in DATA_FILE_EXTENSIONS:
        raise ValueError(
            f"`{argument}` {path!r} has an unsupported extension; allowed: {', '.join(DATA_FILE_EXTENSIONS)}."
        )
    if not Path(path).expanduser().is_file():
        raise FileNotFoundError(f"file not found: {path} (`{argument}` {path!r} does not exist).")


def _builtin_list(task: str | None = None) -> list[str]:
    return [name for name, kind in BUILTIN_DATASETS.items() if task is None or kind == task]


def train_file_names(paths: list[str]) -> list[str]:
    """The names of several train files' datasets: each file's name without extension."""
    return [Path(path).stem for path in paths]


def _check_train_files(data_args: DataArguments, task: str) -> None:
    """Several train files: each one a training dataset of a contrastive task, named by its file name (distinct),
    evaluated on `validation_file` / `test_file`."""
    paths = data_args.train_file
    if not paths:
        raise ValueError("`train_file` is an empty list; give one or more data files.")
    for path in paths:
        _check_file(path, "train_file")
    names = train_file_names(paths)
    repeated = next((name for name in names if names.count(name) > 1), None)
    if repeated is not None:
        raise ValueError(f"`train_file` {paths!r} holds two files named {repeated!r}; the name (without extension) "
                         "names each training dataset: rename one.")
    if task == "classification":
        raise ValueError(f"`train_file` {paths!r} gives several training datasets, which the contrastive tasks (pairs, "
                         "image-text) train on; a classifier trains on one set of classes: join the files.")
    if data_args.streaming:
        raise ValueError(f"`streaming` reads the train split as a stream; several `train_file`s {paths!r} need each "
                         "dataset's length (its share of the batches): drop --streaming.")
    if data_args.validation_file is None and data_args.test_file is None:
        raise ValueError(f"Several `train_file`s {paths!r} are trained on whole; give `validation_file` (or "
                         "`test_file`) to evaluate on.")
    if data_args.validation_split_percentage is not None:
        raise ValueError(f"`validation_split_percentage` holds part of one train split out; with several "
                         f"`train_file`s {paths!r} the eval split is `validation_file` / `test_file`: drop it.")


def validate_data_arguments(data_args: DataArguments, task: str = "classification") -> None:
    """Every check of `data_args` that needs no data loading; raises `ValueError` (`FileNotFoundError`
    for missing paths) with one line naming the argument, the value and what is allowed."""
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {list(TASKS)}, got {task!r}.")
    if isinstance(data_args.train_file, list):
        _check_train_files(data_args, task)
        data_args = _first_train_file(data_args)
    files = {argument: getattr(data_args, argument) for argument in _FILE_SPLITS}
    given_files = {argument: value for argument, value in files.items() if value is not None}
    name = data_args.dataset_name
    if name is not None and given_files:
        raise ValueError(
            f"Give `dataset_name` or data files, not both (got dataset_name={name!r} and "
            + ", ".join(f"{argument}={value!r}" for argument, value in given_files.items())
            + ")."
        )
    if name is None and not given_files:
        raise ValueError(
            f"Give `dataset_name` (a built-in dataset {_builtin_list(task)}, a Hub id, a local folder or a data file) "
            "or `train_file` / `validation_file` / `test_file`."
        )
    _check_positive(data_args.max_train_samples, "max_train_samples")
    _check_positive(data_args.max_eval_samples, "max_eval_samples")
    _check_positive(data_args.max_test_samples, "max_test_samples")
    percentage = data_args.validation_split_percentage
    if percentage is not None and (
        not isinstance(percentage, int) or isinstance(percentage, bool) or not 1 <= percentage <= 99
    ):
        raise ValueError(f"`validation_split_percentage` must be an integer from 1 to 99, got {percentage!r}.")
    if percentage is not None and data_args.eval_split is not None:
        raise ValueError(
            f"Give `eval_split` ({data_args.eval_split!r}) or `validation_split_percentage` ({percentage}), not both."
        )
    _parse_split_spec(data_args.train_split, "train_split")
    for argument in ("eval_split", "test_split"):
        if getattr(data_args, argument) is not None:
            _parse_split_spec(getattr(data_args, argument), argument)
    columns = {argument: getattr(data_args, argument) for argument in ("text_column", "image_column", "label_column")}
    for argument, value in columns.items():
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"`{argument}` must be a non-empty column name, got {value!r}.")
    # The label column: given, else "label" for classification (image-text data has labels only when named).
    label_column = data_args.label_column or ("label" if task == "classification" else None)
    for argument in ("text_column", "image_column"):
        if label_column is not None and columns[argument] == label_column:
            raise ValueError(
                f"`{argument}` and `label_column` name the same column {label_column!r}"
                + ("" if data_args.label_column else " (the default label column)")
                + "; the inputs and the labels must be two different columns."
            )
    if task == "classification" and data_args.text_column is not None and data_args.image_column is not None:
        raise ValueError(
            f"Give `text_column` or `image_column`, not both (got {data_args.text_column!r} and "
            f"{data_args.image_column!r})."
        )
    for argument, value in given_files.items():
        _check_file(value, argument)
    if name is None:
        return
    if not isinstance(name, str) or not name:
        raise ValueError(f"`dataset_name` must be a non-empty string, got {name!r}.")
    if name in BUILTIN_DATASETS:
        if BUILTIN_DATASETS[name] != task:
            raise ValueError(
                f"`dataset_name` {name!r} is a built-in {BUILTIN_DATASETS[name]} dataset; built-in {task} datasets: "
                f"{_builtin_list(task)}."
            )
        given = [argument for argument, value in columns.items() if value is not None]
        if given or data_args.dataset_config_name is not None:
            given += ["dataset_config_name"] if data_args.dataset_config_name is not None else []
            raise ValueError(f"{given} apply to Hub / local datasets; the built-in {name!r} has fixed columns.")
        return
    if name == "wordnet":
        raise ValueError(
            f"`dataset_name` 'wordnet' is not a built-in dataset any more: use 'wordnet-nouns' (classification) or "
            f"'wordnet-pairs' (text pairs); built-in datasets: {list(BUILTIN_DATASETS)}."
        )
    path = Path(name).expanduser()
    if path.is_file():
        _check_file(name, "dataset_name")
    elif not path.exists():
        if _looks_like_path(name):
            what = "file" if Path(name).suffix.lower() in DATA_FILE_EXTENSIONS else "folder"
            raise FileNotFoundError(
                f"{what} not found: {name} (`dataset_name` {name!r} looks like a local path but does not exist; the "
                f"Hugging Face Hub was not asked; built-in datasets: {list(BUILTIN_DATASETS)})."
            )
        close = difflib.get_close_matches(name.lower(), list(BUILTIN_DATASETS), n=1, cutoff=0.75)
        if close:
            raise ValueError(
                f"`dataset_name` {name!r} is not a built-in dataset (did you mean {close[0]!r}?); built-in datasets: "
                f"{list(BUILTIN_DATASETS)}."
            )


# -- opening a source ---------------------------------------------------------------------------------------


def _root_cause(error: BaseException) -> str:
    """The first line of the innermost error (`datasets` wraps the parser's "why" in "An error occurred while
    generating the dataset")."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return first_line(error)


def _hub_failure(error: BaseException) -> str:
    """Why a Hub dataset could not be loaded, in words: offline mode, or the library's first line."""
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"offline mode is on ({variable}=1), so it was not downloaded and is not in the local cache"
    return f"no such dataset, or the Hub is unreachable ({first_line(error)})"


def _builtin_source(name: str, image_size: int | None) -> _Source:
    loaders = {
        "fashion-mnist": load_fashion_mnist,
        "wordnet-nouns": load_wordnet_nouns,
        "wordnet-pairs": lambda split, limit: load_wordnet_pairs(kind="word", split=split, limit=limit),
        "wordnet-triplets": lambda split, limit: load_wordnet_pairs(kind="word", split=split, limit=limit,
                                                                    hard_negatives=True),
        "emoji": lambda split, limit: load_emoji_pairs(
            split=split, limit=limit, **({} if image_size is None else {"image_size": image_size})
        ),
        "fashion-mnist-captions": load_fashion_mnist_captions,
    }
    loader = loaders[name]
    return _Source(repr(name), _BUILTIN_SPLITS[name], lambda split, limit: loader(split=split, limit=limit))


def _is_blank(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    lines = [line for line in head.splitlines() if line.strip()]
    return not lines or (path.suffix.lower() in (".csv", ".tsv") and len(lines) == 1 and len(head) < 1 << 16)


def _read_file(path: str, argument: str) -> datasets.Dataset:
    """One data file as a `Dataset`; empty or unreadable files give a one-line `ValueError`."""
    resolved = Path(path).expanduser()
    no_rows = ValueError(f"`{argument}` {path!r} has no rows.")
    try:
        blank = resolved.suffix.lower() != ".parquet" and _is_blank(resolved)
    except OSError as error:  # permissions, a folder, a device: one line naming the file
        raise ValueError(f"Could not read `{argument}` {path!r}: {error.strerror or first_line(error)}.") from None
    if blank:
        raise no_rows
    try:
        dataset = load_source(str(resolved), split="train")
    except Exception as error:  # noqa: BLE001 - any parser error becomes one line naming the file
        raise ValueError(
            f"Could not read `{argument}` {path!r} as a {resolved.suffix or 'data'} file: {_root_cause(error)}"
        ) from None
    if len(dataset) == 0:
        raise no_rows
    return dataset


def _path_under(row: dict, folder: Path) -> dict:
    return {"image": str(folder / os.path.expanduser(row["image"]))}


def _decode_image_paths(parts: dict[str, datasets.Dataset], folders: dict[str, Path]) -> dict[str, datasets.Dataset]:
    """An `image` column of file paths (absolute, or relative to the data file's folder) becomes `datasets.Image`."""
    decoded = {}
    for split, part in parts.items():
        feature = part.features.get("image")
        if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
            folder = folders.get(split)
            if folder is not None:
                part = part.map(_path_under, fn_kwargs={"folder": folder})
            part = part.cast_column("image", datasets.Image())
        decoded[split] = part
    return decoded


def _open_local(data_args: DataArguments) -> tuple[str, dict[str, datasets.Dataset], dict[str, Path]]:
    """(description for messages, {split: Dataset}, {split: folder of its data file}) of a non-built-in source."""
    name = data_args.dataset_name
    if name is None or Path(name).expanduser().is_file():
        files = (
            {"train": ("dataset_name", name)}
            if name is not None
            else {
                split: (argument, getattr(data_args, argument))
                for argument, split in _FILE_SPLITS.items()
                if getattr(data_args, argument) is not None
            }
        )
        parts = {split: _read_file(path, argument) for split, (argument, path) in files.items()}
        folders = {split: Path(path).expanduser().resolve().parent for split, (_, path) in files.items()}
        description = " + ".join(repr(path) for _, path in files.values())
        return description, parts, folders
    path = Path(name).expanduser()
    kwargs = {"name": data_args.dataset_config_name} if data_args.dataset_config_name is not None else {}
    try:
        loaded = load_source(name, **kwargs)
    except Exception as error:  # noqa: BLE001 - `datasets` / Hub errors become one line
        if path.exists():
            raise ValueError(f"`dataset_name` {name!r} could not be loaded as a local folder: {first_line(error)}") from None
        raise ValueError(
            f"`dataset_name` {name!r} is not a built-in dataset (built-in: {', '.join(BUILTIN_DATASETS)}) nor a local "
            f"folder or file, and the Hugging Face Hub could not provide it: {_hub_failure(error)}."
        ) from None
    if isinstance(loaded, datasets.Dataset):  # a folder saved from one Dataset: its only split is "train"
        loaded = datasets.DatasetDict({"train": loaded})
    return repr(name), dict(loaded), {}


def _standardize(parts: dict, data_args: DataArguments, task: str) -> dict[str, datasets.Dataset]:
    """Standard column names (one `ClassLabel` over every split for string labels)."""
    dataset = datasets.DatasetDict(parts)
    source = data_args.dataset_name or next(
        getattr(data_args, argument) for argument in _FILE_SPLITS if getattr(data_args, argument) is not None
    )
    if task == "classification":
        dataset = standardize_classification_columns(
            dataset, data_args.text_column, data_args.image_column, data_args.label_column or "label", source
        )
    elif task == "image-text":
        dataset = standardize_image_text_columns(
            dataset,
            data_args.image_column or "image",
            data_args.text_column or "text",
            data_args.label_column,
            source=source,
        )
    return dict(dataset)


def _first_train_file(data_args: DataArguments) -> DataArguments:
    """Several train files: the arguments with the first one (the files share their other splits)."""
    if isinstance(data_args.train_file, list):
        return dataclasses.replace(data_args, train_file=data_args.train_file[0])
    return data_args


def _open(data_args: DataArguments, task: str, image_size: int | None) -> _Source:
    data_args = _first_train_file(data_args)
    if data_args.dataset_name in BUILTIN_DATASETS:
        return _builtin_source(data_args.dataset_name, image_size)
    description, parts, folders = _open_local(data_args)
    if task in ("classification", "image-text"):
        parts = _decode_image_paths(_standardize(parts, data_args, task), folders)
    return _Source(description, tuple(parts), lambda split, limit: parts[split], check_images=True)


# -- splits -------------------------------------------------------------------------------------------------


def slice_split(dataset: datasets.Dataset, spec: str, argument: str = "split") -> datasets.Dataset:
    """Applies the `[...]` part of a split spec ("train[:90%]", "test[-10%:]", "[100:200]") to `dataset`;
    percentages round to the closest row, as `datasets.ReadInstruction` does."""
    name, bracket = _parse_split_spec(spec, argument, allow_empty_name=True)
    if bracket is None:
        return dataset
    (instruction,) = datasets.ReadInstruction.from_spec(f"split{bracket}").to_absolute({"split": len(dataset)})
    return dataset.select(range(instruction.from_, instruction.to))


def _check_split(source: _Source, spec: str, argument: str) -> tuple[str, str | None]:
    name, bracket = _parse_split_spec(spec, argument)
    if name not in source.splits:
        raise ValueError(
            f"`{argument}` {spec!r} is not a split of {source.description}; available splits: {list(source.splits)}."
        )
    return name, bracket


def _check_named_splits(source: _Source, data_args: DataArguments, need_train: bool) -> None:
    """Every split the arguments name exists, checked before any split is loaded."""
    arguments = ("train_split", "eval_split", "test_split") if need_train else ("eval_split", "test_split")
    for argument in arguments:
        if getattr(data_args, argument) is not None:
            _check_split(source, getattr(data_args, argument), argument)


def check_splits(data_args: DataArguments, task: str = "classification", need_train: bool = True) -> None:
    """`validate_data_arguments`, plus: the splits named by `train_split` / `eval_split` / `test_split` exist
    (unknown ones list the available splits). Loads nothing for built-in datasets; reads local / Hub data."""
    validate_data_arguments(data_args, task)
    _check_named_splits(_open(data_args, task, None), data_args, need_train)


def _take(source: _Source, spec: str, argument: str, limit: int | None) -> datasets.Dataset:
    name, bracket = _check_split(source, spec, argument)
    dataset = source.load(name, limit if bracket is None else None)
    dataset = first_rows(slice_split(dataset, spec, argument), limit)
    if len(dataset) == 0:
        raise ValueError(f"`{argument}` {spec!r} selects no rows of {source.description}.")
    if source.check_images:
        check_image_cells(dataset, f"`{argument}` {spec!r} of {source.description}")
    return dataset


def _class_names(*parts) -> list[str] | None:
    for part in parts:
        feature = (getattr(part, "features", None) or {}).get("label")
        if isinstance(feature, datasets.ClassLabel):
            return list(feature.names)
    return None


def split_names(data_args: DataArguments, task: str = "classification") -> list[str]:
    """The split names the data named by `data_args` has (loads local / Hub data; built-ins are known)."""
    validate_data_arguments(data_args, task)
    if data_args.dataset_name in BUILTIN_DATASETS:
        return list(_BUILTIN_SPLITS[data_args.dataset_name])
    return list(_open(data_args, task, None).splits)


def load_split(
    data_args: DataArguments,
    split: str,
    task: str = "classification",
    *,
    image_size: int | None = None,
    argument: str = "split",
) -> datasets.Dataset:
    """One split of the data named by `data_args` (slicing allowed), standardised as in `load_splits`, with
    its first `max_eval_samples` rows. `argument` names the split in error messages."""
    validate_data_arguments(data_args, task)
    return _take(_open(data_args, task, image_size), split, argument, data_args.max_eval_samples)


def load_splits(
    data_args: DataArguments,
    task: str = "classification",
    *,
    image_size: int | None = None,
    need_train: bool = True,
    seed: int = HELD_OUT_SEED,
) -> DatasetSplits:
    """The train / eval / test splits of the data named by `data_args`.

    task: "classification" (input column renamed to `text` or `image`, label to `label`; string labels
        become one `ClassLabel` shared by every split), "pairs" (columns as they are) or "image-text"
        (`image` and `text`, plus `label` when `label_column` is given).
    image_size: side of rendered built-in images (emoji).
    need_train: load the train split (False: `train` is None, e.g. for evaluation only).
    seed: seeds the held-out validation part when the data has no validation split.

    Eval split: `eval_split`, else "validation", else (a dataset with train and test splits only) "test";
    `validation_split_percentage` (or, with a `test_file` and no `validation_file`, or a train split alone, 10 %,
    said in one line) holds a seeded share of the train split out instead, so a test file stays the test split.
    Test split: `test_split`, else "test" when the eval split is a validation or held-out split. `max_train_samples` / `max_eval_samples` keep the first
    rows after slicing (built-ins without a slice use their loader's `limit`; WordNet's is a seeded sample).
    """
    validate_data_arguments(data_args, task)
    if isinstance(data_args.train_file, list):
        return _load_train_files(data_args, task, image_size, need_train, seed)
    source = _open(data_args, task, image_size)
    _check_named_splits(source, data_args, need_train)
    available = source.splits
    percentage = data_args.validation_split_percentage
    if percentage is not None and "validation" in available:
        raise ValueError(
            f"`validation_split_percentage` {percentage} holds part of the train split out, but "
            f"{source.description} has a validation split; drop it or pick the split with `eval_split`."
        )
    eval_spec = data_args.eval_split
    if eval_spec is None and percentage is None:
        has_train = _parse_split_spec(data_args.train_split, "train_split")[0] in available
        if "validation" in available:
            eval_spec = "validation"
        elif "test" in available and data_args.test_file is None:
            eval_spec = "test"  # a named dataset's own train / test layout (Fashion-MNIST, as the MRL paper scores it)
        elif has_train:
            # A test file stays the test split: choosing checkpoints on it would overstate the final score.
            percentage = DEFAULT_VALIDATION_PERCENTAGE
            rest = "the test split stays the test split" if "test" in available else "it has no test split"
            print(
                f"note: {source.description} has no validation split; holding {percentage}% of the train split out "
                f"as the eval split ({rest}; set `validation_file`, `validation_split_percentage` or `eval_split` to "
                "choose).",
                file=sys.stderr,
            )
        elif "test" in available:
            eval_spec = "test"
        else:
            raise ValueError(
                f"{source.description} has no validation or test split; give `eval_split` (available splits: "
                f"{list(available)})."
            )
    train_spec = data_args.train_split
    if percentage is not None:
        whole = _take(source, train_spec, "train_split", None)
        if len(whole) < 2:
            raise ValueError(f"`train_split` {train_spec!r} has {len(whole)} row; too few to hold a part out.")
        held = whole.train_test_split(test_size=percentage / 100, seed=seed)
        train = first_rows(held["train"], data_args.max_train_samples) if need_train else None
        evaluation = first_rows(held["test"], data_args.max_eval_samples)
        eval_name = f"{percentage}% of {train_spec} held out (seed {seed})"
        train_name = f"{train_spec} less the held-out {percentage}%" if need_train else None
    else:
        train = _take(source, train_spec, "train_split", data_args.max_train_samples) if need_train else None
        evaluation = _take(source, eval_spec, "eval_split", data_args.max_eval_samples)
        eval_name, train_name = eval_spec, (train_spec if need_train else None)
    test_spec = data_args.test_split
    if (
        test_spec is None
        and "test" in available
        and (percentage is not None or _parse_split_spec(eval_spec, "eval_split")[0] == "validation")
    ):
        test_spec = "test"
    test_limit = data_args.max_test_samples or data_args.max_eval_samples
    test = _take(source, test_spec, "test_split", test_limit) if test_spec is not None else None
    class_names = _class_names(evaluation, train, test) if task != "pairs" else None
    if data_args.streaming and train is not None:
        train = train.to_iterable_dataset()
    return DatasetSplits(train, evaluation, test, train_name, eval_name, test_spec, class_names)


def _load_train_files(data_args: DataArguments, task: str, image_size: int | None, need_train: bool,
                      seed: int) -> DatasetSplits:
    """Several train files: `train` is `{file name without extension: its train split}` (each read as one train
    file is, `train_split` and `max_train_samples` applied to each); eval and test as with the first file."""
    paths = data_args.train_file if need_train else data_args.train_file[:1]
    splits = [load_splits(dataclasses.replace(data_args, train_file=path), task, image_size=image_size,
                          need_train=need_train, seed=seed) for path in paths]
    first = splits[0]
    train = dict(zip(train_file_names(paths), (each.train for each in splits), strict=True)) if need_train else None
    return dataclasses.replace(first, train=train)
