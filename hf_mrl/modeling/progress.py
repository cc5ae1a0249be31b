"""Whether hf_mrl draws a progress bar, decided in one place, and transformers' own bars around hf_mrl's loads and
saves.

- `should_show_progress(requested)`: an explicit True / False wins; otherwise no bar inside `quiet_progress()`
  (e.g. an evaluation during training, whose loop has its own bar) or when bars are switched off
  (`HF_MRL_DISABLE_PROGRESS_BAR=1`, `HF_HUB_DISABLE_PROGRESS_BARS=1`, transformers'
  `logging.disable_progress_bar()` or huggingface_hub's `disable_progress_bars()`), and else a bar only when stderr
  is a terminal (or a Jupyter kernel, where tqdm draws a widget): a log file gets no `\\r` bars.
- `transformers_progress_bars(show)`: with `show=False`, transformers' "Loading weights" / "Writing model shards"
  bars are off within the block, and transformers' switch is restored after it.

Imports only the standard library at module level: the modeling files import it, and they travel as
trust_remote_code files to machines without hf_mrl.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import warnings

__all__ = ["DISABLE_PROGRESS_BAR_ENV", "quiet_progress", "should_show_progress", "transformers_progress_bars"]

# Set to 1 (or true / yes / on) to draw no progress bar unless a call asks for one.
DISABLE_PROGRESS_BAR_ENV = "HF_MRL_DISABLE_PROGRESS_BAR"
_HUB_DISABLE_ENV = "HF_HUB_DISABLE_PROGRESS_BARS"
_TRUE = ("1", "true", "yes", "on")

_quiet = contextvars.ContextVar("hf_mrl_quiet_progress", default=False)


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def progress_bars_switched_off() -> bool:
    """Whether the user switched progress bars off: hf_mrl's or huggingface_hub's environment variable, or
    transformers' / huggingface_hub's switch (read only where that library is imported already)."""
    if _env_true(DISABLE_PROGRESS_BAR_ENV) or _env_true(_HUB_DISABLE_ENV):
        return True
    transformers_logging = sys.modules.get("transformers.utils.logging")
    if transformers_logging is not None and not transformers_logging.is_progress_bar_enabled():
        return True
    hub_utils = sys.modules.get("huggingface_hub.utils")
    hub_disabled = getattr(hub_utils, "are_progress_bars_disabled", None)
    return bool(hub_disabled is not None and hub_disabled())


def _stderr_is_interactive() -> bool:
    """stderr is a terminal, or a Jupyter kernel's stream (tqdm.auto draws a widget there, not `\\r` lines)."""
    stream = sys.stderr
    if stream is None:
        return False
    if type(stream).__module__.startswith("ipykernel"):
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def should_show_progress(requested: bool | None = None) -> bool:
    """Whether to draw a progress bar: `requested` when it is True or False; with None, none inside
    `quiet_progress()` or when bars are switched off (see the module docstring), else only on a terminal."""
    if requested is not None:
        return bool(requested)
    if _quiet.get() or progress_bars_switched_off():
        return False
    return _stderr_is_interactive()


@contextlib.contextmanager
def quiet_progress(quiet: bool = True):
    """Within the block, `should_show_progress()` (nothing requested) is False when `quiet`; a loop that runs
    inside another one's bar (an evaluation during training) draws none of its own."""
    token = _quiet.set(quiet or _quiet.get())
    try:
        yield
    finally:
        _quiet.reset(token)


@contextlib.contextmanager
def transformers_progress_bars(show: bool):
    """With `show=False`, transformers' progress bars (e.g. "Loading weights", "Writing model shards") are off
    within the block; transformers' switch (and huggingface_hub's, which it turns too) is restored afterwards.
    With `show=True` nothing changes: transformers' own switch decides."""
    if show:
        yield
        return
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as transformers_logging

    if not transformers_logging.is_progress_bar_enabled():
        yield
        return
    hub_was_disabled = hub_utils.are_progress_bars_disabled()
    with warnings.catch_warnings():  # HF_HUB_DISABLE_PROGRESS_BARS=0 keeps the hub's bars on, with a warning
        warnings.simplefilter("ignore")
        transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            transformers_logging.enable_progress_bar()
            if hub_was_disabled:
                hub_utils.disable_progress_bars()
