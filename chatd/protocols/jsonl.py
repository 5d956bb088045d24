"""The JSON lines protocol, for programs: one JSON object per line, each way.

Bots, bridges and dashboards get what happened as data (with ids and
timestamps) instead of parsing the human line format, and share the rooms with
everyone on the line protocol.  docs/protocols.md is the reference, with a
complete example exchange.

In (one object per line, ``"cmd"`` required, an optional ``"id"`` string of the
client's choosing that replies to this request carry back as ``"re"``)::

    {"cmd": "say", "text": "hello"}              # to the current room ("room" optional)
    {"cmd": "me", "text": "waves"}               # an action ("room" optional)
    {"cmd": "msg", "to": "bob", "text": "psst"}
    {"cmd": "notice", "to": "#dev", "text": "deploy at 5"}   # or "to": "bob"
    {"cmd": "join", "room": "#dev"}      {"cmd": "part", "room": "#dev", "reason": "bye"}
    {"cmd": "nick", "nick": "alicebot"}  {"cmd": "topic", "room": "#dev", "text": "..."}
    {"cmd": "quit", "reason": "done"}    {"cmd": "who", "room": "#dev"}
    {"cmd": "roll", "args": "2d6"}               # any other command, with its argument text

Out: every event as an object with ``type`` (the event's kind), ``id``,
``time`` (UTC, ISO 8601 with milliseconds) and the fields of that kind: the
public form of the event codec (:mod:`chatd.codec`, the one mapping of events
to data that history and other nodes use too)::

    {"type":"message","id":1796119080000007,"time":"2026-12-01T10:00:00.000Z","from":"bob","room":"#lobby","text":"hi"}

Replies to commands are objects of their own kind (:mod:`chatd.replies`:
``names``, ``rooms``, ``whois``...), the server's other words ``notice``
objects, errors ``error`` objects with a ``code``.  Events a client caused
itself carry ``"self": true``.

The session (a guest nick, the welcome notice, the join of ``#lobby``) begins at the
first request, or once the connection has been quiet for
``limits.greeting_delay_seconds``.  On a listener with a password the first request
must be ``{"cmd": "pass", "password": "..."}`` (anything else is answered with an
``error`` object, code ``password_required``; a wrong one, ``wrong_password``).  A
program may leave every room (``part`` of the last one): it is then in none.

Input is checked, never repaired: a line that is not UTF-8, a string that is
not well-formed text (a lone surrogate from a ``\\u`` escape) or holds what the
sanitiser would remove, a duplicate key, nesting beyond :data:`DEPTH_MAX`,
``NaN`` or a value of the wrong type is refused with an error object saying
what is wrong (:func:`parse_request`), so nothing a program sends can reach a
renderer, a plugin or the store in a form they cannot handle.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from ..codec import to_dict
from ..events import Event, PrivateMessage
from ..framing import (
    MAX_COMBINING,
    LineTooLong,
    lone_surrogate,
    sanitize,
    strip_colour_codes,
    utf8,
)
from ..replies import Reply
from ..requests import Invoke, Malformed, Request, Say
from .base import ChatProtocol, Renderer

_ID_MAX = 64


def _clean(text: str) -> str:
    """Sanitise each line of ``text``, keeping its newlines (JSON escapes them)."""
    if "\n" not in text:
        return sanitize(text)
    return "\n".join(sanitize(line) for line in text.split("\n"))


def _for_program(text: str) -> str:
    """Text for a program to show: :func:`_clean`, IRC colour codes removed whole first
    (their digits too: see :mod:`chatd.framing`)."""
    if text.isascii() and text.isprintable():
        return text
    return _clean(strip_colour_codes(text))


def _name_for_program(name: str) -> str:
    """A name (a nick, a room) for a program to show: one line, nothing a terminal obeys."""
    return sanitize(strip_colour_codes(name))


def _timestamp(when: float) -> str:
    whole = int(when)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + (
        f".{int((when - whole) * 1000):03d}Z"
    )


#: The fields of an event that name someone or something (a nick, a room, a code): clean
#: when made here (validated on the way in), but an event from another node (the codec's
#: ``from_dict``) is only as clean as that node; jsonl sanitises them like ``text``.
_NAME_KEYS = ("from", "plugin", "room", "to", "old", "new", "code")

#: The fields of replies (and of their records) that hold a time: ISO text, like ``time``.
_TIME_FIELDS = frozenset({"connected_at", "until"})


def _reply_values(obj: dict[str, Any]) -> None:
    """A reply's strings sanitised for a program (a topic, an away message, a plugin's
    help: whoever wrote them) and its times as ISO text, in place, records included."""
    for key, value in obj.items():
        cls = value.__class__
        if cls is str:
            obj[key] = _for_program(value)
        elif cls is float and key in _TIME_FIELDS:
            obj[key] = _timestamp(value)
        elif cls is list:
            obj[key] = [_for_program(item) if item.__class__ is str else item for item in value]
            for item in value:
                if item.__class__ is dict:
                    _reply_values(item)


def _encode(obj: dict[str, Any]) -> bytes:
    return utf8(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")


class JsonlRenderer(Renderer):
    """Events as JSON objects (see the module docstring)."""

    name = "jsonl"

    def _object(self, event: Event) -> dict[str, Any]:
        """The codec's public form of ``event`` (:func:`chatd.codec.to_dict`), as jsonl
        shows it: the time as ISO text, the text sanitised, ``to`` only on a private
        message (a notice, an error or a reply to you needs no recipient); a reply's
        own fields sanitised too, its times as ISO text (:func:`_reply_values`)."""
        obj = to_dict(event, internal=False)
        obj["time"] = _timestamp(event.time)
        text = obj.get("text")
        if text is not None:
            obj["text"] = _for_program(text)
        for key in _NAME_KEYS:  # names too: another node's are not checked here
            value = obj.get(key)
            if value is not None and value.__class__ is str \
                    and not (value.isascii() and value.isprintable()):
                obj[key] = _name_for_program(value)
        rooms = obj.get("rooms")
        if rooms is not None and rooms.__class__ is list:
            obj["rooms"] = [_name_for_program(r) if r.__class__ is str else r for r in rooms]
        changes = obj.get("changes")  # a mode change's items name nicks and masks
        if changes is not None:
            obj["changes"] = [{k: _name_for_program(v) if v.__class__ is str else v
                               for k, v in change.items()} for change in changes]
        if "to" in obj and event.__class__ is not PrivateMessage:
            del obj["to"]
        if isinstance(event, Reply):
            _reply_values(obj)
        return obj

    def render(self, event: Event) -> bytes:
        return _encode(self._object(event))

    def render_for(self, event: Event, viewer: str | None, tag: str | None = None) -> bytes:
        own = event.source.is_session(viewer)
        if not own and tag is None:
            return self.render(event)
        obj = self._object(event)
        if own:
            obj["self"] = True
        if tag is not None:
            obj["re"] = tag
        return _encode(obj)

    def local_error(self, text: str, *, code: str | None = None) -> bytes:
        """``{"type":"error","code":"server_full","text":"..."}``: no ``id`` or ``time``
        (no event: the connection may never have been a client)."""
        if code is None:
            return _encode({"type": "error", "text": _for_program(text)})
        return _encode({"type": "error", "code": code, "text": _for_program(text)})


RENDERER = JsonlRenderer()

#: Commands whose fields are spelt out: (field, required, one word) in argument order.
_FIELDS: dict[str, tuple[tuple[str, bool, bool], ...]] = {
    "msg": (("to", True, True), ("text", True, False)),
    "notice": (("to", True, True), ("text", True, False)),
    "join": (("room", True, True),),
    "part": (("room", False, True), ("reason", False, False)),
    "nick": (("nick", True, True),),
    "topic": (("room", False, True), ("text", False, False)),
    "quit": (("reason", False, False),),
    "who": (("room", False, True),),
    "help": (("command", False, True),),
}

#: Arrays and objects nested deeper than this are refused before they are parsed:
#: no request needs more than one level, and the C scanner recurses per level.
DEPTH_MAX = 32
#: Digits of an integer the parser converts (no request has a number field; a long
#: one costs quadratic time to convert, and past 4300 digits Python refuses it).
DIGITS_MAX = 100


class _Bad(Exception):
    """A request the client must be told about (the message says what is wrong)."""


def _refuse_constant(name: str) -> Any:
    raise _Bad(f"not JSON: {name} is not a JSON value (JSON numbers are finite)")


def _integer(digits: str) -> int:
    if len(digits) > DIGITS_MAX:
        raise _Bad(f"a number of {len(digits)} digits (at most {DIGITS_MAX})")
    return int(digits)


def _shown(value: str) -> str:
    """A value of the client's inside an error message: quoted, escaped, short."""
    quoted = json.dumps(value)
    return quoted if len(quoted) <= 40 else quoted[:36] + '..."'


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key sent twice (which one counts is not defined)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise _Bad(f"duplicate key {_shown(key)}: send each field once")
            seen.add(key)
    return obj


_DECODER = json.JSONDecoder(
    object_pairs_hook=_object, parse_constant=_refuse_constant, parse_int=_integer
)

#: A string (skipped whole, escapes included) or one bracket.
_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]')


def _too_deep(line: str) -> bool:
    """Whether ``line`` nests arrays or objects deeper than :data:`DEPTH_MAX`.

    Counting brackets is enough for nearly every line; only a line with more
    than DEPTH_MAX of them is scanned, with brackets inside strings skipped.
    """
    if line.count("[") + line.count("{") <= DEPTH_MAX:
        return False
    depth = 0
    for token in _STRUCTURE.findall(line):
        if token == "[" or token == "{":
            depth += 1
            if depth > DEPTH_MAX:
                return True
        elif token == "]" or token == "}":
            depth -= 1
    return False


def _text_problem(key: str, value: str, *, keep_newlines: bool) -> str | None:
    """What is wrong with a string the client sent as ``key``, or None if it is text.

    Refused, never silently changed: a lone surrogate (``"\\ud800"``: not text at
    all), and anything the sanitiser would remove (control characters, escape
    sequences, bidi overrides, invisible characters, piles of combining marks).
    A tab counts as a space, as in the line protocol; text fields may hold newlines.
    """
    at = lone_surrogate(value)
    if at >= 0:
        return (f"{key!r} is not well-formed text: a lone surrogate "
                f"\\u{ord(value[at]):04x} at position {at} (send whole UTF-16 pairs)")
    if value.isascii() and value.isprintable():
        return None
    spaced = value.replace("\t", " ")
    clean = _clean(spaced) if keep_newlines else sanitize(spaced)
    if clean == spaced:
        return None
    at = next((i for i, (a, b) in enumerate(zip(spaced, clean, strict=False)) if a != b),
              len(clean))
    return (f"{key!r} holds U+{ord(spaced[at]):04X} at position {at}, which chatd does not "
            "pass on (control, bidi and invisible characters, more than "
            f"{MAX_COMBINING} combining marks on one letter)")


def _string(obj: dict[str, Any], key: str, *, required: bool, word: bool) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise _Bad(f"{key!r} is required")
        return ""
    if not isinstance(value, str):
        raise _Bad(f"{key!r} must be a string")
    problem = _text_problem(key, value, keep_newlines=not word)
    if problem is not None:
        raise _Bad(problem)
    if "\t" in value:
        value = value.replace("\t", " ")
    if word and (not value or any(c.isspace() for c in value)):
        raise _Bad(f"{key!r} must be one word")
    return value


def _tag(obj: dict[str, Any]) -> str | None:
    """The request's ``id``, checked like every other string (raises :class:`_Bad`)."""
    tag = obj.get("id")
    if tag is None:
        return None
    if not isinstance(tag, str) or len(tag) > _ID_MAX:
        raise _Bad(f"'id' must be a string of at most {_ID_MAX} characters")
    problem = _text_problem("id", tag, keep_newlines=False)
    if problem is not None:
        raise _Bad(problem)
    return tag


def parse_request(line: str) -> Request:
    """One received JSON line -> a request (:class:`Malformed` says what is wrong).

    Every string the request carries is checked where it enters: a request
    that is not well-formed text, nests too deep, repeats a key or holds a
    value of the wrong type is refused with an error object for the client,
    never passed on altered and never a traceback.
    """
    if _too_deep(line):
        return Malformed(f"nested deeper than {DEPTH_MAX} levels")
    try:
        obj = _DECODER.decode(line)
    except _Bad as exc:
        return Malformed(str(exc))
    except ValueError as exc:
        return Malformed(f"not JSON: {exc}")
    if not isinstance(obj, dict):
        return Malformed("expected a JSON object")
    try:
        tag = _tag(obj)
    except _Bad as exc:
        return Malformed(str(exc))
    cmd = obj.get("cmd")
    if not isinstance(cmd, str) or not cmd or not all(c.isalnum() or c in "-_" for c in cmd):
        return Malformed("'cmd' must be a command name", tag)
    problem = _text_problem("cmd", cmd, keep_newlines=False)  # an invisible letter
    if problem is not None:
        return Malformed(problem, tag)
    cmd = cmd.lower()
    try:
        if cmd in ("say", "me"):
            text = _string(obj, "text", required=True, word=False)
            room = _string(obj, "room", required=False, word=True) or None
            if cmd == "say" and room is None and tag is None:
                return text
            return Say(text, room, cmd == "me", tag)
        fields = _FIELDS.get(cmd)
        if fields is None:
            args = _string(obj, "args", required=False, word=False)
        else:
            values = [_string(obj, key, required=req, word=word) for key, req, word in fields]
            args = " ".join(v for v in values if v)
    except _Bad as exc:
        return Malformed(str(exc), tag)
    return Invoke(cmd, args.replace("\n", " ").strip(), False, tag)


def decode_json_line(raw: bytes | bytearray | memoryview) -> str | Malformed:
    """A framed line as sent: JSON is UTF-8, so bytes that are not are refused (the
    line protocol's U+FFFD would be a silent change), and nothing is sanitised
    before the JSON is parsed (the values are checked after, :func:`parse_request`)."""
    try:
        return str(raw, "utf-8")
    except UnicodeDecodeError as exc:
        return Malformed(f"not UTF-8: byte 0x{raw[exc.start]:02x} at position {exc.start}")


#: What a client of a listener with a password is told if its first request is another.
PASS_FIRST = ('this listener needs a password: send {"cmd":"pass","password":"..."} '
              "first")


class JsonlProtocol(ChatProtocol):
    """Programs' protocol: JSON objects in and out."""

    renderer = RENDERER
    decode = staticmethod(decode_json_line)
    __slots__ = ("reply_tag",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reply_tag: str | None = None  # a request's "id", echoed as "re"

    def replying_to(self, tag: str | None) -> None:
        self.reply_tag = tag

    def _first_line(self, line: str | LineTooLong) -> bool:
        return True  # JSON, not HTTP: the first bytes were already sniffed

    def password_in(self, line: str | LineTooLong) -> str | None:
        """The listener password of ``{"cmd": "pass", "password": "..."}``; anything
        else before it is refused with the error ``password_required`` (a blank line is
        nothing).  The password is taken as sent: no trimming, any characters but
        control ones."""
        if line.__class__ is not str:  # LineTooLong, Malformed (not UTF-8)
            self.tell(PASS_FIRST, code="password_required")
            return None
        if not line or line.isspace():  # type: ignore[union-attr]
            return None
        try:  # parsed as strictly as any request: too deep is refused before the C scanner
            obj = None if _too_deep(line) else _DECODER.decode(line)  # type: ignore[arg-type]
        except (_Bad, ValueError):
            obj = None
        if not (isinstance(obj, dict) and isinstance(obj.get("cmd"), str)
                and obj["cmd"].lower() == "pass"):
            self.tell(PASS_FIRST, code="password_required")
            return None
        password = obj.get("password")
        if not isinstance(password, str) or not password \
                or _text_problem("password", password, keep_newlines=False) is not None:
            self.tell("'password' must be a non-empty string with no control characters",
                      code="password_required")
            return None
        return password

    def parse(self, lines: list[str | LineTooLong]) -> list[Request]:
        requests: list[Request] = []
        for line in lines:
            if line.__class__ is LineTooLong or line.__class__ is Malformed:
                requests.append(line)
            elif line and not line.isspace():  # type: ignore[union-attr]
                requests.append(parse_request(line))  # type: ignore[arg-type]
        return requests
