"""What the cluster's process tests share: nodes' subscriptions, a chatting client, its
lines up to a marker, a node's gap (logged, or counted in ``/stats``).

Tests of chatd nodes on the kit's throwaway redis-server (``redis_server``,
``redis_url``) wait on Redis itself (``PUBSUB NUMSUB``) rather than on time: a join's
subscription reaches Redis a moment after the join, and what is published before it
is not heard.
"""

from __future__ import annotations

import re
from typing import Any

from chatd.testing import wait_until

WAIT = 10.0


def subscribers(redis_server: Any, channel: str) -> int:
    """How many connections subscribe to ``channel`` now (``PUBSUB NUMSUB``)."""
    out = redis_server.cli("PUBSUB", "NUMSUB", channel).split()
    return int(out[1]) if len(out) > 1 else 0


def heard_by(redis_server: Any, channel: str, count: int, wait: float = WAIT) -> None:
    """Until ``count`` nodes subscribe to ``channel``."""
    assert wait_until(lambda: subscribers(redis_server, channel) == count, wait), \
        f"{channel}: {subscribers(redis_server, channel)} subscribers, expected {count}"


def chatter(server: Any, nick: str, room: str = "#dev") -> Any:
    """A line client of ``server`` named ``nick`` in ``room``."""
    client = server.client()
    client.send(f"/nick {nick}")
    client.expect(rf"You are now {re.escape(nick)}|now known as {re.escape(nick)}$")
    client.send(f"/join {room}")
    client.expect(rf"joined {re.escape(room)}|talking in {re.escape(room)}")
    return client


def lines_until(client: Any, marker: str, wait: float = WAIT) -> list[str]:
    """Every line up to the one holding ``marker`` (excluded)."""
    seen: list[str] = []
    while True:
        line = client.recv_line(timeout=wait)
        if marker in line:
            return seen
        seen.append(line)


def gap(server: Any, origin: str, channel: str) -> int:
    """The events ``server`` logged as missed from ``origin`` on ``channel`` (0: none).
    A channel's gap line is logged once a minute at most (the next says how many were
    held back): a test that may see two gaps in a minute reads :func:`counted_gaps`."""
    found = re.findall(rf"missed (\d+) event\(s\) from {origin} on {re.escape(channel)}",
                       server.log())
    return sum(int(n) for n in found)


#: /stats's cluster line (an operator's): the link's state and its counters.
STATS = re.compile(r"cluster: redis (up|DOWN), batches in (\d+), out (\d+), gaps (\d+)")


def counted_gaps(op: Any) -> int:
    """The node's gap counter (every event it missed, from any node, on any channel),
    from ``/stats``'s ``cluster:`` line as its operator ``op`` reads it."""
    op.send("/stats")
    try:
        line = op.expect(r"^\*\*\* cluster: ").string
    except AssertionError as exc:
        raise AssertionError(f"/stats shows no cluster: line (the cluster's counters must "
                             f"reach /stats for gaps to be counted): {exc}") from None
    match = STATS.search(line)
    assert match, line
    return int(match.group(4))
