"""Model cards for Matryoshka checkpoints, rendered from the Jinja template in `templates/`.

A card holds YAML metadata (`library_name`, tags incl. `matryoshka`, base model, datasets, licence and a
`model-index` with one result per evaluated dim), the per-dim results tables and plot, usage snippets
(transformers + truncation, sentence-transformers with `truncate_dim`, adaptive retrieval with
`MatryoshkaIndex`) and the MRL citation.

Results are the evaluators' flat dicts, keyed `{name}_dim{k}_{metric}` (e.g. `wordnet_dim32_recall@10`);
several evaluators' dicts merged into one give one table per evaluator name.
"""

from __future__ import annotations

import html
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..evaluation.report import keep_y_span, markdown_table, parse_metric_key, pyplot, save_figure
from ..modeling.configuration_matryoshka import MatryoshkaConfig, MatryoshkaDualEncoderConfig

__all__ = [
    "TEMPLATE_PATH",
    "PLOT_FILE",
    "MRL_CITATION",
    "LIBRARY_NAMES",
    "ModelSummary",
    "describe_model",
    "group_results",
    "model_class_names",
    "card_from_results",
    "save_results_plot",
]

TEMPLATE_PATH = Path(__file__).with_name("templates") / "model_card.md.jinja"
PLOT_FILE = "matryoshka_results.png"
LIBRARY_NAMES = ("transformers", "sentence-transformers", "hf_mrl")
MRL_CITATION = """@inproceedings{kusupati2022matryoshka,
  title={Matryoshka Representation Learning},
  author={Kusupati, Aditya and Bhatt, Gantavya and Rege, Aniket and Wallingford, Matthew and Sinha, Aditya and Ramanujan, Vivek and Howard-Snyder, William and Chen, Kaifeng and Kakade, Sham and Jain, Prateek and Farhadi, Ali},
  booktitle={Advances in Neural Information Processing Systems},
  volume={35},
  year={2022}
}"""

_CLASSIFICATION_METRIC = re.compile(r"^(top\d+|\d+nn)$")
_KIND_PHRASES = {
    "embedding": "embedding model",
    "classification": "classification model",
    "dual-encoder": "image-text dual encoder",
}


@dataclass
class ModelSummary:
    """What a card says about a model, read from its config.

    kind: "embedding", "classification" or "dual-encoder"; modality: "text", "image" or "image-text".
    """

    class_name: str
    kind: str
    modality: str
    embedding_dim: int
    matryoshka_dims: list[int]
    backbone_phrase: str
    pooling: str | None
    projection: bool
    num_labels: int | None
    efficient: bool
    base_model: str | None
    class_names: list[str] | None = None


_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")


def inline_text(value) -> str:
    """A user string (class, dataset, evaluator or metric name, title, description) made safe for one line of the
    card: HTML escaped (`<img onerror=...>` shows as text), table pipes escaped, line breaks turned into spaces (no
    injected heading or table row)."""
    text = html.escape(_LINE_BREAKS.sub(" ", str(value)), quote=False)
    return text.replace("|", "\\|")


def _hub_id_or_none(name) -> str | None:
    """`name` when it reads as a Hub repo id (not a local folder), else None: cards may only name Hub models."""
    if not isinstance(name, str) or not name or os.path.exists(name):
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def _modality(backbone_config) -> str:
    return "image" if hasattr(backbone_config, "image_size") else "text"


def model_class_names(model) -> list[str] | None:
    """The class names in `model.config.id2label`, ordered by id; None when they are transformers' default
    `LABEL_i` names (or missing)."""
    id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
    names = [str(id2label[key]) for key in sorted(id2label, key=int)]
    if not names or names == [f"LABEL_{index}" for index in range(len(names))]:
        return None
    return names


def describe_model(model) -> ModelSummary:
    """A `ModelSummary` of any hf_mrl model (`MatryoshkaModel`, the classifiers, the dual encoder)."""
    config = getattr(model, "config", None)
    if isinstance(config, MatryoshkaDualEncoderConfig):
        return ModelSummary(
            class_name=type(model).__name__,
            kind="dual-encoder",
            modality="image-text",
            embedding_dim=config.projection_dim,
            matryoshka_dims=list(config.matryoshka_dims),
            backbone_phrase=f"a `{config.vision_config.model_type}` image tower and a `{config.text_config.model_type}` text tower",
            pooling=f"{config.vision_pooling} (image), {config.text_pooling} (text)",
            projection=True,
            num_labels=None,
            efficient=False,
            base_model=_hub_id_or_none(getattr(config.text_config, "_name_or_path", None)),
        )
    if isinstance(config, MatryoshkaConfig):
        backbone = config.backbone_config
        is_classifier = hasattr(model, "heads")
        return ModelSummary(
            class_name=type(model).__name__,
            kind="classification" if is_classifier else "embedding",
            modality=_modality(backbone),
            embedding_dim=config.embedding_dim,
            matryoshka_dims=list(config.matryoshka_dims),
            backbone_phrase=f"a `{backbone.model_type}` encoder",
            pooling=config.pooling,
            projection=config.uses_projection,
            num_labels=config.num_labels if is_classifier else None,
            efficient=config.efficient,
            base_model=_hub_id_or_none(getattr(backbone, "_name_or_path", None)),
            class_names=model_class_names(model) if is_classifier else None,
        )
    raise ValueError(
        f"`model` must be an hf_mrl model (its config a MatryoshkaConfig or MatryoshkaDualEncoderConfig), "
        f"got {type(model).__name__} with config {type(config).__name__}."
    )


def group_results(results: Mapping) -> dict[str, dict[int, dict[str, float]]]:
    """A flat `{name}_dim{k}_{metric}` dict -> `{name: {dim: {metric: value}}}` (dims ascending). Keys of
    another form (timings, primary-metric copies) are skipped; a metric value that is not a finite number
    raises `ValueError`, as do results with no per-dim key at all."""
    if not isinstance(results, Mapping):
        raise ValueError(f"`results` must be a dict of '{{name}}_dim{{k}}_{{metric}}' keys, got {type(results).__name__}.")
    grouped: dict[str, dict[int, dict[str, float]]] = {}
    for key, value in results.items():
        try:
            name, dim, metric = parse_metric_key(str(key))
        except ValueError:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"`results[{key!r}]` must be a finite number, got {value!r}.")
        grouped.setdefault(name, {}).setdefault(dim, {})[metric] = float(value)
    if not grouped:
        raise ValueError(
            f"`results` has no key of the form '{{name}}_dim{{k}}_{{metric}}' (e.g. 'wordnet_dim32_recall@10'); "
            f"got keys {sorted(map(str, results))[:5]}."
        )
    return {name: dict(sorted(by_dim.items())) for name, by_dim in sorted(grouped.items())}


def _task_type(by_dim: dict[int, dict[str, float]], modality: str) -> str:
    metrics = {metric for row in by_dim.values() for metric in row}
    if all(_CLASSIFICATION_METRIC.match(metric) for metric in metrics):
        return "image-classification" if modality == "image" else "text-classification"
    return "retrieval"


# Our metric names -> the names the Hub's model-index uses; the exact metric (k, direction) and the dim go in the
# metric's config.
_HUB_METRIC_TYPES = (
    ("ndcg", "ndcg"), ("mrr", "mrr"), ("map", "map"), ("recall", "recall"), ("precision", "precision"),
    ("top", "accuracy"), ("nn", "accuracy"),
)


def hub_metric_type(metric: str) -> str:
    """`top1`, `1nn`, `zero_shot_top1` -> accuracy; `recall@10`, `t2i_recall@1` -> recall; `ndcg@10` -> ndcg;
    `ir_map@10` -> map; `mrr@10` -> mrr; anything else as it is."""
    return next((hub for part, hub in _HUB_METRIC_TYPES if part in metric), metric)


def _eval_results(grouped, modality: str, dataset_ids: Mapping[str, str], task_types: Mapping[str, str]) -> list[EvalResult]:
    """One model-index result per (evaluator, dim). huggingface_hub groups metrics into results by task type,
    dataset type, config and split, so the dim is written as the dataset config (`dim32`): each size stays its
    own result when the card is loaded and saved again by huggingface_hub."""
    eval_results = []
    for raw_name, by_dim in grouped.items():
        task_type = inline_text(task_types.get(raw_name) or _task_type(by_dim, modality))
        name = inline_text(raw_name)
        for dim, row in by_dim.items():
            for raw_metric, value in sorted(row.items()):
                metric = inline_text(raw_metric)
                eval_results.append(
                    EvalResult(
                        task_type=task_type,
                        task_name=f"{name} (dim {dim})",
                        dataset_type=inline_text(dataset_ids.get(raw_name, raw_name)),
                        dataset_name=name,
                        dataset_config=f"dim{dim}",
                        metric_type=hub_metric_type(metric),
                        metric_value=value,
                        metric_name=f"{metric} @ dim {dim}",
                        metric_config=f"{metric}, dim={dim}",
                    )
                )
    return eval_results


def save_results_plot(results: Mapping, path, metrics: Sequence[str] | None = None) -> Path:
    """Metric against embedding dim (log2 axis), one panel per evaluator, one line per metric; PNG at `path`
    (written atomically)."""
    grouped = group_results(results)
    figure, axes = pyplot().subplots(1, len(grouped), figsize=(5 * len(grouped), 3.6), squeeze=False)
    for axis, (name, by_dim) in zip(axes[0], grouped.items()):
        shown = metrics or sorted({metric for row in by_dim.values() for metric in row})
        for metric in shown:
            points = [(dim, row[metric]) for dim, row in by_dim.items() if metric in row]
            if points:
                axis.plot(*zip(*points), marker="o", label=metric)
        keep_y_span(axis, [row[metric] for row in by_dim.values() for metric in shown if metric in row])
        axis.set_xscale("log", base=2)
        axis.set_xlabel("embedding dim")
        axis.set_title(name)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize="small")
    save_figure(figure, path)
    return Path(path)


def _example_dims(dims: list[int]) -> tuple[int, int]:
    """A mid-sized nesting dim for the usage snippets and a small one (~1/8 of the full dim) to shortlist with."""
    small = [dim for dim in dims if dim * 8 <= dims[-1]] or dims[:1]
    return dims[len(dims) // 2], small[-1]


def _check_str_list(value, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence) or not all(isinstance(item, str) and item for item in value):
        raise ValueError(f"`{name}` must be a string or a list of non-empty strings, got {value!r}.")
    return list(value)


_LICENSE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]*")


def _check_license(license) -> None:
    """A Hub licence identifier (`mit`, `apache-2.0`, `cc-by-4.0`, `other`, ...): one line of letters, digits,
    dots and dashes, so the card's YAML metadata cannot be broken or extended by it."""
    if not isinstance(license, str) or not _LICENSE.fullmatch(license):
        raise ValueError(
            f"`license` must be a Hub licence identifier such as 'mit', 'apache-2.0' or 'other' (one line of letters, "
            f"digits, dots and dashes), got {license!r}."
        )


def _name_and_dim(key: str) -> tuple[str, int] | None:
    try:
        return parse_metric_key(key)[:2]
    except ValueError:
        return None


def _check_result_dims(results, grouped, summary: ModelSummary) -> None:
    """Every result dim must be one the model can give (1 to its embedding dim): a card row at dim 999 of a
    32-dim model describes another model."""
    for name, by_dim in grouped.items():
        for dim in by_dim:
            if not 1 <= dim <= summary.embedding_dim:
                key = next((str(key) for key in results if _name_and_dim(str(key)) == (name, dim)), f"{name}_dim{dim}_*")
                raise ValueError(
                    f"`results[{key!r}]` is at dim {dim}, which the model does not have: its embedding dim is "
                    f"{summary.embedding_dim} (nesting dims {summary.matryoshka_dims}); drop it or pass the model "
                    "it was measured on."
                )


def card_from_results(
    results: Mapping | None = None,
    model=None,
    *,
    model_name: str | None = None,
    repo_id: str | None = None,
    description: str | None = None,
    base_model: str | None = None,
    datasets: str | Sequence[str] | None = None,
    dataset_ids: Mapping[str, str] | None = None,
    task_types: Mapping[str, str] | None = None,
    license: str = "apache-2.0",
    language: str | Sequence[str] | None = None,
    tags: Sequence[str] | None = None,
    library_name: str = "transformers",
    metrics: Sequence[str] | None = None,
    plot_file: str | None = None,
    trust_remote_code: bool = False,
    default_truncate_dim: int | None = None,
    template: str | os.PathLike | None = None,
) -> str:
    """The README.md text of a model card for `model`, with the evaluators' `results` (optional).

    Args:
        results (`dict`, *optional*): flat `{name}_dim{k}_{metric}` dict from the evaluators (several merged
            are fine); one table per evaluator name and one model-index result per (name, dim).
        model: the hf_mrl model the card describes (its config gives dims, backbone, pooling, kind).
        model_name (`str`, *optional*): title and model-index name (default: the last part of `repo_id`, else
            the class name).
        repo_id (`str`, *optional*): Hub id used in the usage snippets (default: a placeholder folder name).
        description (`str`, *optional*): a paragraph under the title.
        base_model (`str`, *optional*): Hub id of the pretrained encoder (default: read from the config when it
            is a Hub id; local paths are never written).
        datasets (`str` or list, *optional*): Hub ids of the training data, for the metadata.
        dataset_ids / task_types (`dict`, *optional*): per evaluator name, the dataset id and task type written
            to model-index (defaults: the evaluator name; classification or "retrieval" from the metrics).
        license, language, tags: metadata; `matryoshka` and `hf_mrl` are always among the tags.
        library_name (`str`): one of `LIBRARY_NAMES`; "sentence-transformers" renders the card of a
            sentence-transformers export.
        metrics (list of `str`, *optional*): metric columns of the tables (default: all).
        plot_file (`str`, *optional*): file name of the results plot in the same folder, linked from the card.
        trust_remote_code (`bool`): the folder carries its modeling code; adds the `trust_remote_code` snippet.
        default_truncate_dim (`int`, *optional*): the `truncate_dim` a sentence-transformers export defaults to.
        template (path, *optional*): another Jinja template (default: `TEMPLATE_PATH`).
    """
    summary = describe_model(model)
    grouped = group_results(results) if results is not None else {}
    _check_result_dims(results, grouped, summary)
    _check_license(license)
    for dataset in _check_str_list(datasets, "datasets"):
        try:
            validate_repo_id(dataset)
        except HFValidationError:
            raise ValueError(
                f"`datasets` holds {dataset!r}, not a Hub dataset id; give ids such as 'name' or 'org/name' (letters, "
                "digits, '-', '_', '.'; at most one '/')."
            ) from None
    if library_name not in LIBRARY_NAMES:
        raise ValueError(f"`library_name` must be one of {list(LIBRARY_NAMES)}, got {library_name!r}.")
    if repo_id is not None:
        try:
            validate_repo_id(repo_id)
        except HFValidationError as error:
            raise ValueError(f"`repo_id` {repo_id!r} is not a valid Hub repo id: {error}") from error
    if base_model is not None and _hub_id_or_none(base_model) is None:
        raise ValueError(f"`base_model` must be a Hub repo id such as 'org/name' (not a local path), got {base_model!r}.")
    if metrics is not None:
        metrics = _check_str_list(metrics, "metrics")
    template_path = Path(template) if template is not None else TEMPLATE_PATH
    if not template_path.is_file():
        raise ValueError(f"`template` {str(template_path)!r} is not a file.")

    base_model = base_model or summary.base_model
    # every user string is one escaped line of text (see `inline_text`); base_model and repo_id are checked Hub ids
    model_name = inline_text(model_name or (repo_id.split("/")[-1] if repo_id else summary.class_name))
    description = inline_text(description) if description else None
    license = inline_text(license)
    datasets = [inline_text(dataset) for dataset in _check_str_list(datasets, "datasets")]
    if summary.class_names:
        summary = replace(summary, class_names=[inline_text(name) for name in summary.class_names])
    tags = ["matryoshka", "mrl", "hf_mrl", "embeddings", *_check_str_list(tags, "tags")]
    if library_name == "sentence-transformers":
        tags += ["sentence-transformers", "sentence-similarity", "feature-extraction"]
    card_data = ModelCardData(
        model_name=model_name,
        library_name=library_name,
        license=license,
        language=_check_str_list(language, "language") or None,
        base_model=base_model,
        datasets=datasets or None,
        tags=tags,
        pipeline_tag=_pipeline_tag(summary, library_name),
        eval_results=_eval_results(grouped, summary.modality, dataset_ids or {}, task_types or {}) or None,
    )
    metrics = [inline_text(metric) for metric in metrics] if metrics is not None else None
    tables = [
        {"name": inline_text(name), "markdown": markdown_table({name: _flat(name, by_dim)}, metrics=metrics)}
        for name, by_dim in grouped.items()
    ]
    example_dim, shortlist_dim = _example_dims(summary.matryoshka_dims)
    environment = jinja2.Environment(
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined
    )
    text = environment.from_string(template_path.read_text(encoding="utf-8")).render(
        card_data=card_data.to_yaml(),
        model_name=model_name,
        description=description,
        summary=summary,
        kind_phrase=_KIND_PHRASES[summary.kind],
        base_model=base_model,
        datasets=datasets,
        license=license,
        tables=tables,
        plot_file=plot_file if tables else None,
        library_name=library_name,
        model_ref=repo_id or "path/to/model",
        auto_class=_auto_class_name(summary),
        example_dim=example_dim,
        shortlist_dim=shortlist_dim,
        default_truncate_dim=default_truncate_dim,
        trust_remote_code=trust_remote_code,
        citation=MRL_CITATION,
    )
    return str(ModelCard(text))  # parses the YAML header: a malformed one fails here, not on the Hub


def _flat(name: str, by_dim: dict[int, dict[str, float]]) -> dict[str, float]:
    """The flat results of one evaluator, its metric names escaped for the table header (`inline_text`)."""
    return {f"{name}_dim{dim}_{inline_text(metric)}": value for dim, row in by_dim.items() for metric, value in row.items()}


def _pipeline_tag(summary: ModelSummary, library_name: str) -> str:
    if library_name == "sentence-transformers":
        return "sentence-similarity"
    if summary.kind == "dual-encoder":
        return "zero-shot-image-classification"
    if summary.kind == "classification":
        return f"{summary.modality}-classification"
    return "image-feature-extraction" if summary.modality == "image" else "feature-extraction"


def _auto_class_name(summary: ModelSummary) -> str:
    if summary.kind == "classification":
        return "AutoModelForImageClassification" if summary.modality == "image" else "AutoModelForSequenceClassification"
    return "AutoModel"
