"""Logging that never blocks the event loop.

Every record goes into a bounded queue (``QueueHandler``); a background thread
writes it to stderr or the configured file.  If the sink is slow or gone (a
full pipe, a closed terminal, a dead disk), records are dropped and counted
instead of stalling the chat, and a broken pipe is swallowed, never raised into
the loop (Python logging cookbook, "Dealing with handlers that block").
"""

from __future__ import annotations

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


class _SafeStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to a stream; a broken or closed stream disables it quietly."""

    def handleError(self, record: logging.LogRecord) -> None:
        # Default behaviour prints a traceback to stderr, which may be the very
        # stream that failed.  Losing log lines beats losing the server.
        return


class _SafeFileHandler(logging.FileHandler):
    """A file handler whose write errors (disk full, file gone) are swallowed."""

    def handleError(self, record: logging.LogRecord) -> None:
        return


class QueuedSink:
    """A handler for the loop thread that hands records to a writer thread.

    ``QueuedSink(path_or_None).handler`` is what you attach to a logger; the
    actual file or stderr write happens on the listener thread.
    """

    def __init__(self, file: str | Path | None, fmt: str = _FORMAT) -> None:
        self.queue: queue.Queue[logging.LogRecord] = queue.Queue(_QUEUE_SIZE)
        self.handler = DroppingQueueHandler(self.queue)
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

    def stop(self) -> None:
        """Write what is queued, then stop the thread and close the file."""
        if self in _active_sinks:
            _active_sinks.remove(self)
        self.listener.stop()
        self._sink.close()


_active_sinks: list[QueuedSink] = []


def dropped_log_records() -> int:
    """Records dropped by every queued sink of this process (for the stats)."""
    return sum(sink.dropped for sink in _active_sinks)


class LoggingSetup:
    """The process's logging pipeline; :meth:`stop` flushes it at exit."""

    def __init__(self, level: str, file: str | Path | None) -> None:
        self.sink = QueuedSink(file)
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.addHandler(self.sink.handler)
        root.setLevel(level)

    def stop(self) -> None:
        logging.getLogger().removeHandler(self.sink.handler)
        self.sink.stop()
