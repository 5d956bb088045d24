"""A fair queue for slow work done for many people on a few threads (password hashing).

Theory of operation: every job belongs to a *lane*, named by who it is for (an
address) and what it is about (an account).  At most ``workers`` jobs run at
once in all, and at most ``per_lane`` of one lane; the next job to run is
taken round robin, first among the addresses that have work waiting, then
among the accounts of that address.  So one address sending many jobs (a
``/password`` flood from several connections) gets its turn like every other
address, and behind one address (a team behind NAT) every account gets its
turn too: nobody's ``/identify`` waits behind more than one job of each other
lane.  A lane holding ``lane_max`` waiting jobs, or the queue holding
``total_max``, refuses more (the caller says "busy" to that one client); the
refusal costs nobody else a place.

Sans-IO: the queue decides order and admission; the caller runs the jobs (on
its thread pool) and reports each one :meth:`FairQueue.done`, then asks for
:meth:`FairQueue.next` again.  Everything here runs on the event loop.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Generic, TypeVar

T = TypeVar("T")

#: (address, account): whose job it is.
Lane = tuple[str, str]


class FairQueue(Generic[T]):
    """Jobs waiting for a worker, by address then account, taken round robin."""

    __slots__ = ("_running", "_waiting", "lane_max", "per_lane", "running", "total_max",
                 "waiting", "workers")

    def __init__(self, *, workers: int, per_lane: int = 1, lane_max: int = 2,
                 total_max: int = 256) -> None:
        self.workers, self.per_lane = workers, per_lane
        self.lane_max, self.total_max = lane_max, total_max
        #: address -> account -> jobs, each level in round-robin order (next first).
        self._waiting: OrderedDict[str, OrderedDict[str, deque[T]]] = OrderedDict()
        self._running: dict[Lane, int] = {}
        #: Jobs waiting, and jobs handed out and not done yet.
        self.waiting = 0
        self.running = 0

    def full(self, lane: Lane) -> bool:
        """Whether a job for ``lane`` would be refused now: the lane has ``lane_max``
        jobs waiting (besides those running), or the queue ``total_max``."""
        if self.waiting >= self.total_max:
            return True
        address, account = lane
        jobs = self._waiting.get(address, {}).get(account)
        return jobs is not None and len(jobs) >= self.lane_max

    def put(self, lane: Lane, job: T) -> None:
        """Queue ``job`` for ``lane``; check :meth:`full` first (this does not refuse)."""
        address, account = lane
        accounts = self._waiting.get(address)
        if accounts is None:
            accounts = self._waiting[address] = OrderedDict()
        jobs = accounts.get(account)
        if jobs is None:
            jobs = accounts[account] = deque()
        jobs.append(job)
        self.waiting += 1

    def next(self) -> tuple[Lane, T] | None:
        """The next job to run and its lane, if a worker is free and a job may run;
        it counts as running until :meth:`done`."""
        if self.running >= self.workers:
            return None
        lane = self._next_lane()
        if lane is None:
            return None
        address, account = lane
        accounts = self._waiting[address]
        jobs = accounts[account]
        job = jobs.popleft()
        if jobs:
            accounts.move_to_end(account)  # its next job waits for the other accounts
        else:
            del accounts[account]
        if accounts:
            self._waiting.move_to_end(address)  # and for the other addresses
        else:
            del self._waiting[address]
        self.waiting -= 1
        self.running += 1
        self._running[lane] = self._running.get(lane, 0) + 1
        return lane, job

    def _next_lane(self) -> Lane | None:
        # At most ``workers`` lanes are running, so at most that many are passed
        # over here before one that may run is found: O(workers), not O(lanes).
        running = self._running
        for address, accounts in self._waiting.items():
            for account in accounts:
                if running.get((address, account), 0) < self.per_lane:
                    return address, account
        return None

    def done(self, lane: Lane) -> None:
        """A job of ``lane`` that :meth:`next` handed out has finished."""
        count = self._running.get(lane, 0) - 1
        if count > 0:
            self._running[lane] = count
        else:
            self._running.pop(lane, None)
        self.running -= 1

    def clear(self) -> list[T]:
        """Take every waiting job out (the workers are going away); returns them."""
        jobs = [job for accounts in self._waiting.values() for lane in accounts.values()
                for job in lane]
        self._waiting.clear()
        self.waiting = 0
        return jobs

    def __len__(self) -> int:
        return self.waiting
