"""Keepalive: ping a quiet peer, give up on one that stays quiet after the ping.

IRC (``PING``) and WebSocket (a ping frame) keep their connections the same way, so
the timing lives here once and each protocol says only what is its own: when it last
heard the peer, whether the server itself holds the peer's reading, how to ping and
how to close.  The timers go through the listener's door (``call_later``), like every
protocol timer: one pending timer per connection at most.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class Keepalive:
    """One connection's keepalive: after ``every`` seconds without hearing the peer,
    ``ping()``; if it has still not been heard ``timeout`` seconds after that,
    ``give_up(timeout)``.

    ``heard()``: when the peer was last heard from (``time.monotonic()``); anything
    it sends counts, the answer to the ping or not.  ``held()``: the server holds the
    peer's reading (the flood gate's backlog is full), so its answer waits in the
    kernel and the silence is the server's doing: the peer counts as alive and is
    asked again later.  ``alive()``: the connection is still worth keeping (open, in
    a session); when it is not, the keepalive ends quietly.  ``every`` of 0: never.
    """

    __slots__ = ("_alive", "_door", "_every", "_give_up", "_heard", "_held", "_ping",
                 "_pinged", "_timeout", "_timer")

    def __init__(self, door: Any, every: float, timeout: float, *,
                 heard: Callable[[], float], held: Callable[[], bool],
                 alive: Callable[[], bool], ping: Callable[[], None],
                 give_up: Callable[[float], None]) -> None:
        self._door = door
        self._every = every
        self._timeout = timeout
        self._heard = heard
        self._held = held
        self._alive = alive
        self._ping = ping
        self._give_up = give_up
        self._pinged: float | None = None
        self._timer: Any = None

    def start(self) -> None:
        """Begin (again) from now: the first ping after ``every`` seconds of quiet."""
        self.stop()
        if self._every > 0:
            self._timer = self._door.call_later(self._every, self._tick)

    def stop(self) -> None:
        """No more pings (the connection is gone)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pinged = None

    def _later(self, delay: float) -> None:
        self._timer = self._door.call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if not self._alive():
            return
        every = self._every
        if self._held():
            self._pinged = None
            self._later(every)
            return
        now = time.monotonic()
        pinged = self._pinged
        if pinged is not None:
            if self._heard() < pinged:
                self._give_up(self._timeout)
                return
            self._pinged = None
        quiet = now - self._heard()
        if quiet < every:
            self._later(every - quiet)
            return
        self._pinged = now
        self._ping()
        self._later(self._timeout)


__all__ = ["Keepalive"]
