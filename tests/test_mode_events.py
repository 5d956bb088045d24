"""Mode changes as a typed event, and INVITE as RFC 2812 has it (issue 20, "modes").

Moderation's changes (``/op``, ``/deop``, ``/ban``, ``/unban``, ``/mute``, ``/unmute``,
``/roomset``) are a ``ModeChange`` made through ``server.mode_changed``: each protocol
renders it its own way (line: the sentences it always read; jsonl: a ``mode``
object; IRC: ``MODE #room +b mask``).  ``/invite``: any member of a room that is not
invite-only, only the operators of one that is, anyone to a room nobody is in; the
invitee is sent the ``Invite`` by every protocol (IRC: ``INVITE`` and no notice).

Real processes with raw sockets (every IRC line parsed strictly), and the renderers
and the codec in-process.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
from test_irc_seams import irc_user
from test_irc_session import IrcClient
from test_moderation import PASSWORD, PLUGINS, _founded, _in, _named, _registered, _see

from chatd import Command, hookimpl
from chatd.codec import CodecError, dumps, from_dict, loads, to_dict
from chatd.events import Invite, ModeChange, ModeItem, Source
from chatd.protocols.irc.render import IrcRenderer
from chatd.protocols.irc.wire import parse
from chatd.protocols.jsonl import RENDERER as JSONL
from chatd.protocols.line import RENDERER as LINE
from chatd.testing import InProcessChat

ALICE = Source("alice", 3, node="n1", ident="guest-3", host="ab12.cloak", account="alice")
LISTEN = [{"port": 0}, {"port": 0, "protocol": "jsonl"}, {"port": 0, "protocol": "irc"}]


def change(*items: ModeItem, text: str = "", seconds: float | None = None) -> ModeChange:
    return ModeChange(7, 1.0, ALICE, "#dev", text, changes=items, seconds=seconds)


def irc_lines(event: Any, caps: frozenset[str] = frozenset()) -> list[Any]:
    """What an IRC client with ``caps`` reads of ``event``, each line parsed strictly."""
    data = IrcRenderer(caps, "chat.test").render(event).decode()
    assert data.endswith("\r\n") or not data
    return [parse(line, strict=True) for line in data.split("\r\n") if line]


# -- the renderers -------------------------------------------------------------------------------

#: One change, as line, jsonl's item and IRC's MODE parameters show it.
RENDERED = [
    (ModeItem("op", True, "bob"), {}, "alice made bob an operator of #dev",
     ("#dev", "+o", "bob")),
    (ModeItem("op", False, "bob"), {}, "alice removed bob as an operator of #dev",
     ("#dev", "-o", "bob")),
    (ModeItem("ban", True, "bob"), {"text": "spam", "seconds": 3600.0},
     "alice banned bob in #dev for 1 h: spam", ("#dev", "+b", "bob!*@*")),
    (ModeItem("ban", True, "*!*@host"), {}, "alice banned *!*@host in #dev",
     ("#dev", "+b", "*!*@host")),
    (ModeItem("ban", False, "bob"), {}, "alice unbanned bob in #dev", ("#dev", "-b", "bob!*@*")),
    (ModeItem("mute", True, "bob"), {"seconds": 90.0}, "alice muted bob in #dev for 90 s",
     ("#dev", "+q", "bob!*@*")),
    (ModeItem("mute", False, "bob!*@*"), {}, "alice unmuted bob!*@* in #dev",
     ("#dev", "-q", "bob!*@*")),
    (ModeItem("invite_only", True), {}, "alice set invite-only on in #dev", ("#dev", "+i")),
    (ModeItem("topic_lock", False), {}, "alice set topic-lock off in #dev", ("#dev", "-t")),
]


@pytest.mark.parametrize(("item", "extra", "sentence", "params"), RENDERED,
                         ids=[f"{r[0].mode}{'+' if r[0].on else '-'}" for r in RENDERED])
def test_each_change_renders_in_every_protocol(item, extra, sentence, params):
    event = change(item, **extra)
    assert LINE.render(event).decode() == f"*** {sentence}\n"
    obj = json.loads(JSONL.render(event))
    assert (obj["type"], obj["from"], obj["room"]) == ("mode", "alice", "#dev")
    assert obj["changes"] == [{"mode": item.mode, "on": item.on, "arg": item.arg}]
    assert obj.get("text", "") == extra.get("text", "")
    assert obj.get("seconds") == extra.get("seconds")
    if "seconds" in extra:  # whole seconds as a JSON integer: 3600, not 3600.0
        assert re.search(rb'"seconds":%d[,}]' % int(extra["seconds"]), JSONL.render(event))
    [mode] = irc_lines(event)
    assert (mode.command, mode.source, mode.params) == ("MODE", "alice!guest-3@ab12.cloak",
                                                        params)


def test_an_operator_named_by_a_nick_of_another_account_is_that_nick_on_irc():
    """IRC's +o names the nick in the channel; the line protocol says the account."""
    event = change(ModeItem("op", True, "bob", "Bobby"))
    assert irc_lines(event)[0].params == ("#dev", "+o", "Bobby")
    assert LINE.render(event) == b"*** alice made bob an operator of #dev\n"
    assert json.loads(JSONL.render(event))["changes"] == [
        {"mode": "op", "on": True, "arg": "bob", "nick": "Bobby"}]


def test_several_changes_are_one_mode_line_and_split_past_modes_max():
    event = change(ModeItem("op", True, "bob"), ModeItem("ban", True, "x!*@*"),
                   ModeItem("invite_only", False), ModeItem("topic_lock", False),
                   ModeItem("mute", True, "carol"))
    [mode] = irc_lines(event)
    assert mode.params == ("#dev", "+ob-it+q", "bob", "x!*@*", "carol!*@*")
    assert LINE.render(event).decode().splitlines() == [
        "*** alice made bob an operator of #dev", "*** alice banned x!*@* in #dev",
        "*** alice set invite-only off in #dev", "*** alice set topic-lock off in #dev",
        "*** alice muted carol in #dev"]
    many = change(*(ModeItem("ban", True, f"n{i}!*@*") for i in range(15)),
                  ModeItem("invite_only", True))
    lines = irc_lines(many)
    assert [m.params[1] for m in lines] == ["+" + "b" * 13, "+bbi"]
    assert [m.params[2:] for m in lines] == [tuple(f"n{i}!*@*" for i in range(13)),
                                             ("n13!*@*", "n14!*@*")]


def test_a_mode_irc_does_not_have_is_left_out_and_a_mode_of_none_is_no_line():
    """A newer node's mode: IRC leaves it out (the others still shown), the line protocol
    says it in the setting's words, jsonl passes it for the bot to ignore."""
    event = change(ModeItem("voice", True, "bob"), ModeItem("topic_lock", True))
    assert irc_lines(event)[0].params == ("#dev", "+t")
    assert irc_lines(change(ModeItem("voice", True, "bob"))) == []
    assert LINE.render(change(ModeItem("voice", True, "bob"))) == \
        b"*** alice set voice on in #dev (bob)\n"


def test_mode_carries_msgid_and_time_with_the_caps():
    [mode] = irc_lines(change(ModeItem("invite_only", True)),
                       frozenset({"message-tags", "server-time"}))
    assert mode.tags["msgid"] == "7" and mode.tags["time"].startswith("1970-01-01T00:00:01")


def test_hostile_fields_of_a_remote_mode_change_reach_no_client():
    """A node's event is only as clean as that node: no protocol writes a control, a line
    break or a terminal escape from a change's fields."""
    hostile = "x\x1b[2J\r\nPRIVMSG #dev :owned\x07\u202e"
    event = from_dict({"v": 1, "type": "mode", "id": 9, "time": 1.0, "from": "alice",
                       "client": 3, "node": "n2", "room": "#dev", "text": hostile,
                       "changes": [{"mode": "ban", "on": True, "arg": hostile,
                                    "nick": hostile}, {"mode": "op", "on": False,
                                                       "arg": hostile, "nick": hostile}]})
    shown = json.dumps(json.loads(JSONL.render(event)), ensure_ascii=False)
    assert not re.search(r"\\u00[01]|\\u007f|[\x80-\x9f\u202e]", shown), shown
    line = LINE.render(event).decode()
    assert line.count("\n") == 2 and not re.search(r"[\x00-\x09\x0b-\x1f\x7f\u202e]", line)
    [mode] = irc_lines(event)  # one line, strictly parsed: nothing else was made
    assert mode.command == "MODE" and mode.params[1] == "+b-o"


def test_a_mode_change_crosses_nodes_through_the_codec():
    event = change(ModeItem("ban", True, "bob"), ModeItem("op", False, "bob", "Bob"),
                   text="spam", seconds=5400.0)
    back = loads(dumps(event))
    assert back == event and back.__class__ is ModeChange
    assert to_dict(change(ModeItem("invite_only", True)))["changes"] == [
        {"mode": "invite_only", "on": True, "arg": ""}]
    assert "seconds" not in to_dict(change(ModeItem("invite_only", True)))


@pytest.mark.parametrize("bad", [
    {"changes": "ban"}, {"changes": ["ban"]}, {"changes": [{"on": True}]},
    {"changes": [{"mode": "ban", "on": "yes"}]}, {"changes": [{"mode": "ban", "on": True,
                                                             "arg": 5}]},
    {"seconds": 0}, {"seconds": -5}, {"seconds": math.inf}, {"seconds": "1h"},
])
def test_the_codec_refuses_a_malformed_mode_change(bad):
    d = {"v": 1, "type": "mode", "id": 9, "time": 1.0, "from": "alice", "client": 3,
         "room": "#dev", "changes": [{"mode": "ban", "on": True, "arg": "bob"}], **bad}
    with pytest.raises(CodecError):
        from_dict(d)


# -- the facade: a plugin announces a change of its own ------------------------------------------


class Locker:
    """A plugin with rules of its own: ``/lockit`` announces a topic lock."""

    PLUGIN_NAME = "locker"

    @hookimpl
    def chatd_commands(self) -> list[Command]:
        def lock(client: Any, args: str) -> None:
            client.server.mode_changed(client, client.room.name,
                                       [ModeItem("topic_lock", True)], reason=args)
        return [Command("lockit", lock, "/lockit", "lock the topic (a test)")]


def test_a_plugin_announces_a_mode_change_through_the_facade():
    with InProcessChat(Locker()) as chat:
        alice, bot = chat.connect(), chat.connect("jsonl")
        alice.lines(), bot.lines()
        alice.send("/lockit")
        assert alice.lines() == [f"*** {alice.nick} set topic-lock on in #lobby"]
        [obj] = [o for o in bot.objects() if o["type"] == "mode"]
        assert obj["changes"] == [{"mode": "topic_lock", "on": True, "arg": ""}]
        assert obj["from"] == alice.nick and obj["room"] == "#lobby"
        with pytest.raises(ValueError, match="voice"):
            chat.server.mode_changed(alice.client, "#lobby", [ModeItem("voice", True)])
        with pytest.raises(ValueError):
            chat.server.mode_changed(alice.client, "#lobby", [])
        assert bot.objects() == []  # a refused change told nobody anything


# -- a real server: every protocol in one room ---------------------------------------------------


@pytest.fixture
def dev(chatd_server):
    """A server with a line, a jsonl and an irc listener; alice (line) founded #dev, and
    lina (line, registered), a bot (jsonl) and ira (irc) are in it."""
    server = chatd_server(listen=LISTEN, plugins=PLUGINS)
    alice = _founded(server, "alice", "#dev")
    lina = _registered(server, "lina")
    _in(lina, "#dev")
    bot = server.json_client()
    bot.send(cmd="join", room="#dev", id="j")
    bot.expect(type="names", re="j")
    ira = irc_user((server.host, server.ports[2]), "ira")
    ira.send("JOIN #dev")
    ira.expect("366")
    return server, alice, lina, bot, ira


#: A command alice types, and what lina (line), the bot (jsonl: its changes, seconds,
#: text) and ira (IRC: MODE's parameters) are sent.
COMMANDS = [
    ("/ban bob!*@* 1h spam", "alice banned bob!*@* in #dev for 1 h: spam",
     [{"mode": "ban", "on": True, "arg": "bob!*@*"}], 3600, "spam", ("#dev", "+b", "bob!*@*")),
    ("/unban bob!*@*", "alice unbanned bob!*@* in #dev",
     [{"mode": "ban", "on": False, "arg": "bob!*@*"}], None, None, ("#dev", "-b", "bob!*@*")),
    ("/mute carol", "alice muted carol in #dev",
     [{"mode": "mute", "on": True, "arg": "carol"}], None, None, ("#dev", "+q", "carol!*@*")),
    ("/unmute carol", "alice unmuted carol in #dev",
     [{"mode": "mute", "on": False, "arg": "carol"}], None, None, ("#dev", "-q", "carol!*@*")),
    ("/roomset topic-lock on", "alice set topic-lock on in #dev",
     [{"mode": "topic_lock", "on": True, "arg": ""}], None, None, ("#dev", "+t")),
    ("/roomset invite-only off", "alice set invite-only off in #dev",
     [{"mode": "invite_only", "on": False, "arg": ""}], None, None, ("#dev", "-i")),
    ("/op lina", "alice made lina an operator of #dev",
     [{"mode": "op", "on": True, "arg": "lina"}], None, None, ("#dev", "+o", "lina")),
    ("/deop lina", "alice removed lina as an operator of #dev",
     [{"mode": "op", "on": False, "arg": "lina"}], None, None, ("#dev", "-o", "lina")),
]


def test_every_moderation_change_reaches_every_protocol_as_its_own_form(dev):
    _server, alice, lina, bot, ira = dev
    for command, sentence, changes, seconds, text, params in COMMANDS:
        alice.send(command)
        _see(alice, f"*** {sentence}")  # the operator's own, in the same words
        _see(lina, f"*** {sentence}")
        obj = bot.expect(type="mode")
        assert (obj["from"], obj["room"], obj["changes"]) == ("alice", "#dev", changes), command
        assert (obj.get("seconds"), obj.get("text")) == (seconds, text), command
        assert not [o for o in bot.history if sentence in o.get("text", "")], command
        mode = ira.expect("MODE")
        assert mode.source.startswith("alice!") and mode.params == params, command
        assert not [m for m in ira.seen if m.command == "NOTICE" and sentence in m.params[-1]]


def test_an_irc_operators_mode_comes_back_to_it_as_mode(chatd_server):
    """The IRC client that sent MODE is sent the change as the others are (the server's
    confirmation a client waits for), with the ban as a mask and no address in it."""
    server = chatd_server(listen=LISTEN, plugins=PLUGINS)
    founder = irc_user((server.host, server.ports[2]), "founder")
    founder.send(f"PRIVMSG NickServ :REGISTER {PASSWORD}", "JOIN #ops")
    founder.expect("366")
    founder.send("PRIVMSG ChanServ :REGISTER #ops")
    while "#ops is registered" not in founder.expect("NOTICE").params[-1]:
        pass
    victim = _named(server, "victim")
    _in(victim, "#ops")
    founder.send("MODE #ops +b victim")
    mode = founder.expect("MODE")
    assert mode.source.startswith("founder!") and mode.params == ("#ops", "+b", "victim!*@*")
    _see(victim, "*** you are banned from #ops")
    founder.send("MODE #ops +it")
    assert [founder.expect("MODE").params for _ in "it"] == [("#ops", "+i"), ("#ops", "+t")]


# -- INVITE ---------------------------------------------------------------------------------------


def fenced(irc: IrcClient) -> list[Any]:
    """Everything ``irc`` is sent up to a PONG: what it was sent before it."""
    irc.send("PING :fence")
    return irc.until("PONG")


def test_any_member_invites_to_a_room_that_is_not_invite_only(chatd_server):
    server = chatd_server(listen=LISTEN, plugins=PLUGINS)
    address = (server.host, server.ports[2])
    inviter, guest = irc_user(address, "inviter"), irc_user(address, "guest")
    watcher = _named(server, "watcher")
    _in(watcher, "#open")
    inviter.send("JOIN #open")
    inviter.expect("366")
    inviter.send("INVITE guest #open")
    assert inviter.expect("341").params == ("inviter", "guest", "#open")
    invite = guest.expect("INVITE")
    assert invite.source.startswith("inviter!") and invite.params == ("guest", "#open")
    seen = fenced(guest)  # the INVITE and nothing else: no notice in words beside it
    assert not [m for m in guest.seen if m.command == "NOTICE" and "invite" in m.params[-1]], seen
    _see(watcher, "*** inviter invited guest to #open")
    guest.send("JOIN #open")
    guest.expect("366")


def test_a_non_member_may_not_invite_to_a_room_with_members(chatd_server):
    server = chatd_server(listen=LISTEN, plugins=PLUGINS)
    address = (server.host, server.ports[2])
    outsider, guest = irc_user(address, "outsider"), irc_user(address, "guest")
    member = _named(server, "member")
    _in(member, "#busy")
    outsider.send("INVITE guest #busy")
    refused = outsider.expect("442")
    assert refused.params[:2] == ("outsider", "#busy")
    assert not [m for m in fenced(guest) if m.command == "INVITE"]
    line = _named(server, "liner")
    line.send("/invite guest #busy")
    _see(line, "! you are not in #busy: a room's members invite to it")


def test_a_room_nobody_is_in_takes_anyones_invitation(chatd_server):
    """RFC 2812: the channel need not exist; chatd lets anyone invite to a room nobody is
    in (a valid name; an invite-only registered one excepted, below)."""
    server = chatd_server(listen=LISTEN, plugins=PLUGINS)
    address = (server.host, server.ports[2])
    inviter, guest = irc_user(address, "inviter"), irc_user(address, "guest")
    inviter.send("INVITE guest #nowhere")
    assert inviter.expect("341").params == ("inviter", "guest", "#nowhere")
    assert guest.expect("INVITE").params == ("guest", "#nowhere")
    line = _named(server, "liner")
    line.send("/invite guest #no:good")
    _see(line, "! not a room name: #no:good (a room name is '#' and 1-32 letters, digits "
               "or _-.)")


def test_an_invite_only_room_takes_only_its_operators_invitations(chatd_server):
    server = chatd_server(listen=LISTEN, plugins=PLUGINS)
    address = (server.host, server.ports[2])
    alice = _founded(server, "alice", "#club")
    member = irc_user(address, "member")
    member.send("JOIN #club")
    member.expect("366")
    alice.send("/roomset invite-only on")
    _see(alice, "*** alice set invite-only on in #club")
    guest = irc_user(address, "guest")
    member.send("INVITE guest #club")  # a member, not an operator: 482
    assert member.expect("482").params[:2] == ("member", "#club")
    guest.send("JOIN #club")
    guest.expect("473")
    alice.send("/invite guest #club")
    _see(alice, "*** alice invited guest to #club")
    assert guest.expect("INVITE").params == ("guest", "#club")
    guest.send("JOIN #club")
    guest.expect("366")


def test_a_line_invitee_elsewhere_reads_its_invitation_without_a_room_tag(chatd_server):
    server = chatd_server(listen=LISTEN, plugins=PLUGINS)
    alice = _named(server, "alice")
    _in(alice, "#dev")
    bob = _named(server, "bob")
    alice.send("/invite bob #dev")
    _see(bob, "*** alice invites you to #dev: /join #dev")
    bot = server.json_client()
    alice.send(f"/invite {bot.nick} #dev")
    invite = bot.expect(type="invite")
    assert (invite["from"], invite["room"], invite["invitee"]) == ("alice", "#dev", bot.nick)


def test_the_invite_event_is_rendered_for_the_invitee_by_every_protocol():
    event = Invite(5, 1.0, ALICE, "#dev", "", invitee="bob")
    assert LINE.render(event) == b"*** alice invites you to #dev: /join #dev\n"
    assert LINE.render_elsewhere(event, LINE.render(event)) == LINE.render(event)
    assert json.loads(JSONL.render(event))["invitee"] == "bob"
    [invite] = irc_lines(event)
    assert (invite.command, invite.params) == ("INVITE", ("bob", "#dev"))
