"""Resumable Accelerate checkpoints: atomic save, rotation, and finding the one to resume from.

A checkpoint is the folder `<output_dir>/checkpoint-<step>` holding what `accelerator.save_state` writes
(model weights as safetensors, optimizer / scheduler / RNG states) plus `trainer_state.json` (the step,
epoch and batches consumed, so a resumed run skips exactly what the killed run had seen).

Atomicity: every process saves into `<output_dir>/.tmp-checkpoint-<step>`; the main process then writes
`trainer_state.json` and renames the folder. A run killed mid-save leaves only a temp folder, which
`list_checkpoints` ignores and the next save of that step replaces.

Typical loop::

    state = {"step": 0, "epoch": 0, "batches_in_epoch": 0}
    resume = resolve_resume_checkpoint(args.output_dir, args.resume_from_checkpoint)
    if resume is not None:
        state = load_checkpoint(accelerator, resume)
    ...
    save_checkpoint(accelerator, args.output_dir, state["step"], keep_last=3, trainer_state=state)
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "CHECKPOINT_PREFIX",
    "TEMP_PREFIX",
    "TRAINER_STATE_NAME",
    "checkpoint_path",
    "list_checkpoints",
    "latest_checkpoint",
    "save_checkpoint",
    "rotate_checkpoints",
    "resolve_resume_checkpoint",
    "load_checkpoint",
    "read_trainer_state",
    "parse_checkpointing_steps",
    "validate_keep_last",
]

CHECKPOINT_PREFIX = "checkpoint-"
TEMP_PREFIX = ".tmp-checkpoint-"
TRAINER_STATE_NAME = "trainer_state.json"
_CHECKPOINT = re.compile(rf"^{re.escape(CHECKPOINT_PREFIX)}(\d+)$")


def checkpoint_path(output_dir, step: int) -> Path:
    """`<output_dir>/checkpoint-<step>`."""
    return Path(output_dir) / f"{CHECKPOINT_PREFIX}{step}"


def list_checkpoints(output_dir) -> list[tuple[int, Path]]:
    """Complete checkpoints under `output_dir` as `(step, path)`, oldest first; temp folders and folders
    without `trainer_state.json` are skipped. A missing `output_dir` has none."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _CHECKPOINT.match(entry.name)
        if match and entry.is_dir() and (entry / TRAINER_STATE_NAME).is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(output_dir) -> Path | None:
    """The complete checkpoint with the highest step under `output_dir`, or None."""
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


def validate_keep_last(keep_last, name: str = "keep_last") -> int | None:
    """None (keep every checkpoint) or a positive integer."""
    if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1):
        raise ValueError(f"`{name}` must be None (keep all) or a positive integer, got {keep_last!r}.")
    return keep_last


def parse_checkpointing_steps(value) -> int | str | None:
    """`--checkpointing_steps`: None / "" / "no" (never), "epoch" (end of every epoch), or a positive
    number of optimizer steps (as an int or its string)."""
    if value is None or value in ("", "no"):
        return None
    if value == "epoch":
        return "epoch"
    text = str(value)
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        raise ValueError(f"`checkpointing_steps` must be a positive integer, 'epoch' or 'no', got {value!r}.")
    return int(text)


def _write_json_atomically(path: Path, payload: Mapping) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(dict(payload), indent=2, sort_keys=True))
    os.replace(temporary, path)


def save_checkpoint(
    accelerator, output_dir, step: int, keep_last: int | None = None, trainer_state: Mapping | None = None
) -> Path:
    """Saves the accelerator's state as `<output_dir>/checkpoint-<step>`, atomically, then deletes all
    but the newest `keep_last` checkpoints. Call it on EVERY process (each one saves its RNG state).

    Args:
        accelerator: the `accelerate.Accelerator` whose prepared model / optimizer / scheduler to save.
        output_dir: the run's output folder.
        step: the optimizer step count; it names the folder.
        keep_last: how many checkpoints to keep (None keeps all).
        trainer_state: JSON-serialisable loop position (e.g. `{"step", "epoch", "batches_in_epoch"}`),
            written as `trainer_state.json`; `"step"` is filled in when missing.

    Returns the final checkpoint path.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"`step` must be a non-negative integer, got {step!r}.")
    keep_last = validate_keep_last(keep_last)
    root = Path(output_dir)
    final = checkpoint_path(root, step)
    temporary = root / f"{TEMP_PREFIX}{step}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temporary, ignore_errors=True)  # left behind by a run killed mid-save
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {"step": step, **dict(trainer_state or {})}
        _write_json_atomically(temporary / TRAINER_STATE_NAME, state)
        if final.exists():  # the same step saved again (e.g. an end-of-epoch save right after a step save)
            shutil.rmtree(final)
        os.replace(temporary, final)
        if keep_last is not None:
            rotate_checkpoints(root, keep_last)
    accelerator.wait_for_everyone()
    return final


def rotate_checkpoints(output_dir, keep_last: int) -> list[Path]:
    """Deletes all but the newest `keep_last` complete checkpoints; returns the deleted paths."""
    keep_last = validate_keep_last(keep_last)
    checkpoints = list_checkpoints(output_dir)
    stale = [path for _, path in checkpoints[: max(0, len(checkpoints) - keep_last)]]
    for path in stale:
        shutil.rmtree(path)
    return stale


def read_trainer_state(checkpoint) -> dict:
    """The `trainer_state.json` of a checkpoint folder."""
    path = Path(checkpoint) / TRAINER_STATE_NAME
    if not path.is_file():
        raise ValueError(f"{str(checkpoint)!r} is not a complete checkpoint: it has no {TRAINER_STATE_NAME}.")
    return json.loads(path.read_text())


def resolve_resume_checkpoint(output_dir, value) -> Path | None:
    """What `--resume_from_checkpoint` points at.

    - None or "": no resume (None).
    - "latest": the newest complete checkpoint under `output_dir`, or None when there is none yet (so a
      preemptible job can always pass "latest").
    - a path: that checkpoint folder; it must exist and hold `trainer_state.json` (ValueError otherwise).
    """
    if value is None or value == "":
        return None
    if value == "latest":
        return latest_checkpoint(output_dir)
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ValueError(
            f"`resume_from_checkpoint` {str(value)!r} is not a folder; pass a checkpoint folder or 'latest'."
        )
    read_trainer_state(path)
    return path


def load_checkpoint(accelerator, checkpoint) -> dict:
    """Restores model, optimizer, scheduler and RNG states from `checkpoint` (every process); returns its
    trainer state."""
    state = read_trainer_state(checkpoint)
    accelerator.load_state(str(checkpoint))
    return state
