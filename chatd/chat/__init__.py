"""The chat domain: clients, nicks, rooms, dispatch and the flood gate, with no sockets.

The objects plugins receive (:class:`Client`, :class:`Room`, :class:`Server`)
are defined here and exported from :mod:`chatd`.
"""

from __future__ import annotations

from .client import Client
from .commands import Command, CommandTable, DuplicateCommandError, Setting, collect_commands
from .domain import ChatDomain
from .errors import CommandError, NickError, Reject, RoomError, UsageError
from .facade import Lifecycle, Server
from .rooms import Room, RoomTable

__all__ = [
    "ChatDomain",
    "Client",
    "Command",
    "CommandError",
    "CommandTable",
    "DuplicateCommandError",
    "Lifecycle",
    "NickError",
    "Reject",
    "Room",
    "RoomError",
    "RoomTable",
    "Server",
    "Setting",
    "UsageError",
    "collect_commands",
]
