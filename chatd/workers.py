"""``workers: N``: N chatd processes on one host acting as one server.

The parent started by ``chatd --config F`` does no chat itself.  It reserves every
listener's port (a socket bound with ``SO_REUSEPORT`` that never listens: ``port: 0``
resolves once, and the port stays this server's while workers come and go), then
starts N workers, each ``python -m chatd --config F`` with the hidden ``--worker-*``
flags: a fresh interpreter that reads the same file, listens on the same ports with
``SO_REUSEPORT`` (the kernel spreads new connections over the workers) and joins the
others through the ``cluster:`` section as node ``<node_id>-w<k>``.

Why fork+exec and not ``multiprocessing`` or a bare ``fork()``: a worker is exactly a
single chatd server (the same start, checks, port file and signals, tested as such),
nothing of the parent's state (threads, locks, the log writer) leaks into it, and a
worker that crashes takes nothing else with it.  ``multiprocessing``'s spawn would do
the same with pickling and a second start-up path to keep working.

What the parent does (:class:`Supervisor`):

* restarts a worker that died, with a backoff per slot (1 s doubling to 30 s, back to
  1 s after a worker lived 60 s); before the restart it deletes the dead worker's
  heartbeat key in Redis so the other nodes sweep it at once (its users' quits are
  shown everywhere) instead of after ``cluster.node_timeout_seconds``, and the new
  worker, with the same node id, is not refused as a duplicate;
* passes SIGHUP on (every worker reloads) and SIGTERM/SIGINT (every worker drains as
  a single server does; one still running ``limits.shutdown_timeout_seconds`` + 5 s
  later is killed), then exits 0;
* exits 2 if a worker fails before the first start completed (a config or plugin
  error, a port in use: no restart loop), after stopping the others;
* writes ``--port-file`` once every worker listens;
* serves the one ``/metrics`` of the server (``metrics.enabled``): the sum of what the
  workers write to their stats files once a second (:func:`merge_stats`).

Limits are the server's: each worker enforces its share (:func:`share`) of
``limits.max_clients`` and of the ``per_ip`` counts.  The kernel spreads connections
over the workers by a hash of the client's address and port, so the shares fill
evenly on average; a skewed spread can refuse a client a little before the whole
server is full (documented in docs/cluster.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import Config

log = logging.getLogger("chatd.workers")

#: Restart backoff: the first delay, the cap, and how long a worker must live for the
#: delay to start over.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
BACKOFF_RESET_AFTER = 60.0
#: What a draining worker gets on top of ``limits.shutdown_timeout_seconds``.
DRAIN_MARGIN = 5.0
EXIT_STARTUP_FAILURE = 2


# -- what a worker is -------------------------------------------------------------------


def share(limit: int, workers: int) -> int:
    """One worker's part of a server-wide count: ``ceil(limit / workers)``; 0 (no limit)
    stays 0.  Rounded up so the workers together never refuse below ``limit``."""
    return limit if limit == 0 else math.ceil(limit / workers)


def worker_node_id(base: str, slot: int) -> str:
    """``<base>-w<slot>``: the same for a slot across its restarts, cut to fit the 64
    characters of a node id."""
    suffix = f"-w{slot}"
    return base[: 64 - len(suffix)] + suffix


@dataclasses.dataclass(frozen=True)
class WorkerRole:
    """What the parent tells a worker on its command line (the hidden flags)."""

    slot: int
    ports: tuple[int, ...]
    node: str
    stats_file: Path | None

    def apply(self, config: Config) -> Config:
        """``config`` as this worker runs it: the parent's ports, its own node id, its
        share of the server's limits, no metrics listener of its own.  Also applied to
        each reload (a reload re-reads the file)."""
        count = config.workers
        listen = tuple(dataclasses.replace(item, port=port)
                       for item, port in zip(config.listen, self.ports, strict=False))
        limits = dataclasses.replace(config.limits,
                                     max_clients=share(config.limits.max_clients, count))
        per_ip = dataclasses.replace(
            config.per_ip,
            max_connections=share(config.per_ip.max_connections, count),
            connect_rate=share(config.per_ip.connect_rate, count),
            max_unregistered=share(config.per_ip.max_unregistered, count),
        )
        return dataclasses.replace(
            config, listen=listen + config.listen[len(listen):], limits=limits, per_ip=per_ip,
            metrics=dataclasses.replace(config.metrics, enabled=False),
            cluster=dataclasses.replace(config.cluster, node_id=self.node),
            server=dataclasses.replace(config.server, node_id=self.node),
        )

    def arguments(self) -> list[str]:
        return ["--worker-slot", str(self.slot),
                "--worker-ports", ",".join(str(p) for p in self.ports),
                "--worker-node", self.node,
                *(["--worker-stats", str(self.stats_file)] if self.stats_file else [])]


    def forget_files(self) -> None:
        """The parent died without cleaning up (SIGKILL): remove this worker's files, and
        the parent's folder once empty (the last worker to go removes it)."""
        if self.stats_file is None:
            return
        for path in (self.stats_file, self.stats_file.with_suffix(".port"),
                     self.stats_file.with_suffix(".tmp")):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.stats_file.parent.rmdir()


def role_from_args(args: Any) -> WorkerRole | None:
    """The worker role named by the hidden flags, or None in a normal process."""
    if args.worker_slot is None:
        return None
    ports = tuple(int(p) for p in args.worker_ports.split(",") if p)
    stats = Path(args.worker_stats) if args.worker_stats else None
    return WorkerRole(args.worker_slot, ports, args.worker_node, stats)


def write_stats(path: Path, snapshot: dict[str, Any]) -> None:
    """A worker's counters for the parent's /metrics: a small file replaced whole (the
    parent never reads half of one).  Once a second, from the loop: a few KB into the
    page cache."""
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(snapshot, default=str))
    os.replace(temp, path)


#: Gauges that are not added up over the workers: a room exists on every worker with
#: members in it, the loop lag is the worst worker's, the store is fine if all are.
_MAX_KEYS = {"rooms", "loop_lag_seconds", "loop_lag_max_seconds"}
_MIN_KEYS = {"storage_ok"}


def merge_stats(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """The server's counters from its workers': numbers added up (per label for the
    labelled ones), except the few in ``_MAX_KEYS`` / ``_MIN_KEYS``."""
    merged: dict[str, Any] = {}
    for snapshot in snapshots:
        for key, value in snapshot.items():
            if isinstance(value, bool) or not isinstance(value, int | float | dict):
                continue
            if isinstance(value, dict):
                into = merged.setdefault(key, {})
                for label, count in value.items():
                    if isinstance(count, int | float):
                        into[label] = into.get(label, 0) + count
            elif key in _MAX_KEYS:
                merged[key] = max(merged.get(key, value), value)
            elif key in _MIN_KEYS:
                merged[key] = min(merged.get(key, value), value)
            else:
                merged[key] = merged.get(key, 0) + value
    return merged


# -- the parent -------------------------------------------------------------------------


#: Delete the heartbeat key only if the dead worker still holds it: a worker that stopped
#: because another live process has its node id must not make that one look dead.
_DELETE_IF_HELD = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def node_token(pid: int) -> str:
    """What the worker of ``pid`` wrote in its heartbeat key: the same form as
    :func:`chatd.builtin.cluster.presence.process_token` (host name and pid)."""
    return f"{socket.gethostname()}:{pid}"


def backoff(delay: float, lived: float) -> tuple[float, float]:
    """A dead worker's wait before its restart, and the next one's: ``delay`` doubling up
    to BACKOFF_MAX, back to BACKOFF_FIRST for a worker that lived BACKOFF_RESET_AFTER
    (a crash loop slows down; a rare crash is mended fast)."""
    wait = BACKOFF_FIRST if lived >= BACKOFF_RESET_AFTER else delay
    return wait, min(wait * 2, BACKOFF_MAX)


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with SO_REUSEPORT that never listens: the port is
    resolved (``0``) and held for the workers; the kernel gives connections only to the
    workers' listening sockets."""
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(info[4])
    except OSError:
        sock.close()
        raise
    return sock


@dataclasses.dataclass
class Slot:
    """One worker's place: its number, its process now, its backoff."""

    number: int
    role: WorkerRole
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    ready: bool = False
    delay: float = BACKOFF_FIRST
    restart_at: float | None = None
    #: Until when a restart waits for the other nodes to sweep this slot's dead node.
    sweep_until: float = 0.0

    @property
    def port_file(self) -> Path:
        assert self.role.stats_file is not None
        return self.role.stats_file.with_suffix(".port")


class Supervisor:
    """The parent of ``workers: N`` (see the module docstring)."""

    def __init__(self, config: Config, command: list[str], port_file: str | None) -> None:
        self.config = config
        self.count = config.workers
        self._command = command
        self._port_file = port_file
        self._dir = Path(tempfile.mkdtemp(prefix="chatd-workers-"))
        self._reserved: list[socket.socket] = []
        self._slots: list[Slot] = []
        self._stopping: float | None = None  # the drain deadline once stopping
        self._status = 0
        self._all_ready = False
        self._signals: list[int] = []
        self._metrics: Any = None
        self._redis: Any = None
        self._wakeup: int | None = None

    # -- start --------------------------------------------------------------------------

    def run(self) -> int:
        """Start the workers and supervise them until told to stop; the exit status."""
        try:
            ports = self._reserve()
        except OSError as exc:
            where = ", ".join(f"{item.host}:{item.port}" for item in self.config.listen)
            print(f"chatd: cannot listen on {where}: {exc.strerror or exc}", file=sys.stderr)
            self._cleanup()
            return EXIT_STARTUP_FAILURE
        base = self.config.cluster.node_id or self.config.server.node()
        self._slots = [
            Slot(k, WorkerRole(k, ports, worker_node_id(base, k), self._dir / f"w{k}.json"))
            for k in range(1, self.count + 1)
        ]
        try:
            self._start_metrics()
        except (OSError, RuntimeError) as exc:  # as a single server: before anyone connects
            print(f"chatd: metrics: {exc}", file=sys.stderr)
            self._cleanup()
            return EXIT_STARTUP_FAILURE
        wakeup = self._install_signals()
        log.info("workers: starting %d (nodes %s..%s), ports %s", self.count,
                 self._slots[0].role.node, self._slots[-1].role.node,
                 ", ".join(map(str, ports)))
        try:
            for slot in self._slots:
                self._spawn(slot)
            self._loop(wakeup)
        finally:
            self._cleanup()
        return self._status

    def _reserve(self) -> tuple[int, ...]:
        for item in self.config.listen:
            self._reserved.append(reserve_port(item.host, item.port))
        return tuple(sock.getsockname()[1] for sock in self._reserved)

    def _install_signals(self) -> int:
        """Signals are only noted (and wake the loop through a pipe); the loop acts."""
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(write_end)
        self._wakeup = read_end

        def note(signum: int, _frame: Any) -> None:
            self._signals.append(signum)

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, note)
        return read_end

    def _spawn(self, slot: Slot) -> None:
        slot.port_file.unlink(missing_ok=True)
        slot.proc = subprocess.Popen(
            [*self._command, "--port-file", str(slot.port_file), *slot.role.arguments()],
            stdin=subprocess.DEVNULL)
        slot.started = time.monotonic()
        slot.ready = False
        slot.restart_at = None
        log.info("workers: worker %d started (pid %d, node %s)", slot.number, slot.proc.pid,
                 slot.role.node)

    # -- the loop -----------------------------------------------------------------------

    def _loop(self, wakeup: int) -> None:
        while True:
            self._handle_signals()
            self._reap()
            if self._stopping is not None and all(s.proc is None for s in self._slots):
                return
            self._check_ready()
            self._restart_due()
            self._drain_overdue()
            with contextlib.suppress(InterruptedError):
                readable, _, _ = select.select([wakeup], [], [], self._timeout())
                if readable:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wakeup, 4096)

    def _timeout(self) -> float:
        if not self._all_ready or self._stopping is not None:
            return 0.05
        return 0.5

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            if signum == signal.SIGHUP:
                log.info("received SIGHUP: every worker reloads")
                self._forward(signal.SIGHUP)
            elif signum in (signal.SIGTERM, signal.SIGINT) and self._stopping is None:
                log.info("received %s: every worker drains", signal.Signals(signum).name)
                self._stop()
            elif signum == signal.SIGINT:  # a second interrupt: now, as a single server
                log.warning("second interrupt: killing the workers")
                self._status = 130
                self._stopping = time.monotonic()

    def _stop(self) -> None:
        drain = self.config.limits.shutdown_timeout_seconds + DRAIN_MARGIN
        self._stopping = time.monotonic() + drain
        self._forward(signal.SIGTERM)

    def _forward(self, signum: int) -> None:
        for slot in self._slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.send_signal(signum)

    def _reap(self) -> None:
        for slot in self._slots:
            if slot.proc is None or slot.proc.poll() is None:
                continue
            status, pid = slot.proc.returncode, slot.proc.pid
            slot.proc = None
            if self._stopping is not None:
                log.info("workers: worker %d (pid %d) stopped: %s", slot.number, pid, status)
                continue
            if not (self._all_ready or slot.ready or _port_file_done(slot.port_file)):
                log.error("workers: worker %d (pid %d) failed to start (exit status %s): "
                          "stopping", slot.number, pid, status)
                self._status = EXIT_STARTUP_FAILURE
                self._stop()
                continue
            self._crashed(slot, pid, status)

    def _crashed(self, slot: Slot, pid: int, status: int) -> None:
        now = time.monotonic()
        wait, slot.delay = backoff(slot.delay, now - slot.started)
        slot.restart_at = now + wait
        log.warning("workers: worker %d (pid %d, node %s) exited with status %s: restarting "
                    "in %.0f s", slot.number, pid, slot.role.node, status, wait)
        cluster = self.config.cluster
        slot.sweep_until = now + cluster.node_timeout_seconds + cluster.heartbeat_seconds
        key, token = self._names().node_key(slot.role.node), node_token(pid)
        self._redis_call(lambda r: r.eval(_DELETE_IF_HELD, 1, key, token))

    def _restart_due(self) -> None:
        if self._stopping is not None:
            return
        now = time.monotonic()
        for slot in self._slots:
            if slot.proc is not None or slot.restart_at is None or now < slot.restart_at:
                continue
            if now < slot.sweep_until and self._still_registered(slot.role.node):
                continue  # the others have not announced its users' quits yet
            self._spawn(slot)

    def _check_ready(self) -> None:
        for slot in self._slots:
            if slot.proc is not None and not slot.ready and _port_file_done(slot.port_file):
                slot.ready = True
        if not self._all_ready and all(slot.ready for slot in self._slots):
            self._all_ready = True
            if self._port_file:
                ports = "".join(f"{s.getsockname()[1]}\n" for s in self._reserved)
                Path(self._port_file).write_text(ports)
            log.info("workers: all %d listening", self.count)

    def _drain_overdue(self) -> None:
        if self._stopping is None or time.monotonic() < self._stopping:
            return
        for slot in self._slots:
            if slot.proc is not None and slot.proc.poll() is None:
                log.warning("workers: worker %d did not drain in time: killed", slot.number)
                slot.proc.kill()

    # -- Redis (the dead worker's node) -------------------------------------------------

    def _names(self) -> Any:
        from .builtin.cluster.wire import Names

        return Names(self.config.cluster.prefix)

    def _redis_call(self, job: Callable[[Any], Any]) -> Any:
        """``job(redis)`` with short timeouts; None if Redis cannot be asked (then the
        other nodes find the dead node by its heartbeat's expiry, as for any node)."""
        cluster = self.config.cluster
        try:
            if self._redis is None:
                from .builtin.cluster.link import redis_client

                self._redis = redis_client(cluster.redis_url or "", cluster.password(),
                                           cluster.connect_timeout_seconds)
            return job(self._redis)
        except Exception as exc:  # redis errors, a missing module: never the parent's end
            log.warning("workers: cannot reach Redis about a dead worker (%s)",
                        exc.__class__.__name__)
            return None

    def _still_registered(self, node: str) -> bool:
        answer = self._redis_call(lambda r: r.sismember(self._names().nodes, node))
        return bool(answer)

    # -- metrics ------------------------------------------------------------------------

    def _start_metrics(self) -> None:
        metrics = self.config.metrics
        if not metrics.enabled or self._metrics is not None:
            return
        from .metrics import start_exporter

        self._metrics = start_exporter(metrics.host, metrics.port, self.stats)

    def stats(self) -> dict[str, Any]:
        """The server's counters: the sum of the workers' last stats files."""
        snapshots = []
        for slot in self._slots:
            stats_file = slot.role.stats_file
            with contextlib.suppress(OSError, ValueError):
                if stats_file is not None:
                    snapshots.append(json.loads(stats_file.read_text()))
        return merge_stats(snapshots)

    def _cleanup(self) -> None:
        for slot in self._slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.kill()
                slot.proc.wait(5)
        if self._metrics is not None:
            self._metrics.shutdown()
            self._metrics.server_close()
        for sock in self._reserved:
            sock.close()
        for path in self._dir.iterdir():
            path.unlink(missing_ok=True)
        self._dir.rmdir()
        if self._wakeup is not None:
            signal.set_wakeup_fd(-1)


def _port_file_done(path: Path) -> bool:
    with contextlib.suppress(OSError):
        return path.read_text().endswith("\n")
    return False


def worker_command(args: Any) -> list[str]:
    """How the parent starts a worker: this interpreter, the same config and overrides."""
    command = [sys.executable, "-m", "chatd", "--config", str(args.config)]
    if args.host is not None:
        command += ["--host", args.host]
    if args.log_level is not None:
        command += ["--log-level", args.log_level]
    if args.trace_hooks:
        command.append("--trace-hooks")
    return command
