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


class LoggingSetup:
    """The running logging pipeline; :meth:`stop` flushes it at exit."""

    def __init__(self, level: str, file: str | Path | None) -> None:
        self.queue: queue.Queue[logging.LogRecord] = queue.Queue(_QUEUE_SIZE)
        self.queue_handler = DroppingQueueHandler(self.queue)
        if file:
            sink: logging.Handler = logging.FileHandler(file, encoding="utf-8")
            sink.handleError = _SafeStreamHandler.handleError.__get__(sink)  # type: ignore[method-assign]
        else:
            sink = _SafeStreamHandler(sys.stderr)
        sink.setFormatter(logging.Formatter(_FORMAT))
        self.listener = logging.handlers.QueueListener(
            self.queue, sink, respect_handler_level=False
        )
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.addHandler(self.queue_handler)
        root.setLevel(level)
        self.listener.start()

    def stop(self) -> None:
        self.listener.stop()
        logging.getLogger().removeHandler(self.queue_handler)
