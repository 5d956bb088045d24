"""Delivery and presence: where events go, and who is where.

The chat domain decides *what* happened (an event) and *who* it concerns (a
room, a nick, everyone); a :class:`DeliveryBackend` gets it there and answers
presence questions (``/who``, ``/rooms``, whether a nick is free).  The
in-process :class:`LocalBackend` is the default.  A backend that spans several
processes or machines (Redis, a later issue) is a plugin implementing the
``chatd_delivery_backend`` hook: it receives the local backend, publishes what
it is given, and hands what arrives from other nodes to the local backend; the
core does not change.

The hot path: per-tick room batching
------------------------------------
The cost of a broadcast server is dominated by ``send()`` calls and by Python
work done once per *recipient*.  So a room event is not rendered into every
member's queue when it happens; it is recorded once in the tick's batch
(:class:`Fanout`).  Just before the reactor flushes (Redis' ``beforeSleep``),
:meth:`Fanout.flush` renders each event **once per protocol** (a room with only
``nc`` users renders it once), joins a room's lines into one ``bytes`` object
per protocol and hands that one object to every member: per tick and recipient
that is one ``send()``, however many lines the room carried.  Notices of
departures and renames (one event for all the rooms of a client, each member
told once) ride the same batch, so a thousand clients leaving at once cost a
thousand renders, not a million.

Ordering guarantees (what a reader of one connection sees):

* events from one source arrive in the order they happened;
* everything a client is sent directly (:meth:`LocalBackend.to_client`:
  replies, errors, private messages) stays in order with room events, because a
  direct delivery first flushes the pending batch if that client is in one of
  its rooms;
* a member of several rooms that carried events in the same tick gets them in
  the global order they happened (the "crowded" path below);
* a client that joins a room gets only what happened there after it joined,
  even within one tick (the batch remembers where each late joiner came in).

The source of a message is excluded from its own delivery (no echo).  Nothing
is queued for a connection that is already closing (its transport drops it).

Isolation: an event that a renderer cannot render (a bug, a plugin's odd text)
is logged and skipped for that protocol, and only that event: the rest of the
batch still reaches every member.  The batch is taken before rendering starts,
so one failure never throws away other users' lines.

Presence: questions answered by a continuation
----------------------------------------------
Claiming a nick, finding a nick, a room's members and the room listing are
*questions*: the domain passes a continuation ``then`` and the backend calls it
with the answer.  The local backend answers at once (``then`` runs before the
call returns: same tick, no timer); a networked one answers when its reply
arrives.  The contract a backend implements (what the domain relies on):

* ``then`` is called **at most once**, **on the event loop**.  A backend with an
  I/O thread hands the answer over with the loop's ``call_soon_threadsafe``
  (``server.call_soon_threadsafe``); never call ``then`` from another thread.
* ``then`` may run before the call returns (an answer known locally) or later.
* On a failure of its own (a lost connection, a malformed reply) the backend
  simply does not call ``then``: the domain's timeout
  (``limits.presence_timeout_seconds``) answers the client with an error and
  drops a late answer.  Do not answer "no such nick" or "taken" for a failure.
* Answers are plain data built from the backend's own tables
  (:class:`Person`, :class:`Member`, :class:`RoomInfo`), never a
  :class:`~chatd.Client` of another node; an exception ``then`` raises is the
  domain's business (do not catch it: when ``then`` runs inside the call it
  must reach the command that asked).

``release_nick``, ``joined`` and ``parted`` stay fire-and-forget, as does
delivery; ``to_nick`` returns whether the nick was *known* to be held (a remote
backend that publishes may return True).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .events import Event
from .framing import skeleton

if TYPE_CHECKING:
    from .stats import Stats

log = logging.getLogger(__name__)


def _rendered(render: Callable[..., bytes], event: Event, *args: Any) -> bytes:
    """``render(event, *args)``, or ``b""`` (logged) if it raises: see "Isolation" above.

    A ``try`` costs nothing until something raises (Python 3.11), so the fan-out
    pays one call per render, not per recipient.
    """
    try:
        return render(event, *args)
    except Exception:
        log.exception("could not render %s event %s (%s); it was skipped for those clients",
                      event.kind, event.id, getattr(render, "__qualname__", render))
        return b""


# -- what delivery needs of the domain's objects (duck types: no import of the domain) ----------


class Link(Protocol):
    """A client's way out: its protocol object (see :mod:`chatd.protocols.base`)."""

    renderer: Any
    #: Its transport; the fan-out sends with ``transport.write_now(bytes)`` (send now
    #: if nothing is queued, else queue), one call per recipient.
    transport: Any

    def deliver(self, event: Event, viewer: str | None, stamped: bool = False, *,
                elsewhere: bool = False) -> None: ...


class Recipient(Protocol):
    """A client as delivery sees it."""

    id: int
    nick: str
    link: Link
    rooms: tuple[Any, ...]
    room: Any
    view: View | None
    source: Any
    away: str | None
    account: str | None
    user: str
    address: str
    connected_at: float
    idle_seconds: float

    @property
    def session(self) -> str | None:
        """Its session id (``node:id``): the ``viewer`` renderers compare sources with."""


class Place(Protocol):
    """A room as delivery sees it."""

    name: str
    topic: str
    members: dict[Any, None]
    renderers: dict[Any, int]


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """One line of a room listing."""

    name: str
    members: int
    topic: str


@dataclass(frozen=True, slots=True)
class Person:
    """Who has a nick, wherever they are connected: a presence answer (``find_nick``).

    Plain data a backend builds from its own tables, never a client object: a
    command acting on the person asks the server for the local client
    (``server.client_of(person)``), which is None on another node.
    """

    nick: str
    #: Its session id (``node:id``), unique across the nodes of a cluster.
    session: str | None
    node: str
    #: ``ident@host`` (the host cloaked unless configured otherwise).
    user: str
    account: str | None
    #: The away message, or None when here.
    away: str | None
    #: When it connected (``time.time()``).
    connected_at: float
    #: When it last sent a line (``time.time()``).
    idle_since: float
    #: The names of its rooms, in join order.
    rooms: tuple[str, ...]
    #: Its IP address: for operators' eyes only (commands show it to operators alone).
    address: str
    #: Its real name (:attr:`chatd.events.Source.realname`); "" when it gave none.
    realname: str = ""


@dataclass(frozen=True, slots=True)
class Member:
    """One member of a room, wherever it is connected: a presence answer (``members``).

    What a room's listing needs of it (``/who``, the greeting of a ``/join``):
    the facade turns these into :class:`chatd.replies.MemberEntry` records (in
    name order, with the room-operator mark it computes from ``room.operators``,
    which is not the backend's business: ``server.member_entries``).
    """

    nick: str
    #: Its session id (``node:id``): ``server.client_of(member)`` finds a local one.
    session: str | None
    #: ``ident@host`` (the host cloaked unless configured otherwise), as in :class:`Person`.
    user: str
    #: The registered nick it identified as, or None.
    account: str | None
    #: It set an away message (``/away``); ``find_nick`` tells the message itself.
    away: bool
    #: Its real name, as in :class:`Person`.
    realname: str = ""


# -- the interface ------------------------------------------------------------------------------


class DeliveryBackend(Protocol):
    """Where the chat domain sends events, and asks who is where.

    Every method is called on the event loop and must not block (a networked
    backend queues and returns).  ``room`` arguments are the domain's
    :class:`~chatd.Room` objects, ``client`` arguments its :class:`~chatd.Client`
    objects, ``event`` arguments :mod:`chatd.events` objects.
    """

    # delivery
    def to_room(self, event: Event, room: Place, exclude: Recipient | None = None) -> None:
        """Deliver ``event`` to every member of ``room`` except ``exclude``."""

    def to_rooms(
        self, event: Event, rooms: Iterable[Place], exclude: Recipient | None = None
    ) -> None:
        """Deliver ``event`` once to everyone in any of ``rooms`` except ``exclude``."""

    def to_client(self, event: Event, client: Recipient) -> None:
        """Deliver ``event`` to one client, in order with its room events."""

    def to_nick(self, event: Event, nick: str) -> bool:
        """Deliver ``event`` to whoever has ``nick`` (on any node); False if nobody is
        known to have it (a remote backend may return True and publish)."""

    def to_everyone(self, event: Event, exclude: Recipient | None = None) -> None:
        """Deliver ``event`` to every client (server-wide notices)."""

    def flush(self) -> None:
        """End of the tick: deliver what was batched (called by the reactor)."""

    # presence: questions (``then`` gets the answer, see "Presence" above)
    def claim_nick(self, client: Recipient, nick: str, then: Callable[[bool], Any],
                   replacing: str | None = None) -> None:
        """Give ``nick`` to ``client`` if nobody else (on any node) has it, or one that
        looks the same; ``then(True)``, or ``then(False)`` if taken.

        ``replacing``: the nick ``client`` gives up for it (a rename), in the same
        step: released if the claim succeeds, kept if it fails, so nobody can take
        it meanwhile.  The two may share a key (``alice`` -> ``Alice``)."""

    def find_nick(self, nick: str, then: Callable[[Person | None], Any]) -> None:
        """``then(person)`` for whoever has ``nick`` (any case, or one that looks the
        same) on any node, ``then(None)`` if nobody has it."""

    def members(self, room: str, then: Callable[[list[Member]], Any]) -> None:
        """``then(members)``: everyone in the room named ``room``, on every node, in
        no particular order ([] if there is no such room)."""

    def room_list(self, then: Callable[[list[RoomInfo]], Any]) -> None:
        """``then(rooms)``: every room on any node (name, member count, topic)."""

    # presence: facts (fire-and-forget)
    def release_nick(self, client: Recipient, nick: str) -> None:
        """``client`` no longer uses ``nick`` (renamed or gone)."""

    def joined(self, client: Recipient, room: Place) -> None:
        """``client`` is now a member of ``room``."""

    def parted(self, client: Recipient, room: Place) -> None:
        """``client`` is no longer a member of ``room``."""

    # Optional: ``changed(client)`` — what presence answers of ``client`` (its away
    # message, account, real name) changed.  The domain calls it when a backend has it
    # (a cluster's keeps presence in Redis); the local backend reads the client itself.


# -- the local backend --------------------------------------------------------------------------


def nick_key(nick: str) -> str:
    """The case-folded form: ``Alice`` and ``alice`` are the same nick.  (Look-alikes
    such as ``aIice`` with a capital i are kept apart by the skeleton, see
    :meth:`LocalBackend.claim_nick`.)"""
    key = nick.lower()
    return nick if key == nick else key  # the nick's own string: no copy per client


#: The kinds an ignore list hides: what someone says, not joins, quits or topics.
IGNORABLE = frozenset({"message", "action", "privmsg"})


class View:
    """How one client wants to see things, when it is not what everyone else sees.

    ``client.view`` is None for almost every client, and those share every
    payload; a client with a view (an ignore list, timestamps) gets its own
    selection and rendering of the tick's events.
    """

    __slots__ = ("ignoring", "timestamps")

    def __init__(self) -> None:
        #: Nick keys whose messages, actions and private messages it does not see.
        self.ignoring: frozenset[str] = frozenset()
        #: Lines start with the time (``[12:34] <bob> hi``).
        self.timestamps = False

    @property
    def is_default(self) -> bool:
        return not self.ignoring and not self.timestamps

    def hides(self, event: Event) -> bool:
        return (
            bool(self.ignoring)
            and event.kind in IGNORABLE
            and nick_key(event.source.nick) in self.ignoring
        )


class Places(Protocol):
    """The domain's room table as the local backend reads it."""

    def get(self, name: str) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...


class LocalBackend:
    """Everything in this process: the nick table and the per-tick fan-out.

    Its presence questions answer at once: ``then`` runs before the call returns,
    with nothing allocated but the answer.  :meth:`take_nick` and :meth:`holder`
    answer by return, for what is truly local (a client of this process) and for
    a backend that wraps this one.
    """

    def __init__(self, stats: Stats | None = None, places: Places | None = None) -> None:
        self.fanout = Fanout(stats)
        #: The rooms of this process, by name (the domain's room table).
        self.places: Places | None = places
        self._nicks: dict[str, Recipient] = {}
        #: The same clients by confusable skeleton: ``aIice`` may not stand beside ``alice``.
        self._skeletons: dict[str, Recipient] = {}
        #: The clients connected to this process, by id.
        self.clients: dict[int, Recipient] = {}
        #: The most clients connected at once since the backend was made (IRC's 265).
        self.most_clients = 0

    # delivery

    def to_room(self, event: Event, room: Place, exclude: Recipient | None = None) -> None:
        self.fanout.add(event, (room,), exclude)

    def to_rooms(
        self, event: Event, rooms: Iterable[Place], exclude: Recipient | None = None
    ) -> None:
        rooms = tuple(rooms)
        if rooms:
            self.fanout.add(event, rooms, exclude)

    def to_client(self, event: Event, client: Recipient) -> None:
        fanout = self.fanout
        if fanout.pending and not fanout.rooms_pending.isdisjoint(client.rooms):
            fanout.flush()  # room events that happened earlier must arrive earlier
        view = client.view
        link = client.link
        try:
            if link.renderer.shows_room and _elsewhere(event, client):
                if view is None or not view.hides(event):
                    link.deliver(event, client.session, view is not None and view.timestamps,
                                 elsewhere=True)
            elif view is None:
                link.deliver(event, client.session)
            elif not view.hides(event):
                link.deliver(event, client.session, view.timestamps)
        except Exception:  # the caller (a command, a plugin) goes on: see "Isolation"
            log.exception("could not deliver %s event %s to client %s; it was skipped",
                          event.kind, event.id, client.id)

    def to_nick(self, event: Event, nick: str) -> bool:
        target = self._nicks.get(nick_key(nick))
        if target is None:
            return False
        self.to_client(event, target)
        return True

    def to_everyone(self, event: Event, exclude: Recipient | None = None) -> None:
        self.fanout.flush()
        rendered: dict[Any, bytes] = {}
        for client in tuple(self.clients.values()):
            if client is exclude:
                continue
            link = client.link
            data = rendered.get(link.renderer)
            if data is None:
                data = rendered[link.renderer] = _rendered(link.renderer.render, event)
            if data and client.view is not None and client.view.timestamps:
                data = _rendered(link.renderer.render_stamped, event, data)
            if data:
                link.transport.write_now(data)

    def flush(self) -> None:
        self.fanout.flush()

    # presence

    def connected(self, client: Recipient) -> None:
        """A new local client (the domain calls this before anything else)."""
        clients = self.clients
        clients[client.id] = client
        if len(clients) > self.most_clients:
            self.most_clients = len(clients)

    def disconnected(self, client: Recipient) -> None:
        self.clients.pop(client.id, None)

    def claim_nick(self, client: Recipient, nick: str, then: Callable[[bool], Any],
                   replacing: str | None = None) -> None:
        """See :meth:`take_nick`; answers at once."""
        then(self.take_nick(client, nick, replacing))

    def take_nick(self, client: Recipient, nick: str, replacing: str | None = None) -> bool:
        """Taken if another client has the same nick in any case, or one that looks the
        same (Unicode TS #39 skeletons, as ergo does: both keys must be free).

        A nick whose skeleton is its own key (``alice``, most of them) gets no entry
        of its own in the skeleton table: its entry in the nick table serves both
        (see :meth:`_by_look`), so a plain nick costs one table entry, not two.
        """
        if replacing is not None:
            # Release first (the two may share a key: a change of case), and take
            # it back if the new one is held by someone else.
            self.release_nick(client, replacing)
            if not self.take_nick(client, nick):
                self.take_nick(client, replacing)
                return False
            return True
        key, look = nick_key(nick), skeleton(nick)
        for holder in (self._nicks.get(key), self._by_look(look)):
            if holder is not None and holder is not client:
                return False
        self._nicks[key] = client
        if look != key:
            self._skeletons[look] = client
        return True

    def _by_look(self, look: str) -> Recipient | None:
        """The client whose nick has the skeleton ``look``, if any."""
        holder = self._skeletons.get(look)
        if holder is None:
            holder = self._nicks.get(look)  # a nick that is its own skeleton?
            if holder is not None and skeleton(holder.nick) != look:
                return None
        return holder

    def release_nick(self, client: Recipient, nick: str) -> None:
        for table, k in ((self._nicks, nick_key(nick)), (self._skeletons, skeleton(nick))):
            if table.get(k) is client:
                del table[k]

    def holder(self, nick: str) -> Recipient | None:
        """The client of this process with ``nick`` (any case, or one that looks the
        same), if any."""
        found = self._nicks.get(nick_key(nick))
        return found if found is not None else self._by_look(skeleton(nick))

    def find_nick(self, nick: str, then: Callable[[Person | None], Any]) -> None:
        found = self.holder(nick)
        then(None if found is None else person(found))

    def joined(self, client: Recipient, room: Place) -> None:
        # Membership is the room's own table; the batch must only learn where a
        # client came in, so it is not shown what the room said before.
        self.fanout.joined(client, room)

    def parted(self, client: Recipient, room: Place) -> None:
        pass

    def members(self, room: str, then: Callable[[list[Member]], Any]) -> None:
        place = self.places.get(room) if self.places is not None else None
        then([] if place is None else [member(m) for m in place.members])

    def room_list(self, then: Callable[[list[RoomInfo]], Any]) -> None:
        then(self.rooms_here(self.places or ()))

    @staticmethod
    def rooms_here(rooms: Iterable[Place]) -> list[RoomInfo]:
        """A listing of ``rooms`` (this process's)."""
        return [RoomInfo(room.name, len(room.members), room.topic) for room in rooms]


def person(client: Recipient) -> Person:
    """The presence answer for a client of this process."""
    return Person(
        client.nick, client.session, client.source.node, client.user, client.account,
        client.away, client.connected_at, time.time() - client.idle_seconds,
        tuple(room.name for room in client.rooms), client.address, client.source.realname,
    )


def member(client: Recipient) -> Member:
    """The presence answer for a member of a room of this process."""
    return Member(client.nick, client.session, client.user, client.account,
                  client.away is not None, client.source.realname)


def _elsewhere(event: Event, client: Recipient) -> bool:
    """A live room event for a member whose current room is another (its copy names the
    room, as the fan-out's do; a replayed one is shown where it was asked for).  The
    client's own join or part names its room already (``alice left #dev``)."""
    target = event.target
    room = client.room
    return (target.startswith("#") and not event.replay and room is not None
            and room.name != target
            and not (event.kind in _OWN_MOVES and event.source.is_session(client.session)))


#: Events that say which room they are about in their own words, seen by their source.
_OWN_MOVES = frozenset({"join", "part"})


# -- the fan-out ---------------------------------------------------------------------------------


class _Entry:
    """One event in the tick's batch, with its renders (one per renderer)."""

    __slots__ = ("_bytes", "_more", "_renderer", "event", "exclude", "order", "rooms")

    def __init__(
        self, event: Event, rooms: tuple[Place, ...], exclude: Recipient | None, order: int
    ) -> None:
        self.event = event
        self.rooms = rooms
        self.exclude = exclude
        self.order = order
        # One render is the common case (everyone on one protocol): two slots, no dict.
        self._renderer: Any = None
        self._bytes = b""
        self._more: dict[Any, bytes] | None = None

    def bytes_for(self, renderer: Any, elsewhere: bool = False, stamped: bool = False) -> bytes:
        """The event as ``renderer`` renders it (once), for a member whose current room is
        its room, or another one (``elsewhere``: the line protocol then names the room),
        and with the time in front (``stamped``)."""
        if renderer is self._renderer:
            data = self._bytes
        elif self._renderer is None:
            self._renderer = renderer
            data = self._bytes = _rendered(renderer.render, self.event)
        else:
            more = self._more
            if more is None:
                more = self._more = {}
            data = more.get(renderer)  # type: ignore[assignment]
            if data is None:
                data = more[renderer] = _rendered(renderer.render, self.event)
        tag = elsewhere and len(self.rooms) == 1  # a multi-room entry (a quit) names none
        if not data or not (tag or stamped):
            return data
        more = self._more
        if more is None:
            more = self._more = {}
        key = (renderer, tag, stamped)
        variant = more.get(key)
        if variant is None:
            variant = data
            if tag:
                variant = _rendered(renderer.render_elsewhere, self.event, variant)
            if stamped and variant:
                variant = _rendered(renderer.render_stamped, self.event, variant)
            more[key] = variant
        return variant


class Fanout:
    """The tick's pending room events; flushed before the reactor's write flush."""

    __slots__ = ("_entries", "_late", "_stats", "rooms_pending")

    def __init__(self, stats: Stats | None = None) -> None:
        self._stats = stats
        self._entries: list[_Entry] = []
        #: Rooms with events in this batch: a direct delivery to a client flushes the
        #: batch first only if the client is in one of them (ordering), so a
        #: connect storm's welcomes do not flush every join notice one by one.
        self.rooms_pending: set[Any] = set()
        #: room -> {client: position in the batch when it joined} for this tick's joiners.
        self._late: dict[Any, dict[Any, int]] = {}

    def joined(self, client: Recipient, room: Place) -> None:
        """``client`` joined ``room`` now: it gets none of the room's earlier pending events."""
        if room in self.rooms_pending:
            self._late.setdefault(room, {})[client] = len(self._entries)

    @property
    def pending(self) -> int:
        return len(self._entries)

    def add(self, event: Event, rooms: tuple[Place, ...], exclude: Recipient | None) -> None:
        """Record ``event`` for the members of ``rooms`` (delivered at :meth:`flush`)."""
        self._entries.append(_Entry(event, rooms, exclude, len(self._entries)))
        self.rooms_pending.update(rooms)

    def flush(self) -> None:
        """Deliver every pending event: one payload per room, protocol and recipient."""
        entries = self._entries
        if not entries:
            return
        self._entries = []
        self.rooms_pending = set()
        late, self._late = self._late, {}
        by_room: dict[Any, list[_Entry]] = {}
        deliveries = 0
        for entry in entries:
            for room in entry.rooms:
                by_room.setdefault(room, []).append(entry)
                deliveries += len(room.members)
            if entry.exclude is not None:
                deliveries -= 1
        if self._stats is not None:
            self._stats.deliveries += deliveries
        busy: dict[Any, int] | None = None
        if len(by_room) > 1:
            # How many of this tick's busy rooms each member is in, counted once per
            # flush: the cost follows the busy rooms' members, not anyone's room count.
            busy = {}
            for room in by_room:
                for member in room.members:
                    busy[member] = busy.get(member, 0) + 1
        crowded: set[Any] = set()
        for room, room_entries in by_room.items():
            _deliver_room(room, room_entries, busy, crowded, late.get(room))
        for client in crowded:
            # In two or more of this tick's busy rooms: merge their events in the
            # order they happened, each once (a quit spans rooms), skipping its own.
            mine: dict[int, _Entry] = {}
            for room in client.rooms:
                since = late.get(room, {}).get(client, 0)
                for entry in by_room.get(room, ()):
                    if entry.order >= since:
                        mine[entry.order] = entry
            renderer = client.link.renderer
            shows_room = renderer.shows_room
            current = client.room
            view = client.view
            stamped = view is not None and view.timestamps
            payload = b"".join(
                entry.bytes_for(
                    renderer,
                    shows_room and len(entry.rooms) == 1 and entry.rooms[0] is not current,
                    stamped,
                )
                for entry in (mine[order] for order in sorted(mine))
                if entry.exclude is not client
                and not (view is not None and view.hides(entry.event))
            )
            if payload:
                client.link.transport.write_now(payload)


def _deliver_room(
    room: Place,
    entries: list[_Entry],
    busy: dict[Any, int] | None,
    crowded: set[Any],
    late: dict[Any, int] | None,
) -> None:
    """Hand one room's events to its members: one shared payload per renderer.

    Members that sent some of the events, or joined after some, get their own
    selection (``special``); everyone else shares one payload per renderer.
    """
    special: dict[Any, int] = dict.fromkeys(
        (entry.exclude for entry in entries if entry.exclude is not None), 0
    )
    if late:
        special.update(late)
    renderers = room.renderers
    if len(renderers) == 1:
        # The common case, everyone on one protocol: render once, share one object
        # (two for the line protocol: for members talking here, and for the others,
        # whose lines name the room).
        renderer = next(iter(renderers))
        shows_room = renderer.shows_room
        parts = [entry.bytes_for(renderer) for entry in entries]
        payload = parts[0] if len(parts) == 1 else b"".join(parts)
        away_parts: list[bytes] | None = None
        away = b""
        for member in tuple(room.members):
            elsewhere = shows_room and member.room is not room
            if elsewhere and away_parts is None:
                away_parts = [entry.bytes_for(renderer, True) for entry in entries]
                away = b"".join(away_parts)
            if busy is not None and busy[member] > 1:
                crowded.add(member)
            elif member.view is not None:
                _send_viewed(member, entries, renderer, elsewhere, special.get(member, 0))
            elif member in special:
                _send_own(member, entries, away_parts if elsewhere else parts,  # type: ignore[arg-type]
                          special[member])
            elif elsewhere:
                if away:
                    member.link.transport.write_now(away)
            elif payload:
                member.link.transport.write_now(payload)
        return
    rendered: dict[tuple[Any, bool], tuple[list[bytes], bytes]] = {}
    for member in tuple(room.members):
        if busy is not None and busy[member] > 1:
            crowded.add(member)
            continue
        link = member.link
        renderer = link.renderer
        key = (renderer, renderer.shows_room and member.room is not room)
        if member.view is not None:
            _send_viewed(member, entries, renderer, key[1], special.get(member, 0))
            continue
        known = rendered.get(key)
        if known is None:
            parts = [entry.bytes_for(renderer, key[1]) for entry in entries]
            known = rendered[key] = (parts, b"".join(parts))
        if member in special:
            _send_own(member, entries, known[0], special[member])
        elif known[1]:
            link.transport.write_now(known[1])


def _send_viewed(
    member: Recipient, entries: list[_Entry], renderer: Any, elsewhere: bool, since: int
) -> None:
    """A member with a view of its own (ignores, timestamps): its own selection."""
    view = member.view
    assert view is not None
    stamped = view.timestamps
    own = b"".join([
        entry.bytes_for(renderer, elsewhere, stamped) for entry in entries
        if entry.exclude is not member and entry.order >= since and not view.hides(entry.event)
    ])
    if own:
        member.link.transport.write_now(own)


def _send_own(member: Recipient, entries: list[_Entry], parts: list[bytes], since: int) -> None:
    """A member that caused some of the events, or joined late: the others since it came."""
    if since:
        own = b"".join([
            data for entry, data in zip(entries, parts, strict=True)
            if entry.exclude is not member and entry.order >= since
        ])
    else:  # a sender (the common case): everything but its own lines
        own = b"".join([
            data for entry, data in zip(entries, parts, strict=True)
            if entry.exclude is not member
        ])
    if own:
        member.link.transport.write_now(own)
