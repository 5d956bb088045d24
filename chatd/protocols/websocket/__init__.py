"""WebSocket: a ``websocket`` listener for browsers, with the page it serves (docs/web.md).

``listen: [{port: 8080, protocol: websocket}]`` (over TLS with ``tls:``).  The
package: :mod:`.handshake` (the HTTP side: the page, the upgrade, refusals; sans-IO
on h11) and :mod:`.protocol` (the connection: frames on wsproto, jsonl inside);
``static/`` holds the page.  :class:`WebSocketOptions` are the listener's own keys.
wsproto and h11 are the ``web`` extra (``pip install 'chatd[web]'``): without them
chatd runs as ever, and a ``websocket`` listener is a config error that says so.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from ...config_rules import Invalid, setting
from ..base import ListenerOptions
from .protocol import WebSocketProtocol

#: What the listener needs beyond chatd's own dependencies (the ``web`` extra).
NEEDS = ("wsproto", "h11")


def missing_dependencies() -> list[str]:
    """The packages of the ``web`` extra that are not installed."""
    return [name for name in NEEDS if importlib.util.find_spec(name) is None]


@dataclass(frozen=True, slots=True)
class WebSocketOptions(ListenerOptions):
    """The keys of a listener with ``protocol: websocket``, beside every listener's."""

    origins: tuple[str, ...] = setting(
        (),
        "The origins of the pages allowed to open a WebSocket here (a browser sends its "
        "page's origin: https://chat.example.org, scheme and host, and a port if not the "
        "default); '*' allows any site. Empty (the default): only this listener's own "
        "site (the page it serves), the host the request's Host header names. A "
        "request without Origin (a program, not a browser) is always let in; a refused "
        "one is answered 403.",
    )
    ping_seconds: float = setting(
        30.0,
        "After this long without a frame from a client, the server sends it a WebSocket "
        "PING; 0: never.",
        ge=0,
        le=86400,
    )
    ping_timeout_seconds: float = setting(
        30.0,
        "How long a client has to answer the server's PING (any frame will do) before it "
        "is closed with 1011.",
        gt=0,
        le=86400,
    )

    def __post_init__(self) -> None:
        """The web extra must be installed, and each origin look like one."""
        missing = missing_dependencies()
        if missing:
            raise Invalid(f"protocol websocket needs {' and '.join(missing)}: "
                          "pip install 'chatd[web]'", key="protocol")
        for origin in self.origins:
            if origin != "*" and ("://" not in origin or origin.rstrip("/").count("/") > 2):
                raise Invalid(f"origin {origin!r}: write scheme://host[:port], "
                              "e.g. https://chat.example.org (or '*')", key="origins")
        ListenerOptions.__post_init__(self)


__all__ = ["WebSocketOptions", "WebSocketProtocol", "missing_dependencies"]
