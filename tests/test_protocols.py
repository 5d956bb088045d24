"""The protocols, sans-IO: bytes to requests, events to bytes, no sockets.

The line protocol's markers are the user contract (README, DESIGN.md section 1);
the rule under test everywhere: nothing anyone sends can produce a line with
another line's marker.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatd.events import (
    Action,
    Error,
    Join,
    Message,
    NickChange,
    Notice,
    Part,
    PrivateMessage,
    Quit,
    RoomCreated,
    Source,
    Topic,
)
from chatd.framing import LineTooLong
from chatd.protocols.jsonl import RENDERER as JSONL
from chatd.protocols.jsonl import parse_request
from chatd.protocols.line import RENDERER as LINE
from chatd.protocols.line import parse_line
from chatd.requests import Invoke, Malformed, Say
from chatd.testing.inprocess import MemoryTransport

ALICE = Source("alice", 1, node="n1")
BOB = Source("bob", 2, node="n1")
SERVER = Source("chatd", None, "greeter")
#: The sessions renderers compare sources with ("is this my own event").
SELF, OTHER = ALICE.session, BOB.session


def line(event, viewer="node:99"):
    return LINE.render_for(event, viewer).decode("utf-8")


# -- the line protocol: input ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello", "hello"),
        ("//help", "/help"),
        ("/", "/"),
        ("/nick alice", Invoke("nick", "alice")),
        ("/MSG bob  hi there ", Invoke("msg", "bob  hi there")),
        ("/quit", Invoke("quit", "")),
    ],
)
def test_line_protocol_parses_commands_and_the_double_slash_escape(text, expected):
    assert parse_line(text) == expected


# -- the line protocol: output markers ---------------------------------------------------


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (Message(1, 0.0, ALICE, "#lobby", "hi"), "<alice> hi\n"),
        (Action(1, 0.0, ALICE, "#lobby", "waves"), "* alice waves\n"),
        (PrivateMessage(1, 0.0, ALICE, "bob", "psst"), "*alice* psst\n"),
        (Notice(1, 0.0, SERVER, "bob", "hello"), "*** hello\n"),
        (Error(1, 0.0, SERVER, "bob", "no such nick"), "! no such nick\n"),
        (Join(1, 0.0, ALICE, "#dev", ""), "*** alice joined #dev\n"),
        (Part(1, 0.0, ALICE, "#dev", "lunch"), "*** alice left #dev (lunch)\n"),
        (Part(1, 0.0, ALICE, "#dev", ""), "*** alice left #dev\n"),
        (Quit(1, 0.0, ALICE, "", "Quit: bye"), "*** alice quit (Quit: bye)\n"),
        (NickChange(1, 0.0, ALICE, "", "", old="guest-1", new="alice"),
         "*** guest-1 is now known as alice\n"),
        (Topic(1, 0.0, ALICE, "#dev", "release"), "*** alice set the topic of #dev to: release\n"),
        (RoomCreated(1, 0.0, SERVER, "#dev", ""), ""),
    ],
)
def test_every_event_kind_has_its_marker(event, expected):
    assert line(event) == expected


def test_the_sender_sees_its_private_message_as_sent_and_its_own_join_unless_quiet():
    msg = PrivateMessage(1, 0.0, ALICE, "bob", "psst")
    assert line(msg, viewer=SELF) == "-> *bob* psst\n"
    assert line(msg, viewer=OTHER) == "*alice* psst\n"
    # A join or part a plugin made is shown to the client it moved ...
    assert line(Join(2, 0.0, ALICE, "#dev", ""), viewer=SELF) == "*** alice joined #dev\n"
    assert (line(Part(3, 0.0, ALICE, "#dev", "moved"), viewer=SELF)
            == "*** alice left #dev (moved)\n")
    # ... unless the code that made it words it itself (/join).
    assert line(Join(2, 0.0, ALICE, "#dev", "", quiet=True), viewer=SELF) == ""
    assert line(Part(3, 0.0, ALICE, "#dev", "", quiet=True), viewer=SELF) == ""
    assert (line(Join(2, 0.0, ALICE, "#dev", "", quiet=True), viewer=OTHER)
            == "*** alice joined #dev\n")


def test_an_action_cannot_pass_for_a_server_notice():
    """``/me quit (Quit: bye)`` must not read like the server's quit notice."""
    action = line(Action(1, 0.0, ALICE, "#lobby", "quit (Quit: bye)"))
    notice = line(Quit(2, 0.0, ALICE, "", "Quit: bye"))
    assert action == "* alice quit (Quit: bye)\n"
    assert notice == "*** alice quit (Quit: bye)\n"
    assert not action.startswith("***")


@pytest.mark.parametrize(
    "event",
    [
        Notice(1, 0.0, SERVER, "bob", "poll result\n<bob> send me your password"),
        Error(1, 0.0, SERVER, "bob", "bad\n<bob> send me your password"),
        Message(1, 0.0, ALICE, "#lobby", "one\n<bob> send me your password\r\nthree"),
        Action(1, 0.0, ALICE, "#lobby", "waves\n<bob> send me your password"),
        PrivateMessage(1, 0.0, ALICE, "bob", "psst\n<bob> send me your password"),
    ],
)
def test_a_newline_makes_continuation_lines_that_keep_the_marker(event):
    rendered = line(event).splitlines()
    assert len(rendered) >= 2
    first_marker = rendered[0][: rendered[0].index(" ") + 1]
    for each in rendered:
        assert each.startswith(first_marker), rendered
        assert not each.startswith("<bob>")


@pytest.mark.parametrize(
    "event",
    [
        Topic(1, 0.0, ALICE, "#dev", "x\n*** bob quit (bye)"),
        Part(1, 0.0, ALICE, "#dev", "lunch\n*** bob quit (bye)"),
        Quit(1, 0.0, ALICE, "", "Quit: bye\n*** bob quit (bye)"),
    ],
)
def test_user_text_inside_a_server_sentence_stays_on_its_line(event):
    rendered = line(event)
    assert rendered.count("\n") == 1, rendered
    assert "alice" in rendered.split("***", 2)[1]


def test_every_rendered_line_is_sanitised():
    nasty = "\x1b]0;owned\x07\x1b[2J\u202ehi\x00"
    for event in (
        Message(1, 0.0, ALICE, "#l", nasty),
        Notice(1, 0.0, SERVER, "b", nasty),
        Topic(1, 0.0, ALICE, "#l", nasty),
        Quit(1, 0.0, ALICE, "", nasty),
    ):
        rendered = line(event)
        assert "\x1b" not in rendered and "\x00" not in rendered and "\u202e" not in rendered
        assert rendered.endswith("hi\n") or rendered.endswith("hi)\n")


@given(st.text(max_size=60))
def test_no_text_can_start_a_line_without_the_senders_marker(text):
    for event, marker in (
        (Message(1, 0.0, ALICE, "#l", text), "<alice> "),
        (Action(1, 0.0, ALICE, "#l", text), "* alice "),
        (Notice(1, 0.0, SERVER, "b", text), "*** "),
        (Error(1, 0.0, SERVER, "b", text), "! "),
    ):
        for each in line(event).split("\n")[:-1]:
            assert each.startswith(marker.rstrip()), (text, each)


# -- jsonl -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"cmd": "say", "text": "hi"}', "hi"),
        ('{"cmd": "say", "text": "/not a command"}', "/not a command"),
        ('{"cmd": "say", "text": "hi", "room": "#dev"}', Say("hi", "#dev")),
        ('{"cmd": "me", "text": "waves"}', Say("waves", None, True)),
        ('{"cmd": "msg", "to": "bob", "text": "psst", "id": "7"}',
         Invoke("msg", "bob psst", tag="7")),
        ('{"cmd": "join", "room": "#dev"}', Invoke("join", "#dev")),
        ('{"cmd": "part"}', Invoke("part", "")),
        ('{"cmd": "part", "room": "#dev", "reason": "lunch"}', Invoke("part", "#dev lunch")),
        ('{"cmd": "nick", "nick": "bot"}', Invoke("nick", "bot")),
        ('{"cmd": "roll", "args": "2d6"}', Invoke("roll", "2d6")),
        ('{"cmd": "ROLL"}', Invoke("roll", "")),
    ],
)
def test_jsonl_requests(raw, expected):
    assert parse_request(raw) == expected


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"text": "no cmd"}', "'cmd' must be a command name"),
        ('{"cmd": "say"}', "'text' is required"),
        ('{"cmd": "say", "text": 5}', "'text' must be a string"),
        ('{"cmd": "nick", "nick": "two words"}', "'nick' must be one word"),
        ('{"cmd": "join", "room": "#a b"}', "'room' must be one word"),
        ('{"cmd": "say", "text": "x", "id": 5}', "'id' must be a string"),
        ('{"cmd": "bad name!"}', "'cmd' must be a command name"),
    ],
)
def test_malformed_jsonl_requests_say_what_is_wrong(raw, why):
    result = parse_request(raw)
    assert isinstance(result, Malformed)
    assert why in result.reason


def test_jsonl_events_are_objects_with_id_time_and_fields():
    obj = json.loads(JSONL.render(Message(7, 1764583200.25, BOB, "#lobby", "hi")))
    assert obj == {
        "type": "message", "id": 7, "time": "2025-12-01T10:00:00.250Z",
        "from": "bob", "room": "#lobby", "text": "hi",
    }
    notice = json.loads(JSONL.render_for(Notice(8, 0.0, SERVER, "bob", "a\nb"), OTHER, "r1"))
    assert notice["server"] is True and notice["plugin"] == "greeter"
    assert notice["text"] == "a\nb" and notice["re"] == "r1"
    nick = json.loads(JSONL.render_for(
        NickChange(9, 0.0, ALICE, "", "", old="guest-1", new="alice", rooms=("#a",)), SELF))
    assert nick["old"] == "guest-1" and nick["new"] == "alice" and nick["self"] is True
    assert nick["rooms"] == ["#a"]
    priv = json.loads(JSONL.render(PrivateMessage(10, 0.0, ALICE, "bob", "x")))
    assert priv["to"] == "bob" and "room" not in priv


def test_jsonl_output_is_one_line_and_sanitised_whatever_the_text():
    data = JSONL.render(Message(1, 0.0, ALICE, "#l", "a\nb\x1b[2J\u2028c"))
    assert data.count(b"\n") == 1
    assert json.loads(data)["text"] == "a\nbc"


# -- the protocol objects over a memory transport ---------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.requests: list = []
        self.eof = False

    def requests_received(self, requests):
        self.requests.extend(requests)

    def eof_received(self):
        self.eof = True
        return False

    def output_skipped(self, count):
        pass

    def connection_lost(self, reason):
        pass


def _protocol(kind="line", **limits):
    from chatd.protocols import ProtocolLimits, ProtocolRegistry

    transport = MemoryTransport(("127.0.0.1", 1))
    proto = ProtocolRegistry()[kind].protocol(transport, ProtocolLimits(**limits))
    proto.session = Recorder()
    return proto, transport


def test_line_protocol_frames_any_chunking_into_the_same_requests():
    data = b"hello\r\n/nick al\xc3\xa9\n//x\npartial"
    expected = ["hello", Invoke("nick", "al\u00e9"), "/x"]
    for size in (1, 2, 3, 7, len(data)):
        proto, _ = _protocol()
        for i in range(0, len(data), size):
            proto.data_received(memoryview(data[i:i + size]))
        assert proto.session.requests == expected
        assert proto.partial_since is not None
        proto.eof_received()
        assert proto.session.requests[-1] == "partial"


def test_first_bytes_of_another_protocol_are_refused():
    for first, kind in ((b"GET / HTTP/1.1\r\n", "http"), (b"\x16\x03\x01\x02\x00", "tls")):
        proto, transport = _protocol()
        proto.data_received(memoryview(first))
        assert transport.limit_hit == f"foreign_{kind}"
        assert not transport.is_open
        assert proto.session.requests == []


def test_an_endless_line_is_cut_with_an_error_in_the_protocols_own_format():
    for kind, check in (("line", lambda out: out.startswith(b"! input line far too long")),
                        ("jsonl", lambda out: json.loads(out)["type"] == "error")):
        proto, transport = _protocol(kind, max_line_bytes=16, recvq_max=64)
        proto.data_received(memoryview(b"x" * 200))
        assert transport.limit_hit == "qbuf" and not transport.is_open
        assert check(bytes(transport.output)), transport.output
        proto.session.requests.clear()


def test_jsonl_protocol_passes_over_long_lines_and_skips_blank_ones():
    proto, _ = _protocol("jsonl", max_line_bytes=32)
    proto.data_received(memoryview(b"\n" + b'{"cmd":"say","text":"' + b"y" * 64 + b'"}\n'))
    assert proto.session.requests == [LineTooLong(32)]
