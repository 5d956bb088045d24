"""Baseline: a broadcast chat server on asyncio streams (``readline`` / ``write``).

The most common way asyncio chat servers are written: one coroutine per client
that awaits ``reader.readline()`` and writes each line to the other members of
its room.  It writes to the others without awaiting their ``drain()`` (that
would make every sender wait for the slowest reader in the room) and drops a
reader whose unsent output passes ``MAX_OUTPUT_BYTES``, as chatd does.  One
encoded message is shared by all recipients.  Like the Protocol baseline it
skips what chatd does beyond the benchmark's needs (UTF-8 decoding,
sanitising, plugins, logging).

Run: ``python bench/baselines/asyncio_streams.py --port-file F [--uvloop]``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools

from common import (
    BACKLOG,
    DEFAULT_ROOM,
    MAX_LINE_BYTES,
    MAX_OUTPUT_BYTES,
    parse_args,
    run,
    serve_until_signal,
    write_port_file,
)

#: Room name -> the writers of its members.
rooms: dict[bytes, set[asyncio.StreamWriter]] = {}
guest_numbers = itertools.count(1)


def join(writer: asyncio.StreamWriter, name: bytes) -> set[asyncio.StreamWriter]:
    room = rooms.setdefault(name, set())
    room.add(writer)
    return room


def leave(writer: asyncio.StreamWriter, name: bytes) -> None:
    room = rooms.get(name)
    if room is not None:
        room.discard(writer)
        if not room and name != DEFAULT_ROOM:
            del rooms[name]


async def handle_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Serve one client until it disconnects."""
    nick = f"guest-{next(guest_numbers)}"
    prefix = f"<{nick}> ".encode()
    room_name = DEFAULT_ROOM
    room = join(writer, room_name)
    writer.write(f"* Welcome to asyncio-streams, {nick}. You are in #lobby.\n".encode())
    try:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # longer than the reader's limit: refuse it, like chatd
                writer.write(b"! line too long\n")
                continue
            if not line:
                break
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            if line.startswith(b"/"):
                name, _, arg = line.partition(b" ")
                if name == b"/join" and arg.startswith(b"#"):
                    leave(writer, room_name)
                    room_name = arg.split()[0]
                    room = join(writer, room_name)
                else:
                    writer.write(b"! unknown command\n")
                continue
            message = prefix + line + b"\n"  # encoded once, shared by all recipients
            for peer in room:
                if peer is writer:
                    continue
                if peer.transport.get_write_buffer_size() > MAX_OUTPUT_BYTES:
                    peer.transport.abort()  # a reader that stopped reading
                else:
                    peer.write(message)
    except ConnectionError:
        pass
    finally:
        leave(writer, room_name)
        writer.close()


async def main(args: argparse.Namespace) -> None:
    async def start() -> asyncio.AbstractServer:
        server = await asyncio.start_server(
            handle_client, args.host, args.port, backlog=BACKLOG, limit=MAX_LINE_BYTES + 2
        )
        write_port_file(args.port_file, server.sockets[0].getsockname()[1])
        return server

    await serve_until_signal(start)


if __name__ == "__main__":
    arguments = parse_args(__doc__.splitlines()[0])
    run(main(arguments), arguments.uvloop)
