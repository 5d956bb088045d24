"""The chatd plugin API: every hook a plugin can implement.

This module is the plugin author's manual.  A plugin is a module (or any
object) with functions named after these hooks and marked with
``chatd.hookimpl``::

    from chatd import hookimpl, Command

    @hookimpl
    def chatd_client_connect(client):
        client.notice(f"hello {client.nick}!")

An implementation may accept any subset of a hook's arguments, by name.

How chatd calls hooks (read this once)
--------------------------------------
* Hooks run on the event loop.  Never block in one (no ``time.sleep``, no
  blocking network or disk I/O); use ``server.call_later`` for anything timed.
* Hooks are called once per received line or per event, never once per
  delivered copy of a broadcast.
* Implementations run one at a time, newest plugin first, built-ins last
  (``tryfirst``/``trylast`` work as in pluggy).  chatd calls them itself rather
  than through pluggy's loop so that **an exception in one implementation is
  contained**: it is logged once with the plugin name, the hook and the
  traceback; the client that caused the event gets one ``! ...`` line; the
  other implementations still run; the server goes on.  ``SystemExit`` raised
  by a plugin is treated the same way, not as a server exit.
* Hook wrappers (``hookwrapper=True`` / ``wrapper=True``) are not supported
  for ``chatd_*`` hooks and are refused at startup.
* All text a plugin sends goes through the same sanitiser as user text:
  control characters and terminal escape sequences never reach a terminal.

Banner comments group the hooks by phase.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .client import Client
    from .commands import Command
    from .rooms import Room
    from .server import Server

hookspec = pluggy.HookspecMarker("chatd")


# ---------------------------------------------------------------------------
# Server lifecycle
# ---------------------------------------------------------------------------


@hookspec(historic=True)
def chatd_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    """Add hook specifications of your own so other plugins can implement them.

    Called once for every plugin as it is registered, before the server
    starts.  Call ``pluginmanager.add_hookspecs(module_or_class)`` with a
    namespace whose functions are marked with ``chatd.hookspec``.  To call your
    hook later, use ``server.hooks.call("myplugin_event", ...)``, which gives the
    new hook the same error isolation as chatd's own.

    :param pluginmanager: the server's pluggy ``PluginManager``.
    """


@hookspec
def chatd_startup(server: Server) -> None:
    """The server is configured and about to accept connections.

    Called once, after every plugin is registered and before the listener is
    bound.  Read your settings with ``server.plugin_config("yourname")`` and
    validate them here: raise ``chatd.ConfigError`` (or any exception) to stop
    the server with a clear message and exit status 2, before any client can
    connect.  Timers started with ``server.call_later`` run once the loop runs.

    :param server: the :class:`chatd.server.Server`.
    """


@hookspec
def chatd_shutdown(server: Server) -> None:
    """The server is stopping; clients are still connected but will not be read.

    Called once.  Flush files, cancel timers.  Anything sent to clients now is
    delivered before they are disconnected (within the shutdown deadline).
    Exceptions are logged and ignored.
    """


@hookspec
def chatd_commands(server: Server) -> list[Command] | None:
    """Return the commands this plugin provides, as a list of :class:`chatd.Command`.

    Called once at startup.  Each command has a name (without the ``/``), a
    handler ``handler(client, args)`` where ``args`` is the text after the
    command name (stripped), a usage line, a one-line help and optionally a
    longer help shown by ``/help NAME``.  ``/help`` lists every command.

    A handler reports a wrong argument by raising ``chatd.UsageError`` (the
    client is shown the usage line) or ``chatd.CommandError("why")`` (the client
    is shown ``! why``).  Any other exception is a plugin error (see the top of
    this page).  Two plugins providing the same command name is a startup error
    naming both.
    """


@hookspec
def chatd_operator_notice(server: Server, text: str) -> None:
    """Something the server's operators should know about happened.

    Called by ``server.notify_operators(text)``: when a plugin is disabled by
    the circuit breaker, when a reload fails, or when a plugin calls it.  The
    text is also logged.  The built-in *oper* plugin sends it as a notice to
    every client logged in with ``/oper``; a plugin may forward it elsewhere.
    """


# ---------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------


@hookspec
def chatd_client_connect(client: Client) -> None:
    """A client connected and has its initial nick (``guest-N``).

    Called once per connection.  The built-in *rooms* plugin implements this
    with ``tryfirst=True`` to put the client in the default room and send the
    welcome line, so by the time your implementation runs, ``client.room`` is
    set and the welcome has been sent.  If your implementation raises, the
    client stays connected (the error is logged and reported to it).
    """


@hookspec
def chatd_client_disconnect(client: Client, reason: str) -> None:
    """A client is gone (``/quit``, closed socket, limit, shutdown).

    Called exactly once per connection, after the client was removed from the
    nick table but while ``client.rooms`` still lists the rooms it was in (so a
    plugin can tell their members).  Sending to ``client`` does nothing now.

    :param reason: a short human-readable text, e.g. ``"Quit: bye"`` or
        ``"connection closed by peer"``.
    """


@hookspec
def chatd_nick_change(client: Client, old: str, new: str) -> None:
    """``client`` was renamed from ``old`` to ``new`` (``client.nick == new``).

    Called after the nick table was updated.  The built-in *rooms* plugin tells
    the members of the client's rooms; the */nick* command tells the client.
    """


# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------


@hookspec
def chatd_filter_message(client: Client, text: str) -> str | None:
    """Inspect, rewrite or block a chat message before it is delivered.

    Called for every plain line (and ``//`` escape) a client sends, before
    :func:`chatd_message`.  Return ``None`` to let ``text`` pass unchanged,
    a string to replace it (the next filter sees the replacement), or raise
    ``chatd.Reject("why")`` to drop the message; the sender then gets
    ``! why`` and no other hook sees it.  Other exceptions are plugin errors:
    that filter is skipped and the message goes on.
    """


@hookspec
def chatd_message(client: Client, text: str) -> None:
    """Deliver a chat message ``text`` from ``client``.

    Called once per accepted message, after the filters.  ``text`` is a single
    sanitised line.  The built-in *rooms* plugin delivers it to the other
    members of ``client.room`` as ``<nick> text``; other implementations may
    log it, count it or bridge it elsewhere.  Return values are ignored.
    """


# ---------------------------------------------------------------------------
# Rooms
# ---------------------------------------------------------------------------


@hookspec
def chatd_room_join(client: Client, room: Room) -> None:
    """``client`` joined ``room`` (it is already among ``room.members``).

    Called by ``server.join()``.  The built-in *rooms* plugin announces the
    join to the other members.
    """


@hookspec
def chatd_room_part(client: Client, room: Room, reason: str) -> None:
    """``client`` left ``room`` (it is no longer among ``room.members``).

    Called by ``server.part()``, not on disconnect (see
    :func:`chatd_client_disconnect`).  An empty room other than the default one
    is removed after this hook.
    """


def _all_hook_names() -> list[str]:
    """Names of every hook declared here (used by the docs test)."""
    return sorted(name for name in globals() if name.startswith("chatd_"))


__all__: list[Any] = ["hookspec"]
