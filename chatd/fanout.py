"""Per-tick room broadcast batching: the hot path of a chat server.

Measured on the reference machine, the cost of a broadcast server is dominated
by ``send()`` calls and by Python work done once per *recipient*.  So a room
message is not copied into every member's queue when it is sent; it is
recorded once in the tick's batch.  Just before the reactor flushes
(Redis' ``beforeSleep``), :meth:`Fanout.flush` joins each room's lines into one
``bytes`` object and hands that one object to every member: per tick and
recipient that is one ``send()``, however many lines the room carried.

Ordering guarantees (what a reader of one connection sees):

* lines from one sender arrive in the order sent;
* everything a client is sent directly (``client.send``: notices, errors,
  private messages) stays in order with room lines, because any direct write
  first flushes the pending batch (:meth:`Fanout.flush` is cheap when empty);
* a member of several rooms that carried lines in the same tick gets them in
  the global order they were produced (the slow path below).

The sender of a line is excluded from its own delivery (no echo); a member who
sent in this tick gets the room's lines minus its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .client import Client
    from .rooms import Room
    from .server import Server


_Entry = tuple["Room", bytes, "Client | None", int]  # room, line, excluded sender, order


class Fanout:
    """The tick's pending room lines; flushed before the reactor's write flush."""

    __slots__ = ("_entries", "_server", "rooms_pending")

    def __init__(self, server: Server | None = None) -> None:
        self._server = server
        #: (room, encoded line, excluded client or None), in production order.
        self._entries: list[tuple[Room, bytes, Client | None]] = []
        #: Rooms with lines in this batch: a direct write to a client flushes the
        #: batch first only if the client is in one of them (ordering), so a
        #: connect storm's welcomes do not flush every join notice one by one.
        self.rooms_pending: set[Room] = set()

    @property
    def pending(self) -> int:
        return len(self._entries)

    def add(self, room: Room, data: bytes, exclude: Client | None) -> None:
        """Record one encoded line for ``room`` (delivered at :meth:`flush`)."""
        self._entries.append((room, data, exclude))
        self.rooms_pending.add(room)

    def flush(self) -> None:
        """Deliver every pending line: one joined payload per room and recipient."""
        entries = self._entries
        if not entries:
            return
        self._entries = []
        self.rooms_pending = set()
        if self._server is not None:
            self._server.stats.deliveries += sum(
                len(room.members) - (exclude is not None) for room, _data, exclude in entries
            )
        by_room: dict[Room, list[_Entry]] = {}
        for order, (room, data, exclude) in enumerate(entries):
            by_room.setdefault(room, []).append((room, data, exclude, order))
        crowded: set[Client] = set()
        for room, room_entries in by_room.items():
            _deliver_room(room, room_entries, by_room if len(by_room) > 1 else None, crowded)
        for client in crowded:
            # In two or more of this tick's busy rooms: merge their lines in the
            # order they were produced (work proportional to its own rooms' lines).
            mine = sorted(
                (entry for room in client.rooms if room in by_room for entry in by_room[room]),
                key=lambda entry: entry[3],
            )
            payload = b"".join(entry[1] for entry in mine if entry[2] is not client)
            if payload:
                client._conn.write_now(payload)


def _deliver_room(
    room: Room,
    entries: list[_Entry],
    busy_rooms: dict[Room, list[_Entry]] | None,
    crowded: set[Client],
) -> None:
    payload = entries[0][1] if len(entries) == 1 else b"".join(e[1] for e in entries)
    senders = {e[2] for e in entries}
    senders.discard(None)
    for member in tuple(room.members):
        if busy_rooms is not None and len(member.rooms) > 1:
            busy = sum(1 for r in member.rooms if r in busy_rooms)
            if busy > 1:
                crowded.add(member)
                continue
        if member in senders:
            own = b"".join(e[1] for e in entries if e[2] is not member)
            if own:
                member._conn.write_now(own)
        else:
            member._conn.write_now(payload)
