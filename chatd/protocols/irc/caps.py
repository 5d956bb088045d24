"""IRCv3 capabilities: what chatd offers an IRC client, and ``CAP`` negotiation (sans-IO).

A connection's capabilities are a ``frozenset`` of names: the renderer is chosen
per set (``render.renderer_for(caps, server_name)``), so a room of IRC clients
with the same capabilities renders each event once.

``CAP REQ`` is all or nothing (IRCv3 capability negotiation): every name asked for
must be offered, or none changes and the answer is ``NAK``.  ``-name`` disables.
``cap-notify`` is on for every client that asked ``CAP LS 302`` (the specification
says so) and cannot be disabled by it.

Offered: the capabilities whose meaning the renderer and the protocol carry
out; ``sasl`` (PLAIN, against chatd's registered nicks) is on the registration's
side and changes no rendering.  ``batch`` (history in ``chathistory`` batches,
several answers to a labelled request in a ``labeled-response`` batch),
``draft/chathistory`` (``CHATHISTORY``, and no replay on joining) and
``labeled-response`` (the protocol gathers each labelled request's answer).
"""

from __future__ import annotations

from collections.abc import Iterable

#: The capabilities offered, with their value (``CAP LS 302`` shows ``name=value``).
OFFERED: dict[str, str] = {
    "account-tag": "",
    "account-notify": "",
    "away-notify": "",
    "batch": "",
    "cap-notify": "",
    "draft/chathistory": "",
    "echo-message": "",
    "extended-join": "",
    "invite-notify": "",
    "labeled-response": "",
    "message-tags": "",
    "multi-prefix": "",
    "sasl": "PLAIN",
    "server-time": "",
    "setname": "",
    "userhost-in-names": "",
}

#: Capabilities a client cannot switch off once it has them (cap-notify with 302).
STICKY = frozenset({"cap-notify"})

#: Bytes of the capability list in one ``CAP LS``/``LIST`` line (the rest of the line's 512
#: holds the source, the command, the nick and the ``*`` of a continuation).
LINE_BUDGET = 380

NONE: frozenset[str] = frozenset()
#: Capabilities that change nothing a renderer writes (registration's own).
NOT_RENDERED = frozenset({"sasl"})


def rendered(caps: frozenset[str]) -> frozenset[str]:
    """The part of ``caps`` that picks the renderer: clients that differ only in
    ``sasl`` share one (each event rendered once for both)."""
    return caps - NOT_RENDERED if "sasl" in caps else caps


def advertised(version: int) -> list[str]:
    """The names ``CAP LS`` shows: with ``302``, values too (``name=value`` where there
    is one)."""
    if version >= 302:
        return [name if not value else f"{name}={value}" for name, value in OFFERED.items()]
    return list(OFFERED)


def chunks(names: Iterable[str], budget: int = LINE_BUDGET) -> list[str]:
    """``names`` joined by spaces in pieces of at most ``budget`` bytes (one per line of
    a multi-line ``CAP LS 302`` reply); one empty piece for no names."""
    out: list[str] = []
    current = ""
    for name in names:
        joined = f"{current} {name}" if current else name
        if current and len(joined.encode()) > budget:
            out.append(current)
            current = name
        else:
            current = joined
    out.append(current)
    return out


def request(current: frozenset[str], asked: str) -> frozenset[str] | None:
    """The capability set after ``CAP REQ :asked``, or None to refuse it (``NAK``): an
    empty request, a name not offered, or disabling a sticky one."""
    words = asked.split()
    if not words:
        return None
    enable: set[str] = set()
    disable: set[str] = set()
    for word in words:
        off = word.startswith("-")
        name = word[1:] if off else word
        if name not in OFFERED or (off and name in STICKY and name in current):
            return None
        (disable if off else enable).add(name)
    if enable & disable:
        return None
    return frozenset((current - disable) | enable)


__all__ = ["LINE_BUDGET", "NONE", "NOT_RENDERED", "OFFERED", "STICKY", "advertised", "chunks",
           "rendered", "request"]
