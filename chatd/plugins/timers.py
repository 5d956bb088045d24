"""A plugin's work for later: timers, callbacks handed in from threads, worker tasks.

Timers are a plugin's: :meth:`PendingWork.call_later` (``server.call_later``)
makes a :class:`PluginTimer` owned by the plugin running at that moment (or the
one whose module defines the callback: see :mod:`chatd.plugins.owners`).  Its
callback runs through the guard like a hook, and the plugin's timers are
cancelled when it is disabled, reloaded or shut down.

Blocking work is a plugin's too: :meth:`PendingWork.run_in_thread`
(``server.run_in_thread``) runs a function on a small pool of worker threads
and hands its result (or its exception) back to a callback on the loop, guarded
and attributed like a timer; the plugin's pending work is dropped when it is
disabled, reloaded or shut down.  Callbacks handed in from any thread
(``call_soon_threadsafe``) belong to the plugin whose worker posted them, else
to the plugin whose code calls in, else to the plugin that defines them.

What each plugin has pending is kept by owner (:class:`_Owned`), so a plugin
that leaves leaves nothing behind, and a plugin that is gone (``gone(owner)``:
disabled, or the host shut down) gets nothing new started and no late result
handed back.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .owners import working_for

if TYPE_CHECKING:
    from .guard import Guard
    from .owners import Owners

log = logging.getLogger("chatd.plugins")


class Scheduler:
    """What plugin timers need of the event loop (the reactor)."""

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

    __slots__ = ("_pending", "_timer", "args", "callback", "cancelled", "plugin")

    def __init__(self, pending: _Owned[PluginTimer], plugin: str | None,
                 callback: Callable[..., Any], args: tuple[Any, ...], *,
                 loop: Scheduler | None, delay: float,
                 fire: Callable[[PluginTimer], None]) -> None:
        """Put the timer on ``loop``: ``fire(self)`` runs in ``delay`` seconds.  With no
        ``loop`` (its plugin is gone) it is born cancelled."""
        self._pending = pending
        self.plugin = plugin
        self.callback = callback
        self.args = args
        self.cancelled = loop is None
        self._timer: Any = None
        if loop is not None:
            self._timer = loop.call_later(delay, fire, self)
            pending.add(plugin, self)

    @property
    def when(self) -> float:
        return self._timer.when if self._timer is not None else 0.0

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        if self._timer is not None:
            self._timer.cancel()
        self._pending.forget(self.plugin, self)

    def __repr__(self) -> str:
        state = "done" if self.cancelled else "pending"
        return f"<PluginTimer {self.plugin!r} {_callable_name(self.callback)} {state}>"


class PluginTask:
    """Work a plugin runs on a worker thread (``server.run_in_thread``).

    ``cancel()`` drops it: not started, it never runs; running, its outcome is
    not handed back.  ``done`` is True once its callback (or ``on_error``) was
    called; ``cancelled`` once it was cancelled or its outcome handed back.
    """

    __slots__ = ("_pending", "args", "callback", "cancelled", "done", "fn", "on_error",
                 "plugin")

    def __init__(self, pending: _Owned[PluginTask], plugin: str | None, fn: Callable[..., Any],
                 args: tuple[Any, ...], callback: Callable[[Any], Any] | None,
                 on_error: Callable[[BaseException], Any] | None) -> None:
        self._pending = pending
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
            self._pending.forget(self.plugin, self)

    def __repr__(self) -> str:
        state = "done" if self.done else "cancelled" if self.cancelled else "pending"
        return f"<PluginTask {self.plugin!r} {_callable_name(self.fn)} {state}>"


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


class PendingWork:
    """Every plugin's timers and worker tasks, run through the guard when due."""

    def __init__(self, guard: Guard, owners: Owners, gone: Callable[[str | None], bool], *,
                 worker_threads: int = 4) -> None:
        self._guard = guard
        self._owners = owners
        self._gone = gone  # whether a plugin may start no more work (or the host is down)
        self._scheduler: Scheduler | None = None
        self._timers: _Owned[PluginTimer] = _Owned()
        self._tasks: _Owned[PluginTask] = _Owned()
        self._pool: _WorkerPool | None = None
        self.worker_threads = worker_threads

    def bind(self, scheduler: Scheduler) -> None:
        """The loop the timers and handed-back results run on."""
        self._scheduler = scheduler

    def _bound(self) -> Scheduler:
        if self._scheduler is None:
            raise RuntimeError("the plugin host has no event loop yet (PluginHost.bind)")
        return self._scheduler

    # -- timers --------------------------------------------------------------

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> PluginTimer:
        """A timer owned by the running plugin (see the module docstring)."""
        scheduler = self._bound()
        owner = self._guard.current_plugin or self._owners.owner_of(callback)
        loop = None if self._gone(owner) else scheduler
        return PluginTimer(self._timers, owner, callback, args, loop=loop, delay=delay,
                           fire=self._fire)

    def _fire(self, timer: PluginTimer) -> None:
        if timer.cancelled:
            return
        timer.cancelled = True  # it has run
        self._timers.forget(timer.plugin, timer)
        label = f"timer {_callable_name(timer.callback)}"
        self._guard.run(timer.plugin, label, timer.callback, timer.args)

    def timers(self, plugin: str | None) -> list[PluginTimer]:
        """The pending timers of ``plugin``."""
        return self._timers.of(plugin)

    def cancel_timers(self, plugin: str | None = None, *, every: bool = False) -> int:
        """Cancel ``plugin``'s pending timers (``every``: all plugins'); returns how many."""
        return self._timers.cancel(plugin, every=every)

    # -- callbacks from other threads ----------------------------------------

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        """From any thread: run ``callback(*args)`` on the loop, guarded, owned by a plugin:
        the one whose worker task posts it, else the one whose code calls this, else the
        one defining ``callback`` (through partials and bound methods)."""
        scheduler = self._bound()
        owner = self._owners.acting_plugin() or self._owners.owner_of(callback)
        scheduler.call_soon_threadsafe(self._run_from_thread, owner, callback, args)

    def _run_from_thread(self, owner: str | None, callback: Callable[..., Any],
                         args: tuple[Any, ...]) -> None:
        if self._gone(owner):
            return  # the plugin is gone: its late results have nowhere to go
        self._guard.run(owner, f"call_soon_threadsafe {_callable_name(callback)}",
                        callback, args)

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
        self._bound()
        owner = self._guard.current_plugin or self._owners.owner_of(fn)
        task = PluginTask(self._tasks, owner, fn, args, callback, on_error)
        if self._gone(owner):
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
        with working_for(task.plugin):  # what call_soon_threadsafe from inside fn belongs to
            try:
                result, error = task.fn(*task.args), None
            except BaseException as exc:  # even SystemExit: a worker thread cannot stop
                result, error = None, exc  # the server; it is the plugin's failure, reported
        scheduler = self._scheduler
        if scheduler is not None and not task.cancelled:
            scheduler.call_soon_threadsafe(self._finish, task, result, error)

    def _finish(self, task: PluginTask, result: Any, error: BaseException | None) -> None:
        """On the loop: hand the outcome of ``task`` to its callbacks, guarded."""
        self._tasks.forget(task.plugin, task)
        if task.cancelled or self._gone(task.plugin):
            return
        task.cancelled = task.done = True
        name = _callable_name(task.fn)
        if error is not None:
            if task.on_error is None:
                self._guard.report_failure(task.plugin or "?", f"run_in_thread {name}", error)
            else:
                self._guard.run(task.plugin, f"run_in_thread {name} on_error", task.on_error,
                                (error,))
        elif task.callback is not None:
            self._guard.run(task.plugin, f"run_in_thread {name} callback", task.callback,
                            (result,))

    def tasks(self, plugin: str | None) -> list[PluginTask]:
        """The worker-thread tasks of ``plugin`` whose outcome has not been handed back."""
        return self._tasks.of(plugin)

    def cancel_tasks(self, plugin: str | None = None, *, every: bool = False) -> int:
        """Cancel ``plugin``'s pending tasks (``every``: all plugins'); returns how many."""
        return self._tasks.cancel(plugin, every=every)

    def stop(self) -> None:
        """Cancel everyone's timers and tasks, and let the worker threads end."""
        self.cancel_timers(every=True)
        self.cancel_tasks(every=True)
        if self._pool is not None:
            self._pool.stop()
            self._pool = None


def _callable_name(callback: Callable[..., Any]) -> str:
    return getattr(callback, "__qualname__", None) or repr(callback)
