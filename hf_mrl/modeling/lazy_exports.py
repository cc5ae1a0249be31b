"""Public names of a package loaded on first use (PEP 562, as transformers' own `__init__` files do), so that
importing the package, or the CLI to print `--help`, pays only for what it touches."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, list[str]], namespace: dict) -> tuple[Callable, Callable]:
    """The `__getattr__` and `__dir__` of `package`, whose public names `exports` lists by defining submodule
    (relative to the package, e.g. "matryoshka_index"). Each name is imported when first used, then kept in the
    package's `namespace` (its `globals()`)."""
    module_of = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str):
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module_of[name]}", package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(module_of))

    return __getattr__, __dir__
