"""Probes for fault tests: descriptors, memory, CPU, resets, waiting, log checks.

Small, Linux-specific helpers chatd's own reliability tests share; a plugin's
hardening tests can use them too.
"""


from __future__ import annotations

import contextlib
import os
import random
import re
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .process import ChatClient, ServerProcess

_LOG_RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ", re.MULTILINE)

#: The chatd processes a test started (``chatd_server``), kept on the test's node: the
#: failure report shows their logs, and a fixture that must outlive them (a PostgreSQL
#: database) stops them before it goes, whatever order the test asked for them in.
SERVERS_KEY: pytest.StashKey[list[Any]] = pytest.StashKey[list[Any]]()


def skip_unless_ci(reason: str) -> None:
    """Skip a test whose system tool is missing, except in CI (``CI=true``), where a
    missing tool is a failure: CI must not pass by skipping what it cannot run."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"missing in CI: {reason}")
    pytest.skip(reason)


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` nobody listens on now, for a program that must be given one
    (nginx, HAProxy, ngIRCd, a server restarted on the same port).

    Chosen at random BELOW the kernel's ephemeral range (``ip_local_port_range``,
    32768 and up by default), where no ``bind(0)`` and no outgoing connection of
    another test takes it between this check and the program's own bind: a port from
    ``bind(0)`` is the next one the kernel hands anyone, a race under parallel tests."""
    low, _ = _ephemeral_range()
    for _ in range(200):
        port = random.randrange(10_000, max(10_001, low))
        with contextlib.closing(socket.socket()) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {host} below {low}")


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def fd_count(pid: int) -> int:
    """Open descriptors of process ``pid`` (leak checks)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (busy-loop checks compare two readings)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER (1, 0): the peer gets an RST, not a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def unexpected_tracebacks(log: str) -> list[str]:
    """Log records with a traceback that is not a reported plugin failure."""
    records = [r for r in _LOG_RECORD_START.split(log) if "Traceback" in r]
    return [r for r in records if not re.match(r"ERROR chatd\.plugin_errors: plugin ", r)]


def parked_operator(
    server: ServerProcess, password: str, *, room: str = "#ops", client: ChatClient | None = None
) -> ChatClient:
    """A client made operator (``/oper``) and parked alone in ``room``.

    Out of ``#lobby``, chat traffic cannot bury the replies to its commands.
    """
    op = client if client is not None else server.client()
    op.send(f"/oper {password}")
    op.expect(r"^\*\*\* you are now an operator$")
    op.send(f"/join {room}")
    op.expect(rf"^\*\*\* you are the first in {room}$")
    op.send("/part #lobby")
    op.expect(rf"^\*\*\* you are now talking in {room}$")
    return op


def operator_stats(op: ChatClient) -> dict[str, Any]:
    """Run ``/stats`` as operator ``op`` and parse it.

    Keys: ``clients``, ``max_clients``, ``rooms``, ``connections_total``,
    ``output_queued``, ``storage`` (``"ok"``, or ``"FAILING: why"``), and one
    ``{name: count}`` table per titled line (``refused``, ``limit disconnections``,
    ``plugin errors``, ``slow plugin calls``, ``storage writes``, ``rejected writes``).
    """
    op.send("/stats")
    first = op.expect(r"^\*\*\* clients (\d+)/(\d+), rooms (\d+), connections since start (\d+)$")
    lines = [op.recv_line() for _ in range(9)]
    queued = re.search(r"output queued (\d+)$", lines[0])
    assert queued, lines
    result: dict[str, Any] = {
        "clients": int(first.group(1)),
        "max_clients": int(first.group(2)),
        "rooms": int(first.group(3)),
        "connections_total": int(first.group(4)),
        "output_queued": int(queued.group(1)),
    }
    for line in lines[2:]:
        title, _, counts = line[4:].partition(": ")
        if title == "storage":
            result[title] = counts
            continue
        table: dict[str, int] = {}
        if counts != "none":
            for item in counts.split(", "):
                name, _, count = item.rpartition(" ")
                table[name] = int(count)
        result[title] = table
    return result
