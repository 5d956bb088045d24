"""The cluster's link to Redis (chatd.builtin.cluster.link), against a real redis-server.

The loop is a queue here: everything the link's threads hand over arrives through
``post``, and the test runs it, as the server's loop would.  Jobs run in order and
answer through ``then``; publishes arrive in order, once; subscriptions survive a
restart of Redis (``on_state`` False then True); while Redis is away jobs fail at
once and publishes are dropped and counted, never queued without bound.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from chatd.builtin.cluster.link import Link, LinkDown
from chatd.reactor import Reactor

WAIT = 10.0


class Loop:
    """A real chatd Reactor run by the test thread: ``until(condition)`` runs ticks.

    The publisher and subscriber live on it; the command thread's answers come
    through ``post`` (``call_soon_threadsafe``), as in the server."""

    def __init__(self) -> None:
        self.reactor = Reactor()
        self.reactor.enable_threadsafe()
        self.messages: list[tuple[str, bytes]] = []
        self.states: list[bool] = []
        self.loop_thread = threading.get_ident()
        self.wrong_thread = 0

    def post(self, fn: Any, *args: Any) -> None:
        self.reactor.call_soon_threadsafe(self._on_loop, fn, *args)

    def _on_loop(self, fn: Any, *args: Any) -> None:
        if threading.get_ident() != self.loop_thread:
            self.wrong_thread += 1
        fn(*args)

    def on_message(self, channel: str, data: bytes) -> None:
        if threading.get_ident() != self.loop_thread:
            self.wrong_thread += 1
        self.messages.append((channel, data))

    def on_state(self, up: bool) -> None:
        self.states.append(up)

    def until(self, condition: Any, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out: states {self.states}, "
                                     f"{len(self.messages)} messages")
            self.reactor.run_once(max_wait=min(left, 0.05))


@pytest.fixture
def loop():
    made = Loop()
    yield made
    made.reactor.close()


def make_link(loop: Loop, url: str, **options: Any) -> Link:
    options.setdefault("health_seconds", 0.5)
    link = Link(url, post=loop.post, loop=loop.reactor, name="test-link", connect_timeout=1.0,
                on_message=loop.on_message, on_state=loop.on_state, **options)
    link.start()
    return link


@pytest.fixture
def link(loop, redis_url):
    made = make_link(loop, redis_url)
    made.subscribe("t:a")
    loop.until(lambda: loop.states == [True])
    yield made
    made.close()


def _numsub(redis_server, channel: str) -> int:
    out = redis_server.cli("PUBSUB", "NUMSUB", channel).split()
    return int(out[1]) if len(out) > 1 else 0


def test_jobs_run_in_order_and_answer_on_the_loop(loop, link):
    answers: list[Any] = []
    for i in range(20):
        link.run(lambda r, i=i: r.rpush("t:list", i), lambda res, err: answers.append((res, err)))
    link.run(lambda r: r.lrange("t:list", 0, -1), lambda res, err: answers.append((res, err)))
    loop.until(lambda: len(answers) == 21)
    assert answers[:20] == [(i + 1, None) for i in range(20)]
    assert answers[20] == ([str(i).encode() for i in range(20)], None)
    assert loop.wrong_thread == 0


def test_a_failing_job_hands_its_error_to_then(loop, link):
    answers: list[Any] = []
    link.run(lambda r: r.execute_command("NO-SUCH-COMMAND"),
             lambda res, err: answers.append((res, err)))
    link.run(lambda r: r.ping(), lambda res, err: answers.append((res, err)))
    loop.until(lambda: len(answers) == 2)
    assert answers[0][0] is None and isinstance(answers[0][1], Exception)
    assert answers[1] == (True, None)  # the next job is not hurt


def test_publishes_arrive_once_in_order(loop, link, redis_server):
    loop.until(lambda: _numsub(redis_server, "t:a") == 1)
    for batch in range(50):
        link.publish_many([("t:a", f"{batch}-{i}".encode()) for i in range(4)]
                          + [("t:elsewhere", b"x")])
    loop.until(lambda: len(loop.messages) >= 200)
    expected = [("t:a", f"{b}-{i}".encode()) for b in range(50) for i in range(4)]
    assert loop.messages == expected
    assert link.dropped == 0


def test_unsubscribe_stops_the_channel_and_subscribe_adds_one(loop, link, redis_server):
    link.subscribe("t:b")
    loop.until(lambda: _numsub(redis_server, "t:b") == 1)
    link.unsubscribe("t:a")
    loop.until(lambda: _numsub(redis_server, "t:a") == 0)
    assert link.channels == {"t:b"}
    link.publish_many([("t:a", b"gone"), ("t:b", b"here")])
    loop.until(lambda: loop.messages == [("t:b", b"here")])


def test_redis_absent_at_start_then_up(loop, redis_server, redis_url):
    redis_server.stop()
    try:
        answers: list[Any] = []
        made = make_link(loop, redis_url)
        made.subscribe("t:a")
        made.run(lambda r: r.ping(), lambda res, err: answers.append(err))
        made.publish_many([("t:a", b"lost")])
        loop.until(lambda: answers)
        assert isinstance(answers[0], LinkDown)  # fails at once: not queued
        assert made.dropped == 1 and not made.up and loop.states == []
    finally:
        redis_server.start()
    loop.until(lambda: loop.states == [True])
    loop.until(lambda: _numsub(redis_server, "t:a") == 1)
    made.publish_many([("t:a", b"now")])
    loop.until(lambda: loop.messages == [("t:a", b"now")])
    made.close()


def test_a_restart_of_redis_is_seen_and_subscriptions_come_back(loop, link, redis_server):
    redis_server.restart()
    loop.until(lambda: loop.states == [True, False, True])
    loop.until(lambda: _numsub(redis_server, "t:a") == 1)
    link.publish_many([("t:a", b"after")])
    loop.until(lambda: loop.messages == [("t:a", b"after")])
    assert link.connects == 2


def test_a_frozen_redis_is_noticed(loop, link, redis_server):
    redis_server.freeze()
    try:
        loop.until(lambda: loop.states == [True, False])
    finally:
        redis_server.thaw()
    loop.until(lambda: loop.states == [True, False, True])


@pytest.mark.parametrize("caps", [{"max_outbox": 3}, {"max_outbox_bytes": 256 * 1024}],
                         ids=["batches", "bytes"])
def test_the_outbox_is_bounded_by_batches_and_bytes(loop, redis_server, redis_url, caps):
    made = make_link(loop, redis_url, health_seconds=30.0, **caps)
    made.subscribe("t:a")
    loop.until(lambda: loop.states == [True])
    chunk = b"x" * 65536
    redis_server.freeze()  # Redis reads nothing: the kernel's buffers fill, then ours
    try:
        for _ in range(300):  # ~19 MiB: far more than loopback's socket buffers
            made.publish_many([("t:a", chunk)])
        assert made.dropped > 0
        assert made.outbox_batches <= caps.get("max_outbox", 10_000)
        assert made.outbox_bytes <= caps.get("max_outbox_bytes", 1 << 20) + len(chunk) + 64
    finally:
        redis_server.thaw()
    made.publish_many([("t:a", b"after")])  # the link was never cut: it goes on
    loop.until(lambda: loop.messages and loop.messages[-1] == ("t:a", b"after"))
    assert made.up and made.connects == 1
    made.close()


def test_a_wrong_password_never_comes_up_and_the_url_is_not_logged(loop, redis_server, caplog):
    made = make_link(loop, redis_server.url_for(1, password="wrong-secret-xyz"))
    made.subscribe("t:a")
    answers: list[Any] = []
    made.run(lambda r: r.ping(), lambda res, err: answers.append(err))
    loop.until(lambda: answers)
    loop.until(lambda: "AuthenticationError" in caplog.text)
    made.close()
    assert isinstance(answers[0], LinkDown)
    assert not made.up and loop.states == []
    assert "wrong-secret-xyz" not in caplog.text
