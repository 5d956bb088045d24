"""The chat server: listeners, the client registry, dispatch to plugins, shutdown.

This is the layer between the transport (:mod:`chatd.connection`) and the
plugins.  It owns the facts every plugin must agree on (who is connected,
which nick belongs to whom, which rooms exist and who is in them) and exposes
them through a small public API; it owns no chat *policy*.  Welcome lines,
notices, where plain lines go and every command come from plugins, the
built-in ones included.

Per received line the work is: frame and sanitise (connection), classify
(``/cmd``, ``//escape`` or message), then one hook call: the command's handler,
or the ``chatd_filter_message`` + ``chatd_message`` hooks.  Fan-out happens in
:func:`chatd.rooms.deliver` with one shared payload; no hook runs per recipient.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from .admission import Admission, AdmissionRules, clamp_max_clients
from .client import Client
from .commands import (
    Command,
    CommandError,
    CommandTable,
    ParsedCommand,
    UsageError,
    parse_line,
)
from .config import Config, ConfigError, LimitsConfig, NetConfig
from .connection import Connection, ConnectionLimits, OutputAccount, State
from .fanout import Fanout
from .flood import TokenBucket
from .framing import LineTooLong, sanitize, sniff_foreign_protocol
from .logsetup import dropped_log_records
from .nicks import GUEST_PREFIX, nick_key, nick_problem
from .plugins import PluginHost, PluginLoadError
from .reactor import (
    ACCEPT_RESOURCE_ERRNOS,
    ACCEPT_TRANSIENT_ERRNOS,
    EPOLLET,
    EPOLLIN,
    Reactor,
    Timer,
)
from .rooms import Room, RoomTable, deliver, room_problem
from .stash import Stash
from .stats import Stats

log = logging.getLogger("chatd.server")

_LISTEN_EVENTS = EPOLLIN | EPOLLET


class Reject(Exception):
    """Raised by ``chatd_filter_message`` to drop a message; the sender sees ``! <message>``."""


class NickError(CommandError):
    """A nick that is invalid or taken; the message says which."""


class RoomError(CommandError):
    """A room operation that cannot be done; the message says why."""


def _stalled_output(conn: Connection, limits: LimitsConfig, now: float) -> tuple[str, str] | None:
    """(limit kind, reason) if ``conn``'s output is stuck past a limit."""
    if conn.output_bytes and now - conn.last_progress > limits.send_timeout_seconds:
        return "send_timeout", "send timeout: no write progress"
    since = conn.over_soft_since
    if since is not None and now - since > limits.output_soft_seconds:
        return "obuf_soft", "too slow: output above the soft limit for too long"
    return None


def _overdue_input(client: Client, limits: LimitsConfig, now: float) -> tuple[str, str] | None:
    """(limit kind, reason) if ``client`` is late with its first line, a newline or any line."""
    conn = client._conn
    timeout = limits.registration_timeout_seconds
    if timeout and not client.registered and now - client.connected_mono > timeout:
        return "registration_timeout", f"registration timeout: say something within {timeout:g} s"
    timeout = limits.partial_line_timeout_seconds
    since = conn.partial_since
    if timeout and since is not None and now - since > timeout:
        return "partial_line_timeout", f"unfinished line: no newline within {timeout:g} s"
    timeout = limits.idle_timeout_seconds
    if timeout and now - conn.last_input > timeout:
        return "idle_timeout", f"idle for more than {timeout:g} s"
    return None


def _line_size(item: str | LineTooLong) -> int:
    return 0 if item.__class__ is LineTooLong else len(item)  # type: ignore[arg-type]


def _tune_socket(sock: socket.socket, net: NetConfig) -> None:
    """Socket options for a client: no Nagle, keepalive, user timeout, buffer size.

    Keepalive and TCP_USER_TIMEOUT find peers that vanished without a FIN or
    RST (a laptop closed, a NAT that forgot us); Linux's defaults take hours.
    """
    options: list[tuple[int, int, int]] = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    if net.keepalive_idle_seconds:
        options += [
            (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
            (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, net.keepalive_idle_seconds),
            (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, net.keepalive_interval_seconds),
            (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, net.keepalive_count),
        ]
    if net.tcp_user_timeout_seconds:
        options.append(
            (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(net.tcp_user_timeout_seconds * 1000))
        )
    if net.sndbuf_bytes:
        options.append((socket.SOL_SOCKET, socket.SO_SNDBUF, net.sndbuf_bytes))
    for level, option, value in options:
        with contextlib.suppress(OSError):
            sock.setsockopt(level, option, value)


class _Listener:
    """A listening socket; accepting is the server's job."""

    __slots__ = ("server", "sock")

    def __init__(self, server: Server, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock

    def handle_events(self, mask: int) -> None:
        self.server._accept(self)


def build_plugin_host(config: Config, *, trace: bool = False) -> PluginHost:
    """Discover and register every plugin the config asks for (fresh per server)."""
    settings = config.plugin_host
    host = PluginHost.from_config(settings, trace=trace)
    host.load_builtins()
    if settings.entry_points:
        host.load_entry_points()
    host.load_modules(settings.modules)
    for directory in config.plugin_dirs:
        host.load_directory(directory)
    host.check()
    host.check_disabled_names()
    return host


class Server:
    """One chatd server: build it, :meth:`listen`, then :meth:`serve_forever`.

    Public API for plugins (everything else is private):
    ``config``, ``plugin_config()``, ``clients``, ``find_client()``, ``rooms``,
    ``default_room``, ``join()``, ``part()``, ``rename()``, ``commands``,
    ``broadcast()``, ``call_later()``, ``call_soon()``, ``hooks``, ``stash``, ``stop()``.
    """

    def __init__(
        self, config: Config, plugins: PluginHost | None = None, *, trace_hooks: bool = False
    ) -> None:
        self.config = config
        self.reactor = Reactor()
        self._trace_hooks = trace_hooks
        #: Plugin host; ``server.hooks.call("hook_name", ...)`` calls a hook safely.
        if plugins is None:
            plugins = build_plugin_host(config, trace=trace_hooks)
        self.hooks = plugins
        self.hooks.on_disable = self._plugin_disabled
        #: Connected clients by id.
        self.clients: dict[int, Client] = {}
        self._fanout = Fanout(self)
        self.reactor.add_before_flush(self._fanout.flush)
        self.rooms = RoomTable(self._fanout)
        #: Per-plugin server-wide state; see :mod:`chatd.stash`.
        self.stash = Stash()
        self._nicks: dict[str, Client] = {}
        self._ids = itertools.count(1)
        self._guest_numbers = itertools.count(1)
        self._listeners: list[_Listener] = []
        self._live: set[Connection] = set()
        #: Counters for /stats and /metrics.
        self.stats = Stats()
        self._account = OutputAccount(config.limits.output_total_max_bytes, self._evict_largest)
        self._evicting = False
        self.admission = Admission(self._admission_rules(config, config.limits.max_clients))
        self._sweep_timer: Timer | None = None
        self._lag_timer: Timer | None = None
        self._throttled_logs: dict[str, float] = {}
        #: The counters as of the last second, for readers on other threads (metrics).
        self.published_stats: dict[str, Any] = {}
        self._metrics_httpd: Any = None
        self._read_buffer = memoryview(bytearray(max(4096, config.limits.read_budget_bytes)))
        self._spare_fd: int | None = None
        self._accept_retry: Timer | None = None
        self._stop_deadline: Timer | None = None
        self._stopping = False
        self.commands = self._collect_commands(self.hooks)
        self.hooks.call_strict("chatd_startup", server=self)

    # -- public API ------------------------------------------------------------

    @property
    def default_room(self) -> str:
        return self.config.server.default_room

    def plugin_config(self, name: str) -> Any:
        """The ``plugins: {name: {...}}`` section of the config ({} if absent)."""
        return self.config.plugin_config(name)

    def find_client(self, nick: str) -> Client | None:
        """The connected client with this nick (case-insensitive), or None."""
        return self._nicks.get(nick_key(nick))

    def rename(self, client: Client, new: str) -> None:
        """Give ``client`` the nick ``new``; raises :class:`NickError` with the reason."""
        problem = nick_problem(new, self.config.limits.max_nick_bytes)
        if problem:
            raise NickError(problem)
        holder = self._nicks.get(nick_key(new))
        if holder is not None and holder is not client:
            raise NickError(f"the nick {new} is taken")
        old = client.nick
        if old == new:
            return
        del self._nicks[nick_key(old)]
        self._nicks[nick_key(new)] = client
        client.nick = new
        self.hooks.call("chatd_nick_change", notify=client, client=client, old=old, new=new)

    def join(self, client: Client, name: str) -> Room:
        """Put ``client`` in room ``name`` (created if needed) and make it current."""
        problem = room_problem(name)
        if problem:
            raise RoomError(problem)
        room = self.rooms.get_or_create(name)
        client.room = room
        if room not in client.rooms:
            client.rooms[room] = None
            room.members[client] = None
            self.hooks.call("chatd_room_join", notify=client, client=client, room=room)
        return room

    def part(self, client: Client, room: Room, reason: str = "") -> None:
        """Take ``client`` out of ``room``; its current room becomes its latest other room."""
        if room not in client.rooms:
            raise RoomError(f"you are not in {room.name}")
        del client.rooms[room]
        room.members.pop(client, None)
        if client.room is room:
            client.room = next(reversed(client.rooms), None) if client.rooms else None
        self.hooks.call("chatd_room_part", notify=client, client=client, room=room, reason=reason)
        self._discard_if_empty(room)

    def broadcast(self, text: str, *, exclude: Client | None = None) -> int:
        """Send one line to every connected client (server-wide notices)."""
        data = (sanitize(text) + "\n").encode("utf-8")
        self._fanout.flush()
        return deliver(self.clients.values(), data, exclude)

    def notify_operators(self, text: str) -> None:
        """Tell the operators something (a plugin was disabled, a reload failed).

        Logged, and passed to ``chatd_operator_notice`` so the ``oper`` plugin (or
        any other) can deliver it.
        """
        log.warning("operator notice: %s", text)
        self.hooks.call("chatd_operator_notice", server=self, text=text)

    def reload(self) -> bool:
        """Re-read the config file and reload every plugin; keep the old ones on failure.

        Connections, nicks and rooms survive.  New limits apply to new
        connections; a changed listener needs a restart.  Returns True on
        success.  Plugin state kept in ``stash`` keys of a reloaded module
        starts afresh (the module is new), so keep durable state elsewhere.
        """
        from .config import load_config

        old_config, old_hooks, old_commands = self.config, self.hooks, self.commands
        try:
            new_config = load_config(old_config.source) if old_config.source else old_config
            new_hooks = build_plugin_host(new_config, trace=self._trace_hooks)
            new_commands = self._collect_commands(new_hooks)
        except (ConfigError, PluginLoadError) as exc:
            return self._reload_failed(f"{exc}")
        except Exception as exc:  # a plugin's import-time code can raise anything
            return self._reload_failed(f"{type(exc).__name__}: {exc}")
        # One plugin generation at a time: the old ones shut down before the
        # new ones start, so a plugin never sees two copies of itself running.
        old_hooks.call("chatd_shutdown", server=self)
        self.config, self.hooks, self.commands = new_config, new_hooks, new_commands
        new_hooks.on_disable = self._plugin_disabled
        try:
            new_hooks.call_strict("chatd_startup", server=self)
        except PluginLoadError as exc:
            new_hooks.call("chatd_shutdown", server=self)
            self.config, self.hooks, self.commands = old_config, old_hooks, old_commands
            old_hooks.call("chatd_startup", server=self)
            return self._reload_failed(str(exc))
        try:
            self._apply_limits()
        except ValueError as exc:
            log.error("reload: %s; keeping the previous client limits", exc)
        if new_config.listen != old_config.listen or new_config.metrics != old_config.metrics:
            log.warning("reload: listener and metrics changes take effect after a restart")
        log.info("reloaded %s: plugins %s", new_config.source, ", ".join(new_hooks.infos))
        return True

    def _reload_failed(self, why: str) -> bool:
        log.error("reload failed, keeping the running config and plugins: %s", why)
        self.notify_operators(f"reload failed, nothing changed: {why}")
        return False

    def _plugin_disabled(self, plugin: str, reason: str) -> None:
        self.commands.remove_plugin(plugin)
        self.notify_operators(f"plugin {plugin!r} was disabled: {reason}")

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Timer:
        """Run ``callback(*args)`` after ``delay`` seconds on the loop; ``.cancel()`` stops it."""
        return self.reactor.call_later(delay, callback, *args)

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(*args)`` on the loop as soon as possible (after the current event)."""
        self.reactor.call_soon(callback, *args)

    # -- startup ---------------------------------------------------------------

    def _collect_commands(self, hooks: PluginHost) -> CommandTable:
        table = CommandTable()
        for impl in hooks.implementations("chatd_commands"):
            plugin_name = impl.plugin_name
            kwargs = {"server": self}
            try:
                declared = impl.function(*[kwargs[a] for a in impl.argnames]) or []
            except Exception as exc:
                raise PluginLoadError(
                    f"plugin {plugin_name!r} failed in chatd_commands: {type(exc).__name__}: {exc}"
                ) from exc
            for command in declared:
                if not isinstance(command, Command):
                    raise PluginLoadError(
                        f"plugin {plugin_name!r}: chatd_commands must return Command objects, "
                        f"got {command!r}"
                    )
                if not command.plugin:
                    object.__setattr__(command, "plugin", plugin_name)
                try:
                    table.add(command)
                except Exception as exc:
                    raise PluginLoadError(str(exc)) from exc
                info = hooks.infos.get(command.plugin)
                if info is not None:
                    info.commands.append(command.name)
        return table

    @staticmethod
    def _admission_rules(config: Config, max_clients: int) -> AdmissionRules:
        per_ip = config.per_ip
        return AdmissionRules(
            max_clients=max_clients,
            per_ip_max=per_ip.max_connections,
            connect_rate=per_ip.connect_rate,
            connect_window=per_ip.connect_window_seconds,
            max_unregistered=per_ip.max_unregistered,
        )

    def _apply_limits(self) -> None:
        """(Re)derive what depends on the config and the process: admission, fd clamp."""
        limits = self.config.limits
        max_clients = clamp_max_clients(limits.max_clients, limits.reserve_fds)
        self.admission.rules = self._admission_rules(self.config, max_clients)
        self._account.limit = limits.output_total_max_bytes

    def listen(self) -> list[tuple[str, int]]:
        """Bind the configured listener; returns the bound (host, port) pairs.

        Raises ValueError if the descriptor limit leaves no room for clients.
        """
        self._apply_limits()
        listen = self.config.listen
        info = socket.getaddrinfo(
            listen.host, listen.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(info[4])
            sock.listen(1024)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        listener = _Listener(self, sock)
        self._listeners.append(listener)
        self.reactor.register(sock.fileno(), listener, _LISTEN_EVENTS)
        if self._spare_fd is None:
            self._spare_fd = os.open(os.devnull, os.O_RDONLY)
        bound = sock.getsockname()[:2]
        log.info("listening on %s:%d", bound[0], bound[1])
        self._schedule_sweep()
        self.publish_stats()
        metrics = self.config.metrics
        if metrics.enabled and self._metrics_httpd is None:
            from .metrics import start_exporter

            try:
                self._metrics_httpd = start_exporter(
                    metrics.host, metrics.port, lambda: self.published_stats
                )
            except (RuntimeError, OSError) as exc:
                self.close()
                raise ValueError(f"metrics: {exc}") from exc
        first_lag_check = self.reactor.clock() + 1.0
        self._lag_timer = self.reactor.call_later(1.0, self._measure_lag, first_lag_check)
        return [bound]

    def serve_forever(self) -> None:
        """Run the loop until :meth:`stop` finishes the shutdown."""
        self.reactor.run()

    # -- accepting -------------------------------------------------------------

    def _accept(self, listener: _Listener) -> None:
        if self._stopping:  # a batch re-queued before stop() closed the listener
            return
        sock = listener.sock
        for _ in range(self.config.limits.accept_batch):
            try:
                conn_sock, peer = sock.accept()
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno in ACCEPT_TRANSIENT_ERRNOS:
                    continue
                if exc.errno in ACCEPT_RESOURCE_ERRNOS:
                    self._out_of_fds(listener, exc)
                    return
                log.error("accept failed: %s", exc)
                return
            self._admit(conn_sock, peer)
        # Batch used up: under ET the rest of the backlog is never announced again.
        self.reactor.call_soon(self._accept, listener)

    def _out_of_fds(self, listener: _Listener, exc: OSError) -> None:
        """EMFILE/ENFILE: refuse one pending client via the spare fd, retry on a timer.

        Without this, an edge-triggered listener never fires again for the
        connections already waiting, and a level-triggered one would spin
        (libev "accept()ing when you can't"; libuv's emfile trick).
        """
        self.stats.reject("out_of_fds")
        self._log_throttled(
            "emfile", "accept: %s; refusing new clients until descriptors free up", exc.strerror
        )
        if self._spare_fd is not None and exc.errno == errno.EMFILE:
            os.close(self._spare_fd)
            self._spare_fd = None
            try:
                refused, _ = listener.sock.accept()
            except OSError:
                pass
            else:
                with contextlib.suppress(OSError):
                    refused.send(b"! server full, try again later\n")
                refused.close()
            with contextlib.suppress(OSError):
                self._spare_fd = os.open(os.devnull, os.O_RDONLY)
        if self._accept_retry is None:
            self._accept_retry = self.reactor.call_later(
                self.config.limits.accept_retry_seconds, self._retry_accept, listener
            )

    def _retry_accept(self, listener: _Listener) -> None:
        self._accept_retry = None
        if not self._stopping:
            self._accept(listener)

    def _admit(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        config = self.config
        limits = config.limits
        # accept()'s answer, not getpeername(): a reset in between must not make
        # the connection count under another address (a leaked per-address slot).
        address = peer[0]
        reason = "stopping" if self._stopping else self.admission.check(address, time.monotonic())
        if reason is not None:
            self._refuse(sock, address, reason)
            return
        sock.setblocking(False)
        _tune_socket(sock, config.net)
        conn = Connection(
            sock,
            self.reactor,
            None,
            read_buffer=self._read_buffer,
            limits=ConnectionLimits(
                max_line_bytes=limits.max_line_bytes,
                recvq_max=limits.recvq_max_bytes,
                read_budget=limits.read_budget_bytes,
                hard=limits.max_output_bytes,
                soft=limits.output_soft_bytes,
                linger=limits.close_linger_seconds,
            ),
            account=self._account,
            on_closed=self._connection_closed,
            peer=(peer[0], peer[1]),
        )
        client = Client(self, conn, next(self._ids), self._new_guest_nick())
        conn.set_protocol(client)
        flood = config.flood
        if flood.lines_per_second > 0:
            client._bucket = TokenBucket(
                flood.burst_lines, flood.lines_per_second, flood.bytes_per_token, time.monotonic()
            )
        self.admission.opened(address)
        self.stats.connections_total += 1
        self._live.add(conn)
        self.clients[client.id] = client
        self._nicks[nick_key(client.nick)] = client
        log.debug("accepted fd=%d from %s:%d as %s", conn.fd, *conn.peer, client.nick)
        self.hooks.call("chatd_client_connect", notify=client, client=client)
        conn.start()

    def _refuse(self, sock: socket.socket, address: str, reason: str) -> None:
        self.stats.reject(reason)
        with contextlib.suppress(OSError):
            sock.setblocking(False)
            sock.send(self.admission.refusal_line(reason))
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        self._log_throttled(
            f"refuse:{reason}", "refused a connection from %s: %s", address, reason
        )

    def _connection_closed(self, conn: Connection) -> None:
        """The socket is gone for good (called once per connection, from teardown)."""
        self._live.discard(conn)
        stats = self.stats
        stats.bytes_in += conn.bytes_received
        stats.bytes_out += conn.bytes_sent
        protocol = conn.protocol
        registered = protocol.registered if isinstance(protocol, Client) else True
        self.admission.closed(conn.peer[0], registered)

    def _log_throttled(self, key: str, message: str, *args: object) -> None:
        """Log ``message`` at most once a minute per ``key`` (libev: don't flood the log)."""
        now = time.monotonic()
        last = self._throttled_logs.get(key)
        if last is None or now - last >= 60.0:
            self._throttled_logs[key] = now
            log.warning(message, *args)

    def _new_guest_nick(self) -> str:
        while True:
            nick = f"{GUEST_PREFIX}{next(self._guest_numbers)}"
            if nick_key(nick) not in self._nicks:
                return nick

    # -- input -----------------------------------------------------------------

    def _handle_lines(self, client: Client, lines: list[str | LineTooLong]) -> None:
        """Lines from the connection: register, then process or queue for the flood limit."""
        if not client.registered:
            first = lines[0]
            is_text = first.__class__ is not LineTooLong
            if is_text and sniff_foreign_protocol(first.encode()) == "http":  # type: ignore[union-attr]
                client._conn.reject_foreign("http")
                self._log_throttled("foreign:http", "HTTP request from %s refused", client.address)
                return
            client.registered = True
            self.admission.registered(client.address)
        bucket = client._bucket
        if bucket is None:
            self._process_lines(client, lines)
            return
        backlog = client._backlog
        now = time.monotonic()
        ready: list[str | LineTooLong] = []
        for item in lines:
            if not backlog and bucket.take(bucket.cost(_line_size(item)), now):
                ready.append(item)
                continue
            if backlog is None:
                backlog = client._backlog = deque()
            backlog.append(item)
            client._backlog_bytes += _line_size(item)
        if ready:
            self._process_lines(client, ready)
        if backlog:
            if client._backlog_bytes > self.config.limits.recvq_max_bytes:
                self._excess_flood(client)
            elif client._backlog_timer is None:
                self._schedule_backlog(client)

    def _schedule_backlog(self, client: Client) -> None:
        bucket = client._bucket
        assert bucket is not None
        assert client._backlog
        wait = bucket.wait_time(bucket.cost(_line_size(client._backlog[0])), time.monotonic())
        client._backlog_timer = self.reactor.call_later(wait, self._drain_backlog, client)

    def _drain_backlog(self, client: Client) -> None:
        """Fakelag: the timer that releases delayed lines, with no new input needed.

        Under edge-triggering nothing else would ever come back for them.
        """
        client._backlog_timer = None
        bucket = client._bucket
        backlog = client._backlog
        if bucket is None or backlog is None or not client.connected:
            return
        now = time.monotonic()
        ready: list[str | LineTooLong] = []
        while backlog and bucket.take(bucket.cost(_line_size(backlog[0])), now):
            item = backlog.popleft()
            client._backlog_bytes -= _line_size(item)
            ready.append(item)
        if ready:
            self._process_lines(client, ready)
        if backlog and client.connected:
            self._schedule_backlog(client)
        elif client._close_after_backlog and client.connected:
            client.close("connection closed by peer")

    def _eof_received(self, client: Client) -> bool:
        """The client half-closed: keep it until its delayed lines are processed.

        ``printf 'many\nlines\n' | nc -N host port`` must deliver every line, even
        those the flood limit delayed (delayed, never dropped).
        """
        if client._backlog:
            client._close_after_backlog = True
            return True
        return False

    def _excess_flood(self, client: Client) -> None:
        limit = self.config.limits.recvq_max_bytes
        client._conn.limit_hit = "excess_flood"
        client._backlog = None
        client._backlog_bytes = 0
        client.error(f"excess flood: more than {limit} bytes waiting; disconnecting")
        client.close("excess flood")

    def _process_lines(self, client: Client, lines: list[str | LineTooLong]) -> None:
        conn = client._conn
        for item in lines:
            if conn.state is not State.OPEN:
                return
            if item.__class__ is LineTooLong:
                client.error(f"line too long (max {item.limit} bytes); it was not sent")
                continue
            if not item or item.isspace():
                continue
            parsed = parse_line(item)
            if parsed.__class__ is not ParsedCommand:
                self._message(client, parsed)
            else:
                self._command(client, parsed)

    def _message(self, client: Client, text: str) -> None:
        hooks = self.hooks
        self.stats.messages_in += 1
        for impl in hooks.implementations("chatd_filter_message"):
            kwargs = {"client": client, "text": text}
            try:
                replacement = hooks.run_guarded(
                    impl.plugin_name,
                    "chatd_filter_message",
                    impl.function,
                    *[kwargs[a] for a in impl.argnames],
                    notify=client,
                    passthrough=(Reject,),
                )
            except Reject as exc:
                client.error(str(exc) or "message rejected")
                return
            if replacement is not None:
                text = sanitize(str(replacement))
                if not text.strip():
                    return
        hooks.call("chatd_message", notify=client, client=client, text=text)

    def _command(self, client: Client, parsed: ParsedCommand) -> None:
        command = self.commands.get(parsed.name)
        if command is None:
            client.error(f"unknown command /{parsed.name} — try /help")
            return
        if command.exact_args and parsed.cleaned:
            client.error(f"/{command.name}: control characters are not allowed here")
            return
        try:
            self.hooks.run_guarded(
                command.plugin,
                f"command /{command.name}",
                command.handler,
                client,
                parsed.args,
                notify=client,
                passthrough=(CommandError,),
            )
        except UsageError as exc:
            detail = f"{exc}; " if str(exc) else ""
            client.error(f"{detail}usage: {command.usage or '/' + command.name}")
        except CommandError as exc:
            client.error(str(exc))

    # -- departure ---------------------------------------------------------------

    def _client_gone(self, client: Client, reason: str) -> None:
        if self.clients.pop(client.id, None) is None:
            return
        kind = client._conn.limit_hit
        if kind is not None:
            self.stats.disconnect(kind)
            log.info("closed %s (%s:%d) by limit %s: %s", client.nick, *client.peer, kind, reason)
        if client._backlog_timer is not None:
            client._backlog_timer.cancel()
            client._backlog_timer = None
        client._backlog = None
        if self._nicks.get(nick_key(client.nick)) is client:
            del self._nicks[nick_key(client.nick)]
        self.hooks.call("chatd_client_disconnect", client=client, reason=reason)
        for room in list(client.rooms):
            room.members.pop(client, None)
            self._discard_if_empty(room)
        client.rooms.clear()
        client.room = None

    def _discard_if_empty(self, room: Room) -> None:
        if not room.members and room.name.lower() != self.default_room.lower():
            self.rooms.discard(room)

    # -- shutdown ----------------------------------------------------------------

    def stop(self, deadline: float | None = None) -> None:
        """Stop accepting, say goodbye to everyone, flush (bounded), then end the loop."""
        if self._stopping:
            return
        self._stopping = True
        log.info("shutting down: %d clients connected", len(self.clients))
        for listener in self._listeners:
            self.reactor.unregister(listener.sock.fileno())
            listener.sock.close()
        self._listeners.clear()
        if self._accept_retry is not None:
            self._accept_retry.cancel()
        for timer in (self._sweep_timer, self._lag_timer):
            if timer is not None:
                timer.cancel()
        self.hooks.call("chatd_shutdown", server=self)
        limit = deadline if deadline is not None else self.config.limits.shutdown_timeout_seconds
        for client in list(self.clients.values()):
            client.notice("server shutting down")
            # Linger past the deadline so the deadline, not the linger, cuts and reports.
            client._conn.close("server shutting down", linger=limit + 1.0)
        self._stop_deadline = self.reactor.call_later(limit, self._finish_stop)
        self._check_stopped()

    def _check_stopped(self) -> None:
        if not self._live:
            self._finish_stop()
        elif self._stop_deadline is not None:
            self.reactor.call_later(0.05, self._check_stopped)

    def _finish_stop(self) -> None:
        if self._stop_deadline is not None:
            self._stop_deadline.cancel()
            self._stop_deadline = None
        if self._live:
            unsent = sum(conn.output_bytes for conn in self._live)
            log.warning(
                "%d connection(s) cut at shutdown with %d bytes unsent", len(self._live), unsent
            )
            for conn in list(self._live):
                conn.abort("server shutting down")
        if self._spare_fd is not None:
            os.close(self._spare_fd)
            self._spare_fd = None
        self.reactor.stop()

    def close(self) -> None:
        """Release every fd (after :meth:`serve_forever` returned)."""
        if self._metrics_httpd is not None:
            self._metrics_httpd.shutdown()
            self._metrics_httpd.server_close()
            self._metrics_httpd = None
        for conn in list(self._live):
            conn.abort("server closed")
        for listener in self._listeners:
            listener.sock.close()
        self._listeners.clear()
        self.reactor.close()

    # -- housekeeping ----------------------------------------------------------------

    def _sweep_interval(self) -> float:
        limits = self.config.limits
        timeouts = [
            t
            for t in (
                limits.registration_timeout_seconds,
                limits.partial_line_timeout_seconds,
                limits.idle_timeout_seconds,
                limits.send_timeout_seconds,
                limits.output_soft_seconds,
            )
            if t > 0
        ]
        return max(0.05, min(1.0, *(t / 4 for t in timeouts))) if timeouts else 1.0

    def _schedule_sweep(self) -> None:
        self._sweep_timer = self.reactor.call_later(self._sweep_interval(), self._sweep)

    def _sweep(self) -> None:
        """Timer-driven limits: one pass over the clients instead of a timer each.

        Cuts connections that did not register in time, hold an unfinished line
        too long, idle too long, make no write progress, or stay above the
        soft output limit.  Timer-driven on purpose: a stalled client produces
        no events, so nothing else would ever notice it.
        """
        self._schedule_sweep()
        limits = self.config.limits
        now = time.monotonic()
        self.admission.expire(now)
        for client in list(self.clients.values()):
            conn = client._conn
            if conn.state is not State.OPEN:
                continue
            stalled = _stalled_output(conn, limits, now)
            if stalled is not None:
                # It is not reading: a goodbye would never arrive.  Cut it.
                conn.limit_hit, why = stalled
                conn.abort(why)
                continue
            overdue = _overdue_input(client, limits, now)
            if overdue is not None:
                conn.limit_hit, why = overdue
                client.error(why)
                client.close(why)

    def _evict_largest(self) -> None:
        """Over the total output cap: disconnect the largest buffers first (Redis)."""
        if self._evicting:
            return
        self._evicting = True
        try:
            account = self._account
            while account.total > account.limit:
                victim = max(self._live, key=lambda c: c.output_bytes, default=None)
                if victim is None or victim.output_bytes == 0:
                    return
                log.warning(
                    "output for all clients over %d bytes: disconnecting %s:%d (%d bytes queued)",
                    account.limit, *victim.peer, victim.output_bytes,
                )
                victim.limit_hit = "obuf_total"
                victim.abort("server output memory full (largest buffer first)")
        finally:
            self._evicting = False

    def _measure_lag(self, expected: float) -> None:
        """How late a 1-second timer fires: the loop's lag, for operators."""
        now = self.reactor.clock()
        lag = max(0.0, now - expected)
        self.stats.loop_lag_seconds = lag
        self.stats.loop_lag_max_seconds = max(self.stats.loop_lag_max_seconds, lag)
        self._lag_timer = self.reactor.call_later(1.0, self._measure_lag, now + 1.0)
        self.publish_stats()

    def publish_stats(self) -> None:
        """Swap in a fresh copy of the counters (one reference assignment: thread-safe)."""
        self.published_stats = self.stats_snapshot()

    def stats_snapshot(self) -> dict[str, Any]:
        """All counters plus the live gauges, for /stats and the metrics exporter."""
        snapshot = self.stats.snapshot()
        live = list(self._live)
        snapshot["bytes_in"] += sum(c.bytes_received for c in live)
        snapshot["bytes_out"] += sum(c.bytes_sent for c in live)
        snapshot["clients"] = len(self.clients)
        snapshot["connections_open"] = len(live)
        snapshot["rooms"] = len(self.rooms)
        snapshot["output_bytes_queued"] = self._account.total
        snapshot["plugin_errors"] = dict(self.hooks.error_counts)
        snapshot["plugin_slow_calls"] = dict(self.hooks.slow_counts)
        snapshot["max_clients"] = self.admission.rules.max_clients
        snapshot["log_dropped"] = dropped_log_records()
        snapshot["admission_tables"] = self.admission.table_sizes()
        return snapshot

    # -- introspection -------------------------------------------------------------

    def clients_in(self, rooms: Iterable[Room]) -> set[Client]:
        """Everyone in any of ``rooms`` (each client once)."""
        members: set[Client] = set()
        for room in rooms:
            members.update(room.members)
        return members

