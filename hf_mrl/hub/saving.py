"""Shareable model folders: weights (safetensors), config, processor, README.md card and plot, and
optionally the modeling code itself so that `AutoModel.from_pretrained(folder, trust_remote_code=True)`
works where hf_mrl is not installed.

Every folder is written into a temporary sibling first and renamed into place, so the target never holds
a half-written model.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

from transformers import AutoConfig, PreTrainedModel
from transformers.dynamic_module_utils import custom_object_save

from ..modeling.configuration_matryoshka import MatryoshkaConfig, MatryoshkaDualEncoderConfig
from ..modeling.file_checks import check_local_path
from ..modeling.files import (
    MODEL_FOLDER,
    check_folder_target,
    record_written_files,
    temporary_folder,
    write_file_atomically,
    write_folder_atomically,
)
from ..modeling.modeling_dual_encoder import MatryoshkaDualEncoderModel
from ..modeling.modeling_matryoshka import (
    MatryoshkaForImageClassification,
    MatryoshkaForSequenceClassification,
    MatryoshkaModel,
    as_matryoshka_model,
    is_matryoshka_folder,
    is_sentence_transformer,
)
from ..modeling.sentence_transformers_format import is_sentence_transformers_folder, write_sentence_transformers_files
from ..output_folder import check_output_names, record_outputs
from .card import PLOT_FILE, card_from_results, describe_model, save_results_plot

__all__ = [
    "save_with_card",
    "make_trust_remote_code_ready",
    "remote_code_auto_map",
    "write_folder_atomically",
    "load_matryoshka_model",
    "write_card",
]

CONFIG_FILE = "config.json"
README_FILE = "README.md"

# The classes each config loads as, per Auto class: written to `auto_map` for trust_remote_code loading.
_AUTO_CLASSES = {
    MatryoshkaConfig: {
        "AutoModel": MatryoshkaModel,
        "AutoModelForImageClassification": MatryoshkaForImageClassification,
        "AutoModelForSequenceClassification": MatryoshkaForSequenceClassification,
    },
    MatryoshkaDualEncoderConfig: {"AutoModel": MatryoshkaDualEncoderModel},
}
_CONFIG_CLASSES = {config_class.model_type: config_class for config_class in _AUTO_CLASSES}
_MODEL_CLASSES = {cls.__name__: cls for classes in _AUTO_CLASSES.values() for cls in classes.values()}


def load_matryoshka_model(name_or_path, **kwargs) -> PreTrainedModel:
    """Loads an hf_mrl checkpoint (local folder or Hub id) as the class it was saved from (its config's
    `architectures`), so a classifier keeps its heads; `kwargs` go to `from_pretrained`."""
    if is_sentence_transformer(name_or_path):
        return as_matryoshka_model(name_or_path)
    check_local_path(name_or_path, "model")
    if is_sentence_transformers_folder(name_or_path) and not is_matryoshka_folder(name_or_path):
        return MatryoshkaModel.from_backbone(name_or_path)  # a sentence-transformers model, scored like any baseline
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except OSError as error:
        if isinstance(name_or_path, str) and not Path(name_or_path).expanduser().exists():
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise FileNotFoundError(
                f"folder not found: {name_or_path} (`model`: no local folder of that name; as a Hugging Face Hub id "
                f"it did not load either: {reason})"
            ) from None
        raise
    if type(config) not in _AUTO_CLASSES:
        raise ValueError(
            f"`{name_or_path}` holds a {config.model_type!r} model; expected an hf_mrl model ({sorted(_CONFIG_CLASSES)})."
        )
    saved = [name for name in (config.architectures or []) if name in _MODEL_CLASSES]
    model_class = _MODEL_CLASSES[saved[0]] if saved else _AUTO_CLASSES[type(config)]["AutoModel"]
    return model_class.from_pretrained(name_or_path, config=config, **kwargs)


def _reference(cls) -> str:
    """`module_file_stem.ClassName`, the form `auto_map` uses for code files beside config.json."""
    return f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"


def remote_code_auto_map(config_class) -> dict[str, str]:
    """The `auto_map` of a trust_remote_code folder for `config_class` (MatryoshkaConfig or the dual encoder's)."""
    if config_class not in _AUTO_CLASSES:
        raise ValueError(f"`config_class` must be one of {[cls.__name__ for cls in _AUTO_CLASSES]}, got {config_class!r}.")
    return {"AutoConfig": _reference(config_class)} | {
        auto_name: _reference(model_class) for auto_name, model_class in _AUTO_CLASSES[config_class].items()
    }


def _write_remote_code(folder: Path, config_class) -> None:
    """transformers' `custom_object_save` gathers the code (each class's module and every file it imports
    relatively: nesting, losses, checks, ...) into a scratch folder; each file is then written into `folder`
    through a temporary name, and config.json last with `auto_map`, so an interrupted call leaves a folder that
    loads as before."""
    with temporary_folder("hf_mrl-code-") as scratch:
        for cls in [config_class, *_AUTO_CLASSES[config_class].values()]:
            custom_object_save(cls, scratch)
        names = sorted(path.name for path in scratch.iterdir())
        for name in names:
            write_file_atomically(folder / name, lambda file, source=scratch / name: shutil.copyfile(source, file))
    config_path = folder / CONFIG_FILE
    config = json.loads(config_path.read_text())
    config["auto_map"] = remote_code_auto_map(config_class)
    write_file_atomically(config_path, lambda file: file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n"))
    record_written_files(folder, [*names, CONFIG_FILE])  # ours: a re-save replaces them


def make_trust_remote_code_ready(path) -> Path:
    """Adds the modeling code and `auto_map` to a folder written by `save_pretrained` / `save_with_card`, so
    `AutoModel.from_pretrained(path, trust_remote_code=True)` loads it without hf_mrl installed. The folder is
    updated in place (weights are not copied), every file through a temporary name, config.json last."""
    path = Path(path)
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise ValueError(f"`path` {str(path)!r} is not a saved model folder: it has no {CONFIG_FILE}.")
    try:
        model_type = json.loads(config_path.read_text()).get("model_type")
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path} is not valid JSON ({error}).") from error
    if model_type not in _CONFIG_CLASSES:
        raise ValueError(f"{config_path} has model_type {model_type!r}; allowed: {sorted(_CONFIG_CLASSES)} (hf_mrl models).")
    _write_remote_code(path, _CONFIG_CLASSES[model_type])
    return path


def _check_model(model) -> None:
    if not isinstance(model, PreTrainedModel):
        raise ValueError(f"`model` must be an hf_mrl model (a transformers PreTrainedModel), got {type(model).__name__}.")
    describe_model(model)  # raises for configs other than ours


def save_with_card(
    model,
    path,
    results: Mapping | None = None,
    processor=None,
    *,
    trust_remote_code_ready: bool = False,
    plot: bool = True,
    **card_kwargs,
) -> Path:
    """Writes `model` to the folder `path`, ready to share: `model.safetensors` (+ shards), `config.json`
    (with `is_matryoshka` / `matryoshka_dimensions`), the processor or tokenizer files when `processor` is
    given, `README.md` (see `card_from_results`) and, with `results`, the plot `matryoshka_results.png`.

    With `trust_remote_code_ready=True` the folder also carries the modeling code (configuration, modeling and
    their relative imports) and `auto_map` in config.json: `AutoModel.from_pretrained(path,
    trust_remote_code=True)` then works without hf_mrl installed.

    Everything is checked, and the card rendered, before anything is written; the folder appears complete or
    not at all. An existing hf_mrl model folder at `path` is replaced (files in it that hf_mrl did not write
    are kept); any other non-empty folder is refused (see `hf_mrl.modeling.files.write_folder_atomically`).
    `card_kwargs` go to `card_from_results` (`repo_id`, `base_model`, `datasets`, `license`, ...).
    """
    _check_model(model)
    path = check_folder_target(path, MODEL_FOLDER)
    if processor is not None and not callable(getattr(processor, "save_pretrained", None)):
        raise ValueError(f"`processor` must have `save_pretrained` (a tokenizer or processor), got {type(processor).__name__}.")
    plot_file = PLOT_FILE if (plot and results is not None) else None
    card = card_from_results(
        results, model, plot_file=plot_file, trust_remote_code=trust_remote_code_ready, **card_kwargs
    )

    def write(staging: Path) -> None:
        model.save_pretrained(staging)
        if processor is not None:
            processor.save_pretrained(staging)
            if isinstance(model.config, MatryoshkaConfig) and model.main_input_name == "input_ids":
                # the sentence-transformers files take this tokenizer too: one max length, one embedding
                write_sentence_transformers_files(model, staging, processor)
        if plot_file is not None:
            save_results_plot(results, staging / plot_file, metrics=card_kwargs.get("metrics"))
        (staging / README_FILE).write_text(card, encoding="utf-8")
        if trust_remote_code_ready:
            _write_remote_code(staging, type(model.config))

    return write_folder_atomically(path, write)


def write_card(path, model, results: Mapping | None = None, *, plot: bool = True, **card_kwargs) -> Path:
    """Writes the card of `model` (see `card_from_results`) to the file `path` (e.g. a model folder's README.md)
    and, with `results` and `plot`, the results plot `matryoshka_results.png` beside it. Each file is written
    to a temporary name and renamed, so neither is ever half-written; a file already at either name that hf_mrl
    did not write (or that changed since) is never replaced: `ValueError` before any work."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"`path` {str(path)!r} is a folder; give the card's file path, e.g. {str(path / README_FILE)!r}.")
    plot_file = PLOT_FILE if (plot and results is not None) else None
    card = card_from_results(results, model, plot_file=plot_file, **card_kwargs)
    check_output_names(path.parent, [path.name] + ([plot_file] if plot_file else []), "path")
    path.parent.mkdir(parents=True, exist_ok=True)
    if plot_file is not None:
        save_results_plot(results, path.parent / plot_file, card_kwargs.get("metrics"))  # atomic itself
    write_file_atomically(path, lambda file: file.write_text(card, encoding="utf-8"))
    record_outputs(path.parent, [path.name] + ([plot_file] if plot_file else []))  # the next card may replace them
    return path
