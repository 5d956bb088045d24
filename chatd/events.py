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
    A number increasing in creation order, unique across the nodes of a cluster
    and never decreasing across restarts (see "Event ids" below; a plugin that
    stores events moves the counter past what it stored at startup,
    ``server.continue_event_ids``, as the history plugin does).
``time``
    Server time (seconds since the epoch, ``time.time()``) when it happened.
``source``
    A :class:`Source`: the client that caused it (with the nick it had then), or
    the server, and which plugin produced it; with the node it happened on and the
    client's identity there (``user``, ``account``, ``session``: see :class:`Source`).
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

Event ids
---------
Ids are plain ints, exact as JSON numbers (below 2**53), so every language a bot
or another node is written in reads them as they are.  A node numbers its events
from its clock in microseconds (:func:`first_event_id`), so a restarted process
starts above every id the previous one gave (most events are stored nowhere:
"one past the largest stored id" would not be enough), and ids stay below 2**53
until the year 2255: the Snowflake habit, with the node in the low digits
instead of in bits.  A cluster of ``server.node_count`` nodes gives node number
``k`` the ids ``≡ k (mod node_count)``: each node steps by ``node_count`` from
the first such id at or after its clock, so two nodes never make the same id,
ids of all nodes stay near the clock (comparable across nodes, roughly in time
order), and one node alone (``node_count: 1``, the default) numbers 1 by 1.  A
node's counter would overtake its clock only by making more than
``1,000,000 / node_count`` events a second on average since it started; the
history plugin's ``continue_event_ids`` covers what it stored even then.

Identity
--------
"Is this my own event" is decided by the session, never by a per-process
number: :attr:`Source.session` is ``"node:client_id"``, unique in a cluster
whose nodes have distinct ``server.node_id`` values, so an event from another
node whose client number equals a local client's id is not that client's.
Renderers receive the viewer's session string (:meth:`Source.is_session`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class Source:
    """Who caused an event: a client, or the server (and which plugin, if one), on
    which node, with the client's identity there.

    ``user`` and ``session`` are derived (properties), so a connected client's source
    costs its slots and no string of its own: ``ident`` is the nick it connected with
    (the same string object) and ``host`` one cloak per address (see
    :mod:`chatd.chat.identity`).  An idle connection should cost little.
    """

    #: The client's nick when the event happened, or the server's name.
    nick: str
    #: The client's id (unique in its node's process), or None for the server; 0 in
    #: an event replayed from history (its session is over).
    client_id: int | None = None
    #: For server events: the plugin that produced it (None: the core).
    plugin: str | None = None
    #: For server events made by a plugin that is not part of chatd (not a built-in):
    #: its name, which protocols show with the line (``*** [mentions] ...``), so text a
    #: plugin passes on never reads as a sentence of the server's own.  None otherwise.
    marker: str | None = None
    #: The node the event happened on (``server.node_id``); "" when not known.
    node: str = ""
    #: The user part of :attr:`user`: the protocol's user name (IRC's ``USER``), or the
    #: nick the client connected with; "" for the server.
    ident: str = ""
    #: The host part of :attr:`user`: the client's address, or a cloak of it
    #: (``server.cloak_addresses``); "" for the server.
    host: str = ""
    #: The registered nick the client proved it owns (``/identify``), or None.
    account: str | None = None
    #: The client's real name (IRC's ``USER`` and ``SETNAME``, chatd's ``/setname``),
    #: checked by :func:`chatd.chat.identity.realname_problem`; "" when it gave none
    #: (protocols then show the nick where they need one).
    realname: str = ""

    @property
    def is_server(self) -> bool:
        """True for events the server (or a plugin) produced, not a client."""
        return self.client_id is None

    @property
    def user(self) -> str:
        """``ident@host``: who the client is, stable across its nick changes
        (IRC's ``user@host``); "" for the server."""
        if not self.ident and not self.host:
            return ""
        return f"{self.ident}@{self.host}"

    @property
    def session(self) -> str | None:
        """The client's session, unique in the cluster: ``"node:client_id"``; None for
        the server and for a replayed event (its session is over)."""
        client_id = self.client_id
        if not client_id:
            return None
        return f"{self.node}:{client_id}"

    def is_session(self, session: str | None) -> bool:
        """Whether this source is the client whose session is ``session`` ("is this my
        own event"): never the server, never a replayed event, never a client of
        another node with the same number."""
        return session is not None and self.session == session


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
    """A chat line to a room (``target``); not echoed to its sender.

    ``notice``: a notice from the user (IRC's ``NOTICE``, chatd's ``/notice``): held
    to everything a message is (it is one), shown apart (IRC ``NOTICE``, the line
    protocol ``-nick- text``, jsonl ``"notice": true``), and never answered
    automatically (RFC 2812 3.3.2: plugins that reply to messages skip it).
    """

    notice: bool = field(default=False, kw_only=True)

    kind: ClassVar[str] = "message"
    carries_user_text: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class Action(Event):
    """``/me text`` in a room: "alice waves"; not echoed to its sender."""

    kind: ClassVar[str] = "action"
    carries_user_text: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class PrivateMessage(Event):
    """A message to one nick (``target``); its sender sees a copy marked as sent.

    The domain fills in what the presence answer that found the recipient said of
    it, wherever it is connected (another node included), so the hooks that see the
    message need not look it up: its account (None: not identified), its session
    (``node:id``; the sender's own for a message to oneself) and its away message.
    Internal fields: the codec carries them (a cluster's bus), jsonl does not show
    them; a message replayed from history has none.

    ``notice``: a private notice (see :class:`Message`).
    """

    to_account: str | None = None
    to_session: str | None = None
    to_away: str | None = None
    notice: bool = field(default=False, kw_only=True)

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
    shown to whoever asks (``/whois``, a private message); delivered to nobody but
    the members of its rooms whose renderer asks (IRC's ``away-notify``:
    ``Renderer.shows_away``), and to them also with an empty ``text`` when it is
    back."""

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

    ``quiet``: as for :class:`Join`.  ``kicked_by``: the nick of the operator who
    put ``source`` out (a kick; empty: it left, or the server put it out): IRC
    shows a kick as ``KICK``, the other protocols as the part it is.
    """

    quiet: bool = field(default=False, kw_only=True)
    kicked_by: str = field(default="", kw_only=True)

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


@dataclass(frozen=True, slots=True)
class AccountChange(Event):
    """``source`` identified as an account (``/identify``, NickServ, a ``/register``
    that identifies), or stopped being identified (``new`` None: it logged out, or its
    account was dropped).  ``source.account`` is already the new one; ``old`` is the one
    before.  ``target`` is empty; ``rooms`` the rooms it is in.

    Delivered to the client itself and to the members of its rooms (each once, like a
    nick change); renderers that do not show it (``Renderer.shows_accounts`` False: the
    line protocol) render nothing.  IRC's ``account-notify``: ``ACCOUNT name`` or
    ``ACCOUNT *``.  An identification before the session began (SASL) is none: the
    session begins identified."""

    old: str | None = None
    new: str | None = None
    rooms: tuple[str, ...] = ()

    kind: ClassVar[str] = "account"


@dataclass(frozen=True, slots=True)
class RealnameChange(Event):
    """``source`` set its real name to ``text`` (``/setname``, IRC's ``SETNAME``);
    ``source.realname`` is already the new one.  ``target`` is empty; ``rooms`` the
    rooms it is in.  Delivered like :class:`AccountChange` (the client itself, then
    the members of its rooms, each once); IRC shows it with the ``setname`` capability
    only (``SETNAME :text``), the line protocol to the client itself only."""

    rooms: tuple[str, ...] = ()

    kind: ClassVar[str] = "realname"


# -- the server talking -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Notice(Event):
    """Something the server (or a plugin, ``source.plugin``) tells a client or a room."""

    kind: ClassVar[str] = "notice"


@dataclass(frozen=True, slots=True)
class Error(Event):
    """An error for one client alone (``target`` is its nick).

    ``code`` is its stable name, for programs (jsonl's ``code``; an IRC listener's
    numeric): ``no_such_nick``, ``not_in_room``, ``usage``...  The table of codes
    is :data:`chatd.replies.ERROR_CODES`; ``"error"`` is an error nothing more
    specific was said of (a plugin's ``CommandError("why")``).
    """

    code: str = field(default="error", kw_only=True)

    kind: ClassVar[str] = "error"


# -- rooms (for plugins, history and other nodes; not shown to clients) ------------------------


@dataclass(frozen=True, slots=True)
class Invite(Event):
    """``source`` invited ``invitee`` (a nick) to the room ``target``.  Delivered to the
    invitee (every protocol renders it: IRC's ``INVITE``), to the inviter where its
    renderer ``shows_invites`` (IRC's ``341``) and to the room's members whose
    renderer ``notifies_invites`` (IRC's ``invite-notify``)."""

    invitee: str = field(default="", kw_only=True)

    kind: ClassVar[str] = "invite"


#: The neutral names of the room modes a :class:`ModeChange` may carry, in the order a
#: protocol lists them: IRC maps them to ``+o``, ``+b``, ``+q``, ``+i`` and ``+t``.
MODES = ("op", "ban", "mute", "invite_only", "topic_lock")


@dataclass(frozen=True, slots=True)
class ModeItem:
    """One change of a :class:`ModeChange`: ``mode`` (one of :data:`MODES`) turned on or
    off, with what it names.

    ``arg``: what the change is about in chatd's words: the account made (or no longer)
    an operator; the nick or mask a ban or mute was set for (or lifted); "" for a
    setting.  ``nick``: the nick an ``op`` change names when it differs from ``arg``
    (the founder typed a nick identified to another account), "" otherwise: IRC's
    ``+o`` needs the nick in the room, the line protocol says the account.
    """

    mode: str
    on: bool
    arg: str = ""
    nick: str = ""


@dataclass(frozen=True, slots=True)
class ModeChange(Event):
    """``source`` changed the rules of the room ``target``: ``changes`` in the order they
    were made (one command may make several).  ``text`` is the reason given (a ban or
    a mute), ``seconds`` how long a ban or mute lasts (None: until lifted).

    Made through ``server.mode_changed`` (moderation's ``/op``, ``/ban``, ``/mute``,
    their undoing, ``/roomset``; any plugin that keeps rules of its own), delivered to
    the room's members and to the one who made it.  The line protocol shows the
    sentence it always did (``*** alice banned bob in #dev``), jsonl a ``mode`` object,
    IRC ``:alice!u@h MODE #dev +b bob!*@*``.
    """

    changes: tuple[ModeItem, ...] = field(default=(), kw_only=True)
    seconds: float | None = field(default=None, kw_only=True)

    kind: ClassVar[str] = "mode"


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
        AccountChange, RealnameChange, Notice, Error, Invite, ModeChange, RoomCreated,
        RoomRemoved,
    )
}

#: The kinds whose text a user wrote (filtered by ``chatd_filter_message``).
USER_TEXT_KINDS = frozenset(k for k, cls in EVENT_TYPES.items() if cls.carries_user_text)

def first_event_id(node_number: int = 0, node_count: int = 1,
                   clock_us: int | None = None) -> int:
    """Where node ``node_number`` of ``node_count`` starts numbering events: the first
    id at or after its clock in microseconds that is ``node_number (mod node_count)``
    (see "Event ids" in the module docstring).  The node then steps by ``node_count``."""
    if clock_us is None:
        clock_us = time.time_ns() // 1000
    return next_event_id(clock_us - 1, node_number, node_count)


def next_event_id(after: int, node_number: int = 0, node_count: int = 1) -> int:
    """The smallest id greater than ``after`` that belongs to node ``node_number``."""
    return after + 1 + (node_number - after - 1) % node_count


__all__ = [
    "EVENT_TYPES",
    "MODES",
    "USER_TEXT_KINDS",
    "AccountChange",
    "Action",
    "Away",
    "Error",
    "Event",
    "Invite",
    "Join",
    "Message",
    "ModeChange",
    "ModeItem",
    "NickChange",
    "Notice",
    "Part",
    "PrivateMessage",
    "Quit",
    "RealnameChange",
    "RoomCreated",
    "RoomRemoved",
    "Source",
    "Topic",
    "first_event_id",
    "next_event_id",
]
