"""The chat domain: clients, nicks, rooms, dispatch and the flood gate, with no sockets.

Everything that makes chatd a *chat* and is not a plugin's policy lives here,
testable in-process with fake links (``tests/test_domain.py``).  The domain
knows three neighbours, each through an interface it was handed:

* a client's **link** (its protocol object): where the client's events are
  rendered and how it is closed (:class:`chatd.protocols.base.ChatProtocol`);
* the **delivery backend** (:mod:`chatd.delivery`): where events go, and who is
  where;
* the **plugin host** (:mod:`chatd.plugins`): the hooks.

The path of one request (see docs/architecture.md for the whole picture):

1. the protocol hands the client's requests to the **intake**
   (:mod:`chatd.chat.intake`: the flood gate, pauses, dispatch), which passes
   them on now or later (fakelag, never drops);
2. a chat line becomes an event (:mod:`chatd.events`) for the room the
   ``chatd_route_message`` hook names (:meth:`ChatDomain.say`); a command runs
   its handler, which calls the domain's methods;
3. events carrying user text pass every ``chatd_filter_message`` (which may
   rewrite or reject them), then ``chatd_message``, then the backend delivers
   them.

The domain owns messages, rooms and nicks, and each client's record
(:class:`~chatd.chat.client.Client`: its nick, rooms, ``arrival``); the intake
owns what waits on the way in (``client.intake``).  Neither reads the other's
private attributes, nor a client's.

Every event is created here, once, by :meth:`ChatDomain.new_event`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..delivery import DeliveryBackend, LocalBackend, Person, nick_key
from ..events import (
    MODES,
    AccountChange,
    Action,
    Away,
    Error,
    Event,
    Invite,
    Join,
    Message,
    ModeChange,
    ModeItem,
    NickChange,
    Notice,
    Part,
    PrivateMessage,
    Quit,
    RealnameChange,
    RoomCreated,
    RoomRemoved,
    Source,
    Topic,
)
from ..replies import Reply
from ..stats import Stats
from ..store import Store
from ..templates import plural
from .client import Arrival, Client
from .commands import Command, CommandTable
from .errors import CommandError, NickError, Reject, RoomError, refusal_of
from .facade import Server
from .identity import Identity, clean_ident, realname_problem
from .intake import Intake
from .nicks import GUEST_PREFIX, nick_problem
from .questions import TIMEOUT_CODE, TIMEOUT_TEXT, ask
from .rooms import Room, RoomTable, room_key, room_problem

if TYPE_CHECKING:
    from ..config import Config
    from ..plugins import PluginHost
    from ..requests import SessionRequest
    from .commands import Command
    from .facade import Lifecycle

log = logging.getLogger("chatd.chat")

#: Longest topic kept, in characters.
TOPIC_MAX = 300

#: How many guest nicks a forced rename (:meth:`Domain.rename_to_guest`) tries before it
#: gives up: in a cluster each node counts its own guests, and another's may hold one.
GUEST_TRIES = 50




def _ignore(answer: object) -> None:
    """The continuation of a claim that only undoes another (nobody waits for it)."""


class Scheduler:
    """What the domain needs of the event loop (the reactor provides it)."""

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Any: ...

    def clock(self) -> float: ...


class ChatDomain:
    """The chat's state and rules.  One per server; plugins see it through ``Server``."""

    def __init__(
        self,
        config: Config,
        hooks: PluginHost,
        scheduler: Scheduler,
        *,
        stats: Stats | None = None,
        lifecycle: Lifecycle | None = None,
        store: Store | None = None,
    ) -> None:
        self.config = config
        if store is None:  # no database configured by the caller: one in memory
            store = Store(None)
            store.open()
        #: Where plugins keep what outlives a restart (``server.store``).
        self.store = store
        self.hooks = hooks
        self.scheduler = scheduler
        #: The loop's monotonic clock: timers and the flood gate share it (a test's
        #: fake clock moves both).
        self.clock: Callable[[], float] = getattr(scheduler, "clock", time.monotonic)
        self.stats = stats if stats is not None else Stats()
        #: The in-process delivery backend (always there: other backends use it locally).
        self.local = LocalBackend(self.stats)
        #: Where events go; ``chatd_delivery_backend`` may replace it at startup.
        self.backend: DeliveryBackend = self.local
        #: Connected clients by id (the local backend's table: one dict, not two).
        self.clients: dict[int, Client] = self.local.clients  # type: ignore[assignment]
        self.rooms = RoomTable(self._make_room, self._room_created)
        self.local.places = self.rooms
        self.commands = CommandTable()
        #: The plugin-facing server object (``client.server``, hook arguments).
        self.facade = Server(self, lifecycle)
        #: This node's id, numbers and cloaks, fixed at start (a reload keeps them).
        self.identity = Identity(config.server)
        self._client_ids = itertools.count(1)
        self._event_ids = self.identity.event_ids()
        self._server_sources: dict[tuple[str | None, bool], Source] = {}
        #: The way in for every client's requests: flood gate, pauses, dispatch.
        self.intake = Intake(self)
        #: The quit event of a client that said ``/quit`` (its reason filtered), until
        #: its connection is gone and the event is delivered.
        self._quit_events: dict[Client, Event] = {}

    # -- events --------------------------------------------------------------------------

    def new_event(self, cls: type[Event], source: Source, target: str, text: str = "",
                  **fields: Any) -> Any:
        """Create an event of type ``cls`` with the next id and the server time."""
        return cls(next(self._event_ids), time.time(), source, target, text, **fields)

    def continue_event_ids(self, after: int) -> None:
        """Every event made from now on gets an id greater than ``after`` (never lower
        than it would have had: ids only increase)."""
        following = next(self._event_ids)
        self._event_ids = self.identity.event_ids(following, after)

    def server_source(self, plugin: str | None = None) -> Source:
        """The server as an event source; ``plugin`` defaults to the one running now.

        A plugin that is not a built-in gets its ``marker``: its lines say whose they
        are, so the text it passes on (a mention quoting a user) cannot read as the
        server's own sentence.
        """
        if plugin is None:
            plugin = self.hooks.current_plugin
        marked = plugin is not None and not self.hooks.is_builtin(plugin)
        key = (plugin, marked)
        source = self._server_sources.get(key)
        if source is None:
            source = self._server_sources[key] = self.identity.server_source(
                self.config.server.name, plugin, plugin if marked else None
            )
        return source

    def _server_voice(self) -> Source:
        """The server speaking for itself, whichever plugin is running (a refusal the
        server makes while a plugin's command runs is not that plugin's line)."""
        source = self._server_sources.get((None, False))
        if source is None:
            source = self._server_sources[(None, False)] = self.identity.server_source(
                self.config.server.name, None, None)
        return source

    # -- connections -----------------------------------------------------------------------

    def connect(self, link: Any, request: SessionRequest | None = None) -> Client | None:
        """A connection's protocol begins its chat session: make its client and run
        ``chatd_client_connect``.  ``request`` is what the protocol learned first (see
        :class:`~chatd.requests.SessionRequest`): the nick wished for (else, or if it
        cannot be had, ``guest-N``, and the client is told why), the user name (the
        ident of ``user@host``), the account it authenticated.  With
        ``request.nick_required`` the session begins as that nick or not at all: None
        (or, if the nick's claim answers later, a client that is dropped then) and
        ``link.session_refused(code, text)`` (see :meth:`_connect_as`)."""
        client_id, nick = next(self._client_ids), self._new_guest_nick()
        user = clean_ident(request.user) if request is not None else None
        source = self.identity.client_source(nick, client_id, link.peer[0], user)
        if request is not None and request.account is not None:
            source = dataclasses.replace(source, account=request.account)
        note = None
        if request is not None and request.realname is not None:
            problem = realname_problem(request.realname)
            if problem is None:
                source = dataclasses.replace(source, realname=request.realname)
            else:  # told once the session began; the client may /setname another
                note = f"your real name was not kept: {problem} (/setname NAME sets one)"
        client = Client(self, link, client_id, nick, source)
        self.local.connected(client)
        wished = request.nick if request is not None else None
        if wished is not None and request.nick_required:  # type: ignore[union-attr]
            return self._connect_as(client, wished, user, note)
        refused = self._wished_nick_problem(client, wished) if wished is not None else None
        if wished is not None and refused is None:
            self._claim(client, wished, user, None, note)
        else:
            self._claim(client, client.nick, None, refused, note)
        return client

    def _connect_as(self, client: Client, nick: str, user: str | None,
                    note: str | None = None) -> Client | None:
        """Begin ``client``'s session as ``nick`` or refuse it (``nick_required``: IRC's
        registration, whose client must hear ``432``/``433`` and may try another nick).

        A refusal drops the client before any hook heard of it (:meth:`_refuse_session`);
        None if that happened already (the local backend answers the claim at once)."""
        problem = nick_problem(nick, self.config.limits.max_nick_bytes)
        code = "erroneous_nick"
        if not problem:
            refusal = self.hooks.call_first("chatd_check_nick", notify=client, client=client,
                                            nick=nick)
            if refusal:
                problem, code = refusal_of(refusal, "nick_refused")
        if problem:
            self._refuse_session(client, code, problem)
            return None
        self.ask(client, functools.partial(self.backend.claim_nick, client, nick),
                 functools.partial(self._claimed_as, client, nick, user, note),
                 functools.partial(self._unclaimed, client),
                 functools.partial(self._claimed_too_late, client, nick))
        return client if client.id in self.clients else None

    def _claimed_as(self, client: Client, nick: str, user: str | None, note: str | None,
                    claimed: bool) -> None:
        """The answer to a ``nick_required`` claim: the session begins, or is refused."""
        if client.id not in self.clients:  # gone meanwhile
            self._claimed_too_late(client, nick, claimed)
            return
        if not claimed:
            self._refuse_session(client, "nick_in_use", f"the nick {nick} is taken")
            return
        self._claimed(client, nick, user, None, note, True)

    def _refuse_session(self, client: Client, code: str, text: str) -> None:
        """Make nobody of ``client`` again, quietly (no hook ran, none will: it was never
        in presence or a room), and tell its protocol why; the connection stays open."""
        self.clients.pop(client.id, None)
        self.intake.forget(client)
        client.link.session_refused(code, text)

    def _wished_nick_problem(self, client: Client, nick: str) -> str | None:
        """Why a client that is nobody yet (in no room, never announced) may not have the
        nick its protocol learned, or None: the rules of /nick, quietly applied."""
        problem = nick_problem(nick, self.config.limits.max_nick_bytes)
        if problem:
            return problem
        refusal = self.hooks.call_first("chatd_check_nick", notify=client, client=client,
                                        nick=nick)
        return str(refusal) if refusal else None

    def _claim(self, client: Client, nick: str, user: str | None, refused: str | None,
               note: str | None = None) -> None:
        """Claim the client's first nick (the one its protocol wished for, else its guest
        nick), then begin its session; ``refused`` says why a wished nick was not had,
        ``note`` what else the client is told once it began (a real name not kept)."""
        self.ask(client, functools.partial(self.backend.claim_nick, client, nick),
                 functools.partial(self._claimed, client, nick, user, refused, note),
                 functools.partial(self._unclaimed, client),
                 functools.partial(self._claimed_too_late, client, nick))

    def _claimed(self, client: Client, nick: str, user: str | None, refused: str | None,
                 note: str | None, claimed: bool) -> None:
        if not claimed:
            if nick != client.nick:  # the wished nick is someone else's: a guest nick
                self._claim(client, client.nick, None, f"the nick {nick} is taken", note)
                return
            # guest numbers are the node's own: taken only in a cluster's oddity
            client.source = dataclasses.replace(client.source, nick=self._new_guest_nick())
            self._claim(client, client.nick, None, refused, note)
            return
        if nick != client.nick:  # the wished nick, had quietly: no nick change event
            client.source = dataclasses.replace(client.source, nick=nick,
                                                ident=nick if user is None else user)
        wait = self.config.limits.announce_after_seconds
        if wait > 0:
            client.arrival = Arrival()
        client.link.session_started(client)  # the protocol's own greeting (IRC's 001) first
        self.hooks.call("chatd_client_connect", notify=client, client=client)
        if client.arrival is None:
            self.hooks.call("chatd_client_ready", notify=client, client=client)
        elif client.link.connected:
            client.arrival.timer = self.scheduler.call_later(wait, self.announce, client)
        if refused is not None and client.link.connected:
            self.notice(client, f"{refused}; you are {client.nick}")
        if note is not None and client.link.connected:
            self.notice(client, note)

    def _unclaimed(self, client: Client) -> None:
        """No answer to the nick's claim: the connection cannot begin."""
        client.error(TIMEOUT_TEXT, code=TIMEOUT_CODE)
        client.link.close("presence timeout")

    def ask(self, client: Client | None, question: Callable[[Callable[[Any], Any]], Any],
            then: Callable[[Any], Any], expired: Callable[[], Any] | None = None,
            late: Callable[[Any], Any] | None = None) -> None:
        """Ask the backend a presence question for ``client``: ``then(answer)`` at once
        or later, the client's requests held meanwhile (:mod:`chatd.chat.questions`)."""
        ask(self, client, question, then, expired, late)

    def announce(self, client: Client) -> None:
        """``client`` is a chat client now (it spoke, or stayed): tell its rooms it joined.

        Until then its joins are held back, so a port scan, an HTTP request or a
        TLS hello on the chat port never shows up in a room (nor does its quit).
        """
        arrival = client.arrival
        if arrival is None or client.id not in self.clients or not client.link.connected:
            return
        arrival.cancel()
        client.arrival = None
        for room, event in arrival.joins:
            if room in client.rooms:
                self.backend.to_room(event, room, exclude=client)
                self._delivered(event, client)
        self.hooks.call("chatd_client_ready", notify=client, client=client)

    def _new_guest_nick(self) -> str:
        while True:
            nick = f"{GUEST_PREFIX}{self.identity.next_guest_number()}"
            if self.local.holder(nick) is None:  # the claim asks the cluster
                return nick

    def disconnected(self, client: Client, reason: str) -> None:
        """The connection is gone: tell the rooms (once), forget the client."""
        if self.clients.pop(client.id, None) is None:
            return
        self.intake.forget(client)
        if client.arrival is not None:
            client.arrival.cancel()
        self.backend.release_nick(client, client.nick)
        rooms = tuple(client.rooms)
        event = self._quit_events.pop(client, None)
        if event is None:
            event = self.new_event(Quit, client.source, "", reason,
                                   rooms=tuple(r.name for r in rooms))
        self.hooks.call("chatd_client_disconnect", client=client, reason=event.text, event=event)
        if client.announced:  # who was never announced leaves no trace either
            self.backend.to_rooms(event, rooms, exclude=client)
            self._delivered(event, None)
        for room in rooms:
            self._remove_member(client, room)
            self.backend.parted(client, room)
            self._discard_if_empty(room)
        client.rooms = ()
        client.room = None
        self.local.disconnected(client)

    def _delivered(self, event: Event, client: Client | None) -> None:
        """``chatd_delivered``: ``event`` was handed to delivery.  One cached lookup when
        no plugin implements it (the usual case, on every chat line)."""
        if self.hooks.implementations("chatd_delivered"):
            self.hooks.call("chatd_delivered", notify=client, server=self.facade, event=event)

    # -- user text: filters, then chatd_message, then delivery -------------------------------

    def _accept(self, client: Client, event: Event) -> Event | None:
        """Run the filters and ``chatd_message`` on ``event``; None if it was rejected.

        A rejection (``Reject``) or a filter that blanks the text drops the event;
        the client is told why in the first case.
        """
        try:
            event = self._filtered(client, event)
        except Reject as exc:
            client.error(str(exc) or "rejected", code=exc.code)
            return None
        if not event.text.strip():
            return None
        self.hooks.call("chatd_message", notify=client, client=client, text=event.text,
                        event=event)
        return event

    def _filtered(self, client: Client, event: Event) -> Event:
        hooks = self.hooks
        impls = hooks.implementations("chatd_filter_message")
        if not impls:
            return event
        run = hooks.guard.run
        kwargs = {"client": client, "text": event.text, "event": event}
        for impl in impls:
            # The guard itself, arguments as the tuple they are: per line, this saves
            # packing them again and two keyword arguments (run_guarded's form).
            replacement = run(impl.plugin_name, "chatd_filter_message", impl.function,
                              impl.args(kwargs), client, (Reject,))
            if replacement is not None and replacement != event.text:
                event = dataclasses.replace(event, text=str(replacement))
                kwargs = {"client": client, "text": event.text, "event": event}
        return event

    def say(self, client: Client, text: str, room: Room | None = None, *,
            action: bool = False, notice: bool = False) -> Event | None:
        """A chat line (or ``action``, or a user's ``notice``) from ``client`` for ``room``
        (None: where it routes)."""
        self.stats.messages_in += 1
        if room is None:
            room = self.hooks.call_first("chatd_route_message", notify=client, client=client,
                                         text=text)
            if room is None:
                client.error("you are not in a room; /join one first", code="not_in_room")
                return None
        if action:
            event = self.new_event(Action, client.source, room.name, text)
        elif notice:
            event = self.new_event(Message, client.source, room.name, text, notice=True)
        else:
            event = self.new_event(Message, client.source, room.name, text)
        event = self._accept(client, event)
        if event is not None:
            self.backend.to_room(event, room, exclude=client)
            if client.link.renderer.echoes_own:  # IRC's echo-message: the sender's copy
                self.backend.to_client(event, client)
            self._delivered(event, client)
        return event

    def private_message(self, client: Client, nick: str, text: str, *,
                        notice: bool = False) -> Event | None:
        """``text`` from ``client`` to ``nick`` (a private ``notice``), found through the
        backend (on any node); raises CommandError if nobody has it (told to the client
        instead when the answer comes later).  The event, or None if dropped or not
        sent yet."""
        sent: list[Event | None] = [None]
        self.ask(client, functools.partial(self.backend.find_nick, nick),
                 functools.partial(self._private_message, client, nick, text, notice, sent))
        return sent[0]

    def _private_message(self, client: Client, nick: str, text: str, notice: bool,
                         sent: list[Event | None], target: Person | None) -> None:
        if target is None:
            raise CommandError(f"no such nick: {nick}", code="no_such_nick")
        event = self.new_event(PrivateMessage, client.source, target.nick, text,
                               to_account=target.account, to_session=target.session,
                               to_away=target.away, notice=notice)
        event = self._accept(client, event)
        if event is None:
            return
        if not self.backend.to_nick(event, event.target):
            raise CommandError(f"no such nick: {nick}", code="no_such_nick")
        if target.session != client.session:
            self.backend.to_client(event, client)  # the sender's copy: "-> *bob* text"
        self._delivered(event, client)
        sent[0] = event

    def set_topic(self, client: Client, room: Room, text: str) -> Event | None:
        """``client`` sets the topic of ``room`` (filtered like a message)."""
        text = " ".join(text.splitlines()) if "\n" in text or "\r" in text else text
        event = self.new_event(Topic, client.source, room.name, text[:TOPIC_MAX])
        if text:
            accepted = self._accept(client, event)
            if accepted is None:
                return None
            event = accepted
        room.topic = " ".join(event.text.splitlines())[:TOPIC_MAX]
        if client in room.members:
            # The setter's own copy (jsonl: "self", and "re" if the request had an id).
            self.backend.to_client(event, client)
            self.backend.to_room(event, room, exclude=client)
        else:
            self.backend.to_room(event, room)
        self._delivered(event, client)
        return event

    def set_away(self, client: Client, text: str) -> Event | None:
        """``client`` is away with the message ``text`` (filtered: an ``Away`` event
        nobody is sent); ``""``: back.  Returns the event, None if back or rejected."""
        if not text:
            if client.away is not None:
                client.away = None
                self._tell_away(client, self.new_event(Away, client.source, client.nick, ""))
                self._presence_changed(client)
            return None
        event = self._accept(client, self.new_event(Away, client.source, client.nick, text))
        if event is not None:
            client.away = event.text
            self._tell_away(client, event)
            self._presence_changed(client)
        return event

    def invited(self, client: Client, target: Client, room_name: str) -> Event:
        """``client`` invited ``target`` to ``room_name``: an ``Invite`` to the invitee
        (every protocol shows it its invitation: IRC's ``INVITE``, a line's notice, a
        jsonl object), to the inviter if its renderer shows its own (IRC's ``341``),
        and to the room's members whose renderer notifies invitations
        (``invite-notify``), each once."""
        event = self.new_event(Invite, client.source, room_name, "", invitee=target.nick)
        if target.link.connected:
            self.backend.to_client(event, target)
        if client is not target and client.link.renderer.shows_invites:
            self.backend.to_client(event, client)  # its own: IRC's 341 to the inviter
        room = self.rooms.get(room_name)
        if room is not None and any(r.notifies_invites for r in room.renderers):
            for member in room.members:
                if (member is not target and member is not client
                        and member.link.renderer.notifies_invites):
                    self.backend.to_client(event, member)
        return event

    def mode_changed(self, client: Client, room_name: str, changes: tuple[ModeItem, ...],
                     reason: str = "", seconds: float | None = None) -> Event:
        """``client`` changed the rules of ``room_name``: a ``ModeChange`` to the room's
        members (``client``'s own copy first, so it answers its request) and to
        ``client`` if it is not one of them (a room nobody is in, a server operator
        acting from outside)."""
        unknown = [item.mode for item in changes if item.mode not in MODES]
        if unknown or not changes:
            raise ValueError(f"a mode change needs changes of {MODES}, not {unknown or 'none'}")
        event = self.new_event(ModeChange, client.source, room_name, reason,
                               changes=tuple(changes), seconds=seconds)
        room = self.rooms.get(room_name)
        if client.link.connected:
            self.backend.to_client(event, client)
        if room is not None and room.members:
            self.backend.to_room(event, room, exclude=client)
        return event

    def _tell_away(self, client: Client, event: Event) -> None:
        """IRC's ``away-notify``: the members of ``client``'s rooms whose renderer shows
        away changes are sent ``event`` (text empty: back), each once; a room with no
        such renderer costs one look at its renderer counts.  Nobody else is sent it
        (an ``Away`` is delivered to nobody else), and members on other nodes are not
        told (their ``/whois`` is)."""
        told: set[int] = set()
        for room in client.rooms:
            if not any(renderer.shows_away for renderer in room.renderers):
                continue
            for member in room.members:
                if (member is not client and member.id not in told
                        and member.link.renderer.shows_away):
                    told.add(member.id)
                    self.backend.to_client(event, member)

    def quit(self, client: Client, reason: str = "") -> None:
        """``client`` leaves with ``reason`` (user text, filtered); everyone is told once."""
        event = self.new_event(
            Quit, client.source, "", f"Quit: {reason}" if reason else "Quit",
            rooms=tuple(r.name for r in client.rooms),
        )
        if reason:
            event = self._reason_filtered(client, event, "Quit")
        if client.id in self.clients:  # still here: delivered when its connection is gone
            self._quit_events[client] = event
        client.close(event.text, goodbye="Goodbye.")

    def _reason_filtered(self, client: Client, event: Event, blank: str) -> Event:
        """Filter the user text of a part or quit reason; a rejected reason is dropped."""
        try:
            filtered = self._filtered(client, event)
        except Reject as exc:
            client.error(f"{exc or 'rejected'}; left without the reason", code=exc.code)
            return dataclasses.replace(event, text=blank)
        self.hooks.call("chatd_message", notify=client, client=client, text=filtered.text,
                        event=filtered)
        return filtered

    # -- rooms ------------------------------------------------------------------------------

    def _make_room(self, name: str) -> Room:
        return Room(name, self._room_notice)

    def _room_created(self, room: Room) -> None:
        event = self.new_event(RoomCreated, self.server_source(), room.name)
        self.hooks.call("chatd_room_created", server=self.facade, room=room, event=event)

    def _discard_if_empty(self, room: Room) -> None:
        if room.members or room_key(room.name) == room_key(self.config.server.default_room):
            return
        if self.rooms.discard(room):
            event = self.new_event(RoomRemoved, self.server_source(), room.name)
            self.hooks.call("chatd_room_removed", server=self.facade, room=room,
                                event=event)

    def _add_member(self, client: Client, room: Room) -> None:
        client.rooms = (*client.rooms, room) if client.rooms else room.alone
        room.members[client] = None
        renderer = client.link.renderer
        room.renderers[renderer] = room.renderers.get(renderer, 0) + 1

    def _remove_member(self, client: Client, room: Room) -> None:
        if room.members.pop(client, False) is not False:
            renderer = client.link.renderer
            left = room.renderers.get(renderer, 0) - 1
            if left > 0:
                room.renderers[renderer] = left
            else:
                room.renderers.pop(renderer, None)

    def renderer_changed(self, client: Client, old: Any) -> None:
        """``client``'s protocol renders with another object now (IRC's ``CAP REQ``): move
        its count in each of its rooms' :attr:`Room.renderers` from ``old`` to the new."""
        new = client.link.renderer
        if new is old:
            return
        for room in client.rooms:
            if client in room.members:
                left = room.renderers.get(old, 0) - 1
                if left > 0:
                    room.renderers[old] = left
                else:
                    room.renderers.pop(old, None)
                room.renderers[new] = room.renderers.get(new, 0) + 1

    def join(self, client: Client, name: str, *, quiet: bool = False) -> Room:
        """Put ``client`` in room ``name`` (created if needed) and make it current.

        The client gets its own copy of the join event, whoever asked for it (a
        plugin moving it, a kick's way back to the default room), unless ``quiet``:
        the caller then tells it in its own words.
        """
        problem = room_problem(name)
        if problem:
            raise RoomError(problem, code="bad_room_name")
        limits = self.config.limits
        existing = self.rooms.get(name)
        if existing is None or existing not in client.rooms:
            if len(client.rooms) >= limits.max_rooms_per_client:
                raise RoomError(
                    f"you are in {plural(len(client.rooms), 'room')}, the most one may be in; "
                    "/part one first", code="too_many_rooms",
                )
            if existing is None and len(self.rooms) >= limits.max_rooms:
                raise RoomError(
                    f"this server has {plural(len(self.rooms), 'room')}, as many as it may; "
                    "join one that exists (/list)", code="rooms_full",
                )
        if existing is None and (twin := self.rooms.look_alike(name)) is not None:
            raise RoomError(f"{name} looks like {twin.name}: join {twin.name}, or choose a "
                            "name that reads differently", code="look_alike")
        if existing is None or existing not in client.rooms:
            refusal = self.hooks.call_first("chatd_check_join", notify=client, client=client,
                                            name=name, room=existing)
            if refusal:
                text, code = refusal_of(refusal, "join_refused")
                raise RoomError(text, code=code)
        room = self.rooms.get_or_create(name)
        client.room = room
        if room in client.rooms:
            return room
        event = self.new_event(Join, client.source, room.name, quiet=quiet)
        # The joiner's own copy first: it is not in the room yet, so this does not
        # flush the room's pending batch (a connect storm stays one batch per tick).
        self.backend.to_client(event, client)
        self._add_member(client, room)
        self.backend.joined(client, room)
        if client.announced:
            self.backend.to_room(event, room, exclude=client)
            self._delivered(event, client)
        else:  # delivered (and chatd_delivered) when it is announced
            client.arrival.joins.append((room, event))  # type: ignore[union-attr]
        self.hooks.call("chatd_room_join", notify=client, client=client, room=room,
                        event=event)
        return room

    def part(self, client: Client, room: Room, reason: str = "", *, quiet: bool = False,
             kicked_by: str = "") -> None:
        """Take ``client`` out of ``room``; its current room becomes its latest other room.

        The client is told (its own copy of the part event) unless ``quiet``;
        ``kicked_by``: an operator's kick (:class:`chatd.events.Part`).
        """
        if room not in client.rooms:
            raise RoomError(f"you are not in {room.name}", code="not_in_room")
        event = self.new_event(Part, client.source, room.name, reason, quiet=quiet,
                               kicked_by=kicked_by)
        if reason:
            event = self._reason_filtered(client, event, "")
        self.backend.to_client(event, client)
        left = tuple(r for r in client.rooms if r is not room)
        client.rooms = left[0].alone if len(left) == 1 else left
        self._remove_member(client, room)
        if client.room is room:
            client.room = client.rooms[-1] if client.rooms else None
        self.backend.parted(client, room)
        self.backend.to_room(event, room, exclude=client)
        self._delivered(event, client)
        self.hooks.call("chatd_room_part", notify=client, client=client, room=room,
                        reason=event.text, event=event)
        self._discard_if_empty(room)

    def _room_notice(self, room: Room, text: str, exclude: Client | None) -> int:
        speaking = self.intake.speaking
        if speaking is not None and self._refused_speech(room, *speaking):
            return 0
        event = self.new_event(Notice, self.server_source(), room.name, text)
        replying = self.intake.replying
        if exclude is None and replying is not None and replying in room.members:
            # Said while answering a tagged request (``/roll`` in a room): the requester's
            # copy is a reply, carrying the request's id; the others' comes in the batch.
            self.backend.to_client(event, replying)
            self.backend.to_room(event, room, replying)
        else:
            self.backend.to_room(event, room, exclude)
        return len(room.members) - (exclude in room.members)

    def _refused_speech(self, room: Room, client: Client, command: Command) -> bool:
        """A plugin posting to ``room`` while running ``client``'s ``command`` speaks for
        that client: ``chatd_check_speak`` (a mute) may refuse it, and the client is told."""
        if self.hooks.current_plugin != command.plugin:
            return False  # another plugin, in a hook the command set off: its own words
        refusal = self.hooks.call_first("chatd_check_speak", notify=client, client=client,
                                        room=room)
        if not refusal:
            return False
        if client.link.connected:
            why, code = refusal_of(refusal, "speak_refused")
            text = f"{why}; /{command.name}'s post to {room.name} was not sent"
            self.backend.to_client(
                self.new_event(Error, self._server_voice(), client.nick, text, code=code), client)
        return True

    # -- nicks ------------------------------------------------------------------------------

    def find_client(self, nick: str) -> Client | None:
        """The client of this process with ``nick``: what is truly local."""
        found = self.local.holder(nick)
        return found if isinstance(found, Client) else None

    def rename(self, client: Client, new: str) -> None:
        """Give ``client`` the nick ``new``; raises :class:`NickError` with the reason."""
        problem = nick_problem(new, self.config.limits.max_nick_bytes)
        if problem:
            raise NickError(problem, code="erroneous_nick")
        if client.nick == new:
            return
        refusal = self.hooks.call_first("chatd_check_nick", notify=client, client=client,
                                        nick=new)
        if refusal:
            text, code = refusal_of(refusal, "nick_refused")
            raise NickError(text, code=code)
        self._rename(client, new)

    def rename_to_guest(self, client: Client) -> str:
        """Give ``client`` a fresh ``guest-N`` nick (a registered nick it did not
        identify for, a nick an owner takes back); returns it."""
        new = self._new_guest_nick()
        self._rename(client, new, guest_tries=GUEST_TRIES)
        return new

    def _rename(self, client: Client, new: str, guest_tries: int = 0) -> None:
        old = client.nick
        # One step for the backend: the new nick claimed, the old one released if it
        # was (kept otherwise, so nobody takes it while the answer is out).
        self.ask(client, functools.partial(self.backend.claim_nick, client, new,
                                           replacing=old),
                 functools.partial(self._renamed, client, old, new, guest_tries),
                 late=functools.partial(self._claimed_too_late, client, new))

    def _claimed_too_late(self, client: Client, nick: str, claimed: bool) -> None:
        """A claim of ``nick`` granted after the domain stopped waiting for it (a timeout,
        or the client was renamed meanwhile): give it up again, keeping the nick the
        client has now (the two may share a key), or all of it if the client is gone."""
        if not claimed:
            return
        if client.id not in self.clients:
            self.backend.release_nick(client, nick)
        elif client.nick != nick:
            self.backend.claim_nick(client, client.nick, _ignore, replacing=nick)

    def _renamed(self, client: Client, old: str, new: str, guest_tries: int,
                 claimed: bool) -> None:
        if client.nick != old:  # renamed meanwhile (a plugin, a timer): a stale answer
            self._claimed_too_late(client, new, claimed)
            return
        if not claimed and guest_tries > 0:
            # A rename to a guest must happen (the nick it leaves is not the client's to
            # keep), but guest numbers are each node's own: another node's guest may
            # hold this one.  The next number, until one is free.
            self._rename(client, self._new_guest_nick(), guest_tries - 1)
            return
        if not claimed:
            raise NickError(f"the nick {new} is taken", code="nick_in_use")
        client.source = dataclasses.replace(client.source, nick=new)
        rooms = tuple(client.rooms)
        event = self.new_event(NickChange, client.source, "", "", old=old, new=new,
                               rooms=tuple(r.name for r in rooms))
        self.backend.to_rooms(event, rooms, exclude=client)
        self.backend.to_client(event, client)
        self._delivered(event, client)
        self.hooks.call("chatd_nick_change", notify=client, client=client, old=old, new=new,
                        event=event)

    def set_room_operators(self, room: Room, accounts: Iterable[str]) -> None:
        """``room``'s operators are ``accounts`` (kept as nick keys)."""
        room.operators = frozenset(nick_key(account) for account in accounts)

    def set_account(self, client: Client, account: str | None) -> None:
        """``client`` is identified as ``account`` now (None: not identified): an
        ``AccountChange`` for it and the members of its rooms (:meth:`_tell_identity`),
        then ``chatd_account_change``."""
        old = client.account
        if old == account:
            return
        client.source = dataclasses.replace(client.source, account=account)
        event = self.new_event(AccountChange, client.source, "", old=old, new=account,
                               rooms=tuple(r.name for r in client.rooms))
        self._tell_identity(client, event)
        self._presence_changed(client)
        self.hooks.call("chatd_account_change", notify=client, client=client, old=old,
                        new=account)

    def _presence_changed(self, client: Client) -> None:
        """What presence answers of ``client`` (its away message, account, real name:
        ``/whois``, ``/who``) changed.  A backend that keeps presence elsewhere (a
        cluster's, in Redis) is told through its optional ``changed(client)``; the
        local backend reads the client itself and has none."""
        changed = getattr(self.backend, "changed", None)
        if changed is not None:
            changed(client)

    def set_realname(self, client: Client, name: str) -> Event | None:
        """``client``'s real name is ``name`` now (refused with ``invalid_realname`` if
        :func:`realname_problem` says why not): a ``RealnameChange`` for it and the
        members of its rooms; None if it is the name it has."""
        problem = realname_problem(name)
        if problem:
            raise CommandError(problem, code="invalid_realname")
        if name == client.source.realname:
            return None
        client.source = dataclasses.replace(client.source, realname=name)
        event = self.new_event(RealnameChange, client.source, "", name,
                               rooms=tuple(r.name for r in client.rooms))
        self._tell_identity(client, event)
        self._presence_changed(client)
        return event

    def _tell_identity(self, client: Client, event: Event) -> None:
        """A change of who ``client`` is (its account, its real name): the client's own
        copy, then the members of its rooms, each once (the fan-out of a nick change;
        renderers that do not show the kind render nothing).  A client its rooms were
        not told of yet (:meth:`announce`) is its own only audience: they learn who it
        is when it arrives."""
        if client.link.connected:
            self.backend.to_client(event, client)
        if client.announced and client.rooms:
            self.backend.to_rooms(event, client.rooms, exclude=client)
        self._delivered(event, client)

    # -- the server talking -------------------------------------------------------------------

    def notice(self, client: Client, text: str) -> None:
        if client.link.connected:
            self.backend.to_client(
                self.new_event(Notice, self.server_source(), client.nick, text), client
            )

    def error(self, client: Client, text: str, code: str = "error") -> None:
        if self.intake.quiet is client:
            return  # IRC's NOTICE is never answered automatically (RFC 2812 3.3.2)
        if client.link.connected:
            self.backend.to_client(
                self.new_event(Error, self.server_source(), client.nick, text, code=code), client
            )

    def reply(self, client: Client, kind: type[Reply], fields: dict[str, Any]) -> Any:
        """A typed reply (:mod:`chatd.replies`) for ``client`` alone, from the plugin
        running now; None (nothing made) if the client is leaving."""
        if not client.link.connected:
            return None
        event = self.new_event(kind, self.server_source(), client.nick, **fields)
        self.backend.to_client(event, client)
        return event

    def broadcast(self, text: str, exclude: Client | None = None) -> int:
        """A notice for every connected client (but ``exclude``)."""
        event = self.new_event(Notice, self.server_source(), "", text)
        self.backend.to_everyone(event, exclude)
        return len(self.clients) - (exclude is not None and exclude.id in self.clients)

    def clients_in(self, rooms: Iterable[Room]) -> set[Client]:
        """Everyone in any of ``rooms`` (each client once)."""
        members: set[Client] = set()
        for room in rooms:
            members.update(room.members)
        return members
