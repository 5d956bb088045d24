"""RELIABILITY.md section A (F1-F5): hostile and faulty *input*, against a real chatd.

Every test starts its own ``chatd`` process (``chatd.testing``), talks to it over
real loopback sockets, provokes the fault for real and then checks two things:
the offender got the documented treatment, and the well-behaved clients in the
same test received everything, exactly once and in order.  Afterwards the server
must still be alive and its log free of tracebacks.

chatd's documented policies that these tests hold it to (README, docs/config.md,
``chatd/framing.py``):

* invalid UTF-8 is *replaced* (U+FFFD) and delivered, never refused;
* the sanitiser removes NUL, CR, BOM and every other control; empty lines are ignored;
* an over-long terminated line earns ``! line too long (max N bytes); it was not
  sent`` and the connection stays;
* an endless unterminated line is discarded, and past ``limits.recvq_max_bytes``
  the client gets ``! input line far too long (excess flood); disconnecting`` and
  is closed (stats kind ``qbuf``);
* HTTP, TLS and binary first bytes are answered with one ``! ...`` line
  (``FOREIGN_PROTOCOL_TEXTS``, in the protocol's words) and closed (stats kinds ``foreign_*``).

Nothing here asserts how fast chatd is; CPU checks read ``/proc/<pid>/stat`` with
generous bounds (a busy loop would burn the whole window).
"""

from __future__ import annotations

import contextlib
import random
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chatd.framing import FOREIGN_PROTOCOL_TEXTS
from chatd.testing import ChatClient, ServerProcess, cpu_seconds, fd_count, rss_bytes

pytestmark = pytest.mark.timeout(60)

OPER_PASSWORD = "reliability-oper"
LINE_TIMEOUT = 10.0
EMOJI = "\U0001f603"  # 😃, four UTF-8 bytes
TOO_LONG = "! line too long (max {limit} bytes); it was not sent"
QBUF = "! input line far too long (excess flood); disconnecting"
#: Bytes that must never reach a terminal: C0 except LF, and DEL.
FORBIDDEN_BYTES = set(range(0x00, 0x0A)) | set(range(0x0B, 0x20)) | {0x7F}

#: What the line protocol answers another protocol's first bytes with (its ``! `` lines).
FOREIGN_PROTOCOL_REPLIES = {kind: f"! {text}" for kind, text in FOREIGN_PROTOCOL_TEXTS.items()}


# -- fixtures and helpers --------------------------------------------------------------


@pytest.fixture
def start(chatd_server: Callable[..., ServerProcess]) -> Iterator[Callable[..., ServerProcess]]:
    """``start(**sections)`` -> a running chatd with an operator password.

    After the test: the process must still be running and its log must hold no
    traceback.
    """
    started: list[ServerProcess] = []

    def _start(**sections: Any) -> ServerProcess:
        limits = {"close_linger_seconds": 0.5, **sections.pop("limits", {})}
        plugins = {"oper": {"password": OPER_PASSWORD}, **sections.pop("plugins", {})}
        server = chatd_server(limits=limits, plugins=plugins, **sections)
        started.append(server)
        return server

    yield _start
    for server in started:
        alive = server.proc.poll() is None
        server.stop()
        log = server.log()
        assert alive, f"chatd died during the test:\n{log[-3000:]}"
        assert "Traceback" not in log, log[-5000:]


def crowd(server: ServerProcess, count: int) -> list[ChatClient]:
    """``count`` connected clients; every join notice is consumed by those already there."""
    clients: list[ChatClient] = []
    for _ in range(count):
        new = server.client(timeout=LINE_TIMEOUT)
        for old in clients:
            old.expect_line(f"*** {new.nick} joined #lobby")
        clients.append(new)
    return clients


def sync(client: ChatClient) -> None:
    """A /who round trip whose reply must be the very next line (nothing else was queued)."""
    client.send("/who #lobby")
    line = client.recv_line()
    assert line.startswith("*** #lobby has "), f"expected the /who reply first, got {line!r}"


def numbered(tag: str, i: int, width: int) -> str:
    """``tag-000123 xxxx...``, ``width`` bytes long."""
    head = f"{tag}-{i:06d} "
    return head + "x" * (width - len(head))


def _counts(text: str) -> dict[str, int]:
    if text == "none":
        return {}
    return {name: int(count) for name, count in (item.split() for item in text.split(", "))}


def operator_stats(server: ServerProcess) -> dict[str, dict[str, int]]:
    """``/stats`` as an operator: ``{"refused": {...}, "disconnects": {...}}`` by kind.

    The operator joins #lobby, so call this after the room traffic was checked.
    """
    op = server.client(source="127.0.0.250", timeout=LINE_TIMEOUT)
    try:
        op.send(f"/oper {OPER_PASSWORD}")
        op.expect(r"^\*\*\* you are now an operator$")
        op.send("/stats")
        refused = op.expect(r"^\*\*\* refused: (.*)$").group(1)
        disconnects = op.expect(r"^\*\*\* limit disconnections: (.*)$").group(1)
    finally:
        op.close()
    return {"refused": _counts(refused), "disconnects": _counts(disconnects)}


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``predicate`` until true; return the time it took (fails after ``timeout``)."""
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - began


class Raw:
    """A bare socket that keeps every byte chatd sent (strict UTF-8 checked later)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.data = bytearray()
        self.eof = False
        self.reset = False

    @classmethod
    def connect(
        cls, server: ServerProcess, *, rcvbuf: int | None = None, welcome: bool = True
    ) -> Raw:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(LINE_TIMEOUT)
        sock.connect(server.address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw = cls(sock)
        if welcome:
            raw.read_until(b"Type /help for commands.\n")
        return raw

    def _recv(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(262144)
        except TimeoutError:
            return False
        except ConnectionResetError:
            self.eof = self.reset = True
            return False
        if not chunk:
            self.eof = True
            return False
        self.data += chunk
        return True

    def read_until(self, marker: bytes, timeout: float = LINE_TIMEOUT) -> bytes:
        deadline = time.monotonic() + timeout
        while marker not in self.data:
            if not self._recv(deadline):
                raise AssertionError(
                    f"never received {marker!r} (eof={self.eof}); got {bytes(self.data[-300:])!r}"
                )
        return bytes(self.data)

    def read_to_eof(self, timeout: float = LINE_TIMEOUT) -> bytes:
        deadline = time.monotonic() + timeout
        while not self.eof:
            if not self._recv(deadline) and not self.eof:
                raise AssertionError(f"no EOF within {timeout} s; got {bytes(self.data[-300:])!r}")
        return bytes(self.data)

    def lines(self) -> list[str]:
        text = check_clean(bytes(self.data))
        return text.split("\n")[:-1]

    def close(self) -> None:
        self.sock.close()


def check_clean(raw: bytes) -> str:
    """Strict UTF-8 (chatd never emits anything else) with no control bytes; return the text."""
    text = raw.decode("utf-8")
    bad = sorted({b for b in raw if b in FORBIDDEN_BYTES})
    assert not bad, f"control bytes {[hex(b) for b in bad]} reached a client: {raw[-300:]!r}"
    return text


# -- F1: reassembly under any segmentation ------------------------------------------------


def test_F1_line_cut_at_every_byte_reaches_every_client_once(
    start: Callable[..., ServerProcess],
) -> None:
    """F1: ``"hello wörld 😃\\n"`` one byte per send() with 1 ms gaps (and cut once at
    every offset): "every other client receives each line exactly once, in order, with
    nothing lost or merged"."""
    server = start()
    sender, *receivers = crowd(server, 4)
    text = f"hello wörld {EMOJI}"
    data = (text + "\n").encode()
    for byte in data:  # TCP_NODELAY: one segment per byte
        sender.send_raw(bytes([byte]))
        time.sleep(0.001)
    for cut in range(1, len(data)):  # every split point, code points included
        sender.send_raw(data[:cut])
        time.sleep(0.002)
        sender.send_raw(data[cut:])
    sender.send("END")
    for receiver in receivers:
        for _ in range(len(data)):
            receiver.expect_line(f"<{sender.nick}> {text}")
        receiver.expect_line(f"<{sender.nick}> END")
    for receiver in receivers:
        receiver.expect_nothing(0.2)
    sender.expect_nothing(0.2)


@pytest.mark.parametrize("read_budget", [1024, 65536], ids=["budget-1KiB", "budget-64KiB"])
@pytest.mark.parametrize(
    ("count", "width"), [(1000, 40), (500, 131)], ids=["1000-lines", "64KiB-paste-500-lines"]
)
def test_F1_burst_in_one_write_is_delivered_with_no_further_input(
    start: Callable[..., ServerProcess], read_budget: int, count: int, width: int
) -> None:
    """F1: 1,000 lines in one sendall, and a 64 KiB paste (500 lines) in one write, then
    silence: "The paste is fully delivered *with no further input*", to every client,
    in order, each line once.  A 1 KiB read budget makes chatd stop reading long before
    EAGAIN, so only its ready list can bring it back to the rest."""
    server = start(limits={"read_budget_bytes": read_budget})
    sender, *receivers = crowd(server, 4)
    lines = [numbered("p", i, width) for i in range(count)]
    payload = "".join(f"{line}\n" for line in lines).encode()
    sender.send_raw(payload)  # one write, then the sender is silent
    expected = [f"<{sender.nick}> {line}" for line in lines]
    for receiver in receivers:
        got = [receiver.recv_line() for _ in range(count)]
        assert got == expected
    for receiver in receivers:
        receiver.expect_nothing(0.3)
    sender.expect_nothing(0.1)


# -- F2: byte hygiene -------------------------------------------------------------------


def test_F2_code_point_split_across_reads_is_delivered_intact(
    start: Callable[..., ServerProcess],
) -> None:
    """F2: "An emoji split across two sends 50 ms apart, and placed at offsets 1023-1025 ...
    Split code points are delivered intact (decode per line)".  chatd's read budget is
    1 KiB here, so its own recv() cuts every line at byte 1024."""
    server = start(limits={"read_budget_bytes": 1024})
    sender, *receivers = crowd(server, 3)
    sent: list[str] = []
    for pad in (1021, 1022, 1023):  # the emoji's 4 bytes straddle offset 1024
        line = "a" * pad + EMOJI + " tail"
        sender.send(line)
        sent.append(line)
    for inside in (1, 2, 3):  # two sends 50 ms apart, cut inside the emoji
        line = f"split {inside} {EMOJI} done"
        data = (line + "\n").encode()
        cut = data.index(EMOJI.encode()) + inside
        sender.send_raw(data[:cut])
        time.sleep(0.05)
        sender.send_raw(data[cut:])
        sent.append(line)
    for receiver in receivers:
        for line in sent:
            receiver.expect_line(f"<{sender.nick}> {line}")
    sync(sender)


def test_F2_invalid_utf8_is_replaced_and_delivered_without_error(
    start: Callable[..., ServerProcess],
) -> None:
    """F2 (chatd's policy; the issue overrides the catalogue's ERROR): invalid UTF-8 is
    replaced with U+FFFD and delivered; "nothing" is refused, "the connection stays and
    the next valid line works", and "chatd never emits invalid UTF-8"."""
    server = start()
    receiver = Raw.connect(server)
    sender = server.client()
    receiver.read_until(f"*** {sender.nick} joined #lobby\n".encode())
    mark = len(receiver.data)
    # The very first bytes of the connection: a Latin-1 terminal is not "binary".
    invalid = [
        b"caf\xe9 latin-1",
        b"\xff",  # never valid
        b"\xc0\xaf",  # overlong "/"
        b"\xed\xa0\x80",  # a UTF-16 surrogate
        b"\xf4\x90\x80\x80",  # above U+10FFFF
        b"\xe2\x82",  # truncated
    ]
    for payload in invalid:
        sender.send_raw(payload + b"\n")
    sender.send("still here")
    receiver.read_until(f"<{sender.nick}> still here\n".encode())
    text = check_clean(bytes(receiver.data[mark:]))
    lines = text.split("\n")[:-1]
    nick = re.escape(sender.nick or "")
    assert re.fullmatch(rf"<{nick}> caf\ufffd+ latin-1", lines[0]), lines[0]
    for line in lines[1:-1]:
        assert re.fullmatch(rf"<{nick}> \ufffd+", line), line
    assert len(lines) == len(invalid) + 1
    assert lines[-1] == f"<{sender.nick}> still here"
    # No error for the sender (it is the documented policy), and commands still work.
    sync(sender)
    receiver.close()


def test_F2_terminators_empty_lines_nul_and_bom(start: Callable[..., ServerProcess]) -> None:
    """F2: ``hi\\r\\n``, ``\\n``, ``\\r\\n``, ``a\\x00b\\n``, a BOM at line start:
    "CR is stripped. Empty lines are ignored silently. NUL is removed ... A leading BOM
    is stripped"; the recipient's bytes are exactly the clean lines."""
    server = start()
    receiver = Raw.connect(server)
    sender = server.client()
    receiver.read_until(f"*** {sender.nick} joined #lobby\n".encode())
    mark = len(receiver.data)
    for payload in (
        b"hi\r\n",
        b"\n",
        b"\r\n",
        b"\r\r\n",
        b"\x00\n",  # only a NUL: empty once cleaned, so ignored
        b"a\x00b\n",
        b"\xef\xbb\xbfbom first\n",
        b"END\n",
    ):
        sender.send_raw(payload)
    raw = receiver.read_until(f"<{sender.nick}> END\n".encode())[mark:]
    check_clean(raw)
    n = sender.nick
    assert raw == f"<{n}> hi\n<{n}> ab\n<{n}> bom first\n<{n}> END\n".encode()
    sync(sender)  # and no error for the empty ones
    receiver.close()


# -- F3: line-length limits ---------------------------------------------------------------


def test_F3a_terminated_line_over_4096_bytes_is_refused_and_connection_kept(
    start: Callable[..., ServerProcess],
) -> None:
    """F3 (a): a 4,097-byte line ending in ``\\n``: "The sender gets ERROR line too long
    (max 4096 bytes). The line is not broadcast ... The connection is kept."  (Shipped
    default ``max_line_bytes``.)"""
    server = start()
    alice, bob = crowd(server, 2)
    refused = TOO_LONG.format(limit=4096)
    bob.send("x" * 4097)
    bob.expect_line(refused)
    bob.send_raw(("é" * 2049).encode() + b"\r\n")  # 4,098 bytes: the limit counts bytes
    bob.expect_line(refused)
    bob.send("y" * 4096)  # exactly the limit is fine
    bob.send_raw(b"z" * 4096 + b"\r\n")  # and the terminator does not count
    bob.send("still connected")
    alice.expect_line(f"<{bob.nick}> {'y' * 4096}")  # nothing of the refused lines first
    alice.expect_line(f"<{bob.nick}> {'z' * 4096}")
    alice.expect_line(f"<{bob.nick}> still connected")
    sync(bob)


def _bystanders_unaffected(alice: ChatClient, bob: ChatClient, tag: str) -> None:
    for i in range(5):
        alice.send(f"{tag} {i}")
    for i in range(5):
        bob.expect_line(f"<{alice.nick}> {tag} {i}")


def test_F3b_one_mib_without_newline_is_cut_at_recvq_max(
    start: Callable[..., ServerProcess],
) -> None:
    """F3 (b): 1 MiB with no ``\\n`` in one write: "After max_line_bytes, chatd enters
    discard mode with one notice. Once recvq_max (64 KiB) is exceeded: ERROR ..., then
    close (qbuf_limit_disconnections +1)"; other clients are unaffected."""
    server = start()
    alice, bob = crowd(server, 2)
    offender = server.client()
    alice.expect_line(f"*** {offender.nick} joined #lobby")
    bob.expect_line(f"*** {offender.nick} joined #lobby")
    # chatd may reset us once it stops discarding: the lines below still count.
    with contextlib.suppress(OSError):
        offender.send_raw(b"A" * (1 << 20))
    lines = offender.expect_eof(timeout=LINE_TIMEOUT)
    assert [line for line in lines if line.startswith("!")] == [TOO_LONG.format(limit=4096), QBUF]
    quit_line = alice.recv_line()
    assert quit_line.startswith(f"*** {offender.nick} quit ("), quit_line
    bob.expect_line(quit_line)
    _bystanders_unaffected(alice, bob, "after the megabyte")
    assert operator_stats(server)["disconnects"] == {"qbuf": 1}


def test_F3c_endless_stream_without_newline_keeps_memory_bounded(
    start: Callable[..., ServerProcess],
) -> None:
    """F3 (c): 100 MiB streamed without a newline: cut once past recvq_max with ``!``
    then close; "Server RSS grows by less than a few MB; other clients are unaffected"
    (they keep chatting while the stream runs)."""
    server = start()
    alice, bob = crowd(server, 2)
    offender = server.client()
    alice.expect_line(f"*** {offender.nick} joined #lobby")
    bob.expect_line(f"*** {offender.nick} joined #lobby")
    rss_before = rss_bytes(server.pid)
    streamed = [0]
    total = 100 << 20

    def stream() -> None:
        chunk = b"B" * (64 << 10)
        try:
            while streamed[0] < total:
                offender.sock.sendall(chunk)
                streamed[0] += len(chunk)
        except OSError:
            pass  # closed by chatd: expected

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    for i in range(20):  # the others talk meanwhile
        alice.send(f"during {i}")
        time.sleep(0.01)
    lines = offender.expect_eof(timeout=LINE_TIMEOUT)
    streamer.join(LINE_TIMEOUT)
    assert not streamer.is_alive()
    assert [line for line in lines if line.startswith("!")] == [TOO_LONG.format(limit=4096), QBUF]
    got = [bob.recv_line() for _ in range(21)]
    assert [line for line in got if line.startswith("<")] == [
        f"<{alice.nick}> during {i}" for i in range(20)
    ]
    assert [line for line in got if not line.startswith("<")] == [
        f"*** {offender.nick} quit (excess flood: input line too long)"
    ]
    growth = rss_bytes(server.pid) - rss_before
    print(f"discarded {streamed[0]} bytes; RSS grew by {growth} bytes")
    assert growth < 4 << 20, f"RSS grew by {growth} bytes while discarding {streamed[0]} bytes"
    _bystanders_unaffected(alice, bob, "after the stream")
    assert operator_stats(server)["disconnects"] == {"qbuf": 1}


# -- F4: data + FIN, trailing fragment, half-close ---------------------------------------------


def test_F4_data_and_fin_drained_across_read_budget_passes(
    start: Callable[..., ServerProcess],
) -> None:
    """F4: 30 KiB of lines plus a trailing fragment and the FIN in one corked burst,
    with a 1 KiB read budget: every line and then the fragment are broadcast ("deliver it
    as a final line"), then "the departure exactly once"; nothing is dropped because the
    RDHUP arrived with the data."""
    server = start(limits={"read_budget_bytes": 1024})
    watchers = crowd(server, 2)
    leaver = Raw.connect(server)
    for watcher in watchers:
        joined = watcher.expect(r"^\*\*\* (\S+) joined #lobby$")
    nick = joined.group(1)
    lines = [numbered("f", i, 100) for i in range(300)]
    leaver.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    leaver.sock.sendall("".join(f"{line}\n" for line in lines).encode() + b"tail fragment")
    leaver.sock.shutdown(socket.SHUT_WR)  # corked: the FIN rides on the last data segment
    for watcher in watchers:
        got = [watcher.recv_line() for _ in range(len(lines) + 2)]
        assert got[:-2] == [f"<{nick}> {line}" for line in lines]
        assert got[-2] == f"<{nick}> tail fragment"
        assert got[-1].startswith(f"*** {nick} quit"), got[-1]
    for watcher in watchers:
        watcher.expect_nothing(0.5)  # exactly one departure
    leaver.read_to_eof()
    assert not leaver.reset, "chatd reset the connection instead of closing it"
    leaver.close()


def test_F4_half_closed_client_that_never_reads_is_released_within_linger(
    start: Callable[..., ServerProcess],
) -> None:
    """F4: "chatd flushes pending output to that client (bounded), closes it, and
    broadcasts the departure exactly once": a half-closed client with ~100 KiB queued
    that never reads is released after ``close_linger_seconds``, its fd returned; when
    it finally reads, what it got is an in-order prefix."""
    linger = 1.0
    server = start(limits={"close_linger_seconds": linger}, net={"sndbuf_bytes": 4096})
    talker, watcher = crowd(server, 2)
    baseline_fds = fd_count(server.pid)
    leaver = Raw.connect(server, rcvbuf=4096)
    talker.expect(r"^\*\*\* (\S+) joined #lobby$")
    nick = watcher.expect(r"^\*\*\* (\S+) joined #lobby$").group(1)
    assert fd_count(server.pid) == baseline_fds + 1
    lines = [numbered("h", i, 1000) for i in range(100)]
    for line in lines:
        talker.send(line)
    for line in lines:
        watcher.expect_line(f"<{talker.nick}> {line}")
    leaver.sock.shutdown(socket.SHUT_WR)  # it says goodbye but never reads
    watcher.expect_line(f"*** {nick} quit (connection closed by peer)")
    released = wait_until(
        lambda: fd_count(server.pid) == baseline_fds, linger + 5.0, "the leaver's fd to close"
    )
    print(f"fd released {released:.2f} s after the half-close")
    watcher.expect_nothing(0.3)
    data = leaver.read_to_eof()
    # The connection was cut: only whole lines count, the tail may be a fragment.
    got = [line for line in check_clean(data).split("\n")[:-1] if line.startswith("<")]
    assert 0 < len(got) < len(lines), "the never-reading client was not cut short"
    assert got == [f"<{talker.nick}> {line}" for line in lines[: len(got)]]
    leaver.close()


# -- F5: foreign protocols ---------------------------------------------------------------


def _http_warnings(server: ServerProcess) -> list[str]:
    return [line for line in server.log().splitlines() if " WARNING " in line and "HTTP" in line]


@pytest.mark.parametrize("pieces", [False, True], ids=["one-write", "slow-pieces"])
def test_F5a_http_get_is_answered_and_closed(
    start: Callable[..., ServerProcess], pieces: bool
) -> None:
    """F5 (a): first line ``GET / HTTP/1.1``, then ``Host: x``: "A reply ERROR this is
    not an HTTP server, then close, with at most one warning log per 60 s. Host: lines
    never reach other users."  Sent whole, and in pieces so the first read is no request."""
    server = start()
    bystander = server.client()
    request = b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: test\r\n\r\n"
    for _ in range(3):
        http = Raw.connect(server)
        if pieces:
            http.sock.sendall(request[:2])
            time.sleep(0.05)
            http.sock.sendall(request[2:])
        else:
            http.sock.sendall(request)
        lines = [line for line in http.read_to_eof().decode().split("\n") if line]
        assert lines[-1] == FOREIGN_PROTOCOL_REPLIES["http"], lines
        assert [line for line in lines if line.startswith("!")] == [lines[-1]]
        http.close()
        nick = bystander.expect(r"^\*\*\* (\S+) joined #lobby$").group(1)
        bystander.expect_line(f"*** {nick} quit (spoke http, not chat)")
    bystander.send("/who")
    bystander.expect(r"^\*\*\* #lobby has 1 member")
    assert not [line for line in bystander.history if "Host" in line or "HTTP" in line]
    # The third departure is logged after any warning for it (by the log's own thread).
    server.wait_for_log_count(r'reason="spoke http, not chat"', 3)
    assert len(_http_warnings(server)) <= 1, _http_warnings(server)
    assert operator_stats(server)["disconnects"] == {"foreign_http": 3}


def test_F5b_browser_post_cannot_chat(start: Callable[..., ServerProcess]) -> None:
    """F5 (b): ``POST /x HTTP/1.1`` as a browser on a hostile page sends it to 127.0.0.1:
    answered with the HTTP reply and closed; neither its headers nor a body full of chat
    lines and commands reach anybody."""
    server = start()
    bystander = server.client()
    body = b"/nick evil\r\nhello from a web page\r\n/join #pwned\r\n"
    request = (
        b"POST /x HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nOrigin: http://evil.example\r\n"
        b"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (server.port, len(body), body)
    )
    post = Raw.connect(server)
    post.sock.sendall(request)
    lines = [line for line in post.read_to_eof().decode().split("\n") if line]
    assert lines[-1] == FOREIGN_PROTOCOL_REPLIES["http"], lines
    post.close()
    nick = bystander.expect(r"^\*\*\* (\S+) joined #lobby$").group(1)
    bystander.expect_line(f"*** {nick} quit (spoke http, not chat)")
    bystander.send("/rooms")
    bystander.expect_line(
        "*** 1 room: #lobby (1) *  (* = your current room, "
        "+ = you are in it)"
    )
    assert operator_stats(server)["disconnects"] == {"foreign_http": 1}


def _client_hello() -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_F5c_tls_client_hello_is_answered_and_closed_without_spinning(
    start: Callable[..., ServerProcess],
) -> None:
    """F5 (c): a TLS ClientHello on the plain port: one ``!`` line, then close, "with no
    CPU spin"; a real TLS client fails its handshake instead of hanging."""
    server = start()
    bystander = server.client()
    cpu_before = cpu_seconds(server.pid)
    hello = _client_hello()
    assert hello[0] == 0x16  # a TLS handshake record
    tls = Raw.connect(server, welcome=False)
    tls.sock.sendall(hello)
    text = tls.read_to_eof().decode()
    assert text.endswith(FOREIGN_PROTOCOL_REPLIES["tls"] + "\n"), text
    tls.close()
    # What a real TLS client sees: a failed handshake, promptly, not a hang.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(server.address, timeout=LINE_TIMEOUT) as plain,
        pytest.raises((ssl.SSLError, ConnectionError)),
    ):
        context.wrap_socket(plain, server_hostname="localhost")
    time.sleep(1.0)  # a spinning loop would burn this whole second
    used = cpu_seconds(server.pid) - cpu_before
    print(f"server CPU in the window: {used:.2f} s")
    assert used < 0.5, f"chatd used {used:.2f} s of CPU around two TLS hellos"
    for _ in range(2):
        nick = bystander.expect(r"^\*\*\* (\S+) joined #lobby$").group(1)
        bystander.expect_line(f"*** {nick} quit (spoke tls, not chat)")
    assert operator_stats(server)["disconnects"] == {"foreign_tls": 2}


def _random_binary(size: int, seed: int = 5) -> bytes:
    rng = random.Random(seed)
    data = bytes(b for b in rng.randbytes(size * 2) if b != 0x0A)  # no newline at all
    return data[:size]


def test_F5d_random_binary_is_answered_and_closed_without_spinning(
    start: Callable[..., ServerProcess],
) -> None:
    """F5 (d): 8 KiB of random binary with no newline as the first bytes: one ``!`` line
    and close, "with no CPU spin"; nothing of it reaches the others."""
    server = start()
    bystander = server.client()
    cpu_before = cpu_seconds(server.pid)
    junk = Raw.connect(server, welcome=False)
    junk.sock.sendall(_random_binary(8192))
    text = junk.read_to_eof().decode()
    assert text.endswith(FOREIGN_PROTOCOL_REPLIES["binary"] + "\n"), text
    junk.close()
    time.sleep(1.0)
    used = cpu_seconds(server.pid) - cpu_before
    print(f"server CPU in the window: {used:.2f} s")
    assert used < 0.5, f"chatd used {used:.2f} s of CPU around 8 KiB of junk"
    nick = bystander.expect(r"^\*\*\* (\S+) joined #lobby$").group(1)
    bystander.expect_line(f"*** {nick} quit (spoke binary, not chat)")
    assert operator_stats(server)["disconnects"] == {"foreign_binary": 1}


def test_F5d_binary_after_a_chat_line_is_cut_at_recvq_max(
    start: Callable[..., ServerProcess],
) -> None:
    """F5 (d), mid-session: junk that is not the first bytes is not sniffed, so it is
    "Closed at recvq_max" (here 4 KiB) through discard mode, without spinning, and
    nothing of it is broadcast."""
    server = start(limits={"max_line_bytes": 1024, "recvq_max_bytes": 4096})
    bystander, talker = crowd(server, 2)
    talker.send("hello first")
    bystander.expect_line(f"<{talker.nick}> hello first")
    cpu_before = cpu_seconds(server.pid)
    talker.send_raw(_random_binary(8192, seed=7))
    errors = [line for line in talker.expect_eof() if line.startswith("!")]
    # The discard-mode notice is skipped when the same read already passes recvq_max.
    assert errors in ([QBUF], [TOO_LONG.format(limit=1024), QBUF]), errors
    bystander.expect_line(f"*** {talker.nick} quit (excess flood: input line too long)")
    time.sleep(1.0)
    used = cpu_seconds(server.pid) - cpu_before
    print(f"server CPU in the window: {used:.2f} s")
    assert used < 0.5, f"chatd used {used:.2f} s of CPU around 8 KiB of junk"
    assert operator_stats(server)["disconnects"] == {"qbuf": 1}


def test_F5_reset_right_after_foreign_bytes_is_harmless(
    start: Callable[..., ServerProcess],
) -> None:
    """F5 with N1's fault: a scanner sends a request or a ClientHello and resets at once
    (SO_LINGER 0).  No traceback, the others carry on."""
    server = start()
    bystander = server.client()
    for payload in (b"GET / HTTP/1.1\r\n\r\n", _client_hello(), _random_binary(4096)) * 3:
        sock = socket.create_connection(server.address, timeout=LINE_TIMEOUT)
        sock.sendall(payload)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    # A reset may beat the accept (then chatd never admits it); every one admitted
    # leaves exactly once.
    late = server.client()
    late.send("after the scanners")
    bystander.expect(rf"^<{re.escape(late.nick or '')}> after the scanners$")
    with contextlib.suppress(AssertionError):
        while True:  # whatever else is still coming (events of one tick may interleave)
            bystander.recv_line(timeout=0.5)
    history = bystander.history[1:]
    joined = [m.group(1) for line in history if (m := re.match(r"^\*\*\* (\S+) joined", line))]
    assert joined[-1] == late.nick
    for nick in joined[:-1]:
        quits = [line for line in history if line.startswith(f"*** {nick} quit (")]
        assert len(quits) == 1, (nick, history)
    assert len(history) == 2 * len(joined), history
