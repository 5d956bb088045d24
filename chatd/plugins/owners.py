"""Which plugin owns a callback, or acts on this thread now.

Which plugin owns a callback decides whose breaker an exception counts
towards, whose timers a reload cancels and whose name the log shows, so it is
decided once, when the callback is handed in, in this order: the plugin running
now on the loop (the guard's ``current_plugin``), the plugin whose worker
thread hands it in (:func:`working_for`), the plugin whose module defines the
function — seen through ``functools.partial`` and bound methods, and a
plugin's package counting as the plugin.

The map from module names to plugins is built on first use and dropped when
the plugins change (:meth:`Owners.forget_modules`); it is published whole, so
other threads (``call_soon_threadsafe``, a plugin's store writes) can read it.
"""

from __future__ import annotations

import functools
import sys
import threading
import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .guard import Guard

#: The plugin whose task the current worker thread runs (see :func:`working_for`).
_worker = threading.local()


@contextmanager
def working_for(plugin: str | None) -> Iterator[None]:
    """This (worker) thread acts for ``plugin`` inside the ``with`` block."""
    _worker.plugin = plugin
    try:
        yield
    finally:
        _worker.plugin = None


class Owners:
    """Answers "which plugin?" for callbacks, modules and the running thread."""

    def __init__(self, guard: Guard, plugins: Callable[[], Iterable[tuple[str, object]]]) -> None:
        self._guard = guard
        self._plugins = plugins  # (name, plugin object) of every registered plugin
        self._module_owners: dict[str, str] | None = None
        #: The loop's thread, once the host is bound to it (see :meth:`acting_plugin`).
        self.loop_thread: int | None = None

    def forget_modules(self) -> None:
        """The plugins changed: rebuild the module map on next use."""
        self._module_owners = None

    def owner_of(self, callback: Callable[..., Any]) -> str | None:
        """The plugin that defines ``callback`` (by module), or None."""
        return self.module_owner(_defining_module(callback))

    def module_owner(self, module: str | None) -> str | None:
        """The plugin whose code ``module`` is (a plugin's package counts), or None."""
        owners = self._module_owners
        if owners is None:
            owners = {}
            for name, plugin in self._plugins():
                module_name = plugin.__name__ if isinstance(plugin, types.ModuleType) else (
                    type(plugin).__module__
                )
                owners.setdefault(module_name, name)
            self._module_owners = owners  # whole, then published: other threads read it
        while module:
            if module in owners:
                return owners[module]
            module = module.rpartition(".")[0]
        return None

    def acting_plugin(self) -> str | None:
        """The plugin on whose behalf this thread runs now: on the loop, the one whose
        hook, command or timer is running (``current_plugin``); on another thread
        (where ``current_plugin`` is the loop's, not this thread's), the one whose
        worker task runs here, else the one whose code called in."""
        current = self._guard.current_plugin
        if threading.get_ident() == self.loop_thread and current is not None:
            return current
        return getattr(_worker, "plugin", None) or self.calling_plugin()

    def calling_plugin(self) -> str | None:
        """The plugin whose code called into chatd here (the nearest plugin frame on
        this thread's stack), or None: for calls that can come from any thread."""
        frame = sys._getframe(1)
        for _ in range(32):
            if frame is None:
                break
            owner = self.module_owner(frame.f_globals.get("__name__"))
            if owner is not None:
                return owner
            frame = frame.f_back  # type: ignore[assignment]
        return None


def _defining_module(callback: Callable[..., Any]) -> str | None:
    """The module that defines ``callback``, seen through ``functools.partial`` (whose
    ``__module__`` is ``functools``) and bound methods of builtin types."""
    for _ in range(16):  # partials of partials, bounded
        if not isinstance(callback, functools.partial):
            break
        callback = callback.func
    function = getattr(callback, "__func__", callback)
    module = getattr(function, "__module__", None)
    if module and module != "builtins":
        return module  # type: ignore[no-any-return]
    owner = getattr(callback, "__self__", None)
    if owner is not None and not isinstance(owner, types.ModuleType):
        return type(owner).__module__
    return module  # type: ignore[no-any-return]
