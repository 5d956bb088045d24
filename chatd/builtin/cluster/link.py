"""The link to Redis: publisher and subscriber on chatd's reactor, commands on a thread.

The event loop never blocks on Redis.  The link has three connections:

* the **publisher** and the **subscriber** are non-blocking sockets registered
  with chatd's reactor (``server.loop``): RESP written by hand
  (:mod:`~chatd.builtin.cluster.resp`), replies parsed by ``hiredis.Reader``.
  This was measured (docs/cluster.md, "Design notes"): 1.8-2.7x less CPU per
  published batch and 3.6-7.8x less per received one than threads, and lower
  latency.  One publisher connection written in call order keeps per-sender order
  (Redis keeps it per connection); the subscriber hands ``on_message(channel,
  data)`` to the loop directly, in the order Redis sent them;
* the **command** thread runs :meth:`Link.run` jobs with redis-py in submission
  order and posts ``then(result, error)`` to the loop.  Presence's commands are
  rare, and are Lua scripts and pipelines that redis-py's script cache and reply
  parsing handle well: not worth writing by hand.

Connecting never blocks: the host must be an IP address or ``localhost``, or its
name is resolved on the command thread first.  With a ``redis+sentinel://`` URL the
command thread asks the sentinels for the current master (redis-py's
``Sentinel.discover_master``) before every connection attempt, the first and each
one after a cut, so a failover's new master is found; its commands go through
``Sentinel.master_for``, which asks again whenever it reconnects.  Then the TCP connect and the TLS
handshake (``rediss://``) are driven by the reactor's events, AUTH (with the user
if named), SELECT and CLIENT SETNAME are pipelined first, then SUBSCRIBE of every
wanted channel (the set of channels is the link's state: a reconnect
re-subscribes them all).  The link is *up* when both loop connections have been
answered; then ``on_state(True)``.  A cut of either (closed socket, error, a
health-check PING unanswered for ``health_seconds``, a connect that takes longer
than ``connect_timeout``) closes both, calls ``on_state(False)`` and retries with
an exponential backoff with jitter (:class:`Backoff`: at most 10 attempts in the
first 10 s, then one every 5 s at most).  While down nothing waits for Redis:
jobs fail at once (``then(None, LinkDown)``) and publishes are dropped and
counted (:attr:`Link.dropped`); the outbox is capped at ``max_outbox`` batches
and ``max_outbox_bytes`` bytes, the oldest dropped first and counted.

Handlers run on the loop without the plugin guard: an exception while handling
one message is logged (rate-limited) and counted (:attr:`Link.errors`), never
kills the link.  Logs are rate-limited per kind (one a minute, then a summary of
what was held back).  The URL (which may hold the password) is never logged:
messages name the link by its ``name``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import ipaddress
import logging
import random
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from chatd.config import SentinelAddress, parse_sentinel_url

from . import resp

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The first wait before a reconnection attempt, and the longest, in seconds.
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 5.0
#: A PING is sent this often on each loop connection; unanswered this long: a cut.
HEALTH_SECONDS = 5.0
#: A link up this long before a cut is retried from the first backoff step again.
STABLE_SECONDS = 10.0
#: The outbox's byte cap by default (``cluster.max_outbox_bytes``).
MAX_OUTBOX_BYTES = 1 << 20
#: The same kind of log line at most once per this many seconds.
LOG_EVERY = 60.0
_RECV = 1 << 18
_PING = resp.command(b"PING")


def import_redis() -> Any:
    """redis-py, or an ImportError that says how to install it."""
    try:
        import hiredis  # noqa: F401  - the loop's connections parse with it
        import redis
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("the cluster backend needs redis-py and hiredis: "
                          "pip install 'chatd[cluster]'") from exc
    return redis


class Loop(Protocol):
    """What the link needs of chatd's reactor (``server.loop``)."""

    def register(self, fd: int, handler: Any, events: int = ...) -> None: ...

    def unregister(self, fd: int) -> None: ...

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Any: ...

    def clock(self) -> float: ...


class LinkDown(ConnectionError):
    """The link is down: the job was not sent."""


class RedisRefused(ConnectionError):
    """Redis answered the connection's first commands with an error (a wrong password)."""

    def __init__(self, kind: str, text: str) -> None:
        super().__init__(text)
        self.kind = kind


class Backoff:
    """Exponential backoff with "equal jitter": the n-th wait is between half and all
    of ``min(cap, first * 2**n)``.  With the defaults at most 10 attempts fall in the
    first 10 s (the jitter can only shorten a wait by half), and none waits over 5 s."""

    def __init__(self, first: float = FIRST_BACKOFF, cap: float = MAX_BACKOFF,
                 rng: Callable[[], float] = random.random) -> None:
        self.first, self.cap, self.rng = first, cap, rng
        self.attempt = 0

    def next(self) -> float:
        base = min(self.cap, self.first * 2 ** min(self.attempt, 32))
        self.attempt += 1
        return base / 2 + self.rng() * base / 2

    def reset(self) -> None:
        self.attempt = 0


class RateLimitedLog:
    """One log line per kind per ``every`` seconds; the next one says how many like it
    were held back meanwhile (the summary), so a flapping Redis cannot flood the log."""

    def __init__(self, logger: logging.Logger, every: float = LOG_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.every, self.clock = logger, every, clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def __call__(self, kind: str, level: int, message: str, *args: Any,
                 exc_info: bool = False) -> bool:
        now = self.clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.every:
            self._held[kind] = self._held.get(kind, 0) + 1
            return False
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        if held:
            message += f" (and {held} more like it in the last {self.every:.0f} s)"
        self.logger.log(level, message, *args, exc_info=exc_info)
        return True


class _Connection:
    """One non-blocking connection to Redis on the reactor: connect, TLS, the first
    commands, then writes from ``out`` and replies to ``on_reply``.  Any failure goes
    to ``link._cut``: the link decides what follows."""

    def __init__(self, link: Link, role: str, on_reply: Callable[[Any], None]) -> None:
        import hiredis

        self.link, self.role, self.on_reply = link, role, on_reply
        self.sock: socket.socket | None = None
        self.reader = hiredis.Reader()
        #: What is still to be written: (data, droppable).  Batches are droppable.
        self.out: deque[tuple[bytes, bool]] = deque()
        self.offset = 0  # how much of out[0] is written
        self.state = "new"
        self.hello_left = 0  # replies to the first commands still awaited
        self.ping_sent: float | None = None
        self.last_pong = 0.0

    # -- opening -------------------------------------------------------------------

    def open(self, address: str, endpoint: resp.Endpoint, first: list[bytes]) -> None:
        # An IP literal only: connect() given a name would resolve it here, blocking.
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.endpoint = endpoint
        self.hello_left = len(first)
        self.out.extend((data, False) for data in first)
        code = sock.connect_ex((address, endpoint.port))
        if code not in (0, errno.EINPROGRESS):
            raise OSError(code, f"connect: {errno.errorcode.get(code, code)}")
        self.state = "connecting"
        self.link.loop.register(sock.fileno(), self)

    @property
    def ready(self) -> bool:
        return self.state == "open" and self.hello_left == 0

    def close(self) -> None:
        sock, self.sock = self.sock, None
        self.state = "closed"
        self.out.clear()
        if sock is not None:
            self.link.loop.unregister(sock.fileno())
            with contextlib.suppress(OSError):
                sock.close()

    # -- events --------------------------------------------------------------------

    def handle_events(self, mask: int) -> None:
        try:
            self._events(mask)
        except Exception as exc:  # a cut, a refusal, a bad reply, or our own bug
            self.link._cut(self, exc)

    def _events(self, mask: int) -> None:
        if self.state == "connecting":
            if not mask & (select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP):
                return
            assert self.sock is not None
            code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, f"connect: {errno.errorcode.get(code, code)}")
            if self.endpoint.tls is not None:
                self.sock = self.endpoint.tls.wrap_socket(
                    self.sock, server_hostname=self.endpoint.host,
                    do_handshake_on_connect=False)
                self.state = "tls"
            else:
                self.state = "open"
        if self.state == "tls":
            assert isinstance(self.sock, ssl.SSLSocket)
            try:
                self.sock.do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return  # the next event goes on with it
            self.state = "open"
        if self.state == "open":
            self.write()
            self._read()

    def send(self, data: bytes, droppable: bool = False) -> None:
        self.out.append((data, droppable))
        if self.state == "open":
            self.write()

    def write(self) -> None:
        out = self.out
        while out and self.sock is not None:
            data = out[0][0]
            try:
                sent = self.sock.send(memoryview(data)[self.offset:])
            except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError,
                    ssl.SSLWantReadError):
                return  # EPOLLOUT (edge-triggered) calls us again
            self.offset += sent
            if self.offset >= len(data):
                _data, droppable = out.popleft()
                self.offset = 0
                if droppable:
                    self.link._sent(self, data)

    def _read(self) -> None:
        while self.sock is not None:
            try:
                data = self.sock.recv(_RECV)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError,
                    ssl.SSLWantWriteError):
                break
            if not data:
                raise ConnectionError(f"Redis closed the {self.role} connection")
            self.reader.feed(data)
            self._replies()

    def _replies(self) -> None:
        while self.sock is not None:
            reply = self.reader.gets()
            if reply is False:
                return
            if reply == b"PONG" or (isinstance(reply, list) and reply
                                    and reply[0] == b"pong"):
                self.ping_sent = None
                self.last_pong = self.link.loop.clock()
                continue
            if self.hello_left:
                self.hello_left -= 1
                if isinstance(reply, Exception):
                    raise _refusal(reply)
                if not self.hello_left:
                    self.link._ready(self)
                continue
            self.on_reply(reply)


def _refusal(reply: Exception) -> RedisRefused:
    """What an error answer to the first commands means, as a kind an operator reads."""
    text = str(reply)
    auth = text.startswith(("WRONGPASS", "NOAUTH")) or "password" in text.lower()
    return RedisRefused("AuthenticationError" if auth else "ResponseError", text)


class Link:
    """Commands, publishes and subscriptions to one Redis; the loop never waits."""

    def __init__(self, url: str, *, post: Callable[..., None], loop: Loop, name: str,
                 connect_timeout: float, on_message: Callable[[str, bytes], None],
                 on_state: Callable[[bool], None], password: str | None = None,
                 max_outbox: int = 10_000, max_outbox_bytes: int = MAX_OUTBOX_BYTES,
                 health_seconds: float = HEALTH_SECONDS) -> None:
        self._redis = import_redis()
        self._url = url
        self._password = password
        #: The sentinels to ask for the master (None: the URL names Redis itself).
        self._sentinel = sentinel_address(url)
        self._endpoint = (resp.endpoint(url, password) if self._sentinel is None
                          else _sentinel_endpoint(self._sentinel, password))
        self._sentinels: Any = None  # redis-py's Sentinel, made on the command thread
        self._post = post
        self.loop = loop
        self.name = name
        self._timeout = connect_timeout
        #: How long a command may wait for Redis' answer before the link counts it lost.
        self._reply_timeout = max(connect_timeout, 1.0) * 2
        self._on_message = on_message
        self._on_state = on_state
        self._max_outbox = max_outbox
        self._max_outbox_bytes = max_outbox_bytes
        self._health = health_seconds
        #: The last known state (True once both loop connections are answered).
        self.up = False
        #: Batches of publishes dropped: over the outbox caps, sent while down, or lost in a cut.
        self.dropped = 0
        #: Messages whose handler raised (logged, counted; the link goes on).
        self.errors = 0
        #: Times the link came up (the first connection included).
        self.connects = 0
        #: Batches waiting in the outbox, and their bytes.
        self.outbox_batches = 0
        self.outbox_bytes = 0
        self.backoff = Backoff()
        self.note = RateLimitedLog(log)
        self._closed = threading.Event()
        self._lock = threading.Condition()
        self._jobs: deque[tuple[Callable[[Any], Any], Callable[..., None] | None]] = deque()
        self._channels: set[str] = set()
        self._pub: _Connection | None = None
        self._sub: _Connection | None = None
        #: The pending timers, one per job (connect deadline, health check, retry).
        self._timers: dict[str, Any] = {}
        self._up_since = 0.0
        self._attempt = 0  # which connection attempt a late answer belongs to
        self._thread: threading.Thread | None = None

    # -- the loop's side -----------------------------------------------------------

    def start(self) -> None:
        """Start the command thread and the first connection attempt (a Redis that is
        absent now is retried, and the loop goes on)."""
        self._thread = threading.Thread(target=self._commands, name=f"{self.name}-commands",
                                        daemon=True)
        self._thread.start()
        self._connect()

    def run(self, job: Callable[[Any], T],
            then: Callable[[T | None, Exception | None], None] | None = None) -> None:
        """Run ``job(redis_client)`` on the command thread; ``then(result, None)`` or
        ``then(None, error)`` is posted to the loop.  Fails fast while down."""
        if not self.up or self._closed.is_set():
            if then is not None:
                self._post(then, None, LinkDown(f"{self.name}: Redis is not connected"))
            return
        self._queue_job(job, then)

    def publish_many(self, items: list[tuple[str, bytes]]) -> None:
        """PUBLISH each ``(channel, data)`` in order, written as one pipeline."""
        if not items:
            return
        pub = self._pub
        if not self.up or pub is None or self._closed.is_set():
            self.dropped += 1
            return
        data = b"".join(resp.command(b"PUBLISH", channel, payload)
                        for channel, payload in items)
        self.outbox_batches += 1
        self.outbox_bytes += len(data)
        pub.out.append((data, True))
        self._trim(pub)
        pub.write()

    def subscribe(self, channel: str) -> None:
        if channel in self._channels:
            return
        self._channels.add(channel)
        if self._sub is not None and self._sub.state in ("open", "tls", "connecting"):
            self._sub.send(resp.command(b"SUBSCRIBE", channel))

    def unsubscribe(self, channel: str) -> None:
        if channel not in self._channels:
            return
        self._channels.discard(channel)
        if self._sub is not None and self._sub.state in ("open", "tls", "connecting"):
            self._sub.send(resp.command(b"UNSUBSCRIBE", channel))

    @property
    def channels(self) -> frozenset[str]:
        """The channels wanted now."""
        return frozenset(self._channels)

    def close(self, timeout: float = 2.0) -> None:
        """Close the connections and stop the thread (what is still queued is dropped)."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._drop_connections()
        self._set_state(False, None)
        with self._lock:
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # -- connecting ----------------------------------------------------------------

    def _connect(self) -> None:
        if self._closed.is_set():
            return
        self._attempt += 1
        attempt = self._attempt
        self._later("deadline", self._timeout, self._too_slow, attempt)
        if self._sentinel is not None:
            self._queue_job(lambda _r: self._discover(),
                            lambda found, error: self._discovered(found, error, attempt))
            return
        if not self._endpoint.needs_lookup:
            self._open(self._endpoint.address(), attempt)
            return
        host, port = self._endpoint.host, self._endpoint.port
        self._queue_job(lambda _r: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM),
                        lambda found, error: self._resolved(found, error, attempt))

    def _resolved(self, found: Any, error: Exception | None, attempt: int) -> None:
        if attempt != self._attempt or self._closed.is_set():
            return
        if error is not None or not found:
            self._cut(None, error or OSError(f"{self._endpoint.host}: no address"))
            return
        self._open(found[0][4][0], attempt)

    def _discover(self) -> tuple[str, str, int]:
        """(On the command thread.)  The master the sentinels name now: its IP address,
        its name as they gave it, its port."""
        assert self._sentinel is not None and self._sentinels is not None
        host, port = self._sentinels.discover_master(self._sentinel.master)
        address = resp.LOCAL_NAMES.get(host, host)
        try:
            ipaddress.ip_address(address)
        except ValueError:  # a name (sentinel resolve-hostnames): resolved here, off the loop
            address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0]
        return address, host, int(port)

    def _discovered(self, found: Any, error: Exception | None, attempt: int) -> None:
        if attempt != self._attempt or self._closed.is_set():
            return
        if error is not None or not found:
            self._cut(None, error or OSError("the sentinels named no master"))
            return
        address, host, port = found
        if (host, port) != (self._endpoint.host, self._endpoint.port):
            log.info("%s: the sentinels name %s:%d as the master", self.name, host, port)
        self._endpoint = dataclasses.replace(self._endpoint, host=host, port=port)
        self._open(address, attempt)

    def _open(self, address: str, attempt: int) -> None:
        endpoint = self._endpoint
        self._pub = _Connection(self, "publisher", self._publish_reply)
        self._sub = _Connection(self, "subscriber", self._subscriber_reply)
        try:
            self._pub.open(address, endpoint, endpoint.hello(f"{self.name}-publisher"))
            first = endpoint.hello(f"{self.name}-subscriber")
            channels = sorted(self._channels)
            self._sub.open(address, endpoint, first)
            if channels:
                self._sub.out.append((resp.command(b"SUBSCRIBE", *channels), False))
        except (OSError, ValueError) as exc:  # ValueError: not an IP address
            self._cut(None, exc)

    def _later(self, job: str, delay: float, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback`` after ``delay`` on the loop, replacing the pending ``job``."""
        old = self._timers.pop(job, None)
        if old is not None:
            old.cancel()
        self._timers[job] = self.loop.call_later(delay, callback, *args)

    def _too_slow(self, attempt: int) -> None:
        if attempt == self._attempt and not self.up:
            self._cut(None, TimeoutError("connecting took too long"))

    def _ready(self, conn: _Connection) -> None:
        """A connection's first commands are answered; both: the link is up."""
        conn.last_pong = self.loop.clock()
        pub, sub = self._pub, self._sub
        if pub is None or sub is None or not (pub.ready and sub.ready):
            return
        self._up_since = self.loop.clock()
        self._set_state(True, None)
        self._later("health", self._health / 4, self._check_health, self._attempt)

    def _check_health(self, attempt: int) -> None:
        """PING each connection every ``health_seconds``; one unanswered that long is a
        cut (a frozen or hung Redis never closes the socket)."""
        if attempt != self._attempt or not self.up:
            return
        now = self.loop.clock()
        for conn in (self._pub, self._sub):
            if conn is None:
                continue
            if conn.ping_sent is not None and now - conn.ping_sent >= self._health:
                self._cut(conn, TimeoutError(f"no answer to PING on the {conn.role}"))
                return
            if conn.ping_sent is None and now - conn.last_pong >= self._health:
                conn.ping_sent = now
                conn.send(_PING)
        self._later("health", self._health / 4, self._check_health, attempt)

    def _cut(self, conn: _Connection | None, error: BaseException) -> None:
        """A connection failed (or the attempt did): close both, tell, retry later."""
        if self._closed.is_set():
            return
        was_up = self.up
        self._drop_connections()
        kind = getattr(error, "kind", type(error).__name__)
        if was_up:
            self.note("lost", logging.WARNING, "%s: lost Redis (%s); retrying", self.name, kind)
        else:
            self.note(f"reach-{kind}", logging.WARNING, "%s: cannot reach Redis (%s); retrying",
                      self.name, kind)
        if was_up and self.loop.clock() - self._up_since >= STABLE_SECONDS:
            self.backoff.reset()  # a link that held is retried at once; a flapping one is not
        self._set_state(False, error)
        self._attempt += 1
        self._later("retry", self.backoff.next(), self._connect)

    def _drop_connections(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for conn in (self._pub, self._sub):
            if conn is not None:
                self.dropped += sum(1 for _data, droppable in conn.out if droppable)
                conn.close()
        self._pub = self._sub = None
        self.outbox_batches = self.outbox_bytes = 0

    # -- the publisher and the subscriber ------------------------------------------

    def _trim(self, pub: _Connection) -> None:
        """Drop the oldest waiting batches while over either cap (never the one being
        written: half a command would corrupt the stream)."""
        out = pub.out
        index = 1 if pub.offset else 0
        while ((self.outbox_batches > self._max_outbox
                or self.outbox_bytes > self._max_outbox_bytes) and index < len(out)):
            data, droppable = out[index]
            if not droppable:
                index += 1
                continue
            del out[index]
            self.outbox_batches -= 1
            self.outbox_bytes -= len(data)
            self.dropped += 1

    def _sent(self, conn: _Connection, data: bytes) -> None:
        """A batch left for the kernel: it no longer counts in the outbox."""
        if conn is self._pub:
            self.outbox_batches = max(0, self.outbox_batches - 1)
            self.outbox_bytes = max(0, self.outbox_bytes - len(data))

    def _publish_reply(self, reply: Any) -> None:
        if isinstance(reply, Exception):
            self.note("publish-error", logging.WARNING, "%s: Redis refused a publish: %s",
                      self.name, reply)

    def _subscriber_reply(self, reply: Any) -> None:
        if isinstance(reply, Exception):
            self.note("subscribe-error", logging.WARNING, "%s: Redis refused: %s",
                      self.name, reply)
            return
        if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
            self._deliver(reply[1].decode(errors="replace"), reply[2])

    def _deliver(self, channel: str, data: bytes) -> None:
        try:
            self._on_message(channel, data)
        except Exception:
            self.errors += 1
            self.note("handler", logging.ERROR, "%s: handling a message on %s failed",
                      self.name, channel, exc_info=True)

    def _set_state(self, up: bool, error: BaseException | None) -> None:
        if up == self.up:
            return
        self.up = up
        if up:
            self.connects += 1
            log.info("%s: connected to Redis", self.name)
        else:
            with self._lock:
                failed = list(self._jobs)
                self._jobs.clear()  # emptied in place: the command thread waits on it
            for _job, then in failed:
                if then is not None:
                    self._post(then, None, LinkDown(f"{self.name}: Redis is not connected"))
        try:
            self._on_state(up)
        except Exception:
            self.errors += 1
            self.note("handler-state", logging.ERROR, "%s: on_state(%s) failed", self.name,
                      up, exc_info=True)

    # -- the command thread --------------------------------------------------------

    def _queue_job(self, job: Callable[[Any], Any], then: Callable[..., None] | None) -> None:
        with self._lock:
            self._jobs.append((job, then))
            self._lock.notify_all()

    def _client(self) -> Any:
        """The command thread's redis-py client: bytes in and out, bounded waits, named
        in Redis' ``CLIENT LIST`` after the link (an operator sees who is who)."""
        kwargs: dict[str, Any] = {
            "client_name": f"{self.name}-commands",
            "socket_connect_timeout": self._timeout,
            "socket_timeout": self._reply_timeout,
            "decode_responses": False,
            # No silent retries: a job is not run twice.
            "retry": self._redis.retry.Retry(self._redis.backoff.NoBackoff(), 0),
        }
        if self._sentinel is not None:
            return self._sentinel_client(kwargs)
        if self._password is not None:
            kwargs["password"] = self._password
        return self._redis.Redis.from_url(self._url, **kwargs)

    def _sentinel_client(self, kwargs: dict[str, Any]) -> Any:
        """The client of the master the sentinels name (``master_for``: it asks them
        again on each new connection), and the :class:`Sentinel` that
        :meth:`_discover` asks."""
        from redis.sentinel import Sentinel

        address = self._sentinel
        assert address is not None
        self._sentinels = Sentinel(list(address.sentinels),
                                   sentinel_kwargs=_asking(address, self._timeout))
        endpoint = self._endpoint
        kwargs.update(db=endpoint.db, password=endpoint.password,
                      username=endpoint.username)
        return self._sentinels.master_for(address.master, redis_class=self._redis.Redis,
                                          **kwargs)

    def _next(self) -> Any:
        """The next job, waiting; None once closed."""
        with self._lock:
            while not self._jobs and not self._closed.is_set():
                self._lock.wait(0.5)
            return None if self._closed.is_set() else self._jobs.popleft()

    def _commands(self) -> None:
        client = self._client()
        while (item := self._next()) is not None:
            job, then = item
            try:
                result, error = job(client), None
            except Exception as exc:  # handed to ``then``: the loop decides
                result, error = None, exc
            if then is not None:
                self._post(then, result, error)
        client.close()


def sentinel_address(url: str) -> SentinelAddress | None:
    """The sentinels of a ``redis+sentinel://`` URL, or None for ``redis://``/``rediss://``."""
    if not url.lower().startswith("redis+sentinel://"):
        return None
    return parse_sentinel_url(url)


def _sentinel_endpoint(address: SentinelAddress, password: str | None) -> resp.Endpoint:
    """The master's endpoint before the sentinels name it (host and port filled in by
    each discovery); ``password`` (password_env/password_file) wins over the URL's."""
    return resp.Endpoint(host="", port=0, db=address.db, username=address.username,
                         password=password if password is not None else address.password,
                         tls=None)


def redis_client(url: str, password: str | None, timeout: float) -> Any:
    """A blocking redis-py client of the cluster's Redis for code off the loop (the
    workers' parent): the master through the sentinels for ``redis+sentinel://``."""
    redis = import_redis()
    address = sentinel_address(url)
    if address is None:
        return redis.Redis.from_url(url, password=password, socket_timeout=timeout,
                                    socket_connect_timeout=timeout)
    from redis.sentinel import Sentinel

    sentinels = Sentinel(list(address.sentinels), sentinel_kwargs=_asking(address, timeout))
    return sentinels.master_for(address.master, db=address.db, username=address.username,
                                password=password if password is not None else address.password,
                                socket_timeout=timeout, socket_connect_timeout=timeout)


def _asking(address: SentinelAddress, timeout: float) -> dict[str, Any]:
    """How to talk to the sentinels themselves: bounded waits, their own AUTH if any."""
    asking: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if address.sentinel_password is not None:
        asking["password"] = address.sentinel_password
    if address.sentinel_username:
        asking["username"] = address.sentinel_username
    return asking
