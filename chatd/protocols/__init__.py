"""Wire formats: each turns bytes into requests and events into bytes.

A listener names its protocol (``listen: [{port: 7788, protocol: line}]``);
every connection it accepts gets a fresh protocol object of that kind.  A
protocol is a :class:`~chatd.protocols.base.ChatProtocol` subclass with a
:class:`~chatd.protocols.base.Renderer`, registered once with a
:class:`~chatd.protocols.registry.ProtocolSpec` (its name, class, listener options
and doc): the built-ins in :data:`~chatd.protocols.registry.BUILTIN_PROTOCOLS`,
a plugin's through the ``chatd_protocols`` hook.  The acceptor hands each protocol
object its listener's :class:`~chatd.protocols.base.Door`, through which the
protocol begins the chat session when it is ready.
"""

from __future__ import annotations

from .base import (
    ChatProtocol,
    Door,
    Framer,
    ListenerOptions,
    PlainDoor,
    ProtocolLimits,
    Renderer,
    Session,
    SessionRefused,
    Transport,
    listener_password,
)
from .jsonl import JsonlProtocol
from .line import LineProtocol
from .registry import BUILTIN_PROTOCOLS, ProtocolRegistry, ProtocolSpec

__all__ = [
    "BUILTIN_PROTOCOLS",
    "ChatProtocol",
    "Door",
    "Framer",
    "JsonlProtocol",
    "LineProtocol",
    "ListenerOptions",
    "PlainDoor",
    "ProtocolLimits",
    "ProtocolRegistry",
    "ProtocolSpec",
    "Renderer",
    "Session",
    "SessionRefused",
    "Transport",
    "listener_password",
]
