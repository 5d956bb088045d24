"""The tick's read budget (``limits.tick_read_bytes``): no loop pass does unbounded work.

In-process, over real socketpairs: many :class:`Connection` objects on one
:class:`Reactor`, each peer's bytes already in the kernel before the loop runs (a
burst).  The rules, from chatd/reactor.py and chatd/transport/connection.py:

* every connection's reads together stop at the tick's budget, and the rest is read
  in later ticks, every byte, in order;
* a read put off goes first in the next tick, in the order put off: a connection
  that keeps sending cannot starve one that is waiting;
* the loop does not sleep while a read is put off (no new edge would wake it);
* 0 means no tick budget;
* a bad ``limits.tick_read_bytes`` is refused with the key, the line and why.

And one burst through a real chatd with a small budget: every line to every reader.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chatd.config import ConfigError, load_config
from chatd.reactor import Reactor
from chatd.server import ChatServer
from chatd.testing import ServerProcess
from chatd.transport.connection import (
    Connection,
    ConnectionContext,
    ConnectionLimits,
    OutputAccount,
)

#: Ticks a test may take before it is a hang (never a duration: a count of passes).
MAX_TICKS = 2000


class Recorder:
    """A protocol that keeps what it got and, for each read, the tick and its size."""

    def __init__(self, name: str, reactor: Reactor, log: list[tuple[int, str, int]]) -> None:
        self.name = name
        self.data = bytearray()
        self._reactor = reactor
        self._log = log

    def data_received(self, data: memoryview) -> None:
        self.data += data
        self._log.append((self._reactor.ticks, self.name, len(data)))

    def lines_skipped(self, count: int) -> None:  # pragma: no cover - never slow here
        pass

    def eof_received(self) -> bool:  # pragma: no cover - the peers stay open
        return False

    def connection_lost(self, reason: str) -> None:
        pass

    def connection_made(self) -> None:  # pragma: no cover - not a chat session
        pass


class Bench:
    """One reactor, a shared context and any number of connections over socketpairs."""

    def __init__(self, tick_read_bytes: int, read_budget: int) -> None:
        self.reactor = Reactor()
        self.reactor.tick_read_bytes = tick_read_bytes
        self.context = ConnectionContext(
            self.reactor, memoryview(bytearray(65536)),
            ConnectionLimits(read_budget=read_budget, linger=0.5), OutputAccount(1 << 40),
        )
        #: (tick, connection name, bytes) for every data_received, in order.
        self.reads: list[tuple[int, str, int]] = []
        self.protocols: dict[str, Recorder] = {}
        self.peers: dict[str, socket.socket] = {}
        self._conns: list[Connection] = []
        self._socks: list[socket.socket] = []

    def connect(self, name: str) -> socket.socket:
        """A new connection named ``name``; returns the peer's end (blocking, 5 s)."""
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        theirs.settimeout(5.0)
        protocol = Recorder(name, self.reactor, self.reads)
        conn = Connection(ours, self.context, protocol, peer=(name, 0))  # type: ignore[arg-type]
        conn.start()  # nothing sent yet: one EAGAIN
        self.protocols[name] = protocol
        self.peers[name] = theirs
        self._conns.append(conn)
        self._socks.append(theirs)
        return theirs

    def run_until(self, done: Callable[[], bool], before_tick: Callable[[], None] | None = None
                  ) -> None:
        """Ticks until ``done()``; the loop may never sleep here: nothing new arrives, so
        a poll that waits would wait for the guard timer (and the test fails)."""
        slept: list[bool] = []
        guard = self.reactor.call_later(30.0, slept.append, True)
        try:
            for _ in range(MAX_TICKS):
                if done():
                    return
                if before_tick is not None:
                    before_tick()
                self.reactor.run_once()  # no max_wait: only work queued keeps it awake
                assert not slept, "the loop slept with reads deferred"
            raise AssertionError(f"not done after {MAX_TICKS} ticks")
        finally:
            guard.cancel()

    def per_tick(self) -> dict[int, int]:
        """Bytes read in each tick."""
        totals: dict[int, int] = {}
        for tick, _name, size in self.reads:
            totals[tick] = totals.get(tick, 0) + size
        return totals

    def readers_by_tick(self) -> list[list[str]]:
        """Which connections read, in order, tick by tick (ticks with no read left out)."""
        ticks: dict[int, list[str]] = {}
        for tick, name, _size in self.reads:
            ticks.setdefault(tick, []).append(name)
        return [ticks[tick] for tick in sorted(ticks)]

    def close(self) -> None:
        for conn in self._conns:
            conn.abort("test over")
        for sock in self._socks:
            sock.close()
        self.reactor.close()


@pytest.fixture
def bench() -> Iterator[Callable[..., Bench]]:
    made: list[Bench] = []

    def make(tick_read_bytes: int, read_budget: int) -> Bench:
        made.append(Bench(tick_read_bytes, read_budget))
        return made[-1]

    yield make
    for one in made:
        one.close()


def round_robin(order: list[str]) -> bool:
    """Whether ``order`` cycles over its names in the order they first appear, each
    leaving the cycle after its last read."""
    last = {name: i for i, name in enumerate(order)}
    live = list(dict.fromkeys(order))
    at = 0
    for i, name in enumerate(order):
        if name != live[at]:
            return False
        if last[name] == i:
            live.pop(at)
            at = at % len(live) if live else 0
        else:
            at = (at + 1) % len(live)
    return True


def payload(name: str, size: int) -> bytes:
    """``size`` bytes that say who sent them and where each 16-byte piece belongs."""
    pieces = (f"{name}:{i:010d}\n".encode()[-16:].rjust(16, b".") for i in range(size // 16))
    return b"".join(pieces)


def test_a_burst_from_many_connections_is_read_over_ticks_each_within_the_budget(bench):
    """(a) 20 connections x 16 KiB in the kernel at once, a tick budget of 8 KiB: no tick
    reads more than 8 KiB, the burst takes at least 40 ticks, every byte arrives in
    order, and the per-connection budget (4 KiB) still cuts each read."""
    b = bench(tick_read_bytes=8192, read_budget=4096)
    sent = {}
    for i in range(20):
        name = f"c{i:02d}"
        peer = b.connect(name)
        sent[name] = payload(name, 16384)
        peer.sendall(sent[name])
    b.run_until(lambda: all(len(b.protocols[n].data) == len(sent[n]) for n in sent))
    for name, data in sent.items():
        assert bytes(b.protocols[name].data) == data, name
    totals = b.per_tick()
    assert max(totals.values()) <= 8192
    assert len(totals) >= 20 * 16384 // 8192
    assert max(size for _tick, _name, size in b.reads) <= 4096


def test_reads_put_off_go_first_next_tick_in_the_order_they_were_put_off(bench):
    """(b) Five connections with 24 KiB each, a tick budget of one 4 KiB read: the first
    tick reads the first event's (cut by the budget, it is deferred first, then the
    other four).  From then on each tick's deferred reads share the budget (half of it
    first, what the events leave next), oldest first: round robin, each read once in
    every turn (a LIFO queue serves the same one again and again)."""
    b = bench(tick_read_bytes=4096, read_budget=4096)
    names = [f"r{i}" for i in range(5)]
    for name in names:
        b.connect(name).sendall(payload(name, 4096 * 6))
    b.run_until(lambda: all(len(b.protocols[n].data) == 4096 * 6 for n in names))
    assert max(b.per_tick().values()) <= 4096
    order = [name for _tick, name, _size in b.reads]
    assert order[0] == order[1]  # deferred first, it is first in the next tick
    assert sorted(order[1:6]) == names
    assert round_robin(order[1:]), order


def test_many_deferred_reads_share_each_tick(bench):
    """100 connections with a backlog and a 128 KiB tick budget: every tick after the
    first reads a little of each (an equal share, 1 KiB at least), so each is served
    in every one or two ticks, not once in a round of 64 KiB reads."""
    b = bench(tick_read_bytes=131072, read_budget=65536)
    names = [f"m{i:03d}" for i in range(100)]
    for name in names:
        b.connect(name).sendall(payload(name, 16384))
    b.run_until(lambda: all(len(b.protocols[n].data) == 16384 for n in names))
    for name in names:
        assert bytes(b.protocols[name].data) == payload(name, 16384)
    ticks: dict[str, list[int]] = {}
    for tick, name, _size in b.reads:
        ticks.setdefault(name, []).append(tick)
    worst = max(later - earlier for seen in ticks.values()
                for earlier, later in itertools.pairwise(sorted(set(seen))))
    assert worst <= 2, f"a connection waited {worst} ticks for its next read"
    assert max(b.per_tick().values()) <= 131072


def test_a_fresh_event_is_read_in_its_tick_even_behind_a_backlog(bench):
    """Half the tick's budget is kept for fresh events: with 160 KiB deferred from
    ten connections, a person's one line is read (and answered, at the end of that
    tick) in the tick its edge arrives, not after the backlog."""
    b = bench(tick_read_bytes=4096, read_budget=4096)
    for i in range(10):
        name = f"bulk{i}"
        b.connect(name).sendall(payload(name, 16384))
    person = b.connect("person")
    b.reactor.run_once(5.0)
    assert b.reactor.reads_deferred == 10
    person.sendall(b"/away\n")
    b.reactor.run_once(5.0)
    assert bytes(b.protocols["person"].data) == b"/away\n"
    assert b.reactor.reads_deferred >= 9  # the backlog is still there


def test_a_connection_that_keeps_sending_cannot_starve_one_that_waits(bench):
    """(b) A greedy peer sends 4 KiB more before every tick (a fresh EPOLLIN edge each
    time); a quiet one sent 32 KiB once.  With a tick budget of one read, the quiet
    one is read in every other tick: deferred reads go before fresh events."""
    b = bench(tick_read_bytes=4096, read_budget=4096)
    greedy = b.connect("greedy")
    greedy.sendall(payload("greedy", 4096))
    quiet_data = payload("quiet", 4096 * 8)
    b.connect("quiet").sendall(quiet_data)
    chunk = payload("greedy", 4096)
    b.run_until(lambda: len(b.protocols["quiet"].data) == len(quiet_data),
                before_tick=lambda: greedy.sendall(chunk))
    assert bytes(b.protocols["quiet"].data) == quiet_data
    quiet_ticks = [tick for tick, name, _size in b.reads if name == "quiet"]
    gaps = [later - earlier for earlier, later in itertools.pairwise(quiet_ticks)]
    assert max(gaps) <= 2, f"the quiet connection waited {max(gaps)} ticks"


def test_zero_means_no_tick_budget(bench):
    """(c) 0: one tick reads the whole burst (20 x 16 KiB, more than the default tick
    budget), each connection within its own read budget, nothing deferred."""
    b = bench(tick_read_bytes=0, read_budget=65536)
    sent = {}
    for i in range(20):
        name = f"z{i:02d}"
        sent[name] = payload(name, 16384)
        b.connect(name).sendall(sent[name])
    b.reactor.run_once(5.0)
    assert b.reactor.reads_deferred == 0
    for name, data in sent.items():
        assert bytes(b.protocols[name].data) == data, name
    assert list(b.per_tick().values()) == [20 * 16384]


# -- the setting ------------------------------------------------------------------------


def _load(folder: Path, limits: str):
    path = folder / "config.yaml"
    path.write_text(f"limits:\n  {limits}\n", encoding="utf-8")
    return load_config(str(path))


def test_the_setting_defaults_to_64_kib_and_takes_0_and_1024(tmp_path):
    assert _load(tmp_path, "max_line_bytes: 4096").limits.tick_read_bytes == 65536
    assert _load(tmp_path, "tick_read_bytes: 0").limits.tick_read_bytes == 0
    assert _load(tmp_path, "tick_read_bytes: 1024").limits.tick_read_bytes == 1024


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5", "limits.tick_read_bytes: expected 0 (no limit) or at least 1024, got 5"),
        ("1023", "limits.tick_read_bytes: expected 0 (no limit) or at least 1024, got 1023"),
        ("-1", "limits.tick_read_bytes: expected an integer between 0 and 1073741824, got -1"),
        ("lots", "limits.tick_read_bytes: expected an integer between 0 and 1073741824, "
                 "got 'lots'"),
    ],
)
def test_a_bad_tick_budget_is_refused_with_the_key_the_line_and_why(tmp_path, monkeypatch,
                                                                    value, message):
    """(d) The file, the line of the key, and the rule."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text(
        f"limits:\n  read_budget_bytes: 4096\n  tick_read_bytes: {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config("config.yaml")
    assert str(info.value) == f"config.yaml:3: {message}"


def test_the_server_gives_its_loop_the_configured_tick_budget(tmp_path):
    """The setting reaches the reactor when chatd starts listening (and on a reload:
    the same ``_apply_limits``)."""
    path = tmp_path / "config.yaml"
    path.write_text("listen: {host: 127.0.0.1, port: 0}\nstorage: {path: null}\n"
                    "limits: {tick_read_bytes: 2048}\n", encoding="utf-8")
    server = ChatServer(load_config(str(path)))
    try:
        server.listen()
        assert server.reactor.tick_read_bytes == 2048
    finally:
        server.close()


# -- through a real server ------------------------------------------------------------


def test_a_burst_through_chatd_with_a_small_tick_budget_reaches_every_reader_in_order(
    chatd_server: Callable[..., ServerProcess],
) -> None:
    """20 senders write 50 lines each at once (about 50 KiB) into a server reading 2 KiB
    a tick: three readers get all 1,000 lines, each sender's in its order."""
    server = chatd_server(limits={"read_budget_bytes": 1024, "tick_read_bytes": 2048})
    readers = [server.client() for _ in range(3)]
    senders = [server.client() for _ in range(20)]
    for reader in readers:  # the senders' joins, so only their lines follow
        reader.send("/who #lobby")
        while not reader.recv_line().startswith("*** #lobby has "):
            pass
    batches = {s.nick: [f"{s.nick} line {i:03d} " + "x" * 20 for i in range(50)]
               for s in senders}
    for sender in senders:
        sender.send_raw("".join(f"{line}\n" for line in batches[sender.nick]).encode())
    for reader in readers:
        heard: dict[str, list[str]] = {nick: [] for nick in batches}
        for _ in range(len(senders) * 50):
            line = reader.recv_line()
            nick, _, text = line[1:].partition("> ")
            assert line.startswith("<") and nick in heard, line
            heard[nick].append(text)
        assert heard == batches
