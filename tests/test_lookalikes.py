"""Look-alike text: ``chatd.skeleton`` beyond ASCII, and the word filter that uses it.

In-process: the skeleton (a pure function) and the example word filter's
readings and in-place masking.  The filter on a real server, field by field, is
in ``tests/test_examples.py``; masks and rooms in ``tests/test_moderation.py``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from chatd import skeleton
from chatd.testing import InProcessChat

_SPEC = importlib.util.spec_from_file_location(
    "wordfilter_under_test", Path(__file__).resolve().parent.parent / "plugins" / "wordfilter.py")
assert _SPEC is not None and _SPEC.loader is not None
wordfilter = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(wordfilter)


@pytest.mark.parametrize("text", [
    "spam",
    "ｓｐａｍ",              # full width (NFKC)
    "ＳＰＡＭ",
    "\u0455\u0440\u0430m",  # Cyrillic dze, er, a
    "sp\u0430m",            # a Cyrillic a
    "spαm",                 # a Greek alpha
    "s\u0308pa\u0301m",     # combining marks
    "𝐬𝐩𝐚𝐦",                  # mathematical bold
    "spⓐm",                 # a circled letter
])
def test_look_alike_text_has_the_skeleton_of_what_it_reads_as(text):
    assert skeleton(text) == "spam"


def test_ascii_keeps_its_fast_path_and_its_rules():
    """Nicks and room names are ASCII: their skeletons are what they always were."""
    assert skeleton("aIice") == skeleton("alice") == "alice"
    assert skeleton("rnallory") == "mallory" and skeleton("r00t") == "root"
    assert skeleton("#Iobby") == skeleton("#l0bby") == "#lobby"
    assert skeleton("ALICE") == "allce"  # case is the nick key's business (both are checked)
    # ...and the non-ASCII path ends in the same rules: a Cyrillic I reads as a capital i.
    assert skeleton("a\u0406ice") == skeleton("aIice")


def test_text_that_reads_differently_keeps_a_different_skeleton():
    assert skeleton("日本語") == "日本語"
    assert skeleton("привет") != skeleton("spam")
    assert skeleton("ß") == "ß" and skeleton("e") != skeleton("ε")


# -- the word filter, in-process ----------------------------------------------------------


@pytest.fixture
def chat():
    with InProcessChat(wordfilter, plugins={"wordfilter": {
        "mask": ["darn", "heck"], "block": ["spamlink.example", "badword"],
    }}) as chat:
        yield chat


def _said(chat, text: str) -> tuple[list[str], list[str]]:
    alice, bob = chat.peers[0], chat.peers[1]
    alice.send(text)
    chat.tick()
    return alice.lines(), bob.lines()


@pytest.mark.parametrize(("text", "seen"), [
    ("darn it", "d**n it"),
    ("DARN it, Darn!", "D**N it, D**n!"),
    ("ｄａｒｎ it", "ｄ**ｎ it"),                     # full width: masked where it stands
    ("d\u0430rn it", "d**n it"),                    # a Cyrillic a
    ("d\u0308arn it", "d***n it"),                  # a combining mark inside the word
    ("oh HЕCK", "oh H**K"),                         # a Cyrillic capital E
    ("darning socks is darnable", "darning socks is darnable"),  # whole words only
    ("the dam held", "the dam held"),               # no rn/m pairs in running text
])
def test_masked_words_are_masked_in_any_look_alike_form(chat, text, seen):
    chat.connect(), chat.connect()
    for peer in chat.peers:
        peer.lines()
    assert _said(chat, text) == ([], [f"<guest-1> {seen}"])


@pytest.mark.parametrize("text", [
    "see spamlink.example", "SPAMLINK.EXAMPLE", "spamIink.example", "spam1ink.example",
    "ｓｐａｍｌｉｎｋ．ｅｘａｍｐｌｅ", "sp\u0430mlink.ex\u0430mple", "spamli\u0301nk.example",
])
def test_blocked_words_are_blocked_in_any_look_alike_form(chat, text):
    chat.connect(), chat.connect()
    for peer in chat.peers:
        peer.lines()
    assert _said(chat, text) == (
        ["! your message was not sent: it contains a blocked word"], [])


def test_a_nick_or_a_new_room_with_a_blocked_word_is_refused(chat):
    alice = chat.connect()
    alice.lines()
    alice.send("/nick xBADW0RDx")
    alice.send("/join #badword")
    alice.send("/join #BADW0RD")
    chat.tick()
    assert alice.lines() == [
        "! the nick xBADW0RDx contains a blocked word",
        "! #badword contains a blocked word: no room may be called that",
        "! #BADW0RD contains a blocked word: no room may be called that",
    ]
