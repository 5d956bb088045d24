"""RELIABILITY.md section C, resource exhaustion: R1-R5, against real chatd processes.

Every fault is provoked for real: a full server, per-address floods, a connect
burst, a process whose RLIMIT_NOFILE really runs out (EMFILE under the
edge-triggered listener), readers that never read, and thousands of abrupt
connect/close cycles.  Introspection is what an operator has: ``/stats``, the
log, and ``/proc/<pid>``.  Every read has a timeout; nothing asserts how fast
the server is (a bounded wait for an expected event is not a speed claim).
"""

from __future__ import annotations

import contextlib
import errno
import re
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatd.testing import (
    ChatClient,
    ServerProcess,
    cpu_seconds,
    fd_count,
    operator_stats,
    parked_operator,
    reset,
    rss_bytes,
    unexpected_tracebacks,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.timeout(90)

PASSWORD = "reliability-oper"
OPER = {"oper": {"password": PASSWORD}}
WELCOME = re.compile(r"^\*\*\* Welcome to chatd, (\S+)\.")


# -- helpers ---------------------------------------------------------------------------


def check_healthy(server: ServerProcess) -> None:
    """The process was alive at the end of the test and its log holds no traceback.

    It is stopped first: the log is written by a thread of its own, complete only then.
    """
    alive = server.proc.poll() is None
    server.close()
    log = server.log()
    assert alive, f"chatd died during the test:\n{log[-3000:]}"
    assert unexpected_tracebacks(log) == [], log[-5000:]


@pytest.fixture
def start(chatd_server: Callable[..., ServerProcess]) -> Iterator[Callable[..., ServerProcess]]:
    """``start(**sections)`` -> a running server, checked for health after the test."""
    started: list[ServerProcess] = []

    def _start(**sections: Any) -> ServerProcess:
        limits = {"close_linger_seconds": 0.5, "shutdown_timeout_seconds": 1.0,
                  **sections.pop("limits", {})}
        server = chatd_server(limits=limits, **sections)
        started.append(server)
        return server

    yield _start
    for server in started:
        check_healthy(server)


def raw_socket(address: tuple[str, int], *, source: str | None = None,
               rcvbuf: int | None = None, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source is not None:
        sock.bind((source, 0))
    sock.settimeout(timeout)
    sock.connect(address)
    return sock


def quiet(client: ChatClient, wait: float = 0.3) -> list[str]:
    """Read lines until none arrives for ``wait`` seconds."""
    lines = []
    while True:
        try:
            lines.append(client.recv_line(timeout=wait))
        except AssertionError:
            return lines


def operator(server: ServerProcess, *, room: str = "#ops") -> ChatClient:
    return parked_operator(server, PASSWORD, room=room)


stats = operator_stats


def first_lines(
    socks: list[socket.socket], timeout: float,
    until: Callable[[dict[socket.socket, str | None]], bool] | None = None,
) -> dict[socket.socket, str | None]:
    """The first line each socket receives within ``timeout`` (None: EOF without a line).

    Stops early once every socket answered or ``until(answers)`` is true.
    """
    sel = selectors.DefaultSelector()
    buffers: dict[socket.socket, bytearray] = {}
    got: dict[socket.socket, str | None] = {}
    for sock in socks:
        sock.setblocking(False)
        buffers[sock] = bytearray()
        sel.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while len(got) < len(socks) and (remaining := deadline - time.monotonic()) > 0:
            if until is not None and until(got):
                break
            for key, _ in sel.select(timeout=min(0.2, remaining)):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    data = b""
                buffers[sock] += data
                line, newline, _ = bytes(buffers[sock]).partition(b"\n")
                if newline or not data:
                    got[sock] = line.decode() if newline else None
                    sel.unregister(sock)
    finally:
        sel.close()
        for sock in socks:
            sock.setblocking(True)
            sock.settimeout(5.0)
    return got


def read_until_eof(sock: socket.socket, timeout: float = 5.0) -> bytes:
    sock.settimeout(timeout)
    data = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return bytes(data)


# -- R1: max_clients -------------------------------------------------------------------


def test_R1_max_clients_refuses_then_releases_the_slot(
    start: Callable[..., ServerProcess],
) -> None:
    """R1: "the 11th gets ERROR server full (max 10 clients) and EOF, and
    rejected_connections increases.  The 10 existing clients are unaffected.  After
    one disconnects, a new client is admitted." """
    server = start(limits={"max_clients": 10}, plugins=OPER)
    op = operator(server)  # client 1 of 10
    clients = [server.client() for _ in range(9)]
    before = stats(op)
    assert before["clients"] == 10 and before["max_clients"] == 10, before

    refused = raw_socket(server.address)
    assert read_until_eof(refused) == b"! server full (max 10 clients); try again later\n"
    refused.close()

    after = stats(op)
    assert after["refused"].get("server_full") == 1, after
    assert after["clients"] == 10, after
    # The ten are unaffected: a line from one reaches the other eight in #lobby, in order.
    clients[0].send("still here 1")
    clients[0].send("still here 2")
    for client in clients[1:]:
        client.expect(rf"^<{clients[0].nick}> still here 1$")  # after the join notices
        client.expect_line(f"<{clients[0].nick}> still here 2")

    leaving = clients.pop()
    leaving.close()
    for client in clients:
        client.expect(rf"^\*\*\* {leaving.nick} quit \(connection closed by peer\)$")
    newcomer = server.client()
    for client in clients:
        client.expect_line(f"*** {newcomer.nick} joined #lobby")
    newcomer.send("admitted")
    for client in clients:
        client.expect_line(f"<{newcomer.nick}> admitted")
    final = stats(op)
    assert final["clients"] == 10 and final["refused"] == {"server_full": 1}, final


# -- R2: per-address concurrency and connect rate ------------------------------------------


def test_R2_per_address_limit_and_connect_rate(start: Callable[..., ServerProcess]) -> None:
    """R2: "The 4th from .2 gets ERROR too many connections from your address; .3 is
    admitted.  Cycles beyond 5 in the window are refused until the window passes.  The
    counters return to 0 after disconnects." """
    window = 2.0
    server = start(
        per_ip={"max_connections": 3, "connect_rate": 5, "connect_window_seconds": window},
        plugins=OPER,
    )
    op = operator(server)
    from_2 = [server.client(source="127.0.0.2") for _ in range(3)]
    fourth = raw_socket(server.address, source="127.0.0.2")
    assert read_until_eof(fourth) == b"! too many connections from your address (max 3)\n"
    fourth.close()
    from_3 = server.client(source="127.0.0.3")
    from_3.send("hello from .3")
    for client in from_2:
        client.expect(rf"^<{from_3.nick}> hello from \.3$")

    # Ten quick connect/close cycles from .4: five fit in the window, the rest are refused.
    outcomes = []
    for _ in range(10):
        sock = raw_socket(server.address, source="127.0.0.4")
        first = first_lines([sock], timeout=5.0)[sock]
        outcomes.append(first)
        sock.close()
    admitted = [line for line in outcomes if line and WELCOME.match(line)]
    refusal = "! too many connection attempts from your address; try again later"
    assert len(admitted) == 5, outcomes
    assert outcomes[5:] == [refusal] * 5, outcomes

    counts = stats(op)
    assert counts["refused"] == {"per_ip": 1, "connect_rate": 5}, counts
    # Every attempt counts, so .4 is refused until a whole window has passed.
    time.sleep(window + 0.3)
    late = server.client(source="127.0.0.4")
    late.send("after the window")
    from_3.expect(rf"^<{late.nick}> after the window$")

    # Everyone from .2 leaves: the counter for .2 must be back to 0 (a leak would
    # refuse one of the next three).
    for client in from_2:
        client.close()
        from_3.expect(rf"^\*\*\* {client.nick} quit ")
    again = [server.client(source="127.0.0.2") for _ in range(3)]
    again[0].send("three again")
    for client in again[1:]:
        client.expect(rf"^<{again[0].nick}> three again$")
    final = stats(op)
    assert final["clients"] == 6, final  # op, .3, late .4, three from .2
    assert final["refused"] == {"per_ip": 1, "connect_rate": 5}, final


# -- R3: accept burst ----------------------------------------------------------------------


def test_R3_accept_burst_with_a_small_accept_batch(start: Callable[..., ServerProcess]) -> None:
    """R3: "200 simultaneous non-blocking connects: all 200 are accepted and welcomed.
    None stays stranded in the backlog."  With limits.accept_batch = 4 the listener
    must put itself back on the ready list 50 times, since no new edge arrives.
    (tests/test_edge_triggered.py covers the default batch of 64.)"""
    server = start(limits={"accept_batch": 4}, plugins=OPER)
    op = operator(server)
    count = 200
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            err = sock.connect_ex(server.address)
            assert err in (0, errno.EINPROGRESS), errno.errorcode.get(err, err)
            socks.append(sock)
        firsts = first_lines(socks, timeout=10.0)
        welcomed = [line for line in firsts.values() if line and WELCOME.match(line)]
        assert len(welcomed) == count, f"{count - len(welcomed)} of {count} stranded"
        assert stats(op)["clients"] == count + 1
        # All of them are live members of #lobby: one line reaches every one of them.
        sender = server.client()
        sender.send("burst-check")
        seen = 0
        sel = selectors.DefaultSelector()
        buffers = {}
        for sock in socks:
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
            buffers[sock] = bytearray()
        pattern = f"<{sender.nick}> burst-check\n".encode()
        deadline = time.monotonic() + 10
        while seen < count and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                buffers[sock] += sock.recv(262144)
                if pattern in buffers[sock]:
                    seen += 1
                    sel.unregister(sock)
        sel.close()
        assert seen == count, f"only {seen} of {count} got the broadcast"
    finally:
        for sock in socks:
            sock.close()


# -- R4: EMFILE under an edge-triggered listener ------------------------------------------------


class LimitedServer(ServerProcess):
    """A chatd process started with RLIMIT_NOFILE lowered to ``nofile`` (soft and hard)."""

    def __init__(self, config_path: Path, workdir: Path, nofile: int) -> None:
        self.config_path = config_path
        self.port_file = workdir / "port"
        self.log_path = workdir / "chatd.log"
        cmd = [sys.executable, "-m", "chatd", "--config", str(config_path),
               "--port-file", str(self.port_file)]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)),
        )
        self.host = "127.0.0.1"
        self.ports = self._wait_for_ports(15.0)
        self.port = self.ports[0]
        self._clients = []


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Callable[..., LimitedServer]]:
    servers: list[LimitedServer] = []

    def _start(nofile: int, **sections: Any) -> LimitedServer:
        workdir = tmp_path / f"limited{len(servers)}"
        workdir.mkdir()
        config = write_config(workdir / "config.yaml", **sections)
        server = LimitedServer(config, workdir, nofile)
        servers.append(server)
        return server

    yield _start
    for server in servers:
        check_healthy(server)
        server.close()


def test_R4a_max_clients_is_clamped_to_the_descriptor_limit(
    limited: Callable[..., LimitedServer], tmp_path: Path,
) -> None:
    """R4(a): "The startup log says max_clients reduced to 32 (RLIMIT_NOFILE 64 - 32
    reserved), or chatd exits clearly if <= 32." """
    server = limited(64, limits={"max_clients": 1000, "shutdown_timeout_seconds": 1.0},
                     plugins=OPER)
    server.wait_for_log(r"max_clients reduced to 32 \(RLIMIT_NOFILE 64 - 32 reserved\)")
    op = operator(server)
    clients = [server.client() for _ in range(31)]
    assert stats(op)["max_clients"] == 32
    refused = raw_socket(server.address)
    assert read_until_eof(refused) == b"! server full (max 32 clients); try again later\n"
    refused.close()
    clients[0].send("32 is fine")
    clients[-1].expect(rf"^<{clients[0].nick}> 32 is fine$")

    # No room left at all: a clear startup error, exit status 2, nothing bound.
    config = write_config(tmp_path / "none.yaml", limits={"reserve_fds": 32})
    result = subprocess.run(
        [sys.executable, "-m", "chatd", "--config", str(config)],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32)),
    )
    assert result.returncode == 2, result
    assert "RLIMIT_NOFILE is 32, not above the 32 descriptors reserved" in result.stderr
    assert "listening on" not in result.stderr


FD_HOG = """
import os

from chatd import hookimpl

HELD = []


@hookimpl
def chatd_startup(server):
    # Logs, caches, a database: plugins hold descriptors too (what reserve_fds is for).
    HELD.extend(os.open(os.devnull, os.O_RDONLY) for _ in range(12))
"""


def test_R4b_emfile_refuses_through_the_spare_fd_and_retries_without_a_new_edge(
    limited: Callable[..., LimitedServer], tmp_path: Path,
) -> None:
    """R4(b): "Server CPU over the next 2 s is under 0.2 s (no busy loop).  Excess
    connects are accepted-and-closed through the spare fd, with a best-effort ERROR
    server full, instead of hanging in the backlog.  At most one accept: Too many open
    files log per 60 s.  After 10 clients leave, a pending connection is served without
    any new connection arriving." """
    plugins = tmp_path / "hog"
    plugins.mkdir()
    (plugins / "fdhog.py").write_text(FD_HOG)
    # The app cap is out of the way (56 > what 64 descriptors leave for clients once
    # the plugin holds 12): accept() itself fails with EMFILE.
    server = limited(
        64,
        limits={"max_clients": 1000, "reserve_fds": 8, "accept_retry_seconds": 0.5,
                "close_linger_seconds": 0.5, "shutdown_timeout_seconds": 1.0},
        plugin_dirs=[str(plugins)],
    )
    server.wait_for_log(r"max_clients reduced to 56 \(RLIMIT_NOFILE 64 - 8 reserved\)")
    socks = [raw_socket(server.address) for _ in range(80)]
    try:
        server.wait_for_log(r"accept: Too many open files")
        firsts = first_lines(socks, timeout=1.0)
        welcomed = [s for s in socks if WELCOME.match(firsts.get(s) or "")]
        # Fewer than 56 got in: the app cap was not what stopped the others.
        assert 30 < len(welcomed) < 56, len(welcomed)

        # No busy loop while the backlog is full and descriptors are out.
        cpu_before = cpu_seconds(server.pid)
        time.sleep(2.0)
        cpu_used = cpu_seconds(server.pid) - cpu_before
        assert cpu_used < 0.5, f"chatd used {cpu_used:.2f} s of CPU in 2 s while out of fds"

        rest = [s for s in socks if s not in welcomed]
        firsts.update(first_lines([s for s in rest if s not in firsts], timeout=0.5))
        refusal = "! server full, try again later"
        refused = [s for s in rest if firsts.get(s) == refusal]
        assert refused, "no pending client was refused through the spare descriptor"
        for sock in refused:
            assert read_until_eof(sock, 2.0) == b"", "a refused client was not closed"
        pending = [s for s in rest if s not in firsts]
        assert len(pending) >= 10, (len(welcomed), len(refused), len(pending))
        unexpected = [firsts[s] for s in rest if s in firsts and firsts[s] != refusal]
        assert unexpected == [], unexpected

        # Ten leave.  Nothing new connects: the retry timer alone must serve the backlog.
        for sock in welcomed[:10]:
            sock.close()
        stayed = welcomed[10:]
        def ten_welcomed(got: dict[socket.socket, str | None]) -> bool:
            return sum(bool(WELCOME.match(line or "")) for line in got.values()) >= 10

        served = first_lines(pending, timeout=5.0, until=ten_welcomed)
        # One more retry period: nobody beyond the ten freed slots gets in.
        served.update(first_lines([s for s in pending if s not in served], timeout=0.7))
        newly = [s for s in pending if WELCOME.match(served.get(s) or "")]
        assert len(newly) == 10, f"{len(newly)} pending clients were served, expected 10"
        assert all(served[s] == refusal for s in pending if s in served and s not in newly)

        # Well-behaved clients, old and new, still chat normally and in order.
        talker = newly[0]
        talker.sendall(b"after emfile 1\nafter emfile 2\n")
        for listener in (stayed[0], stayed[-1], newly[-1]):
            buf = bytearray()
            listener.settimeout(5.0)
            while buf.count(b"after emfile") < 2:
                chunk = listener.recv(65536)
                assert chunk, "connection closed"
                buf += chunk
            text = buf.decode()
            assert text.index("after emfile 1") < text.index("after emfile 2"), text
        log = server.wait_for_log_count(r"accept: Too many open files", 1)  # (own thread)
        assert log.count("accept: Too many open files") == 1, log[-3000:]
    finally:
        for sock in socks:
            sock.close()


# -- R5: bounded memory and descriptors ------------------------------------------------------


class LineReader(threading.Thread):
    """Reads one socket in the background, keeping every line."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.lines: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        buf = bytearray()
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                data = self.sock.recv(262144)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            buf += data
            *lines, rest = buf.split(b"\n")
            self.lines.extend(line.decode() for line in lines)
            buf = bytearray(rest)


def test_R5a_total_output_cap_evicts_the_largest_buffers_first(
    start: Callable[..., ServerProcess],
) -> None:
    """R5(a): "200 clients that never read while one client broadcasts 1 KiB lines.
    RSS stays under baseline + total_max + slack.  When the total cap is hit, the
    largest buffers are evicted first.  Clients that are reading keep receiving." """
    total_max = 2 << 20
    server = start(
        limits={"output_total_max_bytes": total_max, "output_soft_bytes": 256 << 10,
                "max_output_bytes": 1 << 20},
        net={"sndbuf_bytes": 4096},
        plugins=OPER,
    )
    op = operator(server)
    reader_client = server.client()
    reader = LineReader(reader_client.sock)
    reader.start()
    sender = server.client()
    # The big one: stalled, and also in #big, where it gets 200 KiB before anyone else.
    big = raw_socket(server.address, rcvbuf=4096)
    big.sendall(b"/join #big\n")
    big_port = big.getsockname()[1]

    def big_joined() -> bool:
        op.send("/who #big")
        return bool(op.expect(r"^(\*\*\* #big has 1 member|! no such room)").group(0)[0] == "*")

    assert wait_until(big_joined, 5.0)
    stalled = [raw_socket(server.address, rcvbuf=4096) for _ in range(200)]
    assert wait_until(lambda: stats(op)["clients"] == 204, 10.0)
    sender.send("/join #big")
    sender.expect(r"^\*\*\* also in #big: \S+$")
    quiet(sender, 0.3)
    pad = "y" * 1000
    for i in range(200):
        sender.send(f"big-{i:04d} {pad}")
    assert wait_until(lambda: stats(op)["output_queued"] > 150_000, 5.0)
    baseline = rss_bytes(server.pid)
    peak = [baseline]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            with contextlib.suppress(OSError, AssertionError):
                peak.append(rss_bytes(server.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        sender.send("/join #lobby")
        sender.expect(r"^\*\*\* you are now talking in #lobby$")
        # A steady stream (the catalogue's "1 KiB lines for 10 s", compressed), not one
        # burst: a reader that keeps up never holds more than a line or two.
        lines = 400
        for i in range(lines):
            sender.send(f"seq-{i:04d} {pad}")
            time.sleep(0.003)
        wanted = f"<{sender.nick}> seq-{lines - 1:04d} {pad}"
        assert wait_until(lambda: wanted in reader.lines, 15.0), reader.lines[-3:]
    finally:
        sampling.set()
        sampler.join(5)
        reader.stop.set()
        reader.join(5)
    got = [line for line in reader.lines if line.startswith(f"<{sender.nick}> seq-")]
    assert got == [f"<{sender.nick}> seq-{i:04d} {pad}" for i in range(lines)]

    server.wait_for_log(r"output for all clients over")  # the log's own thread may lag
    evictions = re.findall(
        r"output for all clients over (\d+) bytes: disconnecting 127\.0\.0\.1:(\d+) "
        r"\((\d+) bytes queued\)",
        server.log(),
    )
    assert evictions, "the total output cap never evicted anyone"
    assert int(evictions[0][0]) == total_max
    assert int(evictions[0][1]) == big_port, f"first evicted {evictions[0]}, big is {big_port}"
    # The clients that keep reading (and the operator) were never the victims.
    spared = {reader_client.sock.getsockname()[1], sender.sock.getsockname()[1],
              op.sock.getsockname()[1]}
    assert not spared & {int(port) for _, port, _ in evictions}, evictions
    counts = stats(op)
    assert counts["limit disconnections"].get("obuf_total") == len(evictions), counts
    assert counts["output_queued"] <= total_max, counts
    growth = max(peak) - baseline
    assert growth < total_max + (24 << 20), f"RSS grew by {growth / 2**20:.1f} MiB"
    big.close()
    for sock in stalled:
        sock.close()


def _churn(server: ServerProcess, sources: list[str], batches: int) -> None:
    """Connect/send/close cycles mixing FIN, RST, half-close and close mid-line."""
    for batch in range(batches):
        socks = []
        for i, source in enumerate(sources):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((source, 0))
            sock.settimeout(5.0)
            sock.connect(server.address)
            kind = (batch + i) % 5
            if kind == 4:  # reset at once, racing the server's accept
                reset(sock)
                continue
            socks.append((kind, sock))
        for kind, sock in socks:
            with contextlib.suppress(OSError):
                if kind == 0:  # a line, then FIN
                    sock.sendall(b"hello\n")
                elif kind == 1:  # a fragment, then RST
                    sock.sendall(b"partial")
                elif kind == 2:  # a line, then half-close; read to the server's EOF
                    sock.sendall(b"bye\n")
                    sock.shutdown(socket.SHUT_WR)
                elif kind == 3:  # close in mid-line (FIN)
                    sock.sendall(b"mid-li")
        for kind, sock in socks:
            if kind == 1:
                reset(sock)
            elif kind == 2:
                read_until_eof(sock, 5.0)
                sock.close()
            else:
                sock.close()


def test_R5b_churn_returns_descriptors_clients_and_address_tables_to_baseline(
    start: Callable[..., ServerProcess],
) -> None:
    """R5(b): "2,000 connect/send/close cycles mixing FIN, RST, half-close and close in
    mid-line: the /proc/<pid>/fd count returns to baseline.  The client registry and
    per-IP tables are empty.  RSS grows by less than 5 MB, and buffers are released." """
    server = start(
        per_ip={"max_connections": 3, "max_unregistered": 3, "connect_rate": 0},
        plugins=OPER,
    )
    op = operator(server)
    sources = [f"127.0.0.{10 + i}" for i in range(50)]
    baseline_fds = fd_count(server.pid)
    _churn(server, sources, 4)  # warm-up: 200 cycles, so caches and arenas settle
    assert wait_until(lambda: fd_count(server.pid) == baseline_fds, 10.0)
    baseline_rss = rss_bytes(server.pid)

    _churn(server, sources, 36)  # 1,800 more: 2,000 in all
    settled = wait_until(lambda: fd_count(server.pid) == baseline_fds, 10.0)
    assert settled, f"{fd_count(server.pid)} fds open, baseline {baseline_fds}"
    counts = stats(op)
    assert counts["clients"] == 1, counts  # only the operator
    assert counts["output_queued"] == 0, counts
    assert counts["connections_total"] >= 1500, counts
    growth = rss_bytes(server.pid) - baseline_rss
    assert growth < 5 << 20, f"RSS grew by {growth / 2**20:.1f} MiB over 1,800 cycles"

    # The per-address tables are empty: every address gets its full three slots back,
    # all three unregistered (a leaked count in either table would refuse one).
    held = []
    for source in sources:
        held.extend(raw_socket(server.address, source=source) for _ in range(3))
    firsts = first_lines(held, timeout=10.0)
    refused = [line for line in firsts.values() if not WELCOME.match(line or "")]
    assert refused == [], f"per-address counts leaked by the churn: {refused[:5]}"
    assert len(firsts) == len(held)
    extra = raw_socket(server.address, source=sources[0])
    assert read_until_eof(extra) == b"! too many connections from your address (max 3)\n"
    extra.close()
    assert stats(op)["clients"] == 1 + len(held)
    for sock in held:
        sock.close()
    assert wait_until(lambda: fd_count(server.pid) == baseline_fds, 10.0)
    assert stats(op)["clients"] == 1
