"""One module per IPC method; each defines ``METHOD``, a ``Channel`` subclass.

Adding a method means adding one module here: the registry finds it by itself.
"""

from __future__ import annotations

import importlib
import pkgutil

from ..channel import Channel


def all_methods() -> dict[str, type[Channel]]:
    """Every method, by name, in table order (hakobu first)."""
    found: list[type[Channel]] = []
    for module_info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        method = getattr(module, "METHOD", None)
        if isinstance(method, type) and issubclass(method, Channel):
            found.append(method)
    found.sort(key=lambda m: (m.order, m.name))
    return {m.name: m for m in found}
