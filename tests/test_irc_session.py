"""Issue 20, the IRC session layer: registration, capabilities, keepalive, limits.

Real chatd processes with an ``irc`` listener, driven by a raw-socket IRC client
that parses every line chatd sends with the strict wire parser (tags, source,
command, parameters, 512-byte body, CRLF); plus in-process tests of the chat
domain's ``nick_required`` seam (the local backend, and one that answers later)
and of the sans-IO parts (``caps``, ``registration``).

The renderer and the command mapping have tests of their own
(tests/test_irc_render.py, tests/test_irc_commands.py); these assert what the
session layer owns (registration numerics, CAP, PING, 417/451/462/464, ERROR
before closing) and that the three meet: one chat with a line client.
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Any

import pytest
import trustme

from chatd import hookimpl
from chatd.config import LimitsConfig
from chatd.protocols import ProtocolLimits
from chatd.protocols.irc import IrcProtocol, caps
from chatd.protocols.irc.protocol import AWAYLEN, CHANNELLEN, KICKLEN, TOPICLEN, isupport
from chatd.protocols.irc.registration import MESSAGES_MAX, IrcState, Registration
from chatd.protocols.irc.wire import BODY_MAX, Message, parse
from chatd.requests import SessionRequest
from chatd.testing import InProcessChat
from chatd.testing.backends import DeferredBackend
from chatd.testing.inprocess import MemoryTransport

TIMEOUT = 5.0


# -- a strict raw-socket IRC client ----------------------------------------------------------


class IrcClient:
    """Lines in with CRLF; every line chatd sends parsed with ``wire.parse(strict=True)``."""

    def __init__(self, address: tuple[str, int], tls: ssl.SSLContext | None = None) -> None:
        self.sock = socket.create_connection(address, timeout=TIMEOUT)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname="localhost")
        self.buffer = bytearray()
        self.eof = False
        self.seen: list[Message] = []

    def send(self, *lines: str) -> None:
        self.sock.sendall(b"".join(line.encode() + b"\r\n" for line in lines))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, timeout: float = TIMEOUT) -> Message | None:
        """The next message, strictly parsed; None at end of stream."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no line within {timeout}s; seen {self.seen[-5:]}"
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
                assert not self.buffer, f"an unterminated line before EOF: {self.buffer!r}"
                return None
            self.buffer += data
        raw, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        assert raw.endswith(b"\r"), f"not CRLF-terminated: {raw!r}"
        line = raw[:-1].decode("utf-8")
        message = parse(line, strict=True)
        body = line.partition(" ")[2] if line.startswith("@") else line
        assert len(body.encode()) + 2 <= BODY_MAX, f"body over 512 bytes: {line!r}"
        self.seen.append(message)
        return message

    def expect(self, command: str, timeout: float = TIMEOUT) -> Message:
        """Read until a message with ``command``; return it."""
        while True:
            message = self.recv(timeout)
            assert message is not None, f"EOF while waiting for {command}; seen {self.seen[-8:]}"
            if message.command == command:
                return message

    def until(self, *commands: str) -> list[Message]:
        """Every message up to and including the first of ``commands``."""
        out = []
        while True:
            message = self.recv()
            assert message is not None, f"EOF while waiting for {commands}; seen {self.seen[-8:]}"
            out.append(message)
            if message.command in commands:
                return out

    def expect_eof(self) -> list[Message]:
        out = []
        while (message := self.recv()) is not None:
            out.append(message)
        return out

    def expect_nothing(self) -> None:
        """No reply (numeric, FAIL, ERROR, CAP) comes before the answer to a PING sent now:
        chat lines may (the renderer's, not this layer's)."""
        self.send("PING :fence")
        before = self.until("PONG")
        assert before[-1].params[-1] == "fence", before
        replies = [m for m in before[:-1] if m.command.isdigit()
                   or m.command in ("FAIL", "ERROR", "CAP")]
        assert not replies, replies

    def register(self, nick: str, *before: str) -> list[Message]:
        self.send(*before, f"NICK {nick}", f"USER {nick} 0 * :{nick} Realname")
        burst = self.until("376", "422")  # the end of the MOTD, or of none
        return burst + self.until("366")  # the names of the room it is put in (#lobby)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def irc_server(chatd_server):
    """``irc_server(**irc_options, limits=..., ...)`` -> (server, address of its irc port)."""
    def start(limits: dict[str, Any] | None = None, **options: Any) -> Any:
        server = chatd_server(
            listen=[{"port": 0}, {"port": 0, "protocol": "irc", **options}],
            **({"limits": limits} if limits else {}))
        return server, (server.host, server.ports[1])
    return start


def numerics(messages: list[Message]) -> list[str]:
    return [m.command for m in messages]


# -- registration ----------------------------------------------------------------------------


def test_registration_with_cap_302_waits_for_cap_end_then_welcomes(irc_server):
    _, address = irc_server(network="TestNet", motd="line one\nline two")
    irc = IrcClient(address)
    irc.send("CAP LS 302", "NICK alice", "USER al 0 * :Alice Liddell")
    ls = irc.expect("CAP")
    assert ls.params[:2] == ("*", "LS") and "server-time" in ls.params[-1].split()
    assert "sasl=PLAIN" in ls.params[-1].split()  # SASL PLAIN: tests/test_irc_seams.py
    irc.send("CAP REQ :server-time echo-message")
    ack = irc.expect("CAP")
    assert ack.params == ("*", "ACK", "server-time echo-message")
    irc.expect_nothing()  # registration waits for CAP END
    assert "001" not in numerics(irc.seen)
    irc.send("CAP END")
    burst = irc.until("376")
    assert numerics(burst)[:4] == ["001", "002", "003", "004"]
    welcome = burst[0]
    assert welcome.source == "chatd.local" and welcome.params[0] == "alice"
    assert welcome.params[1].startswith("Welcome to the TestNet IRC network, alice!al@")
    tokens = [t for m in burst if m.command == "005" for t in m.params[1:-1]]
    assert {"CASEMAPPING=ascii", "CHANTYPES=#", "NICKLEN=32", "NETWORK=TestNet",
            "UTF8ONLY", "PREFIX=(o)@"} <= set(tokens)
    assert [m.params[-1] for m in burst if m.command == "372"] == ["- line one", "- line two"]
    irc.send("CAP LIST")
    listed = irc.expect("CAP")
    assert listed.params[:2] == ("alice", "LIST")
    assert set(listed.params[-1].split()) == {"cap-notify", "server-time", "echo-message"}


def test_registration_without_cap_and_without_motd(irc_server):
    _, address = irc_server()
    irc = IrcClient(address)
    irc.send("NICK bob", "USER bob 0 * :Bob")
    burst = irc.until("422")
    assert numerics(burst) == ["001", "002", "003", "004", "005", "005", "422"]


def test_a_taken_nick_is_433_and_registration_goes_on(irc_server):
    server, address = irc_server()
    person = server.client()
    person.send("/nick alice")
    person.expect("alice")
    irc = IrcClient(address)
    irc.send("NICK Alice", "USER a 0 * :A")
    refused = irc.expect("433")
    assert refused.params[:2] == ("*", "Alice")
    irc.send("JOIN #lobby")
    assert irc.expect("451").params[0] == "*"  # still not registered
    irc.send("NICK alice2")
    assert irc.expect("001").params[0] == "alice2"
    person.expect_line("*** alice2 joined #lobby")  # the refused attempt: never anyone


def test_an_invalid_or_reserved_nick_is_432(irc_server):
    _, address = irc_server()
    irc = IrcClient(address)
    irc.send("USER x 0 * :X", "NICK 9lives")
    assert irc.expect("432").params[:2] == ("*", "9lives")
    irc.send("NICK NickServ")
    assert irc.expect("432").params[:2] == ("*", "NickServ")
    irc.send("NICK fine")
    assert irc.expect("001").params[0] == "fine"


def test_451_before_registration_and_462_after(irc_server):
    _, address = irc_server()
    irc = IrcClient(address)
    irc.send("PRIVMSG #lobby :hi")
    assert irc.expect("451").params == ("*", "You have not registered")
    irc.send("USER")
    assert irc.expect("461").params[:2] == ("*", "USER")
    irc.register("carol")
    irc.send("USER carol 0 * :again", "PASS secret")
    assert irc.expect("462").params[0] == "carol"
    assert irc.expect("462").params[0] == "carol"


def test_ping_is_answered_before_and_after_registration(irc_server):
    _, address = irc_server()
    irc = IrcClient(address)
    irc.send("PING :before")
    pong = irc.expect("PONG")
    assert pong.params == ("chatd.local", "before")
    irc.register("dave")
    irc.send("PING :after token")
    assert irc.expect("PONG").params == ("chatd.local", "after token")


def test_the_server_pings_a_quiet_client_and_closes_one_that_never_answers(irc_server):
    _, address = irc_server(ping_seconds=0.3, ping_timeout_seconds=0.3)
    irc = IrcClient(address)
    irc.register("erin")
    ping = irc.expect("PING")
    assert ping.params == ("chatd.local",)
    irc.send("PONG :chatd.local")
    assert irc.expect("PING").params == ("chatd.local",)  # alive: asked again later
    rest = irc.expect_eof()  # no answer this time
    assert rest[-1].command == "ERROR", rest
    assert rest[-1].params[0].startswith("Closing link: Ping timeout")


def test_an_overlong_line_is_417_and_not_cut(irc_server):
    _, address = irc_server()
    irc = IrcClient(address)
    irc.send("NICK " + "x" * 600)
    assert irc.expect("417").params[0] == "*"
    irc.register("frank")
    irc.send("PRIVMSG #lobby :" + "y" * 494)  # 510 bytes: the most a line may have
    irc.expect_nothing()
    irc.send("PRIVMSG #lobby :" + "y" * 495)  # 511: one too many
    assert irc.expect("417").params == ("frank", "Input line was too long")
    irc.send("@+draft/x=" + "z" * 4000 + " PING :tagged")  # tags beside the 512
    assert irc.expect("PONG").params[-1] == "tagged"
    irc.send("@+x=" + "z" * 9000 + " PING :tagged")  # more tags than allowed
    assert irc.expect("417").params[0] == "frank"
    irc.expect_nothing()


def test_a_line_that_is_not_utf8_is_refused_not_repaired(irc_server):
    _, address = irc_server()
    irc = IrcClient(address)
    irc.register("gina")
    irc.send_raw(b"PRIVMSG #lobby :caf\xe9\r\n")
    fail = irc.expect("FAIL")
    assert fail.params[:2] == ("*", "INVALID_UTF8")


def test_a_malformed_line_is_400(irc_server):
    _, address = irc_server()
    irc = IrcClient(address)
    irc.register("hank")
    irc.send(":onlyasource")
    assert irc.expect("400").params[:2] == ("hank", "*")


def test_quit_before_registration_says_error_and_closes(irc_server):
    _, address = irc_server()
    irc = IrcClient(address)
    irc.send("NICK ivy", "QUIT :changed my mind")
    rest = irc.expect_eof()
    assert rest[-1].command == "ERROR" and "changed my mind" in rest[-1].params[0]
    assert "001" not in numerics(rest)


def test_quit_after_registration_and_a_limit_of_the_server_end_with_error(irc_server):
    _, address = irc_server(limits={"idle_timeout_seconds": 0.5})
    irc = IrcClient(address)
    irc.register("ivan")
    irc.send("QUIT :see you")
    rest = irc.expect_eof()
    assert rest[-1].command == "ERROR" and rest[-1].params[0].startswith("Closing link:"), rest
    idle = IrcClient(address)
    idle.register("jill")
    rest = idle.expect_eof()  # says nothing for longer than idle_timeout_seconds
    assert rest[-1].command == "ERROR" and "idle" in rest[-1].params[0], rest


def test_a_registration_flood_is_closed_with_an_error(irc_server):
    _, address = irc_server()
    irc = IrcClient(address)
    irc.send("USER u 0 * :U", *[f"NICK 9bad{i}" for i in range(MESSAGES_MAX - 1)])  # 432s
    irc.send("NICK fine")  # one past the limit: closed, never registered
    rest = irc.expect_eof()
    assert numerics(rest).count("432") == MESSAGES_MAX - 1
    assert rest[-1].command == "ERROR" and "before registration" in rest[-1].params[0]
    assert "001" not in numerics(rest)


def test_registration_times_out_with_an_error(irc_server):
    _, address = irc_server(limits={"registration_timeout_seconds": 0.5})
    irc = IrcClient(address)
    irc.send("NICK jack")  # never USER
    rest = irc.expect_eof()
    assert rest[-1].command == "ERROR"
    assert rest[-1].params == ("Closing link: registration timed out",)


def test_the_listener_password_is_pass(irc_server):
    _, address = irc_server(password="sesame")
    irc = IrcClient(address)
    irc.send("NICK kim", "USER kim 0 * :Kim")  # no PASS
    rest = irc.expect_eof()
    assert numerics(rest)[-2:] == ["464", "ERROR"], rest
    irc = IrcClient(address)
    irc.send("PASS wrong", "NICK kim", "USER kim 0 * :Kim")
    assert numerics(irc.expect_eof())[-2:] == ["464", "ERROR"]
    irc = IrcClient(address)
    irc.register("kim", "PASS sesame")
    assert irc.seen[0].command == "001"


def test_cap_req_is_all_or_nothing_and_unknown_subcommands_410(irc_server):
    _, address = irc_server()
    irc = IrcClient(address)
    irc.send("CAP LS")
    ls = irc.expect("CAP")
    assert ls.params[:2] == ("*", "LS") and len(ls.params) == 3  # 3.1: one line, no "*"
    irc.send("CAP REQ :server-time no-such-cap")
    assert irc.expect("CAP").params == ("*", "NAK", "server-time no-such-cap")
    irc.send("CAP LIST")
    assert irc.expect("CAP").params == ("*", "LIST", "")
    irc.send("CAP FROB")
    assert irc.expect("410").params[:2] == ("*", "FROB")
    irc.send("CAP END")
    irc.register("leo")


def test_every_limit_closes_with_an_irc_error(irc_server):
    _, address = irc_server(limits={"max_clients": 1})
    first = IrcClient(address)
    first.register("mia")
    second = IrcClient(address)  # refused at the door, in IRC's words
    rest = second.expect_eof()
    assert [m.command for m in rest] == ["ERROR"], rest
    first.send_raw(b"PRIVMSG #lobby :" + b"x" * 200_000)  # an endless line
    rest = first.expect_eof()
    assert rest[-1].command == "ERROR", rest


def test_another_protocols_greeting_is_refused_in_irc_words(irc_server):
    _, address = irc_server()
    web = IrcClient(address)
    web.send("GET / HTTP/1.1", "Host: x", "")
    said = web.expect_eof()
    assert [m.command for m in said] == ["ERROR"] and "not an HTTP server" in said[0].params[0]


def test_registration_over_tls(chatd_server, tmp_path):
    authority = trustme.CA()
    pem = tmp_path / "server.pem"
    authority.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(pem))
    server = chatd_server(listen=[{"port": 0}, {"port": 0, "protocol": "irc",
                                                "tls": {"cert": str(pem), "key": str(pem)}}])
    context = ssl.create_default_context()
    authority.configure_trust(context)
    irc = IrcClient((server.host, server.ports[1]), tls=context)
    irc.send("CAP LS 302", "CAP END")
    assert irc.register("olga")[0].command == "CAP"
    assert "001" in numerics(irc.seen)


def test_line_clients_share_the_server_with_irc_clients(irc_server):
    server, address = irc_server()
    person = server.client()
    person.send("/nick penny")
    person.expect(r"penny")
    irc = IrcClient(address)
    irc.register("ned")
    irc.send("PRIVMSG #lobby :hello from irc")
    person.expect(r"^<ned> hello from irc$")
    person.send("hello from nc")
    said = irc.expect("PRIVMSG")
    while said.params != ("#lobby", "hello from nc"):
        said = irc.expect("PRIVMSG")
    assert said.source.startswith("penny!")
    person.send("/me waves")
    acted = irc.expect("PRIVMSG")
    assert acted.params == ("#lobby", "\x01ACTION waves\x01")
    irc.send("PRIVMSG #lobby :\x01ACTION waves back\x01")
    person.expect(r"^\* ned waves back$")


# -- the nick_required seam, in process -------------------------------------------------------


class _Door:
    """A listener's door for a protocol made by hand: begins sessions in ``chat``."""

    config = None
    password_required = False
    greeting_delay = 0.0
    server_limits = LimitsConfig()

    def __init__(self, chat: InProcessChat) -> None:
        self.chat = chat
        self.limits = IrcProtocol.input_limits(ProtocolLimits(), {})

    def begin(self, protocol: Any, request: SessionRequest) -> Any:
        return self.chat.domain.connect(protocol, request)

    def call_later(self, delay: float, callback: Any) -> object:
        return self.chat.reactor.call_later(delay, callback)


class _Hooks:
    """Records which clients the connect hooks heard of."""

    def __init__(self) -> None:
        self.connected: list[str] = []
        self.disconnected: list[str] = []

    @hookimpl
    def chatd_client_connect(self, client: Any) -> None:
        self.connected.append(client.nick)

    @hookimpl
    def chatd_client_disconnect(self, client: Any) -> None:
        self.disconnected.append(client.nick)


def _irc_peer(chat: InProcessChat) -> tuple[IrcProtocol, MemoryTransport]:
    transport = MemoryTransport(("127.0.0.1", 40000 + len(chat.domain.clients)))
    proto = IrcProtocol(transport, _Door(chat))  # type: ignore[arg-type]
    proto.connection_made()
    return proto, transport


def _said(transport: MemoryTransport) -> list[Message]:
    return [parse(line, strict=True) for line in
            bytes(transport.output).decode().split("\r\n") if line]


@pytest.mark.parametrize("deferred", [False, True], ids=["answered-at-once", "answered-later"])
def test_a_required_nick_that_is_taken_makes_nobody_and_runs_no_hook(deferred):
    hooks = _Hooks()
    backend = DeferredBackend.factory if deferred else None
    with InProcessChat(hooks, backend=backend) as chat:
        owner = chat.connect(request=SessionRequest(nick="alice"))
        assert owner.nick == "alice"
        hooks.connected.clear()
        before = len(chat.domain.clients)
        proto, transport = _irc_peer(chat)
        proto.data_received(memoryview(b"NICK ALICE\r\nUSER a 0 * :A\r\n"))
        chat.tick()
        chat.tick()
        assert [m.command for m in _said(transport)] == ["433"]
        assert proto.session is None and not proto.registered
        assert hooks.connected == [] and hooks.disconnected == []
        assert len(chat.domain.clients) == before
        assert transport.is_open
        proto.data_received(memoryview(b"NICK alice2\r\n"))
        chat.tick()
        chat.tick()
        assert proto.session is not None and proto.session.nick == "alice2"  # type: ignore[attr-defined]
        assert hooks.connected == ["alice2"]
        said = [m.command for m in _said(transport)]
        assert said[:2] == ["433", "001"], said


def test_a_second_nick_in_the_same_read_as_the_refused_one_registers():
    with InProcessChat() as chat:
        chat.connect(request=SessionRequest(nick="alice"))
        proto, transport = _irc_peer(chat)
        proto.data_received(memoryview(b"NICK alice\r\nUSER a 0 * :A\r\nNICK alice_\r\n"))
        chat.tick()
        said = [m.command for m in _said(transport)]
        assert said[:2] == ["433", "001"], said
        assert proto.session is not None and proto.session.nick == "alice_"  # type: ignore[attr-defined]


def test_a_required_nick_refused_by_a_plugin_keeps_the_plugins_code():
    from chatd.chat.errors import Reject

    class Owner:
        @hookimpl
        def chatd_check_nick(self, client: Any, nick: str) -> Any:
            return Reject("registered to someone", code="nick_registered") \
                if nick == "owned" else None

    with InProcessChat(Owner()) as chat:
        proto, transport = _irc_peer(chat)
        proto.data_received(memoryview(b"NICK owned\r\nUSER o 0 * :O\r\n"))
        chat.tick()
        refused = _said(transport)[0]
        assert (refused.command, refused.params) == ("433", ("*", "owned",
                                                             "registered to someone"))


def test_a_protocol_without_a_handshake_is_told_and_closed_when_its_nick_is_refused():
    hooks = _Hooks()
    with InProcessChat(hooks) as chat:
        chat.connect(request=SessionRequest(nick="alice"))
        refused = chat.connect(request=SessionRequest(nick="alice", nick_required=True))
        assert refused.protocol.session is None
        assert refused.lines() == ["! the nick alice is taken"]
        assert not refused.transport.is_open
        assert hooks.connected == ["alice"]


def test_a_session_without_nick_required_still_falls_back_to_a_guest():
    with InProcessChat() as chat:
        chat.connect(request=SessionRequest(nick="alice"))
        other = chat.connect(request=SessionRequest(nick="alice"))
        assert other.nick.startswith("guest-")


def test_the_renderer_is_one_per_capability_set():
    with InProcessChat() as chat:
        peers = [_irc_peer(chat) for _ in range(3)]
        for i, (proto, _) in enumerate(peers):
            proto.data_received(memoryview(
                f"CAP LS 302\r\nCAP REQ :server-time\r\nNICK p{i}\r\nUSER p 0 * :P\r\n"
                "CAP END\r\n".encode()))
            chat.tick()
        assert len({id(proto.renderer) for proto, _ in peers}) == 1
        first = peers[0][0]
        first.data_received(memoryview(b"CAP REQ :echo-message\r\n"))
        chat.tick()
        assert first.renderer is not peers[1][0].renderer
        assert first.state.caps == {"cap-notify", "server-time", "echo-message"}
        assert IrcProtocol.renderer.name == "irc"  # the class's, for refusals


# -- the sans-IO parts -----------------------------------------------------------------------


def test_cap_request_is_all_or_nothing():
    assert caps.request(caps.NONE, "server-time") == {"server-time"}
    assert caps.request(caps.NONE, "server-time bogus") is None
    assert caps.request(frozenset({"server-time"}), "-server-time") == set()
    assert caps.request(frozenset({"cap-notify"}), "-cap-notify") is None
    assert caps.request(caps.NONE, "") is None
    assert caps.request(caps.NONE, "server-time -server-time") is None


def test_cap_ls_splits_long_lists_on_302():
    pieces = caps.chunks([f"cap{i:03d}" for i in range(200)], budget=100)
    assert all(len(p) <= 100 for p in pieces) and len(pieces) > 1
    assert " ".join(pieces).split() == [f"cap{i:03d}" for i in range(200)]


def test_registration_is_ready_with_nick_user_and_no_open_negotiation():
    state = IrcState("irc.example.org", "Net")
    reg = Registration(state)
    reg.handle(Message("CAP", ("LS", "302")))
    reg.handle(Message("NICK", ("zed",)))
    reg.handle(Message("USER", ("z", "0", "*", "Zed")))
    assert not reg.ready
    reg.handle(Message("CAP", ("END",)))
    assert reg.ready
    refused = reg.refused("nick_in_use", "taken")
    assert (refused.command, refused.params) == ("433", ("*", "zed", "taken"))
    assert not reg.ready


def test_isupport_is_truthful():
    from chatd.builtin.moderation.commands import REASON_MAX
    from chatd.builtin.presence import AWAY_MAX
    from chatd.chat.domain import TOPIC_MAX
    from chatd.chat.rooms import room_problem

    assert (TOPICLEN, AWAYLEN, KICKLEN) == (TOPIC_MAX, AWAY_MAX, REASON_MAX)
    assert room_problem("#" + "a" * (CHANNELLEN - 1)) is None
    assert room_problem("#" + "a" * CHANNELLEN) is not None
    limits = LimitsConfig(max_nick_bytes=20, max_rooms_per_client=7)
    tokens = isupport(limits, "Net")
    assert "NICKLEN=20" in tokens and "CHANLIMIT=#:7" in tokens and "NETWORK=Net" in tokens
    assert "CLIENTTAGDENY=*" in tokens  # TAGMSG relays nothing: no client tag is passed on
