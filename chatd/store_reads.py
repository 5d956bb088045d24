"""Reads that never hold the loop: a query answered later, through a continuation.

:meth:`chatd.store.Store.ask` hands a query to a reader thread with a connection of
its own; the rows (or the reason there are none) come back to the loop through the
store's ``post``, as one :class:`StoreAnswer` given to the asker's ``then``.  The
loop never waits: not on a slow disk, not on a PostgreSQL server across the
network, not on one that is frozen.  A query that has not answered within its
``timeout`` is answered "unavailable" by a timer on the loop, whatever the thread
is doing; its late rows are thrown away.  So a stalled database holds no one but
the people who asked, and they are told.

One thread per store serves the queries in order: the built-ins' reads are small
and indexed (a room's last lines, one account), and one connection keeps a
PostgreSQL server's connection count at one per process for reading.

Why a thread and not a non-blocking connection driven by the reactor (measured by
``bench/store_reads.py``; the numbers are in docs/persistence.md, "Why a reader
thread (measured)"): the thread costs the loop less CPU per read (about 20 µs on
PostgreSQL against about 30 µs, because the rows are decoded here, not on the loop),
and it serves SQLite too, which has no non-blocking interface.  A loop-owned libpq
connection reached 1.0 to 2.3 times the reads/s (the most when pipelined) at under
half the process's CPU per read; reads are too small a part of chatd's work for that to
outweigh the loop's own cost.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("chatd.store")

__all__ = ["Reader", "StoreAnswer", "log_read_failure"]


@dataclass(frozen=True, slots=True)
class StoreAnswer:
    """What :meth:`Store.ask` answers: the rows, or why there are none.

    ``error`` is None when the query ran (``rows`` may be empty); otherwise it says
    why, in words fit for the person who asked ("the database did not answer in
    2 s", "no connection to the database"), and ``rows`` is empty.
    """

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


#: Runs one query on the reader's connection: (connection, sql, params, timeout) -> rows.
#: Raises whatever the database raises; the reader turns it into an answer's error.
RunQuery = Callable[[Any, str, Sequence[Any], float], list[tuple[Any, ...]]]


class _Question:
    __slots__ = ("answered", "direct", "params", "quiet", "sql", "then", "timeout", "timer")

    def __init__(self, sql: str, params: Sequence[Any], then: Callable[[StoreAnswer], None],
                 timeout: float) -> None:
        self.sql = sql
        self.params = params
        self.then = then
        self.timeout = timeout
        self.answered = False  # set on the loop: the first answer (rows or timeout) wins
        self.timer: Any = None
        #: Answered on the reader thread itself (someone waits for it: :meth:`Reader.wait`).
        self.direct = False
        #: A failure is expected (the store's own probe): not logged.
        self.quiet = False


class Reader:
    """The reader thread of one store (started on the first question).

    ``connect()`` opens a reading connection (on the thread); ``run`` runs a query
    on it; ``close_connection`` closes one.  ``post`` hands a callable to the loop;
    ``call_later(delay, fn)`` (the loop's timers) enforces the timeouts.  Without a
    ``post`` (a store on its own, in a test), a question is answered at once, on
    the caller's thread, before :meth:`ask` returns.
    """

    def __init__(self, connect: Callable[[], Any], run: RunQuery,
                 close_connection: Callable[[Any], None], *,
                 post: Callable[[Callable[[], None]], None] | None,
                 call_later: Callable[[float, Callable[[], None]], Any] | None,
                 describe_error: Callable[[BaseException], str]) -> None:
        self._connect = connect
        self._run = run
        self._close_connection = close_connection
        self._post = post
        self._call_later = call_later
        self._describe_error = describe_error
        self._questions: deque[Any] = deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self._closed = False
        #: Questions answered "unavailable" because their timeout passed first.
        self.timeouts = 0
        #: Questions that failed (the database refused or could not be reached).
        self.failures = 0

    def ask(self, sql: str, params: Sequence[Any], then: Callable[[StoreAnswer], None],
            timeout: float) -> None:
        question = _Question(sql, params, then, timeout)
        if self._post is None:
            self._deliver(question, self._answer(question))
            return
        if self._closed:
            self._deliver(question, StoreAnswer(error="the store is closed"))
            return
        if self._call_later is not None:
            question.timer = self._call_later(timeout, lambda: self._expire(question))
        self._queue(question)

    def wait(self, sql: str, params: Sequence[Any], timeout: float, *,
             quiet: bool = False) -> StoreAnswer:
        """Run a query on the reader thread and wait for it, at most ``timeout``: a read
        that costs its caller that long at most, whatever the database does (a
        frozen server, a lost network).  The late rows of one that timed out are
        thrown away."""
        if self._closed:
            return StoreAnswer(error="the store is closed")
        got: list[StoreAnswer] = []
        done = threading.Event()
        lock = threading.Lock()

        def then(answer: StoreAnswer) -> None:
            with lock:
                if not got:
                    got.append(answer)
            done.set()

        question = _Question(sql, params, then, timeout)
        question.direct = True
        question.quiet = quiet
        self._queue(question)
        if not done.wait(timeout):
            then(StoreAnswer(error=f"a read took over {timeout * 1000:g} ms"))
            question.answered = True  # the thread skips it, or throws its rows away
            self.timeouts += 1
        return got[0]

    def _queue(self, question: _Question) -> None:
        self._questions.append(question)
        self._wake.set()
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._thread = threading.Thread(target=self._serve, name="chatd-store-reader",
                                            daemon=True)
            self._thread.start()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread (questions still waiting are answered "closed")."""
        self._closed = True
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        while self._questions:
            question = self._questions.popleft()
            self._post_answer(question, StoreAnswer(error="the store is closed"))

    # -- the thread ------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while not self._closed:
                if not self._questions:
                    self._wake.clear()
                    if not self._questions:
                        self._wake.wait()
                    continue
                question = self._questions.popleft()
                if question.answered:  # timed out while waiting its turn
                    continue
                self._post_answer(question, self._answer(question))
        finally:
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    self._close_connection(conn)

    def _answer(self, question: _Question) -> StoreAnswer:
        """Run one question (opening the connection if needed); never raises."""
        try:
            if self._conn is None:
                self._conn = self._connect()
            rows = self._run(self._conn, question.sql, question.params, question.timeout)
            return StoreAnswer(rows=rows)
        except Exception as exc:
            self.failures += 1
            conn, self._conn = self._conn, None  # a fresh connection for the next one
            if conn is not None:
                with contextlib.suppress(Exception):
                    self._close_connection(conn)
            reason = self._describe_error(exc)
            if not question.quiet:
                log_read_failure(reason, exc, question.sql)
            return StoreAnswer(error=reason)

    # -- back on the loop ------------------------------------------------------------

    def _post_answer(self, question: _Question, answer: StoreAnswer) -> None:
        post = self._post
        if post is None or question.direct:
            self._deliver(question, answer)
        else:
            post(lambda: self._deliver(question, answer))

    def _expire(self, question: _Question) -> None:
        if question.answered:
            return
        self.timeouts += 1
        self._deliver(question, StoreAnswer(
            error=f"the database did not answer within {question.timeout:g} s"))

    def _deliver(self, question: _Question, answer: StoreAnswer) -> None:
        if question.answered:
            return  # the timeout answered first: these rows come too late
        question.answered = True
        if question.timer is not None:
            question.timer.cancel()
        try:
            question.then(answer)
        except Exception:
            log.exception("store: the continuation of a read failed (%s)", question.sql[:80])


#: A failed read is logged with its detail once per kind in this long: the detail
#: (a host, a port, SQL) is for the operator; the asker gets only the short reason.
READ_FAILURE_LOG_SECONDS = 60.0
_logged_failures: dict[str, float] = {}


def log_read_failure(reason: str, exc: BaseException, sql: str) -> None:
    key = f"{reason}|{type(exc).__name__}"
    now = time.monotonic()
    if now - _logged_failures.get(key, -READ_FAILURE_LOG_SECONDS) < READ_FAILURE_LOG_SECONDS:
        return
    _logged_failures[key] = now
    log.warning("store: a read failed: %s: %s: %s (in %r)", reason, type(exc).__name__,
                str(exc).strip(), sql[:120])
