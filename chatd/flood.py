"""Per-client flood control: a token bucket that *delays* excess lines (fakelag).

Sans-IO: the caller passes the time.  A line costs ``1 + len(line) //
bytes_per_token`` tokens (ergo bills long lines more, UnrealIRCd counts bytes);
the bucket holds ``burst`` tokens and refills at ``rate`` per second.  A line
that finds too few tokens is not dropped: the server queues it and comes back
when :meth:`TokenBucket.wait_time` says it can pass (ergo / InspIRCd
"fakelag").  Only the queue's size can get a client disconnected.
"""

from __future__ import annotations


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

    def wait_time(self, cost: float, now: float) -> float:
        """Seconds until ``cost`` tokens are available."""
        self._refill(now)
        missing = cost - self._tokens
        return 0.0 if missing <= 0 else missing / self.rate
