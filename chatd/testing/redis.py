"""A throwaway ``redis-server`` for tests, started by the tests themselves.

One server per pytest process (so one per xdist worker: the ``redis_server``
fixture is session-scoped), Debian's own ``redis-server`` on a free port of
127.0.0.1, nothing saved to disk (``save ""``, no append-only file), its folder a
fresh temporary one.  A password is required (``requirepass``): a test that
checks "the password never appears in a log" has a real one, and a wrong one is
refused as a production server refuses it.

Every test that asks for ``redis_url`` gets the URL of a logical database of its
own, emptied first (``FLUSHDB``).  Keys are per database; Pub/Sub channels are
not (Redis delivers a ``PUBLISH`` to every subscriber of the server, whatever
database either side selected): tests on one worker run one at a time and their
chatd processes are stopped when they end, so no test hears another's messages —
and a test that shares a server between two networks gives each its own
``cluster.prefix``.

What fault tests do with it: :meth:`RedisServer.stop` and :meth:`start` (the same
port: URLs handed out before work again, and the data is gone, as after a
restart of a Redis that saves nothing), :meth:`restart`, :meth:`freeze` and
:meth:`thaw` (SIGSTOP/SIGCONT: connections stay open and nothing answers),
:meth:`cli` (the real ``redis-cli``: publish a hostile payload, ``CLIENT KILL``),
:meth:`client` (a redis-py client, to look at keys).

:class:`RedisSentinel` is a real Redis Sentinel (``redis-server <conf> --sentinel``)
watching a :class:`RedisServer`; ``RedisServer(replica_of=primary)`` is a replica of
another (the same password), so a test can stop the master and watch Sentinel
promote the replica.

redis-py is imported only by :meth:`client`, so ``chatd.testing`` itself does not
need the ``cluster`` extra; a missing ``redis-server`` skips the test on a
developer's machine and fails it in CI (:func:`~chatd.testing.probes.skip_unless_ci`).
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .probes import SERVERS_KEY, free_port, skip_unless_ci

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
#: Logical databases: one per test, reused round-robin (database 0 is left alone).
DATABASES = 64


class RedisMissing(RuntimeError):
    """``redis-server`` or ``redis-cli`` is not installed."""


def find_binary(name: str) -> str:
    """The path of ``redis-server`` / ``redis-cli`` (Debian: ``apt install redis-server``)."""
    found = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/bin") / name, Path("/usr/sbin") / name) if p.exists()), None)
    if found is None:
        raise RedisMissing(f"{name} is not installed (Debian: apt install redis-server)")
    return found


class RedisServer:
    """A running throwaway ``redis-server``: ``url_for(db)``, ``cli``, ``client``.

    ``close()`` stops it (SIGTERM, then SIGKILL) and removes its folder.
    """

    def __init__(self, replica_of: RedisServer | None = None) -> None:
        self.server_binary = find_binary("redis-server")
        self.cli_binary = find_binary("redis-cli")
        self.host = "127.0.0.1"
        #: The master this server replicates (``--replicaof``), None for a master.
        self.replica_of = replica_of
        self.password = replica_of.password if replica_of else secrets.token_hex(16)
        self.folder = Path(tempfile.mkdtemp(prefix="chatd-redis-"))
        self.log_path = self.folder / "redis.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._databases = itertools.cycle(range(1, DATABASES))

    # -- start and stop -------------------------------------------------------------

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING.  After :meth:`stop`,
        starts it again on the same port (empty: nothing was saved)."""
        if not self.port:
            self.port = free_port(self.host)
        argv = [
            self.server_binary,
            "--bind", self.host, "--port", str(self.port),
            "--requirepass", self.password,
            "--save", "", "--appendonly", "no",
            "--dir", str(self.folder), "--logfile", str(self.log_path),
            "--databases", str(DATABASES), "--daemonize", "no",
            "--protected-mode", "yes",
        ]
        if self.replica_of is not None:
            primary = self.replica_of
            argv += ["--replicaof", primary.host, str(primary.port),
                     "--masterauth", primary.password]
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def _wait_ready(self) -> None:
        """Until it answers PING over TCP; a server that exits is an error at once."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited ({self.process.returncode}):\n{self.log()}")
            if self._answers_ping():
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer in {START_TIMEOUT} s:\n"
                                   f"{self.log()}")
            time.sleep(0.02)

    def _answers_ping(self) -> bool:
        return _answers_ping(self.host, self.port, self.password)

    def stop(self) -> None:
        """Stop the server (SIGTERM: every connection is cut; nothing is saved);
        :meth:`start` brings it back, empty, on the same port."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL the server (a crash: no shutdown, no last word to its replicas)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)

    def restart(self) -> None:
        """:meth:`stop` then :meth:`start`: what an operator's ``systemctl restart`` does."""
        self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP the server: connections stay open and nothing answers (a hung
        server, as a stalled VM or a swapping host would leave it)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT what :meth:`freeze` stopped."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def ensure_running(self) -> None:
        """Started if a test left it stopped, thawed if it left it frozen: what
        ``redis_url`` does before each test."""
        if self.process is None or self.process.poll() is not None:
            self.start()
        else:
            self.thaw()

    def close(self) -> None:
        """Stop the server (a frozen one too) and remove its folder."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGCONT)
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- what tests use ----------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def url(self) -> str:
        """The URL of database 0, with the password."""
        return self.url_for(0)

    def url_for(self, database: int, password: str | None = None) -> str:
        """``redis://:password@127.0.0.1:port/database``."""
        secret = self.password if password is None else password
        return f"redis://:{secret}@{self.host}:{self.port}/{database}"

    def fresh_database(self) -> int:
        """The next logical database, emptied (``FLUSHDB``): its number."""
        database = next(self._databases)
        self.cli("-n", str(database), "FLUSHDB")
        return database

    def cli(self, *args: str, timeout: float = 10.0) -> str:
        """Run the real ``redis-cli`` against this server (authenticated) with ``args``;
        its standard output.  A command Redis refuses is an output line starting
        with ``(error)`` or ``ERR``, not an exception: a test reads it."""
        argv = [self.cli_binary, "-h", self.host, "-p", str(self.port),
                "--no-auth-warning", "-a", self.password, *args]
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli {' '.join(args)} failed ({done.returncode}): "
                               f"{done.stderr.decode(errors='replace')}")
        return done.stdout.decode(errors="replace")

    def client(self, database: int = 0) -> Any:
        """A redis-py client of ``database`` (needs the ``cluster`` extra)."""
        import redis  # optional: the cluster extra

        return redis.Redis(host=self.host, port=self.port, password=self.password,
                           db=database, socket_timeout=5, decode_responses=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"


class RedisSentinel:
    """A real Redis Sentinel (``redis-server sentinel.conf --sentinel``) watching
    ``master`` under the name ``name``, with a password of its own; its config file
    in a fresh temporary folder (Sentinel rewrites it).  Quorum 1, and a short
    ``down_after_ms`` and ``failover_timeout_ms``: a stopped master is replaced by
    a replica within a second or two.  ``close()`` stops it and removes its folder."""

    def __init__(self, master: RedisServer, name: str = "mymaster", *,
                 down_after_ms: int = 500, failover_timeout_ms: int = 2000) -> None:
        self.master, self.name = master, name
        self.down_after_ms, self.failover_timeout_ms = down_after_ms, failover_timeout_ms
        self.server_binary = find_binary("redis-server")
        self.cli_binary = find_binary("redis-cli")
        self.host = "127.0.0.1"
        self.password = secrets.token_hex(16)
        self.folder = Path(tempfile.mkdtemp(prefix="chatd-sentinel-"))
        self.log_path = self.folder / "sentinel.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisSentinel:
        """Write the config, start the sentinel, wait until it answers PING."""
        self.port = self.port or free_port(self.host)
        conf = self.folder / "sentinel.conf"
        conf.write_text("\n".join([
            f"port {self.port}", f"bind {self.host}", "daemonize no",
            f"dir {self.folder}", f"logfile {self.log_path}", f"requirepass {self.password}",
            f"sentinel monitor {self.name} {self.master.host} {self.master.port} 1",
            f"sentinel auth-pass {self.name} {self.master.password}",
            f"sentinel down-after-milliseconds {self.name} {self.down_after_ms}",
            f"sentinel failover-timeout {self.name} {self.failover_timeout_ms}",
            f"sentinel parallel-syncs {self.name} 1", ""]))
        self.process = subprocess.Popen(
            [self.server_binary, str(conf), "--sentinel"], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers_ping(self.host, self.port, self.password):
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = self.log()
                self.close()
                raise RuntimeError(f"redis sentinel did not start:\n{log}")
            time.sleep(0.02)
        return self

    def url_for(self, database: int, password: str | None = None) -> str:
        """``redis+sentinel://:<master's password>@127.0.0.1:<port>/<name>/<database>
        ?sentinel_password=<this sentinel's>``: what ``cluster.redis_url`` takes."""
        secret = self.master.password if password is None else password
        return (f"redis+sentinel://:{secret}@{self.host}:{self.port}/{self.name}/{database}"
                f"?sentinel_password={self.password}")

    def cli(self, *args: str, timeout: float = 10.0) -> str:
        """The real ``redis-cli`` against this sentinel (authenticated): its output."""
        argv = [self.cli_binary, "-h", self.host, "-p", str(self.port),
                "--no-auth-warning", "-a", self.password, *args]
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli {' '.join(args)} failed ({done.returncode})")
        return done.stdout.decode(errors="replace")

    def master_port(self) -> int:
        """The port of the master this sentinel names now."""
        lines = self.cli("SENTINEL", "get-master-addr-by-name", self.name).split()
        return int(lines[1]) if len(lines) == 2 else 0

    def wait_replicas(self, count: int, timeout: float = 15.0) -> None:
        """Until the sentinel knows ``count`` replicas of the master that are up (what a
        failover needs: a sentinel learns them from the master's INFO)."""
        deadline = time.monotonic() + timeout
        while True:
            answer = self.cli("SENTINEL", "replicas", self.name)
            lines = answer.splitlines()
            flags = [lines[i + 1] for i, line in enumerate(lines[:-1]) if line == "flags"]
            known = [flag for flag in flags if flag == "slave"]  # not down, not disconnected
            if len(known) >= count:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sentinel knows {len(known)} replicas:\n{answer}")
            time.sleep(0.05)

    def wait_master(self, port: int, timeout: float = 15.0) -> None:
        """Until the sentinel names the master on ``port`` (after a failover)."""
        deadline = time.monotonic() + timeout
        while self.master_port() != port:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no failover to port {port}:\n{self.log()}")
            time.sleep(0.05)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)
        shutil.rmtree(self.folder, ignore_errors=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"


def _answers_ping(host: str, port: int, password: str) -> bool:
    """Whether the server (or sentinel) on ``port`` answers AUTH then PING."""
    request = (f"*2\r\n$4\r\nAUTH\r\n${len(password)}\r\n{password}\r\n"
               "*1\r\n$4\r\nPING\r\n").encode()
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(request)
            answer = b""
            while b"PONG" not in answer and b"-" not in answer[:1]:
                chunk = sock.recv(256)
                if not chunk:
                    return False
                answer += chunk
            return b"+PONG" in answer
    except OSError:
        return False


def _require() -> None:
    """The binaries, or skip (fail in CI)."""
    for name in ("redis-server", "redis-cli"):
        try:
            find_binary(name)
        except RedisMissing as missing:
            skip_unless_ci(str(missing))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """This worker's throwaway ``redis-server`` (started once per session, removed at
    its end).  A test that stops or freezes it must leave it running."""
    _require()
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_url(redis_server: RedisServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL (with the password) of a logical database of this test's own, empty.
    The server is running when the test starts (a test before it may have stopped it);
    the chatd processes the test started are stopped before the test's end."""
    redis_server.ensure_running()
    url = redis_server.url_for(redis_server.fresh_database())
    yield url
    for server in request.node.stash.get(SERVERS_KEY, []):
        with contextlib.suppress(Exception):
            server.close()
