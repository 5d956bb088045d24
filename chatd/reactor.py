"""The event loop: one edge-triggered epoll object that owns every socket.

Theory of operation
-------------------
Each pass of :meth:`Reactor.run` ("a tick") does, in order:

1. ``epoll.poll()`` with a timeout that is 0 when work is already queued on the
   ready list or deferred to this tick, else the time to the next timer (or forever).
   The tick's read budget (:attr:`Reactor.tick_read_bytes`) starts afresh.
2. Run the reads deferred by the previous tick (:meth:`defer_read`), oldest first,
   each an equal share of half the tick's read budget: a connection put off once goes before
   any fresh event, so nobody is starved by the others' new traffic, and the other
   half is kept for the fresh events, so nobody's one line waits for a backlog.
3. Dispatch each ``(fd, mask)`` to the handler registered for ``fd``.  Events for
   an fd that was unregistered earlier *in the same batch* are skipped, even if
   the number was already reused by a new socket (epoll(7): "If using an event
   cache...").  Then the deferred reads again, with what the events left.
4. Run timers that are due (monotonic clock, a heap, lazily cancelled).
5. Run the ready list: callbacks queued with :meth:`call_soon`.  Anything that
   stopped early under edge-triggering (a read budget, a capped accept batch)
   puts itself here, because no new edge will ever announce the leftovers.
6. Flush: the :meth:`add_before_flush` callbacks run (the room fan-out hands
   the tick's broadcast lines to their recipients), then every object that
   called :meth:`want_flush` since the last tick gets exactly one ``flush()``
   call.  This is where writes are coalesced: a client that received 50
   broadcast lines during this tick gets one ``send()`` (Redis does the same
   in ``beforeSleep``).

No tick does unbounded work: every connection's read shares the tick's read budget
(``tick_read_left``, counted down by the reads themselves), and a read that finds it
spent is deferred to the next tick instead of the ready list (the bytes wait in the
kernel: TCP backpressure).  A burst from a thousand clients is spread over ticks,
each ending with its flush, so everybody else's reply waits for one tick's worth of
work, not for the whole burst.

Signals never run application code inside the handler: ``signal.set_wakeup_fd``
writes the signal number to a socketpair registered in the same epoll set, and
the loop calls the registered callback from step 2 (PEP 475).  Other threads
hand work to the loop the same way (:meth:`Reactor.call_soon_threadsafe`): a
thread-safe queue plus one byte on a second socketpair to wake ``poll()``.

The reactor knows nothing about chat.  Handlers are any object with a
``handle_events(mask: int)`` method; flushables any object with ``flush()``.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import itertools
import logging
import select
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("chatd.reactor")
#: The longest one poll() may sleep: epoll_wait takes int milliseconds (2**31 - 1).
_MAX_POLL_SECONDS = 86400.0

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
EPOLLERR = select.EPOLLERR
EPOLLHUP = select.EPOLLHUP
EPOLLRDHUP = select.EPOLLRDHUP
EPOLLET = select.EPOLLET

#: The one mask a stream socket is registered with, once, for its whole life.
#: Under ET, EPOLLOUT fires only on the not-writable -> writable transition, so
#: leaving it on costs nothing and saves a ``modify()`` per write (nginx model).
STREAM_EVENTS = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET

_MAX_EVENTS = 1024
#: ``tick_read_left`` when the tick's read budget is off (``tick_read_bytes`` 0).
_UNBOUNDED = 1 << 62
#: The least a deferred read is given of the tick's budget when many share it.
_MIN_SHARE = 1024


class EventHandler(Protocol):
    """Anything registered with the reactor for an fd."""

    def handle_events(self, mask: int) -> None: ...


class Flushable(Protocol):
    """Anything that wants one ``flush()`` at the end of the tick."""

    def flush(self) -> None: ...


class Timer:
    """A cancelable handle returned by :meth:`Reactor.call_later`."""

    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        """Stop the callback from running; cheap, the heap entry is dropped lazily."""
        self.cancelled = True
        self.callback = _noop
        self.args = ()


def _noop(*_args: Any) -> None:
    return None


class Reactor:
    """Edge-triggered epoll loop with timers, a ready list, signals and a tick flush."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._epoll = select.epoll()
        self._handlers: dict[int, EventHandler] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._timer_seq = itertools.count()
        self._ready: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._dirty: list[Flushable] = []
        self._before_flush: list[Callable[[], None]] = []
        self._closed_in_batch: set[int] = set()
        self._signal_callbacks: dict[int, Callable[[int], None]] = {}
        self._wakeup_r: socket.socket | None = None
        self._wakeup_w: socket.socket | None = None
        self._old_wakeup_fd: int | None = None
        self._running = False
        self._threadsafe: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._thread_wakeup: tuple[socket.socket, socket.socket] | None = None
        #: Incremented once per loop pass; handy for tests and stats.
        self.ticks = 0
        #: Bytes all connections together may read in one tick (0: no limit); the
        #: server sets it from ``limits.tick_read_bytes``.
        self.tick_read_bytes = 0
        #: What is left of this tick's read budget: readers subtract what they read
        #: and defer themselves (:meth:`defer_read`) once it is spent.
        self.tick_read_left = _UNBOUNDED
        self._deferred: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()

    # -- fd registration -------------------------------------------------

    def register(self, fd: int, handler: EventHandler, events: int = STREAM_EVENTS) -> None:
        """Watch ``fd``; ``handler.handle_events(mask)`` is called on each event."""
        self._epoll.register(fd, events)
        self._handlers[fd] = handler
        # Deliberately not removed from _closed_in_batch: an event still waiting in
        # this batch belongs to the fd's previous owner.  The new socket's own
        # readiness is reported by the next poll (and start() reads at once).

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd``.  Call this *before* closing the socket.

        Any event for this fd still waiting in the current ``poll()`` batch is
        skipped, even if a new socket gets the same number before then.
        """
        if self._handlers.pop(fd, None) is None:
            return
        self._closed_in_batch.add(fd)
        with contextlib.suppress(OSError):  # already closed elsewhere: nothing to undo
            self._epoll.unregister(fd)

    @property
    def handler_count(self) -> int:
        return len(self._handlers)

    def handlers(self) -> list[EventHandler]:
        """Every registered handler, in registration order (a copy)."""
        return list(self._handlers.values())

    # -- scheduling ------------------------------------------------------

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        """Run ``callback(*args)`` after ``delay`` seconds (monotonic clock).

        Returns a :class:`Timer`; ``timer.cancel()`` stops it.
        """
        timer = Timer(self.clock() + max(0.0, delay), callback, args)
        heapq.heappush(self._timers, (timer.when, next(self._timer_seq), timer))
        return timer

    def next_timer(self) -> float | None:
        """When the earliest pending timer is due (the clock's scale), or None."""
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(*args)`` in this tick's ready phase (or the next one).

        This is the ready list: under edge-triggering, anything that stops
        before EAGAIN must come back through here or it is never served again.
        """
        self._ready.append((callback, args))

    def defer_read(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(*args)`` first thing next tick: a read that found this tick's
        read budget spent.  Deferred reads run in the order they were deferred, before
        the next tick's events, so fresh traffic never starves them; the loop does
        not sleep while any waits."""
        self._deferred.append((callback, args))

    @property
    def reads_deferred(self) -> int:
        """How many reads wait for the next tick (for tests and stats)."""
        return len(self._deferred)

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        """From any thread: run ``callback(*args)`` on the loop, soon.

        ``deque.append`` is atomic; the byte written to the wake-up socketpair
        makes a sleeping ``poll()`` return, so the callback does not wait for
        the next unrelated event.
        """
        wakeup = self._thread_wakeup
        if wakeup is None:
            raise RuntimeError("call_soon_threadsafe needs enable_threadsafe() first")
        self._threadsafe.append((callback, args))
        with contextlib.suppress(BlockingIOError, OSError):
            wakeup[1].send(b"\0")

    def enable_threadsafe(self) -> None:
        """Create the wake-up socketpair for :meth:`call_soon_threadsafe` (on the loop)."""
        if self._thread_wakeup is not None:
            return
        r, w = socket.socketpair()
        r.setblocking(False)
        w.setblocking(False)
        self._thread_wakeup = (r, w)
        self.register(r.fileno(), _ThreadWakeupHandler(self), EPOLLIN | EPOLLET)

    def _run_threadsafe(self) -> None:
        assert self._thread_wakeup is not None
        reader = self._thread_wakeup[0]
        while True:
            try:
                if not reader.recv(4096):
                    break
            except (BlockingIOError, InterruptedError):
                break
        queue = self._threadsafe
        for _ in range(len(queue)):
            callback, args = queue.popleft()
            self._run_callback(callback, args)

    def add_before_flush(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` at the end of every tick, just before the write flush.

        For work that batches output over a tick (the room fan-out) and must land
        in the connections' queues before they are flushed.
        """
        self._before_flush.append(callback)

    def want_flush(self, flushable: Flushable) -> None:
        """Ask for one ``flushable.flush()`` at the end of this tick.

        The caller keeps its own "already queued" flag so it is listed once.
        """
        self._dirty.append(flushable)

    # -- signals ---------------------------------------------------------

    def add_signal_handler(self, signum: int, callback: Callable[[int], None]) -> None:
        """Call ``callback(signum)`` from the loop (never from the C handler)."""
        if self._wakeup_r is None:
            self._install_wakeup()
        self._signal_callbacks[signum] = callback
        signal.signal(signum, _wakeup_only)

    def _install_wakeup(self) -> None:
        r, w = socket.socketpair()
        r.setblocking(False)
        w.setblocking(False)
        self._wakeup_r, self._wakeup_w = r, w
        self._old_wakeup_fd = signal.set_wakeup_fd(w.fileno(), warn_on_full_buffer=False)
        self.register(r.fileno(), _WakeupHandler(self), EPOLLIN | EPOLLET)

    def _dispatch_signals(self) -> None:
        assert self._wakeup_r is not None
        while True:
            try:
                data = self._wakeup_r.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            if not data:
                return
            for signum in data:
                callback = self._signal_callbacks.get(signum)
                if callback is not None:
                    self._run_callback(callback, (signum,))

    # -- the loop --------------------------------------------------------

    def stop(self) -> None:
        """Make :meth:`run` return after the current tick (including its flush)."""
        self._running = False

    def run(self) -> None:
        """Run ticks until :meth:`stop` is called."""
        self._running = True
        while self._running:
            self.run_once()

    def run_once(self, max_wait: float | None = None) -> None:
        """One tick: poll, dispatch, timers, ready list, flush."""
        self.ticks += 1
        timeout = self._poll_timeout(max_wait)
        try:
            events = self._epoll.poll(timeout, _MAX_EVENTS)
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            events = []
        budget = self.tick_read_bytes or _UNBOUNDED
        if self._deferred:
            # The reads put off go first, within half the budget: the other half is for
            # this tick's fresh events, so one line from a person is not queued behind a
            # burst's whole backlog.  What the events leave goes back to the deferred.
            fresh = budget // 2
            self.tick_read_left = budget - fresh
            self._run_deferred()
            self.tick_read_left += fresh
        else:
            self.tick_read_left = budget
        closed = self._closed_in_batch
        closed.clear()
        handlers = self._handlers
        for fd, mask in events:
            if fd in closed:
                continue
            handler = handlers.get(fd)
            if handler is None:
                continue
            try:
                handler.handle_events(mask)
            except Exception:
                # Handlers isolate their own failures; this is the last fence so a
                # bug in one connection never stops the loop for everybody.
                log.exception("unhandled error in event handler for fd %d", fd)
        if self._deferred:
            self._run_deferred()  # the budget the events left, if any
        self._run_timers()
        self._run_ready()
        self._flush_dirty()

    def _poll_timeout(self, max_wait: float | None) -> float:
        if self._ready or self._dirty or self._deferred:
            return 0
        timeout = -1.0 if max_wait is None else max_wait
        due = self.next_timer()
        if due is not None:
            until = max(0.0, due - self.clock())
            timeout = until if timeout < 0 else min(timeout, until)
        # epoll_wait's timeout is a C int of milliseconds: a timer further away than
        # that (a plugin's call_later(1e9)) wakes the loop early, never crashes it.
        return min(timeout, _MAX_POLL_SECONDS)

    def _run_timers(self) -> None:
        timers = self._timers
        if not timers:
            return
        now = self.clock()
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)[2]
            if not timer.cancelled:
                timer.cancelled = True  # a fired timer cannot be cancelled again
                self._run_callback(timer.callback, timer.args)

    def _run_deferred(self) -> None:
        # Oldest first, while the budget lasts; the rest keep their places at the front,
        # ahead of whatever this tick's events defer.  Each read gets an equal share of
        # what is left (at least _MIN_SHARE): a hundred connections with a backlog are
        # all served a little every tick, so a person's one line among them waits a
        # tick or two, not for the backlog of all those ahead of it.  A read cut by
        # its share sees the budget spent, and goes to the back (round robin).
        deferred = self._deferred
        pool = self.tick_read_left
        share = max(pool // len(deferred), _MIN_SHARE)
        for _ in range(len(deferred)):
            if pool <= 0:
                break
            callback, args = deferred.popleft()
            given = self.tick_read_left = share if share < pool else pool
            self._run_callback(callback, args)
            pool -= given - self.tick_read_left
        self.tick_read_left = pool

    def _run_ready(self) -> None:
        # Only what was queued before this phase started: a callback that
        # re-queues itself (a read budget hit again) waits for the next tick, so
        # freshly arrived events get their turn in between.
        ready = self._ready
        for _ in range(len(ready)):
            callback, args = ready.popleft()
            self._run_callback(callback, args)

    def _flush_dirty(self) -> None:
        # A flush may close a connection whose departure is broadcast, which
        # dirties others: loop until nothing new was queued.
        while True:
            for callback in self._before_flush:
                self._run_callback(callback, ())
            if not self._dirty:
                return
            dirty, self._dirty = self._dirty, []
            for flushable in dirty:
                try:
                    flushable.flush()
                except Exception:
                    log.exception("unhandled error while flushing %r", flushable)

    def _run_callback(self, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("unhandled error in callback %r", callback)

    # -- teardown --------------------------------------------------------

    def close(self) -> None:
        """Release the epoll fd and restore the previous wakeup fd."""
        if self._wakeup_r is not None:
            self.unregister(self._wakeup_r.fileno())
            with contextlib.suppress(ValueError, OSError):
                signal.set_wakeup_fd(
                    self._old_wakeup_fd if self._old_wakeup_fd is not None else -1
                )
            self._wakeup_r.close()
            if self._wakeup_w is not None:
                self._wakeup_w.close()
            self._wakeup_r = self._wakeup_w = None
        if self._thread_wakeup is not None:
            self.unregister(self._thread_wakeup[0].fileno())
            for sock in self._thread_wakeup:
                sock.close()
            self._thread_wakeup = None
        self._epoll.close()


class _WakeupHandler:
    __slots__ = ("_reactor",)

    def __init__(self, reactor: Reactor) -> None:
        self._reactor = reactor

    def handle_events(self, mask: int) -> None:
        self._reactor._dispatch_signals()


class _ThreadWakeupHandler:
    __slots__ = ("_reactor",)

    def __init__(self, reactor: Reactor) -> None:
        self._reactor = reactor

    def handle_events(self, mask: int) -> None:
        self._reactor._run_threadsafe()


def _wakeup_only(signum: int, frame: object) -> None:
    """The Python-level handler: do nothing; the wakeup fd carries the signal."""


#: Errors from accept(2) that mean "this one connection failed, keep going"
#: (accept(2), "Error handling"; Tornado and nginx treat them the same way).
ACCEPT_TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNABORTED,
        errno.EPROTO,
        errno.ENETDOWN,
        errno.ENOPROTOOPT,
        errno.EHOSTDOWN,
        errno.ENONET,
        errno.EHOSTUNREACH,
        errno.EOPNOTSUPP,
        errno.ENETUNREACH,
        errno.EPERM,
    }
)

#: Out of file descriptors or kernel memory: back off, do not spin.
ACCEPT_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

#: A peer that went away.  Normal, never worth a traceback (Tornado's _ERRNO_CONNRESET).
CONNECTION_GONE_ERRNOS = frozenset(
    {errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT, errno.ENOTCONN}
)
