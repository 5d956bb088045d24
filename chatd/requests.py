"""Requests: what a client asks for, as a protocol parsed it (protocols -> chat domain).

A protocol turns bytes into a list of requests and hands them to the chat
domain, which never sees bytes.  To keep the hot path cheap the commonest
request, a chat line for the current room, is a plain ``str``; the others are
small frozen objects:

``str`` (or its subclass :class:`~chatd.framing.CleanedLine`)
    A chat message for the client's current room (the line protocol's plain
    line, after the ``//`` escape was undone).  Empty or blank: ignored.
:class:`Invoke`
    A command: ``/name args`` on the line protocol, ``{"cmd": ...}`` in JSON.
:class:`Say`
    A chat message or action for a named room (protocols that can address one).
:class:`~chatd.framing.LineTooLong`
    A line over ``limits.max_line_bytes`` was dropped; the client is told.
:class:`Malformed`
    Input the protocol could not make sense of or refuses (jsonl: not JSON, not
    UTF-8, a value that is not well-formed text or has the wrong type); the
    client is told why.

``tag`` (where present) is an identifier the client chose for the request; a
protocol that supports it echoes it on the replies (jsonl's ``"re"``).
"""

from __future__ import annotations

from dataclasses import dataclass

from .framing import LineTooLong


@dataclass(frozen=True, slots=True)
class Invoke:
    """Run the command ``name`` (lowercase, no ``/``) with the argument text ``args``."""

    name: str
    args: str
    #: The sanitiser had to remove control characters from the line (see Command.exact_args).
    cleaned: bool = False
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class Say:
    """A chat message (or, with ``action``, an action) for ``room`` (None: the current room)."""

    text: str
    room: str | None = None
    action: bool = False
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class Malformed:
    """Input that is not a request; ``reason`` is shown to the client as an error."""

    reason: str
    tag: str | None = None


Request = str | Invoke | Say | Malformed | LineTooLong


def request_size(item: Request) -> int:
    """The size a request is billed for by the flood limit (characters of text)."""
    if isinstance(item, str):  # a CleanedLine too
        return len(item)
    cls = item.__class__
    if cls is Invoke:
        return len(item.name) + len(item.args) + 2  # type: ignore[union-attr]
    if cls is Say:
        return len(item.text)  # type: ignore[union-attr]
    return 0


__all__ = ["Invoke", "LineTooLong", "Malformed", "Request", "Say", "request_size"]
