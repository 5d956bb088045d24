"""Built-in plugin *accounts*: registered nicks, owned by a password.

* ``/register PASSWORD`` registers your current nick to you (and identifies
  you); ``/identify [NICK] PASSWORD`` proves it is yours on a later connection;
  ``/password OLD NEW`` changes the password; ``/drop PASSWORD`` gives the nick
  up.  ``/register #room`` is room registration (the *moderation* plugin).
* A registered nick is owned.  Whoever takes it without identifying is told to
  ``/identify`` within ``grace_seconds`` (60) and is renamed to ``guest-N``
  after that.  ``/identify NICK PASSWORD`` while someone else holds NICK
  unidentified takes it back from them at once (they become ``guest-N``).
* An identified client's ``client.account`` is its registered nick (it keeps
  the account when it changes nick); ``/whois`` shows it, room moderation
  trusts it (operators and bans by account).

Passwords are one word of ``min_password_length`` (8) to 256 characters,
hashed with scrypt (the standard library's ``hashlib.scrypt``: memory-hard,
``scrypt_n`` 16384, r 8, p 1, 16 MiB and ~30 ms per hash, a random salt per
account) on a worker thread, never on the event loop.  A password is never
logged, stored in clear or put in history (commands are neither).  Failed
attempts are limited: a connection that fails 5 times is closed; a nick with 10
failures within 10 minutes, or an address with 20, is refused further attempts
until the window passes; an address may register 3 nicks an hour.

The accounts live in the ``accounts`` table of the store (``storage.path``).
Writes are queued (the loop never waits); an account registered a moment ago
is kept in memory until it is on disk, so it is never missing in between.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from chatd import (
    Client,
    Command,
    CommandError,
    Server,
    StashKey,
    StoreUnavailable,
    UsageError,
    hookimpl,
)
from chatd.chat.nicks import GUEST_PREFIX, nick_key

from .attempts import RecentFailures
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
]

DEFAULTS: dict[str, Any] = {
    "grace_seconds": 60.0,
    "min_password_length": 8,
    "scrypt_n": 16384,
    "registrations_per_hour": 3,
}

PASSWORD_MAX = 256
#: Failed attempts before the connection is closed.
CONNECTION_FAILURES_MAX = 5
#: Failed attempts within FAILURE_WINDOW before a nick, or an address, is refused.
ACCOUNT_FAILURES_MAX = 10
ADDRESS_FAILURES_MAX = 20
FAILURE_WINDOW = 600.0
#: Password checks waiting for the worker threads before new ones are refused.
HASHING_MAX = 16
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
}

#: One account: (nick as registered, password hash, registered at).
Account = tuple[str, str, float]

STATE: StashKey[AccountsState] = StashKey()
#: ``/register #room`` and ``/drop #room`` are room registration: the plugin that
#: does it (the built-in *moderation*) puts its two functions here at startup.
ROOM_REGISTRAR: StashKey[tuple[Callable[[Client, list[str]], None],
                              Callable[[Client, list[str]], None]]] = StashKey()
#: The grace timer of a client holding a registered nick it has not identified for.
GRACE: StashKey[Any] = StashKey()
FAILURES: StashKey[int] = StashKey()


class AccountsState:
    """The plugin's state, kept in ``server.stash``."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="chatd-kdf")
        #: Password checks handed to the pool and not yet answered.
        self.hashing = 0
        #: Accounts written (or dropped: None) and not yet on disk, by key, with
        #: the store's write number.
        self.unwritten: dict[str, tuple[int, Account | None]] = {}
        self.account_failures = RecentFailures(FAILURE_WINDOW)
        self.address_failures = RecentFailures(FAILURE_WINDOW)
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
    server.store.migrate("accounts", SCHEMA)
    server.stash[STATE] = AccountsState(settings)


@hookimpl
def chatd_shutdown(server: Server) -> None:
    state = server.stash.get(STATE)
    if state is not None:
        state.pool.shutdown(wait=False, cancel_futures=True)


def _state(server: Server) -> AccountsState:
    state: AccountsState | None = server.stash.get(STATE)
    if state is None:
        raise CommandError("accounts are not available on this server")
    return state


# -- the table ------------------------------------------------------------------------------


def find_account(server: Server, nick: str) -> Account | None:
    """The account registered for ``nick``, or None; raises StoreUnavailable.

    What was written a moment ago and is not on disk yet comes from memory.
    """
    state = _state(server)
    key = nick_key(nick)
    entry = state.unwritten.get(key)
    if entry is not None:
        number, account = entry
        if number > server.store.done:
            return account
        del state.unwritten[key]  # on disk now: the table is the truth again
    rows = server.store.read("SELECT nick, password, registered FROM accounts WHERE key = ?",
                             (key,))
    return (rows[0][0], rows[0][1], rows[0][2]) if rows else None


def _lookup(server: Server, nick: str) -> Account | None:
    """:func:`find_account` for a command: a store problem is the user's error line."""
    try:
        return find_account(server, nick)
    except StoreUnavailable as exc:
        raise CommandError(f"accounts are unavailable right now ({exc}); try again soon") from None


def _written(server: Server, key: str, number: int, account: Account | None) -> None:
    if not number:
        raise CommandError("the server could not save that (its database is failing); "
                           "try again later")
    _state(server).unwritten[key] = (number, account)


def identified_for(client: Client, nick: str) -> bool:
    """Whether ``client`` is identified as the owner of ``nick``."""
    return client.account is not None and nick_key(client.account) == nick_key(nick)


# -- the worker threads ---------------------------------------------------------------------


def _off_loop(client: Client, work: Callable[[], Any], then: Callable[[Client, Any], None]
              ) -> None:
    """Run ``work()`` on a worker thread, then ``then(client, result)`` on the loop.

    What the client sends meanwhile waits for the answer (``/identify`` then
    ``/join`` joins identified), up to PAUSE_SECONDS.
    """
    server = client.server
    state = _state(server)
    if state.hashing >= HASHING_MAX:
        raise CommandError("the server is busy checking passwords; try again in a moment")
    state.hashing += 1
    server.pause_requests(client, PAUSE_SECONDS)

    def finished(future: Future[Any]) -> None:
        server.call_soon_threadsafe(_answer, state, client, future, then)

    state.pool.submit(work).add_done_callback(finished)


def _answer(state: AccountsState, client: Client, future: Future[Any],
            then: Callable[[Client, Any], None]) -> None:
    state.hashing -= 1
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
            then(client, result)
        except CommandError as exc:
            client.error(str(exc))
    finally:
        client.server.resume_requests(client)  # what it sent meanwhile, answered after


# -- failures -------------------------------------------------------------------------------


def _attempt(client: Client, key: str) -> None:
    """A password attempt for ``key``: refused if too many failed lately, else counted
    as a failure at once (forgiven if it succeeds), so guesses sent together while
    the first ones are still being hashed cannot slip past the limits."""
    state = _state(client.server)
    if state.address_failures.count(client.address) >= ADDRESS_FAILURES_MAX:
        log.warning("password attempt refused for %s (%s): too many failures from that "
                    "address", client.nick, client.address)
        raise CommandError("too many failed attempts from your address; try again later")
    if state.account_failures.count(key) >= ACCOUNT_FAILURES_MAX:
        log.warning("password attempt for %s refused (%s, %s): too many recent failures",
                    key, client.nick, client.address)
        raise CommandError("too many failed attempts for that nick; try again later")
    state.account_failures.add(key)
    state.address_failures.add(client.address)


def _succeeded(client: Client, key: str) -> None:
    state = _state(client.server)
    state.account_failures.clear(key)
    state.address_failures.forgive(client.address)
    client.stash.pop(FAILURES, None)


def _failed(client: Client, key: str, what: str) -> None:
    state = _state(client.server)
    mine = client.stash.get(FAILURES, 0) + 1
    client.stash[FAILURES] = mine
    log.warning("failed %s for %s by %s (%s:%d): %d on this connection, %d for the nick and "
                "%d from the address within %g s", what, key, client.nick, *client.peer, mine,
                state.account_failures.count(key), state.address_failures.count(client.address),
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


# -- commands -------------------------------------------------------------------------------


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
    if len(words) != 1:
        raise UsageError("a password is one word")
    server = client.server
    state = _state(server)
    nick, password = client.nick, words[0]
    if nick_key(nick).startswith(GUEST_PREFIX):
        raise CommandError("choose your nick first (/nick NAME), then /register PASSWORD")
    if identified_for(client, nick):
        raise CommandError(f"{nick} is already registered to you")
    if _lookup(server, nick) is not None:
        raise CommandError(f"{nick} is already registered; /identify PASSWORD if it is yours")
    problem = _password_problem(server, password, nick)
    if problem:
        raise CommandError(problem)
    if state.registrations.count(client.address) >= state.settings["registrations_per_hour"]:
        raise CommandError("too many nicks registered from your address; try again later")
    state.registrations.add(client.address)  # now: requests sent together count too
    n = state.settings["scrypt_n"]
    _off_loop(client, lambda: hash_password(password, n), lambda c, hashed: _registered(
        c, nick, hashed))


def _registered(client: Client, nick: str, hashed: str) -> None:
    server = client.server
    state = _state(server)
    if nick_key(client.nick) != nick_key(nick):
        state.registrations.forgive(client.address)
        raise CommandError(f"you are no longer {nick}; /register again")
    if _lookup(server, nick) is not None:
        state.registrations.forgive(client.address)
        raise CommandError(f"{nick} was registered by someone else a moment ago")
    now = time.time()
    key = nick_key(nick)
    number = server.store.write(
        "INSERT INTO accounts (key, nick, password, registered, seen) VALUES (?, ?, ?, ?, ?)",
        (key, nick, hashed, now, now),
    )
    _written(server, key, number, (nick, hashed, now))
    log.info("%s registered by %s:%d", nick, *client.peer)
    _identified(client, nick)
    client.notice(f"{nick} is registered to you, and you are identified; next time, "
                  f"/identify {nick} PASSWORD")


def cmd_identify(client: Client, args: str) -> None:
    words = args.split()
    if len(words) not in (1, 2):
        raise UsageError()
    server = client.server
    nick, password = (client.nick, words[0]) if len(words) == 1 else (words[0], words[1])
    key = nick_key(nick)
    if identified_for(client, nick):
        if nick_key(client.nick) == key:
            raise CommandError(f"you are already identified as {client.account}")
        _take_back(client, nick)  # it is yours: no password needed to have it back
        return
    account = _lookup(server, nick)
    if account is None:
        hint = " (/register PASSWORD registers it)" if len(words) == 1 else ""
        raise CommandError(f"{nick} is not registered{hint}")
    _attempt(client, key)
    stored = account[1]
    _off_loop(client, lambda: password_matches(password, stored),
              lambda c, ok: _checked_identify(c, account, ok))


def _checked_identify(client: Client, account: Account, ok: bool) -> None:
    nick = account[0]
    key = nick_key(nick)
    if not ok:
        _failed(client, key, "/identify")
        return
    server = client.server
    _succeeded(client, key)
    server.store.write("UPDATE accounts SET seen = ? WHERE key = ?", (time.time(), key))
    log.info("%s (%s:%d) identified as %s", client.nick, *client.peer, nick)
    _identified(client, nick)
    client.notice(f"you are identified as {nick}")
    if nick_key(client.nick) != key:
        _take_back(client, nick)


def _take_back(client: Client, nick: str) -> None:
    """Give the owner its nick, renaming an unidentified holder to a guest nick."""
    server = client.server
    holder = server.find_client(nick)
    if holder is not None:
        if identified_for(holder, nick):
            client.notice(f"{holder.nick} is in use by another connection identified as {nick}")
            return
        guest = server.rename_to_guest(holder)
        holder.notice(f"the owner of {nick} identified; you are now {guest}")
        log.info("%s taken back by its owner; the holder is now %s", nick, guest)
    server.rename(client, nick)


def _identified(client: Client, nick: str) -> None:
    timer = client.stash.pop(GRACE, None)
    if timer is not None:
        timer.cancel()
    client.server.set_account(client, nick)


def _own_account(client: Client, unidentified: str) -> Account:
    """The account ``client`` is identified as; ``unidentified`` is the error if none."""
    if client.account is None:
        raise CommandError(unidentified)
    account = _lookup(client.server, client.account)
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
    key = nick_key(account[0])
    _attempt(client, key)
    n, stored = _state(server).settings["scrypt_n"], account[1]

    def work() -> str | None:
        return hash_password(new, n) if password_matches(old, stored) else None

    _off_loop(client, work, lambda c, hashed: _password_changed(c, account, hashed))


def _password_changed(client: Client, account: Account, hashed: str | None) -> None:
    key = nick_key(account[0])
    if hashed is None:
        _failed(client, key, "/password")
        return
    server = client.server
    _succeeded(client, key)
    number = server.store.write("UPDATE accounts SET password = ? WHERE key = ?", (hashed, key))
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
    key = nick_key(account[0])
    _attempt(client, key)
    password, stored = words[0], account[1]
    _off_loop(client, lambda: password_matches(password, stored),
              lambda c, ok: _dropped(c, account, ok))


def _dropped(client: Client, account: Account, ok: bool) -> None:
    key = nick_key(account[0])
    if not ok:
        _failed(client, key, "/drop")
        return
    server = client.server
    _succeeded(client, key)
    number = server.store.write("DELETE FROM accounts WHERE key = ?", (key,))
    _written(server, key, number, None)
    log.info("%s dropped by %s:%d", account[0], *client.peer)
    for other in list(server.clients.values()):  # every connection identified as it
        if identified_for(other, account[0]):
            server.set_account(other, None)
    server.hooks.call("chatd_account_dropped", server=server, account=account[0])
    client.notice(f"{account[0]} is no longer registered; anyone may use it")


# -- ownership ------------------------------------------------------------------------------


@hookimpl
def chatd_nick_change(client: Client, new: str) -> None:
    timer = client.stash.pop(GRACE, None)
    if timer is not None:
        timer.cancel()
    if identified_for(client, new):
        return
    server = client.server
    try:
        account = find_account(server, new)
    except StoreUnavailable as exc:
        log.warning("could not check whether %s is registered (%s); not enforced", new, exc)
        return
    if account is None:
        return
    grace = _state(server).settings["grace_seconds"]
    client.notice(f"{new} is registered: /identify PASSWORD within {grace:g} s, or you will "
                  "be renamed")
    client.stash[GRACE] = server.call_later(grace, _grace_over, client, new)


def _grace_over(client: Client, nick: str) -> None:
    client.stash.pop(GRACE, None)
    if not client.connected or nick_key(client.nick) != nick_key(nick):
        return
    if identified_for(client, nick):
        return
    guest = client.server.rename_to_guest(client)
    log.info("%s did not identify for %s in time; renamed %s", client.address, nick, guest)
    client.notice(f"you did not identify for {nick}; you are now {guest}")


@hookimpl
def chatd_client_disconnect(client: Client) -> None:
    timer = client.stash.pop(GRACE, None) if client._stash is not None else None
    if timer is not None:
        timer.cancel()


@hookimpl
def chatd_commands() -> list[Command]:
    return [
        Command(
            "register", cmd_register, "/register PASSWORD | /register #room",
            "register your nick (or a room you are in) to you",
            "Registers your current nick: nobody else can keep it once you have\n"
            "registered it. Next time, /identify NICK PASSWORD. /register #room makes\n"
            "you the founder of a room (you must be identified).",
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
