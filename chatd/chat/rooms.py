"""Rooms: named groups of clients.

A :class:`Room` is the domain's record of who is in it, its topic and its
plugin state.  Membership changes only through the server (``server.join()``,
``server.part()``, a disconnect), which creates the join/part/quit events and
keeps :attr:`Room.renderers` (how many members use each protocol) current for
the fan-out (:mod:`chatd.delivery`), which renders a room's events once per
protocol in use.  What rooms *mean* (who starts where, where plain lines go)
is policy and belongs to the built-in ``rooms`` plugin.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..framing import skeleton
from ..stash import Stash

if TYPE_CHECKING:
    from .client import Client

_ROOM = re.compile(r"#[A-Za-z0-9_\-.]{1,32}\Z")


def room_problem(name: str) -> str | None:
    """Why ``name`` is not a valid room name, or ``None``."""
    if not _ROOM.match(name):
        return "a room name is '#' and 1-32 letters, digits or _-."
    return None


def room_key(name: str) -> str:
    """Rooms compare case-insensitively: ``#Dev`` is ``#dev``."""
    return name.lower()


def room_looks(name: str) -> frozenset[str]:
    """How ``name`` reads, ignoring look-alikes (``chatd.skeleton``, of the name as
    written and lowercased): two rooms with different keys but a form in common
    (``#lobby`` and ``#Iobby`` with a capital i, ``#l0bby``) would pass for one."""
    return frozenset((skeleton(name), skeleton(room_key(name))))


class Room:
    """A room: its members in join order, its topic, and per-plugin state."""

    __slots__ = (
        "__weakref__",
        "_notice",
        "alone",
        "created_at",
        "members",
        "name",
        "operators",
        "renderers",
        "stash",
        "topic",
    )

    def __init__(self, name: str, notice: Callable[..., int] | None = None) -> None:
        self._notice = notice
        self.name = name
        #: The topic ("" if none); set it with ``server.set_topic()`` so the room hears of it.
        self.topic = ""
        #: Members in join order (a dict used as an ordered set).  Read-only for plugins.
        self.members: dict[Client, None] = {}
        #: Per-plugin state for this room; see :mod:`chatd.stash`.
        self.stash = Stash()
        #: How many members use each protocol renderer (maintained by the server).
        self.renderers: dict[Any, int] = {}
        #: When the room was created (``time.time()``).
        self.created_at = time.time()
        #: The accounts (nick keys, lowercase) of the room's operators: a member
        #: identified as one of them is marked ``operator`` in ``/who`` (IRC's ``@``).
        #: Kept by the plugin that decides it (the built-in *moderation*: a registered
        #: room's founder and operators) through ``server.set_room_operators()``.
        self.operators: frozenset[str] = frozenset()
        #: ``(room,)``: the ``rooms`` tuple of every client in this room only, shared
        #: by all of them (most clients are in one room; a tuple each is 48 bytes).
        #: The domain's, for ``client.rooms``; read-only for plugins.
        self.alone: tuple[Room, ...] = (self,)

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[Client]:
        return iter(list(self.members))

    def __contains__(self, client: object) -> bool:
        return client in self.members

    def say(self, text: str, *, exclude: Client | None = None) -> int:
        """Tell every member but ``exclude`` something, as a notice from your plugin.

        Line clients read ``*** text``; a newline in ``text`` makes continuation
        lines with the same marker.  Returns how many members it went to.

        Said by your plugin while it runs a command a client typed, it is that
        client's speech: if ``chatd_check_speak`` refuses it (the client is muted
        here), nobody gets it, the client is told, and it returns 0.
        """
        if self._notice is None:
            raise RuntimeError(f"{self.name} is not attached to a server")
        return self._notice(self, text, exclude)

    def send(self, text: str, *, exclude: Client | None = None) -> int:
        """Deprecated alias of :meth:`say` (API 1 sent raw lines; API 2 sends notices)."""
        warnings.warn(
            "Room.send() is deprecated: use room.say() (a plugin cannot send raw lines; "
            "every line is rendered from an event)",
            DeprecationWarning, stacklevel=2,
        )
        return self.say(text, exclude=exclude)

    def __repr__(self) -> str:
        return f"<Room {self.name} members={len(self.members)}>"


class RoomTable:
    """All rooms by case-insensitive name.  ``server.rooms`` for plugins.

    It also knows the rooms by how they read (:func:`room_looks`), so the server
    can refuse a new room that would pass for one that exists (:meth:`look_alike`).
    """

    __slots__ = ("_looks", "_make", "_on_created", "_rooms")

    def __init__(
        self,
        make_room: Callable[[str], Room] = Room,
        on_created: Callable[[Room], None] | None = None,
    ) -> None:
        self._make = make_room
        self._on_created = on_created
        self._rooms: dict[str, Room] = {}
        self._looks: dict[str, Room] = {}

    def get(self, name: str) -> Room | None:
        """The room called ``name`` (any case), or None."""
        return self._rooms.get(room_key(name))

    def look_alike(self, name: str) -> Room | None:
        """Another room that reads like ``name`` (``#lobby`` for ``#Iobby``), or None.
        The room called ``name`` itself (any case) is not another."""
        key = room_key(name)
        for look in room_looks(name):
            room = self._looks.get(look)
            if room is not None and room_key(room.name) != key:
                return room
        return None

    def get_or_create(self, name: str) -> Room:
        """The room called ``name``, created (``chatd_room_created``) if it did not exist.

        ``name`` must be valid (see ``room_problem``); ``server.join()`` checks it.
        """
        key = room_key(name)
        room = self._rooms.get(key)
        if room is None:
            room = self._rooms[key] = self._make(name)
            for look in room_looks(name):
                self._looks.setdefault(look, room)
            if self._on_created is not None:
                self._on_created(room)
        return room

    def discard(self, room: Room) -> bool:
        """Forget ``room``; True if it was known."""
        if self._rooms.get(room_key(room.name)) is room:
            del self._rooms[room_key(room.name)]
            for look in room_looks(room.name):
                if self._looks.get(look) is room:
                    del self._looks[look]
            return True
        return False

    def __iter__(self) -> Iterator[Room]:
        return iter(sorted(self._rooms.values(), key=lambda r: room_key(r.name)))

    def __len__(self) -> int:
        return len(self._rooms)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and room_key(name) in self._rooms
