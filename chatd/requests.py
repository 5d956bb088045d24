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
:class:`Answer`
    Bytes the protocol answers its own client with, written when the domain reaches
    them, in order with the answers to the requests before them (IRC's ``PONG``:
    clients send ``PING`` as a fence after their commands).

``tag`` (where present) is an identifier the client chose for the request; a
protocol that supports it echoes it on the replies (jsonl's ``"re"``).

Before any of these, a protocol asks for a chat session to begin
(:class:`SessionRequest`): what it learned before the connection became a user
(IRC's registration, a listener password, nothing at all for ``line`` and
``jsonl``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .framing import LineTooLong


@dataclass(frozen=True, slots=True)
class Invoke:
    """Run the command ``name`` (lowercase, no ``/``) with the argument text ``args``."""

    name: str
    args: str
    #: The sanitiser had to remove control characters from the line (see Command.exact_args).
    cleaned: bool = False
    tag: str | None = None
    #: Errors this request causes are not told to the client (see :class:`Say`).
    quiet: bool = False


@dataclass(frozen=True, slots=True)
class Say:
    """A chat message (or, with ``action``, an action; with ``notice``, a user's notice)
    for ``room`` (None: the current room).

    ``quiet``: errors the request causes (not in the room, muted, a filter's refusal)
    are not told to the client: IRC's ``NOTICE``, which RFC 2812 (3.3.2) says is never
    answered automatically, by a server either.
    """

    text: str
    room: str | None = None
    action: bool = False
    tag: str | None = None
    notice: bool = False
    quiet: bool = False


@dataclass(frozen=True, slots=True)
class Answer:
    """Bytes for the client itself, from its own protocol (already encoded): written
    in order, after whatever the requests before it made the server say (a command's
    replies), even when those waited (the flood gate, a presence question)."""

    payload: bytes
    #: The request this answers is tagged (IRC's ``@label`` on a ``PING``): the answer is
    #: delivered as that request's reply.
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class Malformed:
    """Input that is not a request; ``reason`` is shown to the client as an error."""

    reason: str
    tag: str | None = None


Request = str | Invoke | Say | Malformed | LineTooLong | Answer


@dataclass(frozen=True, slots=True)
class SessionRequest:
    """What a protocol learned before its connection became a user, handed over when it
    asks for the chat session to begin (see :mod:`chatd.protocols.base`, "Sessions").

    Every field is optional: ``line`` and ``jsonl`` know nothing about the person yet
    (a guest nick, the nick as ident); IRC's registration knows a nick, a user name and
    a real name; an authenticated handshake (SASL) knows the account.
    """

    #: The nick wished for; if it is invalid, refused (``chatd_check_nick``) or taken, the
    #: session begins with a guest nick and the client is told why.
    nick: str | None = None
    #: The protocol's user name (IRC's ``USER``): the ident of ``user@host``; None: the
    #: nick the session begins with.
    user: str | None = None
    #: The protocol's real name (IRC's ``USER`` last field): kept as the client's
    #: ``source.realname`` if :func:`chatd.chat.identity.realname_problem` allows it,
    #: else not kept and the client told why once its session began.
    realname: str | None = None
    #: The account the protocol authenticated (SASL), or None: the client is identified
    #: as it from the start.
    account: str | None = None
    #: The listener password the client gave (``listen[].password``), or None.  Checked
    #: by the listener's door, in constant time; never logged, never kept.
    password: str | None = field(default=None, repr=False)
    #: The session begins as :attr:`nick` or not at all (IRC's registration: a client
    #: asked for a nick and must be told ``433``/``432``, not given a guest nick).  If
    #: the nick is invalid, refused or taken, the chat domain makes nobody of the
    #: connection (no hook runs, no presence) and tells the protocol
    #: (:meth:`~chatd.protocols.base.ChatProtocol.session_refused`), which may ask again.
    nick_required: bool = False


def request_size(item: Request) -> int:
    """The size a request is billed for by the flood limit (characters of text)."""
    if isinstance(item, str):  # a CleanedLine too
        return len(item)
    cls = item.__class__
    if cls is Invoke:
        return len(item.name) + len(item.args) + 2  # type: ignore[union-attr]
    if cls is Say:
        return len(item.text)  # type: ignore[union-attr]
    if cls is Answer:
        return len(item.payload)  # type: ignore[union-attr]  # a PING flood is a flood
    return 0


__all__ = ["Answer", "Invoke", "LineTooLong", "Malformed", "Request", "Say", "SessionRequest",
           "request_size"]
