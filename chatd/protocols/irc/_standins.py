"""Stand-ins for the IRC renderer and command mapping, until wave 1 merges.

``render.renderer_for`` (helper "irc-render") and ``commands.translate`` (helper
"irc-commands") are written in parallel with the session layer; this module has
their signatures (I20-DESIGN.md) and just enough behaviour for the session's tests:
every event as a server ``NOTICE`` and every command ``421``.  At merge,
:mod:`chatd.protocols.irc.protocol` imports the real ones instead and this
module is deleted (its one import line says so).
"""

from __future__ import annotations

import re
from typing import Any

from ...events import Event
from ...requests import Invoke, Request, Say
from ..base import Renderer
from .wire import Message

_UNSAFE = re.compile(r"[\r\n\0]")


class _StandInRenderer(Renderer):
    """Every event as ``:server NOTICE * :kind text`` (valid IRC, nothing more)."""

    name = "irc"

    def __init__(self, caps: frozenset[str], server_name: str) -> None:
        self.caps = caps
        self.server_name = server_name

    def render(self, event: Event) -> bytes:
        text = _UNSAFE.sub(" ", f"{event.kind} {event.text}")
        return Message("NOTICE", ("*", text), self.server_name).encode()

    def local_error(self, text: str, *, code: str | None = None) -> bytes:
        return Message("ERROR", (_UNSAFE.sub(" ", text),)).encode()


_RENDERERS: dict[tuple[frozenset[str], str], _StandInRenderer] = {}


def renderer_for(caps: frozenset[str], server_name: str) -> Renderer:
    """One renderer per (capabilities, server name), as ``render.renderer_for``."""
    key = (caps, server_name)
    found = _RENDERERS.get(key)
    if found is None:
        found = _RENDERERS[key] = _StandInRenderer(caps, server_name)
    return found


def translate(message: Message, state: Any) -> list[Request | Message]:
    """As ``commands.translate``: here ``PRIVMSG #room :text`` and ``QUIT``; else 421."""
    if message.command == "PRIVMSG" and len(message.params) == 2:
        return [Say(message.params[1], room=message.params[0])]
    if message.command == "QUIT":
        return [Invoke("quit", message.params[0] if message.params else "")]
    return [Message("421", (state.nick, message.command, "Unknown command"),
                    state.server_name)]
