"""The accounts plugin's commands: ``/register``, ``/identify``, ``/password``, ``/drop``.

Each checks what it can on the loop (the nick, the password's length, who may
register), then hands the password work to a worker thread
(:func:`.queue.submit`) and answers when it is done: an account is written
(:mod:`.store`), a failure counted (:mod:`.limits`), a grace started or ended
(:mod:`.grace`).  ``/register #room`` and ``/drop #room`` go to the room
registrar the *moderation* plugin puts in ``server.stash[ROOM_REGISTRAR]``.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from chatd import (
    Client,
    Command,
    CommandError,
    Person,
    Server,
    StashKey,
    UsageError,
    hookimpl,
    skeleton,
)
from chatd.chat.nicks import GUEST_PREFIX, nick_key, nick_problem

from ..oper import is_operator
from .grace import GRACE, enforce, judge
from .limits import failed, succeeded
from .passwords import PASSWORD_MAX, hash_password, password_matches
from .queue import PAUSE_SECONDS, submit
from .state import Account, AccountsState, state_of
from .store import (
    ask_accounts_like,
    ask_by_key,
    ask_find,
    ask_owner,
    ask_unchanged,
    identified_as,
    written,
)

log = logging.getLogger("chatd.accounts")

#: ``/register #room`` and ``/drop #room`` are room registration: the plugin that
#: does it (the built-in *moderation*) puts its two functions here at startup.
ROOM_REGISTRAR: StashKey[tuple[Callable[[Client, list[str]], None],
                              Callable[[Client, list[str]], None]]] = StashKey()


def _password_problem(server: Server, password: str, nick: str) -> str | None:
    shortest = state_of(server).settings["min_password_length"]
    if len(password) < shortest:
        return f"a password has at least {shortest} characters"
    if len(password) > PASSWORD_MAX:
        return f"a password has at most {PASSWORD_MAX} characters"
    if password.lower() == nick.lower():
        return "a password cannot be the nick itself"
    return None


# -- /register ------------------------------------------------------------------------------


def _room_registrar(client: Client) -> tuple[Callable[[Client, list[str]], None],
                                              Callable[[Client, list[str]], None]]:
    registrar = client.server.stash.get(ROOM_REGISTRAR)
    if registrar is None:
        raise CommandError("rooms cannot be registered on this server", code="unavailable")
    return registrar


def cmd_register(client: Client, args: str) -> None:
    words = args.split()
    if words and words[0].startswith("#"):
        _room_registrar(client)[0](client, words)
        return
    if len(words) == 2 and is_operator(client):
        _register_for(client, words[0], words[1])
        return
    if len(words) != 1:
        raise UsageError("a password is one word")
    server = client.server
    state = state_of(server)
    _may_register(client, state)
    nick, password = client.nick, words[0]
    if nick_key(nick).startswith(GUEST_PREFIX):
        raise CommandError("choose your nick first (/nick NAME), then /register PASSWORD",
                           code="not_allowed")
    problem = _password_problem(server, password, nick)
    ask_owner(client, nick, functools.partial(_register_own, client, nick, password, problem))


def _register_own(client: Client, nick: str, password: str, problem: str | None,
                  owner: Account | None) -> None:
    """``/register PASSWORD``'s second half: whether the nick is registered is known
    (asked off the loop)."""
    server = client.server
    state = state_of(server)
    if owner is not None and identified_as(client, owner):
        raise CommandError(f"{nick} is already registered to you", code="already_registered")
    _free_to_register(nick, owner)
    if problem:
        raise CommandError(problem, code="weak_password")
    operator = is_operator(client)
    if not operator and (state.registrations.count(client.address)
                         >= state.settings["registrations_per_hour"]):
        raise CommandError("too many nicks registered from your address; try again later",
                           code="limit")
    n = state.settings["scrypt_n"]
    submit(client, nick_key(nick), lambda: hash_password(password, n),
            lambda c, hashed: _registered(c, nick, hashed, own=True, counted=not operator),
            guess=False)
    if not operator:
        state.registrations.add(client.address)  # now: requests sent together count too


def _may_register(client: Client, state: AccountsState) -> None:
    """Refuse a registration ``plugins.accounts.registration`` does not allow."""
    mode = state.settings["registration"]
    if mode == "closed":
        raise CommandError("registering nicks is closed on this server", code="unavailable")
    if mode == "operators" and not is_operator(client):
        raise CommandError("only server operators register nicks on this server; ask one to "
                           "/register YOURNICK PASSWORD for you", code="not_operator")


def _free_to_register(nick: str, owner: Account | None) -> None:
    """Refuse to register ``nick`` if it, or a look-alike, is registered (``owner``)."""
    if owner is None:
        return
    if nick_key(owner[0]) == nick_key(nick):
        raise CommandError(f"{nick} is already registered; /identify PASSWORD if it is yours",
                           code="already_registered")
    raise CommandError(f"{nick} looks the same as the registered nick {owner[0]}; choose "
                       "another nick", code="look_alike")


def _register_for(client: Client, nick: str, password: str) -> None:
    """``/register NICK PASSWORD`` by a server operator: NICK is registered for
    someone else, who then identifies with PASSWORD (and changes it)."""
    server = client.server
    state = state_of(server)
    _may_register(client, state)
    problem = nick_problem(nick, server.config.limits.max_nick_bytes)
    if problem:
        raise CommandError(problem, code="erroneous_nick")
    problem = _password_problem(server, password, nick)

    def free(owner: Account | None) -> None:
        _free_to_register(nick, owner)
        if problem:
            raise CommandError(problem, code="weak_password")
        n = state.settings["scrypt_n"]
        submit(client, nick_key(nick), lambda: hash_password(password, n),
               lambda c, hashed: _registered(c, nick, hashed, own=False, counted=False),
               guess=False)

    ask_owner(client, nick, free)


def _registered(client: Client, nick: str, hashed: str, *, own: bool,
                counted: bool) -> None:
    """The password is hashed: whether the nick (or a look-alike) was registered
    meanwhile is read again (off the loop), then the account is written."""
    state = state_of(client.server)
    if own and nick_key(client.nick) != nick_key(nick):
        if counted:
            state.registrations.forgive(client.address)
        raise CommandError(f"you are no longer {nick}; /register again", code="conflict")
    ask_accounts_like(client, nick, functools.partial(_register_free, client, nick, hashed,
                                                      own, counted))


def _register_free(client: Client, nick: str, hashed: str, own: bool, counted: bool,
                   taken: list[Account]) -> None:
    """Write the account, unless ``taken`` (someone registered it or a look-alike a
    moment ago).  With one process (SQLite) the check before is the whole truth;
    with several sharing a database (PostgreSQL) another may register the nick or a
    look-alike at the same moment: the insert checks inside its transaction, under a
    lock per look-alike form (:func:`_insert_account`), and the client is told only
    once the write is committed and read back (exactly one of them wins)."""
    server = client.server
    if taken:
        _lost(client, nick, counted=counted)
    now = time.time()
    key = nick_key(nick)
    number = server.store.write(functools.partial(
        _insert_account, server.store.dialect, (key, nick, hashed, now, now, skeleton(nick))))
    account = (nick, hashed, now)
    written(server, key, number, account)
    if server.store.dialect == "sqlite":
        _confirmed(client, account, own=own)
        return
    server.pause_requests(client, PAUSE_SECONDS)
    _wait_for_commit(client, number, time.monotonic() + CONFIRM_SECONDS,
                     functools.partial(_read_back, client, account, own, counted))


def _insert_account(dialect: str, row: tuple[str, str, str, float, float, str],
                    conn: Any) -> None:
    """(On the writer thread.)  Insert the account unless its key or its look-alike
    form is registered already.  On PostgreSQL two processes may insert ``alice`` and
    ``aIice`` at once: each first takes a transaction-long advisory lock on the
    look-alike form, so the second waits for the first's commit and then finds its
    row (READ COMMITTED: each statement sees what was committed before it)."""
    key, look = row[0], row[5]
    if dialect == "postgresql":
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(?))", ("chatd_accounts " + look,))
    conn.execute(
        "INSERT INTO accounts (key, nick, password, registered, seen, look) "
        "SELECT ?, ?, ?, ?, ?, ? WHERE NOT EXISTS "
        "(SELECT 1 FROM accounts WHERE key = ? OR look = ?) ON CONFLICT (key) DO NOTHING",
        (*row, key, look),
    )


#: Longest a registration waits for its write to be committed (then it is told to
#: check with /identify later).
CONFIRM_SECONDS = 5.0
_COMMIT_POLL = 0.005


def _wait_for_commit(client: Client, number: int, deadline: float,
                     then: Callable[[], None]) -> None:
    """``then()`` once write ``number`` is done (committed or rejected); the client's
    requests stay paused meanwhile and are resumed here (on time-out too)."""
    server = client.server
    if not client.connected:
        return
    if server.store.done >= number:
        try:
            then()
        except CommandError as exc:
            client.error(str(exc), code=exc.code)
        finally:
            server.resume_requests(client)
        return
    if time.monotonic() > deadline:
        client.error("the database has not confirmed that yet (it is slow or unreachable); "
                     "it takes effect once it is saved", code="unavailable")
        server.resume_requests(client)
        return
    server.call_later(_COMMIT_POLL, _wait_for_commit, client, number, deadline, then)


def _once_committed(client: Client, number: int, tell: Callable[[], None]) -> None:
    """``tell()`` the client a change is made: at once with one process (SQLite), once
    it is committed when the database is shared (PostgreSQL), so that what the
    client was told is then in force on every process.  The client's later
    requests wait until then."""
    if client.server.store.dialect == "sqlite":
        tell()
        return
    client.server.pause_requests(client, PAUSE_SECONDS)
    _wait_for_commit(client, number, time.monotonic() + CONFIRM_SECONDS, tell)

def _read_back(client: Client, account: Account, own: bool, counted: bool) -> None:
    """The account is committed (or another process's was first): read which one the
    table holds; ours, the client is told it is registered, else that it lost."""
    nick, hashed = account[0], account[1]

    def answered(matches: list[Account]) -> None:
        exact = [found for found in matches if nick_key(found[0]) == nick_key(nick)]
        if not exact or exact[0][1] != hashed:
            _lost(client, nick, counted=counted)
        _confirmed(client, account, own=own)

    ask_accounts_like(client, nick, answered)

def _lost(client: Client, nick: str, *, counted: bool) -> None:
    """Someone else registered ``nick`` (here or on another process) a moment ago: tell
    the client (raises CommandError), who is now held to the name's grace."""
    if counted:
        state_of(client.server).registrations.forgive(client.address)
    if nick_key(client.nick) == nick_key(nick):
        enforce(client)
    raise CommandError(f"{nick} (or a nick that looks the same) was registered by "
                       "someone else a moment ago", code="conflict")


def _confirmed(client: Client, account: Account, *, own: bool) -> None:
    """The account is registered: tell whoever registered it, identify the owner, and
    hold the name's holder to its grace."""
    server = client.server
    nick = account[0]
    if not own:
        log.info("%s registered by operator %s (%s:%d)", nick, client.nick, *client.peer)
        client.notice(f"{nick} is registered; its owner identifies with /identify {nick} "
                      "PASSWORD and changes the password with /password")
        holder = server.find_client(nick)
        if holder is not None:
            enforce(holder, hold=False)
        return
    log.info("%s registered by %s:%d", nick, *client.peer)
    _identified(client, nick, [account])  # it was free: the account owns the name
    client.notice(f"{nick} is registered to you, and you are identified; next time, "
                  f"/identify {nick} PASSWORD")


# -- /identify ------------------------------------------------------------------------------


def cmd_identify(client: Client, args: str) -> None:
    words = args.split()
    if len(words) not in (1, 2):
        raise UsageError()
    nick, password = (client.nick, words[0]) if len(words) == 1 else (words[0], words[1])
    ask_find(client, nick, functools.partial(_identify_found, client, words, nick, password))


def _identify_found(client: Client, words: list[str], nick: str, password: str,
                    account: Account | None) -> None:
    """``/identify``'s second half: the account is known (asked off the loop)."""
    if account is None:
        hint = " (/register PASSWORD registers it)" if len(words) == 1 else ""
        raise CommandError(f"{nick} is not registered{hint}", code="not_registered")
    if identified_as(client, account):
        if nick_key(client.nick) == nick_key(account[0]):
            raise CommandError(f"you are already identified as {client.account}", code="no_change")
        # It is yours: no password needed to have it back (if your account owns the name).
        ask_owner(client, account[0], functools.partial(_take_back, client, account))
        return
    stored = account[1]
    submit(client, nick_key(account[0]), lambda: password_matches(password, stored),
            lambda c, ok: _checked_identify(c, account, ok), guess=True)


def _checked_identify(client: Client, account: Account, ok: bool) -> None:
    nick = account[0]
    key = nick_key(nick)
    if not ok:
        failed(client, key, "/identify")
        return
    succeeded(client, key)
    ask_unchanged(client, account, identified=False,
                  then=functools.partial(_identify_unchanged, client, account))


def _identify_unchanged(client: Client, account: Account, matches: list[Account]) -> None:
    """``/identify``'s last step: the account is still as checked (``matches``: the
    accounts like it, oldest first, read off the loop)."""
    server = client.server
    nick = account[0]
    key = nick_key(nick)
    server.store.write("UPDATE accounts SET seen = ? WHERE key = ?", (time.time(), key))
    log.info("%s (%s:%d) identified as %s", client.nick, *client.peer, nick)
    same_name = skeleton(client.nick) == skeleton(nick)  # the accounts like it are known
    _identified(client, nick, matches if same_name else None)
    client.notice(f"you are identified as {nick}")
    if nick_key(client.nick) != key:
        _take_back(client, account, matches[0] if matches else None)


def _take_back(client: Client, account: Account, owner: Account | None) -> None:
    """Give the owner its nick, renaming an unidentified holder to a guest nick.

    Only the account that owns the name (``owner``: the oldest registered as it or
    a look-alike) may: a look-alike account registered after it (possible before
    look-alikes were one name) is refused, so it can never rename the real owner.
    """
    server = client.server
    nick = account[0]
    if owner is not None and nick_key(owner[0]) != nick_key(nick):
        raise CommandError(f"{nick} looks the same as {owner[0]}, registered before it by "
                           f"someone else: you cannot use that nick (/drop PASSWORD gives "
                           f"{nick} up)", code="look_alike")
    # Who holds it (the same nick, or one that looks the same), on any node.
    server.ask_whois(client, nick, functools.partial(_take_back_from, client, account))


def _take_back_from(client: Client, account: Account, person: Person | None) -> None:
    """:func:`_take_back`'s second half: who holds the nick is known."""
    server = client.server
    nick = account[0]
    if person is not None and person.session != client.session:
        if identified_as(person, account):  # type: ignore[arg-type]  # it has .account
            client.notice(f"{person.nick} is in use by another connection identified as "
                          f"{nick}")
            return
        holder = server.client_of(person)
        if holder is None:
            raise CommandError(f"{person.nick} is held by a user of another node; try "
                               "again once they have left it", code="remote_user")
        guest = server.rename_to_guest(holder)
        holder.notice(f"the owner of {nick} identified; you are now {guest}")
        log.info("%s taken back by its owner; the holder is now %s", nick, guest)
    server.rename(client, nick)


def _identified(client: Client, nick: str, like: list[Account] | None) -> None:
    """``client`` is identified as ``nick``; its grace ends, unless the name it holds
    is a look-alike owned by another.  ``like``: the accounts like the name it
    holds, oldest first, if known (else they are read: its later lines wait)."""
    client.server.set_account(client, nick)
    if like is None:
        enforce(client)
    else:
        judge(client, like[0] if like else None)


# -- /password and /drop --------------------------------------------------------------------


def _own_account(client: Client, unidentified: str, then: Callable[[Account], Any]) -> None:
    """``then(account)``: the account ``client`` is identified as, read off the loop
    (its later lines wait); ``unidentified`` is the error if it is identified as none."""
    if client.account is None:
        raise CommandError(unidentified, code="not_identified")
    name = client.account

    def found(account: Account | None) -> None:
        if account is None:
            raise CommandError(f"{name} is not registered any more", code="not_registered")
        then(account)

    ask_by_key(client, nick_key(name), found)


def cmd_password(client: Client, args: str) -> None:
    words = args.split()
    if len(words) != 2:
        raise UsageError()
    old, new = words
    _own_account(client, "identify first (/identify NICK PASSWORD)",
                 functools.partial(_password_found, client, old, new))


def _password_found(client: Client, old: str, new: str, account: Account) -> None:
    """``/password``'s second half: the account is known (asked off the loop)."""
    server = client.server
    problem = _password_problem(server, new, account[0])
    if problem:
        raise CommandError(problem, code="weak_password")
    n, stored = state_of(server).settings["scrypt_n"], account[1]

    def work() -> str | None:
        return hash_password(new, n) if password_matches(old, stored) else None

    submit(client, nick_key(account[0]), work,
            lambda c, hashed: _password_changed(c, account, hashed), guess=True)


def _password_changed(client: Client, account: Account, hashed: str | None) -> None:
    key = nick_key(account[0])
    if hashed is None:
        failed(client, key, "/password")
        return
    succeeded(client, key)
    ask_unchanged(client, account, identified=True,
                  then=lambda _: _change_password(client, account, hashed))


def _change_password(client: Client, account: Account, hashed: str) -> None:
    server = client.server
    key = nick_key(account[0])
    # "AND password": on disk too, only the account that was checked is changed.
    number = server.store.write("UPDATE accounts SET password = ? WHERE key = ? AND "
                                "password = ?", (hashed, key, account[1]))
    written(server, key, number, (account[0], hashed, account[2]))
    log.info("password of %s changed by %s:%d", account[0], *client.peer)
    _once_committed(client, number, lambda: client.notice(
        f"the password of {account[0]} is changed"))


def cmd_drop(client: Client, args: str) -> None:
    words = args.split()
    if words and words[0].startswith("#"):
        _room_registrar(client)[1](client, words)
        return
    if len(words) != 1:
        raise UsageError()
    password = words[0]

    def found(account: Account) -> None:
        stored = account[1]
        submit(client, nick_key(account[0]), lambda: password_matches(password, stored),
               lambda c, ok: _dropped(c, account, ok), guess=True)

    _own_account(client, "identify first: you can drop the nick you are identified as", found)


def _dropped(client: Client, account: Account, ok: bool) -> None:
    key = nick_key(account[0])
    if not ok:
        failed(client, key, "/drop")
        return
    succeeded(client, key)
    ask_unchanged(client, account, identified=True, then=lambda _: _drop(client, account))


def _drop(client: Client, account: Account) -> None:
    server = client.server
    key = nick_key(account[0])
    number = server.store.write("DELETE FROM accounts WHERE key = ?", (key,))
    written(server, key, number, None)
    log.info("%s dropped by %s:%d", account[0], *client.peer)
    for other in list(server.clients.values()):
        if identified_as(other, account):  # every connection identified as it
            server.set_account(other, None)
        grace = other.stash.get(GRACE)
        if grace is not None and grace.owner == key:  # holders of the name: free now
            _end_grace_of(other, account[0])
    server.hooks.call("chatd_account_dropped", server=server, account=account[0])
    _once_committed(client, number, lambda: client.notice(
        f"{account[0]} is no longer registered; anyone may use it"))


def _end_grace_of(holder: Client, nick: str) -> None:
    """``nick`` was dropped: ``holder``, held to its grace, is judged again (a
    look-alike registered before it may still own the name), and told if it is free."""

    def judged() -> None:
        if GRACE not in holder.stash:
            holder.notice(f"{nick} is no longer registered; you may keep {holder.nick}")

    enforce(holder, hold=False, judged=judged)


# -- the commands ---------------------------------------------------------------------------


@hookimpl
def chatd_commands() -> list[Command]:
    return [
        Command(
            "register", cmd_register, "/register PASSWORD | /register #room",
            "register your nick (or a room you are in) to you",
            "Registers your current nick: nobody else can keep it (or a nick that looks\n"
            "the same) once you have registered it. Next time, /identify NICK PASSWORD.\n"
            "/register #room makes you the founder of a room (you must be identified).\n"
            "A server operator may /register NICK PASSWORD for someone else.",
            exact_args=True,
        ),
        Command(
            "identify", cmd_identify, "/identify [NICK] PASSWORD",
            "prove a registered nick is yours",
            "Without NICK, identifies you for your current nick. With NICK, you are\n"
            "renamed to it, and whoever holds it without identifying becomes guest-N.",
            exact_args=True,
        ),
        Command(
            "password", cmd_password, "/password OLD NEW",
            "change the password of the nick you are identified as", exact_args=True,
        ),
        Command(
            "drop", cmd_drop, "/drop PASSWORD | /drop #room",
            "unregister the nick you are identified as (or a room you founded)",
            exact_args=True,
        ),
    ]
