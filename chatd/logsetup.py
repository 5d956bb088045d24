"""Logging that never blocks the event loop.

Every record goes into a bounded queue (``QueueHandler``); a background thread
writes it to stderr or the configured file.  If the sink is slow or gone (a
full pipe, a closed terminal, a dead disk), records are dropped and counted
instead of stalling the chat, and a broken pipe is swallowed, never raised into
the loop (Python logging cookbook, "Dealing with handlers that block").
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import queue
import sys
from pathlib import Path

_QUEUE_SIZE = 10_000
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """A QueueHandler that drops (and counts) records when the queue is full."""

    def __init__(self, q: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(q)
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


class _Failures:
    """Counts records a sink failed to write (a dead pipe, a full disk)."""

    failed = 0


class _SafeStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to a stream; a broken or closed stream loses records, counted."""

    def handleError(self, record: logging.LogRecord) -> None:
        # Default behaviour prints a traceback to stderr, which may be the very
        # stream that failed.  Losing log lines beats losing the server.
        _Failures.failed += 1


class _SafeFileHandler(logging.FileHandler):
    """A file handler whose write errors (disk full, file gone) are counted, not raised."""

    def handleError(self, record: logging.LogRecord) -> None:
        _Failures.failed += 1


_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(32), 127) if c != 9}


class EscapingFormatter(logging.Formatter):
    """One record, one line: control characters in the message are escaped.

    Plugins log whatever they like; this keeps a message from carrying terminal
    escapes into an operator's terminal or forging a second record with a
    newline (CWE-117).  Tracebacks stay multi-line: they come from Python.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = record.message.translate(_CONTROLS)
        return super().formatMessage(record)


class QueuedSink:
    """A handler for the loop thread that hands records to a writer thread.

    ``QueuedSink(path_or_None).handler`` is what you attach to a logger; the
    actual file or stderr write happens on the listener thread.
    """

    def __init__(self, file: str | Path | None, fmt: str = _FORMAT) -> None:
        self.queue: queue.Queue[logging.LogRecord] = queue.Queue(_QUEUE_SIZE)
        self.handler = DroppingQueueHandler(self.queue)
        # The queue handler renders the message (and the traceback) on the loop
        # thread; escaping happens there, before the traceback is appended.
        self.handler.setFormatter(EscapingFormatter("%(message)s"))
        _active_sinks.append(self)
        sink: logging.Handler = (
            _SafeFileHandler(file, encoding="utf-8") if file else _SafeStreamHandler(sys.stderr)
        )
        sink.setFormatter(logging.Formatter(fmt))
        self._sink = sink
        self.listener = logging.handlers.QueueListener(self.queue, sink)
        self.listener.start()

    @property
    def dropped(self) -> int:
        return self.handler.dropped

    def stop(self, timeout: float = 2.0) -> bool:
        """Write what is queued, then stop the thread and close the file.

        Bounded: a writer stuck on a pipe nobody reads must not keep the
        process from exiting, so the stop marker is dropped if the queue is
        full and the thread is waited for at most ``timeout`` seconds.
        """
        if self in _active_sinks:
            _active_sinks.remove(self)
        listener = self.listener
        thread = listener._thread  # QueueListener has no public bounded stop
        if thread is not None:
            with contextlib.suppress(queue.Full):
                self.queue.put_nowait(listener._sentinel)  # type: ignore[attr-defined]
            thread.join(timeout)
            listener._thread = None
        if thread is None or not thread.is_alive():
            self._sink.close()
            return True
        return False  # the writer is stuck on its sink


_active_sinks: list[QueuedSink] = []


def dropped_log_records() -> int:
    """Records lost by this process's logging: queue overflow plus failed writes."""
    return sum(sink.dropped for sink in _active_sinks) + _Failures.failed


class LoggingSetup:
    """The process's logging pipeline; :meth:`stop` flushes it at exit."""

    def __init__(self, level: str, file: str | Path | None, tag: str | None = None) -> None:
        """``tag``: a word put before each record's logger name, saying which process of
        several wrote it (a worker of ``workers: N``: ``w1``)."""
        fmt = _FORMAT.replace("%(name)s", f"{tag} %(name)s") if tag else _FORMAT
        self.sink = QueuedSink(file, fmt)
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.addHandler(self.sink.handler)
        root.setLevel(level)

    def stop(self) -> bool:
        """Flush and stop; False if the sink is stuck (the caller should not wait on it)."""
        logging.getLogger().removeHandler(self.sink.handler)
        return self.sink.stop()
