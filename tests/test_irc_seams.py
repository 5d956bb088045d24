"""Issue 20 wave 2, the seams the IRC listener needs from the chat domain.

SASL PLAIN against chatd's registered nicks (through the public account check,
held to ``/identify``'s limits), and the other seams (echo, kicks, reserved
service nicks, ...), each tested with a strict raw-socket IRC client against a
real chatd process (tests/test_irc_session.py's ``IrcClient``), plus in-process
tests of the sans-IO parts.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from test_accounts import PASSWORD, REGISTERED, expect_exact, named
from test_irc_session import IrcClient

from chatd.protocols.base import PlainDoor
from chatd.protocols.irc import IrcProtocol, caps
from chatd.protocols.irc.registration import IrcState, Registration
from chatd.protocols.irc.wire import Message, parse
from chatd.testing.inprocess import MemoryTransport


@pytest.fixture
def irc_server(chatd_server):
    """``irc_server(**irc_options, limits=..., ...)`` -> (server, address of its irc port)."""
    def start(limits: dict[str, Any] | None = None, **options: Any) -> Any:
        server = chatd_server(
            listen=[{"port": 0}, {"port": 0, "protocol": "irc", **options}],
            **({"limits": limits} if limits else {}))
        return server, (server.host, server.ports[1])
    return start


def plain(account: str, password: str, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{account}\0{password}".encode()).decode()


def registered(server, nick: str) -> None:
    """``nick`` registered (with PASSWORD) by a line client that then leaves."""
    owner = named(server, nick)
    owner.send(f"/register {PASSWORD}")
    expect_exact(owner, REGISTERED.format(nick=nick))
    owner.close()


def sasl_start(address, nick: str) -> IrcClient:
    irc = IrcClient(address)
    irc.send("CAP LS 302", f"NICK {nick}", f"USER {nick} 0 * :{nick}")
    irc.expect("CAP")
    irc.send("CAP REQ :sasl")
    assert irc.expect("CAP").params[1] == "ACK"
    return irc


def authenticate(irc: IrcClient, account: str, password: str) -> Message:
    irc.send("AUTHENTICATE PLAIN")
    assert irc.expect("AUTHENTICATE").params == ("+",)
    irc.send(f"AUTHENTICATE {plain(account, password)}")
    while True:
        message = irc.recv()
        assert message is not None, irc.seen[-5:]
        if message.command in ("903", "904", "ERROR"):
            return message


# -- SASL PLAIN --------------------------------------------------------------------------------


def test_sasl_plain_logs_in_a_registered_nick_and_the_session_begins_identified(irc_server):
    server, address = irc_server()
    registered(server, "alice")
    irc = sasl_start(address, "alice")
    ls = [m for m in irc.seen if m.command == "CAP" and m.params[1] == "LS"]
    assert "sasl=PLAIN" in ls[0].params[-1].split()
    done = authenticate(irc, "alice", PASSWORD)
    assert done.command == "903", irc.seen[-3:]
    logged = next(m for m in irc.seen if m.command == "900")
    assert logged.params[2] == "alice"
    irc.send("CAP END")
    assert irc.expect("001").params[0] == "alice"
    irc.send("WHOIS alice")
    assert irc.expect("330").params[1:3] == ("alice", "alice")  # identified as the account


def test_a_wrong_sasl_password_is_904_and_registration_goes_on_unidentified(irc_server):
    server, address = irc_server()
    registered(server, "alice")
    irc = sasl_start(address, "bob")
    assert authenticate(irc, "alice", "not-the-password").command == "904"
    irc.send("CAP END")
    assert irc.expect("001").params[0] == "bob"
    irc.send("WHOIS bob")
    assert "330" not in [m.command for m in irc.until("318")]


def test_sasl_failures_share_identifys_limits_and_close_after_five(irc_server):
    server, address = irc_server()
    registered(server, "alice")
    irc = sasl_start(address, "bob")
    for _ in range(4):
        assert authenticate(irc, "alice", "wrong-guess-xx").command == "904"
    assert authenticate(irc, "alice", "wrong-guess-xx").command == "904"
    error = irc.expect("ERROR")
    assert "too many failed SASL logins" in error.params[0]
    assert irc.expect_eof() == []
    # Five failures for alice from this address: /identify from it is held to them too.
    guesser = named(server, "guesser")
    guesser.send(f"/identify alice {PASSWORD}")
    expect_exact(guesser, "! too many failed attempts for that nick; try again later")


def test_sasl_edges_mechanism_abort_too_long_no_cap_and_after_registration(irc_server):
    server, address = irc_server()
    registered(server, "alice")
    irc = IrcClient(address)
    irc.send("AUTHENTICATE PLAIN")
    assert irc.expect("904").params[0] == "*"  # no CAP REQ sasl
    irc.close()
    irc = sasl_start(address, "carol")
    irc.send("AUTHENTICATE EXTERNAL")
    assert irc.expect("908").params[1] == "PLAIN"
    irc.expect("904")
    irc.send("AUTHENTICATE PLAIN")
    irc.expect("AUTHENTICATE")
    irc.send("AUTHENTICATE *")
    irc.expect("906")
    irc.send("AUTHENTICATE PLAIN")
    irc.expect("AUTHENTICATE")
    irc.send("AUTHENTICATE " + "A" * 401)
    irc.expect("905")
    irc.send("AUTHENTICATE PLAIN")
    irc.expect("AUTHENTICATE")
    irc.send("AUTHENTICATE " + base64.b64encode(b"no nul bytes").decode())
    irc.expect("904")
    irc.send("AUTHENTICATE PLAIN")
    irc.expect("AUTHENTICATE")
    irc.send("AUTHENTICATE " + plain("alice", PASSWORD, authzid="mallory"))
    irc.expect("904")  # acting as someone else: refused, even with alice's password
    irc.send("CAP END")
    irc.expect("001")
    irc.send("AUTHENTICATE PLAIN")
    irc.expect("904")  # after registration: /identify, never a relogin


def test_sasl_with_no_account_check_is_904_unavailable():
    """A door with no server (no accounts): the login is refused, never hangs."""
    proto = IrcProtocol(MemoryTransport(("127.0.0.1", 40000)), PlainDoor())
    proto.data_received(memoryview(
        f"CAP LS 302\r\nCAP REQ sasl\r\nAUTHENTICATE PLAIN\r\n"
        f"AUTHENTICATE {plain('dave', PASSWORD)}\r\n".encode()))
    said = [parse(line, strict=True) for line in
            bytes(proto.transport.output).decode().split("\r\n") if line]
    failed = said[-1]
    assert failed.command == "904" and "cannot check passwords" in failed.params[-1], said
    assert not proto.transport.reading_held


# -- in-process: the sans-IO parts -------------------------------------------------------------


def test_sasl_does_not_split_the_renderers():
    """Clients that differ only in ``sasl`` share one renderer (one rendering per event)."""
    assert caps.rendered(frozenset({"sasl", "server-time"})) == frozenset({"server-time"})
    assert caps.OFFERED["sasl"] == "PLAIN"


def test_registration_collects_a_chunked_plain_answer():
    state = IrcState("srv", "net")
    state.caps = frozenset({"sasl"})
    registration = Registration(state)
    assert registration.handle(Message("AUTHENTICATE", ("PLAIN",)))[0].params == ("+",)
    answer = plain("alice", "p" * 400)
    chunks = [answer[i:i + 400] for i in range(0, len(answer), 400)]
    assert len(chunks[0]) == 400
    for chunk in chunks:
        assert registration.handle(Message("AUTHENTICATE", (chunk,))) == []
    if len(chunks[-1]) == 400:
        registration.handle(Message("AUTHENTICATE", ("+",)))
    assert registration.login == ("alice", "p" * 400)
    said = registration.logged_in("alice")
    assert [m.command for m in said] == ["900", "903"] and state.account == "alice"


# -- echo-message --------------------------------------------------------------------------------


def irc_user(address, nick: str, *caps_wanted: str) -> IrcClient:
    """A registered IRC client with ``caps_wanted``, in #lobby (its join and the
    room's names seen: ``register`` reads up to the 366)."""
    irc = IrcClient(address)
    if caps_wanted:
        irc.send("CAP LS 302", f"CAP REQ :{' '.join(caps_wanted)}", "CAP END")
    assert any(m.command == "JOIN" for m in irc.register(nick))
    return irc


def test_echo_message_sends_the_sender_its_room_and_private_messages(irc_server):
    server, address = irc_server()
    line = server.client()
    echoed = irc_user(address, "echoer", "echo-message")
    plain_irc = irc_user(address, "quiet")
    echoed.send("PRIVMSG #lobby :hello all", "PRIVMSG #lobby :\x01ACTION waves\x01",
                "PRIVMSG quiet :just you")
    own = [echoed.expect("PRIVMSG") for _ in range(3)]
    assert [(m.source.split("!")[0], m.params) for m in own] == [
        ("echoer", ("#lobby", "hello all")), ("echoer", ("#lobby", "\x01ACTION waves\x01")),
        ("echoer", ("quiet", "just you"))]
    assert plain_irc.expect("PRIVMSG").params == ("#lobby", "hello all")
    expect_exact(line, "<echoer> hello all")
    # Without the capability nothing of one's own comes back.
    plain_irc.send("PRIVMSG #lobby :not echoed", "PRIVMSG echoer :private")
    assert echoed.expect("PRIVMSG").params == ("#lobby", "not echoed")
    plain_irc.expect_nothing()
    assert not [m for m in plain_irc.seen if m.command == "PRIVMSG"
                and m.source.startswith("quiet!")]
    line.send("from the line")
    assert echoed.expect("PRIVMSG").params[-1] == "private"
    assert echoed.expect("PRIVMSG").params == ("#lobby", "from the line")


# -- KICK ----------------------------------------------------------------------------------------


def test_a_kick_is_kick_for_irc_clients_and_the_same_part_for_line_clients(irc_server):
    from test_moderation import _founded, _see
    server, address = irc_server()
    alice = _founded(server, "alice", "#dev")
    watcher = irc_user(address, "watcher")
    victim = irc_user(address, "victim")
    for irc in (watcher, victim):
        irc.send("JOIN #dev")
        irc.expect("366")
    alice.expect(r"victim joined #dev")
    alice.send("/kick victim flooding")
    _see(alice, "*** victim left #dev (kicked by alice: flooding)")  # the line: unchanged
    for irc in (watcher, victim):
        kick = irc.expect("KICK")
        assert kick.source == "alice" and kick.params == ("#dev", "victim", "flooding")
    assert "PART" not in [m.command for m in victim.seen + watcher.seen
                          if m.params[:1] == ("#dev",)]
    # A part that is not a kick stays a PART.
    watcher.send("PART #dev :bye")
    assert watcher.expect("PART").params == ("#dev", "bye")


def test_a_kick_crosses_nodes_but_is_not_in_jsonls_public_part():
    """``kicked_by`` goes between nodes (the internal form) and stays out of the public
    form jsonl shows: a jsonl client's part is the same as before."""
    from chatd.codec import from_dict, to_dict
    from chatd.events import Part, Source

    kick = Part(7, 1.0, Source("victim", 3, node="n1"), "#dev", "kicked by op: x",
                kicked_by="op")
    assert from_dict(to_dict(kick)) == kick
    assert "kicked_by" not in to_dict(kick, internal=False)
    assert "kicked_by" not in to_dict(Part(8, 1.0, Source("a", 1, node="n1"), "#dev", ""))


# -- NickServ and ChanServ are nobody's, in every protocol ----------------------------------------


@pytest.mark.parametrize("nick", ["ChanServ", "CHANSERV", "NickServ", "Operat0r"])
def test_service_nicks_and_their_look_alikes_are_reserved_everywhere(chatd_server, nick):
    server = chatd_server(listen=[{"port": 0}, {"port": 0, "protocol": "jsonl"},
                                  {"port": 0, "protocol": "irc"}])
    address = (server.host, server.ports[2])
    line = server.client()
    line.send(f"/nick {nick}")
    expect_exact(line, f"! the nick {nick!r} is reserved")
    bot = server.json_client()
    bot.send(cmd="nick", nick=nick)
    assert "reserved" in bot.expect(type="error")["text"]
    irc = IrcClient(address)
    irc.send(f"NICK {nick}", "USER x 0 * :x")
    assert irc.expect("432").params[1] == nick


def test_the_reserved_rule_is_by_look():
    from chatd.chat.nicks import nick_problem
    assert nick_problem("ChanServ") and nick_problem("Operat0r")
    assert nick_problem("ChanServer") is None  # another name


# -- CAP REQ while in rooms: the rooms' renderer counts follow ------------------------------------


def test_a_cap_req_in_a_room_changes_what_the_fan_out_renders_for_the_client(irc_server):
    _, address = irc_server()
    asker = irc_user(address, "asker")
    speaker = irc_user(address, "speaker")
    asker.send("CAP REQ :server-time")
    assert asker.expect("CAP").params[1] == "ACK"
    speaker.send("PRIVMSG #lobby :what time is it")
    heard = asker.expect("PRIVMSG")
    assert heard.params[-1] == "what time is it" and "time" in heard.tags, heard
    asker.send("CAP REQ :-server-time")
    asker.expect("CAP")
    speaker.send("PRIVMSG #lobby :and now")
    assert "time" not in asker.expect("PRIVMSG").tags


def test_renderer_counts_follow_a_cap_req_in_process():
    from test_irc_session import _irc_peer

    from chatd.testing import InProcessChat

    with InProcessChat() as chat:
        proto, _ = _irc_peer(chat)
        proto.data_received(memoryview(b"NICK ann\r\nUSER a 0 * :A\r\n"))
        other, _ = _irc_peer(chat)
        other.data_received(memoryview(b"NICK ben\r\nUSER b 0 * :B\r\n"))
        room = chat.domain.rooms.get("#lobby")
        before = proto.renderer
        assert room.renderers == {before: 2}
        proto.data_received(memoryview(b"CAP REQ :server-time\r\n"))
        assert proto.renderer is not before
        assert room.renderers == {before: 1, proto.renderer: 1}
        proto.data_received(memoryview(b"CAP REQ :-server-time\r\n"))
        assert room.renderers == {before: 2}


# -- away-notify ---------------------------------------------------------------------------------


def test_away_notify_tells_room_members_who_asked_and_nobody_else(chatd_server):
    server = chatd_server(listen=[{"port": 0}, {"port": 0, "protocol": "jsonl"},
                                  {"port": 0, "protocol": "irc"}])
    address = (server.host, server.ports[2])
    follower = irc_user(address, "follower", "away-notify")
    other = irc_user(address, "other")
    goer = irc_user(address, "goer")
    bot = server.json_client()
    line = server.client()
    goer.send("AWAY :at lunch")
    away = follower.expect("AWAY")
    assert away.source.startswith("goer!") and away.params == ("at lunch",)
    goer.send("AWAY")
    back = follower.expect("AWAY")
    assert back.source.startswith("goer!") and back.params == ()
    line.send("/away brb")
    expect_exact(line, "*** you are away: brb (/away alone when you are back)")
    assert follower.expect("AWAY").params == ("brb",)
    line.send("/away")
    expect_exact(line, "*** you are back")
    assert follower.expect("AWAY").params == ()
    other.expect_nothing()
    assert "AWAY" not in [m.command for m in other.seen]
    bot.send(cmd="who", room="#lobby", id="fence")
    bot.expect(re="fence")
    assert "away" not in [obj.get("type") for obj in bot.history]  # jsonl: unchanged


# -- no current room on IRC: no "you are now talking in" ----------------------------------------


def test_irc_clients_are_not_told_which_room_they_talk_in(irc_server):
    server, address = irc_server()
    irc = irc_user(address, "roamer")
    irc.send("JOIN #dev", "JOIN #ops", "PART #ops", "SWITCH #dev", "PART #dev", "VERSION")
    irc.until("351")  # after the parts, answered in order
    assert [m.params for m in irc.seen if m.command == "PART"] == [("#ops",), ("#dev",)]
    notices = [m.params[-1] for m in irc.seen if m.command == "NOTICE"]
    assert not [text for text in notices if "talking in" in text], notices
    line = server.client()  # the line protocol is told, as before
    line.send("/join #dev")
    line.send("/part #dev")
    expect_exact(line, "*** you are now talking in #lobby")


# -- shutdown: ERROR for IRC clients -------------------------------------------------------------


def test_a_server_shutdown_says_error_to_irc_clients_and_nothing_new_to_the_line(irc_server):
    server, address = irc_server()
    line = server.client()
    irc = irc_user(address, "stayer")
    assert server.stop() == 0
    said = irc.expect_eof()
    assert said[-1].command == "ERROR", said
    assert said[-1].params == ("Closing link: server shutting down",)
    expect_exact(line, "*** server shutting down")  # the line protocol, as before


# -- INVITE and invite-notify --------------------------------------------------------------------


def test_an_invitation_is_invite_for_the_invitee_and_for_members_with_invite_notify(
        irc_server):
    from test_moderation import _founded, _see
    server, address = irc_server()
    alice = _founded(server, "alice", "#dev")
    noted = irc_user(address, "noted", "invite-notify")
    unnoted = irc_user(address, "unnoted")
    for irc in (noted, unnoted):
        irc.send("JOIN #dev")
        irc.expect("366")
    guest = irc_user(address, "guest")
    line_guest = server.client()
    alice.send("/invite guest #dev")
    invite = guest.expect("INVITE")
    assert invite.source.startswith("alice!") and invite.params == ("guest", "#dev")
    assert noted.expect("INVITE").params == ("guest", "#dev")
    _see(alice, "*** alice invited guest to #dev")
    unnoted.send("VERSION")
    assert "INVITE" not in [m.command for m in unnoted.until("351")]
    alice.send(f"/invite {line_guest.nick} #dev")  # the line protocol: words, as before
    expect_exact(line_guest, "*** alice invites you to #dev: /join #dev")


def test_a_jsonl_invitee_gets_an_invite_object_and_no_notice(chatd_server):
    from test_moderation import _founded, _see
    server = chatd_server(listen=[{"port": 0}, {"port": 0, "protocol": "jsonl"}])
    alice = _founded(server, "alice", "#dev")
    bot = server.json_client()
    alice.send(f"/invite {bot.nick} #dev")
    _see(alice, f"*** alice invited {bot.nick} to #dev")
    invite = bot.expect(type="invite")
    assert (invite["from"], invite["room"], invite["invitee"]) == ("alice", "#dev", bot.nick)
    bot.send(cmd="who", room="#lobby", id="fence")
    bot.expect(re="fence")
    assert not [obj for obj in bot.history  # a bot never parses the words of it
                if obj.get("type") == "notice" and "invites you" in obj.get("text", "")]
