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

The accounts live in the ``accounts`` table of the store (``storage.path`` or
``storage.url``).  Reads are asked off the loop (``server.ask_store``): a command,
a rename or a connection holds only that client's later lines until the answer
(a database that cannot answer in time: "accounts are unavailable", or for a
rename, not enforced and logged); the one read left on the loop is noted in
:mod:`.grace`.  Look-alike registrations made at once on two processes sharing
PostgreSQL: exactly one wins (checked inside the inserting transaction, under a
lock per look-alike form).  Writes are queued (the loop never waits); an account
registered (or dropped) a moment ago is kept in memory until it is on disk,
across a reload too, so it is never missing (or back) in between.  A
change is made only to the account that was checked: a ``/password`` answered
after a ``/drop`` of the same account (or the other way round) is refused, so
a dropped account cannot come back.

The plugin is this package (pluggy registers it, so it names every hook
implementation of its parts); each part has one job, and imports flow one way
(import-linter checks it):

* :mod:`.commands` -- ``/register``, ``/identify``, ``/password``, ``/drop``;
* :mod:`.grace` and :mod:`.queue` -- who may hold and speak as a registered
  name; the password checks off the loop, in a fair queue;
* :mod:`.login` -- a password checked before a session (IRC's SASL), the
  server's account check (``server.provide_account_check``);
* :mod:`.limits` -- failed attempts;
* :mod:`.store` -- the ``accounts`` table and what is not on disk yet;
* :mod:`.state` and :mod:`.passwords` -- the plugin's state; scrypt.

This module starts and stops it (its settings, the schema, the state).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from chatd import Client, Server, StashKey, hookimpl

from ..sections import Range, section_settings
from . import login
from .commands import ROOM_REGISTRAR, chatd_commands
from .grace import (
    chatd_check_speak,
    chatd_client_disconnect,
    chatd_filter_message,
    chatd_nick_change,
    enforce,
    noticed,
)
from .passwords import PASSWORD_MAX, SCRYPT_N_MAX, hash_password, password_matches
from .state import STATE, Account, AccountsState
from .store import CHANNEL, SCHEMA, ask_like, find_account, owner_of, pick, refresh_looks

__all__ = [
    "ROOM_REGISTRAR",
    "SCRYPT_N_MAX",
    "STATE",
    "Account",
    "ask_like",
    "chatd_check_speak",
    "chatd_client_connect",
    "chatd_client_disconnect",
    "chatd_commands",
    "chatd_filter_message",
    "chatd_nick_change",
    "chatd_shutdown",
    "chatd_startup",
    "find_account",
    "hash_password",
    "owner_of",
    "password_matches",
    "pick",
]

log = logging.getLogger("chatd.accounts")

REGISTRATION_MODES = ("open", "operators", "closed")

#: The store this plugin listens to for other processes' changes (once per store:
#: a reload starts the plugin again, the listener stays).
LISTENING: StashKey[object] = StashKey()
#: A store starts listening to a channel within about half a second of ``listen``
#: (its listener thread connects, or picks the new channel up): a notice sent
#: meanwhile is missed.  So once that is surely over, everything is looked at again.
LISTEN_SETTLED = 1.0

DEFAULTS: dict[str, Any] = {
    "grace_seconds": 60.0,
    "min_password_length": 8,
    "scrypt_n": 16384,
    "registrations_per_hour": 3,
    "registration": "open",
    "failures_per_address": 20,
}

#: The values each number setting may take (a wrong one stops the server with its key).
RANGES = {
    "grace_seconds": Range(0, 86400.0, above=True),  # a timer: at most a day
    "min_password_length": Range(1, PASSWORD_MAX),
    "scrypt_n": Range(1024, SCRYPT_N_MAX),  # and a power of two (checked at startup)
    "registrations_per_hour": Range(0, 1_000_000),
    "failures_per_address": Range(1, 1_000_000),
}


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
    store.write(refresh_looks)
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
    # A password checked before a session (IRC's SASL), through the public API.
    server.provide_account_check(functools.partial(login.check, server))
    if server.stash.get(LISTENING) is not store:
        server.stash[LISTENING] = store
        store.listen(CHANNEL, functools.partial(noticed, server))
        if store.dialect != "sqlite":  # see LISTEN_SETTLED
            server.call_later(LISTEN_SETTLED, noticed, server, None)
    for client in list(server.clients.values()):  # a reload: the holders of names again
        enforce(client, hold=False)


@hookimpl
def chatd_client_connect(client: Client) -> None:
    """A session that begins with a nick its protocol wished for (IRC's ``NICK`` at
    registration, a plugin protocol's) has it quietly, with no ``chatd_nick_change``:
    its holder is held to the grace here, as a rename to it would be (an account the
    protocol authenticated counts as identified).  A ``guest-N`` nick is the server's,
    never registered: no lookup for it."""
    if not client.nick.lower().startswith("guest-"):
        enforce(client)


@hookimpl
def chatd_shutdown(server: Server) -> None:
    server.provide_account_check(None)
    state = server.stash.get(STATE)
    if state is None:
        return
    state.pool.shutdown(wait=False, cancel_futures=True)
    for job in state.queue.clear():  # waiting for a thread that will not come
        if job.client.connected:  # a reload or a stop: the plugin cannot tell which
            job.client.error("your password was not checked: the server is reloading or "
                             "stopping; try again", code="unavailable")
            server.resume_requests(job.client)
