"""Shared pieces of the dataset loaders: argument checks, hash-based splits, loading any
source (Hub id, `save_to_disk` folder, data file, image folder) and on-disk caches.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pyarrow.compute as pc

from ..modeling.encoding import image_array
from ..modeling.files import FolderKind, write_folder_atomically
from ..modeling.progress import should_show_progress

# Extensions of single data files and the `datasets` builder that reads them.
DATA_FILE_BUILDERS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".txt": "text",
    ".arrow": "arrow",
}

AnyDataset = datasets.Dataset | datasets.DatasetDict | datasets.IterableDataset | datasets.IterableDatasetDict


@contextlib.contextmanager
def datasets_progress_bars(show: bool | None = None):
    """`datasets`' bars (`map`, `filter`, building a split) within the block as `should_show_progress(show)`
    decides: off on a log file; `datasets`' own switch is restored afterwards."""
    if should_show_progress(show) or datasets.are_progress_bars_disabled():
        yield
        return
    with warnings.catch_warnings():  # HF_DATASETS_DISABLE_PROGRESS_BARS=0 keeps them on, with a warning
        warnings.simplefilter("ignore")
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            datasets.enable_progress_bars()


def check_split(split: str | None, allowed: Sequence[str]) -> None:
    """Raises `ValueError` unless `split` is None or one of `allowed`."""
    if split is not None and split not in allowed:
        raise ValueError(f"`split` must be None or one of {list(allowed)}, got {split!r}.")


def check_limit(limit: int | None) -> None:
    """Raises `ValueError` unless `limit` is None or a positive integer."""
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0):
        raise ValueError(f"`limit` must be None or a positive integer, got {limit!r}.")


def check_seed(seed: int) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"`seed` must be an integer, got {seed!r}.")


def check_fraction(value: float, name: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1), got {value!r}.")


def missing_files_error(what: str, missing: Iterable[Path], package: str, alternative: str) -> FileNotFoundError:
    """The error for an offline default whose Debian package is not installed; `alternative`
    tells which argument to pass instead."""
    listed = ", ".join(str(path) for path in missing)
    return FileNotFoundError(
        f"{what} not found ({listed}). Install the Debian package with `apt-get install {package}`, or {alternative}."
    )


def hash_unit(key: str, seed: int) -> float:
    """A stable pseudo-random number in [0, 1) for `key`: the same on every machine and run."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def assign_split(key: str, seed: int, fractions: dict[str, float]) -> str:
    """Picks a split for `key` from `fractions` (split name -> share, summing to 1) by hashing
    the key, so every row sharing a key (a synset, an emoji family) lands in the same split."""
    unit = hash_unit(key, seed)
    cumulative = 0.0
    for name, share in fractions.items():
        cumulative += share
        if unit < cumulative:
            return name
    return name


def first_rows(dataset: datasets.Dataset, limit: int | None) -> datasets.Dataset:
    return dataset if limit is None or limit >= len(dataset) else dataset.select(range(limit))


def apply_limit(dataset: AnyDataset, limit: int | None) -> AnyDataset:
    """Keeps the first `limit` rows of each split."""
    if limit is None:
        return dataset
    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return type(dataset)({name: apply_limit(part, limit) for name, part in dataset.items()})
    if isinstance(dataset, datasets.IterableDataset):
        return dataset.take(limit)
    return first_rows(dataset, limit)


def check_image_cells(dataset: datasets.Dataset, where: str, files: bool = True) -> None:
    """Checks every cell of an `image` column before any work, raising one line naming the row and `where` (e.g.
    "`train_split` 'train' of 'data.csv'"): pixel arrays by `encode`'s rule (`image_array`: finite, in [0, 1] or
    [0, 255]); with `files`, `datasets.Image` cells are opened far enough to know each is an image (PIL's `verify`,
    no decoding): a missing file, or one PIL cannot read (not an image, a truncated PNG), is named."""
    feature = (dataset.features or {}).get("image") if isinstance(dataset, datasets.Dataset) else None
    if feature is None or len(dataset) == 0:
        return
    if not isinstance(feature, datasets.Image):
        _check_pixel_arrays(dataset, where)
        return
    if not files:
        return
    cells = dataset.with_format("arrow")["image"]
    for row, (data, path) in enumerate(zip(pc.struct_field(cells, "bytes").to_pylist(),
                                           pc.struct_field(cells, "path").to_pylist(), strict=True)):
        name = repr(path) if path else "(embedded bytes)"
        if data is None and not (path and os.path.isfile(path)):
            raise ValueError(f"Row {row} of {where}: image file {name} does not exist; fix the path or drop the row.")
        try:
            with PIL.Image.open(io.BytesIO(data) if data is not None else path) as image:
                image.verify()
        except Exception as error:  # noqa: BLE001 - PIL raises many kinds; each becomes one line naming the row
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ValueError(
                f"Row {row} of {where}: image {name} cannot be read ({reason}); fix the file or drop the row."
            ) from None


def _check_pixel_arrays(dataset: datasets.Dataset, where: str, block: int = 1024) -> None:
    numbers = dataset.with_format("numpy")
    first = np.asarray(numbers[0]["image"])
    if first.dtype.kind not in "fiu":
        return  # not pixel numbers: the collator says what it cannot read
    for start in range(0, len(dataset), block):
        for offset, cell in enumerate(numbers[start : start + block]["image"]):
            image_array(cell, f"Row {start + offset} of {where}")


def is_saved_dataset(path: Path) -> bool:
    """Whether `path` is a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`."""
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _looks_like_path(source: str) -> bool:
    return (
        source.startswith(("/", "./", "../", "~")) or source.count("/") > 1 or Path(source).suffix in DATA_FILE_BUILDERS
    )


def load_source(source, split: str | None = None, streaming: bool = False, **load_kwargs) -> AnyDataset:
    """Loads `source` as `datasets` would, whatever its kind.

    Args:
        source: a `Dataset` / `DatasetDict` (returned as is), a `save_to_disk` folder, a data
            file (.csv, .tsv, .json, .jsonl, .parquet, .txt, .arrow), any other local folder
            (`datasets.load_dataset` infers the builder, e.g. `imagefolder`), or a Hub id.
        split: the split to return; None returns every split.
        streaming: return an `IterableDataset` (saved folders are converted with
            `to_iterable_dataset`).
        load_kwargs: passed to `datasets.load_dataset` (e.g. `name`, `cache_dir`, `revision`).
    """
    if isinstance(
        source, (datasets.Dataset, datasets.DatasetDict, datasets.IterableDataset, datasets.IterableDatasetDict)
    ):
        dataset = source
    elif isinstance(source, (str, os.PathLike)):
        dataset = _load_named_source(os.fspath(source), split, streaming, **load_kwargs)
    else:
        raise ValueError(
            f"`source` must be a Hub dataset id, a local path or a datasets.Dataset/DatasetDict, got {type(source).__name__}."
        )
    if split is not None and isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        if split not in dataset:
            raise ValueError(f"`split` {split!r} is not in {source!r}; available splits: {sorted(dataset)}.")
        dataset = dataset[split]
    if streaming and isinstance(dataset, datasets.Dataset):
        dataset = dataset.to_iterable_dataset()
    elif streaming and isinstance(dataset, datasets.DatasetDict):
        dataset = datasets.IterableDatasetDict({name: part.to_iterable_dataset() for name, part in dataset.items()})
    return dataset


def _load_named_source(source: str, split: str | None, streaming: bool, **load_kwargs) -> AnyDataset:
    path = Path(source).expanduser()
    if path.is_dir() and is_saved_dataset(path):
        return datasets.load_from_disk(str(path))
    if path.is_file():
        builder = DATA_FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(
                f"`source` file {source!r} has an unknown extension; allowed: {sorted(DATA_FILE_BUILDERS)}."
            )
        if path.suffix.lower() == ".tsv":
            load_kwargs.setdefault("delimiter", "\t")
        if builder == "csv" and not any(key in load_kwargs for key in ("column_names", "names", "header")):
            check_csv_header(path, load_kwargs.get("delimiter") or load_kwargs.get("sep") or ",")
        return datasets.load_dataset(builder, data_files=str(path), split=split, streaming=streaming, **load_kwargs)
    if path.is_dir():
        return datasets.load_dataset(str(path), split=split, streaming=streaming, **load_kwargs)
    if _looks_like_path(source):
        raise FileNotFoundError(f"`source` {source!r} looks like a local path but does not exist.")
    return datasets.load_dataset(source, split=split, streaming=streaming, **load_kwargs)


def check_csv_header(path: Path, delimiter: str = ",") -> None:
    """A CSV / TSV header that repeats a column name is refused naming the file and the name (pandas would rename
    the second `text` to `text.1`, and a later step would miss a column it was told is there)."""
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        header = next(csv.reader(handle, delimiter=delimiter), [])
    seen, repeated = set(), []
    for name in header:
        if name in seen and name not in repeated:
            repeated.append(name)
        seen.add(name)
    if repeated:
        raise ValueError(
            f"{str(path)!r} has a header that repeats column {', '.join(map(repr, repeated))} "
            f"(header: {header}); every column name must be unique: rename or drop the repeat."
        )


def column_names(dataset: AnyDataset) -> list[str] | None:
    """Column names of a dataset or of its first split; None when a stream does not know them."""
    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        dataset = next(iter(dataset.values()))
    return dataset.column_names


def rename_to_standard(dataset: AnyDataset, mapping: dict[str, str], argument_of: dict[str, str], source) -> AnyDataset:
    """Renames columns `mapping` (old -> standard name), raising a `ValueError` that names the
    argument (`argument_of[old]`) and lists the available columns when one is missing."""
    available = column_names(dataset)
    if available is not None:
        for old in mapping:
            if old not in available:
                raise ValueError(
                    f"Column {old!r} (`{argument_of[old]}`) is not in {_describe(source)}; "
                    f"available columns: {available}."
                )
    renames = {old: new for old, new in mapping.items() if old != new}
    if available is not None:
        clashes = [new for old, new in renames.items() if new in available and new not in renames]
        if clashes:
            dataset = dataset.remove_columns(clashes)
    return dataset.rename_columns(renames) if renames else dataset


def _describe(source) -> str:
    return repr(source) if isinstance(source, (str, os.PathLike)) else f"the given {type(source).__name__}"


def default_cache_dir() -> Path:
    """Where rendered datasets are cached: `$HF_MRL_CACHE`, else `~/.cache/hf_mrl`."""
    return Path(os.environ.get("HF_MRL_CACHE", "~/.cache/hf_mrl")).expanduser()


def fingerprint(*parts) -> str:
    """A short hash of `parts` (paths contribute their size and modification time)."""
    items = []
    for part in parts:
        if isinstance(part, Path):
            stat = part.stat()
            items.append([str(part), stat.st_size, int(stat.st_mtime)])
        else:
            items.append(part)
    return hashlib.blake2b(json.dumps(items, sort_keys=True).encode(), digest_size=4).hexdigest()


DATASET_CACHE = FolderKind("rendered dataset", is_saved_dataset)


def save_atomically(dataset: datasets.Dataset, target: Path) -> None:
    """`save_to_disk` through `write_folder_atomically`, so a reader never sees a half-written cache. A cache
    already at `target` (another process won the race) is kept."""
    if not is_saved_dataset(target):
        write_folder_atomically(target, lambda staging: dataset.save_to_disk(str(staging)), DATASET_CACHE, "target")
