"""Rooms across nodes: two real chatd processes on one real redis-server.

alice on node A and bob on node B in #dev see each other's lines exactly once and
in order, never their own back (no echo, also for a second client on the sender's
node); joins, parts, quits, renames and topics cross; a node keeps its local chat
when Redis is absent at its start and joins the others when Redis comes; a Redis
restart mid-chat is survived, and what was lost meanwhile is counted as a gap; a
hostile payload published with the real ``redis-cli`` is counted and dropped.
"""

from __future__ import annotations

import json
import re
import signal

import pytest
from cluster_nodes import chatter, heard_by, lines_until, subscribers

from chatd.testing import wait_until

WAIT = 10.0


def node(chatd_server, redis_url, name, **cluster):
    return chatd_server(cluster={"redis_url": redis_url, "node_id": name,
                                 "connect_timeout_seconds": 0.5, **cluster})


def see(client, line: str) -> None:
    """Until ``line`` comes (exactly), skipping others (what a join tells its joiner)."""
    client.expect(f"^{re.escape(line)}$")


@pytest.fixture
def two(chatd_server, redis_server, redis_url):
    a = node(chatd_server, redis_url, "a")
    b = node(chatd_server, redis_url, "b")
    alice, bob = chatter(a, "alice"), chatter(b, "bob")
    heard_by(redis_server, "chatd:room:#dev", 2)
    return a, b, alice, bob


def test_lines_cross_exactly_once_in_order_without_echo(two, redis_server):
    a, _b, alice, bob = two
    carol = chatter(a, "carol")  # a second member on the sender's node
    for i in range(100):
        alice.send(f"from-alice {i}")
        bob.send(f"from-bob {i}")
    alice.send("alice-done")
    bob.send("bob-done")
    at_bob = lines_until(bob, "<alice> alice-done")
    at_alice = lines_until(alice, "<bob> bob-done")
    at_carol = lines_until(carol, "<alice> alice-done")
    if "<bob> bob-done" not in at_carol:
        at_carol += lines_until(carol, "<bob> bob-done")
    assert [x for x in at_bob if "from-alice" in x] == [f"<alice> from-alice {i}"
                                                       for i in range(100)]
    assert [x for x in at_alice if "from-bob" in x] == [f"<bob> from-bob {i}"
                                                       for i in range(100)]
    assert not [x for x in at_alice if "from-alice" in x]  # no echo from Redis
    for sender in ("alice", "bob"):  # carol, on alice's node, sees both once
        assert [x for x in at_carol if f"from-{sender}" in x] == [
            f"<{sender}> from-{sender} {i}" for i in range(100)]
    for client in (alice, bob, carol):  # and nothing twice after the markers (an echo
        client.expect_nothing(0.5)      # from Redis comes a round trip after the line)


def test_joins_parts_topics_renames_and_quits_cross(two, chatd_server, redis_server):
    _a, b, alice, bob = two
    dave = chatter(b, "dave", "#lobby")
    dave.send("/join #dev")
    see(alice, "*** dave joined #dev")
    alice.send("/topic shipping on friday")
    see(bob, "*** alice set the topic of #dev to: shipping on friday")
    see(dave, "*** alice set the topic of #dev to: shipping on friday")
    bob.send("/topic")  # B's own room now has the topic
    bob.expect(r"shipping on friday")
    dave.send("/part #dev")
    alice.expect(r"^\*\*\* dave left #dev")
    bob.send("/nick robert")
    see(alice, "*** bob is now known as robert")
    bob.send("/quit bye")
    line = alice.expect(r"robert quit").string
    assert line == "*** robert quit (Quit: bye)"
    alice.send("/part #dev")
    heard_by(redis_server, "chatd:room:#dev", 0)  # nobody left there on either node


def test_a_quit_seen_in_two_shared_rooms_is_shown_once(two, redis_server):
    _a, _b, alice, bob = two
    alice.send("/join #ops")
    heard_by(redis_server, "chatd:room:#ops", 1)
    bob.send("/join #ops")
    see(alice, "*** bob joined #ops")
    bob.send("/quit gone")
    see(alice, "*** bob quit (Quit: gone)")
    alice.send("/join #dev")  # already in: a line of its own, after any second copy
    assert not [x for x in lines_until(alice, "talking in #dev") if "quit" in x]


def test_a_private_message_crosses(two):
    _a, _b, alice, bob = two
    alice.send("/msg bob psst")
    see(bob, "*alice* psst")


def test_redis_absent_at_start_local_chat_works_then_nodes_join(
        chatd_server, redis_server, redis_url):
    redis_server.stop()
    try:
        a = node(chatd_server, redis_url, "a")
        b = node(chatd_server, redis_url, "b")
        alice, carol = chatter(a, "alice"), chatter(a, "carol")
        bob = chatter(b, "bob")
        alice.send("local while redis is away")
        see(carol, "<alice> local while redis is away")
        a.wait_for_log(r"cannot reach Redis")
    finally:
        redis_server.start()
    heard_by(redis_server, "chatd:room:#dev", 2)
    alice.send("now everyone")
    before = lines_until(bob, "<alice> now everyone")
    assert not [x for x in before if "redis is away" in x]  # lost then: never replayed
    see(carol, "<alice> now everyone")


def test_a_redis_restart_mid_chat_resumes_and_counts_the_gap(two, redis_server):
    a, b, alice, bob = two
    alice.send("before")
    see(bob, "<alice> before")
    redis_server.stop()
    a.wait_for_log(r"chatd-a: lost Redis")
    b.wait_for_log(r"chatd-b: lost Redis")
    for i in range(3):
        alice.send(f"during {i}")  # local only: published nowhere, counted
    redis_server.start()
    assert wait_until(lambda: len(re.findall(r"chatd-a: connected to Redis", a.log())) == 2
                      and len(re.findall(r"chatd-b: connected", b.log())) == 2, WAIT)
    heard_by(redis_server, "chatd:room:#dev", 2)
    alice.send("after")
    lines = lines_until(bob, "<alice> after")
    assert not [x for x in lines if "during" in x]  # lost, not invented
    match = b.wait_for_log(r"missed (\d+) event\(s\) from a on chatd:room:#dev")
    assert int(match.group(1)) == 3
    bob.send("and back")
    see(alice, "<bob> and back")


@pytest.mark.parametrize("payload", [
    "not json at all",
    json.dumps({"v": 2, "node": "x", "seq": 1, "events": []}),
    json.dumps({"v": 1, "node": "x", "seq": 1, "events": [{"v": 1, "type": "message"}]}),
    json.dumps({"v": 1, "node": "x", "seq": "1", "events": []}),
    "[" * 50_000,
    "x" * 70_000,
])
def test_a_hostile_payload_is_counted_and_dropped(two, redis_server, payload):
    a, b, alice, bob = two
    redis_server.cli("PUBLISH", "chatd:room:#dev", payload)
    b.wait_for_log(r"dropped a bad message on chatd:room:#dev \(.*\); 1 so far")
    a.wait_for_log(r"dropped a bad message on chatd:room:#dev")
    alice.send("still here")
    see(bob, "<alice> still here")
    assert "Traceback" not in a.log() + b.log()


def test_a_reload_keeps_the_link_and_its_subscriptions(two, redis_server):
    a, _b, alice, bob = two
    a.signal(signal.SIGHUP)
    a.wait_for_log(r"reloaded .*config\.yaml")
    assert subscribers(redis_server, "chatd:room:#dev") == 2
    alice.send("after the reload")
    see(bob, "<alice> after the reload")
    bob.send("heard")
    see(alice, "<bob> heard")
    assert a.log().count("connected to Redis") == 1  # the same link, never cut
    assert redis_server.cli("CLIENT", "LIST").count("name=chatd-a-subscriber ") == 1
    a.signal(signal.SIGHUP)
    a.wait_for_log(r"reloaded .*config\.yaml(.|\n)*reloaded .*config\.yaml")
    alice.send("after two")
    see(bob, "<alice> after two")
    a.stop()
    heard_by(redis_server, "chatd:node:a", 0)  # shut down: its link is closed


def test_a_wrong_password_keeps_local_chat_and_is_logged_without_the_password(
        chatd_server, redis_server):
    a = chatd_server(cluster={"redis_url": redis_server.url_for(1, password="wr0ng-pw-123"),
                              "node_id": "a", "connect_timeout_seconds": 0.5})
    alice, carol = chatter(a, "alice"), chatter(a, "carol")
    alice.send("local only")
    see(carol, "<alice> local only")
    a.wait_for_log(r"chatd-a: cannot reach Redis \(AuthenticationError\)")
    assert "wr0ng-pw-123" not in a.log()
