"""The cluster's delivery backend: local fan-out as ever, plus the same events on Redis.

:class:`ClusterBackend` wraps the :class:`~chatd.delivery.LocalBackend`.  Every
delivery is done here as before (``local``), and what other nodes must see is
collected during the tick and published in :meth:`ClusterBackend.flush`: one
batch per channel per tick, one ``publish_many`` (one round trip) per tick.
What arrives from other nodes (``on_message``, on the loop) is handed to
``local``, which renders it for this node's clients in the same per-tick batch
as local events.

* Room events go to ``{p}:room:{room}``; a node subscribes to a room's channel
  while it has local members there (``joined``/``parted``).
* Private messages go to the holder's node channel (the node of the session
  the domain's ``find_nick`` answered, carried in the event's ``to_session``).
* Server-wide notices go to ``{p}:all``.
* An event that goes to several rooms (a quit, a nick change) is published on
  each room's channel; a receiver delivers it once, to every local room it
  names, and drops the other copies (by event id).

Order: one publisher connection keeps a node's order per channel, and the
receiver handles a channel's batches in order, so one sender's lines in one room
arrive in order everywhere.  Across channels (a room line and a private
message) no order is promised.

Presence (nick claims, member lists, room lists, ``joined``/``parted`` facts)
is delegated to ``self.presence``: :class:`LocalPresence` (this node only)
until the cluster's presence replaces it.  A presence has exactly the
``DeliveryBackend`` presence methods, plus ``start()``, ``close()`` and
``on_state(up)`` (the link came up or went down).

Failures: the receiver drops its own node's batches (no echo), refuses
malformed or oversize ones (counted as ``bad_messages``, logged at most once a
minute), and counts the events it missed (``gaps``: a jump in a channel's
``seq``), logging at most once a minute per channel.  Nothing here raises into
the loop for what another node sent.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from chatd.delivery import LocalBackend, Member, Person, Place, Recipient, RoomInfo, nick_key
from chatd.events import Event, Topic
from chatd.framing import sanitize

from . import wire
from .link import RateLimitedLog
from .wire import Names, Sequences, WireError

log = logging.getLogger(__name__)

#: Events remembered (by source node and id) to drop their other copies: a multi-room
#: event's copy on each room's channel, and anything published twice (a republished
#: payload, a replay).
SEEN_EVENTS = 16384
#: Seconds between two log lines about the same kind of trouble (gaps per channel,
#: bad messages).
LOG_EVERY = 60.0
#: Seconds before a second look in the history for missed events it did not have yet.
RECOVER_AGAIN_SECONDS = 1.0

#: ``recover(room_key, origin_node, after_id, before_id, then)``: the shared history's
#: events of ``room_key`` said on ``origin_node`` with ids strictly between the two, to
#: ``then(events)`` on the loop (None: unavailable).
Recover = Callable[[str, str, int, int, Callable[[list[Event] | None], None]], None]


class LocalPresence:
    """Presence of this node only: what the local backend knows (a placeholder for
    the cluster's presence, with the same methods)."""

    def __init__(self, local: LocalBackend) -> None:
        self.local = local

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def on_state(self, up: bool) -> None:
        pass

    def claim_nick(self, client: Recipient, nick: str, then: Callable[[bool], Any],
                   replacing: str | None = None) -> None:
        self.local.claim_nick(client, nick, then, replacing)

    def find_nick(self, nick: str, then: Callable[[Person | None], Any]) -> None:
        self.local.find_nick(nick, then)

    def members(self, room: str, then: Callable[[list[Member]], Any]) -> None:
        self.local.members(room, then)

    def room_list(self, then: Callable[[list[RoomInfo]], Any]) -> None:
        self.local.room_list(then)

    def release_nick(self, client: Recipient, nick: str) -> None:
        self.local.release_nick(client, nick)

    def joined(self, client: Recipient, room: Place) -> None:
        self.local.joined(client, room)

    def parted(self, client: Recipient, room: Place) -> None:
        self.local.parted(client, room)


class Counters:
    """What the backend counts (shown in the log; see docs/cluster.md)."""

    __slots__ = ("bad_messages", "batches_in", "batches_out", "duplicates", "gaps",
                 "recovered")

    def __init__(self) -> None:
        #: Events missed: the sum of the jumps in the channels' ``seq``.
        self.gaps = 0
        #: Payloads refused (malformed, oversize, unknown version).
        self.bad_messages = 0
        self.batches_in = 0
        self.batches_out = 0
        #: Batches dropped whole because every event in them was heard before.
        self.duplicates = 0
        #: Missed room events recovered from the shared history (a subset of ``gaps``).
        self.recovered = 0

    def snapshot(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class ClusterBackend:
    """Delivery across the nodes of a cluster (see the module docstring)."""

    def __init__(self, local: LocalBackend, link: Any, presence: Any, node: str, *,
                 names: Names | None = None, max_payload: int = wire.MAX_PAYLOAD_BYTES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.local = local
        self.link = link
        self.presence = presence
        self.node = node
        self.names = names or Names()
        self.max_payload = max_payload
        self.counters = Counters()
        #: This tick's outgoing events by channel (and a node channel's op and recipient).
        self._out: dict[tuple[str, str | None, str | None], list[Event]] = {}
        #: The next ``seq`` per outgoing channel.
        self._seq: dict[str, int] = {}
        self._sequences = Sequences()
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        #: One line per kind a minute; the next says how many were held back (a gap's
        #: line also gives the running total: ``/stats`` has the exact count at once).
        self._limited_log = RateLimitedLog(log, LOG_EVERY, clock)
        #: The id of the last event heard per (origin, room channel): where a gap starts.
        self._last_id: dict[tuple[str, str], int] = {}
        #: Asks the shared history for a room's missed events (see :class:`Recover`);
        #: None: history is not shared (SQLite) or not kept, and gaps are only counted.
        self.recover: Recover | None = None
        #: Told each room event from another node delivered here (the shared history's
        #: memory of the room: a join here replays it); None without a shared history.
        self.remember: Callable[[Event], None] | None = None
        #: ``on_kick(session, part)``: another node's operator kicked a user of this node
        #: (see :meth:`kick_elsewhere`); None: kicks from elsewhere are ignored.
        self.on_kick: Callable[[str, Event], None] | None = None
        #: ``on_kill(session, quit)``: another node's server operator disconnected a user
        #: of this node (see :meth:`kill_elsewhere`); None: ignored.
        self.on_kill: Callable[[str, Event], None] | None = None
        #: ``call_later(seconds, fn, *args)`` of the server (a second look for a gap).
        self.call_later: Callable[..., Any] | None = None

    # -- lifetime ------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe to what every node hears and to this node's own channel."""
        self.link.subscribe(self.names.all_channel)
        self.link.subscribe(self.names.node_channel(self.node))
        self.presence.start()

    def close(self) -> None:
        self.presence.close()
        self.link.close()

    def on_state(self, up: bool) -> None:
        """The link came up (subscriptions restored) or went down."""
        self.presence.on_state(up)

    def stats(self) -> dict[str, int]:
        """The counters under their operator names (``cluster_gaps``...), with the
        link's: what /stats and /metrics show (the server reads them each second)."""
        shown = {f"cluster_{name}": value for name, value in self.counters.snapshot().items()}
        shown["cluster_dropped"] = getattr(self.link, "dropped", 0)
        shown["cluster_handler_errors"] = getattr(self.link, "errors", 0)
        shown["cluster_up"] = int(bool(getattr(self.link, "up", False)))
        return shown

    # -- delivery: local now, other nodes at the end of the tick ----------------------

    def _queue(self, channel: str, event: Event, to: str | None = None,
               op: str = "deliver") -> None:
        key = (channel, op if to is not None else None, to)
        batch = self._out.get(key)
        if batch is None:
            self._out[key] = [event]
        else:
            batch.append(event)

    def kick_elsewhere(self, session: str, event: Event) -> bool:
        """Ask the node of ``session`` to put it out of the room ``event`` (a part with
        ``kicked_by``, made by the kicker's node) names; False for a session of this node
        or none.  The kicker's right was checked by the caller."""
        node = _node_of(session)
        if node is None or node == self.node:
            return False
        self._queue(self.names.node_channel(node), event, session, op="kick")
        return True

    def kill_elsewhere(self, session: str, event: Event) -> bool:
        """Ask the node of ``session`` to disconnect it: ``event`` is a quit whose source
        is the server operator and whose text the reason (never shown as a quit: the
        target's node makes its own).  False for a session of this node or none.  The
        operator's right was checked by the caller."""
        node = _node_of(session)
        if node is None or node == self.node:
            return False
        self._queue(self.names.node_channel(node), event, session, op="kill")
        return True

    def to_room(self, event: Event, room: Place, exclude: Recipient | None = None) -> None:
        self.local.to_room(event, room, exclude)
        self._queue(self.names.room_channel(room.name), event)
        if isinstance(event, Topic):  # the room listing in Redis shows the new topic
            topic_changed = getattr(self.presence, "topic_changed", None)
            if topic_changed is not None:
                topic_changed(room)

    def announce_quit(self, event: Event) -> None:
        """A quit this node speaks for although its session was not here (a dead node's
        user, from presence's sweep): to this node's members of its rooms now, and on
        each room's channel for the other nodes (who deliver it once per client)."""
        names = getattr(event, "rooms", ())
        places = self.local.places
        here = [room for room in (places.get(name) for name in names)
                if room is not None and room.members] if places is not None else []
        if here:
            self.local.to_rooms(event, here)
        for name in names:
            self._queue(self.names.room_channel(name), event)

    def to_rooms(self, event: Event, rooms: Iterable[Place],
                 exclude: Recipient | None = None) -> None:
        rooms = tuple(rooms)
        self.local.to_rooms(event, rooms, exclude)
        for room in rooms:
            self._queue(self.names.room_channel(room.name), event)

    def to_client(self, event: Event, client: Recipient) -> None:
        self.local.to_client(event, client)  # the domain holds only this node's clients

    def to_nick(self, event: Event, nick: str) -> bool:
        if self.local.to_nick(event, nick):
            return True
        node = _node_of(getattr(event, "to_session", None))
        if node is None or node == self.node:
            return False
        self._queue(self.names.node_channel(node), event, nick_key(nick))
        return True

    def to_everyone(self, event: Event, exclude: Recipient | None = None) -> None:
        self.local.to_everyone(event, exclude)
        self._queue(self.names.all_channel, event)

    def flush(self) -> None:
        """Deliver the tick's local batch, then publish one batch per channel."""
        self.local.flush()
        if not self._out:
            return
        out, self._out = self._out, {}
        items: list[tuple[str, bytes]] = []
        for (channel, op, to), events in out.items():
            seq = self._seq.get(channel, 0) + 1  # the number of its first event
            self._seq[channel] = seq + len(events) - 1
            try:
                data = wire.encode(self.node, seq, events, op=op, to=to)
            except Exception:  # an event the codec cannot write: a bug; keep the rest
                log.exception("cluster: could not encode a batch for %s; it was dropped",
                              channel)
                continue
            items.append((channel, data))
        self.counters.batches_out += len(items)
        self.link.publish_many(items)

    # -- what other nodes sent ---------------------------------------------------------

    def on_message(self, channel: str, data: bytes) -> None:
        """One batch from Redis (on the loop): checked, then delivered here."""
        try:
            batch = _cleaned(wire.decode(data, self.max_payload))
        except WireError as exc:
            self.counters.bad_messages += 1
            self._log_limited("bad", "cluster: dropped a bad message on %s (%s); %d so far",
                              channel, exc, self.counters.bad_messages)
            return
        if batch.node == self.node:
            return  # our own, back from Redis: delivered here already
        spoofed = self._spoofed(batch)
        if spoofed:
            self.counters.bad_messages += 1
            self._log_limited("spoof", "cluster: dropped a batch from %s on %s: an event "
                              "claims a session of this node (%s); %d bad so far",
                              batch.node, channel, spoofed, self.counters.bad_messages)
            return
        fresh = self._fresh(batch)
        if fresh is None:
            self.counters.duplicates += 1
            self._log_limited("duplicate", "cluster: dropped a batch from %s on %s heard "
                              "before (republished or replayed); %d so far", batch.node,
                              channel, self.counters.duplicates)
            return
        self.counters.batches_in += 1
        missed = self._sequences.check(batch.node, channel, batch.seq, len(batch.events))
        batch = fresh
        if missed:
            self._gap(channel, batch, missed)
        if batch.events and channel != self.names.all_channel and batch.op is None:
            ids = _own_ids(batch)
            if ids:
                self._last_id[(batch.node, channel)] = max(ids)
        try:
            self._deliver(channel, batch)
        except Exception:  # a bug, or a batch that decodes but fits no room: not a crash
            self.counters.bad_messages += 1
            log.exception("cluster: could not deliver a batch from %s on %s; dropped",
                          batch.node, channel)

    def _fresh(self, batch: wire.Batch) -> wire.Batch | None:
        """``batch`` without the events this node has had already, None if it had them
        all.  An event is known by its source's node and its id (ids are unique per
        node), whichever node published it: the other copies of a multi-room event
        (a quit on each room's channel), and a batch heard twice (a plugin or a
        script republishing what it hears, a replay) are dropped here, before the
        sequence check, so a copy neither shows twice nor passes for a restart."""
        seen = self._seen
        fresh = []
        for event in batch.events:
            key = (event.source.node or batch.node, event.id)
            if key not in seen:
                seen[key] = None
                fresh.append(event)
        while len(seen) > SEEN_EVENTS:
            seen.popitem(last=False)
        if len(fresh) == len(batch.events):
            return batch
        return dataclasses.replace(batch, events=tuple(fresh)) if fresh else None

    def _spoofed(self, batch: wire.Batch) -> str | None:
        """The session of this node an event of another node's batch claims to come
        from, if any.  Only this node speaks for its clients: such an event (a forged
        payload) would be rendered to that client as its own line ("You are now ..."),
        so the whole batch is refused.  (A sweep's quits speak for a dead node: never
        this one while it runs.)"""
        own = f"{self.node}:"
        for event in batch.events:
            session = event.source.session
            if session is not None and session.startswith(own):
                return session
        return None

    # -- gaps: counted, and recovered from a shared history where the room keeps one ----

    def _gap(self, channel: str, batch: wire.Batch, missed: int) -> None:
        """``missed`` events of ``batch.node`` on ``channel`` never came: count and log
        them, and ask the shared history for them (a room channel only: the events
        between the last one heard and this batch's first, by their ids)."""
        self.counters.gaps += missed
        room = self.names.room_of_channel(channel)
        after = self._last_id.get((batch.node, channel))
        recover = self.recover
        ids = _own_ids(batch)
        if room is None or recover is None or after is None or not ids:
            why = "" if room is None else (
                "; not recoverable: history is not shared (storage.url)" if recover is None
                else "; not recoverable: no event heard before it")
            self._log_limited(f"gap {channel}",
                              "cluster: missed %d event(s) from %s on %s; %d so far%s",
                              missed, batch.node, channel, self.counters.gaps, why)
            return
        self._log_limited(f"gap {channel}",
                          "cluster: missed %d event(s) from %s on %s; %d so far; asking "
                          "the history for them", missed, batch.node, channel,
                          self.counters.gaps)
        before = min(ids)
        recover(room, batch.node, after, before,
                lambda events: self._recovered(room, batch.node, missed, after, before,
                                               events, retry=True))

    def _recovered(self, room: str, origin: str, missed: int, after: int, before: int,
                   events: list[Event] | None, *, retry: bool) -> None:
        """The history's answer to a gap: delivered to this node's members of the room,
        marked as replayed (each protocol shows that: a time stamp, ``"history": true``).
        The origin writes its history through a queue: fewer lines than missed may be
        there yet, so one more look follows a moment later for the rest."""
        events = [e for e in events or () if after < e.id < before]
        places = self.local.places
        place = places.get(room) if places is not None else None
        if events and place is not None and place.members:
            members = tuple(place.members)
            for event in events:  # each rendered as history for each viewer (rare: gaps)
                for member in members:
                    self.local.to_client(event, member)
            self.counters.recovered += len(events)
        log.info("cluster: recovered %d of %d missed event(s) from %s in %s from the history",
                 len(events), missed, origin, room)
        if retry and len(events) < missed and self.recover is not None and self.call_later:
            last = max((e.id for e in events), default=after)
            self.call_later(RECOVER_AGAIN_SECONDS, self.recover, room, origin, last, before,
                            lambda more: self._recovered(room, origin, missed - len(events),
                                                         last, before, more, retry=False))

    def _deliver(self, channel: str, batch: wire.Batch) -> None:
        if batch.op == "deliver":
            for event in batch.events:
                self.local.to_nick(event, batch.to or "")
            return
        if batch.op in ("kick", "kill"):
            act = self.on_kick if batch.op == "kick" else self.on_kill
            if act is not None:
                for event in batch.events:
                    act(batch.to or "", event)
            return
        everyone = channel == self.names.all_channel
        for event in batch.events:
            self._receive(event, everyone)

    def _receive(self, event: Event, everyone: bool) -> None:
        """One room or server-wide event from another node, to this node's clients."""
        places = self.local.places
        names = getattr(event, "rooms", None)
        if names:  # a quit or rename: once (_fresh drops its other copies), to every room
            rooms = [r for r in (places.get(n) for n in names) if r is not None and r.members] \
                if places is not None else []
            if rooms:
                self.local.to_rooms(event, rooms)
            return
        if everyone:
            self.local.to_everyone(event)
            return
        room = places.get(event.target) if places is not None else None
        if room is None:
            return
        if isinstance(event, Topic):
            room.topic = event.text
        if room.members:
            self.local.to_room(event, room)
        if self.remember is not None:
            self.remember(event)

    def _log_limited(self, what: str, message: str, *args: Any) -> None:
        self._limited_log(what, logging.WARNING, message, *args)

    # -- presence: facts that also drive subscriptions, questions delegated -------------

    def joined(self, client: Recipient, room: Place) -> None:
        self.presence.joined(client, room)
        if len(room.members) == 1:  # the first local member: hear the room
            self.link.subscribe(self.names.room_channel(room.name))

    def parted(self, client: Recipient, room: Place) -> None:
        self.presence.parted(client, room)
        if not room.members:  # the last local member left
            channel = self.names.room_channel(room.name)
            self.link.unsubscribe(channel)
            self._sequences.forget(channel)
            for key in [k for k in self._last_id if k[1] == channel]:
                del self._last_id[key]

    def claim_nick(self, client: Recipient, nick: str, then: Callable[[bool], Any],
                   replacing: str | None = None) -> None:
        self.presence.claim_nick(client, nick, then, replacing)

    def changed(self, client: Recipient) -> None:
        """The domain says what presence shows of ``client`` changed (away, account, real
        name): other nodes' ``/whois`` and ``/who`` read it from Redis."""
        changed = getattr(self.presence, "changed", None)
        if changed is not None:
            changed(client)

    def find_nick(self, nick: str, then: Callable[[Person | None], Any]) -> None:
        self.presence.find_nick(nick, then)

    def members(self, room: str, then: Callable[[list[Member]], Any]) -> None:
        self.presence.members(room, then)

    def room_list(self, then: Callable[[list[RoomInfo]], Any]) -> None:
        self.presence.room_list(then)

    def release_nick(self, client: Recipient, nick: str) -> None:
        self.presence.release_nick(client, nick)


# -- what another node sent is held to what this node's own input is ---------------------------

#: What no name (nick, ident, host, account) holds: it would split an IRC prefix or line.
_BREAKS_NAME = re.compile(r"[\s!@]")
#: Event fields that hold nicks (a rename's).
_NAME_FIELDS = frozenset({"old", "new", "kicked_by"})


def _cleaned(batch: wire.Batch) -> wire.Batch:
    """``batch`` with its events held to the rules of this node's own input: text
    fields sanitised (:func:`chatd.framing.sanitize`: no escape sequence or control
    character reaches a terminal, whatever a renderer lets through), and names that
    are not names refused (:class:`WireError`).  Another node sanitised them already;
    this is for what anyone with the Redis password can PUBLISH."""
    events = tuple(_cleaned_event(event) for event in batch.events)
    if all(new is old for new, old in zip(events, batch.events, strict=True)):
        return batch
    return dataclasses.replace(batch, events=events)


#: The fields of each event class but ``source`` (worked out once per class).
_FIELDS: dict[type, tuple[str, ...]] = {}


def _fields(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls)
                                     if f.name != "source")
    return names


def _cleaned_event(event: Event) -> Event:
    source = event.source
    _check_name("source nick", source.nick)
    _check_name("source ident", source.ident)
    _check_name("source host", source.host)
    _check_name("source account", source.account)
    if source.realname and sanitize(source.realname) != source.realname:
        source = dataclasses.replace(source, realname=sanitize(source.realname))
    changes: dict[str, Any] = {}
    for name in _fields(event.__class__):
        value = getattr(event, name)
        if not value:
            continue
        if value.__class__ is str:
            if name in _NAME_FIELDS:
                _check_name(name, value)
            elif sanitize(value) != value:
                changes[name] = sanitize(value)
        elif isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            clean = tuple(sanitize(v) for v in value)
            if clean != value:
                changes[name] = clean
    if source is not event.source:
        changes["source"] = source
    return dataclasses.replace(event, **changes) if changes else event


def _check_name(what: str, value: str | None) -> None:
    """Refuse a name with control characters or what splits an IRC prefix; a nick may
    not start with ``:`` either (a host may: an IPv6 address when cloaks are off)."""
    if value and (sanitize(value) != value or _BREAKS_NAME.search(value)
                  or (value.startswith(":") and "host" not in what)):
        raise WireError(f"a {what} that is not a name")


def _own_ids(batch: wire.Batch) -> list[int]:
    """The ids of the events that happened on the batch's own node (what its history
    rows carry): a dead node's quits it announces are numbered by another counter."""
    return [e.id for e in batch.events if (e.source.node or batch.node) == batch.node]


def _node_of(session: str | None) -> str | None:
    """The node of a session id ``node:client``."""
    if not session or ":" not in session:
        return None
    return session.rpartition(":")[0]
