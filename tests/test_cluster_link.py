"""The cluster's link to Redis (chatd.builtin.cluster.link), against a real redis-server.

The loop is a queue here: everything the link's threads hand over arrives through
``post``, and the test runs it, as the server's loop would.  Jobs run in order and
answer through ``then``; publishes arrive in order, once; subscriptions survive a
restart of Redis (``on_state`` False then True); while Redis is away jobs fail at
once and publishes are dropped and counted, never queued without bound.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from chatd.builtin.cluster import resp
from chatd.builtin.cluster.link import (
    FIRST_BACKOFF,
    MAX_BACKOFF,
    Backoff,
    Link,
    LinkDown,
    RateLimitedLog,
)
from chatd.reactor import Reactor
from chatd.testing.probes import free_port, skip_unless_ci

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


def test_backoff_is_exponential_jittered_and_capped():
    """At most 10 attempts in the first 10 s even with the shortest jitter; no wait over 5 s."""
    for rng in (lambda: 0.0, lambda: 1.0, __import__("random").Random(7).random):
        backoff = Backoff(rng=rng)
        waits = [backoff.next() for _ in range(30)]
        assert max(waits) <= MAX_BACKOFF
        elapsed, attempts = 0.0, 1
        for wait in waits:
            elapsed += wait
            if elapsed > 10.0:
                break
            attempts += 1
        assert attempts <= 10
        assert waits[5] > waits[0]  # it grows
    backoff.reset()
    assert backoff.next() <= FIRST_BACKOFF


def test_log_lines_are_limited_per_kind_with_a_summary(caplog):
    now = [0.0]
    note = RateLimitedLog(logging.getLogger("t-limit"), every=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="t-limit"):
        for _ in range(5):
            note("lost", logging.WARNING, "lost it")
        note("other", logging.WARNING, "another kind")
        now[0] = 61.0
        note("lost", logging.WARNING, "lost it")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["lost it", "another kind", "lost it (and 4 more like it in the last 60 s)"]


def test_a_failing_handler_is_counted_and_the_link_goes_on(loop, redis_server, redis_url,
                                                           caplog):
    def on_message(channel: str, data: bytes) -> None:
        if data == b"boom":
            raise RuntimeError("handler bug")
        loop.messages.append((channel, data))

    made = Link(redis_url, post=loop.post, loop=loop.reactor, name="test-link",
                connect_timeout=1.0, on_message=on_message, on_state=loop.on_state)
    made.start()
    made.subscribe("t:a")
    loop.until(lambda: made.up)
    loop.until(lambda: _numsub(redis_server, "t:a") == 1)
    made.publish_many([("t:a", b"boom"), ("t:a", b"fine")])
    loop.until(lambda: loop.messages == [("t:a", b"fine")])
    assert made.errors == 1 and made.up and made.connects == 1
    assert "handler bug" in caplog.text
    made.close()


def test_a_host_name_is_resolved_off_the_loop(loop, redis_server, redis_url):
    name = _loopback_name()
    url = redis_url.replace("127.0.0.1", name)
    assert resp.endpoint(url).needs_lookup  # not an IP: the command thread resolves it
    made = make_link(loop, url)
    made.subscribe("t:a")
    loop.until(lambda: made.up)
    loop.until(lambda: _numsub(redis_server, "t:a") == 1)
    made.publish_many([("t:a", b"named")])
    loop.until(lambda: loop.messages == [("t:a", b"named")])
    made.close()


def _loopback_name() -> str:
    """A host name (not "localhost") that resolves to 127.0.0.1 here."""
    names = [socket.gethostname()]
    with contextlib.suppress(OSError):
        for line in Path("/etc/hosts").read_text().splitlines():
            fields = line.split("#")[0].split()
            if fields and fields[0] == "127.0.0.1":
                names += fields[1:]
    for name in names:
        if name in resp.LOCAL_NAMES:
            continue
        with contextlib.suppress(OSError):
            if socket.getaddrinfo(name, 1, socket.AF_INET)[0][4][0] == "127.0.0.1":
                return name
    skip_unless_ci("no host name resolving to 127.0.0.1 besides localhost")


def test_client_kill_of_the_subscriber_reconnects_and_resubscribes(loop, link, redis_server):
    loop.until(lambda: _numsub(redis_server, "t:a") == 1)
    redis_server.cli("CLIENT", "KILL", "TYPE", "pubsub")
    loop.until(lambda: loop.states == [True, False, True])
    loop.until(lambda: _numsub(redis_server, "t:a") == 1)
    link.publish_many([("t:a", b"back")])
    loop.until(lambda: loop.messages == [("t:a", b"back")])


@pytest.fixture
def tls_redis(redis_server, tmp_path):
    """A second redis-server speaking only TLS, its certificate from a trustme CA."""
    import trustme  # the test extra has it
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = (tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(str(ca_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    port = free_port("127.0.0.1")
    proc = subprocess.Popen(
        [redis_server.server_binary, "--port", "0", "--tls-port", str(port),
         "--bind", "127.0.0.1", "--tls-cert-file", str(cert_file), "--tls-key-file",
         str(key_file), "--tls-ca-cert-file", str(ca_file), "--tls-auth-clients", "no",
         "--requirepass", "tls-secret", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert proc.poll() is None and time.monotonic() < deadline, "no TLS redis"
            time.sleep(0.05)  # polling a port another process opens: no event to wait on
        yield f"rediss://:tls-secret@127.0.0.1:{port}/0?ssl_ca_certs={ca_file}", port
    finally:
        proc.kill()
        proc.wait(10)


def test_tls_handshake_on_the_loop_then_publish_and_subscribe(loop, tls_redis):
    url, _port = tls_redis
    made = make_link(loop, url)
    made.subscribe("t:tls")
    loop.until(lambda: made.up)
    answers: list[Any] = []
    made.run(lambda r: r.execute_command("PUBSUB", "NUMSUB", "t:tls"),
             lambda res, err: answers.append((res, err)))
    loop.until(lambda: answers)
    assert answers[0] == ([b"t:tls", 1], None)  # the command thread speaks TLS too
    made.publish_many([("t:tls", b"secret line")])
    loop.until(lambda: loop.messages == [("t:tls", b"secret line")])
    made.close()


def test_tls_with_an_untrusted_certificate_never_comes_up(loop, tls_redis, caplog):
    _url, port = tls_redis
    made = make_link(loop, f"rediss://:tls-secret@127.0.0.1:{port}/0")  # system CAs only
    made.subscribe("t:tls")
    loop.until(lambda: "SSLCertVerificationError" in caplog.text)
    assert not made.up and loop.states == []
    made.close()


@pytest.fixture
def acl_user(redis_server):
    """A Redis 6+ ACL user of its own (AUTH user password), removed afterwards."""
    redis_server.cli("ACL", "SETUSER", "chatd-link", "on", ">user-secret", "~*", "&*", "+@all")
    yield "chatd-link"
    redis_server.cli("ACL", "DELUSER", "chatd-link")


def test_auth_with_a_user_name_and_a_database(loop, redis_server, acl_user):
    database = redis_server.fresh_database()
    url = f"redis://{acl_user}:user-secret@127.0.0.1:{redis_server.port}/{database}"
    made = make_link(loop, url)
    made.subscribe("t:a")
    loop.until(lambda: made.up)
    answers: list[Any] = []
    made.run(lambda r: r.ping(), lambda res, err: answers.append(err))  # the command thread
    loop.until(lambda: answers)                                         # connects lazily
    assert answers == [None]
    listed = redis_server.cli("CLIENT", "LIST")
    mine = [line for line in listed.splitlines() if "name=test-link-" in line]
    assert len(mine) == 3 and all(f"user={acl_user}" in line for line in mine)
    assert all(f" db={database} " in line for line in mine
               if "publisher" in line or "commands" in line)
    made.publish_many([("t:a", b"as a user")])
    loop.until(lambda: loop.messages == [("t:a", b"as a user")])
    made.close()


def test_two_chatd_nodes_chat_over_rediss(tls_redis, chatd_server):
    """End to end: the config takes a rediss:// URL with its CA, and lines cross."""
    url, _port = tls_redis
    nodes = [chatd_server(cluster={"redis_url": url, "node_id": name, "prefix": "tls",
                                   "connect_timeout_seconds": 0.5}) for name in ("a", "b")]
    for server in nodes:
        server.wait_for_log(r"connected to Redis")
    alice, bob = nodes[0].client(), nodes[1].client()
    for client, nick in ((alice, "alice"), (bob, "bob")):
        client.send(f"/nick {nick}")
        client.expect(rf"You are now {nick}|now known as {nick}")
        client.send("/join #tls")
        client.expect(r"joined #tls|talking in #tls")
    deadline = time.monotonic() + WAIT
    while True:  # until B's subscription is applied: alice's line reaches bob
        alice.send("over tls")
        try:
            bob.expect(r"^<alice> over tls$", timeout=0.5)
            break
        except AssertionError:
            assert time.monotonic() < deadline, "no line crossed over TLS"
    assert "tls-secret" not in nodes[0].log() + nodes[1].log()
