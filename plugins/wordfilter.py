"""Example plugin: mask or block configured words, through ``chatd_filter_message``.

Configure it in config.yaml::

    plugins:
      wordfilter:
        mask: [darn, heck]        # replaced by asterisks: "d**n"
        block: [spamlink.example] # the whole message is refused

Matching is case-insensitive and on whole words for ``mask``, substring for
``block``, and it sees through look-alikes: every character is compared by
how it reads (``chatd.skeleton``), so full-width ``ｄａｒｎ``, ``dаrn`` with a
Cyrillic a, ``d̈arn`` with a combining mark, ``spamIink`` with a capital i and
``spam1ink`` (a one) are the words they pass for.  (Character by character, so the
look-alike pairs of nicks -- ``rn`` for ``m`` -- are not applied: ``darn``
would hide ``dam``.)  The server has already removed invisible characters
(zero-width spaces, soft hyphens) that could split a word.

It filters every field a user writes: chat lines, actions, private messages,
topics, part and quit reasons and ``/away`` messages all pass
``chatd_filter_message``; a nick or a new room name with a blocked word in
it is refused (``chatd_check_nick``, ``chatd_check_join``).  The filter runs
before any delivery hook, so a blocked message reaches nobody, and a masked
one is delivered (and logged) masked.
"""

from __future__ import annotations

import re
from functools import lru_cache

from chatd import Client, Reject, Room, Server, StashKey, hookimpl, skeleton

PATTERNS = StashKey["tuple[re.Pattern[str] | None, tuple[str, ...]]"]()

#: How each ASCII character reads, both ways an upper-case I can (``l`` or ``i``):
#: one character each, so an ASCII text keeps its positions (the common case).
_ASCII = tuple(str.maketrans({chr(c): skeleton(chr(c).lower() if lower else chr(c))
                              for c in range(128)}) for lower in (False, True))


@lru_cache(maxsize=4096)
def _reads_as(char: str) -> tuple[str, str]:
    """How one character reads (``""`` for a combining mark, ``"fi"`` for a ligature),
    both ways an upper-case I can."""
    return skeleton(char), skeleton(char.lower())


def _readings(text: str) -> list[tuple[str, list[int] | None]]:
    """``text`` as it reads, twice (``I`` as ``l``, and as ``i``), each with where
    every character of the reading came from in ``text`` (None: the same place)."""
    if text.isascii():
        return [(text.translate(table), None) for table in _ASCII]
    readings: list[tuple[list[str], list[int]]] = [([], []), ([], [])]
    for index, char in enumerate(text):
        for (chars, where), read in zip(readings, _reads_as(char), strict=True):
            chars.append(read)
            where.extend([index] * len(read))
    return [("".join(chars), where) for chars, where in readings]


def _word_list(server: Server, key: str) -> tuple[str, ...]:
    value = server.plugin_config("wordfilter").get(key, ())
    if not isinstance(value, (list, tuple)) or not all(isinstance(w, str) and w for w in value):
        raise server.config.error(f"plugins.wordfilter.{key}", "expected a list of words")
    return tuple(_readings(w.lower())[1][0] for w in value)


@hookimpl
def chatd_startup(server: Server) -> None:
    section = server.plugin_config("wordfilter")
    unknown = set(section) - {"mask", "block"}
    if unknown:
        key = sorted(unknown)[0]
        raise server.config.error(
            f"plugins.wordfilter.{key}", "unknown setting (expected mask or block)"
        )
    masked = _word_list(server, "mask")
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, masked)) + r")\b") if masked else None
    server.stash[PATTERNS] = (pattern, _word_list(server, "block"))


def _blocked(server: Server, text: str) -> bool:
    _, blocked = server.stash.get(PATTERNS, (None, ()))
    return any(word in reading for reading, _ in _readings(text) for word in blocked)


def _masked(pattern: re.Pattern[str], text: str) -> str:
    """``text`` with every word ``pattern`` finds in either reading masked in place."""
    spans: list[tuple[int, int]] = []
    for reading, where in _readings(text):
        for match in pattern.finditer(reading):
            start, end = match.span()
            spans.append((start, end) if where is None else (where[start], where[end - 1] + 1))
    if not spans:
        return text
    out, done = [], 0
    for start, end in sorted(spans):
        start = max(start, done)  # the two readings may find the same word
        if start >= end:
            continue
        word = text[start:end]
        out += [text[done:start], word[0] + "*" * (len(word) - 2) + word[-1]
                if len(word) > 2 else "*" * len(word)]
        done = end
    out.append(text[done:])
    return "".join(out)


@hookimpl
def chatd_filter_message(client: Client, text: str) -> str | None:
    if _blocked(client.server, text):
        raise Reject("your message was not sent: it contains a blocked word", code="blocked")
    pattern, _ = client.server.stash.get(PATTERNS, (None, ()))
    if pattern is None:
        return None
    return _masked(pattern, text)


@hookimpl
def chatd_check_nick(client: Client, nick: str) -> str | None:
    if _blocked(client.server, nick):
        return f"the nick {nick} contains a blocked word"
    return None


@hookimpl
def chatd_check_join(client: Client, name: str, room: Room | None) -> str | None:
    if room is None and _blocked(client.server, name):
        return f"{name} contains a blocked word: no room may be called that"
    return None
