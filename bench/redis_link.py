"""How chatd's loop should talk to Redis: an I/O thread, or Redis sockets in the reactor?

Issue 23 says "the loop never blocks on Redis: choose by measurement".  This measures,
in one run, against a throwaway ``redis-server`` it starts itself (port from
``chatd.testing.probes.free_port``, ``--save "" --appendonly no``, a temp dir):

A. ``thread``  -- redis-py (hiredis parser) on I/O threads.  Publisher: the loop thread
   appends the tick's batches to a deque under a condition; a writer thread takes all
   that is queued and sends it as one pipeline (one round trip).  Subscriber: a reader
   thread runs ``pubsub.listen()`` and hands each message to the loop with chatd's
   ``Reactor.call_soon_threadsafe`` (a deque plus one byte on a socketpair).
B. ``reactor`` -- the Redis sockets in chatd's ``Reactor`` (``register(fd, handler)``),
   non-blocking, RESP written by hand and replies parsed by ``hiredis.Reader`` (sans-IO),
   for both the publishing and the subscribed connection; the outbox is bounded.
C. ``blocking`` -- the floor: redis-py on the loop thread.  Publisher: one synchronous
   pipeline per tick (the loop waits for the round trip).  Subscriber: the pubsub
   socket in the epoll set (level-triggered), ``get_message(timeout=0)`` until empty.

Workload: a publisher node (a child process) ticks every 5 ms and publishes the batches
due at ``--rates`` batches/s round-robin over K channels (``--channels``); a batch is a
JSON list of 1..20 jsonl ``message`` dicts of ~300 B each, with the send time in a fixed
prefix.  A subscriber node (another child) subscribes to the K channels and counts what
arrives and the end-to-end latency.  Per way: delivered batches/s, latency p50/p99, the
LOOP THREAD's CPU per batch (``time.thread_time()``) and the whole process's CPU per batch
(``getrusage``), publisher and subscriber sides.  Codec work is left out on purpose
(the subscriber reads the timestamp from the prefix, not ``json.loads``): it is the same
for every way and would only dilute the difference being measured.

Then a freeze: redis-server gets SIGSTOP for ``--freeze`` seconds in the middle of a run;
the publisher's worst tick lag (how late its 5 ms timer fired) says whether the loop
blocked, and its peak outbox (queued batches / buffered bytes) that the buffering is
bounded.  docs/cluster.md quotes the output.

    .venv/bin/python bench/redis_link.py --repeat 3
    .venv/bin/python bench/redis_link.py --rates 200 --channels 3 --duration 0.3 \\
        --repeat 1 --freeze 0.3 --json out.json          # tiny (the test)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WAYS = ("thread", "reactor", "blocking")
LABELS = {"thread": "A thread", "reactor": "B reactor", "blocking": "C blocking"}
TICK = 0.005
#: The outbox bound (bytes of RESP for B, the same in queued batches' bytes for A).
OUTBOX_LIMIT = 64 << 20
CONTROL = b"bench:control"
END = b"end"
#: The fixed-width prefix of every batch: the send time (ns) and a sequence number.
PREFIX = b'{"t":%019d,"s":%09d,"events":'


def channel(i: int) -> bytes:
    return b"chatd:room:#room%d" % i


def events() -> list[bytes]:
    """Twenty pre-encoded jsonl ``message`` dicts, 200..400 B each, as chatd's codec makes."""
    out = []
    for i in range(20):
        text = "x" * (120 + (i * 11) % 180)
        out.append(json.dumps({"type": "message", "id": 1796615962877462 + i,
                               "time": "2026-12-07T03:59:24.909Z", "from": f"guest-{i}",
                               "room": f"#room{i}", "text": text},
                              separators=(",", ":")).encode())
    return out


EVENTS = events()
#: Batch bodies with 1..20 events, cycled through by sequence number.
BODIES = [b"[" + b",".join(EVENTS[:n]) + b"]}" for n in range(1, 21)]


def batch(seq: int) -> bytes:
    return PREFIX % (time.time_ns(), seq) + BODIES[(seq * 7) % 20]


def sent_ns(data: bytes) -> int:
    return int(data[5:24])


def resp(*args: bytes) -> bytes:
    """One RESP command (an array of bulk strings)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the publisher node ------------------------------------------------------------------------


@dataclass
class PubStats:
    sent: int = 0
    shed: int = 0
    worst_lag: float = 0.0
    peak_outbox: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class ThreadPublisher:
    """Way A: the loop queues; a writer thread pipelines what is queued."""

    def __init__(self, reactor: Any, port: int, stats: PubStats) -> None:
        import redis

        self.client = redis.Redis(port=port)
        self.reactor = reactor
        self.stats = stats
        self.cond = threading.Condition()
        self.pending: deque[tuple[bytes, bytes]] = deque()
        self.pending_bytes = 0
        self.closing = False
        self.thread = threading.Thread(target=self.writer, daemon=True)
        self.thread.start()

    def publish(self, items: list[tuple[bytes, bytes]]) -> None:
        with self.cond:
            for item in items:
                if self.pending_bytes + len(item[1]) > OUTBOX_LIMIT:
                    self.stats.shed += 1
                    continue
                self.pending.append(item)
                self.pending_bytes += len(item[1])
            self.stats.peak_outbox = max(self.stats.peak_outbox, self.pending_bytes)
            self.cond.notify()

    def finish(self, done: Callable[[], None]) -> None:
        self.done = done
        with self.cond:
            self.closing = True
            self.cond.notify()

    def writer(self) -> None:
        while True:
            with self.cond:
                while not self.pending and not self.closing:
                    self.cond.wait()
                items, self.pending = self.pending, deque()
                self.pending_bytes = 0
                closing = self.closing
            if items:
                pipe = self.client.pipeline(transaction=False)
                for name, data in items:
                    pipe.publish(name, data)
                pipe.execute()
            if closing and not items:
                self.reactor.call_soon_threadsafe(self.done)
                return


class ReactorPublisher:
    """Way B: a non-blocking socket in the reactor, RESP by hand, hiredis.Reader replies."""

    def __init__(self, reactor: Any, port: int, stats: PubStats) -> None:
        import hiredis

        self.reactor = reactor
        self.stats = stats
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.reader = hiredis.Reader()
        self.out = bytearray()
        self.awaiting = 0
        self.done: Callable[[], None] | None = None
        reactor.register(self.sock.fileno(), self)

    def publish(self, items: list[tuple[bytes, bytes]]) -> None:
        for name, data in items:
            if len(self.out) + len(data) > OUTBOX_LIMIT:
                self.stats.shed += 1
                continue
            self.out += resp(b"PUBLISH", name, data)
            self.awaiting += 1
        self.stats.peak_outbox = max(self.stats.peak_outbox, len(self.out))
        self.send()

    def send(self) -> None:
        while self.out:
            try:
                n = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                return  # EPOLLOUT (edge-triggered) calls us again
            del self.out[:n]

    def handle_events(self, mask: int) -> None:
        if mask & select.EPOLLOUT:
            self.send()
        if mask & select.EPOLLIN:
            self.receive()

    def receive(self) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                raise ConnectionError("redis closed the publishing connection")
            self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            if isinstance(reply, Exception):
                raise reply
            self.awaiting -= 1
        if self.done is not None and not self.awaiting:
            self.done()

    def finish(self, done: Callable[[], None]) -> None:
        self.done = done
        if not self.awaiting:
            done()


class BlockingPublisher:
    """Way C (floor): one synchronous pipeline per tick on the loop thread."""

    def __init__(self, reactor: Any, port: int, stats: PubStats) -> None:
        import redis

        self.client = redis.Redis(port=port)
        self.stats = stats

    def publish(self, items: list[tuple[bytes, bytes]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for name, data in items:
            pipe.publish(name, data)
        pipe.execute()

    def finish(self, done: Callable[[], None]) -> None:
        done()


PUBLISHERS = {"thread": ThreadPublisher, "reactor": ReactorPublisher,
              "blocking": BlockingPublisher}


def run_publisher(args: argparse.Namespace) -> dict[str, Any]:
    """Tick every 5 ms for ``--duration`` s publishing what is due; then the end marker."""
    from chatd.reactor import Reactor

    reactor = Reactor()
    reactor.enable_threadsafe()
    stats = PubStats()
    link = PUBLISHERS[args.way](reactor, args.port, stats)
    names = [channel(i) for i in range(args.channels)]
    print("started", flush=True)
    cpu0, thread0, start = cpu_self(), time.thread_time(), time.monotonic()
    state = {"next": start}

    def tick() -> None:
        now = time.monotonic()
        stats.worst_lag = max(stats.worst_lag, now - state["next"])
        due = min(int((now - start) * args.rate), int(args.duration * args.rate))
        items = []
        while stats.sent + len(items) < due:
            seq = stats.sent + len(items)
            items.append((names[seq % len(names)], batch(seq)))
        if items:
            link.publish(items)
            stats.sent += len(items)
        if now - start < args.duration:
            state["next"] += TICK
            reactor.call_later(state["next"] - time.monotonic(), tick)
        else:
            link.publish([(CONTROL, END + b" %d" % stats.sent)])
            link.finish(reactor.stop)

    reactor.call_soon(tick)
    reactor.run()
    return {"sent": stats.sent, "shed": stats.shed, "worst_lag": stats.worst_lag,
            "peak_outbox": stats.peak_outbox, "elapsed": time.monotonic() - start,
            "loop_cpu": time.thread_time() - thread0, "proc_cpu": cpu_self() - cpu0}


# -- the subscriber node -----------------------------------------------------------------------


class Tally:
    """What the subscriber's loop saw: counts, latencies, and the end marker."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.received = 0
        self.latencies: list[int] = []
        self.first = self.last = 0.0
        self.expected: int | None = None
        self.error = ""

    def fail(self, error: str) -> None:
        """The link broke (Redis dropped a slow subscriber): report what arrived so far."""
        self.error = error
        self.reactor.stop()

    def message(self, name: bytes, data: bytes) -> None:
        if name == CONTROL:
            self.expected = int(data.split()[1])
        else:
            now = time.time_ns()
            self.latencies.append(now - sent_ns(data))
            self.received += 1
            self.last = time.monotonic()
            if self.received == 1:
                self.first = self.last
        if self.expected is not None and self.received >= self.expected:
            self.reactor.stop()


def subscribe_thread(reactor: Any, port: int, names: list[bytes], tally: Tally,
                     ready: Callable[[], None]) -> None:
    """Way A: a reader thread on redis-py's pubsub, each message handed to the loop."""
    import redis

    pubsub = redis.Redis(port=port).pubsub()
    pubsub.subscribe(*names)

    def reader() -> None:
        try:
            listen()
        except Exception as exc:
            reactor.call_soon_threadsafe(tally.fail, repr(exc))

    def listen() -> None:
        confirmed = 0
        for msg in pubsub.listen():
            if msg["type"] == "message":
                reactor.call_soon_threadsafe(tally.message, msg["channel"], msg["data"])
            elif msg["type"] == "subscribe":
                confirmed += 1
                if confirmed == len(names):
                    reactor.call_soon_threadsafe(ready)

    threading.Thread(target=reader, daemon=True).start()


class ReactorSubscriber:
    """Way B: the subscribed socket in the reactor, replies parsed by hiredis.Reader."""

    def __init__(self, reactor: Any, port: int, names: list[bytes], tally: Tally,
                 ready: Callable[[], None]) -> None:
        import hiredis

        self.tally, self.ready, self.wanted = tally, ready, len(names)
        self.confirmed = 0
        self.reader = hiredis.Reader()
        self.sock = socket.create_connection(("127.0.0.1", port))
        for i in range(0, len(names), 500):
            self.sock.sendall(resp(b"SUBSCRIBE", *names[i:i + 500]))
        self.sock.setblocking(False)
        reactor.register(self.sock.fileno(), self)

    def handle_events(self, mask: int) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 18)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                self.tally.fail("redis closed the subscribed connection")
                return
            self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            kind = reply[0]
            if kind == b"message":
                self.tally.message(reply[1], reply[2])
            elif kind == b"subscribe":
                self.confirmed += 1
                if self.confirmed == self.wanted:
                    self.ready()


class BlockingSubscriber:
    """Way C: redis-py's pubsub socket in the epoll set, drained with get_message(0)."""

    def __init__(self, reactor: Any, port: int, names: list[bytes], tally: Tally,
                 ready: Callable[[], None]) -> None:
        import redis

        self.tally, self.ready, self.wanted = tally, ready, len(names)
        self.confirmed = 0
        self.pubsub = redis.Redis(port=port).pubsub()
        self.pubsub.subscribe(*names)
        # Level-triggered: redis-py may hold parsed replies in its buffer; drain to None.
        reactor.register(self.pubsub.connection._sock.fileno(), self, select.EPOLLIN)

    def handle_events(self, mask: int) -> None:
        try:
            self.drain()
        except Exception as exc:
            self.tally.fail(repr(exc))

    def drain(self) -> None:
        while (msg := self.pubsub.get_message(timeout=0)) is not None:
            if msg["type"] == "message":
                self.tally.message(msg["channel"], msg["data"])
            elif msg["type"] == "subscribe":
                self.confirmed += 1
                if self.confirmed == self.wanted:
                    self.ready()


def run_subscriber(args: argparse.Namespace) -> dict[str, Any]:
    """Subscribe, say "ready", count until the end marker (or ``--deadline``)."""
    from chatd.reactor import Reactor

    reactor = Reactor()
    reactor.enable_threadsafe()
    tally = Tally(reactor)
    names = [channel(i) for i in range(args.channels)] + [CONTROL]
    marks: dict[str, float] = {}

    def ready() -> None:
        marks["cpu"], marks["thread"] = cpu_self(), time.thread_time()
        print("ready", flush=True)

    if args.way == "thread":
        subscribe_thread(reactor, args.port, names, tally, ready)
    elif args.way == "reactor":
        ReactorSubscriber(reactor, args.port, names, tally, ready)
    else:
        BlockingSubscriber(reactor, args.port, names, tally, ready)
    reactor.call_later(args.deadline, reactor.stop)
    reactor.run()
    lat = sorted(tally.latencies) or [0]
    span = tally.last - tally.first
    return {"received": tally.received, "expected": tally.expected, "error": tally.error,
            "rate": (tally.received - 1) / span if span > 0 else 0.0,
            "p50_ms": lat[len(lat) // 2] / 1e6, "p99_ms": lat[int(len(lat) * 0.99)] / 1e6,
            "loop_cpu": time.thread_time() - marks.get("thread", 0.0),
            "proc_cpu": cpu_self() - marks.get("cpu", 0.0)}


# -- the orchestrator --------------------------------------------------------------------------


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[subprocess.Popen, int]]:
    """A throwaway redis-server on a free loopback port, in a temp dir; stopped after."""
    from chatd.testing.probes import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis_link: redis-server is not installed")
    with tempfile.TemporaryDirectory(prefix="redis-link-") as tmp:
        port = free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp, "--loglevel", "warning"],
            stdout=subprocess.DEVNULL)
        try:
            wait_for_port(port, proc)
            yield proc, port
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
            proc.wait(10)


def wait_for_port(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"redis_link: redis-server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            s.sendall(b"PING\r\n")
            s.settimeout(1)
            if s.recv(16).startswith(b"+PONG"):
                return
        time.sleep(0.02)
    raise SystemExit("redis_link: redis-server did not answer PING")


#: How long a subscriber waits past the run for batches that never come (``--grace``).
GRACE = {"seconds": 30.0}


def child(role: str, way: str, port: int, rate: int, channels: int,
          duration: float) -> subprocess.Popen:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--role", role, "--way", way,
           "--port", str(port), "--rate", str(rate), "--channels", str(channels),
           "--duration", str(duration), "--deadline", str(duration + GRACE["seconds"])]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def expect_line(proc: subprocess.Popen, word: str) -> None:
    line = proc.stdout.readline().strip()  # type: ignore[union-attr]
    if line != word:
        proc.kill()
        raise SystemExit(f"redis_link: child said {line!r}, expected {word!r}")


def one_run(way: str, port: int, rate: int, channels: int, duration: float,
            freeze: tuple[subprocess.Popen, float] | None = None) -> dict[str, Any]:
    """One subscriber and one publisher child; their two JSON results, merged."""
    sub = child("sub", way, port, rate, channels, duration)
    expect_line(sub, "ready")
    pub = child("pub", way, port, rate, channels, duration)
    expect_line(pub, "started")
    if freeze is not None:
        server, seconds = freeze
        time.sleep(max(0.0, (duration - seconds) / 2))
        os.kill(server.pid, signal.SIGSTOP)
        time.sleep(seconds)
        os.kill(server.pid, signal.SIGCONT)
    pub_out, _ = pub.communicate(timeout=duration + 60)
    sub_out, _ = sub.communicate(timeout=duration + 60)
    if pub.returncode or sub.returncode:
        raise SystemExit(f"redis_link: {way} children exited {pub.returncode}/{sub.returncode}")
    p, s = json.loads(pub_out.splitlines()[-1]), json.loads(sub_out.splitlines()[-1])
    return {"way": way, "rate": rate, "channels": channels, "sent": p["sent"], "shed": p["shed"],
            "received": s["received"], "error": s["error"], "delivered_per_s": s["rate"],
            "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"],
            "pub_loop_us": p["loop_cpu"] / max(1, p["sent"]) * 1e6,
            "pub_proc_us": p["proc_cpu"] / max(1, p["sent"]) * 1e6,
            "sub_loop_us": s["loop_cpu"] / max(1, s["received"]) * 1e6,
            "sub_proc_us": s["proc_cpu"] / max(1, s["received"]) * 1e6,
            "worst_lag_ms": p["worst_lag"] * 1e3, "peak_outbox": p["peak_outbox"]}


MEDIAN_KEYS = ("delivered_per_s", "p50_ms", "p99_ms", "pub_loop_us", "pub_proc_us",
               "sub_loop_us", "sub_proc_us", "worst_lag_ms", "peak_outbox")


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(runs[0])
    for key in MEDIAN_KEYS:
        out[key] = statistics.median(r[key] for r in runs)
    out["sent"] = sum(r["sent"] for r in runs)
    out["received"] = sum(r["received"] for r in runs)
    out["shed"] = sum(r["shed"] for r in runs)
    out["error"] = "; ".join(r["error"] for r in runs if r["error"])
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every way × rate × channel count, ``--repeat`` rounds interleaved, then the freeze."""
    rows: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    freezes = []
    with redis_server() as (server, port):
        for _ in range(args.repeat):
            for rate in args.rates:
                for channels in args.channels:
                    for way in WAYS:
                        run = one_run(way, port, rate, channels, args.duration)
                        rows.setdefault((way, rate, channels), []).append(run)
                        print(f"# {run}", file=sys.stderr, flush=True)
        if args.freeze > 0:
            for way in WAYS:
                freezes.append(one_run(way, port, args.freeze_rate, args.freeze_channels,
                                       args.freeze + 2 * args.freeze_margin,
                                       freeze=(server, args.freeze)))
    return {"rows": [median_of(runs) for runs in rows.values()], "freeze": freezes,
            "freeze_seconds": args.freeze}


def table(result: dict[str, Any]) -> str:
    head = ("| way | batches/s offered | channels | delivered/s | p50 ms | p99 ms "
            "| pub loop µs/batch | pub process µs/batch | sub loop µs/batch "
            "| sub process µs/batch | lost |")
    lines = [head, "|" + "---|" * 11]
    for r in result["rows"]:
        lines.append(
            f"| {LABELS[r['way']]} | {r['rate']} | {r['channels']} | {r['delivered_per_s']:.0f} "
            f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['pub_loop_us']:.1f} "
            f"| {r['pub_proc_us']:.1f} | {r['sub_loop_us']:.1f} | {r['sub_proc_us']:.1f} "
            f"| {r['sent'] - r['received']} |")
    if result["freeze"]:
        lines += ["", f"Redis frozen (SIGSTOP) for {result['freeze_seconds']} s mid-run:", "",
                  "| way | publisher's worst tick lag ms | peak outbox bytes | sent "
                  "| received | lost |", "|" + "---|" * 6]
        for r in result["freeze"]:
            lines.append(f"| {LABELS[r['way']]} | {r['worst_lag_ms']:.1f} | {r['peak_outbox']} "
                         f"| {r['sent']} | {r['received']} | {r['sent'] - r['received']} |")
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--role", choices=("run", "pub", "sub"), default="run")
    ap.add_argument("--way", choices=WAYS, default="thread")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--rate", type=int, default=2000, help="(child) batches per second")
    ap.add_argument("--deadline", type=float, default=60.0, help="(child sub) give up after")
    ap.add_argument("--rates", type=int, nargs="+", default=[2000, 10000])
    ap.add_argument("--channels", type=int, nargs="+", default=[1, 100, 1000])
    ap.add_argument("--duration", type=float, default=3.0, help="seconds of publishing per run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--freeze", type=float, default=1.0, help="SIGSTOP seconds (0: skip)")
    ap.add_argument("--freeze-margin", type=float, default=1.0)
    ap.add_argument("--freeze-rate", type=int, default=2000)
    ap.add_argument("--freeze-channels", type=int, default=100)
    ap.add_argument("--grace", type=float, default=30.0,
                    help="a subscriber gives up this long after the run (lost batches)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.role in ("pub", "sub"):
        args.channels = args.channels[0]
        runner = run_publisher if args.role == "pub" else run_subscriber
        print(json.dumps(runner(args)), flush=True)
        return
    GRACE["seconds"] = args.grace
    result = measure(args)
    result["command"] = " ".join(["bench/redis_link.py", *(argv or sys.argv[1:])])
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
