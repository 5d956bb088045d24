"""Wire formats: each turns bytes into requests and events into bytes.

A listener names its protocol (``listen: [{port: 7788, protocol: line}]``);
every connection it accepts gets a fresh protocol object of that kind.  Add a
protocol by subclassing :class:`~chatd.protocols.base.ChatProtocol` with a
:class:`~chatd.protocols.base.Renderer` and listing it in :data:`PROTOCOLS`.
"""

from __future__ import annotations

from .base import ChatProtocol, ProtocolLimits, Renderer, Session, Transport
from .jsonl import JsonlProtocol
from .line import LineProtocol

#: Protocols by the name a listener's ``protocol:`` setting uses.
PROTOCOLS: dict[str, type[ChatProtocol]] = {
    "line": LineProtocol,
    "jsonl": JsonlProtocol,
}

__all__ = [
    "PROTOCOLS",
    "ChatProtocol",
    "JsonlProtocol",
    "LineProtocol",
    "ProtocolLimits",
    "Renderer",
    "Session",
    "Transport",
]
