"""Training: `MatryoshkaTrainer` (a `transformers.Trainer` behind the Python API, the scripts and the demo), its
arguments, checkpoints (atomic save, rotation, resume) and model building (MRL / MRL-E / fixed-feature heads).
"""

from .arguments import NOT_EXERCISED_FIELDS, MatryoshkaTrainingArguments
from .checkpointing import (
    CHECKPOINT_PREFIX,
    TEMP_PREFIX,
    TRAINER_STATE_NAME,
    check_checkpoint_files,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    read_trainer_state,
    resolve_resume_checkpoint,
    rotate_checkpoints,
)
from .models import (
    BACKBONE_KINDS,
    HEAD_KINDS,
    build_classifier,
    classifier_class,
    head_settings,
    is_vision_config,
    scratch_backbone_config,
)
from .tracking import results_table
from .trainer import PAUSE_AFTER_CHECKPOINT_ENV, MatryoshkaTrainer

__all__ = [
    "MatryoshkaTrainer",
    "MatryoshkaTrainingArguments",
    "NOT_EXERCISED_FIELDS",
    "PAUSE_AFTER_CHECKPOINT_ENV",
    "BACKBONE_KINDS",
    "CHECKPOINT_PREFIX",
    "HEAD_KINDS",
    "TEMP_PREFIX",
    "TRAINER_STATE_NAME",
    "build_classifier",
    "check_checkpoint_files",
    "checkpoint_path",
    "classifier_class",
    "head_settings",
    "is_vision_config",
    "latest_checkpoint",
    "list_checkpoints",
    "read_trainer_state",
    "resolve_resume_checkpoint",
    "results_table",
    "rotate_checkpoints",
    "scratch_backbone_config",
]
