"""chatd's single YAML config file, turned into validated, typed, immutable dataclasses.

Why it is built this way:

* One file configures the whole server, so a mistake in it must be cheap to find: every
  error is a :class:`ConfigError` that names the file, the dotted key and the line
  (``config.yaml:12: limits.max_line_bytes: expected an integer >= 16, got 'abc'``).
  To know lines we compose the YAML into a node tree with a ``SafeLoader`` and build the
  values from the nodes ourselves instead of calling ``yaml.safe_load``.
* Validation is declarative. Each section is a frozen dataclass; a setting is one field
  with a type hint (int, float, str, bool or ``X | None``) and ``field(metadata=...)``
  holding a one-line doc and a :class:`Constraint`. The loader, the error messages and
  :func:`config_reference` all walk those fields, so adding a setting is adding a field.
* Only plain YAML data is allowed (``yaml.safe_load`` semantics): any tag the
  ``SafeLoader`` cannot construct, such as ``!!python/object/apply``, is an error before
  anything is constructed, so a config file can never run code.
* The result is immutable (frozen dataclasses, tuples, ``MappingProxyType``) because the
  config is shared by the core and every plugin; nobody may change it behind the others'
  backs. CLI overrides make a new object with :meth:`Config.with_listener`.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import os
import re
import stat
import types
import typing
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "CONFIG_REFERENCE",
    "Config",
    "ConfigError",
    "Constraint",
    "LimitsConfig",
    "ListenConfig",
    "LoggingConfig",
    "ServerConfig",
    "StorageConfig",
    "config_reference",
    "default_config",
    "load_config",
    "parse_config",
    "shown_text_problem",
]

_T = TypeVar("_T")


class ConfigError(Exception):
    """A config problem, located precisely enough to fix without guessing.

    The parts are kept as attributes (``file``, ``key``, ``line``, ``message``) so callers
    and tests can inspect them; ``str()`` joins the parts that are known, in the
    compiler-style order editors understand: ``file:line: key: message``.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.key = key
        self.line = line

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file is not None:
            parts.append(self.file if self.line is None else f"{self.file}:{self.line}")
        elif self.line is not None:
            # No file name (parse_config without source); still say where.
            parts.append(f"line {self.line}")
        if self.key:
            parts.append(_printable(self.key))
        parts.append(self.message)
        return ": ".join(parts)


def _printable(text: str) -> str:
    """``text`` with what a terminal would not print as itself escaped (``\\u202e``): a
    key comes from the file, and an error message must show it, not obey it."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


@dataclass(frozen=True, slots=True)
class Constraint:
    """Rules a setting's value must satisfy beyond its type.

    Kept as data (not code) so the same table drives validation, error wording and the
    generated reference; a rule that is not written here cannot drift from the docs.
    """

    ge: float | None = None  # inclusive lower bound (numbers)
    gt: float | None = None  # exclusive lower bound, for "must be > 0" (numbers)
    le: float | None = None  # inclusive upper bound (numbers)
    choices: tuple[str, ...] | None = None  # allowed values (strings)
    pattern: str | None = None  # re.fullmatch pattern (strings)
    describe: str | None = None  # human wording of `pattern` for messages and docs
    upper: bool = False  # input is case-insensitive; stored upper-cased (before `choices`)
    path: bool = False  # a filesystem path; relative values resolve against the config's folder
    shown: str | None = None  # users see it: "name" or "text" (see shown_text_problem)


def _setting(
    default: _T,
    doc: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    choices: tuple[str, ...] | None = None,
    pattern: str | None = None,
    describe: str | None = None,
    upper: bool = False,
    path: bool = False,
    shown: str | None = None,
) -> _T:
    """Declare one setting: its default, a one-line doc and its constraint.

    A thin wrapper over ``dataclasses.field(metadata=...)`` so every setting carries the
    metadata the loader and :func:`config_reference` rely on, spelled the same way.
    """
    constraint = Constraint(
        ge=ge,
        gt=gt,
        le=le,
        choices=choices,
        pattern=pattern,
        describe=describe,
        upper=upper,
        path=path,
        shown=shown,
    )
    return field(default=default, metadata={"doc": doc, "constraint": constraint})


# -- the ranges the operating system and the libraries accept ----------------------------
# Every number a setting holds ends up somewhere that has a ceiling of its own; a value
# past it must be refused here, with the key and the line, not found later as an
# OverflowError in the event loop or a MemoryError at start-up (issue 18, rule 3).

#: Longest timeout, delay or window, in seconds (about 11.5 days).  Timers end in
#: ``epoll_wait()``, whose timeout is a C int of milliseconds (2**31 - 1 ms, about
#: 24.8 days: Python raises OverflowError past it), and so is TCP_USER_TIMEOUT.
MAX_SECONDS = 1_000_000.0
#: Most bytes a per-connection limit or socket buffer may be: 1 GiB.  ``setsockopt()``
#: takes a C int and Linux doubles SO_SNDBUF/SO_RCVBUF (so at most 2**30).
MAX_BYTES = 1 << 30
#: Most bytes read per pass: the read buffer is allocated once at this size (16 MiB,
#: beyond any socket receive buffer: more is never read in one ``recv``).
MAX_READ_BYTES = 1 << 24
#: Most of anything counted (clients, rooms, connections, lines, failures): about the
#: most file descriptors a Linux process may have (fs.nr_open, 1,048,576).
MAX_COUNT = 1 << 20
#: Linux's ceilings for TCP keepalive: TCP_KEEPIDLE and TCP_KEEPINTVL (MAX_TCP_KEEPIDLE,
#: MAX_TCP_KEEPINTVL, seconds) and TCP_KEEPCNT (MAX_TCP_KEEPCNT); setsockopt refuses more.
MAX_KEEPALIVE_SECONDS = 32767
MAX_KEEPALIVE_PROBES = 127

# Characters that must not be in text users see (a server's name, a welcome line): they
# are invisible, reorder the text around them (bidi, CVE-2021-42574), or drive a
# terminal.  By Unicode category: controls (Cc), format characters (Cf: bidi marks and
# overrides, zero-width spaces and joiners, soft hyphen, tag characters...),
# surrogates, private use and unassigned code points, line and paragraph separators;
# plus letters and marks that render as nothing (Hangul fillers, braille blank,
# combining grapheme joiner, Khmer inherent vowels).
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_BLANK_LETTERS = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u2800\u3164\uffa0")
#: Zero-width (non-)joiners: needed inside running text (emoji sequences, Persian),
#: never in a name.
_JOINERS = frozenset("\u200c\u200d")


def shown_text_problem(text: str, *, kind: str = "text") -> str | None:
    """Why ``text`` may not be shown to users as configured, or None.

    ``kind`` is ``"name"`` (a server or room name: one word-like thing a reader must
    be able to trust) or ``"text"`` (a welcome line: running text, where zero-width
    joiners are part of emoji and scripts).  Checked per code point with
    :mod:`unicodedata`, so new invisible characters are refused as Unicode assigns
    them.
    """
    import unicodedata  # C module, loaded on first use: imports stay fast

    for char in text:
        if kind == "text" and char in _JOINERS:
            continue
        category = unicodedata.category(char)
        if category in _REFUSED_CATEGORIES or char in _BLANK_LETTERS:
            what = unicodedata.name(char, "") or {"Cc": "a control character"}.get(
                category, "an unassigned or private code point")
            return (f"holds U+{ord(char):04X} ({what}): control, invisible and bidi "
                    f"characters are not allowed in a {kind} users see")
    return None


#: The wire formats a listener can speak (chatd.protocols.PROTOCOLS).
PROTOCOL_NAMES = ("line", "jsonl")


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS on this listener (``listen: [{port: 7789, tls: {cert: ..., key: ...}}]``): any
    protocol over it, beside plain listeners; SIGHUP re-reads the certificate."""

    cert: str | None = _setting(
        None,
        "The certificate chain (PEM), relative to the config's folder; required.",
        pattern=r"(?s).+",
        describe="a non-empty path",
        path=True,
    )
    key: str | None = _setting(
        None,
        "The private key (PEM), relative to the config's folder; required. Keep it 0600.",
        pattern=r"(?s).+",
        describe="a non-empty path",
        path=True,
    )
    ca: str | None = _setting(
        None,
        "CA certificates (PEM) that client certificates are checked against; with "
        "verify_clients, a client without a certificate signed by one is refused.",
        pattern=r"(?s).+",
        describe="a non-empty path",
        path=True,
    )
    verify_clients: bool = _setting(
        False, "Require a client certificate signed by `ca` (mutual TLS)."
    )
    min_version: str = _setting(
        "1.2", "The oldest TLS version accepted.", choices=("1.2", "1.3")
    )
    handshake_timeout_seconds: float = _setting(
        10.0,
        "A connection that has not finished its TLS handshake by then is closed (a silent "
        "TCP connect, a client speaking plaintext and waiting).",
        gt=0,
        le=300,
    )


@dataclass(frozen=True, slots=True)
class ListenConfig:
    """Where the server accepts TCP connections: one mapping, or a list of them (one per
    listener, each with its own port and protocol)."""

    host: str = _setting(
        "127.0.0.1",
        "Address to listen on. Loopback by default, so a fresh install is not reachable "
        "from the network until you decide to expose it.",
    )
    port: int = _setting(
        7788,
        "TCP port to listen on. 0 lets the OS pick a free port (used by the tests).",
        ge=0,
        le=65535,
    )
    protocol: str = _setting(
        "line",
        "What the listener speaks: line (people with nc, telnet, socat) or jsonl (programs: "
        "one JSON object per line each way, see docs/protocols.md).",
        choices=PROTOCOL_NAMES,
    )
    proxy_protocol: bool = _setting(
        False,
        "Read a PROXY protocol header (v1 or v2, as HAProxy, nginx and load balancers send "
        "it) on connections from trusted_proxies: the client's real address then counts for "
        "limits, bans and logs. A trusted proxy must send one; anyone else sending one is "
        "refused. docs/tls.md.",
    )
    trusted_proxies: tuple[str, ...] = _setting(
        (),
        "Addresses or networks (CIDR, e.g. 10.0.0.0/8) of the proxies allowed to send a "
        "PROXY header; required with proxy_protocol.",
    )
    tls: TlsConfig | None = field(default=None, metadata={
        "doc": "TLS settings (a mapping, see `listen[].tls` below); null: plain TCP.",
        "nested": True,
    })


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How the server presents itself to clients."""

    name: str = _setting(
        "chatd",
        "Name the server announces to clients, and the source of its notices: so no "
        "control, invisible or bidi characters, which could hide or reorder what a "
        "reader sees.",
        pattern=r"(?s).{1,64}",
        describe="1 to 64 characters",
        shown="name",
    )
    default_room: str = _setting(
        "#lobby",
        "Room every client is put in on connect, so a new user never talks to nobody.",
        pattern=r"#[A-Za-z0-9_\-.]{1,32}",
        describe="a room name: '#' followed by 1 to 32 of A-Z a-z 0-9 _ - .",
    )


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """Resource bounds that keep one client (or a crowd) from starving the server."""

    max_line_bytes: int = _setting(
        4096,
        "Longest accepted line, in bytes, excluding the line ending. Bounds per-connection "
        "input buffering: a longer line is refused instead of buffered without end.",
        ge=16,
        le=MAX_BYTES,
    )
    recvq_max_bytes: int = _setting(
        65536,
        "Most input held for one client. An unterminated line discarded past it disconnects "
        "the client (Redis PROTO_INLINE_MAX_SIZE, InspIRCd RecvQ); lines waiting for the "
        "flood limit past it make chatd stop reading the client (TCP backpressure: the "
        "sender waits) until half of it has drained, so a paste is delayed, never cut.",
        ge=1024,
        le=MAX_BYTES,
    )
    read_budget_bytes: int = _setting(
        65536,
        "Bytes read from one connection per event-loop pass. Edge-triggered epoll must "
        "drain sockets; this budget stops one fast sender from starving everyone else.",
        ge=1024,
        le=MAX_READ_BYTES,
    )
    max_output_bytes: int = _setting(
        1048576,
        "Per-connection output buffer hard limit. A client that stops reading is "
        "disconnected when it fills, so a slow reader cannot exhaust server memory "
        "(InspIRCd hardsendq 1M).",
        ge=4096,
        le=MAX_BYTES,
    )
    output_soft_bytes: int = _setting(
        262144,
        "Soft output limit. Above it a client is skipped for room lines (it is told how "
        "many it missed once it catches up), stops being read, and is disconnected if it "
        "stays above for output_soft_seconds (Redis soft limits).",
        ge=1024,
        le=MAX_BYTES,
    )
    output_soft_seconds: float = _setting(
        60.0,
        "How long a client may stay above output_soft_bytes before it is disconnected.",
        gt=0,
        le=MAX_SECONDS,
    )
    output_total_max_bytes: int = _setting(
        67108864,
        "Output buffered for all clients together. Past it the clients with the largest "
        "buffers are disconnected first (Redis maxmemory-clients).",
        ge=65536,
        le=1 << 40,
    )
    send_timeout_seconds: float = _setting(
        60.0,
        "A client with output pending that accepts no byte for this long is disconnected "
        "(nginx send_timeout); a slow but live reader resets it with every write.",
        gt=0,
        le=MAX_SECONDS,
    )
    registration_timeout_seconds: float = _setting(
        60.0,
        "Under pressure only, connections silent since they connected for longer than this "
        "are closed, longest-silent first: when their address has per_ip.max_unregistered "
        "of them, or the server holds 90% of max_clients. Otherwise a reader who never "
        "speaks stays. 0 turns the check off.",
        ge=0,
        le=MAX_SECONDS,
    )
    announce_after_seconds: float = _setting(
        3.0,
        "A new connection is announced to its rooms (\"joined\") once it sends its first "
        "line or has been connected this long, so port scans, HTTP requests and TLS hellos "
        "leave no trace in any room; 0 announces at once.",
        ge=0,
        le=MAX_SECONDS,
    )
    partial_line_timeout_seconds: float = _setting(
        60.0,
        "An unfinished line may wait this long for its newline (slowloris defence, nginx "
        "client_header_timeout); 0 turns the check off.",
        ge=0,
        le=MAX_SECONDS,
    )
    idle_timeout_seconds: float = _setting(
        0.0,
        "Disconnect clients that send nothing for this long; 0 (default) never does: "
        "people idle in chat, and dead peers are found by TCP keepalive instead.",
        ge=0,
        le=MAX_SECONDS,
    )
    shutdown_timeout_seconds: float = _setting(
        10.0,
        "On SIGTERM/SIGINT, how long to keep flushing goodbyes before the remaining "
        "connections are cut (Redis shutdown-timeout).",
        gt=0,
        le=MAX_SECONDS,
    )
    max_clients: int = _setting(
        1000,
        "Most simultaneous client connections; more are refused, which protects file "
        "descriptors and memory. Lowered at start to RLIMIT_NOFILE minus reserve_fds "
        "(the soft limit is first raised to the hard one).",
        ge=1,
        le=MAX_COUNT,
    )
    reserve_fds: int = _setting(
        32,
        "File descriptors kept free for listeners, logs and plugins when max_clients is "
        "clamped to the process's limit (Redis reserves 32).",
        ge=8,
        le=MAX_COUNT,
    )
    max_nick_bytes: int = _setting(
        32,
        "Longest nickname, in UTF-8 bytes. Short enough to keep lines and listings readable.",
        ge=1,
        le=64,
    )
    max_rooms_per_client: int = _setting(
        25,
        "Rooms one client may be in at once: every room costs its members a line per "
        "event, and a client in thousands of rooms would cost the server per line.",
        ge=1,
        le=MAX_COUNT,
    )
    max_rooms: int = _setting(
        5000,
        "Rooms that may exist at once; a join that would create one more is refused.",
        ge=1,
        le=MAX_COUNT,
    )
    accept_batch: int = _setting(
        64,
        "accept() calls per listener per loop pass. Bounds the time spent accepting during "
        "a connection storm, so connected clients keep being served.",
        ge=1,
        le=MAX_COUNT,
    )
    accept_retry_seconds: float = _setting(
        0.5,
        "After accept() fails for lack of file descriptors, retry this often (nginx "
        "accept_mutex_delay); needed under edge-triggering, where no new event would come.",
        gt=0,
        le=MAX_SECONDS,
    )
    close_linger_seconds: float = _setting(
        2.0,
        "Seconds a closing connection may take to flush its output and see the peer's FIN "
        "before it is dropped, so peers that never close cannot hold resources.",
        gt=0,
        le=MAX_SECONDS,
    )


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """The core's own log (plugins such as `log` may keep their own files)."""

    level: str = _setting(
        "INFO",
        "Core log level. INFO records connections and errors without per-message noise.",
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        upper=True,
    )
    file: str | None = _setting(
        None,
        "Core log file; null logs to stderr (what service managers capture). A relative "
        "path resolves against the config file's folder, not the working directory.",
        pattern=r"(?s).+",
        describe="a non-empty path",
        path=True,
    )


@dataclass(frozen=True, slots=True)
class PerIpConfig:
    """Limits per client address (IPv4 /32, IPv6 /64), so one host cannot take every slot."""

    max_connections: int = _setting(
        10,
        "Simultaneous connections from one address; 0 = no limit. Generous enough for a "
        "LAN behind NAT (ngircd 5, ergo 16).",
        ge=0,
        le=MAX_COUNT,
    )
    connect_rate: int = _setting(
        10,
        "New connections one address may open per connect_window_seconds; 0 = no limit.",
        ge=0,
        le=MAX_COUNT,
    )
    connect_window_seconds: float = _setting(
        60.0, "The window for connect_rate.", gt=0, le=MAX_SECONDS
    )
    max_unregistered: int = _setting(
        3,
        "Connections from one address that have not sent a first line yet; 0 = no limit "
        "(UnrealIRCd max-unknown-connections-per-ip 3).",
        ge=0,
        le=MAX_COUNT,
    )


@dataclass(frozen=True, slots=True)
class FloodConfig:
    """Per-client rate limit: excess lines are delayed (fakelag), never silently dropped."""

    burst_lines: int = _setting(
        10, "Lines a client may send at once before the rate applies (token bucket size).",
        ge=1, le=MAX_COUNT,
    )
    lines_per_second: float = _setting(
        2.0,
        "Sustained rate. Excess lines wait, in order, and are processed as the budget "
        "refills; past limits.recvq_max_bytes of waiting lines the client is not read "
        "until they drain (it is told once). 0 turns the limit off.",
        ge=0,
        le=MAX_COUNT,
    )
    bytes_per_token: int = _setting(
        512,
        "A line costs 1 + len(line) // bytes_per_token tokens, so long pastes count more.",
        ge=16,
        le=MAX_BYTES,
    )


@dataclass(frozen=True, slots=True)
class NetConfig:
    """Socket options for client connections."""

    keepalive_idle_seconds: int = _setting(
        60, "TCP keepalive: idle time before the first probe; 0 = keepalive off.",
        ge=0, le=MAX_KEEPALIVE_SECONDS,
    )
    keepalive_interval_seconds: int = _setting(
        10, "TCP keepalive: time between probes.", ge=1, le=MAX_KEEPALIVE_SECONDS
    )
    keepalive_count: int = _setting(
        6, "TCP keepalive: unanswered probes before the peer is declared dead.",
        ge=1, le=MAX_KEEPALIVE_PROBES,
    )
    tcp_user_timeout_seconds: float = _setting(
        60.0,
        "TCP_USER_TIMEOUT: a peer that leaves sent data unacknowledged this long is dead; "
        "0 = the kernel default.",
        ge=0,
        le=MAX_SECONDS,
    )
    sndbuf_bytes: int = _setting(
        0,
        "SO_SNDBUF for client sockets; 0 = the kernel's default. Tests set it small to "
        "make slow readers show up quickly.",
        ge=0,
        le=MAX_BYTES,
    )


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Prometheus metrics over HTTP: off by default, and loopback-only when on."""

    enabled: bool = _setting(
        False, "Serve /metrics in the Prometheus text format (needs chatd[metrics])."
    )
    host: str = _setting(
        "127.0.0.1",
        "Address of the metrics listener; must be a loopback address.",
        pattern=r"127\.\d{1,3}\.\d{1,3}\.\d{1,3}|::1|localhost",
        describe="a loopback address",
    )
    port: int = _setting(9788, "Port of the metrics listener (0 = any free port).", ge=0, le=65535)


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """What must outlive a restart (history, registered nicks and rooms, bans): one SQLite
    file, written by a background thread so the chat never waits for the disk."""

    path: str | None = _setting(
        None,
        "The SQLite database file (created with its folder if missing); a relative path "
        "resolves against the config file's folder. null (the embedded default, so a bare "
        "`chatd` writes no file where it happens to run) keeps everything in memory, gone "
        "with the process; the shipped config.yaml uses data/chatd.sqlite3.",
        pattern=r"(?s).+",
        describe="a non-empty path",
        path=True,
    )
    batch_seconds: float = _setting(
        0.005,
        "The writer commits what has gathered at most this long after the first write of "
        "a batch: the most a crash (kill -9) can lose.",
        gt=0,
        le=1.0,
    )
    batch_max: int = _setting(
        5000,
        "Most writes in one commit. Large batches keep the writer ahead of a busy chat: "
        "each statement and commit waits for the event loop to yield the interpreter.",
        ge=1,
        le=MAX_COUNT,
    )
    queue_max: int = _setting(
        100_000,
        "Writes waiting for the disk, at most. While the disk fails (full, read-only) they "
        "wait; past this many, new ones are dropped and counted, so memory stays bounded.",
        ge=100,
        le=10 * MAX_COUNT,
    )
    read_timeout_seconds: float = _setting(
        0.02,
        "Longest a read (history on /history) may hold the event loop; a slower one is cut "
        "and the client told history is unavailable right now.",
        gt=0,
        le=1.0,
    )
    synchronous: str = _setting(
        "NORMAL",
        "SQLite's synchronous setting. NORMAL: a commit survives chatd crashing, an "
        "operating-system crash or power loss may take the last ones; FULL: also those, "
        "for an fsync per commit.",
        choices=("NORMAL", "FULL"),
        upper=True,
    )


_EMPTY: Mapping[str, Any] = types.MappingProxyType({})


@dataclass(frozen=True, slots=True)
class PluginHostConfig:
    """Which plugins load, and the guard rails every plugin runs under."""

    modules: tuple[str, ...] = _setting(
        (),
        "Dotted module names to load as plugins (importable from sys.path), in order, after "
        "the entry points and before plugin_dirs.",
        pattern=r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*",
        describe="dotted module names",
    )
    disable: tuple[str, ...] = _setting(
        (),
        "Plugin names not to load, built-ins included (e.g. [log]); their hooks and "
        "commands are simply absent.",
    )
    entry_points: bool = _setting(
        True,
        "Load plugins from installed packages that declare the entry-point group 'chatd'. "
        "Turn off to run only what this file names.",
    )
    slow_hook_seconds: float = _setting(
        0.1,
        "A hook call or command that keeps the loop busy longer than this is logged as a "
        "warning with the plugin's name and the time taken.",
        gt=0,
        le=MAX_SECONDS,
    )
    max_failures: int = _setting(
        5,
        "A plugin whose hooks raise or overrun slow_hook_seconds this many times within "
        "failure_window_seconds is disabled (until the next reload) and operators are told; "
        "0 never disables.",
        ge=0,
        le=MAX_COUNT,
    )
    failure_window_seconds: float = _setting(
        60.0, "The window for max_failures, in seconds.", gt=0,
        le=MAX_SECONDS,
    )


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration, shared read-only by the core and the plugins."""

    listen: tuple[ListenConfig, ...] = field(metadata={"doc": ListenConfig.__doc__})
    server: ServerConfig = field(metadata={"doc": ServerConfig.__doc__})
    limits: LimitsConfig = field(metadata={"doc": LimitsConfig.__doc__})
    logging: LoggingConfig = field(metadata={"doc": LoggingConfig.__doc__})
    per_ip: PerIpConfig = field(metadata={"doc": PerIpConfig.__doc__})
    flood: FloodConfig = field(metadata={"doc": FloodConfig.__doc__})
    net: NetConfig = field(metadata={"doc": NetConfig.__doc__})
    metrics: MetricsConfig = field(metadata={"doc": MetricsConfig.__doc__})
    storage: StorageConfig = field(metadata={"doc": StorageConfig.__doc__})
    plugin_host: PluginHostConfig = field(metadata={"doc": PluginHostConfig.__doc__})
    plugin_dirs: tuple[Path, ...] = field(
        metadata={
            "doc": "Folders searched for plugin modules, in order. Relative entries resolve "
            "against the config file's folder, so the config can be used from any "
            "working directory."
        }
    )
    plugins: Mapping[str, Mapping[str, Any]] = field(
        metadata={
            "doc": "One section per plugin, read by that plugin, not by the core. A null "
            "section is an empty one. Nested mappings are read-only mappings and lists "
            "are tuples."
        }
    )
    source: Path | None = field(metadata={"doc": "The file the config came from (absolute)."})
    locations: Mapping[str, int] = field(
        default_factory=lambda: _EMPTY,
        metadata={"doc": "Line of each plugin-section key (``plugins.NAME.KEY``), for errors."},
    )

    def error(self, key: str, message: str) -> ConfigError:
        """A ConfigError for ``key`` with this file and the key's line where known.

        For plugins validating their own section: ``raise server.config.error(
        "plugins.greeter.rooms", "expected a mapping")``.
        """
        file = str(self.source) if self.source is not None else None
        return ConfigError(message, file=file, key=key, line=self.locations.get(key))

    def check_number(self, key: str, value: Any, *, le: float, ge: float | None = None,
                     gt: float | None = None, whole: bool = False) -> Any:
        """``value`` if it is a number within the bounds, else a ConfigError for ``key``.

        For plugins validating their own section, with the rules and wording of chatd's
        own settings: true/false and strings are not numbers, nan and inf are refused,
        a whole number is required with ``whole`` (an int is accepted for a float).
        The upper bound is required because every number ends somewhere that has one
        (a timer, a socket option, a SQL parameter, an allocation): say which.
        """
        spec = _FieldSpec(key, int if whole else float, False, None, "",
                          Constraint(ge=ge, gt=gt, le=le))
        try:
            return _check(spec, value, Path.cwd())
        except _Invalid as exc:
            raise self.error(key, str(exc)) from None

    def check_text(self, key: str, value: Any, *, kind: str = "text") -> str:
        """``value`` if it is a string users may be shown, else a ConfigError for ``key``.

        ``kind`` is ``"name"`` (a room or server name) or ``"text"`` (a greeting):
        control, invisible and bidi characters are refused in both (see
        :func:`shown_text_problem`), zero-width joiners are allowed in text.
        """
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_show(value)}")
        problem = shown_text_problem(value, kind=kind)
        if problem:
            raise self.error(key, problem)
        return value

    def storage_path(self) -> Path | None:
        """The database file, absolute (None: in memory)."""
        if self.storage.path is None:
            return None
        base = self.source.parent if self.source is not None else Path.cwd()
        return base / self.storage.path

    def plugin_config(self, name: str) -> Mapping[str, Any]:
        """Return plugin `name`'s section, or an empty mapping so plugins need no None checks."""
        return self.plugins.get(name, _EMPTY)

    def with_listener(self, host: str | None = None, port: int | None = None) -> Config:
        """Return a copy with CLI overrides for the first listener, validated like the file.

        Overrides go through the same field rules, so ``--port 70000`` fails with the same
        message a config file would get instead of a bind() error later.
        """
        changes: dict[str, Any] = {}
        if host is not None:
            changes["host"] = host
        if port is not None:
            changes["port"] = port
        if not changes:
            return self
        specs = _LISTEN_SPECS
        base_dir = self.source.parent if self.source is not None else Path.cwd()
        checked: dict[str, Any] = {}
        for name, value in changes.items():
            try:
                checked[name] = _check(specs[name], value, base_dir)
            except _Invalid as exc:
                raise ConfigError(str(exc), key=f"listen.{name}") from None
        first = dataclasses.replace(self.listen[0], **checked)
        return dataclasses.replace(self, listen=(first, *self.listen[1:]))


# --------------------------------------------------------------------------------------
# Field specs: the dataclasses above, read once at import into a form the loader walks.
# --------------------------------------------------------------------------------------

_TYPE_WORDS: dict[type, tuple[str, str]] = {
    # kind: (phrase for messages, word for the reference table)
    int: ("an integer", "integer"),
    float: ("a number", "number"),
    str: ("a string", "string"),
    bool: ("a boolean (true or false)", "boolean"),
    tuple: ("a list of strings", "list of strings"),
}


@dataclass(frozen=True, slots=True)
class _FieldSpec:
    """One setting as the loader sees it: what it accepts and how to describe it."""

    name: str
    kind: type
    optional: bool
    default: Any
    doc: str
    constraint: Constraint


class _Invalid(Exception):
    """A value broke its field's rules; the caller adds file, key and line."""


def _show(value: Any) -> str:
    """repr() a value for a message, cut short so a huge value cannot flood a log line."""
    text = repr(list(value) if isinstance(value, tuple) else value)  # YAML lists are tuples here
    return text if len(text) <= 80 else text[:77] + "..."


def _num(bound: float) -> str:
    """Format a bound the way a user would write it (16, not 16.0)."""
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def _bounds_text(c: Constraint) -> str:
    """Numeric range wording, e.g. '>= 16' or 'between 0 and 65535'."""
    if c.ge is not None and c.le is not None:
        return f"between {_num(c.ge)} and {_num(c.le)}"
    parts = []
    if c.ge is not None:
        parts.append(f">= {_num(c.ge)}")
    if c.gt is not None:
        parts.append(f"> {_num(c.gt)}")
    if c.le is not None:
        parts.append(f"<= {_num(c.le)}")
    return " and ".join(parts)


def _rules_text(spec: _FieldSpec) -> str:
    """Non-numeric rule wording (choices, pattern), for messages and the reference."""
    c = spec.constraint
    parts = []
    if c.choices is not None:
        suffix = ", case-insensitive" if c.upper else ""
        parts.append(f"one of {', '.join(c.choices)}{suffix}")
    if c.pattern is not None:
        parts.append(c.describe or f"matching {c.pattern}")
    if c.path:
        parts.append("relative to the config file's folder")
    if c.shown:
        parts.append("no control, invisible or bidi characters")
    return "; ".join(parts)


def _expected(spec: _FieldSpec) -> str:
    """What a field accepts, as the 'expected ...' half of an error message."""
    text = _TYPE_WORDS[spec.kind][0]
    bounds = _bounds_text(spec.constraint)
    if bounds:
        text += f" {bounds}"
    rules = _rules_text(spec)
    if rules:
        text += f" ({rules})"
    if spec.optional:
        text += ", or null"
    return text


def _check(spec: _FieldSpec, value: Any, base_dir: Path) -> Any:
    """Validate and normalise one value for `spec`; raise _Invalid with the full message.

    Deliberately strict: bool is not an int (YAML's ``yes``/``on`` would otherwise become
    1), strings are never turned into numbers, and only float fields widen an int.
    """

    def invalid() -> _Invalid:
        return _Invalid(f"expected {_expected(spec)}, got {_show(value)}")

    if value is None:
        if spec.optional:
            return None
        raise invalid()
    result: Any = value
    if spec.kind is bool:
        ok = type(value) is bool
    elif spec.kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif spec.kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            try:
                result = float(value)
            except OverflowError:
                ok = False
            else:
                ok = math.isfinite(result)
    elif spec.kind is tuple:
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value)
        if ok:
            result = tuple(value)
            pattern = spec.constraint.pattern
            if pattern is not None and any(re.fullmatch(pattern, v) is None for v in result):
                raise invalid()
            return result
    else:
        ok = isinstance(value, spec.kind)
    if not ok:
        raise invalid()

    c = spec.constraint
    if isinstance(result, str) and c.upper:
        result = result.upper()
    if isinstance(result, (int, float)) and not isinstance(result, bool):
        if c.ge is not None and not result >= c.ge:
            raise invalid()
        if c.gt is not None and not result > c.gt:
            raise invalid()
        if c.le is not None and not result <= c.le:
            raise invalid()
    if isinstance(result, str):
        if c.choices is not None and result not in c.choices:
            raise invalid()
        if c.pattern is not None and re.fullmatch(c.pattern, result) is None:
            raise invalid()
        problem = shown_text_problem(result, kind=c.shown) if c.shown else None
        if problem:
            raise _Invalid(problem)
        if c.path:
            result = os.path.join(base_dir, result)
    return result


def _unpack_hint(hint: Any, where: str) -> tuple[type, bool]:
    """Split a field's type hint into (scalar kind, accepts None); reject anything else."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        rest = [a for a in args if a is not type(None)]
        if len(args) == 2 and len(rest) == 1:
            hint, optional = rest[0], True
    if typing.get_origin(hint) is tuple and typing.get_args(hint) == (str, Ellipsis):
        return tuple, optional
    if hint not in _TYPE_WORDS:
        raise TypeError(
            f"{where}: unsupported setting type {hint!r}; "
            "use int, float, str, bool or tuple[str, ...]"
        )
    return hint, optional


def _field_specs(cls: type) -> dict[str, _FieldSpec]:
    """Read a section dataclass into specs, failing at import if a field is malformed.

    Checking here (type supported, doc present, default valid under its own constraint)
    means a badly declared new setting breaks the import and every test, not a user.
    """
    hints = typing.get_type_hints(cls)
    specs: dict[str, _FieldSpec] = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("nested"):
            continue  # a sub-section, parsed on its own (listen[].tls)
        where = f"{cls.__name__}.{f.name}"
        kind, optional = _unpack_hint(hints[f.name], where)
        doc = f.metadata.get("doc")
        if not doc:
            raise TypeError(f"{where}: declare it with _setting(default, doc, ...)")
        if f.default is dataclasses.MISSING:
            raise TypeError(f"{where}: every setting needs a default")
        spec = _FieldSpec(
            name=f.name,
            kind=kind,
            optional=optional,
            default=f.default,
            doc=doc,
            constraint=f.metadata.get("constraint", Constraint()),
        )
        if kind in (int, float) and spec.constraint.le is None:
            raise TypeError(f"{where}: a number needs an upper bound (le=...): the range "
                            "the operating system and the libraries accept")
        try:
            _check(spec, f.default, Path.cwd())
        except _Invalid as exc:
            raise TypeError(f"{where}: default breaks its own constraint: {exc}") from None
        specs[f.name] = spec
    return specs


def _collect_sections() -> dict[str, tuple[type, dict[str, _FieldSpec]]]:
    """Every Config field whose type is a dataclass is a YAML section of that name."""
    hints = typing.get_type_hints(Config)
    sections: dict[str, tuple[type, dict[str, _FieldSpec]]] = {}
    for f in dataclasses.fields(Config):
        hint = hints[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            sections[f.name] = (hint, _field_specs(hint))
    return sections


_SECTIONS = _collect_sections()
# `listen` is a section, or a list of them.
_LISTEN_SPECS = _field_specs(ListenConfig)
_TLS_SPECS = _field_specs(TlsConfig)
# Top-level keys that are not typed sections; `source` is not a key at all.
_OTHER_KEYS = ("plugin_dirs", "plugins")
_TOP_LEVEL_KEYS = ("listen", *_SECTIONS, *_OTHER_KEYS)


def default_config() -> Config:
    """The embedded default: every section's defaults, no plugin folders, no plugin sections."""
    sections = {name: cls() for name, (cls, _specs) in _SECTIONS.items()}
    return Config(
        listen=(ListenConfig(),), **sections, plugin_dirs=(), plugins=_EMPTY, source=None
    )


# --------------------------------------------------------------------------------------
# YAML: nodes -> values, with lines for every error.
# --------------------------------------------------------------------------------------

_YAML = "tag:yaml.org,2002:"
_MAP_TAG = _YAML + "map"
_SEQ_TAG = _YAML + "seq"
_NULL_TAG = _YAML + "null"
_MERGE_TAG = _YAML + "merge"
# Exactly the tags yaml.safe_load can construct; everything else (!!python/..., !custom)
# is refused before construction.
_SAFE_TAGS = frozenset(t for t in yaml.SafeLoader.yaml_constructors if t is not None)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _join(path: str, key: object) -> str:
    """Dotted key path: 'limits' + 'max_line_bytes' -> 'limits.max_line_bytes'."""
    return f"{path}.{key}" if path else str(key)


def _short_tag(tag: str) -> str:
    """Show YAML core tags the way they are written in a file ('!!int')."""
    return "!!" + tag[len(_YAML) :] if tag.startswith(_YAML) else tag


def _freeze(value: Any) -> Any:
    """Make values built by the SafeConstructor (for !!set, !!omap, ...) read-only too."""
    if isinstance(value, dict):
        return types.MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, set):
        return frozenset(value)
    return value


_Pairs = dict[Hashable, tuple[Node, Node]]


class _Builder:
    """Builds a Config from a composed node tree, keeping each node's line for errors.

    Values are memoised per node, so YAML aliases cost nothing extra (an alias "bomb"
    stays linear) and an alias that contains itself is detected instead of recursing.
    """

    def __init__(self, loader: yaml.SafeLoader, file: str | None, base_dir: Path) -> None:
        self.loader = loader
        self.file = file
        self.base_dir = base_dir
        self.values: dict[int, Any] = {}
        self.pairs_cache: dict[int, _Pairs] = {}
        self.in_progress: set[int] = set()
        self.merging: set[int] = set()
        self.locations: dict[str, int] = {}

    def error(self, message: str, key: str | None, node: Node | None) -> ConfigError:
        """A ConfigError at `node`'s line (YAML marks are 0-based, editors are 1-based)."""
        line = node.start_mark.line + 1 if node is not None else None
        return ConfigError(message, file=self.file, key=key or None, line=line)

    # -- generic values -------------------------------------------------------------

    def check_tag(self, node: Node, key: str) -> None:
        """Refuse tags yaml.safe_load would refuse, before anything is constructed."""
        if node.tag not in _SAFE_TAGS:
            raise self.error(
                f"unsupported YAML tag {_short_tag(node.tag)!r}: only plain YAML data is "
                "allowed (maps, lists, strings, numbers, booleans, null)",
                key,
                node,
            )

    def is_null(self, node: Node) -> bool:
        """True for an empty value or explicit null (`key:`, `key: ~`, `key: null`)."""
        return isinstance(node, ScalarNode) and node.tag == _NULL_TAG

    def construct(self, node: Node, key: str) -> Any:
        """Construct a scalar (or a rare !!set/!!omap) with the SafeConstructor."""
        self.check_tag(node, key)
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            raise self.error(exc.problem or str(exc), key, node) from None
        except Exception as exc:
            # The SafeConstructor reports bad explicit scalars (`!!int abc`, `!!bool maybe`)
            # as ValueError/KeyError/...; whatever it is, it is a problem in the file.
            value = getattr(node, "value", "")
            raise self.error(
                f"invalid {_short_tag(node.tag)} value {_show(value)}: {exc}", key, node
            ) from None

    def describe(self, node: Node, key: str) -> str:
        """Name what a node holds, for 'expected X, got Y' messages."""
        if isinstance(node, MappingNode):
            return "a mapping"
        if isinstance(node, SequenceNode):
            return "a list"
        return _show(self.construct(node, key))

    def expand(self, text: str, key: str, node: Node) -> str:
        """Replace ${NAME} with os.environ[NAME] so secrets can stay out of the file."""

        def lookup(match: re.Match[str]) -> str:
            name = match.group(1)
            try:
                return os.environ[name]
            except KeyError:
                raise self.error(
                    f"environment variable {name!r} is not set (referenced as ${{{name}}})",
                    key,
                    node,
                ) from None

        return _ENV_REF.sub(lookup, text) if "${" in text else text

    def value(self, node: Node, key: str) -> Any:
        """Any plain YAML value, frozen: mappings -> MappingProxyType, lists -> tuples."""
        node_id = id(node)
        if node_id in self.values:
            return self.values[node_id]
        if node_id in self.in_progress:
            raise self.error("recursive alias: this value contains itself", key, node)
        self.check_tag(node, key)
        self.in_progress.add(node_id)
        try:
            result: Any
            if isinstance(node, ScalarNode):
                result = self.construct(node, key)
                if isinstance(result, str):
                    result = self.expand(result, key, node)
            elif isinstance(node, MappingNode) and node.tag == _MAP_TAG:
                result = types.MappingProxyType(
                    {
                        k: self.value(v, _join(key, k))
                        for k, (_knode, v) in self.pairs(node, key).items()
                    }
                )
            elif isinstance(node, SequenceNode) and node.tag == _SEQ_TAG:
                result = tuple(self.value(item, f"{key}[{i}]") for i, item in enumerate(node.value))
            else:
                result = _freeze(self.construct(node, key))
        finally:
            self.in_progress.discard(node_id)
        self.values[node_id] = result
        return result

    def key(self, node: Node, path: str) -> Hashable:
        """A mapping key; only scalars, because lists and mappings are not hashable."""
        if not isinstance(node, ScalarNode):
            raise self.error(
                "a mapping key must be a plain scalar, not a list or mapping", path, node
            )
        key: Hashable = self.construct(node, path)
        return key

    def pairs(self, node: MappingNode, path: str) -> _Pairs:
        """A mapping's entries by key, refusing duplicates and applying `<<` merge keys.

        A duplicate key is an error rather than "last one wins" because a silently
        ignored setting is exactly the kind of mistake this module exists to catch.
        Merged-in keys may be overridden by the mapping's own keys (YAML merge rules).
        """
        node_id = id(node)
        cached = self.pairs_cache.get(node_id)
        if cached is not None:
            return cached
        if node_id in self.merging:
            raise self.error("recursive merge: this mapping merges itself", path, node)
        self.merging.add(node_id)
        try:
            own: _Pairs = {}
            merged: _Pairs = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE_TAG:
                    for source in self.merge_sources(value_node, path):
                        for k, pair in self.pairs(source, path).items():
                            merged.setdefault(k, pair)
                    continue
                k = self.key(key_node, path)
                if k in own:
                    first = own[k][0].start_mark.line + 1
                    raise self.error(
                        f"duplicate key (first defined on line {first})", _join(path, k), key_node
                    )
                own[k] = (key_node, value_node)
        finally:
            self.merging.discard(node_id)
        result = {**merged, **own}
        self.pairs_cache[node_id] = result
        return result

    def merge_sources(self, node: Node, path: str) -> list[MappingNode]:
        """The mappings a `<<` key merges: one mapping or a list of mappings."""
        if isinstance(node, MappingNode) and node.tag == _MAP_TAG:
            return [node]
        if isinstance(node, SequenceNode) and all(
            isinstance(item, MappingNode) and item.tag == _MAP_TAG for item in node.value
        ):
            return list(node.value)
        raise self.error("a '<<' merge key needs a mapping or a list of mappings", path, node)

    # -- the schema -------------------------------------------------------------------

    def unknown(self, dotted: str, key: object, known: list[str], node: Node) -> ConfigError:
        """An unknown key, with a did-you-mean when one is close (typos are the usual cause)."""
        close = difflib.get_close_matches(str(key), known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
        return self.error(f"unknown key ({hint})", dotted, node)

    def expect_mapping(self, node: Node, key: str, what: str) -> MappingNode:
        """Insist on a plain mapping, naming what was found instead."""
        self.check_tag(node, key)
        if not (isinstance(node, MappingNode) and node.tag == _MAP_TAG):
            raise self.error(f"expected {what}, got {self.describe(node, key)}", key, node)
        return node

    def section(self, name: str, node: Node, cls: type | None = None,
                specs: dict[str, _FieldSpec] | None = None,
                nested: tuple[str, ...] = ()) -> Any:
        """One typed section: known keys only, each value checked against its field spec."""
        if cls is None or specs is None:
            cls, specs = _SECTIONS[name]
        if self.is_null(node):
            return cls()
        mapping = self.expect_mapping(node, name, "a mapping of settings")
        values: dict[str, Any] = {}
        for k, (key_node, value_node) in self.pairs(mapping, name).items():
            dotted = _join(name, k)
            spec = specs.get(k) if isinstance(k, str) else None
            if spec is None:
                raise self.unknown(dotted, k, [*specs, *nested], key_node)
            raw = self.value(value_node, dotted)
            try:
                values[spec.name] = _check(spec, raw, self.base_dir)
            except _Invalid as exc:
                raise self.error(str(exc), dotted, value_node) from None
        return cls(**values)

    def _split_off(self, node: Node, name: str) -> tuple[Node, Node | None]:
        """``node`` without its key ``name`` (a sub-section), and that key's value."""
        if not isinstance(node, MappingNode):
            return node, None
        kept, found = [], None
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == name:
                found = value_node
            else:
                kept.append((key_node, value_node))
        if found is None:
            return node, None
        return MappingNode(node.tag, kept, node.start_mark, node.end_mark,
                           flow_style=node.flow_style), found

    def check_proxies(self, key: str, node: Node, listener: ListenConfig) -> None:
        """``trusted_proxies``: addresses or networks, and some if ``proxy_protocol``."""
        for value in listener.trusted_proxies:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise self.error(f"not an address or network: {value!r}",
                                 f"{key}.trusted_proxies", node) from None
        if listener.proxy_protocol and not listener.trusted_proxies:
            raise self.error("proxy_protocol needs trusted_proxies (the proxies' addresses)",
                             f"{key}.trusted_proxies", node)

    def tls(self, key: str, node: Node) -> TlsConfig:
        """``listen[].tls``: cert and key required; ca required to verify clients."""
        tls = self.section(key, node, TlsConfig, _TLS_SPECS)
        for name in ("cert", "key"):
            if getattr(tls, name) is None:
                raise self.error(f"TLS needs `{name}` (a PEM file)", f"{key}.{name}", node)
        if tls.verify_clients and tls.ca is None:
            raise self.error("verify_clients needs `ca` (the CA file client certificates "
                             "are checked against)", f"{key}.ca", node)
        return tls

    def listeners(self, node: Node) -> tuple[ListenConfig, ...]:
        """``listen``: one mapping, or a list of mappings; no two on the same address."""
        key = "listen"
        if self.is_null(node):
            return (ListenConfig(),)
        self.check_tag(node, key)
        if isinstance(node, SequenceNode) and node.tag == _SEQ_TAG:
            if not node.value:
                raise self.error("expected at least one listener", key, node)
            items = [(f"{key}[{i}]", item) for i, item in enumerate(node.value)]
        else:
            items = [(key, node)]
        listeners: list[ListenConfig] = []
        seen: dict[tuple[str, int], str] = {}
        for item_key, item in items:
            item, tls_node = self._split_off(item, "tls")
            listener = self.section(item_key, item, ListenConfig, _LISTEN_SPECS, ("tls",))
            if tls_node is not None and not self.is_null(tls_node):
                listener = dataclasses.replace(listener, tls=self.tls(f"{item_key}.tls", tls_node))
            self.check_proxies(item_key, item, listener)
            address = (listener.host, listener.port)
            if listener.port and address in seen:
                raise self.error(
                    f"{listener.host}:{listener.port} is also {seen[address]}", item_key, item
                )
            seen[address] = item_key
            listeners.append(listener)
        return tuple(listeners)

    def plugin_dirs(self, node: Node) -> tuple[Path, ...]:
        """A list of folder names, resolved against the config file's folder."""
        key = "plugin_dirs"
        if self.is_null(node):
            return ()
        self.check_tag(node, key)
        if not (isinstance(node, SequenceNode) and node.tag == _SEQ_TAG):
            raise self.error(
                f"expected a list of folder names, got {self.describe(node, key)}", key, node
            )
        dirs: list[Path] = []
        for i, item in enumerate(node.value):
            item_key = f"{key}[{i}]"
            entry = self.value(item, item_key)
            if not isinstance(entry, str) or not entry:
                raise self.error(
                    f"expected a non-empty string (a folder), got {_show(entry)}", item_key, item
                )
            dirs.append(self.base_dir / entry)  # an absolute entry replaces base_dir
        return tuple(dirs)

    def plugins(self, node: Node) -> Mapping[str, Mapping[str, Any]]:
        """Plugin name -> read-only settings; contents are the plugins' business."""
        key = "plugins"
        if self.is_null(node):
            return _EMPTY
        mapping = self.expect_mapping(node, key, "a mapping of plugin name to settings")
        sections: dict[str, Mapping[str, Any]] = {}
        for name, (key_node, value_node) in self.pairs(mapping, key).items():
            dotted = _join(key, name)
            if not isinstance(name, str) or not name:
                raise self.error(
                    f"a plugin name must be a non-empty string, got {_show(name)}", dotted, key_node
                )
            self.locations[dotted] = key_node.start_mark.line + 1
            if self.is_null(value_node):
                sections[name] = _EMPTY
            else:
                section = self.expect_mapping(value_node, dotted, "a mapping of plugin settings")
                sections[name] = self.value(section, dotted)
                self.record_locations(section, dotted)
        return types.MappingProxyType(sections)

    def record_locations(self, node: MappingNode, path: str, depth: int = 0) -> None:
        """Remember the line of every key under ``path`` (for plugins' own errors)."""
        if depth > 16:  # deeper than any sane plugin setting; aliases cannot loop us
            return
        for sub_key, (key_node, value_node) in self.pairs(node, path).items():
            dotted = _join(path, sub_key)
            self.locations[dotted] = key_node.start_mark.line + 1
            if isinstance(value_node, MappingNode) and value_node.tag == _MAP_TAG:
                self.record_locations(value_node, dotted, depth + 1)

    def config(self, root: Node | None, source: Path | None) -> Config:
        """The whole document. Every section is optional; an empty document is the defaults."""
        config = dataclasses.replace(default_config(), source=source)
        if root is None or self.is_null(root):
            return config
        mapping = self.expect_mapping(root, "", "a mapping of sections at the top level")
        changes: dict[str, Any] = {}
        for k, (key_node, value_node) in self.pairs(mapping, "").items():
            if k == "listen":
                changes["listen"] = self.listeners(value_node)
            elif k in _SECTIONS:
                changes[str(k)] = self.section(str(k), value_node)
            elif k == "plugin_dirs":
                changes["plugin_dirs"] = self.plugin_dirs(value_node)
            elif k == "plugins":
                changes["plugins"] = self.plugins(value_node)
            else:
                raise self.unknown(str(k), k, list(_TOP_LEVEL_KEYS), key_node)
        changes["locations"] = types.MappingProxyType(self.locations)
        return dataclasses.replace(config, **changes)


def _yaml_error(exc: yaml.YAMLError, file: str | None, text: str) -> ConfigError:
    """Turn a PyYAML syntax error into a ConfigError with a 1-based line."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem, context = exc.problem, exc.context
        if problem and context:
            # PyYAML's own rendering is "<context> <context mark> <problem> <problem mark>";
            # keep that reading order, on one line, naming the context's line if different.
            if exc.context_mark is not None and exc.context_mark.line + 1 != line:
                context += f" (line {exc.context_mark.line + 1})"
            detail = (
                f"{context}, {problem}" if problem.startswith("but ") else f"{problem}, {context}"
            )
        else:
            detail = problem or context or "syntax error"
        return ConfigError(f"invalid YAML: {detail}", file=file, line=line)
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        return ConfigError(
            f"invalid YAML: character #x{exc.character:04x} is not allowed", file=file, line=line
        )
    return ConfigError(f"invalid YAML: {exc}", file=file)


def _parse(text: str, file: str | None, source: Path | None, base_dir: Path) -> Config:
    """Compose `text` with a SafeLoader and build the Config from the nodes."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:  # the reader refuses control characters up front
        raise _yaml_error(exc, file, text) from None
    try:
        try:
            root = loader.get_single_node()
        except yaml.YAMLError as exc:
            raise _yaml_error(exc, file, text) from None
        return _Builder(loader, file, base_dir).config(root, source)
    except RecursionError:
        raise ConfigError("the document is nested too deeply", file=file) from None
    finally:
        loader.dispose()


def parse_config(text: str, *, source: Path | None = None) -> Config:
    """Parse config text. `source` names it in errors and sets the base folder for paths.

    Relative paths resolve against ``source.parent`` (made absolute now, so later
    ``chdir`` calls cannot change their meaning), or the current directory without one.
    """
    if source is None:
        return _parse(text, None, None, Path.cwd())
    absolute = Path(os.path.abspath(source))
    return _parse(text, str(source), absolute, absolute.parent)


#: The largest config file read (a config is a few KiB; a huge one is a mistake or
#: an attack on whoever runs --check-config on it).
MAX_CONFIG_BYTES = 1 << 20


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and parse a config file; every failure, including I/O, is a ConfigError.

    The file must be a regular file (not a FIFO or a device that would block or
    never end) of at most :data:`MAX_CONFIG_BYTES`.
    """
    file = os.fspath(path)
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
        with os.fdopen(os.open(file, os.O_RDONLY | os.O_NONBLOCK), "rb") as raw:
            info = os.fstat(raw.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError("not a regular file", file=file)
            if info.st_size > MAX_CONFIG_BYTES:
                raise ConfigError(
                    f"too large ({info.st_size} bytes; at most {MAX_CONFIG_BYTES})", file=file
                )
            data = raw.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"too large (more than {MAX_CONFIG_BYTES} bytes)", file=file)
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"cannot read file: not valid UTF-8 (bad byte at offset {exc.start})", file=file
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror or exc}", file=file) from None
    absolute = Path(os.path.abspath(file))
    return _parse(text, file, absolute, absolute.parent)


# --------------------------------------------------------------------------------------
# Reference docs, generated from the same field metadata the loader uses.
# --------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    """Make text safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def config_reference() -> str:
    """Render every section, key, type, default, rule and doc as Markdown.

    Generated rather than hand-written so the docs cannot drift from what the loader
    actually accepts.
    """
    config_fields = {f.name: f for f in dataclasses.fields(Config)}
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by chatd.config.config_reference(); do not edit by hand. -->",
        "",
        "chatd reads one YAML file. Every section and key is optional; a missing key keeps "
        "the default shown here. Unknown keys, duplicate keys, wrong types and out-of-range "
        "values are errors that name the file, the key and the line. Numbers are never "
        "read from strings, and `true`/`false` are not numbers. `${NAME}` inside any string "
        "value is replaced by the environment variable `NAME` when the file is loaded "
        "(an unset variable is an error).",
        "",
        "Every number has a ceiling: the range the operating system and the libraries "
        "accept, so a config that passes `--check-config` works. Timeouts and windows "
        f"are at most {_num(MAX_SECONDS)} s (timers end in `epoll_wait`, whose timeout is "
        f"a C int of milliseconds); byte limits and socket buffers at most {MAX_BYTES} "
        f"(`setsockopt` takes a C int, doubled by Linux); counts at most {MAX_COUNT} "
        "(about the most descriptors a process may have); TCP keepalive within the "
        "kernel's maxima. `nan`, `inf` and huge numbers are refused. Text users see "
        "(`server.name`, and in plugin sections welcome lines, greetings and room names) "
        "may not hold control, invisible or bidi characters.",
        "",
    ]
    sections = {"listen": _LISTEN_SPECS, "listen[].tls": _TLS_SPECS,
                **{n: specs for n, (_c, specs) in _SECTIONS.items()}}
    for name, specs in sections.items():
        lines += [
            f"## `{name}`",
            "",
            _cell(config_fields[name].metadata["doc"] if name in config_fields
                  else (TlsConfig.__doc__ or "")),
            "",
            "| Key | Type | Default | Allowed | Description |",
            "| --- | --- | --- | --- | --- |",
        ]
        if name == "listen":
            lines[-3:-3] = [
                "A single mapping is one listener. A list of mappings starts one listener "
                "each; `--host`/`--port` override the first.",
                "",
            ]
        for spec in specs.values():
            kind = _TYPE_WORDS[spec.kind][1] + (" or null" if spec.optional else "")
            allowed = "; ".join(
                part for part in (_bounds_text(spec.constraint), _rules_text(spec)) if part
            )
            lines.append(
                f"| `{name}.{spec.name}` | {kind} | `{json.dumps(spec.default)}` "
                f"| {_cell(allowed) or 'any'} | {_cell(spec.doc)} |"
            )
        if name == "listen":
            for f in dataclasses.fields(ListenConfig):
                if f.metadata.get("nested"):
                    lines.append(f"| `listen.{f.name}` | mapping or null | `null` "
                                 f"| `listen[].{f.name}` below | {_cell(f.metadata['doc'])} |")
        lines.append("")
    for name in _OTHER_KEYS:
        lines += [f"## `{name}`", "", _cell(config_fields[name].metadata["doc"]), ""]
    lines += [
        "Example:",
        "",
        "```yaml",
        "plugin_dirs: [plugins]",
        "plugins:",
        "  oper:",
        "    password: ${CHATD_OPER_PASSWORD}",
        "```",
        "",
    ]
    return "\n".join(lines)


CONFIG_REFERENCE: str = config_reference()
