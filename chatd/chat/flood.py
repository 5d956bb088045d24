"""Per-client flood control: a token bucket that *delays* excess requests (fakelag).

Sans-IO: the caller passes the time and owns the timer.  A line costs ``1 + len(line) //
bytes_per_token`` tokens (ergo bills long lines more, UnrealIRCd counts bytes);
the bucket holds ``burst`` tokens and refills at ``rate`` per second.  A line
that finds too few tokens is not dropped: the server queues it and comes back
when :meth:`TokenBucket.wait_time` says it can pass (ergo / InspIRCd
"fakelag").  Only the queue's size can get a client disconnected.

The client is told once per flood that its lines are delayed
(:meth:`FloodGate.tell`): a flood ends only when the bucket is full again (the
client kept within the rate for ``burst / rate`` seconds), so a fast typist or a
long paste whose backlog empties for a moment between lines hears it once, not
once per line.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from ..requests import Request, request_size


class TokenBucket:
    """Burst ``burst`` tokens, refilled at ``rate`` tokens per second."""

    __slots__ = ("_bytes_per_token", "_stamp", "_tokens", "burst", "rate")

    def __init__(self, burst: int, rate: float, bytes_per_token: int, now: float) -> None:
        self.burst = float(burst)
        self.rate = rate
        self._bytes_per_token = bytes_per_token
        self._tokens = float(burst)
        self._stamp = now

    def cost(self, line_length: int) -> float:
        """Tokens a line of ``line_length`` characters costs (never more than a full bucket)."""
        return min(self.burst, 1.0 + line_length // self._bytes_per_token)

    def _refill(self, now: float) -> None:
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self, cost: float, now: float) -> bool:
        """Spend ``cost`` tokens if there are enough; False means: wait."""
        self._refill(now)
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def full(self, now: float) -> bool:
        """Whether the bucket has refilled completely (the client kept within the rate)."""
        self._refill(now)
        return self._tokens >= self.burst

    def wait_time(self, cost: float, now: float) -> float:
        """Seconds until ``cost`` tokens are available."""
        self._refill(now)
        missing = cost - self._tokens
        return 0.0 if missing <= 0 else missing / self.rate


class FloodGate:
    """One client's flood gate: which requests pass now, which wait, in order.

    :meth:`admit` takes what the client just sent and returns what may be
    handled now; the rest waits in the backlog (never dropped, never
    reordered: once something waits, everything after it waits too).
    :meth:`release` returns what may pass after time went by, and
    :meth:`wait` says when to call it next.  ``backlog_bytes`` is what the
    caller compares with ``limits.recvq_max_bytes``.
    """

    __slots__ = (
        "_backlog",
        "_bucket",
        "backlog_bytes",
        "close_when_empty",
        "holding",
        "timer",
        "told",
    )

    def __init__(self, bucket: TokenBucket) -> None:
        self._bucket = bucket
        self._backlog: deque[Request] | None = None  # made on first use: memory
        self.backlog_bytes = 0
        #: The caller's timer for the next :meth:`release` (None: none pending).
        self.timer: Any = None
        #: The peer half-closed: close once the backlog is handled.
        self.close_when_empty = False
        #: The caller stopped reading the client (the backlog reached its limit).
        self.holding = False
        #: The client was told its lines are delayed, in this flood (see :meth:`tell`).
        self.told = False

    @property
    def rate(self) -> float:
        """Lines per second the gate lets through, sustained."""
        return self._bucket.rate

    @property
    def waiting(self) -> int:
        """Requests in the backlog."""
        return len(self._backlog) if self._backlog else 0

    def admit(self, requests: list[Request], now: float) -> list[Request]:
        bucket = self._bucket
        backlog = self._backlog
        if self.told and not backlog and bucket.full(now):
            self.told = False  # the last flood is over: the next one is told again
        ready: list[Request] = []
        for item in requests:
            size = request_size(item)
            if not backlog and bucket.take(bucket.cost(size), now):
                ready.append(item)
                continue
            if backlog is None:
                backlog = self._backlog = deque()
            backlog.append(item)
            self.backlog_bytes += size
        return ready

    def release(self, now: float) -> list[Request]:
        bucket = self._bucket
        backlog = self._backlog
        ready: list[Request] = []
        while backlog and bucket.take(bucket.cost(request_size(backlog[0])), now):
            item = backlog.popleft()
            self.backlog_bytes -= request_size(item)
            ready.append(item)
        return ready

    def tell(self) -> bool:
        """True once per flood: whether to tell the client its lines are delayed now."""
        if self.told or not self._backlog:
            return False
        self.told = True
        return True

    def wait(self, now: float) -> float:
        """Seconds until the first waiting request may pass (0 if none waits)."""
        if not self._backlog:
            return 0.0
        bucket = self._bucket
        return bucket.wait_time(bucket.cost(request_size(self._backlog[0])), now)

    def clear(self) -> None:
        """Forget the backlog (the client is gone or cut)."""
        self._backlog = None
        self.backlog_bytes = 0
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
