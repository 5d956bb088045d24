"""One Connection over a real socketpair, in-process: the edge-triggered rules of the transport.

Each test names the rule of connection.py it guards (DESIGN.md section 3);
docs/architecture.md lists which break turns which red.
"""

from __future__ import annotations

import socket
import time

import pytest

from chatd.reactor import Reactor
from chatd.transport.connection import (
    Connection,
    ConnectionContext,
    ConnectionLimits,
    OutputAccount,
    State,
)


class Protocol:
    """Records what the connection reports."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.calls = 0
        self.eof = 0
        self.lost: list[str] = []
        self.skipped: list[int] = []

    def data_received(self, data):
        self.data += data
        self.calls += 1

    def lines_skipped(self, count):
        self.skipped.append(count)

    def eof_received(self):
        self.eof += 1
        return False

    def connection_lost(self, reason):
        self.lost.append(reason)


class CountingSocket:
    """The real socket, counting send() calls (the syscalls a tick costs)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.sends = 0
        self.recvs = 0

    def send(self, data):
        self.sends += 1
        return self._sock.send(data)

    def recv_into(self, buffer, nbytes=0):
        self.recvs += 1
        return self._sock.recv_into(buffer, nbytes)

    def __getattr__(self, name):
        return getattr(self._sock, name)


@pytest.fixture
def pair():
    reactor = Reactor()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.settimeout(5.0)
    counted = CountingSocket(ours)
    protocol = Protocol()
    made = []

    def make(**limits):
        context = ConnectionContext(
            reactor, memoryview(bytearray(65536)),
            ConnectionLimits(**{"linger": 0.5, **limits}), OutputAccount(1 << 40),
        )
        conn = Connection(counted, context, protocol, peer=("local", 0))  # type: ignore[arg-type]
        conn.start()
        made.append(conn)
        return conn

    yield reactor, make, theirs, protocol, counted
    for conn in made:
        conn.abort("test over")
    theirs.close()
    reactor.close()


def spin(reactor: Reactor, until, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out"
        reactor.run_once(0.05)


def test_reads_until_eagain_within_a_budget_and_comes_back_for_the_rest(pair):
    """ET: no new edge announces bytes left behind; the ready list must come back."""
    reactor, make, theirs, protocol, _ = pair
    make(read_budget=4096)
    payload = bytes(range(256)) * 64  # 16 KiB, four budgets
    theirs.sendall(payload)
    reactor.run_once(1.0)
    assert 0 < len(protocol.data) <= 4096 * 2
    spin(reactor, lambda: len(protocol.data) == len(payload))  # no further input sent
    assert bytes(protocol.data) == payload


def test_a_short_read_on_an_epollin_edge_ends_the_read_without_asking_for_eagain(pair):
    """epoll(7): fewer bytes than asked proves the buffer drained; the EAGAIN recv is
    saved (one syscall per read event), and the next line still raises its own edge."""
    reactor, make, theirs, protocol, counted = pair
    make()
    reactor.run_once(0)
    for line in (b"one\n", b"two\n"):
        before = counted.recvs
        theirs.sendall(line)
        spin(reactor, lambda line=line: bytes(protocol.data).endswith(line))
        assert counted.recvs - before == 1
    assert bytes(protocol.data) == b"one\ntwo\n"


def test_data_then_fin_on_one_edge_are_read_to_the_end_of_stream(pair):
    """A short read does not end a read whose edge announced the end of the stream
    (EPOLLRDHUP): the FIN behind the data raises no edge again."""
    reactor, make, theirs, protocol, _ = pair
    make()
    reactor.run_once(0)  # registered and idle: both arrive on one later edge
    theirs.sendall(b"bye\n")
    theirs.shutdown(socket.SHUT_WR)
    spin(reactor, lambda: protocol.eof == 1, timeout=2.0)
    assert bytes(protocol.data) == b"bye\n"


def test_writes_in_one_tick_are_one_send(pair):
    reactor, make, theirs, _protocol, counted = pair
    conn = make()
    for i in range(50):
        conn.write(b"line %d\n" % i)
    assert counted.sends == 0  # nothing sent before the end of the tick
    reactor.run_once(0)
    assert counted.sends == 1
    got = b""
    while got.count(b"\n") < 50:
        got += theirs.recv(65536)
    assert got.splitlines()[-1] == b"line 49"


def test_encoded_output_frames_a_ticks_writes_in_one_send_and_the_counts_balance(pair):
    """encode_output (a WebSocket's frames): what was queued before goes as written; after
    it, one tick's writes are encoded together in one send, the direct send of
    write_now alone; output_bytes and the shared account return to 0."""
    reactor, make, theirs, _protocol, counted = pair
    conn = make()
    conn.write(b"HTTP/1.1 101\r\n\r\n")
    conn.encode_output(lambda writes: b"<" + b"".join(writes) + b">")
    assert counted.sends == 1  # the raw bytes first, at once
    conn.write(b"a\n")
    conn.write_now(b"b\n")  # queued behind the write: in the same frame
    reactor.run_once(0)
    assert counted.sends == 2
    conn.write_now(b"c\n")  # nothing queued: sent at once, encoded alone
    assert counted.sends == 3
    want = b"HTTP/1.1 101\r\n\r\n<a\nb\n><c\n>"
    got = b""
    while len(got) < len(want):
        got += theirs.recv(65536)
    assert got == want
    assert conn.output_bytes == 0 and conn._ctx.account.total == 0


def test_a_partial_write_resumes_on_the_epollout_edge_with_no_other_traffic(pair):
    reactor, make, theirs, _protocol, _ = pair
    conn = make(hard=1 << 24, soft=1 << 23)
    payload = b"x" * (4 << 20)  # far more than the socket buffers hold
    conn.write(payload)
    reactor.run_once(0)
    assert conn.output_bytes > 0  # the kernel took part of it
    received = bytearray()
    theirs.setblocking(False)
    deadline = time.monotonic() + 10
    while len(received) < len(payload):
        assert time.monotonic() < deadline
        try:
            received += theirs.recv(1 << 20)
        except BlockingIOError:
            reactor.run_once(0.05)
    assert conn.output_bytes == 0 and bytes(received) == payload


def test_data_and_fin_together_are_drained_before_the_end_of_stream(pair):
    reactor, make, theirs, protocol, _ = pair
    make()
    theirs.sendall(b"last words\n")
    theirs.shutdown(socket.SHUT_WR)
    spin(reactor, lambda: protocol.eof == 1)
    assert bytes(protocol.data) == b"last words\n"


def test_graceful_close_flushes_the_goodbye_then_fin_and_reports_once_later(pair):
    reactor, make, theirs, protocol, _ = pair
    conn = make()
    conn.write(b"goodbye\n")
    conn.close("bye")
    conn.close("again")  # harmless
    assert protocol.lost == []  # never inside the call that closed it
    spin(reactor, lambda: protocol.lost != [])
    assert protocol.lost == ["bye"]
    data = b""
    while True:
        chunk = theirs.recv(4096)
        if not chunk:
            break
        data += chunk
    assert data == b"goodbye\n"  # the data, then a clean FIN (no reset)
    theirs.shutdown(socket.SHUT_WR)
    spin(reactor, lambda: conn.state is State.CLOSED)


# -- the reset ending (the line protocol's: nc and ncat return to the shell) -------------------


@pytest.fixture
def tcp_pair():
    """A Connection over real loopback TCP (acknowledgements are TCP's), and the peer.

    The peer's receive buffer is small and ours to send from large, so a payload can
    be all in the kernel (flushed) while the peer has not acknowledged it yet.
    """
    reactor = Reactor()
    listener = socket.create_server(("127.0.0.1", 0))
    theirs = socket.socket()
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    theirs.connect(listener.getsockname())
    ours, _ = listener.accept()
    listener.close()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    ours.setblocking(False)
    theirs.settimeout(5.0)
    protocol = Protocol()
    made = []

    def make(*, reset: bool):
        context = ConnectionContext(
            reactor, memoryview(bytearray(65536)), ConnectionLimits(linger=0.5),
            OutputAccount(1 << 40), reset_after_goodbye=reset,
        )
        conn = Connection(ours, context, protocol, peer=("127.0.0.1", 0))
        conn.start()
        made.append(conn)
        return conn

    yield reactor, make, theirs
    for conn in made:
        conn.abort("test over")
    theirs.close()
    reactor.close()


def read_to_the_end(sock: socket.socket, reactor: Reactor) -> tuple[bytes, str]:
    """Everything the peer can read, and how the stream ended ("fin" or "reset");
    the reactor keeps running meanwhile."""
    sock.setblocking(False)
    got = bytearray()
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            reactor.run_once(0.01)
            continue
        except ConnectionResetError:
            return bytes(got), "reset"
        if not chunk:
            return bytes(got), "fin"
        got += chunk
    raise AssertionError(f"no end of stream; {len(got)} bytes read")


def test_a_goodbye_ends_in_a_reset_once_acknowledged_and_nothing_is_lost(tcp_pair):
    reactor, make, theirs = tcp_pair
    conn = make(reset=True)
    payload = bytes(range(256)) * 1024 + b"*** Goodbye.\n"  # 256 KiB: more than the peer holds
    conn.write(payload)
    conn.close("bye")
    # Flushed into our kernel, but the peer has not read (nor acknowledged) it all.
    spin(reactor, lambda: conn.output_bytes == 0 or conn.state is State.CLOSED)
    received, ending = read_to_the_end(theirs, reactor)
    assert received == payload
    assert ending == "reset"
    assert conn.state is State.CLOSED


def test_a_peer_that_ends_while_the_goodbye_is_unacknowledged_gets_a_fin(tcp_pair):
    reactor, make, theirs = tcp_pair
    conn = make(reset=True)
    payload = bytes(range(256)) * 1024
    conn.write(payload)
    conn.close("bye")
    spin(reactor, lambda: conn.output_bytes == 0)  # waiting for the peer's ACK
    theirs.shutdown(socket.SHUT_WR)  # nc -N, a script: it is done, and reads to the end
    assert read_to_the_end(theirs, reactor) == (payload, "fin")


def test_a_peer_that_acknowledges_nothing_is_closed_after_linger_without_a_reset(tcp_pair):
    reactor, make, theirs = tcp_pair
    conn = make(reset=True)
    payload = bytes(range(256)) * 1024
    conn.write(payload)
    conn.close("bye")
    spin(reactor, lambda: conn.state is State.CLOSED)  # linger (0.5 s): nobody read
    # What the kernel still held goes on being delivered, then a FIN.
    assert read_to_the_end(theirs, reactor) == (payload, "fin")


def test_past_the_hard_limit_a_reader_that_stopped_is_cut(pair):
    reactor, make, _theirs, protocol, _ = pair
    conn = make(hard=64 * 1024, soft=16 * 1024)
    for _ in range(200):
        conn.write(b"y" * 1024)
        reactor.run_once(0)
        if conn.state is State.CLOSED:
            break
    assert conn.state is State.CLOSED and conn.limit_hit == "obuf_hard"
    spin(reactor, lambda: protocol.lost != [])
    assert protocol.lost == ["output buffer full (not reading)"]


def test_a_slow_reader_skips_room_payloads_and_is_told_how_many(pair):
    reactor, make, theirs, protocol, _ = pair
    conn = make(hard=1 << 24, soft=64 * 1024)
    conn.write(b"z" * (1 << 20))  # over the soft limit once the kernel is full
    reactor.run_once(0)
    assert conn.output_bytes > 64 * 1024
    conn.write_now(b"room line 1\nroom line 2\n")
    theirs.setblocking(False)
    deadline = time.monotonic() + 10
    while conn.output_bytes and time.monotonic() < deadline:
        try:
            while theirs.recv(1 << 20):
                pass
        except BlockingIOError:
            reactor.run_once(0.05)
    assert protocol.skipped == [2]
