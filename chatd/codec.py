"""One event codec: every event to and from a plain dict (JSON-ready), with a version.

An event leaves the process in one form, whoever carries it: the jsonl
protocol renders it from this dict, the *history* plugin stores its fields,
and a cluster backend (Redis, a later issue) will publish it.  So there is one
mapping between :mod:`chatd.events` and the outside world, here, and a round
trip of every kind is property-tested (``tests/test_codec.py``).

The form (``SCHEMA_VERSION`` 1), keys in this order, absent when empty::

    {"v": 1, "type": "message", "id": 1796119080000007, "time": 1796119080.25,
     "from": "bob", "node": "chat1", "user": "guest-3@8f2a61c0d4e7.cloak",
     "account": "bob", "session": "chat1:3", "client": 3,
     "room": "#lobby", "text": "hi"}

``v``
    The schema version.  :func:`from_dict` refuses a version it does not know
    (:class:`CodecError`); a change an older reader must not ignore bumps it.
``type``
    The event's ``kind`` (:data:`KINDS` lists them).
``id``, ``time``
    As in the event: an int below 2**53, and seconds since the epoch (a float,
    exact through JSON, unlike jsonl's ISO text; before the year 10000).
``from``, ``server``, ``plugin``, ``marker``
    The source: its nick (or the server's name); ``server: true`` when the
    server or a plugin made it; the plugin and its marker if any.
``node``, ``user``, ``account``, ``realname``, ``session``, ``client``
    The identity (:class:`~chatd.events.Source`): the node, ``ident@host``, the
    account, the real name (only when there is one), the session (derived from
    ``node`` and ``client``: written for readers in other languages, checked on
    reading) and the client's number on
    its node (0 in a replayed event).
``room`` or ``to``
    The target: ``room`` when it is a room (``#...``), ``to`` otherwise (a nick).
``text``
    Present when not empty, and always for kinds whose text a user wrote.
``history``
    ``true`` for an event replayed from history (``replay``).
the kind's own fields
    ``notice`` (message, privmsg: a user's notice, only when true),
    ``quiet`` (join, part: only when true), ``invitee`` (invite), ``kicked_by`` (part: a kick's
    operator, internal, only when one), ``old`` and ``new`` (nick),
    ``rooms`` (quit, nick, account, realname: a list, only when not empty); ``old``
    and ``new`` of an account change (the accounts before and after, each only when
    there is one: ``new`` absent is a log-out); ``changes`` (mode: a list of
    objects ``mode``, ``on``, ``arg`` and ``nick`` when set) and ``seconds`` (mode: only
    when the change lasts a time); ``to_account``,
    ``to_session``, ``to_away`` (privmsg: the recipient as presence found it,
    internal, only when known).

Reading is strict about what it uses: a wrong type, a missing field, an id
beyond 2**53 or a session that does not match its node and client is a
:class:`CodecError` saying which key, never an event made up from bad data.
Keys it does not know are ignored, so a newer node may add fields within a
version.

``to_dict(event, internal=False)`` is the *public* form: the fields a client
is shown (jsonl's objects), without ``v`` and the internal ones
(:data:`INTERNAL_KEYS`).  It cannot be read back.

Extension point: :data:`KINDS` is a table of :class:`Kind` by type name.
:func:`event_kind` builds the entry of an event class from its extra fields;
:func:`reply_kind` the entry of a reply (:mod:`chatd.replies`: names, whois,
room lists...) from its dataclass fields, whose annotations say how each is
written: ``str``, ``int``, ``float`` (seconds since the epoch), ``bool``,
``str | None``, ``float | None``, ``tuple[str, ...]`` and tuples of records
(frozen dataclasses of such fields: a list of objects).  A reply's fields are
written after the common ones, each only when it differs from its default (a
field without a default always), and they are named apart from the common keys
(:data:`RESERVED_KEYS`).  Every built-in reply is registered here; a plugin
registers its own with ``register(reply_kind(MyReply))``.

``code`` (error)
    The error's stable code (:data:`chatd.replies.ERROR_CODES`); always written,
    ``"error"`` when it was not given (and when an older writer left it out).
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin

from .events import (
    AccountChange,
    Action,
    Away,
    Error,
    Event,
    Invite,
    Join,
    Message,
    ModeChange,
    ModeItem,
    NickChange,
    Notice,
    Part,
    PrivateMessage,
    Quit,
    RealnameChange,
    RoomCreated,
    RoomRemoved,
    Source,
    Topic,
)
from .replies import RECORD_TYPES, REPLY_TYPES

#: The version of the form :func:`to_dict` writes.
SCHEMA_VERSION = 1
#: The versions :func:`from_dict` reads.
SUPPORTED_VERSIONS = frozenset({1})
#: Ids and client numbers are exact as JSON numbers in every language below this.
ID_LIMIT = 2**53
#: Times are from the epoch to the end of year 9999 (what every protocol can word as a
#: date: jsonl's ISO text, the line protocol's stamps).
TIME_LIMIT = 253402300800.0

#: Keys the public form (``internal=False``, what jsonl shows) leaves out.
INTERNAL_KEYS = ("v", "node", "user", "account", "realname", "session", "client", "marker",
                 "quiet",
                 "kicked_by", "to_account", "to_session", "to_away")


class CodecError(ValueError):
    """A dict (or JSON text) that is not an event of a version this codec reads; the
    message names the key and what is wrong with it."""


# -- values: checked on the way in ------------------------------------------------------------


_REQUIRED: Any = object()


def _string(d: dict[str, Any], key: str, default: str = _REQUIRED) -> str:
    value = d.get(key, default)
    if value is _REQUIRED:
        raise CodecError(f"{key!r} is missing")
    if value.__class__ is not str:
        raise CodecError(f"{key!r} must be a string, not {type(value).__name__}")
    return value  # type: ignore[no-any-return]


def _optional_string(d: dict[str, Any], key: str) -> str | None:
    value = d.get(key)
    if value is not None and not isinstance(value, str):
        raise CodecError(f"{key!r} must be a string, not {type(value).__name__}")
    return value


def _integer(d: dict[str, Any], key: str) -> int:
    value = d.get(key)
    if value is None:
        raise CodecError(f"{key!r} is missing")
    if value.__class__ is not int or not 0 <= value < ID_LIMIT:
        raise CodecError(f"{key!r} must be a whole number from 0 below 2**53, not {value!r}")
    return value


def _flag(d: dict[str, Any], key: str) -> bool:
    value = d.get(key, False)
    if value.__class__ is not bool:
        raise CodecError(f"{key!r} must be true or false, not {value!r}")
    return value


def _names(d: dict[str, Any], key: str) -> tuple[str, ...]:
    value = d.get(key, ())
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise CodecError(f"{key!r} must be a list of strings")
    return tuple(value)


def _time(d: dict[str, Any]) -> float:
    value = d.get("time")
    if value is None:
        raise CodecError("'time' is missing")
    if value.__class__ not in (int, float) or not 0 <= value < TIME_LIMIT:
        raise CodecError(f"'time' must be seconds since the epoch, before the year 10000, "
                         f"not {value!r}")
    return float(value)


# -- the fields every event has ----------------------------------------------------------------


def _encode(event: Event, internal: bool, extras: tuple[Extra, ...]) -> dict[str, Any]:
    """An event's dict: the common fields, then ``extras``, then ``text`` and ``history``.
    (One function, not one per part: jsonl renders every event through it.)"""
    source = event.source
    d: dict[str, Any]
    if internal:
        d = {"v": SCHEMA_VERSION, "type": event.kind, "id": event.id, "time": event.time,
             "from": source.nick}
        if source.node:
            d["node"] = source.node
        if source.ident or source.host:
            d["user"] = source.user
        if source.account is not None:
            d["account"] = source.account
        if source.realname:
            d["realname"] = source.realname
        if source.client_id is not None:
            if source.client_id:
                d["session"] = source.session
            d["client"] = source.client_id
    else:
        d = {"type": event.kind, "id": event.id, "time": event.time, "from": source.nick}
    if source.client_id is None:
        d["server"] = True
        if source.plugin:
            d["plugin"] = source.plugin
        if internal and source.marker:
            d["marker"] = source.marker
    target = event.target
    if target:
        d["room" if target[0] == "#" else "to"] = target
    for extra in extras:
        if internal or not extra.internal:
            value = extra.encode(getattr(event, extra.name))
            if value is not None:
                d[extra.name] = value
    if event.text or event.carries_user_text:
        d["text"] = event.text
    if event.replay:
        d["history"] = True
    return d


def _decode_source(d: dict[str, Any]) -> Source:
    nick = _string(d, "from")
    server = _flag(d, "server")
    if server == ("client" in d):
        raise CodecError("a source is the server ('server': true) or a client ('client': N)")
    client_id = None if server else _integer(d, "client")
    ident, host = "", ""
    user = _string(d, "user", "")
    if user:
        ident, at, host = user.rpartition("@")
        if not at:
            raise CodecError(f"'user' must be ident@host, not {user!r}")
    source = Source(nick, client_id, _optional_string(d, "plugin"), _optional_string(d, "marker"),
                    _string(d, "node", ""), ident, host, _optional_string(d, "account"),
                    _string(d, "realname", ""))
    session = d.get("session")
    if session is not None and session != source.session:
        raise CodecError(f"'session' {session!r} is not the session of its node and client")
    return source


def _decode_target(d: dict[str, Any]) -> str:
    room, to = _optional_string(d, "room"), _optional_string(d, "to")
    if room is not None and to is not None:
        raise CodecError("an event has a 'room' or a 'to', not both")
    if room is not None and not room.startswith("#"):
        raise CodecError(f"'room' must start with #, not {room!r}")
    if to is not None and to.startswith("#"):
        raise CodecError(f"'to' is a nick; a room goes in 'room', not {to!r}")
    return room if room is not None else to or ""


# -- the table of kinds ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Extra:
    """One field an event kind has beyond :class:`~chatd.events.Event`'s: the attribute,
    how it is written (None: left out, for a default) and how it is read back (raises
    :class:`CodecError`)."""

    name: str
    encode: Callable[[Any], Any]
    decode: Callable[[dict[str, Any], str], Any]
    #: Left out of the public form (see :data:`INTERNAL_KEYS`).
    internal: bool = False


#: The extras used by the built-in kinds.
QUIET = Extra("quiet", lambda value: True if value else None, _flag, internal=True)
#: Who kicked the source of a part (internal: jsonl's part is unchanged; IRC's KICK).
KICKED_BY = Extra("kicked_by", lambda value: value or None,
                  lambda d, key: _string(d, key, ""), internal=True)
ROOMS = Extra("rooms", lambda value: list(value) if value else None, _names)
OLD = Extra("old", lambda value: value, lambda d, key: _string(d, key, ""))
NEW = Extra("new", lambda value: value, lambda d, key: _string(d, key, ""))
INVITEE = Extra("invitee", lambda value: value, lambda d, key: _string(d, key, ""))
CODE = Extra("code", lambda value: value, lambda d, key: _string(d, key, "error"))


def _encode_changes(changes: tuple[ModeItem, ...]) -> list[dict[str, Any]] | None:
    """A mode change's items as objects: ``mode``, ``on``, ``arg`` always (a program
    reads one shape), ``nick`` only when it is set."""
    if not changes:
        return None
    return [{"mode": c.mode, "on": c.on, "arg": c.arg, **({"nick": c.nick} if c.nick else {})}
            for c in changes]


def _decode_changes(d: dict[str, Any], key: str) -> tuple[ModeItem, ...]:
    value = d.get(key, ())
    if not isinstance(value, (list, tuple)):
        raise CodecError(f"{key!r} must be a list of objects")
    items = []
    for item in value:
        if not isinstance(item, dict):
            raise CodecError(f"{key!r} must be a list of objects, not {item!r}")
        mode = _string(item, "mode", "")
        if not mode:
            raise CodecError(f"each of {key!r} needs a 'mode'")
        if item.get("on").__class__ is not bool:
            raise CodecError(f"each of {key!r} needs 'on': true or false")
        items.append(ModeItem(mode, item["on"], _string(item, "arg", ""),
                              _string(item, "nick", "")))
    return tuple(items)


def _decode_seconds(d: dict[str, Any], key: str) -> float | None:
    value = d.get(key)
    if value is None:
        return None
    if value.__class__ not in (int, float) or not 0 < value < TIME_LIMIT:
        raise CodecError(f"{key!r} must be a number of seconds above 0, not {value!r}")
    return float(value)


#: A mode change's items and how long it lasts (a ban or mute with a time).
CHANGES = Extra("changes", _encode_changes, _decode_changes)
SECONDS = Extra("seconds", lambda value: None if value is None else
                int(value) if value == int(value) else value, _decode_seconds)
#: A message or private message that is a user's notice (public: jsonl shows it).
NOTICE = Extra("notice", lambda value: True if value else None, _flag)
#: A private message's recipient, as the presence answer found it (internal).
TO_ACCOUNT = Extra("to_account", lambda value: value, _optional_string, internal=True)
TO_SESSION = Extra("to_session", lambda value: value, _optional_string, internal=True)
TO_AWAY = Extra("to_away", lambda value: value, _optional_string, internal=True)
#: An account change's accounts, before and after (absent: none).
OLD_ACCOUNT = Extra("old", lambda value: value, _optional_string)
NEW_ACCOUNT = Extra("new", lambda value: value, _optional_string)


@dataclass(frozen=True, slots=True)
class Kind:
    """One ``type`` of the codec: its class and the two directions.

    ``encode(obj, internal)`` returns the dict (``internal=False``: the public form);
    ``decode(d)`` returns the object or raises :class:`CodecError`.
    """

    name: str
    cls: type
    encode: Callable[[Any, bool], dict[str, Any]]
    decode: Callable[[dict[str, Any]], Any]


def event_kind(cls: type[Event], *extras: Extra) -> Kind:
    """The :class:`Kind` of an event class whose fields beyond the common ones are
    ``extras`` (in the order they are written)."""

    def encode(event: Event, internal: bool) -> dict[str, Any]:
        return _encode(event, internal, extras)

    def decode(d: dict[str, Any]) -> Event:
        fields = {extra.name: extra.decode(d, extra.name) for extra in extras}
        return cls(_integer(d, "id"), _time(d), _decode_source(d), _decode_target(d),
                   _string(d, "text", ""), replay=_flag(d, "history"), **fields)

    return Kind(cls.kind, cls, encode, decode)


#: Every type the codec reads and writes, by its ``type`` name.
KINDS: dict[str, Kind] = {}
_BY_CLASS: dict[type, Kind] = {}


def register(kind: Kind) -> None:
    """Add a type to the codec (a typed reply, a plugin's event...).  Its name must be
    new: a kind's form, once shipped, belongs to its schema version."""
    if kind.name in KINDS or kind.cls in _BY_CLASS:
        raise ValueError(f"the codec already has a kind {kind.name!r} ({kind.cls.__name__})")
    KINDS[kind.name] = kind
    _BY_CLASS[kind.cls] = kind


def unregister(name: str) -> None:
    """Take the kind ``name`` out of the codec (a plugin unloading, a test cleaning up)."""
    kind = KINDS.pop(name)
    del _BY_CLASS[kind.cls]


for _kind in (
    event_kind(Message, NOTICE), event_kind(Action),
    event_kind(PrivateMessage, NOTICE, TO_ACCOUNT, TO_SESSION, TO_AWAY), event_kind(Topic),
    event_kind(Away), event_kind(Join, QUIET), event_kind(Part, QUIET, KICKED_BY),
    event_kind(Quit, ROOMS), event_kind(NickChange, OLD, NEW, ROOMS),
    event_kind(AccountChange, OLD_ACCOUNT, NEW_ACCOUNT, ROOMS),
    event_kind(RealnameChange, ROOMS),
    event_kind(Notice), event_kind(Error, CODE), event_kind(Invite, INVITEE),
    event_kind(ModeChange, CHANGES, SECONDS), event_kind(RoomCreated),
    event_kind(RoomRemoved),
):
    register(_kind)


# -- replies: kinds made from their fields' types ------------------------------------------------

#: The keys every event's dict may have (and jsonl's ``self`` and ``re``): a reply's
#: fields may not be called so, or reading would take them for the source or target.
RESERVED_KEYS = frozenset({
    "v", "type", "id", "time", "from", "server", "plugin", "marker", "node", "user",
    "account", "realname", "session", "client", "to", "text", "history", "self", "re",
    "code",
})

_TUPLE_OF = re.compile(r"tuple\[(\w+), \.\.\.\]\Z")


def _seconds(d: dict[str, Any], key: str) -> float:
    value = d.get(key)
    if value.__class__ not in (int, float) or not 0 <= value < TIME_LIMIT:
        raise CodecError(f"{key!r} must be seconds since the epoch, before the year 10000, "
                         f"not {value!r}")
    return float(value)


def _optional_seconds(d: dict[str, Any], key: str) -> float | None:
    return None if d.get(key) is None else _seconds(d, key)


def _count(d: dict[str, Any], key: str) -> int:
    return _integer(d, key)


def _same(value: Any) -> Any:
    return value


#: How a field of each annotation is written and read (records are handled apart).
_VALUES: dict[str, tuple[Callable[[Any], Any], Callable[[dict[str, Any], str], Any]]] = {
    "str": (_same, _string),
    "int": (_same, _count),
    "bool": (_same, _flag),
    "float": (_same, _seconds),
    "str | None": (_same, _optional_string),
    "float | None": (_same, _optional_seconds),
    "tuple[str, ...]": (list, _names),
}


def _annotation(tp: Any) -> str:
    """A field's type as the text :data:`_VALUES` knows (annotations are text under
    ``from __future__ import annotations``; a module without it gives types)."""
    if isinstance(tp, str):
        return " ".join(tp.split())
    if tp in (str, int, float, bool):
        return str(tp.__name__)
    origin, args = get_origin(tp), get_args(tp)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"tuple[{_annotation(args[0])}, ...]"
    if (origin is Union or isinstance(tp, types.UnionType)) and len(args) == 2 \
            and type(None) in args:
        inner = args[0] if args[1] is type(None) else args[1]
        return f"{_annotation(inner)} | None"
    return str(getattr(tp, "__name__", tp))


def _field_extra(f: dataclasses.Field[Any], records: dict[str, type], owner: str) -> Extra:
    """The :class:`Extra` of one dataclass field: written unless it has its default,
    read back checked (a field with no default is required)."""
    annotation = _annotation(f.type)
    values = _VALUES.get(annotation)
    if values is None:
        match = _TUPLE_OF.match(annotation)
        record = records.get(match.group(1)) if match else None
        if record is None:
            raise TypeError(f"the codec cannot write {owner}.{f.name} of type {annotation} "
                            "(see chatd.codec.reply_kind)")
        values = _record_values(record, records)
    write, read = values
    # A field with no default is always written, but one that may be None is left
    # out while None (as jsonl leaves out what is not there) and read back as None.
    optional = annotation.endswith("| None")
    required = f.default is dataclasses.MISSING and not optional
    default = None if f.default is dataclasses.MISSING else f.default

    def encode(value: Any) -> Any:
        if value is None or (not required and value == default):
            return None
        return write(value)

    def decode(d: dict[str, Any], key: str) -> Any:
        if key not in d:
            if required:
                raise CodecError(f"{key!r} is missing")
            return default
        return read(d, key)

    return Extra(f.name, encode, decode)


def _record_values(cls: type, records: dict[str, type]) -> tuple[
        Callable[[Any], Any], Callable[[dict[str, Any], str], Any]]:
    """How a tuple of ``cls`` records is written (a list of objects) and read."""
    extras = tuple(_field_extra(f, records, cls.__name__) for f in dataclasses.fields(cls))

    def write(items: tuple[Any, ...]) -> list[dict[str, Any]]:
        written = []
        for item in items:
            obj = {}
            for extra in extras:
                value = extra.encode(getattr(item, extra.name))
                if value is not None:
                    obj[extra.name] = value
            written.append(obj)
        return written

    def read(d: dict[str, Any], key: str) -> tuple[Any, ...]:
        items = d.get(key)
        if not isinstance(items, list):
            raise CodecError(f"{key!r} must be a list of objects")
        made = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise CodecError(f"{key!r}[{index}] must be an object")
            try:
                made.append(cls(**{e.name: e.decode(item, e.name) for e in extras}))
            except CodecError as exc:
                raise CodecError(f"{key!r}[{index}]: {exc}") from None
        return tuple(made)

    return write, read


def reply_kind(cls: type[Event], *records: type) -> Kind:
    """The :class:`Kind` of a reply class (see :mod:`chatd.replies`): its fields beyond
    the event's, written and read by their annotations; ``records`` names the record
    classes its tuples hold beyond chatd's own (:data:`chatd.replies.RECORD_TYPES`).
    A reply's target is the client it answers (``to``), never a room.  Raises
    TypeError for a field the codec cannot write, ValueError for a reserved name."""
    known = dict(RECORD_TYPES)
    known.update((record.__name__, record) for record in records)
    common = {f.name for f in dataclasses.fields(Event)}
    extras = tuple(_field_extra(f, known, cls.__name__)
                   for f in dataclasses.fields(cls) if f.name not in common)
    clash = sorted({extra.name for extra in extras} & RESERVED_KEYS)
    if clash:
        raise ValueError(f"{cls.__name__}: a reply's fields may not be named "
                         f"{', '.join(clash)} (chatd.codec.RESERVED_KEYS)")

    def encode(reply: Event, internal: bool) -> dict[str, Any]:
        return _encode(reply, internal, extras)

    def decode(d: dict[str, Any]) -> Event:
        fields = {extra.name: extra.decode(d, extra.name) for extra in extras}
        to = _optional_string(d, "to") or ""
        return cls(_integer(d, "id"), _time(d), _decode_source(d), to, _string(d, "text", ""),
                   replay=_flag(d, "history"), **fields)

    return Kind(cls.kind, cls, encode, decode)


for _reply in REPLY_TYPES.values():
    register(reply_kind(_reply))


# -- the API -----------------------------------------------------------------------------------


def to_dict(obj: Any, *, internal: bool = True) -> dict[str, Any]:
    """``obj`` (an event, or any registered kind) as a dict of JSON values; with
    ``internal=False`` the public form (see the module docstring)."""
    kind = _BY_CLASS.get(obj.__class__)
    if kind is None:
        raise CodecError(f"the codec has no kind for {obj.__class__.__name__}")
    return kind.encode(obj, internal)


def from_dict(d: Any) -> Any:
    """The object ``d`` describes (written by :func:`to_dict`, here or on another node),
    or :class:`CodecError` saying what is wrong."""
    if not isinstance(d, dict):
        raise CodecError(f"expected an object, not {type(d).__name__}")
    version = d.get("v")
    if version.__class__ is not int or version not in SUPPORTED_VERSIONS:
        known = ", ".join(str(v) for v in sorted(SUPPORTED_VERSIONS))
        raise CodecError(f"unknown schema version 'v': {version!r} (this chatd reads {known})")
    name = d.get("type")
    kind = KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise CodecError(f"unknown 'type': {name!r}")
    return kind.decode(d)


def dumps(obj: Any) -> str:
    """:func:`to_dict` as one line of JSON (UTF-8 text, no spaces)."""
    return json.dumps(to_dict(obj), ensure_ascii=False, separators=(",", ":"))


def loads(text: str | bytes) -> Any:
    """:func:`from_dict` of one JSON document; text that is not JSON is a CodecError."""
    try:
        d = json.loads(text)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise CodecError(f"not JSON: {exc}") from None
    except RecursionError:  # nested past the parser's limit: a hostile payload
        raise CodecError("not JSON we read: nested too deep") from None
    return from_dict(d)


__all__ = [
    "ID_LIMIT",
    "INTERNAL_KEYS",
    "KINDS",
    "RESERVED_KEYS",
    "SCHEMA_VERSION",
    "SUPPORTED_VERSIONS",
    "TIME_LIMIT",
    "CodecError",
    "Extra",
    "Kind",
    "dumps",
    "event_kind",
    "from_dict",
    "loads",
    "register",
    "reply_kind",
    "to_dict",
    "unregister",
]
