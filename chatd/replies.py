"""Replies as data: what a command answers, as typed events every protocol words its own way.

``/who`` used to answer with one English sentence (``#dev has 3 members: ...``),
which a bot had to parse and an IRC listener would have had to turn back into
numerics.  A command now answers with a *reply*: an event (a subclass of
:class:`~chatd.events.Event`, so it has an id and a time, keeps its order
with the client's other events through the delivery's ``to_client``, and goes
through the event codec and every renderer like any event) whose fields are
the answer itself.  The line protocol words each kind as the sentences a
netcat user always read; jsonl shows the codec's public form (an object per
kind, docs/protocols.md); an IRC listener will send numerics (the ``IRC``
column below names them, so the fields carry what those need).

=====================  =================  ==========================================  ==========
class                  ``kind``           answers                                     IRC
=====================  =================  ==========================================  ==========
:class:`Names`         ``names``          ``/who``, ``/names``; the greeting of a     352/315,
                                          ``/join`` (``greeting``)                    353/366
                                                                                      (332 on
                                                                                      join)
:class:`RoomList`      ``rooms``          ``/rooms`` (yours first), ``/list`` pages   321-323
:class:`Whois`         ``whois``          ``/whois NICK``                             311/312/
                                                                                      317/319/
                                                                                      330/301/
                                                                                      318
:class:`RoomTopic`     ``room_topic``     ``/topic`` without text                     332/331
:class:`Help`          ``help``           ``/help``, ``/help NAME``                   704-706
:class:`HistoryMarker` ``history``        the edges of a replay or of ``/history``    BATCH
:class:`BanList`       ``bans``           ``/bans``                                   367/368,
                                                                                      728/729
:class:`Online`        ``online``         ``/ison``, ``/userhost``                    303, 302
:class:`RoomModes`     ``room_modes``     ``/modes``                                  324
:class:`AwayStatus`    ``away_status``    ``/away``                                   306, 305
:class:`ServerCounts`  ``server_counts``  ``/lusers`` (and after IRC registration)    251-255,
                                                                                      265/266
=====================  =================  ==========================================  ==========

A reply's ``target`` is the nick of the client it answers, its ``source`` the
server (and the plugin that answered, which the line protocol shows for a
plugin that is not a built-in, as it does for a notice); its ``text`` is empty.
The domain makes it (``client.reply(Names, room=..., members=..., total=...)``:
the id, the time, the source and the target are filled in) and delivers it to
that client alone.  A reply is never stored, never replayed and never shown to
anyone else.

Errors are :class:`chatd.events.Error` events with a stable ``code``;
:data:`ERROR_CODES` is the table (docs/protocols.md shows it to bot authors).
Plugins raise ``CommandError(text, code=...)`` or call
``client.error(text, code=...)``; a code of their own is fine (lowercase words
joined by ``_``), and ``error`` is what an error nothing more was said of gets.

Fields.  A reply's fields are its dataclass fields beyond the event's, all
keyword-only, named apart from the keys every event has in the codec's form
(``node``, ``user``, ``account``... :data:`chatd.codec.RESERVED_KEYS`: so
``/whois`` says ``userhost``, ``connected_to`` and ``identified_as``); a field
without a default is always written by the codec, one with a default is left
out while it has it (``away`` only when true, ``account``
only when there is one).  Lists are tuples of small frozen records
(:class:`MemberEntry`, :class:`RoomEntry`, :class:`HelpEntry`, :class:`BanEntry`,
:class:`OnlineEntry`)
whose fields follow the same rule.  The codec (:func:`chatd.codec.reply_kind`)
reads the field types from the annotations, so a plugin's own reply kind needs
nothing but its class and ``chatd.codec.register(chatd.codec.reply_kind(cls))``.
Times are seconds since the epoch (jsonl words them as ISO text, like an
event's ``time``).

This module is data only (layer 1, beside :mod:`chatd.events`): the codec
imports it and registers every kind here; it imports nothing of chatd but the
events.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .events import Event

# -- records: the items of a reply's lists ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberEntry:
    """One member of a room, as ``/who`` lists it, with its marks.

    (The delivery backend's answer, :class:`chatd.Member`, is who is in a room;
    this is how a reply lists one: ``server.member_entries`` makes these from
    those, adding the room-operator mark.)
    """

    #: Its nick.
    nick: str
    #: ``ident@host`` (its address cloaked unless the server shows addresses): IRC's
    #: ``user`` and ``host`` of a WHO line.
    userhost: str = ""
    #: The registered nick it identified as, or None.
    account: str | None = None
    #: It set an away message (``/away``); ``/whois`` shows the message.
    away: bool = False
    #: It is one of the room's operators (``room.operators``: its founder and the
    #: operators it named, by account); IRC's ``@``.
    operator: bool = False
    #: Its real name (IRC's ``USER``, ``/setname``), "" when it gave none: IRC's
    #: WHO line ends with it.
    real_name: str = ""


@dataclass(frozen=True, slots=True)
class RoomEntry:
    """One room of a listing."""

    name: str
    #: How many members it has.
    members: int
    topic: str = ""
    #: The client that asked is in it.
    joined: bool = False
    #: It is that client's current room.
    current: bool = False


def room_entries(rooms: Iterable[Any], client: Any) -> tuple[RoomEntry, ...]:
    """``rooms`` (anything with ``name``, ``members`` and ``topic``: the delivery's
    ``RoomInfo``) as a listing's entries, marked for ``client``, the one that asked
    (anything with ``rooms`` and ``room``: a ``Client``): in it, its current one."""
    joined = {room.name.lower() for room in client.rooms}
    here = client.room.name.lower() if client.room is not None else None
    return tuple(RoomEntry(room.name, room.members, room.topic, room.name.lower() in joined,
                           room.name.lower() == here) for room in rooms)


@dataclass(frozen=True, slots=True)
class HelpEntry:
    """One command, as ``/help`` lists it."""

    name: str
    #: The synopsis, ``/msg NICK text`` (``/name`` when the command gives none).
    usage: str
    #: One line: what it does.
    help: str = ""
    #: The plugin that provides it.
    plugin: str = ""


@dataclass(frozen=True, slots=True)
class OnlineEntry:
    """One connected nick, as ``/ison`` and ``/userhost`` name it."""

    #: Its nick as it is now (the one asked about may differ in case).
    nick: str
    #: ``ident@host`` (its address cloaked unless the server shows addresses).
    userhost: str = ""
    #: It set an away message.
    away: bool = False


@dataclass(frozen=True, slots=True)
class BanEntry:
    """One ban or mute of a room, as ``/bans`` lists it."""

    #: ``ban`` or ``mute``.
    kind: str
    #: The nick it was set for, or the mask it was set as.
    subject: str
    #: The nick of the operator who set it.
    set_by: str
    #: When it ends, seconds since the epoch; None: until lifted.
    until: float | None = None
    reason: str = ""
    #: The masks a nick's ban stands for (an address among them: its cloak unless the
    #: viewer is a server operator): shown to the room's operators only, empty for
    #: everyone else.
    masks: tuple[str, ...] = ()


# -- the replies ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply(Event):
    """What every reply is: an event for one client (``target``: its nick), made by the
    server, with no text of its own.  Subclasses add their fields (keyword-only)."""

    text: str = ""

    kind: ClassVar[str] = "reply"


@dataclass(frozen=True, slots=True)
class Names(Reply):
    """A room's members (``/who``, ``/names``), or the greeting of a ``/join``.

    ``members`` are in name order, at most the first hundred (``rooms.WHO_SHOWN``);
    ``total`` counts them all.  In a greeting (``greeting``), ``members`` are the
    others listed plus the client that joined.
    """

    room: str = field(kw_only=True)
    members: tuple[MemberEntry, ...] = field(kw_only=True)
    total: int = field(kw_only=True)
    topic: str = field(default="", kw_only=True)
    #: The answer to the client's own ``/join`` of ``room`` (the line protocol:
    #: ``alice joined #dev``, the topic, ``also in #dev: ...``).
    greeting: bool = field(default=False, kw_only=True)
    #: The answer to ``/who`` rather than ``/names`` (the same members; IRC words
    #: them differently: WHO's 352/315, NAMES' 353/366).
    who: bool = field(default=False, kw_only=True)

    kind: ClassVar[str] = "names"


@dataclass(frozen=True, slots=True)
class RoomList(Reply):
    """Rooms with their sizes: ``/rooms`` (the client's own first, then others, in name
    order; ``page`` 0) or a page of ``/list`` (``page`` of ``pages``, ``per_page`` a
    page, in name order)."""

    rooms: tuple[RoomEntry, ...] = field(kw_only=True)
    #: How many rooms the server has.
    total: int = field(kw_only=True)
    page: int = field(default=0, kw_only=True)
    pages: int = field(default=0, kw_only=True)
    per_page: int = field(default=0, kw_only=True)

    kind: ClassVar[str] = "rooms"


@dataclass(frozen=True, slots=True)
class Whois(Reply):
    """Who someone is: ``/whois NICK``."""

    nick: str = field(kw_only=True)
    #: ``ident@host`` (a cloak unless the server shows addresses).
    userhost: str = field(kw_only=True)
    #: The node it is connected to (``server.node_id``).
    connected_to: str = field(kw_only=True)
    #: The rooms it is in, in join order.
    rooms: tuple[str, ...] = field(kw_only=True)
    #: When it connected, seconds since the epoch.
    connected_at: float = field(kw_only=True)
    #: Seconds since its last line.
    idle: int = field(kw_only=True)
    #: The registered nick it identified as, or None.
    identified_as: str | None = field(default=None, kw_only=True)
    #: Its away message, or None.
    away: str | None = field(default=None, kw_only=True)
    #: Its real address: for server operators only (None for everyone else).
    address: str | None = field(default=None, kw_only=True)
    #: Its real name (IRC's ``USER``, ``/setname``); "" when it gave none.
    real_name: str = field(default="", kw_only=True)

    kind: ClassVar[str] = "whois"


@dataclass(frozen=True, slots=True)
class RoomTopic(Reply):
    """A room's topic, asked for (``/topic``); ``""``: it has none.  (The ``topic``
    event is the topic being *set*.)"""

    room: str = field(kw_only=True)
    topic: str = field(kw_only=True)

    kind: ClassVar[str] = "room_topic"


@dataclass(frozen=True, slots=True)
class Help(Reply):
    """``/help``: every command, grouped by plugin (in plugin order, then name); or
    ``/help NAME``: that one (``command``), with its longer text (``details``)."""

    commands: tuple[HelpEntry, ...] = field(kw_only=True)
    #: The command asked about; "" for the list.
    command: str = field(default="", kw_only=True)
    details: str = field(default="", kw_only=True)

    kind: ClassVar[str] = "help"


@dataclass(frozen=True, slots=True)
class HistoryMarker(Reply):
    """Where lines replayed from history start or end (``edge``: ``start``, ``end``),
    around the replayed events themselves (``"history": true``).

    ``room``: a room's history (on joining it, or ``/history``); ``nick``: the private
    conversation with that nick (``/history NICK``).  ``count``: the lines between
    the two markers (0: none; both markers still come).  ``left_out``: lines from
    people the client ignores that were skipped.  ``live``: live chat follows (the
    replay on joining a room), rather than an answer to ``/history``.
    """

    edge: str = field(kw_only=True)
    count: int = field(kw_only=True)
    room: str = field(default="", kw_only=True)
    nick: str = field(default="", kw_only=True)
    left_out: int = field(default=0, kw_only=True)
    live: bool = field(default=False, kw_only=True)

    kind: ClassVar[str] = "history"


@dataclass(frozen=True, slots=True)
class BanList(Reply):
    """A room's active bans and mutes (``/bans``), oldest first."""

    room: str = field(kw_only=True)
    entries: tuple[BanEntry, ...] = field(kw_only=True)

    kind: ClassVar[str] = "bans"


@dataclass(frozen=True, slots=True)
class Online(Reply):
    """Which of the nicks asked about are connected, on any node: ``/ison`` (IRC's
    ISON, 303) and ``/userhost`` (IRC's USERHOST, 302), ``command`` says which."""

    #: ``ison`` or ``userhost``.
    command: str = field(kw_only=True)
    #: The nicks asked about, as given.
    asked: tuple[str, ...] = field(kw_only=True)
    #: Those connected, in the order asked.
    online: tuple[OnlineEntry, ...] = field(kw_only=True)

    kind: ClassVar[str] = "online"


@dataclass(frozen=True, slots=True)
class RoomModes(Reply):
    """A room's settings as IRC's channel modes read them (``/modes``: IRC's
    ``MODE #room``, 324): ``+i`` invite-only, ``+t`` topic-lock."""

    room: str = field(kw_only=True)
    invite_only: bool = field(default=False, kw_only=True)
    topic_lock: bool = field(default=False, kw_only=True)

    kind: ClassVar[str] = "room_modes"


@dataclass(frozen=True, slots=True)
class AwayStatus(Reply):
    """Whether you are away now (``/away text``: away with ``away``; ``/away`` alone:
    back, ``away`` None): IRC's 306 and 305."""

    #: Your away message; None: you are back.
    away: str | None = field(default=None, kw_only=True)

    kind: ClassVar[str] = "away_status"


@dataclass(frozen=True, slots=True)
class ServerCounts(Reply):
    """How many are here (``/lusers``; IRC's LUSERS: 251-255, 265/266, also sent after
    an IRC registration), counted by this node: the users and rooms of a cluster's
    other nodes are not in it yet (``servers`` is 1)."""

    #: Clients with a session (a nick): this node's.
    users: int = field(kw_only=True)
    #: Of them, hidden from lists: chatd has no invisible users (IRC's ``+i``), so 0.
    invisible: int = field(kw_only=True)
    #: Of them, server operators (``/oper``).
    operators: int = field(kw_only=True)
    #: Connections not yet a session (a TLS handshake, an IRC registration, a line
    #: client's first quarter of a second).
    unknown: int = field(kw_only=True)
    #: Rooms that exist now (each has a member).
    rooms: int = field(kw_only=True)
    #: The most users this node had at once since it started.
    most: int = field(kw_only=True)
    #: The servers counted: this one.
    servers: int = field(kw_only=True)

    kind: ClassVar[str] = "server_counts"


#: Every reply type by its ``kind`` (the codec registers each).
REPLY_TYPES: dict[str, type[Reply]] = {
    cls.kind: cls for cls in (Names, RoomList, Whois, RoomTopic, Help, HistoryMarker, BanList,
                              Online, RoomModes, AwayStatus, ServerCounts)
}

#: The record types a reply's lists hold, by class name (the codec reads annotations).
RECORD_TYPES: dict[str, type] = {
    cls.__name__: cls for cls in (MemberEntry, RoomEntry, HelpEntry, BanEntry, OnlineEntry)
}


# -- error codes ---------------------------------------------------------------------------------

#: Every error code chatd and its built-in plugins use, with what it means (and, where
#: one fits, the IRC numeric an IRC listener will send for it).  Stable: a code, once
#: shipped, keeps its meaning; new ones may be added.  Plugins may use their own.
ERROR_CODES: dict[str, str] = {
    "error": "an error nothing more specific was said of (a plugin's CommandError without "
             "a code)",
    "internal_error": "a plugin failed while handling your request; the server goes on",
    # what was sent
    "unknown_command": "no such command (IRC 421)",
    "usage": "missing or wrong arguments; the text ends with the usage line (IRC 461)",
    "malformed": "a jsonl request that is not what a request may be (not JSON, a field "
                 "of the wrong type...)",
    "line_too_long": "the line was longer than limits.max_line_bytes and was not sent "
                     "(IRC 417)",
    "bad_characters": "control or invisible characters where a command needs exact text "
                      "(a nick, a password)",
    "excess_flood": "more input waiting than the server keeps; the connection is closed",
    "partial_line_timeout": "an unfinished line waited longer than "
                            "limits.partial_line_timeout_seconds; the connection is closed",
    "idle_timeout": "nothing sent for longer than limits.idle_timeout_seconds; the "
                    "connection is closed",
    "registration_timeout": "the connection did not become a client in time; it is closed",
    "message_too_big": "a WebSocket message longer than limits.max_line_bytes; the "
                       "connection is closed (1009)",
    "binary_message": "a WebSocket binary message (jsonl is text); the connection is closed "
                      "(1003)",
    "ping_timeout": "no answer to the server's PING in time; the connection is closed",
    # nicks
    "no_such_nick": "nobody has that nick (IRC 401)",
    "erroneous_nick": "not a valid nick (IRC 432)",
    "nick_in_use": "someone else has that nick, or one that reads the same (IRC 433)",
    "nick_refused": "a plugin refused the nick (chatd_check_nick) without a code of its own",
    "nick_registered": "the nick is registered to someone else: /identify if it is yours "
                       "(IRC 433)",
    "invalid_realname": "not a real name chatd keeps (/setname: too long, blank, control "
                        "or invisible characters; IRC FAIL SETNAME INVALID_REALNAME)",
    # rooms
    "no_such_room": "no room by that name (IRC 403)",
    "bad_room_name": "not a valid room name (IRC 479)",
    "not_in_room": "you are not in that room, or in any room (IRC 442)",
    "already_in_room": "that client is already in the room (IRC 443)",
    "last_room": "the line protocol keeps you in one room at least: /join another first",
    "too_many_rooms": "you are in as many rooms as one may be (IRC 405)",
    "rooms_full": "the server has as many rooms as it may; join one that exists",
    "look_alike": "the name reads like another room's; choose one that reads differently",
    "join_refused": "a plugin refused the join (chatd_check_join) without a code of its own",
    "banned": "you are banned from the room (IRC 474)",
    "invite_only": "the room is invite-only and you were not invited (IRC 473)",
    # speech
    "rejected": "a filter refused what you wrote (chatd_filter_message) without a code "
                "of its own; nothing was sent",
    "muted": "you are muted in the room; nothing was sent (IRC 404)",
    "topic_locked": "only the room's operators set its topic (IRC 482)",
    "speak_refused": "a plugin's post for you to a room was refused (chatd_check_speak)",
    "blocked": "a filter found something it does not pass (the wordfilter plugin)",
    # permissions and accounts
    "not_operator": "the command is for the room's or the server's operators "
                    "(IRC 482, 481)",
    "not_registered": "that nick or room is not registered",
    "already_registered": "that nick or room is registered already",
    "not_identified": "identify first (/identify): the command acts for your account",
    "wrong_password": "the password is wrong (IRC 464)",
    "password_required": "this listener asks for its password first (jsonl: "
                         "{\"cmd\": \"pass\", \"password\": ...}; IRC 464)",
    "too_many_attempts": "too many failed attempts; try again later (or disconnected)",
    "unavailable": "the server cannot do it right now (its database is failing, a "
                   "feature is off); try again later",
    "not_found": "nothing matches (a ban to lift, a page of rooms, a setting)",
    "limit": "a limit of the server's was reached (bans a room may hold, nicks an "
             "address may register...)",
    "bad_argument": "an argument is not what it must be (a time, a mask, a setting's "
                    "value); the text says what it may be",
    "user_not_in_room": "the nick you named is not in that room (IRC 441)",
    "not_allowed": "the server does not do that (ban an operator, register the default "
                   "room, ignore yourself...)",
    "no_change": "it is so already (an operator named twice, a nick already ignored, "
                 "already identified)",
    "conflict": "something changed while the command waited (a nick, a password); "
                "nothing was done",
    "weak_password": "the password is too short, too common or the nick itself",
    "failed": "the command was tried and failed (a reload); the log says why",
    "timeout": "the server did not get an answer in time; try again",
    "remote_user": "the user is connected to another node of the cluster, and the "
                   "command acts only on users of this one",
}


__all__ = [
    "ERROR_CODES",
    "RECORD_TYPES",
    "REPLY_TYPES",
    "AwayStatus",
    "BanEntry",
    "BanList",
    "Help",
    "HelpEntry",
    "HistoryMarker",
    "MemberEntry",
    "Names",
    "Online",
    "OnlineEntry",
    "Reply",
    "RoomEntry",
    "RoomList",
    "RoomModes",
    "RoomTopic",
    "ServerCounts",
    "Whois",
    "room_entries",
]
