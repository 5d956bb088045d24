"""How long the event loop waits while the history writer commits (docs/performance.md).

Runs chatd twice per round, alternating, on the same traffic: once storing
history on a fresh SQLite file (the writer thread committing every few
milliseconds) and once with ``plugins.history.store: false``.  One client
sends ``--rate`` lines/s into a room of ``--listeners`` readers; a probe
client in a room of its own sends a command every 5 ms and times the reply.
The probe's round trip is what any user waits for on top of the network: its
p99 with history, beside the p99 without, is the loop lag the writer adds.

The server is pinned to core 0 (its writer thread with it: the worst case on a
small machine), the traffic and the probe to the other cores.  Loopback only,
``--seconds`` of traffic per run.

    python3 bench/loop_lag.py --rate 20000 --listeners 50 --rounds 3
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_chatd import start_chatd

CONFIG = """\
listen: {{host: 127.0.0.1, port: 0}}
flood: {{lines_per_second: 0}}
per_ip: {{max_connections: 0, connect_rate: 0, max_unregistered: 0}}
limits: {{announce_after_seconds: 0}}
storage: {{path: data/chatd.sqlite3}}
plugins: {{history: {{store: {store}, replay_lines: 0, retention_lines: 1000000000}}}}
plugin_host: {{entry_points: false}}
"""
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


def one_run(folder: Path, store: bool, args: argparse.Namespace) -> list[float]:
    proc, port = start_chatd(folder, CONFIG.format(store="true" if store else "false"),
                             cpus={0})
    try:
        ready = multiprocessing.Event()
        traffic = multiprocessing.Process(
            target=_traffic, args=(port, args.rate, args.listeners, args.seconds + 1.0, ready))
        traffic.start()
        os.sched_setaffinity(traffic.pid, _others())  # type: ignore[arg-type]
        if not ready.wait(15):
            raise RuntimeError("the traffic did not start")
        time.sleep(0.3)
        times = _probe(port, args.seconds)
        traffic.join(10)
        return times
    finally:
        proc.terminate()
        proc.wait(10)


def _others() -> set[int]:
    cores = os.sched_getaffinity(0)
    return (cores - {0}) or cores


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=20_000, help="lines/s into the room")
    parser.add_argument("--listeners", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.sched_setaffinity(0, _others())
    base = Path(tempfile.mkdtemp(prefix="chatd-lag-"))
    results: dict[bool, list[tuple[float, float, float]]] = {True: [], False: []}
    try:
        for number in range(args.rounds):
            for store in (True, False):
                folder = base / f"run{number}-{store}"
                folder.mkdir()
                times = one_run(folder, store, args)
                row = (statistics.median(times), _percentile(times, 0.99), max(times))
                results[store].append(row)
                label = "history on " if store else "history off"
                print(f"round {number} {label}: {len(times)} probes, p50 {row[0]:.2f} ms, "
                      f"p99 {row[1]:.2f} ms, max {row[2]:.2f} ms", flush=True)
        on, off = results[True], results[False]
        p99_on = statistics.median(r[1] for r in on)
        p99_off = statistics.median(r[1] for r in off)
        print(f"at {args.rate:,} lines/s to {args.listeners} listeners, medians of "
              f"{args.rounds}: probe p99 {p99_on:.2f} ms with history, {p99_off:.2f} ms "
              f"without: the writer adds {p99_on - p99_off:+.2f} ms at p99")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
