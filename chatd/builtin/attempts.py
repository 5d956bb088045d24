"""Counting failed attempts (passwords) per key over a sliding window.

Shared by the built-ins that check secrets (*oper*, *accounts*): each keeps a
:class:`RecentFailures` per thing it limits (an address, an account) and
refuses further attempts once too many failed within the window.  Keys with no
recent failure are forgotten, so the table stays as small as the trouble.
"""

from __future__ import annotations

import time
from collections import deque


class RecentFailures:
    """Failure times per key, the ones older than ``window`` seconds forgotten."""

    __slots__ = ("_by_key", "window")

    def __init__(self, window: float) -> None:
        self.window = window
        self._by_key: dict[str, deque[float]] = {}

    def count(self, key: str, now: float | None = None) -> int:
        """Failures for ``key`` within the window, up to ``now`` (monotonic)."""
        recent = self._by_key.get(key)
        if recent is None:
            return 0
        now = time.monotonic() if now is None else now
        while recent and now - recent[0] > self.window:
            recent.popleft()
        if not recent:
            del self._by_key[key]
        return len(recent)

    def add(self, key: str, now: float | None = None) -> int:
        """Record a failure for ``key``; returns the count within the window."""
        now = time.monotonic() if now is None else now
        count = self.count(key, now)
        self._by_key.setdefault(key, deque()).append(now)
        return count + 1

    def forgive(self, key: str) -> None:
        """Take back the newest failure of ``key`` (an attempt counted before its
        outcome was known turned out to succeed)."""
        recent = self._by_key.get(key)
        if recent:
            recent.pop()
            if not recent:
                del self._by_key[key]

    def clear(self, key: str) -> None:
        """Forget ``key``'s failures (it succeeded)."""
        self._by_key.pop(key, None)

    def __len__(self) -> int:
        return len(self._by_key)
