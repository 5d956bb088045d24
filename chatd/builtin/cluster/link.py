"""The link to Redis: I/O threads that talk to it and hand results to the loop.

The event loop never blocks on Redis.  Three daemon threads, each with its own
connection (redis-py, with ``hiredis`` parsing when installed):

* the **command** thread runs :meth:`Link.run` jobs in submission order and
  posts ``then(result, error)`` to the loop;
* the **publisher** thread sends each :meth:`Link.publish_many` call as one
  pipeline (one round trip).  One thread and one connection keep the order a
  node published in, which Redis keeps per connection: per-sender order;
* the **subscriber** thread holds the subscriptions and posts
  ``on_message(channel, data)`` to the loop in the order Redis sent them.

The subscriber decides whether the link is *up*: it notices a cut (the socket
closes, or a health-check PING goes unanswered), reconnects with a backoff
capped at :data:`MAX_BACKOFF` seconds, re-subscribes every channel (the set of
channels is the link's state, not Redis') and posts ``on_state(True)``; a cut
posts ``on_state(False)``.  While the link is down nothing waits for Redis:
jobs fail at once (``then(None, ConnectionError)``) and publishes are dropped
and counted (:attr:`Link.dropped`), so memory stays bounded; the outbox is
capped at ``max_outbox`` batches, the oldest dropped first.

The URL (which may hold the password) is never logged: messages name the link
by its ``name``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The longest wait between two reconnection attempts, in seconds.
MAX_BACKOFF = 1.0
#: How long the subscriber waits for a message before it looks at its to-do list.
POLL_SECONDS = 0.05
#: The subscriber PINGs Redis this often when nothing arrives, to notice a hung server.
HEALTH_SECONDS = 1.0


def import_redis() -> Any:
    """redis-py, or an ImportError that says how to install it."""
    try:
        import redis
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("the cluster backend needs redis-py: pip install 'chatd[cluster]'"
                          ) from exc
    return redis


class LinkDown(ConnectionError):
    """The link is down: the job was not sent."""


class Link:
    """Commands, publishes and subscriptions to one Redis, off the loop."""

    def __init__(self, url: str, *, post: Callable[..., None], name: str,
                 connect_timeout: float, on_message: Callable[[str, bytes], None],
                 on_state: Callable[[bool], None], password: str | None = None,
                 max_outbox: int = 10_000) -> None:
        self._redis = import_redis()
        self._url = url
        self._password = password
        self._post = post
        self.name = name
        self._timeout = connect_timeout
        #: How long a command may wait for Redis' answer before the link counts it lost.
        self._reply_timeout = max(connect_timeout, 1.0) * 2
        self._on_message = on_message
        self._on_state = on_state
        self._max_outbox = max_outbox
        #: The last known state (True once the subscriber is connected and subscribed).
        self.up = False
        #: Batches of publishes dropped: over the outbox cap, sent while down, or lost in a cut.
        self.dropped = 0
        #: Times the link came up (the first connection included).
        self.connects = 0
        self._closed = threading.Event()
        self._lock = threading.Condition()
        self._jobs: deque[tuple[Callable[[Any], Any], Callable[..., None] | None]] = deque()
        self._outbox: deque[list[tuple[str, bytes]]] = deque()
        #: The channels wanted (the link's state) and those the subscriber has yet to apply.
        self._channels: set[str] = set()
        self._changed = threading.Event()
        self._threads: list[threading.Thread] = []
        self._warned = False

    # -- the loop's side -----------------------------------------------------------

    def start(self) -> None:
        """Start the threads (they connect in the background: a Redis that is absent
        now is retried, and the loop goes on)."""
        for job, label in ((self._commands, "commands"), (self._publisher, "publisher"),
                           (self._subscriber, "subscriber")):
            thread = threading.Thread(target=job, name=f"{self.name}-{label}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def run(self, job: Callable[[Any], T],
            then: Callable[[T | None, Exception | None], None] | None = None) -> None:
        """Run ``job(redis_client)`` on the command thread; ``then(result, None)`` or
        ``then(None, error)`` is posted to the loop.  Fails fast while down."""
        if not self.up or self._closed.is_set():
            if then is not None:
                self._post(then, None, LinkDown(f"{self.name}: Redis is not connected"))
            return
        with self._lock:
            self._jobs.append((job, then))
            self._lock.notify_all()

    def publish_many(self, items: list[tuple[str, bytes]]) -> None:
        """PUBLISH each ``(channel, data)`` in order, in one round trip."""
        if not items:
            return
        if not self.up or self._closed.is_set():
            self.dropped += 1
            return
        with self._lock:
            self._outbox.append(items)
            while len(self._outbox) > self._max_outbox:
                self._outbox.popleft()
                self.dropped += 1
            self._lock.notify_all()

    def subscribe(self, channel: str) -> None:
        with self._lock:
            self._channels.add(channel)
        self._changed.set()

    def unsubscribe(self, channel: str) -> None:
        with self._lock:
            self._channels.discard(channel)
        self._changed.set()

    @property
    def channels(self) -> frozenset[str]:
        """The channels wanted now."""
        with self._lock:
            return frozenset(self._channels)

    def close(self, timeout: float = 2.0) -> None:
        """Stop the threads (what is still queued is dropped)."""
        self._closed.set()
        self._changed.set()
        with self._lock:
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    # -- the threads -----------------------------------------------------------------

    def _client(self, role: str) -> Any:
        """A new redis-py client: bytes in and out, bounded waits, named in Redis'
        ``CLIENT LIST`` after the link and its ``role`` (an operator sees who is who)."""
        kwargs: dict[str, Any] = {
            "client_name": f"{self.name}-{role}",
            "socket_connect_timeout": self._timeout,
            "socket_timeout": self._reply_timeout,
            "decode_responses": False,
            # No silent retries: a cut must surface (the subscriber re-subscribes and
            # tells on_state; a publish is not sent twice).
            "retry": self._redis.retry.Retry(self._redis.backoff.NoBackoff(), 0),
        }
        if self._password is not None:
            kwargs["password"] = self._password
        return self._redis.Redis.from_url(self._url, **kwargs)

    def _next(self, queue: deque[Any]) -> Any:
        """The next item of ``queue``, waiting; None once closed."""
        with self._lock:
            while not queue and not self._closed.is_set():
                self._lock.wait(0.5)
            return None if self._closed.is_set() else queue.popleft()

    def _commands(self) -> None:
        client = self._client("commands")
        while (item := self._next(self._jobs)) is not None:
            job, then = item
            try:
                result, error = job(client), None
            except Exception as exc:  # handed to ``then``: the loop decides
                result, error = None, exc
            if then is not None:
                self._post(then, result, error)
        client.close()

    def _publisher(self) -> None:
        client = self._client("publisher")
        while (items := self._next(self._outbox)) is not None:
            try:
                pipe = client.pipeline(transaction=False)
                for channel, data in items:
                    pipe.publish(channel, data)
                pipe.execute()
            except self._redis.RedisError as exc:
                self.dropped += 1
                log.debug("%s: a publish was lost: %s", self.name, exc)
        client.close()

    def _subscriber(self) -> None:
        backoff = 0.05
        while not self._closed.is_set():
            try:
                self._listen()
                backoff = 0.05
            except (self._redis.RedisError, OSError) as exc:
                if not self.up and not self._warned:
                    self._warned = True  # once: a Redis that is not there yet is no news
                    log.warning("%s: cannot reach Redis (%s); retrying", self.name,
                                type(exc).__name__)
                self._set_state(False, exc)
                if self._closed.wait(backoff):
                    break
                backoff = min(backoff * 2, MAX_BACKOFF)
        self._set_state(False, None)

    def _listen(self) -> None:
        """Connect, subscribe everything, then pass messages on until a cut or close."""
        client = self._client("subscriber")
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            client.ping()  # reachable, and the password is right
            subscribed = self._apply(pubsub, set())
            self._set_state(True, None)
            quiet_since = time.monotonic()
            ping_sent: float | None = None
            while not self._closed.is_set():
                if self._changed.is_set():
                    subscribed = self._apply(pubsub, subscribed)
                if not subscribed:
                    self._changed.wait(POLL_SECONDS)
                    continue
                message = pubsub.get_message(timeout=POLL_SECONDS)
                now = time.monotonic()
                if message is None:
                    if ping_sent is not None and now - ping_sent > self._reply_timeout:
                        raise self._redis.ConnectionError("no answer to PING")
                    if ping_sent is None and now - quiet_since > HEALTH_SECONDS:
                        pubsub.ping()  # a hung server never answers: see above
                        ping_sent = now
                    continue
                quiet_since, ping_sent = now, None
                if message.get("type") == "message":
                    self._post(self._on_message, message["channel"].decode(errors="replace"),
                               message["data"])
        finally:
            pubsub.close()
            client.close()

    def _apply(self, pubsub: Any, subscribed: set[str]) -> set[str]:
        """Bring the connection's subscriptions to the wanted set."""
        self._changed.clear()
        with self._lock:
            wanted = set(self._channels)
        if added := wanted - subscribed:
            pubsub.subscribe(*sorted(added))
        if removed := subscribed - wanted:
            pubsub.unsubscribe(*sorted(removed))
        return wanted

    def _set_state(self, up: bool, error: BaseException | None) -> None:
        if up == self.up:
            return
        self.up = up
        if up:
            self.connects += 1
            self._warned = False
            log.info("%s: connected to Redis", self.name)
        elif error is not None:
            log.warning("%s: lost Redis (%s); retrying", self.name, type(error).__name__)
        if not up:
            with self._lock:
                self.dropped += len(self._outbox)
                self._outbox.clear()
                # Emptied in place: the command thread waits on this very deque.
                failed = list(self._jobs)
                self._jobs.clear()
            for _job, then in failed:
                if then is not None:
                    self._post(then, None, LinkDown(f"{self.name}: Redis is not connected"))
        self._post(self._on_state, up)
