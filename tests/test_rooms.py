"""Rooms you can tell apart: lines from your other rooms name their room; /switch; /rooms."""

from __future__ import annotations

import pytest

from chatd.testing import InProcessChat


@pytest.fixture
def chat():
    with InProcessChat() as chat:
        yield chat


def two_rooms(chat):
    """alice talks in #dev, bob in #lobby; both are in both rooms."""
    alice, bob = chat.connect(), chat.connect()
    alice.send("/join #dev")
    bob.send("/join #dev")
    bob.send("/switch #lobby")
    alice.lines(), bob.lines()
    return alice, bob


def test_a_line_from_another_room_carries_its_room_and_the_current_one_does_not(chat):
    alice, bob = two_rooms(chat)
    alice.send("builds are green")  # to #dev, alice's current room
    bob.send("lunch?")  # to #lobby, bob's
    assert bob.lines() == ["[#dev] <guest-1> builds are green"]
    assert alice.lines() == ["[#lobby] <guest-2> lunch?"]
    carol = chat.connect()  # only in #lobby: her current room, no tag
    carol.lines()
    bob.send("hi carol")
    assert carol.lines() == ["<guest-2> hi carol"]


def test_every_kind_of_room_line_is_tagged_and_continuations_too(chat):
    alice, bob = two_rooms(chat)
    alice.send("/me waves")
    alice.send("/topic release friday")
    chat.server.rooms.get("#dev").say("poll closed\nresults: yes")
    carol = chat.connect()
    carol.send("/join #dev")
    assert bob.lines() == [
        "[#dev] * guest-1 waves",
        "[#dev] *** guest-1 set the topic of #dev to: release friday",
        "[#dev] *** poll closed",
        "[#dev] *** results: yes",
        "*** guest-3 joined #lobby",
        "[#dev] *** guest-3 joined #dev",
    ]


def test_quits_and_nick_changes_are_not_tagged_and_arrive_once(chat):
    alice, bob = two_rooms(chat)
    alice.send("/nick alice")
    alice.send("/quit bye")
    assert bob.lines() == ["*** guest-1 is now known as alice", "*** alice quit (Quit: bye)"]


def test_a_member_of_several_busy_rooms_gets_each_tag_right_in_one_tick(chat):
    alice, bob = two_rooms(chat)
    carol = chat.connect()
    carol.lines(), bob.lines()
    alice.protocol.data_received(memoryview(b"in dev\n"))
    carol.protocol.data_received(memoryview(b"in lobby\n"))
    chat.tick()
    assert bob.lines() == ["[#dev] <guest-1> in dev", "<guest-3> in lobby"]


def test_switch_and_join_of_a_joined_room_change_the_current_room(chat):
    alice, bob = two_rooms(chat)
    bob.send("/switch #dev")
    assert bob.lines() == ["*** you are now talking in #dev"]
    alice.send("now untagged")
    assert bob.lines() == ["<guest-1> now untagged"]
    bob.send("/switch #nowhere")
    assert bob.lines() == ["! you are not in #nowhere; /join it first"]
    bob.send("/join #lobby")
    assert bob.lines() == ["*** you are now talking in #lobby"]
    assert bob.client.room.name == "#lobby" and len(bob.client.rooms) == 2


def test_rooms_marks_the_current_room_and_the_others_you_are_in(chat):
    _alice, bob = two_rooms(chat)
    carol = chat.connect()
    carol.send("/join #games")
    bob.lines()
    bob.send("/rooms")
    assert bob.lines() == [
        "*** 3 rooms: #dev (2) +, #games (1), #lobby (3) *  "
        "(* = your current room, + = you are in it)"
    ]


def test_help_join_says_the_other_rooms_are_kept(chat):
    peer = chat.connect()
    peer.lines()
    peer.send("/help join")
    text = "\n".join(peer.lines())
    assert "you stay in your other rooms" in text
    assert "[#lobby] <bob> lunch?" in text


def test_jsonl_clients_get_the_room_field_and_no_tag(chat):
    bot = chat.connect("jsonl")
    person = chat.connect()
    bot.send_json(cmd="join", room="#dev")
    person.send("/join #dev")
    person.send("/switch #lobby")
    bot.objects()
    person.send("lobby line")
    got = bot.objects()
    assert [(o["type"], o["room"], o["text"]) for o in got] == [
        ("message", "#lobby", "lobby line")
    ]


def test_room_tags_end_to_end(chatd_server):
    server = chatd_server()
    alice, bob = server.client(), server.client()
    alice.send("/join #dev")
    alice.expect(r"^\*\*\* you are the first in #dev$")
    bob.send("lunch?")
    alice.expect_line(f"[#lobby] <{bob.nick}> lunch?")
