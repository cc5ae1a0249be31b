"""Fashion-MNIST (70,000 grey 28x28 images of 10 clothing classes, MIT licence).

Offline it is read from the Debian package `dataset-fashion-mnist` (IDX files, parsed with
numpy); elsewhere pass `source="zalando-datasets/fashion_mnist"` or a local dataset folder.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from ._common import (
    apply_limit,
    check_limit,
    check_seed,
    check_split,
    default_cache_dir,
    fingerprint,
    is_saved_dataset,
    load_source,
    missing_files_error,
    rename_to_standard,
    save_atomically,
)

__all__ = [
    "FASHION_MNIST_CLASS_NAMES",
    "FASHION_MNIST_CAPTION_TEMPLATES",
    "FASHION_MNIST_DIR",
    "fashion_mnist_class_prompts",
    "load_fashion_mnist",
    "load_fashion_mnist_captions",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# How each class reads inside a sentence, article included ("a photo of an ankle boot.").
_CLASS_PHRASES = (
    "a t-shirt or top",
    "a pair of trousers",
    "a pullover",
    "a dress",
    "a coat",
    "a sandal",
    "a shirt",
    "a sneaker",
    "a bag",
    "an ankle boot",
)
FASHION_MNIST_CAPTION_TEMPLATES = (
    "a photo of {}.",
    "a picture of {}.",
    "a black and white photo of {}.",
    "a low resolution photo of {}.",
    "a grayscale image of {}.",
    "a small photo of {}.",
)
_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _features() -> datasets.Features:
    return datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(FASHION_MNIST_CLASS_NAMES))}
    )


def read_idx(path: Path, limit: int | None = None) -> np.ndarray:
    """Reads a (gzipped) IDX file: a 4-byte magic (0, 0, dtype code, ndim), ndim big-endian
    uint32 sizes, then the data. Returns an array of those sizes, the first axis cut to `limit`
    (only that much is decompressed)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        magic = handle.read(4)
        if len(magic) < 4 or magic[:2] != b"\x00\x00" or magic[2] not in _IDX_DTYPES:
            raise ValueError(f"{path} is not an IDX file (magic bytes {magic!r}).")
        shape = tuple(int(size) for size in np.frombuffer(handle.read(4 * magic[3]), dtype=">u4"))
        if limit is not None:
            shape = (min(limit, shape[0]), *shape[1:])
        dtype = np.dtype(_IDX_DTYPES[magic[2]])
        raw = handle.read(int(np.prod(shape)) * dtype.itemsize)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _load_debian_split(data_dir: Path, split: str, limit: int | None, cache_dir: Path) -> datasets.Dataset:
    """One split from the IDX files. A full split (PNG-encoding 60,000 images takes seconds) is
    cached under `cache_dir` and read back from there next time."""
    images_file, labels_file = _SPLIT_FILES[split]
    cache = cache_dir / f"fashion_mnist_{split}_{fingerprint(data_dir / images_file, data_dir / labels_file)}"
    if limit is None and is_saved_dataset(cache):
        return datasets.load_from_disk(str(cache))
    images = read_idx(data_dir / images_file, limit)
    labels = read_idx(data_dir / labels_file, limit)
    dataset = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(image) for image in images], "label": labels.astype(np.int64)},
        features=_features(),
        split=split,
    )
    if limit is not None:
        return dataset
    save_atomically(dataset, cache)
    return datasets.load_from_disk(str(cache))


def _standardise(dataset: datasets.Dataset | datasets.DatasetDict, source) -> datasets.Dataset | datasets.DatasetDict:
    """Gives a Hub / local copy our column names and the canonical class names."""
    dataset = rename_to_standard(
        dataset, {"image": "image", "label": "label"}, {"image": "source", "label": "source"}, source
    )
    return dataset.cast_column("label", datasets.ClassLabel(names=list(FASHION_MNIST_CLASS_NAMES)))


def load_fashion_mnist(
    split: str | None = None,
    source=None,
    limit: int | None = None,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    **load_kwargs,
) -> datasets.Dataset | datasets.DatasetDict:
    """Fashion-MNIST as `image` (`datasets.Image`, PIL mode 'L', 28x28) and `label` (`ClassLabel`
    with the 10 class names of `FASHION_MNIST_CLASS_NAMES`).

    Args:
        split: "train" (60,000) or "test" (10,000); None returns a `DatasetDict` with both.
        source: a Hub id (e.g. "zalando-datasets/fashion_mnist"), a local dataset folder or
            `datasets.Dataset`; None reads the Debian package files.
        limit: keep only the first `limit` rows of each split (for quick tests).
        data_dir: folder with the four IDX files; defaults to `FASHION_MNIST_DIR`.
        cache_dir: where full splits read from the IDX files are cached; defaults to
            `$HF_MRL_CACHE` or `~/.cache/hf_mrl`.
        load_kwargs: passed to `datasets.load_dataset` when `source` is given.
    """
    check_split(split, tuple(_SPLIT_FILES))
    check_limit(limit)
    if source is not None and data_dir is not None:
        raise ValueError(
            f"Pass either `source` or `data_dir`, not both (got source={source!r}, data_dir={data_dir!r})."
        )
    if source is not None:
        return _standardise(apply_limit(load_source(source, split, **load_kwargs), limit), source)
    data_dir = FASHION_MNIST_DIR if data_dir is None else Path(data_dir)
    splits = (split,) if split is not None else tuple(_SPLIT_FILES)
    missing = [data_dir / name for part in splits for name in _SPLIT_FILES[part] if not (data_dir / name).is_file()]
    if missing:
        raise missing_files_error(
            "Fashion-MNIST files",
            missing,
            "dataset-fashion-mnist",
            "pass `source=` (a Hub id such as 'zalando-datasets/fashion_mnist' or a local dataset folder) "
            "or `data_dir=` (a folder with the IDX files)",
        )
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    parts = {part: _load_debian_split(data_dir, part, limit, cache_dir) for part in splits}
    return parts[split] if split is not None else datasets.DatasetDict(parts)


def _check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    if isinstance(templates, str) or len(templates) == 0:
        raise ValueError(f"`templates` must be a non-empty list of strings with one '{{}}', got {templates!r}.")
    for template in templates:
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ValueError(f"Each of `templates` must be a string with exactly one '{{}}', got {template!r}.")
    return tuple(templates)


def fashion_mnist_class_prompts(templates: Sequence[str] = FASHION_MNIST_CAPTION_TEMPLATES) -> list[list[str]]:
    """Every caption of every class, `[class][template]`: the texts for zero-shot classification."""
    templates = _check_templates(templates)
    return [[template.format(phrase) for template in templates] for phrase in _CLASS_PHRASES]


def load_fashion_mnist_captions(
    split: str | None = None,
    templates: Sequence[str] = FASHION_MNIST_CAPTION_TEMPLATES,
    seed: int = 0,
    source=None,
    limit: int | None = None,
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    **load_kwargs,
) -> datasets.Dataset | datasets.DatasetDict:
    """Fashion-MNIST as image-text pairs: `image`, `text` (a class prompt such as "a photo of an
    ankle boot.", the template drawn per image with `seed`) and `label`.

    Only len(templates) * 10 distinct captions exist, so captions repeat inside a batch: equal
    captions mean the same class (see `ImageTextCollator`'s `text_ids`). Other arguments as in
    `load_fashion_mnist`.
    """
    templates = _check_templates(templates)
    check_seed(seed)
    prompts = fashion_mnist_class_prompts(templates)
    dataset = load_fashion_mnist(
        split=split, source=source, limit=limit, data_dir=data_dir, cache_dir=cache_dir, **load_kwargs
    )

    def add_captions(part: datasets.Dataset, name: str) -> datasets.Dataset:
        labels = np.asarray(part["label"][:])
        # Seeded by the split's name so a split gets the same captions alone or in a DatasetDict.
        choices = np.random.default_rng([seed, zlib.crc32(name.encode())]).integers(len(templates), size=len(labels))
        return part.add_column("text", [prompts[label][choice] for label, choice in zip(labels, choices, strict=True)])

    if isinstance(dataset, datasets.DatasetDict):
        return datasets.DatasetDict({name: add_captions(part, name) for name, part in dataset.items()})
    return add_captions(dataset, split or str(dataset.split or "train"))
