"""Result files in an output folder the user may share with their own files.

A run (a training script, `hf-mrl eval`, `tune_weights.py`) writes its results (`results.json`, a plot, a table)
beside whatever the folder holds. It writes only under names no user file holds:

- `check_output_names(folder, names)`: before any work, refuses (`ValueError`, naming them) the names a file of
  the user's holds. A file an earlier hf_mrl run wrote there may be replaced: every write is recorded in the
  folder's record of what hf_mrl wrote (`hf_mrl.modeling.files.RECORD_NAME`, the one record every save keeps), and a
  recorded file changed since is the user's now.
- `write_output(folder, name, write)`: checks the name again, calls `write(path)` (an atomic writer such as
  `save_results`), records the file.
- `record_outputs(folder, names)`: records files written by a writer that `write_output` cannot wrap.
- `check_default_output_folder(folder, ...)`: the folder a run picked itself (no `--output_dir` given) is said
  on stderr, and refused when it holds anything already: an earlier run is never replaced unless asked.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from .modeling.files import check_output_folder, not_written_by_hf_mrl, record_written_files

__all__ = ["check_default_output_folder", "check_output_names", "record_outputs", "write_output"]


def check_output_names(folder, names: Iterable[str], argument: str = "--output_dir") -> Path:
    """`folder` as an output folder where a run may write `names`: each is missing, or a file an earlier hf_mrl
    run wrote there (recorded, unchanged since). Else `ValueError` naming the files in the way, before any work."""
    folder = check_output_folder(folder, argument)
    names = list(dict.fromkeys(names))
    present = [name for name in names if os.path.lexists(folder / name)]
    if not present:
        return folder
    never_recorded, changed_since = not_written_by_hf_mrl(folder)
    foreign = [name for name in present
               if name in never_recorded or (folder / name).is_symlink() or not (folder / name).is_file()]
    changed = [name for name in present if name in changed_since and name not in foreign]
    if foreign or changed:
        reasons = []
        if foreign:
            reasons.append(f"{', '.join(foreign)} (not written by hf_mrl)")
        if changed:
            reasons.append(f"{', '.join(changed)} (written by an earlier hf_mrl run, changed since: yours now)")
        raise ValueError(
            f"`{argument}` {str(folder)!r} already holds {'; '.join(reasons)}; this run writes "
            f"{', '.join(names)} there and never replaces a file of yours. Refusing before any work: choose "
            f"another `{argument}`, or move those files."
        )
    return folder


def record_outputs(folder, names: Iterable[str]) -> None:
    """Records the files `names` of `folder` (just written by this run) as hf_mrl's, with their sha256."""
    record_written_files(folder, list(names))


def write_output(folder, name: str, write: Callable[[Path], object], argument: str = "--output_dir") -> Path:
    """Writes `<folder>/<name>` with `write(path)` (an atomic writer: `save_results`, `save_figure`, ...) when no
    user file holds the name (`check_output_names`, checked again now), and records it; returns the path."""
    folder = check_output_names(folder, [name], argument)
    folder.mkdir(parents=True, exist_ok=True)
    write(folder / name)
    record_outputs(folder, [name])
    return folder / name


def check_default_output_folder(folder, what: str, ask: str, continuing: bool = False, say: bool = True) -> Path:
    """The output folder a run picked itself (no `--output_dir` given): one line on stderr says where it writes;
    a folder that holds anything already (an earlier run) is refused, unless the run is `continuing` it. `what`
    names the default ("transformers' default output folder"), `ask` says how to write there anyway; `say`: print
    the line (False on all but one of several processes)."""
    folder = check_output_folder(folder, "output_dir")
    where = folder.resolve()
    if folder.is_dir() and any(folder.iterdir()) and not continuing:
        held = sorted(entry.name for entry in folder.iterdir())
        shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
        raise ValueError(
            f"no `--output_dir` given, and {what} {str(where)!r} already holds an earlier run ({shown}); refusing "
            f"to replace it. Pass `--output_dir NEW_FOLDER` for a new run, or {ask}."
        )
    if say:
        print(f"hf_mrl: no --output_dir given: writing to {where} ({what})", file=sys.stderr, flush=True)
    return folder
