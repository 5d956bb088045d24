"""Replies and errors as data (issue 19, part 2).

A command's answer is a typed event (:mod:`chatd.replies`); the line protocol
words each kind exactly as the sentences people always read (checked here
against the literal sentences, and end to end by tests/test_readme.py and
tests/test_contract.py), jsonl shows it as an object (tests/test_jsonl.py
replays docs/protocols.md's example of every kind).  Errors carry a stable
code from one table; room operators are a public fact ``/who`` marks.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from chatd import Command, hookimpl
from chatd.codec import register, reply_kind, unregister
from chatd.events import Source
from chatd.protocols.line import RENDERER as LINE
from chatd.replies import (
    ERROR_CODES,
    BanEntry,
    BanList,
    Help,
    HelpEntry,
    HistoryMarker,
    MemberEntry,
    Names,
    Reply,
    RoomEntry,
    RoomList,
    RoomTopic,
    Whois,
)
from chatd.testing import InProcessChat

REPO = Path(__file__).resolve().parent.parent
SERVER = Source("chatd", plugin="rooms")
NOW = 1796119200.0


def _lines(reply: Reply) -> list[str]:
    return LINE.render(reply).decode().splitlines()


def _make(cls: type[Reply], **fields: Any) -> Any:
    return cls(1, NOW, SERVER, "alice", **fields)


# -- the line protocol words every kind as before -----------------------------------------------


def test_names_reads_as_who_always_did_with_away_marks_and_the_rest_counted():
    members = (MemberEntry("alice"), MemberEntry("bob", away=True, operator=True),
               MemberEntry("carol"))
    assert _lines(_make(Names, room="#dev", members=members, total=5, topic="ship it")) == [
        "*** #dev has 5 members: alice, bob (away), carol, and 2 more — topic: ship it"]
    assert _lines(_make(Names, room="#dev", members=members[:1], total=1)) == [
        "*** #dev has 1 member: alice"]


def test_the_greeting_of_a_join_reads_as_before():
    alone = _make(Names, room="#dev", members=(MemberEntry("alice"),), total=1, greeting=True)
    assert _lines(alone) == ["*** alice joined #dev", "*** you are the first in #dev"]
    crowd = _make(Names, room="#dev", members=(MemberEntry("alice"), MemberEntry("bob")), total=4,
                  topic="ship it", greeting=True)
    assert _lines(crowd) == ["*** alice joined #dev", "*** topic of #dev: ship it",
                             "*** also in #dev: bob, and 2 more (/who)"]


def test_room_listings_read_as_rooms_and_list_did():
    rooms = (RoomEntry("#dev", 3, joined=True, current=True), RoomEntry("#ops", 1, "pager"),
             RoomEntry("#lobby", 9, joined=True))
    assert _lines(_make(RoomList, rooms=rooms, total=5)) == [
        "*** 5 rooms: #dev (3) *, #ops (1), #lobby (9) +, and 2 more (/list)  "
        "(* = your current room, + = you are in it)"]
    page = _make(RoomList, rooms=rooms[:2], total=22, page=1, pages=2, per_page=20)
    assert _lines(page) == ["*** rooms 1-2 of 22; /list 2 for more:", "***   #dev (3)",
                            "***   #ops (1) — pager"]
    last = _make(RoomList, rooms=rooms[2:], total=21, page=2, pages=2, per_page=20)
    assert _lines(last) == ["*** rooms 21-21 of 21:", "***   #lobby (9)"]


def test_whois_reads_as_before_and_the_address_only_when_given():
    since = NOW - 7500
    plain = _make(Whois, nick="bob", userhost="bob@x.cloak", connected_to="chat1",
                  rooms=("#lobby", "#dev"), connected_at=since, idle=42)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(since))
    assert _lines(plain) == [
        f"*** bob: in #lobby, #dev; connected 2 h 5 min ago (since {stamp}); idle 42 s"]
    full = _make(Whois, nick="bob", userhost="bob@x.cloak", connected_to="chat1", rooms=(),
                 connected_at=since, idle=3600, identified_as="Bob", away="lunch",
                 address="192.0.2.7")
    assert _lines(full)[1:] == ["*** bob is identified as Bob", "*** bob is away: lunch",
                                "*** bob is connected from 192.0.2.7"]
    assert "in no room" in _lines(full)[0] and _lines(full)[0].endswith("idle 1 h 0 min")


def test_topic_help_history_and_bans_read_as_before():
    assert _lines(_make(RoomTopic, room="#dev", topic="")) == ["*** #dev has no topic"]
    assert _lines(_make(RoomTopic, room="#dev", topic="x")) == ["*** topic of #dev: x"]
    one = HelpEntry("nick", "/nick NAME", "change your nick", "commands")
    assert _lines(_make(Help, commands=(one,), command="nick", details="a\nb")) == [
        "*** /nick NAME — change your nick", "***   a", "***   b"]
    listing = _make(Help, commands=(one, HelpEntry("roll", "/roll NdM", "dice", "dice")))
    assert _lines(listing) == [
        "*** Commands (/help NAME for details; //text sends a line starting with /):",
        "*** [commands]", f"***   {'/nick NAME':<24} change your nick",
        "*** [dice]", f"***   {'/roll NdM':<24} dice"]
    start = _make(HistoryMarker, edge="start", room="#dev", count=1, left_out=2)
    assert _lines(start) == [
        "*** history of #dev: the last line (2 lines from people you ignore left out)"]
    assert _lines(_make(HistoryMarker, edge="start", room="#dev", count=0)) == [
        "*** no history in #dev"]
    assert _lines(_make(HistoryMarker, edge="end", room="#dev", count=0)) == []
    assert _lines(_make(HistoryMarker, edge="end", room="#dev", count=3, live=True)) == [
        "*** end of history; live chat follows"]
    assert _lines(_make(HistoryMarker, edge="start", nick="bob", count=4)) == [
        "*** private history with bob: the last 4 lines"]
    ban = BanEntry("ban", "mallory", "alice", NOW + 3600, "spam", ("mallory!*@*",))
    until = time.strftime("until %Y-%m-%d %H:%M:%S UTC", time.gmtime(NOW + 3600))
    assert _lines(_make(BanList, room="#dev", entries=(ban, BanEntry("mute", "*!*@h", "bob")))) == [
        f"*** ban mallory (mallory!*@*) by alice, {until}: spam",
        "*** mute *!*@h by bob, until lifted"]
    assert _lines(_make(BanList, room="#dev", entries=())) == ["*** no bans or mutes in #dev"]


def test_a_reply_from_a_plugin_that_is_not_built_in_carries_its_marker():
    marked = Names(1, NOW, Source("chatd", plugin="who2", marker="who2"), "alice",
                   room="#dev", members=(MemberEntry("alice"),), total=1)
    assert _lines(marked) == ["*** [who2] #dev has 1 member: alice"]


# -- in a running server ------------------------------------------------------------------------


def _json(peer) -> list[dict[str, Any]]:
    return [json.loads(line) for line in peer.lines()]


def test_whois_shows_the_address_to_server_operators_only():
    with InProcessChat(plugins={"oper": {"password": "correct-horse-battery"}}) as chat:
        person, bot = chat.connect(), chat.connect("jsonl")
        person.lines(), bot.lines()
        bot.send('{"cmd": "whois", "args": "guest-1"}')
        (reply,) = _json(bot)
        assert reply["type"] == "whois" and "address" not in reply
        bot.send('{"cmd": "oper", "args": "correct-horse-battery"}')
        bot.send('{"cmd": "whois", "args": "guest-1"}')
        replies = [obj for obj in _json(bot) if obj["type"] == "whois"]
        assert replies[0]["address"] == "127.0.0.1"


def test_a_refusal_carries_its_code_to_a_bot_and_its_words_to_a_person():
    with InProcessChat(plugins={"oper": {"password": "correct-horse-battery"}}) as chat:
        oper, person, bot = chat.connect(), chat.connect(), chat.connect("jsonl")
        oper.send("/oper correct-horse-battery")
        oper.send("/join #dev")
        oper.send("/ban #dev guest-3 1h flooding")
        oper.send("/mute #lobby guest-2")
        oper.send("/nick boss")
        oper.lines(), person.lines(), bot.lines()
        bot.send('{"cmd": "join", "room": "#dev", "id": "j"}')
        (refused,) = _json(bot)
        assert (refused["type"], refused["code"], refused["re"]) == ("error", "banned", "j")
        assert refused["text"].startswith("you are banned from #dev (until ")
        person.send("hello")
        assert person.lines() == ["! you are muted in #lobby; your line was not sent"]
        bot.send('{"cmd": "msg", "to": "nobody", "text": "hi"}')
        bot.send('{"cmd": "frobnicate"}')
        bot.send('{"cmd": "nick", "nick": "BOSS"}')
        bot.send('{"cmd": "nick", "nick": "9lives"}')
        codes = [(obj["type"], obj.get("code")) for obj in _json(bot)]
        assert codes == [("error", "no_such_nick"), ("error", "unknown_command"),
                         ("error", "nick_in_use"), ("error", "erroneous_nick")]


def test_the_operators_of_a_room_are_a_public_fact_who_marks():
    with InProcessChat() as chat:
        alice, bob, bot = chat.connect(), chat.connect(), chat.connect("jsonl")
        server = chat.server
        server.set_account(alice.client, "Alice")
        room = server.rooms.get("#lobby")
        server.set_room_operators(room, ["ALICE", "nobody"])
        assert room.operators == frozenset({"alice", "nobody"})
        bot.lines()
        bot.send('{"cmd": "who"}')
        (names,) = _json(bot)
        marks = {m["nick"]: m for m in names["members"]}
        assert marks["guest-1"].get("operator") is True and marks["guest-1"]["account"] == "Alice"
        assert "operator" not in marks["guest-2"] and "operator" not in marks["guest-3"]
        bob.lines()
        bob.send("/who")  # the line protocol keeps its sentence: no mark of its own
        assert bob.lines() == ["*** #lobby has 3 members: guest-1, guest-2, guest-3"]


def test_every_error_code_chatd_uses_is_in_the_table():
    used = set()
    for path in (REPO / "chatd").rglob("*.py"):
        used |= set(re.findall(r"""\bcode=["']([a-z_]+)["']""", path.read_text()))
        used |= set(re.findall(r"""refusal_of\(\w+, ["']([a-z_]+)["']\)""", path.read_text()))
    assert used, "no codes found: the pattern is wrong"
    assert used <= set(ERROR_CODES), used - set(ERROR_CODES)
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", code) for code in ERROR_CODES)


# -- a plugin's own reply kind ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Uptime(Reply):
    """A test plugin's reply."""

    seconds: int = field(kw_only=True)

    kind: ClassVar[str] = "uptime"


class UptimePlugin:
    @hookimpl
    def chatd_commands(self) -> list[Command]:
        return [Command("uptime", lambda client, args: client.reply(Uptime, seconds=42),
                        "/uptime", "how long the server has run")]


@pytest.fixture
def uptime_kind():
    register(reply_kind(Uptime))
    yield
    unregister("uptime")


def test_a_plugin_answers_with_a_reply_kind_of_its_own(uptime_kind):
    with InProcessChat(UptimePlugin()) as chat:
        person, bot = chat.connect(), chat.connect("jsonl")
        person.lines(), bot.lines()
        bot.send('{"cmd": "uptime", "id": "u"}')
        (reply,) = _json(bot)
        assert (reply["type"], reply["seconds"], reply["re"]) == ("uptime", 42, "u")
        assert reply["plugin"] == "UptimePlugin" and reply["server"] is True
        person.send("/uptime")  # the line protocol has no words for it: nothing, no error
        assert person.lines() == []


def _who_marks(bot) -> dict[str, dict[str, Any]]:
    bot.send('{"cmd": "who", "room": "#dev"}')
    (names,) = [obj for obj in _json(bot) if obj["type"] == "names" and "greeting" not in obj]
    return {member["nick"]: member for member in names["members"]}


def test_moderation_publishes_a_registered_rooms_founder_and_operators():
    """/register #dev makes its founder an operator /who marks; /op and /deop add and
    take one; /drop #dev takes them all; a room made again from the stored
    registration has them from its first member on."""
    with InProcessChat(plugins={"accounts": {"scrypt_n": 1024}}) as chat:
        alice, bob, bot = chat.connect(), chat.connect(), chat.connect("jsonl")
        for peer, nick in ((alice, "alice"), (bob, "bob")):
            peer.send(f"/nick {nick}")
            peer.send("/register correct-horse-battery")
            chat.wait_for(lambda peer=peer: peer.client.account is not None)
            peer.send("/join #dev")
        alice.send("/register #dev")
        bot.send('{"cmd": "join", "room": "#dev"}')
        assert _who_marks(bot)["alice"].get("operator") is True
        assert "operator" not in _who_marks(bot)["bob"]
        alice.send("/op #dev bob")
        assert _who_marks(bot)["bob"].get("operator") is True
        alice.send("/deop #dev bob")
        assert "operator" not in _who_marks(bot)["bob"]
        alice.send("/op #dev bob")
        for peer in (alice, bob, bot):
            peer.send("/part #dev") if peer is not bot else peer.send(
                '{"cmd": "part", "room": "#dev"}')
        assert chat.server.rooms.get("#dev") is None  # gone; its registration stays
        bot.send('{"cmd": "join", "room": "#dev"}')
        bob.send("/join #dev")
        marks = _who_marks(bot)
        assert marks["bob"].get("operator") is True
        alice.send("/join #dev")
        alice.send("/drop #dev")
        assert not any(m.get("operator") for m in _who_marks(bot).values())
