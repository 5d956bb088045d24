"""The benchmark's WebSocket side: which servers run the WebSocket scenarios and in which
protocol, and the load generator's WebSocket mode (-X) against a server that frames
its output as awkwardly as RFC 6455 allows.

The load generator is the measuring instrument: a parser that dropped a line split
across frames, or counted a fragmented message twice, would report a server as losing
or duplicating lines (or hide a server that does).  So it is run here against a small
WebSocket server (in the test, on a thread) that splits its jsonl lines across frames
and continuation frames at random points, puts several lines in one frame, ends some
messages without the last newline, uses 16- and 64-bit lengths, slips PINGs between
fragments and sends its first frame in the same write as its 101 response.  It must
still see every line exactly once and in order, and answer every PING with its payload.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.util
import json
import random
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_SERVERS = {"chatd", "chatd-line", "chatd-jsonl", "websockets-uvloop",
              "websockets-uvloop-coalesce"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    """bench/run.py as a module (it imports its sibling report.py)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_run_ws", BENCH / "run.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_run_ws"] = module
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))
        sys.modules.pop("bench_run_ws", None)


def test_websocket_scenarios_run_chatd_its_variants_and_the_websockets_baselines(run):
    ws = [s for s in run.FULL_SCENARIOS + run.SMOKE_SCENARIOS if s.ws]
    assert {s.name for s in ws} == {"ws-fanout-1000", "smoke-ws"}
    for scenario in run.FULL_SCENARIOS + run.SMOKE_SCENARIOS:
        served = {spec.name for spec in run.SERVERS if spec.serves(scenario)}
        if scenario.ws:
            assert served == WS_SERVERS, scenario.name
        else:  # the WebSocket-only servers and chatd-jsonl stay out of every other one
            assert not served & {"chatd-jsonl", "websockets-uvloop",
                                 "websockets-uvloop-coalesce"}, scenario.name


def test_each_server_takes_the_websocket_load_in_its_own_protocol(run):
    """chatd and the websockets baselines over WebSocket (-X), chatd-jsonl as jsonl on
    TCP (-J), chatd-line as lines: the same messages, three wires."""
    (scenario,) = [s for s in run.FULL_SCENARIOS if s.name == "ws-fanout-1000"]
    flags = {}
    for spec in run.SERVERS:
        if spec.serves(scenario):
            args = run.scenario_for(scenario, spec).loadgen_args(run.FULL_TIMING)
            flags[spec.name] = {f for f in ("-X", "-J", "-I", "-L") if f in args}
    assert flags == {"chatd": {"-X"}, "websockets-uvloop": {"-X"},
                     "websockets-uvloop-coalesce": {"-X"}, "chatd-jsonl": {"-J"},
                     "chatd-line": set()}


def test_chatd_listens_with_the_protocol_its_load_speaks(run, tmp_path):
    import yaml

    base = tmp_path / "chatd-bench.yaml"
    run.write_chatd_config(base, 100)
    ctx = run.Context(base, tmp_path, Path("loadgen"), run.SMOKE_TIMING, run.Cores(None, None),
                      BENCH.parent)
    protocols = {}
    for spec in run.SERVERS:
        if spec.name in ("chatd", "chatd-line", "chatd-jsonl"):
            config = run.ws_server(spec, ctx).config or base
            listen = yaml.safe_load(config.read_text())["listen"]
            first = listen[0] if isinstance(listen, list) else listen
            protocols[spec.name] = first.get("protocol", "line")
    assert protocols == {"chatd": "websocket", "chatd-line": "line", "chatd-jsonl": "jsonl"}


# -- the load generator against an awkward WebSocket server ------------------------------------


def _frame(opcode: int, payload: bytes, fin: bool = True, wide: bool = False) -> bytes:
    """A server frame (unmasked); ``wide`` uses the 64-bit length form even when short."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if wide:
        return head + bytes([127]) + struct.pack("!Q", n) + payload
    if n < 126:
        return head + bytes([n]) + payload
    if n < 65536:
        return head + bytes([126]) + struct.pack("!H", n) + payload
    return head + bytes([127]) + struct.pack("!Q", n) + payload


class AwkwardServer:
    """jsonl chat over WebSocket, framed awkwardly (module docstring); ``answer`` is
    ``"101"`` (a real server), ``"403"`` (refuses the upgrade) or ``"bad-accept"``."""

    def __init__(self, answer: str = "101", seed: int = 21) -> None:
        self.answer = answer
        self.random = random.Random(seed)
        self.rooms: dict[str, set[Peer]] = {}
        self.pings_sent = 0
        self.pongs_ok = 0
        self.pongs_wrong = 0
        self.errors: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: asyncio.base_events.Server | None = None

    def __enter__(self) -> AwkwardServer:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self.serve, "127.0.0.1", 0), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self.server.close()
            for room in self.rooms.values():
                for peer in room:
                    peer.writer.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = None
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))
            if self.answer == "403":
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            if self.answer == "bad-accept":
                accept = base64.b64encode(hashlib.sha1(key).digest())
            peer = Peer(self, writer)
            self.join(peer, "#lobby")
            welcome = json.dumps({"type": "notice", "text": "welcome"}).encode() + b"\n"
            # The first frame rides in the same write as the 101.
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept
                         + b"\r\n\r\n" + _frame(0x1, welcome))
            await self.read_frames(peer, reader)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError):
            pass
        except Exception as exc:  # a test server bug must show, not hang the test
            self.errors.append(repr(exc))
        finally:
            for room in self.rooms.values():
                room.discard(peer)  # type: ignore[arg-type]
            writer.close()

    async def read_frames(self, peer: Peer, reader: asyncio.StreamReader) -> None:
        while True:
            b0, b1 = await reader.readexactly(2)
            if not b1 & 0x80:
                self.errors.append("an unmasked client frame")
                return
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await reader.readexactly(8))
            mask = await reader.readexactly(4)
            data = bytes(b ^ mask[i & 3] for i, b in enumerate(await reader.readexactly(n)))
            opcode = b0 & 0x0F
            if opcode == 0xA:
                if data == peer.pings.pop(0):
                    self.pongs_ok += 1
                else:
                    self.pongs_wrong += 1
            elif opcode == 0x1:
                for line in data.split(b"\n"):
                    if line:
                        self.request(peer, json.loads(line))

    def request(self, peer: Peer, request: dict) -> None:
        if request["cmd"] == "join":
            self.rooms[peer.room].discard(peer)
            self.join(peer, request["room"])
        elif request["cmd"] == "say":
            line = json.dumps({"type": "message", "from": "g", "room": peer.room,
                               "text": request["text"]}).encode() + b"\n"
            for other in self.rooms[peer.room]:
                if other is not peer:
                    other.queue(line)

    def join(self, peer: Peer, room: str) -> None:
        peer.room = room
        self.rooms.setdefault(room, set()).add(peer)


class Peer:
    """One client: its output of a loop pass goes out as one awkwardly framed message."""

    def __init__(self, server: AwkwardServer, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.writer = writer
        self.room = ""
        self.pending = bytearray()
        self.pings: list[bytes] = []

    def queue(self, line: bytes) -> None:
        if not self.pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self.pending += line

    def flush(self) -> None:
        data, self.pending = bytes(self.pending), bytearray()
        if self.server.random.random() < 0.5:
            data = data[:-1]  # the message's end ends its last line
        self.writer.write(b"".join(self.frames(data)))

    def frames(self, data: bytes) -> Iterator[bytes]:
        rnd = self.server.random
        cuts = sorted(rnd.sample(range(1, len(data)), min(len(data) - 1, rnd.randint(0, 3))))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        for i, piece in enumerate(pieces):
            yield _frame(0x1 if i == 0 else 0x0, piece, fin=i == len(pieces) - 1,
                         wide=rnd.random() < 0.2)
            if i < len(pieces) - 1 and rnd.random() < 0.3:
                payload = b"p%d" % self.server.pings_sent
                self.server.pings_sent += 1
                self.pings.append(payload)
                yield _frame(0x9, payload)


def _loadgen(run, port: int, *args: str) -> subprocess.CompletedProcess:
    loadgen = run.build_loadgen()
    return subprocess.run(
        [str(loadgen), "-p", str(port), "-X", "-T", "40", "-S", "15", *args],
        capture_output=True, text=True, timeout=60,
    )


def test_the_load_generator_reads_awkward_frames_exactly_once_and_in_order(run):
    with AwkwardServer() as server:
        done = _loadgen(run, server.port, "-m", "closed", "-c", "20", "-s", "4", "-g", "2",
                        "-w", "8", "-d", "0.5", "-W", "0.2", "-q", "100", "-D", "5")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert not server.errors
    for key in ("lost", "duplicated", "reordered", "misrouted", "disconnected"):
        assert report[key] == 0, (key, report)
    assert report["deliveries"] > 0
    assert report["total_delivered"] == report["expected_deliveries"]
    # Several lines and partial lines per frame were really sent, and PINGs answered.
    assert report["ws_frames_in"] != report["total_delivered"]
    assert server.pings_sent > 0 and report["ws_pings"] == server.pings_sent
    assert server.pongs_wrong == 0 and server.pongs_ok == server.pings_sent


@pytest.mark.parametrize(("answer", "error"), [
    ("403", "upgrade refused: HTTP/1.1 403 Forbidden"),
    ("bad-accept", "wrong Sec-WebSocket-Accept"),
])
def test_a_refused_or_forged_upgrade_fails_the_run(run, answer, error):
    with AwkwardServer(answer) as server:
        done = _loadgen(run, server.port, "-m", "closed", "-c", "4", "-s", "1", "-d", "0.2",
                        "-W", "0", "-q", "50")
    assert done.returncode == 1
    assert error in json.loads(done.stdout)["error"]
