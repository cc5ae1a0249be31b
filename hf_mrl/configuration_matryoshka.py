"""Configuration of Matryoshka models: one backbone (`MatryoshkaConfig`)."""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig

from .nesting import default_matryoshka_dims, validate_matryoshka_dims, validate_matryoshka_weights

__all__ = ["MatryoshkaConfig", "POOLING_MODES", "resolve_sub_config", "default_pooling"]

POOLING_MODES = ("cls", "mean")


def resolve_sub_config(value, name: str) -> PreTrainedConfig:
    """A transformers config from a config object or its dict (as read back from config.json)."""
    if isinstance(value, PreTrainedConfig):
        return value
    if isinstance(value, dict):
        if "model_type" not in value:
            raise ValueError(f"`{name}` given as a dict must have a 'model_type' key, got keys {sorted(value)}.")
        values = dict(value)
        return AutoConfig.for_model(values.pop("model_type"), **values)
    raise ValueError(f"`{name}` must be a transformers config or its dict, got {type(value).__name__}.")


def default_pooling(backbone_config: PreTrainedConfig) -> str:
    """CLS pooling for vision encoders (they have an `image_size`), mean pooling for text."""
    return "cls" if hasattr(backbone_config, "image_size") else "mean"


def validate_pooling(pooling, name: str = "pooling") -> str:
    if pooling not in POOLING_MODES:
        raise ValueError(f"`{name}` must be one of {list(POOLING_MODES)}, got {pooling!r}.")
    return pooling


def validate_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return value


def resolve_nesting(dims, weights, embedding_dim: int) -> tuple[list[int], list[float]]:
    """Defaults and validation shared by every Matryoshka config; dims come back ascending and
    the weights reordered with them."""
    if dims is None:
        dims = default_matryoshka_dims(embedding_dim)
    sorted_dims = validate_matryoshka_dims(dims, embedding_dim)
    if weights is None:
        return sorted_dims, [1.0] * len(sorted_dims)
    weights = validate_matryoshka_weights(weights, len(sorted_dims))
    by_dim = dict(zip(dims, weights))
    return sorted_dims, [by_dim[dim] for dim in sorted_dims]


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
        pooling (`str`, *optional*):
            `"cls"` (first token) or `"mean"` (attention-masked mean). Defaults to `"cls"` for vision
            backbones and `"mean"` for text backbones.
        matryoshka_dims (`list[int]`, *optional*):
            Nesting dims, each trained as an embedding of its own. Defaults to the powers of two from 8 up
            to `embedding_dim`, with `embedding_dim` itself always included. Stored ascending.
        matryoshka_weights (`list[float]`, *optional*, defaults to all 1.0):
            Relative loss weight of each nesting dim, in the order `matryoshka_dims` was given.
        efficient (`bool`, *optional*, defaults to `False`):
            MRL-E: the classification heads at every dim share one weight matrix (its first d columns form
            the head at dim d) instead of one matrix per dim.
        normalize (`bool`, *optional*, defaults to `True`):
            Whether `encode` L2-normalises embeddings (always after truncation).
        num_labels (`int`, *optional*):
            Number of classes of the classification models.

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
        **kwargs,
    ):
        # Derived keys written for other tools; recomputed here, never trusted on load.
        kwargs.pop("is_matryoshka", None)
        kwargs.pop("matryoshka_dimensions", None)
        if backbone_config is None:
            backbone_config = AutoConfig.for_model("bert")
        self.backbone_config = resolve_sub_config(backbone_config, "backbone_config")
        hidden_size = self.backbone_config.hidden_size
        self.embedding_dim = hidden_size if embedding_dim is None else validate_positive_int(embedding_dim, "embedding_dim")
        self.pooling = default_pooling(self.backbone_config) if pooling is None else validate_pooling(pooling)
        self.matryoshka_dims, self.matryoshka_weights = resolve_nesting(
            matryoshka_dims, matryoshka_weights, self.embedding_dim
        )
        self.efficient = bool(efficient)
        self.normalize = bool(normalize)
        self.is_matryoshka = True
        self.matryoshka_dimensions = sorted(self.matryoshka_dims, reverse=True)
        super().__init__(**kwargs)

    @property
    def uses_projection(self) -> bool:
        """A projection follows pooling exactly when the embedding dim differs from the hidden size."""
        return self.embedding_dim != self.backbone_config.hidden_size
