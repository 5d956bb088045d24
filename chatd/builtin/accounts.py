"""Built-in plugin *accounts*: registered nicks, owned by a password.

* ``/register PASSWORD`` registers your current nick to you (and identifies
  you); ``/identify [NICK] PASSWORD`` proves it is yours on a later connection;
  ``/password OLD NEW`` changes the password; ``/drop PASSWORD`` gives the nick
  up.  ``/register #room`` is room registration (the *moderation* plugin).
  Who may register is ``registration``: ``open`` (anyone, the default),
  ``operators`` (server operators only: ``/register NICK PASSWORD`` registers
  NICK for someone, ``/register PASSWORD`` their own nick) or ``closed``.
* **Look-alikes are one name.**  An account is found by its nick's key (case)
  or its confusable skeleton (:func:`chatd.skeleton`: ``aIice`` is ``alice``),
  so ``aIice`` cannot be registered beside ``alice``, ``/identify aIice PW`` is
  alice's password, and holding ``aIice`` is holding alice's nick.  Should two
  look-alike accounts exist (registered before this rule), the older one owns
  the name: the newer can identify, change its password and drop itself, but
  never hold the name nor rename the older one's owner.
* A registered nick is owned.  Whoever takes it (or a look-alike) without
  identifying is told to ``/identify`` within ``grace_seconds`` (60), **cannot
  speak meanwhile** (messages, actions, private messages, topics, part and quit
  reasons, and what a plugin's command posts to a room for them, ``/roll``, are
  refused with a ``!`` line saying why; see ``chatd_filter_message`` and
  ``chatd_check_speak`` below), and is renamed to ``guest-N`` when the grace ends.  Private messages
  *to* such a holder are refused too: they were meant for the owner, who is not
  the one holding the name.  ``/identify NICK PASSWORD`` while someone else
  holds NICK unidentified takes it back from them at once (they become
  ``guest-N``).
* An identified client's ``client.account`` is its registered nick (it keeps
  the account when it changes nick); ``/whois`` shows it, room moderation
  trusts it (operators and bans by account).

Passwords are one word of ``min_password_length`` (8) to 256 characters,
hashed with scrypt (the standard library's ``hashlib.scrypt``: memory-hard,
``scrypt_n`` 16384, r 8, p 1, 16 MiB and ~30 ms per hash, a random salt per
account) on two worker threads, never on the event loop.  The checks wait in a
fair queue (:mod:`.fairqueue`): round robin between addresses, then between
accounts of one address, one check running per address and account, two
waiting; past that the sender alone is told the server is busy, which never
counts as a failed attempt.  A password is never logged, stored in clear or put
in history (commands are neither).

Failed attempts are limited (:class:`.attempts.GuessLimits`), per source (an
address; an IPv6 /64), per account and per source and account: a connection
that fails 5 times is closed; a source with ``failures_per_address`` (20)
failures within 10 minutes may try nothing, a source with 5 failures for one
account may not try that one; an account with 10 failures is *under attack*: a
source that failed for it may not try it again, a source that has not (the
owner, elsewhere) still may, so nobody can lock the owner out from outside.  An
address may register 3 nicks an hour.

The accounts live in the ``accounts`` table of the store (``storage.path``).
Writes are queued (the loop never waits); an account registered (or dropped) a
moment ago is kept in memory until it is on disk, across a reload too, so it is
never missing (or back) in between.  A
change is made only to the account that was checked: a ``/password`` answered
after a ``/drop`` of the same account (or the other way round) is refused, so
a dropped account cannot come back.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from chatd import (
    Client,
    Command,
    CommandError,
    Reject,
    Server,
    StashKey,
    StoreUnavailable,
    Timer,
    UsageError,
    hookimpl,
    skeleton,
)
from chatd.chat.nicks import GUEST_PREFIX, nick_key, nick_problem
from chatd.events import Event

from .attempts import GuessLimits, RecentFailures, source_of
from .fairqueue import FairQueue, Lane
from .oper import is_operator
from .sections import Range, section_settings

log = logging.getLogger("chatd.accounts")

SCHEMA = [
    """
    CREATE TABLE accounts (
        key TEXT PRIMARY KEY,      -- the nick's key (lowercase)
        nick TEXT NOT NULL,        -- as registered
        password TEXT NOT NULL,    -- scrypt$N$r$p$salt$hash, base64: never the password
        registered REAL NOT NULL,  -- seconds since the epoch
        seen REAL NOT NULL         -- the last /identify
    );
    """,
    """
    ALTER TABLE accounts ADD COLUMN look TEXT;  -- chatd.skeleton(nick): look-alikes share it
    CREATE INDEX accounts_by_look ON accounts (look);
    """,
]

REGISTRATION_MODES = ("open", "operators", "closed")

DEFAULTS: dict[str, Any] = {
    "grace_seconds": 60.0,
    "min_password_length": 8,
    "scrypt_n": 16384,
    "registrations_per_hour": 3,
    "registration": "open",
    "failures_per_address": 20,
}

PASSWORD_MAX = 256
#: Failed attempts before the connection is closed.
CONNECTION_FAILURES_MAX = 5
#: Failed attempts within FAILURE_WINDOW: for one account from everywhere (then it is
#: under attack), from one source for one account.  (From one source for everything:
#: the ``failures_per_address`` setting, 20.)
ACCOUNT_FAILURES_MAX = 10
PAIR_FAILURES_MAX = 5
FAILURE_WINDOW = 600.0
#: The fair queue of password checks: threads, checks running per (address,
#: account), checks waiting per (address, account), checks waiting in all.
HASH_WORKERS = 2
HASHING_PER_LANE = 1
WAITING_PER_LANE = 2
WAITING_MAX = 256
BUSY = "the server is busy checking passwords; try again in a moment"
#: Longest a client's next requests wait for its password check.
PAUSE_SECONDS = 10.0
_SCRYPT_R, _SCRYPT_P = 8, 1
#: The largest scrypt cost accepted: 128 * N * r bytes = 256 MiB per hash.
SCRYPT_N_MAX = 2**18
#: The values each number setting may take (a wrong one stops the server with its key).
RANGES = {
    "grace_seconds": Range(0, 86400.0, above=True),  # a timer: at most a day
    "min_password_length": Range(1, PASSWORD_MAX),
    "scrypt_n": Range(1024, SCRYPT_N_MAX),  # and a power of two (checked at startup)
    "registrations_per_hour": Range(0, 1_000_000),
    "failures_per_address": Range(1, 1_000_000),
}

#: One account: (nick as registered, password hash, registered at).
Account = tuple[str, str, float]

STATE: StashKey[AccountsState] = StashKey()
#: ``/register #room`` and ``/drop #room`` are room registration: the plugin that
#: does it (the built-in *moderation*) puts its two functions here at startup.
ROOM_REGISTRAR: StashKey[tuple[Callable[[Client, list[str]], None],
                              Callable[[Client, list[str]], None]]] = StashKey()
#: Set on a client holding a registered nick (or a look-alike) it has not identified for.
GRACE: StashKey[Grace] = StashKey()
FAILURES: StashKey[int] = StashKey()


@dataclass(slots=True)
class Grace:
    """A holder's grace: whose name it holds, when the grace ends (monotonic), the timer."""

    owner: str  # the key of the account that owns the name
    deadline: float
    timer: Timer


@dataclass(slots=True, frozen=True)
class _Job:
    """A password check waiting in the fair queue: the work for the thread, what to do
    with its result on the loop, and whether it is a guess counted as a failure."""

    client: Client
    work: Callable[[], Any]
    then: Callable[[Client, Any], None]
    guess: bool


class AccountsState:
    """The plugin's state, kept in ``server.stash``."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.pool = ThreadPoolExecutor(max_workers=HASH_WORKERS, thread_name_prefix="chatd-kdf")
        #: Password checks waiting for a thread, and running, by address and account.
        self.queue: FairQueue[_Job] = FairQueue(
            workers=HASH_WORKERS, per_lane=HASHING_PER_LANE, lane_max=WAITING_PER_LANE,
            total_max=WAITING_MAX)
        #: Accounts written (or dropped: None) and not yet on disk, by key, with
        #: the store's write number.
        self.unwritten: dict[str, tuple[int, Account | None]] = {}
        self.guesses = GuessLimits(per_source=settings["failures_per_address"],
                                   per_account=ACCOUNT_FAILURES_MAX,
                                   per_pair=PAIR_FAILURES_MAX, window=FAILURE_WINDOW)
        self.registrations = RecentFailures(3600.0)


# -- passwords (run on the worker threads) ------------------------------------------------


def hash_password(password: str, n: int) -> str:
    """A new scrypt hash of ``password`` with a fresh salt, as stored."""
    salt = os.urandom(16)
    digest = _scrypt(password, salt, n, _SCRYPT_R, _SCRYPT_P)
    encode = base64.b64encode
    return f"scrypt${n}${_SCRYPT_R}${_SCRYPT_P}${encode(salt).decode()}${encode(digest).decode()}"


def password_matches(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` was made from (constant-time compare)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    # maxmem above what N, r, p need (128 * N * r * p bytes, plus a little).
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
                          maxmem=129 * n * r * p + 2**20, dklen=32)


# -- configuration, startup, shutdown -------------------------------------------------------


@hookimpl
def chatd_startup(server: Server) -> None:
    settings = section_settings(server, "accounts", DEFAULTS, RANGES)
    n = settings["scrypt_n"]
    if n & (n - 1):
        raise server.config.error(
            "plugins.accounts.scrypt_n",
            f"expected a power of two from 1024 to {SCRYPT_N_MAX} (256 MiB a hash), got {n}",
        )
    if settings["registration"] not in REGISTRATION_MODES:
        raise server.config.error(
            "plugins.accounts.registration",
            f"expected one of {', '.join(REGISTRATION_MODES)}, got {settings['registration']!r}",
        )
    store = server.store
    store.migrate("accounts", SCHEMA)
    # Skeletons are computed by chatd, not SQL, and may be refined by a later
    # version: bring every stored one up to date before the first lookup by it.
    store.write(_refresh_looks)
    # A failing disk (store.problem) cannot take it now: waiting would only hold the
    # loop (a reload while the disk is full) for the flush's whole timeout.
    if store.problem or not store.flush():
        log.warning("the look-alike forms of registered nicks are not on disk yet; "
                    "look-alike lookups may miss until they are")
    state = AccountsState(settings)
    previous: AccountsState | None = server.stash.get(STATE)
    if previous is not None:  # a reload: what is not on disk yet (a /drop while the disk
        state.unwritten = previous.unwritten  # is full) stays known, or it comes back
    server.stash[STATE] = state
    for client in list(server.clients.values()):  # a reload: the holders of names again
        _enforce(client)


def _refresh_looks(conn: sqlite3.Connection) -> None:
    """(On the writer thread.)  Set each account's ``look`` to its nick's skeleton."""
    rows = conn.execute("SELECT key, nick, look FROM accounts").fetchall()
    for key, nick, look in rows:
        fresh = skeleton(nick)
        if fresh != look:
            conn.execute("UPDATE accounts SET look = ? WHERE key = ?", (fresh, key))


@hookimpl
def chatd_shutdown(server: Server) -> None:
    state = server.stash.get(STATE)
    if state is None:
        return
    state.pool.shutdown(wait=False, cancel_futures=True)
    for job in state.queue.clear():  # waiting for a thread that will not come
        if job.client.connected:  # a reload or a stop: the plugin cannot tell which
            job.client.error("your password was not checked: the server is reloading or "
                             "stopping; try again")
            server.resume_requests(job.client)


def _state(server: Server) -> AccountsState:
    state: AccountsState | None = server.stash.get(STATE)
    if state is None:
        raise CommandError("accounts are not available on this server")
    return state


# -- the table ------------------------------------------------------------------------------


def _pending(server: Server, state: AccountsState) -> dict[str, Account | None]:
    """Accounts written or dropped a moment ago and not on disk yet, by key (what is
    on disk now is forgotten here: the table is the truth again)."""
    done = server.store.done
    unwritten = state.unwritten
    for key in [key for key, (number, _) in unwritten.items() if number <= done]:
        del unwritten[key]
    return {key: account for key, (_, account) in unwritten.items()}


def _matches(server: Server, nick: str) -> list[Account]:
    """Every account registered as ``nick`` or as a look-alike of it, oldest first;
    raises StoreUnavailable."""
    key, look = nick_key(nick), skeleton(nick)
    pending = _pending(server, _state(server))
    rows = server.store.read(
        "SELECT key, nick, password, registered FROM accounts WHERE key = ? OR look = ? "
        "LIMIT 16", (key, look))
    found = {row[0]: (row[1], row[2], row[3]) for row in rows if row[0] not in pending}
    for pending_key, account in pending.items():
        if account is not None and (pending_key == key or skeleton(account[0]) == look):
            found[pending_key] = account
    return sorted(found.values(), key=lambda account: (account[2], nick_key(account[0])))


def find_account(server: Server, nick: str) -> Account | None:
    """The account registered as ``nick``, else the oldest registered as a look-alike
    of it (``aIice`` finds ``alice``), or None; raises StoreUnavailable.

    What was written a moment ago and is not on disk yet comes from memory.
    """
    matches = _matches(server, nick)
    key = nick_key(nick)
    for account in matches:
        if nick_key(account[0]) == key:
            return account
    return matches[0] if matches else None


def owner_of(server: Server, nick: str) -> Account | None:
    """The account that owns the name ``nick``: the oldest of those registered as it
    or as a look-alike of it; raises StoreUnavailable."""
    matches = _matches(server, nick)
    return matches[0] if matches else None


def _account_by_key(server: Server, key: str) -> Account | None:
    """The account registered under exactly ``key`` now (memory first); raises
    StoreUnavailable."""
    pending = _pending(server, _state(server))
    if key in pending:
        return pending[key]
    rows = server.store.read("SELECT nick, password, registered FROM accounts WHERE key = ?",
                             (key,))
    return (rows[0][0], rows[0][1], rows[0][2]) if rows else None


def _unavailable(exc: StoreUnavailable) -> CommandError:
    return CommandError(f"accounts are unavailable right now ({exc}); try again soon")


def _lookup(server: Server, nick: str) -> Account | None:
    """:func:`find_account` for a command: a store problem is the user's error line."""
    try:
        return find_account(server, nick)
    except StoreUnavailable as exc:
        raise _unavailable(exc) from None


def _owner(server: Server, nick: str) -> Account | None:
    """:func:`owner_of` for a command."""
    try:
        return owner_of(server, nick)
    except StoreUnavailable as exc:
        raise _unavailable(exc) from None


def _written(server: Server, key: str, number: int, account: Account | None) -> None:
    if not number:
        raise CommandError("the server could not save that (its database is failing); "
                           "try again later")
    _state(server).unwritten[key] = (number, account)


def _identified_as(client: Client, account: Account) -> bool:
    """Whether ``client`` is identified as ``account`` (that account, not a look-alike)."""
    return client.account is not None and nick_key(client.account) == nick_key(account[0])


def _unchanged(client: Client, account: Account, *, identified: bool) -> None:
    """Raise CommandError unless ``account`` is still registered with the password that
    was just checked (and ``client`` still identified as it, if ``identified``).

    Checks run on threads, so a ``/drop`` and a ``/password`` of one account can be
    checked at once; whichever is answered second finds the account changed and
    does nothing, so a dropped account is never written back (nor dropped with a
    password it no longer has)."""
    nick = account[0]
    if identified and not _identified_as(client, account):
        raise CommandError(f"you are no longer identified as {nick} (it was dropped "
                           "meanwhile); nothing was changed")
    try:
        current = _account_by_key(client.server, nick_key(nick))
    except StoreUnavailable as exc:
        raise _unavailable(exc) from None
    if current is None:
        raise CommandError(f"{nick} was dropped meanwhile; nothing was changed")
    if current[1] != account[1]:
        raise CommandError(f"the password of {nick} was changed meanwhile; nothing was "
                           "changed: try again with the new one")


# -- the worker threads ---------------------------------------------------------------------


def _submit(client: Client, account_key: str, work: Callable[[], Any],
            then: Callable[[Client, Any], None], *, guess: bool) -> None:
    """Queue ``work()`` for a worker thread, then ``then(client, result)`` on the loop.

    A ``guess`` (a password to check against an account) is first held to the
    limits on failed attempts, and counted as failed once it is queued (forgiven
    if it succeeds).  A full lane of the fair queue refuses the sender "busy"
    before anything is counted.  What the client sends meanwhile waits for the
    answer (``/identify`` then ``/join`` joins identified), up to PAUSE_SECONDS.
    """
    server = client.server
    state = _state(server)
    source = source_of(client.address)
    if guess:
        _may_guess(client, state, source, account_key)
    lane = (source, account_key)
    if state.queue.full(lane):
        raise CommandError(BUSY)
    if guess:
        state.guesses.attempt(source, account_key)
    state.queue.put(lane, _Job(client, work, then, guess))
    server.pause_requests(client, PAUSE_SECONDS)
    _pump(server, state)


def _pump(server: Server, state: AccountsState) -> None:
    """Hand the fair queue's next checks to the threads while one is free."""
    while (taken := state.queue.next()) is not None:
        lane, job = taken
        if not job.client.connected:  # gone while waiting: nothing was checked
            state.queue.done(lane)
            if job.guess:
                state.guesses.withdraw(*lane)
            continue

        def finished(future: Future[Any], lane: Lane = lane, job: _Job = job) -> None:
            server.call_soon_threadsafe(_answer, state, lane, job, future)

        state.pool.submit(job.work).add_done_callback(finished)


def _answer(state: AccountsState, lane: Lane, job: _Job, future: Future[Any]) -> None:
    client = job.client
    server = client.server
    state.queue.done(lane)
    try:
        if future.cancelled() or not client.connected:
            return
        try:
            result = future.result()
        except Exception:
            log.exception("checking a password failed")
            client.error("internal error checking the password; the server goes on")
            return
        try:
            job.then(client, result)
        except CommandError as exc:
            client.error(str(exc))
    finally:
        server.resume_requests(client)  # what it sent meanwhile, answered after
        if server.stash.get(STATE) is state:  # not after a reload shut this pool down
            _pump(server, state)


# -- failures -------------------------------------------------------------------------------


def _may_guess(client: Client, state: AccountsState, source: str, key: str) -> None:
    """Refuse a password attempt for ``key`` from ``source`` if it failed too often."""
    refusal = state.guesses.refusal(source, key)
    if refusal == "source":
        log.warning("password attempt refused for %s (%s): too many failures from that "
                    "address", client.nick, client.address)
        raise CommandError("too many failed attempts from your address; try again later")
    if refusal is not None:
        log.warning("password attempt for %s refused (%s, %s): too many recent failures",
                    key, client.nick, client.address)
        raise CommandError("too many failed attempts for that nick; try again later")


def _succeeded(client: Client, key: str) -> None:
    _state(client.server).guesses.succeeded(source_of(client.address), key)
    client.stash.pop(FAILURES, None)


def _failed(client: Client, key: str, what: str) -> None:
    state = _state(client.server)
    mine = client.stash.get(FAILURES, 0) + 1
    client.stash[FAILURES] = mine
    source = source_of(client.address)
    from_source, for_account, pair = state.guesses.count(source, key)
    log.warning("failed %s for %s by %s (%s:%d): %d on this connection, %d for the nick, "
                "%d from the address and %d from it for the nick within %g s", what, key,
                client.nick, *client.peer, mine, for_account, from_source, pair,
                FAILURE_WINDOW)
    if mine >= CONNECTION_FAILURES_MAX:
        client.error("too many failed password attempts; disconnecting")
        client.close("too many failed password attempts")
        return
    client.error("wrong password")


def _password_problem(server: Server, password: str, nick: str) -> str | None:
    shortest = _state(server).settings["min_password_length"]
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
        raise CommandError("rooms cannot be registered on this server")
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
    state = _state(server)
    _may_register(client, state)
    nick, password = client.nick, words[0]
    if nick_key(nick).startswith(GUEST_PREFIX):
        raise CommandError("choose your nick first (/nick NAME), then /register PASSWORD")
    owner = _owner(server, nick)
    if owner is not None and _identified_as(client, owner):
        raise CommandError(f"{nick} is already registered to you")
    _free_to_register(nick, owner)
    problem = _password_problem(server, password, nick)
    if problem:
        raise CommandError(problem)
    operator = is_operator(client)
    if not operator and (state.registrations.count(client.address)
                         >= state.settings["registrations_per_hour"]):
        raise CommandError("too many nicks registered from your address; try again later")
    n = state.settings["scrypt_n"]
    _submit(client, nick_key(nick), lambda: hash_password(password, n),
            lambda c, hashed: _registered(c, nick, hashed, own=True, counted=not operator),
            guess=False)
    if not operator:
        state.registrations.add(client.address)  # now: requests sent together count too


def _may_register(client: Client, state: AccountsState) -> None:
    """Refuse a registration ``plugins.accounts.registration`` does not allow."""
    mode = state.settings["registration"]
    if mode == "closed":
        raise CommandError("registering nicks is closed on this server")
    if mode == "operators" and not is_operator(client):
        raise CommandError("only server operators register nicks on this server; ask one to "
                           "/register YOURNICK PASSWORD for you")


def _free_to_register(nick: str, owner: Account | None) -> None:
    """Refuse to register ``nick`` if it, or a look-alike, is registered (``owner``)."""
    if owner is None:
        return
    if nick_key(owner[0]) == nick_key(nick):
        raise CommandError(f"{nick} is already registered; /identify PASSWORD if it is yours")
    raise CommandError(f"{nick} looks the same as the registered nick {owner[0]}; choose "
                       "another nick")


def _register_for(client: Client, nick: str, password: str) -> None:
    """``/register NICK PASSWORD`` by a server operator: NICK is registered for
    someone else, who then identifies with PASSWORD (and changes it)."""
    server = client.server
    state = _state(server)
    _may_register(client, state)
    problem = nick_problem(nick, server.config.limits.max_nick_bytes)
    if problem:
        raise CommandError(problem)
    _free_to_register(nick, _owner(server, nick))
    problem = _password_problem(server, password, nick)
    if problem:
        raise CommandError(problem)
    n = state.settings["scrypt_n"]
    _submit(client, nick_key(nick), lambda: hash_password(password, n),
            lambda c, hashed: _registered(c, nick, hashed, own=False, counted=False),
            guess=False)


def _registered(client: Client, nick: str, hashed: str, *, own: bool, counted: bool) -> None:
    server = client.server
    state = _state(server)
    if own and nick_key(client.nick) != nick_key(nick):
        if counted:
            state.registrations.forgive(client.address)
        raise CommandError(f"you are no longer {nick}; /register again")
    try:
        taken = _matches(server, nick)
    except StoreUnavailable as exc:
        raise _unavailable(exc) from None
    if taken:
        if counted:
            state.registrations.forgive(client.address)
        raise CommandError(f"{nick} (or a nick that looks the same) was registered by "
                           "someone else a moment ago")
    now = time.time()
    key = nick_key(nick)
    number = server.store.write(
        "INSERT INTO accounts (key, nick, password, registered, seen, look) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (key, nick, hashed, now, now, skeleton(nick)),
    )
    account = (nick, hashed, now)
    _written(server, key, number, account)
    if not own:
        log.info("%s registered by operator %s (%s:%d)", nick, client.nick, *client.peer)
        client.notice(f"{nick} is registered; its owner identifies with /identify {nick} "
                      "PASSWORD and changes the password with /password")
        holder = server.find_client(nick)
        if holder is not None:
            _enforce(holder)
        return
    log.info("%s registered by %s:%d", nick, *client.peer)
    _identified(client, nick)
    client.notice(f"{nick} is registered to you, and you are identified; next time, "
                  f"/identify {nick} PASSWORD")


# -- /identify ------------------------------------------------------------------------------


def cmd_identify(client: Client, args: str) -> None:
    words = args.split()
    if len(words) not in (1, 2):
        raise UsageError()
    server = client.server
    nick, password = (client.nick, words[0]) if len(words) == 1 else (words[0], words[1])
    account = _lookup(server, nick)
    if account is None:
        hint = " (/register PASSWORD registers it)" if len(words) == 1 else ""
        raise CommandError(f"{nick} is not registered{hint}")
    if _identified_as(client, account):
        if nick_key(client.nick) == nick_key(account[0]):
            raise CommandError(f"you are already identified as {client.account}")
        _take_back(client, account)  # it is yours: no password needed to have it back
        return
    stored = account[1]
    _submit(client, nick_key(account[0]), lambda: password_matches(password, stored),
            lambda c, ok: _checked_identify(c, account, ok), guess=True)


def _checked_identify(client: Client, account: Account, ok: bool) -> None:
    nick = account[0]
    key = nick_key(nick)
    if not ok:
        _failed(client, key, "/identify")
        return
    server = client.server
    _succeeded(client, key)
    _unchanged(client, account, identified=False)
    server.store.write("UPDATE accounts SET seen = ? WHERE key = ?", (time.time(), key))
    log.info("%s (%s:%d) identified as %s", client.nick, *client.peer, nick)
    _identified(client, nick)
    client.notice(f"you are identified as {nick}")
    if nick_key(client.nick) != key:
        _take_back(client, account)


def _take_back(client: Client, account: Account) -> None:
    """Give the owner its nick, renaming an unidentified holder to a guest nick.

    Only the account that owns the name may: a look-alike account registered
    after it (possible before look-alikes were one name) is refused, so it can
    never rename the real owner.
    """
    server = client.server
    nick = account[0]
    owner = _owner(server, nick)
    if owner is not None and nick_key(owner[0]) != nick_key(nick):
        raise CommandError(f"{nick} looks the same as {owner[0]}, registered before it by "
                           f"someone else: you cannot use that nick (/drop PASSWORD gives "
                           f"{nick} up)")
    holder = server.find_client(nick)  # the same nick, or one that looks the same
    if holder is not None and holder is not client:
        if _identified_as(holder, account):
            client.notice(f"{holder.nick} is in use by another connection identified as "
                          f"{nick}")
            return
        guest = server.rename_to_guest(holder)
        holder.notice(f"the owner of {nick} identified; you are now {guest}")
        log.info("%s taken back by its owner; the holder is now %s", nick, guest)
    server.rename(client, nick)


def _identified(client: Client, nick: str) -> None:
    client.server.set_account(client, nick)
    _enforce(client)  # the grace ends, unless the nick held is a look-alike owned by another


# -- /password and /drop --------------------------------------------------------------------


def _own_account(client: Client, unidentified: str) -> Account:
    """The account ``client`` is identified as; ``unidentified`` is the error if none."""
    if client.account is None:
        raise CommandError(unidentified)
    try:
        account = _account_by_key(client.server, nick_key(client.account))
    except StoreUnavailable as exc:
        raise _unavailable(exc) from None
    if account is None:
        raise CommandError(f"{client.account} is not registered any more")
    return account


def cmd_password(client: Client, args: str) -> None:
    words = args.split()
    if len(words) != 2:
        raise UsageError()
    server = client.server
    account = _own_account(client, "identify first (/identify NICK PASSWORD)")
    old, new = words
    problem = _password_problem(server, new, account[0])
    if problem:
        raise CommandError(problem)
    n, stored = _state(server).settings["scrypt_n"], account[1]

    def work() -> str | None:
        return hash_password(new, n) if password_matches(old, stored) else None

    _submit(client, nick_key(account[0]), work,
            lambda c, hashed: _password_changed(c, account, hashed), guess=True)


def _password_changed(client: Client, account: Account, hashed: str | None) -> None:
    key = nick_key(account[0])
    if hashed is None:
        _failed(client, key, "/password")
        return
    server = client.server
    _succeeded(client, key)
    _unchanged(client, account, identified=True)
    # "AND password": on disk too, only the account that was checked is changed.
    number = server.store.write("UPDATE accounts SET password = ? WHERE key = ? AND "
                                "password = ?", (hashed, key, account[1]))
    _written(server, key, number, (account[0], hashed, account[2]))
    log.info("password of %s changed by %s:%d", account[0], *client.peer)
    client.notice(f"the password of {account[0]} is changed")


def cmd_drop(client: Client, args: str) -> None:
    words = args.split()
    if words and words[0].startswith("#"):
        _room_registrar(client)[1](client, words)
        return
    if len(words) != 1:
        raise UsageError()
    account = _own_account(client, "identify first: you can drop the nick you are identified as")
    password, stored = words[0], account[1]
    _submit(client, nick_key(account[0]), lambda: password_matches(password, stored),
            lambda c, ok: _dropped(c, account, ok), guess=True)


def _dropped(client: Client, account: Account, ok: bool) -> None:
    key = nick_key(account[0])
    if not ok:
        _failed(client, key, "/drop")
        return
    server = client.server
    _succeeded(client, key)
    _unchanged(client, account, identified=True)
    number = server.store.write("DELETE FROM accounts WHERE key = ?", (key,))
    _written(server, key, number, None)
    log.info("%s dropped by %s:%d", account[0], *client.peer)
    for other in list(server.clients.values()):
        if _identified_as(other, account):  # every connection identified as it
            server.set_account(other, None)
        grace = other.stash.get(GRACE)
        if grace is not None and grace.owner == key:  # holders of the name: free now
            _enforce(other)
            if GRACE not in other.stash:
                other.notice(f"{account[0]} is no longer registered; you may keep "
                             f"{other.nick}")
    server.hooks.call("chatd_account_dropped", server=server, account=account[0])
    client.notice(f"{account[0]} is no longer registered; anyone may use it")


# -- ownership: the grace, and who may speak ------------------------------------------------


@hookimpl
def chatd_nick_change(client: Client, new: str) -> None:
    _enforce(client)


def _enforce(client: Client) -> None:
    """Start (or keep, or end) the grace of ``client`` for the name it holds now.

    A holder of a registered name (the nick, or a look-alike) who is not
    identified as its owner gets ``grace_seconds`` to identify, may not speak
    meanwhile, and is renamed when it ends.  Changing to another form of the same
    name (case, look-alike) does not restart the clock.
    """
    server = client.server
    state = _state(server)
    grace = client.stash.get(GRACE)
    try:
        owner = owner_of(server, client.nick)
    except StoreUnavailable as exc:
        log.warning("could not check whether %s is registered (%s); not enforced",
                    client.nick, exc)
        return
    if owner is None or _identified_as(client, owner):
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
        raise Reject(refusal)
    if event.kind == "privmsg":
        target = client.server.find_client(event.target)
        if target is not None and target is not client and GRACE in target.stash:
            raise Reject(f"{target.nick} is held by someone who has not identified for it, "
                         "not by its owner; not sent")


@hookimpl
def chatd_check_speak(client: Client) -> str | None:
    """A plugin command posting to a room for such a holder (``/roll``: "alice rolled")
    speaks as the name too."""
    return _silenced(client)


@hookimpl
def chatd_client_disconnect(client: Client) -> None:
    _end_grace(client)


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
