"""Building the classifiers the training scripts train: a ViT or BERT from scratch, or any pretrained
encoder, with MRL, MRL-E or fixed-feature (FF) heads.

- "mrl": one linear head per nesting dim, over one embedding of `embedding_dim`.
- "mrl-e": the same, but the heads share one weight matrix (MRL-Efficient).
- "ff": the fixed-feature baseline of the MRL paper: a model whose embedding IS `ff_dim` wide (projection to
  `ff_dim`, one head), trained independently for each low dim. At the full dim it is the plain non-MRL
  model whose truncated embeddings MRL is compared with.
"""

from __future__ import annotations

from transformers import AutoConfig, BertConfig, PreTrainedConfig, ViTConfig

from ..modeling.checks import check_number, check_positive_int
from ..modeling.configuration_matryoshka import MatryoshkaConfig
from ..modeling.modeling_matryoshka import MatryoshkaForImageClassification, MatryoshkaForSequenceClassification
from ..modeling.nesting import default_matryoshka_dims, validate_matryoshka_dims

__all__ = [
    "HEAD_KINDS",
    "BACKBONE_KINDS",
    "head_settings",
    "scratch_backbone_config",
    "is_vision_config",
    "classifier_class",
    "build_classifier",
]

HEAD_KINDS = ("mrl", "mrl-e", "ff")
BACKBONE_KINDS = ("vit", "bert")


def head_settings(
    heads: str, embedding_dim: int, matryoshka_dims: list[int] | None = None, ff_dim: int | None = None
) -> dict:
    """`MatryoshkaConfig` keyword arguments (`embedding_dim`, `matryoshka_dims`, `efficient`) for a kind of heads.

    Args:
        heads: one of `HEAD_KINDS`.
        embedding_dim: the full embedding dim of the MRL model (the widest FF model).
        matryoshka_dims: nesting dims for "mrl" / "mrl-e" (default: powers of two from 8, and the full dim).
        ff_dim: the one dim of an "ff" model (default: `embedding_dim`).
    """
    if heads not in HEAD_KINDS:
        raise ValueError(f"`heads` must be one of {list(HEAD_KINDS)}, got {heads!r}.")
    check_positive_int(embedding_dim, "embedding_dim")
    if heads == "ff":
        if matryoshka_dims is not None:
            raise ValueError(
                f"`matryoshka_dims` ({matryoshka_dims!r}) does not apply to heads='ff'; give the one dim as `ff_dim`."
            )
        dim = embedding_dim if ff_dim is None else ff_dim
        validate_matryoshka_dims([dim], embedding_dim, name="ff_dim")
        return {"embedding_dim": dim, "matryoshka_dims": [dim], "efficient": False}
    if ff_dim is not None:
        raise ValueError(f"`ff_dim` ({ff_dim!r}) applies to heads='ff' only, not {heads!r}.")
    dims = default_matryoshka_dims(embedding_dim) if matryoshka_dims is None else matryoshka_dims
    dims = validate_matryoshka_dims(dims, embedding_dim)
    return {"embedding_dim": embedding_dim, "matryoshka_dims": dims, "efficient": heads == "mrl-e"}


def scratch_backbone_config(
    backbone: str,
    hidden_size: int,
    num_layers: int,
    num_attention_heads: int,
    intermediate_size: int | None = None,
    dropout: float = 0.0,
    image_size: int = 28,
    patch_size: int = 7,
    num_channels: int = 1,
    vocab_size: int | None = None,
    max_position_embeddings: int = 512,
) -> PreTrainedConfig:
    """A randomly initialised ViT (`image_size`, `patch_size`, `num_channels`) or BERT (`vocab_size`) config."""
    if backbone not in BACKBONE_KINDS:
        raise ValueError(f"`backbone` must be one of {list(BACKBONE_KINDS)}, got {backbone!r}.")
    for name, value in (("hidden_size", hidden_size), ("num_layers", num_layers), ("num_attention_heads", num_attention_heads)):
        check_positive_int(value, name)
    if hidden_size % num_attention_heads:
        raise ValueError(
            f"`hidden_size` ({hidden_size}) must be a multiple of `num_attention_heads` ({num_attention_heads})."
        )
    check_number(dropout, "dropout", 0, 1, high_open=True)
    shared = dict(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    if backbone == "vit":
        check_positive_int(image_size, "image_size")
        check_positive_int(patch_size, "patch_size")
        if num_channels not in (1, 3):
            raise ValueError(f"`num_channels` must be 1 or 3 (grey or RGB images), got {num_channels!r}.")
        if image_size % patch_size:
            raise ValueError(f"`image_size` ({image_size}) must be a multiple of `patch_size` ({patch_size}).")
        return ViTConfig(image_size=image_size, patch_size=patch_size, num_channels=num_channels, **shared)
    if vocab_size is None:
        raise ValueError("A BERT backbone built from scratch needs `vocab_size` (the tokenizer's length).")
    return BertConfig(vocab_size=vocab_size, max_position_embeddings=max_position_embeddings, **shared)


def is_vision_config(config: PreTrainedConfig) -> bool:
    """Vision encoders have an `image_size` (ViT, DeiT, ...); text encoders do not."""
    return hasattr(config, "image_size")


def classifier_class(backbone_config: PreTrainedConfig):
    return MatryoshkaForImageClassification if is_vision_config(backbone_config) else MatryoshkaForSequenceClassification


def build_classifier(
    num_labels: int,
    heads: str = "mrl",
    backbone_config: PreTrainedConfig | None = None,
    model_name_or_path: str | None = None,
    embedding_dim: int | None = None,
    matryoshka_dims: list[int] | None = None,
    ff_dim: int | None = None,
    matryoshka_weights: list[float] | None = None,
    use_projection: bool | None = None,
):
    """A Matryoshka classifier over `backbone_config` (random weights) or the pretrained encoder at
    `model_name_or_path` (exactly one of the two).

    `embedding_dim` defaults to the backbone's hidden size (no projection); for heads="ff" the model's
    embedding is `ff_dim` wide (a projection when that differs from the hidden size). `use_projection=True`
    adds a projection at the hidden size too (see `MatryoshkaConfig`).
    """
    if (backbone_config is None) == (model_name_or_path is None):
        raise ValueError("Give exactly one of `backbone_config` (train from scratch) and `model_name_or_path`.")
    config = backbone_config if backbone_config is not None else AutoConfig.from_pretrained(model_name_or_path)
    settings = head_settings(heads, embedding_dim or config.hidden_size, matryoshka_dims, ff_dim)
    if matryoshka_weights is not None:
        settings["matryoshka_weights"] = matryoshka_weights
    if use_projection is not None:
        settings["use_projection"] = use_projection
    model_class = classifier_class(config)
    if model_name_or_path is not None:
        return model_class.from_backbone(model_name_or_path, num_labels=num_labels, **settings)
    return model_class(MatryoshkaConfig(backbone_config=config, num_labels=num_labels, **settings))
