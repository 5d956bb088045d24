"""Counting failed attempts (passwords) per key over a sliding window.

Shared by the built-ins that check secrets (*oper*, *accounts*): each keeps a
:class:`RecentFailures` per thing it limits (an address, an account) and
refuses further attempts once too many failed within the window.  Keys with no
recent failure are forgotten, so the table stays as small as the trouble.
:class:`GuessLimits` combines three of them for passwords of accounts, so that
guessing from outside can neither go on for long nor lock the owner out.
"""

from __future__ import annotations

import ipaddress
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


def source_of(address: str) -> str:
    """The key failed attempts from ``address`` count under: an IPv4 address, or
    the /64 an IPv6 address is in (one host is given a whole /64; counting its
    addresses one by one would give it 2**64 fresh starts).  The same grouping
    as the per-address connection limits (``chatd.admission.address_group``)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return address


class GuessLimits:
    """Who may try a password for which account now: counted per source (an
    address, see :func:`source_of`), per account, and per source *and* account.

    * A source with ``per_source`` failures in the window may try nothing.
    * A source with ``per_pair`` failures for one account may not try that one.
    * An account with ``per_account`` failures in the window is under attack:
      only sources that have not failed for it yet may try it, each until its
      first failure.  So others' guesses never lock the owner out (the owner
      comes from an address that has not been guessing), and every guessing
      address is shut out of the account after its own first miss.

    An attempt is counted as a failure when it is made (:meth:`attempt`), before
    its outcome is known, so guesses sent together cannot slip past the limits
    while the first ones are still being checked; :meth:`succeeded` takes it back.
    """

    __slots__ = ("accounts", "pairs", "per_account", "per_pair", "per_source", "sources")

    def __init__(self, *, per_source: int, per_account: int, per_pair: int,
                 window: float) -> None:
        self.per_source, self.per_account, self.per_pair = per_source, per_account, per_pair
        self.sources = RecentFailures(window)
        self.accounts = RecentFailures(window)
        self.pairs = RecentFailures(window)

    def refusal(self, source: str, account: str, now: float | None = None) -> str | None:
        """Why ``source`` may not try ``account`` now (``"source"`` or ``"account"``),
        or None if it may."""
        if self.sources.count(source, now) >= self.per_source:
            return "source"
        mine = self.pairs.count(_pair(source, account), now)
        if mine >= self.per_pair:
            return "account"
        if mine and self.accounts.count(account, now) >= self.per_account:
            return "account"
        return None

    def attempt(self, source: str, account: str, now: float | None = None) -> None:
        """Count an attempt as failed until :meth:`succeeded` says otherwise."""
        self.sources.add(source, now)
        self.accounts.add(account, now)
        self.pairs.add(_pair(source, account), now)

    def succeeded(self, source: str, account: str) -> None:
        """The attempt was right: it is not a failure, and the source's earlier misses
        for this account are forgiven (the owner mistyped)."""
        self.sources.forgive(source)
        self.accounts.forgive(account)
        self.pairs.clear(_pair(source, account))

    def withdraw(self, source: str, account: str) -> None:
        """The attempt was never checked (its client left while it waited): not a
        failure, and nothing else is forgiven."""
        self.sources.forgive(source)
        self.accounts.forgive(account)
        self.pairs.forgive(_pair(source, account))

    def count(self, source: str, account: str) -> tuple[int, int, int]:
        """Recent failures (from the source, for the account, from the source for the
        account): for the log."""
        return (self.sources.count(source), self.accounts.count(account),
                self.pairs.count(_pair(source, account)))


def _pair(source: str, account: str) -> str:
    return f"{source} {account}"  # neither an address nor an account key has a space
