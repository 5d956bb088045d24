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
    {"cmd": "join", "room": "#dev"}      {"cmd": "part", "room": "#dev", "reason": "bye"}
    {"cmd": "nick", "nick": "alicebot"}  {"cmd": "topic", "room": "#dev", "text": "..."}
    {"cmd": "quit", "reason": "done"}    {"cmd": "who", "room": "#dev"}
    {"cmd": "roll", "args": "2d6"}               # any other command, with its argument text

Out: every event as an object with ``type`` (the event's kind), ``id``,
``time`` (UTC, ISO 8601 with milliseconds) and the fields of that kind::

    {"type":"message","id":7,"time":"2026-12-01T10:00:00.000Z","from":"bob","room":"#lobby","text":"hi"}

Replies to commands and the server's notices are ``notice`` objects, errors
``error`` objects.  Events a client caused itself carry ``"self": true``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..events import (
    Event,
    NickChange,
    PrivateMessage,
    Quit,
)
from ..framing import LineTooLong, sanitize
from ..requests import Invoke, Malformed, Request, Say
from .base import ChatProtocol, Renderer

_ID_MAX = 64


def _clean(text: str) -> str:
    """Sanitise each line of ``text``, keeping its newlines (JSON escapes them)."""
    if "\n" not in text:
        return sanitize(text)
    return "\n".join(sanitize(line) for line in text.split("\n"))


def _timestamp(when: float) -> str:
    whole = int(when)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + (
        f".{int((when - whole) * 1000):03d}Z"
    )


def _encode(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


class JsonlRenderer(Renderer):
    """Events as JSON objects (see the module docstring)."""

    name = "jsonl"

    def _object(self, event: Event) -> dict[str, Any]:
        source = event.source
        obj: dict[str, Any] = {
            "type": event.kind,
            "id": event.id,
            "time": _timestamp(event.time),
            "from": source.nick,
        }
        if source.client_id is None:
            obj["server"] = True
            if source.plugin:
                obj["plugin"] = source.plugin
        target = event.target
        cls = event.__class__
        if target.startswith("#"):
            obj["room"] = target
        elif target and cls is PrivateMessage:
            obj["to"] = target
        if cls is NickChange:
            obj["old"], obj["new"] = event.old, event.new  # type: ignore[attr-defined]
            if event.rooms:  # type: ignore[attr-defined]
                obj["rooms"] = list(event.rooms)  # type: ignore[attr-defined]
        elif cls is Quit and event.rooms:  # type: ignore[attr-defined]
            obj["rooms"] = list(event.rooms)  # type: ignore[attr-defined]
        if event.text or event.carries_user_text:
            obj["text"] = _clean(event.text)
        if event.replay:
            obj["history"] = True  # and "id" is its number in the history
        return obj

    def render(self, event: Event) -> bytes:
        return _encode(self._object(event))

    def render_for(self, event: Event, viewer: int, tag: str | None = None) -> bytes:
        if event.source.client_id != viewer and tag is None:
            return self.render(event)
        obj = self._object(event)
        if event.source.client_id == viewer:
            obj["self"] = True
        if tag is not None:
            obj["re"] = tag
        return _encode(obj)

    def local_error(self, text: str) -> bytes:
        return _encode({"type": "error", "text": _clean(text)})


RENDERER = JsonlRenderer()

#: Commands whose fields are spelt out: (field, required, one word) in argument order.
_FIELDS: dict[str, tuple[tuple[str, bool, bool], ...]] = {
    "msg": (("to", True, True), ("text", True, False)),
    "join": (("room", True, True),),
    "part": (("room", False, True), ("reason", False, False)),
    "nick": (("nick", True, True),),
    "topic": (("room", False, True), ("text", False, False)),
    "quit": (("reason", False, False),),
    "who": (("room", False, True),),
    "help": (("command", False, True),),
}


class _Bad(Exception):
    pass


def _string(obj: dict[str, Any], key: str, *, required: bool, word: bool) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise _Bad(f"{key!r} is required")
        return ""
    if not isinstance(value, str):
        raise _Bad(f"{key!r} must be a string")
    value = _clean(value)
    if word and (not value or any(c.isspace() for c in value)):
        raise _Bad(f"{key!r} must be one word")
    return value


def parse_request(line: str) -> Request:
    """One received JSON line -> a request (:class:`Malformed` says what is wrong)."""
    try:
        obj = json.loads(line)
    except ValueError as exc:
        return Malformed(f"not JSON: {exc}")
    if not isinstance(obj, dict):
        return Malformed("expected a JSON object")
    tag = obj.get("id")
    if tag is not None and (not isinstance(tag, str) or len(tag) > _ID_MAX):
        return Malformed(f"'id' must be a string of at most {_ID_MAX} characters")
    tag = sanitize(tag) if tag is not None else None
    cmd = obj.get("cmd")
    if not isinstance(cmd, str) or not cmd or not all(c.isalnum() or c in "-_" for c in cmd):
        return Malformed("'cmd' must be a command name", tag)
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


class JsonlProtocol(ChatProtocol):
    """Programs' protocol: JSON objects in and out."""

    renderer = RENDERER
    __slots__ = ("reply_tag",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reply_tag: str | None = None  # a request's "id", echoed as "re"

    def _first_line(self, line: str | LineTooLong) -> bool:
        return True  # JSON, not HTTP: the first bytes were already sniffed

    def parse(self, lines: list[str | LineTooLong]) -> list[Request]:
        requests: list[Request] = []
        for line in lines:
            if line.__class__ is LineTooLong:
                requests.append(line)
            elif line and not line.isspace():  # type: ignore[union-attr]
                requests.append(parse_request(line))  # type: ignore[arg-type]
        return requests
