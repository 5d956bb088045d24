"""Issue 20 wave 3, "notice": a user's NOTICE is a notice everywhere, and LUSERS.

A notice from a user (IRC's ``NOTICE``, chatd's ``/notice``, jsonl's ``notice``) is
a message with ``notice`` set: held to everything a message is (mutes, filters,
history) and shown apart by every protocol (IRC ``NOTICE``, the line protocol's
``-nick- text``, jsonl's ``"notice": true``), never answered automatically (no
error to an IRC ``NOTICE``, no away reply, no mention).  ``LUSERS`` / ``/lusers``
is a typed reply (``server_counts``) with true numbers, sent to an IRC client after
its registration too.

Real chatd processes with raw sockets (every IRC line parsed strictly by
tests/test_irc_session.py's ``IrcClient``), plus in-process unit tests of the
renderers, the codec and the command mapping.
"""

from __future__ import annotations

import re
from pathlib import Path

from test_accounts import registered
from test_irc_session import IrcClient
from test_moderation import PLUGINS as MODERATION_PLUGINS
from test_moderation import _founded

from chatd.codec import from_dict, to_dict
from chatd.events import Message, PrivateMessage, Source
from chatd.protocols.irc.render import IrcRenderer
from chatd.protocols.irc.wire import parse
from chatd.protocols.jsonl import RENDERER as JSONL
from chatd.protocols.jsonl import parse_request
from chatd.protocols.line import RENDERER as LINE
from chatd.replies import ServerCounts
from chatd.requests import Invoke
from chatd.testing import write_config

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_PLUGINS = str(REPO / "plugins")
LATER = str(REPO / "tests" / "laterpresence")
OPER_PASSWORD = "oper-secret-1"
ALICE = Source("alice", 7, node="n1", ident="al", host="h.cloak")


def three_listeners(chatd_server, **config):
    """A server with line (0), jsonl (1) and irc (2) listeners."""
    return chatd_server(listen=[{"port": 0}, {"port": 0, "protocol": "jsonl"},
                                {"port": 0, "protocol": "irc"}], **config)


def irc(server, nick: str, caps: str = "") -> IrcClient:
    client = IrcClient((server.host, server.ports[2]))
    if caps:
        client.send("CAP LS 302", f"CAP REQ :{caps}")
        client.until("CAP")
        assert client.expect("CAP").params[1] == "ACK"
        client.send("CAP END")
    client.register(nick)
    return client


def line(server, nick: str):
    client = server.client()
    client.send(f"/nick {nick}")
    client.expect(rf"is now known as {nick}$")
    return client


def jsonl(server, nick: str):
    bot = server.json_client()
    bot.send(cmd="nick", nick=nick)
    bot.expect(type="nick", new=nick)
    return bot


def line_fence(client) -> list[str]:
    """Every line up to the answer to a ``/rooms`` sent now (not included)."""
    client.send("/rooms")
    seen = []
    while not re.match(r"^\*\*\* \d+ rooms?: ", line := client.recv_line()):
        seen.append(line)
    return seen


def json_fence(bot) -> list[dict]:
    """Every object up to the answer to a ``rooms`` request sent now (not included)."""
    bot.send(cmd="rooms", id="fence")
    seen = []
    while (obj := bot.recv()).get("re") != "fence" or obj["type"] != "rooms":
        seen.append(obj)
    return seen


def irc_fence(client: IrcClient) -> list:
    """Every message up to the PONG of a PING sent now (not included)."""
    client.send("PING :fence")
    return client.until("PONG")[:-1]


# -- NOTICE from users, end to end ---------------------------------------------------------------


def test_an_irc_notice_to_a_room_is_a_notice_for_every_protocol(chatd_server):
    server = three_listeners(chatd_server)
    carol = line(server, "carol")
    dave = jsonl(server, "dave")
    bob = irc(server, "bob")
    alice = irc(server, "alice")
    alice.send("NOTICE #lobby :deploy at 5", "PRIVMSG #lobby :and a message")
    got = bob.expect("NOTICE")
    assert got.params == ("#lobby", "deploy at 5")
    assert got.source.startswith("alice!")
    assert bob.expect("PRIVMSG").params == ("#lobby", "and a message")
    carol.expect(r"^-alice- deploy at 5$")  # (skipping the others' joins)
    carol.expect_line("<alice> and a message")
    notice = dave.expect(type="message", text="deploy at 5")
    assert notice["notice"] is True and notice["room"] == "#lobby" and notice["from"] == "alice"
    message = dave.expect(type="message", text="and a message")
    assert "notice" not in message


def test_notices_from_line_and_jsonl_reach_irc_as_notice(chatd_server):
    server = three_listeners(chatd_server)
    bob = irc(server, "bob")
    carol = line(server, "carol")
    dave = jsonl(server, "dave")
    carol.send("/notice #lobby from carol")
    assert bob.expect("NOTICE").params == ("#lobby", "from carol")
    carol.send("/notice bob psst")
    got = bob.expect("NOTICE")
    assert got.params == ("bob", "psst") and got.source.startswith("carol!")
    dave.send(cmd="notice", to="bob", text="from a bot")
    assert bob.expect("NOTICE").params == ("bob", "from a bot")
    dave.send(cmd="notice", to="#lobby", text="bot room notice")
    assert bob.expect("NOTICE").params == ("#lobby", "bot room notice")
    # The sender's copies, as a private message's: marked as a notice it sent.
    assert "-> -*bob*- psst" in line_fence(carol)
    sent = dave.expect(type="privmsg", text="from a bot")
    assert sent["notice"] is True and sent["self"] is True and sent["to"] == "bob"


def test_a_private_irc_notice_reads_as_one_on_line_and_jsonl(chatd_server):
    server = three_listeners(chatd_server)
    carol = line(server, "carol")
    dave = jsonl(server, "dave")
    alice = irc(server, "alice")
    alice.send("NOTICE carol :for carol", "NOTICE dave :for dave", "PRIVMSG carol :plain")
    carol.expect(r"^-\*alice\*- for carol$")  # (skipping alice's join)
    carol.expect_line("*alice* plain")
    got = dave.expect(type="privmsg", text="for dave")
    assert got["notice"] is True and got["to"] == "dave"


def test_echo_message_returns_ones_own_notice_as_notice(chatd_server):
    server = three_listeners(chatd_server)
    alice = irc(server, "alice", caps="echo-message")
    alice.send("NOTICE #lobby :echoed")
    assert alice.expect("NOTICE").params == ("#lobby", "echoed")
    alice.send("NOTICE alice :to myself")
    assert alice.expect("NOTICE").params == ("alice", "to myself")


def test_an_irc_notice_is_never_answered_with_an_error(chatd_server):
    server = three_listeners(chatd_server)
    alice = irc(server, "alice")
    alice.send("NOTICE nobody :x", "NOTICE #nowhere :x", "NOTICE #lobby,nobody :x",
               "NOTICE #bad\x07 :x")
    before = irc_fence(alice)
    assert [m for m in before if m.command.isdigit() or m.command == "NOTICE"] == [], before
    # The same mistakes as PRIVMSG are answered: the quiet is NOTICE's alone.
    alice.send("PRIVMSG nobody :x")
    assert alice.expect("401").params[1] == "nobody"
    alice.send("PRIVMSG #nowhere :x")
    assert alice.expect("442").params[1] == "#nowhere"


def test_a_typed_notice_is_answered_with_errors(chatd_server):
    server = three_listeners(chatd_server)
    carol = line(server, "carol")
    carol.send("/notice nobody x")
    carol.expect_line("! no such nick: nobody")
    carol.send("/notice #nowhere x")
    carol.expect_line("! you are not in #nowhere")
    carol.send("/notice bob")
    assert line_fence(carol)[0].startswith("! usage: /notice")
    dave = jsonl(server, "dave")
    dave.send(cmd="notice", to="nobody", text="x")
    assert dave.expect(type="error")["code"] == "no_such_nick"
    dave.send(cmd="notice", text="x")
    assert dave.expect(type="error")["code"] == "malformed"


def test_a_muted_users_notice_is_dropped_quietly_on_irc_and_refused_on_line(chatd_server):
    server = three_listeners(chatd_server, plugins=MODERATION_PLUGINS)
    alice = _founded(server, "alice", "#dev")
    bob = irc(server, "bob")
    bob.send("JOIN #dev")
    bob.until("366")
    carol = line(server, "carol")
    carol.send("/join #dev")
    carol.expect(r"^\*\*\* (also in|you are the first in) #dev")
    alice.send("/mute bob!*@*")
    alice.expect(r"muted bob!\*@\* in #dev")
    alice.send("/mute carol!*@*")
    alice.expect(r"muted carol!\*@\* in #dev")
    bob.send("NOTICE #dev :muted notice")
    assert [m for m in irc_fence(bob) if m.command.isdigit()] == []  # nothing: not even 404
    bob.send("PRIVMSG #dev :muted message")
    assert bob.expect("404").params[1] == "#dev"  # the message is told, the notice was not
    carol.send("/notice #dev muted too")
    carol.expect(r"^! you are muted in #dev")
    heard = line_fence(alice)
    assert not [h for h in heard if "muted notice" in h or "muted too" in h], heard


def test_a_notice_is_held_to_the_registered_nick_rule(chatd_server):
    server = three_listeners(chatd_server)
    registered(server, "alice").close()
    bob = line(server, "bob")
    mallory = line(server, "alice")  # the name, not identified for it
    mallory.send("/notice #lobby I am the real alice")
    mallory.expect(r"^! alice is registered to someone else")
    mallory.send("/notice bob I am the real alice")
    mallory.expect(r"^! alice is registered to someone else")
    assert not [h for h in line_fence(bob) if "real alice" in h]


def test_an_irc_notice_answered_later_by_presence_stays_quiet(chatd_server):
    """A backend whose answers come later (a cluster's): the lookup of a NOTICE's nick
    is answered on a later pass, and its "no such nick" is still not told."""
    server = three_listeners(chatd_server, plugin_dirs=[LATER], plugins={"laterpresence": {}})
    alice = irc(server, "alice")
    alice.send("NOTICE nobody :x")
    assert [m for m in irc_fence(alice) if m.command.isdigit()] == []
    alice.send("PRIVMSG nobody :x")
    assert alice.expect("401").params[1] == "nobody"


def test_notices_are_kept_in_history_and_replayed_as_notices(chatd_server, tmp_path):
    config = write_config(
        tmp_path / "config.yaml", storage={"path": "data/chatd.sqlite3"},
        plugins={"history": {"replay_lines": 20}},
        listen=[{"port": 0}, {"port": 0, "protocol": "jsonl"}, {"port": 0, "protocol": "irc"}])
    first = chatd_server(config)
    alice = irc(first, "alice")
    alice.send("NOTICE #lobby :remember this", "PRIVMSG #lobby :and this")
    irc_fence(alice)
    alice.close()
    assert first.stop() == 0  # everything queued is on disk
    second = chatd_server(config)  # replayed from the database, not from memory
    carol = second.client()
    carol.expect(r"^\*\*\* history of #lobby")
    carol.expect(r"^\[[\d :-]+\] -alice- remember this$")
    carol.expect(r"^\[[\d :-]+\] <alice> and this$")
    dave = second.json_client(welcome=False)
    replayed = dave.expect(type="message", text="remember this")
    assert replayed["notice"] is True and replayed["history"] is True
    assert "notice" not in dave.expect(type="message", text="and this")
    eve = IrcClient((second.host, second.ports[2]))
    eve.register("eve")
    assert eve.expect("NOTICE").params == ("#lobby", "remember this")


def test_no_automatic_answer_to_a_notice_away_reply_or_mention(chatd_server):
    server = three_listeners(chatd_server, plugin_dirs=[EXAMPLE_PLUGINS])
    bob = line(server, "bob")
    bob.send("/join #dev")
    bob.send("/part #lobby")
    bob.expect(r"you are now talking in #dev$")
    bob.send("/away lunch")
    bob.expect(r"you are away: lunch")
    alice = line(server, "alice")
    alice.send("/notice bob a notice")
    alice.send("/notice #lobby a notice for @bob")
    alice.send("/msg bob a message")
    alice.send("a line for @bob")
    said = line_fence(alice)
    while "*** bob is away: lunch" not in said:  # the away reply comes after its message,
        said.append(alice.recv_line())  # some ticks later (a timed-out read fails)
    away = [i for i, text in enumerate(said) if text == "*** bob is away: lunch"]
    assert len(away) == 1 and said[away[0] - 1] == "-> *bob* a message", said
    heard = line_fence(bob)
    mentions = [text for text in heard if text.startswith("*** [mentions]")]
    assert mentions == ["*** [mentions] alice mentioned you in #lobby: a line for @bob"], heard
    assert "-*alice*- a notice" in heard


# -- LUSERS --------------------------------------------------------------------------------------


def test_lusers_counts_users_operators_unknown_rooms_and_most(chatd_server):
    server = three_listeners(chatd_server, plugins={"oper": {"password": OPER_PASSWORD}})
    op = line(server, "op")
    op.send(f"/oper {OPER_PASSWORD}")
    op.expect_line("*** you are now an operator")
    dave = jsonl(server, "dave")
    dave.send(cmd="join", room="#dev")
    dave.expect(type="join", room="#dev")
    registering = IrcClient((server.host, server.ports[2]))
    registering.send("NICK half")  # no USER: registration not finished, not a user
    registering.expect_nothing()
    alice = irc(server, "alice")
    alice.send("LUSERS")
    block = alice.until("266")
    by = {m.command: m.params for m in block}
    assert by["251"] == ("alice", "There are 3 users and 0 invisible on 1 servers")
    assert by["252"] == ("alice", "1", "operator(s) online")
    assert by["253"] == ("alice", "1", "unknown connection(s)")
    assert by["254"] == ("alice", "2", "channels formed")
    assert by["255"] == ("alice", "I have 3 clients and 0 servers")
    assert by["265"] == ("alice", "3", "3", "Current local users 3, max 3")
    assert by["266"] == ("alice", "3", "3", "Current global users 3, max 3")
    dave.send(cmd="lusers")
    counts = dave.expect(type="server_counts")
    assert {k: counts[k] for k in ("users", "invisible", "operators", "unknown", "rooms",
                                   "most", "servers")} == {
        "users": 3, "invisible": 0, "operators": 1, "unknown": 1, "rooms": 2, "most": 3,
        "servers": 1}
    op.close()  # an operator gone is counted no more; the most stays
    registering.close()
    alice.expect("QUIT")
    dave.send(cmd="lusers")
    counts = dave.expect(type="server_counts")
    assert (counts["users"], counts["operators"], counts["most"]) == (2, 0, 3)
    alice.send("LUSERS")
    block = alice.until("266")
    assert "252" not in [m.command for m in block]  # not zero only (RFC 2812)


def test_lusers_on_the_line_protocol(chatd_server):
    server = three_listeners(chatd_server)
    carol = line(server, "carol")
    carol.send("/lusers")
    carol.expect_line("*** 1 user here, in 1 room; at most 1 at once since the server started")
    carol.expect_line("*** 0 connections not yet a user; 1 server")


def test_registration_sends_the_lusers_block_after_the_motd_and_before_the_join(chatd_server):
    server = three_listeners(chatd_server)
    line(server, "carol")
    alice = IrcClient((server.host, server.ports[2]))
    burst = alice.register("alice")
    commands = [m.command for m in burst]
    motd_end = "376" if "376" in commands else "422"
    assert commands.index("005") < commands.index(motd_end) < commands.index("251") \
        < commands.index("266") < commands.index("JOIN"), commands
    assert next(m for m in burst if m.command == "251").params[1].startswith("There are 2 users")


# -- in process: the renderers, the codec, the mapping --------------------------------------------


def _notice(cls, target: str, **fields):
    return cls(1796119080000007, 1796119080.25, ALICE, target, "hi there", notice=True, **fields)


def test_the_notice_flag_crosses_the_codec_and_is_public_only_when_set():
    for event in (_notice(Message, "#dev"), _notice(PrivateMessage, "bob")):
        assert from_dict(to_dict(event)) == event
        assert to_dict(event, internal=False)["notice"] is True
    plain = Message(1, 1.0, ALICE, "#dev", "hi")
    assert "notice" not in to_dict(plain) and from_dict(to_dict(plain)).notice is False


def test_each_renderer_shows_a_notice_apart_from_a_message():
    room, private = _notice(Message, "#dev"), _notice(PrivateMessage, "bob")
    assert LINE.render(room) == b"-alice- hi there\n"
    assert LINE.render(private) == b"-*alice*- hi there\n"
    assert LINE.render_for(private, "n1:7") == b"-> -*bob*- hi there\n"
    assert LINE.render_elsewhere(room, LINE.render(room)) == b"[#dev] -alice- hi there\n"
    assert b'"notice":true' in JSONL.render(room)
    renderer = IrcRenderer(frozenset(), "irc.test")
    for event, target in ((room, "#dev"), (private, "bob")):
        message = parse(renderer.render(event).decode().rstrip("\r\n"), strict=True)
        assert (message.command, message.params) == ("NOTICE", (target, "hi there"))


def test_jsonl_and_irc_map_a_notice_to_the_notice_command():
    assert parse_request('{"cmd": "notice", "to": "#dev", "text": "hi"}') == \
        Invoke("notice", "#dev hi")


def test_server_counts_in_every_renderer():
    counts = ServerCounts(1, 1.0, Source("chatd", None, plugin="presence"), "alice", "",
                          users=5, invisible=0, operators=0, unknown=0, rooms=0, most=9,
                          servers=1)
    lines = [parse(raw, strict=True) for raw in
             IrcRenderer(frozenset(), "irc.test").render(counts).decode().split("\r\n") if raw]
    assert [m.command for m in lines] == ["251", "255", "265", "266"]  # 252-254: zero
    assert lines[2].params == ("alice", "5", "9", "Current local users 5, max 9")
    assert LINE.render(counts) == (b"*** 5 users here, in 0 rooms; at most 9 at once since "
                                   b"the server started\n"
                                   b"*** 0 connections not yet a user; 1 server\n")
    shown = to_dict(counts, internal=False)
    assert (shown["type"], shown["users"], shown["operators"], shown["most"]) == \
        ("server_counts", 5, 0, 9)
