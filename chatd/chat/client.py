"""A connected chat user, as plugins see it.

:class:`Client` is the domain's record of one user: its nick, its rooms, a place
for plugin state, and ways to talk to it.  It never touches a socket: what it
sends becomes an event (:mod:`chatd.events`) that the client's protocol
renders (``*** notice`` and ``! error`` lines for ``nc``, JSON objects for a
bot), sanitised, so no plugin can put a line on a terminal that looks like it
came from someone else.

The client is also its connection's *session*: the protocol object reports
requests, half-closes and the end of the connection to the methods at the
bottom (:class:`chatd.protocols.base.Session`); plugins do not call those.

Two fields belong to the chat package's other modules, not to plugins:
``arrival`` (the domain's, while the client is not yet announced) and
``intake`` (:mod:`chatd.chat.intake`'s record: its flood gate and a pause).
They are public fields of records those modules own, so no module reads or
writes another's private attributes; each is None nearly always, so an idle
connection pays one slot for each and nothing more.
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any, TypeVar

from ..delivery import View, nick_key
from ..events import Event, Source
from ..replies import Reply
from ..stash import Stash
from ..templates import plural

if TYPE_CHECKING:
    from ..config import ListenConfig
    from ..requests import Request
    from .domain import ChatDomain
    from .facade import Server
    from .intake import ClientIntake
    from .rooms import Room

R = TypeVar("R", bound=Reply)


class Arrival:
    """A client not yet announced to its rooms: the timer that will announce it, and
    the joins held back meanwhile.  (One object while it lasts, none after: an
    idle connection should cost little.)"""

    __slots__ = ("joins", "timer")

    def __init__(self) -> None:
        self.joins: list[tuple[Room, Event]] = []
        self.timer: Any = None

    def cancel(self) -> None:
        """Stop the timer that would announce the client (it is announced, or gone)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Client:
    """One connected user.  Created by the server; plugins never construct it."""

    __slots__ = (  # no __weakref__: nothing refers to a client weakly (8 bytes each)
        "_domain",
        "_stash",
        "arrival",
        "away",
        "intake",
        "link",
        "room",
        "rooms",
        "source",
        "view",
    )

    def __init__(self, domain: ChatDomain, link: Any, client_id: int, nick: str,
                 source: Source | None = None) -> None:
        self._domain = domain
        #: The connection's protocol object (delivery renders through it).  Not for plugins.
        self.link = link
        #: Who this client is in events: its nick, number, node, ``user@host`` and
        #: account (remade when the nick or the account changes).  ``nick`` and ``id``
        #: read from it rather than being kept twice: an idle connection should cost
        #: little (docs/performance.md, idle-10000).
        self.source = source if source is not None else Source(nick, client_id)
        #: The current room: where plain lines go.  Set by ``server.join()``.
        self.room: Room | None = None
        #: Every room the client is in, in join order.  A tuple: a client is in few
        #: rooms, joins and parts are rare, and an idle connection should cost little.
        self.rooms: tuple[Room, ...] = ()
        self._stash: Stash | None = None
        #: The domain's, while the client is not announced (its held-back joins and the
        #: timer that will announce it); None once announced.  Not for plugins.
        self.arrival: Arrival | None = None
        #: The intake's record (flood gate, pause), made when first needed; not for
        #: plugins (see :mod:`chatd.chat.intake`).
        self.intake: ClientIntake | None = None
        #: The away message (``/away``), or None when the client is here; set it with
        #: ``server.set_away()``, which passes it through the filters.
        self.away: str | None = None
        #: How this client wants to see things, if not like everyone (ignores,
        #: timestamps); None shares every payload.  Read by delivery; use the
        #: ``ignore``/``unignore`` methods and ``timestamps`` to change it.
        self.view: View | None = None

    @property
    def server(self) -> Server:
        """The server, as plugins see it (the same object hooks receive)."""
        return self._domain.facade

    @property
    def announced(self) -> bool:
        """True once its rooms were told it is here: after its first line, or once it
        has been connected ``limits.announce_after_seconds`` (so probes stay unseen)."""
        return self.arrival is None

    @property
    def connected_mono(self) -> float:
        """When it connected, ``time.monotonic()`` (its connection's own reading)."""
        return self.link.opened_at  # type: ignore[no-any-return]

    @property
    def connected_at(self) -> float:
        """When it connected, as ``time.time()`` (derived from :attr:`connected_mono`,
        so a wall-clock step since then does not change how long ago that was)."""
        return time.time() - (time.monotonic() - self.connected_mono)

    @property
    def stash(self) -> Stash:
        """Per-plugin state; see :mod:`chatd.stash`.  (Made on first use: most
        clients never need one, and idle connections should cost little.)"""
        stash = self._stash
        if stash is None:
            stash = self._stash = Stash()
        return stash

    # -- talking to the client ---------------------------------------------

    def notice(self, text: str) -> None:
        """A notice from the server or your plugin: ``*** text`` on the line protocol,
        ``*** [yourplugin] text`` from a plugin that is not a built-in (its marker)."""
        self._domain.notice(self, text)

    def error(self, text: str, *, code: str = "error") -> None:
        """An error for this client alone: ``! text`` on the line protocol; ``code`` is
        its stable name for programs (jsonl's ``"code"``, :data:`chatd.replies.ERROR_CODES`)."""
        self._domain.error(self, text, code)

    def reply(self, kind: type[R], /, **fields: Any) -> R | None:
        """Answer this client with a typed reply (:mod:`chatd.replies`): ``kind`` is the
        reply class, ``fields`` its own fields (``client.reply(Names, room="#dev",
        members=(...), total=3)``); the server fills in the id, the time, the source
        (your plugin) and the target (this client).  Each protocol words it its own way
        (the line protocol as sentences, jsonl as an object).  Returns the reply, or
        None if the client is leaving."""
        return self._domain.reply(self, kind, fields)

    def deliver(self, event: Event) -> None:
        """Show ``event`` to this client alone (rendered by its protocol)."""
        self._domain.backend.to_client(event, self)

    def send(self, text: str) -> None:
        """Deprecated: API 1 sent raw lines; API 2 sends :meth:`notice` lines."""
        warnings.warn(
            "Client.send() is deprecated: use client.notice() (a plugin cannot send raw "
            "lines; every line is rendered from an event)",
            DeprecationWarning, stacklevel=2,
        )
        self.notice(text)

    def close(self, reason: str = "", goodbye: str | None = None) -> None:
        """Disconnect after delivering ``goodbye`` (a notice) and anything queued.

        ``reason`` is what the others are told (``alice quit (reason)``) and what
        ``chatd_client_disconnect`` receives.
        """
        if goodbye:
            self.notice(goodbye)
        self.link.close(reason or "closed")

    # -- what it sees ------------------------------------------------------------

    @property
    def ignoring(self) -> frozenset[str]:
        """The nicks (lowercase) whose messages, actions and private messages it does
        not see."""
        return self.view.ignoring if self.view is not None else frozenset()

    def ignore(self, nick: str) -> None:
        """Stop showing this client what ``nick`` says (messages, actions, privmsgs)."""
        view = self._view()
        view.ignoring = view.ignoring | {nick_key(nick)}

    def unignore(self, nick: str) -> bool:
        """Show ``nick`` again; False if it was not ignored."""
        key = nick_key(nick)
        if key not in self.ignoring:
            return False
        view = self._view()
        view.ignoring = view.ignoring - {key}
        self._drop_view_if_default()
        return True

    @property
    def timestamps(self) -> bool:
        """Whether lines reach it with the time in front: ``[12:34] <bob> hi``."""
        return self.view is not None and self.view.timestamps

    @timestamps.setter
    def timestamps(self, on: bool) -> None:
        self._view().timestamps = bool(on)
        self._drop_view_if_default()

    def _view(self) -> View:
        if self.view is None:
            self.view = View()
        return self.view

    def _drop_view_if_default(self) -> None:
        if self.view is not None and self.view.is_default:
            self.view = None  # back on the shared payloads

    # -- facts ---------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """False once the client is leaving; anything sent to it is then dropped."""
        return self.link.connected

    @property
    def idle_seconds(self) -> float:
        """Seconds since its last line (or since it connected)."""
        return max(0.0, time.monotonic() - self.link.last_input)

    @property
    def registered(self) -> bool:
        """True once the client has sent a line."""
        return self.link.registered

    @property
    def nick(self) -> str:
        """Its nick now (changed only through ``server.rename()``, which remakes the
        source)."""
        return self.source.nick

    @property
    def id(self) -> int:
        """A number unique on this node for the life of the server process."""
        return self.source.client_id  # type: ignore[return-value]  # a client's is set

    @property
    def account(self) -> str | None:
        """The registered nick this client proved it owns (``/identify``), or None; kept
        across nick changes.  Set through ``server.set_account()``, which remakes the
        source (kept there alone: an idle connection should cost little)."""
        return self.source.account

    @property
    def session(self) -> str | None:
        """Its session id, unique across the nodes of a cluster (``node:id``): what
        renderers compare with an event's ``source.session`` ("is this my own event")."""
        return self.source.session

    @property
    def user(self) -> str:
        """``ident@host``: the nick it connected with (or its protocol's user name), and
        its address or a cloak of it (``server.cloak_addresses``); kept across nick
        changes.  Others may be shown it; :attr:`address` is for operators."""
        return self.source.user

    @property
    def protocol(self) -> str:
        """The name of the client's protocol: ``line``, ``jsonl``, ..."""
        return self.link.name

    @property
    def keeps_a_room(self) -> bool:
        """Whether this client always has a current room, by its protocol's rule
        (``ChatProtocol.keeps_a_room``: the line protocol's person at ``nc`` always
        talks somewhere, so ``/part`` of the last room is refused); False: it may leave
        every room (jsonl; IRC's ``PART`` and ``JOIN 0``)."""
        return bool(getattr(self.link, "keeps_a_room", False))

    @property
    def names_every_join(self) -> bool:
        """Whether this client is shown the members of every room it joins, also the one
        joined for it at connect (``ChatProtocol.names_every_join``: IRC)."""
        return bool(getattr(self.link, "names_every_join", False))

    @property
    def replays_history(self) -> bool:
        """Whether this client is shown a room's recent lines when it joins, by its
        protocol's rule (``Renderer.replays_history``); False: it asks for history
        itself (IRC's ``draft/chathistory``: the specification says no automatic
        replay then)."""
        return bool(getattr(self.link.renderer, "replays_history", True))

    @property
    def counts_at_start(self) -> bool:
        """Whether this client is told the server's counts when its session begins
        (``ChatProtocol.counts_at_start``: IRC's LUSERS after registration)."""
        return bool(getattr(self.link, "counts_at_start", False))

    @property
    def has_current_room(self) -> bool:
        """Whether the client's protocol has a current room, where a line without a room
        goes (``ChatProtocol.has_current_room``: line, jsonl); False on IRC, whose
        every message names its room: "you are now talking in #x" is not sent there."""
        return bool(getattr(self.link, "has_current_room", True))

    @property
    def listener(self) -> ListenConfig | None:
        """The settings of the listener the client connected to (``listen[]`` in the
        config: its port, protocol, and ``options``, the protocol's own, such as
        ``history_replay``); None for a client made
        without one (:class:`~chatd.testing.InProcessChat`)."""
        return self.link.listener  # type: ignore[no-any-return]

    @property
    def address(self) -> str:
        """The peer's IP address."""
        return self.link.peer[0]

    @property
    def peer(self) -> tuple[str, int]:
        """The peer's (address, port)."""
        return self.link.peer

    @property
    def output_bytes(self) -> int:
        """Bytes queued for this client and not yet accepted by the kernel."""
        return self.link.output_bytes

    # -- the session interface (called by the protocol, not by plugins) ----------

    def requests_received(self, requests: list[Request]) -> None:
        self._domain.intake.handle(self, requests)

    def eof_received(self) -> bool:
        return self._domain.intake.half_closed(self)

    def renderer_changed(self, old: Any) -> None:
        self._domain.renderer_changed(self, old)

    def output_skipped(self, count: int) -> None:
        self.notice(
            f"{plural(count, 'line')} skipped: you were not reading fast enough (your connection "
            "or terminal is too slow for this room)"
        )

    def connection_lost(self, reason: str) -> None:
        self._domain.disconnected(self, reason)

    def __repr__(self) -> str:
        host, port = self.link.peer
        return f"<Client #{self.id} {self.nick} {host}:{port}>"
