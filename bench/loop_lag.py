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

The server is pinned to core 0 (its writer thread with it: the worst case on a
small machine), the traffic and the probe to the other cores; PostgreSQL is not
pinned.  Loopback only, ``--seconds`` of traffic per run.

    python3 bench/loop_lag.py --rates 5000,20000 --backends sqlite,postgresql --kill
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
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
    args = parser.parse_args()
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
