"""One client socket: read until EAGAIN (within a budget), buffer output, close well.

A :class:`Connection` is the transport; what the bytes *mean* belongs to its
:class:`Protocol` (a :mod:`chatd.protocols` object: the line protocol, jsonl,
...).  The split mirrors asyncio's transport/protocol pair: the protocol never
touches the socket, and the connection never looks inside the bytes.

Edge-triggered rules kept here (DESIGN.md section 3)
----------------------------------------------------
* The socket is registered once with ``EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET``
  and never modified.
* Reads loop until ``BlockingIOError``.  A connection that used its per-pass
  byte budget before EAGAIN puts itself on the reactor's ready list: no new
  edge would ever announce the bytes still waiting, and stopping at the budget
  is what keeps one fast sender from starving everybody else.  Every read also
  draws on the tick's budget, shared by all connections (the reactor's
  ``tick_read_left``); a read that finds it spent is deferred to the next tick
  (``Reactor.defer_read``), so a burst from many clients is spread over ticks.
* Event bits are tested with ``&``.  ERR/HUP/RDHUP go to the read path, which
  drains whatever arrived with the FIN before it handles the end of stream.
* ``write()`` only appends to the output queue and asks the reactor for one
  flush at the end of the tick; many lines become one ``send()``.  A partial
  send keeps the rest, and the EPOLLOUT edge resumes it with no other traffic.
* Closing is never done inside a callback: the protocol hears
  ``connection_lost`` from the ready list, and the fd is unregistered before it
  is shut down and closed, so stale events in the same batch are skipped.

Graceful close (``close()``): stop reading lines, flush what is queued (the
goodbye), ``shutdown(SHUT_WR)`` so the FIN follows the data, discard input until
the peer's FIN or ``linger`` seconds, then close.  Closing with unread input
would make the kernel send RST, which can destroy the goodbye in flight.

A context with ``reset_after_goodbye`` (the line protocol's: people on ``nc``
and ``ncat``) ends differently once the goodbye is flushed: no FIN, but a wait
until the peer's TCP has acknowledged every byte (``SIOCOUTQ`` is 0, polled on
a short backing-off timer), a short grace for the peer's program to read it
(``_READ_GRACE``), then ``SO_LINGER 0`` and close: a reset.  ``nc`` and
``ncat`` wait for their stdin after a FIN (ncat never looks at the socket
again), so a person would sit at a dead prompt; a reset is what makes them
return to the shell.  Nothing is lost: an acknowledged byte is in the peer's
receive queue, and Linux keeps it readable after the reset.  A peer that sends
its own FIN first (``nc -N``, a script) gets the FIN path as before, and a
peer that acknowledges nothing within ``linger`` is closed without a reset
(the kernel keeps trying to deliver what is unsent).

Output limits (RELIABILITY S1-S3, R5)
-------------------------------------
* Above ``hard`` bytes queued the connection is cut at once.
* Above ``soft`` bytes it is a slow reader: room lines for it are skipped and
  counted (``* N lines skipped`` once it catches up), its input is no longer
  read (a client cannot make the server queue replies it never reads), and the
  server's sweep cuts it if it stays above for ``soft_seconds``.
* All connections share one :class:`OutputAccount`; past its limit the server
  disconnects the largest buffers first.
* ``last_progress`` records the last successful send while output is pending,
  for the server's send timeout.
"""

from __future__ import annotations

import _socket
import contextlib
import ctypes
import enum
import fcntl
import logging
import os
import socket
import struct
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol as _Protocol

from ..reactor import (
    CONNECTION_GONE_ERRNOS,
    EPOLLERR,
    EPOLLHUP,
    EPOLLIN,
    EPOLLOUT,
    EPOLLRDHUP,
    STREAM_EVENTS,
    Reactor,
    Timer,
)

log = logging.getLogger("chatd.connection")

_READ_EVENTS = EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR
#: Events after which a read goes on to EAGAIN even past a short read: the end of the
#: stream is waiting behind the data, and it raises no edge of its own again.
_END_EVENTS = EPOLLRDHUP | EPOLLHUP | EPOLLERR
_WRITE_EVENTS = EPOLLOUT | EPOLLHUP | EPOLLERR
#: The first and the longest wait between two looks at the unacknowledged bytes of a
#: closing connection (``reset_after_goodbye``): an ACK on loopback or a LAN comes in
#: well under a millisecond, one across the world in a few hundred.
_ACK_POLL_FIRST = 0.002
_ACK_POLL_MAX = 0.25
#: After the ACK, how long the peer's program gets to read what its kernel holds before
#: the reset.  nc drops a socket that reports an error without reading it (its
#: POLLERR rule), so a reset that lands before nc's next poll loses the goodbye on the
#: screen (measured: 6 in 40 on loopback with no wait, none with 20 ms on a loaded
#: machine).  A program stopped for longer than this still misses it.
_READ_GRACE = 0.1
_LINGER_NOW = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 seconds: close() sends RST
#: A ``struct sockaddr`` whose family is AF_UNSPEC (0): connect(2) to it disconnects.
_UNSPEC_ADDRESS = bytes(16)
_LIBC = ctypes.CDLL(None, use_errno=True)


def reset_now(sock: _socket.socket) -> None:
    """Send RST to the peer now, whoever else holds the descriptor.

    ``SO_LINGER 0`` then ``close()`` resets only when this is the last reference to
    the socket: a forked child holding a copy (a plugin's ``os.fork``) would keep
    the peer waiting until it exits (RELIABILITY P4).  Linux's TCP disconnect,
    connect(2) to an ``AF_UNSPEC`` address (``tcp_disconnect``), resets the
    connection itself; the standard library cannot make that call, so it goes
    through libc.  Should it fail, the linger does it at the close.
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_NOW)
    _LIBC.connect(sock.fileno(), _UNSPEC_ADDRESS, len(_UNSPEC_ADDRESS))


def unacknowledged_bytes(sock: _socket.socket) -> int | None:
    """Bytes sent but not yet acknowledged by the peer's TCP (and not yet sent),
    or None if the socket cannot say (``SIOCOUTQ``, alias ``TIOCOUTQ``: on a TCP
    socket it is ``write_seq - snd_una``, so 0 means the peer has every byte and
    the FIN, if one was sent)."""
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return None
    return int(struct.unpack("i", raw)[0])


class State(enum.Enum):
    OPEN = "open"  # reading lines, writing freely
    CLOSING = "closing"  # flushing the goodbye, waiting for the peer's FIN
    CLOSED = "closed"  # fd released


class Ending(enum.Enum):
    """How far a closing connection has gone once its output is flushed."""

    FLUSHING = "flushing"  # the goodbye is still being sent
    FIN_SENT = "fin sent"  # shutdown(SHUT_WR) done: waiting for the peer's FIN
    AWAITING_ACK = "awaiting ack"  # waiting for the peer's ACK, then a reset


class Protocol(_Protocol):
    """What a connection reports to (a :class:`chatd.protocols.ChatProtocol`)."""

    def data_received(self, data: memoryview) -> None:
        """Bytes from the socket (a view into a shared buffer: copy what you keep)."""
        ...

    def lines_skipped(self, count: int) -> None:
        """``count`` lines were not queued for this slow reader; it has caught up."""
        ...

    def eof_received(self) -> bool:
        """The peer sent FIN; return True to keep the connection open for now."""
        ...

    def connection_lost(self, reason: str) -> None: ...

    def connection_made(self) -> None:
        """The transport stack is ready (:meth:`Connection.ready`): once, before any
        byte for the protocol is handed on."""
        ...


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The per-connection limits, fixed when the connection is accepted."""

    read_budget: int = 65536
    hard: int = 1 << 20
    soft: int = 256 * 1024
    linger: float = 2.0


class OutputAccount:
    """Output bytes queued across all connections, with a cap (Redis maxmemory-clients),
    and the bytes they sent and received.

    ``over_limit`` is called (by the server) when ``total`` passes ``limit``;
    it disconnects the largest buffers until the total is back under.  The
    traffic counters are kept here, once, rather than per connection: an idle
    connection should cost little, and the stats need only the sums.
    """

    __slots__ = ("limit", "over_limit", "received", "sent", "total")

    def __init__(self, limit: int, over_limit: Callable[[], None] | None = None) -> None:
        self.limit = limit
        self.total = 0
        self.over_limit = over_limit
        #: Bytes received and sent by every connection using this account, ever.
        self.received = 0
        self.sent = 0


class ConnectionContext:
    """What every connection accepted under one configuration shares.

    One object, one slot per connection: the reactor, the read buffer (the loop
    is single-threaded, so one buffer serves every read), the limits, the output
    account and the listener's callbacks.  Copies per connection would cost 40
    bytes each at 10,000 idle clients.
    """

    __slots__ = (
        "account", "limits", "on_closed", "on_lost", "on_registered", "reactor", "read_buffer",
        "reset_after_goodbye",
    )

    def __init__(
        self,
        reactor: Reactor,
        read_buffer: memoryview,
        limits: ConnectionLimits | None = None,
        account: OutputAccount | None = None,
        on_closed: Callable[[Connection], None] | None = None,
        on_lost: Callable[[Connection, str], None] | None = None,
        on_registered: Callable[[str], None] | None = None,
        *,
        reset_after_goodbye: bool = False,
    ) -> None:
        self.reactor = reactor
        self.read_buffer = read_buffer
        self.limits = limits if limits is not None else ConnectionLimits()
        self.account = account if account is not None else OutputAccount(1 << 62)
        #: Called once, from teardown, when the socket is gone for good.
        self.on_closed = on_closed
        #: Called (on the next tick) when the peer is lost: a reset, an error.
        self.on_lost = on_lost
        #: Called with the peer's address when it first speaks the protocol.
        self.on_registered = on_registered
        #: End a graceful close with a reset once the peer acknowledged the goodbye,
        #: not with a FIN (see the module docstring: terminal clients).
        self.reset_after_goodbye = reset_after_goodbye


class Connection:
    """A non-blocking client socket owned by the reactor."""

    __slots__ = (
        "_ctx",
        "_encode",
        "_ending",
        "_flush_queued",
        "_held",
        "_linger_timer",
        "_out",
        "_paused",
        "_peer_eof",
        "_pending",
        "_protocol",
        "_read_queued",
        "_sock",
        "close_reason",
        "fd",
        "is_open",
        "last_progress",
        "limit_hit",
        "output_bytes",
        "over_soft_since",
        "peer_address",
        "peer_port",
        "skipped_lines",
        "state",
    )

    def __init__(
        self,
        sock: _socket.socket,
        context: ConnectionContext,
        protocol: Protocol | None = None,
        *,
        peer: tuple[str, int] | None = None,
    ) -> None:
        self._sock = sock
        self._ctx = context
        self._protocol = protocol
        #: Queued output, oldest first; None when empty (most connections, most of
        #: the time: no list kept per idle connection).
        self._out: list[bytes] | None = None
        #: What turns the queued writes into the bytes sent (``encode_output``: a
        #: WebSocket's frames); None, most connections: they are sent as written.
        self._encode: Callable[[list[bytes]], bytes] | None = None
        self._pending: memoryview | None = None
        self._flush_queued = False
        self._read_queued = False
        self._ending = Ending.FLUSHING
        self._peer_eof = False
        self._linger_timer: Timer | None = None
        #: Why the connection is closing or closed (None while open).
        self.close_reason: str | None = None
        self._paused = False
        self._held = False
        #: When output last made progress (or became pending): for the send timeout.
        #: Meaningful only while output is pending; 0.0 (one shared float) otherwise.
        self.last_progress = 0.0
        #: Since when output has been above the soft limit (None: it is not).
        self.over_soft_since: float | None = None
        #: Room lines not queued because this reader was too slow, not yet reported.
        self.skipped_lines = 0
        #: Which limit closed this connection, if one did (for the stats).
        self.limit_hit: str | None = None
        self.fd = sock.fileno()
        if peer is None:
            try:
                peer = sock.getpeername()[:2]
            except OSError:
                peer = ("?", 0)
        #: The peer's address and port, as accept() reported them (two fields, not a
        #: tuple: the address string is shared by every client behind it).
        self.peer_address: str = peer[0]
        self.peer_port: int = peer[1]
        self.state = State.OPEN
        #: ``state is State.OPEN``: until :meth:`close` or :meth:`abort` (then writes
        #: are ignored).  A plain attribute: the chat layer asks it per line.
        self.is_open = True
        self.output_bytes = 0

    @property
    def peer(self) -> tuple[str, int]:
        """The peer's ``(address, port)``."""
        return self.peer_address, self.peer_port

    def registered(self) -> None:
        """The protocol says the peer spoke it (see ``Transport.registered``)."""
        if self._ctx.on_registered is not None:
            self._ctx.on_registered(self.peer_address)

    def set_protocol(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def put_in_front(self, reader: Protocol | None) -> Protocol | None:
        """Have ``reader`` take the socket's bytes in place of the protocol (a PROXY
        header comes first); returns what took them until now.  None leaves it."""
        previous = self._protocol
        if reader is not None:
            self._protocol = reader
        return previous

    @property
    def protocol(self) -> Protocol | None:
        return self._protocol

    def ready(self) -> None:
        """The layers in front of this connection are done (the PROXY header, where the
        listener reads one; nothing else on a plain listener): tell the protocol the
        stack is ready (``connection_made``), which may begin its chat session.  A layer
        of the connection's own (TLS) tells it later, when its handshake is done."""
        protocol = self.protocol
        if protocol is not None and self.state is State.OPEN:
            try:
                protocol.connection_made()
            except Exception:
                self._protocol_failed("connection_made")

    def start(self) -> None:
        """Register with the reactor and read anything that arrived with the handshake."""
        if self.state is State.CLOSED:  # its protocol failed in connection_made
            return
        self._ctx.reactor.register(self.fd, self, STREAM_EVENTS)
        # Data can arrive before the registration (a client that connects and
        # sends at once); epoll reports the current state on registration, but
        # reading now costs one EAGAIN at most and saves a tick.
        self._read()

    # -- events ------------------------------------------------------------

    def handle_events(self, mask: int) -> None:
        if self._held and mask & (EPOLLERR | EPOLLHUP) and self.state is not State.CLOSED:
            # Reading is held, but the peer is gone (a reset): what waits unread will
            # never be wanted, and nothing else would ever notice.  A clean FIN
            # (RDHUP) is not this: it waits behind the held data, in order.
            error = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                self._lost(OSError(error, os.strerror(error)))
            else:
                self.abort("connection closed by peer")
            return
        if mask & _READ_EVENTS:
            # A plain EPOLLIN edge may stop at a short read (DESIGN.md §3, epoll(7)).
            self._read(short_read_drains=not mask & _END_EVENTS)
        if mask & _WRITE_EVENTS and self.state is not State.CLOSED:
            self._write()

    def _read_again(self) -> None:
        self._read_queued = False
        self._read()

    def hold_reading(self) -> None:
        """Stop reading this socket (TCP backpressure: the peer's sends block).

        For input the protocol's consumer cannot take yet (lines waiting for the
        flood limit); :meth:`resume_reading` goes on where it stopped.
        """
        self._held = True

    def resume_reading(self) -> None:
        """Read again after :meth:`hold_reading`.  Under ET no new edge announces what
        waited in the kernel meanwhile, so the read is queued on the ready list."""
        if not self._held:
            return
        self._held = False
        if self.state is not State.CLOSED and not self._read_queued:
            self._read_queued = True
            self._ctx.reactor.call_soon(self._read_again)

    @property
    def reading_held(self) -> bool:
        return self._held

    def _read(self, short_read_drains: bool = False) -> None:
        """Read what the socket holds, within this tick's budget.

        Until EAGAIN, or, when ``short_read_drains``, until a ``recv`` returns fewer
        bytes than it asked for: on a stream socket that proves the kernel's buffer was
        empty at that moment, and whatever arrives later raises a new edge (epoll(7));
        it saves one ``recv`` per read event, the one that would only say EAGAIN.  Only
        a read that answers a plain EPOLLIN edge may stop there: after a held or
        budget-cut read, or with the end of the stream already announced, nothing new
        would announce what is left.
        """
        if self.state is State.CLOSED or self._held:
            return
        ctx = self._ctx
        limits = ctx.limits
        soft = limits.soft
        if self.output_bytes > soft and self.state is State.OPEN:
            # A client that does not read its replies does not get more input
            # parsed (InspIRCd's softsendq rule); _write resumes us once it drains.
            self._paused = True
            return
        sock = self._sock
        rbuf = ctx.read_buffer
        size = len(rbuf)
        budget = limits.read_budget
        reactor = ctx.reactor
        if reactor.tick_read_left < budget:  # what is left of the tick's, for everyone
            budget = reactor.tick_read_left
        account = ctx.account
        protocol = self._protocol
        drained = False
        while budget > 0:
            asked = size if size < budget else budget
            try:
                n = sock.recv_into(rbuf, asked)
            except BlockingIOError:
                drained = True
                break
            except InterruptedError:
                continue
            except OSError as exc:
                self._lost(exc)
                return
            if n == 0:
                self._end_of_stream()
                return
            account.received += n
            budget -= n
            reactor.tick_read_left -= n
            if self.state is State.OPEN and protocol is not None:
                try:
                    protocol.data_received(rbuf[:n])
                except Exception:
                    self._protocol_failed("data_received")
                    return
            if self.state is State.CLOSED:
                return
            if self.output_bytes > soft and self.state is State.OPEN:
                self._paused = True
                break
            if self._held:
                break
            if short_read_drains and n < asked:
                drained = True
                break
        if drained or self._paused or self._held:
            return
        # Budget used up before EAGAIN: more may be waiting, and under ET no
        # new edge will say so.  Serve the others, then come back: this tick if only
        # the connection's budget is spent, else first thing next tick.
        if not self._read_queued:
            self._read_queued = True
            if reactor.tick_read_left > 0:
                reactor.call_soon(self._read_again)
            else:
                reactor.defer_read(self._read_again)

    def reject_foreign(self, kind: str, reply: bytes) -> None:
        """Tell a peer speaking another protocol so (``reply``: the protocol's words, which
        the transport does not look into), and close (stats kind ``foreign_*``).

        Called by the protocol when the first bytes are HTTP, TLS or binary junk.
        """
        self.limit_hit = f"foreign_{kind}"
        self.write(reply)
        self.close(f"spoke {kind}, not chat")

    def _end_of_stream(self) -> None:
        self._peer_eof = True
        if self.state is State.OPEN:
            try:
                if self._protocol is not None and self._protocol.eof_received():
                    return  # the protocol closes when it is done (delayed lines)
            except Exception:
                self._protocol_failed("eof_received")
                return
            self.close("connection closed by peer")
        elif self.state is State.CLOSING and self._ending is Ending.FIN_SENT:
            self._teardown()
        # While the goodbye waits for its ACK, the event that brings the FIN also says
        # EPOLLOUT (all is flushed, the socket is writable): the write path then sees
        # _peer_eof and ends with a FIN (_drained_while_closing).

    # -- output ------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue ``data`` (already encoded) for the end-of-tick flush."""
        if self.state is not State.OPEN:
            return
        out = self._out
        if out is None:
            self._out = [data]
        else:
            out.append(data)
        self._grow(len(data))
        if not self._flush_queued and self.state is State.OPEN:
            self._flush_queued = True
            self._ctx.reactor.want_flush(self)

    def _grow(self, size: int) -> None:
        """Account ``size`` more bytes of pending output and apply the limits."""
        before = self.output_bytes
        after = self.output_bytes = before + size
        if before == 0:
            self.last_progress = time.monotonic()  # the send timeout starts now
        account = self._ctx.account
        account.total += size
        limits = self._ctx.limits
        if after > limits.soft:
            if after > limits.hard:
                self._overflow()
                return
            if self.over_soft_since is None:
                self.over_soft_since = time.monotonic()
        if account.total > account.limit and account.over_limit is not None:
            account.over_limit()

    def _shrink(self, size: int) -> None:
        self.output_bytes -= size
        self._ctx.account.total -= size

    def encode_output(self, encode: Callable[[list[bytes]], bytes]) -> None:
        """From now on, send ``encode(writes)`` for what was written since the last
        send, not the writes joined: the protocol frames a tick's output as a whole
        (a WebSocket text frame holding every line of the tick, one ``send``).
        ``write_now``'s direct send is ``encode([data])``.  What was written before
        (the HTTP ``101``) goes out as it was, first.  The limits keep counting the
        bytes as written (a slow reader's skipped lines stay exact)."""
        if self._out and self.state is not State.CLOSED:
            self._write()  # what is queued goes as it is; a rest waits in _pending
        self._encode = encode

    def write_now(self, data: bytes) -> None:
        """Send ``data`` at once if nothing is queued ahead of it; else queue it.

        The fan-out's path: it runs just before the flush, so sending here saves
        queueing the payload and a second pass over every recipient.  A partial
        send means the kernel buffer is full, so the EPOLLOUT edge will come and
        resume the rest.
        """
        if self.state is not State.OPEN:
            return
        if self._out or self._pending is not None:
            if not self._skipped_when_slow(data):
                self.write(data)
            return
        if self._encode is not None:
            data = self._encode([data])
        try:
            sent = self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._lost(exc)
            return
        self._ctx.account.sent += sent
        if sent < len(data):
            self._pending = memoryview(data)[sent:]
            self._grow(len(data) - sent)

    def _skipped_when_slow(self, data: bytes) -> bool:
        """Output is queued already: past the soft limit a slow reader misses room lines
        (counted, reported once it catches up).  True if ``data`` was skipped."""
        if self.output_bytes > self._ctx.limits.soft:
            self.skipped_lines += data.count(b"\n")
            return True
        return False

    def flush(self) -> None:
        """Called by the reactor once per tick when output is queued."""
        self._flush_queued = False
        if self.state is not State.CLOSED:
            self._write()

    def _write(self) -> None:
        sock = self._sock
        while True:
            pending = self._pending
            if pending is None:
                pending = self._next_output()
                if pending is None:
                    break
            try:
                sent = sock.send(pending)
            except BlockingIOError:
                self._pending = pending
                return  # the EPOLLOUT edge resumes us
            except InterruptedError:
                self._pending = pending
                continue
            except OSError as exc:
                self._pending = None
                self._lost(exc)
                return
            self._shrink(sent)
            self._ctx.account.sent += sent
            self.last_progress = time.monotonic()
            self._pending = None if sent == len(pending) else pending[sent:]
        # Everything the kernel would take is sent.
        self.over_soft_since = None
        self.last_progress = 0.0  # the shared float: an idle connection keeps none
        if self.state is State.CLOSING:
            self._drained_while_closing()
            return
        if self.skipped_lines and self._protocol is not None:
            skipped, self.skipped_lines = self.skipped_lines, 0
            self._protocol.lines_skipped(skipped)
        if self._paused:
            self._paused = False
            if not self._read_queued:
                self._read_queued = True
                self._ctx.reactor.call_soon(self._read_again)

    def _next_output(self) -> memoryview | None:
        """What to send next: everything queued, in one piece (None: nothing is)."""
        out = self._out
        if not out:
            return None
        self._out = None
        if self._encode is not None:
            return memoryview(self._encoded(out))
        return memoryview(out[0] if len(out) == 1 else b"".join(out))

    def _encoded(self, out: list[bytes]) -> bytes:
        """``encode_output``'s bytes for the queued ``out``; what it adds (a frame's
        header) is counted as queued output too, so each send's bytes balance."""
        written = sum(map(len, out))
        data = self._encode(out)  # type: ignore[misc]
        added = len(data) - written
        if added:
            self.output_bytes += added
            self._ctx.account.total += added
        return data

    def _overflow(self) -> None:
        log.warning(
            "closing %s:%d: output buffer over %d bytes (a reader that stopped reading)",
            *self.peer,
            self._ctx.limits.hard,
        )
        self.abort("output buffer full (not reading)", limit="obuf_hard")

    # -- closing -----------------------------------------------------------

    def close(self, reason: str, *, linger: float | None = None,
              limit: str | None = None) -> None:
        """Flush what is queued, send FIN, then release the socket (graceful).

        ``linger`` overrides ``limits.linger``: how long the flush and the wait for
        the peer's FIN may take before the socket is dropped.  ``limit`` names the
        limit the connection hit, if that is why it is closed (``limit_hit``: the
        stats kind and the log line when it is gone).
        """
        if self.state is not State.OPEN:
            return
        if limit is not None:
            self.limit_hit = limit
        self.state = State.CLOSING
        self.is_open = False
        self._schedule_lost(reason)
        wait = self._ctx.limits.linger if linger is None else linger
        self._linger_timer = self._ctx.reactor.call_later(wait, self._linger_expired)
        if not self._flush_queued:
            self._flush_queued = True
            self._ctx.reactor.want_flush(self)

    def abort(self, reason: str, *, limit: str | None = None) -> None:
        """Drop the connection now, discarding queued output; ``limit`` as for
        :meth:`close`."""
        if self.state is State.CLOSED:
            return
        if limit is not None:
            self.limit_hit = limit
        self._schedule_lost(reason)
        self._teardown()

    def _drained_while_closing(self) -> None:
        ending = self._ending
        if ending is Ending.FIN_SENT:
            if self._peer_eof:
                self._teardown()
            return
        if ending is Ending.FLUSHING:
            # Everything is sent: wait for the peer (its FIN, or its ACK) at most
            # limits.linger more, even if the flush was allowed longer (a shutdown
            # deadline).
            self._shorten_linger()
            if self._ctx.reset_after_goodbye and not self._peer_eof:
                self._ending = Ending.AWAITING_ACK
                self._reset_when_acknowledged(_ACK_POLL_FIRST)
                return
        elif not self._peer_eof:
            return  # AWAITING_ACK: the poll goes on
        self._ending = Ending.FIN_SENT
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._teardown()
            return
        if self._peer_eof:
            self._teardown()
        # else: wait for the peer's FIN (read path) or the linger timer.

    def _shorten_linger(self) -> None:
        timer = self._linger_timer
        deadline = self._ctx.reactor.clock() + self._ctx.limits.linger
        if timer is not None and timer.when > deadline:
            timer.cancel()
            self._linger_timer = self._ctx.reactor.call_later(
                self._ctx.limits.linger, self._linger_expired
            )

    def _reset_when_acknowledged(self, wait: float) -> None:
        """Reset the connection once the peer's TCP has every byte of the goodbye.

        No epoll event says "acknowledged", so a timer looks again, backing off up
        to ``_ACK_POLL_MAX``, then ``_READ_GRACE`` more lets the peer's program read it;
        the linger timer ends the wait (a close without reset then), and the peer's
        FIN meanwhile switches to the FIN ending (see ``_end_of_stream``).
        """
        if self.state is not State.CLOSING or self._ending is not Ending.AWAITING_ACK:
            return
        unacked = unacknowledged_bytes(self._sock)
        if unacked == 0:
            self._ctx.reactor.call_later(_READ_GRACE, self._reset)
        elif unacked is None:
            self._teardown()  # the socket cannot say: close as plainly as possible
        else:
            self._ctx.reactor.call_later(
                wait, self._reset_when_acknowledged, min(wait * 2, _ACK_POLL_MAX)
            )

    def _reset(self) -> None:
        """Close with RST, unless the wait for it ended otherwise meanwhile (the peer's
        FIN, the linger): the peer's reads and writes fail at once (see ``close``)."""
        if self.state is not State.CLOSING or self._ending is not Ending.AWAITING_ACK:
            return
        reset_now(self._sock)
        self._teardown(reset=True)

    def _linger_expired(self) -> None:
        self._linger_timer = None
        if self.state is State.CLOSING:
            if self.output_bytes:
                log.debug(
                    "%s:%d closed with %d bytes unsent (linger expired)",
                    *self.peer,
                    self.output_bytes,
                )
            self._teardown()

    def _lost(self, exc: OSError) -> None:
        if exc.errno in CONNECTION_GONE_ERRNOS:
            log.debug("%s:%d gone: %s", *self.peer, exc.strerror)
            reason = "connection reset by peer"
        else:
            log.warning("%s:%d socket error: %s", *self.peer, exc)
            reason = f"socket error: {exc.strerror or exc}"
        self.abort(reason)

    def _schedule_lost(self, reason: str) -> None:
        if self.close_reason is None:  # the first reason is the one reported
            self.close_reason = reason
            self._ctx.reactor.call_soon(self._notify_lost, reason)

    def _notify_lost(self, reason: str) -> None:
        if self._ctx.on_lost is not None:
            self._ctx.on_lost(self, reason)
        if self._protocol is not None:
            self._protocol.connection_lost(reason)  # the ready list's fence logs a failure

    def _protocol_failed(self, callback: str) -> None:
        """The protocol's code raised in ``callback`` (a bug: chatd's, or a plugin's
        protocol): logged with its traceback, and this connection alone is dropped
        (stats kind ``protocol_error``), never the loop, the accept batch it arrived
        in or anyone else's connection; its admission slot is given back on teardown."""
        log.exception("the %s protocol failed in %s for %s:%d; its connection is closed",
                      getattr(self.protocol, "name", "?"), callback, *self.peer)
        self.abort(f"internal error in the protocol ({callback})", limit="protocol_error")

    def _teardown(self, *, reset: bool = False) -> None:
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self.is_open = False
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        self._ctx.reactor.unregister(self.fd)
        # shutdown() before close(): a forked child holding a copy of the fd
        # would otherwise keep the peer from ever seeing EOF.  Not after a reset
        # (reset_now, fork-proof too): the connection is gone already.
        if not reset:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._out = None
        self._pending = None
        self._ctx.account.total -= self.output_bytes
        self.output_bytes = 0
        if self._ctx.on_closed is not None:
            self._ctx.on_closed(self)

    def __repr__(self) -> str:
        return f"<Connection fd={self.fd} {self.peer_address}:{self.peer_port} {self.state.value}>"
