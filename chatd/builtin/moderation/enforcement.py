"""Moderation's enforcement: who may do what in a room, and the rules in force.

Roles first (:func:`role_of`: a server operator, the founder, a room operator --
by account, never by nick); then the hooks that hold every client to a room's
rules: ``chatd_check_join`` (bans, invite-only, a new room beside a registered
one it would pass for), ``chatd_filter_message`` (a mute silences messages,
actions, topics and the reasons of parts and quits; a locked topic is for
operators), ``chatd_check_speak`` (a plugin's command posting for a muted
client), and the recheck after a nick change or an identification (a ban that
matches now puts the client out, :func:`put_out`).  Operators of the room or of
the server are never held to a ban or a mute.

These hooks run on chat traffic: each returns at once when no room has rules
(``state.rooms`` is empty), the usual case.
"""

from __future__ import annotations

import contextlib
import time

from chatd import (
    Client,
    CommandError,
    Event,
    Reject,
    Room,
    Server,
    hookimpl,
)
from chatd.chat.nicks import nick_key
from chatd.chat.rooms import room_key

from ..masks import Identity
from ..oper import is_operator
from .store import STATE, Entry, ModerationState, RoomRules, invitee, registered_look_alike

# -- who may do what -------------------------------------------------------------------------


def is_room_operator(client: Client, rules: RoomRules | None) -> bool:
    """Whether ``client`` may moderate the room: a server operator, or identified as
    its founder or one of its operators (a room that is not registered has none)."""
    if is_operator(client):
        return True
    if rules is None or not rules.registered or client.account is None:
        return False
    account = nick_key(client.account)
    return account == rules.founder or account in rules.operators


def is_founder(client: Client, rules: RoomRules) -> bool:
    """Whether ``client`` may do what only the founder may (name operators, drop the
    room): the founder's account, or a server operator."""
    if is_operator(client):
        return True
    return client.account is not None and nick_key(client.account) == rules.founder


def role_of(client: Client, rules: RoomRules) -> str | None:
    """What makes ``client`` an operator of the room (``server``, ``founder`` or
    ``operator``); None if nothing does."""
    if is_operator(client):
        return "server"
    account = nick_key(client.account) if client.account is not None else None
    return account_role(account, rules)


def account_role(account: str | None, rules: RoomRules) -> str | None:
    """What makes ``account`` (a nick's key) an operator of the room; None if nothing."""
    if account is None or not rules.registered:
        return None
    if account == rules.founder:
        return "founder"
    if account in rules.operators:
        return "operator"
    return None


def _matching(entries: dict[str, Entry], client: Client, now: float) -> Entry | None:
    who = Identity.of(client)
    for entry in entries.values():
        if entry.active(now) and entry.covers(who):
            return entry
    return None


# -- the rules in force -----------------------------------------------------------------------


@hookimpl
def chatd_check_join(client: Client, name: str, room: Room | None) -> Reject | None:
    state: ModerationState | None = client.server.stash.get(STATE)
    if state is None:
        return None
    if room is None:  # a new room: not beside a registered one it would pass for
        twin = registered_look_alike(state, name)
        if twin is not None:
            return Reject(f"{name} looks like {twin}, a registered room: join {twin}, or "
                          "choose a name that reads differently", code="look_alike")
    rules = state.rooms.get(room_key(name))
    if rules is None or is_room_operator(client, rules):
        return None  # operators are never banned (a ban naming one is refused)
    ban = _matching(rules.bans, client, time.time())
    if ban is not None:
        why = f": {ban.reason}" if ban.reason else ""
        return Reject(f"you are banned from {rules.name} ({ban.until()}){why}", code="banned")
    if rules.invite_only:
        invited = rules.invited.pop(invitee(client), None)
        if invited is None:  # invited by nick before identifying
            invited = rules.invited.pop("nick:" + nick_key(client.nick), None)
        if invited is None or invited < time.monotonic():
            return Reject(f"{rules.name} is invite-only: ask one of its operators to /invite "
                          "you (/roomset shows who they are)", code="invite_only")
    return None


def _muted(client: Client, rules: RoomRules) -> bool:
    return (bool(rules.mutes) and not is_room_operator(client, rules)
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
        if kind == "topic" and rules.topic_lock and not is_room_operator(client, rules):
            raise Reject(f"the topic of {rules.name} is locked: its operators set it",
                         code="topic_locked")
        if _muted(client, rules):
            if kind in ("part", "quit"):
                raise Reject(f"you are muted in {rules.name}", code="muted")
            raise Reject(f"you are muted in {rules.name}; your line was not sent", code="muted")


@hookimpl
def chatd_check_speak(client: Client, room: Room) -> Reject | None:
    """A plugin's command posting to a room for a muted client (``/roll``) is speech too."""
    state: ModerationState | None = client.server.stash.get(STATE)
    rules = state.rooms.get(room_key(room.name)) if state is not None else None
    if rules is not None and _muted(client, rules):
        return Reject(f"you are muted in {rules.name}", code="muted")
    return None


# -- putting someone out ----------------------------------------------------------------------


def put_out(server: Server, room: Room, target: Client, reason: str,
            kicked_by: str = "") -> None:
    """Take ``target`` out of ``room`` (``kicked_by``: the operator's kick).  A client
    left in no room goes to the default room if its protocol keeps it in one
    (``client.keeps_a_room``: the line protocol's person at ``nc``); a jsonl program
    may be in none, and stays so."""
    server.part(target, room, reason, kicked_by=kicked_by)
    if (not target.rooms and target.keeps_a_room
            and room_key(room.name) != room_key(server.default_room)):
        with contextlib.suppress(CommandError):  # banned from it too: in no room, then
            server.join(target, server.default_room)
    if not target.rooms:
        target.notice("you are in no room now; /join one")


def kick(server: Server, room: Room, target: Client, kicked_by: str, why: str) -> None:
    """``target`` is kicked out of ``room`` by the operator ``kicked_by``: told why, then
    put out (a kick typed on this node, or asked for by an operator on another node of
    a cluster)."""
    target.notice(f"you were kicked from {room.name} by {kicked_by}: {why}")
    put_out(server, room, target, f"kicked by {kicked_by}: {why}", kicked_by)


def _recheck(client: Client) -> None:
    """After a nick change or an identification: leave the rooms whose bans now match."""
    server = client.server
    state: ModerationState | None = server.stash.get(STATE)
    if state is None or not state.rooms:
        return
    now = time.time()
    for room in list(client.rooms):
        rules = state.rooms.get(room_key(room.name))
        if rules is None or is_room_operator(client, rules):
            continue
        ban = _matching(rules.bans, client, now)
        if ban is not None:
            client.notice(f"you are banned from {room.name} ({ban.until()})")
            put_out(server, room, client, "banned")


def rules_read(server: Server, rules: RoomRules) -> None:
    """A room's rules were read from the store (the load at start, or another process
    changed them): members a ban now matches are put out, as after a local ``/ban``."""
    room = server.rooms.get(rules.name)
    if room is None or not rules.bans:
        return
    now = time.time()
    for member in list(room.members):
        if is_room_operator(member, rules):
            continue
        ban = _matching(rules.bans, member, now)
        if ban is not None:
            why = f": {ban.reason}" if ban.reason else ""
            member.notice(f"you are banned from {room.name} ({ban.until()}){why}")
            put_out(server, room, member, f"banned{why}")


@hookimpl
def chatd_nick_change(client: Client) -> None:
    _recheck(client)


@hookimpl
def chatd_account_change(client: Client) -> None:
    _recheck(client)
