"""`encode` on raw inputs: a list of texts or images in, truncated and renormalised embeddings out, in input order.

Texts are tokenised with the tokenizer saved with the model (its `model_max_length` is the length the model was
trained with); images go through the saved image processor, or, when the model has none, the preprocessing the
training collators use (resize to the encoder's size, [0, 1], then (x - 0.5) / 0.5). Inference runs in eval
mode under `torch.inference_mode()`; the caller's mode is restored afterwards.

A flat module (only single-dot imports): the trust_remote_code export copies it beside the modeling files.
"""

from __future__ import annotations

import contextlib
import os
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .checks import check_bool, check_optional_bool, check_positive_int, max_input_tokens
from .nesting import truncate_embeddings, validate_dim
from .progress import should_show_progress

__all__ = ["MODEL_INPUT_NAMES", "EncodedDataset", "encode_dataset", "inference", "load_processor", "saved_processor",
           "default_image_processor", "encode_inputs", "tokenizer_max_length", "prepared_image", "image_array",
           "float_pixels", "has_text", "resolve_prompt", "returns_numpy"]

_WIDE_GREY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")

# Batch keys passed to the model by `encode_dataset`; anything else a collator returns (labels, ids) stays out.
MODEL_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids", "pixel_values")

# Tokenizers without a configured length report a huge sentinel; texts are then cut at this many tokens.
FALLBACK_MAX_LENGTH = 512


@contextlib.contextmanager
def inference(model, requires_grad: bool = False):
    """Eval mode under `torch.inference_mode()` (or, with `requires_grad=True`, the caller's mode and autograd),
    restoring the caller's mode on exit."""
    if requires_grad:
        yield
        return
    training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(training)


def saved_processor(folder: str, vision: bool, trust_remote_code: bool = False):
    """The image processor (`vision`) or tokenizer saved in `folder` (None when it has none), or loaded by Hub id.
    `trust_remote_code` goes to transformers: True for the folder of a model whose own code came from it."""
    from transformers import AutoImageProcessor, AutoTokenizer

    auto_class = AutoImageProcessor if vision else AutoTokenizer
    path = Path(folder).expanduser()
    if path.is_dir():
        if vision and (path / "preprocessor_config.json").is_file():
            return auto_class.from_pretrained(path, trust_remote_code=trust_remote_code)
        if not vision and any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
            return auto_class.from_pretrained(path, trust_remote_code=trust_remote_code)
        return None
    return auto_class.from_pretrained(folder, trust_remote_code=trust_remote_code)


def runs_remote_code(model) -> bool:
    """Whether `model`'s class is the code of its own folder, loaded with `trust_remote_code=True` (transformers
    imports it as a `transformers_modules.*` module): the folder's processor is then loaded with the same trust."""
    return type(model).__module__.startswith("transformers_modules.")


def default_image_processor(backbone_config):
    """The image processor matching the training collators: resize to the encoder's size, scale to [0, 1], then
    (x - 0.5) / 0.5 per channel."""
    from transformers import ViTImageProcessorPil

    channels, size = backbone_config.num_channels, backbone_config.image_size
    return ViTImageProcessorPil(size={"height": size, "width": size}, image_mean=[0.5] * channels, image_std=[0.5] * channels)


def load_processor(model, backbone_config, vision: bool):
    """The model's tokenizer or image processor: the one set with `model.processor = ...`, else the one saved in
    the model folder, else the one of the pretrained encoder it was built on; vision models fall back to
    `default_image_processor`. Cached on the model."""
    processor = getattr(model, "_processor", None)
    if processor is not None:
        return _fit_to_positions(processor, backbone_config, vision)
    sources = [(model.name_or_path, runs_remote_code(model)), (getattr(backbone_config, "_name_or_path", None), False)]
    for source, trusted in sources:
        processor = saved_processor(str(source), vision, trusted) if source else None
        if processor is not None:
            break
    if processor is None and vision:
        processor = default_image_processor(backbone_config)
    if processor is None:
        raise ValueError(
            "This model has no tokenizer saved with it; set one first: `model.processor = "
            "AutoTokenizer.from_pretrained(...)`, or save the model with its tokenizer."
        )
    model._processor = processor
    return _fit_to_positions(processor, backbone_config, vision)


def _fit_to_positions(processor, backbone_config, vision: bool):
    """A tokenizer whose `model_max_length` exceeds the encoder's positions (`max_input_tokens`), or that has no
    limit, is capped at them: a long text is then cut to what the model takes, not refused by its forward."""
    limit = None if vision else max_input_tokens(backbone_config)
    length = tokenizer_max_length(processor)
    if limit and hasattr(processor, "model_max_length") and (length is None or length > limit):
        processor.model_max_length = limit
    return processor


def tokenizer_max_length(tokenizer) -> int | None:
    """The tokenizer's `model_max_length` when it is a real limit (tokenizers without one report a huge number)."""
    length = getattr(tokenizer, "model_max_length", None)
    return length if isinstance(length, int) and length < 100_000 else None


def prepared_image(image: Image.Image, num_channels: int | None, name: str = "the image") -> Image.Image:
    """The one image preparation of training (the collators) and `encode`: palette images go through RGBA (their
    transparency read as PIL advises), 16-bit grey images are scaled to 8 bits (not clipped at 255), float ("F")
    images follow `image_array`'s float rule (in [0, 1]: scaled by 255; whole numbers in [0, 255]: read as 8-bit;
    anything else refused, naming `name`), then the image takes the model's channels (1: grey "L", 3: "RGB",
    dropping any alpha); None keeps its own."""
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode == "F":
        image = Image.fromarray(float_pixels(np.asarray(image, dtype=np.float64), name))
    elif image.mode in _WIDE_GREY_MODES:
        array = np.asarray(image, dtype=np.float64)
        top = array.max(initial=0.0)
        scale = 255.0 / 65535.0 if image.mode.startswith("I;16") or top > 255 else 1.0
        image = Image.fromarray(np.clip(np.rint(array * scale), 0, 255).astype(np.uint8))
    if num_channels is None:
        return image
    return image.convert("L" if num_channels == 1 else "RGB")


FLOAT_IMAGE_RULE = (
    "float images must lie in [0, 1] (scaled by 255) or hold whole numbers from 0 to 255 (read as 8-bit)"
)


def float_pixels(array: np.ndarray, name: str) -> np.ndarray:
    """A float pixel array as uint8 by the one float rule: values in [0, 1] are scaled by 255, whole numbers in
    [0, 255] are read as 8-bit, anything else (NaN / inf, negatives, fractions above 1, values above 255) is refused
    naming `name`, its min / max and the rule; never guessed, wrapped or cut."""
    if array.size == 0:
        raise ValueError(f"{name} is an empty image of shape {array.shape}; images hold pixels.")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or inf values; image pixels must be finite.")
    low, high = float(array.min()), float(array.max())
    if low >= 0 and high <= 1:
        return np.rint(array * 255.0).astype(np.uint8)
    if low >= 0 and high <= 255 and bool((array == np.round(array)).all()):
        return array.astype(np.uint8)
    raise ValueError(
        f"{name} is a float image with values from {low:g} to {high:g}; {FLOAT_IMAGE_RULE}. Scale it to one of "
        "those ranges (or give uint8 pixels)."
    )


def _as_image(item, position: int) -> Image.Image:
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, (str, os.PathLike)):
        path = Path(item).expanduser()
        if not path.is_file():
            raise ValueError(
                f"`inputs[{position}]` {str(item)!r} is not an image file; an image model encodes PIL images, numpy "
                "arrays or image paths (texts need a text model)."
            )
        with Image.open(path) as image:
            image.load()
            return image.copy()
    if isinstance(item, (np.ndarray, torch.Tensor)):
        return Image.fromarray(image_array(item, f"`inputs[{position}]`"))
    raise ValueError(
        f"`inputs[{position}]` is a {type(item).__name__}; an image model encodes PIL images, numpy arrays or image paths."
    )


def image_array(item, name: str) -> np.ndarray:
    """An image array (numpy, torch or nested lists) as uint8 (H, W) or (H, W, C), the one rule of training and
    `encode`: uint8 as is, other integers in 0..255, floats by `float_pixels` (in [0, 1]: scaled by 255; whole
    numbers in [0, 255]: read as 8-bit); NaN / inf and anything else is refused, never guessed, wrapped or cut. `name` words the item in errors (e.g.
    "`inputs[3]`")."""
    array = np.asarray(item.detach().cpu() if isinstance(item, torch.Tensor) else item)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ValueError(
            f"{name} is an array of shape {array.shape}; images are (H, W) or (H, W, C) with C = 1, 3 or 4 "
            "(channels last)."
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.dtype == np.uint8:
        return array
    if array.size == 0 or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} is an array of dtype {array.dtype} and shape {array.shape}; images hold numbers.")
    if np.issubdtype(array.dtype, np.floating):
        return float_pixels(array.astype(np.float64), name)
    low, high = array.min(), array.max()
    if low < 0 or high > 255:
        raise ValueError(
            f"{name} holds values from {low:g} to {high:g}; integer image pixels must lie from 0 to 255."
        )
    return array.astype(np.uint8)


def has_text(text: str) -> bool:
    """Whether `text` holds something to embed: one character that is neither whitespace nor a control / format
    character (an empty, blank or control-only string tokenises to [CLS][SEP] alone, one vector for them all)."""
    return any(not char.isspace() and unicodedata.category(char)[0] != "C" for char in text)


def resolve_prompt(prompts: dict | None, default_prompt_name: str | None, prompt: str | None = None,
                   prompt_name: str | None = None) -> str | None:
    """The prefix `encode` puts before every text, resolved as sentence-transformers resolves it: `prompt` as given,
    else `prompts[prompt_name]`, else the default prompt's, else None. With both, `prompt` wins, with a warning."""
    for value, argument in ((prompt, "prompt"), (prompt_name, "prompt_name")):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"`{argument}` must be a string or None, got {type(value).__name__} ({value!r}).")
    prompts = prompts or {}
    if prompt is not None:
        if prompt_name is not None:
            warnings.warn(f"Both `prompt`={prompt!r} and `prompt_name`={prompt_name!r} given; `prompt` is used, "
                          "as sentence-transformers does. Give one of them.", stacklevel=3)
        return prompt
    name, argument = (prompt_name, "prompt_name") if prompt_name is not None else (default_prompt_name, "config.default_prompt_name")
    if name is not None and name not in prompts:  # the config checks its default, unless it was set afterwards
        raise ValueError(f"`{argument}`={name!r} is not one of the model's prompts (`config.prompts`): {sorted(prompts)}.")
    return None if name is None else prompts[name]


def returns_numpy(convert_to_numpy: bool, convert_to_tensor: bool, requires_grad: bool = False) -> bool:
    """Whether `encode` returns a numpy array, decided as `SentenceTransformer.encode` decides it: numpy (float32, on
    the CPU) by default; a tensor with `convert_to_tensor=True`, which wins over `convert_to_numpy`, or with
    `convert_to_numpy=False`. `requires_grad=True` always gives a tensor, whatever `convert_to_numpy` says: numpy holds
    no graph. Each flag must be a bool."""
    check_bool(convert_to_numpy, "convert_to_numpy")
    check_bool(convert_to_tensor, "convert_to_tensor")
    check_bool(requires_grad, "requires_grad")
    return convert_to_numpy and not convert_to_tensor and not requires_grad


def _check_inputs(inputs, vision: bool) -> list:
    if isinstance(inputs, (str, Image.Image)) or not isinstance(inputs, Sequence) and not isinstance(inputs, np.ndarray):
        kind = "images" if vision else "strings"
        raise ValueError(f"`inputs` must be a list of {kind}, got {type(inputs).__name__}.")
    inputs = list(inputs)
    if not inputs:
        raise ValueError("`inputs` is empty; give at least one item.")
    if vision:  # every item checked before any work
        for position, item in enumerate(inputs):
            if isinstance(item, (str, os.PathLike)) and not Path(item).expanduser().is_file():
                _as_image(item, position)
            elif isinstance(item, (np.ndarray, torch.Tensor)):
                image_array(item, f"`inputs[{position}]`")
            elif isinstance(item, Image.Image) and item.mode == "F":
                float_pixels(np.asarray(item, dtype=np.float64), f"`inputs[{position}]`")
            elif not isinstance(item, (str, os.PathLike, Image.Image)):
                _as_image(item, position)
    else:
        bad = next(((i, x) for i, x in enumerate(inputs) if not isinstance(x, str)), None)
        if bad is not None:
            raise ValueError(
                f"`inputs[{bad[0]}]` is a {type(bad[1]).__name__}; a text model encodes strings (images need an image model)."
            )
        blank = next((i for i, text in enumerate(inputs) if not has_text(text)), None)
        if blank is not None:
            raise ValueError(
                f"`inputs[{blank}]` is empty: nothing to embed ({inputs[blank]!r}: texts need at least one character "
                "that is not whitespace or a control character); drop it or give it text."
            )
    return inputs


def encode_inputs(
    forward: Callable[[dict], torch.Tensor],
    inputs,
    processor,
    *,
    vision: bool,
    full_dim: int,
    dim: int | None = None,
    batch_size: int = 32,
    normalize: bool = True,
    show_progress_bar: bool | None = None,
    convert_to_numpy: bool = True,
    device=None,
    max_length: int | None = None,
    num_channels: int | None = None,
    prompt: str | None = None,
):
    """Embeds `inputs` (texts, or images) in batches with `forward(model_inputs) -> (batch, full_dim)`, truncated to
    `dim` and renormalised after truncation; rows in input order. Texts are batched longest first (less padding),
    each prefixed with `prompt` (see `resolve_prompt`) before tokenisation, its tokens pooled with the text's.
    Images are prepared as training prepares them (`prepared_image`, with the encoder's `num_channels`). One
    string (or one image / image path) gives one vector (`(full_dim,)` truncated), as `SentenceTransformer.encode`.
    A float32 numpy array with `convert_to_numpy=True`, else a tensor on the model's device (see `returns_numpy`).
    `show_progress_bar`: True / False; None draws a bar for more than 10 batches where `should_show_progress()`
    allows (stderr a terminal, bars not switched off)."""
    single = isinstance(inputs, str) or (vision and isinstance(inputs, (os.PathLike, Image.Image)))
    if single:
        embeddings = encode_inputs(forward, [inputs], processor, vision=vision, full_dim=full_dim, dim=dim,
                                   batch_size=batch_size, normalize=normalize, show_progress_bar=show_progress_bar,
                                   convert_to_numpy=convert_to_numpy, device=device, max_length=max_length,
                                   num_channels=num_channels, prompt=prompt)
        return embeddings[0]
    dim = validate_dim(dim, full_dim)
    batch_size = check_positive_int(batch_size, "batch_size")
    check_bool(normalize, "normalize")
    check_bool(convert_to_numpy, "convert_to_numpy")
    check_optional_bool(show_progress_bar, "show_progress_bar")
    if vision and prompt is not None:
        raise ValueError(f"`prompt`={prompt!r} prefixes texts; an image model's inputs take none.")
    inputs = _check_inputs(inputs, vision)  # the texts themselves must hold something, whatever the prompt
    if prompt:
        inputs = [prompt + text for text in inputs]
    order = np.arange(len(inputs)) if vision else np.argsort([-len(text) for text in inputs], kind="stable")
    if not vision and max_length is None:
        max_length = tokenizer_max_length(processor) or FALLBACK_MAX_LENGTH
    # by default a bar only for long inputs (more than 10 batches), and where bars are wanted (`should_show_progress`)
    show = should_show_progress(show_progress_bar) and (show_progress_bar or len(inputs) > 10 * batch_size)
    chunks = []
    for start in tqdm(range(0, len(inputs), batch_size), desc="Encoding", disable=not show):
        rows = [inputs[index] for index in order[start : start + batch_size]]
        if vision:
            images = [prepared_image(_as_image(item, start + i), num_channels, f"`inputs[{start + i}]`")
                      for i, item in enumerate(rows)]
            batch = {"pixel_values": processor(images=images, return_tensors="pt")["pixel_values"]}
        else:
            batch = dict(processor(rows, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))
        if device is not None:
            batch = {key: value.to(device) for key, value in batch.items()}
        chunks.append(truncate_embeddings(forward(batch).float(), dim, normalize=normalize))
    embeddings = torch.cat(chunks)[torch.from_numpy(np.argsort(order, kind="stable"))]
    return embeddings.cpu().numpy() if convert_to_numpy else embeddings


@dataclass
class EncodedDataset:
    """A dataset encoded once at the full dim.

    embeddings: (n, d) float32, as the model returns them (not normalised).
    matryoshka_logits: (num_nesting_dims, n, num_labels) float32 from the nested heads, or None.
    """

    embeddings: np.ndarray
    matryoshka_logits: np.ndarray | None = None


def _stack_model_inputs(examples: list[dict]) -> dict:
    keys = [key for key in examples[0] if key in MODEL_INPUT_NAMES]
    return {key: torch.stack([torch.as_tensor(example[key]) for example in examples]) for key in keys}


def encode_dataset(
    model,
    dataset,
    collate_fn: Callable[[list[dict]], dict] | None = None,
    batch_size: int = 64,
    description: str = "Encoding",
    *,
    accelerator=None,
    exclude_keys: Sequence[str] | None = None,
    show_progress: bool | None = None,
) -> EncodedDataset:
    """The one loop that encodes a dataset: `model(**batch)` over `dataset` once, in order, in batches, in eval mode
    under `torch.inference_mode()`, keeping `.embeddings` and, when the model has nested heads, `.matryoshka_logits`.

    `collate_fn` turns a list of rows into a dict of tensors (e.g. `ImageCollator`, `TextCollator`); None stacks the
    rows' model-input columns. The model gets the batch's `MODEL_INPUT_NAMES`, or, with `exclude_keys`, every key
    but those. With an `accelerate.Accelerator`, batches are split across its processes and gathered back with
    `gather_for_metrics` (which drops the samples that even out the last batch): every process gets all rows.
    `show_progress`: a bar over the batches (None: where `should_show_progress()` says so, never during training)."""
    check_positive_int(batch_size, "batch_size")
    if len(dataset) == 0:
        raise ValueError("`dataset` is empty (0 rows); there is nothing to encode.")
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                         collate_fn=collate_fn or _stack_model_inputs)
    if accelerator is not None:
        loader = accelerator.prepare(loader)
        model = model.to(accelerator.device)
    show_progress = should_show_progress(show_progress) and (accelerator is None or accelerator.is_local_main_process)
    device = next(model.parameters()).device
    wanted = (lambda key: key in MODEL_INPUT_NAMES) if exclude_keys is None else (lambda key: key not in exclude_keys)
    embeddings, logits = [], []
    with inference(model):
        for batch in tqdm(loader, desc=description, leave=False, disable=not show_progress):
            inputs = {key: value.to(device) if isinstance(value, torch.Tensor) else value
                      for key, value in batch.items() if wanted(key)}
            outputs = model(**inputs)
            batch_embeddings, nested = outputs.embeddings, getattr(outputs, "matryoshka_logits", None)
            if accelerator is not None:  # rows: the first axis of the embeddings, the second of the logits
                batch_embeddings = accelerator.gather_for_metrics(batch_embeddings)
                if nested is not None:
                    nested = accelerator.gather_for_metrics(nested.transpose(0, 1)).transpose(0, 1)
            embeddings.append(batch_embeddings.float().cpu())
            if nested is not None:
                logits.append(nested.float().cpu())
    return EncodedDataset(
        embeddings=torch.cat(embeddings).numpy(),
        matryoshka_logits=torch.cat(logits, dim=1).numpy() if logits else None,
    )
