"""Events: what happened in the chat, created once, rendered by every protocol.

An event is plain, immutable data (a frozen dataclass, the h11 habit): who did
what, to which room or nick, when.  The chat domain creates each event exactly
once; the delivery backend hands the *same* object to every recipient's
protocol, and each protocol turns it into its own bytes (a ``<nick> text``
line for ``nc``, a JSON object for a bot).  Nothing here knows about sockets,
plugins or protocols, so history, bridges and other nodes can keep and ship
events as they are.

Every event has:

``id``
    A number increasing in creation order (unique within one server process; a
    plugin that stores events moves the counter past what it stored at startup,
    ``server.continue_event_ids``, as the history plugin does).
``time``
    Server time (seconds since the epoch, ``time.time()``) when it happened.
``source``
    A :class:`Source`: the client that caused it (with the nick it had then), or
    the server, and which plugin produced it.
``target``
    A room name (``"#dev"``), a nick (private messages, notices and errors for
    one client), or ``""`` (a quit, or a notice for everyone).
``text``
    The text: a message, a reason, a topic.  Text from clients is one line;
    text from plugins may hold newlines, which protocols render as
    continuation lines (never as free lines).

``replay``
    True for an event replayed from history (see the *history* plugin): it
    happened earlier, possibly before this process started; ``id`` and ``time``
    are the ones it had then, and ``source.client_id`` is 0.  Protocols mark
    such events and show their time.

``kind`` (a class attribute) names the type in protocols and logs, and
``carries_user_text`` says whether ``text`` was written by a user: such events
pass ``chatd_filter_message`` before they are delivered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class Source:
    """Who caused an event: a client, or the server (and which plugin, if one)."""

    #: The client's nick when the event happened, or the server's name.
    nick: str
    #: The client's id (unique in this process), or None for the server.
    client_id: int | None = None
    #: For server events: the plugin that produced it (None: the core).
    plugin: str | None = None
    #: For server events made by a plugin that is not part of chatd (not a built-in):
    #: its name, which protocols show with the line (``*** [mentions] ...``), so text a
    #: plugin passes on never reads as a sentence of the server's own.  None otherwise.
    marker: str | None = None

    @property
    def is_server(self) -> bool:
        """True for events the server (or a plugin) produced, not a client."""
        return self.client_id is None


@dataclass(frozen=True, slots=True)
class Event:
    """The fields every event has; see the module docstring."""

    id: int
    time: float
    source: Source
    target: str
    text: str
    replay: bool = field(default=False, kw_only=True)

    kind: ClassVar[str] = "event"
    carries_user_text: ClassVar[bool] = False


# -- chat: text a user wrote ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message(Event):
    """A chat line to a room (``target``); not echoed to its sender."""

    kind: ClassVar[str] = "message"
    carries_user_text: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Action(Event):
    """``/me text`` in a room: "alice waves"; not echoed to its sender."""

    kind: ClassVar[str] = "action"
    carries_user_text: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class PrivateMessage(Event):
    """A message to one nick (``target``); its sender sees a copy marked as sent."""

    kind: ClassVar[str] = "privmsg"
    carries_user_text: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Topic(Event):
    """A room's (``target``) topic was set to ``text`` (``""``: cleared)."""

    kind: ClassVar[str] = "topic"
    carries_user_text: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Away(Event):
    """``source`` set its away message (``/away text``) to ``text``; ``target`` is its
    nick.  Filtered like everything a user writes, then kept (``client.away``) and
    shown to whoever asks (``/whois``, a private message); delivered to nobody."""

    kind: ClassVar[str] = "away"
    carries_user_text: ClassVar[bool] = True


# -- presence ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Join(Event):
    """``source`` joined the room ``target``; ``text`` is empty.

    ``quiet``: the code that made the client join tells it in its own words (``/join``
    does), so the line protocol shows the client no line of its own for it.
    """

    quiet: bool = field(default=False, kw_only=True)

    kind: ClassVar[str] = "join"


@dataclass(frozen=True, slots=True)
class Part(Event):
    """``source`` left the room ``target``; ``text`` is the reason (may be empty).

    ``quiet``: as for :class:`Join`.
    """

    quiet: bool = field(default=False, kw_only=True)

    kind: ClassVar[str] = "part"
    carries_user_text: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Quit(Event):
    """``source`` disconnected; ``text`` is the reason, ``rooms`` the rooms it was in."""

    rooms: tuple[str, ...] = ()

    kind: ClassVar[str] = "quit"
    carries_user_text: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class NickChange(Event):
    """``old`` is now known as ``new`` (``source.nick`` is the new nick)."""

    old: str = ""
    new: str = ""
    rooms: tuple[str, ...] = ()

    kind: ClassVar[str] = "nick"


# -- the server talking -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Notice(Event):
    """Something the server (or a plugin, ``source.plugin``) tells a client or a room."""

    kind: ClassVar[str] = "notice"


@dataclass(frozen=True, slots=True)
class Error(Event):
    """An error for one client alone (``target`` is its nick)."""

    kind: ClassVar[str] = "error"


# -- rooms (for plugins, history and other nodes; not shown to clients) ------------------------


@dataclass(frozen=True, slots=True)
class RoomCreated(Event):
    """The room ``target`` came into existence (its first member joined)."""

    kind: ClassVar[str] = "room_created"


@dataclass(frozen=True, slots=True)
class RoomRemoved(Event):
    """The room ``target`` is gone (its last member left)."""

    kind: ClassVar[str] = "room_removed"


#: Every event type by its ``kind``.
EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        Message, Action, PrivateMessage, Topic, Away, Join, Part, Quit, NickChange,
        Notice, Error, RoomCreated, RoomRemoved,
    )
}

#: The kinds whose text a user wrote (filtered by ``chatd_filter_message``).
USER_TEXT_KINDS = frozenset(k for k, cls in EVENT_TYPES.items() if cls.carries_user_text)

__all__ = [
    "EVENT_TYPES",
    "USER_TEXT_KINDS",
    "Action",
    "Away",
    "Error",
    "Event",
    "Join",
    "Message",
    "NickChange",
    "Notice",
    "Part",
    "PrivateMessage",
    "Quit",
    "RoomCreated",
    "RoomRemoved",
    "Source",
    "Topic",
]
