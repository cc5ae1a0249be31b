"""Files and folders on disk: saves that never lose a user's files, errors that name the path.

- `write_folder_atomically(path, write, kind)`: every folder hf_mrl saves (models, indexes, checkpoints,
  exports) is written into a temporary sibling, then renamed into place. An existing folder is replaced only
  when it holds an artefact of the same `FolderKind` (recognised from its config / manifest); entries of it
  that the kind does not own (a user's `data.csv`) are carried over into the new folder, never deleted.
  Temporary siblings left by a killed save are removed by the next save to the same place.
- `describe_os_error`: "disk full", "permission denied", ... with the path, instead of library internals.
- `check_local_path`: "folder not found: PATH" for a local-looking path, before any Hub lookup.
- `check_safetensors_file` / `check_torch_state_file`: a corrupted weights or state file is named as such.

Imports only the standard library at module level: the modeling files import it, and they travel as
trust_remote_code files to machines without hf_mrl.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "FolderKind",
    "MODEL_FOLDER",
    "check_folder_target",
    "check_local_path",
    "check_output_folder",
    "check_safetensors_file",
    "check_torch_state_file",
    "describe_os_error",
    "looks_like_local_path",
    "remove_saved_folder",
    "remove_stale_temp_folders",
    "staging_folder",
    "move_into_place",
    "write_file_atomically",
    "write_folder_atomically",
]

# `.<name>.tmp-<pid>-<hex>` (being written), `.<name>.old-<pid>-<hex>` (a replaced folder, whose files that hf_mrl
# did not write are still to be moved into the new one) and `.<name>.del-<pid>-<hex>` (only ours left: deleted).
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<stage>tmp|old|del)-(?P<token>[^/]+)$")
_OWNER_TOKEN = re.compile(r"^(?P<pid>\d+)-[0-9a-f]+$")


@dataclass(frozen=True)
class FolderKind:
    """A kind of folder hf_mrl writes.

    name: what to call it in messages ("hf_mrl model", "MatryoshkaIndex", ...).
    recognise: whether an existing folder holds one (read from its config / manifest).
    owned: whether an entry name of such a folder was written by hf_mrl (replaced or dropped on a re-save);
        entries it does not own are carried over.
    """

    name: str
    recognise: Callable[[Path], bool]
    owned: Callable[[Path, str], bool]


def read_json_object(path: Path) -> dict | None:
    """The JSON object in `path`, or None when it is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


# -- the model folder kind ------------------------------------------------------------------------------------

_MODEL_TYPES = ("matryoshka", "matryoshka_dual_encoder")
# What a re-save drops when it does not write it again: weights and configs of the previous model (an older
# shard would be read with the new index), and the sentence-transformers layout of a text model. Everything
# else the folder holds (tokenizer files a user saved beside the model, README.md, notes) is carried over.
_MODEL_FILE_PATTERNS = (
    "config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin",
    "modules.json", "config_sentence_transformers.json", "sentence_bert_config.json", "[0-9]_*",
)


def _is_model_folder(folder: Path) -> bool:
    config = read_json_object(folder / "config.json")
    if config is None:
        return False
    if config.get("model_type") in _MODEL_TYPES:
        return True
    # a sentence-transformers export of an hf_mrl model: its encoder config carries the nesting dims
    return (folder / "modules.json").is_file() and "matryoshka_dimensions" in config


MODEL_FOLDER = FolderKind(
    "hf_mrl model",
    _is_model_folder,
    lambda folder, name: any(fnmatch.fnmatch(name, pattern) for pattern in _MODEL_FILE_PATTERNS),
)


# -- checks ---------------------------------------------------------------------------------------------------


def _as_path(path, argument: str) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValueError(f"`{argument}` must be a folder path, got {path!r}.")
    return Path(path).expanduser()


def _listing(folder: Path, limit: int = 5) -> str:
    names = sorted(entry.name for entry in folder.iterdir())
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_output_folder(path, argument: str = "output_dir") -> Path:
    """`path` as a folder that may be created or written into: it must not be an existing file."""
    path = _as_path(path, argument)
    if path.exists() and not path.is_dir():
        raise ValueError(f"`{argument}` {str(path)!r} is a file, not a folder; give a folder path.")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"`{argument}` {str(path)!r} cannot be created: {str(parent)!r} is a file.")
            break
    return path


def check_folder_target(path, kind: FolderKind, argument: str = "path") -> Path:
    """`path` as a folder a save of `kind` may write: missing, empty, or holding a saved `kind` (which the save
    replaces). Anything else raises `ValueError` before any work: hf_mrl never replaces a folder it did not write."""
    path = check_output_folder(path, argument)
    if path.is_dir() and any(path.iterdir()) and not kind.recognise(path):
        raise ValueError(
            f"`{argument}` {str(path)!r} is not a saved {kind.name} folder (it holds {_listing(path)}); refusing to "
            f"replace it: hf_mrl replaces only folders it wrote. Choose a new or empty folder, or move those files."
        )
    return path


# -- temporary folders ----------------------------------------------------------------------------------------


def _temp_sibling(path: Path, stage: str, token: str | None = None) -> Path:
    token = token or f"{os.getpid()}-{secrets.token_hex(4)}"
    return path.parent / f".{path.name}.{stage}-{token}"


def staging_folder(path, token: str | None = None) -> Path:
    """A new empty temporary folder beside `path` (`.<name>.tmp-<token>`; default token: this process id and
    random hex, which lets a later save tell a live writer's folder from a killed one's)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _temp_sibling(path, "tmp", token)
    staging.mkdir()
    return staging


def _writer_alive(token: str) -> bool:
    match = _OWNER_TOKEN.match(token)
    if match is None:
        return False  # a fixed token (checkpoints) or an older version's name: nobody can still be writing it
    pid = int(match["pid"])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def remove_stale_temp_folders(path, kind: FolderKind, name_pattern: str | None = None) -> list[Path]:
    """Removes the temporary siblings of `path` (or of every sibling whose name matches `name_pattern`) that a
    killed save left behind; returns them. A replaced folder caught before its removal gives back the entries
    hf_mrl did not write (to `path`, or whole, when `path` itself is missing)."""
    path = Path(path)
    pattern = name_pattern or path.name
    removed = []
    if not path.parent.is_dir():
        return removed
    for entry in sorted(path.parent.iterdir()):
        match = _TEMP_NAME.match(entry.name)
        if not (match and entry.is_dir() and fnmatch.fnmatchcase(match["name"], pattern)):
            continue
        if _writer_alive(match["token"]):
            continue
        target = entry.parent / match["name"]
        if match["stage"] == "old":
            if not target.exists() and kind.recognise(entry):
                os.replace(entry, target)  # killed between the two renames: the previous folder comes back
                continue
            _carry_over(entry, target, kind)
            if any(not kind.owned(entry, item.name) for item in entry.iterdir()):
                continue  # never delete what hf_mrl did not write
        _discard(entry, entry.parent / match["name"])
        removed.append(entry)
    return removed


def _discard(folder: Path, path: Path) -> None:
    """Deletes a temporary or retired folder of `path`, renamed to `.<name>.del-...` first: a kill during the
    deletion leaves a folder that the next save deletes without looking inside."""
    doomed = folder if _TEMP_NAME.match(folder.name)["stage"] == "del" else _temp_sibling(path, "del")
    if doomed != folder:
        os.replace(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _carry_over(old: Path, new: Path, kind: FolderKind) -> None:
    """Moves the entries of `old` that `kind` does not own, and that `new` does not have, into `new`."""
    if not (old.is_dir() and new.is_dir()):
        return
    for entry in old.iterdir():
        if not kind.owned(old, entry.name) and not (new / entry.name).exists():
            os.replace(entry, new / entry.name)


def move_into_place(staging: Path, path: Path, kind: FolderKind) -> None:
    """Renames the finished `staging` folder to `path`. A `kind` folder already there is replaced, keeping the
    entries hf_mrl did not write (moved into the new folder)."""
    if not path.exists():
        os.replace(staging, path)
        return
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()
        os.replace(staging, path)
        return
    retired = _temp_sibling(path, "old")
    os.replace(path, retired)
    os.replace(staging, path)
    _carry_over(retired, path, kind)
    _discard(retired, path)


def remove_saved_folder(path, kind: FolderKind) -> list[str]:
    """Deletes a saved `kind` folder (e.g. a rotated-out checkpoint): the entries the kind owns, then the folder
    once it is empty. Returns the names of the entries kept (hf_mrl did not write them), leaving the folder."""
    path = Path(path)
    kept = []
    for entry in sorted(path.iterdir()):
        if not kind.owned(path, entry.name):
            kept.append(entry.name)
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    if not kept:
        path.rmdir()
    return kept


def write_folder_atomically(path, write: Callable[[Path], None], kind: FolderKind = MODEL_FOLDER,
                            argument: str = "path") -> Path:
    """Calls `write(staging)` on a new temporary folder beside `path`, then renames it to `path`.

    Checked first: `path` is missing, empty or a saved `kind` folder (else `ValueError`, nothing written).
    Temporary folders left beside `path` by a killed save are removed. A replaced folder keeps the entries
    `kind` does not own. On any error the staging folder is removed and `path` is untouched; OS errors come
    back in plain words with the path (see `describe_os_error`)."""
    path = check_folder_target(path, kind, argument)
    remove_stale_temp_folders(path, kind)
    staging = None
    try:
        staging = staging_folder(path)
        write(staging)
        move_into_place(staging, path, kind)
    except BaseException as error:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        plain = describe_os_error(error, path)
        if plain is not None:
            raise plain from error
        raise
    return path


def write_file_atomically(path, write: Callable[[Path], None]) -> Path:
    """Calls `write(temporary)` on a temporary file beside `path`, then renames it to `path`: the file is never
    half-written. OS errors come back in plain words with the path."""
    path = Path(path)
    temporary = path.parent / f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(temporary)
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        plain = describe_os_error(error, path)
        if plain is not None:
            raise plain from error
        raise
    return path


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
    """`FileNotFoundError("folder not found: PATH")` when `name_or_path` looks like a local path (see
    `looks_like_local_path`) and does not exist, so a typo is not reported as a bad Hub id or a failed
    connection. Hub ids and existing paths pass."""
    if looks_like_local_path(name_or_path) and not Path(os.fspath(name_or_path)).expanduser().exists():
        raise FileNotFoundError(
            f"folder not found: {os.fspath(name_or_path)} (`{argument}` is a local path that does not exist; "
            "the Hugging Face Hub was not asked)"
        )


# -- corrupted files ------------------------------------------------------------------------------------------


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_safetensors_file(path) -> None:
    """`ValueError` naming `path` when it is not a readable safetensors file (bad or truncated header)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error types
        raise ValueError(f"{path} is corrupted or unreadable (not a valid safetensors file: {_first_line(error)}).") from None


def check_torch_state_file(path) -> None:
    """`ValueError` naming `path` when a `torch.save` file (optimizer / scheduler / RNG state) is not an intact
    zip archive; every member's CRC is checked, nothing is unpickled."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ValueError(f"{path} is corrupted or unreadable (not an intact torch.save archive: {_first_line(error)}).") from None
    if broken is not None:
        raise ValueError(f"{path} is corrupted (its member {broken!r} fails its CRC check).")


def check_weights_folder(folder) -> None:
    """`check_safetensors_file` for every `*.safetensors` file of a local model folder (a Hub id passes)."""
    if not isinstance(folder, (str, os.PathLike)):
        return
    folder = Path(os.fspath(folder)).expanduser()
    if folder.is_dir():
        for path in sorted(folder.glob("*.safetensors")):
            check_safetensors_file(path)


# -- model folders --------------------------------------------------------------------------------------------

# `save_pretrained` keyword arguments that belong to its `push_to_hub` step.
_HUB_KWARGS = ("repo_id", "commit_message", "private", "token", "create_pr", "revision", "commit_description", "tags")


def save_pretrained_atomically(model, save, save_directory, *args, **kwargs) -> None:
    """`model.save_pretrained(save_directory, ...)` through `write_folder_atomically`: `save(folder, *args,
    **kwargs)` writes into a temporary folder that is then renamed to `save_directory`, which may only be new,
    empty or an hf_mrl model folder. Other processes than the main one write nothing. `push_to_hub=True`
    pushes after the local save, as transformers does."""
    if not kwargs.get("is_main_process", True):
        return
    push = kwargs.pop("push_to_hub", False)
    hub_kwargs = {key: kwargs.pop(key) for key in _HUB_KWARGS if key in kwargs}
    folder = Path(os.fspath(save_directory))
    if _TEMP_NAME.match(folder.name) and folder.is_dir() and not any(folder.iterdir()):
        save(folder, *args, **kwargs)  # the staging folder of an outer atomic save (`save_with_card`): write in it
    else:
        write_folder_atomically(folder, lambda staging: save(staging, *args, **kwargs), MODEL_FOLDER, "save_directory")
    if push:
        repo_id = hub_kwargs.pop("repo_id", Path(os.fspath(save_directory)).name)
        model.push_to_hub(repo_id, **hub_kwargs)
