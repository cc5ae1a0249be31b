"""Resumable Accelerate checkpoints: atomic save, rotation, and finding the one to resume from.

A checkpoint is the folder `<output_dir>/checkpoint-<step>` holding what `accelerator.save_state` writes
(model weights as safetensors, optimizer / scheduler / RNG states) plus `trainer_state.json` (the step,
epoch and batches consumed, so a resumed run skips exactly what the killed run had seen).

Atomicity: every process saves into `<output_dir>/.checkpoint-<step>.tmp-save`; the main process then writes
`trainer_state.json` and renames the folder (`hf_mrl.files.move_into_place`). A run killed mid-save leaves only a
temp folder, which `list_checkpoints` ignores and the next save removes. Before resuming, every file of the
checkpoint is checked (safetensors headers, torch archives' CRCs, the RNG states' content): a corrupted file is
named instead of being resumed from.

Typical loop::

    state = {"step": 0, "epoch": 0, "batches_in_epoch": 0}
    resume = resolve_resume_checkpoint(args.output_dir, args.resume_from_checkpoint)
    if resume is not None:
        state = load_checkpoint(accelerator, resume)
    ...
    save_checkpoint(accelerator, args.output_dir, state["step"], keep_last=3, trainer_state=state)
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path

from ..files import (
    FolderKind,
    check_folder_target,
    check_safetensors_file,
    check_torch_state_file,
    describe_os_error,
    move_into_place,
    remove_saved_folder,
    remove_stale_temp_folders,
    staging_folder,
    write_file_atomically,
)

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
    "check_checkpoint_files",
    "CHECKPOINT_FOLDER",
    "parse_checkpointing_steps",
    "validate_keep_last",
]

CHECKPOINT_PREFIX = "checkpoint-"
TEMP_PREFIX = f".{CHECKPOINT_PREFIX}"  # temporary checkpoint folders: `.checkpoint-<step>.tmp-save`
TRAINER_STATE_NAME = "trainer_state.json"
RNG_STATE_KEYS = ("random_state", "numpy_random_seed", "torch_manual_seed")
_CHECKPOINT = re.compile(rf"^{re.escape(CHECKPOINT_PREFIX)}(\d+)$")
_STAGING_TOKEN = "save"  # one name every process can compute: they all save into the same folder
_OLDER_TEMP_PREFIX = ".tmp-checkpoint-"  # the temp folders of earlier versions, removed like ours
# What `accelerator.save_state` and `save_checkpoint` write into a checkpoint folder.
_CHECKPOINT_FILE_PATTERNS = ("*.safetensors", "*.bin", "*.pkl", "*.pt", "custom_checkpoint_*", TRAINER_STATE_NAME)

CHECKPOINT_FOLDER = FolderKind(
    "training checkpoint",
    lambda folder: (folder / TRAINER_STATE_NAME).is_file(),
    lambda folder, name: any(fnmatch.fnmatch(name, pattern) for pattern in _CHECKPOINT_FILE_PATTERNS),
)


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
    temporary = final.parent / f".{final.name}.tmp-{_STAGING_TOKEN}"
    if accelerator.is_main_process:
        check_folder_target(final, CHECKPOINT_FOLDER, "output_dir")
        remove_stale_temp_folders(final, CHECKPOINT_FOLDER, name_pattern=f"{CHECKPOINT_PREFIX}*")
        for older in root.glob(f"{_OLDER_TEMP_PREFIX}*"):
            shutil.rmtree(older, ignore_errors=True)
        staging_folder(final, _STAGING_TOKEN)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(temporary))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = {"step": step, **dict(trainer_state or {})}
            write_file_atomically(
                temporary / TRAINER_STATE_NAME, lambda file: file.write_text(json.dumps(state, indent=2, sort_keys=True))
            )
            # the same step saved again (e.g. an end-of-epoch save right after a step save) replaces it
            move_into_place(temporary, final, CHECKPOINT_FOLDER)
    except BaseException as error:
        if accelerator.is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)
        plain = describe_os_error(error, final)
        if plain is not None:
            raise plain from error
        raise
    if accelerator.is_main_process and keep_last is not None:
        rotate_checkpoints(root, keep_last)
    accelerator.wait_for_everyone()
    return final


def rotate_checkpoints(output_dir, keep_last: int) -> list[Path]:
    """Deletes all but the newest `keep_last` complete checkpoints; returns the deleted paths. Files in them that
    hf_mrl did not write are kept (with a warning)."""
    keep_last = validate_keep_last(keep_last)
    checkpoints = list_checkpoints(output_dir)
    stale = [path for _, path in checkpoints[: max(0, len(checkpoints) - keep_last)]]
    for path in stale:
        kept = remove_saved_folder(path, CHECKPOINT_FOLDER)
        if kept:
            warnings.warn(f"{path}: kept {kept} (not written by hf_mrl) while removing this older checkpoint.", stacklevel=2)
    return stale


def read_trainer_state(checkpoint) -> dict:
    """The `trainer_state.json` of a checkpoint folder."""
    path = Path(checkpoint) / TRAINER_STATE_NAME
    if not path.is_file():
        raise ValueError(f"{str(checkpoint)!r} is not a complete checkpoint: it has no {TRAINER_STATE_NAME}.")
    try:
        state = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is corrupted: it is not valid JSON ({error}).") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise ValueError(f"{path} is corrupted: it holds no integer `step`.")
    return state


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


def check_checkpoint_files(checkpoint, process_index: int = 0) -> None:
    """Raises `ValueError` naming the file when a file of `checkpoint` is corrupted: a safetensors file with a
    bad header, a torch archive (optimizer / scheduler / RNG state) that fails its CRCs, or an RNG state of
    process `process_index` without the random states (Accelerate would skip it without a word, and the resumed
    run would no longer repeat the killed one). A missing RNG state (resumed on more processes) is a warning."""
    folder = Path(checkpoint)
    for path in sorted(folder.iterdir()):
        if path.suffix == ".safetensors":
            check_safetensors_file(path)
        elif path.suffix in (".bin", ".pkl", ".pt"):
            check_torch_state_file(path)
    rng_path = folder / f"random_states_{process_index}.pkl"
    if not rng_path.is_file():
        warnings.warn(
            f"{folder} has no {rng_path.name}: resuming without restoring the random state of process {process_index} "
            "(saved with fewer processes?); data order and dropout will differ from an uninterrupted run.",
            stacklevel=2,
        )
        return
    from accelerate.utils import load

    try:
        states = load(rng_path)
    except Exception as error:  # noqa: BLE001 - anything unreadable is reported with the file's name
        raise ValueError(f"{rng_path} is corrupted or unreadable (RNG state: {str(error).strip().splitlines()[0]}).") from None
    if not isinstance(states, dict) or any(key not in states for key in RNG_STATE_KEYS):
        found = sorted(states) if isinstance(states, dict) else type(states).__name__
        raise ValueError(f"{rng_path} is corrupted: an RNG state needs {list(RNG_STATE_KEYS)}, found {found}.")


def load_checkpoint(accelerator, checkpoint) -> dict:
    """Restores model, optimizer, scheduler and RNG states from `checkpoint` (every process); returns its
    trainer state. Every file is checked first (`check_checkpoint_files`)."""
    state = read_trainer_state(checkpoint)
    check_checkpoint_files(checkpoint, accelerator.process_index)
    try:
        accelerator.load_state(str(checkpoint))
    except (RuntimeError, ValueError, KeyError, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"cannot resume from {checkpoint}: {first}") from error
    return state
