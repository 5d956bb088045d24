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
* **WHO** is a nick (of someone connected: their account if identified, else
  their address; of nobody connected: the nick) or a mask
  ``nick!account@address`` with ``*`` and ``?`` (``*!*@203.0.113.*``,
  ``*!alice@*``).  **TIME** is ``30s``, ``10m``, ``2h``, ``7d`` or ``1w``;
  without it the ban or mute lasts until ``/unban``/``/unmute``.
* A ban keeps a client out (a join is refused, saying until when) and removes
  matching members; a mute lets a member read but not speak in the room; an
  invite-only room lets in its operators and whoever they invited (once,
  within an hour); a locked topic is changed by operators only.  Bans and
  mutes are checked again when someone changes nick or identifies.

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
from chatd.chat.rooms import room_key

from .accounts import ROOM_REGISTRAR, find_account
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
]

#: Rooms one account may found.
ROOMS_PER_FOUNDER = 10
#: Bans plus mutes one room may hold.
ENTRIES_PER_ROOM = 200
INVITE_SECONDS = 3600.0
REASON_MAX = 200
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d{1,6})([smhdw])\Z")
_SETTINGS = {"topic-lock": "topic_lock", "invite-only": "invite_only"}

STATE: StashKey[ModerationState] = StashKey()


@dataclass
class Entry:
    """A ban or a mute: who (a mask), by whom, why, until when (None: until lifted)."""

    mask: str
    set_by: str
    reason: str
    set_at: float
    expires: float | None
    pattern: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.pattern = _compiled(self.mask)

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
        #: False until the registered rooms were read from the store.
        self.loaded = False
        self.retry: Any = None


# -- masks ----------------------------------------------------------------------------------


def _compiled(mask: str) -> re.Pattern[str]:
    parts = (".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in mask)
    return re.compile("".join(parts) + r"\Z")


def identity(client: Client) -> str:
    """What masks are matched against: ``nick!account@address``, lowercase."""
    return f"{nick_key(client.nick)}!{nick_key(client.account or '')}@{client.address}"


def _mask_for(server: Server, who: str) -> str:
    """The mask a command's WHO argument stands for (see the module docstring)."""
    if "!" in who or "@" in who:
        nick, _, rest = who.partition("!") if "!" in who else ("*", "", who)
        account, _, address = rest.partition("@") if "@" in rest else (rest, "", "*")
        mask = f"{nick or '*'}!{account or '*'}@{address or '*'}".lower()
        if mask.count("!") != 1 or mask.count("@") != 1 or any(c.isspace() for c in mask):
            raise CommandError(f"not a mask: {who} (nick!account@address, with * and ?)")
        return mask
    target = server.find_client(who)
    if target is not None:
        if target.account is not None:
            return f"*!{nick_key(target.account)}@*"
        return f"*!*@{target.address}"
    if nick_problem(who) is not None and not who.lower().startswith("guest-"):
        raise CommandError(f"not a nick or a mask: {who}")
    return f"{nick_key(who)}!*@*"


def _matching(entries: dict[str, Entry], client: Client, now: float) -> Entry | None:
    who = identity(client)
    for entry in entries.values():
        if entry.active(now) and entry.pattern.match(who):
            return entry
    return None


# -- who may do what -------------------------------------------------------------------------


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
            for kind, mask, set_by, reason, set_at, expires in store.read(
                "SELECT kind, mask, set_by, reason, set_at, expires FROM room_bans "
                "WHERE room = ? LIMIT ?", (key, ENTRIES_PER_ROOM),
            ):
                rules.entries(kind)[mask] = Entry(mask, set_by, reason, set_at, expires)
    except StoreUnavailable as exc:
        log.error("could not read the registered rooms (%s); bans and room operators are not "
                  "in force until they are read (retrying in 5 s)", exc)
        state.retry = server.call_later(5.0, _load, server)
        return
    state.rooms.update(rooms)
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
                mask: str) -> None:
    if not rules.registered:
        return
    if entry is None:
        server.store.write("DELETE FROM room_bans WHERE room = ? AND kind = ? AND mask = ?",
                           (rules.key, kind, mask))
        return
    server.store.write(
        "INSERT OR REPLACE INTO room_bans (room, kind, mask, set_by, reason, set_at, expires) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (rules.key, kind, mask, entry.set_by, entry.reason, entry.set_at, entry.expires),
    )


# -- startup --------------------------------------------------------------------------------


@hookimpl
def chatd_startup(server: Server) -> None:
    server.store.migrate("moderation", SCHEMA)
    previous: ModerationState | None = server.stash.get(STATE)
    state = ModerationState()
    if previous is not None:  # a reload: what is in memory (unregistered rooms too) stays
        state.rooms = previous.rooms
    server.stash[STATE] = state
    server.stash[ROOM_REGISTRAR] = (register_room, drop_room)
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
    if rules is None:
        rules = state.rooms[room_key(room.name)] = RoomRules(room.name)
    rules.founder = founder
    rules.topic = room.topic or ""
    server.store.write(
        "INSERT OR REPLACE INTO rooms (key, name, founder, topic, topic_lock, invite_only, "
        "registered) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (rules.key, room.name, founder, rules.topic, int(rules.topic_lock),
         int(rules.invite_only), time.time()),
    )
    for kind in ("ban", "mute"):  # set while it was unregistered: kept from now on
        for mask, entry in rules.entries(kind).items():
            _save_entry(server, rules, kind, entry, mask)
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
    """A leading TIME word taken off ``words``, in seconds (None: there is none)."""
    if words:
        found = _DURATION.match(words[0].lower())
        if found:
            words.pop(0)
            seconds = int(found.group(1)) * _UNITS[found.group(2)]
            if seconds <= 0:
                raise CommandError("a time is 1s or more")
            return float(seconds)
    return None


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


def _set_entry(client: Client, args: str, kind: str) -> None:
    words = args.split()
    name, room, rules = _moderated_room(client, words)
    if not words:
        raise UsageError()
    server = client.server
    mask = _mask_for(server, words.pop(0))
    seconds = _duration(words)
    reason = _reason(words)
    now = time.time()
    entries = rules.entries(kind)
    if mask not in entries and len(rules.bans) + len(rules.mutes) >= ENTRIES_PER_ROOM:
        raise CommandError(f"{name} has {ENTRIES_PER_ROOM} bans and mutes, the most "
                           "a room may; lift some first")
    entry = Entry(mask, client.nick, reason, now, None if seconds is None else now + seconds)
    entries[mask] = entry
    _save_entry(server, rules, kind, entry, mask)
    verb = "banned" if kind == "ban" else "muted"
    why = f": {reason}" if reason else ""
    _announce(client, room, f"{client.nick} {verb} {mask} in {name}{_how_long(seconds)}{why}")
    if kind == "ban" and room is not None:
        for member in list(room.members):
            if entry.pattern.match(identity(member)) and not _is_room_operator(member, rules):
                member.notice(f"you are banned from {name}{why}")
                _kick(server, room, member, f"banned by {client.nick}{why}")


def _lift_entry(client: Client, args: str, kind: str) -> None:
    words = args.split()
    name, room, rules = _moderated_room(client, words)
    if len(words) != 1:
        raise UsageError()
    server = client.server
    entries = rules.entries(kind)
    mask = words[0].lower() if words[0].lower() in entries else _mask_for(server, words[0])
    if mask not in entries:
        listed = "bans" if kind == "ban" else "mutes"
        raise CommandError(f"no such {kind} in {name}: {mask} (/bans lists its {listed})")
    del entries[mask]
    _save_entry(server, rules, kind, None, mask)
    verb = "unbanned" if kind == "ban" else "unmuted"
    _announce(client, room, f"{client.nick} {verb} {mask} in {name}")


def cmd_ban(client: Client, args: str) -> None:
    _set_entry(client, args, "ban")


def cmd_unban(client: Client, args: str) -> None:
    _lift_entry(client, args, "ban")


def cmd_mute(client: Client, args: str) -> None:
    _set_entry(client, args, "mute")


def cmd_unmute(client: Client, args: str) -> None:
    _lift_entry(client, args, "mute")


def cmd_bans(client: Client, args: str) -> None:
    server = client.server
    words = args.split()
    room = client.room if not words else server.rooms.get(words[0])
    name = room.name if room is not None else (words[0] if words else "")
    if not name:
        raise CommandError("you are not in a room; name one: #room")
    rules = _rules(server, name)
    now = time.time()
    shown = 0
    for kind, entries in (("ban", rules.bans if rules else {}),
                          ("mute", rules.mutes if rules else {})):
        for entry in sorted(entries.values(), key=lambda e: e.set_at):
            if entry.active(now):
                why = f": {entry.reason}" if entry.reason else ""
                client.notice(f"{kind} {entry.mask} by {entry.set_by}, {entry.until()}{why}")
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
def chatd_check_join(client: Client, name: str) -> str | None:
    state: ModerationState | None = client.server.stash.get(STATE)
    if state is None:
        return None
    rules = state.rooms.get(room_key(name))
    if rules is None or is_operator(client):
        return None
    ban = _matching(rules.bans, client, time.time())
    if ban is not None:
        why = f": {ban.reason}" if ban.reason else ""
        return f"you are banned from {rules.name} ({ban.until()}){why}"
    if rules.invite_only and not _is_room_operator(client, rules):
        invited = rules.invited.pop(client.id, None)
        if invited is None or invited < time.monotonic():
            return (f"{rules.name} is invite-only: ask one of its operators to /invite you "
                    "(/roomset shows who they are)")
    return None


@hookimpl
def chatd_filter_message(client: Client, event: Event) -> None:
    state: ModerationState | None = client.server.stash.get(STATE)
    if state is None or not state.rooms:
        return  # the common case, once per line: nothing is moderated
    target = event.target
    if not target.startswith("#"):
        return
    rules = state.rooms.get(room_key(target))
    if rules is None:
        return
    kind = event.kind
    if kind == "topic":
        if not rules.topic_lock and not rules.mutes:
            return
    elif kind != "message" and kind != "action":
        return  # a part or quit reason: the client is leaving anyway
    elif not rules.mutes:
        return
    if _is_room_operator(client, rules):
        return
    if kind == "topic" and rules.topic_lock:
        raise Reject(f"the topic of {rules.name} is locked: its operators set it")
    if _matching(rules.mutes, client, time.time()) is not None:
        raise Reject(f"you are muted in {rules.name}; your line was not sent")


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
