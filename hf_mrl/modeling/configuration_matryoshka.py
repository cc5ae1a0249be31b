"""Configuration of Matryoshka models: one backbone (`MatryoshkaConfig`)."""

from __future__ import annotations

import os

from transformers import PreTrainedConfig

from .checks import check_bool, check_number, check_positive_int
from .nesting import (
    default_matryoshka_dims,
    matryoshka_weights_preset,
    validate_matryoshka_dims,
    validate_matryoshka_weights,
)

__all__ = [
    "MatryoshkaConfig",
    "MatryoshkaDualEncoderConfig",
    "POOLING_MODES",
    "resolve_sub_config",
    "check_encoder_config",
    "default_pooling",
    "check_prompts",
]

POOLING_MODES = ("cls", "mean")



def _config_for_model(model_type: str, **values) -> PreTrainedConfig:
    """`AutoConfig.for_model`, imported here: hf_mrl registers its own configs as the Auto classes load, which
    must not happen while this module is itself being imported."""
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, **values)

def resolve_sub_config(value, name: str) -> PreTrainedConfig:
    """A transformers config from a config object or its dict (as read back from config.json)."""
    if isinstance(value, PreTrainedConfig):
        return value
    if isinstance(value, dict):
        if "model_type" not in value:
            raise ValueError(f"`{name}` given as a dict must have a 'model_type' key, got keys {sorted(value)}.")
        values = dict(value)
        return _config_for_model(values.pop("model_type"), **values)
    raise ValueError(f"`{name}` must be a transformers config or its dict, got {type(value).__name__}.")


def check_encoder_config(config: PreTrainedConfig, name: str, modality: str | None = None) -> PreTrainedConfig:
    """An encoder-only config the Auto classes can build (BERT, ViT, a CLIP tower, ...): not an encoder-decoder
    (T5) nor a two-tower config (CLIP); with `modality` ("image" / "text"), an encoder of that kind."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    kind = config.model_type
    towers = sorted(set(getattr(config, "sub_configs", None) or {}) & {"text_config", "vision_config"})
    if towers:
        raise ValueError(
            f"`{name}` is a {kind!r} config with two towers ({', '.join(towers)}); pass one tower's config, e.g. its "
            "vision_config or text_config (hf_mrl wraps one encoder)."
        )
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(
            f"`{name}` is a {kind!r} encoder-decoder config; hf_mrl wraps encoder-only models (BERT, ViT, ...)."
        )
    try:
        MODEL_MAPPING[type(config)]
    except KeyError:
        raise ValueError(f"`{name}` is a {kind!r} config that transformers' AutoModel cannot build.") from None
    vision = hasattr(config, "image_size")
    if modality == "image" and not vision:
        raise ValueError(
            f"`{name}` is a {kind!r} config, not an image encoder (it has no image_size); pass e.g. a ViTConfig."
        )
    if modality == "text" and vision:
        raise ValueError(f"`{name}` is a {kind!r} config, an image encoder; pass a text config such as BertConfig.")
    return config


def default_pooling(backbone_config: PreTrainedConfig) -> str:
    """CLS pooling for vision encoders (they have an `image_size`), mean pooling for text."""
    return "cls" if hasattr(backbone_config, "image_size") else "mean"


def validate_pooling(pooling, name: str = "pooling") -> str:
    if pooling not in POOLING_MODES:
        raise ValueError(f"`{name}` must be one of {list(POOLING_MODES)}, got {pooling!r}.")
    return pooling


def check_prompts(prompts, default_prompt_name, name: str = "prompts") -> tuple[dict[str, str] | None, str | None]:
    """Named text prefixes (`{name: prefix}`, as sentence-transformers' `prompts`) and the name applied when
    `encode` is given none; both checked, the prompts copied to a plain dict."""
    if prompts is not None:
        if not isinstance(prompts, dict) or not all(isinstance(key, str) and key for key in prompts):
            raise ValueError(
                f"`{name}` must be a dict of prompt names (non-empty strings) to prefixes (strings), got {prompts!r}."
            )
        bad = next((key for key, value in prompts.items() if not isinstance(value, str)), None)
        if bad is not None:
            raise ValueError(
                f"`{name}[{bad!r}]` is a {type(prompts[bad]).__name__} ({prompts[bad]!r}); prompts are strings "
                "prefixed to the text, e.g. {'query': 'query: '}."
            )
        prompts = dict(prompts)
    if default_prompt_name is not None and default_prompt_name not in (prompts or {}):
        raise ValueError(
            f"`default_prompt_name`={default_prompt_name!r} is not a key of `{name}`; available: {sorted(prompts or {})}."
        )
    return prompts, default_prompt_name


def resolve_use_projection(use_projection, embedding_dim: int, hidden_size: int) -> bool:
    """A projection is required when the embedding dim differs from the hidden size, optional otherwise."""
    if use_projection is None:
        return embedding_dim != hidden_size
    if not isinstance(use_projection, bool):
        raise ValueError(f"`use_projection` must be True, False or None, got {use_projection!r}.")
    if not use_projection and embedding_dim != hidden_size:
        raise ValueError(
            f"`use_projection=False` needs `embedding_dim` equal to the backbone's hidden size ({hidden_size}), "
            f"got embedding_dim={embedding_dim}; leave `use_projection` unset to project to {embedding_dim}."
        )
    return use_projection


def resolve_nesting(dims, weights, embedding_dim: int) -> tuple[list[int], list[float]]:
    """Defaults and validation shared by every Matryoshka config; dims come back ascending and
    the weights reordered with them. `weights` may name a preset of `MATRYOSHKA_WEIGHT_PRESETS`."""
    if dims is None:
        dims = default_matryoshka_dims(embedding_dim)
    sorted_dims = validate_matryoshka_dims(dims, embedding_dim)
    if weights is None:
        return sorted_dims, [1.0] * len(sorted_dims)
    if isinstance(weights, str):
        return sorted_dims, matryoshka_weights_preset(weights, sorted_dims)
    weights = validate_matryoshka_weights(weights, len(sorted_dims))
    by_dim = dict(zip(dims, weights))
    return sorted_dims, [by_dim[dim] for dim in sorted_dims]


def _without_local_paths(output: dict, keys: tuple[str, ...]) -> dict:
    """A serialised config whose sub-configs name no local folder: a saved model must not carry the path of the
    machine it was trained on (a Hub id, which the model card cites as the base model, is kept)."""
    for key in keys:
        sub = output.get(key)
        source = sub.get("_name_or_path") if isinstance(sub, dict) else None
        if source and (os.path.isabs(source) or os.path.exists(source)):
            sub["_name_or_path"] = ""
    return output


class MatryoshkaConfig(PreTrainedConfig):
    r"""
    Configuration of a Matryoshka embedding model over one transformers encoder (ViT, BERT, or any
    encoder whose output has `last_hidden_state`).

    Args:
        backbone_config (`PreTrainedConfig` or `dict`):
            Configuration of the encoder. A dict must carry its `model_type`.
        embedding_dim (`int`, *optional*, defaults to the backbone's hidden size):
            Size of the embedding. When it differs from the backbone's hidden size, a linear projection
            follows pooling.
        use_projection (`bool`, *optional*):
            Whether a linear projection follows pooling. Defaults to `True` exactly when `embedding_dim`
            differs from the hidden size. Set it to `True` to add one at the hidden size too: on encoders
            whose output is layer-normalised (BERT, ViT), the projection lets the first dims grow large
            for the small heads without shrinking the rest of the embedding.
        pooling (`str`, *optional*):
            `"cls"` (first token) or `"mean"` (attention-masked mean). Defaults to `"cls"` for vision
            backbones and `"mean"` for text backbones.
        matryoshka_dims (`list[int]`, *optional*):
            Nesting dims, each trained as an embedding of its own. Defaults to the powers of two from 8 up
            to `embedding_dim`, with `embedding_dim` itself always included. Stored ascending.
        matryoshka_weights (`list[float]` or `str`, *optional*, defaults to all 1.0):
            Relative loss weight of each nesting dim, in the order `matryoshka_dims` was given, or the name of a
            preset of `hf_mrl.modeling.nesting.MATRYOSHKA_WEIGHT_PRESETS` ("uniform", "paper_8x2", "paper_8x2_16x1.5");
            stored as the list of weights.
        efficient (`bool`, *optional*, defaults to `False`):
            MRL-E: the classification heads at every dim share one weight matrix (its first d columns form
            the head at dim d) instead of one matrix per dim.
        normalize (`bool`, *optional*, defaults to `True`):
            Whether `encode` L2-normalises embeddings (always after truncation).
        num_labels (`int`, *optional*):
            Number of classes of the classification models.
        prompts (`dict[str, str]`, *optional*):
            Named text prefixes, e.g. `{"query": "query: ", "passage": "passage: "}` (E5-style); `encode(...,
            prompt_name="query")` prefixes every text with `prompts["query"]` before tokenisation, as
            sentence-transformers does (it reads them from `config_sentence_transformers.json`, written beside).
        default_prompt_name (`str`, *optional*):
            The key of `prompts` applied when `encode` is given neither `prompt` nor `prompt_name`.

    `config.json` also carries `is_matryoshka: true` and `matryoshka_dimensions` (the nesting dims, largest
    first), the keys inference servers read to know a checkpoint may be truncated.
    """

    model_type = "matryoshka"

    def __init__(
        self,
        backbone_config=None,
        embedding_dim: int | None = None,
        pooling: str | None = None,
        matryoshka_dims: list[int] | None = None,
        matryoshka_weights: list[float] | None = None,
        efficient: bool = False,
        normalize: bool = True,
        use_projection: bool | None = None,
        prompts: dict[str, str] | None = None,
        default_prompt_name: str | None = None,
        **kwargs,
    ):
        # Derived keys written for other tools; recomputed here, never trusted on load.
        kwargs.pop("is_matryoshka", None)
        kwargs.pop("matryoshka_dimensions", None)
        if backbone_config is None:
            backbone_config = _config_for_model("bert")
        self.backbone_config = check_encoder_config(resolve_sub_config(backbone_config, "backbone_config"), "backbone_config")
        hidden_size = self.backbone_config.hidden_size
        self.embedding_dim = hidden_size if embedding_dim is None else check_positive_int(embedding_dim, "embedding_dim")
        self.pooling = default_pooling(self.backbone_config) if pooling is None else validate_pooling(pooling)
        self.matryoshka_dims, self.matryoshka_weights = resolve_nesting(
            matryoshka_dims, matryoshka_weights, self.embedding_dim
        )
        self.efficient = check_bool(efficient, "efficient")
        self.normalize = check_bool(normalize, "normalize")
        self.use_projection = resolve_use_projection(use_projection, self.embedding_dim, hidden_size)
        self.prompts, self.default_prompt_name = check_prompts(prompts, default_prompt_name)
        self.is_matryoshka = True
        self.matryoshka_dimensions = sorted(self.matryoshka_dims, reverse=True)
        super().__init__(**kwargs)

    @property
    def uses_projection(self) -> bool:
        """Whether a linear projection follows pooling (see `use_projection`)."""
        return self.use_projection

    def to_dict(self) -> dict:
        return _without_local_paths(super().to_dict(), ("backbone_config",))


class MatryoshkaDualEncoderConfig(PreTrainedConfig):
    r"""
    Configuration of an ALIGN / CLIP-style dual encoder whose projected image and text embeddings are
    Matryoshka embeddings: their first k dims can be compared across modalities for any k.

    Args:
        vision_config (`PreTrainedConfig` or `dict`):
            Configuration of the image tower (ViT, or any vision encoder returning `last_hidden_state`).
        text_config (`PreTrainedConfig` or `dict`):
            Configuration of the text tower (BERT, or any text encoder returning `last_hidden_state`).
        projection_dim (`int`, *optional*, defaults to 512):
            Size of the shared embedding space; both towers end with a linear projection to it.
        matryoshka_dims (`list[int]`, *optional*):
            Nesting dims of the contrastive loss. Defaults to the powers of two from 8 up to
            `projection_dim`, with `projection_dim` always included.
        matryoshka_weights (`list[float]` or `str`, *optional*, defaults to all 1.0):
            Relative weight of the loss at each nesting dim, or the name of a preset (see `MatryoshkaConfig`).
        temperature_init (`float`, *optional*, defaults to 0.07):
            Initial softmax temperature. It is learnt as a logit scale `log(1 / temperature)`, clamped like
            CLIP's so that the scale never exceeds 100.
        learn_temperature (`bool`, *optional*, defaults to `True`):
            Whether the temperature is a trainable parameter.
        label_smoothing (`float`, *optional*, defaults to 0.0):
            Label smoothing of the contrastive cross-entropy (ALIGN uses 0.1).
        vision_pooling, text_pooling (`str`, *optional*):
            `"cls"` or `"mean"` for each tower; defaults: cls for the image tower, mean for the text tower.
        prompts, default_prompt_name (*optional*):
            Named text prefixes of the text tower and the one applied by default (see `MatryoshkaConfig`), used by
            `encode_text`.
    """

    model_type = "matryoshka_dual_encoder"

    def __init__(
        self,
        vision_config=None,
        text_config=None,
        projection_dim: int = 512,
        matryoshka_dims: list[int] | None = None,
        matryoshka_weights: list[float] | None = None,
        temperature_init: float = 0.07,
        learn_temperature: bool = True,
        label_smoothing: float = 0.0,
        vision_pooling: str | None = None,
        text_pooling: str | None = None,
        prompts: dict[str, str] | None = None,
        default_prompt_name: str | None = None,
        **kwargs,
    ):
        kwargs.pop("is_matryoshka", None)
        kwargs.pop("matryoshka_dimensions", None)
        self.vision_config = check_encoder_config(resolve_sub_config(
            _config_for_model("vit") if vision_config is None else vision_config, "vision_config"
        ), "vision_config", "image")
        self.text_config = check_encoder_config(resolve_sub_config(
            _config_for_model("bert") if text_config is None else text_config, "text_config"
        ), "text_config", "text")
        self.projection_dim = check_positive_int(projection_dim, "projection_dim")
        self.matryoshka_dims, self.matryoshka_weights = resolve_nesting(
            matryoshka_dims, matryoshka_weights, self.projection_dim
        )
        self.temperature_init = check_number(temperature_init, "temperature_init", 0.01, 100)
        self.learn_temperature = check_bool(learn_temperature, "learn_temperature")
        self.label_smoothing = check_number(label_smoothing, "label_smoothing", 0, 1, high_open=True)
        self.vision_pooling = (
            default_pooling(self.vision_config) if vision_pooling is None else validate_pooling(vision_pooling, "vision_pooling")
        )
        self.text_pooling = (
            default_pooling(self.text_config) if text_pooling is None else validate_pooling(text_pooling, "text_pooling")
        )
        self.prompts, self.default_prompt_name = check_prompts(prompts, default_prompt_name)
        self.is_matryoshka = True
        self.matryoshka_dimensions = sorted(self.matryoshka_dims, reverse=True)
        super().__init__(**kwargs)

    def to_dict(self) -> dict:
        return _without_local_paths(super().to_dict(), ("vision_config", "text_config"))
