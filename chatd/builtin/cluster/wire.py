"""What crosses Redis: every channel and key name, and the batch on a channel.

All names live here (:class:`Names`), so the layout of a cluster's Redis
database can be read in one place and two networks sharing one Redis are kept
apart by their ``cluster.prefix``.  Channel names never hold user text other
than a room's folded name, which the domain validated (``#`` and 1-32 of
``A-Za-z0-9_-.``).

A batch is one JSON object per channel and tick::

    {"v": 1, "node": "chat1", "seq": 42, "events": [<codec dict>, ...]}

plus ``"op": "deliver"`` and ``"to"`` (a nick key or a session) on a node's
channel.  The events are the event codec's internal form (:mod:`chatd.codec`),
never rendered text: each node renders for its own clients.  ``seq`` numbers
the events a node published on one channel, from 1 (the node's start); a batch
carries the number of its first event, so a receiver that sees a jump knows how
many *events* it missed, not only that it missed something (:class:`Sequences`).

Decoding is strict and never raises anything but :class:`WireError`: a
hostile or corrupt payload (anyone with the Redis password can PUBLISH) is
refused whole, with a reason the receiver counts and logs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chatd import codec
from chatd.chat.rooms import room_key
from chatd.events import Event

#: The version of the batch envelope (the events inside carry the codec's own ``v``).
WIRE_VERSION = 1
#: The default cap of one payload (``cluster.max_payload_bytes``).
MAX_PAYLOAD_BYTES = 1 << 20
#: The operations a node's channel carries.
OPS = frozenset({"deliver", "kick", "kill"})


class WireError(ValueError):
    """A payload this node does not read; the message says why (no payload text)."""


class Names:
    """Every Redis channel and key chatd uses, under one prefix."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = "chatd") -> None:
        self.prefix = prefix

    # channels
    def room_channel(self, room: str) -> str:
        """Room events of the room named ``room`` (any case)."""
        return f"{self.prefix}:room:{room_key(room)}"

    def node_channel(self, node: str) -> str:
        """What is sent to one node: private messages, a remote session's events."""
        return f"{self.prefix}:node:{node}"

    @property
    def all_channel(self) -> str:
        """What every node hears: server-wide notices, node deaths, room state."""
        return f"{self.prefix}:all"

    def room_of_channel(self, channel: str) -> str | None:
        """The room key of a room channel, or None for another channel."""
        head = f"{self.prefix}:room:"
        return channel[len(head):] if channel.startswith(head) else None

    # keys (presence: see presence.py)
    def node_key(self, node: str) -> str:
        """A string with a TTL: ``node`` is alive while it exists."""
        return f"{self.prefix}:node:{node}"

    @property
    def nodes(self) -> str:
        """The set of nodes that registered (alive or not yet swept)."""
        return f"{self.prefix}:nodes"

    @property
    def nicks(self) -> str:
        """Hash: nick skeleton key -> JSON Person (with its node)."""
        return f"{self.prefix}:nicks"

    def node_nicks(self, node: str) -> str:
        """Set: the nick keys ``node`` holds (its cleanup)."""
        return f"{self.prefix}:nicks:{node}"

    def members(self, room: str) -> str:
        """Hash: session -> JSON Member, of the room named ``room``."""
        return f"{self.prefix}:members:{room_key(room)}"

    @property
    def rooms(self) -> str:
        """Hash: room key -> JSON {name, topic, topic_by, topic_at, count}."""
        return f"{self.prefix}:rooms"

    def node_rooms(self, node: str) -> str:
        """Set: the ``"room_key session"`` pairs ``node`` contributed (its cleanup)."""
        return f"{self.prefix}:rooms:{node}"

    def sweep(self, node: str) -> str:
        """The lock one node takes to sweep a dead ``node``."""
        return f"{self.prefix}:sweep:{node}"


@dataclass(frozen=True, slots=True)
class Batch:
    """One decoded payload."""

    node: str
    seq: int
    events: tuple[Event, ...]
    op: str | None = None
    to: str | None = None


def encode(node: str, seq: int, events: Sequence[Event], *, op: str | None = None,
           to: str | None = None) -> bytes:
    """The payload of one batch (compact UTF-8 JSON)."""
    body: dict[str, Any] = {"v": WIRE_VERSION, "node": node, "seq": seq,
                            "events": [codec.to_dict(e, internal=True) for e in events]}
    if op is not None:
        body["op"] = op
        body["to"] = to
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def decode(data: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> Batch:
    """The batch in ``data``, or :class:`WireError` (oversize, not JSON, wrong
    version, a malformed field or event)."""
    if len(data) > max_bytes:
        raise WireError(f"payload of {len(data)} bytes is over the cap of {max_bytes}")
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        raise WireError("not JSON") from None
    if not isinstance(body, dict):
        raise WireError("not a JSON object")
    if body.get("v") != WIRE_VERSION or body.get("v").__class__ is not int:
        raise WireError(f"unknown wire version {body.get('v')!r:.20}")
    node, seq, events = body.get("node"), body.get("seq"), body.get("events")
    if not isinstance(node, str) or not node:
        raise WireError("'node' is not a name")
    if seq.__class__ is not int or seq < 1:
        raise WireError("'seq' is not a positive integer")
    if not isinstance(events, list):
        raise WireError("'events' is not a list")
    op, to = body.get("op"), body.get("to")
    if op is not None and (op not in OPS or not isinstance(to, str)):
        raise WireError("unknown 'op', or no 'to'")
    try:
        decoded = tuple(_event(d) for d in events)
    except codec.CodecError as exc:
        raise WireError(f"bad event: {str(exc)[:120]}") from None
    return Batch(node, seq, decoded, op, to if op is not None else None)


def _event(d: Any) -> Event:
    """One event of a batch; anything but an event (a reply kind) is refused."""
    try:
        event = codec.from_dict(d)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        if isinstance(exc, codec.CodecError):
            raise
        raise codec.CodecError(f"{type(exc).__name__}") from None
    if not isinstance(event, Event):
        raise codec.CodecError(f"not an event: {type(event).__name__}")
    return event


class Sequences:
    """The last event number seen per (origin node, channel): how a receiver tells it
    missed events.

    :meth:`check` returns how many events were missed before this batch (0 when
    none).  The first batch heard from an origin on a channel starts the count
    (we joined mid-stream); a ``seq`` that does not go up means the origin
    restarted (its count starts again at 1): the count restarts, no gap.  A
    channel given up (:meth:`forget`) starts over when heard again.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], int] = {}

    def check(self, node: str, channel: str, seq: int, count: int = 1) -> int:
        """A batch of ``count`` events numbered from ``seq``: how many were missed."""
        key = (node, channel)
        last = self._last.get(key)
        self._last[key] = seq + max(count, 1) - 1
        if last is None or seq <= last:
            return 0
        return seq - last - 1

    def forget(self, channel: str) -> None:
        """Drop what was known of ``channel`` (unsubscribed: a later jump is no gap)."""
        for key in [k for k in self._last if k[1] == channel]:
            del self._last[key]

    def forget_node(self, node: str) -> None:
        """Drop what was known of ``node`` (it died: its next life starts at 1)."""
        for key in [k for k in self._last if k[0] == node]:
            del self._last[key]
