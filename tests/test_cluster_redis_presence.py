"""RedisPresence (chatd.builtin.cluster.presence) on a real Link and a real Redis,
two nodes in one test process, each with its own local backend.

The loop is a queue the test runs (as in tests/test_cluster_link.py): answers come
through ``then`` on the test's thread.  What is checked here is the loop side: the
local backend kept in step with Redis, answers from this node alone while the link
is down, the heartbeat, the sweep of a dead node into quit events (exactly one
node announces them), and re-registration after Redis restarted empty.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis  # noqa: F401  (the test extra has it: missing, this fails everywhere)

from chatd.builtin.cluster.link import Link
from chatd.builtin.cluster.presence import RedisPresence
from chatd.builtin.cluster.wire import Names
from chatd.delivery import LocalBackend
from chatd.events import Source
from chatd.reactor import Reactor

WAIT = 10.0


class Loop:
    """A real chatd Reactor run by the test thread (the links' connections live on it)."""

    def __init__(self) -> None:
        self.reactor = Reactor()
        self.reactor.enable_threadsafe()
        self.thread = threading.get_ident()

    def post(self, fn: Any, *args: Any) -> None:
        self.reactor.call_soon_threadsafe(fn, *args)

    def until(self, condition: Any, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out")
            assert threading.get_ident() == self.thread
            self.reactor.run_once(max_wait=min(left, 0.05))


@dataclass(eq=False)
class FakeClient:
    """What presence reads of a client."""

    id: int
    nick: str
    node: str
    rooms: tuple[Any, ...] = ()
    account: str | None = None
    away: str | None = None
    address: str = "127.0.0.1"
    connected_at: float = field(default_factory=time.time)
    idle_seconds: float = 0.0

    @property
    def session(self) -> str:
        return f"{self.node}:{self.id}"

    @property
    def user(self) -> str:
        return f"{self.nick}@x.cloak"

    @property
    def source(self) -> Source:
        return Source(self.nick, self.id, None, None, self.node, self.nick, "x.cloak")


@dataclass(eq=False)
class FakeRoom:
    name: str
    topic: str = ""
    members: dict[Any, None] = field(default_factory=dict)
    renderers: dict[Any, int] = field(default_factory=dict)


class Node:
    """One node's presence: its link, local backend and RedisPresence."""

    def __init__(self, loop: Loop, url: str, node: str) -> None:
        self.loop = loop
        self.local = LocalBackend()
        self.lost: list[Any] = []
        self.states: list[bool] = []
        self.conflicts: list[str] = []
        self.link = Link(url, post=loop.post, loop=loop.reactor, name=f"link-{node}",
                         connect_timeout=1.0, on_message=lambda *a: None, on_state=self.on_state)
        self.presence = RedisPresence(self.link, Names("t"), node, self.local,
                                      heartbeat_seconds=0.1, node_timeout_seconds=0.5,
                                      on_lost=self.lost.append,
                                      on_conflict=self.conflicts.append,
                                      token=f"{node}-{id(self)}")  # one process per node
        self.link.subscribe(f"t:node:{node}")  # a link notices cuts while it listens
        self.link.start()

    def on_state(self, up: bool) -> None:
        self.states.append(up)
        self.presence.on_state(up)

    def ask(self, question: Any, *args: Any, **kwargs: Any) -> Any:
        answers: list[Any] = []
        question(*args, answers.append, **kwargs)
        self.loop.until(lambda: answers)
        return answers[0]

    def tick(self) -> None:
        """One heartbeat, answered."""
        done: list[Any] = []
        self.presence._tick()
        self.link.run(lambda r: None, lambda *a: done.append(a))  # after the beat's job
        self.loop.until(lambda: done)

    def sync(self) -> None:
        """Until this node's jobs so far are done (they run in order)."""
        done: list[Any] = []
        self.link.run(lambda r: None, lambda *a: done.append(a))
        self.loop.until(lambda: done)

    def connect(self, cid: int, nick: str) -> FakeClient:
        client = FakeClient(cid, nick, self.presence.node)
        self.local.connected(client)  # type: ignore[arg-type]
        assert self.ask(self.presence.claim_nick, client, nick)
        return client

    def close(self) -> None:
        self.link.close()


@pytest.fixture
def loop() -> Iterator[Loop]:
    made = Loop()
    yield made
    made.reactor.close()


@pytest.fixture
def nodes(loop: Loop, redis_url: str) -> Any:
    made: list[Node] = []

    def make(name: str) -> Node:
        node = Node(loop, redis_url, name)
        made.append(node)
        loop.until(lambda: node.link.up)
        node.tick()
        assert node.presence.registered
        return node

    yield make
    for node in made:
        node.close()


def test_a_claim_is_cluster_wide_and_recorded_locally(nodes: Any) -> None:
    a, b = nodes("a"), nodes("b")
    alice = a.connect(1, "alice")
    assert a.local.holder("alice") is alice  # local delivery finds her
    other = FakeClient(2, "x", "b")
    b.local.connected(other)
    assert not b.ask(b.presence.claim_nick, other, "Alice")
    assert not b.ask(b.presence.claim_nick, other, "aIice")  # a look-alike
    assert b.local.holder("alice") is None
    found = b.ask(b.presence.find_nick, "ALICE")
    assert (found.nick, found.node) == ("alice", "a")
    a.presence.release_nick(alice, "alice")
    assert a.local.holder("alice") is None
    a.sync()
    assert b.ask(b.presence.claim_nick, other, "alice")
    assert b.local.holder("alice") is other


def test_a_rename_keeps_the_old_nick_when_refused(nodes: Any) -> None:
    a, b = nodes("a"), nodes("b")
    alice = a.connect(1, "alice")
    b.connect(2, "bob")
    assert not a.ask(a.presence.claim_nick, alice, "bob", replacing="alice")
    assert a.local.holder("alice") is alice
    assert b.ask(b.presence.find_nick, "alice").node == "a"
    assert a.ask(a.presence.claim_nick, alice, "carol", replacing="alice")
    assert a.local.holder("alice") is None and a.local.holder("carol") is alice
    assert b.ask(b.presence.find_nick, "alice") is None


def test_members_and_rooms_show_both_nodes(nodes: Any) -> None:
    a, b = nodes("a"), nodes("b")
    alice, bob = a.connect(1, "alice"), b.connect(2, "bob")
    dev_a, dev_b = FakeRoom("#dev", "hi"), FakeRoom("#dev", "hi")
    for node, client, room in ((a, alice, dev_a), (b, bob, dev_b)):
        room.members[client] = None
        client.rooms = (room,)
        node.presence.joined(client, room)
        node.sync()
    assert sorted(m.nick for m in a.ask(a.presence.members, "#DEV")) == ["alice", "bob"]
    listing = b.ask(b.presence.room_list)
    assert [(r.name, r.members, r.topic) for r in listing] == [("#dev", 2, "hi")]
    assert b.ask(b.presence.find_nick, "alice").rooms == ("#dev",)
    a.presence.parted(alice, dev_a)
    a.sync()
    assert [m.nick for m in b.ask(b.presence.members, "#dev")] == ["bob"]


def test_while_down_this_node_answers_alone(loop: Loop, redis_server: Any,
                                            redis_url: str) -> None:
    redis_server.stop()
    try:
        a = Node(loop, redis_url, "a")
        alice = FakeClient(1, "alice", "a")
        a.local.connected(alice)  # type: ignore[arg-type]
        assert a.ask(a.presence.claim_nick, alice, "alice")  # at once, locally
        assert a.ask(a.presence.find_nick, "bob") is None
        redis_server.start()
        loop.until(lambda: a.link.up)
        a.tick()  # registers, then re-registers what was claimed meanwhile
        loop.until(lambda: a.presence.registered)
        r = redis_server.client(int(redis_url.rsplit("/", 1)[1]))
        deadline = time.monotonic() + WAIT
        while not r.hexists("t:nicks", "k:alice"):
            assert time.monotonic() < deadline
            a.tick()
        a.close()
    finally:
        redis_server.ensure_running()


def test_a_dead_node_is_swept_once_with_quits(nodes: Any) -> None:
    a, b, c = nodes("a"), nodes("b"), nodes("c")
    alice = a.connect(1, "alice")
    dev = FakeRoom("#dev")
    dev.members[alice] = None
    alice.rooms = (dev,)
    a.presence.joined(alice, dev)
    a.sync()
    a.presence.stop()
    a.close()  # a dies: no more heartbeats
    deadline = time.monotonic() + WAIT
    while not (b.lost or c.lost):
        assert time.monotonic() < deadline
        b.tick()
        c.tick()
    b.tick()
    c.tick()
    quits = b.lost + c.lost
    assert [(q.kind, q.source.nick, q.source.node, q.rooms, q.text) for q in quits] == [
        ("quit", "alice", "a", ("#dev",), "node lost")]
    assert b.ask(b.presence.find_nick, "alice") is None
    assert b.ask(b.presence.room_list) == []


def test_a_live_node_id_is_refused(nodes: Any, loop: Loop, redis_url: str) -> None:
    nodes("a")
    twin = Node(loop, redis_url, "a")
    try:
        loop.until(lambda: twin.link.up)
        twin.tick()
        loop.until(lambda: twin.conflicts)
        assert not twin.presence.registered
        assert "node id 'a'" in twin.conflicts[0]
    finally:
        twin.close()


def test_reregistered_after_redis_restarts_empty(nodes: Any, loop: Loop,
                                                 redis_server: Any) -> None:
    a, b = nodes("a"), nodes("b")
    a.connect(1, "alice")
    redis_server.restart()  # empty: nothing was saved
    loop.until(lambda: all(False in n.states and n.states[-1] for n in (a, b)))
    a.tick()  # its key was gone: it registers its users again
    a.sync()
    found = b.ask(b.presence.find_nick, "alice")
    assert found is not None and found.node == "a"


def test_a_node_swept_while_silent_registers_again(nodes: Any, redis_url: str) -> None:
    a, b = nodes("a"), nodes("b")
    a.connect(1, "alice")
    a.sync()
    b.link.run(lambda r: r.delete("t:node:a"))  # a was silent past its timeout
    b.tick()  # b sweeps a: alice quits there
    assert [q.source.nick for q in b.lost] == ["alice"]
    assert b.ask(b.presence.find_nick, "alice") is None
    a.tick()  # a's key was gone: it writes its users again (no cut of its link)
    a.sync()
    assert b.ask(b.presence.find_nick, "alice").node == "a"


def test_two_registrations_in_flight_are_not_a_conflict(loop: Loop, redis_url: str) -> None:
    a = Node(loop, redis_url, "a")
    try:
        loop.until(lambda: a.link.up)  # on_state(True) asked to register already
        a.presence._tick()  # a tick before the answer: no second registration
        a.sync()
        loop.until(lambda: a.presence.registered)
        a.tick()
        assert a.conflicts == []
    finally:
        a.close()
