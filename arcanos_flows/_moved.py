"""Module paths of the previous release that moved: each old module re-exports its new home and warns once."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["moved_to"]


def moved_to(old: str, new: str) -> Callable[[str], Any]:
    """Warn that ``old`` moved to ``new``; the old module's ``__getattr__``, reaching ``new``'s private names too.

    Examples:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     getattr_ = moved_to("pkg.old", "json")
        >>> str(caught[0].message), getattr_("dumps")([1])
        ('pkg.old is deprecated; import from json', '[1]')
    """
    warnings.warn(f"{old} is deprecated; import from {new}", DeprecationWarning, stacklevel=3)

    def __getattr__(name: str) -> Any:
        return getattr(importlib.import_module(new), name)

    return __getattr__
