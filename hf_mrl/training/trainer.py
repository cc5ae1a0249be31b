"""`MatryoshkaTrainer`: the one training loop behind the Python API, the training scripts and the demo.

    trainer = MatryoshkaTrainer(model=model, args=MatryoshkaTrainingArguments(output_dir="out", ...),
                                train_dataset=splits.train, eval_dataset=splits.eval)
    trainer.train()                       # resumable: trainer.train(resume_from_checkpoint="latest")
    trainer.evaluate()                    # {name}_dim{k}_{metric} at every dim, from one encoding pass
    trainer.save_model()                  # <output_dir>/model: weights, tokenizer / image processor, card

It is a Trainer-like class on Accelerate rather than a `transformers.Trainer` subclass: the Trainer writes
checkpoints straight into `checkpoint-<step>` (a kill mid-save leaves a half-written folder that
`resume_from_checkpoint=True` then picks), while this loop saves into a temp folder and renames it
(`hf_mrl.training.checkpointing`), and resumes bit-exactly (consumed batches skipped, per-epoch seeded
order, RNG states restored). It takes a `TrainingArguments` all the same, so the flags and
`accelerate launch` work as transformers users expect.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from pathlib import Path

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import TrainingArguments, get_scheduler
from transformers.trainer_utils import TrainOutput

from ..data.generic import align_class_labels, check_label_dtype, encode_string_labels
from ..evaluation import parse_metric_key
from ..files import check_output_folder
from ..hub import save_with_card
from .arguments import MatryoshkaTrainingArguments
from .checkpointing import load_checkpoint, resolve_resume_checkpoint, save_checkpoint, validate_keep_last
from .evaluators import default_evaluator, evaluation_dims
from .launch import use_cpu
from .sampling import EpochShuffleSampler
from .tasks import (
    PAIR_TEMPERATURE,
    ClassificationLoss,
    ImageTextLoss,
    PairContrastiveLoss,
    default_collator,
    default_processor,
    infer_task,
    pair_columns,
)
from .tracking import PerDimLossMeter, prefixed, progress_bar

__all__ = ["MatryoshkaTrainer", "PAUSE_AFTER_CHECKPOINT_ENV"]

# Seconds to sleep after each checkpoint: lets the tests kill a run right after a save.
PAUSE_AFTER_CHECKPOINT_ENV = "HF_MRL_PAUSE_AFTER_CHECKPOINT"
# Parameters that start from random weights on a pretrained encoder: they learn at `head_learning_rate`.
NEW_LAYER_PREFIXES = ("heads.", "matryoshka.projection.", "projection.", "visual_projection.", "text_projection.")
# A loss that has moved less than this share after the warm-up is reported as not learning.
FLAT_LOSS_TOLERANCE = 0.01


def as_matryoshka_arguments(args) -> MatryoshkaTrainingArguments:
    """`args` as `MatryoshkaTrainingArguments` (a plain `TrainingArguments` keeps every value it sets)."""
    if args is None:
        return MatryoshkaTrainingArguments(output_dir="trainer_output")
    if isinstance(args, MatryoshkaTrainingArguments):
        return args
    if not isinstance(args, TrainingArguments):
        raise ValueError(f"`args` must be a transformers TrainingArguments, got {type(args).__name__}.")
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(args) if field.init}
    return MatryoshkaTrainingArguments(**values)


class MatryoshkaTrainer:
    """Trains a Matryoshka model; the task (nested-head cross-entropy, text-pair or image-text contrastive loss)
    follows from the model and the dataset's columns (see `hf_mrl.training.tasks`).

    Args:
        model: a `MatryoshkaFor*Classification`, `MatryoshkaModel` or `MatryoshkaDualEncoderModel`.
        args: `MatryoshkaTrainingArguments` or a plain `transformers.TrainingArguments`.
        train_dataset: a `datasets.Dataset` (or `IterableDataset`, with `max_steps`).
        eval_dataset: scored every `eval_steps` / epoch (`eval_strategy`) and by `evaluate()`.
        evaluator: any callable `evaluator(model) -> {metric: value}` (e.g. an hf_mrl evaluator); default: the
            task's per-dim evaluator on `eval_dataset`.
        data_collator: rows -> model inputs; default: the task's collator with `processing_class`.
        processing_class: tokenizer or image processor; default: the one saved with the model's encoder.
        loss: an `nn.Module` holding the model whose `forward(batch)` returns `(loss, per_dim_losses or None)`,
            to train with another loss on the same weights; default: the task's Matryoshka loss.
        name: prefix of the metric keys (default: "eval").
    """

    def __init__(self, model, args=None, train_dataset=None, eval_dataset=None, evaluator=None,
                 data_collator=None, processing_class=None, loss=None, name: str = "eval"):
        self.args = as_matryoshka_arguments(args)
        validate_keep_last(self.args.save_total_limit, "save_total_limit")
        if self.args.save_strategy not in ("no", "steps", "epoch"):
            raise ValueError(f"`save_strategy` must be 'no', 'steps' or 'epoch', got {self.args.save_strategy!r}.")
        if train_dataset is None and eval_dataset is None and evaluator is None:
            raise ValueError("Give a `train_dataset` (to train) or an `eval_dataset` / `evaluator` (to evaluate).")
        if self.args.eval_dims:
            evaluation_dims(model, self.args.eval_dims)  # every dim within the embedding, checked before any work
        if isinstance(train_dataset, datasets.IterableDataset) and not (self.args.max_steps and self.args.max_steps > 0):
            raise ValueError("A streamed `train_dataset` needs `max_steps` > 0 (a stream's length is unknown).")
        self.model = model
        self.task = infer_task(model, train_dataset if train_dataset is not None else eval_dataset)
        if self.task == "classification":
            for part in (train_dataset, eval_dataset):
                if part is not None:
                    check_label_dtype(part, "label")
            train_dataset, eval_dataset = _encode_string_labels(train_dataset, eval_dataset)
        self.train_dataset, self.eval_dataset, self.name = train_dataset, eval_dataset, name
        probe = train_dataset if train_dataset is not None else eval_dataset
        self.columns = (
            pair_columns(probe, self.args.anchor_column, self.args.positive_column) if self.task == "pairs" else None
        )
        if self.task == "classification":
            self._set_class_names(probe)
            self.train_dataset, self.eval_dataset = map(self._align_labels, (self.train_dataset, self.eval_dataset))
            for part in (self.train_dataset, self.eval_dataset):
                _check_label_range(part, model.config.num_labels)
        # The collators need the tokenizer, and an image classifier saves its image processor.
        needs_processor = data_collator is None or self.task != "classification" or model.main_input_name == "pixel_values"
        self.processing_class = processing_class
        if processing_class is None and needs_processor:
            self.processing_class = default_processor(model)
        if self.processing_class is not None and hasattr(self.processing_class, "model_max_length"):
            self.processing_class.model_max_length = self.args.max_seq_length  # saved with it, so eval cuts alike
        self.data_collator = data_collator or default_collator(
            self.task, model, self.processing_class, self.args.max_seq_length, self.columns
        )
        self._evaluator = evaluator
        self.loss = loss if loss is not None else self._default_loss()
        self.state = {"step": 0, "epoch": 0, "batches_in_epoch": 0, "history": [], "train_seconds": 0.0}
        self.accelerator = None

    # -- set-up ---------------------------------------------------------------------------------------------

    def _set_class_names(self, dataset) -> None:
        """Class names of a `ClassLabel` column go into `config.id2label`, so predictions, reports and the card
        show them; a dataset with more classes than the heads is refused before training."""
        feature = (getattr(dataset, "features", None) or {}).get("label")
        if not isinstance(feature, datasets.ClassLabel):
            return
        config = self.model.config
        if feature.num_classes > config.num_labels:
            raise ValueError(
                f"The dataset has {feature.num_classes} classes but the model's heads have num_labels="
                f"{config.num_labels} (`config.num_labels`); build the model with num_labels={feature.num_classes}."
            )
        if all(name == f"LABEL_{index}" for index, name in config.id2label.items()):
            names = feature.names + [f"LABEL_{index}" for index in range(feature.num_classes, config.num_labels)]
            config.id2label = dict(enumerate(names))
            config.label2id = {name: index for index, name in enumerate(names)}

    def _default_loss(self):
        if self.task == "classification":
            return ClassificationLoss(self.model)
        if self.task == "pairs":
            args = self.args
            return PairContrastiveLoss(self.model, self.columns, args.temperature or PAIR_TEMPERATURE, args.symmetric,
                                       args.contrastive_label_smoothing)
        return ImageTextLoss(self.model)

    def get_evaluator(self, eval_dataset=None, reference_dataset=None):
        """The evaluator given to the trainer, else the task's default on `eval_dataset`."""
        if eval_dataset is None and reference_dataset is None and self._evaluator is not None:
            return self._evaluator
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            return None
        if self.task == "classification":
            dataset, reference_dataset = self._align_labels(dataset), self._align_labels(reference_dataset)
        return default_evaluator(
            self.task, self.model, dataset, collate_fn=self.data_collator, processor=self.processing_class,
            args=self.args, name=self.name, reference_dataset=reference_dataset, columns=self.columns,
        )

    def _align_labels(self, dataset):
        """The data's class ids renumbered to the model's classes by name (None stays None)."""
        return None if dataset is None else align_class_labels(dataset, self.model.config.id2label)

    def _train_dataloader(self) -> DataLoader:
        args, dataset = self.args, self.train_dataset
        batch_size = args.per_device_train_batch_size
        seed = args.data_seed if args.data_seed is not None else args.seed
        # Its own generator: starting an iterator (also after a resume) leaves the global RNG, which drives
        # dropout and is restored from checkpoints, untouched.
        generator = torch.Generator().manual_seed(seed)
        if isinstance(dataset, datasets.IterableDataset):
            stream = dataset.shuffle(seed=seed, buffer_size=args.shuffle_buffer)
            return DataLoader(stream, batch_size=batch_size, collate_fn=self.data_collator, generator=generator)
        lengths = None
        if args.train_sampling_strategy == "group_by_length":
            lengths = self._text_lengths(dataset)
        sampler = EpochShuffleSampler(len(dataset), seed, batch_size, lengths)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=self.data_collator,
                          generator=generator, drop_last=args.dataloader_drop_last)

    def _text_lengths(self, dataset) -> list[int]:
        """Characters per row (both texts of a pair), for `train_sampling_strategy="group_by_length"`."""
        columns = self.columns or ("text",)
        if not set(columns) <= set(dataset.column_names):
            raise ValueError(f"`train_sampling_strategy` 'group_by_length' needs text columns; the dataset has {dataset.column_names}.")
        return [sum(map(len, texts)) for texts in zip(*(dataset[column] for column in columns), strict=True)]

    def create_optimizer(self) -> torch.optim.Optimizer:
        """AdamW; no weight decay on biases, norms, position embeddings and the CLS token; the layers added on the
        encoder learn at `head_learning_rate`."""
        args = self.args
        names = {id(parameter): name for name, parameter in self.model.named_parameters()}
        groups: dict[tuple[float, float], list] = {}
        for parameter in self.loss.parameters():
            if not parameter.requires_grad:
                continue
            name = names.get(id(parameter), "")
            plain = parameter.ndim < 2 or "position_embeddings" in name or "cls_token" in name
            added = name.startswith(NEW_LAYER_PREFIXES)
            key = (args.new_layers_learning_rate if added else args.learning_rate, 0.0 if plain else args.weight_decay)
            groups.setdefault(key, []).append(parameter)
        return torch.optim.AdamW(
            [{"params": params, "lr": lr, "weight_decay": decay} for (lr, decay), params in sorted(groups.items())],
            lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
        )

    def _total_steps(self, loader: DataLoader, num_processes: int) -> tuple[int, int | None]:
        """(optimizer steps in all, per epoch: None for a stream)."""
        args = self.args
        if isinstance(self.train_dataset, datasets.IterableDataset):
            if args.max_steps is None or args.max_steps <= 0:
                raise ValueError("A streamed `train_dataset` needs `max_steps` > 0 (a stream's length is unknown).")
            return args.max_steps, None
        per_epoch = math.ceil(math.ceil(len(loader) / num_processes) / args.gradient_accumulation_steps)
        if args.max_steps is not None and args.max_steps > 0:
            return args.max_steps, per_epoch
        return max(1, math.ceil(args.num_train_epochs * per_epoch)), per_epoch

    # -- training -------------------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint=None) -> TrainOutput:
        """Trains for `max_steps` (or `num_train_epochs`); `resume_from_checkpoint` is a checkpoint folder,
        "latest" or True (the newest under `output_dir`, none yet is fine). Returns transformers' `TrainOutput`."""
        if self.train_dataset is None:
            raise ValueError("`train()` needs a `train_dataset`.")
        args = self.args
        resume = resume_from_checkpoint if resume_from_checkpoint is not None else args.resume_from_checkpoint
        resume = "latest" if resume is True else resume
        check_output_folder(args.output_dir, "output_dir")
        checkpoint = resolve_resume_checkpoint(args.output_dir, resume)
        report_to = [name for name in (args.report_to or []) if name != "none"]
        accelerator = Accelerator(
            cpu=use_cpu(args.use_cpu), mixed_precision=args.precision,
            gradient_accumulation_steps=args.gradient_accumulation_steps, log_with=report_to or None,
            project_dir=args.output_dir, step_scheduler_with_optimizer=False,
        )
        self.accelerator = accelerator
        set_seed(args.seed)
        if accelerator.num_processes > 1 and hasattr(self.loss, "gather"):
            self.loss.gather, self.loss.id_offset = True, accelerator.process_index << 32  # the global batch
        loader = self._train_dataloader()
        optimizer = self.create_optimizer()
        total_steps, steps_per_epoch = self._total_steps(loader, accelerator.num_processes)
        warmup = args.warmup_steps_for(total_steps)
        scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=warmup,
                                  num_training_steps=total_steps, scheduler_specific_kwargs=args.lr_scheduler_kwargs or None)
        module, optimizer, loader, scheduler = accelerator.prepare(self.loss, optimizer, loader, scheduler)
        if report_to:
            config = {key: value for key, value in args.to_dict().items() if isinstance(value, (int, float, str, bool))}
            accelerator.init_trackers(Path(args.output_dir).name or "hf_mrl", config=config)

        state = self.state = {"step": 0, "epoch": 0, "batches_in_epoch": 0, "history": [], "train_seconds": 0.0}
        if checkpoint is not None:
            state.update(load_checkpoint(accelerator, checkpoint))
            accelerator.print(f"Resumed from {checkpoint} at step {state['step']} (epoch {state['epoch']}).")
        if args.eval_on_start and checkpoint is None:
            self._evaluate_during_training()

        save_every = _every(args.save_steps, total_steps) if args.save_strategy == "steps" else None
        eval_every = _every(args.eval_steps or args.logging_steps, total_steps) if args.eval_strategy == "steps" else None
        log_every = _every(args.logging_steps, total_steps)
        pause = float(os.environ.get(PAUSE_AFTER_CHECKPOINT_ENV, 0))
        meter = PerDimLossMeter(self._loss_dims() if self.loss is not None else [])
        watch = _FlatLossWatch(warmup, args.learning_rate)
        bar = progress_bar(accelerator, total_steps, initial=state["step"])
        segment_start, start_step, total_loss = time.perf_counter(), state["step"], 0.0

        def checkpoint_now():
            state["train_seconds"] += time.perf_counter() - segment_start
            save_checkpoint(accelerator, args.output_dir, state["step"], keep_last=args.save_total_limit, trainer_state=state)
            if pause:
                time.sleep(pause)
            return time.perf_counter()

        module.train()
        while state["step"] < total_steps:
            loader.set_epoch(state["epoch"])  # the order of epoch e depends on (seed, e) only
            skip = state["batches_in_epoch"]
            batches = accelerator.skip_first_batches(loader, skip) if skip else loader
            for batch in batches:
                with accelerator.accumulate(module):
                    loss, per_dim = module(batch)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and args.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(module.parameters(), args.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
                state["batches_in_epoch"] += 1
                meter.update(loss, loss.new_zeros(0) if per_dim is None or not meter.dims else per_dim)
                total_loss += float(loss.detach())
                if not accelerator.sync_gradients:
                    continue
                scheduler.step()
                state["step"] += 1
                bar.update(1)
                warning = watch.update(state["step"], float(loss.detach()), accelerator)
                if warning:  # on its own line, not inside the progress bar's
                    bar.clear()
                    warnings.warn(warning, stacklevel=2)
                    bar.refresh()
                if state["step"] % log_every == 0 or state["step"] == total_steps:
                    logs = meter.logs(accelerator)
                    bar.set_postfix(loss=f"{logs['train/loss']:.4f}", refresh=False)
                    accelerator.log({**logs, "train/lr": scheduler.get_last_lr()[0]}, step=state["step"])
                if eval_every and state["step"] % eval_every == 0 and state["step"] < total_steps:
                    self._evaluate_during_training()
                if save_every and state["step"] % save_every == 0:
                    segment_start = checkpoint_now()
                if state["step"] >= total_steps:
                    break
            else:
                state["epoch"], state["batches_in_epoch"] = state["epoch"] + 1, 0
                if args.eval_strategy == "epoch" and state["step"] < total_steps:
                    self._evaluate_during_training()
                if args.save_strategy == "epoch":
                    segment_start = checkpoint_now()
                continue
            break
        bar.close()
        state["train_seconds"] += time.perf_counter() - segment_start
        module.eval()
        accelerator.wait_for_everyone()
        accelerator.end_training()
        steps_run = state["step"] - start_step
        metrics = {
            "train_runtime": round(state["train_seconds"], 3),
            "train_steps_per_second": round(state["step"] / state["train_seconds"], 3) if state["train_seconds"] else 0.0,
            "epoch": state["epoch"] + (state["batches_in_epoch"] / len(loader) if steps_per_epoch else 0.0),
        }
        return TrainOutput(state["step"], total_loss / max(steps_run * args.gradient_accumulation_steps, 1), metrics)

    def _loss_dims(self) -> list[int]:
        if not isinstance(self.loss, (ClassificationLoss, PairContrastiveLoss, ImageTextLoss)):
            return []  # a user loss reports its total only
        return list(self.model.config.matryoshka_dims)

    def _evaluate_during_training(self) -> None:
        """Scores the eval set on the main process (the others wait); logs it and keeps it in the history."""
        evaluator = self.get_evaluator()
        if evaluator is None:
            return
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            results = self._run(evaluator)
            self.state["history"].append({"epoch": self.state["epoch"], "step": self.state["step"], **results})
            tqdm.write(f"step {self.state['step']}: {_summary_line(results, getattr(evaluator, 'primary_metric_name', None))}")
            accelerator.log(prefixed(results, "eval"), step=self.state["step"])
        accelerator.wait_for_everyone()

    def _run(self, evaluator) -> dict[str, float]:
        model = self.model
        training = model.training
        try:
            return evaluator(model.eval())
        finally:
            model.train(training)

    # -- evaluation and saving ------------------------------------------------------------------------------

    def evaluate(self, eval_dataset=None, reference_dataset=None) -> dict[str, float]:
        """Per-dim metrics of the model on `eval_dataset` (default: the trainer's), from one encoding pass. With
        `reference_dataset` (e.g. the training split) the k-NN database is that set; without, it is the
        evaluated set itself, each row left out of its own neighbours."""
        evaluator = self.get_evaluator(eval_dataset, reference_dataset)
        if evaluator is None:
            raise ValueError("`evaluate()` needs an `eval_dataset` (here or in the trainer) or an `evaluator`.")
        return self._run(evaluator)

    def save_model(self, output_dir=None, results=None, description: str | None = None, metrics=None) -> Path:
        """Writes the model with its tokenizer / image processor and a model card (per-dim `results` when given)
        to `output_dir` (default: `<args.output_dir>/model`), atomically."""
        path = Path(output_dir) if output_dir is not None else Path(self.args.output_dir) / "model"
        card = {key: value for key, value in (("description", description), ("metrics", metrics)) if value is not None}
        return save_with_card(self.model, path, results=results, processor=self.processing_class, **card)


def _check_label_range(dataset, num_labels: int) -> None:
    """The class ids of a map-style dataset must fit the heads (or be -100, left out of the loss): checked before
    training, rather than found by the loss at the batch that holds the first bad id."""
    if not isinstance(dataset, datasets.Dataset) or "label" not in dataset.column_names or len(dataset) == 0:
        return
    labels = np.asarray(dataset["label"])
    kept = labels[labels != -100]
    if kept.size and (kept.min() < 0 or kept.max() >= num_labels):
        bad = int(kept.max()) if kept.max() >= num_labels else int(kept.min())
        raise ValueError(
            f"The dataset's `label` column holds label {bad}, but the model's heads have num_labels={num_labels} "
            f"(`config.num_labels`: class ids 0 to {num_labels - 1}); build the model with num_labels={max(int(kept.max()) + 1, num_labels)} "
            "or fix the labels."
        )


def _encode_string_labels(train_dataset, eval_dataset):
    """String labels (e.g. a CSV read with `load_dataset("csv", ...)`) become one `ClassLabel` over both sets, so
    the heads see class ids and the class names reach the config."""
    parts = {key: part for key, part in (("train", train_dataset), ("eval", eval_dataset))
             if isinstance(part, datasets.Dataset)}
    feature = next(iter(parts.values())).features.get("label") if parts else None
    if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
        return train_dataset, eval_dataset
    encoded = encode_string_labels(datasets.DatasetDict(parts))
    return encoded.get("train", train_dataset), encoded.get("eval", eval_dataset)


def _every(value, total_steps: int) -> int:
    """A step interval: an int, or a float in (0, 1) as a share of the total steps."""
    if isinstance(value, float) and 0 < value < 1:
        return max(1, int(math.ceil(value * total_steps)))
    value = int(value)
    if value < 1:
        raise ValueError(f"step intervals (`logging_steps`, `save_steps`, `eval_steps`) must be >= 1, got {value}.")
    return value


def _summary_line(results: dict[str, float], primary: str | None) -> str:
    metric = primary or parse_metric_key(next(iter(results)))[2]
    values = [(parse_metric_key(key)[1], value) for key, value in results.items() if parse_metric_key(key)[2] == metric]
    return f"{metric} by dim " + " ".join(f"{dim}:{value:.3f}" for dim, value in values)


class _FlatLossWatch:
    """Tells once when the loss has not moved after the warm-up: the usual sign of a learning rate that makes a
    pretrained encoder collapse (e.g. every input to the majority class) or that is far too small."""

    def __init__(self, warmup_steps: int, learning_rate: float, window: int = 10):
        self.check_at = max(warmup_steps, window) + window
        self.window = window
        self.learning_rate = learning_rate
        self.losses: list[float] = []

    def update(self, step: int, loss: float, accelerator) -> str | None:
        """The warning's text at the step it is due (on the main process), else None."""
        if step > self.check_at:
            return None
        self.losses.append(loss)
        if step < self.check_at or len(self.losses) < 2 * self.window:
            return None
        start = sum(self.losses[: self.window]) / self.window
        now = sum(self.losses[-self.window:]) / self.window
        if math.isfinite(start) and abs(start - now) <= FLAT_LOSS_TOLERANCE * abs(start) and accelerator.is_main_process:
            return (
                f"The training loss has not moved after the warm-up ({start:.4f} over the first {self.window} steps, "
                f"{now:.4f} at step {step}). The learning rate {self.learning_rate:g} may be too high for a "
                "pretrained encoder (try 2e-5 to 2e-4) or too low for a model trained from scratch."
            )
        return None
