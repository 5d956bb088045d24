"""Failed password attempts: the limits a guess is held to, and what a failure costs.

Per source (an address; an IPv6 /64), per account and per source and account
(:class:`chatd.builtin.attempts.GuessLimits`, in ``state.guesses``): a
connection that fails 5 times is closed; a source with ``failures_per_address``
failures within 10 minutes may try nothing, a source with 5 failures for one
account may not try that one; an account with 10 failures is *under attack*: a
source that failed for it may not try it again, one that has not (the owner,
elsewhere) still may.  Every failure is logged with the counts.
"""

from __future__ import annotations

import logging

from chatd import Client, CommandError, StashKey

from ..attempts import source_of
from .state import FAILURE_WINDOW, AccountsState, state_of

log = logging.getLogger("chatd.accounts")

#: Failed attempts before the connection is closed.
CONNECTION_FAILURES_MAX = 5
FAILURES: StashKey[int] = StashKey()


def may_guess(client: Client, state: AccountsState, source: str, key: str) -> None:
    """Refuse a password attempt for ``key`` from ``source`` if it failed too often."""
    refusal = state.guesses.refusal(source, key)
    if refusal == "source":
        log.warning("password attempt refused for %s (%s): too many failures from that "
                    "address", client.nick, client.address)
        raise CommandError("too many failed attempts from your address; try again later",
                           code="too_many_attempts")
    if refusal is not None:
        log.warning("password attempt for %s refused (%s, %s): too many recent failures",
                    key, client.nick, client.address)
        raise CommandError("too many failed attempts for that nick; try again later",
                           code="too_many_attempts")


def succeeded(client: Client, key: str) -> None:
    state_of(client.server).guesses.succeeded(source_of(client.address), key)
    client.stash.pop(FAILURES, None)


def failed(client: Client, key: str, what: str) -> None:
    state = state_of(client.server)
    mine = client.stash.get(FAILURES, 0) + 1
    client.stash[FAILURES] = mine
    source = source_of(client.address)
    from_source, for_account, pair = state.guesses.count(source, key)
    log.warning("failed %s for %s by %s (%s:%d): %d on this connection, %d for the nick, "
                "%d from the address and %d from it for the nick within %g s", what, key,
                client.nick, *client.peer, mine, for_account, from_source, pair,
                FAILURE_WINDOW)
    if mine >= CONNECTION_FAILURES_MAX:
        client.error("too many failed password attempts; disconnecting", code="too_many_attempts")
        client.close("too many failed password attempts")
        return
    client.error("wrong password", code="wrong_password")
