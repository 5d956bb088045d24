"""Presence across nodes: two (or three) real chatd processes on one real Redis.

A nick is unique cluster-wide (look-alikes too), released on quit; guests never
collide; ``/who``, ``/names``, ``/whois`` and ``/list`` show both nodes; a node
killed with SIGKILL disappears from the others within ``node_timeout_seconds +
heartbeat_seconds``, with quit lines to its users' rooms; a node id that is live
already does not start.
"""

from __future__ import annotations

import re
import signal
from typing import Any

import pytest
import redis  # noqa: F401  (the test extra has it: missing, this fails everywhere)
from cluster_nodes import heard_by

HEARTBEAT = 0.2
NODE_TIMEOUT = 1.0


def start_node(chatd_server: Any, redis_url: str, node: str, **sections: Any) -> Any:
    """A chatd node of the cluster, registered in Redis before any client connects."""
    server = chatd_server(cluster={"redis_url": redis_url, "node_id": node,
                                   "heartbeat_seconds": HEARTBEAT,
                                   "node_timeout_seconds": NODE_TIMEOUT}, **sections)
    server.wait_for_log(rf"cluster: node {node} registered")
    return server


@pytest.fixture
def two(chatd_server: Any, redis_url: str) -> tuple[Any, Any]:
    return start_node(chatd_server, redis_url, "a"), start_node(chatd_server, redis_url, "b")


def named(server: Any, nick: str) -> Any:
    client = server.client()
    client.send(f"/nick {nick}")
    client.expect(rf"is now known as {re.escape(nick)}$")
    return client


def test_a_nick_on_one_node_is_refused_on_the_other(two: tuple[Any, Any]) -> None:
    a, b = two
    alice = named(a, "alice")
    other = b.client()
    for wanted in ("Alice", "aIice", "ALICE"):  # any case, and a look-alike (capital i)
        other.send(f"/nick {wanted}")
        other.expect(rf"^! the nick {wanted} is taken$")
    alice.send("/quit")
    alice.expect_eof()
    other.send("/nick alice")  # released on quit
    other.expect(r"is now known as alice$")


def test_a_rename_frees_the_old_nick_everywhere(two: tuple[Any, Any]) -> None:
    a, b = two
    alice = named(a, "alice")
    alice.send("/nick alicia")
    alice.expect(r"is now known as alicia$")
    named(b, "alice")
    other = b.client()
    other.send("/nick alicia")
    other.expect(r"^! the nick alicia is taken$")


def test_guest_nicks_never_collide(two: tuple[Any, Any]) -> None:
    a, b = two  # both number their guests 1, 2, 3...: the claim in Redis decides
    clients = [(a if i % 2 else b).client() for i in range(20)]
    nicks = [client.nick for client in clients]
    assert all(nick.startswith("guest-") for nick in nicks)
    assert len(set(nicks)) == 20, nicks


def test_who_names_whois_and_list_show_both_nodes(two: tuple[Any, Any],
                                                  redis_server: Any) -> None:
    a, b = two
    alice, bob = named(a, "alice"), named(b, "bob")
    for client, name in ((alice, "alice"), (bob, "bob")):
        client.send("/join #dev")
        client.expect(rf"^\*\*\* {name} joined #dev$")
    heard_by(redis_server, "chatd:room:#dev", 2)
    bob.send("/topic the plan")
    bob.expect(r"^\*\*\* bob set the topic of #dev to: the plan$")
    alice.expect(r"^\*\*\* bob set the topic of #dev to: the plan$")
    alice.send("/who #dev")
    alice.expect(r"^\*\*\* #dev has 2 members: alice, bob — topic: the plan$")
    bob.send("/names #dev")
    bob.expect(r"^\*\*\* #dev has 2 members: alice, bob")
    alice.send("/whois bob")
    alice.expect(r"^\*\*\* bob: in #lobby, #dev; connected ")
    alice.send("/list")
    alice.expect(r"^\*\*\*   #dev \(2\) — the plan$")
    bob.send("/whois nobody")
    bob.expect(r"^! no such nick")


def test_a_killed_node_vanishes_from_the_others_with_quit_lines(two: tuple[Any, Any]) -> None:
    a, b = two
    alice, bob = named(a, "alice"), named(b, "bob")
    for client, name in ((alice, "alice"), (bob, "bob")):
        client.send("/join #dev")
        client.expect(rf"^\*\*\* {name} joined #dev$")
    bob.expect(r"^\*\*\* also in #dev: alice$")
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)
    bound = NODE_TIMEOUT + HEARTBEAT
    bob.expect(r"^\*\*\* alice (has )?(quit|left).*node lost", timeout=bound + 5.0)
    bob.send("/who #dev")
    bob.expect_line("*** #dev has 1 member: bob")
    bob.send("/nick alice")  # free again
    bob.expect(r"is now known as alice$")
    b.wait_for_log(r"cluster: node a is gone")


def test_a_node_id_that_is_live_already_does_not_start(chatd_server: Any, redis_url: str) -> None:
    start_node(chatd_server, redis_url, "a")
    twin = chatd_server(cluster={"redis_url": redis_url, "node_id": "a",
                                 "heartbeat_seconds": HEARTBEAT,
                                 "node_timeout_seconds": NODE_TIMEOUT})
    twin.wait_for_log(r"another live node already has the node id 'a'")
    assert twin.proc.wait(10) == 1  # a failure, for systemd or the workers' parent


def test_after_a_redis_restart_every_node_registers_its_users_again(
        two: tuple[Any, Any], redis_server: Any) -> None:
    a, b = two
    alice = named(a, "alice")
    alice.send("/join #dev")
    alice.expect(r"^\*\*\* alice joined #dev$")
    redis_server.restart()  # empty: nothing was saved
    a.wait_for_log(r"cluster: registered this node's users again: 1")
    b.wait_for_log(r"(?s)chatd-b: connected to Redis.*chatd-b: connected to Redis")
    bob = b.client()
    bob.send("/nick alice")
    bob.expect(r"^! the nick alice is taken$")
    bob.send("/whois alice")
    bob.expect(r"^\*\*\* alice: in #lobby, #dev; connected ")


def test_the_heartbeat_goes_on_after_a_reload(chatd_server: Any, redis_url: str,
                                              redis_server: Any) -> None:
    a = start_node(chatd_server, redis_url, "a")
    a.signal(signal.SIGHUP)
    a.wait_for_log(r"reloaded .*: plugins")
    database = redis_url.rsplit("/", 1)[1]
    redis_server.cli("-n", database, "DEL", "chatd:node:a")  # as if it had expired
    a.wait_for_log(r"heartbeat key was gone")  # a later beat noticed: the timer lives


def test_with_three_nodes_each_survivor_shows_the_quit_once(
        chatd_server: Any, redis_url: str, redis_server: Any) -> None:
    a, b, c = (start_node(chatd_server, redis_url, n) for n in "abc")
    alice, bob, carol = named(a, "alice"), named(b, "bob"), named(c, "carol")
    for client, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        client.send("/join #dev")
        client.expect(rf"^\*\*\* {name} joined #dev$")
    heard_by(redis_server, "chatd:room:#dev", 3)
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)
    for survivor in (bob, carol):  # one node swept a; the other heard it on #dev's channel
        survivor.expect(r"^\*\*\* alice (has )?(quit|left).*node lost", timeout=10.0)
        survivor.send("/who #dev")
        lines = []
        while not (lines and lines[-1].startswith("*** #dev has")):
            lines.append(survivor.recv_line())
        assert lines[-1].startswith("*** #dev has 2 members: bob, carol")
        assert not [x for x in lines if "node lost" in x]  # once
