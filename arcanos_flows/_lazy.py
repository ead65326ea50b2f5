"""Names a package re-exports from its modules, imported on first use (PEP 562).

A package that re-exports Prefect-heavy names stays cheap to import, and a bundled flow's module can import the
Prefect layer without the layer's ``__init__`` importing the flow back (no import circle).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's ``__getattr__`` and ``__dir__`` serving ``exports`` (name -> module) on first access.

    Args:
        package: The package's ``__name__`` (named in the ``AttributeError`` of an unknown name).
        exports: Each public name and the module that defines it.
        namespace: The package's ``globals()``: a name, once imported, is cached there.

    Examples:
        >>> namespace = {}
        >>> getattr_, dir_ = lazy_exports("pkg", {"dumps": "json"}, namespace)
        >>> getattr_("dumps")({"a": 1}), "dumps" in namespace
        ('{"a": 1}', True)
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
