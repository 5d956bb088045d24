"""The cluster plugin: several chatd nodes acting as one server, joined through Redis.

Off unless the config's ``cluster:`` section sets ``redis_url``; then redis-py
is imported (a clear error naming ``pip install 'chatd[cluster]'`` if it is
missing) and ``chatd_delivery_backend`` returns a
:class:`~chatd.builtin.cluster.backend.ClusterBackend` over a
:class:`~chatd.builtin.cluster.link.Link` (see docs/cluster.md).

The link and the backend live as long as the process: a reload (SIGHUP)
hands them from this copy of the plugin to the next (``chatd_reload_save`` /
``chatd_reload_restore``), so the heartbeat and the subscriptions go on; only
the server's shutdown closes them.  The link connects from a timer, which
the dry run of ``--check-config`` and of every reload never runs: a check
makes a backend (so a missing redis-py or password is found) but never talks
to Redis.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from chatd import ConfigError, Server, hookimpl

log = logging.getLogger(__name__)

#: The backend of each server this copy of the plugin serves (by the server's id: a
#: reload's dry run is a server of its own, and must not take the running one's place).
_running: dict[int, Any] = {}


def _presence(link: Any, names: Any, node: str, local: Any, server: Server) -> Any:
    """The presence of the cluster: nicks, members and rooms in Redis, a heartbeat, dead
    nodes swept (:mod:`chatd.builtin.cluster.presence`)."""
    from .presence import RedisPresence

    settings = server.config.cluster
    return RedisPresence(link, names, node, local,
                         heartbeat_seconds=settings.heartbeat_seconds,
                         node_timeout_seconds=settings.node_timeout_seconds,
                         call_later=server.call_later, on_conflict=server.fail)


def make_backend(server: Server, local: Any) -> Any:
    """The link, the presence and the backend for ``server.config.cluster`` (not started:
    see :func:`_start`)."""
    from .backend import ClusterBackend
    from .link import Link
    from .presence import announce_lost
    from .wire import Names

    settings = server.config.cluster
    node = server.node
    names = Names(settings.prefix)
    backend: Any = None

    def on_message(channel: str, data: bytes) -> None:
        backend.on_message(channel, data)

    def on_state(up: bool) -> None:
        backend.on_state(up)

    link = Link(settings.redis_url, post=server.call_soon_threadsafe, loop=server.loop,
                name=f"chatd-{node}", connect_timeout=settings.connect_timeout_seconds,
                on_message=on_message, on_state=on_state, password=settings.password(),
                max_outbox=settings.max_outbox, max_outbox_bytes=settings.max_outbox_bytes,
                health_seconds=settings.health_check_seconds)
    presence = _presence(link, names, node, local, server)
    backend = ClusterBackend(local, link, presence, node, names=names,
                             max_payload=settings.max_payload_bytes)
    presence.on_lost = functools.partial(announce_lost, backend)
    backend.call_later = server.call_later
    backend.on_kick = functools.partial(_kicked_here, server)
    backend.on_kill = functools.partial(_killed_here, server)
    presence.on_nick_lost = functools.partial(_nick_lost_here, server)
    if server.config.storage.url:  # a history every node writes: gaps are recovered
        from chatd.builtin.history import recover_room_events, remember_remote

        backend.recover = functools.partial(recover_room_events, server)
        backend.remember = functools.partial(remember_remote, server)
    return backend


def _killed_here(server: Server, session: str, request: Any) -> None:
    """A server operator on another node disconnected ``session`` (a client of this node)
    with ``/kill``: closed here as a ``/kill`` typed here closes it; nothing if it is gone."""
    from types import SimpleNamespace

    target = server.client_of(SimpleNamespace(session=session))  # type: ignore[arg-type]
    if target is None:
        return
    killer, why = request.source.nick, request.text
    log.info("%s (on node %s) disconnected %s: %s", killer, request.source.node, target.nick,
             why)
    target.close(f"killed by {killer}: {why}", goodbye=f"you were disconnected by {killer}: {why}")


def _nick_lost_here(server: Server, session: str, nick: str) -> None:
    """``nick`` of a client of this node was taken by a user of another node while this
    node was cut off from Redis or frozen (its users were swept as gone): Redis' holder
    keeps it, and this client becomes a guest, told why (never two holders of a nick)."""
    from types import SimpleNamespace

    client = server.client_of(SimpleNamespace(session=session))  # type: ignore[arg-type]
    if client is None or not client.connected:
        return
    guest = server.rename_to_guest(client)
    log.warning("cluster: %s was taken on another node while this node was cut off; "
                "its holder here is now %s", nick, guest)
    client.notice(f"{nick} was taken on another node while this server was cut off from "
                  f"the cluster; you are now {guest}")


def _kicked_here(server: Server, session: str, part: Any) -> None:
    """An operator on another node kicked ``session`` (a client of this node) out of the
    room ``part`` names: put out here as a kick typed here is (moderation's
    :func:`~chatd.builtin.moderation.enforcement.kick`); nothing if it is gone or not
    in that room any more."""
    from types import SimpleNamespace

    from chatd.builtin.moderation.enforcement import kick

    target = server.client_of(SimpleNamespace(session=session))  # type: ignore[arg-type]
    room = server.rooms.get(part.target)
    if target is None or room is None or target not in room.members:
        return
    log.info("%s kicked %s from %s (from node %s): %s", part.kicked_by, target.nick,
             room.name, part.source.node, part.text)
    kick(server, room, target, part.kicked_by or part.source.nick, part.text)


def _start(backend: Any, prefix: str) -> None:
    """Connect (once the loop runs: never in a dry run)."""
    backend.start()
    backend.link.start()
    log.info("cluster: node %s, prefix %s", backend.node, prefix)


def _unusable(server: Server, exc: Exception) -> str:
    """Why the backend cannot be made from ``cluster.redis_url`` (a CA file that does not
    exist, an option that is not a number), with every password cut out: a refusal to
    start, never a plugin failure after which the node runs alone, outside the cluster."""
    from chatd.config_rules import url_secrets

    settings = server.config.cluster
    text = f"cannot use it: {type(exc).__name__}: {exc}"
    secrets = [*url_secrets(settings.redis_url or ""), settings.password() or ""]
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


@hookimpl
def chatd_delivery_backend(server: Server, local: Any) -> Any:
    if not server.config.cluster.enabled:
        return None
    try:
        backend = make_backend(server, local)
    except ImportError as exc:
        raise ConfigError(str(exc), key="cluster.redis_url") from None
    except (ValueError, OSError) as exc:  # a URL option redis-py or ssl refuses
        raise ConfigError(_unusable(server, exc), key="cluster.redis_url") from None
    _running[id(server)] = backend
    server.call_soon(_start, backend, server.config.cluster.prefix)
    return backend


@hookimpl
def chatd_reload_save(server: Server) -> Any:
    """Hand the running backend to the next copy: this copy's shutdown leaves it open."""
    return _running.pop(id(server), None)


@hookimpl
def chatd_reload_restore(server: Server, state: Any) -> None:
    _running[id(server)] = state
    if state is not None:  # the old copy's timers were cancelled: the heartbeat goes on
        state.presence.start()


@hookimpl
def chatd_shutdown(server: Server) -> None:
    backend = _running.pop(id(server), None)
    if backend is not None:
        backend.close()
