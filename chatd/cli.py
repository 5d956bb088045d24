"""The ``chatd`` command: ``chatd --config FILE`` and friends.

Every startup failure (bad config, unloadable plugin, port in use) is one clear
line on stderr and exit status 2, before any client can connect; no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .chat import DuplicateCommandError
from .config import Config, ConfigError, default_config, load_config
from .logsetup import LoggingSetup
from .plugins import PluginLoadError
from .workers import Supervisor, role_from_args, worker_command, write_stats

if TYPE_CHECKING:
    from .server import ChatServer

log = logging.getLogger("chatd")

EXIT_STARTUP_FAILURE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatd",
        description="A pluggable line-protocol chat server. Connect with: nc HOST PORT",
    )
    parser.add_argument(
        "command", nargs="?", choices=["serve", "plugins"], default="serve",
        help="serve (the default) runs the server; plugins lists every plugin the config "
        "loads, where it comes from, its hooks and commands",
    )
    parser.add_argument(
        "--config", "-c", metavar="FILE",
        help="YAML config file (default: the embedded defaults, 127.0.0.1:7788)",
    )
    parser.add_argument(
        "--host", help="listen on this address instead of the config's (first listener)"
    )
    parser.add_argument(
        "--port", type=int, help="listen on this port instead of the config's (first listener)"
    )
    parser.add_argument(
        "--check-config", action="store_true",
        help="validate the config and the plugins it loads, then exit (0 = fine, 2 = not)",
    )
    parser.add_argument(
        "--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        type=str.upper, help="override the config's logging.level",
    )
    parser.add_argument(
        "--trace-hooks", action="store_true",
        help="log every hook call and its result at DEBUG (implies --log-level DEBUG)",
    )
    parser.add_argument(
        "--port-file", metavar="FILE",
        help="write the bound port to FILE once listening, one line per listener "
        "(useful with --port 0)",
    )
    parser.add_argument(
        "--copy-store-to", metavar="URL",
        help="copy the config's SQLite file (storage.path) into the EMPTY PostgreSQL "
        "database at URL (postgresql://user@host/db; the password may come from "
        "PGPASSWORD), then exit (0 = copied, 2 = refused, with the reason)",
    )
    # A worker of `workers: N`, started by the parent (chatd.workers): not for people.
    parser.add_argument("--worker-slot", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--worker-ports", default="", help=argparse.SUPPRESS)
    parser.add_argument("--worker-node", help=argparse.SUPPRESS)
    parser.add_argument("--worker-stats", help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"chatd {__version__}")
    return parser


def _fail(message: str) -> int:
    print(f"chatd: {message}", file=sys.stderr)
    return EXIT_STARTUP_FAILURE


def _load(args: argparse.Namespace) -> Config:
    config = load_config(args.config) if args.config else default_config()
    if args.host is not None or args.port is not None:
        if args.port is not None and not 0 <= args.port <= 65535:
            raise ConfigError(f"must be 0..65535, got {args.port}", key="--port")
        config = config.with_listener(host=args.host, port=args.port)
    role = role_from_args(args)
    return role.apply(config) if role is not None else config


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = _load(args)
    except ConfigError as exc:
        return _fail(str(exc))

    level = args.log_level or ("DEBUG" if args.trace_hooks else config.logging.level)
    worker = f"w{args.worker_slot}" if args.worker_slot is not None else None
    logging_setup = LoggingSetup(level, config.logging.file, tag=worker)
    status = EXIT_STARTUP_FAILURE
    try:
        status = _run(args, config)
    finally:
        if not logging_setup.stop():
            # The log writer is blocked on a pipe nobody reads; interpreter exit
            # would flush that same pipe and hang.  The chat is over: leave now.
            os._exit(status)
    return status


def _run(args: argparse.Namespace, config: Config) -> int:
    if args.copy_store_to is not None:
        from .store_copy import run_copy

        return run_copy(config, args.copy_store_to)
    # Imported late so --version and config errors stay fast.
    from .preflight import problems as preflight_problems
    from .preflight import storage_reachable
    from .server import ChatServer

    # The machine's checks first (storage folder, certificates, descriptor limit):
    # milliseconds, before any plugin runs or the database is opened, so a start
    # fails at once with the line --check-config prints (issue 18, rule 4).
    problems = preflight_problems(config)
    if problems:
        for problem in problems[1:]:
            print(f"chatd: {problem}", file=sys.stderr)
        return _fail(problems[0])
    dry = args.check_config or args.command == "plugins"
    role = role_from_args(args)
    if config.workers > 1 and role is None and not dry:
        return Supervisor(config, worker_command(args), args.port_file).run()
    try:
        server = ChatServer(config, trace_hooks=args.trace_hooks, dry_run=dry)
    except (PluginLoadError, DuplicateCommandError, ConfigError) as exc:
        return _fail(str(exc))
    if role is not None:
        server.adjust_config = role.apply  # each reload re-reads the file: the same changes
    if args.command == "plugins":
        print(describe_plugins(server))
        server.discard()
        return 0
    if args.check_config:
        where = config.source or "embedded defaults"
        for warning in server.hooks.warnings():
            print(f"chatd: warning: {warning}", file=sys.stderr)
        unreachable = storage_reachable(config)
        if unreachable:
            print(f"chatd: warning: {unreachable} (chatd starts all the same, and writes "
                  "once it answers)", file=sys.stderr)
        print(f"chatd: config OK ({where}); plugins: {', '.join(server.hooks.infos)}")
        server.discard()
        return 0
    return _serve(args, config, server)


def _serve(args: argparse.Namespace, config: Config, server: ChatServer) -> int:
    """Listen and run until stopped; a port in use fails here, before anyone connects."""
    for warning in server.hooks.warnings():
        log.warning("%s", warning)
    try:
        bound = server.listen()
    except OSError as exc:
        server.discard()
        where = ", ".join(f"{item.host}:{item.port}" for item in config.listen)
        return _fail(f"cannot listen on {where}: {exc.strerror or exc}")
    except ValueError as exc:  # no descriptors left for clients; metrics unavailable
        server.discard()
        return _fail(str(exc))
    if args.port_file:
        Path(args.port_file).write_text("".join(f"{port}\n" for _host, port in bound))
    _install_signals(server)
    _report_to_parent(args, server)
    for listener in config.listen:
        if not _is_loopback(listener.host):
            log.warning(
                "listening on %s, which is not a loopback address: anyone who can reach this "
                "host can connect, and chatd has no authentication by default",
                listener.host,
            )
    try:
        server.serve_forever()
    finally:
        server.close()
    log.info("stopped")
    return server.exit_status


def _report_to_parent(args: argparse.Namespace, server: ChatServer) -> None:
    """A worker of ``workers: N`` writes its counters once a second for the parent's one
    ``/metrics`` (:mod:`chatd.workers`); any other process does nothing here."""
    role = role_from_args(args)
    if role is None:
        return
    log.info("worker %d of %d: node %s, pid %d", role.slot, server.config.workers, role.node,
             os.getpid())
    stats_file = role.stats_file
    parent = os.getppid()

    def tick() -> None:
        if os.getppid() != parent:  # the parent was killed: no orphan keeps the port
            log.warning("worker %d: the parent (pid %d) is gone: shutting down", role.slot,
                        parent)
            role.forget_files()  # nobody else will
            server.stop()
            return
        if stats_file is not None:
            try:
                write_stats(stats_file, server.published_stats)
            except OSError as exc:  # the parent's folder is gone: it is ending
                log.debug("worker stats not written: %s", exc)
        server.reactor.call_later(1.0, tick)

    tick()


def describe_plugins(server: ChatServer) -> str:
    """The ``chatd plugins`` listing: name, version, origin, hooks, commands."""
    lines = []
    for info in server.hooks.infos.values():
        lines.append(f"{info.name} {info.version or '(no version)'}")
        lines.append(f"    from:     {info.source}")
        lines.append(f"    hooks:    {', '.join(info.hooks) or '-'}")
        commands = ", ".join("/" + name for name in info.commands)
        lines.append(f"    commands: {commands or '-'}")
    return "\n".join(lines)


def _install_signals(server: ChatServer) -> None:
    interrupts = {"count": 0}

    def graceful(signum: int) -> None:
        if signum == signal.SIGINT:
            interrupts["count"] += 1
            if interrupts["count"] > 1:
                log.warning("second interrupt: exiting now")
                os._exit(130)
        log.info("received %s: shutting down", signal.Signals(signum).name)
        server.stop()

    def reload(signum: int) -> None:
        log.info("received SIGHUP: reloading %s", server.config.source or "(embedded defaults)")
        server.reload()

    server.reactor.add_signal_handler(signal.SIGTERM, graceful)
    server.reactor.add_signal_handler(signal.SIGINT, graceful)
    server.reactor.add_signal_handler(signal.SIGHUP, reload)


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
