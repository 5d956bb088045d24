"""Listening sockets and the accept path: admission, EMFILE, socket tuning.

One :class:`Listener` per ``listen:`` entry, each with its protocol; one
:class:`Acceptor` shared by all of them, because the limits it enforces are
the server's, not a port's (``max_clients``, per-address limits, the file
descriptors left).  For every accepted socket the acceptor makes the transport
(:class:`~chatd.transport.connection.Connection`) and the listener's protocol object,
and hands the protocol to ``on_connect`` (the composition root, which makes
the chat domain's client) before the socket is registered with the reactor.

Edge-triggered rules kept here (DESIGN.md section 3):

* accept until ``BlockingIOError`` — in batches of ``limits.accept_batch``; a
  listener that used its batch re-queues itself on the ready list, because no
  new edge would announce the connections still waiting;
* EMFILE/ENFILE never spin and never starve: a spare descriptor is closed to
  accept and refuse one pending client with a line saying why, and accepting
  resumes on a timer (libev's "accept()ing when you can't", libuv's emfile
  trick).

A listener may speak TLS (:mod:`chatd.transport.tls`: the connection class changes) and
read a PROXY header first (:mod:`chatd.transport.proxy`: admission waits for the
client's real address).  The acceptor does not decide when a connection becomes a
user: it builds the stack and calls the connection's ``ready()`` once its own layer
(the PROXY header) is done; the connection tells the protocol (``connection_made``,
after the TLS handshake where there is one), and the protocol begins the chat session
when *it* is ready, through its listener's :class:`ListenerDoor` (which checks the
listener password, ``listen[].password``, and calls ``on_connect``).  Later protocols
(WebSocket, IRC) plug in here the same way.

The protocol is the listener's, from the registry (:mod:`chatd.protocols.registry`):
its class makes each connection's protocol object, decides the input limits of the
listener's connections (:meth:`~chatd.protocols.base.ChatProtocol.input_limits`, once
per listener) and words every refusal said at the door (server full, per-address
limits: :meth:`~chatd.protocols.base.ChatProtocol.refusal`), so a peer is refused in
the format it reads.
"""

from __future__ import annotations

import _socket
import contextlib
import errno
import hashlib
import hmac
import ipaddress
import logging
import os
import socket
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any

from .admission import PASSWORD_FAILURES_MAX, PASSWORD_WINDOW, Admission, plain_address
from .config import LimitsConfig, ListenConfig, NetConfig
from .protocols import ChatProtocol, ProtocolLimits, Session, SessionRefused, listener_password
from .reactor import (
    ACCEPT_RESOURCE_ERRNOS,
    ACCEPT_TRANSIENT_ERRNOS,
    EPOLLET,
    EPOLLIN,
    Reactor,
    Timer,
)
from .requests import SessionRequest
from .stats import Stats
from .transport.connection import (
    Connection,
    ConnectionContext,
    ConnectionLimits,
    OutputAccount,
    State,
)
from .transport.proxy import HeaderReader
from .transport.tls import REFUSAL_ALERT, TlsConnection, make_context

log = logging.getLogger("chatd.listeners")

_LISTEN_EVENTS = EPOLLIN | EPOLLET
#: Refused connections kept open at once to say why properly: a line, then the
#: connection's ending (a reset nc notices), and on a TLS port a handshake first so
#: the line arrives inside TLS.  Past this many a refusal is sent and closed at once
#: (on a TLS port as a TLS alert): refusing must stay cheap under a flood, and these
#: descriptors come out of the 32 the server keeps in reserve (RELIABILITY R4).
REFUSALS_AT_ONCE = 16
#: How long a refused TLS client gets to finish its handshake.
_REFUSAL_HANDSHAKE_SECONDS = 5.0


def tune_socket(sock: _socket.socket, net: NetConfig) -> None:
    """Socket options for a client: no Nagle, keepalive, user timeout, buffer size.

    Keepalive and TCP_USER_TIMEOUT find peers that vanished without a FIN or
    RST (a laptop closed, a NAT that forgot us); Linux's defaults take hours.
    """
    options: list[tuple[int, int, int]] = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    if net.keepalive_idle_seconds:
        options += [
            (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
            (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, net.keepalive_idle_seconds),
            (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, net.keepalive_interval_seconds),
            (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, net.keepalive_count),
        ]
    if net.tcp_user_timeout_seconds:
        options.append(
            (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(net.tcp_user_timeout_seconds * 1000))
        )
    if net.sndbuf_bytes:
        options.append((socket.SOL_SOCKET, socket.SO_SNDBUF, net.sndbuf_bytes))
    for level, option, value in options:
        try:
            sock.setsockopt(level, option, value)
        except (OSError, OverflowError, TypeError, ValueError) as exc:
            # TypeError: a value past a C int (Python then expects a buffer).
            _refused_option(option, value, exc)


#: Socket options the kernel refused, by (option, value): each is logged once.
_REFUSED_OPTIONS: set[tuple[int, int]] = set()
_OPTION_NAMES = {
    getattr(socket, name): name
    for name in ("TCP_NODELAY", "SO_KEEPALIVE", "TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT",
                 "TCP_USER_TIMEOUT", "SO_SNDBUF")
    if hasattr(socket, name)
}


def _refused_option(option: int, value: int, exc: Exception) -> None:
    """A setting the kernel will not apply: the connection goes on without it, and the
    operator hears of it once (not once per connection, which would flood the log)."""
    if (option, value) in _REFUSED_OPTIONS:
        return
    _REFUSED_OPTIONS.add((option, value))
    name = _OPTION_NAMES.get(option, str(option))
    log.warning("the system refused %s = %d for client sockets (%s): connections go on "
                "without it; check the net section of the config (logged once)",
                name, value, exc)


def bind_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A non-blocking listening socket on ``host:port`` (raises OSError).

    ``reuse_port``: SO_REUSEPORT, for the workers of ``workers: N`` (:mod:`chatd.workers`),
    which all listen on the same port; the kernel spreads new connections over them.
    """
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(info[4])
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


#: What a connection that gave too many wrong listener passwords is told.
PASSWORD_LIMIT_TEXT = "too many wrong passwords from your address; try again later"


class ListenerDoor:
    """A listener's way in to a chat session, handed to each of its protocol objects
    (:class:`chatd.protocols.base.Door`): its settings and input limits, the greeting
    delay, the password check, and ``on_connect``.

    One per listener, shared by its connections; remade when the limits change (a
    reload), so a connection keeps the limits it was accepted under.
    """

    __slots__ = ("_acceptor", "_password_digest", "config", "limits")

    def __init__(self, acceptor: Acceptor, config: ListenConfig, limits: ProtocolLimits,
                 password_digest: bytes | None) -> None:
        self._acceptor = acceptor
        self.config = config
        self.limits = limits
        #: SHA-256 of the listener password (None: none): compared with the digest of
        #: what a client gives, in constant time (so not even its length shows).
        self._password_digest = password_digest

    @property
    def password_required(self) -> bool:
        return self._password_digest is not None

    @property
    def greeting_delay(self) -> float:
        return self._acceptor.limits.greeting_delay_seconds

    @property
    def server_limits(self) -> LimitsConfig:
        return self._acceptor.limits

    def call_later(self, delay: float, callback: Callable[[], None]) -> object:
        return self._acceptor.reactor.call_later(delay, callback)

    def check_account(self, protocol: ChatProtocol, account: str, password: str,
                      then: Callable[[str | None, str | None], Any]) -> None:
        """Ask the server whether ``password`` is ``account``'s, before the session (the
        same limits as ``/identify``, from the connection's address); ``then(name,
        None)`` or ``then(None, code)``, never after the connection is gone."""
        check = self._acceptor.check_account
        if check is None:
            then(None, "unavailable")
            return

        def answer(name: str | None, code: str | None) -> None:
            if protocol.connected:
                then(name, code)

        check(account, password, protocol.peer[0], lambda: protocol.connected, answer)

    def begin(self, protocol: ChatProtocol, request: SessionRequest) -> Session | None:
        """Check the listener password (where there is one), then have ``on_connect``
        make the chat session; raises :class:`SessionRefused`."""
        if self._password_digest is not None:
            self._acceptor.check_password(protocol, self._password_digest, request.password)
        return self._acceptor.on_connect(protocol, request)  # type: ignore[no-any-return]


def _refusal(protocol: type[ChatProtocol] | ChatProtocol, code: str, text: str) -> bytes:
    """A refusal in ``protocol``'s words (:meth:`ChatProtocol.refusal`), or nothing if its
    renderer fails (a plugin's bug: logged): the peer is refused all the same, without
    words, and the accept batch goes on."""
    try:
        return protocol.refusal(code, text)
    except Exception:
        failed = (protocol.renderer.name, code)
        if failed not in _REFUSALS_FAILED:  # once each: refusals come in floods
            _REFUSALS_FAILED.add(failed)
            log.exception("the %s protocol cannot word a refusal (%s); refusing without "
                          "words (logged once)", *failed)
        return b""


#: The (protocol, code) refusals whose wording failed, logged already.
_REFUSALS_FAILED: set[tuple[str, str]] = set()


def password_digest(password: str) -> bytes:
    """What a listener keeps of its password, and what a given one is compared by."""
    return hashlib.sha256(password.encode("utf-8", "surrogateescape")).digest()


class Listener:
    """One listening socket, the protocol its connections speak (a class from the
    registry), their input limits and door, and its TLS context (None: plain TCP)."""

    __slots__ = ("acceptor", "config", "door", "limits", "password", "protocol", "proxies",
                 "sock", "tls_context")

    def __init__(self, acceptor: Acceptor, sock: socket.socket, config: ListenConfig,
                 protocol: type[ChatProtocol], server_limits: ProtocolLimits) -> None:
        self.acceptor = acceptor
        self.sock = sock
        self.config = config
        self.protocol = protocol
        #: Shared by every connection of this listener (one object, not one each).
        self.limits = protocol.input_limits(server_limits, config.options)
        #: The digest of ``listen[].password`` (or its file's), read at start; None: none.
        secret = listener_password(config.options)
        self.password = password_digest(secret) if secret is not None else None
        self.door = ListenerDoor(acceptor, config, self.limits, self.password)
        #: Read at start and on SIGHUP (:meth:`Acceptor.use_certificates`); a new
        #: connection takes the current one, an existing one keeps its own.
        self.tls_context = make_context(config.tls) if config.tls is not None else None
        #: Who may send a PROXY header (``trusted_proxies``), if this listener reads one.
        self.proxies = tuple(ipaddress.ip_network(p, strict=False)
                             for p in config.trusted_proxies)

    def trusts(self, address: str) -> bool:
        """Whether ``address`` is one of this listener's trusted proxies."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.proxies)

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()[:2]

    def handle_events(self, mask: int) -> None:
        self.acceptor.accept(self)


class Acceptor:
    """The accept path every listener shares (see the module docstring).

    ``on_connect(protocol, request)`` is called when a connection's protocol begins
    its chat session (:meth:`ListenerDoor.begin`, the password checked), and returns
    the session (the protocol keeps it); ``on_lost(conn,
    reason)`` when a connection starts closing (before its protocol hears of it).
    ``live`` lists the connections not yet torn down (for shutdown, eviction
    and the stats).
    """

    def __init__(
        self,
        reactor: Reactor,
        admission: Admission,
        stats: Stats,
        account: OutputAccount,
        on_connect: Callable[[ChatProtocol, SessionRequest], Any],
        on_lost: Callable[[Connection, str], None] | None = None,
    ) -> None:
        self.reactor = reactor
        self.admission = admission
        self.stats = stats
        self.account = account
        self.on_connect = on_connect
        self.on_lost = on_lost
        #: The server's account check (``Server.check_account_password``), for a
        #: protocol that authenticates before its session (IRC's SASL); None: none.
        self.check_account: Callable[..., Any] | None = None
        self.listeners: list[Listener] = []
        #: Bind with SO_REUSEPORT: a worker of ``workers: N``, sharing its ports.
        self.reuse_port = False
        self.stopping = False
        self._read_buffer = memoryview(bytearray(65536))
        self._spare_fd: int | None = None
        self._retry: Timer | None = None
        #: Refused connections still open to say why (at most REFUSALS_AT_ONCE).
        self.refusing = 0
        self._throttled: dict[str, float] = {}
        self.configure(LimitsConfig(), NetConfig())

    @property
    def live(self) -> list[Connection]:
        """Every connection not yet torn down, oldest first.

        The reactor's fd table is the record: a connection registers when it
        starts and unregisters in its teardown, and a second table of our own
        would cost ~37 bytes per connection.
        """
        return [h for h in self.reactor.handlers() if isinstance(h, Connection)]

    def configure(self, limits: LimitsConfig, net: NetConfig) -> None:
        """(Re)apply the limits new connections get (existing ones keep theirs)."""
        self.limits = limits
        self.net = net
        # Shared by every connection accepted under these limits: per-connection
        # copies would cost memory at 10,000 idle clients (docs/performance.md).
        connection_limits = ConnectionLimits(
            read_budget=limits.read_budget_bytes,
            hard=limits.max_output_bytes,
            soft=limits.output_soft_bytes,
            linger=limits.close_linger_seconds,
        )
        self._protocol_limits = ProtocolLimits(
            max_line_bytes=limits.max_line_bytes, recvq_max=limits.recvq_max_bytes
        )
        for listener in self.listeners:  # each protocol derives its own from the server's
            listener.limits = listener.protocol.input_limits(self._protocol_limits,
                                                             listener.config.options)
            listener.door = ListenerDoor(self, listener.config, listener.limits,
                                         listener.password)
        size = max(4096, limits.read_budget_bytes)
        if len(self._read_buffer) != size:
            self._read_buffer = memoryview(bytearray(size))
        # One context per ending (a FIN, or a reset once the goodbye is acknowledged):
        # each listener's protocol says which its connections get.  Refused
        # connections have their own: they are never admitted, so never counted.
        self._connection_contexts = {
            reset: ConnectionContext(
                self.reactor, self._read_buffer, connection_limits, self.account,
                on_closed=self._closed, on_lost=self.on_lost,
                on_registered=self.admission.registered, reset_after_goodbye=reset,
            )
            for reset in (False, True)
        }
        self._refusal_contexts = {
            reset: ConnectionContext(
                self.reactor, self._read_buffer, connection_limits, self.account,
                on_closed=self._refusal_closed, reset_after_goodbye=reset,
            )
            for reset in (False, True)
        }

    # -- listening ------------------------------------------------------------------

    def listen(self, config: ListenConfig, protocol: type[ChatProtocol]) -> Listener:
        """Bind ``config``'s address and start accepting on it, for ``protocol`` (the
        registry's class for ``config.protocol``); raises OSError."""
        sock = bind_socket(config.host, config.port, reuse_port=self.reuse_port)
        listener = Listener(self, sock, config, protocol, self._protocol_limits)
        self.listeners.append(listener)
        self.reactor.register(sock.fileno(), listener, _LISTEN_EVENTS)
        if self._spare_fd is None:
            self._spare_fd = os.open(os.devnull, os.O_RDONLY)
        host, port = listener.address
        log.info("listening on %s:%d (%s%s)", host, port, config.protocol,
                 ", TLS" if config.tls is not None else "")
        return listener

    def load_certificates(self, listen: tuple[ListenConfig, ...]) -> list[ssl.SSLContext | None]:
        """The TLS contexts the running listeners would take from ``listen`` (a reloaded
        config), one per listener (None: not TLS), read now.  Raises ValueError naming
        the listener if one cannot be loaded; nothing changes until
        :meth:`use_certificates`, so a reload is refused whole, never half applied."""
        contexts: list[ssl.SSLContext | None] = []
        for index, listener in enumerate(self.listeners):
            tls = listen[index].tls if index < len(listen) else None
            if tls is None or listener.tls_context is None:
                contexts.append(None)
                continue
            try:
                contexts.append(make_context(tls))
            except ValueError as exc:
                host, port = listener.address
                raise ValueError(f"listen[{index}].tls ({host}:{port}): {exc}") from None
        return contexts

    def use_certificates(self, listen: tuple[ListenConfig, ...],
                         contexts: list[ssl.SSLContext | None]) -> None:
        """Switch to ``contexts`` (from :meth:`load_certificates`): new connections take
        them, existing ones keep their own."""
        for index, (listener, context) in enumerate(zip(self.listeners, contexts, strict=True)):
            if context is None:
                continue
            listener.tls_context = context
            listener.config = listen[index]
            listener.door = ListenerDoor(self, listener.config, listener.limits,
                                         listener.password)
            host, port = listener.address
            log.info("%s:%d: TLS certificate reloaded from %s", host, port,
                     listen[index].tls.cert if listen[index].tls else "?")

    def stop(self) -> None:
        """Stop accepting: close every listening socket."""
        self.stopping = True
        for listener in self.listeners:
            self.reactor.unregister(listener.sock.fileno())
            listener.sock.close()
        self.listeners.clear()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    def close(self) -> None:
        """Release every descriptor (listeners, connections, the spare)."""
        for conn in list(self.live):
            conn.abort("server closed")
        self.stop()
        if self._spare_fd is not None:
            os.close(self._spare_fd)
            self._spare_fd = None

    # -- accepting --------------------------------------------------------------------

    def accept(self, listener: Listener) -> None:
        if self.stopping:  # a batch re-queued before stop() closed the listener
            return
        sock = listener.sock
        family, kind, proto = sock.family, sock.type, sock.proto
        for _ in range(self.limits.accept_batch):
            try:
                # The C-level accept and socket type: ``socket.socket`` wraps each
                # client in a Python subclass that costs 40 bytes more per connection
                # and adds nothing the server uses.
                fd, peer = sock._accept()  # type: ignore[attr-defined]
                conn_sock = _socket.socket(family, kind, proto, fd)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno in ACCEPT_TRANSIENT_ERRNOS:
                    continue
                if exc.errno in ACCEPT_RESOURCE_ERRNOS:
                    self._out_of_fds(listener, exc)
                    return
                log.error("accept failed: %s", exc)
                return
            self._admit(listener, conn_sock, peer)
        # Batch used up: under ET the rest of the backlog is never announced again.
        self.reactor.call_soon(self.accept, listener)

    def _out_of_fds(self, listener: Listener, exc: OSError) -> None:
        """EMFILE/ENFILE: refuse one pending client via the spare fd, retry on a timer.

        Without this, an edge-triggered listener never fires again for the
        connections already waiting, and a level-triggered one would spin.
        """
        self.stats.reject("out_of_fds")
        self.log_throttled(
            "emfile", "accept: %s; refusing new clients until descriptors free up", exc.strerror
        )
        if self._spare_fd is not None and exc.errno == errno.EMFILE:
            os.close(self._spare_fd)
            self._spare_fd = None
            try:
                refused, _ = listener.sock.accept()
            except OSError:
                pass
            else:
                with contextlib.suppress(OSError):
                    refused.send(REFUSAL_ALERT if listener.tls_context is not None else
                                 _refusal(listener.protocol, "server_full",
                                                           "server full, try again later"))
                refused.close()
            with contextlib.suppress(OSError):
                self._spare_fd = os.open(os.devnull, os.O_RDONLY)
        if self._retry is None:
            self._retry = self.reactor.call_later(
                self.limits.accept_retry_seconds, self._retry_accept, listener
            )

    def _retry_accept(self, listener: Listener) -> None:
        self._retry = None
        if not self.stopping:
            self.accept(listener)

    def _admit(self, listener: Listener, sock: _socket.socket, peer: tuple[str, int]) -> None:
        # accept()'s answer, not getpeername(): a reset in between must not make
        # the connection count under another address (a leaked per-address slot).
        # Interned: clients behind one address (a NAT, a proxy, a benchmark) share
        # one string instead of a copy each.
        address = sys.intern(plain_address(peer[0]))
        proxied = listener.config.proxy_protocol and listener.trusts(address)
        if self.stopping:
            reason: str | None = "stopping"
        elif proxied:  # the proxy's address is not the client's: its limits come with the header
            reason = "server_full" if self.admission.full else None
        else:
            reason = self.admission.check(address, time.monotonic())
        if reason is not None:
            self._refuse(listener, sock, (address, peer[1]), reason)
            return
        sock.setblocking(False)
        tune_socket(sock, self.net)
        tls = listener.tls_context
        context = self._connection_contexts[listener.protocol.reset_after_goodbye]
        conn: Connection
        if tls is None:
            conn = Connection(sock, context, peer=(address, peer[1]))
        else:
            assert listener.config.tls is not None
            conn = TlsConnection(sock, context, tls, peer=(address, peer[1]),
                                 timeout=listener.config.tls.handshake_timeout_seconds)
        try:
            protocol = listener.protocol(conn, listener.door)
        except Exception:  # a plugin protocol's bug: this connection only, not the batch
            log.exception("the %s protocol could not be made for %s:%d; closing it",
                          listener.config.protocol, *conn.peer)
            sock.close()
            return
        conn.set_protocol(protocol)
        self.admission.opened(address)
        self.stats.connections_total += 1
        log.debug("accepted fd=%d from %s:%d on %s", conn.fd, *conn.peer, listener.config.protocol)
        if not proxied:
            conn.ready()  # no header to wait for (the protocol hears it after any TLS handshake)
        if listener.config.proxy_protocol:
            self._read_proxy_header(conn, protocol, trusted=proxied)
        conn.start()

    def check_password(self, protocol: ChatProtocol, digest: bytes, given: str | None) -> None:
        """Let ``protocol``'s connection in if ``given`` is the listener's password (its
        ``digest``); else raise :class:`SessionRefused` (closing it at the
        :data:`~chatd.admission.PASSWORD_FAILURES_MAX`-th wrong one from its address
        group within the window, and refusing that group's attempts unchecked until
        the window has passed).  The password is never logged."""
        address = protocol.transport.peer[0]
        now = time.monotonic()
        if self.admission.password_failures(address, now) >= PASSWORD_FAILURES_MAX:
            self.stats.reject("password_limit")
            raise SessionRefused("password_limit", PASSWORD_LIMIT_TEXT, close=True)
        if given is not None and hmac.compare_digest(password_digest(given), digest):
            return
        if given is None:
            raise SessionRefused("password_required", "this listener needs a password")
        count = self.admission.password_failed(address, now)
        self.stats.reject("wrong_password")
        self.log_throttled(f"password:{address}", "wrong listener password from %s (%d within "
                           "%g s; closed at %d)", address, count, PASSWORD_WINDOW,
                           PASSWORD_FAILURES_MAX)
        if count >= PASSWORD_FAILURES_MAX:
            raise SessionRefused("password_limit", PASSWORD_LIMIT_TEXT, close=True)
        raise SessionRefused("wrong_password", "wrong password")

    def _read_proxy_header(self, conn: Connection, protocol: ChatProtocol, *,
                           trusted: bool) -> None:
        """Put a :class:`HeaderReader` in front of the connection's protocol: from a
        trusted proxy, the header names the client (admitted then, under its own
        address); from anyone else, a header is refused."""
        behind = conn.put_in_front(None)  # the TLS layer, or the chat protocol

        def failed(why: str) -> None:
            self.log_throttled(f"proxy:{why[:40]}", "closing %s:%d: %s", *conn.peer, why)
            conn.abort(why, limit="proxy_header")

        def header(source: tuple[str, int] | None, rest: bytes) -> None:
            if timer is not None:
                timer.cancel()
            if source is not None:
                real = sys.intern(plain_address(source[0]))
                self.admission.closed(conn.peer_address, registered=False)
                reason = self.admission.check(real, time.monotonic())
                conn.peer_address, conn.peer_port = real, source[1]
                self.admission.opened(real)  # balanced by _closed, whatever happens next
                if reason is not None:
                    self.stats.reject(reason)
                    self.log_throttled(f"refuse:{reason}", "refused a connection from %s "
                                       "(through a proxy): %s", real, reason)
                    line = _refusal(protocol, reason, self.admission.refusal_text(reason))
                    if isinstance(conn, TlsConnection):
                        conn.refuse_after_handshake(line, reason)  # the handshake is next
                    else:
                        conn.write(line)
                        conn.close(reason)
                    return
            conn.put_in_front(behind)
            if trusted:
                conn.ready()  # an untrusted peer's connection was ready at accept
            if rest and conn.state is State.OPEN:
                behind.data_received(memoryview(rest))

        reader = HeaderReader(trusted, header, failed)
        conn.put_in_front(reader)
        timer = None
        if trusted:
            def late() -> None:
                if not reader.done and conn.state is not State.CLOSED:
                    failed("no PROXY header in time")

            # The registration timeout, even where it is off for chat clients: a proxy
            # connection that never says who it carries is no one's.
            wait = self.limits.registration_timeout_seconds or 60.0
            timer = self.reactor.call_later(wait, late)

    def _refuse(self, listener: Listener, sock: _socket.socket, peer: tuple[str, int],
                reason: str) -> None:
        """Tell a refused client why and close: through a short-lived connection (its
        ending, and on a TLS port a handshake first) while few are; else at once."""
        self.stats.reject(reason)
        self.log_throttled(f"refuse:{reason}", "refused a connection from %s: %s", peer[0],
                           reason)
        line = _refusal(listener.protocol, reason, self.admission.refusal_text(reason))
        if self.refusing >= REFUSALS_AT_ONCE:
            _refuse_at_once(sock, REFUSAL_ALERT if listener.tls_context is not None else line)
            return
        self.refusing += 1
        sock.setblocking(False)
        tune_socket(sock, self.net)
        context = self._refusal_contexts[listener.protocol.reset_after_goodbye]
        conn: Connection
        if listener.tls_context is None:
            conn = Connection(sock, context, peer=peer)
            conn.write(line)
            conn.close(reason)
        else:
            assert listener.config.tls is not None
            timeout = min(listener.config.tls.handshake_timeout_seconds,
                          _REFUSAL_HANDSHAKE_SECONDS)
            conn = TlsConnection(sock, context, listener.tls_context, peer=peer,
                                 timeout=timeout, on_handshake=_nothing)
            conn.refuse_after_handshake(line, reason)
        conn.start()

    def _refusal_closed(self, conn: Connection) -> None:
        self.refusing -= 1

    def _closed(self, conn: Connection) -> None:
        """The socket is gone for good (called once per connection, from teardown)."""
        protocol = conn.protocol
        if isinstance(protocol, HeaderReader):
            registered = False  # closed before its PROXY header was read
        else:
            registered = protocol.registered if isinstance(protocol, ChatProtocol) else True
        self.admission.closed(conn.peer_address, registered)

    def log_throttled(self, key: str, message: str, *args: object) -> None:
        """Log ``message`` at most once a minute per ``key`` (libev: don't flood the log)."""
        now = time.monotonic()
        last = self._throttled.get(key)
        if last is None or now - last >= 60.0:
            self._throttled[key] = now
            log.warning(message, *args)


def _nothing() -> None:
    """The end of a refused TLS client's handshake, until it is told why."""


def _refuse_at_once(sock: _socket.socket, data: bytes) -> None:
    """Send ``data`` (a refusal) if the socket takes it now, and close."""
    with contextlib.suppress(OSError):
        sock.setblocking(False)
        sock.send(data)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
