"""Baseline: a broadcast chat server on ``asyncio.Protocol`` (``--uvloop`` for uvloop).

This is what a competent asyncio user writes for a line-based chat server: the
protocol/transport API (no coroutine per client), bytes end to end, one encoded
message shared by every recipient, and asyncio's own flow control to drop readers
that stop reading.  It skips what chatd does beyond the benchmark's needs (UTF-8
decoding, sanitising, plugins, logging).  Two ways of writing:

* per line (the default): ``transport.write()`` per recipient per line, as the
  asyncio documentation's examples do; each write is a ``send()`` when the socket
  is writable;
* ``--per-chunk``: the lines of one ``data_received()`` chunk joined, one
  ``transport.write()`` per recipient per chunk — the dozen lines a
  performance-minded asyncio user adds, and the fair, strong baseline.

Run: ``python bench/baselines/asyncio_protocol.py --port-file F [--uvloop] [--per-chunk]
[--tls PEM]`` (``--tls``: ``loop.create_server(ssl=...)``, for the TLS scenario).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from collections.abc import Iterator
from typing import cast

from common import (
    BACKLOG,
    DEFAULT_ROOM,
    MAX_LINE_BYTES,
    MAX_OUTPUT_BYTES,
    parse_args,
    run,
    serve_until_signal,
    tls_context,
    write_port_file,
)


def _chat_lines(lines: list[bytes]) -> Iterator[bytes]:
    """The lines of a chunk without their CR, empty ones left out."""
    for line in lines:
        if line.endswith(b"\r"):
            line = line[:-1]
        if line:
            yield line


class Hub:
    """Rooms by name; each room is the set of its members' protocols."""

    def __init__(self) -> None:
        self.rooms: dict[bytes, set[ChatProtocol]] = {}
        self.guest_numbers = itertools.count(1)

    def join(self, member: ChatProtocol, name: bytes) -> set[ChatProtocol]:
        room = self.rooms.setdefault(name, set())
        room.add(member)
        return room

    def leave(self, member: ChatProtocol, name: bytes) -> None:
        room = self.rooms.get(name)
        if room is not None:
            room.discard(member)
            if not room and name != DEFAULT_ROOM:
                del self.rooms[name]


class ChatProtocol(asyncio.Protocol):
    """One client: frames lines and fans each one out to its room."""

    def __init__(self, hub: Hub, per_chunk: bool = False) -> None:
        self.hub = hub
        self.per_chunk = per_chunk
        self.transport: asyncio.Transport | None = None
        self.pending = b""
        self.room_name = DEFAULT_ROOM
        self.room: set[ChatProtocol] = set()
        self.prefix = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it: cast.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        # pause_writing() fires once more than this is queued: see below.
        transport.set_write_buffer_limits(high=MAX_OUTPUT_BYTES)
        nick = f"guest-{next(self.hub.guest_numbers)}"
        self.prefix = f"<{nick}> ".encode()
        self.room = self.hub.join(self, DEFAULT_ROOM)
        transport.write(f"* Welcome to asyncio-protocol, {nick}. You are in #lobby.\n".encode())

    def data_received(self, data: bytes) -> None:
        if self.pending:
            data = self.pending + data
        lines = data.split(b"\n")
        self.pending = lines.pop()
        if len(self.pending) > MAX_LINE_BYTES:
            self.pending = b""
            self.reply(b"! line too long\n")
        if self.per_chunk:
            self.broadcast_chunk(lines)
            return
        for line in _chat_lines(lines):
            if line.startswith(b"/"):
                self.command(line)
            else:
                self.broadcast(line)

    def broadcast_chunk(self, lines: list[bytes]) -> None:
        """``--per-chunk``: every chat line of this chunk in one write per recipient."""
        gathered: list[bytes] = []
        prefix = self.prefix
        for line in _chat_lines(lines):
            if line.startswith(b"/"):
                self.send_gathered(gathered)  # lines before a /join go to the old room
                gathered = []
                self.command(line)
            else:
                gathered.append(prefix + line + b"\n")
        self.send_gathered(gathered)

    def send_gathered(self, gathered: list[bytes]) -> None:
        if not gathered:
            return
        data = b"".join(gathered)
        for peer in self.room:
            if peer is not self:
                peer.transport.write(data)  # type: ignore[union-attr]

    def broadcast(self, line: bytes) -> None:
        message = self.prefix + line + b"\n"  # encoded once, shared by all recipients
        for peer in self.room:
            if peer is not self:
                peer.transport.write(message)  # type: ignore[union-attr]

    def command(self, line: bytes) -> None:
        name, _, arg = line.partition(b" ")
        if name == b"/join" and arg.startswith(b"#"):
            self.hub.leave(self, self.room_name)
            self.room_name = arg.split()[0]
            self.room = self.hub.join(self, self.room_name)
        else:
            self.reply(b"! unknown command\n")

    def reply(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def pause_writing(self) -> None:
        # More than MAX_OUTPUT_BYTES queued: a reader that stopped reading.  Drop it,
        # like chatd's limits.max_output_bytes, rather than buffer without bound.
        # connection_lost() runs later (call_soon), so no room changes mid-broadcast.
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.hub.leave(self, self.room_name)
        self.transport = None


async def main(args: argparse.Namespace) -> None:
    hub = Hub()

    async def start() -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: ChatProtocol(hub, args.per_chunk), args.host, args.port, backlog=BACKLOG,
            ssl=tls_context(args.tls),
        )
        write_port_file(args.port_file, server.sockets[0].getsockname()[1])
        return server

    await serve_until_signal(start)


if __name__ == "__main__":
    arguments = parse_args(__doc__.splitlines()[0])
    run(main(arguments), arguments.uvloop)
