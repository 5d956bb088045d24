"""The per-client intake (chatd/chat/intake.py) in-process: pauses, the flood gate, its record.

What is checked: a paused client's later requests wait, in order, and nobody
else's do; a pause ends by itself at its timeout; a client that only listens
costs the intake nothing, and a departure leaves nothing of it behind (no
record, no timer).  The flood gate's behaviour over real sockets is in
tests/test_reliability_slow.py and tests/test_admission_flood.py.
"""

from __future__ import annotations

import pytest

from chatd import Command, hookimpl
from chatd.testing import InProcessChat


class Waiter:
    """``/wait``: pauses the caller's requests (as /identify does while it hashes)."""

    PLUGIN_NAME = "waiter"

    def __init__(self) -> None:
        self.waiting: list = []

    @hookimpl
    def chatd_commands(self):
        return [Command("wait", self.wait, "/wait", "pause my requests")]

    def wait(self, client, args: str) -> None:
        client.server.pause_requests(client, timeout=5.0)
        self.waiting.append(client)
        client.notice("waiting")


@pytest.fixture
def waiter():
    return Waiter()


def _said(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("<")]


def test_a_paused_clients_requests_wait_in_order_and_nobody_elses_do(waiter):
    with InProcessChat(waiter, fake_clock=True) as chat:
        alice, bob, carol = chat.connect(), chat.connect(), chat.connect()
        alice.send("/nick alice")
        bob.send("/nick bob")
        for peer in (alice, bob, carol):
            peer.lines()
        alice.send(b"/wait\none\n/me two\nthree\n")
        bob.send("meanwhile")
        assert _said(carol.lines()) == ["<bob> meanwhile"]  # bob is not held
        assert alice.transport.held  # alice's socket is not read while she waits
        chat.server.resume_requests(alice.client)
        chat.tick()
        assert [line for line in carol.lines() if "alice" in line] == [
            "<alice> one", "* alice two", "<alice> three",
        ]
        assert not alice.transport.held
        assert alice.client.intake is not None and alice.client.intake.paused is None


def test_a_pause_ends_by_itself_at_its_timeout(waiter):
    with InProcessChat(waiter, fake_clock=True) as chat:
        alice, bob = chat.connect(), chat.connect()
        alice.send("/nick alice")
        bob.lines()
        alice.send(b"/wait\nlater\n")
        chat.advance(4.9)
        assert _said(bob.lines()) == []
        chat.advance(0.2)
        assert _said(bob.lines()) == ["<alice> later"]


def test_a_client_that_only_listens_costs_the_intake_nothing():
    with InProcessChat(flood={"lines_per_second": 2.0}) as chat:
        listener, talker = chat.connect(), chat.connect()
        talker.send("hello")
        assert listener.client.intake is None
        record = talker.client.intake
        assert record is not None and record.gate is not None and record.paused is None


def test_a_departure_leaves_no_intake_record_and_no_timer(waiter):
    with InProcessChat(waiter, fake_clock=True,
                       flood={"lines_per_second": 1.0, "burst_lines": 1}) as chat:
        alice, bob = chat.connect(), chat.connect()
        alice.send(b"one\ntwo\nthree\n")  # two of them wait for the flood gate's timer
        bob.send("/wait")  # and bob's pause has its timer
        gate = alice.client.intake.gate
        pause = bob.client.intake.paused
        assert gate.timer is not None and gate.waiting and pause is not None
        alice.transport.close("gone")
        bob.transport.close("gone")
        chat.tick()
        assert alice.client.intake is None and bob.client.intake is None
        assert gate.timer is None and not gate.waiting
        assert pause.timer.cancelled
