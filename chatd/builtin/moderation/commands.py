"""Moderation's commands: the ones that change a room's rules, and those that show them.

``/kick``, ``/ban``, ``/unban``, ``/mute``, ``/unmute``, ``/bans``, ``/op``,
``/deop``, ``/invite``, ``/roomset``; and the registration of rooms, whose
``/register #room`` and ``/drop #room`` belong to the *accounts* plugin, which
calls :func:`register_room` and :func:`drop_room` (through the registrar in
``server.stash``).  Each command parses its words (a room first, or the
current one; WHO, a nick or a mask; a TIME), checks that the caller may
(:mod:`.enforcement`), changes the rules in memory and writes them
(:mod:`.store`), then tells the room and the log (``chatd.moderation``).
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chatd import (
    Client,
    Command,
    CommandError,
    Person,
    Room,
    Server,
    UsageError,
    hookimpl,
)
from chatd.chat.nicks import nick_key, nick_problem
from chatd.chat.rooms import room_key, room_problem
from chatd.events import ModeItem
from chatd.replies import BanEntry, BanList, RoomModes
from chatd.templates import how_long

from ..accounts import STATE as ACCOUNTS
from ..accounts import Account, ask_like, pick
from ..masks import Identity, Mask, MaskError, same_name
from ..oper import is_operator
from .enforcement import account_role, is_founder, is_room_operator, kick, put_out, role_of
from .store import (
    ENTRIES_PER_ROOM,
    ROOMS_PER_FOUNDER,
    Entry,
    RoomRules,
    index,
    invitee,
    publish_operators,
    registered_look_alike,
    rules_for,
    save_entry,
    save_room,
    state_of,
    unregister,
    write,
)

log = logging.getLogger("chatd.moderation")

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


# -- what a command names -----------------------------------------------------------------------


@dataclass
class Who:
    """What a command's WHO argument stands for: the masks, the nick they were set for
    ("" for a mask given as such), the client of that nick if connected to this
    process, and the account of whoever has the nick (on any node) if identified."""

    masks: list[str]
    target: str = ""
    client: Client | None = None
    account: str | None = None


def _as_mask(who: str) -> str:
    """``who`` (a mask, perhaps with parts left out) as a whole ``nick!account@address``."""
    nick, _, rest = who.partition("!") if "!" in who else ("*", "", who)
    account, _, address = rest.partition("@") if "@" in rest else (rest, "", "*")
    text = f"{nick or '*'}!{account or '*'}@{address or '*'}"
    try:
        return Mask(text).text
    except MaskError as exc:
        raise CommandError(str(exc), code="bad_argument") from None


def _is_mask(who: str) -> bool:
    return "!" in who or "@" in who


def _ask_who(client: Client, who: str, person: Person | None,
             then: Callable[[Who], Any]) -> None:
    """``then(what WHO stands for)`` (see the module docstring); ``person``: whoever has
    the nick ``who`` now, on any node (the presence answer of ``server.ask_whois``), if
    anyone.  A nick nobody has stands for itself and its account if registered, read
    off the loop (the client's later lines wait); otherwise ``then`` runs at once."""
    server = client.server
    if _is_mask(who):
        then(Who([_as_mask(who)]))
        return
    if person is not None:
        masks = [f"*!*@{person.address}"]
        if person.account is not None:
            masks.insert(0, f"*!{nick_key(person.account)}@*")
        then(Who(masks, person.nick, server.client_of(person), person.account))
        return
    if nick_problem(who) is not None and not who.lower().startswith("guest-"):
        raise CommandError(f"not a nick or a mask: {who}", code="bad_argument")
    masks = [_as_mask(f"{who}!*@*")]

    def registered(account: str | None) -> None:
        then(Who(masks if account is None else [*masks, f"*!{account}@*"], who))

    _ask_registered(client, who, registered)


def _ask_registered(client: Client, nick: str, then: Callable[[str | None], Any]) -> None:
    """``then(the account (a nick's key) registered for nick, or None)`` (None also when
    this server has no accounts), read off the loop (the client's later lines wait);
    a database that cannot answer is the client's error, and nothing is done."""
    server = client.server
    if server.stash.get(ACCOUNTS) is None:  # no accounts on this server: none is registered
        then(None)
        return

    def answered(matches: list[Account] | None, error: str | None) -> None:
        if matches is None:
            client.error(f"cannot look up {nick} right now ({error}); try again soon",
                         code="unavailable")
            return
        account = pick(nick, matches)
        try:
            then(None if account is None else nick_key(account[0]))
        except CommandError as exc:  # told here: see accounts' ask_accounts_like
            client.error(str(exc), code=exc.code)

    ask_like(server, client, nick, answered)


def _moderated_room(client: Client, words: list[str]) -> tuple[str, Room | None, RoomRules]:
    """The room a command names first (or the current room): its name, the room (None
    for a registered room nobody is in) and its rules.  The caller must be allowed
    to moderate it.  Takes the room's name off ``words``."""
    server = client.server
    if words and words[0].startswith("#"):
        name = words.pop(0)
        room = server.rooms.get(name)
        if room is None and rules_for(server, name) is None:
            raise CommandError(f"no such room: {name}", code="no_such_room")
    elif client.room is not None:
        room = client.room
    else:
        raise CommandError("you are not in a room; name one: #room", code="not_in_room")
    if room is not None:
        name = room.name
    rules = rules_for(server, name)
    if not is_room_operator(client, rules):
        raise CommandError(f"permission denied: you are not an operator of {name}",
                           code="not_operator")
    if rules is None:
        rules = rules_for(server, name, create=True)
        assert rules is not None
    return rules.name, room, rules


def _shown(client: Client, masks: list[str]) -> list[str]:
    """The masks a nick stood for, as ``client`` may read them: the address the nick
    connected from is for server operators; a room's operator (any founder) reads its
    cloak, as in the nick's ``user`` (``server.cloak_addresses``), so banning a nick
    never tells who bans it where that nick is.  The entries keep the address (they
    match it)."""
    server = client.server
    if is_operator(client) or not server.cloaks_addresses:
        return masks
    shown = []
    for mask in masks:
        head, at, address = mask.rpartition("@")
        if at and address != "*" and not any(c in address for c in "*?/"):
            mask = f"{head}@{server.shown_host(address)}"
        shown.append(mask)
    return shown


def _announce(client: Client, room: Room | None, text: str) -> None:
    """Tell the room (or, if nobody is in it, the one who did it) and log it."""
    log.info("%s (by %s from %s)", text, client.nick, client.address)
    if room is not None and room.members:
        room.say(text)
        if client not in room.members:
            client.notice(text)
    else:
        client.notice(text)


def _changed(client: Client, name: str, item: ModeItem, logged: str, reason: str = "",
             seconds: float | None = None) -> None:
    """Tell the room ``name`` (and the one who did it) that its rules changed: a
    ``ModeChange`` through the facade, which every protocol words its own way (the
    line protocol as this plugin always did); and log ``logged``, the operator's
    record in words."""
    log.info("%s (by %s from %s)", logged, client.nick, client.address)
    client.server.mode_changed(client, name, (item,), reason=reason, seconds=seconds)


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
                           "1h30m; a reason cannot start with a digit)", code="bad_argument")
    seconds = sum(int(number) * _UNITS[unit] for number, unit in _DURATION_PART.findall(word))
    if seconds <= 0:
        raise CommandError("a time is 1s or more", code="bad_argument")
    if seconds > DURATION_MAX:
        raise CommandError(f"a time is at most {DURATION_MAX // 604800}w; leave it out for "
                           "one that lasts until lifted", code="bad_argument")
    words.pop(0)
    return float(seconds)


# -- registration (the /register and /drop commands of *accounts* call these) ---------------


def register_room(client: Client, words: list[str]) -> None:
    """``/register #room``: the caller (identified, in the room) becomes its founder."""
    if len(words) != 1:
        raise UsageError("/register #room")
    server = client.server
    state = state_of(server)
    room = server.rooms.get(words[0])
    if room is None or room not in client.rooms:
        raise CommandError(f"join {words[0]} first: you register a room you are in",
                           code="not_in_room")
    if client.account is None:
        raise CommandError("identify first: a room is registered to your account",
                           code="not_identified")
    rules = state.rooms.get(room_key(room.name))
    if rules is not None and rules.registered:
        raise CommandError(f"{room.name} is already registered", code="already_registered")
    founder = nick_key(client.account)
    founded = sum(1 for r in state.rooms.values() if r.founder == founder)
    if founded >= ROOMS_PER_FOUNDER:
        raise CommandError(f"you have founded {founded} rooms, the most one account may",
                           code="limit")
    if room_key(room.name) == room_key(server.default_room):
        raise CommandError(f"{room.name} is the server's default room: its operators are "
                           "the server operators", code="not_allowed")
    twin = registered_look_alike(state, room.name)
    if twin is not None:
        raise CommandError(f"{room.name} looks like {twin}, a registered room: one of the "
                           "two names would pass for the other", code="look_alike")
    if rules is None:
        rules = state.rooms[room_key(room.name)] = RoomRules(room.name)
    rules.founder = founder
    rules.topic = room.topic or ""
    index(state, rules)
    publish_operators(server, rules)
    write(
        server, rules.key,
        "INSERT INTO rooms (key, name, founder, topic, topic_lock, invite_only, registered) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET name = excluded.name, "
        "founder = excluded.founder, topic = excluded.topic, topic_lock = excluded.topic_lock, "
        "invite_only = excluded.invite_only, registered = excluded.registered",
        (rules.key, room.name, founder, rules.topic, int(rules.topic_lock),
         int(rules.invite_only), time.time()),
    )
    for kind in ("ban", "mute"):  # set while it was unregistered: kept from now on
        for key, entry in rules.entries(kind).items():
            save_entry(server, rules, kind, entry, key)
    _announce(client, room, f"{room.name} is registered; its founder is {client.account}")


def drop_room(client: Client, words: list[str]) -> None:
    """``/drop #room``: the founder (or a server operator) unregisters it."""
    if len(words) != 1:
        raise UsageError("/drop #room")
    server = client.server
    state = state_of(server)
    rules = state.rooms.get(room_key(words[0]))
    if rules is None or not rules.registered:
        raise CommandError(f"{words[0]} is not registered", code="not_registered")
    if not is_founder(client, rules):
        raise CommandError(f"permission denied: only the founder of {rules.name} can drop it",
                           code="not_operator")
    unregister(server, state, rules)
    _announce(client, server.rooms.get(rules.name), f"{rules.name} is no longer registered")


# -- kicks, bans and mutes ----------------------------------------------------------------------


def cmd_kick(client: Client, args: str) -> None:
    words = args.split()
    name, room, rules = _moderated_room(client, words)
    if not words:
        raise UsageError()
    server = client.server
    server.ask_whois(client, words[0],
                     functools.partial(_kick_found, client, words, name, room, rules))


def _kick_found(client: Client, words: list[str], name: str, room: Room | None,
                rules: RoomRules, person: Person | None) -> None:
    """/kick's second half: who has the nick is known (now, or from another node)."""
    server = client.server
    target = server.client_of(person) if person is not None else None
    if person is not None and target is None and name in person.rooms:
        _kick_elsewhere(client, person, name, rules, words)
        return
    if room is None or target is None or target not in room.members:
        raise CommandError(f"{words[0]} is not in {name}", code="user_not_in_room")
    if target is not client and is_room_operator(target, rules) and not is_operator(client):
        raise CommandError(f"{target.nick} is an operator of {room.name}; /deop them first",
                           code="not_allowed")
    why = _reason(words[1:]) or "no reason given"
    log.info("%s kicked %s from %s: %s (by %s from %s)", client.nick, target.nick, name, why,
             client.nick, client.address)
    kick(server, room, target, client.nick, why)


def _kick_elsewhere(client: Client, person: Person, name: str, rules: RoomRules,
                    words: list[str]) -> None:
    """/kick of a user connected to another node of a cluster: the kicker's right was
    checked here (as for any kick), the target's role is known by its account (that it
    is a server operator on its own node is not known here), and its node is asked to
    put it out; everyone in the room sees the kick from there."""
    account = nick_key(person.account) if person.account is not None else None
    if account_role(account, rules) is not None and not is_operator(client):
        raise CommandError(f"{person.nick} is an operator of {name}; /deop them first",
                           code="not_allowed")
    why = _reason(words[1:]) or "no reason given"
    if not client.server.kick_elsewhere(client, person, name, why):
        raise CommandError(f"{person.nick} is connected to another node; a kick reaches "
                           "only users of this one", code="remote_user")
    log.info("%s kicked %s (on node %s) from %s: %s (by %s from %s)", client.nick,
             person.nick, person.node, name, why, client.nick, client.address)


def _operators_are_not(subject: str, role: str | None, rules: RoomRules,
                       noun: str) -> CommandError:
    """The refusal of a ban or mute that would fall on an operator (as /kick's)."""
    if role == "server":
        return CommandError(f"{subject} is a server operator; server operators cannot be "
                            f"{noun}", code="not_allowed")
    if role == "founder":
        return CommandError(f"{subject} is the founder of {rules.name}; a founder cannot be "
                            f"{noun}", code="not_allowed")
    return CommandError(f"{subject} is an operator of {rules.name}; /deop them first",
                        code="not_allowed")


def _spare_operators(server: Server, rules: RoomRules, who: Who, noun: str) -> list[str]:
    """What ``who``'s masks may be, given that operators are never banned or muted.

    Naming an operator, or a mask that matches one who is connected or names an
    operator's account, is refused (raises CommandError with the reason).  The
    address mask that stands for a person (``/ban NICK``) is left out if an
    operator is connected from that address too: the ban is by nick and account
    then, and the caller says so.
    """
    # A client of this process, by its roles; one of another node, by its account.
    role = role_of(who.client, rules) if who.client is not None else account_role(
        nick_key(who.account) if who.account is not None else None, rules)
    if role is not None:
        raise _operators_are_not(who.target, role, rules, noun)
    operators = [c for c in server.clients.values()
                 if c is not who.client and role_of(c, rules) is not None]
    kept: list[str] = []
    for text in who.masks:
        mask = Mask(text)
        sharing = next((c for c in operators if mask.covers(Identity.of(c))), None)
        if sharing is not None and who.target and mask.nick == "*" and mask.account == "*":
            continue  # the person's address, shared with an operator: not by address
        if sharing is not None:
            raise _operators_are_not(f"{text} matches {sharing.nick}, who",
                                     role_of(sharing, rules), rules, noun)
        for account in (rules.founder, *sorted(rules.operators)):
            if account is not None and mask.covers_account(account):
                raise _operators_are_not(f"{text} names {account}, who",
                                         account_role(account, rules), rules, noun)
        kept.append(text)
    if not kept:  # their only mask was an address an operator shares: by nick, then
        kept.append(_as_mask(f"{who.target}!*@*"))
    return kept


def _set_entry(client: Client, args: str, kind: str) -> None:
    words = args.split()
    name, room, rules = _moderated_room(client, words)
    if not words:
        raise UsageError()
    arg = words.pop(0)
    found = functools.partial(_set_entry_for, client, kind, name, room, rules, words, arg)
    if _is_mask(arg):
        found(None)
    else:  # a nick: whoever has it now, on any node, stands for its address and account
        client.server.ask_whois(client, arg, found)


def _set_entry_for(client: Client, kind: str, name: str, room: Room | None, rules: RoomRules,
                   words: list[str], arg: str, person: Person | None) -> None:
    """/ban and /mute, once it is known who has the nick (``person``) if one was named."""
    _ask_who(client, arg, person, functools.partial(_set_entry_as, client, kind, name, room,
                                                   rules, words))


def _set_entry_as(client: Client, kind: str, name: str, room: Room | None, rules: RoomRules,
                  words: list[str], who: Who) -> None:
    """/ban and /mute, once it is known what WHO stands for."""
    server = client.server
    seconds = _duration(words)
    reason = _reason(words)
    noun = "banned" if kind == "ban" else "muted"
    masks = _spare_operators(server, rules, who, noun)
    entries = rules.entries(kind)
    added = sum(1 for text in masks if text.lower() not in entries)
    if len(rules.bans) + len(rules.mutes) + added > ENTRIES_PER_ROOM:
        raise CommandError(f"{name} has {ENTRIES_PER_ROOM} bans and mutes, the most "
                           "a room may; lift some first", code="limit")
    now = time.time()
    expires = None if seconds is None else now + seconds
    made = [Entry(text, client.nick, reason, now, expires, who.target) for text in masks]
    for entry in made:
        entries[entry.parsed.key] = entry
        save_entry(server, rules, kind, entry, entry.parsed.key)
    why = f": {reason}" if reason else ""
    subject = who.target or masks[0]
    _changed(client, name, ModeItem(kind, True, subject),
             f"{client.nick} {noun} {subject} in {name}{how_long(seconds)}{why}", reason, seconds)
    left_out = masks != who.masks
    if who.target and (left_out or masks != [f"{who.target}!*@*"]):
        # What the nick stood for (an address among it) is for the operator's eyes only.
        why_not = " (not by address: an operator is connected from it too)" if left_out else ""
        shown = ", ".join(_shown(client, masks))
        client.notice(f"{subject} is {noun} in {name} as {shown}{why_not}")
    if kind == "ban" and room is not None:
        for member in list(room.members):
            identity = Identity.of(member)
            if any(e.covers(identity) for e in made) and role_of(member, rules) is None:
                member.notice(f"you are banned from {name}{why}")
                put_out(server, room, member, f"banned by {client.nick}{why}")


def _lift_entry(client: Client, args: str, kind: str) -> None:
    """``/unban WHO``: a mask lifts that mask; a nick lifts every mask ``/ban NICK`` set
    (and, for entries set otherwise, the masks ``/ban NICK`` would set now)."""
    words = args.split()
    name, room, rules = _moderated_room(client, words)
    if len(words) != 1:
        raise UsageError()
    entries = rules.entries(kind)
    arg = words[0]
    if _is_mask(arg):
        subject = _as_mask(arg)
        keys = [subject.lower()] if subject.lower() in entries else []
    else:
        subject = arg
        keys = [k for k, e in entries.items() if e.target and same_name(e.target, arg)]
        if not keys:  # the masks /ban NICK would set now: who has it, on any node?
            client.server.ask_whois(client, arg, functools.partial(
                _lift_masks_of, client, kind, name, room, rules, arg))
            return
    _lift(client, kind, name, room, rules, subject, keys)


def _lift_masks_of(client: Client, kind: str, name: str, room: Room | None,
                   rules: RoomRules, arg: str, person: Person | None) -> None:
    """/unban NICK with no entry set for the nick: lift the masks it stands for now."""
    entries = rules.entries(kind)

    def lift(who: Who) -> None:
        keys = [text.lower() for text in who.masks if text.lower() in entries]
        _lift(client, kind, name, room, rules, arg, keys)

    _ask_who(client, arg, person, lift)

def _lift(client: Client, kind: str, name: str, room: Room | None, rules: RoomRules,
          subject: str, keys: list[str]) -> None:
    server = client.server
    entries = rules.entries(kind)
    if not keys:
        listed = "bans" if kind == "ban" else "mutes"
        raise CommandError(f"no such {kind} in {name}: {subject} (/bans lists its {listed})",
                           code="not_found")
    lifted = [entries.pop(key) for key in keys]
    for key in keys:
        save_entry(server, rules, kind, None, key)
    verb = "unbanned" if kind == "ban" else "unmuted"
    _changed(client, name, ModeItem(kind, False, subject),
             f"{client.nick} {verb} {subject} in {name}")
    if len(lifted) > 1 or lifted[0].mask != subject:
        client.notice(f"lifted: {', '.join(_shown(client, [e.mask for e in lifted]))}")


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
        raise CommandError("you are not in a room; name one: #room", code="not_in_room")
    rules = rules_for(server, name)
    now = time.time()
    operator = is_room_operator(client, rules)
    listed: list[BanEntry] = []
    for kind, entries in (("ban", rules.bans if rules else {}),
                          ("mute", rules.mutes if rules else {})):
        groups: dict[str, list[Entry]] = {}
        for entry in sorted(entries.values(), key=lambda e: e.set_at):
            if entry.active(now):
                groups.setdefault(nick_key(entry.target) or entry.parsed.key, []).append(entry)
        for group in groups.values():
            first = group[0]
            masks = tuple(_shown(client, [e.mask for e in group])) \
                if first.target and operator else ()
            listed.append(BanEntry(kind, first.target or first.mask, first.set_by,
                                   first.expires, first.reason, masks))
    client.reply(BanList, room=name, entries=tuple(listed))


# -- operators, invites, settings -----------------------------------------------------------


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
        raise CommandError(f"{name} is not registered: /register {name} first",
                           code="not_registered")
    if not is_founder(client, rules):
        raise CommandError(f"permission denied: only the founder of {name} names "
                           "its operators", code="not_operator")
    server.ask_whois(client, words[0], functools.partial(
        _set_operator_for, client, words[0], name, room, rules, add))


def _set_operator_for(client: Client, who: str, name: str, room: Room | None,
                      rules: RoomRules, add: bool, person: Person | None) -> None:
    """/op and /deop's second half: whether WHO is connected (on any node) is known."""
    _ask_account_of(client, who, person, functools.partial(
        _set_operator_as, client, who, name, room, rules, add, person))


def _set_operator_as(client: Client, who: str, name: str, room: Room | None,
                     rules: RoomRules, add: bool, person: Person | None, account: str) -> None:
    """/op and /deop's last step: the account WHO stands for is known."""
    server = client.server
    if add and account == rules.founder:
        raise CommandError(f"{who} is the founder of {name}", code="not_allowed")
    if add == (account in rules.operators):
        state = "already" if add else "not"
        raise CommandError(f"{who} is {state} an operator of {name}", code="no_change")
    if add:
        rules.operators.add(account)
        write(server, rules.key, "INSERT INTO room_operators (room, account, added_by) VALUES "
              "(?, ?, ?) ON CONFLICT (room, account) DO UPDATE SET added_by = "
              "excluded.added_by", (rules.key, account, client.nick))
    else:
        rules.operators.discard(account)
        write(server, rules.key, "DELETE FROM room_operators WHERE room = ? AND account = ?",
              (rules.key, account))
    publish_operators(server, rules)
    nick = person.nick if person is not None else who
    verb = "made" if add else "removed"
    role = "an operator of" if add else "as an operator of"
    _changed(client, name, ModeItem("op", add, account, "" if nick == account else nick),
             f"{client.nick} {verb} {account} {role} {name}")


def _ask_account_of(client: Client, who: str, target: Person | None,
                    then: Callable[[str], Any]) -> None:
    """``then(the account a nick stands for)``: the account of ``target``, who has the
    nick now (on any node), or a registered nick (read off the loop)."""
    if target is not None:
        if target.account is None:
            raise CommandError(f"{target.nick} is not identified: room operators are "
                               "registered nicks", code="not_registered")
        then(nick_key(target.account))
        return

    def registered(account: str | None) -> None:
        if account is None:
            raise CommandError(f"{who} is not a registered nick", code="not_registered")
        then(account)

    _ask_registered(client, who, registered)


def cmd_invite(client: Client, args: str) -> None:
    words = args.split()
    if not words:
        raise UsageError()
    nick = words.pop(0)
    name, room, rules = _invited_room(client, words)
    if words:
        raise UsageError()
    client.server.ask_whois(client, nick,
                            functools.partial(_invite_found, client, nick, name, room, rules))


def _invited_room(client: Client, words: list[str]) -> tuple[str, Room | None, RoomRules | None]:
    """The room ``/invite`` names first (or the current one), if the caller may invite
    to it, as RFC 2812 says: a room's operators (and server operators) always; into an
    invite-only room nobody else; into another room its members, and into a room
    nobody is in (RFC 2812: it need not exist) anyone.  The rules come back only for
    an operator: only an operator's invitation is kept (it opens an invite-only
    room); a member's lets nobody in who could not join anyway."""
    server = client.server
    if words and words[0].startswith("#"):
        name = words.pop(0)
        problem = room_problem(name)
        if problem is not None:
            raise CommandError(f"not a room name: {name} ({problem})", code="no_such_room")
        room = server.rooms.get(name)
    elif client.room is not None:
        room = client.room
    else:
        raise CommandError("you are not in a room; name one: #room", code="not_in_room")
    if room is not None:
        name = room.name
    rules = rules_for(server, name)
    if is_room_operator(client, rules):
        rules = rules if rules is not None else rules_for(server, name, create=True)
        assert rules is not None
        return rules.name, room, rules
    if rules is not None and rules.invite_only:
        raise CommandError(f"permission denied: {rules.name} is invite-only; only its "
                           "operators invite to it", code="not_operator")
    if room is not None and client not in room.members:
        raise CommandError(f"you are not in {name}: a room's members invite to it",
                           code="not_in_room")
    return rules.name if rules is not None else name, room, None


def _invite_found(client: Client, nick: str, name: str, room: Room | None,
                  rules: RoomRules | None, person: Person | None) -> None:
    """/invite's second half: who has the nick is known (now, or from another node)."""
    if person is None:
        raise CommandError(f"no such nick: {nick}", code="no_such_nick")
    target = client.server.client_of(person)
    if target is None:
        raise CommandError(f"{person.nick} is connected to another node; an invitation "
                           "reaches only users of this one", code="remote_user")
    if room is not None and target in room.members:
        raise CommandError(f"{target.nick} is already in {name}", code="already_in_room")
    if rules is not None:  # an operator's: it opens the room if it is invite-only
        rules.invited[invitee(target)] = time.monotonic() + INVITE_SECONDS
    # The invitee is told by every protocol (IRC's INVITE), the inviter on IRC (341).
    client.server.invited(client, target, name)
    _announce(client, room, f"{client.nick} invited {target.nick} to {name}")


def cmd_roomset(client: Client, args: str) -> None:
    words = args.split()
    server = client.server
    if len(words) <= 1 and (not words or words[0].startswith("#")):
        _show_rules(client, words)
        return
    name, _room, rules = _moderated_room(client, words)
    if len(words) != 2 or words[0] not in _SETTINGS or words[1] not in ("on", "off"):
        raise UsageError(f"settings: {', '.join(_SETTINGS)}; values: on, off")
    setting, on = words[0], words[1] == "on"
    setattr(rules, _SETTINGS[setting], on)
    save_room(server, rules)
    _changed(client, name, ModeItem(_SETTINGS[setting], on),
             f"{client.nick} set {setting} {words[1]} in {name}")


def cmd_modes(client: Client, args: str) -> None:
    """A room's settings as data (IRC's ``MODE #room``): anyone may ask, as ``/roomset``."""
    words = args.split()
    server = client.server
    room = server.rooms.get(words[0]) if words else client.room
    name = words[0] if words else ""
    if room is None and not name:
        raise CommandError("you are not in a room; name one: #room", code="not_in_room")
    rules = rules_for(server, room.name if room is not None else name)
    if room is None and rules is None:
        raise CommandError(f"no such room: {name}", code="no_such_room")
    client.reply(RoomModes, room=room.name if room is not None else rules.name,  # type: ignore[union-attr]
                 invite_only=rules is not None and rules.invite_only,
                 topic_lock=rules is not None and rules.topic_lock)


def _show_rules(client: Client, words: list[str]) -> None:
    server = client.server
    name = words[0] if words else client.room.name if client.room is not None else ""
    if not name:
        raise CommandError("you are not in a room; name one: #room", code="not_in_room")
    rules = rules_for(server, name)
    if rules is None or not rules.registered:
        client.notice(f"{name} is not registered")
    else:
        operators = ", ".join(sorted(rules.operators)) or "none"
        client.notice(f"{rules.name}: founder {rules.founder}; operators: {operators}")
    if rules is not None:
        settings = ", ".join(f"{setting} {'on' if getattr(rules, attr) else 'off'}"
                             for setting, attr in _SETTINGS.items())
        client.notice(f"{rules.name}: {settings}")


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
                "invite someone to a room you are in",
                "Any member may invite (as in IRC, RFC 2812), and anyone to a room\n"
                "nobody is in; to an invite-only room only its operators, and\n"
                "their invite lets the nick in for one join within an hour."),
        Command("modes", cmd_modes, f"/modes {room}",
                "a room's settings as IRC's modes: +i invite-only, +t topic-lock"),
        Command("roomset", cmd_roomset, f"/roomset {room} [topic-lock|invite-only on|off]",
                "show a room's founder, operators and settings, or change a setting",
                "topic-lock on: only the room's operators set its topic.\n"
                "invite-only on: only its operators and those they /invite may join."),
    ]
