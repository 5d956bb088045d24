"""The ``accounts`` table: lookups by nick and by look-alike, and what is not on disk yet.

An account is found by its nick's key (case) or its confusable skeleton
(``look``, :func:`chatd.skeleton`); the oldest of the look-alikes owns the
name.  Writes are queued (the loop never waits): what was written or dropped a
moment ago is kept in memory (``state.unwritten``, by the store's write number)
until it is on disk, and lookups read memory first.  A change is made only to
the account that was checked (:func:`unchanged`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chatd import Client, CommandError, Server, StoreUnavailable, skeleton
from chatd.chat.nicks import nick_key

from .state import Account, AccountsState, state_of

#: Times are seconds since the epoch: REAL on SQLite (8 bytes there), DOUBLE
#: PRECISION on PostgreSQL (its REAL has 4 bytes: a second's precision lost).
SCHEMA: list[str | dict[str, str]] = [
    {
        "sqlite": """
    CREATE TABLE accounts (
        key TEXT PRIMARY KEY,      -- the nick's key (lowercase)
        nick TEXT NOT NULL,        -- as registered
        password TEXT NOT NULL,    -- scrypt$N$r$p$salt$hash, base64: never the password
        registered REAL NOT NULL,  -- seconds since the epoch
        seen REAL NOT NULL         -- the last /identify
    );
    """,
        "postgresql": """
    CREATE TABLE accounts (
        key TEXT PRIMARY KEY,
        nick TEXT NOT NULL,
        password TEXT NOT NULL,
        registered DOUBLE PRECISION NOT NULL,
        seen DOUBLE PRECISION NOT NULL
    );
    """,
    },
    """
    ALTER TABLE accounts ADD COLUMN look TEXT;  -- chatd.skeleton(nick): look-alikes share it
    CREATE INDEX accounts_by_look ON accounts (look);
    """,
]


def refresh_looks(conn: Any) -> None:
    """(On the writer thread.)  Set each account's ``look`` to its nick's skeleton."""
    rows = conn.execute("SELECT key, nick, look FROM accounts").fetchall()
    for key, nick, look in rows:
        fresh = skeleton(nick)
        if fresh != look:
            conn.execute("UPDATE accounts SET look = ? WHERE key = ?", (fresh, key))


def unwritten_accounts(server: Server, state: AccountsState) -> dict[str, Account | None]:
    """Accounts written or dropped a moment ago and not on disk yet, by key (what is
    on disk now is forgotten here: the table is the truth again)."""
    done = server.store.done
    unwritten = state.unwritten
    for key in [key for key, (number, _) in unwritten.items() if number <= done]:
        del unwritten[key]
    return {key: account for key, (_, account) in unwritten.items()}


def accounts_like(server: Server, nick: str) -> list[Account]:
    """Every account registered as ``nick`` or as a look-alike of it, oldest first;
    raises StoreUnavailable.  A read on the loop (``store.read``, cut at
    ``storage.read_timeout_seconds``): for what cannot wait (a filter); everything a
    client waits for asks off the loop instead (:func:`ask_like`)."""
    key, look = nick_key(nick), skeleton(nick)
    pending = unwritten_accounts(server, state_of(server))
    return _merged(nick, server.store.read(_LIKE, (key, look)), pending)


def find_account(server: Server, nick: str) -> Account | None:
    """The account registered as ``nick``, else the oldest registered as a look-alike
    of it (``aIice`` finds ``alice``), or None; raises StoreUnavailable.

    What was written a moment ago and is not on disk yet comes from memory.  A read
    on the loop (see :func:`accounts_like`; :func:`ask_find` asks off it).
    """
    return pick(nick, accounts_like(server, nick))


def owner_of(server: Server, nick: str) -> Account | None:
    """The account that owns the name ``nick``: the oldest of those registered as it
    or as a look-alike of it; raises StoreUnavailable."""
    matches = accounts_like(server, nick)
    return matches[0] if matches else None


def unavailable(exc: StoreUnavailable | str | None) -> CommandError:
    """A store that cannot answer, as the user's error line."""
    return CommandError(f"accounts are unavailable right now ({exc}); try again soon",
                        code="unavailable")


def written(server: Server, key: str, number: int, account: Account | None) -> None:
    """``account`` (None: dropped) was queued for the disk as write ``number``: keep it
    in memory until it is there, and tell every other process sharing the database
    once it is (``store.notify``); a write the store refused (0) is the user's error."""
    if not number:
        raise CommandError("the server could not save that (its database is failing); "
                           "try again later", code="unavailable")
    state_of(server).unwritten[key] = (number, account)
    server.store.notify(CHANNEL, key)


#: The change notices' channel: the payload is the key of the account registered,
#: dropped or given a new password.
CHANNEL = "chatd_accounts"
_LIKE = ("SELECT key, nick, password, registered FROM accounts WHERE key = ? OR look = ? "
         "LIMIT 16")


def _merged(nick: str, rows: list[tuple[Any, ...]],
            pending: dict[str, Account | None]) -> list[Account]:
    """The accounts like ``nick``: ``rows`` from the table, with what was not on disk
    when they were asked for (``pending``) over them; oldest first."""
    key, look = nick_key(nick), skeleton(nick)
    found = {row[0]: (row[1], row[2], row[3]) for row in rows if row[0] not in pending}
    for pending_key, account in pending.items():
        if account is not None and (pending_key == key or skeleton(account[0]) == look):
            found[pending_key] = account
    return sorted(found.values(), key=lambda account: (account[2], nick_key(account[0])))


def ask_like(server: Server, asker: Client | None, nick: str,
             then: Callable[[list[Account] | None, str | None], Any], *,
             expired: Callable[[], Any] | None = None) -> None:
    """Every account like ``nick`` (:func:`accounts_like`), asked off the loop
    (``server.ask_store``): ``then(matches, None)``, or ``then(None, why)`` when the
    database cannot answer (in time).  ``asker``'s later lines wait for it (None:
    nobody waits; a background check).  ``expired``: see ``server.ask_store``."""
    # What is not on disk now: the rows come from after this moment (anything
    # committed before it is in them), and what is committed meanwhile must not
    # go missing from both.
    pending = unwritten_accounts(server, state_of(server))

    def answered(answer: Any) -> None:
        if not answer.ok:
            then(None, str(answer.error))
        else:
            then(_merged(nick, answer.rows, pending), None)

    server.ask_store(asker, _LIKE, (nick_key(nick), skeleton(nick)), answered, expired=expired)


def ask_accounts_like(client: Client, nick: str,
                      then: Callable[[list[Account]], Any]) -> None:
    """:func:`accounts_like` for a command, off the loop (``server.ask_store``): the
    client's later lines wait for it; a database that cannot answer (in time) is the
    client's "accounts are unavailable" line, and holds nobody else."""

    def answered(matches: list[Account] | None, error: str | None) -> None:
        # Told here, not raised: an answer given inline (a store with no loop) comes
        # through the store's reader, which would log it instead of telling it.
        try:
            if matches is None:
                raise unavailable(error)
            then(matches)
        except CommandError as exc:
            client.error(str(exc), code=exc.code)

    ask_like(client.server, client, nick, answered)


def ask_by_key(client: Client, key: str, then: Callable[[Account | None], Any]) -> None:
    """:func:`account_by_key` for a command, off the loop (see :func:`ask_accounts_like`)."""
    server = client.server
    pending = unwritten_accounts(server, state_of(server))

    def answered(answer: Any) -> None:
        if key in pending:  # written a moment ago: memory is the truth until it is on disk
            _told(client, then, pending[key])
        elif not answer.ok:
            client.error(str(unavailable(answer.error)), code="unavailable")
        else:
            rows = answer.rows
            _told(client, then, (rows[0][0], rows[0][1], rows[0][2]) if rows else None)

    server.ask_store(client, "SELECT nick, password, registered FROM accounts WHERE key = ?",
                     (key,), answered)


def _told(client: Client, then: Callable[[Account | None], Any], account: Account | None) -> None:
    """``then(account)``, its CommandError told to the client (see ask_accounts_like)."""
    try:
        then(account)
    except CommandError as exc:
        client.error(str(exc), code=exc.code)


def pick(nick: str, matches: list[Account]) -> Account | None:
    """The account registered as ``nick`` among ``matches`` (the accounts like it,
    oldest first), else the oldest look-alike (:func:`find_account`'s rule), or None."""
    key = nick_key(nick)
    exact = [account for account in matches if nick_key(account[0]) == key]
    return exact[0] if exact else matches[0] if matches else None


def ask_find(client: Client, nick: str, then: Callable[[Account | None], Any]) -> None:
    """:func:`find_account`, asked off the loop (see :func:`ask_accounts_like`)."""
    ask_accounts_like(client, nick, lambda matches: then(pick(nick, matches)))


def ask_owner(client: Client, nick: str, then: Callable[[Account | None], Any]) -> None:
    """:func:`owner_of`, asked off the loop (see :func:`ask_accounts_like`)."""
    ask_accounts_like(client, nick, lambda matches: then(matches[0] if matches else None))


def identified_as(client: Client, account: Account) -> bool:
    """Whether ``client`` is identified as ``account`` (that account, not a look-alike)."""
    return client.account is not None and nick_key(client.account) == nick_key(account[0])


def ask_unchanged(client: Client, account: Account, *, identified: bool,
                  then: Callable[[list[Account]], Any]) -> None:
    """``then(matches)`` (every account like ``account``'s nick, oldest first) once
    ``account`` is known to be still registered with the password that was just
    checked (and ``client`` still identified as it, if ``identified``); else the
    client is told why nothing was changed.  Asked off the loop (see
    :func:`ask_accounts_like`).

    Checks run on threads, so a ``/drop`` and a ``/password`` of one account can be
    checked at once; whichever is answered second finds the account changed and
    does nothing, so a dropped account is never written back (nor dropped with a
    password it no longer has)."""
    nick = account[0]
    if identified and not identified_as(client, account):
        raise CommandError(f"you are no longer identified as {nick} (it was dropped "
                           "meanwhile); nothing was changed", code="conflict")

    def answered(matches: list[Account]) -> None:
        if identified and not identified_as(client, account):
            raise CommandError(f"you are no longer identified as {nick} (it was dropped "
                               "meanwhile); nothing was changed", code="conflict")
        current = [found for found in matches if nick_key(found[0]) == nick_key(nick)]
        if not current:
            raise CommandError(f"{nick} was dropped meanwhile; nothing was changed",
                               code="conflict")
        if current[0][1] != account[1]:
            raise CommandError(f"the password of {nick} was changed meanwhile; nothing was "
                               "changed: try again with the new one", code="conflict")
        then(matches)

    ask_accounts_like(client, nick, answered)
