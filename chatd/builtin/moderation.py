"""Built-in plugin *moderation*: registered rooms, room operators, kicks, bans, mutes.

* ``/register #room`` (identified users, in the room) makes you its **founder**.
  A registered room keeps its topic, operators, bans, mutes and settings in the
  store, across restarts and while it is empty.  ``/drop #room`` unregisters it.
* The founder names **room operators** (``/op [#room] NICK``, ``/deop``), by
  account: an operator is whoever identifies as that nick.  Server operators
  (``/oper``) may do everything below in every room, registered or not.
* Operators may ``/kick [#room] NICK [reason]``; ``/ban [#room] WHO [TIME]
  [reason]`` and ``/unban``; ``/mute [#room] WHO [TIME] [reason]`` and
  ``/unmute``; ``/invite NICK [#room]``; and ``/roomset [#room] topic-lock on``
  or ``invite-only on``.  ``/bans [#room]`` lists the bans and mutes,
  ``/roomset [#room]`` the room's founder, operators and settings.
* **WHO** is a nick or a mask ``nick!account@address`` with ``*`` and ``?``
  (``*!*@203.0.113.*``, ``*!alice@*``; see :mod:`chatd.builtin.masks`).  A nick
  stands for the person: someone connected by their address and, if
  identified, their account too; a registered nick nobody uses by the nick
  and its account; any other nick by the nick.  ``/unban NICK`` lifts all of
  what ``/ban NICK`` set.  Nicks and accounts in masks match look-alikes
  (``aIice`` is ``alice``).  **TIME** is ``30s``, ``10m``, ``2h``, ``7d``,
  ``1w`` or a sum (``1h30m``); a word after WHO that starts with a digit must
  be one (``10x`` is an error, never a ban until lifted); without it the ban
  or mute lasts until ``/unban``/``/unmute``.
* A ban keeps a client out (a join is refused, saying until when) and removes
  matching members; a mute lets a member read but not speak in the room: no
  message, action or topic, no reason on a part or quit (the leaving is still
  announced), and no plugin command posting to the room for them (``/roll``);
  an invite-only room lets in its operators and whoever they invited (once,
  within an hour); a locked topic is changed by operators only.  Bans and
  mutes are checked again when someone changes nick or identifies.
* Operators (of the room, or of the server) are never banned or muted: a ban
  or mute that names one, or matches one who is connected, is refused with the
  reason (as ``/kick`` is); ``/deop`` them first.  An address mask that
  matches an operator who comes later does not apply to them.
* A room may not be created, or registered, beside one whose name looks the
  same: ``#Iobby`` (a capital i) next to ``#lobby`` is refused, naming it.

Every action is announced to the room and logged (``chatd.moderation``).
Bans and mutes in a room that is not registered last while the room exists.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from chatd import (
    Client,
    Command,
    CommandError,
    Event,
    Reject,
    Room,
    Server,
    StashKey,
    StoreUnavailable,
    UsageError,
    hookimpl,
    plural,
)
from chatd.chat.nicks import nick_key, nick_problem
from chatd.chat.rooms import room_key, room_looks

from .accounts import ROOM_REGISTRAR, find_account
from .masks import Identity, Mask, MaskError, same_name
from .oper import is_operator

log = logging.getLogger("chatd.moderation")

SCHEMA = [
    """
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
    # The nick a ban or mute was set for (/ban NICK), so /unban NICK finds every
    # mask it set; '' for a mask given as such.
    "ALTER TABLE room_bans ADD COLUMN target TEXT NOT NULL DEFAULT '';",
]

#: Rooms one account may found.
ROOMS_PER_FOUNDER = 10
#: Bans plus mutes one room may hold.
ENTRIES_PER_ROOM = 200
INVITE_SECONDS = 3600.0
REASON_MAX = 200
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(?:[0-9]{1,6}[smhdw]){1,5}\Z")
_DURATION_PART = re.compile(r"([0-9]+)([smhdw])")
#: What a TIME is taken to be meant: a digit first, or a sign and a digit.
_TIME_LIKE = re.compile(r"[+-]?[0-9]")
#: The longest ban or mute with a time (about ten years); without a time it is
#: until lifted anyway.
DURATION_MAX = 520 * 7 * 86400
_SETTINGS = {"topic-lock": "topic_lock", "invite-only": "invite_only"}

STATE: StashKey[ModerationState] = StashKey()


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
    #: Invited client ids and until when (memory only: an invite is for now).
    invited: dict[int, float] = field(default_factory=dict)

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


# -- masks ----------------------------------------------------------------------------------


@dataclass
class Who:
    """What a command's WHO argument stands for: the masks, the nick they were set for
    ("" for a mask given as such) and the client of that nick, if connected."""

    masks: list[str]
    target: str = ""
    client: Client | None = None


def _as_mask(who: str) -> str:
    """``who`` (a mask, perhaps with parts left out) as a whole ``nick!account@address``."""
    nick, _, rest = who.partition("!") if "!" in who else ("*", "", who)
    account, _, address = rest.partition("@") if "@" in rest else (rest, "", "*")
    text = f"{nick or '*'}!{account or '*'}@{address or '*'}"
    try:
        return Mask(text).text
    except MaskError as exc:
        raise CommandError(str(exc)) from None


def _who(server: Server, who: str) -> Who:
    """What WHO stands for (see the module docstring)."""
    if "!" in who or "@" in who:
        return Who([_as_mask(who)])
    target = server.find_client(who)
    if target is not None:
        masks = [f"*!*@{target.address}"]
        if target.account is not None:
            masks.insert(0, f"*!{nick_key(target.account)}@*")
        return Who(masks, target.nick, target)
    if nick_problem(who) is not None and not who.lower().startswith("guest-"):
        raise CommandError(f"not a nick or a mask: {who}")
    masks = [_as_mask(f"{who}!*@*")]
    account = _registered(server, who)
    if account is not None:
        masks.append(f"*!{account}@*")
    return Who(masks, who)


def _registered(server: Server, nick: str) -> str | None:
    """The account (a nick's key) registered for ``nick``, or None (also when this
    server has no accounts); a store that cannot answer is the user's error."""
    try:
        account = find_account(server, nick)
    except StoreUnavailable as exc:
        raise CommandError(f"cannot look up {nick} right now ({exc}); try again soon") from None
    except CommandError:  # no accounts on this server: no nick is registered
        return None
    return None if account is None else nick_key(account[0])


def _matching(entries: dict[str, Entry], client: Client, now: float) -> Entry | None:
    who = Identity.of(client)
    for entry in entries.values():
        if entry.active(now) and entry.covers(who):
            return entry
    return None


# -- who may do what -------------------------------------------------------------------------


def _index(state: ModerationState, rules: RoomRules) -> None:
    for look in room_looks(rules.name):
        state.looks.setdefault(look, rules.name)


def _unindex(state: ModerationState, rules: RoomRules) -> None:
    for look in room_looks(rules.name):
        if state.looks.get(look) == rules.name:
            del state.looks[look]


def _registered_look_alike(state: ModerationState, name: str) -> str | None:
    """A registered room, other than ``name``, whose name reads like it; or None."""
    key = room_key(name)
    for look in room_looks(name):
        twin = state.looks.get(look)
        if twin is not None and room_key(twin) != key:
            return twin
    return None


def _is_room_operator(client: Client, rules: RoomRules | None) -> bool:
    if is_operator(client):
        return True
    if rules is None or not rules.registered or client.account is None:
        return False
    account = nick_key(client.account)
    return account == rules.founder or account in rules.operators


def _is_founder(client: Client, rules: RoomRules) -> bool:
    if is_operator(client):
        return True
    return client.account is not None and nick_key(client.account) == rules.founder


def _state(server: Server) -> ModerationState:
    state: ModerationState | None = server.stash.get(STATE)
    if state is None:
        raise CommandError("room moderation is not available on this server")
    if not state.loaded:
        raise CommandError("the registered rooms are not loaded yet (the database is "
                           "unavailable); try again soon")
    return state


def _rules(server: Server, name: str, *, create: bool = False) -> RoomRules | None:
    state = _state(server)
    rules = state.rooms.get(room_key(name))
    if rules is None and create:
        rules = state.rooms[room_key(name)] = RoomRules(name)
    return rules


def _moderated_room(client: Client, words: list[str]) -> tuple[str, Room | None, RoomRules]:
    """The room a command names first (or the current room): its name, the room (None
    for a registered room nobody is in) and its rules.  The caller must be allowed
    to moderate it.  Takes the room's name off ``words``."""
    server = client.server
    if words and words[0].startswith("#"):
        name = words.pop(0)
        room = server.rooms.get(name)
        if room is None and _rules(server, name) is None:
            raise CommandError(f"no such room: {name}")
    elif client.room is not None:
        room = client.room
    else:
        raise CommandError("you are not in a room; name one: #room")
    if room is not None:
        name = room.name
    rules = _rules(server, name)
    if not _is_room_operator(client, rules):
        raise CommandError(f"permission denied: you are not an operator of {name}")
    if rules is None:
        rules = _rules(server, name, create=True)
        assert rules is not None
    return rules.name, room, rules


def _announce(client: Client, room: Room | None, text: str) -> None:
    """Tell the room (or, if nobody is in it, the one who did it) and log it."""
    log.info("%s (by %s from %s)", text, client.nick, client.address)
    if room is not None and room.members:
        room.say(text)
        if client not in room.members:
            client.notice(text)
    else:
        client.notice(text)


# -- the store ---------------------------------------------------------------------------


def _load(server: Server) -> None:
    """Read the registered rooms (bounded reads, a page at a time); retried until it works."""
    state: ModerationState = server.stash[STATE]
    state.retry = None
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
                "SELECT account FROM room_operators WHERE room = ?", (key,))}
            for kind, mask, set_by, reason, set_at, expires, target in store.read(
                "SELECT kind, mask, set_by, reason, set_at, expires, target FROM room_bans "
                "WHERE room = ? LIMIT ?", (key, ENTRIES_PER_ROOM),
            ):
                try:
                    entry = Entry(mask, set_by, reason, set_at, expires, target)
                except MaskError as exc:  # written by hand, or by an older chatd
                    log.warning("%s: %s %r skipped: %s", rules.name, kind, mask, exc)
                    continue
                rules.entries(kind)[entry.parsed.key] = entry
    except StoreUnavailable as exc:
        log.error("could not read the registered rooms (%s); bans and room operators are not "
                  "in force until they are read (retrying in 5 s)", exc)
        state.retry = server.call_later(5.0, _load, server)
        return
    state.rooms.update(rooms)
    for rules in rooms.values():
        _index(state, rules)
    state.loaded = True
    for rules in rooms.values():
        room = server.rooms.get(rules.name)
        if room is not None and rules.topic and not room.topic:
            room.topic = rules.topic
    if rooms:
        log.info("%s loaded", plural(len(rooms), "registered room"))


def _save_room(server: Server, rules: RoomRules) -> None:
    if rules.registered:
        server.store.write(
            "UPDATE rooms SET topic = ?, topic_lock = ?, invite_only = ? WHERE key = ?",
            (rules.topic, int(rules.topic_lock), int(rules.invite_only), rules.key),
        )


def _save_entry(server: Server, rules: RoomRules, kind: str, entry: Entry | None,
                key: str) -> None:
    """Write (or, for None, delete) the ban or mute whose mask's key is ``key``; a mask
    that differs only in case replaces the one stored."""
    if not rules.registered:
        return
    server.store.write("DELETE FROM room_bans WHERE room = ? AND kind = ? AND lower(mask) = ?",
                       (rules.key, kind, key))
    if entry is None:
        return
    server.store.write(
        "INSERT OR REPLACE INTO room_bans (room, kind, mask, set_by, reason, set_at, expires, "
        "target) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (rules.key, kind, entry.mask, entry.set_by, entry.reason, entry.set_at, entry.expires,
         entry.target),
    )


# -- startup --------------------------------------------------------------------------------


@hookimpl
def chatd_startup(server: Server) -> None:
    server.store.migrate("moderation", SCHEMA)
    previous: ModerationState | None = server.stash.get(STATE)
    state = ModerationState()
    if previous is not None:  # a reload: what is in memory (unregistered rooms too) stays
        state.rooms = previous.rooms
        state.looks = previous.looks
    server.stash[STATE] = state
    server.stash[ROOM_REGISTRAR] = (register_room, drop_room)
    if previous is not None and previous.loaded:
        # Memory is the truth once loaded: every change is made there first and its
        # write may still wait for the disk (full), so reading the store again would
        # bring back a lifted ban, a removed operator, a dropped room.
        state.loaded = True
        return
    _load(server)


@hookimpl
def chatd_shutdown(server: Server) -> None:
    state = server.stash.get(STATE)
    if state is not None and state.retry is not None:
        state.retry.cancel()
    server.stash.pop(ROOM_REGISTRAR, None)


# -- registration (the /register and /drop commands of *accounts* call these) ---------------


def register_room(client: Client, words: list[str]) -> None:
    """``/register #room``: the caller (identified, in the room) becomes its founder."""
    if len(words) != 1:
        raise UsageError("/register #room")
    server = client.server
    state = _state(server)
    room = server.rooms.get(words[0])
    if room is None or room not in client.rooms:
        raise CommandError(f"join {words[0]} first: you register a room you are in")
    if client.account is None:
        raise CommandError("identify first: a room is registered to your account")
    rules = state.rooms.get(room_key(room.name))
    if rules is not None and rules.registered:
        raise CommandError(f"{room.name} is already registered")
    founder = nick_key(client.account)
    founded = sum(1 for r in state.rooms.values() if r.founder == founder)
    if founded >= ROOMS_PER_FOUNDER:
        raise CommandError(f"you have founded {founded} rooms, the most one account may")
    if room_key(room.name) == room_key(server.default_room):
        raise CommandError(f"{room.name} is the server's default room: its operators are "
                           "the server operators")
    twin = _registered_look_alike(state, room.name)
    if twin is not None:
        raise CommandError(f"{room.name} looks like {twin}, a registered room: one of the "
                           "two names would pass for the other")
    if rules is None:
        rules = state.rooms[room_key(room.name)] = RoomRules(room.name)
    rules.founder = founder
    rules.topic = room.topic or ""
    _index(state, rules)
    server.store.write(
        "INSERT OR REPLACE INTO rooms (key, name, founder, topic, topic_lock, invite_only, "
        "registered) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (rules.key, room.name, founder, rules.topic, int(rules.topic_lock),
         int(rules.invite_only), time.time()),
    )
    for kind in ("ban", "mute"):  # set while it was unregistered: kept from now on
        for key, entry in rules.entries(kind).items():
            _save_entry(server, rules, kind, entry, key)
    _announce(client, room, f"{room.name} is registered; its founder is {client.account}")


def drop_room(client: Client, words: list[str]) -> None:
    """``/drop #room``: the founder (or a server operator) unregisters it."""
    if len(words) != 1:
        raise UsageError("/drop #room")
    server = client.server
    state = _state(server)
    rules = state.rooms.get(room_key(words[0]))
    if rules is None or not rules.registered:
        raise CommandError(f"{words[0]} is not registered")
    if not _is_founder(client, rules):
        raise CommandError(f"permission denied: only the founder of {rules.name} can drop it")
    _unregister(server, state, rules)
    _announce(client, server.rooms.get(rules.name), f"{rules.name} is no longer registered")


def _unregister(server: Server, state: ModerationState, rules: RoomRules) -> None:
    """Forget a room's registration, on disk and in memory."""
    for table in ("rooms WHERE key", "room_operators WHERE room", "room_bans WHERE room"):
        server.store.write(f"DELETE FROM {table} = ?", (rules.key,))
    _unindex(state, rules)
    room = server.rooms.get(rules.name)
    if room is None:
        del state.rooms[rules.key]
    else:  # its bans and mutes last while the room does, like any room's
        state.rooms[rules.key] = RoomRules(room.name, bans=rules.bans, mutes=rules.mutes)


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
            server.store.write("DELETE FROM room_operators WHERE room = ? AND account = ?",
                               (rules.key, key))
        if rules.founder == key:
            _unregister(server, state, rules)
            text = f"{rules.name} is no longer registered: its founder's nick was dropped"
            log.info("%s", text)
            room = server.rooms.get(rules.name)
            if room is not None and room.members:
                room.say(text)


# -- commands -------------------------------------------------------------------------------


def _reason(words: list[str]) -> str:
    return " ".join(words)[:REASON_MAX]


def _duration(words: list[str]) -> float | None:
    """A leading TIME word taken off ``words``, in seconds (None: there is none).

    A word that starts with a digit (or a sign and a digit) is a TIME or an error:
    ``10x`` or ``1.5h`` read as the start of the reason would make a ban meant for
    a while last until lifted."""
    if not words:
        return None
    word = words[0].lower()
    if not _TIME_LIKE.match(word):
        return None
    if not _DURATION.match(word):
        raise CommandError(f"not a time: {words[0]} (30s, 10m, 2h, 7d, 1w or a sum such as "
                           "1h30m; a reason cannot start with a digit)")
    seconds = sum(int(number) * _UNITS[unit] for number, unit in _DURATION_PART.findall(word))
    if seconds <= 0:
        raise CommandError("a time is 1s or more")
    if seconds > DURATION_MAX:
        raise CommandError(f"a time is at most {DURATION_MAX // 604800}w; leave it out for "
                           "one that lasts until lifted")
    words.pop(0)
    return float(seconds)


def _how_long(seconds: float | None) -> str:
    if seconds is None:
        return ""
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f" for {int(seconds // size)} {unit}"
    return f" for {int(seconds)} s"


def _kick(server: Server, room: Room, target: Client, reason: str) -> None:
    """Take ``target`` out of ``room``; a client left in no room goes to the default room."""
    server.part(target, room, reason)
    if not target.rooms and room_key(room.name) != room_key(server.default_room):
        with contextlib.suppress(CommandError):  # banned from it too: in no room, then
            server.join(target, server.default_room)
    if not target.rooms:
        target.notice("you are in no room now; /join one")


def cmd_kick(client: Client, args: str) -> None:
    words = args.split()
    name, room, rules = _moderated_room(client, words)
    if not words:
        raise UsageError()
    server = client.server
    target = server.find_client(words[0])
    if room is None or target is None or target not in room.members:
        raise CommandError(f"{words[0]} is not in {name}")
    if target is not client and _is_room_operator(target, rules) and not is_operator(client):
        raise CommandError(f"{target.nick} is an operator of {room.name}; /deop them first")
    why = _reason(words[1:]) or "no reason given"
    log.info("%s kicked %s from %s: %s (by %s from %s)", client.nick, target.nick, name, why,
             client.nick, client.address)
    target.notice(f"you were kicked from {room.name} by {client.nick}: {why}")
    _kick(server, room, target, f"kicked by {client.nick}: {why}")


def _role(client: Client, rules: RoomRules) -> str | None:
    """What makes ``client`` an operator of the room (``server``, ``founder`` or
    ``operator``); None if nothing does."""
    if is_operator(client):
        return "server"
    account = nick_key(client.account) if client.account is not None else None
    return _account_role(account, rules)


def _account_role(account: str | None, rules: RoomRules) -> str | None:
    if account is None or not rules.registered:
        return None
    if account == rules.founder:
        return "founder"
    if account in rules.operators:
        return "operator"
    return None


def _operators_are_not(subject: str, role: str | None, rules: RoomRules,
                       noun: str) -> CommandError:
    """The refusal of a ban or mute that would fall on an operator (as /kick's)."""
    if role == "server":
        return CommandError(f"{subject} is a server operator; server operators cannot be "
                            f"{noun}")
    if role == "founder":
        return CommandError(f"{subject} is the founder of {rules.name}; a founder cannot be "
                            f"{noun}")
    return CommandError(f"{subject} is an operator of {rules.name}; /deop them first")


def _spare_operators(server: Server, rules: RoomRules, who: Who, noun: str) -> list[str]:
    """What ``who``'s masks may be, given that operators are never banned or muted.

    Naming an operator, or a mask that matches one who is connected or names an
    operator's account, is refused (raises CommandError with the reason).  The
    address mask that stands for a person (``/ban NICK``) is left out if an
    operator is connected from that address too: the ban is by nick and account
    then, and the caller says so.
    """
    if who.client is not None:
        role = _role(who.client, rules)
        if role is not None:
            raise _operators_are_not(who.client.nick, role, rules, noun)
    operators = [c for c in server.clients.values()
                 if c is not who.client and _role(c, rules) is not None]
    kept: list[str] = []
    for text in who.masks:
        mask = Mask(text)
        sharing = next((c for c in operators if mask.covers(Identity.of(c))), None)
        if sharing is not None and who.target and mask.nick == "*" and mask.account == "*":
            continue  # the person's address, shared with an operator: not by address
        if sharing is not None:
            raise _operators_are_not(f"{text} matches {sharing.nick}, who",
                                     _role(sharing, rules), rules, noun)
        for account in (rules.founder, *sorted(rules.operators)):
            if account is not None and mask.covers_account(account):
                raise _operators_are_not(f"{text} names {account}, who",
                                         _account_role(account, rules), rules, noun)
        kept.append(text)
    if not kept:  # their only mask was an address an operator shares: by nick, then
        kept.append(_as_mask(f"{who.target}!*@*"))
    return kept


def _set_entry(client: Client, args: str, kind: str) -> None:
    words = args.split()
    name, room, rules = _moderated_room(client, words)
    if not words:
        raise UsageError()
    server = client.server
    who = _who(server, words.pop(0))
    seconds = _duration(words)
    reason = _reason(words)
    noun = "banned" if kind == "ban" else "muted"
    masks = _spare_operators(server, rules, who, noun)
    entries = rules.entries(kind)
    added = sum(1 for text in masks if text.lower() not in entries)
    if len(rules.bans) + len(rules.mutes) + added > ENTRIES_PER_ROOM:
        raise CommandError(f"{name} has {ENTRIES_PER_ROOM} bans and mutes, the most "
                           "a room may; lift some first")
    now = time.time()
    expires = None if seconds is None else now + seconds
    made = [Entry(text, client.nick, reason, now, expires, who.target) for text in masks]
    for entry in made:
        entries[entry.parsed.key] = entry
        _save_entry(server, rules, kind, entry, entry.parsed.key)
    why = f": {reason}" if reason else ""
    subject = who.client.nick if who.client is not None else who.target or masks[0]
    _announce(client, room, f"{client.nick} {noun} {subject} in {name}{_how_long(seconds)}{why}")
    left_out = masks != who.masks
    if who.target and (left_out or masks != [f"{who.target}!*@*"]):
        # What the nick stood for (an address among it) is for the operator's eyes only.
        why_not = " (not by address: an operator is connected from it too)" if left_out else ""
        client.notice(f"{subject} is {noun} in {name} as {', '.join(masks)}{why_not}")
    if kind == "ban" and room is not None:
        for member in list(room.members):
            identity = Identity.of(member)
            if any(e.covers(identity) for e in made) and _role(member, rules) is None:
                member.notice(f"you are banned from {name}{why}")
                _kick(server, room, member, f"banned by {client.nick}{why}")


def _lift_entry(client: Client, args: str, kind: str) -> None:
    """``/unban WHO``: a mask lifts that mask; a nick lifts every mask ``/ban NICK`` set
    (and, for entries set otherwise, the masks ``/ban NICK`` would set now)."""
    words = args.split()
    name, room, rules = _moderated_room(client, words)
    if len(words) != 1:
        raise UsageError()
    server = client.server
    entries = rules.entries(kind)
    arg = words[0]
    if "!" in arg or "@" in arg:
        subject = _as_mask(arg)
        keys = [subject.lower()] if subject.lower() in entries else []
    else:
        subject = arg
        keys = [k for k, e in entries.items() if e.target and same_name(e.target, arg)]
        if not keys:
            keys = [text.lower() for text in _who(server, arg).masks if text.lower() in entries]
    if not keys:
        listed = "bans" if kind == "ban" else "mutes"
        raise CommandError(f"no such {kind} in {name}: {subject} (/bans lists its {listed})")
    lifted = [entries.pop(key) for key in keys]
    for key in keys:
        _save_entry(server, rules, kind, None, key)
    verb = "unbanned" if kind == "ban" else "unmuted"
    _announce(client, room, f"{client.nick} {verb} {subject} in {name}")
    if len(lifted) > 1 or lifted[0].mask != subject:
        client.notice(f"lifted: {', '.join(e.mask for e in lifted)}")


def cmd_ban(client: Client, args: str) -> None:
    _set_entry(client, args, "ban")


def cmd_unban(client: Client, args: str) -> None:
    _lift_entry(client, args, "ban")


def cmd_mute(client: Client, args: str) -> None:
    _set_entry(client, args, "mute")


def cmd_unmute(client: Client, args: str) -> None:
    _lift_entry(client, args, "mute")


def cmd_bans(client: Client, args: str) -> None:
    """The active bans and mutes, one line per mask or per nick they were set for; the
    masks of a nick (an address among them) are shown to the room's operators only."""
    server = client.server
    words = args.split()
    room = client.room if not words else server.rooms.get(words[0])
    name = room.name if room is not None else (words[0] if words else "")
    if not name:
        raise CommandError("you are not in a room; name one: #room")
    rules = _rules(server, name)
    now = time.time()
    operator = _is_room_operator(client, rules)
    shown = 0
    for kind, entries in (("ban", rules.bans if rules else {}),
                          ("mute", rules.mutes if rules else {})):
        groups: dict[str, list[Entry]] = {}
        for entry in sorted(entries.values(), key=lambda e: e.set_at):
            if entry.active(now):
                groups.setdefault(nick_key(entry.target) or entry.parsed.key, []).append(entry)
        for group in groups.values():
            first = group[0]
            subject = first.target or first.mask
            if first.target and operator:
                subject += f" ({', '.join(e.mask for e in group)})"
            why = f": {first.reason}" if first.reason else ""
            client.notice(f"{kind} {subject} by {first.set_by}, {first.until()}{why}")
            shown += 1
    if not shown:
        client.notice(f"no bans or mutes in {name}")


def cmd_op(client: Client, args: str) -> None:
    _set_operator(client, args, add=True)


def cmd_deop(client: Client, args: str) -> None:
    _set_operator(client, args, add=False)


def _set_operator(client: Client, args: str, *, add: bool) -> None:
    words = args.split()
    server = client.server
    name, room, rules = _moderated_room(client, words)
    if len(words) != 1:
        raise UsageError()
    if not rules.registered:
        raise CommandError(f"{name} is not registered: /register {name} first")
    if not _is_founder(client, rules):
        raise CommandError(f"permission denied: only the founder of {name} names "
                           "its operators")
    account = _account_of(server, words[0])
    if add and account == rules.founder:
        raise CommandError(f"{words[0]} is the founder of {name}")
    if add == (account in rules.operators):
        state = "already" if add else "not"
        raise CommandError(f"{words[0]} is {state} an operator of {name}")
    if add:
        rules.operators.add(account)
        server.store.write("INSERT OR REPLACE INTO room_operators (room, account, added_by) "
                           "VALUES (?, ?, ?)", (rules.key, account, client.nick))
    else:
        rules.operators.discard(account)
        server.store.write("DELETE FROM room_operators WHERE room = ? AND account = ?",
                           (rules.key, account))
    verb = "made" if add else "removed"
    role = "an operator of" if add else "as an operator of"
    _announce(client, room, f"{client.nick} {verb} {account} {role} {name}")


def _account_of(server: Server, who: str) -> str:
    """The account a nick stands for: a connected client's account, or a registered nick."""
    target = server.find_client(who)
    if target is not None:
        if target.account is None:
            raise CommandError(f"{target.nick} is not identified: room operators are "
                               "registered nicks")
        return nick_key(target.account)
    try:
        account = find_account(server, who)
    except (StoreUnavailable, CommandError) as exc:
        raise CommandError(f"cannot look up {who} right now ({exc})") from None
    if account is None:
        raise CommandError(f"{who} is not a registered nick")
    return nick_key(account[0])


def cmd_invite(client: Client, args: str) -> None:
    words = args.split()
    if not words:
        raise UsageError()
    nick = words.pop(0)
    name, room, rules = _moderated_room(client, words)
    if words:
        raise UsageError()
    target = client.server.find_client(nick)
    if target is None:
        raise CommandError(f"no such nick: {nick}")
    if room is not None and target in room.members:
        raise CommandError(f"{target.nick} is already in {name}")
    rules.invited[target.id] = time.monotonic() + INVITE_SECONDS
    target.notice(f"{client.nick} invites you to {name}: /join {name}")
    _announce(client, room, f"{client.nick} invited {target.nick} to {name}")


def cmd_roomset(client: Client, args: str) -> None:
    words = args.split()
    server = client.server
    if len(words) <= 1 and (not words or words[0].startswith("#")):
        _show_rules(client, words)
        return
    name, room, rules = _moderated_room(client, words)
    if len(words) != 2 or words[0] not in _SETTINGS or words[1] not in ("on", "off"):
        raise UsageError(f"settings: {', '.join(_SETTINGS)}; values: on, off")
    setting, on = words[0], words[1] == "on"
    setattr(rules, _SETTINGS[setting], on)
    _save_room(server, rules)
    _announce(client, room, f"{client.nick} set {setting} {words[1]} in {name}")


def _show_rules(client: Client, words: list[str]) -> None:
    server = client.server
    name = words[0] if words else client.room.name if client.room is not None else ""
    if not name:
        raise CommandError("you are not in a room; name one: #room")
    rules = _rules(server, name)
    if rules is None or not rules.registered:
        client.notice(f"{name} is not registered")
    else:
        operators = ", ".join(sorted(rules.operators)) or "none"
        client.notice(f"{rules.name}: founder {rules.founder}; operators: {operators}")
    if rules is not None:
        settings = ", ".join(f"{setting} {'on' if getattr(rules, attr) else 'off'}"
                             for setting, attr in _SETTINGS.items())
        client.notice(f"{rules.name}: {settings}")


# -- enforcement ----------------------------------------------------------------------------


@hookimpl
def chatd_check_join(client: Client, name: str, room: Room | None) -> str | None:
    state: ModerationState | None = client.server.stash.get(STATE)
    if state is None:
        return None
    if room is None:  # a new room: not beside a registered one it would pass for
        twin = _registered_look_alike(state, name)
        if twin is not None:
            return (f"{name} looks like {twin}, a registered room: join {twin}, or choose "
                    "a name that reads differently")
    rules = state.rooms.get(room_key(name))
    if rules is None or _is_room_operator(client, rules):
        return None  # operators are never banned (a ban naming one is refused)
    ban = _matching(rules.bans, client, time.time())
    if ban is not None:
        why = f": {ban.reason}" if ban.reason else ""
        return f"you are banned from {rules.name} ({ban.until()}){why}"
    if rules.invite_only:
        invited = rules.invited.pop(client.id, None)
        if invited is None or invited < time.monotonic():
            return (f"{rules.name} is invite-only: ask one of its operators to /invite you "
                    "(/roomset shows who they are)")
    return None


def _muted(client: Client, rules: RoomRules) -> bool:
    return (bool(rules.mutes) and not _is_room_operator(client, rules)
            and _matching(rules.mutes, client, time.time()) is not None)


@hookimpl
def chatd_filter_message(client: Client, event: Event) -> None:
    """A mute silences every kind of speech in the room: messages, actions, the topic
    (a locked one too), and the reason of a part or a quit (which still happen,
    without it: the server drops a rejected reason)."""
    state: ModerationState | None = client.server.stash.get(STATE)
    if state is None or not state.rooms:
        return  # the common case, once per line: nothing is moderated
    kind = event.kind
    if kind == "quit":
        names: tuple[str, ...] = getattr(event, "rooms", ())
    elif event.target.startswith("#"):
        names = (event.target,)
    else:
        return  # a private message: not said in a room
    for name in names:
        rules = state.rooms.get(room_key(name))
        if rules is None:
            continue
        if kind == "topic" and rules.topic_lock and not _is_room_operator(client, rules):
            raise Reject(f"the topic of {rules.name} is locked: its operators set it")
        if _muted(client, rules):
            if kind in ("part", "quit"):
                raise Reject(f"you are muted in {rules.name}")
            raise Reject(f"you are muted in {rules.name}; your line was not sent")


@hookimpl
def chatd_check_speak(client: Client, room: Room) -> str | None:
    """A plugin's command posting to a room for a muted client (``/roll``) is speech too."""
    state: ModerationState | None = client.server.stash.get(STATE)
    rules = state.rooms.get(room_key(room.name)) if state is not None else None
    if rules is not None and _muted(client, rules):
        return f"you are muted in {rules.name}"
    return None


@hookimpl
def chatd_message(client: Client, event: Event) -> None:
    if event.kind != "topic":
        return
    state: ModerationState | None = client.server.stash.get(STATE)
    rules = state.rooms.get(room_key(event.target)) if state is not None else None
    if rules is not None and rules.registered:
        rules.topic = event.text
        _save_room(client.server, rules)


@hookimpl
def chatd_room_created(server: Server, room: Room) -> None:
    state: ModerationState | None = server.stash.get(STATE)
    rules = state.rooms.get(room_key(room.name)) if state is not None else None
    if rules is not None and rules.topic:
        room.topic = rules.topic  # a registered room keeps its topic while empty


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


def _recheck(client: Client) -> None:
    """After a nick change or an identification: leave the rooms whose bans now match."""
    server = client.server
    state: ModerationState | None = server.stash.get(STATE)
    if state is None or not state.rooms:
        return
    now = time.time()
    for room in list(client.rooms):
        rules = state.rooms.get(room_key(room.name))
        if rules is None or _is_room_operator(client, rules):
            continue
        ban = _matching(rules.bans, client, now)
        if ban is not None:
            client.notice(f"you are banned from {room.name} ({ban.until()})")
            _kick(server, room, client, "banned")


@hookimpl
def chatd_nick_change(client: Client) -> None:
    _recheck(client)


@hookimpl
def chatd_account_change(client: Client) -> None:
    _recheck(client)


@hookimpl
def chatd_commands() -> list[Command]:
    room = "[#room]"
    return [
        Command("kick", cmd_kick, f"/kick {room} NICK [reason]",
                "(room operators) put someone out of a room",
                "They can come back (unless banned). Server-wide: /kill (server operators)."),
        Command("ban", cmd_ban, f"/ban {room} WHO [TIME] [reason]",
                "(room operators) keep someone out of a room",
                "WHO: a nick (their account if identified, else their address) or a\n"
                "mask nick!account@address with * and ?. TIME: 30s, 10m, 2h, 7d, 1w\n"
                "(none: until /unban). Members it matches are put out."),
        Command("unban", cmd_unban, f"/unban {room} WHO", "(room operators) lift a ban"),
        Command("mute", cmd_mute, f"/mute {room} WHO [TIME] [reason]",
                "(room operators) let someone read a room but not speak in it",
                "WHO and TIME as for /ban."),
        Command("unmute", cmd_unmute, f"/unmute {room} WHO", "(room operators) lift a mute"),
        Command("bans", cmd_bans, f"/bans {room}", "list a room's bans and mutes"),
        Command("op", cmd_op, f"/op {room} NICK",
                "(room founders) make a registered nick an operator of the room"),
        Command("deop", cmd_deop, f"/deop {room} NICK",
                "(room founders) take a room operator's powers away"),
        Command("invite", cmd_invite, "/invite NICK [#room]",
                "(room operators) let someone into an invite-only room",
                "The invite is good for one join within an hour."),
        Command("roomset", cmd_roomset, f"/roomset {room} [topic-lock|invite-only on|off]",
                "show a room's founder, operators and settings, or change a setting",
                "topic-lock on: only the room's operators set its topic.\n"
                "invite-only on: only its operators and those they /invite may join."),
    ]
