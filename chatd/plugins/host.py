"""The plugin host: register plugins with pluggy and call their hooks through the guard.

A :class:`PluginHost` is built per server (never at import time), so tests get
a fresh one each time.  It is what the chat domain and plugins see as
``server.hooks``; its parts each do one job:

* :mod:`.loader` finds and imports plugins; the host registers them here,
  refusing name clashes, hook wrappers and misspelt hooks;
* :mod:`.guard` runs every call into plugin code (:meth:`Guard.run`);
* :mod:`.owners` says which plugin a callback or a thread acts for;
* :mod:`.timers` keeps each plugin's timers and worker tasks.

Calling hooks
-------------
pluggy's own loop stops at the first exception, which would let one broken
plugin silence every other plugin for the same event (pluggy#419).  chatd
therefore walks the implementations itself, in pluggy's order (newest first,
``tryfirst``/``trylast`` honoured), and runs each through the guard: a failure
is reported against its plugin and the remaining implementations run.

Hooks whose spec says ``firstresult=True`` stop at the first implementation
that returns something other than None (:meth:`PluginHost.call_first`); the
defaults chatd ships for them are ``trylast`` implementations, so any plugin
can pre-empt them.  The implementations of a hook are cached as :class:`_Impl`
tuples until the plugins change: hooks run per chat line.

Every plugin that is unloaded (shut down, reloaded away, or disabled by the
circuit breaker) gets ``chatd_shutdown`` once, and its timers and tasks are
cancelled.
"""

from __future__ import annotations

import difflib
import operator
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from .. import hookspecs
from ..config import ConfigError
from . import loader
from .guard import Guard, Notifiable, TracingGuard, plugin_log
from .loader import PluginLoadError
from .owners import Owners
from .timers import PendingWork, PluginTask, PluginTimer, Scheduler

if TYPE_CHECKING:
    from ..config import PluginHostConfig


@dataclass
class PluginInfo:
    """What ``chatd plugins`` shows about one plugin."""

    name: str
    source: str  # "builtin", "entry point (dist 1.0)", "file /path/x.py"
    version: str | None
    plugin: object
    hooks: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)  # filled in by the server
    disabled: str | None = None  # why the circuit breaker turned it off


#: The guard's clock (``Guard.run`` times a call with the same one).
_clock = time.perf_counter


class _Impl:
    """One hook implementation, ready to call without pluggy's machinery.

    ``args(kwargs)`` picks the arguments this implementation asked for, in its
    order, from the hook's keyword arguments (an ``itemgetter``: hooks run per
    message, and this is the cheapest way to do it).
    """

    __slots__ = ("argnames", "args", "function", "plugin_name")

    def __init__(self, function: Callable[..., Any], argnames: tuple[str, ...], plugin: str):
        self.function = function
        self.argnames = argnames
        self.plugin_name = plugin
        self.args: Callable[[dict[str, Any]], tuple[Any, ...]] = _arg_picker(argnames)


def _arg_picker(names: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    if not names:
        return lambda _kwargs: ()
    if len(names) == 1:
        name = names[0]
        return lambda kwargs: (kwargs[name],)
    return operator.itemgetter(*names)


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager, telling the host when a plugin leaves (even from inside a hook)."""

    def __init__(self, project: str, on_change: Callable[[], None]) -> None:
        super().__init__(project)
        self._on_change = on_change

    def unregister(self, plugin: Any = None, name: str | None = None) -> Any:
        result = super().unregister(plugin, name)
        self._on_change()
        return result


class PluginHost:
    """A pluggy ``PluginManager`` plus registration and failure-isolating calls."""

    def __init__(
        self,
        *,
        disabled: Iterable[str] = (),
        slow_hook_seconds: float = 0.1,
        max_failures: int = 5,
        failure_window: float = 60.0,
        trace: bool = False,
        worker_threads: int = 4,
    ) -> None:
        self._impl_cache: dict[str, tuple[_Impl, ...]] = {}
        self.pm = _PluginManager("chatd", self._impl_cache.clear)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._disabled = loader.DisabledNames(disabled)
        #: Called with (plugin name, reason) when the circuit breaker trips.
        self.on_disable: Callable[[str, str], None] | None = None
        #: What ``chatd_shutdown`` receives (see :meth:`bind`).
        self.server: Any = None
        self.guard = (TracingGuard if trace else Guard)(
            slow_hook_seconds=slow_hook_seconds, max_failures=max_failures,
            failure_window=failure_window, breakable=self._breakable, on_trip=self.disable,
        )
        self.owners = Owners(self.guard, self._named_plugins)
        self.work = PendingWork(self.guard, self.owners, self._gone,
                                worker_threads=worker_threads)
        self._firstresult: dict[str, bool] = {}
        self._shut_down = False
        self.pm.hook.chatd_addhooks.call_historic(kwargs={"pluginmanager": self.pm})

    @classmethod
    def from_config(cls, settings: PluginHostConfig, *, trace: bool = False) -> PluginHost:
        return cls(
            disabled=settings.disable,
            slow_hook_seconds=settings.slow_hook_seconds,
            max_failures=settings.max_failures,
            failure_window=settings.failure_window_seconds,
            trace=trace,
        )

    def bind(self, server: Any, scheduler: Scheduler) -> None:
        """Attach the plugin-facing server object and the loop (before ``chatd_startup``;
        on the loop's thread, which it remembers: see :meth:`acting_plugin`)."""
        self.server = server
        self.work.bind(scheduler)
        self.owners.loop_thread = threading.get_ident()

    # -- who is who ------------------------------------------------------------

    def is_builtin(self, name: str) -> bool:
        """Whether ``name`` is one of chatd's own plugins (the server itself, unmarked)."""
        info = self.infos.get(name)
        return info is not None and info.source == "builtin"

    def _breakable(self, name: str) -> bool:
        """Whether the circuit breaker may switch ``name`` off: built-ins are the server
        itself (reported, never switched off)."""
        info = self.infos.get(name)
        return info is not None and info.source != "builtin"

    def _gone(self, name: str | None) -> bool:
        """Whether ``name`` may start no more work: disabled, or every plugin unloaded."""
        if self._shut_down:
            return True
        info = self.infos.get(name) if name is not None else None
        return info is not None and bool(info.disabled)

    def _named_plugins(self) -> list[tuple[str, object]]:
        return [(info.name, info.plugin) for info in self.infos.values()]

    @property
    def current_plugin(self) -> str | None:
        """The plugin whose hook, command or timer is running now (None: the core)."""
        return self.guard.current_plugin

    @current_plugin.setter
    def current_plugin(self, name: str | None) -> None:
        self.guard.current_plugin = name

    @property
    def error_counts(self) -> dict[str, int]:
        """Failures per plugin name, for stats and operators."""
        return self.guard.error_counts

    @property
    def slow_counts(self) -> dict[str, int]:
        """Calls slower than ``plugin_host.slow_hook_seconds``, per plugin name."""
        return self.guard.slow_counts

    def owner_of(self, callback: Callable[..., Any]) -> str | None:
        """The plugin that defines ``callback`` (by module), or None."""
        return self.owners.owner_of(callback)

    def acting_plugin(self) -> str | None:
        """The plugin on whose behalf this thread runs now (see :mod:`.owners`)."""
        return self.owners.acting_plugin()

    def calling_plugin(self) -> str | None:
        """The plugin whose code called into chatd here (the nearest plugin frame)."""
        return self.owners.calling_plugin()

    # -- loading and registering -------------------------------------------------

    def load_builtins(self, names: Iterable[str] | None = None) -> None:
        """Register chatd's own plugins (``names``, default all of them)."""
        self._register_all(loader.builtins(names, self._disabled))

    def load_modules(self, dotted_names: Iterable[str]) -> None:
        """Register modules named in config (``plugin_host.modules``)."""
        self._register_all(loader.from_modules(dotted_names, self._disabled))

    def load_entry_points(self) -> None:
        """Register the installed distributions of the ``chatd`` entry-point group."""
        self._register_all(loader.from_entry_points(self._disabled))

    def load_directory(self, directory: Path) -> None:
        """Register every ``*.py`` file and package in ``directory`` (sorted by name)."""
        self._register_all(loader.from_directory(directory, self._disabled))

    def _register_all(self, found: Iterable[loader.Found]) -> None:
        for plugin in found:
            self.register(plugin.plugin, plugin.name, plugin.source, version=plugin.version)

    def check_disabled_names(self) -> None:
        """Every name in ``plugin_host.disable`` must name a plugin: a typo would
        otherwise leave the plugin running while the operator thinks it is off."""
        self._disabled.check(self.infos)

    def register(self, plugin: object, name: str, source: str, version: str | None = None) -> None:
        """Register ``plugin`` under ``name``; refuse clashes, typos and wrappers."""
        if name in self.infos:
            raise PluginLoadError(
                f"two plugins are named {name!r}: {self.infos[name].source} and {source}"
            )
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise PluginLoadError(f"plugin {name!r} ({source}): {_one_line(exc)}") from exc
        hooks = []
        for hook_caller in self.pm.get_hookcallers(plugin) or []:
            for impl in hook_caller.get_hookimpls():
                if impl.plugin is plugin and (impl.hookwrapper or impl.wrapper):
                    self.pm.unregister(plugin)
                    raise PluginLoadError(
                        f"plugin {name!r} ({source}): hook wrappers are not supported "
                        f"for chatd hooks ({hook_caller.name})"
                    )
            hooks.append(hook_caller.name)
        self.infos[name] = PluginInfo(name, source, version, plugin, sorted(hooks))
        self._impl_cache.clear()
        self.owners.forget_modules()

    def check(self) -> None:
        """Fail on implementations of hooks that do not exist (a typo'd ``chatd_*`` name)."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.pm.get_name(exc.plugin) if exc.plugin is not None else "?"
            hint = ""
            unknown = [
                caller.name
                for caller in self.pm.get_hookcallers(exc.plugin) or []
                if not caller.has_spec()
            ] if exc.plugin is not None else []
            for hook in unknown:
                close = difflib.get_close_matches(hook, self.hook_names(), n=1)
                if close:
                    hint = f" (did you mean {close[0]}?)"
                    break
            raise PluginLoadError(f"plugin {name!r}: {_one_line(exc)}{hint}") from exc

    def hook_names(self) -> list[str]:
        """Every hook a plugin may implement (chatd's and those plugins added)."""
        return sorted(
            name for name in dir(self.pm.hook)
            if not name.startswith("_") and getattr(self.pm.hook, name).has_spec()
        )

    def warnings(self) -> list[str]:
        """What ``--check-config`` warns about: plugins that will silently do nothing.

        A plugin with no hooks at all, and a function named like a hook that is not
        marked ``@hookimpl`` (with the nearest real hook name if it is misspelt).
        """
        found = []
        names = self.hook_names()
        for info in self.infos.values():
            marked = set(info.hooks)
            for attr in sorted(dir(info.plugin)):
                if not attr.startswith("chatd_") or attr in marked:
                    continue
                value = getattr(info.plugin, attr, None)
                if not callable(value) or isinstance(value, type):
                    continue
                close = difflib.get_close_matches(attr, names, n=1)
                if attr in names:
                    found.append(f"plugin {info.name!r}: {attr} is not marked @hookimpl, "
                                 "so chatd never calls it")
                elif close:
                    found.append(f"plugin {info.name!r}: {attr} is not a hook "
                                 f"(did you mean {close[0]}?)")
            if not info.hooks:
                found.append(f"plugin {info.name!r} ({info.source}) implements no hooks: "
                             "mark its functions with @hookimpl")
        return found

    # -- calling -------------------------------------------------------------

    def _impls(self, hook_name: str) -> tuple[_Impl, ...]:
        """The implementations of ``hook_name`` in call order, cached until the plugins
        change.  The per-line callers read the cache themselves first (a call less)."""
        impls = self._impl_cache.get(hook_name)
        if impls is None:
            caller = getattr(self.pm.hook, hook_name)
            impls = tuple(
                _Impl(i.function, tuple(i.argnames), i.plugin_name)
                for i in reversed(caller.get_hookimpls())
            )
            self._impl_cache[hook_name] = impls
        return impls

    def implementations(self, hook_name: str) -> tuple[_Impl, ...]:
        """The implementations in call order (``.plugin_name``, ``.function``, ``.argnames``).

        For hooks with their own calling rules (``chatd_filter_message``).  The
        tuple is cached until the next registration, so this is cheap per line.
        """
        impls = self._impl_cache.get(hook_name)
        return impls if impls is not None else self._impls(hook_name)

    def is_firstresult(self, hook_name: str) -> bool:
        """Whether the hook's spec asks to stop at the first non-None result."""
        first = self._firstresult.get(hook_name)
        if first is None:
            caller = getattr(self.pm.hook, hook_name, None)
            spec = getattr(caller, "spec", None)
            first = self._firstresult[hook_name] = bool(
                spec is not None and spec.opts.get("firstresult")
            )
        return first

    def call(self, hook_name: str, notify: Notifiable | None = None, **kwargs: Any) -> list[Any]:
        """Call every implementation of ``hook_name``; return the non-None results.

        Each runs through the guard: a failing one is reported and skipped.
        ``notify`` is the client told about a failure.  For a ``firstresult``
        hook the calls stop at the first non-None result, and the list holds
        just that one.
        """
        impls = self._impl_cache.get(hook_name)
        if impls is None:
            impls = self._impls(hook_name)
        results = []
        guard = self.guard
        if guard.__class__ is not Guard:  # --trace-hooks: every call through its run()
            for impl in impls:
                result = guard.run(impl.plugin_name, hook_name, impl.function,
                                   impl.args(kwargs), notify)
                if result is not None:
                    results.append(result)
                    if self.is_firstresult(hook_name):
                        break
            return results
        # Guard.run's rules, inline: this loop runs several implementations per chat
        # line, and a call of run() per implementation cost more than the rules.
        previous = guard.current_plugin
        slow = guard.slow_hook_seconds
        for impl in impls:
            plugin = impl.plugin_name
            guard.current_plugin = plugin
            started = _clock()
            try:
                result = impl.function(*impl.args(kwargs))
            except BaseException as exc:
                if not guard.contained(plugin, hook_name, exc, notify):
                    guard.current_plugin = previous
                    raise
                result = None
            guard.current_plugin = previous
            elapsed = _clock() - started
            if elapsed > slow:
                guard.report_slow(plugin or "?", hook_name, elapsed)
            if result is not None:
                results.append(result)
                if self.is_firstresult(hook_name):
                    break
        return results

    def call_first(self, hook_name: str, notify: Notifiable | None = None, **kwargs: Any) -> Any:
        """The first non-None result of ``hook_name`` (newest plugin first), or None."""
        impls = self._impl_cache.get(hook_name)
        if impls is None:
            impls = self._impls(hook_name)
        if len(impls) == 1:  # the common case, per chat line: only the default answers
            impl = impls[0]
            return self.guard.run(impl.plugin_name, hook_name, impl.function,
                                  impl.args(kwargs), notify)
        for result in self.call(hook_name, notify, **kwargs):
            return result
        return None

    def run_guarded(
        self,
        plugin: str | None,
        label: str,
        function: Callable[..., Any],
        *args: Any,
        notify: Notifiable | None = None,
        passthrough: tuple[type[BaseException], ...] = (),
    ) -> Any:
        """Call ``function(*args)`` for ``plugin`` with the same guard rails as a hook.

        Exceptions listed in ``passthrough`` (a command's ``UsageError``, a
        filter's ``Reject``) are part of the API and propagate; anything else is
        a plugin failure and returns None.  ``SystemExit`` and
        ``KeyboardInterrupt`` always propagate.
        """
        return self.guard.run(plugin, label, function, args, notify, passthrough)

    def call_first_strict(self, hook_name: str, **kwargs: Any) -> Any:
        """The first non-None result of ``hook_name`` (newest plugin first), or None; an
        exception stops the caller as in :meth:`call_strict`.  For a start-up choice a
        failure must not quietly replace: a cluster backend that cannot be made would
        leave the node running alone, outside its cluster."""
        for impl in self._impls(hook_name):
            result = self._call_strictly(impl, hook_name, kwargs)
            if result is not None:
                return result
        return None

    def call_strict(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call every implementation and let the first exception propagate.

        Used at startup, where a broken plugin must stop the server early with a
        clear message rather than fail at the first message.
        """
        results = []
        for impl in self._impls(hook_name):
            result = self._call_strictly(impl, hook_name, kwargs)
            if result is not None:
                results.append(result)
        return results

    @staticmethod
    def _call_strictly(impl: _Impl, hook_name: str, kwargs: dict[str, Any]) -> Any:
        """One implementation, its failure a :class:`PluginLoadError` naming it (a
        ``ConfigError`` as it is: it already says which file, key and line)."""
        try:
            return impl.function(*impl.args(kwargs))
        except ConfigError:
            raise
        except Exception as exc:
            raise PluginLoadError(
                f"plugin {impl.plugin_name!r} failed in {hook_name}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def report_failure(
        self, plugin: str, label: str, exc: BaseException, notify: Notifiable | None = None
    ) -> None:
        """Log a plugin failure (rate-limited), count it, and tell ``notify``."""
        self.guard.report_failure(plugin, label, exc, notify)

    def report_slow(self, plugin: str, label: str, elapsed: float) -> None:
        """A call held the loop too long: log it and count it towards the breaker."""
        self.guard.report_slow(plugin, label, elapsed)

    # -- a plugin's timers and worker tasks (see .timers) -------------------------

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> PluginTimer:
        """A timer owned by the running plugin (or the one defining ``callback``)."""
        return self.work.call_later(delay, callback, *args)

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        """From any thread: run ``callback(*args)`` on the loop, guarded, owned by a plugin."""
        self.work.call_soon_threadsafe(callback, *args)

    def run_in_thread(self, fn: Callable[..., Any], *args: Any,
                      callback: Callable[[Any], Any] | None = None,
                      on_error: Callable[[BaseException], Any] | None = None) -> PluginTask:
        """Run ``fn(*args)`` on a worker thread; hand the result to ``callback`` on the loop."""
        return self.work.run_in_thread(fn, *args, callback=callback, on_error=on_error)

    def timers(self, plugin: str | None) -> list[PluginTimer]:
        """The pending timers of ``plugin``."""
        return self.work.timers(plugin)

    def cancel_timers(self, plugin: str | None = None, *, every: bool = False) -> int:
        """Cancel ``plugin``'s pending timers (``every``: all plugins'); returns how many."""
        return self.work.cancel_timers(plugin, every=every)

    def tasks(self, plugin: str | None) -> list[PluginTask]:
        """The worker-thread tasks of ``plugin`` whose outcome has not been handed back."""
        return self.work.tasks(plugin)

    def cancel_tasks(self, plugin: str | None = None, *, every: bool = False) -> int:
        """Cancel ``plugin``'s pending tasks (``every``: all plugins'); returns how many."""
        return self.work.cancel_tasks(plugin, every=every)

    # -- state across a reload -------------------------------------------------------

    def save_reload_state(self) -> dict[str, Any]:
        """Ask every plugin about to be reloaded away what its next copy should get
        (``chatd_reload_save``); returns the non-None answers by plugin name."""
        saved: dict[str, Any] = {}
        for impl in self._impls("chatd_reload_save"):
            state = self.guard.run(impl.plugin_name, "chatd_reload_save", impl.function,
                                   impl.args({"server": self.server}))
            if state is not None:
                saved[impl.plugin_name] = state
        return saved

    def restore_reload_state(self, saved: dict[str, Any]) -> None:
        """Give each plugin what its previous copy saved (``chatd_reload_restore``), by
        plugin name.  Called once every plugin started, so nothing undoes it; a
        failure is reported like any hook's and the others still get theirs."""
        for impl in self._impls("chatd_reload_restore"):
            if impl.plugin_name in saved:
                kwargs = {"server": self.server, "state": saved[impl.plugin_name]}
                self.guard.run(impl.plugin_name, "chatd_reload_restore", impl.function,
                               impl.args(kwargs))

    # -- unloading ---------------------------------------------------------------------

    def shutdown(self) -> None:
        """Unload every plugin: ``chatd_shutdown`` once each, then cancel their timers."""
        if self._shut_down:
            return
        self.call("chatd_shutdown", server=self.server)
        self._shut_down = True
        self.work.stop()

    def reopen(self) -> None:
        """Undo :meth:`shutdown` (a reload failed and these plugins start again)."""
        self._shut_down = False

    @property
    def is_shut_down(self) -> bool:
        return self._shut_down

    def disable(self, plugin: str, reason: str) -> None:
        """Unload ``plugin`` until the next reload: ``chatd_shutdown``, timers, hooks, commands."""
        info = self.infos.get(plugin)
        if info is None or info.disabled:
            return
        info.disabled = reason
        self.work.cancel_timers(plugin)
        for impl in self._impls("chatd_shutdown"):
            if impl.plugin_name == plugin:
                self.guard.run(plugin, "chatd_shutdown", impl.function,
                               impl.args({"server": self.server}))
        self.work.cancel_timers(plugin)  # any its shutdown made
        self.work.cancel_tasks(plugin)
        self.pm.unregister(info.plugin)
        plugin_log.error("plugin %r disabled: %s", plugin, reason)
        if self.on_disable is not None:
            self.on_disable(plugin, reason)


def _one_line(exc: BaseException) -> str:
    """pluggy's validation messages span lines; startup errors are one line."""
    return "; ".join(part.strip() for part in str(exc).splitlines() if part.strip())
