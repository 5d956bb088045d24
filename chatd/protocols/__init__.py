"""Wire formats: each turns bytes into requests and events into bytes.

A listener names its protocol (``listen: [{port: 7788, protocol: line}]``);
every connection it accepts gets a fresh protocol object of that kind.  A
protocol is a :class:`~chatd.protocols.base.ChatProtocol` subclass with a
:class:`~chatd.protocols.base.Renderer`, registered once with a
:class:`~chatd.protocols.registry.ProtocolSpec` (its name, class, listener options
and doc): the built-ins in :data:`~chatd.protocols.registry.BUILTIN_PROTOCOLS`,
a plugin's through the ``chatd_protocols`` hook.
"""

from __future__ import annotations

from .base import (
    ChatProtocol,
    Framer,
    ListenerOptions,
    ProtocolLimits,
    Renderer,
    Session,
    Transport,
)
from .jsonl import JsonlProtocol
from .line import LineProtocol
from .registry import BUILTIN_PROTOCOLS, ProtocolRegistry, ProtocolSpec

__all__ = [
    "BUILTIN_PROTOCOLS",
    "ChatProtocol",
    "Framer",
    "JsonlProtocol",
    "LineProtocol",
    "ListenerOptions",
    "ProtocolLimits",
    "ProtocolRegistry",
    "ProtocolSpec",
    "Renderer",
    "Session",
    "Transport",
]
