"""Checks of what users pass to the public entry points: model forward / encode / predict, the losses, the
evaluators and the arguments of the scripts. One place for the rules and the wording: each check raises a one-line
`ValueError` naming the argument, the value (or its type, shape or dtype) and what is allowed, and the callers run
them before any work.

NaN / inf inputs raise. Finiteness costs one reduction per tensor, with no copy: its sum is NaN or inf when any
element is (the elements are looked at only when the sum is not finite, to tell an overflow from a bad value and to
word the error).

Before any weights are read, a model folder's pickled weights are refused by name (`refuse_pickled_weights`)
and the shapes of its saved weights are read from the safetensors headers without loading a tensor
(`saved_weight_shapes`).

A flat module (only single-dot imports): the trust_remote_code export copies it beside the modeling files.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import struct
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = [
    "is_int",
    "check_bool",
    "check_optional_bool",
    "check_positive_int",
    "check_positive_ints",
    "check_number",
    "check_tensor",
    "check_finite",
    "check_pixel_values",
    "check_token_inputs",
    "max_input_tokens",
    "check_class_labels",
    "check_group_ids",
    "PICKLE_PATTERNS",
    "refuse_pickled_weights",
    "saved_weight_shapes",
]

# Vision encoders whose position embeddings fix the input size (others, e.g. ConvNeXt or Swin, take any size).
FIXED_SIZE_VISION_MODELS = ("vit", "deit", "beit", "data2vec-vision", "vit_msn", "vit_mae", "clip_vision_model",
                            "siglip_vision_model")
# Text encoders whose position ids start after the padding id: they take max_position_embeddings - pad_token_id - 1.
PADDING_OFFSET_MODELS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "mpnet", "data2vec-text")


def is_int(value) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False, got {value!r}.")
    return value


def check_optional_bool(value, name: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True, False or None, got {value!r}.")
    return value


def check_positive_int(value, name: str) -> int:
    if not is_int(value) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def check_positive_ints(values, name: str) -> list[int]:
    """A positive integer or a non-empty list of them (e.g. the k of top-k metrics), sorted, without repeats."""
    if is_int(values):
        values = [values]
    if (isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values
            or not all(is_int(value) and value > 0 for value in values)):
        raise ValueError(f"`{name}` must be a non-empty list of positive integers, got {values!r}.")
    return sorted({int(value) for value in values})


def _bounds_text(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high:g}"
    return ""


def check_number(value, name: str, low=None, high=None, *, low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number within the bounds (each inclusive unless `*_open`); NaN and inf are refused."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ValueError(f"`{name}` must be a finite number{_bounds_text(low, high, low_open, high_open)}, got {value!r}.")
    return float(value)


def _describe(value) -> str:
    kind = type(value)
    hint = " (convert it with torch.as_tensor)" if kind.__module__ == "numpy" or isinstance(value, (list, tuple)) else ""
    return f"a {kind.__module__ + '.' if kind.__module__ == 'numpy' else ''}{kind.__name__}{hint}"


def check_tensor(value, name: str, ndim: int, layout: str, dtype: str | None = None) -> torch.Tensor:
    """A `torch.Tensor` with `ndim` dims (`layout` words them, e.g. "(batch, sequence_length)"), not empty, holding
    floating-point numbers (`dtype="float"`) or integers (`dtype="int"`)."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"`{name}` must be a torch.Tensor of shape {layout}, got {_describe(value)}.")
    if value.ndim != ndim:
        raise ValueError(f"`{name}` must be {ndim}-D {layout}, got shape {tuple(value.shape)} ({value.ndim}-D).")
    if value.numel() == 0:
        raise ValueError(f"`{name}` is empty (shape {tuple(value.shape)}); give at least one item {layout}.")
    if dtype == "float" and not value.is_floating_point():
        raise ValueError(f"`{name}` must hold floating-point numbers, got dtype {value.dtype}.")
    if dtype == "int" and (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool):
        raise ValueError(f"`{name}` must hold integers, got dtype {value.dtype}.")
    return value


def check_finite(tensor: torch.Tensor, name: str) -> torch.Tensor:
    """Raises when `tensor` holds NaN or inf, naming the first item (row) that does."""
    if not tensor.is_floating_point():
        return tensor
    values = tensor.detach()
    if math.isfinite(float(values.sum())):  # a finite sum proves every element finite, with no copy of the tensor
        return tensor
    finite = torch.isfinite(values)  # NaN / inf, or a sum that overflowed: look at the elements
    if finite.all():
        return tensor
    rows = finite.reshape(finite.shape[0], -1).all(dim=1) if finite.ndim else finite.reshape(1)
    raise ValueError(
        f"`{name}` holds NaN or inf values (first in item {int((~rows).nonzero()[0, 0])}); inputs must be finite."
    )


def _side_pair(value) -> tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (list, tuple)) else (int(value), int(value))


def check_pixel_values(pixel_values, backbone_config, check_size: bool = True) -> torch.Tensor:
    """(batch, channels, height, width) finite floats with the encoder's channels (and, for encoders whose
    position embeddings fix it, its image size, unless `check_size=False`, e.g. `interpolate_pos_encoding`)."""
    check_tensor(pixel_values, "pixel_values", 4, "(batch, channels, height, width)", "float")
    _, channels, height, width = pixel_values.shape
    expected = getattr(backbone_config, "num_channels", None)
    size = getattr(backbone_config, "image_size", None)
    if expected is not None and channels != expected:
        shape = f"(batch, {expected}, {size}, {size})" if isinstance(size, int) else f"(batch, {expected}, height, width)"
        raise ValueError(
            f"`pixel_values` has {channels} channels (shape {tuple(pixel_values.shape)}); this model takes "
            f"{expected}-channel images: {shape}."
        )
    if check_size and size is not None and backbone_config.model_type in FIXED_SIZE_VISION_MODELS:
        size_h, size_w = _side_pair(size)
        if (height, width) != (size_h, size_w):
            raise ValueError(
                f"`pixel_values` holds {height} x {width} images; this model takes {size_h} x {size_w} (resize them, "
                "e.g. with the model's image processor, or pass interpolate_pos_encoding=True)."
            )
    return check_finite(pixel_values, "pixel_values")


def _check_same_shape(value, name: str, input_ids: torch.Tensor) -> None:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"`{name}` must be a torch.Tensor shaped like `input_ids`, got {_describe(value)}.")
    if value.shape != input_ids.shape:
        raise ValueError(
            f"`{name}` has shape {tuple(value.shape)} but `input_ids` has {tuple(input_ids.shape)}; they must match."
        )


def max_input_tokens(backbone_config) -> int | None:
    """The most tokens a text encoder takes per input (None when its config does not say)."""
    positions = getattr(backbone_config, "max_position_embeddings", None)
    if positions and backbone_config.model_type in PADDING_OFFSET_MODELS:
        return positions - (getattr(backbone_config, "pad_token_id", None) or 0) - 1  # positions start after padding
    return positions


def check_token_inputs(input_ids, attention_mask, token_type_ids, backbone_config) -> torch.Tensor:
    """(batch, sequence_length) token ids inside the encoder's vocabulary and length; a mask and token types of the
    same shape; every mask row with at least one token (an all-zero row has nothing to pool). The value checks
    share one device-to-host copy."""
    check_tensor(input_ids, "input_ids", 2, "(batch, sequence_length)", "int")
    max_tokens = max_input_tokens(backbone_config)
    if max_tokens and input_ids.shape[1] > max_tokens:
        raise ValueError(
            f"`input_ids` has {input_ids.shape[1]} tokens per row; this model takes at most {max_tokens} "
            f"(tokenize with truncation=True, max_length={max_tokens})."
        )
    if token_type_ids is not None:
        _check_same_shape(token_type_ids, "token_type_ids", input_ids)
    stats = list(torch.aminmax(input_ids))
    if attention_mask is not None:
        _check_same_shape(attention_mask, "attention_mask", input_ids)
        stats.append((attention_mask == 0).all(dim=1).any())
    low, high, *empty = torch.stack([value.long() for value in stats]).tolist()
    vocab_size = getattr(backbone_config, "vocab_size", None)
    if vocab_size and (low < 0 or high >= vocab_size):
        raise ValueError(
            f"`input_ids` holds token ids from {low} to {high}, outside the vocabulary of {vocab_size} tokens; "
            f"allowed: 0 to {vocab_size - 1} (is the tokenizer the model's?)."
        )
    if empty and empty[0]:
        row = int((attention_mask == 0).all(dim=1).nonzero()[0, 0])
        raise ValueError(
            f"`attention_mask` row {row} is all zeros: no token to attend to, so its embedding would be "
            "meaningless; every row needs at least one 1 (drop empty inputs)."
        )
    return input_ids


def check_class_labels(labels, batch: int, num_labels: int, ignore_index: int = -100, name: str = "labels") -> torch.Tensor:
    """(batch,) integer class ids from 0 to `num_labels - 1`, or `ignore_index` for rows left out of the loss."""
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"`{name}` must be a torch.Tensor of {batch} class ids, got {_describe(labels)}.")
    if labels.shape != (batch,):
        raise ValueError(f"`{name}` must have shape ({batch},) (one class id per item), got {tuple(labels.shape)}.")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"`{name}` must hold integer class ids, got dtype {labels.dtype}.")
    if not labels.numel():
        return labels
    if bool((labels == ignore_index).all()):
        raise ValueError(
            f"`{name}` are all {ignore_index} (left out of the loss): no row is left to score, so the loss would be "
            f"NaN; give at least one class id from 0 to {num_labels - 1}, or call without `{name}`."
        )
    low, high = torch.stack(torch.aminmax(torch.where(labels == ignore_index, 0, labels))).tolist()
    if low < 0 or high >= num_labels:
        raise ValueError(
            f"`{name}` must be class ids from 0 to {num_labels - 1} (or {ignore_index} to leave a row out), "
            f"got {high if high >= num_labels else low}."
        )
    return labels


def check_group_ids(ids, batch: int, name: str, device=None) -> torch.Tensor | None:
    """Optional (batch,) integer ids of what each item shows (equal ids: positives of each other), as a long tensor."""
    if ids is None:
        return None
    allowed = f"a 1-D integer tensor or list of {batch} ints (one per item; hash strings to ints with a stable hash)"
    try:
        tensor = torch.as_tensor(ids, device=device)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"`{name}` must be {allowed}, got {type(ids).__name__}.") from None
    if tensor.ndim != 1 or tensor.shape[0] != batch or tensor.is_floating_point() or tensor.dtype == torch.bool:
        raise ValueError(f"`{name}` must be {allowed}, got dtype {tensor.dtype} and shape {tuple(tensor.shape)}.")
    return tensor.long()


# Files `torch.load` would unpickle, weights first (the name an error shows is the first match).
PICKLE_PATTERNS = ("pytorch_model*.bin", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")


def _local_folder(name_or_path) -> Path | None:
    if not isinstance(name_or_path, (str, os.PathLike)) or not os.fspath(name_or_path):
        return None
    folder = Path(os.fspath(name_or_path)).expanduser()
    return folder if folder.is_dir() else None


def refuse_pickled_weights(name_or_path) -> None:
    """`ValueError` naming the file when a local model folder holds its weights only as a pickle
    (`pytorch_model.bin`, a `.bin` / `.pt` checkpoint): unpickling runs code, so hf_mrl never does it. A folder
    with safetensors weights, or a Hub id, passes."""
    folder = _local_folder(name_or_path)
    if folder is None or any(folder.glob("*.safetensors")):
        return
    for pattern in PICKLE_PATTERNS:
        found = sorted(path for path in folder.glob(pattern) if path.is_file())
        if found:
            raise ValueError(
                f"{found[0]}: this file is a pickle; hf_mrl loads safetensors only (unpickling can run code). "
                "Convert it where you trust it: `model.save_pretrained(folder)` writes model.safetensors."
            )


def _safetensors_header(path: Path) -> dict:
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    return header


def saved_weight_shapes(name_or_path) -> dict[str, tuple[int, ...]] | None:
    """`{parameter name: shape}` of the weights in a local model folder (`model.safetensors` or the shards of
    its index), read from the headers only; None for a Hub id or a folder without safetensors weights."""
    from .saved_weights import weight_files  # the same file list `from_pretrained` reads

    folder = _local_folder(name_or_path)
    files = [] if folder is None else weight_files(folder)
    if not files:
        return None
    shapes = {}
    for path in files:
        for key, entry in _safetensors_header(path).items():
            shapes[key] = tuple(entry["shape"])
    return shapes
