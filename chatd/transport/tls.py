"""TLS on a listener: the certificate context, and connections that speak TLS under ET.

A TLS connection is a :class:`~chatd.transport.connection.Connection` whose socket bytes
go through an ``ssl.SSLObject`` on two memory BIOs (the design asyncio's
``sslproto`` uses), not an ``ssl.SSLSocket``:

* the socket is still read until EAGAIN, exactly as a plain one (DESIGN
  invariant 2), and every read's bytes are fed to the TLS object, which is
  then read until ``SSLWantReadError``.  No decrypted byte is ever left inside
  the TLS object with no epoll edge to announce it (the trap of
  ``SSLSocket.recv`` under edge-triggering, where ``pending()`` must be polled);
* output stays plaintext in the connection's queue until the end-of-tick flush,
  which encrypts the whole tick at once: one ``SSLObject.write``, so a
  broadcast is one batch of TLS records per tick, not one record per line;
  the fan-out's ``write_now`` only queues for a TLS connection;
* the handshake is driven by the same reads and flushes, with its own
  timeout (``handshake_timeout_seconds``); the chat protocol hears
  ``connection_made`` only once it is done (:meth:`TlsConnection.ready` does
  nothing: TLS bytes arrive only once the layers in front are done), so a
  stalled handshake is never a user, never announced;
* a clean close sends TLS close_notify before the FIN;
* a connection the server refuses (per-address limits, server full) may still
  finish its handshake and read why inside TLS, then be closed
  (:meth:`TlsConnection.refuse_after_handshake`): a TLS client shows the line,
  not a handshake error.

Anything the peer gets wrong (plaintext on the TLS port, a bad record, no
client certificate where one is required) closes the connection with one
debug log line, never a traceback.  The certificate is read when the listener
starts and again on SIGHUP (:func:`make_context`); a certificate that cannot
be loaded, or has expired, keeps the running one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import time
from collections.abc import Callable
from typing import Any

from ..config import TlsConfig
from .connection import Connection, State

log = logging.getLogger("chatd.tls")

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
#: TLS 1.2 suites with forward secrecy and AEAD only (1.3's are all of that).
_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
_READ_CHUNK = 65536
#: The first byte of every TLS client hello (a handshake record).
_HANDSHAKE_RECORD = 0x16
#: What a plaintext client on the TLS port is told before the close, in the words of
#: the listener's protocol (its ``refusal``, code ``tls_plaintext``); the line
#: protocol's ``! ...`` line where there is none (a connection refused at the door).
PLAINTEXT_TEXT = ("this port speaks TLS: connect with ncat --ssl, openssl s_client "
                  "or socat OPENSSL:...")
PLAINTEXT_REPLY = f"! {PLAINTEXT_TEXT}\n".encode()
#: A TLS record holding one fatal ``access_denied`` alert (RFC 8446 6.2; record version
#: 0x0301, as before a handshake): a refusal that costs no handshake, which a TLS client
#: reports as "alert access denied" rather than the "wrong version number" a plaintext
#: line would give.  For when the server cannot afford a handshake to say why.
REFUSAL_ALERT = bytes((0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 49))


def make_context(tls: TlsConfig) -> ssl.SSLContext:
    """A server context for ``tls``; raises ValueError saying what is wrong with it."""
    assert tls.cert is not None and tls.key is not None  # the config loader requires them
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[tls.min_version]
    context.set_ciphers(_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except FileNotFoundError as exc:  # ssl names no file: say which of the two
        missing = exc.filename or _first_missing(tls.cert, tls.key)
        raise ValueError(f"cannot read {missing}: no such file") from None
    except PermissionError as exc:
        raise ValueError(f"cannot read {exc.filename or tls.cert}: permission denied") from None
    except ssl.SSLError as exc:
        raise ValueError(f"{tls.cert} / {tls.key}: not a certificate and its key "
                         f"({exc.reason or exc})") from None
    expired = _expired(tls.cert)
    if expired:
        raise ValueError(f"{tls.cert}: the certificate expired on {expired}")
    if tls.ca is not None:
        try:
            context.load_verify_locations(tls.ca)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load the CA file {tls.ca}: {exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED if tls.verify_clients else ssl.CERT_OPTIONAL
    return context


def _first_missing(*paths: str) -> str:
    """The first of ``paths`` that does not exist (for an error that names none)."""
    return next((path for path in paths if not os.path.exists(path)), paths[0])


def _expired(cert_path: str) -> str | None:
    """When the (first) certificate in ``cert_path`` expired, or None if it has not.

    The standard library decodes a certificate file only through a private
    helper; where it is missing, expiry is not checked (clients will say so).
    """
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None:
        return None
    try:
        not_after = decode(cert_path)["notAfter"]
    except (OSError, ssl.SSLError, KeyError, ValueError):
        return None
    if ssl.cert_time_to_seconds(not_after) < time.time():
        return str(not_after)
    return None


class TlsConnection(Connection):
    """A connection that speaks TLS (see the module docstring).

    The connection is its own protocol as far as the base class sees: it takes
    the socket's bytes, decrypts them and hands the plaintext to the chat
    protocol (``protocol``); everything the chat protocol writes is encrypted at
    the flush.
    """

    __slots__ = ("_chat", "_handshake_timer", "_heard", "_incoming", "_on_handshake",
                 "_outgoing", "_said_goodbye", "_tls", "handshaken")

    def __init__(self, sock: Any, context: Any, ssl_context: ssl.SSLContext, *,
                 peer: tuple[str, int], timeout: float,
                 on_handshake: Callable[[], None] | None = None) -> None:
        super().__init__(sock, context, peer=peer)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = ssl_context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._chat: Any = None
        #: What the end of the handshake does: tell the chat protocol the stack is
        #: ready (None), or a refusal's line (:meth:`refuse_after_handshake`).
        self._on_handshake = on_handshake
        self._said_goodbye = False
        self._heard = False  # the first byte says whether the peer speaks TLS at all
        #: True once the TLS handshake is complete (the chat protocol hears of it then).
        self.handshaken = False
        self._handshake_timer = self._ctx.reactor.call_later(timeout, self._handshake_late)

    # -- the chat protocol sits behind the TLS layer --------------------------------

    def set_protocol(self, protocol: Any) -> None:
        self._chat = protocol
        self._protocol = self  # the base class hands us the socket's bytes

    @property
    def protocol(self) -> Any:
        return self._chat

    def data_received(self, data: memoryview) -> None:
        if not self._heard:
            self._heard = True
            if data[0] != _HANDSHAKE_RECORD:
                self._plaintext()  # someone typing at the TLS port with plain nc
                return
        self._incoming.write(data)
        if not self.handshaken and not self._handshake():
            return
        chat = self._chat
        tls = self._tls
        while self.state is State.OPEN:
            try:
                plain = tls.read(_READ_CHUNK)
            except ssl.SSLWantReadError:
                break  # everything decrypted: nothing waits inside the TLS object
            except ssl.SSLZeroReturnError:
                self._end_of_stream()  # close_notify: the peer is done
                return
            except ssl.SSLError as exc:
                self._failed(exc)
                return
            if not plain:
                break
            chat.data_received(memoryview(plain))
        self._flush_tls_output()  # TLS 1.3 may answer a read (key updates, tickets)

    def ready(self) -> None:
        """Nothing yet: the chat protocol hears ``connection_made`` when the handshake
        is done (the handshake's bytes come only once the layers in front are done)."""

    def connection_made(self) -> None:  # the Protocol interface: never called on a layer
        pass

    def eof_received(self) -> bool:
        return self._chat.eof_received() if self._chat is not None and self.handshaken else False

    def lines_skipped(self, count: int) -> None:
        if self._chat is not None:
            self._chat.lines_skipped(count)

    def connection_lost(self, reason: str) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        if self._chat is not None:
            self._chat.connection_lost(reason)

    def refuse_after_handshake(self, line: bytes, reason: str) -> None:
        """Finish the handshake, send ``line`` inside TLS, then close with ``reason``;
        no chat client is ever made.  For a refusal (admission), so the peer reads why
        rather than a TLS error; the handshake timeout still applies."""
        self._protocol = self  # the socket's bytes come here even with no chat protocol

        def refuse() -> None:
            self.write(line)
            self.close(reason)

        self._on_handshake = refuse

    # -- the handshake --------------------------------------------------------------

    def _handshake(self) -> bool:
        try:
            self._tls.do_handshake()
        except ssl.SSLWantReadError:
            self._flush_tls_output()
            return False
        except ssl.SSLError as exc:
            self._failed(exc)
            return False
        self.handshaken = True
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self._flush_tls_output()
        if self._on_handshake is not None:
            self._on_handshake()
        elif self._chat is not None:
            self._chat.connection_made()  # the protocol may begin its session now
        return self.state is State.OPEN

    def _plaintext(self) -> None:
        log.debug("%s:%d: plaintext on the TLS port", *self.peer)
        self.limit_hit = "tls_plaintext"
        chat = self._chat
        reply = chat.refusal("tls_plaintext", PLAINTEXT_TEXT) if chat is not None else \
            PLAINTEXT_REPLY
        with contextlib.suppress(OSError):
            self._sock.send(reply)
        self.abort("spoke plaintext on the TLS port")

    def _handshake_late(self) -> None:
        self._handshake_timer = None
        if not self.handshaken and self.state is not State.CLOSED:
            log.debug("%s:%d: no TLS handshake within the timeout", *self.peer)
            self.limit_hit = "tls_handshake_timeout"
            self.abort("TLS handshake timed out")

    def _failed(self, exc: ssl.SSLError) -> None:
        reason = exc.reason or exc.__class__.__name__
        log.debug("%s:%d: TLS error: %s", *self.peer, reason)
        self.limit_hit = "tls_error"
        self.abort(f"TLS error: {reason}".lower())

    # -- output ---------------------------------------------------------------------

    def write_now(self, data: bytes) -> None:
        """Queued, not sent: the flush encrypts the whole tick at once."""
        if self.state is not State.OPEN:
            return
        if (self._out or self._pending is not None) and self._skipped_when_slow(data):
            return
        self.write(data)

    def _next_output(self) -> memoryview | None:
        """The queued plaintext encrypted (after the handshake), with any TLS records of
        the handshake or the close; the byte counts follow what is actually sent."""
        change = 0
        out = self._out
        if out and self.handshaken:
            self._out = None
            if self._encode is not None:  # a WebSocket's frames: see encode_output
                plain = self._encoded(out)
            else:
                plain = out[0] if len(out) == 1 else b"".join(out)
            try:
                self._tls.write(plain)
            except ssl.SSLError as exc:
                self._account(-len(plain))
                self._failed(exc)
                return None
            change = -len(plain)
        records = self._outgoing.read()
        self._account(change + len(records))
        return memoryview(records) if records else None

    def _account(self, change: int) -> None:
        if change:
            if self.output_bytes == 0 and change > 0:
                self.last_progress = time.monotonic()
            self.output_bytes += change
            self._ctx.account.total += change

    def _flush_tls_output(self) -> None:
        if self._outgoing.pending and not self._flush_queued and self.state is not State.CLOSED:
            self._flush_queued = True
            self._ctx.reactor.want_flush(self)

    def _drained_while_closing(self) -> None:
        if self.handshaken and not self._said_goodbye:
            self._said_goodbye = True
            with contextlib.suppress(ssl.SSLError):
                self._tls.unwrap()  # queues close_notify; the peer's own is not awaited
            records = self._outgoing.read()
            if records:
                with contextlib.suppress(OSError):
                    self._sock.send(records)
        super()._drained_while_closing()
