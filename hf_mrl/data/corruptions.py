"""Built-in image corruptions for robustness tests: Gaussian noise, Gaussian blur, lowered contrast and
rotation, each at severities 1 (mild) to 5 (strong).

Every corruption is deterministic: the random parts (noise, rotation direction) come from a generator
seeded by (`seed`, row index, corruption), so the same call gives the same images on any machine.
Blur widths are given for 28-pixel images and scale with the image's shorter side.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import numpy as np
from PIL import Image, ImageFilter

from ._common import check_seed, datasets_progress_bars

__all__ = [
    "CORRUPTIONS",
    "CORRUPTION_SEVERITIES",
    "check_corruption",
    "corrupt_dataset",
    "corrupt_image",
    "corrupted_datasets",
    "corruption_name",
]

# Strength per severity 1..5 of each corruption.
CORRUPTION_SEVERITIES: dict[str, tuple[float, ...]] = {
    "noise": (0.04, 0.08, 0.12, 0.18, 0.26),  # standard deviation of the added noise, pixels in [0, 1]
    "blur": (0.5, 0.75, 1.0, 1.25, 1.5),  # standard deviation in pixels of a 28-pixel image
    "contrast": (0.6, 0.45, 0.3, 0.2, 0.1),  # share of each pixel's distance to the image mean kept
    "rotation": (10.0, 20.0, 30.0, 45.0, 60.0),  # degrees, clockwise or not at random
}
CORRUPTIONS = tuple(CORRUPTION_SEVERITIES)
_SEED_OFFSETS = {name: index for index, name in enumerate(CORRUPTIONS)}


def check_corruption(corruption, severity) -> None:
    """Raises `ValueError` unless `corruption` is built in and `severity` an integer from 1 to 5."""
    if corruption not in CORRUPTION_SEVERITIES:
        raise ValueError(f"`corruption` must be one of {list(CORRUPTIONS)}, got {corruption!r}.")
    levels = len(CORRUPTION_SEVERITIES[corruption])
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= levels:
        raise ValueError(f"`severity` must be an integer from 1 to {levels}, got {severity!r}.")


def corruption_name(corruption: str, severity: int) -> str:
    """The name of a corrupted set, e.g. "noise-3"."""
    return f"{corruption}-{severity}"


def corrupt_image(image: Image.Image, corruption: str, severity: int, rng: np.random.Generator) -> Image.Image:
    """`image` corrupted by `corruption` at `severity` (1 to 5), in its own mode and size; `rng` draws the noise
    and the rotation direction."""
    check_corruption(corruption, severity)
    if not isinstance(image, Image.Image):
        raise ValueError(f"`image` must be a PIL image, got {type(image).__name__}.")
    strength = CORRUPTION_SEVERITIES[corruption][severity - 1]
    mode = image.mode
    if corruption == "blur":
        return image.filter(ImageFilter.GaussianBlur(radius=strength * min(image.size) / 28))
    if corruption == "rotation":
        angle = strength if rng.random() < 0.5 else -strength
        fill = 0 if len(image.getbands()) == 1 else (0,) * len(image.getbands())
        return image.rotate(angle, resample=Image.BILINEAR, fillcolor=fill)
    pixels = np.asarray(image.convert("RGB" if mode not in ("L", "RGB") else mode), dtype=np.float64) / 255.0
    if corruption == "noise":
        pixels = pixels + rng.normal(0.0, strength, size=pixels.shape)
    else:  # contrast: pull every pixel towards the image's mean
        mean = pixels.mean(axis=(0, 1), keepdims=True)
        pixels = (pixels - mean) * strength + mean
    corrupted = Image.fromarray(np.clip(np.round(pixels * 255.0), 0, 255).astype(np.uint8))
    return corrupted if corrupted.mode == mode else corrupted.convert(mode)


def corrupt_dataset(
    dataset: datasets.Dataset, corruption: str, severity: int, seed: int = 0, image_column: str = "image",
    show_progress: bool | None = None,
) -> datasets.Dataset:
    """A copy of `dataset` (in memory) whose `image_column` holds the corrupted images; other columns are kept.
    Row i's random draws are seeded by (`seed`, i, corruption), so results do not depend on batching.
    `show_progress`: one bar per corrupted set (None: on a terminal only, see `should_show_progress`)."""
    check_corruption(corruption, severity)
    check_seed(seed)
    if image_column not in getattr(dataset, "column_names", ()):
        raise ValueError(
            f"`image_column` {image_column!r} is not a column of `dataset` "
            f"(columns: {getattr(dataset, 'column_names', None)})."
        )
    offset = _SEED_OFFSETS[corruption]

    def corrupt_batch(batch, indices):
        batch[image_column] = [
            corrupt_image(image, corruption, severity, np.random.default_rng([seed, index, offset]))
            for image, index in zip(batch[image_column], indices)
        ]
        return batch

    with datasets_progress_bars(show_progress):
        return dataset.map(
            corrupt_batch, batched=True, with_indices=True, keep_in_memory=True, load_from_cache_file=False,
            desc=f"Corrupting ({corruption_name(corruption, severity)})",
        )


def corrupted_datasets(
    dataset: datasets.Dataset,
    corruptions: Sequence[str],
    severities: Sequence[int],
    seed: int = 0,
    image_column: str = "image",
    show_progress: bool | None = None,
) -> dict[str, datasets.Dataset]:
    """{"noise-1": dataset, ...}: every corruption at every severity (`show_progress`: as in `corrupt_dataset`)."""
    if isinstance(corruptions, str) or not corruptions:
        raise ValueError(f"`corruptions` must be a non-empty list drawn from {list(CORRUPTIONS)}, got {corruptions!r}.")
    if isinstance(severities, (str, int)) or not severities:
        raise ValueError(f"`severities` must be a non-empty list of integers from 1 to 5, got {severities!r}.")
    for corruption in corruptions:
        for severity in severities:
            check_corruption(corruption, severity)
    return {
        corruption_name(corruption, severity): corrupt_dataset(dataset, corruption, severity, seed, image_column,
                                                               show_progress)
        for corruption in corruptions
        for severity in severities
    }
