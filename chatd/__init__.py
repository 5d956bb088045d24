"""chatd: a pluggable chat server for plain TCP (``nc``), programs (JSON lines) and more.

The names exported here are the public plugin API: docs/api.md is the
reference of every object a plugin receives, ``chatd/hookspecs.py`` the hook
reference and docs/plugins.md the tutorial.  Importing :mod:`chatd` does not
import the server itself (:mod:`chatd.server`), only what plugins use.
"""

from __future__ import annotations

import pluggy

from .version import __version__

hookimpl = pluggy.HookimplMarker("chatd")
"""Marks a function as a chatd hook implementation: ``@hookimpl``."""

hookspec = pluggy.HookspecMarker("chatd")
"""Marks a hook specification, for plugins that add hooks (``chatd_addhooks``)."""

from . import events  # noqa: E402
from .chat import (  # noqa: E402
    Client,
    Command,
    CommandError,
    NickError,
    Reject,
    Room,
    RoomError,
    Server,
    Setting,
    UsageError,
)
from .config import ConfigError  # noqa: E402
from .delivery import Member, Person, RoomInfo  # noqa: E402
from .events import Event, Source  # noqa: E402
from .framing import sanitize, skeleton  # noqa: E402
from .plugins import PluginTimer as Timer  # noqa: E402
from .stash import Stash, StashKey  # noqa: E402
from .store import StoreAnswer, StoreUnavailable  # noqa: E402
from .templates import fill, plural, template_problem  # noqa: E402

__all__ = [
    "Client",
    "Command",
    "CommandError",
    "ConfigError",
    "Event",
    "Member",
    "NickError",
    "Person",
    "Reject",
    "Room",
    "RoomError",
    "RoomInfo",
    "Server",
    "Setting",
    "Source",
    "Stash",
    "StashKey",
    "StoreAnswer",
    "StoreUnavailable",
    "Timer",
    "UsageError",
    "__version__",
    "events",
    "fill",
    "hookimpl",
    "hookspec",
    "plural",
    "sanitize",
    "skeleton",
    "template_problem",
]
