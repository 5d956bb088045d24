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
  stands for the person: someone connected (to any node: found with the
  presence question ``server.ask_whois``) by their address and, if
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

Every action is announced to the room and logged (``chatd.moderation``); a change of
a room's rules (op, ban, mute, their undoing, a setting) as a ``ModeChange`` through
``server.mode_changed``, which each protocol renders (IRC: ``MODE``).
Bans and mutes in a room that is not registered last while the room exists.

The plugin is this package (pluggy registers it, so it names every hook
implementation of its parts); each part has one job, and imports flow one way
(commands, then enforcement, then store: import-linter checks it):

* :mod:`.store` -- the tables (registered rooms, operators, bans and mutes):
  loading, saving, keeping them in step with rooms and accounts;
* :mod:`.enforcement` -- who may do what, and the hooks that hold clients to
  the rules (joins, speech, the recheck after a nick change);
* :mod:`.commands` -- the commands that change and show the rules;
* masks (``nick!account@address``) are :mod:`chatd.builtin.masks`.

This module starts and stops it: the schema, the state (kept across a
reload), and the registrar the *accounts* plugin calls for ``/register #room``.
"""

from __future__ import annotations

import logging

from chatd import Server, StashKey, hookimpl

from ..accounts import ROOM_REGISTRAR
from .commands import chatd_commands, drop_room, register_room
from .enforcement import (
    chatd_account_change,
    chatd_check_join,
    chatd_check_speak,
    chatd_filter_message,
    chatd_nick_change,
    rules_read,
)
from .store import (
    CHANNEL,
    SCHEMA,
    STATE,
    ModerationState,
    chatd_account_dropped,
    chatd_message,
    chatd_room_created,
    chatd_room_removed,
    load_at_start,
    reload_all,
    reload_room,
)

log = logging.getLogger("chatd.moderation")

#: The store this plugin listens to for other processes' changes (once per store:
#: a reload starts the plugin again, the listener stays).
LISTENING: StashKey[object] = StashKey()
#: A store starts listening to a channel within about half a second of ``listen``
#: (its listener thread connects, or picks the new channel up): a notice sent
#: meanwhile is missed.  So once that is surely over, every room is read again.
LISTEN_SETTLED = 1.0

__all__ = [
    "chatd_account_change",
    "chatd_account_dropped",
    "chatd_check_join",
    "chatd_check_speak",
    "chatd_commands",
    "chatd_filter_message",
    "chatd_message",
    "chatd_nick_change",
    "chatd_room_created",
    "chatd_room_removed",
    "chatd_shutdown",
    "chatd_startup",
]


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
    if server.stash.get(LISTENING) is not server.store:
        server.stash[LISTENING] = server.store
        server.store.listen(CHANNEL, lambda key: _noticed(server, key))
        if server.store.dialect != "sqlite":  # see LISTEN_SETTLED
            server.call_later(LISTEN_SETTLED, _noticed, server, None)
    if previous is not None and previous.loaded:
        # Memory is the truth once loaded: every change is made there first and its
        # write may still wait for the disk (full), so reading the store again would
        # bring back a lifted ban, a removed operator, a dropped room.
        state.loaded = True
        return
    load_at_start(server, rules_read)


def _noticed(server: Server, key: str | None) -> None:
    """Another process changed room ``key``'s rules (None: notices may have been
    missed, the listening connection was lost): read them again."""
    if key is None:
        log.info("reading every registered room again (other processes' changes may have "
                 "been missed)")
        reload_all(server, rules_read)
    else:
        reload_room(server, key, rules_read)


@hookimpl
def chatd_shutdown(server: Server) -> None:
    state = server.stash.get(STATE)
    if state is not None and state.retry is not None:
        state.retry.cancel()
    server.stash.pop(ROOM_REGISTRAR, None)
