"""The composition root: wires the layers together and owns the server's lifecycle.

Nothing here is chat logic.  :class:`ChatServer` builds, in order:

1. the **reactor** (:mod:`chatd.reactor`), the loop everything runs on;
2. the **plugin host** (:mod:`chatd.plugins`), with every plugin the config names;
3. the **chat domain** (:mod:`chatd.chat`) with its delivery backend
   (:mod:`chatd.delivery`) and the plugin-facing :class:`chatd.Server` facade;
4. the **acceptor** and one **listener** per ``listen:`` entry
   (:mod:`chatd.listeners`), each handing new connections (a transport plus the
   listener's protocol, :mod:`chatd.protocols`) to the domain;

and, between 2 and 3, the **protocol registry** (:func:`collect_protocols`: the
built-ins and what plugins register with ``chatd_protocols``), against which the
listeners of the config are checked: a plugin may bring the protocol a listener
names, so that check waits for the plugins (``load_config`` kept what it could
not check yet);

and owns what spans all of them: start (``listen``), reload (SIGHUP), stop
(SIGTERM), the housekeeping sweep of timer-driven limits, the total output
cap, the loop-lag probe and the counters.  Lower layers never call back in
here except through the callbacks it hands them.
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from . import preflight
from .admission import Admission, AdmissionRules, address_group, clamp_max_clients
from .chat import ChatDomain, Client, CommandTable, DuplicateCommandError, collect_commands
from .config import Config, ConfigError, LimitsConfig, ListenConfig, load_config
from .listeners import Acceptor
from .logsetup import dropped_log_records
from .plugins import PluginHost, PluginLoadError, plugin_modules, restore_plugin_modules
from .protocols import ChatProtocol, ProtocolRegistry
from .reactor import Reactor, Timer
from .requests import SessionRequest
from .stats import Stats
from .store import Store
from .templates import plural
from .transport.connection import Connection, OutputAccount, State

log = logging.getLogger("chatd.server")

#: How often the loop checks that the store's writer thread is alive.
STORE_WATCHDOG_SECONDS = 1.0


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


def collect_protocols(hooks: PluginHost) -> ProtocolRegistry:
    """The protocols this server knows: the built-ins, then every plugin's
    ``chatd_protocols`` (called once per plugin generation, at start-up, in the
    dry run and at a reload).  A plugin that raises there, returns something other
    than ProtocolSpec objects or a name already taken stops the start (or the
    reload) with a PluginLoadError that names it."""
    registry = ProtocolRegistry()
    for impl in hooks.implementations("chatd_protocols"):
        plugin = impl.plugin_name
        try:
            specs = impl.function()
        except ConfigError:
            raise  # already says which file, key and line
        except Exception as exc:
            raise PluginLoadError(f"plugin {plugin!r} failed in chatd_protocols: "
                                  f"{type(exc).__name__}: {exc}") from exc
        if specs is None:
            continue
        if not isinstance(specs, list | tuple):
            specs = [specs]
        for spec in specs:
            try:
                registry.add(spec, plugin)
            except (TypeError, ValueError) as exc:
                raise PluginLoadError(f"plugin {plugin!r}: chatd_protocols: {exc}") from None
    return registry


def _stalled_output(conn: Connection, limits: LimitsConfig, now: float) -> tuple[str, str] | None:
    """(limit kind, reason) if ``conn``'s output is stuck past a limit."""
    if conn.output_bytes and now - conn.last_progress > limits.send_timeout_seconds:
        return "send_timeout", "send timeout: no write progress"
    since = conn.over_soft_since
    if since is not None and now - since > limits.output_soft_seconds:
        return "obuf_soft", "too slow: output above the soft limit for too long"
    return None


def _overdue_input(
    protocol: ChatProtocol, limits: LimitsConfig, now: float
) -> tuple[str, str] | None:
    """(limit kind, reason) if a client is late with a newline or any line.

    The registration timeout is not here: it applies only under pressure (see
    :meth:`ChatServer._make_room_for_talkers`).
    """
    timeout = limits.partial_line_timeout_seconds
    since = protocol.partial_since
    if timeout and since is not None and now - since > timeout:
        return "partial_line_timeout", f"unfinished line: no newline within {timeout:g} s"
    timeout = limits.idle_timeout_seconds
    if timeout and now - protocol.last_input > timeout:
        return "idle_timeout", f"idle for more than {timeout:g} s"
    return None


def _without_tls(listen: tuple[ListenConfig, ...]) -> list[ListenConfig]:
    """The listeners as a restart would see them (TLS settings reload on SIGHUP)."""
    return [dataclasses.replace(listener, tls=None) for listener in listen]


class ReloadFailed(Exception):
    """A reload step failed before anything changed; the message says what."""


@dataclasses.dataclass(frozen=True)
class _Reload:
    """What a reload switches to, all of it made before anything changes."""

    config: Config
    hooks: PluginHost
    certificates: list[ssl.SSLContext | None]
    max_clients: int


class StartupError(Exception):
    """``config`` cannot start; ``problems`` says why, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(problems[0])
        self.problems = problems


def _reason(exc: BaseException) -> str:
    """One line for an operator: our own errors say it all, others need their type."""
    if isinstance(exc, ConfigError | PluginLoadError | DuplicateCommandError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def dry_run(config: Config, *, trace_hooks: bool = False) -> ChatServer:
    """What ``--check-config`` builds, and a reload tries first: ``config``'s server
    with every plugin imported, its settings checked and its ``chatd_startup`` run,
    against a database in memory; nothing bound, no file kept (the storage check
    writes a probe and removes it), nothing the config asks for allocated.  Raises
    StartupError; :meth:`ChatServer.discard` the result.
    """
    found = preflight.problems(config)
    if found:
        raise StartupError(found)
    try:
        return ChatServer(config, trace_hooks=trace_hooks, dry_run=True)
    except (PluginLoadError, DuplicateCommandError, ConfigError) as exc:
        raise StartupError([str(exc)]) from exc


class ChatServer:
    """One chatd server: build it, :meth:`listen`, then :meth:`serve_forever`.

    Plugins never see this object; they get :attr:`api` (a :class:`chatd.Server`).
    """

    def __init__(
        self, config: Config, plugins: PluginHost | None = None, *, trace_hooks: bool = False,
        dry_run: bool = False,
    ) -> None:
        """``dry_run``: built only to be checked (``--check-config``, ``chatd plugins``),
        so the database is one in memory and no file is created or changed."""
        self._trace_hooks = trace_hooks
        #: What a reload does to the config it re-reads, before anything else (a worker
        #: of ``workers: N`` puts back its ports, node id and share of the limits).
        self.adjust_config: Callable[[Config], Config] | None = None
        #: Counters for /stats and /metrics.
        self.stats = Stats()
        hooks = plugins if plugins is not None else build_plugin_host(config, trace=trace_hooks)
        self.reactor = Reactor()
        try:
            #: Every protocol a listener may name: the built-ins and the plugins'.
            self.protocols = collect_protocols(hooks)
            # The listeners' protocols and options, now that the plugins are here.
            self.config = config = self.protocols.check_config(config)
            self._build(config, hooks, dry_run=dry_run)
        except BaseException:
            self._abandon(hooks)  # a reload's dry run may fail: it must leak nothing
            raise

    def _build(self, config: Config, hooks: PluginHost, *, dry_run: bool) -> None:
        """Everything after the plugins are imported: store, domain, acceptor, startup."""
        self.reactor.enable_threadsafe()  # server.call_soon_threadsafe for plugins' threads
        storage = config.storage
        #: The database (history, accounts, bans), written by its own thread.
        self.store = Store(
            None if dry_run else config.storage_path(),
            url=None if dry_run else storage.url,  # a dry run touches no database
            batch_seconds=storage.batch_seconds,
            batch_max=storage.batch_max,
            queue_max=storage.queue_max,
            read_timeout=storage.read_timeout_seconds,
            synchronous=storage.synchronous,
            post=self.reactor.call_soon_threadsafe,
            call_later=self.reactor.call_later,  # a read's timeout, whatever its thread does
            defer=self.reactor.call_soon,  # a tick's rows (history's) go over together
            on_problem=self._storage_problem,
            # A bad write is logged with its plugin: the one running when it was queued
            # (read per row history writes, so straight from the guard).
            owner=lambda: self.hooks.guard.current_plugin,
        )
        self.store.open()
        self.domain = ChatDomain(config, hooks, self.reactor, stats=self.stats, lifecycle=self,
                                 store=self.store)
        #: The plugin-facing server object (what hooks receive as ``server``).
        self.api = self.domain.facade
        self.reactor.add_before_flush(self._flush_delivery)
        self._account = OutputAccount(config.limits.output_total_max_bytes, self._evict_largest)
        self._evicting = False
        self.admission = Admission(self._admission_rules(config, config.limits.max_clients))
        self.acceptor = Acceptor(
            self.reactor, self.admission, self.stats, self._account,
            on_connect=self._connected, on_lost=self._connection_lost,
        )
        self.acceptor.check_account = self.api.check_account_password
        self.acceptor.reuse_port = config.workers > 1  # workers share their ports
        if not dry_run:  # a dry run allocates nothing the config asks for (the read buffer)
            self.acceptor.configure(config.limits, config.net)
        self._sweep_timer: Timer | None = None
        self._lag_timer: Timer | None = None
        self._store_timer: Timer | None = None
        #: The counters as of the last second, for readers on other threads (metrics).
        self.published_stats: dict[str, Any] = {}
        self._metrics_httpd: Any = None
        self._stop_deadline: Timer | None = None
        self._stopping = False
        #: The process's exit status once the loop ends: 1 after :meth:`fail`.
        self.exit_status = 0
        self._start_plugins(hooks)
        backend = hooks.call_first_strict(  # a backend that cannot be made stops the start
            "chatd_delivery_backend", server=self.api, local=self.domain.local
        )
        if backend is not None:
            log.info("delivery backend: %s", type(backend).__name__)
            self.domain.backend = backend

    def _abandon(self, hooks: PluginHost) -> None:
        """Construction failed part way: undo what was made (plugins started, the
        store's thread, the loop's descriptors)."""
        if hooks.server is not None:
            hooks.shutdown()
        store = getattr(self, "store", None)
        if store is not None:
            store.close(1.0)
        self.reactor.close()

    def discard(self) -> None:
        """Take down a server that never listened (a dry run): its plugins get
        ``chatd_shutdown``, its thread and descriptors are released."""
        self.hooks.shutdown()
        self.close()

    # -- plugins -----------------------------------------------------------------------

    @property
    def hooks(self) -> PluginHost:
        return self.domain.hooks

    @property
    def commands(self) -> CommandTable:
        return self.domain.commands

    def _start_plugins(self, hooks: PluginHost, carried: dict[str, Any] | None = None) -> None:
        """Bind ``hooks`` to this server, collect its commands, run ``chatd_startup``, then
        hand each plugin what its previous copy ``carried`` over a reload (only once
        nothing can fail any more: restoring may move state off the old copy)."""
        hooks.bind(self.api, self.reactor)
        hooks.on_disable = self._plugin_disabled
        self.domain.hooks = hooks
        self.domain.commands = collect_commands(hooks, self.api)
        with self.store.patient():
            hooks.call_strict("chatd_startup", server=self.api)
        if carried:
            hooks.restore_reload_state(carried)

    def _plugin_disabled(self, plugin: str, reason: str) -> None:
        self.domain.commands.remove_plugin(plugin)
        self.api.notify_operators(f"plugin {plugin!r} was disabled: {reason}")

    def reload(self) -> bool:
        """Re-read the config file and reload every plugin: all of it, or nothing.

        Every step that can fail runs before anything changes (see
        :meth:`_prepare_reload`): reading the file, the machine's checks
        (:mod:`chatd.preflight`), a dry run of the new config and plugins exactly
        as ``--check-config`` does it, the new certificates, and the import of
        the plugins that will run.  Only then do the old plugins shut down and the
        new ones start (one generation at a time: a plugin never sees two copies
        of itself serving).  If a new ``chatd_startup`` still fails (on something
        the dry run could not meet, such as the real database), the old config and
        plugins are put back (the old plugins get ``chatd_startup`` again).  Either
        way a failure is logged and told to operators, and False returned.

        Connections, nicks and rooms survive.  New limits apply to new
        connections; a changed listener needs a restart.  Returns True on
        success.  Plugin state kept in ``stash`` keys of a reloaded module
        starts afresh (the module is new) unless the plugin carries it over with
        ``chatd_reload_save`` / ``chatd_reload_restore``.
        """
        saved_modules = plugin_modules()
        try:
            new = self._prepare_reload()
        except ReloadFailed as exc:
            restore_plugin_modules(saved_modules)
            return self._reload_failed(str(exc))
        old_config, old_hooks, old_commands = self.config, self.hooks, self.commands
        # One plugin generation at a time: the old ones shut down before the new ones
        # start, so a plugin never sees two copies of itself running.
        carried = old_hooks.save_reload_state()
        old_hooks.shutdown()
        self.config = self.domain.config = new.config
        try:
            self._start_plugins(new.hooks, carried)
        except Exception as exc:  # the dry run passed: the real database, a race
            self._roll_back(new.hooks, old_config, old_hooks, old_commands)
            old_hooks.restore_reload_state(carried)
            restore_plugin_modules(saved_modules)
            return self._reload_failed(f"{_reason(exc)}; the previous plugins run again")
        self._apply_limits(new.max_clients)
        self.acceptor.use_certificates(new.config.listen, new.certificates)
        if (_without_tls(new.config.listen) != _without_tls(old_config.listen)
                or new.config.metrics != old_config.metrics
                or new.config.storage_path() != old_config.storage_path()
                or new.config.storage != old_config.storage):
            log.warning("reload: listener, metrics and storage changes take effect after a "
                        "restart")
        log.info("reloaded %s: plugins %s", new.config.source, ", ".join(new.hooks.infos))
        return True

    def _prepare_reload(self) -> _Reload:
        """Everything a reload needs, made without changing anything; ReloadFailed if a
        step fails (the config, the checks, the dry run, the certificates, the import)."""
        source = self.config.source
        try:
            config = load_config(source) if source else self.config
            if source and self.adjust_config is not None:
                config = self.adjust_config(config)
        except ConfigError as exc:
            raise ReloadFailed(str(exc)) from None
        try:
            dry_run(config, trace_hooks=self._trace_hooks).discard()
        except StartupError as exc:
            raise ReloadFailed("; ".join(exc.problems)) from None
        except Exception as exc:  # a plugin's import-time code can raise anything
            raise ReloadFailed(_reason(exc)) from None
        try:  # read a moment ago by the dry run: changed since, or unreadable now
            certificates = self.acceptor.load_certificates(config.listen)
        except ValueError as exc:
            raise ReloadFailed(f"{exc}; the running certificate stays") from None
        limits = config.limits
        try:
            max_clients = clamp_max_clients(limits.max_clients, limits.reserve_fds)
        except ValueError as exc:
            raise ReloadFailed(f"limits.reserve_fds: {exc}") from None
        try:
            hooks = build_plugin_host(config, trace=self._trace_hooks)
            config = collect_protocols(hooks).check_config(config)
            hooks.bind(self.api, self.reactor)
            collect_commands(hooks, self.api)
        except Exception as exc:  # changed since the dry run a moment ago
            raise ReloadFailed(_reason(exc)) from None
        return _Reload(config, hooks, certificates, max_clients)

    def _roll_back(self, new_hooks: PluginHost, config: Config, hooks: PluginHost,
                   commands: CommandTable) -> None:
        """A new generation failed to start: stop what of it started, bring back the old."""
        new_hooks.shutdown()
        self.config = self.domain.config = config
        hooks.reopen()
        self.domain.hooks, self.domain.commands = hooks, commands
        with self.store.patient():
            hooks.call("chatd_startup", server=self.api)

    def _reload_failed(self, why: str) -> bool:
        log.error("reload failed, keeping the running config and plugins: %s", why)
        self.api.notify_operators(f"reload failed, nothing changed: {why}")
        return False

    # -- startup ---------------------------------------------------------------------------

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

    def _apply_limits(self, max_clients: int | None = None) -> None:
        """(Re)derive what depends on the config and the process: admission, fd clamp
        (``max_clients``: already clamped, by a reload that checked it)."""
        limits = self.config.limits
        if max_clients is None:
            max_clients = clamp_max_clients(limits.max_clients, limits.reserve_fds)
        self.admission.rules = self._admission_rules(self.config, max_clients)
        self._account.limit = limits.output_total_max_bytes
        self.reactor.tick_read_bytes = limits.tick_read_bytes
        self.acceptor.configure(limits, self.config.net)

    def preflight(self) -> list[str]:
        """What start-up would reject, found before anything is bound (``--check-config``):
        see :mod:`chatd.preflight`.  Returns the problems, one line each."""
        return preflight.problems(self.config)

    def listen(self) -> list[tuple[str, int]]:
        """Bind every configured listener; returns the bound (host, port) pairs, in order.

        Raises OSError naming nothing (the caller knows the config) if one cannot
        be bound (the others are closed again), and ValueError if the
        descriptor limit leaves no room for clients or metrics cannot start.
        """
        self._apply_limits()
        bound = []
        try:
            for listener_config in self.config.listen:
                protocol = self.protocols[listener_config.protocol].protocol
                bound.append(self.acceptor.listen(listener_config, protocol).address)
        except OSError:
            self.acceptor.stop()
            self.acceptor.stopping = False
            raise
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
        self._store_timer = self.reactor.call_later(STORE_WATCHDOG_SECONDS, self._watch_store)
        return bound

    def serve_forever(self) -> None:
        """Run the loop until :meth:`stop` finishes the shutdown."""
        self.reactor.run()

    # -- connections ---------------------------------------------------------------------

    def _connected(self, protocol: ChatProtocol, request: SessionRequest) -> Client | None:
        """A connection's protocol begins its chat session (the session factory: the
        listener's door calls it); the protocol keeps the client as its session."""
        return self.domain.connect(protocol, request)

    def _connection_lost(self, conn: Connection, reason: str) -> None:
        kind = conn.limit_hit
        if kind is None:
            return
        self.stats.disconnect(kind)
        if kind.startswith("foreign_"):  # probes: counted, and logged once a minute
            self.acceptor.log_throttled(
                kind, "%s from %s:%d refused (%s); more are counted in /stats, logged once "
                "a minute", kind.replace("foreign_", "").upper() + " request", *conn.peer,
                reason,
            )
            return
        protocol = conn.protocol
        session = protocol.session if isinstance(protocol, ChatProtocol) else None
        nick = getattr(session, "nick", "?")
        log.info("closed %s (%s:%d) by limit %s: %s", nick, *conn.peer, kind, reason)

    def _flush_delivery(self) -> None:
        self.domain.backend.flush()

    # -- shutdown ----------------------------------------------------------------

    def fail(self, reason: str) -> None:
        """Stop as :meth:`stop` does, for a reason that makes this a failure (logged;
        the process exits 1)."""
        log.error("stopping: %s", reason)
        self.exit_status = 1
        self.stop()

    def stop(self, deadline: float | None = None) -> None:
        """Stop accepting, say goodbye to everyone, flush (bounded), then end the loop."""
        if self._stopping:
            return
        self._stopping = True
        log.info("shutting down: %s connected", plural(len(self.domain.clients), "client"))
        self.acceptor.stop()
        for timer in (self._sweep_timer, self._lag_timer, self._store_timer):
            if timer is not None:
                timer.cancel()
        self.hooks.shutdown()
        limit = deadline if deadline is not None else self.config.limits.shutdown_timeout_seconds
        self.domain.broadcast("server shutting down")
        for conn in list(self.acceptor.live):
            self._goodbye(conn, "server shutting down")
            # Linger past the deadline so the deadline, not the linger, cuts and reports.
            conn.close("server shutting down", linger=limit + 1.0)
        self._stop_deadline = self.reactor.call_later(limit, self._finish_stop)
        self._check_stopped()

    @staticmethod
    def _goodbye(conn: Connection, reason: str) -> None:
        """The protocol's last word before the server closes ``conn`` (IRC's ``ERROR``;
        line and jsonl: none); a plugin protocol that fails at it is logged, and the
        shutdown goes on."""
        protocol = getattr(conn, "protocol", None)
        if protocol is None:
            return
        try:
            farewell = protocol.goodbye(reason)
        except Exception:
            log.exception("the %s protocol failed to say goodbye", getattr(protocol, "name", "?"))
            return
        if farewell:
            conn.write(farewell)

    def _check_stopped(self) -> None:
        if not self.acceptor.live:
            self._finish_stop()
        elif self._stop_deadline is not None:
            self.reactor.call_later(0.05, self._check_stopped)

    def _finish_stop(self) -> None:
        if self._stop_deadline is not None:
            self._stop_deadline.cancel()
            self._stop_deadline = None
        live = self.acceptor.live
        if live:
            unsent = sum(conn.output_bytes for conn in live)
            log.warning(
                "%s cut at shutdown with %s unsent", plural(len(live), "connection"),
                plural(unsent, "byte"),
            )
            for conn in list(live):
                conn.abort("server shutting down")
        self.reactor.stop()

    def close(self) -> None:
        """Release every fd (after :meth:`serve_forever` returned), and commit everything
        the store still holds (a clean shutdown loses nothing)."""
        if not self.store.close(self.config.limits.shutdown_timeout_seconds):
            log.error("store: %s could not be committed at shutdown: %s",
                      plural(self.store.queued, "write"), self.store.problem or "timed out")
        if self._metrics_httpd is not None:
            self._metrics_httpd.shutdown()
            self._metrics_httpd.server_close()
            self._metrics_httpd = None
        self.acceptor.close()
        self.reactor.close()

    def _storage_problem(self, problem: str | None) -> None:
        """The store's writer hit a problem (``problem``) or got over it (None)."""
        if problem:
            log.error("store: %s; chat goes on, writes wait (up to storage.queue_max) "
                      "and are retried", problem)
            self.api.notify_operators(f"storage degraded: {problem}")
        else:
            dropped = plural(self.store.dropped, "write")
            log.warning("store: writing again (%s dropped so far)", dropped)
            self.api.notify_operators(
                f"storage recovered: writing again ({dropped} dropped so far)")

    def _watch_store(self) -> None:
        """The store's watchdog: a writer thread that died is replaced (the store logs
        it) and operators are told; see :meth:`chatd.store.Store.watch`."""
        if self.store.watch():
            self.api.notify_operators(
                f"storage: the writer thread had stopped and was restarted "
                f"({plural(self.store.restarts, 'restart')} so far)")
        self._store_timer = self.reactor.call_later(STORE_WATCHDOG_SECONDS, self._watch_store)

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
        """Timer-driven limits: one pass over the connections instead of a timer each.

        Cuts connections that hold an unfinished line too long, idle too long,
        make no write progress, or stay above the soft output limit, and, under
        pressure only, the longest-silent ones that never spoke.  Timer-driven on
        purpose: a stalled client produces no events, so nothing else would ever
        notice it.
        """
        self._schedule_sweep()
        limits = self.config.limits
        now = time.monotonic()
        self.admission.expire(now)
        for conn in list(self.acceptor.live):
            if conn.state is not State.OPEN:
                continue
            stalled = _stalled_output(conn, limits, now)
            if stalled is not None:
                # It is not reading: a goodbye would never arrive.  Cut it.
                kind, why = stalled
                conn.abort(why, limit=kind)
                continue
            protocol = conn.protocol
            if not isinstance(protocol, ChatProtocol) or conn.reading_held:
                continue  # held for the flood limit: nothing can arrive, nothing is late
            overdue = _overdue_input(protocol, limits, now)
            if overdue is not None:
                kind, why = overdue
                self._cut(protocol, why, kind)
        self._make_room_for_talkers(now)

    def _cut(self, protocol: ChatProtocol, why: str, limit: str) -> None:
        """Close ``protocol``'s connection for hitting ``limit``, telling the client why."""
        if isinstance(protocol.session, Client):
            protocol.session.error(why, code=limit)
        else:  # nobody yet (no password given, say): told in the protocol's own words
            protocol.tell(why, code=limit)
        protocol.close(why, limit=limit)

    def _make_room_for_talkers(self, now: float) -> None:
        """Close silent connections only when they keep others out (the lurker policy).

        A reader who never speaks is welcome.  But when its address was refused a
        connection for having ``per_ip.max_unregistered`` silent ones (within the
        last minute, or the timeout if longer), or the server holds 90 % of
        ``max_clients``, connections that have been silent since they connected
        for longer than ``limits.registration_timeout_seconds`` are closed,
        longest-silent first: for that address enough to admit one more, for the
        server down to 90 %.
        """
        timeout = self.config.limits.registration_timeout_seconds
        if not timeout:
            return
        silent = [
            conn for conn in self.acceptor.live
            if conn.state is State.OPEN and isinstance(conn.protocol, ChatProtocol)
            and not conn.protocol.registered and now - conn.protocol.opened_at > timeout
        ]
        if not silent:
            return
        silent.sort(key=lambda conn: conn.protocol.opened_at)  # type: ignore[union-attr]
        rules = self.admission.rules
        doomed: list[Connection] = []
        if rules.max_unregistered:
            by_group: dict[str, list[Connection]] = {}
            for conn in silent:
                by_group.setdefault(address_group(conn.peer_address), []).append(conn)
            for group, conns in by_group.items():
                if not self.admission.refused_silent_since(group, now - max(timeout, 60.0)):
                    continue  # at its limit maybe, but nobody from there is kept out
                over = self.admission.unregistered(group) - (rules.max_unregistered - 1)
                if over > 0:
                    doomed.extend(conns[:over])
        # Connections, not chat clients: one that is nobody yet (no password given)
        # holds a slot all the same.
        crowd = self.admission.clients - int(rules.max_clients * 0.9)
        if crowd > 0:
            doomed.extend(conn for conn in silent[:crowd] if conn not in doomed)
        why = f"registration timeout: say something within {timeout:g} s"
        for conn in doomed:
            self._cut(conn.protocol, why, "registration_timeout")  # type: ignore[arg-type]

    def _evict_largest(self) -> None:
        """Over the total output cap: disconnect the largest buffers first (Redis)."""
        if self._evicting:
            return
        self._evicting = True
        try:
            account = self._account
            live = self.acceptor.live
            while account.total > account.limit:
                victim = max(live, key=lambda c: c.output_bytes, default=None)
                if victim is None or victim.output_bytes == 0:
                    return
                log.warning(
                    "output for all clients over %d bytes: disconnecting %s:%d (%d bytes queued)",
                    account.limit, *victim.peer, victim.output_bytes,
                )
                victim.abort("server output memory full (largest buffer first)",
                             limit="obuf_total")
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

    def open_connections(self) -> int:
        """Connections open now, clients or not yet (admission counts them: O(1))."""
        return self.admission.clients

    def stats_snapshot(self) -> dict[str, Any]:
        """All counters plus the live gauges, for /stats and the metrics exporter."""
        snapshot = self.stats.snapshot()
        live = self.acceptor.live
        snapshot["bytes_in"] = self._account.received  # kept by the connections' account
        snapshot["bytes_out"] = self._account.sent
        snapshot["clients"] = len(self.domain.clients)
        snapshot["connections_open"] = len(live)
        snapshot["rooms"] = len(self.domain.rooms)
        snapshot["output_bytes_queued"] = self._account.total
        snapshot["plugin_errors"] = dict(self.hooks.error_counts)
        snapshot["plugin_slow_calls"] = dict(self.hooks.slow_counts)
        snapshot["max_clients"] = self.admission.rules.max_clients
        snapshot["log_dropped"] = dropped_log_records()
        snapshot["admission_tables"] = self.admission.table_sizes()
        store = self.store
        snapshot["storage_ok"] = 0 if store.problem else 1
        snapshot["storage_queued"] = store.queued
        snapshot["storage_committed"] = store.committed
        snapshot["storage_dropped"] = store.dropped
        snapshot["storage_failures"] = store.failures
        snapshot["storage_rejected"] = store.rejected
        snapshot["storage_rejected_by"] = dict(store.rejected_by)
        snapshot["storage_writer_restarts"] = store.restarts
        snapshot["storage_problem"] = store.problem
        snapshot.update(self._backend_stats())
        return snapshot

    def _backend_stats(self) -> dict[str, Any]:
        """The delivery backend's own counters (the cluster's ``cluster_*``), if it keeps
        any: a backend may offer ``stats() -> dict``; the local one has none."""
        stats = getattr(self.domain.backend, "stats", None)
        if not callable(stats):
            return {}
        try:
            return dict(stats())
        except Exception:  # a plugin's backend: its bug must not break /stats or metrics
            log.exception("delivery backend: stats() failed")
            return {}
