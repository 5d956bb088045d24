"""The reactor in-process: timers, the ready list, the tick flush, signals, threads, stale events.

Real epoll and real socketpairs, no server.  Each test names the rule of
reactor.py it guards; docs/architecture.md lists which break turns which red.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from chatd.reactor import EPOLLET, EPOLLIN, Reactor


@pytest.fixture
def reactor():
    loop = Reactor()
    yield loop
    loop.close()


class Recorder:
    def __init__(self, name: str, log: list) -> None:
        self.name = name
        self.log = log

    def handle_events(self, mask: int) -> None:
        self.log.append((self.name, mask))


def test_timers_fire_in_order_and_cancelled_ones_never(reactor):
    fired = []
    reactor.call_later(0.03, fired.append, "late")
    reactor.call_later(0.01, fired.append, "early")
    cancelled = reactor.call_later(0.02, fired.append, "cancelled")
    cancelled.cancel()
    deadline = time.monotonic() + 2
    while len(fired) < 2 and time.monotonic() < deadline:
        reactor.run_once(0.05)
    assert fired == ["early", "late"]


def test_the_ready_list_runs_what_was_queued_before_it_started(reactor):
    """A callback that re-queues itself waits for the next tick (others get their turn)."""
    runs = []

    def again(n):
        runs.append(n)
        if n < 3:
            reactor.call_soon(again, n + 1)

    reactor.call_soon(again, 1)
    reactor.run_once(0)
    assert runs == [1]
    reactor.run_once(0)
    assert runs == [1, 2]


def test_the_flush_runs_once_per_tick_after_the_before_flush_callbacks(reactor):
    order = []

    class Dirty:
        def flush(self):
            order.append("flush")

    dirty = Dirty()
    reactor.add_before_flush(lambda: order.append("before"))
    reactor.want_flush(dirty)
    reactor.run_once(0)
    assert order[:2] == ["before", "flush"]
    assert order.count("flush") == 1


def test_a_failing_callback_is_logged_and_the_loop_goes_on(reactor, caplog):
    ran = []
    reactor.call_soon(lambda: 1 / 0)
    reactor.call_soon(ran.append, "next")
    reactor.run_once(0)
    assert ran == ["next"]
    assert "ZeroDivisionError" in caplog.text


def test_an_event_of_a_closed_fd_is_not_given_to_the_socket_that_reuses_its_number(reactor):
    """epoll(7) "If using an event cache...": A's handler closes B and a new socket C
    gets B's descriptor number in the same batch; B's event, still in the batch, must
    not reach C.  (Remove the ``_closed_in_batch`` check in Reactor.run_once and this
    fails.)"""
    log: list = []
    a_r, a_w = socket.socketpair()
    b_r, b_w = socket.socketpair()
    for sock in (a_r, b_r):
        sock.setblocking(False)
    created: list[socket.socket] = []
    pair: list[socket.socket] = []  # C, and the socket that writes to it

    class Closer:
        def __init__(self, name, other):
            self.name, self.other = name, other

        def handle_events(self, mask):
            log.append((self.name, mask))
            if created:
                return
            victim = self.other
            number = victim.fileno()
            reactor.unregister(number)
            victim.close()
            first, second = socket.socketpair()
            created.extend([first, second])
            reused = first if first.fileno() == number else second
            assert reused.fileno() == number, "the kernel did not reuse the number"
            pair[:] = [reused, second if reused is first else first]
            reactor.register(number, Recorder("C", log), EPOLLIN | EPOLLET)

    reactor.register(a_r.fileno(), Closer("A", b_r), EPOLLIN | EPOLLET)
    reactor.register(b_r.fileno(), Closer("B", a_r), EPOLLIN | EPOLLET)
    a_w.send(b"x")
    b_w.send(b"x")  # both readable: one poll() returns both events
    reactor.run_once(1.0)
    assert [name for name, _ in log if name in ("A", "B")] != []
    assert [entry for entry in log if entry[0] == "C"] == [], log
    # C itself is served normally from the next poll on.
    pair[1].send(b"hello C")
    reactor.run_once(1.0)
    assert [entry[0] for entry in log].count("C") == 1
    for sock in (a_r, a_w, b_r, b_w, *created):
        sock.close()


def test_call_soon_threadsafe_wakes_a_sleeping_loop(reactor):
    reactor.enable_threadsafe()
    got = []
    started = time.monotonic()
    threading.Timer(0.05, reactor.call_soon_threadsafe, (got.append, "from a thread")).start()
    reactor.run_once(10.0)  # would sleep 10 s without the wake-up
    if not got:
        reactor.run_once(1.0)
    assert got == ["from a thread"]
    assert time.monotonic() - started < 5.0


def test_a_signal_runs_its_callback_on_the_loop_not_in_the_handler(reactor):
    seen = []
    reactor.add_signal_handler(signal.SIGUSR1, lambda signum: seen.append(signum))
    os.kill(os.getpid(), signal.SIGUSR1)
    assert seen == []  # nothing ran inside the C-level handler
    deadline = time.monotonic() + 2
    while not seen and time.monotonic() < deadline:
        reactor.run_once(0.1)
    assert seen == [signal.SIGUSR1]
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
