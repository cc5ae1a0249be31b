"""Export of a Matryoshka text model as a plain sentence-transformers folder (no hf_mrl code needed to load it).

The folder holds the standard modules: Transformer (the bare encoder, saved as an ordinary transformers
checkpoint), Pooling (our pooling mode), Dense (our projection, identity activation, when the model has one)
and Normalize, plus `modules.json` and `config_sentence_transformers.json` (cosine similarity, and
`truncate_dim` when a default is given). `SentenceTransformer(path, truncate_dim=k)` keeps the first k
features, like `model.encode(..., dim=k)`.

One difference to know: sentence-transformers truncates AFTER its Normalize module, so the k-dim vectors
it returns are not unit length unless `encode(..., normalize_embeddings=True)`, which then equals
`model.encode(..., dim=k)`. Cosine similarities (`SentenceTransformer.similarity`) are equal either way.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from ..modeling.checks import check_positive_int, max_input_tokens
from ..modeling.configuration_matryoshka import MatryoshkaConfig
from ..modeling.encoding import FALLBACK_MAX_LENGTH, tokenizer_max_length
from ..modeling.files import MODEL_FOLDER, check_folder_target, temporary_folder, write_folder_atomically
from ..modeling.nesting import validate_dim
from .card import card_from_results
from .saving import README_FILE

__all__ = ["export_sentence_transformer", "write_sentence_transformers_files"]

TRANSFORMER_FOLDER = "0_Transformer"
ST_MODULE_CONFIG = "sentence_bert_config.json"


def _text_base_model(model):
    """The `MatryoshkaModel` inside `model` (itself, or a classifier's `.matryoshka`), checked to be a text model."""
    config = getattr(model, "config", None)
    if not isinstance(config, MatryoshkaConfig):
        raise ValueError(
            f"`model` must be a MatryoshkaModel or a Matryoshka classifier (MatryoshkaConfig), got {type(model).__name__}."
        )
    base = model.base_model
    if base.backbone.main_input_name != "input_ids":
        raise ValueError(
            f"`model` has a {config.backbone_config.model_type!r} backbone reading {base.backbone.main_input_name!r}; "
            "sentence-transformers export needs a text encoder (input_ids)."
        )
    return base


def _load_tokenizer(tokenizer) -> PreTrainedTokenizerBase:
    if isinstance(tokenizer, PreTrainedTokenizerBase):
        return tokenizer
    if isinstance(tokenizer, (str, os.PathLike)):
        return AutoTokenizer.from_pretrained(tokenizer)
    raise ValueError(f"`tokenizer` must be a transformers tokenizer or its folder / Hub id, got {type(tokenizer).__name__}.")


def _plain_encoder(base) -> nn.Module:
    """The backbone as its ordinary transformers class, pooler included when the class has one, so the folder
    is a complete checkpoint that loads without missing-weight reports. sentence-transformers never reads the
    pooler (it pools token embeddings itself); it is saved zeroed."""
    encoder = AutoModel.from_config(base.config.backbone_config)
    missing, unexpected = encoder.load_state_dict(base.backbone.state_dict(), strict=False)
    if unexpected or any(not key.startswith("pooler.") for key in missing):
        raise ValueError(f"The backbone does not match its config's model class (missing {missing}, unexpected {unexpected}).")
    with torch.no_grad():
        for name, parameter in encoder.named_parameters():
            if name in missing:
                parameter.zero_()
    return encoder.to(dtype=next(base.parameters()).dtype)


def _sentence_transformer(base, tokenizer, max_seq_length=None, truncate_dim=None, encoder_dir=None):
    """sentence-transformers' model of the same computation: Transformer (the plain encoder, with the nesting dims in
    its config) -> Pooling -> Dense (identity, when there is a projection) -> Normalize. The encoder is written to
    `encoder_dir` (a temporary folder when None), which the Transformer module reads."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    config = base.config
    with temporary_folder("hf_mrl-encoder-") as temporary:
        folder = encoder_dir or temporary
        encoder = _plain_encoder(base)
        encoder.config.matryoshka_dimensions = list(config.matryoshka_dims)  # survives sentence-transformers' saves
        encoder.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        modules = [Transformer(folder, max_seq_length=max_seq_length)]
        modules.append(Pooling(config.backbone_config.hidden_size, pooling_mode=config.pooling))
        if base.projection is not None:
            modules.append(
                Dense(
                    base.projection.in_features,
                    base.projection.out_features,
                    bias=base.projection.bias is not None,
                    activation_function=nn.Identity(),
                    init_weight=base.projection.weight.detach().clone(),
                    init_bias=None if base.projection.bias is None else base.projection.bias.detach().clone(),
                )
            )
        if config.normalize:
            modules.append(Normalize())
        return SentenceTransformer(modules=modules, device="cpu", similarity_fn_name="cosine", truncate_dim=truncate_dim)


def encode_max_length(tokenizer) -> int:
    """The length `encode` cuts texts at with `tokenizer` (its `model_max_length`, else `FALLBACK_MAX_LENGTH`)."""
    return tokenizer_max_length(tokenizer) or FALLBACK_MAX_LENGTH


def _write_max_seq_length(module_folder: Path, max_seq_length: int) -> None:
    """Writes `max_seq_length` into the Transformer module's `sentence_bert_config.json`, where
    sentence-transformers reads it (its own save leaves it out and falls back to the tokenizer and config)."""
    settings_file = module_folder / ST_MODULE_CONFIG
    settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    settings["max_seq_length"] = max_seq_length
    settings_file.write_text(json.dumps(settings, indent=4) + "\n")


def write_sentence_transformers_files(model, folder, tokenizer) -> None:
    """Adds sentence-transformers' files to a saved hf_mrl text model folder: `modules.json`,
    `config_sentence_transformers.json`, the Pooling / Dense / Normalize folders, and the plain encoder under
    `0_Transformer/` (the root `config.json` stays hf_mrl's). `SentenceTransformer(folder, truncate_dim=k)` then
    loads it without hf_mrl, and `MatryoshkaModel.from_pretrained` reads back a folder sentence-transformers saved.
    `tokenizer` is the one saved at the root: `0_Transformer/` gets the same one and the same max length
    (`max_seq_length`), so both load paths embed a long text alike."""
    base = _text_base_model(model)
    folder = Path(folder)
    tokenizer = _load_tokenizer(tokenizer)
    max_seq_length = encode_max_length(tokenizer)
    with temporary_folder("hf_mrl-st-") as staging:
        encoder_dir = staging / TRANSFORMER_FOLDER
        exported = _sentence_transformer(base, tokenizer, max_seq_length, None, str(encoder_dir))
        exported.save(str(staging / "st"), create_model_card=False)
        modules = json.loads((staging / "st" / "modules.json").read_text())
        for module in modules:
            source = staging / "st" / module["path"]
            if module["path"] == "":
                module["path"] = TRANSFORMER_FOLDER
                source = encoder_dir
                shutil.copyfile(staging / "st" / ST_MODULE_CONFIG, encoder_dir / ST_MODULE_CONFIG)
                _write_max_seq_length(encoder_dir, max_seq_length)
            target = folder / module["path"]
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target)
        (folder / "modules.json").write_text(json.dumps(modules, indent=2))
        shutil.copyfile(staging / "st" / "config_sentence_transformers.json", folder / "config_sentence_transformers.json")


def export_sentence_transformer(
    model,
    path,
    tokenizer,
    truncate_dim: int | None = None,
    *,
    max_seq_length: int | None = None,
    results: Mapping | None = None,
    **card_kwargs,
) -> Path:
    """Writes `model` (a text `MatryoshkaModel` or classifier; only its embedding part is exported) as a
    sentence-transformers folder at `path`, with a README.md card (sentence-transformers usage).

    Args:
        model: the Matryoshka text model.
        path: the output folder (new, empty, or a saved model folder, which is replaced atomically).
        tokenizer: the model's tokenizer, or its folder / Hub id.
        truncate_dim (`int`, *optional*): default `truncate_dim` stored in config_sentence_transformers.json
            (1 to the embedding dim); `SentenceTransformer(path, truncate_dim=k)` overrides it.
        max_seq_length (`int`, *optional*): longest input in tokens (default: the length `encode` cuts at, the
            tokenizer's `model_max_length`); written to sentence_bert_config.json.
        results, card_kwargs: per-dim results and other arguments for `card_from_results`.
    """
    base = _text_base_model(model)
    config = base.config
    if truncate_dim is not None:
        truncate_dim = validate_dim(truncate_dim, config.embedding_dim, "truncate_dim")
    if max_seq_length is not None:
        check_positive_int(max_seq_length, "max_seq_length")
        limit = max_input_tokens(config.backbone_config)
        if limit and max_seq_length > limit:
            raise ValueError(f"`max_seq_length` is {max_seq_length}, but the encoder takes at most {limit} tokens.")
    tokenizer = _load_tokenizer(tokenizer)
    max_seq_length = max_seq_length or encode_max_length(tokenizer)
    path = check_folder_target(path, MODEL_FOLDER)
    card = card_from_results(
        results, base, library_name="sentence-transformers", default_truncate_dim=truncate_dim, **card_kwargs
    )

    def write(staging: Path) -> None:
        exported = _sentence_transformer(base, tokenizer, max_seq_length, truncate_dim)
        exported.save(str(staging), create_model_card=False)
        transformer_path = json.loads((staging / "modules.json").read_text())[0]["path"]
        _write_max_seq_length(staging / transformer_path, max_seq_length)
        (staging / README_FILE).write_text(card, encoding="utf-8")

    return write_folder_atomically(path, write)
