"""Fuzzing jsonl at one running server while two people chat (issue 18, "How we will know").

Hypothesis draws jsonl requests — well-formed ones of every command a bot
uses, and ones with one defect each: a lone surrogate, a control, bidi or
invisible character, a pile of combining marks, a value of the wrong type, an
``id`` that is not one, a duplicate key, nesting past the bound, ``NaN``, a
huge number, bytes that are not UTF-8, a raw control byte, a truncated or
over-long line, something that is not an object — and sends each to ONE
``chatd`` process (started once for the test, not per example), between the
lines two line clients say to each other.  For every request:

* it gets an answer or a clear error, in order (a ``rooms`` request with its
  own ``id`` after it marks where its answers end), and nothing that answers it
  carries another request's ``re``;
* a request with a defect gets an ``error`` object, carrying its ``id`` as
  ``re`` when the ``id`` itself was good and the JSON could be read;
* nobody is told of an "internal error", and the two people lose no line.

After the run the server stops cleanly, its log holds no traceback, and the
store kept writing: every line the two people said is in the database.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from chatd.framing import sanitize
from chatd.protocols.jsonl import DEPTH_MAX, DIGITS_MAX
from chatd.testing import ChatClient, JsonClient

MAX_LINE = 4096

#: Each kind of request, and how many examples of it: every kind is drawn every run.
PLAN = {
    None: 30,  # well-formed
    "surrogate": 12, "character": 12, "type": 8, "cmd": 8, "id": 8, "duplicate": 8,
    "nesting": 8, "constant": 8, "digits": 8, "utf8": 8, "raw control": 8,
    "not an object": 8, "truncated": 8, "too long": 8,
}
#: Kinds whose JSON cannot be read (so neither can the request's id).
_UNREADABLE = ("duplicate", "nesting", "constant", "digits", "utf8", "raw control",
               "not an object", "truncated", "too long")


@dataclass
class Probe:
    """One line for the bot to send, and what must come back."""

    line: bytes
    #: The request's "id", if it is one the server can read and echo.
    tag: str | None
    #: An error object must come back (the request has a defect) ...
    refused: bool
    #: ... carrying this "re" (None: the defect is in the id or the JSON itself).
    error_re: str | None
    #: A well-formed request of a command that always answers.
    answered: bool


# -- values ---------------------------------------------------------------------------------

#: Characters a clean value may hold: letters, digits, punctuation, symbols, spaces,
#: minus the few of those the sanitiser removes (Hangul fillers are letters).
_CLEAN = st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")).filter(
    lambda c: sanitize(c) == c)
_TEXT = st.text(_CLEAN, min_size=1, max_size=30).filter(str.strip)
_WORD = st.text(_CLEAN.filter(lambda c: not c.isspace()), min_size=1, max_size=16)
_ROOM = st.one_of(st.just("#lobby"), _WORD.map(lambda w: "#" + w))
_PEER = st.one_of(st.sampled_from(["alice", "bob", "nobody"]), _WORD)

#: Commands a bot uses: field -> (values, required), and whether a reply always comes.
_COMMANDS: dict[str, tuple[dict[str, tuple[Any, bool]], bool]] = {
    "say": ({"text": (_TEXT, True), "room": (_ROOM, False)}, False),
    "me": ({"text": (_TEXT, True), "room": (_ROOM, False)}, False),
    "msg": ({"to": (_PEER, True), "text": (_TEXT, True)}, True),
    "join": ({"room": (_ROOM, True)}, True),
    "part": ({"room": (_ROOM, False), "reason": (_TEXT, False)}, True),
    "nick": ({"nick": (_WORD, True)}, True),
    "topic": ({"text": (_TEXT, False)}, True),
    "who": ({"room": (_ROOM, False)}, True),
    "help": ({"command": (_WORD, False)}, True),
    "rooms": ({}, True),
    "away": ({"args": (_TEXT, False)}, True),
    "set": ({"args": (st.sampled_from(["history off", "history on", "timestamps on"]),
                      False)}, True),
    "history": ({"args": (st.sampled_from(["", "5", "#lobby 3", "nobody"]), False)}, True),
    "roll": ({"args": (st.one_of(st.just("2d6"), _TEXT), False)}, True),
    "zzfuzz": ({"args": (_TEXT, False)}, True),  # no such command: an error
}

_JSON_NOISE = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=6,
)

_SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)
#: What else a string value may carry that is refused (one of them, somewhere in it).
_BAD_CHARACTERS = st.one_of(
    st.sampled_from([*map(chr, range(0x00, 0x09)), "\x0b", "\x0c", "\r",
                     *map(chr, range(0x0e, 0x20)), "\x7f"]),  # C0, DEL (tab is a space)
    st.integers(0x80, 0x9F).map(chr),  # C1
    st.sampled_from(["\x1b[31m", "\x1b]0;title\x07", "\u202e", "\u2066", "\u200f",
                     "\u200b", "\u2060", "\ufeff", "\u00ad", "\U000e0041", "\u3164"]),
    st.integers(4, 8).map(lambda k: "e" + "\u0301" * k),
)
_WRONG_TYPES = st.one_of(st.integers(-10**30, 10**30),
                         st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                         st.lists(st.integers(), max_size=2),
                         st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@st.composite
def _spoiled(draw: st.DrawFn, value: str, bad: st.SearchStrategy[str] = _BAD_CHARACTERS
             ) -> str:
    """``value`` with one refused character (or sequence) put in."""
    at = draw(st.integers(0, len(value)))
    return value[:at] + draw(bad) + value[at:]


# -- requests -------------------------------------------------------------------------------


@st.composite
def probes(draw: st.DrawFn, defect: str | None) -> Probe:
    """A request of a random command with ``defect`` (None: well-formed)."""
    cmd = draw(st.sampled_from(sorted(_COMMANDS)))
    fields, answered = _COMMANDS[cmd]
    obj: dict[str, Any] = {"cmd": cmd}
    for name, (values, required) in fields.items():
        if required or draw(st.booleans()):
            obj[name] = draw(values)
    tag = draw(st.one_of(st.none(), st.text(_CLEAN, min_size=1, max_size=12)))
    if tag is not None:
        obj["id"] = tag
    for key, value in draw(st.dictionaries(st.sampled_from(["x", "meta", "v"]), _JSON_NOISE,
                                           max_size=2)).items():
        obj[key] = value  # fields no command reads: ignored, whatever they hold
    used = [name for name in fields if name in obj]
    if defect in ("surrogate", "character", "type") and not used:
        defect = "id" if defect == "surrogate" else "cmd"
    refused, error_re = defect is not None, tag
    if defect in ("surrogate", "character"):
        name = draw(st.sampled_from(used))
        bad = _SURROGATES if defect == "surrogate" else _BAD_CHARACTERS
        obj[name] = draw(_spoiled(obj[name], bad))
    elif defect == "type":
        name = draw(st.sampled_from(used))
        obj[name] = draw(_WRONG_TYPES)
    elif defect == "cmd":
        obj["cmd"] = draw(st.one_of(_spoiled(cmd), _WRONG_TYPES, st.just("")))
    elif defect == "id":
        obj["id"] = draw(st.one_of(_spoiled(tag or "t"), _spoiled(tag or "t", _SURROGATES),
                                   _WRONG_TYPES, st.text(_CLEAN, min_size=65, max_size=100)))
        tag = error_re = None
    has_surrogate = any(0xD800 <= ord(c) <= 0xDFFF for c in json.dumps(obj, ensure_ascii=False))
    text = json.dumps(obj, ensure_ascii=has_surrogate or draw(st.booleans()))
    line = text.encode("utf-8")
    if defect in _UNREADABLE:
        tag = error_re = None  # the JSON cannot be read, so neither can its id
        line = _structural(draw, defect, obj, line)
    return Probe(line, tag, refused, error_re, answered and defect is None)


def _structural(draw: st.DrawFn, defect: str, obj: dict[str, Any], line: bytes) -> bytes:
    """``line`` (one JSON object) spoiled as a whole."""
    head = line[:-1]  # without the closing brace
    if defect == "duplicate":
        key = draw(st.sampled_from(sorted(obj)))
        return head + b", " + json.dumps(key).encode() + b": " + json.dumps("again").encode() + b"}"
    if defect == "nesting":
        depth = draw(st.integers(DEPTH_MAX + 1, 1500))
        return head + b', "zz": ' + b"[" * depth + b"]" * depth + b"}"
    if defect == "constant":
        constant = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity"]))
        return head + b', "zz": ' + constant + b"}"
    if defect == "digits":
        return head + b', "zz": 1' + b"0" * draw(st.integers(DIGITS_MAX, 400)) + b"}"
    if defect == "utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xfe", b"\xc3", b"\xc0\xaf", b"\xed\xa0\x80",
                                    b"\xe2\x82", b"\x80", b"\xf8\x88\x80\x80\x80"]))
        return head + b', "zz": "a' + bad + b'b"}'
    if defect == "raw control":
        raw = draw(st.sampled_from([bytes([c]) for c in range(32) if c not in (10, 13)]))
        return head + b', "zz": "a' + raw + b'b"}'
    if defect == "not an object":
        return draw(st.sampled_from([b"[1, 2]", b'"hello"', b"42", b"null", b"true", b"[]"]))
    if defect == "truncated":
        return line[:draw(st.integers(1, len(line) - 1))]
    assert defect == "too long"
    return head + b', "zz": "' + b"x" * draw(st.integers(MAX_LINE, MAX_LINE + 2000)) + b'"}'


# -- the test -------------------------------------------------------------------------------


def _answers(bot: JsonClient, mark: str) -> list[dict[str, Any]]:
    """What the bot receives until the reply to its ``rooms`` request ``mark``."""
    bot.send(cmd="rooms", id=mark)
    received = []
    while (obj := bot.recv()).get("re") != mark:
        received.append(obj)
    return received


def _check(probe: Probe, answers: list[dict[str, Any]]) -> None:
    for obj in answers:
        assert obj.get("re") in (None, probe.tag, probe.error_re), (probe, obj)
        assert "internal error" not in obj.get("text", ""), (probe, obj)
    errors = [obj for obj in answers if obj["type"] == "error"]
    if probe.refused:
        assert [e for e in errors if e.get("re") == probe.error_re], (probe, answers)
        for error in errors:
            assert error["text"] and "Traceback" not in error["text"], error
    elif probe.answered:
        if probe.tag is not None:
            assert [obj for obj in answers if obj.get("re") == probe.tag], (probe, answers)
        else:  # something for the bot, besides what the two people said meanwhile
            assert [obj for obj in answers if obj["from"] not in ("alice", "bob")], probe


def test_random_jsonl_requests_get_answers_and_cost_nobody_anything(chatd_server, tmp_path):
    database = tmp_path / "chatd.sqlite3"
    server = chatd_server(
        listen=[{"port": 0}, {"port": 0, "protocol": "jsonl"}],
        storage={"path": str(database)}, plugin_dirs=["plugins"],
        plugins={"history": {"replay_lines": 5}, "dice": {}},
    )
    alice, bob = server.client(), server.client()
    for person, nick in ((alice, "alice"), (bob, "bob")):
        person.send(f"/nick {nick}")
        person.expect(rf"is now known as {nick}$")
    bot = server.json_client()
    bot.send(cmd="nick", nick="fuzzbot", id="hello")  # the first bytes are JSON, not a probe
    bot.expect(re="hello")
    count = 0

    def one(probe: Probe) -> None:
        nonlocal count
        count += 1
        alice.send(f"a{count}")  # said in the same ticks as the probe
        bot.lines.send_raw(probe.line + b"\n")
        bob.send(f"b{count}")
        _check(probe, _answers(bot, f"mark{count}"))
        bob.expect(rf"^<alice> a{count}$")
        alice.expect(rf"^<bob> b{count}$")

    for defect, examples in PLAN.items():
        # No shrinking: the server's state moves on with every example, so a smaller
        # example would not replay the failure; the report shows the failing one.
        settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])(
            given(probe=probes(defect))(one))()
    assert count >= 100  # (hypothesis may stop a kind early if it runs out of new examples)
    _nobody_lost_anything(server, database, alice, bob, count)


def _nobody_lost_anything(server: Any, database: Any, alice: ChatClient, bob: ChatClient,
                          count: int) -> None:
    for person in (alice, bob):
        assert not [line for line in person.history if "internal error" in line], person.history
    assert server.stop() == 0
    assert "Traceback" not in server.log(), server.log()[-5000:]
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT nick, text FROM history WHERE nick IN ('alice', 'bob') "
                            "AND kind = 'message' ORDER BY seq").fetchall()
    for nick, prefix in (("alice", "a"), ("bob", "b")):
        said = [text for who, text in rows if who == nick]
        assert said == [f"{prefix}{n}" for n in range(1, count + 1)], (nick, said[-5:])
