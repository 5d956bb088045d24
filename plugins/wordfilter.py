"""Example plugin: mask or block configured words, through ``chatd_filter_message``.

Configure it in config.yaml::

    plugins:
      wordfilter:
        mask: [darn, heck]        # replaced by asterisks: "d**n"
        block: [spamlink.example] # the whole message is refused

Matching is case-insensitive and on whole words for ``mask``, substring for
``block``; ``block`` matches on the look-alike skeleton (``chatd.skeleton``), so
``spamIink`` with a capital i or ``spaml1nk`` is blocked too, and the server
has already removed invisible characters (zero-width spaces, soft hyphens) that
could split a word.  The filter runs before any delivery hook, so a blocked
message reaches nobody, and a masked one is delivered (and logged) masked.
"""

from __future__ import annotations

import re

from chatd import Client, Reject, Server, StashKey, hookimpl, skeleton

PATTERNS = StashKey["tuple[re.Pattern[str] | None, tuple[str, ...]]"]()


def _word_list(server: Server, key: str) -> tuple[str, ...]:
    value = server.plugin_config("wordfilter").get(key, ())
    if not isinstance(value, (list, tuple)) or not all(isinstance(w, str) and w for w in value):
        raise server.config.error(f"plugins.wordfilter.{key}", "expected a list of words")
    return tuple(w.lower() for w in value)


def _blocked(server: Server) -> tuple[str, ...]:
    return tuple(skeleton(w) for w in _word_list(server, "block"))


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
    pattern = (
        re.compile(r"\b(" + "|".join(map(re.escape, masked)) + r")\b", re.IGNORECASE)
        if masked
        else None
    )
    server.stash[PATTERNS] = (pattern, _blocked(server))


def _mask(match: re.Match[str]) -> str:
    word = match.group(0)
    return word[0] + "*" * (len(word) - 2) + word[-1] if len(word) > 2 else "*" * len(word)


@hookimpl
def chatd_filter_message(client: Client, text: str) -> str | None:
    pattern, blocked = client.server.stash.get(PATTERNS, (None, ()))
    # Both readings: "spamIink" (a capital i) and "SPAMLINK" fold to the word.
    folded = (skeleton(text), skeleton(text.lower()))
    for word in blocked:
        if word in folded[0] or word in folded[1]:
            raise Reject("your message was not sent: it contains a blocked word")
    if pattern is None:
        return None
    return pattern.sub(_mask, text)
