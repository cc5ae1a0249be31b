"""Checks on paths and files, with errors in plain words: "disk full" / "permission denied" with the path
(`describe_os_error`), "folder not found" before any Hub lookup (`check_local_path`), a corrupted weights or
state file named as such (`check_safetensors_file`, `check_torch_state_file`, `check_weights_folder`).

Imports only the standard library at module level: the modeling files import it, and they travel as
trust_remote_code files to machines without hf_mrl.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

__all__ = [
    "check_local_path",
    "check_safetensors_file",
    "check_torch_state_file",
    "check_weights_folder",
    "describe_os_error",
    "first_line",
    "looks_like_local_path",
]


# -- plain error messages -------------------------------------------------------------------------------------

_DISK_FULL_TEXT = re.compile(r"no space left|storagefull|os error 28|code: 28|\d+ requested and \d+ written", re.I)


def describe_os_error(error: BaseException, path) -> OSError | None:
    """An `OSError` saying in plain words what went wrong writing `path` (disk full, permission denied,
    read-only file system), or None for other errors. Recognises the errors that libraries wrap (safetensors'
    "StorageFull", numpy's "N requested and M written")."""
    code = getattr(error, "errno", None)
    text = str(error)
    if code in (errno.ENOSPC, errno.EDQUOT) or _DISK_FULL_TEXT.search(text):
        return OSError(errno.ENOSPC, f"disk full: no space left on the device while writing {path}; "
                                     "free some space and save again (what was there before is unchanged)")
    if code in (errno.EACCES, errno.EPERM) or "PermissionDenied" in text:
        return PermissionError(code or errno.EACCES, f"permission denied: cannot write {path}; choose a folder you "
                                                     "may write to")
    if code == errno.EROFS:
        return OSError(errno.EROFS, f"read-only file system: cannot write {path}")
    return None


# -- local paths ----------------------------------------------------------------------------------------------

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def looks_like_local_path(name) -> bool:
    """Whether `name` can only mean a local path: a path object, or a string that starts with ./, ../, / or ~,
    holds more path separators than a Hub id ("org/name"), or is a Windows path (C:\\..., backslashes)."""
    if isinstance(name, os.PathLike):
        return True
    if not isinstance(name, str) or not name:
        return False
    if name in (".", "..") or name.startswith(("./", "../", "/", "~", ".\\", "..\\")):
        return True
    if "\\" in name or re.match(r"^[A-Za-z]:", name):
        return True
    separators = [sep for sep in (os.sep, os.altsep) if sep]
    return any(sep in name for sep in separators) and not _HUB_ID.match(name)


def check_local_path(name_or_path, argument: str) -> None:
    """`FileNotFoundError("folder not found: PATH")` for a missing local path, before any Hub lookup: one that can
    only be local (`looks_like_local_path`), and one shaped like a Hub id ("runs/model") whose first part is a
    folder here (the user meant a folder in it, not a Hub organisation). Hub ids and existing paths pass."""
    if looks_like_local_path(name_or_path) and not Path(os.fspath(name_or_path)).expanduser().exists():
        raise FileNotFoundError(
            f"folder not found: {os.fspath(name_or_path)} (`{argument}` is a local path that does not exist; "
            "the Hugging Face Hub was not asked)"
        )
    if not isinstance(name_or_path, str) or "/" not in name_or_path or Path(name_or_path).exists():
        return
    parent, rest = name_or_path.split("/", 1)
    if Path(parent).is_dir():
        raise FileNotFoundError(
            f"folder not found: {name_or_path} (`{argument}`: the folder {parent!r} exists here but holds no "
            f"{rest!r}; the Hugging Face Hub was not asked)"
        )


# -- corrupted files ------------------------------------------------------------------------------------------


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when empty), for one-line reports."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_safetensors_file(path) -> None:
    """`ValueError` naming `path` when it is not a readable safetensors file (bad or truncated header)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
        raise ValueError(f"{path} is corrupted or unreadable (not a valid safetensors file: {first_line(error)}).") from None


def check_torch_state_file(path) -> None:
    """`ValueError` naming `path` when a `torch.save` file (optimizer / scheduler / RNG state) is not an intact
    zip archive; every member's CRC is checked, nothing is unpickled."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ValueError(f"{path} is corrupted or unreadable (not an intact torch.save archive: {first_line(error)}).") from None
    if broken is not None:
        raise ValueError(f"{path} is corrupted (its member {broken!r} fails its CRC check).")


def check_weights_folder(folder) -> None:
    """`check_safetensors_file` for the weights a local model folder loads (`model.safetensors`, or the shards
    its `model.safetensors.index.json` lists, then the encoder's under `0_Transformer/` when the root keeps it
    there; other files are not read). A Hub id passes."""
    from .saved_weights import saved_weight_files, weight_files

    if not isinstance(folder, (str, os.PathLike)):
        return
    folder = Path(os.fspath(folder)).expanduser()
    if not folder.is_dir():
        return
    root = weight_files(folder)
    for path in root:
        if path.is_file():
            check_safetensors_file(path)
    for path in saved_weight_files(folder)[len(root):]:  # the encoder's, kept apart: the root's metadata says so
        if path.is_file():
            check_safetensors_file(path)
