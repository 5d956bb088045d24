"""Built-in plugin *oper*: server operators, and the commands only they may use.

An operator is a client that sent ``/oper PASSWORD`` with the password from
``plugins.oper.password`` (use ``${CHATD_OPER_PASSWORD}`` to keep it out of the
file).  Without a password configured nobody can become an operator.

Operators get ``/reload`` (re-read config.yaml and the plugins, like SIGHUP),
``/kill NICK [reason]`` (disconnect someone connected to this process: in a
cluster, a user of another node is killed from that node; ``/kick`` puts
someone out of one room, see *moderation*), ``/plugins`` and ``/stats``, every
``chatd_operator_notice`` (a plugin disabled by the circuit breaker, a failed
reload) as a notice, and the powers of a room operator in every room.

Hardening: the comparison is constant-time (``hmac.compare_digest``); a
connection that fails 3 times is closed (``! too many failed /oper attempts``);
an address with 10 failures within 60 s (several connections, or several people
behind one NAT) is refused further attempts until the window passes, so one
guesser cannot lock out everybody behind its address at once.  Every attempt is
logged (``chatd.oper``: who, from where, how many recent failures), the password
never is (commands are not logged at all).
"""

from __future__ import annotations

import functools
import hmac
import logging
from typing import Any

from chatd import Client, Command, CommandError, Person, Server, StashKey, UsageError, hookimpl

from .attempts import RecentFailures

log = logging.getLogger("chatd.oper")

IS_OPERATOR = StashKey[bool]()
#: The ids of the clients that are operators now (server-wide), so counting them
#: (``/lusers``, and every IRC registration's LUSERS) costs no walk over the clients.
OPERATORS = StashKey[set[int]]()
FAILED_ATTEMPTS = StashKey[RecentFailures]()
CONNECTION_FAILURES = StashKey[int]()

#: Failed attempts before the connection is closed.
_MAX_FAILURES = 3
#: Failed attempts from one address within the window before it may not try.
_ADDRESS_CEILING = 10
_FAILURE_WINDOW = 60.0


def _password(server: Server) -> str | None:
    value = server.plugin_config("oper").get("password")
    return None if value is None else str(value)


def is_operator(client: Client) -> bool:
    """Whether ``client`` has authenticated with /oper (other plugins may ask)."""
    return client.stash.get(IS_OPERATOR, False)


def operators_online(server: Server) -> int:
    """How many clients of this process are operators now (other plugins may ask)."""
    return len(server.stash.get(OPERATORS, ()))


def require_operator(client: Client) -> None:
    if not is_operator(client):
        raise CommandError("permission denied: this command is for operators (/oper)",
                           code="not_operator")


@hookimpl
def chatd_startup(server: Server) -> None:
    password = server.plugin_config("oper").get("password")
    if password is not None and (not isinstance(password, str) or len(password) < 8):
        raise server.config.error(
            "plugins.oper.password", "must be a string of at least 8 characters, or null"
        )
    server.stash[FAILED_ATTEMPTS] = RecentFailures(_FAILURE_WINDOW)


def cmd_oper(client: Client, args: str) -> None:
    server = client.server
    password = _password(server)
    if password is None:
        raise CommandError("no operator password is configured on this server", code="unavailable")
    if not args:
        raise UsageError()
    failures = server.stash.setdefault(FAILED_ATTEMPTS, RecentFailures(_FAILURE_WINDOW))
    recent = failures.count(client.address)
    if recent >= _ADDRESS_CEILING:
        log.warning("/oper refused for %s (%s:%d): %d failures from that address within %g s",
                    client.nick, *client.peer, recent, _FAILURE_WINDOW)
        raise CommandError("too many failed attempts from your address; try again later",
                           code="too_many_attempts")
    if hmac.compare_digest(args.encode("utf-8"), password.encode("utf-8")):
        client.stash[IS_OPERATOR] = True
        server.stash.setdefault(OPERATORS, set()).add(client.id)
        log.info("%s (%s:%d) is now an operator", client.nick, *client.peer)
        client.notice("you are now an operator")
        return
    recent = failures.add(client.address)
    mine = client.stash.get(CONNECTION_FAILURES, 0) + 1
    client.stash[CONNECTION_FAILURES] = mine
    log.warning("failed /oper by %s (%s:%d): %d on this connection, %d from its address "
                "within %g s", client.nick, *client.peer, mine, recent, _FAILURE_WINDOW)
    if mine >= _MAX_FAILURES:
        client.error("too many failed /oper attempts; disconnecting", code="too_many_attempts")
        client.close("too many failed /oper attempts")
        return
    raise CommandError("wrong password", code="wrong_password")


def cmd_reload(client: Client, args: str) -> None:
    require_operator(client)
    if client.server.reload():
        client.notice("reloaded the config and the plugins")
    else:
        raise CommandError("reload failed; the running config and plugins stay (see the log)",
                           code="failed")


def cmd_kill(client: Client, args: str) -> None:
    require_operator(client)
    nick, _, reason = args.partition(" ")
    if not nick:
        raise UsageError()
    why = reason.strip() or "no reason given"
    target = client.server.find_client(nick)
    if target is None:  # perhaps a user of another node of a cluster
        client.server.ask_whois(client, nick, functools.partial(_kill_found, client, nick, why))
        return
    _kill_here(client, target, why)


def _kill_found(client: Client, nick: str, why: str, person: Person | None) -> None:
    """/kill's second half for a nick not connected here: its node (a cluster's) is
    asked to disconnect it; the operator's right was checked on this node."""
    server = client.server
    target = server.client_of(person) if person is not None else None
    if target is not None:  # connected here meanwhile
        _kill_here(client, target, why)
        return
    if person is None or not server.kill_elsewhere(client, person, why):
        raise CommandError(f"no such nick: {nick}", code="no_such_nick")
    log.info("%s (%s:%d) disconnected %s (on node %s): %s", client.nick, *client.peer,
             person.nick, person.node, why)
    client.notice(f"disconnected {person.nick}")


def _kill_here(client: Client, target: Client, why: str) -> None:
    target.close(
        f"killed by {client.nick}: {why}",
        goodbye=f"you were disconnected by {client.nick}: {why}",
    )
    log.info("%s (%s:%d) disconnected %s: %s", client.nick, *client.peer, target.nick, why)
    client.notice(f"disconnected {target.nick}")


def cmd_stats(client: Client, args: str) -> None:
    require_operator(client)
    s = client.server.stats_snapshot()
    client.notice(
        f"clients {s['clients']}/{s['max_clients']}, rooms {s['rooms']}, "
        f"connections since start {s['connections_total']}"
    )
    client.notice(
        f"messages in {s['messages_in']}, deliveries {s['deliveries']}, "
        f"bytes in {s['bytes_in']}, bytes out {s['bytes_out']}, "
        f"output queued {s['output_bytes_queued']}"
    )
    lag_ms, lag_max_ms = s["loop_lag_seconds"] * 1000, s["loop_lag_max_seconds"] * 1000
    client.notice(
        f"loop lag {lag_ms:.1f} ms (max {lag_max_ms:.1f} ms), "
        f"log records dropped {s['log_dropped']}"
    )
    for title, key in (
        ("refused", "rejected"),
        ("limit disconnections", "disconnects"),
        ("plugin errors", "plugin_errors"),
        ("slow plugin calls", "plugin_slow_calls"),
    ):
        counts = ", ".join(f"{name} {count}" for name, count in sorted(s[key].items()))
        client.notice(f"{title}: {counts or 'none'}")
    _storage_stats(client, s)
    _cluster_stats(client, s)


def _cluster_stats(client: Client, s: dict[str, Any]) -> None:
    """The cluster's line of /stats (a cluster node only): the link's state and what was
    missed, recovered, refused and dropped on the way between nodes."""
    if "cluster_up" not in s:
        return
    client.notice(
        f"cluster: redis {'up' if s['cluster_up'] else 'DOWN'}, "
        f"batches in {s.get('cluster_batches_in', 0)}, out {s.get('cluster_batches_out', 0)}, "
        f"gaps {s.get('cluster_gaps', 0)}, recovered {s.get('cluster_recovered', 0)}, "
        f"bad messages {s.get('cluster_bad_messages', 0)}, "
        f"duplicates {s.get('cluster_duplicates', 0)}, "
        f"dropped {s.get('cluster_dropped', 0)}, "
        f"handler errors {s.get('cluster_handler_errors', 0)}"
    )


def _storage_stats(client: Client, s: dict[str, Any]) -> None:
    """The store's three lines of /stats: its state, its write counters, and the
    writes dropped as bad by owner (the plugin that queued them)."""
    if "storage_committed" not in s:  # a server with no lifecycle (in-process tests)
        return
    problem = s["storage_problem"]
    client.notice(f"storage: {'FAILING: ' + problem if problem else 'ok'}")
    client.notice(
        f"storage writes: queued {s['storage_queued']}, committed {s['storage_committed']}, "
        f"dropped {s['storage_dropped']}, rejected {s['storage_rejected']}, "
        f"failed commits {s['storage_failures']}, "
        f"writer restarts {s['storage_writer_restarts']}"
    )
    counts = ", ".join(f"{owner} {count}"
                       for owner, count in sorted(s["storage_rejected_by"].items()))
    client.notice(f"rejected writes: {counts or 'none'}")


def cmd_plugins(client: Client, args: str) -> None:
    require_operator(client)
    for info in client.server.hooks.infos.values():
        state = f" DISABLED: {info.disabled}" if info.disabled else ""
        commands = " ".join("/" + c for c in info.commands) or "-"
        version = f" {info.version}" if info.version else ""
        client.notice(f"{info.name}{version} ({info.source}) commands: {commands}{state}")


@hookimpl
def chatd_client_disconnect(client: Client) -> None:
    operators = client.server.stash.get(OPERATORS)
    if operators is not None:
        operators.discard(client.id)


@hookimpl
def chatd_operator_notice(server: Server, text: str) -> None:
    for client in list(server.clients.values()):
        if is_operator(client):
            client.notice(f"[oper] {text}")


@hookimpl
def chatd_commands() -> list[Command]:
    return [
        Command(
            "oper", cmd_oper, "/oper PASSWORD", "become a server operator",
            "The password is plugins.oper.password in the server's config. Three wrong\n"
            "attempts close your connection; ten from one address within a minute lock\n"
            "that address out for the rest of the minute.",
            exact_args=True,
        ),
        Command(
            "reload", cmd_reload, "/reload", "(operators) re-read the config and plugins",
            "Like SIGHUP: connections, nicks and rooms stay; if the new config or a plugin\n"
            "fails to load, the running ones stay in force.",
        ),
        Command("kill", cmd_kill, "/kill NICK [reason]", "(operators) disconnect a user",
                "/kick puts someone out of one room; /kill closes their connection."),
        Command("plugins", cmd_plugins, "/plugins", "(operators) list the loaded plugins"),
        Command("stats", cmd_stats, "/stats",
                "(operators) counters: clients, traffic, limits, storage"),
    ]
