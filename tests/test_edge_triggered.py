"""Edge-triggered epoll invariants, tested against a real chatd process.

DESIGN.md section 3 and RELIABILITY.md F1, F4, R3, S3, S6, N1: accept and
recv until EAGAIN, drain data that came with a FIN before closing, resume a
partial write on the EPOLLOUT edge, and keep one greedy client from starving
the others.  Every read has a timeout; nothing here asserts how long anything
took (speed belongs to bench/).
"""

from __future__ import annotations

import errno
import re
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from chatd.testing import QUICK_STOP, ChatClient, ServerProcess

pytestmark = pytest.mark.timeout(60)

LINE_TIMEOUT = 10.0  # per read: generous, a missing line fails instead of hanging


# -- fixtures and helpers --------------------------------------------------------------


@pytest.fixture
def start(chatd_server: Callable[..., ServerProcess]) -> Iterator[Callable[..., ServerProcess]]:
    """``start(**sections)`` -> a running server whose log is checked afterwards."""
    started: list[ServerProcess] = []

    def _start(**sections: object) -> ServerProcess:
        # A short linger only shortens the SIGTERM at teardown (clients left open).
        limits = {"close_linger_seconds": 0.5, **sections.pop("limits", {})}  # type: ignore[dict-item]
        server = chatd_server(limits=limits, **sections)
        started.append(server)
        return server

    yield _start
    for server in started:
        alive = server.proc.poll() is None
        server.stop()
        log = server.log()
        assert alive, f"chatd died during the test:\n{log[-3000:]}"
        assert "Traceback" not in log, log[-5000:]


class RawLines:
    """A line reader over a plain socket that tells a clean FIN from a reset."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.nick = ""

    @classmethod
    def connect(cls, server: ServerProcess, *, rcvbuf: int | None = None) -> RawLines:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(LINE_TIMEOUT)
        sock.connect(server.address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = cls(sock)
        welcome = reader.line()
        match = re.match(r"^\*\*\* Welcome to chatd, (\S+)\.", welcome)
        assert match, welcome
        reader.nick = match.group(1)
        return reader

    def _recv(self, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out; buffered {bytes(self.buffer[-200:])!r}")
        self.sock.settimeout(remaining)
        try:
            return self.sock.recv(262144)
        except TimeoutError:
            raise AssertionError(f"timed out; buffered {bytes(self.buffer[-200:])!r}") from None

    def line(self, timeout: float = LINE_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while (newline := self.buffer.find(b"\n")) < 0:
            data = self._recv(deadline)
            if not data:
                raise AssertionError(f"EOF; buffered {bytes(self.buffer)!r}")
            self.buffer += data
        raw = bytes(self.buffer[:newline])
        del self.buffer[: newline + 1]
        return raw.decode("utf-8")

    def lines_until_eof(self, timeout: float = LINE_TIMEOUT) -> list[str]:
        """Every line up to a clean EOF (a reset raises ConnectionResetError)."""
        deadline = time.monotonic() + timeout
        while data := self._recv(deadline):
            self.buffer += data
        *lines, tail = bytes(self.buffer).split(b"\n")
        assert tail == b"", f"unterminated bytes before EOF: {tail!r}"
        self.buffer.clear()
        return [line.decode("utf-8") for line in lines]

    def close(self) -> None:
        self.sock.close()


class Collector(threading.Thread):
    """Reads a ChatClient's lines in the background until ``done(lines)``, EOF or timeout."""

    def __init__(
        self, client: ChatClient, done: Callable[[list[str]], bool], timeout: float = 30.0
    ) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.done = done
        self.deadline = time.monotonic() + timeout
        self.lines: list[str] = []
        self.error: BaseException | None = None
        self.finished = threading.Event()

    def run(self) -> None:
        try:
            while not self.done(self.lines):
                if time.monotonic() > self.deadline:
                    raise AssertionError("timed out")
                try:
                    line = self.client.recv_line(timeout=0.2)
                except AssertionError:
                    if self.client.eof:
                        raise
                    continue  # nothing yet: check done() and the deadline again
                self.lines.append(line)
        except BaseException as exc:  # reported by result()
            self.error = exc
        finally:
            self.finished.set()

    def result(self) -> list[str]:
        self.join(max(0.0, self.deadline - time.monotonic()) + 5)
        assert not self.is_alive(), "collector thread did not finish"
        if self.error is not None:
            raise AssertionError(
                f"collector stopped after {len(self.lines)} lines "
                f"(last {self.lines[-3:]}): {self.error}"
            )
        return self.lines


def numbered(tag: str, i: int, width: int = 100) -> str:
    """``tag-000123 xxxx...``, ``width`` bytes long."""
    head = f"{tag}-{i:06d} "
    return head + "x" * (width - len(head))


def sequence_of(lines: list[str], prefix: str, tag: str) -> list[int]:
    """Sequence numbers of ``<prefix><tag>-NNNNNN ...`` lines, in arrival order."""
    pattern = re.compile(rf"^{re.escape(prefix)}{re.escape(tag)}-(\d{{6}}) x*$")
    out = []
    for line in lines:
        match = pattern.match(line)
        if match:
            out.append(int(match.group(1)))
    return out


def quiet_lines(client: ChatClient, wait: float = 0.5) -> list[str]:
    """Read lines until none arrives for ``wait`` seconds."""
    lines = []
    while True:
        try:
            lines.append(client.recv_line(timeout=wait))
        except AssertionError:
            return lines


# -- R3: accept burst --------------------------------------------------------------------


def test_accept_burst_all_welcomed(start: Callable[..., ServerProcess]) -> None:
    server = start()
    count = 300
    sel = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    buffers: dict[socket.socket, bytearray] = {}
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            err = sock.connect_ex(server.address)
            assert err in (0, errno.EINPROGRESS), errno.errorcode.get(err, err)
            socks.append(sock)
            buffers[sock] = bytearray()
            sel.register(sock, selectors.EVENT_READ)
        welcomed: dict[socket.socket, str] = {}
        deadline = time.monotonic() + 20
        while len(welcomed) < count and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                data = sock.recv(65536)
                assert data, f"connection {socks.index(sock)} closed before its welcome"
                buffers[sock] += data
                first, newline, _ = bytes(buffers[sock]).partition(b"\n")
                if newline:
                    welcomed[sock] = first.decode()
                    sel.unregister(sock)
        stranded = count - len(welcomed)
        assert stranded == 0, f"{stranded} of {count} connections never got a welcome"
        nicks = set()
        for line in welcomed.values():
            match = re.match(r"^\*\*\* Welcome to chatd, (\S+)\.", line)
            assert match, line
            nicks.add(match.group(1))
        assert len(nicks) == count
        # The listener still works after the burst.
        server.client().send("still here")
    finally:
        sel.close()
        for sock in socks:
            sock.close()


# -- F1: a 1 MiB paste in one write ---------------------------------------------------------


def test_one_mib_paste_delivered_in_order(start: Callable[..., ServerProcess]) -> None:
    server = start(limits={"max_output_bytes": 8 << 20})
    sender = server.client()
    receiver = server.client()
    sender.expect(rf"^\*\*\* {re.escape(receiver.nick or '')} joined")
    lines = [numbered("p", i) for i in range((1 << 20) // 101 + 1)]
    payload = "".join(line + "\n" for line in lines).encode()
    assert len(payload) >= 1 << 20

    collector = Collector(receiver, lambda got: len(got) >= len(lines))
    collector.start()
    sender.send_raw(payload)  # one sendall, then silence from the sender
    got = collector.result()
    assert got == [f"<{sender.nick}> {line}" for line in lines]
    receiver.expect_nothing(0.3)
    sender.expect_nothing(0.3)


def test_line_sent_one_byte_per_segment(start: Callable[..., ServerProcess]) -> None:
    server = start()
    sender = server.client()
    receiver = server.client()
    text = "hello wörld 😃"
    for byte in (text + "\n").encode():
        sender.send_raw(bytes([byte]))  # TCP_NODELAY: one segment, one event each
        time.sleep(0.001)
    receiver.expect_line(f"<{sender.nick}> {text}")
    receiver.expect_nothing(0.2)


# -- F4: data + FIN, trailing fragment, half-close ----------------------------------------------


@pytest.mark.parametrize("one_segment", [False, True], ids=["separate-fin", "data+fin"])
def test_data_with_fin_and_trailing_fragment(
    start: Callable[..., ServerProcess], one_segment: bool
) -> None:
    server = start()
    leaver = RawLines.connect(server)
    other = server.client()
    assert leaver.line() == f"*** {other.nick} joined #lobby"
    if one_segment:
        # Corked, Linux tacks the FIN onto the still unsent data segment, so
        # chatd sees the data and the FIN in one event (EPOLLIN|EPOLLRDHUP).
        leaver.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    leaver.sock.sendall(b"a\nb\nc")
    leaver.sock.shutdown(socket.SHUT_WR)

    nick = leaver.nick
    other.expect_line(f"<{nick}> a")
    other.expect_line(f"<{nick}> b")
    other.expect_line(f"<{nick}> c")
    quit_line = other.recv_line()
    assert re.match(rf"^\*\*\* {re.escape(nick)} quit\b", quit_line), quit_line
    rest = quiet_lines(other)
    assert rest == [], f"after the quit notice: {rest}"
    # The leaver gets a clean FIN (not a reset) once chatd is done with it.
    assert leaver.lines_until_eof() == []


def test_half_closed_client_receives_what_was_queued_for_it(
    start: Callable[..., ServerProcess],
) -> None:
    server = start()
    leaver = RawLines.connect(server)
    other = server.client()
    other.send(f"/msg {leaver.nick} psst, before your FIN")
    other.expect(rf"^-> \*{re.escape(leaver.nick)}\* psst")  # queued for the leaver by now
    leaver.sock.shutdown(socket.SHUT_WR)  # without having read anything since the welcome
    assert leaver.lines_until_eof() == [
        f"*** {other.nick} joined #lobby",
        f"*{other.nick}* psst, before your FIN",
    ]
    other.expect(rf"^\*\*\* {re.escape(leaver.nick)} quit\b")
    assert quiet_lines(other) == []


def test_half_closed_client_gets_replies_to_its_last_lines(
    start: Callable[..., ServerProcess],
) -> None:
    server = start()
    reference = server.client()
    reference.send("/help")
    reference.send(f"/msg {reference.nick} end-of-help")
    help_lines: list[str] = []
    while (line := reference.recv_line()) != f"*{reference.nick}* end-of-help":
        help_lines.append(line)
    assert any(line.startswith("*** Commands") for line in help_lines), help_lines

    leaver = RawLines.connect(server)
    # The reply is produced in the same tick as the end of stream is seen.
    leaver.sock.sendall(b"/help\nlast words")
    leaver.sock.shutdown(socket.SHUT_WR)
    assert leaver.lines_until_eof() == help_lines
    reference.expect_line(f"*** {leaver.nick} joined #lobby")
    reference.expect_line(f"<{leaver.nick}> last words")
    reference.expect(rf"^\*\*\* {re.escape(leaver.nick)} quit\b")
    assert quiet_lines(reference) == []


# -- S3: slow reader resumes; the EPOLLOUT edge finishes the job ------------------------------


def _kernel_send_buffer_max() -> int:
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            return int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 << 20


@pytest.mark.parametrize("past_kernel_buffers", [False, True], ids=["500KiB", "past-sndbuf"])
def test_slow_reader_gets_everything_after_resuming(
    start: Callable[..., ServerProcess], past_kernel_buffers: bool
) -> None:
    line_bytes = 111  # "<guest-1> " + 100 bytes + "\n"
    if past_kernel_buffers:
        # On loopback the server's own send buffer autotunes up to tcp_wmem[2]
        # (4 MiB) and can swallow 500 KiB whole; only a larger backlog is sure
        # to sit in chatd's output queue and need the EPOLLOUT edge to drain.
        volume = _kernel_send_buffer_max() + (2 << 20)
        limit = volume + (4 << 20)
        # Above the soft limit a slow reader would (by policy) miss room lines.
        server = start(limits={"max_output_bytes": limit, "output_soft_bytes": limit})
    else:
        volume = 500 << 10  # below the default max_output_bytes (1 MiB)
        # A 4 KiB server send buffer (net.sndbuf_bytes) keeps the backlog in
        # chatd's own queue, so the EPOLLOUT edge must drain it.
        server = start(limits={"output_soft_bytes": 1 << 20}, net={"sndbuf_bytes": 4096})
    count = volume // line_bytes
    sender = server.client()
    observer = server.client()
    victim = RawLines.connect(server, rcvbuf=4096)
    sender.expect(rf"^\*\*\* {re.escape(victim.nick)} joined")
    observer.expect(rf"^\*\*\* {re.escape(victim.nick)} joined")
    assert sender.nick == "guest-1"

    lines = [numbered("s", i) for i in range(count)]
    collector = Collector(observer, lambda got: len(got) >= count)
    collector.start()
    for start_at in range(0, count, 500):  # the victim reads nothing meanwhile
        sender.send_raw("".join(f"{line}\n" for line in lines[start_at : start_at + 500]).encode())
    assert sequence_of(collector.result(), f"<{sender.nick}> ", "s") == list(range(count))
    # Everything is queued for the victim now; it resumes with nobody sending.
    got = [victim.line() for _ in range(count)]
    assert sequence_of(got, f"<{sender.nick}> ", "s") == list(range(count)), got[:3]
    assert not victim.buffer, bytes(victim.buffer[:200])
    victim.sock.settimeout(0.3)
    with pytest.raises(TimeoutError):
        victim.sock.recv(65536)  # and nothing more


# -- S6: fairness -------------------------------------------------------------------------


def test_greedy_sender_cannot_starve_others(start: Callable[..., ServerProcess]) -> None:
    # Soft limit raised too: this test wants every greedy line, not the slow-reader policy.
    server = start(limits={"max_output_bytes": 256 << 20, "output_soft_bytes": 256 << 20,
                           **QUICK_STOP})
    reader = server.client()
    greedy = server.client()
    polite = server.client()
    reader.expect(rf"^\*\*\* {re.escape(polite.nick or '')} joined")
    greedy.expect(rf"^\*\*\* {re.escape(polite.nick or '')} joined")

    polite_count = 20
    cap_bytes = 96 << 20  # never reached unless polite lines are held back
    chunk_lines = 400
    stop = threading.Event()
    greedy_sent = [0]
    greedy_error: list[BaseException] = []
    greedy_done = threading.Event()

    def stream() -> None:
        try:
            sent_bytes = 0
            while not stop.is_set() and sent_bytes < cap_bytes:
                first = greedy_sent[0]
                chunk = "".join(
                    numbered("g", i) + "\n" for i in range(first, first + chunk_lines)
                ).encode()
                greedy.send_raw(chunk)
                greedy_sent[0] = first + chunk_lines
                sent_bytes += len(chunk)
        except BaseException as exc:
            greedy_error.append(exc)
        finally:
            greedy_done.set()

    polite_prefix = f"<{polite.nick}> "

    def polite_all_seen(got: list[str]) -> bool:
        if not stop.is_set() and got and got[-1] == polite_prefix + numbered("q", polite_count - 1):
            stop.set()  # every polite line is through: the greedy client may stop
        return greedy_done.is_set() and len(got) >= greedy_sent[0] + polite_count

    collector = Collector(reader, polite_all_seen, timeout=45)
    collector.start()
    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    reader_wait = time.monotonic() + LINE_TIMEOUT
    while not collector.lines and time.monotonic() < reader_wait:
        time.sleep(0.01)  # wait until the greedy stream is flowing
    for i in range(polite_count):
        polite.send(numbered("q", i))
        time.sleep(0.05)
    streamer.join(60)
    assert not streamer.is_alive()
    assert not greedy_error, greedy_error
    stop.set()  # in case the cap was hit
    got = collector.result()

    greedy_seq = sequence_of(got, f"<{greedy.nick}> ", "g")
    polite_seq = sequence_of(got, polite_prefix, "q")
    assert polite_seq == list(range(polite_count))
    assert greedy_seq == list(range(greedy_sent[0]))
    assert len(got) == len(greedy_seq) + len(polite_seq), [
        line for line in got if not line.startswith(("<",))
    ][:5]
    # The polite lines got through while the greedy stream was still being
    # served: the last greedy line (sent only after the reader had every
    # polite line, unless the cap was hit) comes after all of them.
    last_polite = got.index(polite_prefix + numbered("q", polite_count - 1))
    last_greedy = got.index(f"<{greedy.nick}> " + numbered("g", greedy_sent[0] - 1))
    assert last_polite < last_greedy, "polite lines were held back until the greedy client paused"
    print(f"greedy streamed {greedy_sent[0]} lines")


# -- N1: reset after a partial line -----------------------------------------------------------


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_reset_after_partial_line(start: Callable[..., ServerProcess]) -> None:
    server = start()
    watcher = server.client()
    leavers = []
    for round_ in range(6):
        leaver = RawLines.connect(server)
        leavers.append(leaver.nick)
        leaver.sock.sendall(b"partial")
        if round_ % 2:
            # Let chatd read the fragment first, so the reset comes in a later event.
            leaver.sock.sendall(b"\nline\npartial")
            watcher.expect(rf"^<{re.escape(leaver.nick)}> line$")
        _reset(leaver.sock)

    quiet_lines(watcher, wait=1.0)
    history = watcher.history[1:]  # everything after the watcher's welcome
    for nick in leavers:
        quits = [line for line in history if re.match(rf"^\*\*\* {re.escape(nick)} quit\b", line)]
        assert len(quits) == 1, (nick, history)
    # Nothing else, except perhaps the final fragment: whether bytes that
    # preceded an RST are delivered is not specified.
    joins = [f"*** {nick} joined #lobby" for nick in leavers]
    assert [line for line in history if line in joins] == joins
    unexpected = [
        line
        for line in history
        if line not in joins and not re.match(r"^(\*\*\* \S+ quit\b|<\S+> (partial|line)$)", line)
    ]
    assert unexpected == [], unexpected
    # The server carries on.
    late = server.client()
    watcher.expect_line(f"*** {late.nick} joined #lobby")
    late.send("after the resets")
    watcher.expect_line(f"<{late.nick}> after the resets")
