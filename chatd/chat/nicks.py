"""Nick rules: what a name may look like, and how names compare.

The defaults follow RFC 2812 style (and ergo's ``casemapping: ascii``): ASCII
letters, digits and the specials ``_ - [ ] \\ ^ { } | ` ``, not starting with a
digit or ``-``, at most 32 bytes, compared case-insensitively.  Nothing that
can look like a prefix (``<``, ``*``, ``!``, ``#``) or whitespace is allowed, so
one user cannot pose as a server notice or another user (RELIABILITY X3).
"""

from __future__ import annotations

import re

from ..delivery import nick_key
from ..framing import skeleton

_NICK = re.compile(r"[A-Za-z_\[\]\\^{}|`][A-Za-z0-9_\-\[\]\\^{}|`]*\Z")

#: Names nobody may take, in any protocol, nor any nick that looks the same (its
#: skeleton): they would read as the server speaking, or are IRC's service nicks
#: (``NickServ``, ``ChanServ``: an IRC client's ``/msg NickServ IDENTIFY pw`` is
#: answered by the server; a user holding the name would read every password sent
#: to it by a line or jsonl client's ``/msg``).
RESERVED = frozenset({"server", "system", "chatd", "admin", "root", "operator", "nickserv",
                      "chanserv"})
_RESERVED_LOOKS = frozenset(skeleton(name) for name in RESERVED)

GUEST_PREFIX = "guest-"

__all__ = ["GUEST_PREFIX", "RESERVED", "nick_key", "nick_problem"]


def nick_problem(nick: str, max_bytes: int = 32) -> str | None:
    """Why ``nick`` is not acceptable, or ``None`` if it is."""
    if not nick:
        return "a nick cannot be empty"
    if len(nick.encode("utf-8")) > max_bytes:
        return f"a nick is at most {max_bytes} bytes"
    if not _NICK.match(nick):
        if nick[0].isdigit() or nick[0] == "-":
            return "a nick cannot start with a digit or '-'"
        return "a nick may use only ASCII letters, digits and _-[]\\^{}|`"
    if nick.startswith("[") and nick.endswith("]"):  # "*** [mentions] quit (...)"
        return ("a nick cannot be written in brackets: *** [name] marks the lines of the "
                "plugin name")
    if nick_key(nick) in RESERVED or skeleton(nick) in _RESERVED_LOOKS:
        return f"the nick {nick!r} is reserved"
    if nick_key(nick).startswith(GUEST_PREFIX):
        return f"nicks starting with {GUEST_PREFIX!r} are given out by the server"
    return None
