"""Password checks off the loop: a fair queue in front of two worker threads.

:func:`submit` queues a check (hashing or comparing a password) for a worker
thread, and what to do with its result back on the loop.  The queue
(:mod:`chatd.builtin.fairqueue`) goes round robin between addresses, then
between accounts of one address, one check running and two waiting per address
and account; a full lane tells the sender alone the server is busy, which never
counts as a failed attempt.  A guess is held to the limits first
(:mod:`.limits`).  What the client sends meanwhile waits for the answer
(``server.pause_requests``), so ``/identify`` then ``/join`` joins identified.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from chatd import Client, CommandError, Server

from ..attempts import source_of
from ..fairqueue import Lane
from .limits import may_guess
from .state import STATE, AccountsState, Job, state_of

log = logging.getLogger("chatd.accounts")

BUSY = "the server is busy checking passwords; try again in a moment"
#: Longest a client's next requests wait for its password check.
PAUSE_SECONDS = 10.0


def submit(client: Client, account_key: str, work: Callable[[], Any],
            then: Callable[[Client, Any], Any], *, guess: bool) -> None:
    """Queue ``work()`` for a worker thread, then ``then(client, result)`` on the loop
    (which returns True if it resumes the client's requests itself, later).

    A ``guess`` (a password to check against an account) is first held to the
    limits on failed attempts, and counted as failed once it is queued (forgiven
    if it succeeds).  A full lane of the fair queue refuses the sender "busy"
    before anything is counted.  What the client sends meanwhile waits for the
    answer (``/identify`` then ``/join`` joins identified), up to PAUSE_SECONDS.
    """
    server = client.server
    state = state_of(server)
    source = source_of(client.address)
    if guess:
        may_guess(client, state, source, account_key)
    lane = (source, account_key)
    if state.queue.full(lane):
        raise CommandError(BUSY, code="unavailable")
    if guess:
        state.guesses.attempt(source, account_key)
    state.queue.put(lane, Job(client, work, then, guess))
    server.pause_requests(client, PAUSE_SECONDS)
    pump(server, state)


def pump(server: Server, state: AccountsState) -> None:
    """Hand the fair queue's next checks to the threads while one is free."""
    while (taken := state.queue.next()) is not None:
        lane, job = taken
        if not job.client.connected:  # gone while waiting: nothing was checked
            state.queue.done(lane)
            if job.guess:
                state.guesses.withdraw(*lane)
            continue

        def finished(future: Future[Any], lane: Lane = lane, job: Job = job) -> None:
            server.call_soon_threadsafe(_answer, state, lane, job, future)

        state.pool.submit(job.work).add_done_callback(finished)


def _answer(state: AccountsState, lane: Lane, job: Job, future: Future[Any]) -> None:
    client = job.client
    server = client.server
    state.queue.done(lane)
    resumed_later = False
    try:
        if future.cancelled() or not client.connected:
            return
        try:
            result = future.result()
        except Exception:
            log.exception("checking a password failed")
            client.error("internal error checking the password; the server goes on",
                         code="internal_error")
            return
        try:
            resumed_later = job.then(client, result) is True
        except CommandError as exc:
            client.error(str(exc), code=exc.code)
    finally:
        if not resumed_later:  # (True: ``then`` resumes them itself, once it is done)
            server.resume_requests(client)  # what it sent meanwhile, answered after
        if server.stash.get(STATE) is state:  # not after a reload shut this pool down
            pump(server, state)
