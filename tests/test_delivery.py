"""Delivery: per-tick batching, one render per protocol, ordering, and departures at scale.

In-process (chatd.testing.InProcessChat: the real domain, plugins, protocols
and fan-out over memory transports) so renders and writes can be counted
exactly; one end-to-end test checks the ordering over real sockets.
"""

from __future__ import annotations

from collections import Counter

import pytest

from chatd.protocols.jsonl import JsonlRenderer
from chatd.protocols.line import LineRenderer
from chatd.testing import InProcessChat


@pytest.fixture
def renders(monkeypatch):
    """Count Renderer.render calls per (protocol, event kind)."""
    counts: Counter[tuple[str, str]] = Counter()
    for cls in (LineRenderer, JsonlRenderer):
        original = cls.render

        def counting(self, event, _original=original):
            counts[(self.name, event.kind)] += 1
            return _original(self, event)

        monkeypatch.setattr(cls, "render", counting)
    return counts


def test_a_ticks_room_lines_are_one_payload_per_recipient_and_never_echoed():
    with InProcessChat() as chat:
        alice, bob, carol = chat.connect(), chat.connect(), chat.connect()
        for peer in (alice, bob, carol):
            peer.lines()
        writes = carol.transport.writes
        # Three messages from two senders, handed to the domain within one tick.
        alice.protocol.data_received(memoryview(b"1\n"))
        bob.protocol.data_received(memoryview(b"2\n"))
        alice.protocol.data_received(memoryview(b"3\n"))
        chat.tick()
        assert carol.transport.writes == writes + 1  # one joined payload, not one per line
        assert carol.lines() == ["<guest-1> 1", "<guest-2> 2", "<guest-1> 3"]
        assert alice.lines() == ["<guest-2> 2"]
        assert bob.lines() == ["<guest-1> 1", "<guest-1> 3"]


def test_each_event_is_rendered_once_per_protocol_not_per_recipient(renders):
    with InProcessChat() as chat:
        people = [chat.connect() for _ in range(20)]
        bots = [chat.connect("jsonl") for _ in range(5)]
        renders.clear()
        people[0].send("hello everyone")
        assert renders[("line", "message")] == 1
        assert renders[("jsonl", "message")] == 1
        for peer in people[1:]:
            assert peer.lines()[-1] == "<guest-1> hello everyone"
        for bot in bots:
            assert bot.objects()[-1]["text"] == "hello everyone"


def test_a_member_of_several_busy_rooms_gets_the_global_order():
    with InProcessChat() as chat:
        alice, bob, only_a = chat.connect(), chat.connect(), chat.connect()
        for peer in (alice, bob, only_a):
            peer.send("/join #a")
        for peer in (alice, bob):
            peer.send("/join #b")
        for peer in (alice, bob, only_a):
            peer.lines()
        # bob is in #a and #b: alice's b1 came before her a2, and so must it arrive
        # (bob talks in #b, so #a's lines name their room).
        only_a.protocol.data_received(memoryview(b"a1\n"))
        alice.protocol.data_received(memoryview(b"b1\n"))
        alice.send("/join #a")  # switch: her next line goes to #a
        alice.protocol.data_received(memoryview(b"a2\n"))
        chat.tick()
        assert bob.lines() == ["[#a] <guest-3> a1", "<guest-1> b1", "[#a] <guest-1> a2"]
        assert only_a.lines() == ["<guest-1> a2"]


def test_direct_lines_stay_in_order_with_room_lines():
    with InProcessChat() as chat:
        alice, bob = chat.connect(), chat.connect()
        bob.lines()
        alice.protocol.data_received(memoryview(b"hi\n/msg guest-2 psst\n/me waves\n"))
        chat.tick()
        assert bob.lines() == ["<guest-1> hi", "*guest-1* psst", "* guest-1 waves"]


def test_a_mass_quit_is_one_render_per_notice_and_protocol(renders):
    """1000 clients leave in one tick: 1000 renders per protocol, one write per stayer."""
    with InProcessChat() as chat:
        stayers = [chat.connect() for _ in range(3)] + [chat.connect("jsonl")]
        leavers = [chat.connect() for _ in range(1000)]
        others = [chat.connect()]  # in #lobby and #side: told once, not twice
        others[0].send("/join #side")
        for peer in leavers[:10]:
            peer.send("/join #side")
        for peer in stayers + others + leavers:
            peer.lines()
        writes = {id(p): p.transport.writes for p in stayers + others}
        renders.clear()
        for peer in leavers:
            peer.transport.close("connection reset by peer")
        chat.tick()
        assert renders[("line", "quit")] == 1000
        assert renders[("jsonl", "quit")] == 1000
        for peer in stayers[:3] + others:
            assert peer.transport.writes == writes[id(peer)] + 1
            got = peer.lines()
            assert len(got) == 1000 and len(set(got)) == 1000
            assert all(line.startswith("*** guest-") and " quit (" in line for line in got)
        assert len(stayers[3].objects()) == 1000
        # Nothing was queued for the leavers themselves.
        assert all(not p.lines() for p in leavers)


def test_nothing_is_rendered_for_or_queued_to_closing_connections(renders):
    with InProcessChat() as chat:
        alice, closing = chat.connect(), chat.connect()
        closing.lines()
        closing.transport.close("going")  # closing, its departure not yet handled
        before = bytes(closing.transport.output)
        alice.protocol.data_received(memoryview(b"anyone?\n"))
        chat.tick()
        assert bytes(closing.transport.output) == before


def test_room_lines_and_direct_lines_keep_the_senders_order_end_to_end(chatd_server):
    server = chatd_server()
    alice, bob = server.client(), server.client()
    alice.expect(r"joined #lobby")
    for round_ in range(20):
        alice.send_raw(
            f"hi {round_}\n/msg {bob.nick} psst {round_}\n/me waves {round_}\n".encode()
        )
        bob.expect_line(f"<{alice.nick}> hi {round_}")
        bob.expect_line(f"*{alice.nick}* psst {round_}")
        bob.expect_line(f"* {alice.nick} waves {round_}")


def test_a_client_that_joins_gets_nothing_the_room_said_before_even_in_the_same_tick():
    with InProcessChat() as chat:
        alice, carol = chat.connect(), chat.connect()
        carol.send("/join #dev")
        alice.lines(), carol.lines()
        carol.protocol.data_received(memoryview(b"dev secret before alice\n"))
        alice.protocol.data_received(memoryview(b"/join #dev\n"))
        carol.protocol.data_received(memoryview(b"after alice joined\n"))
        alice.protocol.data_received(memoryview(b"said before bob connected\n"))
        bob = chat.connect()  # connects and joins #lobby in the same tick
        chat.tick()
        got = alice.lines()
        assert "<guest-2> dev secret before alice" not in got
        assert "<guest-2> after alice joined" in got
        assert "<guest-1> said before bob connected" not in bob.lines()


def test_a_room_of_one_protocol_renders_each_event_once(renders):
    """The common case (everyone on nc) takes the shared-payload path: one render."""
    with InProcessChat() as chat:
        people = [chat.connect() for _ in range(30)]
        renders.clear()
        people[0].protocol.data_received(memoryview(b"one\ntwo\n"))
        people[1].protocol.data_received(memoryview(b"three\n"))
        chat.tick()
        assert renders[("line", "message")] == 3
        assert people[5].lines()[-3:] == ["<guest-1> one", "<guest-1> two", "<guest-2> three"]
