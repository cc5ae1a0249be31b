"""The sentence-transformers layout of a text model folder, read and written here.

- Reading (`read_sentence_transformers_folder`), with no sentence-transformers import: where the encoder is, its
  pooling, the Dense layer's weights, whether the output is normalised and the prompts: what a `MatryoshkaConfig`
  needs.
- Writing (`write_sentence_transformers_files`): the modules sentence-transformers loads beside an hf_mrl text
  model (`modules.json`, the plain encoder under `0_Transformer/`, Pooling / Dense / Normalize), so
  `SentenceTransformer(folder, truncate_dim=k)` loads it without hf_mrl. The encoder's weights are then kept
  there only, not in the root `model.safetensors` too (see `saved_weights`). sentence-transformers is imported
  only then.

A flat module (only single-dot imports): the trust_remote_code export copies it beside the modeling files.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedTokenizerBase

from .configuration_matryoshka import MatryoshkaConfig
from .encoding import FALLBACK_MAX_LENGTH, tokenizer_max_length
from .files import temporary_folder
from .progress import transformers_progress_bars
from .saved_weights import ENCODER_FOLDER, move_encoder_out_of_root

__all__ = [
    "SentenceTransformersLayout",
    "MODULES_FILE",
    "read_sentence_transformers_folder",
    "is_sentence_transformers_folder",
    "encoder_prefix",
    "write_sentence_transformers_files",
]

MODULES_FILE = "modules.json"
ST_CONFIG_FILE = "config_sentence_transformers.json"
# Pooling modes of sentence-transformers' Pooling module that hf_mrl's pooling computes identically.
_POOLING_MODES = {"mean": "mean", "cls": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}
_IDENTITY = ("torch.nn.modules.linear.Identity", "torch.nn.Identity")


@dataclass
class SentenceTransformersLayout:
    """What a sentence-transformers folder computes: encoder (`transformer_path`) -> pooling -> optional Dense
    (identity activation) -> optional Normalize."""

    transformer_path: Path
    pooling: str
    dense_weight: torch.Tensor | None
    dense_bias: torch.Tensor | None
    normalize: bool
    matryoshka_dims: list[int] | None
    max_seq_length: int | None
    prompts: dict[str, str] | None = None
    default_prompt_name: str | None = None


def is_sentence_transformers_folder(path) -> bool:
    return Path(str(path)).expanduser().joinpath(MODULES_FILE).is_file()


def _kind(module: dict) -> str:
    return module.get("type", "").rsplit(".", 1)[-1]


def _pooling(folder: Path) -> str:
    config = json.loads((folder / "config.json").read_text())
    if "pooling_mode" in config:
        modes = [config["pooling_mode"]]
    else:
        modes = [key for key, value in config.items() if key.startswith("pooling_mode_") and value is True]
    if len(modes) != 1 or modes[0] not in _POOLING_MODES:
        raise ValueError(
            f"{folder}: pooling {modes} is not supported; hf_mrl pools with one of mean or cls (the first token)."
        )
    return _POOLING_MODES[modes[0]]


def _dense(folder: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    config = json.loads((folder / "config.json").read_text())
    activation = config.get("activation_function", "torch.nn.modules.activation.Tanh")
    if activation not in _IDENTITY:
        raise ValueError(
            f"{folder}: a Dense layer with activation {activation!r} has no hf_mrl equivalent (the projection is linear); "
            "only an identity activation is supported."
        )
    weights = load_file(folder / "model.safetensors") if (folder / "model.safetensors").is_file() else None
    if weights is None:
        raise ValueError(f"{folder}: the Dense layer's weights must be in model.safetensors (pickled weights are never loaded).")
    return weights["linear.weight"], weights.get("linear.bias")


def _module_folder(root: Path, module: dict) -> Path:
    """The folder of a module listed in modules.json: inside `root` (symbolic links resolved), never beside it."""
    relative = module.get("path", "")
    folder = root / str(relative)
    if not folder.resolve().is_relative_to(root.resolve()):
        raise ValueError(
            f"{root / MODULES_FILE}: module {module.get('name', module.get('idx'))!r} ({module.get('type')}) has path "
            f"{relative!r}, which points outside the model folder; a module's path must be a folder inside it."
        )
    return folder


def _prompts(root: Path) -> tuple[dict[str, str] | None, str | None]:
    """The prompts and default prompt name of `config_sentence_transformers.json`. sentence-transformers saves
    empty placeholders (`{"query": "", "document": ""}`) for every model: those alone mean no prompts (None)."""
    settings_file = root / ST_CONFIG_FILE
    settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    prompts, default_prompt_name = settings.get("prompts") or {}, settings.get("default_prompt_name")
    if not isinstance(prompts, dict):
        raise ValueError(f"{settings_file}: `prompts` must be a dict of prompt names to prefixes, got {prompts!r}.")
    prompts = {name: "" if prompt is None else prompt for name, prompt in prompts.items()}  # ST reads None as ""
    if default_prompt_name is None and not any(prompts.values()):
        return None, None
    return prompts, default_prompt_name


def read_sentence_transformers_folder(path) -> SentenceTransformersLayout:
    """The layout of the sentence-transformers folder at `path`; a clear `ValueError` for modules hf_mrl cannot
    reproduce exactly (other poolings, non-linear Dense layers, several Dense layers, unknown modules)."""
    root = Path(str(path)).expanduser()
    modules = json.loads((root / MODULES_FILE).read_text())
    transformer = pooling = dense = None
    normalize = False
    for module in modules:
        kind, folder = _kind(module), _module_folder(root, module)
        if kind == "Transformer" and transformer is None:
            transformer = folder
        elif kind == "Pooling" and pooling is None:
            pooling = _pooling(folder)
        elif kind == "Dense" and dense is None:
            dense = _dense(folder)
        elif kind == "Normalize":
            normalize = True
        else:
            raise ValueError(
                f"{root}: module {module.get('type')!r} (#{module.get('idx')}) is not supported; hf_mrl reads "
                "Transformer -> Pooling -> optional Dense (identity) -> optional Normalize."
            )
    if transformer is None or pooling is None:
        raise ValueError(f"{root}: a sentence-transformers folder needs a Transformer and a Pooling module.")
    config = json.loads((transformer / "config.json").read_text()) if (transformer / "config.json").is_file() else {}
    settings = transformer / "sentence_bert_config.json"
    max_seq_length = json.loads(settings.read_text()).get("max_seq_length") if settings.is_file() else None
    prompts, default_prompt_name = _prompts(root)
    return SentenceTransformersLayout(
        transformer_path=transformer, pooling=pooling,
        dense_weight=dense[0] if dense else None, dense_bias=dense[1] if dense else None,
        normalize=normalize, matryoshka_dims=config.get("matryoshka_dimensions"), max_seq_length=max_seq_length,
        prompts=prompts, default_prompt_name=default_prompt_name,
    )


# -- writing ------------------------------------------------------------------------------------------------

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


def _plain_encoder(base, weights=None) -> tuple[nn.Module, list[str]]:
    """The backbone as its ordinary transformers class with the backbone's `weights` (default: its own), and the
    names of the weights the class adds: a pooler, when the class has one, so the folder is a complete checkpoint
    that loads without missing-weight reports. sentence-transformers never reads the pooler (it pools token
    embeddings itself); it is saved zeroed."""
    encoder = AutoModel.from_config(base.config.backbone_config)
    missing, unexpected = encoder.load_state_dict(base.backbone.state_dict() if weights is None else weights, strict=False)
    if unexpected or any(not key.startswith("pooler.") for key in missing):
        raise ValueError(f"The backbone does not match its config's model class (missing {missing}, unexpected {unexpected}).")
    with torch.no_grad():
        for name, parameter in encoder.named_parameters():
            if name in missing:
                parameter.zero_()
    return encoder.to(dtype=next(base.parameters()).dtype), missing


def _sentence_transformer(base, tokenizer, max_seq_length=None, truncate_dim=None, encoder_dir=None, weights=None):
    """sentence-transformers' model of the same computation: Transformer (the plain encoder, with the nesting dims in
    its config) -> Pooling -> Dense (identity, when there is a projection) -> Normalize, with the model's prompts
    (saved to `config_sentence_transformers.json`). The encoder (with the backbone's `weights`, default its own) is
    written to `encoder_dir` (a temporary folder when None), which the Transformer module reads. Returns the model
    and the names of the weights the plain encoder adds (`_plain_encoder`)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    config = base.config
    with temporary_folder("hf_mrl-encoder-") as temporary:
        folder = encoder_dir or temporary
        encoder, added = _plain_encoder(base, weights)
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
        exported = SentenceTransformer(modules=modules, device="cpu", similarity_fn_name="cosine", truncate_dim=truncate_dim,
                                       prompts=config.prompts, default_prompt_name=config.default_prompt_name)
        return exported, added


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


def encoder_prefix(model) -> str:
    """Where `model`'s state dict holds the encoder: `backbone.`, or `matryoshka.backbone.` in a classifier."""
    return "backbone." if model.base_model is model else f"{model.base_model_prefix}.backbone."


def write_sentence_transformers_files(model, folder, tokenizer, state_dict=None) -> None:
    """Adds sentence-transformers' files to a saved hf_mrl text model folder: `modules.json`,
    `config_sentence_transformers.json`, the Pooling / Dense / Normalize folders, and the plain encoder under
    `0_Transformer/` (the root `config.json` stays hf_mrl's). `SentenceTransformer(folder, truncate_dim=k)` then
    loads it without hf_mrl, and `MatryoshkaModel.from_pretrained` reads back a folder sentence-transformers saved.
    The encoder's weights are kept there only: the root `model.safetensors` is rewritten without them, saying so in
    its metadata (`saved_weights.move_encoder_out_of_root`); `from_pretrained` reads them back from there.
    `state_dict` is the model's state dict being saved (default: the model's own), whose encoder part is written.
    `tokenizer` is the one saved at the root: `0_Transformer/` gets the same one and the same max length
    (`max_seq_length`), so both load paths embed a long text alike. transformers' bars (the encoder written, then
    read back by sentence-transformers) are off."""
    base = _text_base_model(model)
    folder = Path(folder)
    prefix = encoder_prefix(model)
    weights = None if state_dict is None else {
        name[len(prefix):]: value for name, value in state_dict.items() if name.startswith(prefix)
    }
    tokenizer = _load_tokenizer(tokenizer)
    max_seq_length = encode_max_length(tokenizer)
    with temporary_folder("hf_mrl-st-") as staging, transformers_progress_bars(False):
        encoder_dir = staging / ENCODER_FOLDER
        exported, added = _sentence_transformer(base, tokenizer, max_seq_length, None, str(encoder_dir), weights)
        exported.save(str(staging / "st"), create_model_card=False)
        modules = json.loads((staging / "st" / "modules.json").read_text())
        for module in modules:
            source = staging / "st" / module["path"]
            if module["path"] == "":
                module["path"] = ENCODER_FOLDER
                source = encoder_dir
                shutil.copyfile(staging / "st" / ST_MODULE_CONFIG, encoder_dir / ST_MODULE_CONFIG)
                _write_max_seq_length(encoder_dir, max_seq_length)
            target = folder / module["path"]
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(source, target)
        (folder / "modules.json").write_text(json.dumps(modules, indent=2))
        shutil.copyfile(staging / "st" / ST_CONFIG_FILE, folder / ST_CONFIG_FILE)
    move_encoder_out_of_root(folder, prefix, added)
