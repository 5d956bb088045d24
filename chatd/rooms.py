"""Rooms: named groups of clients, and the one fast path that fans a line out.

The data lives in the core because delivery is the hot path: a broadcast
encodes its line once and hands the *same* ``bytes`` object to every
recipient's output queue, where the end-of-tick flush coalesces it with
whatever else that recipient got this tick.  What rooms *mean* (who joins
where, which notices are sent, where plain lines go) is policy and belongs to
the built-in ``rooms`` plugin, which uses only this public API.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from .framing import sanitize
from .stash import Stash

if TYPE_CHECKING:
    from .client import Client
    from .fanout import Fanout

_ROOM = re.compile(r"#[A-Za-z0-9_\-.]{1,32}\Z")


def room_problem(name: str) -> str | None:
    """Why ``name`` is not a valid room name, or ``None``."""
    if not _ROOM.match(name):
        return "a room name is '#' and 1-32 letters, digits or _-."
    return None


def room_key(name: str) -> str:
    """Rooms compare case-insensitively: ``#Dev`` is ``#dev``."""
    return name.lower()


class Room:
    """A room and its members, in join order."""

    __slots__ = ("_fanout", "members", "name", "stash", "topic")

    def __init__(self, name: str, fanout: Fanout) -> None:
        self._fanout = fanout
        self.name = name
        self.topic = ""
        #: Members in join order (a dict used as an ordered set).
        self.members: dict[Client, None] = {}
        #: Per-plugin state for this room; see :mod:`chatd.stash`.
        self.stash = Stash()

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[Client]:
        return iter(list(self.members))

    def __contains__(self, client: object) -> bool:
        return client in self.members

    def send(self, text: str, *, exclude: Client | None = None) -> int:
        """Send one line to every member but ``exclude``; returns the count.

        ``text`` is sanitised and encoded once and goes into the tick's fan-out
        batch (:mod:`chatd.fanout`): at the end of the tick each member gets
        all of the room's lines of that tick in one payload.
        """
        data = (sanitize(text) + "\n").encode("utf-8")
        self._fanout.add(self, data, exclude)
        return len(self.members) - (exclude in self.members)

    def __repr__(self) -> str:
        return f"<Room {self.name} members={len(self.members)}>"


def deliver(recipients: Iterable[Client], data: bytes, exclude: Client | None = None) -> int:
    """Queue ``data`` (one encoded, sanitised line) on each recipient but ``exclude``.

    The direct path, for server-wide notices.  Iterates over a snapshot so that
    a recipient closing mid-loop (an output limit, a plugin) cannot change the
    set being walked.  Callers flush the fan-out first to keep ordering.
    """
    count = 0
    for client in tuple(recipients):
        if client is not exclude:
            client._conn.write(data)
            count += 1
    return count


class RoomTable:
    """All rooms by case-insensitive name."""

    __slots__ = ("_fanout", "_rooms")

    def __init__(self, fanout: Fanout) -> None:
        self._fanout = fanout
        self._rooms: dict[str, Room] = {}

    def get(self, name: str) -> Room | None:
        return self._rooms.get(room_key(name))

    def get_or_create(self, name: str) -> Room:
        key = room_key(name)
        room = self._rooms.get(key)
        if room is None:
            room = self._rooms[key] = Room(name, self._fanout)
        return room

    def discard(self, room: Room) -> None:
        if self._rooms.get(room_key(room.name)) is room:
            del self._rooms[room_key(room.name)]

    def __iter__(self) -> Iterator[Room]:
        return iter(sorted(self._rooms.values(), key=lambda r: room_key(r.name)))

    def __len__(self) -> int:
        return len(self._rooms)
