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
removes them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any, Protocol

from ...delivery import Member, Person, RoomInfo, nick_key

__all__ = ["Member", "Person", "RoomInfo"]
from ...framing import skeleton
from . import scripts

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


def joined(r: Any, keys: Keys, node: str, member: Member, room: str, topic: str) -> None:
    """``member`` (of ``node``) is in the room named ``room`` now."""
    rk = room_key(room)
    _run(r, scripts.JOINED,
         [keys.members(rk), keys.rooms, keys.node_rooms(node)],
         [member.session or "", member_json(member), rk,
          json.dumps({"name": room, "topic": topic}), json.dumps([rk, member.session])])


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


def room_list(r: Any, keys: Keys) -> list[RoomInfo]:
    """Every room someone is in, on any node, with its member count."""
    flat = _run(r, scripts.ROOM_LIST, [keys.rooms], [keys.members("")])
    rooms = []
    for raw, count in zip(flat[::2], flat[1::2], strict=True):
        room = json.loads(raw)
        rooms.append(RoomInfo(room["name"], int(count), room.get("topic", "")))
    return rooms


def register(r: Any, keys: Keys, node: str, timeout: float) -> bool:
    """Start ``node``'s heartbeat; False if a live node already has that id."""
    if not r.set(keys.node_key(node), b"1", nx=True, px=int(timeout * 1000)):
        return False
    r.sadd(keys.nodes, node)
    return True


def heartbeat(r: Any, keys: Keys, node: str, timeout: float) -> None:
    """``node`` is alive for ``timeout`` seconds more."""
    pipe = r.pipeline(transaction=False)
    pipe.set(keys.node_key(node), b"1", px=int(timeout * 1000))
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


def sweep(r: Any, keys: Keys, node: str) -> list[tuple[Person, tuple[str, ...]]]:
    """Remove everything the dead ``node`` held; its sessions (with their rooms' names)
    for the one caller that got there first (an empty list for any other)."""
    flat = _run(r, scripts.SWEEP,
                [keys.nicks, keys.node_nicks(node), keys.node_rooms(node),
                 keys.rooms, keys.nodes],
                [node, keys.node_key(node), keys.members("")])
    return [(person_from(raw), tuple(json.loads(rooms)))
            for raw, rooms in zip(flat[::2], flat[1::2], strict=True)]


def reregister(r: Any, keys: Keys, node: str, timeout: float, people: Iterable[Person],
               memberships: Iterable[tuple[Member, str, str]]) -> list[str]:
    """After a reconnect (Redis may have restarted empty): the heartbeat, every nick and
    membership this node holds.  Returns the nicks another node took meanwhile."""
    heartbeat(r, keys, node, timeout)
    lost = [person.nick for person in people if not claim(r, keys, person)]
    for member, room, topic in memberships:
        joined(r, keys, node, member, room, topic)
    return lost
