"""The IRC message grammar, sans-IO: one line of text to a :class:`Message` and back.

IRC's wire format (RFC 1459/2812, as the "Modern IRC" documents and IRCv3's
message-tags specification describe it)::

    [@tags SPACE] [:source SPACE] command [SPACE params...] CRLF

* ``tags`` are ``key[=value]`` pairs separated by ``;``, their values escaped
  (``\\:`` for ``;``, ``\\s`` for a space, ``\\\\``, ``\\r``, ``\\n``); a key may
  carry a client-only ``+`` and a vendor prefix (``example.com/key``);
* ``command`` is letters, or three digits for a numeric reply;
* up to 15 ``params``: middle ones have no spaces and do not start with ``:``; the
  last may be a *trailing* one, introduced by ``:``, that holds anything but CR,
  LF and NUL.

The body (everything after the tags, CRLF included) is at most 512 bytes; tags
add at most 8191.  This module knows nothing of chatd: it parses what a client
sends (leniently where servers traditionally are: extra spaces between
parameters) and checks what chatd sends (``strict=True``: the exact grammar, which
the test suite applies to every line chatd writes on an IRC listener).  Encoding
refuses what cannot be written rather than writing something else: a parameter
with CR, LF or NUL, a middle parameter with a space, a command that is not one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: The body limit, CRLF included (RFC 1459 2.3).
BODY_MAX = 512
#: The tags limit, the leading ``@`` and the space after them included (IRCv3).
TAGS_MAX = 8191
#: Parameters a message may have (RFC 1459 2.3: 14 middle + 1 trailing).
PARAMS_MAX = 15

_COMMAND = re.compile(r"[A-Za-z]+|[0-9]{3}")
_TAG_KEY = re.compile(r"\+?(?:[A-Za-z0-9.-]+/)?[A-Za-z0-9-]+")
_FORBIDDEN = re.compile(r"[\r\n\0]")
_ESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_UNESCAPES = str.maketrans({";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"})


class WireError(ValueError):
    """A line that is not an IRC message, or a message that cannot be written: the
    text says what is wrong, for an ``ERROR``/numeric reply or a test's failure."""


@dataclass(frozen=True, slots=True)
class Message:
    """One IRC message.  ``command`` as written (numerics as three digits); ``source``
    without its ``:``; ``params`` with the trailing one (if any) last, unmarked."""

    command: str
    params: tuple[str, ...] = ()
    source: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        """The message as bytes, CRLF included; :class:`WireError` if it cannot be
        written as it is (never a silent change).  The length is not checked here:
        :func:`body_length` and the renderer decide how to split long text."""
        return format_message(self).encode("utf-8", "surrogateescape") + b"\r\n"


def format_message(message: Message) -> str:
    """The message as text, without the CRLF (see :meth:`Message.encode`)."""
    if not _COMMAND.fullmatch(message.command):
        raise WireError(f"not a command: {message.command!r}")
    if len(message.params) > PARAMS_MAX:
        raise WireError(f"{len(message.params)} parameters; at most {PARAMS_MAX}")
    parts: list[str] = []
    if message.tags:
        parts.append("@" + ";".join(_format_tag(k, v) for k, v in message.tags.items()))
    if message.source is not None:
        if not message.source or " " in message.source or _FORBIDDEN.search(message.source):
            raise WireError(f"not a source: {message.source!r}")
        parts.append(":" + message.source)
    parts.append(message.command)
    last = len(message.params) - 1
    for i, param in enumerate(message.params):
        if _FORBIDDEN.search(param):
            raise WireError(f"parameter {i + 1} holds CR, LF or NUL")
        if i == last and (not param or " " in param or param[0] == ":"):
            parts.append(":" + param)
        elif not param or " " in param or param[0] == ":":
            raise WireError(f"middle parameter {i + 1} is empty, has a space or starts "
                            f"with ':': {param!r}")
        else:
            parts.append(param)
    return " ".join(parts)


def _format_tag(key: str, value: str) -> str:
    if not _TAG_KEY.fullmatch(key):
        raise WireError(f"not a tag key: {key!r}")
    if "\0" in value:
        raise WireError(f"tag {key} holds NUL")
    return key if value == "" else f"{key}={value.translate(_UNESCAPES)}"


def parse(line: str, *, strict: bool = False) -> Message:
    """The message in ``line`` (without its line end).  :class:`WireError` says why a
    line is not one.  ``strict``: exactly one space between parts and nothing after
    the last parameter (what a server must send); otherwise runs of spaces are
    accepted between parts, as servers accept them from clients."""
    if _FORBIDDEN.search(line):
        raise WireError("the line holds CR, LF or NUL")
    rest = line
    tags: dict[str, str] = {}
    if rest.startswith("@"):
        raw, rest = _split_word(rest[1:], strict, "tags")
        tags = _parse_tags(raw)
    source = None
    if rest.startswith(":"):
        source, rest = _split_word(rest[1:], strict, "source")
        if not source:
            raise WireError("an empty source")
    command, rest = _split_word(rest, strict, "command", last_ok=True)
    if not _COMMAND.fullmatch(command):
        raise WireError(f"not a command: {command!r}")
    params: list[str] = []
    while rest:
        if rest.startswith(":"):
            params.append(rest[1:])
            break
        param, rest = _split_word(rest, strict, "parameter", last_ok=True)
        params.append(param)
    if len(params) > PARAMS_MAX:
        raise WireError(f"{len(params)} parameters; at most {PARAMS_MAX}")
    return Message(command.upper() if not strict else command, tuple(params), source, tags)


def _split_word(text: str, strict: bool, what: str, last_ok: bool = False) -> tuple[str, str]:
    """The next space-separated word of ``text`` and what follows it."""
    word, space, rest = text.partition(" ")
    if not strict:
        rest = rest.lstrip(" ")
    elif rest.startswith(" "):
        raise WireError(f"two spaces after the {what}")
    if not rest:
        if not last_ok:
            raise WireError(f"the line ends after the {what}")
        if space and strict:
            raise WireError("a space at the end of the line")
    return word, rest


def _parse_tags(raw: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    if not raw:
        raise WireError("an empty tag list")
    for item in raw.split(";"):
        if not item:
            continue  # ";;" or a trailing ";": tolerated by the specification
        key, _, value = item.partition("=")
        if not _TAG_KEY.fullmatch(key):
            raise WireError(f"not a tag key: {key!r}")
        tags[key] = unescape_tag_value(value)
    return tags


def unescape_tag_value(value: str) -> str:
    """A tag value as meant: IRCv3's escapes undone (an unknown ``\\x`` is ``x``, a
    lone trailing ``\\`` is dropped)."""
    if "\\" not in value:
        return value
    out: list[str] = []
    chars = iter(value)
    for c in chars:
        if c != "\\":
            out.append(c)
            continue
        nxt = next(chars, None)
        if nxt is not None:
            out.append(_ESCAPES.get(nxt, nxt))
    return "".join(out)


def body_length(message: Message) -> int:
    """Bytes of the message without its tags, CRLF included: at most :data:`BODY_MAX`."""
    without = Message(message.command, message.params, message.source)
    return len(without.encode())


def tags_length(message: Message) -> int:
    """Bytes of the tags with their ``@`` and the space after them (0 without tags)."""
    if not message.tags:
        return 0
    return len(format_message(Message("X", (), None, message.tags)).encode()) - 1


__all__ = [
    "BODY_MAX",
    "PARAMS_MAX",
    "TAGS_MAX",
    "Message",
    "WireError",
    "body_length",
    "format_message",
    "parse",
    "tags_length",
    "unescape_tag_value",
]
