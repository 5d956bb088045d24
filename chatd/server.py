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
from collections.abc import Callable, Iterable
from typing import Any

from .client import Client
from .commands import (
    Command,
    CommandError,
    CommandTable,
    ParsedCommand,
    UsageError,
    parse_line,
)
from .config import Config, ConfigError
from .connection import Connection, State
from .fanout import Fanout
from .framing import LineTooLong, sanitize
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

log = logging.getLogger("chatd.server")

_EMFILE_RETRY_SECONDS = 0.5
_LISTEN_EVENTS = EPOLLIN | EPOLLET


class Reject(Exception):
    """Raised by ``chatd_filter_message`` to drop a message; the sender sees ``! <message>``."""


class NickError(CommandError):
    """A nick that is invalid or taken; the message says which."""


class RoomError(CommandError):
    """A room operation that cannot be done; the message says why."""


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
        self._fanout = Fanout()
        self.reactor.add_before_flush(self._fanout.flush)
        self.rooms = RoomTable(self._fanout)
        #: Per-plugin server-wide state; see :mod:`chatd.stash`.
        self.stash = Stash()
        self._nicks: dict[str, Client] = {}
        self._ids = itertools.count(1)
        self._guest_numbers = itertools.count(1)
        self._listeners: list[_Listener] = []
        self._live: set[Connection] = set()
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
        if new_config.listen != old_config.listen:
            log.warning("reload: listener changes take effect after a restart")
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

    def listen(self) -> list[tuple[str, int]]:
        """Bind the configured listener; returns the bound (host, port) pairs."""
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
        return [bound]

    def serve_forever(self) -> None:
        """Run the loop until :meth:`stop` finishes the shutdown."""
        self.reactor.run()

    # -- accepting -------------------------------------------------------------

    def _accept(self, listener: _Listener) -> None:
        sock = listener.sock
        for _ in range(self.config.limits.accept_batch):
            try:
                conn_sock, _addr = sock.accept()
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
            self._admit(conn_sock)
        # Batch used up: under ET the rest of the backlog is never announced again.
        self.reactor.call_soon(self._accept, listener)

    def _out_of_fds(self, listener: _Listener, exc: OSError) -> None:
        """EMFILE/ENFILE: refuse one pending client via the spare fd, retry on a timer.

        Without this, an edge-triggered listener never fires again for the
        connections already waiting, and a level-triggered one would spin
        (libev "accept()ing when you can't"; libuv's emfile trick).
        """
        log.warning("accept: %s; refusing new clients until descriptors free up", exc.strerror)
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
                _EMFILE_RETRY_SECONDS, self._retry_accept, listener
            )

    def _retry_accept(self, listener: _Listener) -> None:
        self._accept_retry = None
        if not self._stopping:
            self._accept(listener)

    def _admit(self, sock: socket.socket) -> None:
        limits = self.config.limits
        if self._stopping or len(self.clients) >= limits.max_clients:
            with contextlib.suppress(OSError):
                sock.send(f"! server full (max {limits.max_clients} clients)\n".encode())
            sock.close()
            log.warning("refused a connection: server full (%d clients)", len(self.clients))
            return
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(
            sock,
            self.reactor,
            None,
            read_buffer=self._read_buffer,
            max_line_bytes=limits.max_line_bytes,
            read_budget=limits.read_budget_bytes,
            max_output=limits.max_output_bytes,
            linger=limits.close_linger_seconds,
            on_closed=self._live.discard,
        )
        client = Client(self, conn, next(self._ids), self._new_guest_nick())
        conn.set_protocol(client)
        self._live.add(conn)
        self.clients[client.id] = client
        self._nicks[nick_key(client.nick)] = client
        log.debug("accepted fd=%d from %s:%d as %s", conn.fd, *conn.peer, client.nick)
        self.hooks.call("chatd_client_connect", notify=client, client=client)
        conn.start()

    def _new_guest_nick(self) -> str:
        while True:
            nick = f"{GUEST_PREFIX}{next(self._guest_numbers)}"
            if nick_key(nick) not in self._nicks:
                return nick

    # -- input -----------------------------------------------------------------

    def _handle_lines(self, client: Client, lines: list[str | LineTooLong]) -> None:
        conn = client._conn
        for item in lines:
            if conn.state is not State.OPEN:
                return
            if item.__class__ is not str:
                client.error(f"line too long (max {item.limit} bytes); it was not sent")
                continue
            if not item or item.isspace():
                continue
            parsed = parse_line(item)
            if parsed.__class__ is str:
                self._message(client, parsed)
            else:
                self._command(client, parsed)

    def _message(self, client: Client, text: str) -> None:
        hooks = self.hooks
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
        self.hooks.call("chatd_shutdown", server=self)
        for client in list(self.clients.values()):
            client.close("server shutting down", goodbye="server shutting down")
        limit = deadline if deadline is not None else self.config.limits.close_linger_seconds
        self._stop_deadline = self.reactor.call_later(limit + 0.5, self._finish_stop)
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
        for conn in list(self._live):
            conn.abort("server closed")
        for listener in self._listeners:
            listener.sock.close()
        self._listeners.clear()
        self.reactor.close()

    # -- introspection -------------------------------------------------------------

    def clients_in(self, rooms: Iterable[Room]) -> set[Client]:
        """Everyone in any of ``rooms`` (each client once)."""
        members: set[Client] = set()
        for room in rooms:
            members.update(room.members)
        return members

