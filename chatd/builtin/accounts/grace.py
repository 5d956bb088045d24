"""Ownership of a registered name: the grace to identify, and who may speak meanwhile.

Whoever holds a registered nick (or a look-alike of it) without being
identified as its owner gets ``grace_seconds`` to ``/identify`` (:func:`enforce`,
on every nick change and identification), cannot speak meanwhile (messages,
actions, private messages, topics, reasons, and what a plugin's command posts
for them), is not sent private messages (they were meant for the owner), and
is renamed ``guest-N`` when the grace ends.  A private message's recipient is
the one the presence answer found (``PrivateMessage.to_session``/``to_account``),
on this node or another.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chatd import (
    Client,
    Reject,
    Server,
    StashKey,
    StoreAnswer,
    StoreUnavailable,
    Timer,
    hookimpl,
    skeleton,
)
from chatd.chat.nicks import nick_key
from chatd.events import Event, PrivateMessage

from .state import STATE, Account, state_of
from .store import ask_like, identified_as, owner_of

log = logging.getLogger("chatd.accounts")

#: Set on a client holding a registered nick (or a look-alike) it has not identified for.
GRACE: StashKey[Grace] = StashKey()
#: The looks (:func:`enforce`) out for a client, by the nick asked about: until the
#: answer, whether it holds a registered name is not known yet (see _held_unidentified).
LOOKING: StashKey[dict[str, int]] = StashKey()


@dataclass(slots=True)
class Grace:
    """A holder's grace: whose name it holds, when the grace ends (monotonic), the timer."""

    owner: str  # the key of the account that owns the name
    deadline: float
    timer: Timer


@hookimpl
def chatd_nick_change(client: Client, new: str) -> None:
    enforce(client)


def enforce(client: Client, *, hold: bool = True,
            judged: Callable[[], Any] | None = None) -> None:
    """Start (or keep, or end) the grace of ``client`` for the name it holds now.

    A holder of a registered name (the nick, or a look-alike) who is not
    identified as its owner gets ``grace_seconds`` to identify, may not speak
    meanwhile, and is renamed when it ends.  Changing to another form of the same
    name (case, look-alike) does not restart the clock.

    Whether the name is registered is read off the loop (``server.ask_store``), so
    a slow database costs nobody else anything.  With ``hold`` (the client's own
    rename, connection or identification) the client's later lines wait for the
    answer, in order, as for a presence question: it never speaks as a registered
    name before its grace is known.  Without it (another process's change, a
    reload: a look at someone who did nothing) nobody waits.  The answer judges
    the nick that was asked about; a client renamed meanwhile is judged by the
    look its rename started.  A database that cannot answer: not enforced (logged).
    """
    nick = client.nick
    looking = client.stash.setdefault(LOOKING, {})
    looking[nick] = looking.get(nick, 0) + 1

    def answered(matches: list[Account] | None, error: str | None) -> None:
        _looked(client, nick)
        if not client.connected or client.nick != nick:
            return
        if matches is None:
            log.warning("could not check whether %s is registered (%s); not enforced",
                        nick, error)
            return
        judge(client, matches[0] if matches else None)
        if judged is not None:
            judged()

    def expired() -> None:
        _looked(client, nick)
        log.warning("could not check whether %s is registered (no answer in time); "
                    "not enforced", nick)

    ask_like(client.server, client if hold else None, nick, answered, expired=expired)


def _looked(client: Client, nick: str) -> None:
    """One look at ``nick`` for ``client`` is answered (or given up)."""
    looking = client.stash.get(LOOKING, {})
    left = looking.get(nick, 0) - 1
    if left > 0:
        looking[nick] = left
    else:
        looking.pop(nick, None)


def judge(client: Client, owner: Account | None) -> None:
    """:func:`enforce`'s second half: ``owner`` owns the name ``client`` holds (None:
    nobody)."""
    server = client.server
    state = state_of(server)
    grace = client.stash.get(GRACE)
    if owner is None or identified_as(client, owner):
        _end_grace(client)
        return
    key = nick_key(owner[0])
    if grace is not None and grace.owner == key:
        if grace.timer.cancelled:  # its timer went with a reload: the same deadline again
            grace.timer = server.call_later(max(0.0, grace.deadline - time.monotonic()),
                                            _grace_over, client)
        return
    _end_grace(client)
    seconds = state.settings["grace_seconds"]
    nick = client.nick
    what = f"{nick} is registered" if nick_key(nick) == key else \
        f"{nick} looks the same as the registered nick {owner[0]}"
    client.notice(f"{what}: /identify PASSWORD within {seconds:g} s, or you will be renamed; "
                  f"until then you cannot speak as {nick}")
    timer = server.call_later(seconds, _grace_over, client)
    client.stash[GRACE] = Grace(key, time.monotonic() + seconds, timer)


def _end_grace(client: Client) -> None:
    grace = client.stash.pop(GRACE, None)
    if grace is not None:
        grace.timer.cancel()


def _grace_over(client: Client) -> None:
    if client.stash.pop(GRACE, None) is None or not client.connected:
        return
    nick = client.nick
    guest = client.server.rename_to_guest(client)
    log.info("%s did not identify for %s in time; renamed %s", client.address, nick, guest)
    client.notice(f"you did not identify for {nick}; you are now {guest}")


def _silenced(client: Client) -> str | None:
    """Why ``client`` may not speak (it holds a registered name it has not identified
    for), or None."""
    if GRACE not in client.stash:
        return None
    nick = client.nick
    return (f"{nick} is registered to someone else: /identify PASSWORD to speak as {nick}, "
            "or /nick NAME to speak under another nick")


@hookimpl
def chatd_filter_message(client: Client, event: Event) -> None:
    """Nobody speaks as a registered name they have not identified for, and nobody's
    private message goes to such a holder (it was meant for the owner)."""
    refusal = _silenced(client)
    if refusal is not None:
        raise Reject(refusal, code="nick_registered")
    if (isinstance(event, PrivateMessage) and event.to_session != client.session
            and _held_unidentified(client, event)):
        raise Reject(f"{event.target} is held by someone who has not identified for it, "
                     "not by its owner; not sent", code="nick_registered")


def _held_unidentified(client: Client, event: PrivateMessage) -> bool:
    """Whether the recipient of ``event`` holds a registered name it has not identified
    for.  The event says who it is, as presence found it (another node's user
    included): a client of this process is in its grace (:func:`enforce` keeps it);
    one of another node is judged by the same rule, from the accounts and the
    account the event names (a store that cannot answer: not enforced, as there)."""
    server = client.server
    target = server.find_client(event.target)
    account = event.to_account
    if target is not None and target.session == event.to_session:
        if GRACE in target.stash or target.nick not in target.stash.get(LOOKING, {}):
            return GRACE in target.stash
        account = target.account  # renamed a moment ago, its look still out: see below
    # The one read left on the loop (cut at storage.read_timeout_seconds): a filter
    # (chatd_filter_message) answers before it returns, it cannot wait for a read
    # off the loop.  It is reached only for a recipient on another node (a networked
    # delivery backend), or one of this process renamed so recently that the look at
    # its new nick (off the loop) has not answered yet (one round trip to the
    # database); every other recipient here is judged from memory, above.  Like the
    # other node's own check, a database that cannot answer in time lets it through.
    try:
        owner = owner_of(server, event.target)
    except StoreUnavailable:
        return False
    return owner is not None and (account is None or nick_key(account) != nick_key(owner[0]))


@hookimpl
def chatd_check_speak(client: Client) -> Reject | None:
    """A plugin command posting to a room for such a holder (``/roll``: "alice rolled")
    speaks as the name too."""
    refusal = _silenced(client)
    return None if refusal is None else Reject(refusal, code="nick_registered")


@hookimpl
def chatd_client_disconnect(client: Client) -> None:
    _end_grace(client)


# -- other processes' changes ---------------------------------------------------------------


def noticed(server: Server, key: str | None) -> None:
    """Another process registered, dropped or changed the password of account ``key``
    (None: notices may have been missed; every client is looked at again).

    The table is the truth (lookups read it), so what is to do is for the clients of
    this process the account concerns: one identified as a dropped account is no
    longer identified, and whoever holds the name (or a look-alike) is held to it
    as after a registration here (:func:`enforce`: the grace starts, or ends)."""
    if server.stash.get(STATE) is None:
        return
    if key is None:
        log.info("looking at every client's nick again (other processes' changes may have "
                 "been missed)")
    look = skeleton(key) if key is not None else ""
    for client in list(server.clients.values()):
        grace = client.stash.get(GRACE)
        if key is None or (client.account is not None and nick_key(client.account) == key) \
                or (grace is not None and grace.owner == key) \
                or nick_key(client.nick) == key or skeleton(client.nick) == look:
            _look_again(client)


def _look_again(client: Client) -> None:
    """Read ``client``'s account (off the loop) and hold it to what the table says now."""
    server = client.server
    account = client.account
    if account is None:
        enforce(client, hold=False)
        return

    def answered(answer: StoreAnswer) -> None:
        if not client.connected:
            return
        if answer.ok and not answer.rows and client.account == account:
            server.set_account(client, None)
            client.notice(f"{account} is no longer registered (dropped on another server); "
                          "you are no longer identified")
        enforce(client, hold=False)

    server.ask_store(None, "SELECT nick FROM accounts WHERE key = ?", (nick_key(account),),
                     answered)
