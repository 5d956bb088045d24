"""Start a chatd process from this checkout on a config of the caller's (bench scripts).

The server runs from the repository (``python -m chatd``) in a folder of its
own, with its log in ``chatd.log`` there; loopback only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def start_chatd(folder: Path, config: str, *, cpus: set[int] | None = None
                ) -> tuple[subprocess.Popen[bytes], int]:
    """Write ``config`` to ``folder/config.yaml``, start chatd on it, return it and its port.

    ``cpus`` pins the server (and its threads) to those cores.
    """
    (folder / "config.yaml").write_text(config)
    port_file = folder / "port"
    with open(folder / "chatd.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatd", "--config", str(folder / "config.yaml"),
             "--port-file", str(port_file)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )
    if cpus:
        os.sched_setaffinity(proc.pid, cpus)
    deadline = time.monotonic() + 15
    while not (port_file.exists() and port_file.read_text().endswith("\n")):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError((folder / "chatd.log").read_text())
        time.sleep(0.02)
    return proc, int(port_file.read_text().split()[0])


@dataclass
class KilledUnderTraffic:
    """What :func:`kill_under_traffic` saw: the lines the reader heard (when, text),
    how many were sent, and when the traffic started and the kill happened."""

    heard: list[tuple[float, str]]
    sent: int
    start: float
    killed: float


def kill_under_traffic(proc: subprocess.Popen[bytes], port: int, rate: int,
                       seconds: float) -> KilledUnderTraffic:
    """One client sends numbered lines (``n00000001``) at ``rate`` lines/s (0: as fast
    as the server takes them) for ``seconds`` to a room another client reads, then
    the server is killed with SIGKILL.  A line the reader heard was handled by the
    server and its history write queued: the crash benchmarks compare those with
    what the database kept (bench/crash_window.py, bench/loop_lag.py --kill)."""
    sender = socket.create_connection(("127.0.0.1", port), timeout=5)
    reader = socket.create_connection(("127.0.0.1", port), timeout=5)
    time.sleep(0.3)
    reader.recv(65536)  # welcome and joins
    heard: list[tuple[float, str]] = []

    def read() -> None:
        buffer = b""
        while True:
            try:
                data = reader.recv(65536)
            except OSError:
                return
            if not data:
                return
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            now = time.monotonic()
            heard.extend((now, line.split(b"> ", 1)[1].decode())
                         for line in lines if b"> n" in line)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    sent, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        if rate:
            pause = start + sent / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        sender.sendall(f"n{sent:08d}\n".encode())
        sent += 1
        if not rate and sent % 200 == 0:
            time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    proc.wait()
    thread.join(2)
    sender.close()
    reader.close()
    return KilledUnderTraffic(heard, sent, start, killed)
