"""`MatryoshkaTrainer`: transformers' `Trainer` for Matryoshka models, behind the Python API, the scripts and the demo.

    trainer = MatryoshkaTrainer(model=model, args=MatryoshkaTrainingArguments(output_dir="out", ...),
                                train_dataset=splits.train, eval_dataset=splits.eval)
    trainer.train()                       # resumable: trainer.train(resume_from_checkpoint="latest")
    trainer.evaluate()                    # eval_{name}_dim{k}_{metric} at every dim, from one encoding pass
    trainer.save_model()                  # <output_dir>/model: weights, tokenizer / image processor, card

It is a `transformers.Trainer` subclass (as sentence-transformers' trainer is): the Trainer runs the loop, so
gradient checkpointing, FSDP, DeepSpeed, `torch_compile`, every `optim`, callbacks, trackers and the Hub work as
transformers documents them. What Matryoshka training adds lives in overrides:

- the task (and its loss, collator and evaluator) read off the model and the columns (`hf_mrl.training.tasks`);
- the layers added on a pretrained encoder learn at `head_learning_rate` (parameter groups any `optim` respects);
- the per-dim losses go into the logs (`loss_dim8`, ...) and `evaluate()` scores every dim with hf_mrl's
  evaluators (`eval_{name}_dim{k}_{metric}`, so `metric_for_best_model` can name one dim);
- checkpoints are written to a temp folder and renamed (`resume_from_checkpoint=True` / "latest" never picks a
  half-written one), every file is checked before a resume, and rotation keeps files hf_mrl did not write;
- the training order is a seeded shuffle per epoch, so a resumed run repeats the killed one bit for bit;
- several training datasets (`train_dataset={"name": dataset, ...}`, as sentence-transformers takes them): each
  batch from one dataset (`multi_dataset_batch_sampler`), collated with its own columns, its loss logged as
  `loss_<name>`; `batch_sampler="no_duplicates"` keeps a text out of a batch that already holds it;
- `save_model()` / `push_to_hub()` write hf_mrl's folder with its model card (per-dim table, class names).

Arguments that cannot mean anything here are refused before any work (see `arguments.REFUSED`).
"""

from __future__ import annotations

import os
import re
import shutil
import time
import warnings
from functools import partial
from pathlib import Path

import datasets
import torch
from transformers import Trainer
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import TrainOutput, seed_worker

from ..data.generic import align_class_labels, check_label_dtype, encode_string_labels
from ..data.prompts import resolve_prompts
from ..hub import push_to_hub_with_card, save_with_card
from ..modeling.file_checks import describe_os_error
from ..modeling.files import check_folder_target, check_output_folder, move_into_place, remove_stale_temp_folders
from ..modeling.nesting import resolve_dims
from ..modeling.progress import quiet_progress, transformers_progress_bars
from .arguments import (
    REFUSED_TRAINER_ARGUMENTS,
    as_matryoshka_arguments,
    check_arguments_for_task,
    check_datasets,
)
from .checkpointing import (
    CHECKPOINT_FOLDER,
    CHECKPOINT_PREFIX,
    check_checkpoint_files,
    check_checkpoint_folders,
    checkpoint_path,
    list_checkpoints,
    remove_checkpoint,
    resolve_resume_checkpoint,
    rotate_checkpoints,
)
from .evaluators import default_evaluator
from .flat_loss import FlatLossWatch
from .labels import check_label_range, encode_label_strings, set_class_names
from .multi_dataset import (
    DATASET_NAME,
    MultiDatasetCollator,
    NamedConcatDataset,
    check_batch_sampling,
    check_train_datasets,
    dataset_named,
    train_batch_sampler,
)
from .sampling import EpochShuffleSampler
from .tasks import (
    TaskLoss,
    default_collator,
    default_loss,
    default_processor,
    infer_task,
    pair_columns,
)
from .tracking import LogLinesCallback, LogLinesProgressCallback

__all__ = ["MatryoshkaTrainer", "PAUSE_AFTER_CHECKPOINT_ENV"]

# Seconds to sleep after each checkpoint: lets the tests kill a run right after a save.
PAUSE_AFTER_CHECKPOINT_ENV = "HF_MRL_PAUSE_AFTER_CHECKPOINT"
# Parameters that start from random weights on a pretrained encoder: they learn at `head_learning_rate`.
NEW_LAYER_PREFIXES = ("heads.", "matryoshka.projection.", "projection.", "visual_projection.", "text_projection.")
# Prefixes wrappers put before parameter names (FSDP1, DDP, torch.compile).
_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "module.", "_orig_mod.")



def _started_from_weights(model) -> bool:
    """Whether `model` (or its backbone / towers) was loaded from saved weights rather than built from a config:
    the flat-loss advice differs."""
    config = model.config
    configs = [config] + [getattr(config, key, None) for key in ("backbone_config", "vision_config", "text_config")]
    return any(getattr(each, "_name_or_path", "") for each in configs if each is not None)

class MatryoshkaTrainer(Trainer):
    """Trains a Matryoshka model with transformers' `Trainer`; the task (nested-head cross-entropy, text-pair or
    image-text contrastive loss) follows from the model and the dataset's columns (see `hf_mrl.training.tasks`).

    Args:
        model: a `MatryoshkaFor*Classification`, `MatryoshkaModel` or `MatryoshkaDualEncoderModel`.
        args: `MatryoshkaTrainingArguments` or a plain `transformers.TrainingArguments`.
        train_dataset: a `datasets.Dataset` (or `IterableDataset`, with `max_steps`), or `{name: Dataset}` for
            several datasets (each batch from one, `batch["dataset_name"]` says which; see `MultiDatasetBatchSampler`).
        eval_dataset: scored every `eval_steps` / epoch (`eval_strategy`) and by `evaluate()`.
        evaluator: any callable `evaluator(model) -> {metric: value}` (e.g. an hf_mrl evaluator); default: the
            task's per-dim evaluator on `eval_dataset`.
        data_collator: rows -> model inputs; default: the task's collator with `processing_class`.
        processing_class: tokenizer or image processor; default: the one saved with the model's encoder.
        loss: an `nn.Module` with a `model` attribute whose `forward(batch)` returns `(loss, per_dim_losses or
            None)`, to train with another loss on the same weights; default: the task's Matryoshka loss.
        name: the evaluator's name in metric keys (`eval_{name}_dim16_top1`; default: none, `eval_dim16_top1`).
        callbacks, optimizers, optimizer_cls_and_kwargs: as in `transformers.Trainer`.
    """

    def __init__(self, model=None, args=None, train_dataset=None, eval_dataset=None, evaluator=None,
                 data_collator=None, processing_class=None, loss=None, name: str | None = None, **trainer_kwargs):
        for argument, reason in REFUSED_TRAINER_ARGUMENTS.items():
            if trainer_kwargs.get(argument) is not None:
                raise ValueError(f"`{argument}` is not supported by MatryoshkaTrainer: {reason}.")
        if model is None:
            raise ValueError("`model` is required: a MatryoshkaFor*Classification, MatryoshkaModel or MatryoshkaDualEncoderModel.")
        args = as_matryoshka_arguments(args)
        if train_dataset is None and eval_dataset is None and evaluator is None:
            raise ValueError("Give a `train_dataset` (to train) or an `eval_dataset` / `evaluator` (to evaluate).")
        # every dim within the embedding, checked once, before any work
        eval_dims = resolve_dims(model, args.eval_dims, name="eval_dims") if args.eval_dims else None
        self.name = name
        train_dataset, eval_dataset = self._prepare_datasets(model, args, train_dataset, eval_dataset)
        # The collators need the tokenizer, and an image classifier saves its image processor.
        needs_processor = data_collator is None or self.task != "classification" or model.main_input_name == "pixel_values"
        if processing_class is None and needs_processor:
            processing_class = default_processor(model)
        if processing_class is not None and hasattr(processing_class, "model_max_length"):
            processing_class.model_max_length = args.max_seq_length  # saved with it, so eval cuts alike
        text_config = model.config.get_text_config()
        if getattr(processing_class, "pad_token_id", None) is not None and getattr(text_config, "pad_token_id", None) is None:
            text_config.pad_token_id = processing_class.pad_token_id  # what Trainer would align, with a warning
        if data_collator is None and isinstance(train_dataset, dict):  # each dataset's columns and prompts
            data_collator = MultiDatasetCollator({
                name: default_collator(self.task, model, processing_class, args.max_seq_length, self._columns_of(name),
                                       prompts=resolve_prompts(args.prompts, name, self._text_columns(model, name)))
                for name in train_dataset
            })
        data_collator = data_collator or default_collator(self.task, model, processing_class, args.max_seq_length,
                                                          self.columns, prompts=args.prompts)
        self._evaluator = evaluator
        if evaluator is None and args.metric_for_best_model:
            _check_metric_for_best_model(args.metric_for_best_model, name,
                                         eval_dims or resolve_dims(model, args.eval_dims, name="eval_dims"))
        self.loss = loss if loss is not None else default_loss(self.task, model, args, self.columns)
        self._per_dim_sum: torch.Tensor | None = None
        self._per_dim_count = 0
        self._dataset_loss: dict[str, list] = {}  # dataset name -> [loss sum, steps] since the last log
        self._flat_loss = FlatLossWatch(args.warmup_steps, args.learning_rate, pretrained=_started_from_weights(model))
        self._card_results: dict[str, float] | None = None
        self._card: dict = {}  # description / metrics of the model card, from the last save_model()
        super().__init__(model=model, args=args, data_collator=data_collator, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=processing_class, **trainer_kwargs)
        # Our losses are means over the (micro-)batch: the Trainer divides them by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        self._print_log_lines()

    def _print_log_lines(self) -> None:
        """Each log printed as one readable line (`tracking.format_log_line`: step, loss, each dim's loss), by
        Trainer's printer (`disable_tqdm`) or above its progress bar, instead of a dict."""
        callbacks = self.callback_handler.callbacks
        for position, callback in enumerate(callbacks):
            if type(callback) is PrinterCallback:
                callbacks[position] = LogLinesCallback()
            elif type(callback) is ProgressCallback:
                callbacks[position] = LogLinesProgressCallback(max_str_len=callback.max_str_len)

    # -- set-up ---------------------------------------------------------------------------------------------

    def _prepare_datasets(self, model, args, train_dataset, eval_dataset):
        """Reads the task off the model and columns (`self.task`, `self.columns`); for classification, string labels
        become class ids, class names go into `config.id2label` and every id is checked against the heads. A dict
        of eval datasets (scored one by one) is prepared like one: its first part stands for it. A dict of training
        datasets (each batch from one of them) is prepared dataset by dataset: each must fit the task, a pairs
        task reads each one's columns (`self.columns` is then `{name: columns}`), string labels become one
        `ClassLabel` over all of them and the first one's class names go into the config."""
        several = isinstance(train_dataset, dict)
        if several:
            check_train_datasets(train_dataset)
        train_parts = dict(train_dataset) if several else {} if train_dataset is None else {None: train_dataset}
        eval_parts = dict(eval_dataset) if isinstance(eval_dataset, dict) else {None: eval_dataset}
        first_key = next(iter(eval_parts), None)
        check_datasets(args, train_dataset, eval_parts)
        probe = next(iter(train_parts.values()), None) if train_parts else eval_parts.get(first_key)
        self.task = infer_task(model, probe) if not several else None
        for key, part in train_parts.items() if several else ():  # the task of a model is one: each must fit it
            with dataset_named(key):
                self.task = infer_task(model, part)
        check_arguments_for_task(args, self.task, model)
        if self.task == "classification":
            for key, part in (*train_parts.items(), *((None, part) for part in eval_parts.values())):
                if part is not None:
                    with dataset_named(key):
                        check_label_dtype(part, "label")
            train_parts, eval_parts[first_key] = _encode_label_strings(train_parts, eval_parts.get(first_key))
            probe = next(iter(train_parts.values()), None) if train_parts else eval_parts[first_key]
        self.columns = None
        if self.task == "pairs":
            self.columns = pair_columns(probe, args.anchor_column, args.positive_column)
            if several:
                self.columns = {}
                for key, part in train_parts.items():
                    with dataset_named(key):
                        self.columns[key] = pair_columns(part, args.anchor_column, args.positive_column)
        if self.task == "classification":
            set_class_names(model, probe)
            id2label = model.config.id2label
            train_parts = {key: align_class_labels(part, id2label) for key, part in train_parts.items()}
            eval_parts = {key: align_class_labels(part, id2label) if part is not None else None
                          for key, part in eval_parts.items()}
            for key, part in train_parts.items():
                check_label_range(part, model.config.num_labels,
                                  "The train dataset" if key is None else f"The train dataset {key!r}")
            for key, part in eval_parts.items():
                check_label_range(part, model.config.num_labels,
                                  "The eval dataset" if key is None else f"The eval dataset {key!r}")
        eval_dataset = eval_parts if isinstance(eval_dataset, dict) else eval_parts.get(None)
        train_dataset = train_parts if several else train_parts.get(None)
        if isinstance(train_dataset, datasets.IterableDataset):
            seed = args.data_seed if args.data_seed is not None else args.seed
            train_dataset = train_dataset.shuffle(seed=seed, buffer_size=args.shuffle_buffer)
        check_batch_sampling(args, self.task, model, train_dataset)
        return train_dataset, eval_dataset

    def _validate_args(self) -> None:
        """Trainer's checks; an `evaluator` alone (no `eval_dataset`) is enough for an `eval_strategy`."""
        stand_in = self.eval_dataset is None and self._evaluator is not None
        if stand_in:
            self.eval_dataset = ()
        try:
            super()._validate_args()
        finally:
            if stand_in:
                self.eval_dataset = None

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """The repo id to push to; the repo itself is created by the first push (no request at start-up)."""
        self.hub_model_id = self.args.hub_model_id or Path(self.args.output_dir).absolute().name
        self.push_in_progress = None

    def _remove_unused_columns(self, dataset, description=None):
        return dataset  # the task's collator reads the columns it needs; the model sees only its inputs

    def _get_collator_with_removed_columns(self, data_collator, description=None):
        return data_collator

    def _columns_of(self, name: str | None):
        """The pair columns of training dataset `name` (None for other tasks)."""
        return self.columns[name] if isinstance(self.columns, dict) else self.columns

    def _text_columns(self, model, name: str | None) -> tuple[str, ...]:
        """The text columns of training dataset `name`: the pair columns, `text`, or none for an image classifier."""
        if self.task == "pairs":
            return tuple(self._columns_of(name))
        return () if self.task == "classification" and model.main_input_name == "pixel_values" else ("text",)

    def get_train_dataloader(self):
        """Trainer's dataloader; with several training datasets or `batch_sampler="no_duplicates"`, a dataloader over
        our batch sampler (`get_train_batch_sampler`: one dataset per batch, no repeated text), prepared by
        Accelerate as Trainer prepares its own, which deals the batches whole to the processes."""
        several = isinstance(self.train_dataset, dict)
        if not several and self.args.batch_sampler != "no_duplicates":
            return super().get_train_dataloader()
        args = self.args
        collator = self.data_collator
        if several and not isinstance(collator, MultiDatasetCollator):
            collator = MultiDatasetCollator(collator)  # a user's collator: the same for every dataset
        loader = torch.utils.data.DataLoader(
            NamedConcatDataset(self.train_dataset) if several else self.train_dataset,
            batch_sampler=self.get_train_batch_sampler(), collate_fn=collator,
            num_workers=args.dataloader_num_workers, pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers,
            multiprocessing_context=args.dataloader_multiprocessing_context,
            prefetch_factor=args.dataloader_prefetch_factor, in_order=args.dataloader_in_order,
            worker_init_fn=partial(seed_worker, num_workers=args.dataloader_num_workers, rank=args.process_index),
        )
        return self.accelerator.prepare(loader)

    def get_resumed_dataloader(self, dataloader, num_batches: int):
        """Accelerate's dataloader that skips the batches a killed run trained on. With several processes its
        `SkipBatchSampler` over a `BatchSamplerShard` passes `set_epoch` on to neither, so the shuffle would replay
        epoch 0's order: the epoch is handed down to our sampler through them."""
        resumed = super().get_resumed_dataloader(dataloader, num_batches)
        skipping = getattr(resumed, "batch_sampler", None)
        inner = getattr(skipping, "batch_sampler", None)
        while inner is not None and not hasattr(inner, "set_epoch"):
            inner = getattr(inner, "batch_sampler", None) or getattr(inner, "sampler", None)
        if inner is not None and not hasattr(skipping, "set_epoch"):
            skipping.set_epoch = inner.set_epoch
        return resumed

    def get_train_batch_sampler(self):
        """The batches of every process for several training datasets or `batch_sampler="no_duplicates"` (see
        `multi_dataset.train_batch_sampler`)."""
        args = self.args
        return train_batch_sampler(
            self.train_dataset, lambda name: self._text_columns(self.model, name), args.batch_sampler,
            args.multi_dataset_batch_sampler, batch_size=self._train_batch_size,
            seed=args.data_seed if args.data_seed is not None else args.seed, drop_last=args.dataloader_drop_last,
            num_processes=self.accelerator.num_processes,
        )

    def _get_train_sampler(self, train_dataset=None):
        """A seeded shuffle per epoch (`seed + epoch`): a resumed run replays the killed run's order."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if dataset is None or isinstance(dataset, torch.utils.data.IterableDataset):
            return None
        args = self.args
        seed = args.data_seed if args.data_seed is not None else args.seed
        if args.train_sampling_strategy == "sequential":
            return torch.utils.data.SequentialSampler(dataset)
        lengths = self._lengths(dataset) if args.train_sampling_strategy == "group_by_length" else None
        return EpochShuffleSampler(len(dataset), seed, self._train_batch_size, lengths)

    def _lengths(self, dataset) -> list[int]:
        """`length_column_name` when the dataset has it, else characters per row (both texts of a pair)."""
        if self.args.length_column_name in dataset.column_names:
            return list(dataset[self.args.length_column_name])
        columns = self.columns or ("text",)
        if not set(columns) <= set(dataset.column_names):
            raise ValueError(
                f"`train_sampling_strategy` 'group_by_length' needs text columns or a `length_column_name` column "
                f"({self.args.length_column_name!r}); the dataset has {dataset.column_names}."
            )
        return [sum(map(len, texts)) for texts in zip(*(dataset[column] for column in columns), strict=True)]

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """Any `optim` (`get_optimizer_cls_and_kwargs`) over our parameter groups: no weight decay on biases,
        norms, position embeddings and the CLS token; the layers added on the encoder learn at
        `head_learning_rate`. Parameters of a `loss` module outside the model learn at `learning_rate`."""
        if self.optimizer is not None:
            return self.optimizer
        args, model = self.args, self.model if model is None else model
        groups: dict[tuple[float, float], list] = {}
        seen = set()
        named = list(model.named_parameters()) + [("loss." + name, parameter) for name, parameter in self.loss.named_parameters()]
        for name, parameter in named:
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            name = _plain_name(name)
            plain = parameter.ndim < 2 or "position_embeddings" in name or "cls_token" in name
            added = name.startswith(NEW_LAYER_PREFIXES)
            key = (args.new_layers_learning_rate if added else args.learning_rate, 0.0 if plain else args.weight_decay)
            groups.setdefault(key, []).append(parameter)
        if self.optimizer_cls_and_kwargs is not None:
            optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs
        else:
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(args, model)
        parameter_groups = [{"params": params, "lr": lr, "weight_decay": decay}
                            for (lr, decay), params in sorted(groups.items(), key=lambda item: item[0])]
        if {"params", "model", "optimizer_dict"} & set(optimizer_kwargs):
            raise ValueError(f"`optim`={args.optim!r} builds its own parameter groups, which would drop hf_mrl's "
                             "(head learning rate, no decay on norms); use an optimizer that takes parameter groups.")
        self.optimizer = optimizer_cls(parameter_groups, **optimizer_kwargs)
        return self.optimizer

    # -- training -------------------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs) -> TrainOutput:
        """Trains for `max_steps` (or `num_train_epochs`); `resume_from_checkpoint` is a checkpoint folder, "latest"
        or True (the newest complete one under `output_dir`; none yet is fine), default
        `args.resume_from_checkpoint`. Returns transformers' `TrainOutput`."""
        if self.train_dataset is None:
            raise ValueError("`train()` needs a `train_dataset`.")
        args = self.args
        resume = resume_from_checkpoint if resume_from_checkpoint is not None else args.resume_from_checkpoint
        resume = "latest" if resume is True else resume
        check_output_folder(args.output_dir, "output_dir")
        if args.should_save:
            check_checkpoint_folders(args.output_dir)
        checkpoint = resolve_resume_checkpoint(args.output_dir, resume)
        if self.accelerator.num_processes > 1 and hasattr(self.loss, "gather"):
            self.loss.gather = True  # the contrastive loss over the global batch
            if hasattr(self.loss, "id_offset"):
                self.loss.id_offset = self.accelerator.process_index << 32
        return super().train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None, trial=trial,
                             ignore_keys_for_eval=ignore_keys_for_eval, **kwargs)

    def _finalize_training(self, trial, num_train_samples, start_time):
        """Trainer's end of training, except that with `save_total_limit=1` and a best checkpoint, the other
        checkpoints are removed through `remove_saved_folder` (only the files hf_mrl recorded), not `rmtree`."""
        limit, best = self.args.save_total_limit, self.state.best_model_checkpoint
        if not (limit == 1 and best is not None):
            return super()._finalize_training(trial, num_train_samples, start_time)
        self.args.save_total_limit = None
        try:
            output = super()._finalize_training(trial, num_train_samples, start_time)
        finally:
            self.args.save_total_limit = limit
        if self.args.should_save:
            for _, path in list_checkpoints(self._get_output_dir(trial)):
                if not os.path.samefile(path, best):
                    remove_checkpoint(path)
        return output

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The task's loss through `model` (the wrapped model: DDP, FSDP or compiled), as sentence-transformers
        does; per-dim losses (and, with several training datasets, the loss of the batch's dataset) are kept for
        the logs."""
        loss_module = self.loss
        if isinstance(loss_module, TaskLoss):
            loss_module.run_through(model if model is not loss_module.model else None)
        elif getattr(loss_module, "model", model) is not model:
            loss_module.model = model
        loss, per_dim = loss_module(inputs)
        if model.training:
            self._remember_losses(loss, per_dim, inputs.get(DATASET_NAME))
        return (loss, None) if return_outputs else loss

    def _remember_losses(self, loss: torch.Tensor, per_dim: torch.Tensor | None, dataset_name: str | None = None) -> None:
        if per_dim is not None and self._dims_of_loss():
            values = per_dim.detach().float().reshape(-1)
            self._per_dim_sum = values if self._per_dim_sum is None else self._per_dim_sum + values
            self._per_dim_count += 1
        if dataset_name is not None:
            total = self._dataset_loss.setdefault(dataset_name, [0.0, 0])
            total[0], total[1] = total[0] + loss.detach().float(), total[1] + 1
        warning = self._flat_loss.update(self.state.global_step + 1, loss)
        if warning and self.is_world_process_zero():
            warnings.warn(warning, stacklevel=2)

    def _dims_of_loss(self) -> list[int]:
        if not isinstance(self.loss, TaskLoss):
            return []  # a user loss reports its total only
        return list(self.model.config.matryoshka_dims)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Trainer's log, plus each nesting dim's unweighted loss (`loss_dim8`, ...: means over the steps since the
        last log, averaged over processes) beside the training `loss`; with several training datasets, each one's
        loss (`loss_<name>`: the mean over its batches since the last log, on every process)."""
        if "loss" in logs and self._per_dim_count:
            means = self._per_dim_sum / self._per_dim_count
            if self.accelerator.num_processes > 1:
                means = self.accelerator.reduce(means.to(self.accelerator.device), reduction="mean")
            logs.update({f"loss_dim{dim}": round(float(value), 6) for dim, value in zip(self._dims_of_loss(), means.tolist())})
            self._per_dim_sum, self._per_dim_count = None, 0
        if "loss" in logs and isinstance(self.train_dataset, dict):
            logs.update(self._dataset_losses())
        super().log(logs, start_time)

    def _dataset_losses(self) -> dict[str, float]:
        """`loss_<name>` of each training dataset with batches since the last log (sums and counts summed over
        processes: a step's batches on every process come from one dataset)."""
        names = list(self.train_dataset)
        device = self.accelerator.device
        totals = torch.tensor([[float(self._dataset_loss.get(name, (0.0, 0))[column]) for name in names]
                               for column in (0, 1)], device=device)
        if self.accelerator.num_processes > 1:
            totals = self.accelerator.reduce(totals, reduction="sum")
        self._dataset_loss = {}
        return {f"loss_{name}": round(float(total / count), 6)
                for name, total, count in zip(names, *totals.tolist()) if count}

    # -- evaluation -----------------------------------------------------------------------------------------

    def get_evaluator(self, eval_dataset=None, reference_dataset=None):
        """The evaluator given to the trainer, else the task's default on `eval_dataset`."""
        if eval_dataset is None and reference_dataset is None and self._evaluator is not None:
            return self._evaluator
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        if dataset is None:
            return None
        if self.task == "classification":
            id2label = self.model.config.id2label
            dataset = align_class_labels(dataset, id2label)
            reference_dataset = align_class_labels(reference_dataset, id2label) if reference_dataset is not None else None
        collator, columns = self.data_collator, self.columns
        if isinstance(collator, MultiDatasetCollator):  # several training datasets: eval rows carry no dataset name
            collator = None if self.task == "pairs" else default_collator(
                self.task, self.model, self.processing_class, self.args.max_seq_length, None)
        if isinstance(columns, dict):
            columns = pair_columns(dataset, self.args.anchor_column, self.args.positive_column)
        return default_evaluator(
            self.task, self.model, dataset, collate_fn=collator, processor=self.processing_class,
            args=self.args, name=self.name or _UNNAMED, reference_dataset=reference_dataset, columns=columns,
        )

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval",
                 reference_dataset=None) -> dict[str, float]:
        """Per-dim metrics of the model on `eval_dataset` (default: the trainer's), from one encoding pass, as
        `{metric_key_prefix}_{name}_dim{k}_{metric}`. With `reference_dataset` (e.g. the training split) the k-NN
        database is that set; without, it is the evaluated set itself, each row left out of its own neighbours.
        Logged and handed to the callbacks (early stopping, best checkpoint) like Trainer's metrics. A dict of
        datasets is scored one by one, each under `{metric_key_prefix}_{its key}`, as Trainer does."""
        datasets_by_name = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(datasets_by_name, dict):
            metrics = {}
            for key, dataset in datasets_by_name.items():
                metrics.update(self.evaluate(dataset, ignore_keys, f"{metric_key_prefix}_{key}", reference_dataset))
            return metrics
        evaluator = self.get_evaluator(eval_dataset, reference_dataset)
        if evaluator is None:
            raise ValueError("`evaluate()` needs an `eval_dataset` (here or in the trainer) or an `evaluator`.")
        results = self._run_evaluator(evaluator)
        self._card_results = results
        if self.name is None and evaluator is not self._evaluator:
            results = {key.removeprefix(f"{_UNNAMED}_"): value for key, value in results.items()}
        metrics = {_prefixed(key, metric_key_prefix): value for key, value in results.items()}
        self.log(dict(metrics))
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _run_evaluator(self, evaluator) -> dict[str, float]:
        """Sharded models (FSDP, DeepSpeed) evaluate on every process; otherwise the main process scores and the
        others receive its results. The evaluator draws no bar with `disable_tqdm` or during training (the
        training bar is there)."""
        from accelerate.utils import broadcast_object_list

        model = self.model
        everywhere = self.is_fsdp_enabled or self.is_deepspeed_enabled or self.accelerator.num_processes == 1
        training = model.training
        results = None
        try:
            if everywhere or self.accelerator.is_main_process:
                with quiet_progress(self.args.disable_tqdm or self.is_in_train):
                    results = {key: float(value) for key, value in evaluator(model.eval()).items()}
        finally:
            model.train(training)
        if not everywhere:
            results = broadcast_object_list([results])[0]
        return results

    # -- checkpoints ----------------------------------------------------------------------------------------

    def _save_checkpoint(self, model, trial) -> None:
        """Trainer's checkpoint (weights, optimizer, scheduler, scaler, RNG states, trainer state), written to
        `.checkpoint-<step>.tmp-save` and renamed to `checkpoint-<step>` once every process has written its
        part; then rotation (`save_total_limit`) keeps the newest and the best checkpoints."""
        run_dir = Path(self._get_output_dir(trial=trial))
        final = checkpoint_path(run_dir, self.state.global_step)
        staging = run_dir / f".{final.name}.tmp-save"
        if self.args.should_save:
            check_folder_target(final, CHECKPOINT_FOLDER, "output_dir")
            remove_stale_temp_folders(final, CHECKPOINT_FOLDER, name_pattern=f"{CHECKPOINT_PREFIX}*")
            staging.mkdir(parents=True, exist_ok=True)
        self.accelerator.wait_for_everyone()
        try:
            self._write_checkpoint(model, trial, run_dir, staging)
            if self.args.should_save:
                move_into_place(staging, final, CHECKPOINT_FOLDER)  # the same step saved again replaces it
        except BaseException as error:
            if self.args.should_save:
                shutil.rmtree(staging, ignore_errors=True)
            plain = describe_os_error(error, final)
            if plain is not None:
                raise plain from error
            raise
        self.accelerator.wait_for_everyone()
        if self.args.push_to_hub:
            self._push_from_checkpoint(str(final))
        if self.args.should_save and self.args.save_total_limit:
            rotate_checkpoints(run_dir, self.args.save_total_limit, keep=self.state.best_model_checkpoint)
        pause = float(os.environ.get(PAUSE_AFTER_CHECKPOINT_ENV, 0))
        if pause:
            time.sleep(pause)

    def _write_checkpoint(self, model, trial, run_dir: Path, staging: Path) -> None:
        """Every process writes its part of the checkpoint into `staging`."""
        if self.hp_search_backend is None and trial is None:
            self.store_flos()
        self.save_model(str(staging), _internal_call=True)
        self.accelerator.wait_for_everyone()  # the weights first: the model save wants an empty folder
        if self.state.best_global_step:
            best = checkpoint_path(run_dir, self.state.best_global_step)
            if best.exists() or self.state.best_global_step == self.state.global_step:
                self.state.best_model_checkpoint = str(best)
        if not self.args.save_only_model:
            self._save_optimizer_and_scheduler(str(staging))
            self._save_scaler(str(staging))
            self._save_rng_state(str(staging))
        if self.args.should_save:
            self._store_callback_states()
            self.state.save_to_json(str(staging / "trainer_state.json"))
        self.accelerator.wait_for_everyone()

    def _store_callback_states(self) -> None:
        from transformers.trainer_callback import ExportableState

        for callback in [*self.callback_handler.callbacks, self.control]:
            if isinstance(callback, ExportableState):
                name = type(callback).__name__
                if isinstance(self.state.stateful_callbacks.get(name), list):
                    self.state.stateful_callbacks[name].append(callback.state())
                else:
                    self.state.stateful_callbacks[name] = callback.state()

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None) -> None:
        """Every file of the checkpoint is checked first: a corrupted one is named instead of resumed from."""
        check_checkpoint_files(resume_from_checkpoint, self.args.process_index, self.args.world_size)
        try:
            if self.is_fsdp_enabled or self.is_deepspeed_enabled:
                super()._load_from_checkpoint(resume_from_checkpoint, model)
            else:
                _load_saved_weights(model if model is not None else self.model, resume_from_checkpoint)
        except (RuntimeError, KeyError, OSError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"cannot resume from {resume_from_checkpoint}: {first}") from error

    def _load_best_model(self) -> None:
        """The best checkpoint's weights back into the model (`load_best_model_at_end`)."""
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            super()._load_best_model()
            return
        _load_saved_weights(self.model, self.state.best_model_checkpoint)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """Weights (safetensors), config and processor; no pickled `training_args.bin` (the arguments are in the
        run's `results.json` / trainer state)."""
        if not self.args.should_save:
            return
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        unwrapped = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        settable = getattr(getattr(type(unwrapped), "processor", None), "fset", None) is not None
        if self.processing_class is not None and settable:
            # the model saves this tokenizer, and a text model's sentence-transformers files take it too: one
            # folder, one max length, one embedding
            unwrapped.processor = self.processing_class
        unwrapped.save_pretrained(output_dir, state_dict=state_dict)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)

    # -- saving and sharing ---------------------------------------------------------------------------------

    def save_model(self, output_dir=None, _internal_call: bool = False, results=None, description: str | None = None,
                   metrics=None) -> Path:
        """Writes the model with its tokenizer / image processor and a model card (per-dim `results`, default the
        last `evaluate()`'s) to `output_dir` (default: `<args.output_dir>/model`), atomically; with
        `args.push_to_hub`, pushes it too. Checkpoint saves (`_internal_call`) go through Trainer's path."""
        if _internal_call:
            super().save_model(output_dir, _internal_call=True)
            return Path(output_dir)
        path = Path(output_dir) if output_dir is not None else Path(self.args.output_dir) / "model"
        if results is not None:
            self._card_results = dict(results)
        self._card = {key: value for key, value in (("description", description), ("metrics", metrics)) if value is not None}
        if self.args.should_save:
            save_with_card(self.model, path, results=self._card_results, processor=self.processing_class, **self._card)
        self.accelerator.wait_for_everyone()
        if self.args.push_to_hub:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)
        return path

    def push_to_hub(self, commit_message: str | None = "End of training", blocking: bool = True, token=None,
                    revision=None, private=None, **kwargs):
        """Uploads the model, its processor and hf_mrl's model card (per-dim table and plot, class names) to
        `args.hub_model_id` (default: the output folder's name), creating the repo if needed."""
        if self.hub_model_id is None:
            self.init_hf_repo(token=token, private=private)
        if not self.is_world_process_zero():
            return None
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        return push_to_hub_with_card(
            self.model, self.hub_model_id, self._card_results, self.processing_class,
            token=token if token is not None else self.args.hub_token,
            private=private if private is not None else self.args.hub_private_repo,
            revision=revision if revision is not None else self.args.hub_revision,
            commit_message=commit_message, **self._card,
        )

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """`hub_strategy="every_save"`: each checkpoint's model goes up with its card (blocking)."""
        if self.args.hub_strategy == "every_save":
            self.push_to_hub(commit_message=f"Training in progress, step {self.state.global_step}")


def _encode_label_strings(train_parts: dict, eval_dataset):
    """`encode_label_strings` over every training dataset: string labels become one `ClassLabel` over all of them
    and the (first) eval dataset."""
    if len(train_parts) <= 1:
        key = next(iter(train_parts), None)
        train, eval_dataset = encode_label_strings(train_parts.get(key), eval_dataset)
        return ({key: train} if train_parts else {}), eval_dataset
    parts = [*train_parts.values(), eval_dataset]
    present = [position for position, part in enumerate(parts) if isinstance(part, datasets.Dataset)]
    encoded = encode_string_labels(datasets.DatasetDict({str(position): parts[position] for position in present}))
    for position in present:
        parts[position] = encoded[str(position)]
    return dict(zip(train_parts, parts[:-1])), parts[-1]


def _load_saved_weights(model, folder) -> None:
    """Loads the weights a save wrote into `model`, through `from_pretrained` (transformers v5 saves some encoders,
    e.g. ViT, under their original parameter names, which a raw `load_state_dict` would silently skip)."""
    unwrapped = getattr(model, "module", model)
    with transformers_progress_bars(False):  # a resume or the best checkpoint: no "Loading weights" bar
        saved = type(unwrapped).from_pretrained(str(folder))
    unwrapped.load_state_dict(saved.state_dict(), strict=True)


def _plain_name(name: str) -> str:
    """A parameter's name without the prefixes wrappers add (FSDP, DDP, torch.compile) or our `loss.`."""
    changed = True
    while changed:
        changed = False
        for prefix in (*_WRAPPER_PREFIXES, "loss.model.", "loss."):
            if name.startswith(prefix):
                name, changed = name[len(prefix):], True
    return name


_UNNAMED = "eval"  # the evaluator's name when the trainer has none; dropped from the keys


def _check_metric_for_best_model(metric: str, name: str | None, dims: list[int]) -> None:
    """`metric_for_best_model` must name one of the default evaluator's keys, `eval_{name}_dim{k}_{metric}`:
    checked before training rather than at the first evaluation."""
    key = metric if metric.startswith("eval_") else f"eval_{metric}"
    stem = f"eval_{name}_dim" if name else "eval_dim"
    match = re.fullmatch(rf"{re.escape(stem)}(\d+)_.+", key)
    if match is None or int(match.group(1)) not in dims:
        raise ValueError(
            f"`metric_for_best_model`={metric!r} is not a key the evaluation writes: they read "
            f"'{stem}<k>_<metric>' with k in {dims} (e.g. '{stem}{dims[0]}_...'; the metrics depend on the task: "
            "top1 / 1nn for classification, recall@10 / mrr@10 / ndcg@10 for retrieval)."
        )


def _prefixed(key: str, prefix: str) -> str:
    """`fmnist_dim8_top1` -> `eval_fmnist_dim8_top1`; a key that already starts with the prefix keeps it once."""
    return key if not prefix or key.startswith(f"{prefix}_") else f"{prefix}_{key}"
