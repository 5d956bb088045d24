"""Catalogue section H, C2 and C3: a frozen Redis, and Redis dropping a slow subscriber.

Real chatd processes on a real redis-server.  C2: Redis is frozen (SIGSTOP) while a
node's clients chat: their local lines keep coming (the loop never waits for Redis;
the latency is printed, never bounded), the health check marks the link down, and
after the thaw cross-node chat resumes with every line either delivered or counted
in the receiver's gap.  C3: Redis' pubsub output-buffer limit is lowered and node B
frozen while A publishes: Redis drops B's subscriber; thawed, B notices, resubscribes,
counts and logs the gap, and its own clients never noticed; with a smaller limit Redis
drops A's own subscriber too (A hears its own batches back), A reconnects, and what A
published meanwhile is one more gap, counted.  Variant: ``CLIENT KILL TYPE pubsub``.
Gaps are read from B's ``/stats`` (an operator there): two gaps in a minute are one
log line.
"""

from __future__ import annotations

import re
import signal
import time

import pytest
from cluster_nodes import chatter, counted_gaps, lines_until, subscribers

from chatd.testing import wait_until

WAIT = 15.0
FAST = {"connect_timeout_seconds": 0.5, "health_check_seconds": 0.5}
PASSWORD = "op-secret-1"


def node(chatd_server, redis_url, name):
    return chatd_server(cluster={"redis_url": redis_url, "node_id": name, **FAST},
                        flood={"lines_per_second": 0},
                        plugins={"oper": {"password": PASSWORD}})


def operator(server):
    """An operator of ``server`` (its ``/stats`` has the cluster's counters)."""
    op = server.client()
    op.send(f"/oper {PASSWORD}")
    op.expect(r"^\*\*\* you are now an operator$")
    return op


@pytest.fixture
def two(chatd_server, redis_server, redis_url):
    a = node(chatd_server, redis_url, "a")
    b = node(chatd_server, redis_url, "b")
    alice, bob = chatter(a, "alice"), chatter(b, "bob")
    assert wait_until(lambda: subscribers(redis_server, "chatd:room:#dev") == 2, WAIT)
    return a, b, alice, bob


def test_c2_a_frozen_redis_never_delays_local_chat(two, chatd_server, redis_server):
    a, b, alice, bob = two
    olga = operator(b)
    carol = chatter(a, "carol")
    alice.send("before")
    bob.expect(r"^<alice> before$")
    carol.expect(r"^<alice> before$")
    redis_server.freeze()
    try:
        waits = []
        for i in range(20):
            sent = time.monotonic()
            alice.send(f"during {i}")
            carol.expect(rf"^<alice> during {i}$")  # local delivery: never waits for Redis
            waits.append(time.monotonic() - sent)
        print(f"local latency while Redis is frozen: max {max(waits) * 1000:.1f} ms")
        a.wait_for_log(r"chatd-a: lost Redis \(TimeoutError\)")  # the health check
        b.wait_for_log(r"chatd-b: lost Redis \(TimeoutError\)")
        alice.send("/msg carol still private")
        carol.expect(r"still private")
    finally:
        redis_server.thaw()
    assert wait_until(lambda: len(re.findall(r"chatd-a: connected to Redis", a.log())) == 2
                      and len(re.findall(r"chatd-b: connected to Redis", b.log())) == 2,
                      WAIT), a.log()[-3000:] + b.log()[-3000:]
    assert wait_until(lambda: subscribers(redis_server, "chatd:room:#dev") == 2, WAIT)
    alice.send("after")
    seen = lines_until(bob, "<alice> after", WAIT)
    delivered = len([x for x in seen if re.match(r"<alice> during \d+$", x)])
    # Every line accounted for: delivered, or counted in B's gap.
    assert delivered + counted_gaps(olga) == 20, (delivered, counted_gaps(olga), seen)
    bob.send("and back")
    alice.expect(r"^<bob> and back$")
    assert "Traceback" not in a.log() + b.log()


def _subscriber_of(redis_server, name: str) -> bool:
    return f"name={name}-subscriber " in redis_server.cli("CLIENT", "LIST", "TYPE", "pubsub")


@pytest.fixture(params=["pubsub 1mb 512kb 1", "pubsub 64kb 32kb 1"],
                ids=["b-dropped", "a-dropped-too"])
def small_pubsub_buffers(request, redis_server):
    # 1 MB: small enough that the frozen B is dropped within a few hundred 3.5 KB lines,
    # big enough that A, busy reading alice's burst, is not.  64 KB: A's own subscriber
    # (it gets A's batches too) is dropped as well, most runs: A reconnects, and what
    # it published while down is counted in B's gap like the rest.
    redis_server.cli("CONFIG", "SET", "client-output-buffer-limit", request.param)
    yield
    redis_server.cli("CONFIG", "SET", "client-output-buffer-limit", "pubsub 32mb 8mb 60")


def test_c3_redis_drops_a_frozen_subscriber_which_recovers(two, chatd_server, redis_server,
                                                           small_pubsub_buffers):
    a, b, alice, bob = two
    olga = operator(b)
    dave = chatter(b, "dave", "#local")  # B's own chat, in a room only B has
    line = "y" * 3500
    alice.send("before")  # B has heard from A on #dev: a later jump is a gap
    bob.expect(r"^<alice> before$")
    b.signal(signal.SIGSTOP)
    try:
        sent = 0
        while _subscriber_of(redis_server, "chatd-b") and sent < 6000:  # ~21 MiB at most
            for _ in range(100):
                alice.send(f"{sent} {line}")
                sent += 1
            alice.send(f"/whois x{sent}")  # A took them all in: no runaway client buffer
            alice.expect(rf"x{sent}")
        assert not _subscriber_of(redis_server, "chatd-b"), "Redis never dropped B"
        assert "output buffer limits" in redis_server.log()  # dropped as a slow subscriber
    finally:
        b.signal(signal.SIGCONT)
    b.wait_for_log(r"chatd-b: lost Redis")
    assert wait_until(lambda: _subscriber_of(redis_server, "chatd-b"), WAIT)
    assert wait_until(lambda: subscribers(redis_server, "chatd:room:#dev") == 2, WAIT)
    dave.send("/whois dave")  # B's own client was never hurt
    dave.expect(r"dave")
    alice.send("after the drop")
    seen = lines_until(bob, "<alice> after the drop", WAIT)
    delivered = len([x for x in seen if x.startswith("<alice> ") and line in x])
    missed = counted_gaps(olga)
    assert missed > 0, (delivered, sent, b.log()[-3000:])
    assert delivered + missed == sent, (delivered, missed, sent)
    b.wait_for_log(r"missed \d+ event\(s\) from a on chatd:room:#dev")  # and logged
    assert "Traceback" not in a.log() + b.log()


def test_c3_client_kill_of_the_subscribers_is_recovered(two, redis_server):
    a, b, alice, bob = two
    redis_server.cli("CLIENT", "KILL", "TYPE", "pubsub")
    a.wait_for_log(r"chatd-a: lost Redis")
    b.wait_for_log(r"chatd-b: lost Redis")
    assert wait_until(lambda: subscribers(redis_server, "chatd:room:#dev") == 2, WAIT)
    alice.send("after the kill")
    bob.expect(r"^<alice> after the kill$")
    bob.send("and back")
    alice.expect(r"^<bob> and back$")
