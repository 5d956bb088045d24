"""Issue 20: real IRC client software against a real chatd.

Two clients people and bots actually use:
- the ``irc`` library (pypi ``irc``, the test extra), the way a bot drives it: its own
  reactor, its own line parser and event names (``welcome``, ``pubmsg``, ``namreply``,
  ``nicknameinuse`` ...), for registration, channels, modes, errors and each IRCv3
  capability chatd offers;
- WeeChat (Debian's ``weechat-headless``), driven through its ``fifo`` plugin, its
  buffers written by its ``logger`` plugin, in #lobby with a netcat-style line client
  and a jsonl bot.

Every byte chatd sends to these clients is recorded and parsed strictly at the end of
each test (tests/irc_transcript.py): a client that shows a line is no proof the line
was valid IRC.  In CI a missing client fails, never skips.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import irc.client as irc_client  # the test extra: missing, the file fails to import (red)
import pytest
from irc_transcript import Transcript, strict_lines

from chatd.testing import skip_unless_ci, wait_until

TIMEOUT = 5.0


@pytest.fixture
def transcript() -> Iterator[Transcript]:
    """The strict transcript of the test's IRC clients, checked when the test ends."""
    kept = Transcript()
    yield kept
    kept.check()


@pytest.fixture
def irc_server(chatd_server) -> Callable[..., Any]:
    """``irc_server(**sections)`` -> a chatd with a line (0), an irc (1) and a jsonl (2)
    listener."""
    def start(**sections: Any) -> Any:
        return chatd_server(listen=[{"port": 0}, {"port": 0, "protocol": "irc"},
                                    {"port": 0, "protocol": "jsonl"}], **sections)
    return start


class LibClient:
    """One ``irc.client`` connection with its own reactor; every event it raises is kept.

    ``expect`` reads events in order (a cursor), so a test says what comes next
    without sleeping: the reactor's select() waits for the server's bytes.
    """

    def __init__(self, server: Any, nick: str, transcript: Transcript, *,
                 caps: tuple[str, ...] = (), password: str | None = None,
                 sasl: bool = False, register: bool = True) -> None:
        self.reactor = irc_client.Reactor()
        self.events: list[Any] = []
        self.cursor = 0
        self.reactor.add_global_handler("all_events", self._keep, -100)
        address = (server.host, server.ports[1])

        def factory(addr: tuple[str, int]) -> Any:
            sock = transcript.connect(addr)
            if caps:  # before the library's NICK/USER: registration waits for CAP END
                sock.sendall(f"CAP LS 302\r\nCAP REQ :{' '.join(caps)}\r\n".encode())
            return sock

        self.conn = self.reactor.server().connect(
            "127.0.0.1", address[1], nick, password=password, ircname=f"{nick} Realname",
            connect_factory=factory, sasl_login=nick if sasl else None)
        if caps:
            ack = self.expect("cap", lambda e: e.arguments[0] in ("ACK", "NAK"))
            assert ack.arguments[0] == "ACK", ack
            self.conn.cap("END")
        if register:
            self.expect("welcome")
            self.expect("endofmotd", "nomotd")

    @property
    def nick(self) -> str:
        return self.conn.get_nickname()

    def _keep(self, _conn: Any, event: Any) -> None:
        if event.type != "all_raw_messages":
            self.events.append(event)

    def expect(self, *types: str | Callable[[Any], bool], timeout: float = TIMEOUT) -> Any:
        """The next event (after the cursor) of one of ``types`` (names; a callable
        last filters further); AssertionError with the recent events on timeout."""
        names = [t for t in types if isinstance(t, str)]
        where = types[-1] if callable(types[-1]) else (lambda _e: True)
        deadline = time.monotonic() + timeout
        while True:
            for index in range(self.cursor, len(self.events)):
                event = self.events[index]
                if event.type in names and where(event):
                    self.cursor = index + 1
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [(e.type, e.source, e.target, e.arguments, e.tags)
                        for e in self.events[-12:]]
                raise AssertionError(f"no {names} within {timeout}s; last events {seen}")
            self.reactor.process_once(min(remaining, 0.2))

    def fence(self) -> list[Any]:
        """Every event up to the answer of a PING sent now (nothing else is pending)."""
        token = f"fence{len(self.events)}"
        self.conn.ping(token)
        start = self.cursor
        self.expect("pong", lambda e: e.arguments[-1] == token)
        return self.events[start:self.cursor - 1]

    def close(self) -> None:
        if self.conn.is_connected():
            self.conn.close()


@pytest.fixture
def lib(transcript) -> Iterator[Callable[..., LibClient]]:
    """``lib(server, nick, **options)`` -> a registered ``irc`` library client."""
    made: list[LibClient] = []

    def connect(server: Any, nick: str, **options: Any) -> LibClient:
        client = LibClient(server, nick, transcript, **options)
        made.append(client)
        return client
    yield connect
    for client in made:
        client.close()


def tag(event: Any, key: str) -> str | None:
    """The value of the message tag ``key`` of an ``irc`` library event, or None."""
    for item in event.tags:
        if item["key"] == key:
            return item["value"]
    return None


# -- registration -------------------------------------------------------------------------


def test_the_library_registers_and_reads_a_truthful_isupport(irc_server, lib):
    server = irc_server(limits={"max_nick_bytes": 20})
    alice = lib(server, "alice")
    welcome = next(e for e in alice.events if e.type == "welcome")
    assert welcome.target == "alice"
    features = alice.conn.features  # the library's own reading of 005
    assert features.network == "chatd"
    assert features.chantypes == "#"
    assert dict(features.prefix) == {"@": "o"}
    assert features.casemapping == "ascii"
    assert features.nicklen == 20
    assert {"b", "q"} <= set(features.chanmodes[0]) and set(features.chanmodes[3]) == {"i", "t"}


def test_a_taken_nick_is_433_and_the_library_registers_with_another(irc_server, lib):
    server = irc_server()
    lib(server, "alice")
    second = lib(server, "alice", register=False)
    refused = second.expect("nicknameinuse")
    assert refused.arguments[0] == "alice"
    second.conn.nick("alice2")
    assert second.expect("welcome").target == "alice2"


# -- channels and messages ----------------------------------------------------------------


def test_join_names_privmsg_action_notice_part_between_two_library_clients(irc_server, lib):
    server = irc_server()
    alice, bob = lib(server, "alice"), lib(server, "bob")
    alice.conn.join("#dev")
    alice.expect("endofnames", lambda e: e.arguments[0] == "#dev")
    bob.conn.join("#dev")
    names = bob.expect("namreply", lambda e: e.arguments[1] == "#dev")
    assert set(names.arguments[2].split()) == {"alice", "bob"}
    assert alice.expect("join", lambda e: e.target == "#dev").source.nick == "bob"

    alice.conn.privmsg("#dev", "hello, bob")
    said = bob.expect("pubmsg")
    assert (said.source.nick, said.target, said.arguments) == ("alice", "#dev", ["hello, bob"])
    alice.conn.action("#dev", "waves")
    acted = bob.expect("action")
    assert (acted.source.nick, acted.target, acted.arguments) == ("alice", "#dev", ["waves"])
    bob.conn.privmsg("alice", "psst")
    private = alice.expect("privmsg")
    assert (private.source.nick, private.target, private.arguments) == ("bob", "alice", ["psst"])
    bob.conn.notice("alice", "a notice")
    assert alice.expect("privnotice").arguments == ["a notice"]  # a notice, as sent
    bob.conn.notice("#dev", "a room notice")
    assert alice.expect("pubnotice").arguments == ["a room notice"]

    bob.conn.part(["#dev"], "bye")
    parted = alice.expect("part")
    assert (parted.source.nick, parted.target, parted.arguments) == ("bob", "#dev", ["bye"])
    # alice's own message did not come back to her (no echo-message)
    assert not [e for e in alice.events if e.type == "pubmsg"]


def test_topic_who_whois_list_through_the_library(irc_server, lib):
    server = irc_server()
    alice, bob = lib(server, "alice"), lib(server, "bob")
    for client in (alice, bob):
        client.conn.join("#dev")
        client.expect("endofnames", lambda e: e.arguments[0] == "#dev")
    alice.conn.topic("#dev", "release friday")
    changed = bob.expect("topic")
    assert (changed.source.nick, changed.target, changed.arguments) == (
        "alice", "#dev", ["release friday"])
    bob.conn.topic("#dev")
    assert bob.expect("currenttopic").arguments == ["#dev", "release friday"]

    bob.conn.who("#dev")
    who = [bob.expect("whoreply"), bob.expect("whoreply")]
    assert {e.arguments[4] for e in who} == {"alice", "bob"}
    assert bob.expect("endofwho").arguments[0] == "#dev"

    bob.conn.whois(["alice"])
    user = bob.expect("whoisuser")
    assert user.arguments[0] == "alice"
    assert "#dev" in bob.expect("whoischannels").arguments[1].split()
    bob.expect("endofwhois")

    bob.conn.list()
    bob.expect("liststart")
    listed = bob.expect("list", lambda e: e.arguments[0] == "#dev")
    assert listed.arguments[1:] == ["2", "release friday"]
    bob.expect("listend")


def test_a_long_line_from_nc_reaches_the_library_split_whole_and_in_order(irc_server, lib):
    """512 bytes is IRC's line, not chatd's: a longer line from a netcat user arrives as
    several PRIVMSGs that fit (the transcript checks each), cut between characters,
    nothing lost."""
    server = irc_server(limits={"max_line_bytes": 2048})
    viewer = lib(server, "viewer")
    person = server.client()
    text = "é€😀 " * 150  # 1500 bytes of 2-, 3- and 4-byte characters
    person.send(text.strip())
    pieces = []
    while "".join(pieces) != text.strip():
        pieces.append(viewer.expect("pubmsg", timeout=2).arguments[0])
    assert len(pieces) > 1


# -- errors --------------------------------------------------------------------------------


def test_errors_are_the_numerics_the_library_knows(irc_server, lib):
    server = irc_server()
    alice = lib(server, "alice")
    alice.conn.privmsg("nobody", "hi")
    assert alice.expect("nosuchnick").arguments[0] == "nobody"
    alice.conn.join("nochannel")
    assert alice.expect("nosuchchannel").arguments[0] == "nochannel"
    alice.conn.part(["#dev"])
    assert alice.expect("nosuchchannel", "notonchannel").arguments[0] == "#dev"
    alice.conn.join("#dev")
    alice.expect("endofnames", lambda e: e.arguments[0] == "#dev")
    bob = lib(server, "bob")
    bob.conn.join("#ops")
    bob.expect("endofnames", lambda e: e.arguments[0] == "#ops")  # the room exists now
    alice.conn.part(["#ops"])
    assert alice.expect("notonchannel").arguments[0] == "#ops"
    alice.conn.send_raw("KICK #dev")
    assert alice.expect("needmoreparams").arguments[0] == "KICK"
    alice.conn.send_raw("FROBNICATE now")
    assert alice.expect("unknowncommand").arguments[0] == "FROBNICATE"
    # the library refuses to send over 512 bytes itself: past it, on its own socket
    alice.conn.socket.sendall(b"PRIVMSG #dev :" + b"x" * 600 + b"\r\n")
    assert alice.expect("417").target == "alice"
    assert not [e for e in alice.fence() if e.type == "error"]  # still connected


def test_the_library_refuses_to_send_a_line_over_512_bytes_chatd_never_sees_a_cut(
        irc_server, lib):
    """The other side of 417: the library's own limit; the room gets nothing cut."""
    server = irc_server()
    alice, bob = lib(server, "alice"), lib(server, "bob")
    with pytest.raises(irc_client.MessageTooLong):
        alice.conn.privmsg("#lobby", "y" * 600)
    alice.conn.privmsg("#lobby", "short")
    assert bob.expect("pubmsg").arguments == ["short"]


# -- WeeChat -------------------------------------------------------------------------------


class WeeChat:
    """Debian's ``weechat-headless`` in a throwaway home: commands in through its ``fifo``
    plugin, buffers out through its ``logger`` plugin (flushed at once), connected to
    chatd through a recording relay (the transcript)."""

    def __init__(self, home: Path, address: tuple[str, int], nick: str) -> None:
        self.home, self.nick = home, nick
        self.fifo = home / "fifo"
        setup = ";".join([
            "/set logger.file.flush_delay 0",
            f"/set fifo.file.path {self.fifo}",
            f"/server add chatd {address[0]}/{address[1]}",
            f"/set irc.server.chatd.nicks {nick}",
            f'/set irc.server.chatd.realname "{nick.capitalize()} Realname"',
            # WeeChat's own flood guard queues a line every 2 s: not what is tested here
            "/set irc.server.chatd.anti_flood_prio_high 0",
            "/set irc.server.chatd.anti_flood_prio_low 0",
            "/connect chatd",
        ])
        self.output = (home / "weechat.out").open("w")
        self.proc = subprocess.Popen(
            ["weechat-headless", "--dir", str(home), "--run-command", setup, "--stdout"],
            stdin=subprocess.DEVNULL, stdout=self.output, stderr=subprocess.STDOUT)

    def log(self, buffer: str) -> str:
        """The logger's file of ``buffer`` (``#lobby``, a nick, ``server``), or ''."""
        name = "irc.server.chatd" if buffer == "server" else f"irc.chatd.{buffer}"
        path = self.home / "logs" / f"{name}.weechatlog"
        return path.read_text(errors="replace") if path.exists() else ""

    def sees(self, buffer: str, pattern: str, timeout: float = TIMEOUT) -> None:
        """A line matching ``pattern`` is written to ``buffer``'s log."""
        regex = re.compile(pattern, re.MULTILINE)
        if not wait_until(lambda: regex.search(self.log(buffer)) is not None, timeout):
            raise AssertionError(f"WeeChat's {buffer} never showed {pattern!r}:\n"
                                 f"{self.log(buffer)[-2000:]}\n{self.log('server')[-2000:]}")

    def command(self, text: str, buffer: str = "irc.chatd.#lobby") -> None:
        """Type ``text`` into ``buffer`` (through the fifo: ``buffer *text``)."""
        fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)  # no reader: ENXIO, no hang
        try:
            os.write(fd, f"{buffer} *{text}\n".encode())
        finally:
            os.close(fd)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.output.close()


@pytest.fixture
def weechat(tmp_path, transcript) -> Iterator[Callable[..., WeeChat]]:
    """``weechat(server, nick)`` -> a WeeChat connected to the server's irc listener."""
    if shutil.which("weechat-headless") is None:
        skip_unless_ci("weechat-headless (Debian's weechat-headless) is not installed")
    started: list[WeeChat] = []

    def start(server: Any, nick: str) -> WeeChat:
        relay = transcript.relay((server.host, server.ports[1]))
        home = tmp_path / f"weechat-{nick}"
        home.mkdir()
        client = WeeChat(home, relay.address, nick)
        started.append(client)
        return client
    yield start
    for client in started:
        client.close()


def test_weechat_nc_and_a_jsonl_bot_talk_in_lobby(irc_server, weechat):
    server = irc_server()
    person = server.client()
    bot = server.json_client(listener=2)
    wee = weechat(server, "weeuser")
    person.expect(r"^\*\*\* weeuser joined #lobby$")
    # extended-join: WeeChat shows the real name it registered with (USER), kept by chatd
    wee.sees("#lobby", r"\tweeuser \(Weeuser Realname\) \(\S+\) has joined #lobby$")
    wee.sees("server", r"client capability, enabled: .*server-time")

    person.send("hello from nc")
    wee.sees("#lobby", rf"^\S+ \S+\t{person.nick}\thello from nc$")
    bot.send(cmd="say", text="hello from a bot")
    wee.sees("#lobby", rf"^\S+ \S+\t{bot.nick}\thello from a bot$")

    wee.command("hi from weechat")
    person.expect(r"^<weeuser> hi from weechat$")
    said = bot.expect(**{"type": "message", "from": "weeuser"})
    assert (said["from"], said["room"], said["text"]) == ("weeuser", "#lobby", "hi from weechat")
    wee.command("/me waves")
    person.expect(r"^\* weeuser waves$")
    acted = bot.expect(type="action")
    assert (acted["from"], acted["text"]) == ("weeuser", "waves")

    person.send("/msg weeuser a private word")
    wee.sees(person.nick, rf"^\S+ \S+\t{person.nick}\ta private word$")
    wee.command(f"/msg {person.nick} a private answer")
    person.expect(r"a private answer$")

    wee.command("/topic a topic from weechat")
    person.expect(r"weeuser .*a topic from weechat")
    person.send("/join #dev")
    person.expect(r"#dev")
    wee.command("/join #dev")
    wee.sees("#dev", r"\tweeuser \(Weeuser Realname\) \(\S+\) has joined #dev$")
    person.send("/nick ncperson")  # WeeChat shows it where it knows the nick: #dev's names
    wee.sees("#dev", rf"\t{person.nick} is now known as ncperson$")

    wee.command("/quit see you")
    person.expect(r"^\*\*\* weeuser quit \(Quit: see you\)$")
    quit = bot.expect(type="quit")
    assert "weeuser" in quit.values(), quit


# -- moderation: modes, kick, invite -----------------------------------------------------


def founded_room(server: Any, lib: Callable[..., LibClient]) -> tuple[LibClient, ...]:
    """alice founds the registered room #dev (REGISTER as raw commands, as irssi and
    WeeChat send an unknown /register); bob (registered) and carol are in it too."""
    alice, bob, carol = lib(server, "alice"), lib(server, "bob"), lib(server, "carol")
    alice.conn.send_raw("REGISTER alice-secret-1")
    bob.conn.send_raw("REGISTER bob-secret-22")
    for client in (alice, bob):
        client.expect("privnotice", lambda e: "you are identified" in e.arguments[0])
    for client in (alice, bob, carol):
        client.conn.join("#dev")
        client.expect("endofnames", lambda e: e.arguments[0] == "#dev")
    alice.conn.send_raw("REGISTER #dev")
    alice.expect("pubnotice", lambda e: "founder is alice" in e.arguments[0])
    return alice, bob, carol


def test_modes_o_b_q_i_t_through_the_library_and_what_they_do(irc_server, lib):
    server = irc_server()
    alice, bob, carol = founded_room(server, lib)
    carol.conn.mode("#dev", "+t")
    assert carol.expect("chanoprivsneeded").arguments[0] == "#dev"
    alice.conn.mode("#dev", "+o bob")
    alice.conn.mode("#dev", "+tib *!*@evil.example")
    bob.conn.mode("#dev", "+q carol!*@*")  # bob is an operator now
    bob.fence()
    alice.conn.mode("#dev", "")
    assert alice.expect("channelmodeis").arguments == ["#dev", "+it"]
    alice.conn.mode("#dev", "b")
    assert alice.expect("banlist").arguments == ["#dev", "*!*@evil.example"]
    assert alice.expect("728").arguments == ["#dev", "q", "carol!*@*"]
    alice.expect("729")
    carol.conn.send_raw("NAMES #dev")
    names = carol.expect("namreply", lambda e: e.arguments[1] == "#dev").arguments[2]
    assert set(names.split()) == {"@alice", "@bob", "carol"}

    carol.conn.privmsg("#dev", "can I speak?")  # muted (+q): 404, nobody hears it
    assert carol.expect("cannotsendtochan").arguments[0] == "#dev"
    carol.conn.topic("#dev", "mine now")  # +t: operators only
    assert carol.expect("chanoprivsneeded").arguments[0] == "#dev"
    assert not [e for e in alice.fence() if e.type in ("pubmsg", "topic")]


def test_kick_and_invite_only_through_the_library(irc_server, lib):
    server = irc_server()
    alice, bob, carol = founded_room(server, lib)
    alice.conn.mode("#dev", "+i")
    alice.conn.kick("#dev", "carol", "out")
    left = bob.expect("part", "kick", lambda e: e.target == "#dev")
    assert left.source.nick == "carol" or left.arguments[0] == "carol"
    carol.conn.join("#dev")
    assert carol.expect("inviteonlychan").arguments[0] == "#dev"
    alice.conn.invite("carol", "#dev")
    alice.expect("pubnotice", lambda e: "invited carol" in e.arguments[0])
    carol.conn.join("#dev")
    assert bob.expect("join", lambda e: e.source.nick == "carol").target == "#dev"


def test_a_mode_change_reaches_the_members_as_mode(irc_server, lib):
    server = irc_server()
    alice, _bob, carol = founded_room(server, lib)
    alice.conn.mode("#dev", "+o bob")
    changed = carol.expect("mode", timeout=2)
    assert (changed.source.nick, changed.target, changed.arguments) == (
        "alice", "#dev", ["+o", "bob"])


def test_a_kick_reaches_the_members_as_kick(irc_server, lib):
    server = irc_server()
    alice, bob, carol = founded_room(server, lib)
    alice.conn.kick("#dev", "carol", "out")
    kicked = bob.expect("kick", timeout=2)
    assert (kicked.source.nick, kicked.target, kicked.arguments) == (
        "alice", "#dev", ["carol", "out"])
    assert carol.expect("kick", timeout=2).arguments == ["carol", "out"]


def test_the_invited_gets_invite(irc_server, lib):
    server = irc_server()
    alice, _bob, carol = founded_room(server, lib)
    carol.conn.part(["#dev"])
    alice.conn.invite("carol", "#dev")
    assert alice.expect("inviting", timeout=2).arguments == ["carol", "#dev"]
    invited = carol.expect("invite", timeout=2)
    assert (invited.source.nick, invited.target, invited.arguments) == (
        "alice", "carol", ["#dev"])


# -- IRCv3 capabilities, one observation each ---------------------------------------------

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def a_message_seen_by(server: Any, lib: Callable[..., LibClient], caps: tuple[str, ...]) -> Any:
    """The ``pubmsg`` event a client with ``caps`` gets from alice in #lobby."""
    viewer = lib(server, "viewer", caps=caps)
    alice = lib(server, "alice")
    alice.conn.privmsg("#lobby", "tagged?")
    return viewer.expect("pubmsg")


def test_without_capabilities_a_message_has_no_tags(irc_server, lib):
    assert a_message_seen_by(irc_server(), lib, ()).tags == []


def test_server_time_tags_each_message_with_its_time_in_utc_ms(irc_server, lib):
    said = a_message_seen_by(irc_server(), lib, ("server-time",))
    assert ISO_MS.fullmatch(tag(said, "time") or ""), said.tags


def test_message_tags_gives_each_message_its_own_msgid(irc_server, lib):
    server = irc_server()
    viewer = lib(server, "viewer", caps=("message-tags",))
    alice = lib(server, "alice")
    alice.conn.privmsg("#lobby", "one")
    alice.conn.privmsg("#lobby", "two")
    ids = [tag(viewer.expect("pubmsg"), "msgid") for _ in range(2)]
    assert all(ids) and ids[0] != ids[1], ids


def test_account_tag_names_an_identified_senders_account_only(irc_server, lib):
    server = irc_server()
    viewer = lib(server, "viewer", caps=("account-tag",))
    alice, bob = lib(server, "alice"), lib(server, "bob")
    alice.conn.send_raw("REGISTER alice-secret-1")
    alice.expect("privnotice", lambda e: "you are identified" in e.arguments[0])
    alice.conn.privmsg("#lobby", "from an account")
    assert tag(viewer.expect("pubmsg"), "account") == "alice"
    bob.conn.privmsg("#lobby", "from nobody in particular")
    assert tag(viewer.expect("pubmsg"), "account") is None


def test_extended_join_says_account_or_star(irc_server, lib):
    server = irc_server()
    viewer = lib(server, "viewer", caps=("extended-join",))
    alice = lib(server, "alice")
    alice.conn.send_raw("REGISTER alice-secret-1")
    alice.expect("privnotice", lambda e: "you are identified" in e.arguments[0])
    viewer.conn.join("#dev")
    viewer.expect("endofnames", lambda e: e.arguments[0] == "#dev")
    alice.conn.join("#dev")
    lib(server, "bob").conn.join("#dev")
    joined = viewer.expect("join", lambda e: e.source.nick == "alice" and e.target == "#dev")
    assert joined.arguments[0] == "alice"
    joined = viewer.expect("join", lambda e: e.source.nick == "bob" and e.target == "#dev")
    assert joined.arguments[0] == "*"


@pytest.mark.parametrize(("caps", "entry"), [
    ((), r"@?alice"),
    (("multi-prefix",), r"@?alice"),
    (("userhost-in-names",), r"alice!alice@\S+"),
])
def test_names_entries_follow_multi_prefix_and_userhost_in_names(irc_server, lib, caps, entry):
    server = irc_server()
    viewer = lib(server, "viewer", caps=caps)
    viewer.expect("endofnames", lambda e: e.arguments[0] == "#lobby")  # its own join's
    lib(server, "alice")
    viewer.expect("join", lambda e: e.source.nick == "alice")
    viewer.conn.names(["#lobby"])
    names = viewer.expect("namreply", lambda e: e.arguments[1] == "#lobby").arguments[2]
    assert any(re.fullmatch(entry, name) for name in names.split()), names
    if "userhost-in-names" not in caps:
        assert "!" not in names


def test_cap_list_says_what_was_acknowledged_and_an_unknown_cap_is_nak(irc_server, lib):
    server = irc_server()
    viewer = lib(server, "viewer", caps=("server-time", "multi-prefix"))
    viewer.conn.cap("LIST")
    listed = viewer.expect("cap", lambda e: e.arguments[0] == "LIST")
    assert set(listed.arguments[1].split()) == {"cap-notify", "server-time", "multi-prefix"}
    viewer.conn.cap("REQ", "server-time", "no-such-cap")
    refused = viewer.expect("cap", lambda e: e.arguments[0] in ("ACK", "NAK"))
    assert refused.arguments[0] == "NAK"


def test_setname_changes_the_real_name_and_fails_a_bad_one(irc_server, lib):
    viewer = lib(irc_server(), "viewer", caps=("setname",))
    viewer.conn.send_raw("SETNAME :A New Name")
    changed = viewer.expect("setname")
    assert (changed.source.nick, changed.target) == ("viewer", "A New Name")
    viewer.conn.send_raw("SETNAME :\x02bold\x02")
    failed = viewer.expect("fail")
    assert (failed.target, failed.arguments[0]) == ("SETNAME", "INVALID_REALNAME")


def test_echo_message_returns_the_senders_own_messages(irc_server, lib):
    server = irc_server()
    alice = lib(server, "alice", caps=("echo-message",))
    lib(server, "bob")
    alice.conn.privmsg("#lobby", "echo me")
    assert alice.expect("pubmsg", timeout=2).arguments == ["echo me"]
    alice.conn.privmsg("bob", "and this")
    assert alice.expect("privmsg", timeout=2).arguments == ["and this"]


def test_away_notify_tells_co_members(irc_server, lib):
    server = irc_server()
    viewer = lib(server, "viewer", caps=("away-notify",))
    alice = lib(server, "alice")
    alice.conn.send_raw("AWAY :lunch")
    away = viewer.expect("away", timeout=2)
    # The library takes a command's first parameter as its target: AWAY's message.
    assert (away.source.nick, away.target) == ("alice", "lunch")


def test_sasl_plain_logs_the_library_in_as_a_registered_nick(irc_server, lib):
    server = irc_server()
    alice = lib(server, "alice")
    alice.conn.send_raw("REGISTER alice-secret-1")
    alice.expect("privnotice", lambda e: "you are identified" in e.arguments[0])
    alice.conn.quit("bye")
    alice.expect("disconnect")  # the nick is free again before it is asked for
    again = lib(server, "alice", password="alice-secret-1", sasl=True, register=False)
    # The library names 900 "loggedin" and 903 "saslsuccess".
    assert again.expect("loggedin", "saslsuccess", "login_failed", timeout=2).type in (
        "loggedin", "saslsuccess")
    again.expect("welcome")
    assert any(e.type == "loggedin" for e in again.events)


# -- the transcript checker itself ---------------------------------------------------------


def test_the_transcript_check_passes_valid_irc_with_tags():
    data = (b"@time=2026-01-01T00:00:00.000Z;msgid=1 :a!b@c PRIVMSG #x :hi\r\n"
            b":chatd.local 001 alice :Welcome\r\n")
    assert [m.command for m in strict_lines(data)] == ["PRIVMSG", "001"]


@pytest.mark.parametrize(("data", "why"), [
    (b":s 001 a :hi\n", "CR LF"),
    (b":s 001 a :hi\r\n:s 002 a :cut", "unterminated"),
    (b":s 001 a :\xff\xfe\r\n", "UTF-8"),
    (b":s PRIVMSG #x :" + b"y" * 500 + b"\r\n", "over 512"),
    (b":s 0001 a :four digits\r\n", "0001"),
    (b"@=x :s PING y\r\n", "not a tag key"),
    (b":s  PING x\r\n", "two spaces"),
    (b":s PRIVMSG #x :nul\x00inside\r\n", "line 1"),
    (b":s PRIVMSG #x :a\rb\r\n", "line 1"),
])
def test_the_transcript_check_refuses_what_is_not_irc(data, why):
    with pytest.raises(AssertionError, match=re.escape(why)):
        strict_lines(data)


def test_a_relay_keeps_what_the_server_sent_and_passes_both_ways():
    upstream = socket.create_server(("127.0.0.1", 0))
    transcript = Transcript()
    relay = transcript.relay(upstream.getsockname())
    with socket.create_connection(relay.address, timeout=TIMEOUT) as client:
        server, _ = upstream.accept()
        server.settimeout(TIMEOUT)
        client.sendall(b"NICK a\r\n")
        assert server.recv(100) == b"NICK a\r\n"
        server.sendall(b":s 001 a :hi\r\n")
        assert client.recv(100) == b":s 001 a :hi\r\n"
        server.close()
        assert client.recv(100) == b""  # the relay passes the close on
    assert transcript.check() == 1
    upstream.close()


def test_the_join_of_lobby_at_registration_names_its_members(irc_server, lib):
    server = irc_server()
    lib(server, "alice")
    bob = lib(server, "bob")
    bob.expect("join", lambda e: e.target == "#lobby")
    names = bob.expect("namreply", timeout=2)
    assert names.arguments[1] == "#lobby" and set(names.arguments[2].split()) == {
        "alice", "bob"}
