"""Baseline: a WebSocket chat server on the ``websockets`` library (asyncio; ``--uvloop``).

What a competent Python developer writes to put chat rooms in browsers: the
``websockets`` library's asyncio server (its current implementation,
``websockets.asyncio.server``), one handler coroutine per connection, jsonl in
text frames exactly as chatd's websocket listener carries it, and
``websockets.broadcast`` — the library's fast path, which writes one frame to
every open connection without awaiting any — for the fan-out.  The chat contract
is the benchmark's (``common.py``), in chatd's jsonl shapes (docs/protocols.md):

* on connect, one welcome ``notice`` object; every client starts in ``#lobby``;
* ``{"cmd": "say", "text": ...}`` goes to the *other* members of the sender's room
  as a ``message`` object with chatd's fields (``type``, ``id``, ``time``, ``from``,
  ``room``, ``text``), serialised once per message and shared by every recipient;
* ``{"cmd": "join", "room": "#r"}`` moves the client to ``#r``;
* a request that is not a JSON object gets an ``error`` object; a message over
  ``MAX_LINE_BYTES`` is closed with 1009 (the library's ``max_size``); a client
  with more than ``MAX_OUTPUT_BYTES`` unsent is dropped, like chatd's default
  limits (the library itself never drops a slow reader: ``broadcast`` has no
  backpressure, see its documentation).

Each object is one jsonl line ending in ``\\n``, one per text frame.  With
``--coalesce`` a room's messages of one loop pass go out as one frame per
recipient (several jsonl lines, as chatd's per-tick coalescing does): the dozen
lines a performance-minded user adds.  ``permessage-deflate`` is off
(``compression=None``), as on chatd's listener; pings are the library's default.

Run: ``python bench/baselines/websockets_server.py --port-file F [--uvloop]
[--coalesce] [--tls PEM]``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
from typing import Any

from common import (
    DEFAULT_ROOM,
    MAX_LINE_BYTES,
    MAX_OUTPUT_BYTES,
    parse_args,
    run,
    serve_until_signal,
    tls_context,
    write_port_file,
)
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

SERVER_NAME = "websockets-baseline"


class BoundedConnection(ServerConnection):
    """A connection dropped once more than ``MAX_OUTPUT_BYTES`` wait unsent.

    ``write_limit`` is set to that many bytes, so asyncio calls ``pause_writing``
    exactly then; the library would otherwise buffer without bound.
    """

    def pause_writing(self) -> None:
        self.transport.abort()


def _now() -> str:
    """chatd's ``time`` field: UTC, ISO 8601 with milliseconds."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"


class Hub:
    """Rooms by name (each the set of its members' connections), ids and nicks."""

    def __init__(self, coalesce: bool) -> None:
        self.rooms: dict[str, set[ServerConnection]] = {}
        self.ids = itertools.count(1)
        self.guest_numbers = itertools.count(1)
        self.coalesce = coalesce
        #: --coalesce: per room, the lines of this loop pass and who sent each.
        self.pending: dict[str, list[tuple[ServerConnection, bytes]]] = {}

    def join(self, member: ServerConnection, name: str) -> None:
        self.rooms.setdefault(name, set()).add(member)

    def leave(self, member: ServerConnection, name: str) -> None:
        room = self.rooms.get(name)
        if room is not None:
            room.discard(member)
            if not room and name != DEFAULT_ROOM.decode():
                del self.rooms[name]

    def event(self, **fields: Any) -> bytes:
        """One jsonl line: an event object with an id and a time, encoded once."""
        obj = {"id": next(self.ids), "time": _now(), **fields}
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    def say(self, sender: ServerConnection, nick: str, room: str, text: str) -> None:
        line = self.event(type="message", **{"from": nick}, room=room, text=text)
        if not self.coalesce:
            broadcast(self.rooms[room] - {sender}, line, text=True)
            return
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self.pending.setdefault(room, []).append((sender, line))

    def flush(self) -> None:
        """--coalesce: each room's lines of the pass, one frame per recipient.

        A recipient gets every line but its own; the common case (it sent none)
        shares one joined payload.
        """
        pending, self.pending = self.pending, {}
        for room, lines in pending.items():
            members = self.rooms.get(room, set())
            senders = {sender for sender, _ in lines}
            everything = b"".join(line for _, line in lines)
            broadcast(members - senders, everything, text=True)
            for sender in senders & members:
                own = b"".join(line for who, line in lines if who is not sender)
                if own:
                    broadcast([sender], own, text=True)


async def session(hub: Hub, ws: ServerConnection) -> None:
    """One client: its welcome, then its requests until it goes."""
    nick = f"guest-{next(hub.guest_numbers)}"
    room = DEFAULT_ROOM.decode()
    hub.join(ws, room)
    try:
        await ws.send(hub.event(type="notice", **{"from": SERVER_NAME}, server=True,
                                text=f"Welcome, {nick}. You are in {room}."), text=True)
        async for message in ws:
            if isinstance(message, bytes):
                await ws.close(1003, "text frames only")
                return
            for request_line in message.split("\n"):
                if request_line:
                    room = await handle(hub, ws, nick, room, request_line)
    except ConnectionClosed:
        pass
    finally:
        hub.leave(ws, room)


async def handle(hub: Hub, ws: ServerConnection, nick: str, room: str, line: str) -> str:
    """One jsonl request; returns the client's room afterwards."""
    try:
        request = json.loads(line)
    except ValueError:
        request = None
    if not isinstance(request, dict):
        await ws.send(hub.event(type="error", code="malformed", text="not a JSON object"),
                      text=True)
        return room
    cmd, text, target = request.get("cmd"), request.get("text"), request.get("room")
    if cmd == "say" and isinstance(text, str):
        hub.say(ws, nick, room, text)
    elif cmd == "join" and isinstance(target, str) and target.startswith("#"):
        hub.leave(ws, room)
        hub.join(ws, target)
        return target
    else:
        await ws.send(hub.event(type="error", code="unknown_command", text="unknown command"),
                      text=True)
    return room


async def main(args: argparse.Namespace) -> None:
    hub = Hub(coalesce=args.coalesce)

    async def handler(ws: ServerConnection) -> None:
        await session(hub, ws)

    async def start() -> Any:
        server = await serve(
            handler, args.host, args.port, ssl=tls_context(args.tls),
            compression=None, max_size=MAX_LINE_BYTES, write_limit=MAX_OUTPUT_BYTES,
            create_connection=BoundedConnection, backlog=1024,
        )
        write_port_file(args.port_file, server.sockets[0].getsockname()[1])
        return server

    await serve_until_signal(start)


if __name__ == "__main__":
    arguments = parse_args(__doc__.splitlines()[0])
    run(main(arguments), arguments.uvloop)
