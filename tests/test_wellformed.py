"""Well-formed text everywhere (issue 18, rule 1): malformed input costs nobody anything.

Found by a bot author: one jsonl value with a lone surrogate (``"\\ud800"``, a
``\\u`` escape that is half of a UTF-16 pair) made the fan-out drop other users'
lines, broke ``/list``, ``/topic``, ``/whois`` and ``/history`` for everyone
and killed the store's writer thread.  Each of those is reproduced against a
real server first; then the parser, the renderers and the fan-out are checked
in-process, one defence at a time.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from chatd import Command, hookimpl
from chatd.events import Message, Notice, Source
from chatd.framing import lone_surrogate, utf8
from chatd.protocols.jsonl import DEPTH_MAX, DIGITS_MAX, parse_request
from chatd.protocols.jsonl import RENDERER as JSONL
from chatd.protocols.line import RENDERER as LINE
from chatd.protocols.line import LineRenderer
from chatd.requests import Invoke, Malformed, Say
from chatd.testing import InProcessChat, unexpected_tracebacks

LISTENERS = [{"port": 0}, {"port": 0, "protocol": "jsonl"}]

#: Requests a bot author's probes sent, each with a lone surrogate in one field.
SURROGATE_REQUESTS = [
    {"cmd": "say", "text": "\ud800", "id": "s1"},
    {"cmd": "me", "text": "waves \udfff", "id": "s2"},
    {"cmd": "say", "text": "hi", "room": "#lobby\udc00", "id": "s3"},
    {"cmd": "msg", "to": "alice", "text": "psst \ud801", "id": "s4"},
    {"cmd": "msg", "to": "al\ud800ice", "text": "psst", "id": "s5"},
    {"cmd": "nick", "nick": "a\ud800", "id": "s6"},
    {"cmd": "topic", "text": "topic \udbff", "id": "s7"},
    {"cmd": "join", "room": "#x\ud800", "id": "s8"},
    {"cmd": "part", "reason": "bye \ud800", "id": "s9"},
    {"cmd": "quit", "reason": "\ud800", "id": "s10"},
    {"cmd": "away", "args": "gone \ud800", "id": "s11"},
]


def _send(bot, obj) -> None:
    """``json.dumps`` writes a lone surrogate as the ``\\ud800`` escape a probe sends."""
    bot.lines.send_raw(json.dumps(obj).encode("ascii") + b"\n")


def test_a_lone_surrogate_from_a_bot_costs_nobody_anything(chatd_server, tmp_path):
    database = tmp_path / "chatd.sqlite3"
    server = chatd_server(listen=LISTENERS, storage={"path": str(database)},
                          plugins={"history": {"replay_lines": 20}})
    alice, bob = server.client(), server.client()
    alice.send("/nick alice")
    alice.expect(r"^\*\*\* guest-1 is now known as alice$")
    bot = server.json_client()
    for request in SURROGATE_REQUESTS:
        alice.send(f"before {request['id']}")  # lines in the same ticks as the bad ones
        _send(bot, request)
        error = bot.expect(type="error", re=request["id"])
        assert "lone surrogate" in error["text"], error
    _send(bot, {"cmd": "say", "text": "x", "id": "bad \ud800 id"})
    assert "'id' is not well-formed text" in bot.expect(type="error")["text"]
    # Nothing of it reached anyone, and everyone's lines still arrive.
    for request in SURROGATE_REQUESTS:
        bob.expect(rf"^<alice> before {request['id']}$")
    alice.send("after the bot")
    bob.expect(r"^<alice> after the bot$")
    for command, answer in (("/list", r"^\*\*\* .*#lobby"),
                            ("/topic", r"^\*\*\* #lobby has no topic"),
                            ("/who", r"^\*\*\* #lobby has 3 member"),
                            (f"/whois {bot.nick}", rf"^\*\*\* {bot.nick}: in #lobby"),
                            ("/history", r"^\*\*\* end of history$")):
        alice.send(command)
        alice.expect(answer)
    assert not [line for line in alice.history + bob.history if "internal error" in line]
    assert server.stop() == 0
    assert unexpected_tracebacks(server.log()) == [] and "Traceback" not in server.log()
    # The store's writer lived: every line alice said is on disk.
    with sqlite3.connect(database) as conn:
        said = [text for (text,) in conn.execute(
            "SELECT text FROM history WHERE nick = 'alice' ORDER BY seq")]
    assert said == [f"before {r['id']}" for r in SURROGATE_REQUESTS] + ["after the bot"]


# -- the parser: every string is checked where it enters ------------------------------------


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        # not well-formed text: lone surrogates, in every field and the id
        (r'{"cmd": "say", "text": "\ud800"}', "'text' is not well-formed text: a lone surrogate"),
        (r'{"cmd": "say", "text": "ok \udc00 ok"}', r"\udc00 at position 3"),
        (r'{"cmd": "nick", "nick": "a\ud800"}', "'nick' is not well-formed"),
        (r'{"cmd": "msg", "to": "\udfff", "text": "x"}', "'to' is not well-formed"),
        (r'{"cmd": "roll", "args": "\ud83d"}', "'args' is not well-formed"),
        (r'{"cmd": "say", "text": "x", "id": "\ud800"}', "'id' is not well-formed"),
        # control and invisible characters: refused, never silently removed
        (r'{"cmd": "nick", "nick": "a\u0007b"}', "'nick' holds U+0007 at position 1"),
        (r'{"cmd": "join", "room": "#a\u200bb"}', "'room' holds U+200B"),
        (r'{"cmd": "say", "text": "red \u001b[31m"}', "'text' holds U+001B at position 4"),
        (r'{"cmd": "say", "text": "\u202eevil"}', "'text' holds U+202E"),
        (r'{"cmd": "part", "reason": "a\u0085"}', "'reason' holds U+0085"),
        (r'{"cmd": "say", "text": "x", "id": "a\u0000"}', "'id' holds U+0000"),
        (r'{"cmd": "say", "text": "e\u0301\u0301\u0301\u0301"}', "'text' holds U+0301"),
        (r'{"cmd": "say\u3164", "text": "x"}', "'cmd' holds U+3164"),
        # odd types where a string is expected
        ('{"cmd": "say", "text": 5}', "'text' must be a string"),
        ('{"cmd": "say", "text": true}', "'text' must be a string"),
        ('{"cmd": "say", "text": null}', "'text' is required"),
        ('{"cmd": "say", "text": ["a"]}', "'text' must be a string"),
        ('{"cmd": "say", "text": {"a": "b"}}', "'text' must be a string"),
        ('{"cmd": "say", "text": 1e999}', "'text' must be a string"),
        ('{"cmd": 7}', "'cmd' must be a command name"),
        ('{"cmd": "say", "text": "x", "id": 12345678901234567890}', "'id' must be a string"),
        ('{"cmd": "say", "text": "x", "id": "' + "i" * 65 + '"}', "at most 64 characters"),
        # numbers JSON does not have, and numbers no request needs
        ('{"cmd": "say", "text": NaN}', "NaN is not a JSON value"),
        ('{"cmd": "say", "text": -Infinity}', "-Infinity is not a JSON value"),
        ('{"cmd": "say", "text": 1' + "0" * DIGITS_MAX + "}", f"at most {DIGITS_MAX}"),
        # structure
        ('{"cmd": "say", "text": "a", "text": "b"}', 'duplicate key "text"'),
        ('{"cmd": "who", "x": {"k": 1, "k": 2}}', 'duplicate key "k"'),
        ('{"cmd": "who", "x": ' + "[" * DEPTH_MAX + "]" * DEPTH_MAX + "}",
         f"nested deeper than {DEPTH_MAX} levels"),
        ("[" * 100_000, f"nested deeper than {DEPTH_MAX} levels"),
        ('{"cmd": "say", "text": "a\tb"}', "not JSON: Invalid control character"),
    ],
)
def test_malformed_values_are_refused_with_what_is_wrong(raw, why):
    result = parse_request(raw)
    assert isinstance(result, Malformed), result
    assert why in result.reason, result.reason


def test_errors_about_a_field_carry_the_id_and_errors_about_the_id_do_not():
    assert parse_request(r'{"cmd": "nick", "nick": "\ud800", "id": "n1"}').tag == "n1"
    assert parse_request(r'{"cmd": "nick", "nick": "x", "id": "\ud800"}').tag is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # a whole UTF-16 pair is one character, not two halves
        (r'{"cmd": "say", "text": "\ud83d\ude00 ok"}', "\U0001f600 ok"),
        # nesting up to the bound, in a field chatd ignores; brackets inside strings
        # are text, not nesting
        ('{"cmd": "who", "x": ' + "[" * (DEPTH_MAX - 1) + "]" * (DEPTH_MAX - 1) + "}",
         Invoke("who", "")),
        ('{"cmd": "say", "text": "' + "[{" * 100 + '"}', "[{" * 100),
        # a tab is a space (as on the line protocol); newlines stay in a message
        (r'{"cmd": "say", "text": "a\tb\nc"}', "a b\nc"),
        (r'{"cmd": "me", "text": "caf\u00e9 \u4e2d", "id": "m"}',
         Say("caf\u00e9 \u4e2d", None, True, "m")),
        ('{"cmd": "who", "id": null}', Invoke("who", "")),
    ],
)
def test_well_formed_values_pass_unchanged(raw, expected):
    assert parse_request(raw) == expected


def test_bytes_that_are_not_utf8_are_refused_not_replaced():
    with InProcessChat() as chat:
        bot, person = chat.connect("jsonl"), chat.connect()
        bot.objects(), person.lines()
        bot.send(b'{"cmd": "say", "text": "caf\xe9"}\n')
        error = bot.objects()[-1]
        assert error["type"] == "error"
        assert error["text"] == "not UTF-8: byte 0xe9 at position 27"
        assert person.lines() == []


def test_a_nick_with_a_control_character_is_refused_in_jsonl_as_in_the_line_protocol():
    with InProcessChat() as chat:
        person, bot = chat.connect(), chat.connect("jsonl")
        person.lines(), bot.objects()
        person.send(b"/nick ab\x07c\n")
        assert person.lines() == ["! /nick: control or invisible characters are not allowed here"]
        bot.send_json(cmd="nick", nick="ab\x07c", id="n")
        (error,) = bot.objects()
        assert error["type"] == "error" and error["re"] == "n"
        assert "'nick' holds U+0007" in error["text"]
        assert (person.nick, bot.nick) == ("guest-1", "guest-2")


# -- the renderers: nothing that reaches one can make it raise ---------------------------------


def test_helpers_find_and_replace_lone_surrogates():
    assert lone_surrogate("plain") == lone_surrogate("caf\u00e9 \U0001f600") == -1
    assert lone_surrogate("ab\udc00") == 2
    assert utf8("a\ud800b") == "a\ufffdb".encode()
    assert utf8("caf\u00e9") == "caf\u00e9".encode()


def test_renderers_encode_a_plugins_lone_surrogate_as_a_replacement_character():
    odd = Source("bo\ud800b", 3)
    for event in (Message(1, 0.0, odd, "#lobby", "hi \udfff"),
                  Notice(2, 0.0, Source("chatd", None, "p\ud800"), "#l\udc00", "x\ud800")):
        for renderer in (LINE, JSONL):
            data = renderer.render(event)
            assert "\ufffd" in data.decode("utf-8"), (renderer.name, data)
        assert LINE.render_elsewhere(event, LINE.render(event)).decode("utf-8")
    assert json.loads(JSONL.local_error("bad \ud800"))["text"] == "bad \ufffd"


def _odd(client, args):
    client.room.say("half of a pair: \ud83d")
    client.notice("yours: \udc00")


class Speaker:
    """A plugin that hands chatd a lone surrogate (``/odd``): rule 1's defence in depth."""

    @hookimpl
    def chatd_commands(self):
        return [Command("odd", _odd, "/odd", "say something ill-formed")]


def test_a_plugins_ill_formed_text_reaches_everyone_repaired():
    with InProcessChat(Speaker()) as chat:
        person, bot, other = chat.connect(), chat.connect("jsonl"), chat.connect()
        person.lines(), bot.objects(), other.lines()
        person.send("/odd")
        assert person.lines() == ["*** [Speaker] half of a pair: \ufffd",
                                  "*** [Speaker] yours: \ufffd"]
        assert other.lines() == ["*** [Speaker] half of a pair: \ufffd"]
        assert bot.objects()[0]["text"] == "half of a pair: \ufffd"


# -- the fan-out: one event that cannot be rendered costs only itself ------------------------


def test_an_event_that_fails_to_render_does_not_drop_the_rest_of_the_batch(monkeypatch, caplog):
    original = LineRenderer.render

    def fragile(self, event):
        if event.text == "boom":
            raise RuntimeError("a renderer bug")
        return original(self, event)

    monkeypatch.setattr(LineRenderer, "render", fragile)
    with InProcessChat() as chat:
        alice, bob, carol = chat.connect(), chat.connect(), chat.connect()
        for peer in (alice, bob, carol):
            peer.lines()
        # Three lines in one tick: the middle one cannot be rendered.
        alice.protocol.data_received(memoryview(b"before\n"))
        bob.protocol.data_received(memoryview(b"boom\n"))
        alice.protocol.data_received(memoryview(b"after\n"))
        chat.tick()
        assert carol.lines() == ["<guest-1> before", "<guest-1> after"]
        assert bob.lines() == ["<guest-1> before", "<guest-1> after"]
        # A direct delivery that fails is skipped too, and the command goes on.
        alice.send("/msg guest-2 boom")
        assert alice.lines() == ["-> *guest-2* boom"]
        assert bob.lines() == []
        alice.send("/who")
        assert alice.lines()[0].startswith("*** #lobby has 3 members")
    assert "could not render message event" in caplog.text
