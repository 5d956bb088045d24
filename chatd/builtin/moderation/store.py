"""Moderation's store: what it knows of each room, and the tables that keep it.

Tables (``SCHEMA``, migrated as ``moderation``): ``rooms`` (a registered
room: founder, topic, settings), ``room_operators`` (by account) and
``room_bans`` (bans and mutes, by mask).  In memory, :class:`ModerationState`
(``server.stash[STATE]``) holds one :class:`RoomRules` per room that has any --
registered, or with bans or mutes while it exists -- and the registered rooms'
names by how they read (look-alikes).

Memory is the truth once loaded: every change is made there first, then
written (the store's writer thread commits it later).  The tables are read at
startup off the loop (``server.ask_store``), a page at a time, and again every
5 s (sooner at first) while the database cannot answer; until then chat goes on, joins are let
in (no room's rules are known) and the commands say the rules are not loaded
(:func:`state_of`); once read, members a ban matches are put out.

Several processes may share the database (PostgreSQL): every change is
announced (``store.notify`` on ``chatd_moderation``, the room's key, sent when
committed), and a notice from another process reads that room again
(:func:`reload_room`) once this process's own writes for it are committed;
``None`` (the listening connection was lost) reads every room again.

The hooks here keep the tables in step with rooms and accounts: a registered
room keeps its topic while it is empty, an unregistered room's bans go with
it, a dropped account loses its rooms and its operator seats.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chatd import (
    Client,
    CommandError,
    Event,
    Room,
    Server,
    StashKey,
    StoreUnavailable,
    hookimpl,
    plural,
)
from chatd.chat.nicks import nick_key
from chatd.chat.rooms import room_key, room_looks

from ..masks import Identity, Mask, MaskError

log = logging.getLogger("chatd.moderation")

#: Times: REAL on SQLite, DOUBLE PRECISION on PostgreSQL (whose REAL has 4 bytes).
SCHEMA: list[str | dict[str, str]] = [
    {
        "sqlite": """
    CREATE TABLE rooms (
        key TEXT PRIMARY KEY,          -- the room's key (lowercase)
        name TEXT NOT NULL,
        founder TEXT NOT NULL,         -- the founder's account (a nick's key)
        topic TEXT NOT NULL DEFAULT '',
        topic_lock INTEGER NOT NULL DEFAULT 0,
        invite_only INTEGER NOT NULL DEFAULT 0,
        registered REAL NOT NULL
    );
    CREATE TABLE room_operators (
        room TEXT NOT NULL,
        account TEXT NOT NULL,         -- a nick's key
        added_by TEXT NOT NULL,
        PRIMARY KEY (room, account)
    );
    CREATE TABLE room_bans (
        room TEXT NOT NULL,
        kind TEXT NOT NULL,            -- ban or mute
        mask TEXT NOT NULL,            -- nick!account@address, lowercase, * and ?
        set_by TEXT NOT NULL,
        reason TEXT NOT NULL,
        set_at REAL NOT NULL,
        expires REAL,                  -- seconds since the epoch; NULL: until lifted
        PRIMARY KEY (room, kind, mask)
    );
    """,
        "postgresql": """
    CREATE TABLE rooms (
        key TEXT PRIMARY KEY,          -- the room's key (lowercase)
        name TEXT NOT NULL,
        founder TEXT NOT NULL,         -- the founder's account (a nick's key)
        topic TEXT NOT NULL DEFAULT '',
        topic_lock INTEGER NOT NULL DEFAULT 0,
        invite_only INTEGER NOT NULL DEFAULT 0,
        registered DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE room_operators (
        room TEXT NOT NULL,
        account TEXT NOT NULL,         -- a nick's key
        added_by TEXT NOT NULL,
        PRIMARY KEY (room, account)
    );
    CREATE TABLE room_bans (
        room TEXT NOT NULL,
        kind TEXT NOT NULL,            -- ban or mute
        mask TEXT NOT NULL,            -- nick!account@address, lowercase, * and ?
        set_by TEXT NOT NULL,
        reason TEXT NOT NULL,
        set_at DOUBLE PRECISION NOT NULL,
        expires DOUBLE PRECISION,    -- seconds since the epoch; NULL: until lifted
        PRIMARY KEY (room, kind, mask)
    );
    """,
    },
    # The nick a ban or mute was set for (/ban NICK), so /unban NICK finds every
    # mask it set; '' for a mask given as such.
    "ALTER TABLE room_bans ADD COLUMN target TEXT NOT NULL DEFAULT '';",
]
#: Rooms one account may found.
ROOMS_PER_FOUNDER = 10
#: Bans plus mutes one room may hold.
ENTRIES_PER_ROOM = 200
STATE: StashKey[ModerationState] = StashKey()
#: Called with each room whose rules were read in (at the load, or again after
#: another process changed them): enforcement puts out the members a ban now matches.
Applied = Callable[[Server, "RoomRules"], None]


@dataclass
class Entry:
    """A ban or a mute: who (a mask), by whom, why, until when (None: until lifted),
    and the nick it was set for (``/ban NICK``; "" for a mask given as such)."""

    mask: str
    set_by: str
    reason: str
    set_at: float
    expires: float | None
    target: str = ""
    parsed: Mask = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.parsed = Mask(self.mask)

    def covers(self, who: Identity) -> bool:
        return self.parsed.covers(who)

    def active(self, now: float) -> bool:
        return self.expires is None or self.expires > now

    def until(self) -> str:
        if self.expires is None:
            return "until lifted"
        return "until " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.expires))


@dataclass
class RoomRules:
    """What moderation knows of one room: kept in the store if the room is registered."""

    name: str
    founder: str | None = None  # an account's key; None: not registered
    topic: str = ""
    topic_lock: bool = False
    invite_only: bool = False
    operators: set[str] = field(default_factory=set)
    bans: dict[str, Entry] = field(default_factory=dict)
    mutes: dict[str, Entry] = field(default_factory=dict)
    #: Who was invited (:func:`invitee`: an account, or a nick if not identified)
    #: and until when; memory only (an invite is for now), and kept when another
    #: process's change to the room is read in.
    invited: dict[str, float] = field(default_factory=dict)

    @property
    def registered(self) -> bool:
        return self.founder is not None

    @property
    def key(self) -> str:
        return room_key(self.name)

    def entries(self, kind: str) -> dict[str, Entry]:
        return self.bans if kind == "ban" else self.mutes


class ModerationState:
    """The plugin's state, kept in ``server.stash``."""

    def __init__(self) -> None:
        self.rooms: dict[str, RoomRules] = {}
        #: The registered rooms by how their names read (``room_looks``): a new room
        #: may not pass for one of them while it is empty.
        self.looks: dict[str, str] = {}
        #: False until the registered rooms were read from the store.
        self.loaded = False
        self.retry: Any = None
        #: How long the next retry of a failed load waits.
        self.load_delay = LOAD_RETRY_FIRST
        #: Room key -> the number of this process's last write for it: a notice from
        #: another process is applied only once these are committed (memory is ahead
        #: of the table until then).
        self.unsettled: dict[str, int] = {}
        #: Rooms being read again after another process's notice, and those noticed
        #: again meanwhile (read once more when the first read is in).
        self.reloading: set[str] = set()
        self.stale: set[str] = set()


def invitee(client: Client) -> str:
    """The key an invitation is kept under: the account if identified (it survives a
    reconnect, and is the same person on every process), else the nick's key."""
    if client.account is not None:
        return "account:" + nick_key(client.account)
    return "nick:" + nick_key(client.nick)


# -- looking rooms up --------------------------------------------------------------------


def index(state: ModerationState, rules: RoomRules) -> None:
    """A room is registered: its name, as it reads, is taken."""
    for look in room_looks(rules.name):
        state.looks.setdefault(look, rules.name)


def unindex(state: ModerationState, rules: RoomRules) -> None:
    """A room is no longer registered: its name, as it reads, is free again."""
    for look in room_looks(rules.name):
        if state.looks.get(look) == rules.name:
            del state.looks[look]


def registered_look_alike(state: ModerationState, name: str) -> str | None:
    """A registered room, other than ``name``, whose name reads like it; or None."""
    key = room_key(name)
    for look in room_looks(name):
        twin = state.looks.get(look)
        if twin is not None and room_key(twin) != key:
            return twin
    return None


def state_of(server: Server) -> ModerationState:
    """The plugin's state, for a command: raises CommandError (what to tell the user)
    while there is none, or while the registered rooms are not read yet."""
    state: ModerationState | None = server.stash.get(STATE)
    if state is None:
        raise CommandError("room moderation is not available on this server")
    if not state.loaded:
        raise CommandError("the registered rooms are not loaded yet (the database is "
                           "unavailable); try again soon")
    return state


def rules_for(server: Server, name: str, *, create: bool = False) -> RoomRules | None:
    """The rules of room ``name`` (made empty with ``create``); None if it has none."""
    state = state_of(server)
    rules = state.rooms.get(room_key(name))
    if rules is None and create:
        rules = state.rooms[room_key(name)] = RoomRules(name)
    return rules


# -- reading and writing -------------------------------------------------------------------


def load_at_start(server: Server, applied: Applied | None = None) -> None:
    """The load at startup: read at once (``store.read``, each read cut at
    ``read_timeout``, so the loop waits little even for a slow database), so the
    rules are in force before the first client comes; if the database cannot
    answer so fast, :func:`load` goes on off the loop."""
    state: ModerationState = server.stash[STATE]
    store = server.store
    rooms: dict[str, RoomRules] = {}
    try:
        last = ""
        while True:
            rows = store.read("SELECT key, name, founder, topic, topic_lock, invite_only "
                              "FROM rooms WHERE key > ? ORDER BY key LIMIT 500", (last,))
            for key, name, founder, topic, topic_lock, invite_only in rows:
                rooms[key] = RoomRules(name, founder, topic, bool(topic_lock), bool(invite_only))
            if len(rows) < 500:
                break
            last = rows[-1][0]
        for key, rules in rooms.items():
            rules.operators = {row[0] for row in store.read(
                "SELECT account FROM room_operators WHERE room = ? LIMIT 1000", (key,))}
            _fill_entries(rules, store.read(
                "SELECT kind, mask, set_by, reason, set_at, expires, target FROM room_bans "
                "WHERE room = ? LIMIT ?", (key, ENTRIES_PER_ROOM)))
    except StoreUnavailable as exc:
        log.info("the registered rooms could not be read at once (%s); reading them off "
                 "the loop", exc)
        load(server, applied)
        return
    _loaded(server, state, rooms, applied)


def load(server: Server, applied: Applied | None = None) -> None:
    """Read the registered rooms, off the loop (``server.ask_store``: bounded reads, a
    page of rooms, then each room's operators and bans); retried every
    ``LOAD_RETRY_SECONDS`` until it works.

    Until it has worked, chat goes on: joins are let in (no room's rules are
    known yet) and the moderation commands say the rules are not loaded; once
    they are, ``applied(server, rules)`` runs for each room, so members a ban
    matches are put out then."""
    state: ModerationState = server.stash[STATE]
    state.retry = None
    rooms: dict[str, RoomRules] = {}

    def failed(error: str | None) -> None:
        if server.stash.get(STATE) is not state:
            return  # a reload started another load meanwhile
        delay = state.load_delay
        state.load_delay = min(delay * 2, LOAD_RETRY_SECONDS)
        log_at = logging.ERROR if delay >= LOAD_RETRY_SECONDS / 2 else logging.INFO
        log.log(log_at, "could not read the registered rooms (%s); bans and room operators "
                "are not in force until they are read (retrying in %g s)", error, delay)
        state.retry = server.call_later(delay, load, server, applied)

    def page(last: str) -> None:
        server.ask_store(None, "SELECT key, name, founder, topic, topic_lock, invite_only "
                         "FROM rooms WHERE key > ? ORDER BY key LIMIT 500", (last,), listed)

    def listed(answer: Any) -> None:
        if not answer.ok:
            failed(answer.error)
            return
        for key, name, founder, topic, topic_lock, invite_only in answer.rows:
            rooms[key] = RoomRules(name, founder, topic, bool(topic_lock), bool(invite_only))
        if len(answer.rows) == 500:
            page(answer.rows[-1][0])
        else:
            read_rooms(list(rooms.values()))

    def read_rooms(waiting: list[RoomRules]) -> None:
        if not waiting:
            _loaded(server, state, rooms, applied)
            return
        rules = waiting.pop()

        def operators(answer: Any) -> None:
            if not answer.ok:
                failed(answer.error)
                return
            rules.operators = {row[0] for row in answer.rows}
            server.ask_store(None, "SELECT kind, mask, set_by, reason, set_at, expires, target "
                             "FROM room_bans WHERE room = ? LIMIT ?",
                             (rules.key, ENTRIES_PER_ROOM), entries)

        def entries(answer: Any) -> None:
            if not answer.ok:
                failed(answer.error)
                return
            _fill_entries(rules, answer.rows)
            read_rooms(waiting)

        server.ask_store(None, "SELECT account FROM room_operators WHERE room = ? LIMIT 1000",
                         (rules.key,), operators)

    page("")


#: How soon the load of the registered rooms is tried again after it failed: at once
#: (a moment's lock while other plugins migrate at startup), then doubling to 5 s.
LOAD_RETRY_FIRST = 0.05
LOAD_RETRY_SECONDS = 5.0


def _loaded(server: Server, state: ModerationState, rooms: dict[str, RoomRules],
            applied: Applied | None) -> None:
    """The registered rooms are read: in force from now on."""
    if server.stash.get(STATE) is not state:
        return  # a reload started another load meanwhile
    for key, rules in rooms.items():
        old = state.rooms.get(key)
        if old is not None:  # bans set while it was unknown stay (as on registration)
            for kind in ("ban", "mute"):
                for mask_key, entry in old.entries(kind).items():
                    rules.entries(kind).setdefault(mask_key, entry)
            rules.invited = old.invited
    state.rooms.update(rooms)
    for rules in rooms.values():
        index(state, rules)
    state.loaded = True
    for rules in rooms.values():
        room = server.rooms.get(rules.name)
        if room is not None and rules.topic and not room.topic:
            room.topic = rules.topic
        publish_operators(server, rules)
        if applied is not None:
            applied(server, rules)
    if rooms:
        log.info("%s loaded", plural(len(rooms), "registered room"))


#: The change notices' channel (``store.notify``/``listen``): the payload is the key of
#: the room whose rules changed.
CHANNEL = "chatd_moderation"


def write(server: Server, key: str, sql: str, params: tuple[Any, ...]) -> int:
    """Queue a write of room ``key``'s rules and tell every other process sharing the
    database once it is committed (``store.notify``: on PostgreSQL a ``NOTIFY`` in
    the same transaction); returns the write's number."""
    store = server.store
    number = store.write(sql, params)
    state: ModerationState | None = server.stash.get(STATE)
    if state is not None and number:
        state.unsettled[key] = number
    store.notify(CHANNEL, key)
    return number


# -- other processes' changes -----------------------------------------------------------------

#: How soon a room is read again when its read failed, or this process's own writes
#: for it are not committed yet.
RELOAD_RETRY_SECONDS = 1.0
SETTLE_SECONDS = 0.05


def reload_room(server: Server, key: str, applied: Applied) -> None:
    """Read room ``key``'s rules again (another process changed them): off the loop,
    through ``ask_store``; the answer replaces what memory holds for it.

    Not while this process's own writes for the room wait for the disk (memory is
    ahead of the table then: read once they are in), and one read per room at a
    time (a notice meanwhile reads it once more)."""
    state: ModerationState | None = server.stash.get(STATE)
    if state is None or not state.loaded:
        return  # the load still to come reads everything
    if key in state.reloading:
        state.stale.add(key)
        return
    if server.store.done < state.unsettled.get(key, 0):
        server.call_later(SETTLE_SECONDS, reload_room, server, key, applied)
        return
    state.unsettled.pop(key, None)
    state.reloading.add(key)
    rows: dict[str, list[tuple[Any, ...]]] = {}
    queries = [
        ("room", "SELECT name, founder, topic, topic_lock, invite_only FROM rooms WHERE key = ?",
         (key,)),
        ("operators", "SELECT account FROM room_operators WHERE room = ? LIMIT 1000", (key,)),
        ("entries", "SELECT kind, mask, set_by, reason, set_at, expires, target FROM room_bans "
         "WHERE room = ? LIMIT ?", (key, ENTRIES_PER_ROOM)),
    ]

    def next_query() -> None:
        name, sql, params = queries[len(rows)]
        server.ask_store(None, sql, params, lambda answer: answered(name, answer))

    def answered(name: str, answer: Any) -> None:
        if not answer.ok:
            state.reloading.discard(key)
            log.warning("could not read the rules of %s again after another process changed "
                        "them (%s); retrying in %g s", key, answer.error, RELOAD_RETRY_SECONDS)
            server.call_later(RELOAD_RETRY_SECONDS, reload_room, server, key, applied)
            return
        rows[name] = answer.rows
        if len(rows) < len(queries):
            next_query()
            return
        state.reloading.discard(key)
        if key in state.unsettled or key in state.stale:  # changed meanwhile: read again
            state.stale.discard(key)
            reload_room(server, key, applied)
            return
        rules = _apply(server, state, key, rows)
        if rules is not None:
            applied(server, rules)

    next_query()


def _apply(server: Server, state: ModerationState, key: str,
           rows: dict[str, list[tuple[Any, ...]]]) -> RoomRules | None:
    """Put what the table holds for room ``key`` in memory in place of what was there
    (invitations stay: they are memory only); the rules now, or None if the room has
    none."""
    old = state.rooms.get(key)
    if old is not None and old.registered:
        unindex(state, old)
    if not rows["room"]:  # not registered (dropped elsewhere): as a local /drop leaves it
        if old is None or not old.registered:
            return old
        room = server.rooms.get(old.name)
        if room is None:
            del state.rooms[key]
            return None
        rules = state.rooms[key] = RoomRules(room.name, bans=old.bans, mutes=old.mutes,
                                             invited=old.invited)
        server.set_room_operators(room, ())
        return rules
    name, founder, topic, topic_lock, invite_only = rows["room"][0]
    rules = RoomRules(name, founder, topic, bool(topic_lock), bool(invite_only))
    rules.operators = {row[0] for row in rows["operators"]}
    _fill_entries(rules, rows["entries"])
    if old is not None:
        rules.invited = old.invited
    state.rooms[key] = rules
    index(state, rules)
    publish_operators(server, rules)
    return rules


def _fill_entries(rules: RoomRules, rows: list[tuple[Any, ...]]) -> None:
    """The bans and mutes of ``rows`` (kind, mask, set_by, reason, set_at, expires,
    target) into ``rules``; a mask that no longer parses is skipped, and logged."""
    for kind, mask, set_by, reason, set_at, expires, target in rows:
        try:
            entry = Entry(mask, set_by, reason, set_at, expires, target)
        except MaskError as exc:  # written by hand, or by an older chatd
            log.warning("%s: %s %r skipped: %s", rules.name, kind, mask, exc)
            continue
        rules.entries(kind)[entry.parsed.key] = entry


def reload_all(server: Server, applied: Applied) -> None:
    """Read every registered room again (the notices may have been missed: the
    listening connection was lost): the rooms registered now, and those memory
    holds as registered (perhaps dropped meanwhile), one by one."""
    state: ModerationState | None = server.stash.get(STATE)
    if state is None or not state.loaded:
        return
    known = {key for key, rules in state.rooms.items() if rules.registered}

    def page(last: str) -> None:
        server.ask_store(None, "SELECT key FROM rooms WHERE key > ? ORDER BY key LIMIT 500",
                         (last,), lambda answer: listed(answer, last))

    def listed(answer: Any, last: str) -> None:
        if not answer.ok:
            log.warning("could not list the registered rooms again (%s); retrying in %g s",
                        answer.error, RELOAD_RETRY_SECONDS)
            server.call_later(RELOAD_RETRY_SECONDS, reload_all, server, applied)
            return
        keys = [row[0] for row in answer.rows]
        known.update(keys)
        if len(keys) == 500:
            page(keys[-1])
            return
        for key in sorted(known):
            reload_room(server, key, applied)

    page("")


def save_room(server: Server, rules: RoomRules) -> None:
    if rules.registered:
        write(server, rules.key,
              "UPDATE rooms SET topic = ?, topic_lock = ?, invite_only = ? WHERE key = ?",
              (rules.topic, int(rules.topic_lock), int(rules.invite_only), rules.key))


def save_entry(server: Server, rules: RoomRules, kind: str, entry: Entry | None,
                key: str) -> None:
    """Write (or, for None, delete) the ban or mute whose mask's key is ``key``; a mask
    that differs only in case replaces the one stored."""
    if not rules.registered:
        return
    write(server, rules.key,
          "DELETE FROM room_bans WHERE room = ? AND kind = ? AND lower(mask) = ?",
          (rules.key, kind, key))
    if entry is None:
        return
    write(
        server, rules.key,
        "INSERT INTO room_bans (room, kind, mask, set_by, reason, set_at, expires, target) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (room, kind, mask) DO UPDATE SET "
        "set_by = excluded.set_by, reason = excluded.reason, set_at = excluded.set_at, "
        "expires = excluded.expires, target = excluded.target",
        (rules.key, kind, entry.mask, entry.set_by, entry.reason, entry.set_at, entry.expires,
         entry.target),
    )


def publish_operators(server: Server, rules: RoomRules) -> None:
    """Make the room's operators (its founder and those it named, by account) a public
    fact while the room exists: ``room.operators``, which ``/who``'s ``operator`` mark
    (IRC's ``@``) reads.  Called whenever they change and when the room is made."""
    room = server.rooms.get(rules.name)
    if room is not None:
        founder = (rules.founder,) if rules.founder is not None else ()
        server.set_room_operators(room, (*founder, *rules.operators))


def unregister(server: Server, state: ModerationState, rules: RoomRules) -> None:
    """Forget a room's registration, on disk and in memory."""
    for table in ("rooms WHERE key", "room_operators WHERE room", "room_bans WHERE room"):
        write(server, rules.key, f"DELETE FROM {table} = ?", (rules.key,))
    unindex(state, rules)
    room = server.rooms.get(rules.name)
    if room is None:
        del state.rooms[rules.key]
    else:  # its bans and mutes last while the room does, like any room's
        state.rooms[rules.key] = RoomRules(room.name, bans=rules.bans, mutes=rules.mutes)
        server.set_room_operators(room, ())


# -- keeping the tables in step with rooms and accounts ---------------------------------------


@hookimpl
def chatd_account_dropped(server: Server, account: str) -> None:
    """A dropped nick keeps no power: whoever registers it next is someone else."""
    state: ModerationState | None = server.stash.get(STATE)
    if state is None:
        return
    key = nick_key(account)
    for rules in list(state.rooms.values()):
        if key in rules.operators:
            rules.operators.discard(key)
            write(server, rules.key,
                  "DELETE FROM room_operators WHERE room = ? AND account = ?", (rules.key, key))
            publish_operators(server, rules)
        if rules.founder == key:
            unregister(server, state, rules)
            text = f"{rules.name} is no longer registered: its founder's nick was dropped"
            log.info("%s", text)
            room = server.rooms.get(rules.name)
            if room is not None and room.members:
                room.say(text)


@hookimpl
def chatd_message(client: Client, event: Event) -> None:
    if event.kind != "topic":
        return
    state: ModerationState | None = client.server.stash.get(STATE)
    rules = state.rooms.get(room_key(event.target)) if state is not None else None
    if rules is not None and rules.registered:
        rules.topic = event.text
        save_room(client.server, rules)


@hookimpl
def chatd_room_created(server: Server, room: Room) -> None:
    state: ModerationState | None = server.stash.get(STATE)
    rules = state.rooms.get(room_key(room.name)) if state is not None else None
    if rules is not None and rules.topic:
        room.topic = rules.topic  # a registered room keeps its topic while empty
    if rules is not None and rules.registered:
        publish_operators(server, rules)


@hookimpl
def chatd_room_removed(server: Server, room: Room) -> None:
    state: ModerationState | None = server.stash.get(STATE)
    rules = state.rooms.get(room_key(room.name)) if state is not None else None
    if rules is None:
        return
    if rules.registered:
        rules.invited.clear()
    else:
        del state.rooms[rules.key]  # type: ignore[union-attr]  # its bans go with the room
