"""chatd's single YAML config file, turned into validated, typed, immutable dataclasses.

This module is the schema: one frozen dataclass per section, each setting one field
declared with ``_setting(default, doc, ...)`` (a type hint, a one-line doc and a
:class:`Constraint`), and :class:`Config`, the whole of it.  Three sibling modules
do the rest, each one job, none of them knowing the schema:

* :mod:`chatd.config_rules`: what a value must be, checked and worded from the
  field's constraint (every number with the ceiling the system accepts);
* :mod:`chatd.config_yaml`: YAML nodes to plain values, a line for every error,
  plain data only (a config file can never run code);
* :mod:`chatd.config_docs`: the reference, docs/config.md, from the same rows.

Why it is built this way:

* One file configures the whole server, so a mistake in it must be cheap to find: every
  error is a :class:`ConfigError` that names the file, the dotted key and the line
  (``config.yaml:12: limits.max_line_bytes: expected an integer between 16 and
  1073741824, got 'abc'``).
* Validation is declarative: the loader, the error messages and
  :func:`config_reference` all walk the fields, so adding a setting is adding a field.
* The result is immutable (frozen dataclasses, tuples, ``MappingProxyType``) because the
  config is shared by the core and every plugin; nobody may change it behind the others'
  backs. CLI overrides make a new object with :meth:`Config.with_listener`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from yaml.nodes import MappingNode, Node, SequenceNode

from .config_docs import Section, render_reference
from .config_rules import (
    MAX_BYTES,
    MAX_COUNT,
    MAX_KEEPALIVE_PROBES,
    MAX_KEEPALIVE_SECONDS,
    MAX_READ_BYTES,
    MAX_SECONDS,
    ConfigError,
    Constraint,
    FieldSpec,
    Invalid,
    check_value,
    field_specs,
    num,
    redact_url,
    show,
    shown_text_problem,
)
from .config_rules import (
    setting as _setting,
)
from .config_yaml import (
    MAP_TAG,
    MAX_CONFIG_BYTES,
    SEQ_TAG,
    NodeReader,
    compose,
    join_key,
    read_config_text,
)

__all__ = [
    "MAX_BYTES",
    "MAX_CONFIG_BYTES",
    "MAX_COUNT",
    "MAX_KEEPALIVE_PROBES",
    "MAX_KEEPALIVE_SECONDS",
    "MAX_READ_BYTES",
    "MAX_SECONDS",
    "ClusterConfig",
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


#: A protocol's name, as a listener's ``protocol:`` names it.  Which names exist is the
#: protocol registry's business (:mod:`chatd.protocols.registry`: the built-ins and the
#: ones plugins register), checked once the plugins are loaded.
PROTOCOL_NAME = r"[a-z][a-z0-9_-]{0,31}"

#: Nothing: a read-only mapping shared by every listener without options of its own.
_NO_OPTIONS: Mapping[str, Any] = types.MappingProxyType({})

#: ``server.node_id``: a host-name-like word (it is one by default), safe in a session
#: id (``node:client``), a log line and another node's key space.
NODE_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}"


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
        "What the listener speaks: a registered protocol, such as line (people with nc, "
        "telnet, socat) or jsonl (programs: one JSON object per line each way, see "
        "docs/protocols.md); plugins can register more. Each protocol's own keys are "
        "listed below.",
        pattern=PROTOCOL_NAME,
        describe="a protocol's name",
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
    options: Mapping[str, Any] = field(default_factory=lambda: _NO_OPTIONS, metadata={
        "doc": "The protocol's own keys (say `history_replay`), read-only. As loaded, the "
        "keys the core does not know, unchecked; once the plugins are loaded, every option "
        "of the listener's protocol, checked against its registration and with its "
        "defaults (chatd.protocols.registry).",
        "rest": True,
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
    node_id: str | None = _setting(
        None,
        "This node's name in every event it makes and in its clients' session ids "
        "(`node:client`): what tells another node's events and clients from this one's. "
        "Unique per node of a cluster and kept across restarts. null: the host name "
        "(`chatd` if the host name is not such a name). Read at start (a reload keeps "
        "the running value).",
        pattern=NODE_ID_PATTERN,
        describe="1 to 64 of A-Z a-z 0-9 _ - . starting with a letter or digit",
    )
    node_number: int = _setting(
        0,
        "This node's number among `node_count`: its event ids are node_number modulo "
        "node_count and its guest nicks are numbered the same way, so no two nodes make "
        "the same id or guest nick. Read at start.",
        ge=0,
        le=1023,
    )
    node_count: int = _setting(
        1,
        "How many node numbers the cluster's event ids are spread over (1: a single "
        "server, numbering events and guests 1 by 1). Every node of a cluster has the "
        "same value, and node_number below it. Read at start.",
        ge=1,
        le=1024,
    )
    cloak_addresses: bool = _setting(
        True,
        "Show a client's address to other users as a cloak (a keyed hash, the same for "
        "the same address: `guest-1@5d41402abc4b.cloak`), not the address itself. "
        "Operators still see real addresses. Read at start.",
    )
    cloak_key: str | None = _setting(
        None,
        "The secret mixed into address cloaks, so they cannot be reversed by trying "
        "every address. null: a random key per start (cloaks change when the server "
        "restarts); set it (e.g. `${CHATD_CLOAK_KEY}`, the same on every node) for "
        "cloaks that stay the same across restarts and nodes.",
    )

    def node(self) -> str:
        """The node id: ``node_id``, or the host name when it is null (``chatd`` if the
        host name does not fit :data:`NODE_ID_PATTERN`)."""
        if self.node_id is not None:
            return self.node_id
        import re
        import socket

        host = socket.gethostname()
        return host if re.fullmatch(NODE_ID_PATTERN, host) else "chatd"


#: The smallest ``limits.tick_read_bytes`` that is not 0 (off): ``read_budget_bytes``'s floor.
MIN_TICK_READ_BYTES = 1024


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
    tick_read_bytes: int = _setting(
        65536,
        "Bytes read from all connections together per event-loop pass; 0 = no limit, else "
        "at least 1024 (below read_budget_bytes, it caps each read too). Once a pass has "
        "read this much, the remaining reads wait for the next pass, first in line (the "
        "data waits in the kernel): a burst from many clients is spread over passes, so "
        "everyone else's reply never waits for the whole burst.",
        ge=0,
        le=MAX_BYTES,
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
    greeting_delay_seconds: float = _setting(
        0.25,
        "A line or jsonl connection becomes a user (a guest nick, the welcome, the default "
        "room) at its first line, or once it has sent nothing this long (bytes with no line end "
        "yet wait for their line): so a person at nc is "
        "welcomed at once, while an HTTP request, a TLS hello or binary junk sent on "
        "connecting is refused before anyone is made of it (no nick, no hook, no log line). "
        "0 makes the user as soon as the connection is ready (after its TLS handshake or "
        "PROXY header). At most 2: a person waiting longer thinks the server is dead.",
        ge=0,
        le=2,
    )
    announce_after_seconds: float = _setting(
        3.0,
        "A new connection is announced to its rooms (\"joined\") once it sends its first "
        "line or has been connected this long, so port scans, HTTP requests and TLS hellos "
        "leave no trace in any room; 0 announces at once.",
        ge=0,
        le=MAX_SECONDS,
    )
    presence_timeout_seconds: float = _setting(
        5.0,
        "How long a command waits for the delivery backend to answer a presence question "
        "(is a nick free, who has it, who is in a room). The client's later lines wait "
        "meanwhile, in order (nobody else's); past it the client is told to try again and "
        "a late answer is dropped. The built-in local backend answers at once.",
        gt=0,
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
    exempt_accounts: tuple[str, ...] = _setting(
        (),
        "Registered nicks (accounts) whose lines are never delayed, once identified: "
        "trusted bots and bridges. Matched case-insensitively against client.account, "
        "never the nick alone, so nobody is exempt by taking a name.",
        # What chatd.chat.nicks accepts as a nick: an entry no nick can be exempts nobody.
        pattern=r"[A-Za-z_\[\]\\^{}|`][A-Za-z0-9_\-\[\]\\^{}|`]{0,63}",
        describe="registered nicks: ASCII letters, digits and _-[]\\^{}|`, not starting with "
                 "a digit or -",
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
    file, or a PostgreSQL database that several chatd processes share, written by a
    background thread so the chat never waits for the database."""

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
    url: str | None = _setting(
        None,
        "A PostgreSQL server instead of an SQLite file, shared by every chatd process "
        "that names it: postgresql://user:password@host:port/database?sslmode=verify-full "
        "(any libpq parameter may follow the ?). The password may instead come from "
        "PGPASSWORD or a ~/.pgpass file (PGPASSFILE); it is never logged. Needs the "
        "postgres extra (pip install 'chatd[postgres]'); see docs/persistence.md. Set "
        "path or url, not both.",
        pattern=r"(?s).+",
        describe="a postgresql:// URL",
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
    ask_timeout_seconds: float = _setting(
        2.0,
        "Longest a read answered off the loop (history replay and /history, /identify, "
        "/register, a plugin's server.ask_store) may take before the person who asked is "
        "told it is unavailable. Nobody else waits meanwhile.",
        gt=0,
        le=60.0,
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


#: The scheme of a ``cluster.redis_url`` that names Redis Sentinels, not a Redis.
SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379


@dataclass(frozen=True, slots=True)
class SentinelAddress:
    """Where the cluster's Redis is, through Sentinel: the sentinels to ask, the name
    of the master they watch, and how to talk to the master they name."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None


def redis_url_problem(url: str) -> str | None:
    """Why a ``redis://`` or ``rediss://`` URL would not parse, or None: checked here so
    that a bad one stops the start with a config error, not a traceback in the cluster
    plugin (which then runs without the cluster) quoting part of the URL — a password
    holding ``/``, ``#`` or ``?`` is split there, and urllib names the piece it read as
    the port.  The text never quotes the URL."""
    from urllib.parse import urlsplit

    encode = ("(a password holding / # ? @ or [ must be percent-encoded, or kept out of "
              "the URL: password_file, password_env)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return f"expected host[:port] after the scheme, with a port from 1 to 65535 {encode}"
    if "@" in parts.path + parts.query + parts.fragment:
        return f"expected host[:port] after the scheme, found an @ after it {encode}"
    if port == 0:
        return "expected a port from 1 to 65535"
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        return "expected a database number (/0, /1...) after host[:port]"
    return None


def parse_sentinel_url(url: str) -> SentinelAddress:
    """``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/master[/db]``
    with optional ``?sentinel_username=...&sentinel_password=...`` (the sentinels' own
    AUTH); the user and password before ``@`` are the master's.  A ValueError says what
    is wrong without quoting the URL (it may hold a password)."""
    from urllib.parse import parse_qsl, unquote

    scheme, _, rest = url.partition("://")
    if scheme.lower() != SENTINEL_SCHEME:
        raise ValueError(f"expected a {SENTINEL_SCHEME}:// URL")
    rest, _, query = rest.partition("?")
    at = rest.rfind("@")
    userinfo, rest = (rest[:at], rest[at + 1:]) if at >= 0 else (None, rest)
    hosts, _, path = rest.partition("/")
    sentinels = tuple(_sentinel_host(part) for part in hosts.split(","))
    parts = [unquote(part) for part in path.split("/")] if path else []
    if not parts or not parts[0] or len(parts) > 2:
        raise ValueError("expected the master's name after the sentinels: "
                         "redis+sentinel://host:26379/<master name>[/<db>]")
    db = 0
    if len(parts) == 2 and parts[1]:
        if not parts[1].isdigit():
            raise ValueError("expected a database number after the master's name")
        db = int(parts[1])
    username = password = None
    if userinfo is not None:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    options: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in ("sentinel_username", "sentinel_password"):
            raise ValueError(f"unknown option {key[:40]!r} (known: sentinel_username, "
                             "sentinel_password)")
        options[key] = value
    return SentinelAddress(sentinels, parts[0], db, username, password,
                           options.get("sentinel_username") or None,
                           options.get("sentinel_password"))


def _sentinel_host(text: str) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port``: a sentinel's address."""
    host, port = text, ""
    if text.startswith("["):
        host, _, after = text[1:].partition("]")
        port = after[1:] if after.startswith(":") else after
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host:
        raise ValueError("expected host:port for each sentinel, separated by commas")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError("expected a port from 1 to 65535 for each sentinel")
    return host, int(port) if port else SENTINEL_PORT


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Several chatd nodes acting as one server, joined through Redis (docs/cluster.md).
    Off unless redis_url is set; needs the cluster extra (pip install 'chatd[cluster]').
    Read at start: a reload keeps the running link."""

    redis_url: str | None = _setting(
        None,
        "The Redis every node of the cluster names: redis://[:password@]host:port/db, "
        "rediss:// for TLS, or redis+sentinel://[:password@]host:26379[,host:26379...]"
        "/master/db to ask Redis Sentinels for the current master (?sentinel_password=... "
        "if the sentinels want one). null: no cluster (one process, nothing shared). The "
        "URL is never logged (errors show it with the passwords as ***).",
        pattern=r"(?s).+",
        describe="a redis://, rediss:// or redis+sentinel:// URL",
    )
    password_env: str | None = _setting(
        None,
        "The name of an environment variable holding the Redis password, instead of "
        "writing it in redis_url.",
        pattern=r"[A-Za-z_][A-Za-z0-9_]{0,127}",
        describe="an environment variable's name",
    )
    password_file: str | None = _setting(
        None,
        "A file holding the Redis password (its first line), instead of writing it in "
        "redis_url; a relative path resolves against the config file's folder.",
        pattern=r"(?s).+",
        describe="a non-empty path",
        path=True,
    )
    node_id: str | None = _setting(
        None,
        "This node's name in the cluster; it is also the node id of its events and "
        "sessions (server.node_id, which must then be null or the same). Unique per "
        "running node. null: server.node_id if set, else `<host name>-<pid>`.",
        pattern=NODE_ID_PATTERN,
        describe="1 to 64 of A-Z a-z 0-9 _ - . starting with a letter or digit",
    )
    prefix: str = _setting(
        "chatd",
        "The start of every Redis key and channel chatd uses: two networks sharing one "
        "Redis use different prefixes.",
        pattern=r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}",
        describe="1 to 32 of A-Z a-z 0-9 _ - . starting with a letter or digit",
    )
    heartbeat_seconds: float = _setting(
        1.0,
        "How often a node tells Redis it is alive.",
        gt=0,
        le=60.0,
    )
    node_timeout_seconds: float = _setting(
        5.0,
        "A node silent this long is dead: its nicks are released and its users' quits "
        "shown everywhere, within node_timeout_seconds + heartbeat_seconds. More than "
        "heartbeat_seconds.",
        gt=0,
        le=3600.0,
    )
    max_outbox: int = _setting(
        10_000,
        "Batches waiting to be published, at most; past it the oldest are dropped and "
        "counted, so a slow Redis never grows memory without bound.",
        ge=1,
        le=MAX_COUNT,
    )
    max_outbox_bytes: int = _setting(
        1 << 20,
        "Bytes of batches waiting to be published, at most (with max_outbox: whichever "
        "is reached first); past it the oldest are dropped and counted (cluster_dropped).",
        ge=1024,
        le=MAX_BYTES,
    )
    health_check_seconds: float = _setting(
        5.0,
        "How often the link PINGs Redis on each connection; a PING unanswered this long "
        "marks the link down (a frozen Redis never closes its sockets) and it reconnects.",
        gt=0,
        le=300.0,
    )
    max_payload_bytes: int = _setting(
        1 << 20,
        "The largest message a node reads from Redis; a bigger one is dropped and counted "
        "(cluster_bad_messages).",
        ge=1024,
        le=MAX_BYTES,
    )
    connect_timeout_seconds: float = _setting(
        2.0,
        "How long a connection attempt to Redis may take; replies wait at most twice this.",
        gt=0,
        le=60.0,
    )

    @property
    def enabled(self) -> bool:
        """Whether this process is a node of a cluster."""
        return self.redis_url is not None

    @property
    def sentinel(self) -> SentinelAddress | None:
        """The sentinels and the master's name when ``redis_url`` is redis+sentinel://."""
        url = self.redis_url
        if url is None or not url.lower().startswith(SENTINEL_SCHEME + "://"):
            return None
        return parse_sentinel_url(url)

    def password(self) -> str | None:
        """The password from ``password_env`` or ``password_file`` (None: the URL's own,
        if any); a ConfigError names the key when it cannot be read."""
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(f"the environment variable {self.password_env!r} is not set",
                                  key="cluster.password_env")
            return value
        if self.password_file is not None:
            try:
                text = Path(self.password_file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read the password file: {exc.__class__.__name__}",
                                  key="cluster.password_file") from None
            return text.splitlines()[0] if text else ""
        return None


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


#: The most worker processes ``workers:`` may start (far past any core count that
#: makes sense for one host; a bound so a typo cannot fork thousands of processes).
MAX_WORKERS = 256

WORKERS_DOC = (
    "How many worker processes serve this config on this host: a whole number 1 to "
    f"{MAX_WORKERS}, or `auto` (one per core). 1 (the default) is one process, as "
    "always. More than 1 (or `auto`) needs a `cluster:` section: every worker is a "
    "node of the cluster (node id `<node_id>-w<k>`), all share each listener's port "
    "(SO_REUSEPORT), and a supervising parent restarts a crashed worker and passes "
    "SIGHUP and SIGTERM on. `limits.max_clients` and `per_ip` limits are the server's: "
    "each worker enforces its share, the limit divided by the workers, rounded up. "
    "Read at start (docs/cluster.md, \"Workers on one host\")."
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
    cluster: ClusterConfig = field(metadata={"doc": ClusterConfig.__doc__})
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
        metadata={"doc": "Line of each plugin-section key (``plugins.NAME.KEY``), and of each "
                  "listener (``listen[0]``), its ``protocol`` and its protocol's own keys "
                  "(``listen[0].history_replay``), for errors found after loading."},
    )
    workers: int = field(
        default=1,
        metadata={"doc": WORKERS_DOC},
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
        spec = FieldSpec(key, int if whole else float, False, None, "",
                          Constraint(ge=ge, gt=gt, le=le))
        try:
            return check_value(spec, value, Path.cwd())
        except Invalid as exc:
            raise self.error(key, str(exc)) from None

    def check_text(self, key: str, value: Any, *, kind: str = "text") -> str:
        """``value`` if it is a string users may be shown, else a ConfigError for ``key``.

        ``kind`` is ``"name"`` (a room or server name) or ``"text"`` (a greeting):
        control, invisible and bidi characters are refused in both (see
        :func:`shown_text_problem`), zero-width joiners are allowed in text.
        """
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {show(value)}")
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
                checked[name] = check_value(specs[name], value, base_dir)
            except Invalid as exc:
                raise ConfigError(str(exc), key=f"listen.{name}") from None
        first = dataclasses.replace(self.listen[0], **checked)
        return dataclasses.replace(self, listen=(first, *self.listen[1:]))


# --------------------------------------------------------------------------------------
# The schema's sections, read once at import into the rows the loader walks.
# --------------------------------------------------------------------------------------

def _collect_sections() -> dict[str, tuple[type, dict[str, FieldSpec]]]:
    """Every Config field whose type is a dataclass is a YAML section of that name."""
    hints = typing.get_type_hints(Config)
    sections: dict[str, tuple[type, dict[str, FieldSpec]]] = {}
    for f in dataclasses.fields(Config):
        hint = hints[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            sections[f.name] = (hint, field_specs(hint))
    return sections


_SECTIONS = _collect_sections()
# `listen` is a section, or a list of them.
_LISTEN_SPECS = field_specs(ListenConfig)
_TLS_SPECS = field_specs(TlsConfig)
# Top-level keys that are not typed sections; `source` is not a key at all.
_OTHER_KEYS = ("plugin_dirs", "plugins", "workers")
_TOP_LEVEL_KEYS = ("listen", *_SECTIONS, *_OTHER_KEYS)


def default_config() -> Config:
    """The embedded default: every section's defaults, no plugin folders, no plugin sections."""
    sections = {name: cls() for name, (cls, _specs) in _SECTIONS.items()}
    return Config(
        listen=(ListenConfig(),), **sections, plugin_dirs=(), plugins=_EMPTY, source=None
    )


# --------------------------------------------------------------------------------------
# YAML nodes -> the Config (config_yaml.NodeReader does the values and the lines).
# --------------------------------------------------------------------------------------


class _Builder(NodeReader):
    """Builds a Config from a composed node tree: the schema's sections, the listeners,
    the plugin folders and the plugins' own sections."""

    def section(self, name: str, node: Node, cls: type | None = None,
                specs: dict[str, FieldSpec] | None = None,
                nested: tuple[str, ...] = ()) -> Any:
        """A section of the schema by ``name``, or of ``cls`` with ``specs``."""
        if cls is None or specs is None:
            cls, specs = _SECTIONS[name]
        return super().section(name, node, cls, specs, nested)

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

    def check_node_number(self, node: Node, server: ServerConfig) -> None:
        """``server.node_number`` is one of the ``node_count`` numbers."""
        if server.node_number < server.node_count:
            return
        where = node
        if isinstance(node, MappingNode):
            where = self.pairs(node, "server").get("node_number", (node, node))[1]
        raise self.error(f"expected a number below node_count ({server.node_count}), got "
                         f"{server.node_number}", "server.node_number", where)

    def check_limits(self, node: Node, limits: LimitsConfig) -> None:
        """``limits.tick_read_bytes`` is off (0) or at least ``MIN_TICK_READ_BYTES``: a
        pass reading a few bytes would make every burst crawl, one syscall a sliver."""
        tick = limits.tick_read_bytes
        if tick == 0 or tick >= MIN_TICK_READ_BYTES:
            return
        where = node
        if isinstance(node, MappingNode):
            where = self.pairs(node, "limits").get("tick_read_bytes", (node, node))[1]
        raise self.error(f"expected 0 (no limit) or at least {MIN_TICK_READ_BYTES}, got {tick}",
                         "limits.tick_read_bytes", where)

    def check_storage(self, node: Node, storage: StorageConfig) -> None:
        """A file or a server, not both; a URL that names PostgreSQL (shown redacted:
        an error message must never carry the password)."""
        if storage.url is None:
            return
        if storage.path is not None:
            raise self.error("set storage.path (an SQLite file) or storage.url (a PostgreSQL "
                             "server), not both", "storage.url", node)
        scheme = storage.url.split("://", 1)[0].lower() if "://" in storage.url else ""
        if scheme not in ("postgresql", "postgres"):
            raise self.error(f"expected a postgresql:// URL, got {redact_url(storage.url)!r}",
                             "storage.url", node)

    def check_cluster(self, node: Node, cluster: ClusterConfig) -> None:
        """A redis:// or rediss:// URL (shown redacted), one password source at most, and
        a node timeout longer than the heartbeat."""
        if cluster.redis_url is not None:
            scheme = cluster.redis_url.split("://", 1)[0].lower() if "://" in \
                cluster.redis_url else ""
            if scheme not in ("redis", "rediss", SENTINEL_SCHEME):
                shown = (repr(redact_url(cluster.redis_url)) if scheme
                         else "text without a scheme (not shown: it may be a password)")
                raise self.error(f"expected a redis://, rediss:// or {SENTINEL_SCHEME}:// "
                                 f"URL, got {shown}", "cluster.redis_url", node)
            problem = redis_url_problem(cluster.redis_url) if scheme != SENTINEL_SCHEME \
                else None
            if problem is not None:
                raise self.error(problem, "cluster.redis_url", node)
            if scheme == SENTINEL_SCHEME:
                try:
                    parse_sentinel_url(cluster.redis_url)
                except ValueError as exc:
                    where, mark, _query = cluster.redis_url.partition("?")
                    shown = redact_url(where) + ("?***" if mark else "")  # a misspelt key too
                    raise self.error(f"{exc} (in {shown!r})", "cluster.redis_url",
                                     node) from None
        if cluster.password_env is not None and cluster.password_file is not None:
            raise self.error("set cluster.password_env or cluster.password_file, not both",
                             "cluster.password_file", node)
        if cluster.node_timeout_seconds <= cluster.heartbeat_seconds:
            raise self.error(f"expected more than heartbeat_seconds "
                             f"({num(cluster.heartbeat_seconds)}), got "
                             f"{num(cluster.node_timeout_seconds)}",
                             "cluster.node_timeout_seconds", node)

    def cluster_node(self, root: MappingNode, changes: dict[str, Any]) -> None:
        """One node id for the cluster and for the events and sessions made here:
        ``cluster.node_id`` and ``server.node_id`` agree, and a cluster node without
        either gets ``<host name>-<pid>`` (unique among the processes of a host)."""
        cluster: ClusterConfig = changes["cluster"]
        server: ServerConfig = changes.get("server", ServerConfig())
        if not cluster.enabled:
            return
        if cluster.node_id is not None and server.node_id is not None \
                and cluster.node_id != server.node_id:
            raise self.error(f"cluster.node_id {cluster.node_id!r} differs from "
                             f"server.node_id {server.node_id!r}: set one of them",
                             "cluster.node_id", root)
        node = cluster.node_id or server.node_id or f"{ServerConfig().node()[:56]}-{os.getpid()}"
        changes["cluster"] = dataclasses.replace(cluster, node_id=node)
        changes["server"] = dataclasses.replace(server, node_id=node)

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

    def listener(self, key: str, node: Node) -> ListenConfig:
        """One ``listen`` entry: the core's keys checked here; the rest (the protocol's
        own options) kept as read, with their lines, for the protocol registry to check
        once the plugins that may register the protocol are loaded."""
        if self.is_null(node):
            return ListenConfig()
        mapping = self.expect_mapping(node, key, "a mapping of settings")
        self.locations[key] = mapping.start_mark.line + 1
        values: dict[str, Any] = {}
        rest: dict[str, Any] = {}
        for k, (key_node, value_node) in self.pairs(mapping, key).items():
            dotted = join_key(key, k)
            if k == "tls":
                if not self.is_null(value_node):
                    values["tls"] = self.tls(dotted, value_node)
                continue
            spec = _LISTEN_SPECS.get(k) if isinstance(k, str) else None
            if spec is None and (not isinstance(k, str) or not k):
                raise self.unknown(dotted, k, [*_LISTEN_SPECS, "tls"], key_node)
            self.locations[dotted] = key_node.start_mark.line + 1
            raw = self.value(value_node, dotted)
            if spec is None:
                rest[str(k)] = raw  # the protocol's: checked by the registry
                continue
            try:
                values[spec.name] = check_value(spec, raw, self.base_dir)
            except Invalid as exc:
                raise self.error(str(exc), dotted, value_node) from None
        if rest:
            values["options"] = types.MappingProxyType(rest)
        return ListenConfig(**values)

    def listeners(self, node: Node) -> tuple[ListenConfig, ...]:
        """``listen``: one mapping, or a list of mappings; no two on the same address."""
        key = "listen"
        if self.is_null(node):
            return (ListenConfig(),)
        self.check_tag(node, key)
        if isinstance(node, SequenceNode) and node.tag == SEQ_TAG:
            if not node.value:
                raise self.error("expected at least one listener", key, node)
            items = [(f"{key}[{i}]", item) for i, item in enumerate(node.value)]
        else:
            items = [(key, node)]
        listeners: list[ListenConfig] = []
        seen: dict[tuple[str, int], str] = {}
        for item_key, item in items:
            listener = self.listener(item_key, item)
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
        if not (isinstance(node, SequenceNode) and node.tag == SEQ_TAG):
            raise self.error(
                f"expected a list of folder names, got {self.describe(node, key)}", key, node
            )
        dirs: list[Path] = []
        for i, item in enumerate(node.value):
            item_key = f"{key}[{i}]"
            entry = self.value(item, item_key)
            if not isinstance(entry, str) or not entry:
                raise self.error(
                    f"expected a non-empty string (a folder), got {show(entry)}", item_key, item
                )
            dirs.append(self.base_dir / entry)  # an absolute entry replaces base_dir
        return tuple(dirs)

    def workers(self, node: Node) -> int:
        """``workers``: a whole number 1..MAX_WORKERS, or ``auto`` (the cores)."""
        value = self.value(node, "workers")
        if value == "auto":
            return max(1, min(os.cpu_count() or 1, MAX_WORKERS))
        if isinstance(value, bool) or not isinstance(value, int) \
                or not 1 <= value <= MAX_WORKERS:
            raise self.error(f"expected a whole number 1 to {MAX_WORKERS}, or auto, got "
                             f"{show(value)}", "workers", node)
        return value

    def check_workers(self, node: Node, changes: dict[str, Any]) -> None:
        """More than one worker (or ``auto``, whatever this host's core count: a config
        must not pass here and fail on a bigger host) needs the cluster the workers join
        through: without it each would be a server of its own on one port."""
        many = changes["workers"] > 1 or self.value(node, "workers") == "auto"
        cluster = changes.get("cluster")
        if many and (cluster is None or not cluster.enabled):
            raise self.error("more than one worker needs a cluster: section with redis_url "
                             "(the workers act as one server through it; docs/cluster.md)",
                             "workers", node)

    def plugins(self, node: Node) -> Mapping[str, Mapping[str, Any]]:
        """Plugin name -> read-only settings; contents are the plugins' business."""
        key = "plugins"
        if self.is_null(node):
            return _EMPTY
        mapping = self.expect_mapping(node, key, "a mapping of plugin name to settings")
        sections: dict[str, Mapping[str, Any]] = {}
        for name, (key_node, value_node) in self.pairs(mapping, key).items():
            dotted = join_key(key, name)
            if not isinstance(name, str) or not name:
                raise self.error(
                    f"a plugin name must be a non-empty string, got {show(name)}", dotted, key_node
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
            dotted = join_key(path, sub_key)
            self.locations[dotted] = key_node.start_mark.line + 1
            if isinstance(value_node, MappingNode) and value_node.tag == MAP_TAG:
                self.record_locations(value_node, dotted, depth + 1)

    def config(self, root: Node | None, source: Path | None) -> Config:
        """The whole document. Every section is optional; an empty document is the defaults."""
        config = dataclasses.replace(default_config(), source=source)
        if root is None or self.is_null(root):
            return config
        mapping = self.expect_mapping(root, "", "a mapping of sections at the top level")
        changes: dict[str, Any] = {}
        workers_node: Node | None = None
        for k, (key_node, value_node) in self.pairs(mapping, "").items():
            if k == "listen":
                changes["listen"] = self.listeners(value_node)
            elif k in _SECTIONS:
                changes[str(k)] = self.section(str(k), value_node)
                if k == "server":
                    self.check_node_number(value_node, changes["server"])
                elif k == "storage":
                    self.check_storage(value_node, changes["storage"])
                elif k == "cluster":
                    self.check_cluster(value_node, changes["cluster"])
                elif k == "limits":
                    self.check_limits(value_node, changes["limits"])
            elif k == "plugin_dirs":
                changes["plugin_dirs"] = self.plugin_dirs(value_node)
            elif k == "plugins":
                changes["plugins"] = self.plugins(value_node)
            elif k == "workers":
                changes["workers"] = self.workers(value_node)
                workers_node = value_node
            else:
                raise self.unknown(str(k), k, list(_TOP_LEVEL_KEYS), key_node)
        changes["locations"] = types.MappingProxyType(self.locations)
        if "cluster" in changes:
            self.cluster_node(mapping, changes)
        if workers_node is not None:
            self.check_workers(workers_node, changes)
        return dataclasses.replace(config, **changes)


def _parse(text: str, file: str | None, source: Path | None, base_dir: Path) -> Config:
    """Compose `text` with a SafeLoader and build the Config from the nodes."""
    loader, root = compose(text, file)
    try:
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


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and parse a config file; every failure, including I/O, is a ConfigError.

    The file must be a regular file (not a FIFO or a device that would block or
    never end) of at most :data:`MAX_CONFIG_BYTES`.
    """
    file = os.fspath(path)
    text = read_config_text(file)
    absolute = Path(os.path.abspath(file))
    return _parse(text, file, absolute, absolute.parent)


# --------------------------------------------------------------------------------------
# The reference (docs/config.md), from the same rows the loader checks.
# --------------------------------------------------------------------------------------


def config_reference(protocols: Sequence[Section] = ()) -> str:
    """Render every section, key, type, default, rule and doc as Markdown.

    Generated rather than hand-written (:mod:`chatd.config_docs`) so the docs cannot
    drift from what the loader actually accepts.  ``protocols`` are the sections of
    the protocols' own listener options, shown after ``listen[].tls``: they come from
    the protocol registry, a layer above this one, so docs/config.md is made by
    :func:`chatd.protocols.registry.config_reference`, which passes them.
    """
    docs = {f.name: f.metadata["doc"] for f in dataclasses.fields(Config)}
    intro = [
        "# Configuration reference",
        "",
        "<!-- Generated by chatd.protocols.registry.config_reference(); do not edit by "
        "hand. -->",
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
        f"are at most {num(MAX_SECONDS)} s (timers end in `epoll_wait`, whose timeout is "
        f"a C int of milliseconds); byte limits and socket buffers at most {MAX_BYTES} "
        f"(`setsockopt` takes a C int, doubled by Linux); counts at most {MAX_COUNT} "
        "(about the most descriptors a process may have); TCP keepalive within the "
        "kernel's maxima. `nan`, `inf` and huge numbers are refused. Text users see "
        "(`server.name`, and in plugin sections welcome lines, greetings and room names) "
        "may not hold control, invisible or bidi characters.",
        "",
    ]
    sections = [
        Section("listen", docs["listen"], _LISTEN_SPECS,
                note="A single mapping is one listener. A list of mappings starts one "
                "listener each; `--host`/`--port` override the first.",
                nested=tuple((f.name, f.metadata["doc"]) for f in dataclasses.fields(ListenConfig)
                             if f.metadata.get("nested"))),
        Section("listen[].tls", TlsConfig.__doc__ or "", _TLS_SPECS),
        *protocols,
        *(Section(name, docs[name], specs) for name, (_cls, specs) in _SECTIONS.items()),
        *(Section(name, docs[name]) for name in _OTHER_KEYS),
    ]
    outro = [
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
    return render_reference(intro, sections, outro)

