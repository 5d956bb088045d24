"""Ban and mute masks: ``nick!account@address`` globs, matched in time linear in the name.

A mask is three globs, one per part: ``*`` stands for any run of characters,
``?`` for one, everything else for itself (``[`` included: it is a nick
character, not a class).  The *moderation* plugin matches every ban and mute
of a room against a client on each join, nick change and identification, on
the loop: a pattern someone types must never be able to stall it.

Why not a regular expression: the old translation (``*`` -> ``.*``) made
``*a*a*a...`` (a few hundred stars, one line) explore every way of placing
the ``a``'s in a 32-character nick -- billions of steps, with every other
client waiting.  A glob needs no backtracking at all.  Split on ``*``, it is
fixed-length segments: the first must match at the start of the name, the
last at its end, and each one between is placed at its *leftmost* match after
the one before.  Leftmost is always safe (the classic greedy wildcard argument):
a later placement leaves less room for the rest and gains nothing, since a
``*`` absorbs whatever lies between.  So each segment is searched for once,
left to right: O(len(name) x len(mask)) at the very worst, and masks are
bounded (:data:`MASK_MAX`), so linear in the name.  Runs of ``*`` collapse.

Look-alikes: the nick and account parts match ignoring case *and* look-alikes,
as nicks are unique (``chatd.skeleton``): a ban on ``alice`` covers ``ALICE``,
``aIice`` (a capital i) and ``a1ice``, and a mask typed as ``aIice`` covers the
one ``alice`` it looks like.  Addresses are compared ignoring case only (a
skeleton would fold hex digits of IPv6 addresses together).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from chatd import Client, skeleton
from chatd.chat.nicks import nick_key

#: The longest mask accepted, in characters.  A nick and an account are at most
#: 32 bytes and an address at most 45 characters: nothing longer can be needed.
MASK_MAX = 128

_STARS = re.compile(r"\*{2,}")


class Glob:
    """One compiled glob (``*`` and ``?``); :meth:`match` is linear in the name."""

    __slots__ = ("_head", "_middle", "_minimum", "_starred", "_tail", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        parts = text.split("*")
        self._starred = len(parts) > 1
        self._head = _Segment(parts[0])
        self._tail = _Segment(parts[-1] if self._starred else "")
        # Empty segments come from runs of stars: ``a**b`` is ``a*b``.
        self._middle = tuple(_Segment(p) for p in parts[1:-1] if p)
        self._minimum = sum(len(p) for p in parts)

    def match(self, name: str) -> bool:
        """Whether the whole of ``name`` matches."""
        head = self._head
        if not self._starred:
            return len(name) == len(head.text) and head.at(name, 0)
        if len(name) < self._minimum:  # also keeps the head and the tail apart
            return False
        end = len(name) - len(self._tail.text)
        if not head.at(name, 0) or not self._tail.at(name, end):
            return False
        position = len(head.text)
        for segment in self._middle:  # each searched for once, leftmost first
            found = segment.find(name, position, end)
            if found < 0:
                return False
            position = found + len(segment.text)
        return True

    def __repr__(self) -> str:
        return f"Glob({self.text!r})"


class _Segment:
    """A run of a glob between stars: literal characters and ``?``."""

    __slots__ = ("_anchor", "_offset", "text", "wild")

    def __init__(self, text: str) -> None:
        self.text = text
        self.wild = "?" in text
        # The longest literal run anchors the search for a segment with ``?`` in it.
        runs = [(len(run.group()), run.start()) for run in re.finditer(r"[^?]+", text)]
        length, self._offset = max(runs) if runs else (0, 0)
        self._anchor = text[self._offset:self._offset + length]

    def at(self, name: str, position: int) -> bool:
        """Whether the segment matches ``name`` at ``position``."""
        if not self.wild:
            return name.startswith(self.text, position)
        text = self.text
        window = name[position:position + len(text)]  # a copy as long as the segment
        return len(window) == len(text) and all(p == "?" or p == c
                                                for p, c in zip(text, window, strict=True))

    def find(self, name: str, start: int, end: int) -> int:
        """The leftmost position >= ``start`` where the segment matches and ends by
        ``end``, or -1."""
        if not self.wild:
            return name.find(self.text, start, end)
        last = end - len(self.text)  # the last position it may start at
        if not self._anchor:  # all ``?``: any position with room for it
            return start if start <= last else -1
        offset, anchor = self._offset, self._anchor
        position = start
        while position <= last:
            found = name.find(anchor, position + offset, last + offset + len(anchor))
            if found < 0:
                return -1
            position = found - offset
            if self.at(name, position):
                return position
            position += 1
        return -1


def _looks(text: str) -> tuple[str, str, str]:
    """The three forms a name is compared in: ignoring case, ignoring look-alikes (the
    skeleton reads ``I`` as ``l`` before lowercasing), and both (``A1ICE``)."""
    lower = nick_key(text)
    return lower, skeleton(text), skeleton(lower)


def same_name(one: str, other: str) -> bool:
    """Whether two nicks are one name: the same ignoring case or look-alikes, as the
    nick table has it (``alice``, ``ALICE``, ``aIice`` and ``a1ice`` are one)."""
    return any(a == b for a, b in zip(_looks(one), _looks(other), strict=True))


class _LookAlikeGlob:
    """A glob for a nick or an account: matches a name in any of its three forms."""

    __slots__ = ("_globs", "any")

    def __init__(self, text: str) -> None:
        self.any = text == "*"
        self._globs = tuple(Glob(form) for form in _looks(text))

    def match(self, forms: tuple[str, str, str]) -> bool:
        return self.any or any(g.match(f) for g, f in zip(self._globs, forms, strict=True))


@dataclass(frozen=True)
class Identity:
    """What masks are matched against: a client's nick, account and address."""

    nick: tuple[str, str, str]
    account: tuple[str, str, str]
    address: str

    @classmethod
    def of(cls, client: Client) -> Identity:
        return cls.named(client.nick, client.account or "", client.address)

    @classmethod
    def named(cls, nick: str, account: str, address: str) -> Identity:
        return cls(_looks(nick), _looks(account), address.lower())

    def __str__(self) -> str:
        return f"{self.nick[0]}!{self.account[0]}@{self.address}"


class MaskError(ValueError):
    """Text that is not a mask; the message says why."""


class Mask:
    """A parsed ``nick!account@address`` mask."""

    __slots__ = ("_account", "_address", "_nick", "account", "nick", "text")

    def __init__(self, text: str) -> None:
        if len(text) > MASK_MAX:
            raise MaskError(f"a mask is at most {MASK_MAX} characters")
        if not text.isascii():
            raise MaskError(f"not a mask: {text} (nicks and addresses are ASCII)")
        text = _STARS.sub("*", text)
        if text.count("!") != 1 or text.count("@") != 1 or text.index("!") > text.index("@") \
                or any(c.isspace() for c in text):
            raise MaskError(f"not a mask: {text} (nick!account@address, with * and ?)")
        nick, _, rest = text.partition("!")
        account, _, address = rest.partition("@")
        if not nick or not account or not address:
            raise MaskError(f"not a mask: {text} (an empty part is written *)")
        #: The mask as given (runs of stars collapsed); ``key`` is how masks are told apart.
        self.text = text
        self.nick, self.account = nick, account
        self._nick = _LookAlikeGlob(nick)
        self._account = _LookAlikeGlob(account)
        self._address = Glob(address.lower())

    @property
    def key(self) -> str:
        """Masks that differ only in case are one mask."""
        return self.text.lower()

    def covers(self, who: Identity) -> bool:
        """Whether the mask matches ``who`` (look-alike nicks and accounts included)."""
        return (self._nick.match(who.nick) and self._account.match(who.account)
                and self._address.match(who.address))

    def covers_account(self, account: str) -> bool:
        """Whether the mask names ``account`` (someone not connected): its nick or its
        account part, not a star, matches it, and the other part does not exclude it.
        Address masks (``*!*@...``) name nobody's account."""
        if self._nick.any and self._account.any:
            return False
        forms = _looks(account)
        return self._nick.match(forms) and self._account.match(forms)

    def __repr__(self) -> str:
        return f"Mask({self.text!r})"
