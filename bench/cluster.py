"""What the cluster costs: one chatd without it, one node with it, two nodes, in one run.

The same loads against every case, on loopback, each for a fixed time:

- ``fanout``: one sender at a fixed rate (``--rate`` lines/s) to a room of
  ``--readers`` readers;
- ``chatters``: ``--chatters`` clients in one room, each sending ``--chat-rate``
  lines/s, everyone reading everyone.

Cases:

- ``local``: one chatd process, no ``cluster:`` section (the baseline);
- ``node``: one chatd node with the cluster on a throwaway redis-server: every tick's
  batch is published (and comes back to the node itself, which drops it): the bus's
  overhead with nothing to gain;
- ``two``: two nodes on that Redis, the readers (and the chatters) split half and
  half, the sender on the first: half the deliveries cross the bus;
- ``workers``: ``workers: 2`` on one port (SO_REUSEPORT), if this build accepts the
  key (checked with ``chatd --check-config``); else "workers: not available in this
  build".

Reported per load and case: lines sent, deliveries/s (lines received by clients),
p50/p99 latency from the send to the receipt (the clients are one ``selectors`` loop
in this process: its own delays are in every case alike), chatd CPU per delivery
(user + system of every chatd process, from /proc) and redis-server's CPU, and the
ratios to ``local``.  Every line carries its sender, number and send time; lines
lost are reported (``lost``), never hidden.  Bounded: every wait has a deadline.

    .venv/bin/python bench/cluster.py --json bench/results/cluster.json
    .venv/bin/python bench/cluster.py --quick      # seconds, for the test

Machine limits: on 2 cores, two nodes + Redis + this driver share the cores, so
"two" cannot show a throughput gain; it shows what the bus costs per delivery and in
latency.  ``workers: 2`` likewise cannot run faster than one process when the
driver itself needs a core: its number is on record, read it with that in mind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_chatd import REPO, start_chatd

CLK_TCK = os.sysconf("SC_CLK_TCK")
LINE = re.compile(rb"^<[^>]*> b (\d+) (\d+) (\d+)\r?$")
ROOM = "#bench"
PASSWORD = "bench-redis-pw"


# -- processes ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its children that were waited for (from /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (a workers parent and its workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A throwaway redis-server with a password on a free loopback port."""
    from chatd.testing.probes import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("cluster bench: redis-server is not installed")
    with tempfile.TemporaryDirectory(prefix="chatd-bench-redis-") as tmp:
        port = free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp, "--loglevel", "warning",
             "--requirepass", PASSWORD], stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("cluster bench: redis-server did not start")
                if answers_ping(port):
                    break
                time.sleep(0.02)
            yield proc, port
        finally:
            proc.terminate()
            proc.wait(10)


def answers_ping(port: int) -> bool:
    """Whether the redis-server on ``port`` answers an authenticated PING."""
    answer = b""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
        s.settimeout(1)
        s.sendall(f"AUTH {PASSWORD}\r\nPING\r\n".encode())
        while b"+PONG" not in answer and b"-" not in answer:
            chunk = s.recv(64)
            if not chunk:
                break
            answer += chunk
    return b"+PONG" in answer


def config(redis_port: int | None, node: str, *, workers: int = 1) -> str:
    """A bench config: loopback, port 0, no flood limit or greeting delay, no history
    replay; a cluster section when ``redis_port`` is given."""
    text = f"""listen:
  host: 127.0.0.1
  port: 0
server:
  default_room: "{ROOM}"
limits:
  announce_after_seconds: 0
  greeting_delay_seconds: 0
  max_clients: 4000
flood:
  lines_per_second: 0
per_ip:
  max_connections: 0
  connect_rate: 0
  max_unregistered: 0
plugin_host:
  entry_points: false
plugins:
  history:
    replay_lines: 0
"""
    if redis_port is not None:
        text += f"""cluster:
  redis_url: redis://:{PASSWORD}@127.0.0.1:{redis_port}/0
  node_id: {node}
"""
    if workers > 1:
        text += f"workers: {workers}\n"
    return text


def workers_accepted(folder: Path, redis_port: int) -> bool:
    """Whether this build's ``chatd --check-config`` accepts ``workers: 2``."""
    path = folder / "check.yaml"
    path.write_text(config(redis_port, "check", workers=2))
    done = subprocess.run([sys.executable, "-m", "chatd", "--config", str(path),
                           "--check-config"], cwd=REPO, capture_output=True, timeout=60,
                          check=False)
    return done.returncode == 0


@dataclass
class Case:
    """Running chatd processes of one case: their pids and the port(s) to use."""

    name: str
    procs: list[subprocess.Popen[bytes]]
    ports: list[int]

    def pids(self) -> list[int]:
        return [pid for proc in self.procs for pid in tree(proc.pid)]

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def start_case(name: str, load: str, root: Path, redis_port: int) -> Case:
    """A fresh server (or two) for one run, in a folder of its own; node ids unique
    per run, so a node stopped a moment ago never looks alive to the next."""
    folder = root / f"{load}-{name}"
    folder.mkdir()
    nodes = {"local": [None], "node": ["n1"], "two": ["n1", "n2"], "workers": ["w"]}[name]
    procs, ports = [], []
    for node in nodes:
        sub = folder / (node or "local")
        sub.mkdir()
        text = config(None if node is None else redis_port, f"{load}-{name}-{node}",
                      workers=2 if name == "workers" else 1)
        proc, port = start_chatd(sub, text)
        procs.append(proc)
        ports.append(port)
    return Case(name, procs, ports)


# -- clients -----------------------------------------------------------------------------------


@dataclass(eq=False)
class Client:
    index: int
    sock: socket.socket
    buf: bytes = b""
    received: int = 0
    warm: bool = False


@dataclass
class Tally:
    deliveries: int = 0
    latencies: list[float] = field(default_factory=list)
    seen: set[tuple[int, int, int]] = field(default_factory=set)  # (reader, sender, n)
    duplicates: int = 0


class Driver:
    """The clients of one run, on one selectors loop."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.clients: list[Client] = []
        self.tally = Tally()
        self.measuring = False

    def connect(self, ports: list[int], count: int) -> list[Client]:
        made = []
        for i in range(count):
            port = ports[i % len(ports)]
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.setblocking(False)
            client = Client(len(self.clients), sock)
            self.clients.append(client)
            self.selector.register(sock, selectors.EVENT_READ, client)
            made.append(client)
        return made

    def pump(self, timeout: float) -> None:
        now_ns = time.monotonic_ns
        for key, _ in self.selector.select(timeout):
            client: Client = key.data
            try:
                data = client.sock.recv(262144)
            except BlockingIOError:
                continue
            if not data:
                raise SystemExit(f"cluster bench: client {client.index} was disconnected")
            lines = (client.buf + data).split(b"\n")
            client.buf = lines.pop()
            for line in lines:
                if b"> w " in line:
                    client.warm = True
                    continue
                if b"> b " not in line or not self.measuring:
                    continue
                match = LINE.match(line)
                if match is None:
                    continue
                sender, number, sent = (int(g) for g in match.groups())
                key_ = (client.index, sender, number)
                if key_ in self.tally.seen:
                    self.tally.duplicates += 1
                    continue
                self.tally.seen.add(key_)
                self.tally.deliveries += 1
                self.tally.latencies.append((now_ns() - sent) / 1e6)

    def warm_up(self, sender: Client, readers: list[Client], deadline: float = 30.0) -> None:
        """Until every reader heard the sender (subscriptions across nodes are made a
        moment after the joins)."""
        end = time.monotonic() + deadline
        k = 0
        while not all(r.warm for r in readers if r is not sender):
            if time.monotonic() > end:
                raise SystemExit("cluster bench: the room never reached every reader")
            k += 1
            sender.sock.sendall(f"w {k}\n".encode())
            stop = time.monotonic() + 0.1
            while time.monotonic() < stop:
                self.pump(0.02)

    def run(self, senders: list[Client], rate: float, seconds: float) -> int:
        """Each sender sends ``rate`` lines/s for ``seconds``; returns lines sent."""
        self.measuring = True
        start = time.monotonic()
        sent = dict.fromkeys((s.index for s in senders), 0)
        offsets = {s.index: i / (rate * len(senders)) for i, s in enumerate(senders)}
        while (now := time.monotonic()) < start + seconds:
            for s in senders:
                due = start + offsets[s.index] + sent[s.index] / rate
                while now >= due and sent[s.index] < rate * seconds:
                    sent[s.index] += 1
                    s.sock.sendall(f"b {s.index} {sent[s.index]} {time.monotonic_ns()}\n"
                                   .encode())
                    due = start + offsets[s.index] + sent[s.index] / rate
            self.pump(0.002)
        return sum(sent.values())

    def drain(self, expected: int, seconds: float = 10.0) -> None:
        """Until every expected delivery came, or ``seconds`` of waiting (lost: reported)."""
        end = time.monotonic() + seconds
        while self.tally.deliveries < expected and time.monotonic() < end:
            self.pump(0.05)

    def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(OSError):
                client.sock.close()
        self.selector.close()


# -- one measurement ---------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(case: Case, load: str, args: argparse.Namespace, redis_pid: int) -> dict[str, Any]:
    driver = Driver()
    try:
        if load == "fanout":
            # the sender on the first node; readers spread over every port
            sender = driver.connect(case.ports[:1], 1)[0]
            readers = driver.connect(case.ports, args.readers)
            senders, rate = [sender], args.rate
            expected_per_line = len(readers)
        else:
            readers = driver.connect(case.ports, args.chatters)
            senders, rate = readers, args.chat_rate
            expected_per_line = len(readers) - 1
        driver.warm_up(senders[0], readers + senders)
        pids = case.pids()
        cpu0 = sum(cpu_seconds(p) for p in pids)
        redis0 = cpu_seconds(redis_pid)
        started = time.monotonic()
        sent = driver.run(senders, rate, args.seconds)
        expected = sent * expected_per_line
        driver.drain(expected)
        elapsed = time.monotonic() - started
        cpu = sum(cpu_seconds(p) for p in pids) - cpu0
        redis_cpu = cpu_seconds(redis_pid) - redis0
        t = driver.tally
        return {
            "case": case.name, "load": load, "chatd_processes": len(pids),
            "ports": len(case.ports), "sent": sent, "expected": expected,
            "deliveries": t.deliveries, "lost": expected - t.deliveries,
            "duplicates": t.duplicates,
            "deliveries_per_s": t.deliveries / args.seconds,
            "p50_ms": percentile(t.latencies, 0.50), "p99_ms": percentile(t.latencies, 0.99),
            "chatd_cpu_s": cpu, "redis_cpu_s": redis_cpu,
            "chatd_us_per_delivery": 1e6 * cpu / max(t.deliveries, 1),
            "redis_us_per_delivery": 1e6 * redis_cpu / max(t.deliveries, 1),
            "elapsed_s": elapsed,
        }
    finally:
        driver.close()


def with_ratios(rows: list[dict[str, Any]]) -> None:
    """Each row's ratios to the ``local`` row of its load."""
    base = {r["load"]: r for r in rows if r["case"] == "local"}
    for row in rows:
        b = base.get(row["load"])
        if b is None:
            continue
        for key in ("deliveries_per_s", "p50_ms", "p99_ms", "chatd_us_per_delivery"):
            row[f"{key}_x"] = row[key] / b[key] if b[key] else float("nan")


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| load | case | sent | deliveries/s | lost | p50 ms | p99 ms | chatd µs/delivery "
            "| redis µs/delivery | ×deliveries/s | ×p50 | ×p99 | ×CPU/delivery |")
    out = [head, "|" + "---|" * 13]
    for r in rows:
        out.append(
            f"| {r['load']} | {r['case']} | {r['sent']} | {r['deliveries_per_s']:.0f} | "
            f"{r['lost']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['chatd_us_per_delivery']:.1f} | {r['redis_us_per_delivery']:.1f} | "
            f"{r.get('deliveries_per_s_x', 1):.2f} | {r.get('p50_ms_x', 1):.2f} | "
            f"{r.get('p99_ms_x', 1):.2f} | {r.get('chatd_us_per_delivery_x', 1):.2f} |")
    return "\n".join(out)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="each run's length")
    ap.add_argument("--rate", type=float, default=200.0, help="fanout: the sender's lines/s")
    ap.add_argument("--readers", type=int, default=100, help="fanout: readers")
    ap.add_argument("--chatters", type=int, default=20, help="chatters: clients")
    ap.add_argument("--chat-rate", type=float, default=5.0, help="chatters: lines/s each")
    ap.add_argument("--loads", nargs="+", default=["fanout", "chatters"],
                    choices=("fanout", "chatters"))
    ap.add_argument("--workers", action="store_true",
                    help="also the workers: 2 case, if this build accepts it")
    ap.add_argument("--quick", action="store_true", help="a seconds-long run (the test's)")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds, args.rate, args.readers = 1.0, 50.0, 10
        args.chatters, args.chat_rate = 6, 5.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    with redis_server() as (redis, redis_port), \
            tempfile.TemporaryDirectory(prefix="chatd-bench-cluster-") as tmp:
        root = Path(tmp)
        cases = ["local", "node", "two"]
        if args.workers:
            if workers_accepted(root, redis_port):
                cases.append("workers")
            else:
                notes.append("workers: not available in this build")
                print("workers: not available in this build", flush=True)
        for load in args.loads:
            for name in cases:
                case = start_case(name, load, root, redis_port)
                try:
                    row = measure(case, load, args, redis.pid)
                finally:
                    case.stop()
                rows.append(row)
                print(f"{load:8} {name:8} sent {row['sent']:6} deliveries/s "
                      f"{row['deliveries_per_s']:9.0f} lost {row['lost']} p50 "
                      f"{row['p50_ms']:.2f} ms p99 {row['p99_ms']:.2f} ms chatd "
                      f"{row['chatd_us_per_delivery']:.1f} µs/delivery", flush=True)
    with_ratios(rows)
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": {"cores": os.cpu_count(), "python": platform.python_version(),
                        "load_avg_at_start": os.getloadavg()[0]},
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "notes": notes, "rows": rows}, indent=2))
    bad = [r for r in rows if r["duplicates"]]
    if bad:
        print(f"cluster bench: duplicates delivered in {[(r['load'], r['case']) for r in bad]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
