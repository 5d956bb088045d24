"""The cluster's wire (chatd.builtin.cluster.wire): names, batches, sequence gaps.

A batch survives a round trip; everything that is not a batch this node reads
(not JSON, oversize, an unknown version, a malformed field or event) is a
WireError with a reason, never another exception; a jump in ``seq`` is a gap.
"""

from __future__ import annotations

import json

import pytest

from chatd.builtin.cluster import wire
from chatd.builtin.cluster.wire import Names, Sequences, WireError
from chatd.events import Message, NickChange, Quit, Source


def _events():
    alice = Source("alice", 3, node="chat1", ident="alice", host="cloak")
    return [
        Message(1796119080000007, 1796119080.25, alice, "#dev", "hi\r\nthere ünï"),
        Quit(1796119080000008, 1796119080.5, alice, "", "bye", rooms=("#dev", "#ops")),
        NickChange(1796119080000009, 1796119081.0, alice, "", "", old="alice", new="al"),
    ]


def test_a_batch_survives_a_round_trip():
    data = wire.encode("chat1", 7, _events())
    assert isinstance(data, bytes) and b"\n" not in data
    batch = wire.decode(data)
    assert batch.node == "chat1" and batch.seq == 7 and batch.op is None
    assert list(batch.events) == _events()


def test_a_node_batch_carries_its_op_and_recipient():
    batch = wire.decode(wire.encode("chat1", 1, _events()[:1], op="deliver", to="bob"))
    assert (batch.op, batch.to) == ("deliver", "bob")


def test_the_events_are_the_codecs_internal_form_never_text():
    body = json.loads(wire.encode("chat1", 1, _events()[:1]))
    assert body["v"] == wire.WIRE_VERSION and body["node"] == "chat1"
    event = body["events"][0]
    assert event["v"] == 1 and event["type"] == "message" and event["session"] == "chat1:3"


def _payload(**changes):
    body = json.loads(wire.encode("chat1", 1, _events()))
    body.update(changes)
    return json.dumps(body).encode()


@pytest.mark.parametrize("data, reason", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b"\xff\xfe", "not JSON"),
    (b"[" * 100_000, "not JSON"),
    (_payload(v=2), "wire version"),
    (_payload(v=True), "wire version"),
    (_payload(v="1"), "wire version"),
    (_payload(node=""), "'node'"),
    (_payload(node=5), "'node'"),
    (_payload(seq=0), "'seq'"),
    (_payload(seq=1.5), "'seq'"),
    (_payload(seq=True), "'seq'"),
    (_payload(events={}), "'events'"),
    (_payload(op="explode", to="bob"), "'op'"),
    (_payload(op="deliver"), "'op'"),
    (_payload(events=[{"v": 1, "type": "message"}]), "bad event"),
    (_payload(events=[{"v": 9, "type": "message"}]), "bad event"),
    (_payload(events=[7]), "bad event"),
    (_payload(events=[{"v": 1, "type": "names", "room": "#dev"}]), "bad event"),
])
def test_what_is_not_a_batch_is_a_wire_error_with_a_reason(data, reason):
    with pytest.raises(WireError, match=reason):
        wire.decode(data)


def test_an_oversize_payload_is_refused_before_it_is_parsed():
    data = wire.encode("chat1", 1, _events())
    assert wire.decode(data, max_bytes=len(data)).seq == 1
    with pytest.raises(WireError, match="over the cap"):
        wire.decode(data, max_bytes=len(data) - 1)
    with pytest.raises(WireError, match="over the cap"):
        wire.decode(b" " * (wire.MAX_PAYLOAD_BYTES + 1))


def test_names_live_under_the_prefix_and_fold_the_room():
    names = Names("net1")
    assert names.room_channel("#Dev") == "net1:room:#dev" == names.room_channel("#dev")
    assert names.room_of_channel("net1:room:#dev") == "#dev"
    assert names.room_of_channel("net1:node:a") is None
    assert names.room_of_channel("net2:room:#dev") is None
    assert names.node_channel("a") == "net1:node:a" and names.all_channel == "net1:all"
    assert names.members("#Dev") == "net1:members:#dev"
    for name in (names.nodes, names.nicks, names.rooms, names.node_nicks("a"),
                 names.node_rooms("a"), names.sweep("a"), names.node_key("a")):
        assert name.startswith("net1:")
    assert Names().all_channel == "chatd:all"


def test_a_jump_in_seq_is_a_gap_and_a_restart_is_not():
    seqs = Sequences()
    assert seqs.check("a", "c", 5) == 0  # joined mid-stream
    assert seqs.check("a", "c", 6) == 0
    assert seqs.check("a", "c", 9) == 2  # 7 and 8 missed
    assert seqs.check("b", "c", 1) == 0  # another origin: its own count
    assert seqs.check("a", "c", 1) == 0  # the origin restarted
    assert seqs.check("a", "c", 3) == 1
    seqs.forget("c")
    assert seqs.check("a", "c", 10) == 0  # subscribed again: no gap
    seqs.forget_node("a")
    assert seqs.check("a", "c", 20) == 0


def test_seq_numbers_events_so_a_gap_counts_events_not_batches():
    seqs = Sequences()
    assert seqs.check("a", "c", 1, 3) == 0  # events 1-3
    assert seqs.check("a", "c", 4, 2) == 0  # 4-5: none missed
    assert seqs.check("a", "c", 10, 1) == 4  # 6-9 missed
    assert seqs.check("a", "c", 11, 0) == 0  # an empty batch is one number
