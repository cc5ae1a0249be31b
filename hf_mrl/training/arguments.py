"""`MatryoshkaTrainingArguments`: transformers' `TrainingArguments` plus the few settings Matryoshka training adds.

Every flag a transformers user knows keeps its name and meaning (`--per_device_train_batch_size`,
`--learning_rate`, `--max_steps`, `--save_steps`, `--save_total_limit`, `--eval_strategy`, `--bf16`,
`--report_to`, `--resume_from_checkpoint`, ...), so `HfArgumentParser` builds the scripts' command lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from ..files import check_output_folder
from ..input_checks import check_number, check_positive_int, is_int

__all__ = ["MatryoshkaTrainingArguments", "DEFAULT_HEAD_LEARNING_RATE"]

# New layers (projection, nested heads) start from random weights: at a pretrained encoder's fine-tuning
# rate (5e-5) they barely move in a short run, so by default they learn at least this fast.
DEFAULT_HEAD_LEARNING_RATE = 1e-3


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
    # Evaluation encodes whole splits: transformers' default of 8 rows a batch makes it needlessly slow.
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "rows per evaluation batch"})

    def __post_init__(self):
        """Every number is checked before any work: NaN, inf and out-of-range values raise, naming the flag."""
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
        if self.eval_dims is not None and (not self.eval_dims or not all(is_int(dim) and dim > 0 for dim in self.eval_dims)):
            raise ValueError(f"`eval_dims` must be positive integers, got {self.eval_dims!r}.")
        if not self.use_cpu and not torch.cuda.is_available():
            # No GPU: CPU training, also for bf16 and for several launched processes (gloo data parallel).
            self.use_cpu = True
        super().__post_init__()
        if self.save_strategy == "steps" and not self.save_steps > 0:
            raise ValueError(f"`save_steps` must be > 0 with save_strategy='steps', got {self.save_steps!r}.")

    @property
    def new_layers_learning_rate(self) -> float:
        if self.head_learning_rate is not None:
            return self.head_learning_rate
        return max(self.learning_rate, DEFAULT_HEAD_LEARNING_RATE)

    @property
    def precision(self) -> str:
        """Accelerate's `mixed_precision` for `bf16` / `fp16`."""
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "no"

    def warmup_steps_for(self, total_steps: int) -> int:
        """`warmup_steps` as a count: an int is steps, a float in [0, 1) a share of `total_steps`."""
        if isinstance(self.warmup_steps, float) and self.warmup_steps < 1:
            return int(self.warmup_steps * total_steps)
        return int(self.warmup_steps)
