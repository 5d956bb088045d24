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

from tests.test_cluster_semantics import WAIT, chatter, heard_by, start_node

pytest.importorskip("redis")


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
