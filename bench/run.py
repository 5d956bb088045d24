"""The chatd benchmark: one command runs every scenario against chatd and the baselines.

    python bench/run.py            # the full run (~10 minutes), results in bench/results/latest
    python bench/run.py --smoke    # seconds: the CI check that the benchmark still works
    python bench/run.py --servers chatd,asyncio-protocol-uvloop --scenarios fanout-1000
    python bench/run.py --chatd-ref HEAD~1    # chatd as committed at a ref, not the working tree
    python bench/run.py --compare HEAD~1 --scenarios fanout-1000 --repeat 3   # a regression check

Options beyond the scenario and server selection
------------------------------------------------
* ``--chatd-ref REF`` benchmarks chatd as committed at git ``REF`` (an exported
  snapshot of ``chatd/`` and ``config.yaml``) instead of the working tree.
* ``--compare REF`` benchmarks the working tree's chatd (or ``--chatd-ref``'s) *and*
  chatd as committed at ``REF``, as a second server named ``chatd@REF`` with its own
  snapshot, cwd, import path and benchmark config (generated from that commit's
  ``config.yaml``: the format may differ between commits).  It runs right after
  ``chatd`` in every scenario.  Without ``--servers`` only these two run (a
  regression check needs no baselines); with it, they are added to the selection.
  At the end a table gives, per traffic scenario, both medians, the ratio
  chatd / chatd@REF of deliveries/s and both statuses.
* ``--repeat N`` (default 1) runs every (scenario, server) pair N times, interleaved
  (chatd, chatd@REF, chatd, chatd@REF, ... within a scenario), so a slow drift of
  the machine hits both alike.  Pairs are summarised by their median deliveries/s
  (min / median / max in the report; FAILED runs count in the status, not the
  numbers); the per-run rows stay in the tables.

Theory of operation
-------------------
* The load generator is C (``bench/loadgen.c``), compiled here with the machine's
  ``cc``: a Python client would measure itself, not the server.  It checks every
  delivery (none lost, duplicated, reordered or misrouted) and reports throughput,
  latency percentiles and its own CPU use as one JSON object.
* Every (scenario, server) pair gets a fresh server process, so no run inherits
  another's memory, guest numbers or half-closed sockets.  The server is pinned to
  one core and the load generator to another (``taskset``), where there are two.
* chatd runs as ``python -m chatd`` on its shipped ``config.yaml`` with only limits
  raised (see :func:`write_chatd_config`); the baselines are in ``bench/baselines``.
* A run is **FAILED** when something is wrong with the server (a lost, duplicated,
  reordered or misrouted line, a dropped connection, a crash, a timeout) and
  **INVALID** when the numbers cannot be trusted: the load generator was (nearly)
  saturated, so it measured itself.  Other processes using the CPU during a run
  are reported as noise.  Exit status: 0 all good, 1 some run FAILED, 3 some run
  INVALID (never in ``--smoke``, which checks correctness and never speed).
* Results: ``results.json`` (everything, raw load generator output included),
  ``results.md`` (the tables, pasted into docs/performance.md by
  ``--update-docs``) and ``deliveries.png`` (deliveries/s per scenario and server);
  with ``--compare``, ``chatd-bench@COMMIT.yaml`` is the compared commit's config.

Every process started here is stopped in a ``finally`` and every wait is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import io
import json
import os
import platform
import resource
import select
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import report  # beside this file (bench/ is sys.path[0]); imports matplotlib only to chart
import yaml

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
BUILD = BENCH / "build"
DEFAULT_OUT = BENCH / "results" / "latest"
LOADGEN_SOURCE = BENCH / "loadgen.c"
EPOLL_SERVER = BENCH / "baselines" / "epoll_server.c"

#: chatd limits raised for the benchmark: (section, key, new value or None for "the most
#: clients any scenario opens", why).  These are the anti-flood and anti-abuse limits that
#: a load generator trips by design: thousands of clients from one address, connecting
#: at once, sending at machine speed, some never sending a line.  A key is raised only
#: where the shipped config.yaml has it; nothing else differs from the shipped config.
RAISED_LIMITS: list[tuple[str, str, int | None, str]] = [
    ("limits", "max_clients", None,
     "the idle scenario holds as many connections as the fd limit allows"),
    ("limits", "registration_timeout_seconds", 0,
     "idle clients and pure receivers never send a line"),
    ("per_ip", "max_connections", 0, "every client connects from 127.0.0.1"),
    ("per_ip", "connect_rate", 0, "thousands of clients connect within seconds"),
    ("per_ip", "max_unregistered", 0, "idle clients and pure receivers never send a line"),
    ("flood", "lines_per_second", 0, "senders send as fast as the server takes lines"),
    ("limits", "announce_after_seconds", 0,
     "receivers never speak: their joins are announced during setup, not in the "
     "measured window"),
]

#: Descriptors kept back from the fd limit in idle-max for the listener, epoll,
#: logs and the interpreter's own files (the loadgen and the server each need N + a few).
FD_RESERVE = 200

#: Validity thresholds (fractions of one core over the measured window).
LOADGEN_CPU_LIMIT = 0.90  # the issue: "a load generator near 100% of its core is invalid"
LOADGEN_CORE_IDLE_MIN = 0.03  # ... or its core had less idle time than this
NOISE_LIMIT = 0.10  # other processes' CPU use, in cores, before a run is marked noisy
SATURATED = 0.80  # a closed-loop run whose server used less than this was not server-bound


# -- what is measured ------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One load shape; the load generator's flags are derived from it."""

    name: str
    what: str
    mode: str  # "closed" (fixed messages in flight), "rate" (fixed msgs/s) or "idle"
    clients: int
    senders: int = 0
    groups: int = 1
    window: int = 1  # closed mode: messages in flight per sender
    rate: float = 0.0  # rate mode: messages per second per sender
    #: Closed mode: longest wait between reads (µs), so receivers read in large batches;
    #: the load generator adapts it to the server (see batch_wait() in loadgen.c).
    batch_us: int = 0
    setup_max_s: float = 150.0  # connect + welcome + quiet, bounded
    #: Every client speaks TLS (the load generator's -L); only servers that can serve
    #: TLS run it (:attr:`ServerSpec.tls`).
    tls: bool = False
    #: Every client speaks IRC (the load generator's -I: NICK/USER, JOIN, PRIVMSG);
    #: only servers that can serve IRC run it (:attr:`ServerSpec.irc`).
    irc: bool = False
    #: Every client speaks jsonl over WebSocket (the load generator's -X: upgrade, masked
    #: text frames); only servers that can serve it run it (:attr:`ServerSpec.ws`).
    ws: bool = False
    #: Every client speaks jsonl over TCP (-J); set per run for chatd-jsonl (a WebSocket
    #: scenario's load without the framing).
    jsonl: bool = False
    #: Load generator flags a server needs for this scenario (ngIRCd's -O), set per run.
    loadgen_extra: tuple[str, ...] = ()

    @property
    def offered_msgs_per_s(self) -> float:
        return self.rate * self.senders if self.mode == "rate" else 0.0

    def loadgen_args(self, timing: Timing) -> list[str]:
        args = ["-m", self.mode, "-c", str(self.clients), "-q", str(timing.quiet_ms)]
        args += ["-S", f"{self.setup_max_s:g}"]
        if self.tls:
            args.append("-L")
        if self.irc:
            args.append("-I")
        if self.ws:
            args.append("-X")
        elif self.jsonl:
            args.append("-J")
        args += self.loadgen_extra
        if self.mode == "idle":
            return [*args, "-H", "600"]
        args += ["-s", str(self.senders), "-g", str(self.groups), "-w", str(self.window)]
        args += ["-d", f"{timing.duration:g}", "-W", f"{timing.warmup:g}"]
        args += ["-D", f"{timing.drain_max:g}", "-i", str(self.batch_us)]
        if self.mode == "rate":
            args += ["-r", f"{self.rate:g}"]
        return args


@dataclass(frozen=True)
class Timing:
    duration: float  # measured seconds
    warmup: float
    quiet_ms: int  # the server counts as settled after this long without a byte
    drain_max: float  # after the window: wait at most this long for lines in flight


FULL_TIMING = Timing(duration=5.0, warmup=1.0, quiet_ms=300, drain_max=15.0)
SMOKE_TIMING = Timing(duration=1.0, warmup=0.2, quiet_ms=100, drain_max=10.0)

_CLOSED_BATCH_US = 20_000

FULL_SCENARIOS = [
    Scenario("fanout-100", "100 clients in one room, 10 senders, 16 messages in flight each",
             "closed", 100, senders=10, window=16, batch_us=_CLOSED_BATCH_US),
    Scenario("fanout-1000", "1000 clients in one room, 5 senders, 16 messages in flight each",
             "closed", 1000, senders=5, window=16, batch_us=_CLOSED_BATCH_US),
    # 8 in flight, not 16: with 16, chatd's 12 M deliveries/s keep the load generator
    # above 90% of its core on two cores (INVALID); with 8 it measures ~6 M validly.
    Scenario("fanout-5000", "5000 clients in one room, 5 senders, 8 messages in flight each",
             "closed", 5000, senders=5, window=8, batch_us=_CLOSED_BATCH_US),
    Scenario("turns-1000x50", "1000 clients in one room, 50 senders taking turns: one "
             "message in flight each", "closed", 1000, senders=50, window=1,
             batch_us=_CLOSED_BATCH_US),
    Scenario("latency-1000", "1000 clients in one room, 10 senders at 5 msg/s each "
             "(50 msg/s in, ~50k deliveries/s): latency at a moderate load",
             "rate", 1000, senders=10, rate=5.0),
    Scenario("rooms-5000x500", "5000 clients in 500 rooms of 10, every client sending "
             "2 msg/s (10k msg/s in, 90k deliveries/s)", "rate", 5000, senders=5000,
             groups=500, rate=2.0),
    Scenario("fanout-tls-100", "fanout-100 over TLS: 100 clients in one room, 10 senders, "
             "16 messages in flight each, every connection TLS 1.3", "closed", 100,
             senders=10, window=16, batch_us=_CLOSED_BATCH_US, tls=True),
    Scenario("fanout-tls-1000", "fanout-1000 over TLS: 1000 clients, 5 senders, 16 in "
             "flight each, every connection TLS 1.3", "closed", 1000, senders=5, window=16,
             batch_us=_CLOSED_BATCH_US, tls=True),
    # The IRC fanout: chatd's irc listener, chatd-line (the same chatd, the same
    # load over the line protocol: what the IRC renderer costs) and ngIRCd (C).
    Scenario("irc-fanout-1000", "fanout-1000 over IRC: 1000 IRC clients in one channel, "
             "5 senders, 16 PRIVMSGs in flight each (chatd-line: the same load over the "
             "line protocol)", "closed", 1000, senders=5, window=16,
             batch_us=_CLOSED_BATCH_US, irc=True),
    # Issue 21's WebSocket fanout: chatd's websocket listener, chatd-line and chatd-jsonl
    # (the same chatd, the same load over the line protocol and over jsonl on TCP: what
    # JSON and what the framing cost) and the websockets library's asyncio server.
    Scenario("ws-fanout-1000", "fanout-1000 over WebSocket: 1000 browsers' connections "
             "(jsonl in text frames) in one room, 5 senders, 16 messages in flight each "
             "(chatd-line, chatd-jsonl: the same load over the line protocol, over jsonl)",
             "closed", 1000, senders=5, window=16, batch_us=_CLOSED_BATCH_US, ws=True),
    Scenario("idle-10000", "10,000 idle connections: server memory per connection",
             "idle", 10_000, setup_max_s=60.0),
    # clients = 0: as many as the fd limit allows (resolved at start, see main()).
    Scenario("idle-max", "as many idle connections as the fd limit allows", "idle", 0,
             setup_max_s=60.0),
]

SMOKE_SCENARIOS = [
    Scenario("smoke-fanout", "50 clients in one room, 2 senders, 4 in flight each",
             "closed", 50, senders=2, window=4, batch_us=2000, setup_max_s=20.0),
    Scenario("smoke-rooms", "50 clients in 5 rooms of 10, every client sending 5 msg/s",
             "rate", 50, senders=50, groups=5, rate=5.0, setup_max_s=20.0),
    Scenario("smoke-idle", "50 idle connections", "idle", 50, setup_max_s=20.0),
    Scenario("smoke-tls", "50 clients in one room over TLS, 2 senders, 4 in flight each",
             "closed", 50, senders=2, window=4, batch_us=2000, setup_max_s=20.0, tls=True),
    Scenario("smoke-ws", "50 clients in one room over WebSocket, 2 senders, 4 in flight each",
             "closed", 50, senders=2, window=4, batch_us=2000, setup_max_s=20.0, ws=True),
]

LIMIT = "c-coalesce"
#: What chatd must reach (issue 10), checked by report.targets() on every full run:
#: (scenario, metric, compared with: a server's median or a number, factor, better).
#: A target is met when chatd's median metric is at least (better "higher") or at
#: most (better "lower") factor times the other side's.
TARGETS: list[dict[str, Any]] = [
    *({"scenario": name, "metric": "deliveries_per_s", "against": LIMIT, "factor": 0.9,
       "better": "higher"}
      for name in ("fanout-100", "fanout-1000", "fanout-5000", "turns-1000x50")),
    {"scenario": "fanout-1000", "metric": "deliveries_per_s", "against": "uvloop-per-chunk",
     "factor": 1.5, "better": "higher"},
    {"scenario": "latency-1000", "metric": "latency_us.p99", "against": LIMIT, "factor": 1.0,
     "better": "lower"},
    {"scenario": "rooms-5000x500", "metric": "server_cpu", "against": "uvloop-per-line",
     "factor": 1.0, "better": "lower"},
    {"scenario": "rooms-5000x500", "metric": "server_cpu", "against": "uvloop-per-chunk",
     "factor": 1.0, "better": "lower"},
    # Issue 20: the IRC renderer costs at most 20 % against the line protocol.
    {"scenario": "irc-fanout-1000", "metric": "deliveries_per_s", "against": "chatd-line",
     "factor": 0.8, "better": "higher"},
    # Issue 21: chatd over WebSocket ahead of the websockets library (either way it
    # writes); the cost against chatd-line is stated in docs/performance.md, not a target.
    *({"scenario": "ws-fanout-1000", "metric": "deliveries_per_s", "against": name,
       "factor": 1.0, "better": "higher"}
      for name in ("websockets-uvloop", "websockets-uvloop-coalesce")),
    *({"scenario": name, "metric": "rss_per_conn_kib", "against": None, "value": 1.0,
       "factor": 1.0, "better": "lower"} for name in ("idle-10000", "idle-max")),
]


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server: ``argv(config, port_file)``, and what it needs.

    ``root`` and ``config`` are for a chatd other than the run's own (``--compare``):
    the folder it runs in and imports chatd from, and its own benchmark config.
    Unset, the run's (:class:`Context`) are used.
    """

    name: str
    argv: Callable[[Path, Path], list[str]]
    requires: str | None = None  # an importable module, e.g. uvloop
    root: Path | None = None
    config: Path | None = None
    #: "chatd", "baseline" (what users would otherwise run), "limit" (the design's
    #: ceiling: sends coalesced once per loop pass, in C) or "compare" (chatd@REF).
    kind: str = "baseline"
    default: bool = True  # run when --servers is not given
    #: How it serves TLS scenarios: "config" (chatd: a TLS listener in its config),
    #: "flag" (``--tls PEM``), or "" (it cannot: TLS scenarios skip it).
    tls: str = ""
    #: How it serves IRC scenarios: "config" (chatd: its listener's protocol is irc),
    #: "native" (an IRC server: IRC scenarios only), "line" (chatd-line: the same load
    #: over the line protocol, IRC scenarios only), or "" (IRC scenarios skip it).
    irc: str = ""
    #: Load generator flags for its IRC runs (ngIRCd: its senders become operators, +F).
    irc_loadgen: tuple[str, ...] = ()
    #: How it serves WebSocket scenarios: "config" (chatd: its listener's protocol is
    #: websocket), "native" (a WebSocket server: WebSocket scenarios only), "line"
    #: (chatd-line) or "jsonl" (chatd-jsonl: the same load over jsonl on TCP, WebSocket
    #: scenarios only), or "" (WebSocket scenarios skip it).
    ws: str = ""

    def serves(self, scenario: Scenario) -> bool:
        """Whether it runs ``scenario``: TLS, IRC and WebSocket only where it can;
        servers of one protocol (ngIRCd, the websockets baselines) and the variants that
        carry another scenario's load (chatd-line, chatd-jsonl) only those scenarios."""
        if scenario.tls and not self.tls:
            return False
        if scenario.irc:
            return bool(self.irc)
        if scenario.ws:
            return bool(self.ws)
        return self.irc not in ("native", "line") and self.ws not in ("native", "line", "jsonl")

    @property
    def file_stem(self) -> str:
        """``name`` made safe as a file name (a ref may hold ``/``: ``chatd@origin/main``)."""
        return self.name.replace(os.sep, "_")


def _baseline(script: str, *extra: str) -> Callable[[Path, Path], list[str]]:
    path = str(BENCH / "baselines" / script)
    return lambda _config, port_file: [sys.executable, path, "--port-file", str(port_file), *extra]


def _c_server(mode: str) -> Callable[[Path, Path], list[str]]:
    """The C baseline (built by :func:`build_c`) in ``mode`` (per-read or coalesce)."""
    return lambda _config, port_file: [
        str(BUILD / EPOLL_SERVER.stem), "--mode", mode, "--port-file", str(port_file),
    ]


def _chatd(config: Path, port_file: Path) -> list[str]:
    return [sys.executable, "-m", "chatd", "--config", str(config), "--port", "0",
            "--port-file", str(port_file)]


#: chatd's benchmark config without history (``plugins.history.store: false``), for
#: the ``chatd-no-history`` variant: what storing every line costs, in the same run.
NO_HISTORY_CONFIG = "chatd-bench-no-history.yaml"

SERVERS = [
    ServerSpec("chatd", _chatd, kind="chatd", tls="config", irc="config", ws="config"),
    # IRC and WebSocket scenarios only: chatd's line listener under the scenario's load
    # (what the IRC renderer or WebSocket costs, same commit, same run), and ngIRCd
    # (Debian's, C) with its flood limits lifted where its config allows
    # (bench/baselines/ngircd.py says which).
    ServerSpec("chatd-line", _chatd, kind="variant", irc="line", ws="line"),
    # WebSocket scenarios only: chatd's jsonl listener on TCP (the same JSON, no framing),
    # and the websockets library's asyncio server on uvloop, writing one frame per
    # message (websockets.broadcast) or, --coalesce, one per recipient per loop pass.
    ServerSpec("chatd-jsonl", _chatd, kind="variant", ws="jsonl"),
    ServerSpec("websockets-uvloop", _baseline("websockets_server.py", "--uvloop"),
               "websockets", ws="native"),
    ServerSpec("websockets-uvloop-coalesce",
               _baseline("websockets_server.py", "--uvloop", "--coalesce"), "websockets",
               ws="native"),
    ServerSpec("ngircd", _baseline("ngircd.py"), irc="native",
               irc_loadgen=("-O", "bench:bench", "-C", "100")),
    # The same chatd with history off (--servers chatd,chatd-no-history): not a
    # baseline, the cost of history measured beside it.
    ServerSpec("chatd-no-history", _chatd, kind="variant", default=False, tls="config"),
    ServerSpec("asyncio-per-line", _baseline("asyncio_protocol.py"), tls="flag"),
    ServerSpec("uvloop-per-line", _baseline("asyncio_protocol.py", "--uvloop"), "uvloop",
               tls="flag"),
    ServerSpec("asyncio-per-chunk", _baseline("asyncio_protocol.py", "--per-chunk"),
               tls="flag"),
    ServerSpec("uvloop-per-chunk", _baseline("asyncio_protocol.py", "--uvloop", "--per-chunk"),
               "uvloop", tls="flag"),
    ServerSpec("c-per-read", _c_server("per-read")),
    ServerSpec("c-coalesce", _c_server("coalesce"), kind="limit"),
    # Not run by default (slower than the Protocol baselines everywhere); --servers.
    ServerSpec("asyncio-streams", _baseline("asyncio_streams.py"), default=False),
]


# -- the machine ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cores:
    """Where the server and the load generator run; ``None`` = not pinned."""

    server: int | None
    loadgen: int | None

    @classmethod
    def pick(cls) -> Cores:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            return cls(None, None)
        return cls(cores[0], cores[1])


def pinned(argv: list[str], core: int | None) -> tuple[list[str], Callable[[], None] | None]:
    """``argv`` pinned to ``core``: through ``taskset`` when present, else sched_setaffinity."""
    if core is None:
        return argv, None
    if shutil.which("taskset"):
        return ["taskset", "-c", str(core), *argv], None
    return argv, lambda: os.sched_setaffinity(0, {core})


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE to the hard limit (inherited by every child); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _run_text(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=REPO)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


def machine_info(cores: Cores, fd_limit: int, chatd_ref: str | None) -> dict[str, Any]:
    """What a reader needs to compare a result: CPU, kernel, Python, versions, commit."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
    try:
        import uvloop

        uvloop_version = uvloop.__version__
    except ImportError:
        uvloop_version = None
    if chatd_ref:
        commit, dirty = _run_text(["git", "rev-parse", "--short", chatd_ref]), ""
    else:
        commit = _run_text(["git", "rev-parse", "--short", "HEAD"])
        dirty = _run_text(["git", "status", "--porcelain", "--", "chatd", "config.yaml"])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvloop": uvloop_version,
        "cc": _run_text([os.environ.get("CC", "cc"), "--version"]).split("\n")[0],
        "fd_limit": fd_limit,
        "server_core": cores.server,
        "loadgen_core": cores.loadgen,
        "chatd_commit": commit or "unknown",
        "chatd_dirty": bool(dirty),
    }


# -- building and configuring -------------------------------------------------------------------


def chatd_env(chatd_root: Path) -> dict[str, str]:
    """The environment for servers: ``chatd_root`` first on the import path.

    So ``python -m chatd`` runs that folder's chatd (this checkout, or a --chatd-ref
    snapshot) whether or not, and wherever, chatd is pip-installed.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(chatd_root), env.get("PYTHONPATH")]))
    return env


def export_chatd(ref: str, dest: Path) -> Path:
    """chatd/ and config.yaml as committed at git ``ref``, extracted into ``dest``.

    Benchmarks a fixed commit while the working tree is being edited, and lets a
    change be compared with its parent (``--chatd-ref HEAD~1``).
    """
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "chatd", "config.yaml"],
        cwd=REPO, capture_output=True, timeout=60,
    )
    if archive.returncode != 0:
        raise SystemExit(f"bench: git archive {ref}: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def chatd_source(chatd_root: Path) -> str:
    """Where ``python -m chatd`` will import chatd from, checked rather than assumed."""
    done = subprocess.run(
        [sys.executable, "-c", "import chatd; print(chatd.__file__)"],
        cwd=chatd_root, env=chatd_env(chatd_root), capture_output=True, text=True, timeout=30,
    )
    where = done.stdout.strip()
    if done.returncode != 0 or not Path(where).resolve().is_relative_to(chatd_root.resolve()):
        raise SystemExit(f"bench: chatd would not be imported from {chatd_root}: "
                         f"{where or done.stderr.strip()}")
    return where


def build_c(source: Path) -> Path:
    """Compile ``source`` with the machine's cc, warnings as errors; cached by mtime."""
    BUILD.mkdir(parents=True, exist_ok=True)
    binary = BUILD / source.stem
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    cc = os.environ.get("CC", "cc")
    argv = [cc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(binary), str(source)]
    if "openssl/ssl.h" in source.read_text():
        argv += ["-lssl", "-lcrypto"]  # the load generator's TLS (libssl-dev)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"bench: compiling {source.name} failed:\n{done.stderr}")
    return binary


def build_loadgen() -> Path:
    return build_c(LOADGEN_SOURCE)


def write_chatd_config(path: Path, max_clients: int, chatd_root: Path = REPO) -> dict[str, Any]:
    """Write chatd's benchmark config: the shipped config.yaml with only limits raised.

    The built-in plugins load as shipped (rooms, commands, log, ...); the example
    plugins in plugins/ are not loaded (``plugin_dirs: []``): they are the
    tutorial, not part of the server.  Returns the raised limits for the report.
    """
    config = yaml.safe_load((chatd_root / "config.yaml").read_text()) or {}
    raised: dict[str, Any] = {}
    lines = [
        "# chatd benchmark config, generated by bench/run.py from config.yaml.",
        "# ONLY FLOOD AND CONNECTION LIMITS ARE RAISED (0 = no limit); everything else",
        "# (plugins, logging, output buffer limits, ...) is the shipped config.yaml:",
    ]
    for section, key, value, why in RAISED_LIMITS:
        settings = config.get(section)
        if not isinstance(settings, dict) or key not in settings:
            continue
        new = max_clients if value is None else value
        if settings[key] == new:
            continue
        raised[f"{section}.{key}"] = {"from": settings[key], "to": new, "why": why}
        lines.append(f"#   {section}.{key}: {settings[key]} -> {new}: {why}")
        settings[key] = new
    history = (config.get("plugins") or {}).get("history")
    if isinstance(history, dict) and history.get("replay_lines"):
        # History is stored as shipped; it is not replayed, and the database is a
        # fresh one in memory for every run.
        history["replay_lines"] = 0
        lines.append("#   plugins.history.replay_lines -> 0: the load generator checks every line "
                     "it receives; replayed ones were not sent in this run")
    storage = config.get("storage")
    if isinstance(storage, dict) and storage.get("path"):
        storage["path"] = None
        lines.append("#   storage.path -> null (in memory): every run starts with an empty "
                     "database, as on disk runs would inherit each other's history")
    config["plugin_dirs"] = []
    lines.append("# plugin_dirs is [] so the example plugins in plugins/ are not loaded;")
    lines.append("# the built-in plugins (rooms, commands, log, history, ...) are.")
    path.write_text("\n".join(lines) + "\n" + yaml.safe_dump(config, sort_keys=False))
    return raised


def write_no_history_config(path: Path, max_clients: int, chatd_root: Path = REPO) -> None:
    """chatd's benchmark config with ``plugins.history.store: false`` (the variant)."""
    write_chatd_config(path, max_clients, chatd_root)
    text = path.read_text()
    data = yaml.safe_load(text)
    data.setdefault("plugins", {}).setdefault("history", {})["store"] = False
    header = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    path.write_text(header + "#   plugins.history.store -> false: the variant without "
                    "history\n" + yaml.safe_dump(data, sort_keys=False))


# -- processes ----------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (KiB) of ``pid``; empty if it is gone."""
    values: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


class ServerProcess:
    """A server under test, started pinned, with its log in ``workdir``."""

    def __init__(self, spec: ServerSpec, ctx: Context) -> None:
        config, workdir, core = spec.config or ctx.config, ctx.workdir, ctx.cores.server
        root = spec.root or ctx.chatd_root
        self.spec = spec
        self.port_file = workdir / f"{spec.file_stem}.port"
        self.log_path = workdir / f"{spec.file_stem}.log"
        self.port_file.unlink(missing_ok=True)
        argv, preexec = pinned(spec.argv(config, self.port_file), core)
        self.argv = argv
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=root, env=chatd_env(root),
                preexec_fn=preexec,  # preexec only pins (where there is no taskset)
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_port(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with status {self.proc.returncode} at startup")
            with contextlib.suppress(OSError, ValueError):
                return int(self.port_file.read_text().strip())
            time.sleep(0.02)
        raise RuntimeError(f"no port file after {timeout:g} s")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM (a graceful stop), then SIGKILL after 5 s; bounded either way."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


@contextlib.contextmanager
def running_server(spec: ServerSpec, ctx: Context) -> Iterator[ServerProcess]:
    server = ServerProcess(spec, ctx)
    try:
        yield server
    finally:
        server.stop()


# -- one run ------------------------------------------------------------------------------------


@dataclass
class Run:
    """The outcome of one (scenario, server) run; ``status`` is ok / INVALID / FAILED."""

    scenario: str
    server: str
    mode: str
    status: str = "ok"
    repeat: int = 1  # which of the --repeat runs of this pair (1-based)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    loadgen: dict[str, Any] = field(default_factory=dict)

    def fail(self, why: str) -> None:
        self.status = "FAILED"
        self.problems.append(why)

    def invalidate(self, why: str) -> None:
        if self.status == "ok":
            self.status = "INVALID"
        self.problems.append(why)


def _cpu_view(lg: dict[str, Any], cores: Cores, elapsed: float) -> dict[str, float]:
    """Per-role CPU use over the measured window, from the load generator's samples."""
    view: dict[str, float] = {}
    ticks = lg.get("cpu_ticks") or []
    hz = lg.get("clk_tck") or 100
    if not ticks or elapsed <= 0:
        return view

    def share(core: int | None, busy: Callable[[list[int]], int]) -> float | None:
        if core is None or core >= len(ticks) or not sum(ticks[core]):
            return None
        return busy(ticks[core]) / sum(ticks[core])

    # ticks[core] = [user + nice + system, irq + softirq, idle + iowait, steal]
    server_core = share(cores.server, lambda t: t[0] + t[1])
    if server_core is not None:
        view["server_core_busy"] = server_core
    # Process times and /proc/stat disagree about softirq (loopback receive work runs
    # as softirq, in the sending process or in ksoftirqd), so the load generator's own
    # CPU share is checked and so is its core: a core with no idle time left means the
    # load generator could not have gone faster, whoever used the rest.
    loadgen_idle = share(cores.loadgen, lambda t: t[2])
    if loadgen_idle is not None:
        view["loadgen_core_idle"] = loadgen_idle
    # Approximate (the softirq ambiguity again): good enough to flag a run that shared
    # the machine with something else.
    process_ticks = sum(t[0] for t in ticks) / hz
    ours = (lg.get("server_cpu_s") or 0.0) + (lg.get("loadgen_cpu_s") or 0.0)
    view["foreign_cpu"] = max(0.0, (process_ticks - ours) / elapsed)
    return view


def run_traffic(
    scenario: Scenario, server: ServerProcess, loadgen: Path, timing: Timing, cores: Cores
) -> Run:
    """Run the load generator against a started server and judge the result."""
    run = Run(scenario.name, server.spec.name, scenario.mode)
    port = server.wait_port()
    limit = scenario.setup_max_s + timing.warmup + timing.duration + timing.drain_max + 30
    argv, preexec = pinned(
        [str(loadgen), "-p", str(port), "-P", str(server.pid), "-T", f"{limit - 10:g}",
         *scenario.loadgen_args(timing)],
        cores.loadgen,
    )
    lg_log = server.log_path.with_suffix(".loadgen.log")
    with lg_log.open("wb") as err:
        try:
            done = subprocess.run(
                argv, stdout=subprocess.PIPE, stderr=err, timeout=limit, preexec_fn=preexec,
            )
        except subprocess.TimeoutExpired:
            run.fail(f"load generator still running after {limit:.0f} s (killed)")
            return run
    mem = proc_status(server.pid)
    try:
        lg = json.loads(done.stdout)
    except json.JSONDecodeError:
        run.fail(f"load generator exited {done.returncode} without a report: "
                 f"{lg_log.read_text(errors='replace')[-500:]}")
        return run
    run.loadgen = lg
    if not server.alive():
        run.fail(f"server exited with status {server.proc.returncode}")
    if lg.get("error"):
        run.fail(f"load generator: {lg['error']}")
    for key in ("lost", "duplicated", "reordered", "misrouted", "disconnected"):
        if lg.get(key):
            run.fail(f"{lg[key]} {key}")
    elapsed = lg.get("elapsed_s") or 0.0
    metrics: dict[str, Any] = {
        "deliveries_per_s": lg.get("deliveries_per_s", 0.0),
        "messages_in_per_s": lg.get("messages_in_per_s", 0.0),
        "latency_us": lg.get("latency_us", {}),
        "setup_s": lg.get("setup_s"),
        "peak_rss_mib": mem.get("VmHWM", 0) / 1024,
        "loadgen_cpu": (lg.get("loadgen_cpu_s") or 0.0) / elapsed if elapsed else None,
        "server_cpu": (lg.get("server_cpu_s") or 0.0) / elapsed if elapsed else None,
    }
    metrics.update(_cpu_view(lg, cores, elapsed))
    run.metrics = metrics
    if run.status == "FAILED":
        return run
    if (metrics["loadgen_cpu"] or 0) > LOADGEN_CPU_LIMIT:
        run.invalidate(f"load generator used {metrics['loadgen_cpu']:.0%} of its core")
    if metrics.get("loadgen_core_idle", 1) < LOADGEN_CORE_IDLE_MIN:
        run.invalidate(f"load generator's core was {metrics['loadgen_core_idle']:.0%} idle")
    if metrics.get("foreign_cpu", 0) > NOISE_LIMIT:
        run.notes.append(f"noisy: other processes used {metrics['foreign_cpu']:.2f} cores")
    if scenario.mode == "rate":
        # The kernel's buffers take the offered input even from a server that cannot
        # keep up, so "behind" is judged on deliveries, not on lines sent.
        expected = scenario.offered_msgs_per_s * (scenario.clients // scenario.groups - 1)
        got = metrics["deliveries_per_s"]
        if lg.get("send_stalled") or got < 0.97 * expected:
            run.notes.append(
                f"behind: {got:,.0f} of {expected:,.0f} deliveries/s offered "
                f"({lg.get('send_stalled', 0)} sends refused)"
            )
    elif (metrics["server_cpu"] or 0) < SATURATED and metrics.get("server_core_busy", 1) < 0.9:
        run.notes.append(f"server not saturated ({metrics['server_cpu']:.0%} CPU)")
    return run


def run_idle(scenario: Scenario, server: ServerProcess, loadgen: Path, timing: Timing,
             cores: Cores) -> Run:
    """Hold N idle connections; memory per connection = RSS growth / N."""
    run = Run(scenario.name, server.spec.name, scenario.mode)
    port = server.wait_port()
    time.sleep(1.0)  # let startup allocations settle before the baseline reading
    rss_idle = proc_status(server.pid).get("VmRSS", 0)
    argv, preexec = pinned(
        [str(loadgen), "-p", str(port), *scenario.loadgen_args(timing)], cores.loadgen
    )
    lg_log = server.log_path.with_suffix(".loadgen.log")
    with lg_log.open("wb") as err:
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, preexec_fn=preexec,
        )
        try:
            assert proc.stdout is not None and proc.stdin is not None
            limit = scenario.setup_max_s + 60  # the loadgen's own deadline plus its grace
            ready, _, _ = select.select([proc.stdout], [], [], limit)
            line = proc.stdout.readline() if ready else b""
            if not line:
                run.fail(f"no report from the load generator within {limit:.0f} s: "
                         f"{lg_log.read_text(errors='replace')[-500:]}")
                return run
            hello = json.loads(line)
            if hello.get("error"):
                run.fail(f"load generator: {hello['error']} ({hello.get('connected', 0):,} of "
                         f"{scenario.clients:,} connected)")
                return run
            time.sleep(0.5)
            mem = proc_status(server.pid)
            run.loadgen = hello
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # type: ignore[union-attr]
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
    if not server.alive():
        run.fail(f"server exited with status {server.proc.returncode}")
    connected = int(hello.get("connected", 0))
    rss_loaded = mem.get("VmRSS", 0)
    run.metrics = {
        "connected": connected,
        "requested": hello.get("requested", scenario.clients),
        "setup_s": hello.get("setup_s"),
        "rss_idle_mib": rss_idle / 1024,
        "rss_loaded_mib": rss_loaded / 1024,
        "peak_rss_mib": mem.get("VmHWM", 0) / 1024,
        "rss_per_conn_kib": (rss_loaded - rss_idle) / connected if connected else None,
    }
    if not hello.get("complete", False):
        run.notes.append(
            f"partial: {connected:,} of {scenario.clients:,} connected within the "
            f"{scenario.setup_max_s:g} s setup limit"
        )
    return run


def make_certificate(folder: Path) -> Path:
    """A throwaway self-signed certificate and key for 127.0.0.1 (one PEM file)."""
    pem = folder / "bench-tls.pem"
    if not pem.exists():
        key, cert = folder / "bench-tls.key", folder / "bench-tls.crt"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key), "-out", str(cert),
             "-days", "2", "-subj", "/CN=127.0.0.1"],
            check=True, capture_output=True, timeout=60,
        )
        pem.write_text(key.read_text() + cert.read_text())
    return pem


def tls_server(spec: ServerSpec, ctx: Context) -> ServerSpec:
    """``spec`` serving TLS: chatd with its listener given the certificate, a baseline
    with ``--tls``."""
    pem = make_certificate(ctx.workdir)
    if spec.tls == "flag":
        argv = spec.argv
        return dataclasses.replace(spec, argv=lambda c, p: [*argv(c, p), "--tls", str(pem)])
    config = _with_listener(spec.config or ctx.config, "tls", "a TLS listener",
                            lambda first: {**first, "tls": {"cert": str(pem), "key": str(pem)}})
    return dataclasses.replace(spec, config=config)


def _with_listener(source: Path, suffix: str, what: str,
                   listener: Callable[[dict[str, Any]], dict[str, Any]]) -> Path:
    """``source``'s config with its one listener ``listener(first listener of source)``,
    written beside it as ``<stem>-<suffix>.yaml``.  Written for every run, never reused:
    a file left in the results folder by an earlier run may name that run's
    certificate (in its temporary folder, gone) or come from another config."""
    config = source.with_name(f"{source.stem}-{suffix}.yaml")
    data = yaml.safe_load(source.read_text())
    listen = data.get("listen") or {}
    data["listen"] = listener(listen[0] if isinstance(listen, list) else listen)
    config.write_text(f"# the benchmark config with {what} (bench/run.py)\n"
                      + yaml.safe_dump(data, sort_keys=False))
    return config


def protocol_server(spec: ServerSpec, ctx: Context, protocol: str) -> ServerSpec:
    """chatd ``spec`` with one listener, of ``protocol`` (its options the defaults)."""
    config = _with_listener(
        spec.config or ctx.config, protocol, f"a {protocol} listener",
        lambda first: {"host": first.get("host", "127.0.0.1"), "port": first.get("port", 0),
                       "protocol": protocol})
    return dataclasses.replace(spec, config=config)


def irc_server(spec: ServerSpec, ctx: Context) -> ServerSpec:
    """``spec`` under an IRC scenario: chatd with its listener's protocol irc."""
    return protocol_server(spec, ctx, "irc") if spec.irc == "config" else spec


def ws_server(spec: ServerSpec, ctx: Context) -> ServerSpec:
    """``spec`` under a WebSocket scenario: chatd with a websocket listener (its
    default origins: the load generator's Origin names the listener's own host), or,
    for chatd-jsonl, a jsonl listener."""
    if spec.ws == "config":
        return protocol_server(spec, ctx, "websocket")
    if spec.ws == "jsonl":
        return protocol_server(spec, ctx, "jsonl")
    return spec


def scenario_for(scenario: Scenario, spec: ServerSpec) -> Scenario:
    """``scenario`` as ``spec`` takes it: the protocol its load generator speaks."""
    if scenario.irc:
        # chatd-line takes the same load as line clients; the others speak IRC.
        return dataclasses.replace(scenario, irc=spec.irc != "line",
                                   loadgen_extra=spec.irc_loadgen)
    if scenario.ws:
        # chatd-line takes the same load as line clients, chatd-jsonl as jsonl over TCP;
        # the others speak jsonl over WebSocket.
        return dataclasses.replace(scenario, ws=spec.ws in ("config", "native"),
                                   jsonl=spec.ws == "jsonl")
    return scenario


def run_one(scenario: Scenario, spec: ServerSpec, ctx: Context) -> Run:
    if scenario.tls:
        spec = tls_server(spec, ctx)
    if scenario.irc:
        spec = irc_server(spec, ctx)
    if scenario.ws:
        spec = ws_server(spec, ctx)
    scenario = scenario_for(scenario, spec)
    with running_server(spec, ctx) as server:
        try:
            if scenario.mode == "idle":
                run = run_idle(scenario, server, ctx.loadgen, ctx.timing, ctx.cores)
            else:
                run = run_traffic(scenario, server, ctx.loadgen, ctx.timing, ctx.cores)
        except RuntimeError as exc:
            run = Run(scenario.name, spec.name, scenario.mode)
            run.fail(f"server: {exc}")
        except Exception as exc:  # one broken run must not lose the others' results
            run = Run(scenario.name, spec.name, scenario.mode)
            run.fail(f"harness error: {type(exc).__name__}: {exc}")
        if run.status == "FAILED":
            tail = server.log_tail()
            if tail:
                run.notes.append("server log tail:\n" + tail)
    return run


@dataclass
class Context:
    """What every run shares."""

    config: Path
    workdir: Path
    loadgen: Path
    timing: Timing
    cores: Cores
    chatd_root: Path  # the folder whose chatd/ package `python -m chatd` runs


# -- the command --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark chatd against asyncio baselines (see docs/performance.md)."
    )
    parser.add_argument("--smoke", action="store_true",
                        help="tiny counts, ~30 s: checks the benchmark works, never speed")
    parser.add_argument("--servers", help="comma-separated subset of: "
                        + ", ".join(s.name for s in SERVERS))
    parser.add_argument("--scenarios", help="comma-separated subset of: "
                        + ", ".join(s.name for s in FULL_SCENARIOS + SMOKE_SCENARIOS))
    parser.add_argument("--out", type=Path, help=f"results folder (default {DEFAULT_OUT})")
    parser.add_argument("--duration", type=float, help="measured seconds per run")
    parser.add_argument("--chatd-ref", metavar="GIT_REF",
                        help="benchmark chatd as committed at this ref (default: the "
                        "working tree)")
    parser.add_argument("--compare", metavar="GIT_REF",
                        help="also benchmark chatd as committed at this ref, as server "
                        "chatd@GIT_REF, and print the ratio chatd / chatd@GIT_REF (without "
                        "--servers, only these two run)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run every (scenario, server) pair N times, interleaved; "
                        "pairs are reported by their median (default 1)")
    parser.add_argument("--update-docs", action="store_true",
                        help="paste the results into docs/performance.md")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def _select(names: str | None, items: Sequence[Any], what: str) -> list[Any]:
    if not names:
        return list(items)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {item.name: item for item in items}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise SystemExit(f"bench: unknown {what}: {', '.join(unknown)} "
                         f"(known: {', '.join(known)})")
    return [known[n] for n in wanted]


def _check_requirements(servers: Sequence[ServerSpec]) -> None:
    import importlib.util

    for spec in servers:
        if spec.name == "ngircd" and not (shutil.which("ngircd")
                                          or os.access("/usr/sbin/ngircd", os.X_OK)):
            raise SystemExit("bench: server ngircd needs ngIRCd: apt-get install ngircd "
                             "(or --servers without it)")
        if spec.requires and importlib.util.find_spec(spec.requires) is None:
            raise SystemExit(
                f"bench: server {spec.name} needs the {spec.requires} package: "
                f'pip install -e ".[test]" (or pip install {spec.requires})'
            )


def _resolve_ref(ref: str) -> str:
    """The short commit of git ``ref``; exits (before anything is built or run) if none."""
    commit = _run_text(["git", "rev-parse", "--verify", "--quiet", "--short", f"{ref}^{{commit}}"])
    if not commit:
        raise SystemExit(f"bench: --compare {ref}: not a commit in {REPO}")
    return commit


def _with_compare(servers: list[ServerSpec], ref: str, servers_given: bool) -> list[ServerSpec]:
    """``servers`` with ``chatd`` and, right after it, ``chatd@ref``.

    Without ``--servers`` just these two.  ``chatd@ref``'s root and config are left
    unset here: main() fills them in once the snapshot exists.
    """
    chatd = next(s for s in SERVERS if s.name == "chatd")
    servers = list(servers) if servers_given else [chatd]
    if not any(s.name == "chatd" for s in servers):
        servers.insert(0, chatd)
    at = next(i for i, s in enumerate(servers) if s.name == "chatd")
    servers.insert(at + 1, dataclasses.replace(chatd, name=f"chatd@{ref}", kind="compare"))
    return servers


def _progress(run: Run, repeat: int = 1) -> None:
    m = run.metrics
    if run.mode == "idle":
        per = m.get("rss_per_conn_kib")
        detail = (f"{m.get('connected', 0):>6,} conns  "
                  f"{per:6.1f} KiB/conn" if per is not None else "")
    else:
        lat = m.get("latency_us", {})
        detail = (f"{m.get('deliveries_per_s', 0):>12,.0f} deliv/s  "
                  f"{m.get('messages_in_per_s', 0):>9,.0f} msg/s  "
                  f"p99 {lat.get('p99', 0) / 1000:8.2f} ms  "
                  f"srv {m.get('server_cpu') or 0:4.0%}  lg {m.get('loadgen_cpu') or 0:4.0%}")
    server = f"{run.server} #{run.repeat}" if repeat > 1 else run.server
    print(f"  {run.scenario:<15} {server:<24} {run.status:<8} {detail}", file=sys.stderr)
    for problem in run.problems:
        print(f"      !! {problem}", file=sys.stderr)
    for note in run.notes:
        print(f"      -- {note}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    timing = SMOKE_TIMING if args.smoke else FULL_TIMING
    if args.duration:
        timing = dataclasses.replace(timing, duration=args.duration)
    scenarios = _select(args.scenarios, FULL_SCENARIOS + SMOKE_SCENARIOS, "scenario")
    if not args.scenarios:
        scenarios = SMOKE_SCENARIOS if args.smoke else FULL_SCENARIOS
    servers = _select(args.servers, SERVERS, "server")
    if not args.servers:
        servers = [s for s in servers if s.default]
    compare_name = f"chatd@{args.compare}" if args.compare else ""
    compare_commit = _resolve_ref(args.compare) if args.compare else ""
    if args.compare:
        servers = _with_compare(servers, args.compare, bool(args.servers))
    # A server no selected scenario runs is not started, built or required (ngIRCd runs
    # only IRC scenarios, the websockets baselines and chatd-jsonl only WebSocket ones,
    # chatd-line only those two kinds).
    servers = [s for s in servers if any(s.serves(sc) for sc in scenarios)]
    _check_requirements(servers)

    fd_limit = raise_fd_limit()
    most = min(fd_limit - FD_RESERVE, 100_000)
    resolved = []
    for scenario in scenarios:
        if scenario.clients == 0:
            scenario = dataclasses.replace(scenario, clients=most)
        if scenario.clients > most:
            print(f"bench: skipping {scenario.name}: it needs {scenario.clients} fds per "
                  f"process and RLIMIT_NOFILE allows {fd_limit}", file=sys.stderr)
            continue
        resolved.append(scenario)
    scenarios = resolved
    if not scenarios:
        raise SystemExit("bench: no scenario to run")

    out = (args.out or DEFAULT_OUT).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cores = Cores.pick()
    loadgen = build_loadgen()
    if any(s.name.startswith("c-") for s in servers):
        build_c(EPOLL_SERVER)
    machine = machine_info(cores, fd_limit, args.chatd_ref)
    if cores.server is None:
        print("bench: one core only: server and load generator share it; numbers are "
              "not comparable with a two-core run", file=sys.stderr)
    started = dt.datetime.now(dt.timezone.utc)
    repeats = f" x {args.repeat} runs" if args.repeat > 1 else ""
    print(f"bench: {len(scenarios)} scenarios x {len(servers)} servers{repeats} -> {out}",
          file=sys.stderr)
    runs: list[Run] = []
    compare: dict[str, Any] | None = None
    max_clients = max(s.clients for s in scenarios) + 100
    # Everything exported (the --chatd-ref and --compare snapshots) lives in tmp.
    with tempfile.TemporaryDirectory(prefix="chatd-bench-") as tmp:
        chatd_root = export_chatd(args.chatd_ref, Path(tmp) / "src") if args.chatd_ref else REPO
        if any(s.name == "chatd" for s in servers):
            machine["chatd_source"] = chatd_source(chatd_root)
        config = out / "chatd-bench.yaml"
        raised = write_chatd_config(config, max_clients, chatd_root)
        if any(s.name == "chatd-no-history" for s in servers):
            no_history = out / NO_HISTORY_CONFIG
            write_no_history_config(no_history, max_clients, chatd_root)
            servers = [dataclasses.replace(s, root=chatd_root, config=no_history)
                       if s.name == "chatd-no-history" else s for s in servers]
        if args.compare:
            # The commit resolved at the start, so a commit landing mid-run changes nothing.
            compare_root = export_chatd(compare_commit, Path(tmp) / "compare")
            compare_config = out / f"chatd-bench@{compare_commit}.yaml"
            compare = {
                "ref": args.compare,
                "server": compare_name,
                "commit": compare_commit,
                "chatd_source": chatd_source(compare_root),
                "config": compare_config.name,
                "chatd_limits_raised": write_chatd_config(
                    compare_config, max_clients, compare_root
                ),
            }
            servers = [
                dataclasses.replace(s, root=compare_root, config=compare_config)
                if s.name == compare_name else s
                for s in servers
            ]
        ctx = Context(config, Path(tmp), loadgen, timing, cores, chatd_root)
        for scenario in scenarios:
            print(f"{scenario.name}: {scenario.what}", file=sys.stderr)
            for repeat in range(1, args.repeat + 1):
                for spec in servers:
                    if not spec.serves(scenario):
                        continue  # TLS, IRC or WebSocket it cannot serve, or one-protocol
                        # servers and variants elsewhere
                    run = run_one(scenario, spec, ctx)
                    run.repeat = repeat
                    runs.append(run)
                    _progress(run, args.repeat)

    result = {
        "command": "python bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "smoke": args.smoke,
        "started": started.isoformat(timespec="seconds"),
        "wall_s": round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 1),
        "machine": machine,
        "timing": dataclasses.asdict(timing),
        "chatd_limits_raised": raised,
        "scenarios": [dataclasses.asdict(s) for s in scenarios],
        "servers": [s.name for s in servers],
        "server_kinds": {s.name: s.kind for s in servers},
        "repeat": args.repeat,
        "compare": compare,
        "runs": [dataclasses.asdict(r) for r in runs],
    }
    result["headline"] = report.headline(result)
    result["targets"] = report.targets(result, TARGETS)
    if compare:
        result["comparison"] = report.comparison(result, "chatd", compare["server"])
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    chart = report.chart(result, out / "deliveries.png")
    markdown = report.markdown(result, chart_path=chart.name if chart else None)
    (out / "results.md").write_text(markdown)
    if args.update_docs:
        report.update_docs(REPO / "docs" / "performance.md", result, out, chart)
    print("\n" + markdown, file=sys.stdout)
    if compare:
        print(report.comparison_text(result), file=sys.stdout)

    failed = [r for r in runs if r.status == "FAILED"]
    invalid = [r for r in runs if r.status == "INVALID"]
    if failed:
        print(f"bench: {len(failed)} run(s) FAILED: "
              + ", ".join(f"{r.scenario}/{r.server}" for r in failed), file=sys.stderr)
        return 1
    if invalid and not args.smoke:
        print(f"bench: {len(invalid)} run(s) INVALID (load generator saturated): "
              + ", ".join(f"{r.scenario}/{r.server}" for r in invalid), file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
