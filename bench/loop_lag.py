"""How long the event loop waits while the history writer commits (docs/performance.md).

Runs chatd once per backend and rate per round, alternating, on the same
traffic: storing history on a fresh SQLite file, on a fresh PostgreSQL database
(``--backends sqlite,postgresql``: a throwaway cluster from the test kit,
``chatd.testing.postgres``, with ``fsync``/``synchronous_commit`` on as a real
one has them), and not at all (``plugins.history.store: false``: the baseline).
One client sends ``--rates`` lines/s into a room of ``--listeners`` readers; a
probe client in a room of its own sends a command every 5 ms and times the
reply.  The probe's round trip is what any user waits for on top of the
network: its p99 with history, beside the p99 without, is the loop lag the
writer adds.  The CPU chatd used (every thread: the loop, the writer, the
reader) per line sent is the cost per line; with PostgreSQL the database
server's own CPU per line is shown beside it.

``--kill`` adds the kill -9 window on each backend: a sender at each rate, a
reader counting what it heard (so the server handled it and queued its write),
SIGKILL after ``--seconds``, then the lines heard but not in the database (what
a restart would replay), and whether anything was stored twice.

``--burst N`` measures something else: no tick may do unbounded work.  ``--senders``
clients (100) in the room write N lines between them all at once (each its share in
one ``sendall``, one after the other as fast as the traffic process can), into a room
of ``--listeners`` readers (the senders read it too), with the probe running; once per
``--tick-budgets`` value (``limits.tick_read_bytes``; 0 = no tick budget), alternating
in each of ``--rounds``.  It prints the probe's max and p99 round trip during the
burst, how many probe answers came back during it, and, chatd not counting its ticks
out loud, the first listener's view of them: chatd sends to it once per tick, so its
reads that brought burst lines are about the ticks the burst took (fewer if it was
slower to read than chatd to send), and the longest wait between two (from the first
write) is about the longest tick; then the time from the first write until the last
reader had every line.

The server is pinned to core 0 (its writer thread with it: the worst case on a
small machine), the traffic and the probe to the other cores; PostgreSQL is not
pinned.  Loopback only, ``--seconds`` of traffic per run.

    python3 bench/loop_lag.py --rates 5000,20000 --backends sqlite,postgresql --kill
    python3 bench/loop_lag.py --burst 10000 --senders 100 --listeners 50 \\
        --tick-budgets 0,32768,65536,262144 --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import itertools
import multiprocessing
import os
import shutil
import socket
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_chatd import kill_under_traffic, start_chatd

CONFIG = """\
listen: {{host: 127.0.0.1, port: 0}}
flood: {{lines_per_second: 0}}
per_ip: {{max_connections: 0, connect_rate: 0, max_unregistered: 0}}
limits: {{announce_after_seconds: 0}}
storage: {storage}
plugins: {{history: {{store: {store}, replay_lines: 0, retention_lines: 1000000000}}}}
plugin_host: {{entry_points: false}}
"""
SQLITE = "{path: data/chatd.sqlite3}"
PROBE_INTERVAL = 0.005
BURST_CONFIG = """\
listen: {{host: 127.0.0.1, port: 0}}
flood: {{lines_per_second: 0}}
per_ip: {{max_connections: 0, connect_rate: 0, max_unregistered: 0}}
limits: {{announce_after_seconds: 0, tick_read_bytes: {tick}}}
storage: {{path: data/chatd.sqlite3}}
plugins: {{history: {{replay_lines: 0}}}}
plugin_host: {{entry_points: false}}
"""
#: Every burst line ends with this, so a reader counts them whatever else it hears.
BURST_MARK = b"~~\n"


def _drain(sock: socket.socket, stop: threading.Event) -> None:
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            if not sock.recv(1 << 16):
                return
        except TimeoutError:
            continue
        except OSError:
            return


def _traffic(port: int, rate: int, listeners: int, seconds: float, ready: object) -> None:
    """In a process of its own: the listeners, and the sender at ``rate`` lines/s."""
    stop = threading.Event()
    readers = [socket.create_connection(("127.0.0.1", port), timeout=5)
               for _ in range(listeners)]
    threads = [threading.Thread(target=_drain, args=(r, stop), daemon=True) for r in readers]
    for thread in threads:
        thread.start()
    sender = socket.create_connection(("127.0.0.1", port), timeout=5)
    time.sleep(0.5)
    ready.set()  # type: ignore[attr-defined]
    sent, start = 0, time.monotonic()
    line = b"the quick brown fox jumps over the lazy dog, again and again\n"
    while time.monotonic() - start < seconds:
        due = start + sent / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        burst = max(1, min(50, int((time.monotonic() - due) * rate) + 1))
        sender.sendall(line * burst)
        sent += burst
    stop.set()
    sender.close()


def _probe(port: int, seconds: float) -> list[float]:
    """Round trips of a command, one every PROBE_INTERVAL, in milliseconds."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"/join #probe\n")
    time.sleep(0.2)
    sock.settimeout(0.5)
    sock.recv(1 << 16)
    times: list[float] = []
    buffer = b""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sent = time.perf_counter()
        sock.sendall(b"/away\n")  # answered at once: "! you are not away"
        while b"not away" not in buffer:
            buffer += sock.recv(1 << 16)
        times.append((time.perf_counter() - sent) * 1000)
        buffer = buffer[buffer.index(b"not away") + 8:]
        time.sleep(PROBE_INTERVAL)
    sock.close()
    return times


def _count_burst(sock: socket.socket, lines: int, done: list[float],
                 arrivals: list[float] | None = None) -> None:
    """Read until ``lines`` burst lines came (or the socket ends); note when, and (into
    ``arrivals``) when each read that brought burst lines returned."""
    seen, tail = 0, b""
    while seen < lines:
        try:
            data = sock.recv(1 << 18)
        except OSError:
            return
        if not data:
            return
        chunk = tail + data
        count = chunk.count(BURST_MARK)
        if count and arrivals is not None:
            arrivals.append(time.monotonic())
        seen += count
        tail = chunk[-(len(BURST_MARK) - 1):]
    done.append(time.monotonic())


def _burst_traffic(port: int, lines: int, senders: int, listeners: int, ready: Any, go: Any,
                   results: Any) -> None:
    """In a process of its own: the readers, the senders, and the burst on ``go``."""
    readers = [socket.create_connection(("127.0.0.1", port), timeout=60)
               for _ in range(listeners)]
    writers = [socket.create_connection(("127.0.0.1", port), timeout=60)
               for _ in range(senders)]
    done: list[float] = []
    shares = [lines // senders + (1 if i < lines % senders else 0) for i in range(senders)]
    expected = [lines] * listeners + [lines - share for share in shares]  # no echo
    arrivals: list[float] = []  # the first listener's: chatd flushes to it once a tick
    threads = [threading.Thread(target=_count_burst, args=(
        sock, count, done, arrivals if i == 0 else None), daemon=True)
        for i, (sock, count) in enumerate(zip(readers + writers, expected, strict=True))]
    for thread in threads:
        thread.start()
    payloads = [b"".join(b"burst %d-%05d the quick brown fox jumps over the lazy dog ~~\n"
                         % (i, n) for n in range(share)) for i, share in enumerate(shares)]
    time.sleep(0.5)  # the joins and welcomes, before the burst
    ready.set()
    go.wait(30)
    start = time.monotonic()
    for sock, payload in zip(writers, payloads, strict=True):
        sock.sendall(payload)
    written = time.monotonic()
    for thread in threads:
        thread.join(60)
    results.put((start, written, sorted(done), len(threads), arrivals))
    for sock in readers + writers:
        sock.close()


def _probe_until(port: int, stop: threading.Event, out: list[tuple[float, float]]) -> None:
    """Like :func:`_probe`, until ``stop``: (when sent, round trip in ms) per probe."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"/join #probe\n")
    time.sleep(0.2)
    sock.settimeout(0.5)
    sock.recv(1 << 16)
    sock.settimeout(30)
    buffer = b""
    while not stop.is_set():
        sent = time.monotonic()
        sock.sendall(b"/away\n")
        while b"not away" not in buffer:
            buffer += sock.recv(1 << 16)
        out.append((sent, (time.monotonic() - sent) * 1000))
        buffer = buffer[buffer.index(b"not away") + 8:]
        time.sleep(PROBE_INTERVAL)
    sock.close()


def burst_run(folder: Path, tick: int, args: argparse.Namespace) -> dict[str, float]:
    """One burst against a fresh chatd with ``limits.tick_read_bytes: tick``."""
    proc, port = start_chatd(folder, BURST_CONFIG.format(tick=tick), cpus={0})
    try:
        ready, go, results = multiprocessing.Event(), multiprocessing.Event(), \
            multiprocessing.Queue()
        traffic = multiprocessing.Process(target=_burst_traffic, args=(
            port, args.burst, args.senders, args.listeners, ready, go, results))
        traffic.start()
        os.sched_setaffinity(traffic.pid, _others())  # type: ignore[arg-type]
        if not ready.wait(60):
            raise RuntimeError("the burst's clients did not connect")
        stop, probes = threading.Event(), []
        prober = threading.Thread(target=_probe_until, args=(port, stop, probes))
        prober.start()
        time.sleep(0.5)
        go.set()
        start, written, done, readers, arrivals = results.get(timeout=120)
        time.sleep(0.1)
        stop.set()
        prober.join(30)
        traffic.join(30)
        if len(done) < readers:
            raise RuntimeError(f"only {len(done)} of {readers} readers had every line")
        end = done[-1]
        during = [rtt for sent, rtt in probes if start <= sent <= end or
                  (sent < start < sent + rtt / 1000)]
        before = [rtt for sent, rtt in probes if sent + rtt / 1000 < start]
        gaps = [later - earlier for earlier, later in itertools.pairwise([start, *arrivals])]
        return {"max": max(during), "p99": _percentile(during, 0.99), "answers": len(during),
                "reads": len(arrivals), "gap_ms": max(gaps) * 1000,
                "idle_p99": _percentile(before, 0.99) if before else 0.0,
                "last_ms": (end - start) * 1000, "written_ms": (written - start) * 1000}
    finally:
        proc.terminate()
        proc.wait(10)


def burst_main(args: argparse.Namespace) -> int:
    """``--burst``: each tick budget in turn, ``--rounds`` times; medians printed."""
    budgets = [int(value) for value in args.tick_budgets.split(",")]
    base = Path(tempfile.mkdtemp(prefix="chatd-burst-"))
    rows: dict[int, list[dict[str, float]]] = {}
    try:
        for number in range(args.rounds):
            for tick in budgets:
                folder = base / f"run{number}-{tick}"
                folder.mkdir()
                row = burst_run(folder, tick, args)
                rows.setdefault(tick, []).append(row)
                print(f"round {number} tick_read_bytes {tick:>7}: probe max {row['max']:.1f} "
                      f"ms, p99 {row['p99']:.1f} ms over {row['answers']:.0f} answers during "
                      f"the burst (idle p99 {row['idle_p99']:.2f} ms); a listener got it in "
                      f"{row['reads']:.0f} reads, at most {row['gap_ms']:.1f} ms apart; "
                      f"written in {row['written_ms']:.1f} ms, last reader complete after "
                      f"{row['last_ms']:.0f} ms", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"burst of {args.burst:,} lines from {args.senders} senders to {args.listeners} "
          f"listeners (+ the senders), medians of {args.rounds}:")
    for tick in budgets:
        def median(key: str, tick: int = tick) -> float:
            return statistics.median(row[key] for row in rows[tick])
        label = "0 (no tick budget)" if tick == 0 else f"{tick:,}"
        print(f"  tick_read_bytes {label:>18}: probe max {median('max'):.1f} ms, p99 "
              f"{median('p99'):.1f} ms, {median('answers'):.0f} probe answers during the "
              f"burst; a listener's reads {median('reads'):.0f}, longest wait between "
              f"two {median('gap_ms'):.1f} ms; last reader complete after "
              f"{median('last_ms'):.0f} ms")
    return 0


class Backend:
    """Where a run stores history: ``name`` (sqlite, postgresql, or off: not stored), a
    fresh database per run (:meth:`storage`), and the CPU time of the database server
    (PostgreSQL's processes; 0 for SQLite, whose work is chatd's own)."""

    def __init__(self, name: str, cluster: Any = None) -> None:
        self.name = name
        self.cluster = cluster

    def storage(self) -> str:
        if self.cluster is None:
            return SQLITE
        return f"{{url: '{self.cluster.create_database()}'}}"

    def server_cpu(self) -> float:
        if self.cluster is None:
            return 0.0
        children = importlib.import_module("chatd.testing.postgres").children
        pids = [self.cluster.pid, *children(self.cluster.pid)]
        return sum(_cpu_seconds(pid) for pid in pids)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and all its threads so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(folder: Path, backend: Backend, rate: int,
            args: argparse.Namespace) -> tuple[list[float], float, float]:
    """The probe's round trips (ms), and chatd's and the database server's CPU
    microseconds per line sent."""
    store = backend.name != "off"
    storage = backend.storage() if store else SQLITE
    proc, port = start_chatd(folder, CONFIG.format(store="true" if store else "false",
                                                   storage=storage), cpus={0})
    try:
        ready = multiprocessing.Event()
        traffic = multiprocessing.Process(
            target=_traffic, args=(port, rate, args.listeners, args.seconds + 1.0, ready))
        traffic.start()
        os.sched_setaffinity(traffic.pid, _others())  # type: ignore[arg-type]
        if not ready.wait(15):
            raise RuntimeError("the traffic did not start")
        time.sleep(0.3)
        cpu, server = _cpu_seconds(proc.pid), backend.server_cpu()
        started = time.monotonic()
        times = _probe(port, args.seconds)
        lines = rate * (time.monotonic() - started)
        cpu, server = _cpu_seconds(proc.pid) - cpu, backend.server_cpu() - server
        traffic.join(10)
        return times, cpu / lines * 1e6, server / lines * 1e6
    finally:
        proc.terminate()
        proc.wait(10)


def kill_window(folder: Path, backend: Backend, rate: int,
                seconds: float) -> dict[str, float]:
    """Lines heard by a reader (handled by the server, their writes queued) against
    lines in the database after a SIGKILL: how many were lost, how long before the
    kill the first of them was heard, and whether any was stored twice."""
    storage = backend.storage()
    proc, port = start_chatd(folder, CONFIG.format(store="true", storage=storage))
    run = kill_under_traffic(proc, port, rate, seconds)
    heard, killed = run.heard, run.killed
    stored = _stored_texts(folder, storage)
    kept = set(stored)
    lost = [(when, text) for when, text in heard if text not in kept]
    return {"heard": len(heard), "stored": len(stored), "lost": len(lost),
            "twice": len(stored) - len(kept),
            "window_ms": (killed - lost[0][0]) * 1000 if lost else 0.0}


def _stored_texts(folder: Path, storage: str) -> list[str]:
    """The texts in the history table, in the database's order (what a restart replays)."""
    sql = "SELECT text FROM history ORDER BY seq"
    if storage == SQLITE:
        with contextlib.closing(sqlite3.connect(folder / "data" / "chatd.sqlite3")) as conn:
            return [text for (text,) in conn.execute(sql)]
    import psycopg
    url = storage.split("'")[1]
    with psycopg.connect(url) as conn:
        return [text for (text,) in conn.execute(sql)]


def _others() -> set[int]:
    cores = os.sched_getaffinity(0)
    return (cores - {0}) or cores


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _cluster() -> Any:
    """A throwaway PostgreSQL cluster with a real one's durability (the test kit's has
    fsync off: a test's rows need not survive a power cut; a bench's costs must)."""
    # The module, not the fixture of the same name that chatd.testing exports.
    postgres = importlib.import_module("chatd.testing.postgres")
    postgres._SERVER_SETTINGS.update(fsync="on", synchronous_commit="on",
                                     full_page_writes="on", shared_buffers="128MB")
    return postgres.PostgresCluster().start()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", "--rate", dest="rates", default="20000",
                        help="lines/s into the room, comma-separated (5000,20000)")
    parser.add_argument("--backends", default="sqlite",
                        help="comma-separated: sqlite, postgresql")
    parser.add_argument("--listeners", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kill", action="store_true",
                        help="also the kill -9 window of each backend at each rate")
    parser.add_argument("--burst", type=int, default=0,
                        help="instead: this many lines at once, from --senders clients")
    parser.add_argument("--senders", type=int, default=100)
    parser.add_argument("--tick-budgets", default="0,65536",
                        help="--burst: limits.tick_read_bytes values, comma-separated")
    args = parser.parse_args()
    if args.burst:
        os.sched_setaffinity(0, _others())
        return burst_main(args)
    rates = [int(rate) for rate in args.rates.split(",")]
    names = [name.strip() for name in args.backends.split(",")]
    os.sched_setaffinity(0, _others())
    base = Path(tempfile.mkdtemp(prefix="chatd-lag-"))
    cluster = _cluster() if "postgresql" in names else None
    backends = [Backend(name, cluster if name == "postgresql" else None)
                for name in [*names, "off"]]
    results: dict[tuple[str, int], list[tuple[float, float, float, float]]] = {}
    try:
        for number in range(args.rounds):
            for rate in rates:
                for backend in backends:
                    folder = base / f"run{number}-{rate}-{backend.name}"
                    folder.mkdir()
                    times, cpu, server = one_run(folder, backend, rate, args)
                    row = (statistics.median(times), _percentile(times, 0.99), cpu, server)
                    results.setdefault((backend.name, rate), []).append(row)
                    print(f"round {number} {rate:,}/s {backend.name:>10}: {len(times)} "
                          f"probes, p50 {row[0]:.2f} ms, p99 {row[1]:.2f} ms, chatd CPU "
                          f"{cpu:.1f} us/line, database server {server:.1f} us/line",
                          flush=True)
        for rate in rates:
            off = statistics.median(r[1] for r in results[("off", rate)])
            off_cpu = statistics.median(r[2] for r in results[("off", rate)])
            for name in names:
                rows = results[(name, rate)]
                p99 = statistics.median(r[1] for r in rows)
                cpu = statistics.median(r[2] for r in rows)
                server = statistics.median(r[3] for r in rows)
                print(f"at {rate:,} lines/s to {args.listeners} listeners, {name}, medians "
                      f"of {args.rounds}: probe p99 {p99:.2f} ms ({off:.2f} without "
                      f"history: {p99 - off:+.2f} ms), chatd CPU {cpu:.1f} us/line "
                      f"({cpu - off_cpu:+.1f} for history), database server "
                      f"{server:.1f} us/line")
        if args.kill:
            for rate in rates:
                for backend in backends[:-1]:
                    folder = base / f"kill-{rate}-{backend.name}"
                    folder.mkdir()
                    result = kill_window(folder, backend, rate, args.seconds)
                    print(f"kill -9 at {rate:,} lines/s, {backend.name}: heard "
                          f"{result['heard']:,}, stored {result['stored']:,}, heard but "
                          f"not stored {result['lost']:,} (the first "
                          f"{result['window_ms']:.1f} ms before the kill), stored twice "
                          f"{result['twice']}", flush=True)
    finally:
        if cluster is not None:
            cluster.close()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
