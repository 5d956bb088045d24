"""What both baseline servers share: the command line, the port file and the run loop.

Only process plumbing lives here, so each server file still reads top to bottom as
the whole chat logic.  The chat contract the baselines implement (the part of
chatd's that the benchmark exercises):

* on connect, one welcome line; every client starts in ``#lobby``;
* a plain line goes to the *other* members of the sender's room as
  ``<guest-N> text``, encoded once per message;
* ``/join #room`` moves the client to ``#room``;
* a client whose unsent output passes ``MAX_OUTPUT_BYTES`` is dropped, and lines
  over ``MAX_LINE_BYTES`` are refused, like chatd's default limits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path

DEFAULT_ROOM = b"#lobby"
#: Same values as chatd's defaults (config.yaml), so both sides carry the same guards.
MAX_LINE_BYTES = 4096
MAX_OUTPUT_BYTES = 1 << 20
#: A listen backlog sized for connection storms; asyncio's default (100) would make
#: thousands of simultaneous connects wait for SYN retransmits.
BACKLOG = 1024


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = let the OS pick")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    parser.add_argument("--per-chunk", action="store_true",
                        help="asyncio_protocol.py: one write per recipient per received chunk")
    parser.add_argument("--coalesce", action="store_true",
                        help="websockets_server.py: a room's messages of one loop pass in "
                        "one frame per recipient")
    parser.add_argument("--tls", metavar="PEM",
                        help="serve TLS with this certificate and key (one PEM file)")
    return parser.parse_args()


def tls_context(pem: str | None) -> ssl.SSLContext | None:
    """The server context for ``--tls``: the same settings as chatd's (TLS >= 1.2,
    ECDHE with AES-GCM or ChaCha20), so both sides pay for the same cipher."""
    if pem is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    context.load_cert_chain(pem)
    return context


def write_port_file(path: str | None, port: int) -> None:
    """Publish the port atomically, so a poller never reads a half-written file."""
    if not path:
        return
    tmp = Path(f"{path}.tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


async def serve_until_signal(start: Callable[[], Awaitable[asyncio.AbstractServer]]) -> None:
    """Start the server, then run until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await start()
    async with server:
        await stop.wait()
        server.close()


def run(main: Coroutine[None, None, None], use_uvloop: bool) -> None:
    """Run ``main`` on asyncio's default loop or, with ``--uvloop``, on uvloop."""
    if use_uvloop:
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)
    sys.exit(0)
