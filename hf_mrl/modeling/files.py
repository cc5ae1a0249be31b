"""Folders hf_mrl saves (models, indexes, checkpoints, exports), written so that no user file is ever lost.

- A save writes into a temporary sibling, records what it wrote (`.hf_mrl_written.json`: every file's sha256
  and size), then swaps the folder into place in one atomic rename (`renameat2(RENAME_EXCHANGE)` on
  Linux; two renames elsewhere): the folder is never missing nor half-written, whenever the process dies.
- A save replaces only the files that the previous save recorded and that are unchanged since. Every other
  file (never recorded, or changed since: the user's now) stays at its path in the new folder, hard-linked (or
  copied) in before the swap; a save that would write a file of the same name is refused and changes nothing.
- A symlinked target is written through: the link stays a link, its target folder is replaced.
- Temporary siblings left by a killed save (`.<name>.tmp|old|del-<pid>-<hex>`) are removed by the next save to
  that place; any user file found only there is moved back first. `temporary_folder` does the same for the
  scratch folders hf_mrl makes in the system temp dir.

Imports only the standard library at module level: the modeling files import it, and they travel as
trust_remote_code files to machines without hf_mrl.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .file_checks import describe_os_error, looks_like_local_path

__all__ = [
    "FolderKind",
    "MODEL_FOLDER",
    "RECORD_NAME",
    "check_folder_target",
    "check_output_folder",
    "move_into_place",
    "new_temporary_folder",
    "not_written_by_hf_mrl",
    "record_written_files",
    "remove_dead_scratch_folders",
    "remove_debris",
    "recorded_files",
    "remove_saved_folder",
    "remove_stale_temp_folders",
    "sha256_of_file",
    "staging_folder",
    "temporary_folder",
    "write_file_atomically",
    "write_folder_atomically",
]

RECORD_NAME = ".hf_mrl_written.json"
_RECORD_FORMAT = "hf_mrl.written_files"
# `.<name>.tmp-<token>` (being written), `.<name>.old-<token>` (a replaced folder, where the atomic swap is not
# available) and `.<name>.del-<token>` (being deleted); the token is `<pid>-<8 hex digits>`, or `save` for the
# trainer's checkpoint staging.
# Only these tokens are ours: a user's `.model.old-v1` backup is never taken for a killed save's folder.
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<stage>tmp|old|del)-(?P<token>\d+-[0-9a-f]{8}|save)$")
_OWNER_TOKEN = re.compile(r"^(?P<pid>\d+)-[0-9a-f]{8}$")


@dataclass(frozen=True)
class FolderKind:
    """A kind of folder hf_mrl writes.

    name: what to call it in messages ("hf_mrl model", "MatryoshkaIndex", ...).
    recognise: whether an existing folder holds one (read from its config / manifest); a save replaces only a
        folder of its own kind (or an empty one).
    """

    name: str
    recognise: Callable[[Path], bool]


def read_json_object(path: Path) -> dict | None:
    """The JSON object in `path`, or None when it is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _is_model_folder(folder: Path) -> bool:
    config = read_json_object(folder / "config.json")
    if config is None:
        return False
    if config.get("model_type") in ("matryoshka", "matryoshka_dual_encoder"):
        return True
    # a sentence-transformers export of an hf_mrl model: its encoder config carries the nesting dims
    return (folder / "modules.json").is_file() and "matryoshka_dimensions" in config


MODEL_FOLDER = FolderKind("hf_mrl model", _is_model_folder)


# -- checks ---------------------------------------------------------------------------------------------------


def _as_path(path, argument: str) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValueError(f"`{argument}` must be a folder path, got {path!r}.")
    return Path(path).expanduser()


def _listing(names: list[str], limit: int = 5) -> str:
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
        names = sorted(entry.name for entry in path.iterdir())
        raise ValueError(
            f"`{argument}` {str(path)!r} is not a saved {kind.name} folder (it holds {_listing(names)}); refusing to "
            f"replace it: hf_mrl replaces only folders it wrote. Choose a new or empty folder, or move those files."
        )
    return path


def _write_through(path: Path) -> Path:
    """The folder a save to `path` replaces: a symlink's target (the link itself stays)."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


# -- the record of what a save wrote --------------------------------------------------------------------------


def sha256_of_file(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**22), b""):
            digest.update(block)
    return digest.hexdigest()


def _entries(folder: Path) -> list[str]:
    """Relative paths of the files, symlinks and empty folders under `folder` (links are not followed)."""
    found = []
    for root, dirs, files in os.walk(folder):
        base = Path(root)
        links = [name for name in dirs if (base / name).is_symlink()]
        found += [(base / name).relative_to(folder).as_posix() for name in files + links]
        if base != folder and not dirs and not files:
            found.append(base.relative_to(folder).as_posix())
    return sorted(found)


def record_written_files(folder, names: list[str] | None = None) -> None:
    """Writes `folder/.hf_mrl_written.json`: the sha256 and size of every file now in `folder`; with
    `names` (relative paths just written into a saved folder), adds those to the folder's record instead."""
    folder = Path(folder)
    existing = read_json_object(folder / RECORD_NAME) if os.path.lexists(folder / RECORD_NAME) else {}
    if existing is None or (existing and existing.get("format") != _RECORD_FORMAT):
        raise FileExistsError(f"{folder / RECORD_NAME} is not hf_mrl's record of its files; move it, so hf_mrl can "
                              "keep its record there.")
    files = _read_record(folder) if names is not None else {}
    for name in _entries(folder) if names is None else [Path(name).as_posix() for name in names]:
        path = folder / name
        if name != RECORD_NAME and path.is_file() and not path.is_symlink():
            stat = path.stat()
            files[name] = {"sha256": sha256_of_file(path), "bytes": stat.st_size}
    text = json.dumps({"format": _RECORD_FORMAT, "files": files}, indent=1, sort_keys=True) + "\n"
    temporary = folder / f".{RECORD_NAME}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, folder / RECORD_NAME)


def _read_record(folder: Path) -> dict:
    record = read_json_object(folder / RECORD_NAME)
    files = record.get("files") if record and record.get("format") == _RECORD_FORMAT else None
    return files if isinstance(files, dict) else {}


def recorded_files(folder) -> list[str]:
    """The relative paths that hf_mrl recorded writing in `folder` (empty when it has no record)."""
    return sorted(_read_record(Path(folder)))


def _unchanged(path: Path, entry) -> bool:
    if not isinstance(entry, dict) or path.is_symlink() or not path.is_file():
        return False
    # the content decides (a copy that keeps the mtime, `cp -p` / `rsync -a`, may change a file of the same size)
    return path.stat().st_size == entry.get("bytes") and sha256_of_file(path) == entry.get("sha256")


def not_written_by_hf_mrl(folder) -> tuple[list[str], list[str]]:
    """The user's entries of a saved folder, as relative paths: (never recorded by hf_mrl, recorded but changed
    since). A folder without a record (an older version's save) is all the user's."""
    folder = Path(folder)
    record = _read_record(folder)
    foreign, changed = [], []
    for name in _entries(folder):
        if name == RECORD_NAME:
            continue
        if name not in record:
            foreign.append(name)
        elif not _unchanged(folder / name, record[name]):
            changed.append(name)
    return foreign, changed


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


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _writer_alive(token: str) -> bool:
    match = _OWNER_TOKEN.match(token)
    # a fixed token (checkpoints) or an older version's name: its writer checks before writing again
    return match is not None and _pid_alive(int(match["pid"]))


def _same_file(first: Path, second: Path) -> bool:
    try:
        if os.path.samefile(first, second):
            return True
        return (first.is_file() and second.is_file() and first.stat().st_size == second.stat().st_size
                and sha256_of_file(first) == sha256_of_file(second))
    except OSError:
        return False


def _stranded_user_files(temporary: Path, target: Path, stage: str) -> list[str]:
    """Entries of a killed save's temporary folder that may be the user's and exist nowhere else. A staging
    folder with no record is a save cut short (only ours). Otherwise the user's files have twins at `target`
    (they were linked there before the swap); a file with no twin that the record does not vouch for is kept."""
    record = _read_record(temporary)
    if not record and stage == "tmp":
        return []
    return [
        name for name in _entries(temporary)
        if name != RECORD_NAME and not (temporary / name).is_dir()
        and not _unchanged(temporary / name, record.get(name)) and not _same_file(temporary / name, target / name)
    ]


def remove_stale_temp_folders(path, kind: FolderKind | None = None, name_pattern: str | None = None) -> list[Path]:
    """Removes the temporary siblings of `path` (or of every sibling whose name matches `name_pattern`) that a
    killed save left behind; returns them. A replaced folder caught between two renames comes back to its name;
    a user's file found only in a temporary folder is moved back to its place (or the folder is kept, with a
    warning, when that place is taken)."""
    path = Path(path)
    pattern = name_pattern or path.name
    removed = []
    if not path.parent.is_dir():
        return removed
    for entry in sorted(path.parent.iterdir()):
        match = _TEMP_NAME.match(entry.name)
        if not (match and entry.is_dir() and not entry.is_symlink() and fnmatch.fnmatchcase(match["name"], pattern)):
            continue
        if _writer_alive(match["token"]):
            continue
        target = entry.parent / match["name"]
        if match["stage"] == "old" and not target.exists():
            os.replace(entry, target)  # killed between the two renames: the previous folder comes back
            continue
        if match["stage"] != "del":
            stranded = _stranded_user_files(entry, target, match["stage"])
            for name in list(stranded):
                if target.is_dir() and not os.path.lexists(target / name):
                    (target / name).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(entry / name, target / name)
                    stranded.remove(name)
            if stranded:
                warnings.warn(f"{entry}: kept this folder of an interrupted save: it holds {_listing(stranded)}, not "
                              f"written by hf_mrl, whose place in {target} is taken; move them yourself.", stacklevel=2)
                continue
        _discard(entry, target)
        removed.append(entry)
    return removed


def _discard(folder: Path, path: Path) -> None:
    """Deletes a temporary or retired folder of `path`, renamed to `.<name>.del-...` first: a kill during the
    deletion leaves a folder that the next save deletes without looking inside."""
    match = _TEMP_NAME.match(folder.name)
    doomed = folder if match and match["stage"] == "del" else _temp_sibling(path, "del")
    if doomed != folder:
        os.replace(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


_SCRATCH_NAME = re.compile(r"^hf_mrl[a-z_-]*?[-_](?P<pid>\d+)-[a-z0-9_]+$")


def remove_dead_scratch_folders() -> None:
    """Deletes the scratch folders (`hf_mrl*<pid>-<random>` in the system temp dir) of processes that are gone:
    a kill skips every finaliser."""
    for entry in Path(tempfile.gettempdir()).glob("hf_mrl*"):
        match = _SCRATCH_NAME.match(entry.name)
        if match and not _pid_alive(int(match["pid"])) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def new_temporary_folder(prefix: str) -> Path:
    """A new scratch folder in the system temp dir, `<prefix><pid>-<random>` (`prefix` starts with "hf_mrl" and
    ends with "-" or "_"), for the caller to delete. Those of killed processes are deleted first."""
    remove_dead_scratch_folders()
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))


def remove_debris(path, kind: FolderKind | None = None) -> None:
    """What a load calls: the hidden folders a killed save left beside `path` and the scratch folders of dead
    processes are removed (see `remove_stale_temp_folders`); a folder that cannot be written is left as it is."""
    if not (isinstance(path, (str, os.PathLike)) and looks_like_local_path(path) or Path(os.fspath(path)).exists()):
        return  # a Hub id
    try:
        path = Path(os.fspath(path)).expanduser()
        remove_stale_temp_folders(_write_through(path), kind)  # also brings back a folder caught between renames
        remove_dead_scratch_folders()
    except OSError:
        pass


@contextlib.contextmanager
def temporary_folder(prefix: str) -> Iterator[Path]:
    """`new_temporary_folder(prefix)`, deleted on exit."""
    folder = new_temporary_folder(prefix)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- replacing a folder ---------------------------------------------------------------------------------------

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(first: Path, second: Path) -> bool:
    """Swaps two paths in one atomic rename (Linux `renameat2(RENAME_EXCHANGE)`); False where not available."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # a file system without the swap (e.g. some network mounts)
    raise OSError(code, os.strerror(code), str(second))


def _link_or_copy(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir() and not source.is_symlink():
        destination.mkdir(exist_ok=True)
        return
    try:
        os.link(source, destination, follow_symlinks=False)
    except OSError:
        if source.is_symlink():
            os.symlink(os.readlink(source), destination)
        else:
            shutil.copy2(source, destination)


def move_into_place(staging, path, kind: FolderKind) -> None:
    """Puts the finished `staging` folder at `path` (a symlink's target), recording what it holds. A folder
    already there is replaced in one atomic swap, after the files hf_mrl did not write (or that changed since)
    were linked into the new folder; if the new folder writes one of their names, `FileExistsError` and nothing
    changes."""
    staging, path = Path(staging), _write_through(Path(path))
    if not (staging / RECORD_NAME).exists():
        record_written_files(staging)
    if not path.exists():
        os.replace(staging, path)
        return
    foreign, changed = not_written_by_hf_mrl(path)
    kept = foreign + changed
    in_the_way = [name for name in kept if os.path.lexists(staging / name) and not (staging / name).is_dir()]
    if in_the_way:
        raise FileExistsError(
            f"{path}: {_listing(in_the_way)} {'is' if len(in_the_way) == 1 else 'are'} not hf_mrl's (not written by "
            f"it, or changed since it wrote them), and this save of the {kind.name} writes the same name; nothing "
            "was changed. Move them out of the folder, or save to another folder."
        )
    for name in kept:
        _link_or_copy(path / name, staging / name)
    if changed:
        warnings.warn(f"{path}: kept {_listing(changed)}: hf_mrl wrote them, but they changed since, so they are "
                      "yours now.", stacklevel=3)
    if _exchange(staging, path):
        _discard(staging, path)  # the staging name now holds the previous folder
        return
    retired = _temp_sibling(path, "old")
    os.replace(path, retired)
    os.replace(staging, path)
    _discard(retired, path)


def remove_saved_folder(path, kind: FolderKind, first: str | None = None) -> list[str]:
    """Deletes a saved `kind` folder (e.g. a rotated-out checkpoint): the files hf_mrl recorded and that are
    unchanged (`first` of them before the rest), then the folder once empty. Returns the relative paths of the
    entries kept (hf_mrl did not write them, or they changed since), leaving the folder."""
    path = _write_through(Path(path))
    foreign, changed = not_written_by_hf_mrl(path)
    ours = [name for name in _read_record(path) if name not in changed and os.path.lexists(path / name)]
    for name in sorted(ours, key=lambda name: name != first):
        (path / name).unlink()
    (path / RECORD_NAME).unlink(missing_ok=True)
    for folder in sorted((p for p in path.rglob("*") if p.is_dir() and not p.is_symlink()), reverse=True):
        if not any(folder.iterdir()) and folder.relative_to(path).as_posix() not in foreign:
            folder.rmdir()
    if not any(path.iterdir()):
        path.rmdir()
    return sorted(foreign + changed)


def write_folder_atomically(path, write: Callable[[Path], None], kind: FolderKind = MODEL_FOLDER,
                            argument: str = "path") -> Path:
    """Calls `write(staging)` on a new temporary folder beside `path`, then puts it in place (`move_into_place`).

    Checked first: `path` is missing, empty or a saved `kind` folder (else `ValueError`, nothing written).
    Temporary folders left beside `path` by a killed save are removed. On any error the staging folder is
    removed and `path` is untouched; OS errors come back in plain words with the path (`describe_os_error`)."""
    path = _write_through(check_folder_target(path, kind, argument))
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
    """Calls `write(temporary)` on a temporary file beside `path`, then renames it to `path` (a symlink's
    target): the file is never half-written. OS errors come back in plain words with the path."""
    path = _write_through(Path(path))
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
