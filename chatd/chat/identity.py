"""Who a client is beyond this process: the node, ``user@host``, the session, numbers.

An event can leave the process (history, another node of a cluster), so its
source says which node it comes from and who the client is there
(:class:`~chatd.events.Source`).  This module holds the node's identity
settings, fixed at start (``server.node_id``, ``node_number``, ``node_count``,
``cloak_addresses``, ``cloak_key``; a reload keeps the running ones), and makes:

* client sources: ``ident`` is the protocol's user name, or the nick the client
  connected with; ``host`` its address, or a cloak of it;
* the guest numbers (``guest-N``) and the event id counter, spread over the node
  numbers so that two nodes never hand out the same (see :mod:`chatd.events`,
  "Event ids").

Cloaks are ``HMAC-SHA256(cloak_key, address)``, 48 bits in hex, with ``.cloak``:
the same address always reads the same (for as long as the key is the same: set
``cloak_key`` for cloaks that survive a restart and agree across nodes), and the
address cannot be found by hashing every IPv4 address without the key.
Operators see the real address (``client.address``).

Memory: a client's source shares its strings.  ``ident`` is the very nick string
it connected with, and cloaks are cached by address (:data:`CLOAK_CACHE`), so
ten thousand idle connections from one address hold one cloak; ``user`` and
``session`` are computed when asked.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import itertools
import secrets
import unicodedata
from typing import TYPE_CHECKING

from ..events import Source, first_event_id, next_event_id
from ..framing import sanitize

if TYPE_CHECKING:
    from ..config import ServerConfig

#: Addresses whose cloak is remembered (the most recent ones).
CLOAK_CACHE = 4096


class Identity:
    """This node's identity: its id and number, and the sources and numbers it makes."""

    __slots__ = ("_guests", "_key", "cloaking", "host_of", "node", "node_count", "node_number")

    def __init__(self, settings: ServerConfig) -> None:
        #: The node id (``server.node_id``, or the host name).
        self.node = settings.node()
        self.node_number = settings.node_number
        self.node_count = settings.node_count
        self.cloaking = settings.cloak_addresses
        key = settings.cloak_key
        self._key = key.encode("utf-8") if key is not None else secrets.token_bytes(32)
        self._guests = itertools.count(self.node_number + 1, self.node_count)
        #: ``host_of(address)``: what others see of an address (its cloak, or itself).
        self.host_of = (functools.lru_cache(maxsize=CLOAK_CACHE)(self.cloak)
                        if self.cloaking else _same)

    def cloak(self, address: str) -> str:
        """The cloak of ``address`` (see the module docstring)."""
        digest = hmac.new(self._key, address.encode("utf-8", "surrogateescape"),
                          hashlib.sha256).hexdigest()
        return f"{digest[:12]}.cloak"

    def client_source(self, nick: str, client_id: int, address: str,
                      ident: str | None = None) -> Source:
        """The source of a client connecting now as ``nick`` from ``address``; ``ident``:
        the user name its protocol learned, if any (else the nick)."""
        return Source(nick, client_id, None, None, self.node,
                      nick if ident is None else ident, self.host_of(address))

    def server_source(self, name: str, plugin: str | None, marker: str | None) -> Source:
        """The server (``name``) as a source, on this node."""
        return Source(name, None, plugin, marker, self.node)

    def next_guest_number(self) -> int:
        """The next ``N`` of ``guest-N``: this node's numbers, ``node_number + 1``
        modulo ``node_count`` (1, 2, 3... on a single server)."""
        return next(self._guests)

    def event_ids(self, following: int | None = None, after: int = -1) -> itertools.count[int]:
        """This node's event ids: from its clock, or from ``following`` (the next id a
        running counter would give), and in either case above ``after``."""
        start = first_event_id(self.node_number, self.node_count) if following is None \
            else following
        return itertools.count(max(start, next_event_id(after, self.node_number,
                                                        self.node_count)), self.node_count)


#: The longest ident kept (IRC servers use 9 to 16; 32 leaves room for real names of
#: accounts without letting a client fill every WHO line with its own text).
IDENT_MAX = 32


def clean_ident(user: str | None) -> str | None:
    """The ident a protocol's user name may become, or None (then the nick is used).

    The ident is the left half of ``user@host``, shown to everyone in ``/whois``, WHO
    lines and IRC prefixes, so a client must not be able to forge with it: spaces
    (a second field), ``@`` and ``!`` (a second ``user@host``), ``:`` and ``*`` (IRC
    syntax, masks), control, format and invisible characters are dropped, and it is
    cut to :data:`IDENT_MAX` characters.  IRC's ``USER alice 0 * :Alice`` gives
    ``alice``; ``USER "a b@evil" ...`` gives ``abevil``.
    """
    if user is None:
        return None
    kept = "".join(c for c in user if c.isprintable() and not c.isspace()
                   and c not in "@!:*," and not _invisible(c))[:IDENT_MAX]
    return kept or None


#: The longest real name kept, in characters (IRC servers keep 50 to 128; the real name
#: is shown in every WHO line and JOIN of extended-join, so it stays short).
REALNAME_MAX = 64


def realname_problem(name: str) -> str | None:
    """Why ``name`` cannot be a real name, or None if it can.

    A real name is shown to others (``/whois``, IRC's WHO, ``JOIN`` with
    extended-join, ``SETNAME``), so like a nick it may not hold what could change
    how a line reads: control characters (IRC formatting codes included), format and
    invisible characters (bidi overrides, zero-width joiners), lone surrogates, runs
    of combining marks; and it is at most :data:`REALNAME_MAX` characters, not blank,
    with no space at either end.  Letters of every script are fine (``José Müller``).
    Refused, never cleaned: the client is told why and may send another.
    """
    if not name.strip():
        return "a real name cannot be empty"
    if len(name) > REALNAME_MAX:
        return f"a real name is at most {REALNAME_MAX} characters"
    if name != name.strip():
        return "a real name cannot start or end with a space"
    if not (name.isascii() and name.isprintable()) and (
            sanitize(name) != name or any(_hidden(c) for c in name)):
        return ("a real name cannot hold control, formatting or invisible characters "
                "(colour codes included)")
    return None


def _hidden(c: str) -> bool:
    """A character a real name may not hold beyond what :func:`sanitize` removes: one
    that prints as nothing or is no text (ZWJ and ZWNJ, which :func:`sanitize` keeps
    only where a script or an emoji needs them, are fine)."""
    if c in "\u200c\u200d ":
        return False
    return not c.isprintable() or unicodedata.category(c) in ("Co", "Cn")


def _invisible(c: str) -> bool:
    """Format characters (bidi overrides, zero-width joiners...): they print as nothing."""
    return unicodedata.category(c) in ("Cf", "Co", "Cn")


def _same(address: str) -> str:
    return address


__all__ = ["CLOAK_CACHE", "IDENT_MAX", "REALNAME_MAX", "Identity", "clean_ident",
           "realname_problem"]
