"""An outsider's attacks on the cluster: real chatd nodes on one real redis-server.

A node frozen past its timeout is swept by the others and its users' nicks freed;
someone on another node takes one.  When the frozen node comes back, the nick must
not be held twice: the node that lost it renames its user to a guest and says why.
"""

from __future__ import annotations

import re
import signal
from typing import Any

import pytest
import redis  # noqa: F401  (the test extra has it: missing, this fails everywhere)

from tests.test_cluster_semantics import WAIT, chatter, heard_by, start_node


def test_a_nick_taken_while_its_node_was_frozen_is_not_held_twice(
        chatd_server: Any, redis_server: Any, redis_url: str) -> None:
    a = start_node(chatd_server, redis_url, "a")
    b = start_node(chatd_server, redis_url, "b")
    alice, bob = chatter(a, "alice"), chatter(b, "bob")
    heard_by(redis_server, "chatd:room:#dev", 2)
    a.signal(signal.SIGSTOP)
    try:
        bob.expect(r"alice quit \(node lost\)", timeout=WAIT)
        carol = b.client()
        carol.send("/nick alice")  # the impersonation: alice's node is merely frozen
        carol.expect(r"is now known as alice$")
    finally:
        a.signal(signal.SIGCONT)
    a.wait_for_log(r"nicks of this node were taken on another node")
    # alice on A is told, and is a guest now: one nick, one holder
    told = alice.expect(r"alice was taken .*you are now (guest-?\d+)", timeout=WAIT)
    guest = told.group(1)
    dave = a.client()  # a private message typed on A reaches the one alice, on B
    dave.send("/msg alice for the real alice")
    carol.expect(r"for the real alice$", timeout=WAIT)
    alice.expect(rf"alice is now known as {re.escape(guest)}$")
    alice.send("/nick alice2")  # the guest can go on chatting
    alice.expect(r"is now known as alice2$")
    assert "Traceback" not in a.log() + b.log()


@pytest.fixture
def nodes(chatd_server: Any, redis_server: Any, redis_url: str) -> tuple[Any, Any]:
    return start_node(chatd_server, redis_url, "a"), start_node(chatd_server, redis_url, "b")


def test_a_rename_racing_a_quit_leaves_no_ghost_claim(nodes: Any) -> None:
    a, b = nodes
    for k in range(5):
        ghost = a.client()
        ghost.send_raw(f"/nick ghost{k}\n".encode())
        ghost.close()  # gone before Redis answers the claim
    for k in range(5):
        a.wait_for_log(rf"disconnect id=\d+ nick=(ghost{k}|guest-\d+) ")
    taker = b.client()
    for k in range(5):
        taker.send(f"/nick ghost{k}")
        line = taker.expect(rf"^(\*\*\* .* is now known as ghost{k}|! .*)$", timeout=WAIT)
        assert not line.group(0).startswith("! "), line.group(0)  # no ghost holds it
    assert "Traceback" not in a.log() + b.log()


def _guest(client: Any) -> str:
    """The guest nick a client was welcomed with."""
    return next(re.search(r"Welcome to chatd, (guest-\d+)", line).group(1)
                for line in client.history if "Welcome to chatd" in line)


def test_two_nodes_claiming_one_nick_at_once_exactly_one_wins(nodes: Any) -> None:
    a, b = nodes
    pairs = [(a.client(), b.client()) for _ in range(8)]
    for k, (x, y) in enumerate(pairs):
        x.send_raw(f"/nick race{k}\n".encode())
        y.send_raw(f"/nick RACE{k}\n".encode())
    for k, (x, y) in enumerate(pairs):
        won = 0
        for c in (x, y):
            me = re.escape(_guest(c))
            line = c.expect(rf"(?i)^\*\*\* {me} is now known as race{k}$|^! .*race{k}",
                            timeout=WAIT)
            won += "known as" in line.group(0)
        assert won == 1, k


@pytest.mark.parametrize("twin", ["ALICE", "\u0430lice", "a1ice", "aIice"])
def test_a_look_alike_of_a_nick_on_another_node_is_refused(nodes: Any, twin: str) -> None:
    a, b = nodes
    chatter(a, "alice")
    mallory = b.client()
    mallory.send(f"/nick {twin}")
    line = mallory.expect(r"^! |is now known as", timeout=WAIT)
    assert line.group(0).startswith("! "), twin


def test_a_grace_rename_to_a_guest_nick_held_on_another_node_still_renames(
        chatd_server: Any, redis_server: Any, redis_url: str, tmp_path: Any) -> None:
    """Each node counts its guests from 1: the guest-N a rename picks may be held on
    another node.  The holder of a registered nick who did not identify must still lose
    it (it would otherwise keep it, and speak as its owner, once the grace is over)."""
    a = start_node(chatd_server, redis_url, "a", storage={"path": str(tmp_path / "a.db")},
                   plugins={"accounts": {"grace_seconds": 1.5}})
    b = start_node(chatd_server, redis_url, "b")
    owner = a.client()
    owner.send("/nick boss")
    owner.expect(r"is now known as boss$")
    owner.send("/register s3cret-pw")
    owner.expect(r"registered")
    owner.close()
    mallory = a.client()
    mallory.send("/nick boss")
    mallory.expect(r"is now known as boss$")
    squatters = [b.client() for _ in range(4)]  # b's guest-1..4: a's next numbers
    mallory.expect(r"you did not identify for boss; you are now guest-\d+$", timeout=WAIT)
    mallory.expect(r"^\*\*\* boss is now known as guest-\d+$", timeout=WAIT)
    mallory.send("/whois boss")
    mallory.expect(r"^! no such nick: boss$", timeout=WAIT)
    assert squatters and "Traceback" not in a.log() + b.log()


def test_a_private_message_follows_a_nick_that_moved_nodes(nodes: Any) -> None:
    a, b = nodes
    dave = chatter(a, "dave")
    alice = chatter(a, "alice")
    dave.send("/msg alice on a")
    alice.expect(r"\*dave\* on a$")
    alice.close()
    dave.expect(r"alice (quit|left)", timeout=WAIT)
    alice = chatter(b, "alice")  # back, on the other node
    dave.send("/msg alice on b")
    alice.expect(r"\*dave\* on b$", timeout=WAIT)
