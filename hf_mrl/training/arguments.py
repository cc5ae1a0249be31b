"""`MatryoshkaTrainingArguments`: transformers' `TrainingArguments` plus the few settings Matryoshka training adds.

Every field of `TrainingArguments` keeps its name and meaning, and `MatryoshkaTrainer` (a `transformers.Trainer`)
does what transformers documents for it, or refuses it before any work with one line that says why:
`REFUSED` (whatever the task) and `check_arguments_for_task` (what has no meaning for one task). The fields that
no test of ours exercises are listed, with the reason, in `NOT_EXERCISED_FIELDS`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from ..data._common import check_image_cells
from ..data.prompts import check_training_prompts
from ..modeling.checks import check_number, check_positive_int, is_int
from ..modeling.files import check_output_folder
from ..modeling.progress import should_show_progress
from .checkpointing import check_save_total_limit
from .sampling import BATCH_SAMPLERS, MULTI_DATASET_BATCH_SAMPLERS

__all__ = [
    "MatryoshkaTrainingArguments",
    "DEFAULT_HEAD_LEARNING_RATE",
    "NOT_EXERCISED_FIELDS",
    "REFUSED",
    "REFUSED_TRAINER_ARGUMENTS",
    "as_matryoshka_arguments",
    "check_arguments_for_task",
    "check_datasets",
]

# New layers (projection, nested heads) start from random weights: at a pretrained encoder's fine-tuning
# rate (5e-5) they barely move in a short run, so by default they learn at least this fast.
DEFAULT_HEAD_LEARNING_RATE = 1e-3

# Fields refused whatever the task: (is the value refused?, why). Evaluation runs hf_mrl's evaluators (one encoding
# pass, every dim), not Trainer's prediction loop, so the prediction loop's settings have nothing to act on.
_PREDICTION_LOOP = "evaluation runs hf_mrl's per-dim evaluators (one encoding pass), not Trainer's prediction loop"
REFUSED = {
    "prediction_loss_only": (lambda value: bool(value), _PREDICTION_LOOP),
    "eval_accumulation_steps": (lambda value: value is not None, _PREDICTION_LOOP),
    "include_for_metrics": (lambda value: bool(value), _PREDICTION_LOOP),
    "batch_eval_metrics": (lambda value: bool(value), _PREDICTION_LOOP),
    "eval_do_concat_batches": (lambda value: not value, _PREDICTION_LOOP),
    "eval_use_gather_object": (lambda value: bool(value), _PREDICTION_LOOP),
    "label_names": (lambda value: value is not None, "the task's collator names the labels (`labels`)"),
    "bf16_full_eval": (lambda value: bool(value), "the evaluators encode in the model's own dtype; cast the model to evaluate in bf16"),
    "fp16_full_eval": (lambda value: bool(value), "the evaluators encode in the model's own dtype; cast the model to evaluate in fp16"),
    "use_liger_kernel": (lambda value: bool(value), "Liger kernels patch decoder LLMs; Matryoshka encoders have none to patch"),
    "use_cache": (lambda value: bool(value), "encoders keep no key/value cache"),
    "hub_strategy": (lambda value: str(getattr(value, "value", value)) in ("checkpoint", "all_checkpoints"),
                     "hf_mrl pushes the model with its card ('end' or 'every_save'), never optimizer states"),
    "train_sampling_strategy": (lambda value: str(getattr(value, "value", value)) == "batch_rebalance",
                                "batch_rebalance balances token counts of decoder batches; use 'random', 'sequential' or 'group_by_length'"),
}

# Fields that no test of ours exercises, and why (the field walk in tests/test_trainer_arguments.py reads this).
NOT_EXERCISED_FIELDS = {
    "do_train": "read by scripts, not by Trainer (as transformers documents); our scripts always train",
    "do_eval": "read by scripts, not by Trainer; our scripts evaluate the final model whenever there is data",
    "do_predict": "read by scripts, not by Trainer; our scripts have no predict step",
    "local_rank": "set by the launcher (torchrun / accelerate launch), not by users",
    "fp16": "CUDA mixed precision through Accelerate (bf16 is tested on CPU); run by scripts/device_check.sh",
    "tf32": "an Ampere+ CUDA matmul setting that Trainer hands to torch; run by scripts/device_check.sh",
    "fsdp": "FSDP needs GPUs (Accelerate runs CPU processes as plain DDP; on the CPU the flag is refused, tested); run by scripts/device_check.sh",
    "fsdp_config": "FSDP's settings; see `fsdp`",
    "deepspeed": "an optional extra (hf_mrl[deepspeed]); its absence is a clear error (tested); run by scripts/device_check.sh",
    "parallelism_config": "tensor / context / sequence parallelism for models with a parallel plan; ours have none, and Trainer refuses it",
    "torch_compile_backend": "passed to torch.compile by Trainer (torch_compile is tested with the default backend)",
    "torch_compile_mode": "passed to torch.compile by Trainer (torch_compile is tested with the default mode)",
    "torch_empty_cache_steps": "empties the device cache every N steps (no cache on CPU)",
    "auto_find_batch_size": "halves the batch on CUDA out-of-memory errors (Accelerate's find_executable_batch_size)",
    "optim_target_modules": "for GaLore / APOLLO optimizers (CUDA-only packages), which Trainer builds from the model",
    "average_tokens_across_devices": "only for losses normalised by token counts; ours are means over the batch",
    "log_level": "transformers' logging level, set by Trainer",
    "log_level_replica": "transformers' logging level on other processes, set by Trainer",
    "log_on_each_node": "which nodes log (several machines)",
    "logging_nan_inf_filter": "Trainer skips NaN/inf losses in its running mean",
    "logging_first_step": "Trainer logs the first step too",
    "logging_strategy": "Trainer's logging schedule (steps is tested)",
    "run_name": "a tracker's run name",
    "project": "a tracker's project name",
    "trackio_space_id": "the trackio integration's Space",
    "trackio_bucket_id": "the trackio integration's bucket",
    "trackio_static_space_id": "the trackio integration's static Space",
    "eval_delay": "Trainer skips evaluations before this epoch / step",
    "save_on_each_node": "several machines without a shared disk: each node's main process saves (and renames)",
    "save_only_model": "Trainer saves weights only (then a run cannot resume, as transformers documents)",
    "enable_jit_checkpoint": "Trainer saves a checkpoint on SIGTERM (through our atomic checkpoint)",
    "hub_private_repo": "the visibility of a newly created Hub repo",
    "hub_always_push": "Trainer pushes even while a push is in flight (our pushes block)",
    "hub_revision": "the Hub branch pushed to",
    "ignore_data_skip": "a resume starts the epoch from its first batch instead of skipping the seen ones",
    "restore_callback_states_from_checkpoint": "callbacks' states restored on resume (Trainer)",
    "full_determinism": "deterministic torch algorithms (Trainer)",
    "accelerator_config": "Accelerate settings (batch splitting, dispatch), handed over by Trainer",
    "dataloader_pin_memory": "pinned host memory for device copies (CUDA)",
    "dataloader_persistent_workers": "keeps the data workers between epochs",
    "dataloader_prefetch_factor": "batches each worker loads ahead",
    "dataloader_multiprocessing_context": "how data workers start",
    "dataloader_in_order": "whether workers hand batches back in order",
    "remove_unused_columns": "the task's collator reads the columns it needs and the model sees only its inputs",
    "length_column_name": "group_by_length reads lengths from this column when the dataset has it",
    "ddp_find_unused_parameters": "DistributedDataParallel setting handed over by Trainer",
    "ddp_bucket_cap_mb": "DistributedDataParallel setting handed over by Trainer",
    "ddp_broadcast_buffers": "DistributedDataParallel setting handed over by Trainer",
    "ddp_static_graph": "DistributedDataParallel setting handed over by Trainer",
    "ddp_backend": "the process group's backend (gloo on CPU, nccl on CUDA)",
    "ddp_timeout": "the process group's timeout",
    "debug": "Trainer's debug options (underflow/overflow detection hooks)",
    "skip_memory_metrics": "Trainer's memory report",
    "include_num_input_tokens_seen": "Trainer counts the tokens of classification batches; refused for pairs and image-text",
    "liger_kernel_config": "Liger's settings; `use_liger_kernel` is refused",
    "activation_checkpointing_kwargs": "passed to torch.utils.checkpoint (gradient checkpointing is tested with the defaults)",
    "gradient_checkpointing_kwargs": "the deprecated alias of `activation_checkpointing_kwargs`",
    "eval_steps": "Trainer's evaluation schedule (eval_strategy='epoch' and 'steps' with logging_steps are tested)",
}


# `Trainer` arguments whose job hf_mrl's evaluators and losses do instead.
REFUSED_TRAINER_ARGUMENTS = {
    "model_init": "hyperparameter search re-creates the model; build the model, then the trainer",
    "compute_metrics": "evaluation runs hf_mrl's per-dim evaluators; pass `evaluator=` for other metrics",
    "compute_loss_func": "the loss follows from the task; pass `loss=` (an nn.Module over the model) instead",
    "preprocess_logits_for_metrics": "evaluation runs hf_mrl's per-dim evaluators, not the prediction loop",
}


def check_arguments_for_task(args, task: str, model) -> None:
    """Refuses, before any work, the arguments that have no meaning for `task` ("classification", "pairs" or
    "image-text") or `model`, naming the field and why."""
    vision_only = model.main_input_name == "pixel_values" and task == "classification"
    if args.label_smoothing_factor and task != "classification":
        raise ValueError(
            f"`label_smoothing_factor`={args.label_smoothing_factor} smooths class labels; the {task} contrastive loss "
            "takes `contrastive_label_smoothing` (pairs) or the dual encoder's `label_smoothing` config."
        )
    if args.neftune_noise_alpha is not None and (vision_only or task == "image-text"):
        raise ValueError(
            f"`neftune_noise_alpha`={args.neftune_noise_alpha} adds noise to token embeddings; a {task} model on "
            "images has no token embeddings to perturb."
        )
    if str(getattr(args.include_num_input_tokens_seen, "value", args.include_num_input_tokens_seen)) not in ("no", "False") \
            and task != "classification":
        raise ValueError(
            f"`include_num_input_tokens_seen`={args.include_num_input_tokens_seen!r} counts one input per batch; "
            f"{task} batches hold two towers' inputs, which Trainer cannot count."
        )


def check_datasets(args, train_dataset, eval_datasets: dict) -> None:
    """Refuses, before any work, an empty train or eval dataset, a `dataloader_drop_last` run whose epoch holds
    no full batch (Trainer would run zero steps, or wait forever for the first one) and pixel arrays that are not
    finite or out of range (`check_image_cells`, naming the row). A dict of training datasets is checked dataset by
    dataset. Datasets without a length (`IterableDataset`) are not checked."""
    train_parts = ({f"train_dataset[{key!r}]": part for key, part in train_dataset.items()}
                   if isinstance(train_dataset, dict) else {"train_dataset": train_dataset})
    for name, dataset in (*train_parts.items(),
                          *((f"eval_dataset[{key!r}]" if key is not None else "eval_dataset", part)
                            for key, part in eval_datasets.items())):
        if dataset is not None and hasattr(dataset, "__len__") and len(dataset) == 0:
            raise ValueError(f"`{name}` is empty (0 rows); give at least one row (check the split and "
                             "`max_*_samples`).")
        check_image_cells(dataset, f"`{name}`", files=False)
    if not args.dataloader_drop_last:
        return
    batch = args.per_device_train_batch_size * max(1, args.n_gpu) * args.world_size
    for name, dataset in train_parts.items():
        if dataset is not None and hasattr(dataset, "__len__") and len(dataset) < batch:
            raise ValueError(
                f"`dataloader_drop_last`=True drops every batch: `{name}` has {len(dataset)} rows, fewer "
                f"than one batch of {batch} (`per_device_train_batch_size`={args.per_device_train_batch_size} x "
                f"{max(1, args.n_gpu) * args.world_size} devices), so an epoch has 0 batches; lower the batch size to "
                f"at most {len(dataset)}, give more rows or turn `dataloader_drop_last` off."
            )


@dataclass
class MatryoshkaTrainingArguments(TrainingArguments):
    """`TrainingArguments` with Matryoshka settings. The loss's nesting dims and weights come from the model's
    config (`matryoshka_dims`, `matryoshka_weights`); these fields only say how to train.

    Args:
        head_learning_rate (`float`, *optional*): learning rate of the layers added on the encoder (projection,
            nested heads). Defaults to `max(learning_rate, 1e-3)`.
        max_seq_length (`int`, *optional*, defaults to 128): tokens per text; saved with the tokenizer
            (`model_max_length`) so evaluation later cuts texts the same way.
        anchor_column / positive_column (`str`, *optional*): the two text columns of a pair dataset for a
            `MatryoshkaModel` (default: `anchor` / `positive`, else the dataset's two text columns).
        temperature (`float`, *optional*): softmax temperature of the text-pair contrastive loss (default 0.05), and
            the initial (learnt) temperature of a dual encoder built by the contrastive recipe (default 0.07).
        symmetric (`bool`, defaults to True): pair loss in both directions (else anchor -> positive only).
        contrastive_label_smoothing (`float`, defaults to 0.0): label smoothing of the pair loss.
        eval_dims (`list[int]`, *optional*): dims scored by the default evaluators (default: the model's
            nesting dims; every power of two for a one-dim baseline).
        shuffle_buffer (`int`, defaults to 10000): shuffle buffer of a streamed training set.
        mini_batch_size (`int`, *optional*): contrastive tasks: encode each batch in mini-batches of this many rows
            and back-propagate through cached embedding gradients (GradCache): the loss sees the whole batch's
            in-batch negatives, memory is that of a mini-batch. Default: no caching.
        prompts (`str` or `dict`, *optional*): text prefixes added in training, as sentence-transformers' training
            argument: one string for every text column, `{column: prompt}`, or `{dataset_name: {column: prompt}}`;
            from the command line a JSON dict string. They are not saved with the model (as in sentence-transformers):
            set the inference prompts in `model.config.prompts` (e.g. `{"query": "query: "}`), which
            `encode(..., prompt_name=...)` and sentence-transformers read.
        batch_sampler (`str`, defaults to "batch_sampler"): "no_duplicates" keeps a text out of a batch that already
            holds it (no false in-batch negatives), as sentence-transformers' `BatchSamplers.NO_DUPLICATES`.
        multi_dataset_batch_sampler (`str`, defaults to "proportional"): with a dict of training datasets (each batch
            from one of them), "proportional" draws batches in proportion to the datasets' sizes, "round_robin"
            takes one batch from each in turn until the smallest runs out.

    `disable_tqdm` left unset is True where stderr is no terminal (a log file) or progress bars are switched off
    (`HF_MRL_DISABLE_PROGRESS_BAR=1`, see `hf_mrl.modeling.progress`): each log is then printed as one line
    (step, loss, each dim's loss) instead of a `\\r`-redrawn bar. A value given is kept.
    """

    head_learning_rate: float | None = field(
        default=None, metadata={"help": "learning rate of the new layers (projection, heads) (default: max(learning_rate, 1e-3))"}
    )
    max_seq_length: int = field(default=128, metadata={"help": "tokens per text (saved with the tokenizer)"})
    anchor_column: str | None = field(default=None, metadata={"help": "pairs: first text column (default: anchor)"})
    positive_column: str | None = field(default=None, metadata={"help": "pairs: second text column (default: positive)"})
    temperature: float | None = field(
        default=None, metadata={"help": "contrastive temperature (default: 0.05 for pairs, 0.07 to start a dual encoder)"}
    )
    symmetric: bool = field(default=True, metadata={"help": "pairs: loss in both directions"})
    contrastive_label_smoothing: float = field(default=0.0, metadata={"help": "pairs: label smoothing"})
    eval_dims: list[int] | None = field(default=None, metadata={"help": "dims the evaluators score (default: the model's nesting dims)"})
    shuffle_buffer: int = field(default=10_000, metadata={"help": "shuffle buffer of a streamed training set"})
    mini_batch_size: int | None = field(
        default=None, metadata={"help": "contrastive: encode in mini-batches of this size with cached gradients (GradCache)"}
    )
    prompts: str | None = field(  # or a dict in Python; a JSON dict string from the command line
        default=None, metadata={"help": 'text prefixes in training: a string, or JSON {"anchor": "query: ", ...} '
                                        "(not saved with the model: inference prompts live in model.config.prompts)"}
    )
    batch_sampler: str = field(default="batch_sampler", metadata={"help": "batch_sampler or no_duplicates"})
    multi_dataset_batch_sampler: str = field(
        default="proportional", metadata={"help": "several training datasets: proportional or round_robin"}
    )
    # Evaluation encodes whole splits: transformers' default of 8 rows a batch makes it needlessly slow.
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "rows per evaluation batch"})

    def __post_init__(self):
        """Every number is checked before any work: NaN, inf and out-of-range values raise, naming the flag; so
        are the fields in `REFUSED`, and DeepSpeed without its package."""
        for name, (refused, reason) in REFUSED.items():
            if refused(getattr(self, name)):
                raise ValueError(f"`{name}`={getattr(self, name)!r} is not supported by MatryoshkaTrainer: {reason}.")
        if self.deepspeed and importlib.util.find_spec("deepspeed") is None:
            raise ValueError(
                f"`deepspeed`={self.deepspeed!r} needs the deepspeed package: pip install 'hf_mrl[deepspeed]'."
            )
        check_save_total_limit(self.save_total_limit)
        check_number(self.learning_rate, "learning_rate", 0, low_open=True)
        if self.output_dir is not None:
            check_output_folder(self.output_dir, "output_dir")  # a file there is found now, not after training
        if self.head_learning_rate is not None:
            check_number(self.head_learning_rate, "head_learning_rate", 0, low_open=True)
        for name in ("weight_decay", "max_grad_norm", "adam_epsilon", "warmup_steps"):
            check_number(getattr(self, name), name, 0)
        for name in ("adam_beta1", "adam_beta2"):
            check_number(getattr(self, name), name, 0, 1, high_open=True)
        if self.max_steps > 0:  # then max_steps, not num_train_epochs, says how long to train
            check_number(self.num_train_epochs, "num_train_epochs")
        else:
            check_number(self.num_train_epochs, "num_train_epochs", 0, low_open=True)
        if self.temperature is not None:
            check_number(self.temperature, "temperature", 0, low_open=True)
        check_number(self.contrastive_label_smoothing, "contrastive_label_smoothing", 0, 1, high_open=True)
        if not is_int(self.seed) or not 0 <= self.seed < 2**32:
            raise ValueError(f"`seed` must be an integer from 0 to {2**32 - 1}, got {self.seed!r}.")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                     "max_seq_length", "shuffle_buffer"):
            check_positive_int(getattr(self, name), name)
        if self.mini_batch_size is not None:
            check_positive_int(self.mini_batch_size, "mini_batch_size")
        # sentence-transformers' enums (BatchSamplers.NO_DUPLICATES, ...) are str enums: their values are ours
        self.batch_sampler = getattr(self.batch_sampler, "value", self.batch_sampler)
        self.multi_dataset_batch_sampler = getattr(self.multi_dataset_batch_sampler, "value", self.multi_dataset_batch_sampler)
        for name, allowed in (("batch_sampler", BATCH_SAMPLERS), ("multi_dataset_batch_sampler", MULTI_DATASET_BATCH_SAMPLERS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {list(allowed)}, got {getattr(self, name)!r}.")
        self.prompts = check_training_prompts(self.prompts)
        if self.eval_dims is not None and (not self.eval_dims or not all(is_int(dim) and dim > 0 for dim in self.eval_dims)):
            raise ValueError(f"`eval_dims` must be positive integers, got {self.eval_dims!r}.")
        if not self.use_cpu and not torch.cuda.is_available():
            # No GPU: CPU training, also for bf16 and for several launched processes (gloo data parallel).
            self.use_cpu = True
        if self.use_cpu and (self.fsdp or self.deepspeed):
            # Accelerate runs CPU processes as plain data parallel: the sharding flag would do nothing.
            name = "fsdp" if self.fsdp else "deepspeed"
            raise ValueError(
                f"`{name}`={getattr(self, name)!r} shards the model over GPUs; on the CPU Accelerate runs plain data "
                "parallel (gloo), so it would do nothing. Drop it, or train on GPUs."
            )
        if self.disable_tqdm is None and not should_show_progress():
            # stderr is no terminal (a log file) or bars are switched off: one printed line per log, no `\r` bars
            self.disable_tqdm = True
        super().__post_init__()
        if self.save_strategy == "steps" and not self.save_steps > 0:
            raise ValueError(f"`save_steps` must be > 0 with save_strategy='steps', got {self.save_steps!r}.")

    @property
    def new_layers_learning_rate(self) -> float:
        if self.head_learning_rate is not None:
            return self.head_learning_rate
        return max(self.learning_rate, DEFAULT_HEAD_LEARNING_RATE)


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
