"""Checkpoints of `MatryoshkaTrainer`: finding the one to resume from, checking its files, rotation.

A checkpoint is the folder `<output_dir>/checkpoint-<step>` that transformers' `Trainer` writes (weights as
safetensors, `optimizer.pt`, `scheduler.pt`, `rng_state[_<process>].pth`, `trainer_state.json`), except that
`MatryoshkaTrainer` writes it into `.checkpoint-<step>.tmp-save` and renames it once complete. A run killed
mid-save leaves only the temp folder, which `list_checkpoints` ignores and the next save removes. Before a
resume every file is checked (safetensors headers, torch archives' CRCs, the RNG states' content): a corrupted
file is named instead of resumed from. Every torch file is read with `weights_only=True`.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

from ..modeling.file_checks import check_safetensors_file, check_torch_state_file
from ..modeling.files import RECORD_NAME, FolderKind, check_folder_target, recorded_files, remove_saved_folder

__all__ = [
    "CHECKPOINT_PREFIX",
    "TEMP_PREFIX",
    "TRAINER_STATE_NAME",
    "CHECKPOINT_FOLDER",
    "checkpoint_path",
    "check_checkpoint_folders",
    "list_checkpoints",
    "latest_checkpoint",
    "rotate_checkpoints",
    "remove_checkpoint",
    "resolve_resume_checkpoint",
    "read_trainer_state",
    "check_checkpoint_files",
    "check_save_total_limit",
]

CHECKPOINT_PREFIX = "checkpoint-"
TEMP_PREFIX = f".{CHECKPOINT_PREFIX}"  # temporary checkpoint folders: `.checkpoint-<step>.tmp-save`
TRAINER_STATE_NAME = "trainer_state.json"
RNG_STATE_KEYS = ("python", "numpy", "cpu")  # what Trainer's `_save_rng_state` writes
_CHECKPOINT = re.compile(rf"^{re.escape(CHECKPOINT_PREFIX)}(\d+)$")
# A checkpoint is recognised by its trainer state; what a rotation may delete is what the save recorded
# (`hf_mrl.modeling.files.record_written_files`), so a user's notes.txt in a checkpoint folder is never taken for ours.
CHECKPOINT_FOLDER = FolderKind("training checkpoint", lambda folder: (folder / TRAINER_STATE_NAME).is_file())


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


def check_checkpoint_folders(output_dir) -> None:
    """Before training: every `checkpoint-<step>` folder under `output_dir` is a complete checkpoint, or empty.
    The rest of a deletion cut short (no trainer state, hf_mrl's record of its files) is removed; any other
    folder of that name (the user's) raises `ValueError` naming it and what it holds: a save at that step would
    refuse to replace it after hours of training, and a resume would pass it over without a word."""
    root = Path(output_dir)
    if not root.is_dir():
        return
    for entry in sorted(root.iterdir()):
        if not (_CHECKPOINT.match(entry.name) and entry.is_dir()) or (entry / TRAINER_STATE_NAME).is_file():
            continue
        if (entry / RECORD_NAME).is_file() and not remove_saved_folder(entry, CHECKPOINT_FOLDER):
            continue  # only hf_mrl's files were left: gone now
        check_folder_target(entry, CHECKPOINT_FOLDER, "output_dir")


def latest_checkpoint(output_dir) -> Path | None:
    """The complete checkpoint with the highest step under `output_dir`, or None."""
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


def check_save_total_limit(value) -> int | None:
    """`save_total_limit`: None (keep every checkpoint) or a positive integer."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"`save_total_limit` must be None (keep all) or a positive integer, got {value!r}.")
    return value


def rotate_checkpoints(output_dir, keep_last: int, keep=None) -> list[Path]:
    """Deletes all but the newest `keep_last` complete checkpoints, never the newest one nor `keep` (the best
    checkpoint); returns the deleted paths. Files in them that hf_mrl did not write are kept (with a warning)."""
    if check_save_total_limit(keep_last) is None:
        raise ValueError("`save_total_limit` must be a positive integer to rotate checkpoints, got None.")
    checkpoints = [path for _, path in list_checkpoints(output_dir)]
    protected = {checkpoints[-1]} if checkpoints else set()
    if keep is not None:
        protected.add(Path(keep))
    excess = len(checkpoints) - max(keep_last, len(protected & set(checkpoints)))
    stale = [path for path in checkpoints if path not in protected][: max(0, excess)]
    for path in stale:
        remove_checkpoint(path)
    return stale


def remove_checkpoint(path) -> None:
    """Deletes a checkpoint folder's files that hf_mrl wrote, the trainer state first (a deletion cut short
    leaves no folder that looks complete); files it did not write are kept, with a warning."""
    kept = remove_saved_folder(path, CHECKPOINT_FOLDER, first=TRAINER_STATE_NAME)
    if kept:
        warnings.warn(f"{path}: kept {kept} (not written by hf_mrl) while removing this older checkpoint.", stacklevel=3)


def read_trainer_state(checkpoint) -> dict:
    """The `trainer_state.json` of a checkpoint folder (Trainer's `TrainerState`, with `global_step`)."""
    path = Path(checkpoint) / TRAINER_STATE_NAME
    if not path.is_file():
        raise ValueError(f"{str(checkpoint)!r} is not a complete checkpoint: it has no {TRAINER_STATE_NAME}.")
    try:
        state = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is corrupted: it is not valid JSON ({error}).") from None
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        raise ValueError(f"{path} is corrupted: it holds no integer `global_step`.")
    return state


def resolve_resume_checkpoint(output_dir, value) -> Path | None:
    """What `--resume_from_checkpoint` points at.

    - None, "" or False: no resume (None).
    - "latest" or True: the newest complete checkpoint under `output_dir`, or None when there is none yet (so a
      preemptible job can always pass "latest").
    - a path: that checkpoint folder; it must exist and hold `trainer_state.json` (ValueError otherwise).
    """
    if value is None or value == "" or value is False:
        return None
    if value == "latest" or value is True:
        return latest_checkpoint(output_dir)
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ValueError(
            f"`resume_from_checkpoint` {str(value)!r} is not a folder; pass a checkpoint folder or 'latest'."
        )
    read_trainer_state(path)
    return path


def check_checkpoint_files(checkpoint, process_index: int = 0, world_size: int = 1) -> None:
    """Raises `ValueError` naming the file when a file of `checkpoint` is corrupted: a safetensors file with a
    bad header, a torch archive (optimizer / scheduler / RNG state) that fails its CRCs, or an RNG state of this
    process without the random states (the resumed run would no longer repeat the killed one). A missing RNG
    state (resumed on another number of processes) is a warning."""
    folder = Path(checkpoint)
    read_trainer_state(folder)
    ours = recorded_files(folder)  # a user's file in the folder is not read
    for path in [folder / name for name in ours if (folder / name).is_file()] if ours else sorted(folder.iterdir()):
        if path.suffix == ".safetensors":
            check_safetensors_file(path)
        elif path.suffix in (".pt", ".pth"):
            check_torch_state_file(path)
    rng_path = folder / ("rng_state.pth" if world_size <= 1 else f"rng_state_{process_index}.pth")
    if not rng_path.is_file():
        warnings.warn(
            f"{folder} has no {rng_path.name}: resuming without restoring the random state of process {process_index} "
            "(saved with another number of processes?); data order and dropout will differ from an uninterrupted run.",
            stacklevel=2,
        )
        return
    import torch
    from transformers.trainer_pt_utils import safe_globals

    try:
        with safe_globals():
            states = torch.load(rng_path, weights_only=True)
    except Exception as error:  # noqa: BLE001 - anything unreadable is reported with the file's name
        raise ValueError(f"{rng_path} is corrupted or unreadable (RNG state: {str(error).strip().splitlines()[0]}).") from None
    if not isinstance(states, dict) or any(key not in states for key in RNG_STATE_KEYS):
        found = sorted(states) if isinstance(states, dict) else type(states).__name__
        raise ValueError(f"{rng_path} is corrupted: an RNG state needs {list(RNG_STATE_KEYS)}, found {found}.")
