"""The guard rails around every call into plugin code: one helper, :meth:`Guard.run`.

Hooks, commands, filters, timers, worker-task callbacks and callbacks posted from
threads all go through :meth:`Guard.run`, so they share one set of rules
(Tornado's: isolate user-code failures at the loop boundary, log them to a
"user code" logger, keep serving):

* the call is attributed: :attr:`Guard.current_plugin` names the plugin while
  it runs (whose timer a ``call_later`` makes, whose breaker a failure counts
  towards, whose marker a notice carries), and is put back afterwards;
* an exception is a failure of that plugin: logged with its name, the label
  (the hook, ``command /x``, ``timer f``) and the traceback — repeats of the
  same failure at most once a minute — counted, and the client that caused it
  (``notify``) told in one ``! ...`` line; the call returns None and the server
  goes on.  Exceptions that are part of the API (a command's ``UsageError``, a
  filter's ``Reject``) are named in ``passthrough`` and propagate;
* every call is timed: one that holds the loop longer than
  ``slow_hook_seconds`` is logged with the plugin and the time (the loop is
  single-threaded, so a stalled call cannot be pre-empted, only reported);
* a plugin that fails (raises or overruns) ``max_failures`` times within
  ``failure_window_seconds`` trips its circuit breaker: ``on_trip`` (the host's
  ``disable``) unloads it.  Plugins that are not ``breakable`` (the built-ins:
  they are the server itself) are reported but never switched off;
* ``SystemExit`` and ``KeyboardInterrupt`` are never swallowed: a plugin that
  calls ``sys.exit()`` stops the server, with a log line saying so.

The guard knows nothing of pluggy, plugins' modules or the loop; the host hands
it the two facts it needs (``breakable``, ``on_trip``).  :meth:`Guard.run` is on
the path of every chat line (the route, the filters, ``chatd_message``), so it
takes the arguments as the tuple the caller already has and reads the clock
twice: nothing else.  ``--trace-hooks`` (every call logged with its result and
time) is :class:`TracingGuard`, so a server that does not trace pays nothing
for it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from ..templates import plural

log = logging.getLogger("chatd.plugins")
#: Plugin failures go to their own logger, so operators can route "user code" errors.
plugin_log = logging.getLogger("chatd.plugin_errors")

_ERROR_LOG_INTERVAL = 60.0
_clock = time.perf_counter


class Notifiable(Protocol):
    """Who is told that a plugin failed on their behalf (a chat ``Client``)."""

    @property
    def connected(self) -> bool: ...

    def error(self, text: str, *, code: str = "error") -> None: ...


class Guard:
    """Runs plugin code with the guard rails; keeps the failure and overrun counts."""

    def __init__(
        self,
        *,
        slow_hook_seconds: float = 0.1,
        max_failures: int = 5,
        failure_window: float = 60.0,
        breakable: Callable[[str], bool] = lambda _plugin: False,
        on_trip: Callable[[str, str], None] = lambda _plugin, _reason: None,
    ) -> None:
        self.slow_hook_seconds = slow_hook_seconds
        self.max_failures = max_failures
        self.failure_window = failure_window
        self._breakable = breakable
        self._on_trip = on_trip
        #: The plugin whose hook, command or timer is running now (None: the core).
        self.current_plugin: str | None = None
        #: Failures per plugin name, for stats and operators.
        self.error_counts: dict[str, int] = {}
        #: Calls slower than ``slow_hook_seconds``, per plugin name.
        self.slow_counts: dict[str, int] = {}
        self._last_logged: dict[tuple[str, str, str], float] = {}
        self._recent_failures: dict[str, deque[float]] = {}

    def run(
        self,
        plugin: str | None,
        label: str,
        function: Callable[..., Any],
        args: tuple[Any, ...],
        notify: Notifiable | None = None,
        passthrough: tuple[type[BaseException], ...] = (),
    ) -> Any:
        """``function(*args)`` on behalf of ``plugin``, with the guard rails.

        Returns what it returns, or None if it failed (reported against
        ``plugin``, ``notify`` told).  Exceptions in ``passthrough``, and
        ``SystemExit`` and ``KeyboardInterrupt``, propagate.
        """
        started = _clock()
        previous = self.current_plugin
        self.current_plugin = plugin
        try:
            return function(*args)
        except BaseException as exc:
            if not self.contained(plugin, label, exc, notify, passthrough):
                raise
            return None
        finally:
            self.current_plugin = previous
            elapsed = _clock() - started
            if elapsed > self.slow_hook_seconds:
                self.report_slow(plugin or "?", label, elapsed)

    def contained(
        self,
        plugin: str | None,
        label: str,
        exc: BaseException,
        notify: Notifiable | None = None,
        passthrough: tuple[type[BaseException], ...] = (),
    ) -> bool:
        """What :meth:`run` does with an exception a plugin's call raised: True if it
        was a failure of the plugin, now reported (the call's result is None); False
        if the caller must raise it on (one in ``passthrough``, ``SystemExit``,
        ``KeyboardInterrupt``, anything that is not an ``Exception``).  Called while
        the plugin's call is still current.  For the per-line hook loops of the host
        (:meth:`chatd.plugins.host.PluginHost.call`), which run the guard's rules
        inline rather than through :meth:`run`."""
        if passthrough and isinstance(exc, passthrough):
            return False
        if isinstance(exc, Exception):
            self.report_failure(plugin or "?", label, exc, notify)
            return True
        if isinstance(exc, SystemExit | KeyboardInterrupt):
            plugin_log.critical(
                "plugin %r raised %s in %s: the server stops (SystemExit and "
                "KeyboardInterrupt are not contained)", plugin or "?", type(exc).__name__, label,
            )
        return False

    def report_failure(
        self, plugin: str, label: str, exc: BaseException, notify: Notifiable | None = None
    ) -> None:
        """Log a plugin failure (rate-limited), count it, and tell ``notify``."""
        self.error_counts[plugin] = self.error_counts.get(plugin, 0) + 1
        key = (plugin, label, type(exc).__name__)
        now = time.monotonic()
        last = self._last_logged.get(key)
        if last is None or now - last >= _ERROR_LOG_INTERVAL:
            self._last_logged[key] = now
            plugin_log.error(
                "plugin %r failed in %s (%s so far); the server goes on",
                plugin,
                label,
                plural(self.error_counts[plugin], "failure"),
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        if notify is not None and notify.connected:
            # The server says this, not the failing plugin (whose call is still current).
            running, self.current_plugin = self.current_plugin, None
            try:
                notify.error(f"internal error in plugin {plugin!r}; the server goes on",
                             code="internal_error")
            finally:
                self.current_plugin = running
        self._count_towards_breaker(plugin, now)

    def report_slow(self, plugin: str, label: str, elapsed: float) -> None:
        """A call held the loop too long: everybody waited for it."""
        self.slow_counts[plugin] = self.slow_counts.get(plugin, 0) + 1
        plugin_log.warning(
            "%s in plugin %r took %.3f s (limit %.3f s): the whole server waited",
            label, plugin, elapsed, self.slow_hook_seconds,
        )
        # A plugin that keeps stalling the loop is as harmful as one that keeps
        # raising: both count towards the circuit breaker.
        self._count_towards_breaker(plugin, time.monotonic())

    def _count_towards_breaker(self, plugin: str, now: float) -> None:
        if self.max_failures <= 0 or not self._breakable(plugin):
            return
        recent = self._recent_failures.setdefault(plugin, deque())
        recent.append(now)
        while recent and now - recent[0] > self.failure_window:
            recent.popleft()
        if len(recent) >= self.max_failures:
            reason = (
                f"{plural(len(recent), 'failure')} within {self.failure_window:g} s "
                f"(plugin_host.max_failures is {self.max_failures})"
            )
            self._on_trip(plugin, reason)


class TracingGuard(Guard):
    """The guard of ``chatd --trace-hooks``: every call is also logged at DEBUG with
    its result and its time.  A class of its own, so that the guard of a server
    that does not trace pays nothing per call for the option."""

    def run(
        self,
        plugin: str | None,
        label: str,
        function: Callable[..., Any],
        args: tuple[Any, ...],
        notify: Notifiable | None = None,
        passthrough: tuple[type[BaseException], ...] = (),
    ) -> Any:
        started = _clock()
        result = None
        try:
            result = super().run(plugin, label, function, args, notify, passthrough)
            return result
        finally:
            log.debug("%s in plugin %r -> %r, finished in %.6f s", label, plugin, result,
                      _clock() - started)
