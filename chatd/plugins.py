"""The plugin host: find plugins, register them, and call hooks safely.

Plugins come from, in registration order:

1. the built-ins (:data:`BUILTIN_PLUGINS`), registered through the same path as
   everything else (the pytest habit: builtins are plugins, listed as data);
2. installed distributions declaring the entry-point group ``chatd`` (unless
   ``plugin_host.entry_points`` is false);
3. dotted module names in ``plugin_host.modules``;
4. ``.py`` files and packages in the config's ``plugin_dirs``.

Any of them can be switched off by name with ``plugin_host.disable``.

A :class:`PluginHost` is built per server (never at import time) so tests get
a fresh one each time.

Calling hooks
-------------
pluggy's own loop stops at the first exception, which would let one broken
plugin silence every other plugin for the same event (pluggy#419).  chatd
therefore walks the implementations itself, in pluggy's order (newest first,
``tryfirst``/``trylast`` honoured), and isolates each call: a failure is
logged with the plugin name, the hook and the traceback (repeats of the same
failure are counted and logged at most once a minute), the client that caused
the event is told in one ``! ...`` line, and the remaining implementations run.

Hooks whose spec says ``firstresult=True`` stop at the first implementation
that returns something other than None (:meth:`PluginHost.call_first`); the
defaults chatd ships for them are ``trylast`` implementations, so any plugin
can pre-empt them.

Guard rails: every call is timed, and one that holds the loop longer than
``plugin_host.slow_hook_seconds`` is logged with the plugin and the time; a
plugin that fails (raises or overruns) ``max_failures`` times within
``failure_window_seconds`` is unregistered (a circuit breaker) and
``on_disable`` tells the server.  Built-in plugins are the server itself: their
failures are reported but never switch them off.  The loop is single-threaded,
so a stalled hook cannot be pre-empted, only reported.  ``SystemExit`` and
``KeyboardInterrupt`` are never swallowed (Tornado's rule): a plugin that
calls ``sys.exit()`` stops the server.

Timers are a plugin's too: :meth:`PluginHost.call_later` (``server.call_later``)
makes a :class:`PluginTimer` owned by the plugin running at that moment (or the
one whose module defines the callback).  Its callback runs with the same guard
rails as a hook, and the plugin's timers are cancelled when it is disabled,
reloaded or shut down.  Every plugin that is unloaded (shut down, reloaded
away, or disabled by the circuit breaker) gets ``chatd_shutdown`` once.

Blocking work is a plugin's too: :meth:`PluginHost.run_in_thread`
(``server.run_in_thread``) runs a function on a small pool of worker threads
and hands its result (or its exception) back to a callback on the loop, guarded
and attributed like a timer; the plugin's pending work is dropped when it is
disabled, reloaded or shut down.  Callbacks handed in from any thread
(``call_soon_threadsafe``) belong to the plugin whose worker posted them, else
to the plugin that defines them, seen through ``functools.partial`` and bound
methods.

Which plugin owns a callback decides whose breaker an exception counts
towards, whose timers a reload cancels and whose name the log shows, so it is
decided once, when the callback is handed in, in this order: the plugin running
now on the loop, the plugin whose worker thread hands it in, the plugin whose
module defines the function.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import logging
import operator
import pwd
import queue
import sys
import threading
import time
import types
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import pluggy

from . import hookspecs
from .config import ConfigError
from .templates import plural
from .version import __version__

if TYPE_CHECKING:
    from .client import Client
    from .config import PluginHostConfig

log = logging.getLogger("chatd.plugins")
#: Plugin failures go to their own logger, so operators can route "user code" errors.
plugin_log = logging.getLogger("chatd.plugin_errors")


#: The plugins shipped with chatd, by name.  Each is an ordinary plugin module.
BUILTIN_PLUGINS: dict[str, str] = {
    "rooms": "chatd.builtin.rooms",
    "commands": "chatd.builtin.commands",
    "log": "chatd.builtin.log",
    "oper": "chatd.builtin.oper",
    "presence": "chatd.builtin.presence",
    "ignore": "chatd.builtin.ignore",
    "settings": "chatd.builtin.settings",
    "history": "chatd.builtin.history",
    "accounts": "chatd.builtin.accounts",
    "moderation": "chatd.builtin.moderation",
}

ENTRY_POINT_GROUP = "chatd"
_DIR_PLUGIN_PACKAGE = "chatd_plugins"
_ERROR_LOG_INTERVAL = 60.0


class PluginLoadError(Exception):
    """A plugin could not be imported or registered; the message names it."""


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


class Scheduler:
    """What the host needs of the event loop for plugin timers (the reactor)."""

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Any: ...

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None: ...


class _Cancellable(Protocol):
    def cancel(self) -> None: ...


_Pending = TypeVar("_Pending", bound=_Cancellable)


class _Owned(Generic[_Pending]):
    """What each plugin has pending (its timers, or its worker tasks), by owner, so a
    plugin that is disabled, reloaded or shut down leaves nothing behind."""

    __slots__ = ("_by_owner",)

    def __init__(self) -> None:
        self._by_owner: dict[str | None, set[_Pending]] = {}

    def add(self, owner: str | None, item: _Pending) -> None:
        self._by_owner.setdefault(owner, set()).add(item)

    def forget(self, owner: str | None, item: _Pending) -> None:
        owned = self._by_owner.get(owner)
        if owned is not None:
            owned.discard(item)

    def of(self, owner: str | None) -> list[_Pending]:
        return list(self._by_owner.get(owner, ()))

    def cancel(self, owner: str | None = None, *, every: bool = False) -> int:
        """Cancel ``owner``'s items (``every``: everyone's); returns how many."""
        owners = list(self._by_owner) if every else [owner]
        count = 0
        for name in owners:
            for item in list(self._by_owner.pop(name, ())):
                item.cancel()
                count += 1
        return count


class PluginTimer:
    """A plugin's timer (``server.call_later``): ``cancel()`` stops it.

    ``plugin`` owns it; ``when`` is the loop's clock time it is due;
    ``cancelled`` is True once it was cancelled or has run.
    """

    __slots__ = ("_host", "_timer", "args", "callback", "cancelled", "plugin")

    def __init__(self, host: PluginHost, plugin: str | None, callback: Callable[..., Any],
                 args: tuple[Any, ...]) -> None:
        self._host = host
        self._timer: Any = None
        self.plugin = plugin
        self.callback = callback
        self.args = args
        self.cancelled = False

    @property
    def when(self) -> float:
        return self._timer.when if self._timer is not None else 0.0

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        if self._timer is not None:
            self._timer.cancel()
        self._host._forget_timer(self)

    def __repr__(self) -> str:
        state = "done" if self.cancelled else "pending"
        return f"<PluginTimer {self.plugin!r} {_callable_name(self.callback)} {state}>"


class PluginTask:
    """Work a plugin runs on a worker thread (``server.run_in_thread``).

    ``cancel()`` drops it: not started, it never runs; running, its outcome is
    not handed back.  ``done`` is True once its callback (or ``on_error``) was
    called; ``cancelled`` once it was cancelled or its outcome handed back.
    """

    __slots__ = ("_host", "args", "callback", "cancelled", "done", "fn", "on_error", "plugin")

    def __init__(self, host: PluginHost, plugin: str | None, fn: Callable[..., Any],
                 args: tuple[Any, ...], callback: Callable[[Any], Any] | None,
                 on_error: Callable[[BaseException], Any] | None) -> None:
        self._host = host
        self.plugin = plugin
        self.fn = fn
        self.args = args
        self.callback = callback
        self.on_error = on_error
        self.cancelled = False
        self.done = False

    def cancel(self) -> None:
        """Drop the task (harmless once it finished)."""
        if not self.cancelled:
            self.cancelled = True
            self._host._forget_task(self)

    def __repr__(self) -> str:
        state = "done" if self.done else "cancelled" if self.cancelled else "pending"
        return f"<PluginTask {self.plugin!r} {_callable_name(self.fn)} {state}>"


#: The plugin whose task the current worker thread runs (see ``call_soon_threadsafe``).
_worker = threading.local()


class _WorkerPool:
    """A few daemon threads taking jobs from one queue, started as work arrives.

    Not ``concurrent.futures``: its threads are joined at interpreter exit, so one
    plugin call stuck in a blocking read would hold up the server's shutdown
    forever.  Daemon threads are left behind instead.
    """

    def __init__(self, size: int) -> None:
        self._size = max(1, size)
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._idle == 0 and len(self._threads) < self._size:
                thread = threading.Thread(target=self._run, name="chatd-plugin-worker",
                                          daemon=True)
                self._threads.append(thread)
                self._idle += 1
                thread.start()
        self._jobs.put(job)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            with self._lock:
                self._idle -= 1
            try:
                job()
            except Exception:  # _work reports the plugin's own errors; this is ours
                log.exception("plugin worker thread: unexpected error")
            with self._lock:
                self._idle += 1

    def stop(self) -> None:
        """Let every thread end once the jobs already queued are taken (they see the
        cancellation and skip)."""
        for _ in self._threads:
            self._jobs.put(None)


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


def _stopping(plugin: str, where: str, exc: BaseException) -> None:
    plugin_log.critical(
        "plugin %r raised %s in %s: the server stops (SystemExit and KeyboardInterrupt are "
        "not contained)", plugin, type(exc).__name__, where,
    )


def _callable_name(callback: Callable[..., Any]) -> str:
    return getattr(callback, "__qualname__", None) or repr(callback)


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
    """A pluggy ``PluginManager`` plus discovery and failure-isolating calls."""

    _impl_cache: dict[str, tuple[_Impl, ...]]

    def _impl_cache_clear(self) -> None:
        self._impl_cache.clear()

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
        self._impl_cache = {}
        self.pm = _PluginManager("chatd", self._impl_cache_clear)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.disabled_names = frozenset(disabled)
        self._skipped: set[str] = set()  # disabled names actually seen while loading
        self.slow_hook_seconds = slow_hook_seconds
        self.max_failures = max_failures
        self.failure_window = failure_window
        self.trace = trace
        #: Called with (plugin name, reason) when the circuit breaker trips.
        self.on_disable: Callable[[str, str], None] | None = None
        #: The plugin whose hook, command or timer is running now (None: the core).
        self.current_plugin: str | None = None
        #: What ``chatd_shutdown`` receives, and the loop timers run on (see :meth:`bind`).
        self.server: Any = None
        self._scheduler: Scheduler | None = None
        self._timers: _Owned[PluginTimer] = _Owned()
        self._tasks: _Owned[PluginTask] = _Owned()
        self._pool: _WorkerPool | None = None
        self.worker_threads = worker_threads
        self._loop_thread: int | None = None
        self._firstresult: dict[str, bool] = {}
        self._module_owners: dict[str, str] | None = None
        self._shut_down = False
        self._last_logged: dict[tuple[str, str, str], float] = {}
        self._recent_failures: dict[str, deque[float]] = {}
        #: Failures per plugin name, for stats and operators.
        self.error_counts: dict[str, int] = {}
        #: Calls slower than ``slow_hook_seconds``, per plugin name.
        self.slow_counts: dict[str, int] = {}
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

    def is_builtin(self, name: str) -> bool:
        """Whether ``name`` is one of chatd's own plugins (the server itself, unmarked)."""
        info = self.infos.get(name)
        return info is not None and info.source == "builtin"

    def bind(self, server: Any, scheduler: Scheduler) -> None:
        """Attach the plugin-facing server object and the loop (before ``chatd_startup``;
        on the loop's thread, which it remembers: see :meth:`acting_plugin`)."""
        self.server = server
        self._scheduler = scheduler
        self._loop_thread = threading.get_ident()

    # -- discovery ---------------------------------------------------------

    def load_builtins(self, names: Iterable[str] | None = None) -> None:
        for name in names if names is not None else BUILTIN_PLUGINS:
            if self._skip(name):
                continue
            module = importlib.import_module(BUILTIN_PLUGINS[name])
            self.register(module, name, "builtin", version=_chatd_version())

    def load_modules(self, dotted_names: Iterable[str]) -> None:
        """Register modules named in config (``plugin_host.modules``)."""
        for dotted in dotted_names:
            name = dotted.rpartition(".")[2]
            if self._skip(name) or self._skip(dotted):
                continue
            try:
                module = importlib.import_module(dotted)
            except (Exception, SystemExit) as exc:
                raise PluginLoadError(
                    f"plugin module {dotted!r} failed to import: {type(exc).__name__}: {exc}"
                ) from exc
            name = getattr(module, "PLUGIN_NAME", name)
            version = getattr(module, "__version__", None)
            self.register(module, name, f"module {dotted}", version=version)

    def load_entry_points(self) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if self._skip(ep.name):
                continue
            dist = getattr(ep, "dist", None)
            where = f"entry point {ep.value}" + (f" in {dist.name}" if dist else "")
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginLoadError(f"plugin {ep.name!r} ({where}) failed to import: "
                                      f"{type(exc).__name__}: {exc}") from exc
            self.register(plugin, ep.name, where, version=dist.version if dist else None)

    def load_directory(self, directory: Path) -> None:
        """Register every ``*.py`` file and package in ``directory`` (sorted by name)."""
        if not directory.is_dir():
            raise PluginLoadError(f"plugin directory {str(directory)!r} does not exist")
        _refuse_if_others_can_write(directory)
        for path in sorted(directory.iterdir()):
            if path.name.startswith(("_", ".")):
                continue
            if path.suffix == ".py" or path.is_dir():
                _refuse_if_others_can_write(path)
            stem = path.stem if path.suffix == ".py" else path.name
            if self._skip(stem):
                continue
            if path.suffix == ".py" and path.is_file():
                module = _import_file(path.stem, path, package=False)
            elif path.is_dir() and (path / "__init__.py").is_file():
                module = _import_file(path.name, path / "__init__.py", package=True)
            else:
                continue
            name = getattr(module, "PLUGIN_NAME", path.stem)
            if self._skip(name):
                del sys.modules[f"{_DIR_PLUGIN_PACKAGE}.{path.stem}"]
                continue
            version = getattr(module, "__version__", None)
            self.register(module, name, f"file {path}", version=version)

    def _skip(self, name: str) -> bool:
        if name in self.disabled_names:
            self._skipped.add(name)
            return True
        return False

    def check_disabled_names(self) -> None:
        """Every name in ``plugin_host.disable`` must name a plugin: a typo would
        otherwise leave the plugin running while the operator thinks it is off."""
        unknown = sorted(self.disabled_names - self._skipped)
        if unknown:
            known = ", ".join(sorted({*self.infos, *self._skipped}))
            raise PluginLoadError(
                f"plugin_host.disable: no plugin named {', '.join(map(repr, unknown))} "
                f"(plugins: {known})"
            )

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
        self._module_owners = None

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
        impls = self._impl_cache.get(hook_name)
        if impls is None:
            caller = getattr(self.pm.hook, hook_name)
            impls = tuple(
                _Impl(i.function, tuple(i.argnames), i.plugin_name)
                for i in reversed(caller.get_hookimpls())
            )
            self._impl_cache[hook_name] = impls
        return impls

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

    def call(self, hook_name: str, notify: Client | None = None, **kwargs: Any) -> list[Any]:
        """Call every implementation of ``hook_name``; return the non-None results.

        A failing implementation is reported (see the module docstring) and
        skipped.  ``notify`` is the client told about the failure.  For a
        ``firstresult`` hook the calls stop at the first non-None result, and
        the list holds just that one.
        """
        results = []
        clock = time.perf_counter
        first = self.is_firstresult(hook_name)
        previous = self.current_plugin
        for impl in self._impls(hook_name):
            started = clock()
            self.current_plugin = impl.plugin_name
            try:
                result = impl.function(*impl.args(kwargs))
            except Exception as exc:
                self.report_failure(impl.plugin_name, hook_name, exc, notify)
                continue
            except (SystemExit, KeyboardInterrupt) as exc:
                _stopping(impl.plugin_name, hook_name, exc)
                raise
            finally:
                self.current_plugin = previous
                elapsed = clock() - started
                if elapsed > self.slow_hook_seconds:
                    self.report_slow(impl.plugin_name, hook_name, elapsed)
            if self.trace:
                log.debug("hook %s in plugin %r -> %r", hook_name, impl.plugin_name, result)
            if result is not None:
                results.append(result)
                if first:
                    break
        return results

    def call_first(self, hook_name: str, notify: Client | None = None, **kwargs: Any) -> Any:
        """The first non-None result of ``hook_name`` (newest plugin first), or None."""
        impls = self._impls(hook_name)
        if not impls:
            return None
        if len(impls) == 1 and not self.trace:
            # The common case, per chat line: only the default answers.  run_guarded's
            # rails, inlined (a hook call per message is the hot path).
            impl = impls[0]
            previous = self.current_plugin
            self.current_plugin = impl.plugin_name
            started = time.perf_counter()
            try:
                return impl.function(*impl.args(kwargs))
            except Exception as exc:
                self.report_failure(impl.plugin_name, hook_name, exc, notify)
                return None
            except (SystemExit, KeyboardInterrupt) as exc:
                _stopping(impl.plugin_name, hook_name, exc)
                raise
            finally:
                self.current_plugin = previous
                elapsed = time.perf_counter() - started
                if elapsed > self.slow_hook_seconds:
                    self.report_slow(impl.plugin_name, hook_name, elapsed)
        for result in self.call(hook_name, notify, **kwargs):
            return result
        return None

    def run_guarded(
        self,
        plugin: str | None,
        label: str,
        function: Callable[..., Any],
        *args: Any,
        notify: Client | None = None,
        passthrough: tuple[type[BaseException], ...] = (),
    ) -> Any:
        """Call ``function(*args)`` for ``plugin`` with the same guard rails as a hook.

        Exceptions listed in ``passthrough`` (a command's ``UsageError``, a
        filter's ``Reject``) are part of the API and propagate; anything else is
        a plugin failure and returns None.  ``SystemExit`` and
        ``KeyboardInterrupt`` always propagate.
        """
        started = time.perf_counter()
        previous = self.current_plugin
        self.current_plugin = plugin
        try:
            return function(*args)
        except passthrough:
            raise
        except Exception as exc:
            self.report_failure(plugin or "?", label, exc, notify)
            return None
        except (SystemExit, KeyboardInterrupt) as exc:
            _stopping(plugin or "?", label, exc)
            raise
        finally:
            self.current_plugin = previous
            elapsed = time.perf_counter() - started
            if elapsed > self.slow_hook_seconds:
                self.report_slow(plugin or "?", label, elapsed)
            if self.trace:
                log.debug("%s in plugin %r finished in %.6f s", label, plugin, elapsed)

    # -- timers --------------------------------------------------------------

    def owner_of(self, callback: Callable[..., Any]) -> str | None:
        """The plugin that defines ``callback`` (by module), or None."""
        return self._module_owner(_defining_module(callback))

    def _module_owner(self, module: str | None) -> str | None:
        """The plugin whose code ``module`` is (a plugin's package counts), or None."""
        owners = self._module_owners
        if owners is None:
            owners = {}
            for info in self.infos.values():
                plugin = info.plugin
                name = plugin.__name__ if isinstance(plugin, types.ModuleType) else (
                    type(plugin).__module__
                )
                owners.setdefault(name, info.name)
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
        if threading.get_ident() == self._loop_thread and self.current_plugin is not None:
            return self.current_plugin
        return getattr(_worker, "plugin", None) or self.calling_plugin()

    def calling_plugin(self) -> str | None:
        """The plugin whose code called into chatd here (the nearest plugin frame on
        this thread's stack), or None: for calls that can come from any thread."""
        frame = sys._getframe(1)
        for _ in range(32):
            if frame is None:
                break
            owner = self._module_owner(frame.f_globals.get("__name__"))
            if owner is not None:
                return owner
            frame = frame.f_back  # type: ignore[assignment]
        return None

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> PluginTimer:
        """A timer owned by the running plugin (see the module docstring)."""
        if self._scheduler is None:
            raise RuntimeError("the plugin host has no event loop yet (PluginHost.bind)")
        owner = self.current_plugin or self.owner_of(callback)
        timer = PluginTimer(self, owner, callback, args)
        if self._shut_down or (owner in self.infos and self.infos[owner].disabled):
            timer.cancelled = True
            return timer
        timer._timer = self._scheduler.call_later(delay, self._fire, timer)
        self._timers.add(owner, timer)
        return timer

    def _fire(self, timer: PluginTimer) -> None:
        if timer.cancelled:
            return
        timer.cancelled = True
        self._forget_timer(timer)
        label = f"timer {_callable_name(timer.callback)}"
        self.run_guarded(timer.plugin, label, timer.callback, *timer.args)

    def _forget_timer(self, timer: PluginTimer) -> None:
        self._timers.forget(timer.plugin, timer)

    def timers(self, plugin: str | None) -> list[PluginTimer]:
        """The pending timers of ``plugin``."""
        return self._timers.of(plugin)

    def cancel_timers(self, plugin: str | None = None, *, every: bool = False) -> int:
        """Cancel ``plugin``'s pending timers (``every``: all plugins'); returns how many."""
        return self._timers.cancel(plugin, every=every)

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        """From any thread: run ``callback(*args)`` on the loop, guarded, owned by a plugin:
        the one whose worker task posts it, else the one whose code calls this, else the
        one defining ``callback`` (through partials and bound methods)."""
        if self._scheduler is None:
            raise RuntimeError("the plugin host has no event loop yet (PluginHost.bind)")
        owner = self.acting_plugin() or self.owner_of(callback)
        self._scheduler.call_soon_threadsafe(self._run_from_thread, owner, callback, args)

    def _run_from_thread(self, owner: str | None, callback: Callable[..., Any],
                         args: tuple[Any, ...]) -> None:
        info = self.infos.get(owner) if owner is not None else None
        if self._shut_down or (info is not None and info.disabled):
            return  # the plugin is gone: its late results have nowhere to go
        self.run_guarded(owner, f"call_soon_threadsafe {_callable_name(callback)}",
                         callback, *args)

    # -- worker threads ----------------------------------------------------------------

    def run_in_thread(self, fn: Callable[..., Any], *args: Any,
                      callback: Callable[[Any], Any] | None = None,
                      on_error: Callable[[BaseException], Any] | None = None) -> PluginTask:
        """Run ``fn(*args)`` on a worker thread; hand the result to ``callback`` on the loop.

        The task belongs to the plugin running now (or the one defining ``fn``).
        ``callback(result)`` and ``on_error(exception)`` run on the loop with the
        guard rails of a hook; an exception with no ``on_error`` is a failure of
        the plugin (logged with its name, counted by its breaker).  Cancelled,
        with nothing handed back, when the plugin is disabled, reloaded or shut
        down.
        """
        if self._scheduler is None:
            raise RuntimeError("the plugin host has no event loop yet (PluginHost.bind)")
        owner = self.current_plugin or self.owner_of(fn)
        task = PluginTask(self, owner, fn, args, callback, on_error)
        if self._shut_down or (owner in self.infos and self.infos[owner].disabled):
            task.cancelled = True
            return task
        if self._pool is None:
            self._pool = _WorkerPool(self.worker_threads)
        self._tasks.add(owner, task)
        self._pool.submit(functools.partial(self._work, task))
        return task

    def _work(self, task: PluginTask) -> None:
        """On a worker thread: run the task's function, post the outcome to the loop."""
        if task.cancelled:
            return
        _worker.plugin = task.plugin  # what call_soon_threadsafe from inside fn belongs to
        try:
            result, error = task.fn(*task.args), None
        except BaseException as exc:  # even SystemExit: a worker thread cannot stop
            result, error = None, exc  # the server; it is the plugin's failure, reported
        finally:
            _worker.plugin = None
        scheduler = self._scheduler
        if scheduler is not None and not task.cancelled:
            scheduler.call_soon_threadsafe(self._finish, task, result, error)

    def _finish(self, task: PluginTask, result: Any, error: BaseException | None) -> None:
        """On the loop: hand the outcome of ``task`` to its callbacks, guarded."""
        self._forget_task(task)
        info = self.infos.get(task.plugin) if task.plugin is not None else None
        if task.cancelled or self._shut_down or (info is not None and info.disabled):
            return
        task.cancelled = task.done = True
        name = _callable_name(task.fn)
        if error is not None:
            if task.on_error is None:
                self.report_failure(task.plugin or "?", f"run_in_thread {name}", error)
            else:
                self.run_guarded(task.plugin, f"run_in_thread {name} on_error", task.on_error,
                                 error)
        elif task.callback is not None:
            self.run_guarded(task.plugin, f"run_in_thread {name} callback", task.callback,
                             result)

    def _forget_task(self, task: PluginTask) -> None:
        self._tasks.forget(task.plugin, task)

    def tasks(self, plugin: str | None) -> list[PluginTask]:
        """The worker-thread tasks of ``plugin`` whose outcome has not been handed back."""
        return self._tasks.of(plugin)

    def cancel_tasks(self, plugin: str | None = None, *, every: bool = False) -> int:
        """Cancel ``plugin``'s pending tasks (``every``: all plugins'); returns how many."""
        return self._tasks.cancel(plugin, every=every)

    # -- state across a reload -------------------------------------------------------

    def save_reload_state(self) -> dict[str, Any]:
        """Ask every plugin about to be reloaded away what its next copy should get
        (``chatd_reload_save``); returns the non-None answers by plugin name."""
        saved: dict[str, Any] = {}
        for impl in self._impls("chatd_reload_save"):
            state = self.run_guarded(impl.plugin_name, "chatd_reload_save", impl.function,
                                     *impl.args({"server": self.server}))
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
                self.run_guarded(impl.plugin_name, "chatd_reload_restore", impl.function,
                                 *impl.args(kwargs))

    def shutdown(self) -> None:
        """Unload every plugin: ``chatd_shutdown`` once each, then cancel their timers."""
        if self._shut_down:
            return
        self.call("chatd_shutdown", server=self.server)
        self._shut_down = True
        self.cancel_timers(every=True)
        self.cancel_tasks(every=True)
        if self._pool is not None:
            self._pool.stop()
            self._pool = None

    def reopen(self) -> None:
        """Undo :meth:`shutdown` (a reload failed and these plugins start again)."""
        self._shut_down = False

    @property
    def is_shut_down(self) -> bool:
        return self._shut_down

    def report_slow(self, plugin: str, hook_name: str, elapsed: float) -> None:
        """A call held the loop too long: everybody waited for it."""
        self.slow_counts[plugin] = self.slow_counts.get(plugin, 0) + 1
        plugin_log.warning(
            "%s in plugin %r took %.3f s (limit %.3f s): the whole server waited",
            hook_name, plugin, elapsed, self.slow_hook_seconds,
        )
        # A plugin that keeps stalling the loop is as harmful as one that keeps
        # raising: both count towards the circuit breaker.
        self._count_towards_breaker(plugin, time.monotonic())

    def call_strict(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call every implementation and let the first exception propagate.

        Used at startup, where a broken plugin must stop the server early with a
        clear message rather than fail at the first message.
        """
        results = []
        for impl in self._impls(hook_name):
            try:
                result = impl.function(*impl.args(kwargs))
            except ConfigError:
                raise  # already says which file, key and line
            except Exception as exc:
                raise PluginLoadError(
                    f"plugin {impl.plugin_name!r} failed in {hook_name}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if result is not None:
                results.append(result)
        return results

    def implementations(self, hook_name: str) -> tuple[_Impl, ...]:
        """The implementations in call order (``.plugin_name``, ``.function``, ``.argnames``).

        For hooks with their own calling rules (``chatd_filter_message``).  The
        tuple is cached until the next registration, so this is cheap per line.
        """
        return self._impls(hook_name)

    def report_failure(
        self, plugin: str, hook_name: str, exc: BaseException, notify: Client | None = None
    ) -> None:
        """Log a plugin failure (rate-limited), count it, and tell ``notify``."""
        self.error_counts[plugin] = self.error_counts.get(plugin, 0) + 1
        key = (plugin, hook_name, type(exc).__name__)
        now = time.monotonic()
        last = self._last_logged.get(key)
        if last is None or now - last >= _ERROR_LOG_INTERVAL:
            self._last_logged[key] = now
            plugin_log.error(
                "plugin %r failed in %s (%s so far); the server goes on",
                plugin,
                hook_name,
                plural(self.error_counts[plugin], "failure"),
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        if notify is not None and notify.connected:
            # The server says this, not the failing plugin (whose call is still current).
            running, self.current_plugin = self.current_plugin, None
            try:
                notify.error(f"internal error in plugin {plugin!r}; the server goes on")
            finally:
                self.current_plugin = running
        self._count_towards_breaker(plugin, now)

    def _count_towards_breaker(self, plugin: str, now: float) -> None:
        info = self.infos.get(plugin)
        if self.max_failures <= 0 or info is None or info.source == "builtin":
            return  # built-ins are the server itself: reported, never switched off
        recent = self._recent_failures.setdefault(plugin, deque())
        recent.append(now)
        while recent and now - recent[0] > self.failure_window:
            recent.popleft()
        if len(recent) >= self.max_failures:
            reason = (
                f"{plural(len(recent), 'failure')} within {self.failure_window:g} s "
                f"(plugin_host.max_failures is {self.max_failures})"
            )
            self.disable(plugin, reason)

    def disable(self, plugin: str, reason: str) -> None:
        """Unload ``plugin`` until the next reload: ``chatd_shutdown``, timers, hooks, commands."""
        info = self.infos.get(plugin)
        if info is None or info.disabled:
            return
        info.disabled = reason
        self.cancel_timers(plugin)
        for impl in self._impls("chatd_shutdown"):
            if impl.plugin_name == plugin:
                kwargs = {"server": self.server}
                self.run_guarded(plugin, "chatd_shutdown", impl.function,
                                 *impl.args(kwargs))
        self.cancel_timers(plugin)  # any its shutdown made
        self.cancel_tasks(plugin)
        self.pm.unregister(info.plugin)
        self._impl_cache.clear()
        plugin_log.error("plugin %r disabled: %s", plugin, reason)
        if self.on_disable is not None:
            self.on_disable(plugin, reason)


def _refuse_if_others_can_write(path: Path) -> None:
    """Plugin code that other users can change is code they can run as chatd.

    sshd's StrictModes rule: a plugin folder or file writable by everyone is
    refused, and one writable by its group unless that group is the owner's own
    (the user-private-group convention of umask 002 systems).
    """
    info = path.stat()
    loose = bool(info.st_mode & 0o002)
    if not loose and info.st_mode & 0o020:
        try:
            loose = pwd.getpwuid(info.st_uid).pw_gid != info.st_gid
        except KeyError:  # an owner with no passwd entry: nobody vouches for the group
            loose = True
    if loose:
        kind = "folder" if path.is_dir() else "file"
        raise PluginLoadError(
            f"plugin {kind} {str(path)!r} is writable by other users (mode "
            f"{oct(info.st_mode & 0o777)}): anyone who can write it can run code as chatd; "
            f"chmod go-w {str(path)!r}"
        )


class _FreshSourceLoader(importlib.machinery.SourceFileLoader):
    """Always compile plugin files from source, never from ``__pycache__``.

    The bytecode cache is keyed on the file's mtime in whole seconds and its
    size, so an edit of the same size within the same second would make a
    reload run the old code.  Plugins are small; compiling them is cheap.
    """

    def path_stats(self, path: str) -> dict[str, float]:
        raise OSError("plugin files bypass the bytecode cache")


def _import_file(stem: str, path: Path, *, package: bool) -> types.ModuleType:
    """Import a plugin file as ``chatd_plugins.<stem>`` and keep it in sys.modules."""
    if _DIR_PLUGIN_PACKAGE not in sys.modules:
        parent = types.ModuleType(_DIR_PLUGIN_PACKAGE)
        parent.__path__ = []
        sys.modules[_DIR_PLUGIN_PACKAGE] = parent
    module_name = f"{_DIR_PLUGIN_PACKAGE}.{stem}"
    spec = importlib.util.spec_from_file_location(
        module_name,
        path,
        loader=_FreshSourceLoader(module_name, str(path)),
        submodule_search_locations=[str(path.parent)] if package else None,
    )
    if spec is None or spec.loader is None:
        raise PluginLoadError(f"cannot load plugin file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        del sys.modules[module_name]
        raise PluginLoadError(
            f"plugin file {path} failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    return module


def plugin_modules() -> dict[str, types.ModuleType]:
    """The plugin files' modules now in ``sys.modules`` (``chatd_plugins.*``).

    A reload imports the new files under the same names, replacing these; if the
    reload then fails, :func:`restore_plugin_modules` puts them back, so code that
    looks a plugin module up by name keeps finding the one that is running.
    """
    prefix = _DIR_PLUGIN_PACKAGE + "."
    return {name: module for name, module in sys.modules.items()
            if name == _DIR_PLUGIN_PACKAGE or name.startswith(prefix)}


def restore_plugin_modules(saved: dict[str, types.ModuleType]) -> None:
    """Make the ``chatd_plugins.*`` entries of ``sys.modules`` exactly ``saved`` again."""
    for name in plugin_modules().keys() - saved.keys():
        del sys.modules[name]
    sys.modules.update(saved)


def _one_line(exc: BaseException) -> str:
    """pluggy's validation messages span lines; startup errors are one line."""
    return "; ".join(part.strip() for part in str(exc).splitlines() if part.strip())


def _chatd_version() -> str:
    return __version__
