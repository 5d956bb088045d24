"""The per-recipient cost of WebSocket framing, and of permessage-deflate, in process.

A micro-benchmark (timeit, one core) of the path a fan-out payload takes to each
browser: the connection's ``encode_output`` (:func:`encode_frames`: a frame header
before the shared bytes), with one ``send()``/``recv()`` on a socketpair for scale;
and what ``permessage-deflate`` would add per recipient (a zlib stream per
connection, context takeover).  docs/web.md quotes its output.  Not the load test:
that is bench/run.py's ``ws-fanout-1000``.

    .venv/bin/python bench/ws_framing.py
"""

from __future__ import annotations

import itertools
import json
import socket
import timeit
import zlib
from collections.abc import Callable

from chatd.protocols.websocket.protocol import encode_frames


def event(i: int) -> bytes:
    """A jsonl ``message`` object as the fan-out shares it."""
    return (json.dumps({"type": "message", "id": 1796615962877462 + i,
                        "time": "2026-12-07T03:59:24.909Z", "from": f"guest-{i % 50}",
                        "room": "#lobby", "text": f"message number {i}: how is it going today?"},
                       separators=(",", ":")) + "\n").encode()


def ns(call: Callable[[], object], number: int) -> float:
    """Nanoseconds per call, best of five."""
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e9


def main() -> None:
    payloads = [event(i) for i in range(1000)]
    payload = payloads[0]
    one = ns(lambda: encode_frames([payload]), 1_000_000)
    tick = [payloads[i] for i in range(5)]
    five = ns(lambda: encode_frames(tick), 1_000_000)
    print(f"payload {len(payload)} B: framing it for one recipient (encode_frames([data]), "
          f"write_now's direct send) {one:.0f} ns; a tick of 5 writes in one frame {five:.0f} ns")
    a, b = socket.socketpair()
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)

    def send() -> None:
        a.send(payload)
        b.recv(65536)

    print(f"for scale: send() + recv() of the payload on a socketpair {ns(send, 200_000):.0f} ns")
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    stream = itertools.cycle(payloads)

    def deflate() -> bytes:
        return compressor.compress(next(stream)) + compressor.flush(zlib.Z_SYNC_FLUSH)

    cost = ns(deflate, 40_000)
    warm = zlib.compressobj(6, zlib.DEFLATED, -15)
    sizes = [len(warm.compress(p) + warm.flush(zlib.Z_SYNC_FLUSH)) - 4 for p in payloads[:200]]
    print(f"permessage-deflate (context takeover, level 6): {cost:.0f} ns per message per "
          f"recipient; {len(payload)} B -> {sum(sizes[50:]) / 150:.0f} B on average once warm")


if __name__ == "__main__":
    main()
