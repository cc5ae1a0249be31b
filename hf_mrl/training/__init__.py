"""Training: `MatryoshkaTrainer` (the one loop behind the Python API, the scripts and the demo), its arguments,
resumable checkpoints (atomic save, rotation, resume), model building (MRL / MRL-E / fixed-feature heads),
per-dim loss logging and progress.
"""

from .arguments import MatryoshkaTrainingArguments
from .checkpointing import (
    CHECKPOINT_PREFIX,
    TEMP_PREFIX,
    TRAINER_STATE_NAME,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    parse_checkpointing_steps,
    read_trainer_state,
    resolve_resume_checkpoint,
    rotate_checkpoints,
    save_checkpoint,
    validate_keep_last,
)
from .launch import use_cpu
from .models import (
    BACKBONE_KINDS,
    HEAD_KINDS,
    build_classifier,
    classifier_class,
    head_settings,
    is_vision_config,
    scratch_backbone_config,
)
from .tracking import PerDimLossMeter, prefixed, progress_bar, results_table
from .trainer import PAUSE_AFTER_CHECKPOINT_ENV, MatryoshkaTrainer

__all__ = [
    "MatryoshkaTrainer",
    "MatryoshkaTrainingArguments",
    "PAUSE_AFTER_CHECKPOINT_ENV",
    "BACKBONE_KINDS",
    "CHECKPOINT_PREFIX",
    "HEAD_KINDS",
    "TEMP_PREFIX",
    "TRAINER_STATE_NAME",
    "PerDimLossMeter",
    "build_classifier",
    "use_cpu",
    "checkpoint_path",
    "classifier_class",
    "head_settings",
    "is_vision_config",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "parse_checkpointing_steps",
    "prefixed",
    "progress_bar",
    "read_trainer_state",
    "resolve_resume_checkpoint",
    "results_table",
    "rotate_checkpoints",
    "save_checkpoint",
    "scratch_backbone_config",
    "validate_keep_last",
]
