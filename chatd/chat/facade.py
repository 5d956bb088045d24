"""The server, as a plugin sees it: the one object hooks receive as ``server``.

Plugins reach everything through this facade (and the :class:`~chatd.Client`,
:class:`~chatd.Room` and event objects it hands out), never through the
composition root or the sockets.  docs/api.md is its reference, tested against
this class so the two cannot drift.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ..delivery import LocalBackend, member, nick_key
from ..events import Event, ModeItem, Part, Quit
from ..replies import MemberEntry
from ..stash import Stash
from ..store import StoreAnswer
from .tables import PluginStore

if TYPE_CHECKING:
    from ..config import Config
    from ..delivery import Member, Person, RoomInfo
    from ..plugins import PluginHost, PluginTask, PluginTimer
    from ..store import Store
    from .client import Client
    from .commands import CommandTable
    from .domain import ChatDomain
    from .rooms import Room, RoomTable

log = logging.getLogger("chatd.server")


class Lifecycle(Protocol):
    """What the composition root lends the facade: the whole-server operations."""

    def reload(self) -> bool: ...

    def stop(self, deadline: float | None = None) -> None: ...

    def fail(self, reason: str) -> None: ...

    def stats_snapshot(self) -> dict[str, Any]: ...

    def open_connections(self) -> int: ...


#: A password check for accounts (:meth:`Server.provide_account_check`): ``(account,
#: password, address, alive, then)``, answering ``then(name | None, code | None)``.
AccountCheck = Callable[[str, str, str, Callable[[], bool],
                         Callable[[str | None, str | None], Any]], None]


class Server:
    """The server: clients, rooms, nicks, timers and the plugin host, for plugins.

    One object for the life of the process (it survives reloads), so a plugin
    may keep it.  Everything here runs on the event loop and returns at once;
    only :meth:`call_soon_threadsafe` may be called from another thread.
    """

    __slots__ = ("_account_check", "_domain", "_lifecycle", "_plugin_stores", "stash")

    def __init__(self, domain: ChatDomain, lifecycle: Lifecycle | None = None) -> None:
        self._domain = domain
        self._lifecycle = lifecycle
        self._account_check: AccountCheck | None = None
        #: Per-plugin server-wide state; see :mod:`chatd.stash`.  Survives reloads.
        self.stash = Stash()
        self._plugin_stores: dict[str, PluginStore] = {}

    # -- configuration --------------------------------------------------------------

    @property
    def config(self) -> Config:
        """The whole configuration (:class:`chatd.config.Config`), as loaded."""
        return self._domain.config

    @property
    def name(self) -> str:
        """The server's name (``server.name``), the source of its notices."""
        return self._domain.config.server.name

    @property
    def node(self) -> str:
        """This node's id (``server.node_id``, or the host name), fixed at start: the
        ``node`` of the events made here."""
        return self._domain.identity.node

    @property
    def cloaks_addresses(self) -> bool:
        """Whether clients' ``user`` shows a cloak of their address, not the address
        (``server.cloak_addresses``, fixed at start)."""
        return self._domain.identity.cloaking

    def shown_host(self, address: str) -> str:
        """What users other than server operators see of ``address``: its cloak, as in
        the ``user`` of a client connected from it (``server.cloak_addresses``), or the
        address itself when cloaks are off.  For a plugin that shows something made
        from an address (a ban's mask) to someone who is no operator."""
        return self._domain.identity.host_of(address)  # type: ignore[no-any-return]

    def plugin_config(self, name: str) -> Mapping[str, Any]:
        """The ``plugins: {name: {...}}`` section of the config ({} if absent)."""
        return self._domain.config.plugin_config(name)

    @property
    def store(self) -> Store:
        """The database (:class:`chatd.store.Store`): ``migrate`` your tables in
        ``chatd_startup``, ``write`` (queued, never blocks), ``read`` (bounded).

        A plugin that is not a built-in gets its own view of it
        (:class:`chatd.chat.tables.PluginStore`): its migrations and writes touch
        only the tables named after it, and a write that fails is its failure
        (logged with its name, counted by its breaker)."""
        hooks = self._domain.hooks
        plugin = hooks.acting_plugin()
        if plugin is None or hooks.is_builtin(plugin):
            return self._domain.store
        view = self._plugin_stores.get(plugin)
        if view is None:
            view = self._plugin_stores[plugin] = PluginStore(
                self._domain.store, plugin, self._post_from_thread, self._store_failure
            )
        return view  # type: ignore[return-value]

    def _post_from_thread(self, callback: Callable[..., Any], *args: Any) -> None:
        self._domain.hooks.call_soon_threadsafe(callback, *args)

    def _store_failure(self, plugin: str, what: str, exc: BaseException) -> None:
        self._domain.hooks.report_failure(plugin, what, exc)

    # -- who and where --------------------------------------------------------------

    @property
    def clients(self) -> Mapping[int, Client]:
        """Connected clients by id (read-only: the server adds and removes them)."""
        return self._domain.clients

    @property
    def unregistered_connections(self) -> int:
        """Connections open to this process that are no client yet (a TLS handshake, an
        IRC registration, a line client's first moments): IRC's "unknown connections"
        (LUSERS 253).  0 for a server with no listeners (in-process tests)."""
        if self._lifecycle is None:
            return 0
        return max(0, self._lifecycle.open_connections() - len(self._domain.clients))

    @property
    def most_clients(self) -> int:
        """The most clients this process had at once since it started (LUSERS 265)."""
        return self._domain.local.most_clients

    def find_client(self, nick: str) -> Client | None:
        """The client *connected to this process* with this nick (case-insensitive, or
        one that looks the same), or None.

        For what is truly local (an operator's ``/kill`` of a connection here).  To
        find a user wherever it is connected, :meth:`ask_whois`; to act on it,
        :meth:`client_of` the answer."""
        return self._domain.find_client(nick)

    # -- presence questions: answered by a continuation ---------------------------------
    #
    # The delivery backend answers these; the local one at once, a cluster's later.
    # ``then(answer)`` runs on the loop, at most once: inside the call when the answer
    # is known at once (a CommandError it raises then reaches your command, as if
    # raised there), otherwise later, as your plugin, with the request's jsonl "re"
    # tag, a CommandError it raises told to ``client`` as ``! text``.  Meanwhile
    # ``client``'s later lines and commands wait, in order (nobody else's).  With no
    # answer within ``limits.presence_timeout_seconds`` the client is told "the
    # server did not answer in time; try again" and ``then`` never runs (``expired()``
    # runs instead, as the client's, if given: the best a command can say without the
    # answer); neither runs if the client disconnects meanwhile.  ``client`` None: a question of the
    # server's own (a timer's): nobody waits or is told.

    def ask_whois(self, client: Client | None, nick: str,
                  then: Callable[[Person | None], Any],
                  expired: Callable[[], Any] | None = None) -> None:
        """``then(person)`` for whoever has ``nick`` (any case, or a look-alike) on any
        node, or ``then(None)``.  A :class:`chatd.Person` is plain data (nick,
        session, node, user, account, away, connected_at, idle_since, rooms, address:
        show the address to operators only); :meth:`client_of` gives the local client
        to act on."""
        self._domain.ask(client, functools.partial(self._domain.backend.find_nick, nick),
                         then, expired)

    def ask_members(self, client: Client | None, room: str,
                    then: Callable[[list[Member]], Any],
                    expired: Callable[[], Any] | None = None) -> None:
        """``then(members)``: everyone in the room named ``room`` on any node, as
        :class:`chatd.Member` (nick, session, user, account, away flag), in no
        particular order; ``[]`` for a room nobody is in.  :meth:`member_entries`
        makes them a reply's list (``/who``)."""
        self._domain.ask(client, functools.partial(self._domain.backend.members, room), then,
                         expired)

    def ask_rooms(self, client: Client | None, then: Callable[[list[RoomInfo]], Any],
                  expired: Callable[[], Any] | None = None) -> None:
        """``then(rooms)``: every room on any node, as :class:`chatd.RoomInfo`
        (name, member count, topic), in no particular order (a listing sorts them:
        ``sorted(rooms, key=lambda r: r.name.lower())``, the order of :attr:`rooms`)."""
        self._domain.ask(client, self._domain.backend.room_list, then, expired)

    def ask_store(self, client: Client | None, sql: str, params: Sequence[Any],
                  then: Callable[[StoreAnswer], Any], *, timeout: float | None = None,
                  expired: Callable[[], Any] | None = None) -> None:
        """Read the store on ``client``'s behalf: ``then(answer)`` with a
        :class:`chatd.StoreAnswer` (``answer.rows``, or ``answer.error`` saying why
        not), exactly like the presence questions above: ``client``'s later lines
        wait, the reply tag is restored, a ``CommandError`` raised by ``then`` is
        told to the client.  The loop never waits for the database; a database
        that does not answer within ``timeout`` (default ``storage.ask_timeout_seconds``)
        gives ``then`` an answer with an error, so say "unavailable" and go on.
        With SQLite the answer still comes from the reader thread: later, never
        inside this call (unless the store has no loop, in a test)."""
        store = self._domain.store
        wait = timeout if timeout is not None else _ask_timeout(self._domain.config)
        self._domain.ask(client, lambda answer: store.ask(sql, params, answer, timeout=wait),
                         then, expired)

    def kick_elsewhere(self, client: Client, person: Person, room: str, reason: str) -> bool:
        """Ask the node of the cluster that ``person`` (a presence answer for a user of
        another node) is connected to, to put it out of ``room`` as a kick by ``client``
        with ``reason`` (that node tells it why, and its room everywhere sees the kick).
        Check the kicker's right first: the other node does not.  False when the
        delivery backend has no other node to ask (a single process)."""
        ask = getattr(self._domain.backend, "kick_elsewhere", None)
        if ask is None or not person.session:
            return False
        event = self._domain.new_event(Part, client.source, room, reason,
                                       kicked_by=client.nick)
        return bool(ask(person.session, event))

    def kill_elsewhere(self, client: Client, person: Person, reason: str) -> bool:
        """Ask the node of the cluster that ``person`` (a presence answer for a user of
        another node) is connected to, to disconnect it as a ``/kill`` by ``client`` with
        ``reason`` would here.  Check that ``client`` is a server operator first: the other
        node does not.  False when the delivery backend has no other node to ask."""
        ask = getattr(self._domain.backend, "kill_elsewhere", None)
        if ask is None or not person.session:
            return False
        event = self._domain.new_event(Quit, client.source, person.nick, reason)
        return bool(ask(person.session, event))

    def client_of(self, person: Person | Member) -> Client | None:
        """The client of this process that ``person`` (a presence answer) is, or None if
        it is connected to another node (or gone since the answer)."""
        session = person.session
        if session is None:
            return None
        node, _, number = session.rpartition(":")
        if node != self._domain.identity.node or not number.isdigit():
            return None
        found = self._domain.clients.get(int(number))
        return found if found is not None and found.session == session else None

    @property
    def rooms(self) -> RoomTable:
        """Every room: ``rooms.get(name)``, iteration in name order, ``len()``."""
        return self._domain.rooms

    @property
    def default_room(self) -> str:
        """The room every client starts in (``server.default_room``)."""
        return self._domain.config.server.default_room

    def who(self, room: Room) -> list[str]:
        """The nicks in ``room`` *on this process* (:meth:`ask_members` asks the cluster)."""
        return [member.nick for member in room.members]

    def names(self, room: Room) -> list[MemberEntry]:
        """The members of ``room`` *on this process*, as :meth:`member_entries` lists
        them (:meth:`ask_members` asks the cluster: what ``/who`` does)."""
        return self.member_entries(room.name, [member(client) for client in room.members])

    def member_entries(self, room: str, members: Iterable[Member]) -> list[MemberEntry]:
        """``members`` (a presence answer, :meth:`ask_members`) as a reply lists them
        (:class:`chatd.replies.MemberEntry`): in name order, each with its marks
        (``userhost``, ``account``, ``away``) and ``operator`` if its account is one
        of the operators of the room named ``room`` (``room.operators``; none for a
        room this process does not have).  What ``/who`` and a ``/join``'s greeting
        list."""
        place = self._domain.rooms.get(room)
        operators = place.operators if place is not None else ()
        entries = [
            MemberEntry(m.nick, m.user, m.account, m.away,
                        m.account is not None and nick_key(m.account) in operators,
                        m.realname)
            for m in members
        ]
        entries.sort(key=lambda entry: entry.nick.lower())
        return entries

    def set_room_operators(self, room: Room, accounts: Iterable[str]) -> None:
        """Say who the operators of ``room`` are, by account (registered nicks; any
        case): ``room.operators``, and the ``operator`` mark of its members in
        ``/who``.  For the plugin that decides it (the built-in *moderation*)."""
        self._domain.set_room_operators(room, accounts)

    def room_list(self) -> list[RoomInfo]:
        """Name, member count and topic of every room *of this process*
        (:meth:`ask_rooms` asks the cluster)."""
        return LocalBackend.rooms_here(self._domain.rooms)

    def clients_in(self, rooms: Iterable[Room]) -> set[Client]:
        """Everyone in any of ``rooms`` (each client once)."""
        return self._domain.clients_in(rooms)

    # -- changing things ------------------------------------------------------------

    def join(self, client: Client, name: str, *, quiet: bool = False) -> Room:
        """Put ``client`` in room ``name`` (created if new) and make it current.

        The room and the client are told (a join event: ``*** alice joined #dev`` on
        the line protocol, ``"self": true`` in jsonl), however the join came about.
        ``quiet=True`` when your code tells the client in its own words (``/join``
        does): line clients then get no line for it.  Raises :class:`chatd.RoomError`
        for an invalid name or a refused join.  Joining a room the client is in only
        makes it current.
        """
        return self._domain.join(client, name, quiet=quiet)

    def part(self, client: Client, room: Room, reason: str = "", *,
             quiet: bool = False, kicked_by: str = "") -> None:
        """Take ``client`` out of ``room``, telling the room and the client (``reason`` is
        filtered); ``quiet`` as for :meth:`join`; ``kicked_by``: the nick of the
        operator whose kick this is (IRC shows ``KICK``; the others a part)."""
        self._domain.part(client, room, reason, quiet=quiet, kicked_by=kicked_by)

    def rename(self, client: Client, new: str) -> None:
        """Give ``client`` the nick ``new``; raises :class:`chatd.NickError` with the reason.

        The nick is claimed through the delivery backend: with one that answers later
        (a cluster's) the rename happens then, and a refusal ("taken") is told to the
        client instead of raised; its later requests wait meanwhile."""
        self._domain.rename(client, new)

    def rename_to_guest(self, client: Client) -> str:
        """Give ``client`` a fresh ``guest-N`` nick and return it (no hook can refuse).

        For plugins that own nicks: a registered nick nobody identified for in
        time, or one its owner takes back.  (With a backend that answers later, the
        rename happens when the claim is answered, as for :meth:`rename`.)
        """
        return self._domain.rename_to_guest(client)

    def set_account(self, client: Client, account: str | None) -> None:
        """Record that ``client`` proved it owns the registered nick ``account``
        (None: it no longer does); ``chatd_account_change`` is called.  For the
        plugin that checks passwords (the built-in *accounts*); others read
        ``client.account``.  The client and the members of its rooms are sent an
        ``AccountChange`` event (IRC's ``account-notify``; jsonl's ``account``)."""
        self._domain.set_account(client, account)

    def continue_event_ids(self, after: int) -> None:
        """Give every event made from now on an id greater than ``after``.

        Event ids increase in the order things happen.  A plugin that keeps events
        across restarts calls this at startup with the largest id it stored, so the
        events it shows again (with their ids) and the live ones are one increasing
        sequence: the *history* plugin does.  Ids never go down: a smaller ``after``
        changes nothing.
        """
        self._domain.continue_event_ids(after)

    # -- accounts: a password checked before a session (SASL) ------------------------------

    def provide_account_check(self, check: AccountCheck | None) -> None:
        """Be the server's password check for accounts (the *accounts* built-in does at
        startup; None: no accounts).  A protocol that authenticates before the session
        begins (IRC's SASL) asks it through :meth:`check_account_password`, never by
        importing the plugin that keeps the accounts."""
        self._account_check = check

    def check_account_password(self, account: str, password: str, address: str,
                               alive: Callable[[], bool],
                               then: Callable[[str | None, str | None], Any]) -> None:
        """Is ``password`` the password of the registered nick ``account``?  Answered on
        the loop, at once or later (the check runs on a worker thread, held to the same
        limits on failed attempts as ``/identify``, from ``address``): ``then(name,
        None)`` with the account's name, or ``then(None, code)``: ``wrong_password``,
        ``not_registered``, ``too_many_attempts`` or ``unavailable`` (no accounts, the
        store or the checks busy).  ``alive()`` false: the asker is gone, nothing is
        checked and ``then`` may never run."""
        check = self._account_check
        if check is None:
            then(None, "unavailable")
            return
        check(account, password, address, alive, then)

    def pause_requests(self, client: Client, timeout: float = 10.0) -> None:
        """Hold back what ``client`` sends next until :meth:`resume_requests` (or
        ``timeout`` seconds): its later lines and commands wait, in order.

        For a command answered later (a password checked on a worker thread):
        ``/identify`` then ``/join`` from a script must join as the identified
        user.  Reading the client's socket stops meanwhile (TCP backpressure).
        """
        self._domain.intake.pause(client, timeout)

    def resume_requests(self, client: Client) -> None:
        """Handle what ``client`` sent while paused, in order, and read it again."""
        self._domain.intake.resume(client)

    def message(self, client: Client, text: str, room: Room | None = None, *,
                notice: bool = False) -> Event | None:
        """Send ``text`` as a chat line from ``client`` (to ``room``, or where it routes);
        with ``notice``, as the user's notice (``/notice``: a ``message`` event with
        ``notice`` set, which plugins do not answer automatically).

        The same path a typed line takes: filters, ``chatd_message``, delivery.
        Returns the event, or None if a filter dropped it.
        """
        return self._domain.say(client, text, room, notice=notice)

    def action(self, client: Client, text: str, room: Room | None = None) -> Event | None:
        """Send ``text`` as an action (``/me``) from ``client``; see :meth:`message`."""
        return self._domain.say(client, text, room, action=True)

    def private_message(self, client: Client, nick: str, text: str, *,
                        notice: bool = False) -> Event | None:
        """Send ``text`` from ``client`` to ``nick`` on any node (with ``notice``, as a
        private notice); raises CommandError if nobody has it.  The nick is looked up
        through the delivery backend (:meth:`ask_whois`'s rules): answered later, the
        message is sent then, the refusal told to the client, and None is returned
        now."""
        return self._domain.private_message(client, nick, text, notice=notice)

    def set_topic(self, client: Client, room: Room, text: str) -> Event | None:
        """Set the topic of ``room`` as ``client`` (filtered); the room is told."""
        return self._domain.set_topic(client, room, text)

    def set_away(self, client: Client, text: str) -> Event | None:
        """Mark ``client`` away with ``text`` (filtered like a message; ``""``: back).

        Sets ``client.away``; returns the ``Away`` event, or None if the client is
        back or a filter dropped the text (it was told why).
        """
        return self._domain.set_away(client, text)

    def set_realname(self, client: Client, name: str) -> Event | None:
        """Give ``client`` the real name ``name`` (``/setname``; IRC's ``SETNAME``).

        Raises :class:`~chatd.CommandError` (code ``invalid_realname``) for a name
        :func:`chatd.chat.identity.realname_problem` refuses, never cleaning it.
        The client and the members of its rooms are sent a ``RealnameChange``
        (``client.source.realname`` is the new name by then); returns it, or None
        when the name is the one it has.
        """
        return self._domain.set_realname(client, name)

    def invited(self, client: Client, target: Client, room: str) -> Event:
        """``client`` invited ``target`` to the room named ``room`` (moderation's
        ``/invite``, once it let it): an ``Invite`` event to the invitee, whatever its
        protocol (IRC's ``INVITE``, the line protocol's ``*** alice invites you to
        #dev``, jsonl's ``invite`` object), to the inviter on IRC (``341``) and to the
        room's members with ``invite-notify``; tell the room yourself if you wish."""
        return self._domain.invited(client, target, room)

    def mode_changed(self, client: Client, room: str, changes: Iterable[ModeItem], *,
                     reason: str = "", seconds: float | None = None) -> Event:
        """``client`` changed the rules of the room named ``room``: ``changes`` (each a
        :class:`~chatd.events.ModeItem` of :data:`~chatd.events.MODES`: ``op``, ``ban``,
        ``mute``, ``invite_only``, ``topic_lock``, on or off), ``reason`` and ``seconds``
        (a ban's or mute's, None: until lifted).  Tells them as a ``ModeChange`` event to
        the room's members and to ``client``: the line protocol's sentence, jsonl's
        ``mode`` object, IRC's ``MODE``.  Call it once the change is made (and kept):
        it announces, it decides nothing.  Raises ValueError for an unknown mode."""
        return self._domain.mode_changed(client, room, tuple(changes), reason, seconds)

    def quit(self, client: Client, reason: str = "") -> None:
        """Disconnect ``client`` as if it typed ``/quit reason`` (the reason is filtered)."""
        self._domain.quit(client, reason)

    def broadcast(self, text: str, *, exclude: Client | None = None) -> int:
        """A notice to every connected client (but ``exclude``); returns the count."""
        return self._domain.broadcast(text, exclude)

    def notify_operators(self, text: str) -> None:
        """Tell the operators something (a plugin was disabled, a reload failed).

        Logged, and passed to ``chatd_operator_notice`` so the ``oper`` plugin (or
        any other) can deliver it.
        """
        log.warning("operator notice: %s", text)
        self._domain.hooks.call("chatd_operator_notice", server=self, text=text)

    # -- plugins and commands ---------------------------------------------------------

    @property
    def hooks(self) -> PluginHost:
        """The plugin host: ``hooks.call("your_hook", ...)`` calls a hook with guard rails."""
        return self._domain.hooks

    @property
    def commands(self) -> CommandTable:
        """Every command, by name (``commands.get("join")``; iteration in name order)."""
        return self._domain.commands

    # -- time -------------------------------------------------------------------------

    def clock(self) -> float:
        """The loop's monotonic clock, in seconds (what :meth:`call_later` and the
        timers' ``when`` count in): ``time.monotonic()``, or a test's fake clock
        (``InProcessChat(fake_clock=True)``).  Measure your plugin's intervals with it
        and a test can move time for them too."""
        return self._domain.clock()

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> PluginTimer:
        """Run ``callback(*args)`` after ``delay`` seconds, on the loop.

        The timer belongs to the plugin that creates it: it runs with the same
        guard rails as a hook (an exception or an overrun is logged with the
        plugin's name and counts towards its circuit breaker), and it is
        cancelled when the plugin is disabled, reloaded or shut down.
        ``.cancel()`` stops it.
        """
        return self._domain.hooks.call_later(delay, callback, *args)

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> PluginTimer:
        """Run ``callback(*args)`` on the loop as soon as possible (after this event)."""
        return self._domain.hooks.call_later(0.0, callback, *args)

    @property
    def loop(self) -> Any:
        """The event loop itself (:class:`chatd.reactor.Reactor`), for a plugin that owns
        non-blocking sockets: ``register(fd, handler)`` (``handler.handle_events(mask)``
        on each edge-triggered event), ``unregister(fd)`` (before closing the socket),
        ``call_later``, ``clock``.  Unlike :meth:`call_later` here, nothing done through
        it is guarded or cancelled on reload: the plugin catches its own errors (one
        that escapes is logged by the loop) and closes its own sockets and timers.
        The cluster's link to Redis uses it (docs/cluster.md)."""
        return self._domain.scheduler

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any) -> None:
        """From any thread: run ``callback(*args)`` on the loop, soon.

        For plugins that do blocking work in a thread of their own and need to hand
        the result back to the chat (:meth:`run_in_thread` does both for you).  The
        call belongs to your plugin (its guard rails, its breaker, its marker on
        what it sends) whether ``callback`` is a function, a bound method or a
        ``functools.partial``; once your plugin is disabled or reloaded away, late
        calls are dropped.
        """
        self._domain.hooks.call_soon_threadsafe(callback, *args)

    def run_in_thread(self, fn: Callable[..., Any], *args: Any,
                      callback: Callable[[Any], Any] | None = None,
                      on_error: Callable[[BaseException], Any] | None = None) -> PluginTask:
        """Run blocking ``fn(*args)`` (a web request, a DNS lookup, a slow hash) on a
        worker thread, and ``callback(result)`` on the loop when it returns.

        The pool is small (4 threads, shared by every plugin), so keep each call
        bounded (timeouts on network calls).  The task is your plugin's: ``callback``
        and ``on_error(exception)`` run with the guard rails of a hook, an exception
        with no ``on_error`` is logged with your plugin's name and counts towards
        its breaker, and the task is cancelled (nothing handed back) when your
        plugin is disabled, reloaded or shut down.  ``fn`` must not touch chat
        objects (it is not on the loop); ``callback`` may.  Returns a task with
        ``cancel()``.
        """
        return self._domain.hooks.run_in_thread(fn, *args, callback=callback,
                                                on_error=on_error)

    # -- the whole server -------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the config and reload every plugin (like SIGHUP); False on failure."""
        if self._lifecycle is None:
            raise RuntimeError("this server cannot reload (no lifecycle attached)")
        return self._lifecycle.reload()

    def stop(self) -> None:
        """Shut the server down gracefully (like SIGTERM)."""
        if self._lifecycle is None:
            raise RuntimeError("this server cannot stop (no lifecycle attached)")
        self._lifecycle.stop()

    def fail(self, reason: str) -> None:
        """Shut the server down gracefully because it cannot go on, logging ``reason``
        as an error: the process then exits with status 1, so a supervisor (systemd,
        the workers' parent) sees a failure, not a clean stop."""
        if self._lifecycle is None:
            raise RuntimeError("this server cannot stop (no lifecycle attached)")
        self._lifecycle.fail(reason)

    def stats_snapshot(self) -> dict[str, Any]:
        """All counters and gauges, as ``/stats`` and the metrics exporter show them."""
        if self._lifecycle is None:
            return self._domain.stats.snapshot()
        return self._lifecycle.stats_snapshot()

    def __repr__(self) -> str:
        return f"<chatd Server {self.name!r} clients={len(self._domain.clients)}>"


def _ask_timeout(config: Any) -> float:
    """How long a read asked through :meth:`Server.ask_store` may take."""
    return float(config.storage.ask_timeout_seconds)
