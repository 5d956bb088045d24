"""Who may connect: server capacity, per-address limits, and the fd budget.

Sans-IO bookkeeping with the clock passed in, so the rules are testable alone.
The server asks :meth:`Admission.check` before it admits a socket and reports
every change (:meth:`opened`, :meth:`registered`, :meth:`closed`) exactly once
per connection; the tables shrink back to empty when everyone has left (a
leaked counter would lock an address out for good, RELIABILITY P2).

Addresses are grouped the way ergo and nginx do it: an IPv4 address is its own
group, an IPv6 address counts as its /64.

Wrong listener passwords (``listen[].password``) are counted here too, per address
group over :data:`PASSWORD_WINDOW` seconds (:meth:`Admission.password_failed`): the
door of a listener closes a connection whose address reaches
:data:`PASSWORD_FAILURES_MAX`, and refuses any attempt from it, unchecked, until the
window has passed (the login-attempt rule of the *oper* and *accounts* plugins, at
the door).
"""

from __future__ import annotations

import ipaddress
import logging
import resource
from collections import deque
from dataclasses import dataclass

from .templates import plural

log = logging.getLogger("chatd.admission")


def plain_address(address: str) -> str:
    """``address`` as people write it: an IPv4 client of a dual-stack listener (bound
    to ``::``) arrives as ``::ffff:203.0.113.9`` and is ``203.0.113.9`` (its bans,
    its trusted proxies, its logs); any other address is unchanged."""
    if not address.startswith("::ffff:"):  # the common case: no parsing
        return address
    try:
        mapped = ipaddress.IPv6Address(address).ipv4_mapped
    except ValueError:
        return address
    return str(mapped) if mapped is not None else address


def address_group(address: str) -> str:
    """The key per-address limits count under: the IPv4 address or the IPv6 /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        mapped = ip.ipv4_mapped  # type: ignore[union-attr]
        if mapped is not None:
            return str(mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return address


@dataclass(frozen=True, slots=True)
class AdmissionRules:
    max_clients: int
    per_ip_max: int  # 0 = unlimited
    connect_rate: int  # 0 = unlimited
    connect_window: float
    max_unregistered: int  # 0 = unlimited


#: Reason code -> what the refused client is told (before the connection closes), in
#: the words of the listener's protocol (``! ...`` on the line protocol, an ``error``
#: object with the reason as its ``code`` on jsonl: ``ChatProtocol.refusal``).
REFUSALS = {
    "server_full": "server full (max {max_clients}); try again later",
    "per_ip": "too many connections from your address (max {per_ip_max})",
    "connect_rate": "too many connection attempts from your address; try again later",
    "unregistered": "too many connections from your address that have not said anything",
    "stopping": "server shutting down",
}


#: Wrong listener passwords from one address group within :data:`PASSWORD_WINDOW`
#: seconds before its connection is closed and its further attempts refused unchecked.
PASSWORD_FAILURES_MAX = 3
PASSWORD_WINDOW = 60.0


class Admission:
    """Counts connections per address group and decides on new ones."""

    def __init__(self, rules: AdmissionRules) -> None:
        self.rules = rules
        self.clients = 0
        self._per_group: dict[str, int] = {}
        self._unregistered: dict[str, int] = {}
        self._attempts: dict[str, deque[float]] = {}
        #: When each address group was last refused for its silent connections.
        self._refused_silent: dict[str, float] = {}
        #: When each address group gave a wrong listener password (the recent ones).
        self._password_failures: dict[str, deque[float]] = {}

    def check(self, address: str, now: float) -> str | None:
        """The reason code to refuse a connection from ``address``, or None to admit it.

        Every attempt counts towards the connect rate, refused ones included, so
        a client hammering the port stays refused until it slows down.
        """
        rules = self.rules
        group = address_group(address)
        if rules.connect_rate:
            attempts = self._attempts.setdefault(group, deque())
            while attempts and now - attempts[0] > rules.connect_window:
                attempts.popleft()
            attempts.append(now)
            if len(attempts) > rules.connect_rate:
                return "connect_rate"
        if self.clients >= rules.max_clients:
            return "server_full"
        if rules.per_ip_max and self._per_group.get(group, 0) >= rules.per_ip_max:
            return "per_ip"
        if rules.max_unregistered and self._unregistered.get(group, 0) >= rules.max_unregistered:
            self._refused_silent[group] = now
            return "unregistered"
        return None

    @property
    def full(self) -> bool:
        """Whether ``max_clients`` connections are open."""
        return self.clients >= self.rules.max_clients

    def refusal_text(self, reason: str) -> str:
        """Why a connection is refused (``reason``: a code of :data:`REFUSALS`), as text;
        the listener's protocol renders it."""
        return REFUSALS[reason].format(
            max_clients=plural(self.rules.max_clients, "client"),
            per_ip_max=self.rules.per_ip_max,
        )

    def opened(self, address: str) -> None:
        group = address_group(address)
        self.clients += 1
        self._per_group[group] = self._per_group.get(group, 0) + 1
        self._unregistered[group] = self._unregistered.get(group, 0) + 1

    def unregistered(self, group: str) -> int:
        """Connections from the address group ``group`` that have not spoken yet."""
        return self._unregistered.get(group, 0)

    def refused_silent_since(self, group: str, since: float) -> bool:
        """Whether ``group`` was refused for too many silent connections after ``since``."""
        return self._refused_silent.get(group, -1.0) >= since

    def registered(self, address: str) -> None:
        _decrement(self._unregistered, address_group(address))

    def closed(self, address: str, registered: bool) -> None:
        group = address_group(address)
        self.clients -= 1
        _decrement(self._per_group, group)
        if not registered:
            _decrement(self._unregistered, group)

    def password_failures(self, address: str, now: float) -> int:
        """Wrong listener passwords from ``address``'s group within the window."""
        recent = self._password_failures.get(address_group(address))
        if recent is None:
            return 0
        while recent and now - recent[0] > PASSWORD_WINDOW:
            recent.popleft()
        return len(recent)

    def password_failed(self, address: str, now: float) -> int:
        """Count a wrong listener password from ``address``; returns its group's count
        within the window, this one included."""
        count = self.password_failures(address, now)
        self._password_failures.setdefault(address_group(address), deque()).append(now)
        return count + 1

    def expire(self, now: float) -> None:
        """Forget connect attempts older than the window (keeps the table small)."""
        window = self.rules.connect_window
        for group in list(self._attempts):
            attempts = self._attempts[group]
            while attempts and now - attempts[0] > window:
                attempts.popleft()
            if not attempts:
                del self._attempts[group]
        for group, when in list(self._refused_silent.items()):
            if now - when > max(window, 60.0):
                del self._refused_silent[group]
        for group, failures in list(self._password_failures.items()):
            while failures and now - failures[0] > PASSWORD_WINDOW:
                failures.popleft()
            if not failures:
                del self._password_failures[group]

    def table_sizes(self) -> dict[str, int]:
        """Sizes of the per-address tables, for tests and /stats."""
        return {
            "per_address": len(self._per_group),
            "unregistered": len(self._unregistered),
            "connect_attempts": len(self._attempts),
            "password_failures": len(self._password_failures),
        }


def _decrement(table: dict[str, int], key: str) -> None:
    count = table.get(key, 0) - 1
    if count > 0:
        table[key] = count
    else:
        table.pop(key, None)


def clamp_max_clients(configured: int, reserve: int) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one and fit ``configured`` under it.

    Redis' ``adjustOpenFilesLimit``: a server that accepts more clients than it
    has descriptors for fails at accept() under load instead of refusing
    cleanly at the door.  Returns the max_clients to enforce; raises
    ValueError when the limit leaves no room for any client.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise RLIMIT_NOFILE from %d to %d: %s", soft, hard, exc)
    if soft == resource.RLIM_INFINITY:
        return configured
    room = soft - reserve
    if room < 1:
        raise ValueError(
            f"RLIMIT_NOFILE is {soft}, not above the {reserve} descriptors reserved "
            "(limits.reserve_fds); raise the limit (ulimit -n) or lower the reserve"
        )
    if configured > room:
        log.warning(
            "max_clients reduced to %d (RLIMIT_NOFILE %d - %d reserved)", room, soft, reserve
        )
        return room
    return configured
