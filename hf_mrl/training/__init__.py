"""Pieces shared by the Accelerate training scripts: resumable checkpoints (atomic save, rotation,
resume), per-dim metric logging and progress.
"""

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

__all__ = [
    "CHECKPOINT_PREFIX",
    "TEMP_PREFIX",
    "TRAINER_STATE_NAME",
    "checkpoint_path",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "parse_checkpointing_steps",
    "read_trainer_state",
    "resolve_resume_checkpoint",
    "rotate_checkpoints",
    "save_checkpoint",
    "validate_keep_last",
]
