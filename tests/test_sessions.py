"""A session begins when the protocol says so (issue 19, part 1).

In memory, a protocol object with a fake door (its listener's way in): the line and
jsonl rule (the first line, or the greeting delay), other protocols' greetings that
never become a session, the listener password as each protocol reads it, the wished
nick and user name a protocol hands over, and the room rule (line keeps a room,
jsonl may leave every one).  The real-socket tests (probes on every listener of a
real chatd, the password over TCP, the welcome for nc) are in
``tests/test_sessions_real.py``.
"""

from __future__ import annotations

import hmac
import json
import ssl
import time
from collections.abc import Callable
from typing import Any

import pytest

from chatd.admission import Admission, AdmissionRules
from chatd.config import Config, ConfigError, parse_config
from chatd.listeners import Acceptor, password_digest
from chatd.protocols import (
    JsonlProtocol,
    LineProtocol,
    ProtocolLimits,
    ProtocolRegistry,
    SessionRefused,
    listener_password,
)
from chatd.protocols.base import ChatProtocol
from chatd.reactor import Reactor
from chatd.requests import Invoke, SessionRequest
from chatd.stats import Stats
from chatd.testing import InProcessChat
from chatd.testing.inprocess import MemoryTransport
from chatd.transport.connection import OutputAccount

PW = "correct horse"


class Recorder:
    """A session that keeps what it is handed."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def requests_received(self, requests: list[Any]) -> None:
        self.requests.extend(requests)

    def eof_received(self) -> bool:
        return False

    def output_skipped(self, count: int) -> None:
        pass

    def connection_lost(self, reason: str) -> None:
        pass


class FakeDoor:
    """A listener's door with no acceptor: timers kept for the test to fire, sessions
    counted, the password compared plainly (the real door's check is in the
    real-socket tests)."""

    config = None

    def __init__(self, *, delay: float = 0.25, password: str | None = None) -> None:
        self.limits = ProtocolLimits()
        self.greeting_delay = delay
        self.password = password
        self.timers: list[Callable[[], None]] = []
        self.begun: list[SessionRequest] = []

    @property
    def password_required(self) -> bool:
        return self.password is not None

    def call_later(self, delay: float, callback: Callable[[], None]) -> object:
        assert delay == self.greeting_delay
        self.timers.append(callback)
        return object()

    def begin(self, protocol: ChatProtocol, request: SessionRequest) -> Recorder:
        if self.password is not None and request.password != self.password:
            raise SessionRefused("wrong_password", "wrong password")
        self.begun.append(request)
        return Recorder()

    def fire(self) -> None:
        timers, self.timers = self.timers, []
        for callback in timers:
            callback()


def made(cls: type[ChatProtocol] = LineProtocol, **door: Any
         ) -> tuple[ChatProtocol, MemoryTransport, FakeDoor]:
    transport = MemoryTransport(("127.0.0.1", 1))
    fake = FakeDoor(**door)
    proto = cls(transport, fake)  # type: ignore[arg-type]
    return proto, transport, fake


def client_hello() -> bytes:
    """The first bytes a TLS client sends (a real ClientHello)."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


# -- the line and jsonl rule: the first line, or the greeting delay ---------------------------


def test_nothing_begins_before_the_stack_is_ready_then_the_quiet_delay_begins_it():
    proto, transport, door = made()
    assert door.timers == [] and door.begun == []  # accepted, not ready: nobody
    proto.connection_made()
    assert door.begun == [] and proto.session is None  # ready, within the delay: nobody
    door.fire()
    assert door.begun == [SessionRequest()] and proto.session is not None
    assert transport.output == b""  # the door's session says the welcome, not the protocol


def test_with_no_delay_the_session_begins_as_soon_as_the_stack_is_ready():
    proto, _, door = made(delay=0.0)
    proto.connection_made()
    assert door.timers == [] and len(door.begun) == 1


@pytest.mark.parametrize("cls", [LineProtocol, JsonlProtocol])
def test_the_first_line_begins_the_session_and_is_its_first_request(cls):
    proto, _, door = made(cls)
    proto.connection_made()
    first = b'{"cmd":"nick","nick":"alice"}\n' if cls is JsonlProtocol else b"/nick alice\n"
    proto.data_received(memoryview(first))
    assert len(door.begun) == 1 and proto.registered
    assert proto.session.requests == [Invoke("nick", "alice")]  # type: ignore[union-attr]
    door.fire()  # the delay passes later: nothing more
    assert len(door.begun) == 1


@pytest.mark.parametrize("cls", [LineProtocol, JsonlProtocol])
@pytest.mark.parametrize("greeting", [
    b"GET / HTTP/1.1\r\nHost: chat\r\n\r\n", "tls", b"\x00\x01\x02\x03\x04\x05\x80\x81 binary\n",
])
def test_another_protocols_greeting_never_becomes_a_session(cls, greeting):
    proto, transport, door = made(cls)
    proto.connection_made()
    proto.data_received(memoryview(client_hello() if greeting == "tls" else greeting))
    assert not transport.is_open and (transport.limit_hit or "").startswith("foreign_")
    door.fire()  # the delay passes: still nobody
    assert door.begun == [] and proto.session is None


def test_a_connection_that_leaves_before_the_delay_was_never_anyone():
    proto, transport, door = made()
    proto.connection_made()
    transport.close("gone")
    proto.connection_lost("gone")
    door.fire()
    assert door.begun == []


# -- the listener password -------------------------------------------------------------------


def test_line_asks_for_the_password_after_the_delay_and_takes_the_first_line_typed():
    proto, transport, door = made(password="s3cret word")
    proto.connection_made()
    door.fire()
    assert door.begun == []
    assert transport.output == b"*** This server asks for a password: type it and press Enter.\n"
    transport.output.clear()
    proto.data_received(memoryview(b"hello\n"))  # a wrong one: told, still nobody
    assert transport.output == b"! wrong password\n" and door.begun == []
    assert not proto.registered  # a password is no line of a session
    proto.data_received(memoryview(b"s3cret word\nhi all\n"))
    assert door.begun == [SessionRequest(password="s3cret word")]
    assert proto.session.requests == ["hi all"]  # type: ignore[union-attr]
    assert "s3cret" not in repr(door.begun[0])  # never shown, even in a repr


def test_line_takes_a_password_typed_before_the_prompt_and_never_prompts_then():
    proto, transport, door = made(password="pw")
    proto.connection_made()
    proto.data_received(memoryview(b"pw\n"))
    door.fire()
    assert len(door.begun) == 1 and transport.output == b""


def test_jsonl_wants_a_pass_request_first_and_says_so_as_errors():
    proto, transport, door = made(JsonlProtocol, password="pw")
    proto.connection_made()
    door.fire()
    assert transport.output == b""  # no prompt for programs: the docs say it
    proto.data_received(memoryview(b'{"cmd":"say","text":"hi"}\n'))
    proto.data_received(memoryview(b'{"cmd":"pass","password":"nope"}\n'))
    proto.data_received(memoryview(b'{"cmd":"pass","password":7}\n'))
    errors = [json.loads(line) for line in transport.output.decode().splitlines()]
    assert [e["code"] for e in errors] == ["password_required", "wrong_password",
                                           "password_required"]
    assert all(e["type"] == "error" for e in errors) and door.begun == []
    proto.data_received(memoryview(b'{"cmd":"pass","password":"pw"}\n{"cmd":"who"}\n'))
    assert door.begun == [SessionRequest(password="pw")]
    assert proto.session.requests == [Invoke("who", "")]  # type: ignore[union-attr]


def test_a_refusal_that_closes_ends_the_connection_in_the_protocols_words():
    class ClosingDoor(FakeDoor):
        def begin(self, protocol: ChatProtocol, request: SessionRequest) -> Recorder:
            raise SessionRefused("password_limit", "too many", close=True)

    transport = MemoryTransport(("127.0.0.1", 1))
    door = ClosingDoor(password="pw")
    proto = JsonlProtocol(transport, door)  # type: ignore[arg-type]
    proto.connection_made()
    proto.data_received(memoryview(b'{"cmd":"pass","password":"pw"}\n{"cmd":"pass",'
                                   b'"password":"pw"}\n'))
    assert json.loads(transport.output) == {"type": "error", "code": "password_limit",
                                            "text": "too many"}  # once: closed after it
    assert not transport.is_open and transport.limit_hit == "password_limit"


# -- what a session learns from its protocol (in process, with the domain) --------------------


def test_a_wished_nick_and_user_name_are_the_sessions_from_the_start():
    with InProcessChat() as chat:
        watcher = chat.connect()
        alice = chat.connect(request=SessionRequest(nick="alice", user="al"))
        assert alice.nick == "alice" and alice.client.source.ident == "al"
        assert not any("now known as" in line for line in watcher.lines())  # no nick change
        taken = chat.connect("jsonl", request=SessionRequest(nick="Alice"))
        assert taken.nick.startswith("guest-")
        assert taken.objects()[-1]["text"] == f"the nick Alice is taken; you are {taken.nick}"
        bad = chat.connect(request=SessionRequest(nick="no spaces"))
        told = bad.lines()[-1]
        assert told.startswith("*** ") and told.endswith(f"; you are {bad.nick}")
        assert bad.nick.startswith("guest-")


def test_a_user_name_cannot_forge_a_second_field_or_user_at_host():
    """The ident is shown to everyone (/whois, WHO lines, IRC prefixes): what a client
    sends as its user name loses spaces, @ ! : * , controls and invisible characters,
    and is cut; nothing left: the nick is the ident."""
    with InProcessChat() as chat:
        forged = chat.connect(request=SessionRequest(nick="mal", user="a b@evil!x:\x1b[2J\u202e"))
        assert forged.client.source.ident == "abevilx[2J"
        long = chat.connect(request=SessionRequest(nick="long", user="u" * 100))
        assert long.client.source.ident == "u" * 32
        empty = chat.connect(request=SessionRequest(nick="empty", user=" @\u200b "))
        assert empty.client.source.ident == "empty"


def test_a_wished_nick_that_is_registered_is_held_to_the_grace_like_a_rename_to_it():
    """The nick is had quietly (no nick change, so no chatd_nick_change), but whoever
    holds a registered nick without being its account still may not speak as it."""
    with InProcessChat(plugins={"accounts": {"scrypt_n": 1024}}) as chat:
        owner = chat.connect()
        owner.send("/nick alice")
        owner.send("/register correct-horse-1")
        chat.wait_for(lambda: any("registered to you" in line for line in owner.lines()))
        owner.send("/nick owner")
        owner.lines()
        holder = chat.connect(request=SessionRequest(nick="alice"))
        assert holder.nick == "alice"
        assert any(line.startswith("*** alice is registered: /identify PASSWORD within")
                   for line in holder.lines())
        holder.send("hello, I am alice")
        assert holder.lines()[-1].startswith("! alice is registered to someone else")
        assert not any("hello, I am alice" in line for line in owner.lines())
        authenticated = chat.connect(request=SessionRequest(nick="Alice", account="alice"))
        assert authenticated.nick.startswith("guest-")  # taken: the holder has it
        holder.close()
        chat.tick()
        again = chat.connect(request=SessionRequest(nick="alice", account="alice"))
        again.send("the real alice")
        assert "<alice> the real alice" in owner.lines()


def test_an_account_the_protocol_authenticated_is_the_clients_from_the_start():
    with InProcessChat() as chat:
        peer = chat.connect(request=SessionRequest(account="alice"))
        assert peer.client.account == "alice"


# -- rooms: the line protocol keeps one, jsonl may leave every one ----------------------------


def test_line_keeps_a_person_in_a_room_and_jsonl_may_part_every_room():
    with InProcessChat() as chat:
        person = chat.connect()
        person.send("/part")
        assert person.lines()[-1] == "! #lobby is your only room; /join another one first"
        assert [r.name for r in person.client.rooms] == ["#lobby"]
        bot = chat.connect("jsonl")
        bot.send_json(cmd="part", room="#lobby")
        assert bot.objects()[-1]["type"] == "part"
        assert bot.client.rooms == () and bot.client.room is None
        bot.send_json(cmd="say", text="anyone?")  # in no room: told, nothing sent
        assert bot.objects()[-1]["type"] == "error"
        bot.send_json(cmd="join", room="#dev")
        assert [r.name for r in bot.client.rooms] == ["#dev"]


def test_client_hello_helper_is_a_tls_handshake_record():
    assert client_hello()[0] == 0x16  # the test's own probe must be what it claims


# -- the password settings ---------------------------------------------------------------------


def _check(text: str) -> Config:
    return ProtocolRegistry().check_config(parse_config(text))


def test_a_password_and_a_password_file_exclude_each_other_and_the_file_must_be_readable(
        tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("from the file\n")
    checked = _check(f"listen:\n  - {{port: 0, password_file: {secret}}}\n")
    assert listener_password(checked.listen[0].options) == "from the file"
    with pytest.raises(ConfigError, match=r"listen\[0\]\.password_file: password and "
                       r"password_file are both set: keep one"):
        _check(f"listen:\n  - {{port: 0, password: x, password_file: {secret}}}\n")
    with pytest.raises(ConfigError, match=r"listen\[0\]\.password_file: cannot read"):
        _check(f"listen:\n  - {{port: 0, password_file: {tmp_path / 'missing'}}}\n")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match=r"its first line must be the password"):
        _check(f"listen:\n  - {{port: 0, password_file: {tmp_path / 'empty'}}}\n")
    with pytest.raises(ConfigError, match=r"listen\[0\]\.password"):
        _check('listen:\n  - {port: 0, password: "tab\\there"}\n')
    assert listener_password(_check("listen:\n  - {port: 0}\n").listen[0].options) is None


def test_the_door_compares_password_digests_in_constant_time_and_counts_wrong_ones(
        monkeypatch):
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    reactor = Reactor()
    try:
        admission = Admission(AdmissionRules(100, 0, 0, 60.0, 0))
        acceptor = Acceptor(reactor, admission, Stats(), OutputAccount(1 << 20),
                            on_connect=lambda protocol, request: None)
        proto = LineProtocol(MemoryTransport(("192.0.2.7", 1)))  # type: ignore[arg-type]
        digest = password_digest(PW)
        acceptor.check_password(proto, digest, PW)  # right: no refusal
        with pytest.raises(SessionRefused) as refused:
            acceptor.check_password(proto, digest, PW + "x")
        assert (refused.value.code, refused.value.close) == ("wrong_password", False)
        assert compared == [(digest, digest), (password_digest(PW + "x"), digest)]
        assert admission.password_failures("192.0.2.7", time.monotonic()) == 1
        assert acceptor.stats.rejected == {"wrong_password": 1}
    finally:
        reactor.close()
