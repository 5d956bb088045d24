"""The chatd plugin API: every hook a plugin can implement.

This module is the plugin author's manual (docs/api.md is the reference of the
objects the hooks receive).  A plugin is a module (or any object) with
functions named after these hooks and marked with ``chatd.hookimpl``::

    from chatd import hookimpl

    @hookimpl
    def chatd_client_connect(client):
        client.notice(f"hello {client.nick}!")

An implementation may accept any subset of a hook's arguments, by name.

How chatd calls hooks (read this once)
--------------------------------------
* Hooks run on the event loop.  Never block in one (no ``time.sleep``, no
  blocking network or disk I/O); use ``server.call_later`` for anything timed
  and ``server.run_in_thread(fn, *args, callback=...)`` for blocking work (its
  result comes back to ``callback`` on the loop, guarded like a hook).
* Hooks are called once per received line or per event, never once per
  delivered copy of a broadcast.
* Implementations run one at a time, newest plugin first, built-ins last
  (``tryfirst``/``trylast`` work as in pluggy).  chatd calls them itself rather
  than through pluggy's loop so that **an exception in one implementation is
  contained**: it is logged once with the plugin name, the hook and the
  traceback; the client that caused the event gets one ``! ...`` line; the
  other implementations still run; the server goes on.  ``SystemExit`` and
  ``KeyboardInterrupt`` are not contained: they stop the server.
* A hook marked *firstresult* below stops at the first implementation that
  returns something other than ``None``; chatd's own default is a ``trylast``
  implementation in a built-in plugin, so yours (newer, or ``tryfirst``) wins.
* Hook wrappers (``hookwrapper=True`` / ``wrapper=True``) are not supported
  for ``chatd_*`` hooks and are refused at startup.
* Chat is made of **events** (:mod:`chatd.events`): a message, an action, a
  join... Hooks about something that happened receive the ``event`` too, with
  its id, time, source and target.  Everything a plugin sends to a user
  becomes an event rendered by the user's protocol, sanitised: no control
  characters or escape sequences, and no line that looks like it came from
  someone else.

Banner comments group the hooks by phase.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .chat import Client, Command, Reject, Room, Server, Setting
    from .delivery import DeliveryBackend, LocalBackend
    from .events import Event, Join, NickChange, Part, Quit, RoomCreated, RoomRemoved
    from .protocols import ProtocolSpec

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
    new hook the same error isolation as chatd's own (and honours
    ``firstresult=True`` in your spec; ``server.hooks.call_first`` returns the
    one result).

    :param pluginmanager: the server's pluggy ``PluginManager``.
    """


@hookspec
def chatd_startup(server: Server) -> None:
    """The server is configured and about to accept connections.

    Called once, after every plugin is registered and before the listeners are
    bound (and again after a reload, for the new plugins).  Read your settings
    with ``server.plugin_config("yourname")`` and validate them here
    (``server.config.check_number``, ``check_text``, ``error``): raise
    ``chatd.ConfigError`` (or any exception) to stop the server with a clear
    message and exit status 2, before any client can connect.  Timers started
    with ``server.call_later`` run once the loop runs.

    It is also called on servers that never serve: ``--check-config``, and the
    dry run every reload makes first (a server of its own, with a database in
    memory, followed by ``chatd_shutdown``): a reload that fails there changes
    nothing.  So check and set up here; do what must happen once (a login
    elsewhere, a message to a room) from a timer, which a dry run never runs.

    :param server: the :class:`chatd.Server` (see docs/api.md).
    """


@hookspec
def chatd_shutdown(server: Server) -> None:
    """Your plugin is being unloaded: the server stops, a reload replaces it, or the
    circuit breaker disabled it.

    Called exactly once per loaded plugin.  Flush files, stop your threads.
    Your timers are cancelled right after.  At server shutdown clients are still
    connected and anything sent now is delivered (within the shutdown deadline).
    Exceptions are logged and ignored.
    """


@hookspec
def chatd_reload_save(server: Server) -> Any:
    """A reload is about to replace your plugin: return what its next copy should get.

    Called on the running copy of each plugin after the new config and plugins
    loaded, just before ``chatd_shutdown``.  Return any object (None: nothing to
    carry): counters, a cache, or the ``StashKey`` objects of your module, whose
    values on clients, rooms and ``server.stash`` the new copy can then move to
    its own keys (a reload imports your module again, so its keys are new
    objects).  The object is handed, as it is, to ``chatd_reload_restore`` of the
    plugin with the same name.  An exception is a plugin error: nothing is carried
    for that plugin.
    """


@hookspec
def chatd_reload_restore(server: Server, state: Any) -> None:
    """Receive what your plugin's previous copy returned from ``chatd_reload_save``.

    Called on the new copy of the plugin with the same name once the reload can
    no longer fail: after every new plugin's ``chatd_startup`` succeeded (so a
    reload that fails never leaves state moved to a copy that does not run).  Not
    called when the previous copy saved nothing, or for a new plugin.  If the
    reload fails after the save (a plugin's ``chatd_startup`` raised), the old
    copy starts again (``chatd_startup``) and gets its own state back here.  An
    exception is a plugin error: logged and counted, the reload stands.
    """


@hookspec
def chatd_commands(server: Server) -> list[Command] | None:
    """Return the commands this plugin provides, as a list of :class:`chatd.Command`.

    Called at startup, by ``--check-config``, and at every reload for the new
    copies of the plugins (a reload may call it more than once): build and
    return the list, do nothing else here.  Each command has a name (without the
    ``/``), a handler ``handler(client, args)`` where ``args`` is the text after
    the command name (stripped), a usage line, a one-line help and optionally a
    longer help shown by ``/help NAME``.  ``/help`` lists every command.

    Checked when the plugin loads (startup, ``--check-config``, reload), each a
    one-line error naming the plugin: a single ``Command`` instead of a list, a
    value that is not a ``Command``, a handler that cannot be called as
    ``handler(client, args)``, and two plugins providing the same command name.

    A handler reports a wrong argument by raising ``chatd.UsageError("detail")``:
    the client sees ``! detail; usage: /roll NdM`` (``! usage: /roll NdM`` without
    a detail; jsonl: an ``error`` object with that text).  ``chatd.CommandError("why")``
    shows ``! why``.  Any other exception is a plugin error (see the top of this
    page).
    """


@hookspec
def chatd_settings(server: Server) -> list[Setting] | None:
    """Return the per-client settings this plugin adds to ``/set``, as
    :class:`chatd.Setting` objects.

    ``/set`` alone lists every setting with the client's value; ``/set NAME
    VALUE`` checks ``VALUE`` against the setting's ``values`` and calls its
    ``set(client, value)``.  Called whenever ``/set`` runs (cheap: return the
    same list).  Keep the value in ``client.stash`` under your own key.
    """


@hookspec
def chatd_command(client: Client, command: Command, args: str) -> None:
    """``client`` is about to run ``command`` with the argument text ``args``.

    Called before every command's handler, whichever protocol the client uses
    (``/roll 2d6`` on the line protocol, ``{"cmd": "roll"}`` in JSON).  Raise
    ``chatd.CommandError("why")`` to refuse it (the client sees ``! why`` and
    the handler does not run): a permission check, a mute, a rate limit of your
    own.  Return values are ignored; other exceptions are plugin errors (the
    command still runs).
    """


@hookspec
def chatd_operator_notice(server: Server, text: str) -> None:
    """Something the server's operators should know about happened.

    Called by ``server.notify_operators(text)``: when a plugin is disabled by
    the circuit breaker, when a reload fails, or when a plugin calls it.  The
    text is also logged.  The built-in *oper* plugin sends it as a notice to
    every client logged in with ``/oper``; a plugin may forward it elsewhere.
    """


@hookspec(firstresult=True)
def chatd_delivery_backend(server: Server, local: LocalBackend) -> DeliveryBackend | None:
    """*firstresult.*  Return the delivery backend the server should use.

    Called once at startup, after ``chatd_startup``.  The default is ``local``,
    the in-process backend (no implementation is needed for it).  A backend
    that spans processes or machines (Redis pub/sub) returns an object with the
    :class:`chatd.delivery.DeliveryBackend` methods: it publishes what the chat
    domain gives it and hands what other nodes send to ``local`` (whose
    ``to_room``/``to_client`` deliver here).  Reloads keep the backend chosen at
    startup.

    Its presence questions (``claim_nick``, ``find_nick``, ``members``,
    ``room_list``) answer through a continuation ``then``: at most once, on the
    loop (hand an answer over from an I/O thread with
    ``server.call_soon_threadsafe``), before the call returns or later; on a
    failure of its own it does not answer, and the domain's timeout
    (``limits.presence_timeout_seconds``) tells the waiting client.  Answers are
    plain data (``chatd.Person``, ``chatd.Member``, ``chatd.RoomInfo``), never
    another node's client.  ``chatd.testing.backends.DeferredBackend`` is a
    wrapper of ``local`` whose answers come later: a model to start from.  See
    "Presence" in :mod:`chatd.delivery`.

    Unlike other hooks, an exception here is not contained: it stops the start
    (a ``chatd.ConfigError`` is shown as it is; anything else as a plugin that
    failed to load), since a backend that could not be made would leave a
    cluster node running alone, outside its cluster.
    """


@hookspec
def chatd_protocols() -> list[ProtocolSpec] | None:
    """Register wire formats: return a list of ``chatd.protocols.ProtocolSpec``.

    A spec is the protocol's one registration: its name (what a listener's
    ``protocol:`` says), its ``ChatProtocol`` subclass (with its ``Renderer``),
    the frozen dataclass of its own listener options, each declared with
    ``chatd.config_rules.setting`` as chatd's own settings are (or None), and a doc
    line.  A listener that names the protocol may then hold those options beside
    the core's keys; they are checked with the rules and error wording of every
    setting (file, key and line), and the protocol reads them, defaults filled in,
    as ``self.listener.options``.  See docs/protocols.md, "Adding a protocol".

    Called once per plugin generation, with no arguments, after every plugin is
    registered and before ``chatd_startup``: at start-up, for ``--check-config``,
    and in a reload's dry run and its new generation.  A listener may only name
    a protocol registered then, so a reload that drops the plugin of a protocol
    in use is refused; a running listener keeps its protocol until a restart.
    A name is registered once: returning ``line``, ``jsonl`` or another plugin's
    name, something that is not a ``ProtocolSpec``, or raising stops the start
    (or the reload) with an error that names your plugin.
    """


# ---------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------


@hookspec
def chatd_client_connect(client: Client) -> None:
    """A client connected and has its initial nick (``guest-N``, or the nick its
    protocol's handshake asked for).

    Called once per chat session, when the connection's protocol begins it (line
    and jsonl: at the first line or after ``limits.greeting_delay_seconds``, and
    after the listener password where there is one); never for a connection that
    never becomes a user (an HTTP request, a TLS probe, a half-finished handshake).
    The built-in *rooms* plugin implements this
    with ``tryfirst=True`` to send the welcome line and put the client in the
    default room, so by the time your implementation runs, ``client.room`` is
    set and the welcome has been sent.  If your implementation raises, the
    client stays connected (the error is logged and reported to it).
    """


@hookspec
def chatd_client_ready(client: Client) -> None:
    """``client`` is a chat client: it sent its first line, or stayed connected
    ``limits.announce_after_seconds``; its rooms have just been told it joined.

    Called at most once per connection, after :func:`chatd_client_connect`.
    Connections that never get here (a port scan, an HTTP request, a TLS hello on
    the chat port) leave no trace in any room; the built-in *log* plugin records
    connections here rather than at connect, so probes do not flood the log.
    """


@hookspec
def chatd_client_disconnect(client: Client, reason: str, event: Quit) -> None:
    """A client is gone (``/quit``, closed socket, limit, shutdown).

    Called exactly once per connection, after the client was removed from the
    nick table but while ``client.rooms`` still lists the rooms it was in.
    The quit ``event`` is delivered to the members of those rooms (each told
    once) right after this hook, if the client was ever announced to them
    (``client.announced``).  Sending to ``client`` does nothing now.

    :param reason: a short human-readable text, e.g. ``"Quit: bye"`` or
        ``"connection closed by peer"`` (the same as ``event.text``).
    """


@hookspec(firstresult=True)
def chatd_check_nick(client: Client, nick: str) -> str | Reject | None:
    """*firstresult.*  May ``client`` take ``nick``?  Return a reason to refuse it.

    Called by ``server.rename()`` (``/nick``) after the nick passed the syntax
    rules and before it is claimed, so a plugin can own nicks (registered
    accounts, reserved names).  Return ``None`` to allow it; a string refuses
    it and the client sees ``! <your reason>`` (an error coded ``nick_refused``;
    return ``Reject(reason, code=...)`` for a code of your own, such as
    ``nick_registered``).  Whether the nick is taken by
    another connected client is checked after this hook by the delivery backend.
    """


@hookspec
def chatd_account_change(client: Client, old: str | None, new: str | None) -> None:
    """``client`` is now identified as account ``new`` (None: no account), was ``old``.

    Called by ``server.set_account()``: the built-in *accounts* plugin calls it
    after ``/identify`` or ``/register`` succeeds, and with ``new=None`` after
    ``/drop``.  An account is a registered nick's name; it stays with the
    connection when the client changes nick.  Moderation uses it (bans by
    account, room operators); so may any plugin that trusts who someone is.
    By the time it runs, the client and the members of its rooms were sent the
    ``AccountChange`` event (IRC's ``account-notify``); a session that began
    identified (SASL) is no change and calls nothing.
    """


@hookspec
def chatd_account_dropped(server: Server, account: str) -> None:
    """The registered nick ``account`` was given up (``/drop``): it is no one's now.

    Whoever registers the nick next is someone else, so forget what the old owner
    was trusted with, or said: the built-in *moderation* plugin unregisters the
    rooms it founded and removes it from every room's operators; *history* deletes
    its private conversations.
    """


@hookspec
def chatd_nick_change(client: Client, old: str, new: str, event: NickChange) -> None:
    """``client`` was renamed from ``old`` to ``new`` (``client.nick == new``).

    Called after the nick table was updated and the rename ``event`` was sent
    to the client and everyone who shares a room with it.
    """


# ---------------------------------------------------------------------------
# Messages: every event carrying text a user wrote
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def chatd_route_message(client: Client, text: str) -> Room | None:
    """*firstresult.*  Which room does a plain chat line from ``client`` go to?

    Called for every chat line that does not name its room (a plain line on
    the line protocol, ``{"cmd": "say"}`` without ``"room"``).  Return a
    :class:`chatd.Room`.  The built-in *rooms* plugin's ``trylast`` default
    returns ``client.room``; if no implementation returns a room, the client is
    told it is in no room.
    """


@hookspec
def chatd_filter_message(client: Client, text: str, event: Event) -> str | None:
    """Inspect, rewrite or block text a user wrote before anyone sees it.

    Called for every event that carries user text, whatever command or
    protocol produced it: chat lines (``event.kind == "message"``), actions
    (``"action"``, ``/me``), private messages (``"privmsg"``), topics
    (``"topic"``), away messages (``"away"``, ``/away text``), and part and
    quit reasons (``"part"``, ``"quit"``).
    ``text`` is ``event.text``.  Return ``None`` to let it pass unchanged, a
    string to replace it (the next filter sees the replacement; a blank
    replacement drops the event), or raise ``chatd.Reject("why")`` to drop it:
    the client then gets ``! why`` and no other hook sees it (a rejected part or
    quit reason is removed; the part or quit itself happens).  Other exceptions
    are plugin errors: that filter is skipped and the text goes on.
    """


@hookspec
def chatd_message(client: Client, text: str, event: Event) -> None:
    """Text a user wrote was accepted by the filters and is about to be delivered.

    Called once per accepted event of the kinds listed under
    :func:`chatd_filter_message`, after the filters and before delivery.
    ``text`` is the final, sanitised ``event.text``.  For logging, counting,
    mentions or bridging; the server itself delivers ``event`` afterwards
    (to the room, or to the nick of a private message).  Return values are
    ignored.  A message or private message with ``event.notice`` set is a
    user's notice (``/notice``, IRC's ``NOTICE``): never answer one
    automatically (RFC 2812 3.3.2).
    """


@hookspec(firstresult=True)
def chatd_check_speak(client: Client, room: Room) -> str | Reject | None:
    """*firstresult.*  May a plugin speak in ``room`` for ``client``?  Return a reason
    to refuse.

    Called when a plugin, while running a command ``client`` typed (``/roll``),
    posts to ``room`` with ``room.say()``: what it posts is ``client``'s doing,
    so whatever keeps ``client`` quiet there (the built-in *moderation*
    plugin's mutes, the *accounts* plugin's unidentified holders of a
    registered nick) applies to it too, for every plugin.  Return ``None`` to
    let it through; a string drops the post (``room.say()`` returns 0), and
    ``client`` sees ``! <your reason>; /roll's post to #room was not sent``
    (coded ``speak_refused``, or the code of a ``Reject(reason, code=...)``
    returned instead: ``muted``); the command goes on.  Not called for what
    another plugin posts from a hook the command set off (a greeting on
    ``/join``), nor from timers.  Chat lines,
    actions, topics and reasons pass :func:`chatd_filter_message` instead.
    """


@hookspec
def chatd_delivered(server: Server, event: Event) -> None:
    """``event`` was handed to delivery: whatever you send now arrives after it.

    Called once per event (never per recipient), right after the server gave it
    to the delivery backend, for the chat events of rooms and nicks: messages,
    actions, private messages, topics (``event.kind`` says which), joins, parts,
    quits, nick changes, and account and real name changes (``account``,
    ``realname``).  Not for notices and errors (yours included), not for
    what a filter rejected, and not for the join of a client that is not yet
    announced (``client.announced``; its join is delivered, and this hook
    called, when it is).  The bytes go out at the end of the loop's tick, in
    order: a reply a bot plugin sends from here reaches everyone *after* the
    line it answers (from ``chatd_message`` it would arrive before it).

    Cost: with no implementation, one cached lookup per event; each
    implementation runs on the loop for every chat line of the server, so keep
    it cheap (count, queue, reply) and put slow work on ``server.run_in_thread``.
    What you send from here is delivered, and may call this hook again: do not
    answer your own replies.  Exceptions are plugin errors (the client that
    caused the event is told, when it is still connected).
    """


# ---------------------------------------------------------------------------
# Rooms
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def chatd_check_join(client: Client, name: str, room: Room | None) -> str | Reject | None:
    """*firstresult.*  May ``client`` join the room ``name``?  Return a reason to refuse.

    Called by ``server.join()`` before a client enters a room it is not in
    (``room`` is None when the room does not exist yet and would be created).
    Return ``None`` to allow it; a string refuses the join and ``server.join()``
    raises :class:`chatd.RoomError` with it (``/join`` shows ``! <reason>``),
    coded ``join_refused``; return ``Reject(reason, code=...)`` to give the
    refusal a code of your own (``banned``, ``invite_only``).
    The built-in *moderation* plugin refuses banned clients and uninvited ones
    in invite-only rooms here.
    """


@hookspec
def chatd_room_join(client: Client, room: Room, event: Join) -> None:
    """``client`` joined ``room`` (it is already among ``room.members``).

    Called by ``server.join()`` after the join ``event`` went to the room's
    other members (and to the client).  Anything you send the client now (a
    greeting) follows it.
    """


@hookspec
def chatd_room_part(client: Client, room: Room, reason: str, event: Part) -> None:
    """``client`` left ``room`` (it is no longer among ``room.members``).

    Called by ``server.part()``, not on disconnect (see
    :func:`chatd_client_disconnect`), after the part ``event`` went to the
    room.  An empty room other than the default one is removed after this hook.
    """


@hookspec
def chatd_room_created(server: Server, room: Room, event: RoomCreated) -> None:
    """The room ``room`` was just created (its first member is about to join).

    Set up per-room state in ``room.stash`` here (a history buffer, a saved
    topic).  Called for the default room at startup too.
    """


@hookspec
def chatd_room_removed(server: Server, room: Room, event: RoomRemoved) -> None:
    """The room ``room`` was removed: its last member left (the default room stays).

    Drop what you kept for it; ``room.stash`` goes with the room.  A later join
    of the same name creates a new room (``chatd_room_created`` again).
    """


def _all_hook_names() -> list[str]:
    """Names of every hook declared here (used by the docs test)."""
    return sorted(name for name in globals() if name.startswith("chatd_"))


__all__: list[Any] = ["hookspec"]
