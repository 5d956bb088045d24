"""chatd: a pluggable line-protocol chat server for plain TCP.

The names exported here are the public plugin API; see ``chatd/hookspecs.py``
for the hooks and ``docs/plugins.md`` for the tutorial.
"""

from __future__ import annotations

__version__ = "0.1.0"

import pluggy

hookimpl = pluggy.HookimplMarker("chatd")
"""Marks a function as a chatd hook implementation: ``@hookimpl``."""

hookspec = pluggy.HookspecMarker("chatd")
"""Marks a hook specification, for plugins that add hooks (``chatd_addhooks``)."""

from .client import Client  # noqa: E402
from .commands import Command, CommandError, UsageError  # noqa: E402
from .config import ConfigError  # noqa: E402
from .rooms import Room  # noqa: E402
from .server import NickError, Reject, RoomError, Server  # noqa: E402
from .stash import Stash, StashKey  # noqa: E402

__all__ = [
    "Client",
    "Command",
    "CommandError",
    "ConfigError",
    "NickError",
    "Reject",
    "Room",
    "RoomError",
    "Server",
    "Stash",
    "StashKey",
    "UsageError",
    "__version__",
    "hookimpl",
    "hookspec",
]
