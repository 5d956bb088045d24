"""What people expect of a chat: /list, /whois, /away, /ignore, /set timestamps.

In-process (the real plugins and protocols, memory transports) for the rules,
one end-to-end test for the wire.
"""

from __future__ import annotations

import re
import time

import pytest

from chatd.testing import InProcessChat


@pytest.fixture
def chat():
    with InProcessChat() as chat:
        yield chat


def people(chat, count):
    peers = [chat.connect() for _ in range(count)]
    for peer in peers:
        peer.lines()
    return peers


def test_list_pages_rooms_with_counts_and_topics():
    with InProcessChat(limits={"announce_after_seconds": 0, "max_rooms_per_client": 30}) as chat:
        _list_pages(chat)


def _list_pages(chat):
    (alice,) = people(chat, 1)
    alice.send("/topic welcome all")
    for i in range(25):
        alice.send(f"/join #r{i:02d}")
    alice.lines()
    alice.send("/list")
    page1 = alice.lines()
    assert page1[0] == "*** rooms 1-20 of 26; /list 2 for more:"
    assert len(page1) == 21
    assert "***   #lobby (1) — welcome all" in page1  # name order: #lobby before #r00
    alice.send("/list 2")
    page2 = alice.lines()
    assert page2[0] == "*** rooms 21-26 of 26:"
    assert page2[-1] == "***   #r24 (1)"
    alice.send("/list 3")
    assert alice.lines() == ["! there are 2 pages of rooms"]


def test_whois_says_rooms_time_online_idle_and_away(chat):
    alice, bob = people(chat, 2)
    bob.send("/join #dev")
    bob.send("/away at lunch")
    bob.lines()
    alice.send("/whois guest-2")
    first, second = alice.lines()
    assert re.fullmatch(
        r"\*\*\* guest-2: in #lobby, #dev; connected \d+ s ago \(since [\d-]+ [\d:]+ UTC\); "
        r"idle \d+ s", first), first
    assert second == "*** guest-2 is away: at lunch"
    alice.send("/whois nobody")
    assert alice.lines() == ["! no such nick: nobody"]


def test_away_answers_private_messages_shows_in_who_and_ends(chat):
    alice, bob = people(chat, 2)
    bob.send("/away back at 2")
    assert bob.lines() == ["*** you are away: back at 2 (/away alone when you are back)"]
    alice.send("/msg guest-2 are you there?")
    assert alice.lines() == ["-> *guest-2* are you there?", "*** guest-2 is away: back at 2"]
    assert bob.lines() == ["*guest-1* are you there?"]
    alice.send("/who")
    assert alice.lines() == ["*** #lobby has 2 members: guest-1, guest-2 (away)"]
    bob.send("/away")
    assert bob.lines() == ["*** you are back"]
    alice.send("/msg guest-2 now?")
    assert alice.lines() == ["-> *guest-2* now?"]


def test_ignore_hides_what_someone_says_and_follows_renames(chat):
    alice, bob, carol = people(chat, 3)
    alice.send("/ignore guest-2")
    assert alice.lines() == ["*** you no longer see what guest-2 says (/unignore guest-2 to undo)"]
    bob.send("spam spam")
    bob.send("/me spams")
    bob.send("/msg guest-1 private spam")
    carol.send("hello")
    assert alice.lines() == ["<guest-3> hello"]
    assert carol.lines() == ["<guest-2> spam spam", "* guest-2 spams"]
    bob.send("/nick sneaky")
    assert alice.lines() == ["*** guest-2 is now known as sneaky"]  # renames still show
    bob.send("still me")
    assert alice.lines() == []
    alice.send("/ignore")
    assert alice.lines() == ["*** you ignore: sneaky"]
    alice.send("/unignore sneaky")
    bob.send("hi again")
    assert alice.lines() == ["*** you see what sneaky says again", "<sneaky> hi again"]
    alice.send("/ignore guest-1")
    assert alice.lines() == ["! you cannot ignore yourself"]


def test_ignore_keeps_the_others_on_the_shared_payload(chat):
    alice, bob, carol = people(chat, 3)
    alice.send("/ignore guest-3")
    alice.lines()
    writes = carol.transport.writes
    bob.protocol.data_received(memoryview(b"one\ntwo\n"))
    chat.tick()
    assert carol.transport.writes == writes + 1
    assert alice.lines() == ["<guest-2> one", "<guest-2> two"]
    assert alice.client.view is not None and carol.client.view is None


def test_timestamps_put_the_time_in_front_of_every_line(chat):
    alice, bob = people(chat, 2)
    bob.send("/set timestamps on")
    assert re.fullmatch(r"\[\d\d:\d\d\] \*\*\* timestamps on", bob.lines()[0])  # on at once
    alice.send("hello")
    alice.send("/msg guest-2 psst")
    got = bob.lines()
    assert len(got) == 2, got
    assert re.fullmatch(r"\[\d\d:\d\d\] <guest-1> hello", got[0]), got
    assert re.fullmatch(r"\[\d\d:\d\d\] \*guest-1\* psst", got[1]), got
    assert got[0][:8] in (time.strftime("[%H:%M] "), time.strftime("[%H:%M] ", time.localtime(
        time.time() - 60)))  # the server's clock (a minute may have turned)
    bob.send("/join #dev")
    bob.lines()
    alice.send("in the lobby")
    assert re.fullmatch(r"\[\d\d:\d\d\] \[#lobby\] <guest-1> in the lobby", bob.lines()[0])
    bob.send("/set timestamps off")
    bob.lines()
    alice.send("plain")
    assert bob.lines() == ["[#lobby] <guest-1> plain"]
    assert bob.client.view is None
    bob.send("/set")
    assert bob.lines() == ["*** timestamps off; history on  (/set NAME VALUE)"]
    bob.send("/set colour red")
    assert bob.lines() == ["! no setting 'colour'; settings: timestamps, history"]


def test_every_new_command_has_help(chat):
    (alice,) = people(chat, 1)
    for name in ("list", "whois", "away", "ignore", "unignore", "set"):
        alice.send(f"/help {name}")
        assert alice.lines()[0].startswith(f"*** /{name}"), name


def test_away_and_ignore_over_real_sockets(chatd_server):
    server = chatd_server()
    alice, bob = server.client(), server.client()
    alice.expect(r"joined #lobby")
    bob.send("/away brb")
    bob.expect(r"^\*\*\* you are away: brb")
    alice.send(f"/msg {bob.nick} hi")
    alice.expect_line(f"-> *{bob.nick}* hi")
    alice.expect_line(f"*** {bob.nick} is away: brb")
    bob.send(f"/ignore {alice.nick}")
    bob.expect(r"^\*\*\* you no longer see what")
    alice.send("anyone?")
    bob.send("/whois " + alice.nick)
    bob.expect(rf"^\*\*\* {alice.nick}: in #lobby;")
    assert not any(line.startswith("<") for line in bob.history)
