"""The names of earlier releases: each keeps working and warns once with its new spelling.

- :func:`warn_once`: one ``FutureWarning`` per renamed thing and process.
- :class:`MovedModules`: an import hook for the modules of otkit 0.1 (``otkit.result``, ``otkit.point_result``,
  ``otkit.divergence``, ``otkit.multi_prompt``), which import as their new modules after a warning.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

from otkit._checks import caller_stacklevel

__all__ = ["MOVED_MODULES", "MovedModules", "warn_once"]

_WARNED: set[str] = set()

MOVED_MODULES = {
    "otkit.result": "otkit.dense.result",
    "otkit.point_result": "otkit.points.result",
    "otkit.divergence": "otkit.points.divergence",
    "otkit.multi_prompt": "otkit.attention.multi_prompt",
}


def warn_once(key: str, message: str) -> None:
    """Issue ``message`` as a ``FutureWarning`` at the user's call, the first time ``key`` is seen."""
    if key in _WARNED:
        return
    _WARNED.add(key)
    warnings.warn(message, FutureWarning, stacklevel=caller_stacklevel())


class MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old module names of :data:`MOVED_MODULES` and loads them as the new modules."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec:
        """A spec for an old module name, ``None`` for any other."""
        if fullname not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        """The default module object (replaced by the new module in :meth:`exec_module`)."""
        return None

    def exec_module(self, module: ModuleType) -> None:
        """Warn, and put the new module in ``sys.modules`` under the old name (the import then returns it)."""
        new = MOVED_MODULES[module.__name__]
        warn_once(module.__name__, f"{module.__name__} moved to {new} in otkit 0.2; import from otkit or {new}.")
        sys.modules[module.__name__] = importlib.import_module(new)


def install() -> None:
    """Put :class:`MovedModules` on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())
