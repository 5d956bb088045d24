"""The per-tick room fan-out: batching must never change what a reader sees."""

from __future__ import annotations

from chatd.fanout import Fanout
from chatd.rooms import Room


class FakeConn:
    def __init__(self) -> None:
        self.received = b""
        self.calls = 0

    def write_now(self, data: bytes) -> None:
        self.received += data
        self.calls += 1


class FakeClient:
    def __init__(self, name: str) -> None:
        self.name = name
        self.rooms: dict[Room, None] = {}
        self._conn = FakeConn()

    def join(self, room: Room) -> None:
        self.rooms[room] = None
        room.members[self] = None  # type: ignore[index]

    @property
    def got(self) -> list[str]:
        return self._conn.received.decode().splitlines()


def test_one_payload_per_recipient_per_tick_and_no_echo():
    fanout = Fanout()
    room = Room("#a", fanout)
    alice, bob, carol = FakeClient("alice"), FakeClient("bob"), FakeClient("carol")
    for client in (alice, bob, carol):
        client.join(room)
    room.send("<alice> 1", exclude=alice)  # type: ignore[arg-type]
    room.send("<bob> 2", exclude=bob)  # type: ignore[arg-type]
    room.send("<alice> 3", exclude=alice)  # type: ignore[arg-type]
    room.send("* notice")
    assert alice.got == [] and fanout.pending == 4
    fanout.flush()
    assert carol.got == ["<alice> 1", "<bob> 2", "<alice> 3", "* notice"]
    assert alice.got == ["<bob> 2", "* notice"]
    assert bob.got == ["<alice> 1", "<alice> 3", "* notice"]
    assert carol._conn.calls == 1  # one joined payload, not one write per line
    fanout.flush()  # nothing pending: nothing sent
    assert carol._conn.calls == 1


def test_member_of_several_busy_rooms_gets_global_order():
    fanout = Fanout()
    a, b = Room("#a", fanout), Room("#b", fanout)
    alice, bob, only_a = FakeClient("alice"), FakeClient("bob"), FakeClient("only_a")
    for client in (alice, bob):
        client.join(a)
        client.join(b)
    only_a.join(a)
    a.send("<only_a> a1", exclude=only_a)  # type: ignore[arg-type]
    b.send("<alice> b1", exclude=alice)  # type: ignore[arg-type]
    a.send("<alice> a2", exclude=alice)  # type: ignore[arg-type]
    fanout.flush()
    # bob is in both rooms: alice's b1 came before her a2, and so must it arrive.
    assert bob.got == ["<only_a> a1", "<alice> b1", "<alice> a2"]
    assert alice.got == ["<only_a> a1"]
    assert only_a.got == ["<alice> a2"]


def test_room_lines_and_direct_lines_keep_the_senders_order(chatd_server):
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
