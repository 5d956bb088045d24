"""A password checked before a session begins (IRC's SASL PLAIN): the server's account check.

The accounts plugin provides :func:`check` through the public
``server.provide_account_check``; a protocol asks it with
``server.check_account_password`` (never by importing this plugin).  The check
is held to the same limits on failed attempts as ``/identify`` (per source, per
account, per source and account: :mod:`.limits`) and runs in the same fair
queue on the same worker threads (:mod:`.queue`).  There is no client yet: a
:class:`Pending` login stands in the queue where a client would, and its answer
goes to the protocol's ``then``.  The per-connection limit (5 failures, then the
connection closes) is the protocol's to keep: it owns the connection.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from chatd import Server
from chatd.chat.nicks import nick_key

from ..attempts import source_of
from .passwords import password_matches
from .queue import pump
from .state import Account, Job, state_of
from .store import ask_like, pick

log = logging.getLogger("chatd.accounts")

Answer = Callable[[str | None, str | None], Any]


class Pending:
    """A login waiting in the fair queue where a client's check would: what the queue
    asks of a client (``connected``, ``error``, ``server``, ``intake``), answered to
    the protocol's ``then``."""

    __slots__ = ("_alive", "intake", "server", "then")

    def __init__(self, server: Server, alive: Callable[[], bool], then: Answer) -> None:
        self.server = server
        self._alive = alive
        self.then = then
        self.intake = None  # no requests of its own to hold or resume

    @property
    def connected(self) -> bool:
        return bool(self._alive())

    def error(self, text: str, *, code: str | None = None) -> None:
        """The check could not be made (an internal error, a stop): ``unavailable``."""
        self.then(None, "unavailable")


def check(server: Server, account: str, password: str, address: str,
          alive: Callable[[], bool], then: Answer) -> None:
    """``server.check_account_password``'s answer (see its docstring).  The account is
    read off the loop (nobody waits: there is no session yet to hold); a database
    that cannot answer (in time) is ``unavailable``."""
    state_of(server)  # no accounts: the protocol is told at once

    def answered(matches: list[Account] | None, error: str | None) -> None:
        if not alive():  # gone meanwhile: nothing is checked
            return
        if matches is None:
            then(None, "unavailable")
            return
        _found(server, password, address, alive, then, pick(account, matches))

    def expired() -> None:
        answered(None, "no answer in time")

    ask_like(server, None, account, answered, expired=expired)  # one of them runs, once


def _found(server: Server, password: str, address: str, alive: Callable[[], bool],
           then: Answer, found: Account | None) -> None:
    """:func:`check`'s second half: the account is known."""
    state = state_of(server)
    if found is None:
        then(None, "not_registered")
        return
    key = nick_key(found[0])
    source = source_of(address)
    if state.guesses.refusal(source, key) is not None:
        log.warning("SASL attempt for %s from %s refused: too many recent failures", key,
                    address)
        then(None, "too_many_attempts")
        return
    lane = (source, key)
    if state.queue.full(lane):
        then(None, "unavailable")
        return
    state.guesses.attempt(source, key)
    stored = found[1]
    pending = Pending(server, alive, then)
    state.queue.put(lane, Job(pending, lambda: password_matches(password, stored),  # type: ignore[arg-type]
                              functools.partial(_checked, found, source, address), True))
    pump(server, state)


def _checked(account: Account, source: str, address: str, pending: Pending, ok: bool) -> None:
    """The worker's answer, on the loop: a success forgives, a failure is counted (and
    logged, as ``/identify``'s are)."""
    server = pending.server
    state = state_of(server)
    key = nick_key(account[0])
    if not ok:
        from_source, for_account, pair = state.guesses.count(source, key)
        log.warning("failed SASL login for %s from %s: %d for the nick, %d from the address "
                    "and %d from it for the nick", key, address, for_account, from_source, pair)
        pending.then(None, "wrong_password")
        return
    state.guesses.succeeded(source, key)
    server.store.write("UPDATE accounts SET seen = ? WHERE key = ?", (time.time(), key))
    log.info("%s logged in as %s (SASL)", address, account[0])
    pending.then(account[0], None)
