"""Cluster presence, the Redis side: the Lua scripts and the functions of
:mod:`chatd.builtin.cluster.presence`, against a real ``redis-server``."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis  # the test extra has it: missing, this fails everywhere

from chatd.builtin.cluster import presence as p
from chatd.builtin.cluster.wire import Names
from chatd.delivery import Member, Person, RoomInfo

TIMEOUT = 5.0


@pytest.fixture
def r(redis_url: str) -> Any:
    client = redis.Redis.from_url(redis_url, socket_timeout=TIMEOUT)
    yield client
    client.close()


@pytest.fixture
def names() -> Names:
    return Names("t")


def person(nick: str, node: str = "a", cid: int = 1, rooms: tuple[str, ...] = ()) -> Person:
    return Person(nick, f"{node}:{cid}", node, f"{nick}@x.cloak", None, None, 1.0, 2.0,
                  rooms, "127.0.0.1")


def member(nick: str, node: str = "a", cid: int = 1) -> Member:
    return Member(nick, f"{node}:{cid}", f"{nick}@x.cloak", None, False)


def alive(r: Any, names: Names, *nodes: str) -> None:
    for node in nodes:
        p.heartbeat(r, names, node, 30)


def test_claim_then_refused_to_another_session(r: Any, names: Names) -> None:
    alive(r, names, "a", "b")
    assert p.claim(r, names, person("alice", "a", 1))
    assert not p.claim(r, names, person("Alice", "b", 7))
    assert p.claim(r, names, person("alice", "a", 1))  # its own: claimed again
    assert p.find(r, names, "ALICE") == person("alice", "a", 1)


def test_look_alikes_are_refused(r: Any, names: Names) -> None:
    alive(r, names, "a", "b")
    assert p.claim(r, names, person("alice", "a", 1))
    assert not p.claim(r, names, person("aIice", "b", 2))  # capital i: same skeleton
    assert p.claim(r, names, person("aiice", "b", 2))  # not a look-alike of alice
    assert not p.claim(r, names, person("aIice", "a", 3))  # same key as aiice
    assert p.find(r, names, "aIice") == person("aiice", "b", 2)


def test_release_only_by_its_holder(r: Any, names: Names) -> None:
    alive(r, names, "a", "b")
    assert p.claim(r, names, person("alice", "a", 1))
    assert p.release(r, names, "b", "b:9", "alice") == 0
    assert p.find(r, names, "alice") is not None
    assert p.release(r, names, "a", "a:1", "alice") == 2
    assert p.find(r, names, "alice") is None
    assert p.claim(r, names, person("alice", "b", 9))
    assert r.smembers(names.node_nicks("a")) == set()


def test_rename_releases_the_old_nick_only_on_success(r: Any, names: Names) -> None:
    alive(r, names, "a", "b")
    assert p.claim(r, names, person("alice", "a", 1))
    assert p.claim(r, names, person("bob", "b", 2))
    assert not p.claim(r, names, person("bob", "a", 1), replacing="alice")
    assert p.find(r, names, "alice") == person("alice", "a", 1)  # kept
    assert p.claim(r, names, person("carol", "a", 1), replacing="alice")
    assert p.find(r, names, "alice") is None
    assert p.claim(r, names, person("Carol", "a", 1), replacing="carol")  # case only
    assert p.find(r, names, "carol") == person("Carol", "a", 1)


def test_a_dead_nodes_nick_is_free_and_invisible(r: Any, names: Names) -> None:
    alive(r, names, "b")
    r.sadd(names.nodes, "a")
    assert p.claim(r, names, person("alice", "a", 1))  # a's key is gone: not alive
    assert p.find(r, names, "alice") is None
    assert p.claim(r, names, person("alice", "b", 2))
    assert p.find(r, names, "alice") == person("alice", "b", 2)


def test_claim_raced_by_two_threads_exactly_one_wins(redis_url: str, names: Names) -> None:
    clients = [redis.Redis.from_url(redis_url, socket_timeout=TIMEOUT) for _ in range(2)]
    alive(clients[0], names, "a", "b")
    for round_ in range(50):
        start = threading.Barrier(2, timeout=TIMEOUT)
        won: list[bool] = [False, False]

        def race(i: int, start: threading.Barrier, won: list[bool], nick: str) -> None:
            start.wait()
            won[i] = p.claim(clients[i], names, person(nick, "ab"[i], 1))

        threads = [threading.Thread(target=race, args=(i, start, won, f"n{round_}"))
                   for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        assert sorted(won) == [False, True], round_
    for c in clients:
        c.close()


def test_members_and_room_list(r: Any, names: Names) -> None:
    p.joined(r, names, "a", member("alice", "a", 1), "#Dev", "hello")
    p.joined(r, names, "b", member("bob", "b", 2), "#dev", "hello")
    p.joined(r, names, "b", member("bob", "b", 2), "#ops", "")
    assert sorted(m.nick for m in p.members(r, names, "#DEV")) == ["alice", "bob"]
    # the listing keeps the room as its first member named it, and the topic it had:
    # a later joiner's node knows no topic yet and must not wipe it
    p.joined(r, names, "c", member("carol", "c", 3), "#dev", "")
    assert sorted(p.room_list(r, names), key=str) == [
        RoomInfo("#Dev", 3, "hello"), RoomInfo("#ops", 1, "")]
    everyone, topic = p.members_and_topic(r, names, "#dev")
    assert (sorted(m.nick for m in everyone), topic) == (["alice", "bob", "carol"], "hello")
    assert p.members_and_topic(r, names, "#nowhere") == ([], "")
    assert p.parted(r, names, "b", "b:2", "#ops") == 0
    assert p.parted(r, names, "c", "c:3", "#dev") == 2
    assert p.parted(r, names, "a", "a:1", "#dev") == 1
    assert p.room_list(r, names) == [RoomInfo("#Dev", 1, "hello")]
    p.set_topic(r, names, "#dev", "new")
    p.set_topic(r, names, "#ops", "gone")  # not listed: stays out
    assert p.room_list(r, names) == [RoomInfo("#dev", 1, "new")]


def test_register_refuses_a_live_node_id(r: Any, names: Names) -> None:
    assert p.register(r, names, "a", 30, "host:1")
    assert not p.register(r, names, "a", 30, "host:2")  # another process
    assert p.register(r, names, "a", 30, "host:1")  # the same one (a reload): no conflict
    assert p.register(r, names, "b", 30, "host:2")


def test_dead_node_sweep_returns_its_sessions_once(r: Any, names: Names) -> None:
    alive(r, names, "a", "b")
    assert p.claim(r, names, person("alice", "a", 1))
    assert p.claim(r, names, person("amy", "a", 2))
    assert p.claim(r, names, person("bob", "b", 3))
    p.joined(r, names, "a", member("alice", "a", 1), "#dev", "")
    p.joined(r, names, "a", member("alice", "a", 1), "#ops", "")
    p.joined(r, names, "b", member("bob", "b", 3), "#dev", "")
    assert p.dead_nodes(r, names) == []
    assert p.sweep(r, names, "a") == []  # alive: nothing happens
    r.delete(names.node_key("a"))  # its heartbeat expired
    assert p.dead_nodes(r, names) == ["a"]
    swept = {person.nick: rooms for person, rooms in p.sweep(r, names, "a")}
    assert {nick: sorted(rooms) for nick, rooms in swept.items()} == {
        "alice": ["#dev", "#ops"], "amy": []}
    assert p.sweep(r, names, "a") == []  # a second sweeper gets nothing
    assert p.dead_nodes(r, names) == []
    assert [m.nick for m in p.members(r, names, "#dev")] == ["bob"]
    assert p.room_list(r, names) == [RoomInfo("#dev", 1, "")]
    assert p.find(r, names, "bob") is not None
    assert sorted(r.hkeys(names.nicks)) == [b"k:bob", b"s:bob"]
    assert not r.exists(names.node_nicks("a"), names.node_rooms("a"))


def test_sweep_spares_a_nick_another_node_took_over(r: Any, names: Names) -> None:
    alive(r, names, "b")
    r.sadd(names.nodes, "a")
    assert p.claim(r, names, person("alice", "a", 1))
    assert p.claim(r, names, person("alice", "b", 2))  # a is dead: taken over
    assert p.sweep(r, names, "a") == []
    assert p.find(r, names, "alice") == person("alice", "b", 2)


def test_reregister_after_an_empty_restart(r: Any, names: Names) -> None:
    alive(r, names, "b")
    assert p.claim(r, names, person("bob", "b", 5))
    lost = p.reregister(r, names, "a", 30, [person("alice", "a", 1), person("bob", "a", 2)],
                        [(member("alice", "a", 1), "#dev", "t")])
    assert lost == ["bob"]
    assert p.find(r, names, "alice") == person("alice", "a", 1)
    assert p.room_list(r, names) == [RoomInfo("#dev", 1, "t")]
    assert "a" not in p.dead_nodes(r, names)


def test_reregister_clears_what_was_released_during_a_cut(r: Any, names: Names) -> None:
    alive(r, names, "a", "b")
    assert p.claim(r, names, person("alice", "a", 1))  # alice quit while the link was down:
    p.joined(r, names, "a", member("alice", "a", 1), "#dev", "")  # her release never came
    p.reregister(r, names, "a", 30, [person("amy", "a", 2)], [])
    assert p.find(r, names, "alice") is None
    assert p.room_list(r, names) == []
    assert p.find(r, names, "amy") is not None
    assert p.claim(r, names, person("alice", "b", 3))
    assert "a" not in p.dead_nodes(r, names) and r.sismember(names.nodes, "a")
