"""Presence across nodes: nicks unique cluster-wide, who is where, dead nodes expired.

Two halves.  The Redis side is plain functions of a ``redis.Redis`` client (they
run on the link's I/O thread, see :class:`~chatd.builtin.cluster.link.Link`, and
are unit-tested against a real Redis); :class:`RedisPresence` is the loop side:
it asks the link to run them and hands the answers to the domain's
continuations, on the loop.

What lives in Redis (names in :mod:`chatd.builtin.cluster.wire`, prefix ``p``):

* ``p:nicks`` — hash: ``k:<nick key>`` and ``s:<skeleton>`` -> the holder's
  :class:`~chatd.Person` as JSON (with its node).  Two fields per nick, as the
  local backend keeps two tables: ``aiice`` and ``aIice`` share a key but not a
  skeleton, ``alice`` and ``aIice`` a skeleton but not a key; either blocks.
  ``p:nicks:<node>`` (set) lists the fields a node wrote, for its cleanup.
* ``p:members:<room key>`` — hash session -> :class:`~chatd.Member` JSON;
  ``p:rooms`` — hash room key -> ``{"name", "topic"}``; ``p:rooms:<node>`` (set
  of ``[room key, session]``) what a node contributed.
* ``p:node:<node>`` — the heartbeat (a string with a TTL): the node is alive
  while it exists; ``p:nodes`` — the set of nodes that registered.

A claim held by a session whose node key has expired does not block: a crashed
node's nicks are free again after ``node_timeout_seconds`` even before a sweep
removes them.  Every heartbeat (``heartbeat_seconds``) each node looks for nodes
whose key expired; the sweep script removes a dead node's entries atomically and
hands its sessions to the one node that ran it first, which announces their quits
("node lost") on their rooms' channels.  So a crashed node's users are gone
everywhere within ``node_timeout_seconds + heartbeat_seconds``.

A node whose key was gone at a heartbeat (Redis restarted empty, or the node was
silent so long that it was swept) and a node whose link came back write all they
hold again (their own stale entries cleared first).  What ``/whois`` shows of a
user of another node is kept fresh: the domain tells the backend (``changed``) when
a client's away message, account or real name changes, and its record and
memberships are written again.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from ...delivery import (
    LocalBackend,
    Member,
    Person,
    Place,
    Recipient,
    RoomInfo,
    member,
    nick_key,
    person,
)
from ...events import Quit, Source, first_event_id
from ...framing import skeleton
from . import scripts
from .link import LinkDown

log = logging.getLogger(__name__)

# -- names -----------------------------------------------------------------------------------


class Keys(Protocol):
    """The key names presence needs (``wire.Names`` has them)."""

    nodes: str
    nicks: str
    rooms: str

    def node_key(self, node: str) -> str: ...
    def node_nicks(self, node: str) -> str: ...
    def members(self, room: str) -> str: ...
    def node_rooms(self, node: str) -> str: ...


def room_key(name: str) -> str:
    """The domain's fold of a room name (:func:`chatd.chat.rooms.room_key`)."""
    return name.lower()


def nick_fields(nick: str) -> tuple[str, str]:
    """The two fields of ``p:nicks`` a nick occupies: its key and its skeleton."""
    return f"k:{nick_key(nick)}", f"s:{skeleton(nick)}"


# -- the JSON of the tables ------------------------------------------------------------------


def person_json(person: Person) -> str:
    data = dataclasses.asdict(person)
    data["rooms"] = list(person.rooms)
    return json.dumps(data, separators=(",", ":"))


def person_from(raw: bytes | str) -> Person:
    data = json.loads(raw)
    data["rooms"] = tuple(data.get("rooms") or ())
    return Person(**data)


def member_json(member: Member) -> str:
    return json.dumps(dataclasses.asdict(member), separators=(",", ":"))


def member_from(raw: bytes | str) -> Member:
    return Member(**json.loads(raw))


# -- scripts -------------------------------------------------------------------------------------

_SCRIPTS: dict[str, Any] = {}


def _run(r: Any, source: str, keys: list[str], args: list[Any]) -> Any:
    """EVALSHA ``source`` (loaded on first use and again after a Redis restart)."""
    script = _SCRIPTS.get(source)
    if script is None:
        script = _SCRIPTS[source] = r.register_script(source)
    return script(keys=keys, args=args, client=r)


# -- the Redis side: plain functions of a client (run on the link's thread) ----------------------


def claim(r: Any, keys: Keys, person: Person, replacing: str | None = None) -> bool:
    """Give ``person.nick`` to ``person.session`` unless another live session holds its
    key or skeleton; release ``replacing`` (held by the same session) in the same step."""
    key, look = nick_fields(person.nick)
    old_key, old_look = nick_fields(replacing) if replacing is not None else ("", "")
    return _run(r, scripts.CLAIM, [keys.nicks, keys.node_nicks(person.node)],
                [key, look, person_json(person), person.session or "", keys.node_key(""),
                 old_key, old_look, keys.node_nicks("")]) == 1


def release(r: Any, keys: Keys, node: str, session: str, nick: str) -> int:
    """``session`` no longer holds ``nick`` (a no-op if someone else holds it now)."""
    return int(_run(r, scripts.RELEASE, [keys.nicks, keys.node_nicks(node)],
                    [session, *nick_fields(nick)]))


def find(r: Any, keys: Keys, nick: str) -> Person | None:
    """Who holds ``nick`` (any case, or a look-alike) on a live node."""
    raw = _run(r, scripts.FIND, [keys.nicks], [keys.node_key(""), *nick_fields(nick)])
    return None if raw is None else person_from(raw)


def update_person(r: Any, keys: Keys, person: Person) -> None:
    """Refresh what ``/whois`` shows of a nick this session holds (away, rooms...)."""
    claim(r, keys, person)


def joined(r: Any, keys: Keys, node: str, who: Member, room: str, topic: str) -> None:
    """``who`` (of ``node``) is in the room named ``room`` now."""
    rk = room_key(room)
    _run(r, scripts.JOINED,
         [keys.members(rk), keys.rooms, keys.node_rooms(node)],
         [who.session or "", member_json(who), rk,
          json.dumps({"name": room, "topic": topic}), json.dumps([rk, who.session])])


def parted(r: Any, keys: Keys, node: str, session: str, room: str) -> int:
    """``session`` left the room named ``room``; the members left there."""
    rk = room_key(room)
    return int(_run(r, scripts.PARTED,
                    [keys.members(rk), keys.rooms, keys.node_rooms(node)],
                    [session, rk, json.dumps([rk, session])]))


def set_topic(r: Any, keys: Keys, room: str, topic: str) -> None:
    """The listing's topic of a room that is listed (a room nobody is in stays out)."""
    rk = room_key(room)
    if r.hexists(keys.rooms, rk):
        r.hset(keys.rooms, rk, json.dumps({"name": room, "topic": topic}))


def members(r: Any, keys: Keys, room: str) -> list[Member]:
    """Everyone in the room named ``room``, on every node."""
    return [member_from(raw) for raw in r.hvals(keys.members(room_key(room)))]


def members_and_topic(r: Any, keys: Keys, room: str) -> tuple[list[Member], str]:
    """:func:`members`, and the room's topic as the listing has it ("" if none): one
    round trip."""
    rk = room_key(room)
    pipe = r.pipeline(transaction=False)
    pipe.hvals(keys.members(rk))
    pipe.hget(keys.rooms, rk)
    raw_members, raw_room = pipe.execute()
    topic = json.loads(raw_room).get("topic", "") if raw_room else ""
    return [member_from(raw) for raw in raw_members], topic


def room_list(r: Any, keys: Keys) -> list[RoomInfo]:
    """Every room someone is in, on any node, with its member count."""
    flat = _run(r, scripts.ROOM_LIST, [keys.rooms], [keys.members("")])
    rooms = []
    for raw, count in zip(flat[::2], flat[1::2], strict=True):
        room = json.loads(raw)
        rooms.append(RoomInfo(room["name"], int(count), room.get("topic", "")))
    return rooms


def process_token() -> str:
    """What this process writes in its node key: the same across reloads (a second
    registration from this process is no conflict), another process's differs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def register(r: Any, keys: Keys, node: str, timeout: float, token: str = "1") -> bool:
    """Start ``node``'s heartbeat; False if another live process already has that id."""
    key = keys.node_key(node)
    if not r.set(key, token, nx=True, px=int(timeout * 1000)):
        held = r.get(key)
        if held is None or held.decode(errors="replace") != token:
            return False
        r.pexpire(key, int(timeout * 1000))
    r.sadd(keys.nodes, node)
    return True


def heartbeat(r: Any, keys: Keys, node: str, timeout: float, token: str = "1") -> None:
    """``node`` is alive for ``timeout`` seconds more."""
    pipe = r.pipeline(transaction=False)
    pipe.set(keys.node_key(node), token, px=int(timeout * 1000))
    pipe.sadd(keys.nodes, node)
    pipe.execute()


def unregister(r: Any, keys: Keys, node: str) -> list[tuple[Person, tuple[str, ...]]]:
    """A node that stops cleanly: its key goes, then everything it held."""
    r.delete(keys.node_key(node))
    return sweep(r, keys, node)


def dead_nodes(r: Any, keys: Keys) -> list[str]:
    """The registered nodes whose heartbeat expired."""
    nodes = [n.decode() if isinstance(n, bytes) else n for n in r.smembers(keys.nodes)]
    if not nodes:
        return []
    pipe = r.pipeline(transaction=False)
    for node in nodes:
        pipe.exists(keys.node_key(node))
    return [node for node, alive in zip(nodes, pipe.execute(), strict=True) if not alive]


def sweep(r: Any, keys: Keys, node: str, own: bool = False
          ) -> list[tuple[Person, tuple[str, ...]]]:
    """Remove everything the dead ``node`` held; its sessions (with their rooms' names)
    for the one caller that got there first (an empty list for any other).  ``own``: a
    live node clearing its own entries before it writes them again."""
    flat = _run(r, scripts.SWEEP,
                [keys.nicks, keys.node_nicks(node), keys.node_rooms(node),
                 keys.rooms, keys.nodes],
                [node, keys.node_key(node), keys.members(""), "own" if own else ""])
    return [(person_from(raw), tuple(json.loads(names)))
            for raw, names in zip(flat[::2], flat[1::2], strict=True)]


def reregister(r: Any, keys: Keys, node: str, timeout: float, people: Iterable[Person],
               memberships: Iterable[tuple[Member, str, str]], token: str = "1") -> list[str]:
    """After a reconnect (Redis may have restarted empty, or kept what this node held
    before the cut — nicks released and rooms left meanwhile are stale there): the
    heartbeat, then this node's entries cleared and every nick and membership it holds
    now written.  Returns the nicks another node took meanwhile."""
    heartbeat(r, keys, node, timeout, token)
    sweep(r, keys, node, own=True)
    lost = [who.nick for who in people if not claim(r, keys, who)]
    for one, room, topic in memberships:
        joined(r, keys, node, one, room, topic)
    return lost


def heartbeat_fresh(r: Any, keys: Keys, node: str, timeout: float, token: str = "1") -> bool:
    """:func:`heartbeat`; True if ``node``'s key was gone (Redis restarted empty, or the
    node was silent so long that others may have swept it): then it must re-register."""
    fresh = bool(r.set(keys.node_key(node), token, nx=True, px=int(timeout * 1000)))
    heartbeat(r, keys, node, timeout, token)
    return fresh


def beat(r: Any, keys: Keys, node: str, timeout: float, token: str = "1"
         ) -> tuple[bool, list[tuple[str, list[tuple[Person, tuple[str, ...]]]]]]:
    """One heartbeat job: the heartbeat (whether it was fresh), then every dead node
    swept — with the sessions this caller must announce as gone."""
    fresh = heartbeat_fresh(r, keys, node, timeout, token)
    swept = [(dead, sweep(r, keys, dead)) for dead in dead_nodes(r, keys) if dead != node]
    return fresh, [(dead, gone) for dead, gone in swept if gone]


# -- the loop side -------------------------------------------------------------------------------

#: The reason shown in the quit line of a user whose node was lost.
LOST_REASON = "node lost"


def quit_event(gone: Person, rooms: tuple[str, ...], event_id: int,
               reason: str = LOST_REASON) -> Quit:
    """The quit of a session whose node died, made from what presence stored of it."""
    ident, _, host = gone.user.rpartition("@")
    client_id = (gone.session or "").rpartition(":")[2]
    source = Source(gone.nick, int(client_id) if client_id.isdigit() else None, None, None,
                    gone.node, ident, host, gone.account, gone.realname)
    return Quit(event_id, time.time(), source, "", reason, rooms=rooms)


class RedisPresence:
    """The cluster's presence: the domain's questions answered from Redis, the local
    backend kept in step (local delivery reads its nick table), a heartbeat, and the
    sweep of dead nodes.

    While the link is down, a question that could not be sent is answered from this
    node alone (a nick is claimed locally, ``/who`` shows local members): local chat
    keeps working, and the heartbeat re-registers everything when Redis is back.  A
    question that was sent and got no answer (a frozen Redis) is not answered: the
    domain's presence timeout tells the client.
    """

    def __init__(self, link: Any, names: Keys, node: str, local: LocalBackend, *,
                 heartbeat_seconds: float = 1.0, node_timeout_seconds: float = 5.0,
                 call_later: Callable[..., Any] | None = None,
                 on_lost: Callable[[Quit], None] | None = None,
                 on_conflict: Callable[[str], None] | None = None,
                 on_nick_lost: Callable[[str, str], None] | None = None,
                 token: str | None = None) -> None:
        self.link = link
        self.names = names
        self.node = node
        self.local = local
        self.heartbeat_seconds = heartbeat_seconds
        self.node_timeout_seconds = node_timeout_seconds
        self._call_later = call_later
        #: Told each quit of a dead node's session this node must announce.
        self.on_lost = on_lost
        #: Told (with an error text) that another live node has this node's id.
        self.on_conflict = on_conflict
        #: Told (session, nick) when re-registering found a local user's nick held by a
        #: session of another node (taken while this node was cut off or frozen): the
        #: user must give it up, or two sessions would answer to one nick.
        self.on_nick_lost = on_nick_lost
        #: What this process writes in its node key (:func:`process_token`).
        self.token = process_token() if token is None else token
        self.registered = False
        self._registering = False
        self._timer: Any = None
        self._event_ids = itertools.count(first_event_id())
        #: Sessions of dead nodes announced so far (what a test or stats can read).
        self.lost = 0

    # -- questions --------------------------------------------------------------------

    def claim_nick(self, client: Recipient, nick: str, then: Callable[[bool], Any],
                   replacing: str | None = None) -> None:
        who = dataclasses.replace(person(client), nick=nick)
        names = self.names

        def done(claimed: bool | None, error: Exception | None) -> None:
            if error is not None:
                if isinstance(error, LinkDown):  # never sent: this node alone decides
                    then(self.local.take_nick(client, nick, replacing))
                return
            if claimed and not self.local.take_nick(client, nick, replacing):
                claimed = False  # cannot happen while Redis is the one authority
            then(bool(claimed))

        self.link.run(lambda r: claim(r, names, who, replacing), done)

    def find_nick(self, nick: str, then: Callable[[Person | None], Any]) -> None:
        here = self.local.holder(nick)
        if here is not None:
            then(person(here))
            return
        names = self.names
        self.link.run(lambda r: find(r, names, nick),
                      self._answer(then, lambda: self.local.find_nick(nick, then)))

    def members(self, room: str, then: Callable[[list[Member]], Any]) -> None:
        names = self.names

        def answered(found: tuple[list[Member], str]) -> None:
            everyone, topic = found
            self._learn_topic(room, topic)
            then(everyone)

        self.link.run(lambda r: members_and_topic(r, names, room),
                      self._answer(answered, lambda: self.local.members(room, then)))

    def _learn_topic(self, room: str, topic: str) -> None:
        """A room this node has members of but knows no topic for (its first member here
        just joined: the join's greeting is what asked) takes the topic set elsewhere.
        A room that knows one follows the topic events instead (a read racing a change
        must not take it back)."""
        places = self.local.places
        place = places.get(room) if places is not None and topic else None
        if place is not None and not place.topic:
            place.topic = topic

    def room_list(self, then: Callable[[list[RoomInfo]], Any]) -> None:
        names = self.names
        self.link.run(lambda r: room_list(r, names),
                      self._answer(lambda rooms: then(self._topics_here(rooms)),
                                   lambda: self.local.room_list(then)))

    def _topics_here(self, rooms: list[RoomInfo]) -> list[RoomInfo]:
        """The listing with the topics of this node's rooms as this node knows them (a
        topic event updates every node with members there at once; the listing in
        Redis is written by the setter's node a moment later)."""
        places = self.local.places
        if places is None:
            return rooms
        fresh = []
        for info in rooms:
            place = places.get(info.name)
            if place is not None and place.topic != info.topic:
                info = dataclasses.replace(info, topic=place.topic)
            fresh.append(info)
        return fresh

    @staticmethod
    def _answer(then: Callable[[Any], Any],
                alone: Callable[[], Any]) -> Callable[[Any, Exception | None], None]:
        """A link callback: ``then(result)``; this node's own answer if the question was
        never sent (the link is down); nothing on another failure (see the class)."""
        def done(result: Any, error: Exception | None) -> None:
            if error is None:
                then(result)
            elif isinstance(error, LinkDown):
                alone()
        return done

    # -- facts ------------------------------------------------------------------------

    def release_nick(self, client: Recipient, nick: str) -> None:
        self.local.release_nick(client, nick)
        names, node, session = self.names, self.node, client.session or ""
        self.link.run(lambda r: release(r, names, node, session, nick))

    def joined(self, client: Recipient, room: Place) -> None:
        self.local.joined(client, room)
        self._joined_job(client, room)
        self._refresh(client)

    def _joined_job(self, client: Recipient, room: Place) -> None:
        names, node, who = self.names, self.node, member(client)
        name, topic = room.name, room.topic
        self.link.run(lambda r: joined(r, names, node, who, name, topic))

    def parted(self, client: Recipient, room: Place) -> None:
        self.local.parted(client, room)
        names, node, session, name = self.names, self.node, client.session or "", room.name
        self.link.run(lambda r: parted(r, names, node, session, name))
        self._refresh(client)

    def _refresh(self, client: Recipient) -> None:
        """Keep what ``/whois`` shows elsewhere of a local nick (its rooms, away) fresh."""
        if self.local.holder(client.nick) is client:
            names, who = self.names, person(client)
            self.link.run(lambda r: update_person(r, names, who))

    def changed(self, client: Recipient) -> None:
        """``client``'s away message, account or real name changed: its record and its
        memberships are written again (what ``/whois`` and ``/who`` show elsewhere): the
        memberships first (the jobs run in order), so once ``/whois`` shows a change
        elsewhere, ``/who`` does too."""
        for room in tuple(client.rooms):
            self._joined_job(client, room)
        self._refresh(client)

    def topic_changed(self, room: Place) -> None:
        """The listing's topic of ``room`` (the backend tells it)."""
        names, name, topic = self.names, room.name, room.topic
        self.link.run(lambda r: set_topic(r, names, name, topic))

    # -- the heartbeat and the sweep ------------------------------------------------------

    def start(self) -> None:
        """Start (or, after a reload, restart) the heartbeat timer."""
        self.stop()
        self._tick()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        if self._call_later is not None:
            self._timer = self._call_later(self.heartbeat_seconds, self._tick)
        if not self.link.up:
            return
        names, node, timeout, token = (self.names, self.node, self.node_timeout_seconds,
                                       self.token)
        if not self.registered:
            self._register()
        else:
            self.link.run(lambda r: beat(r, names, node, timeout, token), self._beaten)

    def _register(self) -> None:
        """Take this node's id in Redis (refused if a live node has it)."""
        if self._registering:
            return  # one registration at a time: a second would find the first's key
        self._registering = True
        names, node, timeout, token = (self.names, self.node, self.node_timeout_seconds,
                                       self.token)
        self.link.run(lambda r: register(r, names, node, timeout, token), self._registered)

    def _registered(self, ok: bool | None, error: Exception | None) -> None:
        self._registering = False
        if error is not None:
            return  # the next tick tries again
        if not ok:
            text = (f"cluster: another live node already has the node id {self.node!r} "
                    "(cluster.node_id must be unique)")
            log.error("%s", text)
            if self.on_conflict is not None:
                self.on_conflict(text)
            return
        self.registered = True
        log.info("cluster: node %s registered (heartbeat every %s s, timeout %s s)",
                 self.node, self.heartbeat_seconds, self.node_timeout_seconds)
        self.reregister()  # clients that connected before Redis answered

    def _beaten(self, answer: Any, error: Exception | None) -> None:
        if error is not None:
            return
        fresh, swept = answer
        if fresh:
            log.warning("cluster: this node's heartbeat key was gone (Redis restarted, or "
                        "it was silent too long): registering its users again")
            self.reregister()
        for dead, gone in swept:
            log.warning("cluster: node %s is gone (no heartbeat for %s s): %d users quit",
                        dead, self.node_timeout_seconds, len(gone))
            for who, rooms in gone:
                self.lost += 1
                event = quit_event(who, rooms, next(self._event_ids))
                if self.on_lost is not None:
                    self.on_lost(event)

    def on_state(self, up: bool) -> None:
        """The link reconnected (``up``): Redis may have restarted empty."""
        if up and self.registered:
            self.reregister()
        elif up:
            self._register()  # at once: until then this node's nicks do not block others

    def reregister(self) -> None:
        """Write again every nick and membership this node holds."""
        local = self.local
        clients = [c for c in tuple(local.clients.values()) if local.holder(c.nick) is c]
        people = [person(c) for c in clients]
        memberships = [(member(c), room.name, room.topic) for c in clients for room in c.rooms]
        names, node, timeout, token = (self.names, self.node, self.node_timeout_seconds,
                                       self.token)
        self.link.run(lambda r: reregister(r, names, node, timeout, people, memberships, token),
                      functools.partial(self._reregistered, len(people)))

    def _reregistered(self, count: int, lost: list[str] | None,
                      error: Exception | None) -> None:
        if error is None and count:
            log.info("cluster: registered this node's users again: %d", count)
        if lost:
            log.warning("cluster: %d nicks of this node were taken on another node while "
                        "Redis was unreachable: %s", len(lost), ", ".join(lost[:20]))
            self._give_up(lost)

    def _give_up(self, lost: list[str]) -> None:
        """The local holders of ``lost`` nicks (still holding them: a rename meanwhile
        went through Redis) are told to give them up (:attr:`on_nick_lost`)."""
        for nick in lost:
            holder = self.local.holder(nick)
            if holder is not None and self.on_nick_lost is not None:
                self.on_nick_lost(holder.session or "", nick)

    def close(self) -> None:
        """A clean stop: the heartbeat ends and this node's presence is removed."""
        self.stop()
        if self.registered:
            names, node = self.names, self.node
            self.link.run(lambda r: unregister(r, names, node))


def announce_lost(backend: Any, event: Quit) -> None:
    """Tell every node's members of a dead session's rooms that it quit
    (:meth:`~chatd.builtin.cluster.backend.ClusterBackend.announce_quit`: delivered
    here now, and queued on each room's channel for the others)."""
    backend.announce_quit(event)
