"""The accounts plugin's state: what it holds between requests, and the numbers it is built with.

One :class:`AccountsState` per plugin start, in ``server.stash[STATE]``: the
settings, the worker threads and the fair queue of password checks
(:class:`Job`, run by :mod:`.queue`), the accounts written and not yet on disk (:mod:`.store`), the
limits on failed attempts and on registrations (:mod:`.limits`).  A reload
makes a new one and keeps only what is not on disk yet.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from chatd import Client, CommandError, Server, StashKey

from ..attempts import GuessLimits, RecentFailures
from ..fairqueue import FairQueue

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

#: One account: (nick as registered, password hash, registered at).
Account = tuple[str, str, float]

STATE: StashKey[AccountsState] = StashKey()


@dataclass(slots=True, frozen=True)
class Job:
    """A password check waiting in the fair queue: the work for the thread, what to do
    with its result on the loop, and whether it is a guess counted as a failure."""

    client: Client
    work: Callable[[], Any]
    then: Callable[[Client, Any], Any]
    guess: bool


class AccountsState:
    """The plugin's state, kept in ``server.stash``."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.pool = ThreadPoolExecutor(max_workers=HASH_WORKERS, thread_name_prefix="chatd-kdf")
        #: Password checks waiting for a thread, and running, by address and account.
        self.queue: FairQueue[Job] = FairQueue(
            workers=HASH_WORKERS, per_lane=HASHING_PER_LANE, lane_max=WAITING_PER_LANE,
            total_max=WAITING_MAX)
        #: Accounts written (or dropped: None) and not yet on disk, by key, with
        #: the store's write number.
        self.unwritten: dict[str, tuple[int, Account | None]] = {}
        self.guesses = GuessLimits(per_source=settings["failures_per_address"],
                                   per_account=ACCOUNT_FAILURES_MAX,
                                   per_pair=PAIR_FAILURES_MAX, window=FAILURE_WINDOW)
        self.registrations = RecentFailures(3600.0)


def state_of(server: Server) -> AccountsState:
    """The plugin's state, for a command: CommandError (the user's line) if there is none."""
    state: AccountsState | None = server.stash.get(STATE)
    if state is None:
        raise CommandError("accounts are not available on this server", code="unavailable")
    return state
