"""Ban and mute masks (``chatd.builtin.masks``), in-process.

The glob matcher means what ``fnmatch`` means by ``*`` and ``?`` (and nothing by
``[``), checked on random masks; it searches for each segment of a mask once,
whatever the mask (counted, not timed); nicks and accounts match look-alikes.
The end-to-end check that a hostile mask cannot stall the server is in
``tests/test_moderation.py``.
"""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatd.builtin.masks import MASK_MAX, Glob, Identity, Mask, MaskError, same_name

# -- the glob: what it matches -------------------------------------------------------------

masks = st.text(alphabet="ab?*", max_size=12)
names = st.text(alphabet="ab?*", max_size=14)


@settings(max_examples=3000, deadline=None)
@given(masks, names)
def test_a_glob_matches_exactly_what_fnmatch_does(mask, name):
    """Without ``[`` (a class to fnmatch, a nick character to us) the two agree."""
    assert Glob(mask).match(name) == fnmatch.fnmatchcase(name, mask)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ab", min_size=1, max_size=5), st.text(alphabet="ab", max_size=40))
def test_a_glob_finds_a_segment_anywhere_between_stars(segment, name):
    assert Glob(f"*{segment}*").match(name) == (segment in name)


def test_brackets_and_other_characters_are_themselves():
    assert Glob("[bot]*").match("[bot]7")
    assert not Glob("[bot]*").match("b")
    assert Glob("a?c").match("a?c") and Glob("a?c").match("abc")
    assert not Glob("a?c").match("ac")
    assert Glob("").match("") and not Glob("").match("a")
    assert Glob("***").match("") and Glob("a**b").match("ab")


# -- the glob: what it costs -------------------------------------------------------------


class CountingName(str):
    """A name that counts the searches made in it and the characters they cover, and
    stops a matcher that searches more than ``budget`` times (one that backtracks
    would go on for longer than anyone can wait)."""

    def __new__(cls, text: str, budget: int = 10_000) -> CountingName:
        name = super().__new__(cls, text)
        name.searches = 0
        name.scanned = 0
        name.budget = budget
        return name

    def find(self, sub, start=0, end=None):  # type: ignore[override]
        end = len(self) if end is None else end
        self.searches += 1
        if self.searches > self.budget:
            raise AssertionError(f"more than {self.budget} searches: the matcher backtracks")
        found = super().find(sub, start, end)
        self.scanned += (found + len(sub) if found >= 0 else end) - start
        return found

    def startswith(self, prefix, start=0, end=None):  # type: ignore[override]
        self.searches += 1
        self.scanned += len(prefix)
        return super().startswith(prefix, start) if end is None else \
            super().startswith(prefix, start, end)


@pytest.mark.parametrize("mask", [
    "*a" * 200,                      # the mask that froze the server through a regex
    "*a" * 200 + "b",
    "*" + "a*" * 100 + "c",
    "a" + "*ab" * 60 + "*",
    "*a" * 20 + "*b*",               # twenty segments found, then one that is not there
    "*ab" * 30 + "*c*",
])
@pytest.mark.parametrize("name", ["a" * 3000, "a" * 2999 + "b", "ab" * 1500])
def test_each_segment_is_searched_for_once_and_the_name_scanned_once(mask, name):
    """Leftmost placement never backtracks: at most one search per segment of the
    mask (plus the two ends), and no character of the name is covered twice by
    the searches for the segments between stars."""
    counted = CountingName(name)
    Glob(mask).match(counted)
    segments = mask.count("*") + 1
    assert counted.searches <= segments + 2
    assert counted.scanned <= len(name) + len(mask)


def test_segments_with_question_marks_are_searched_from_their_longest_literal_run():
    counted = CountingName("x" * 2000 + "abcd")
    assert Glob("*a?cd").match(counted)
    assert counted.searches <= 3  # one search for "cd" finds it; no per-position probing
    assert not Glob("*a?ce").match("x" * 2000 + "abcd")


# -- masks ---------------------------------------------------------------------------------


def _covers(mask: str, nick: str, account: str = "", address: str = "192.0.2.1") -> bool:
    return Mask(mask).covers(Identity.named(nick, account, address))


@pytest.mark.parametrize("look_alike", ["alice", "ALICE", "Alice", "aIice", "a1ice", "A1ICE",
                                        "a|ice"])
def test_a_mask_on_a_nick_covers_its_look_alikes(look_alike):
    assert _covers("alice!*@*", look_alike)
    assert _covers("*!alice@*", "someone", account=look_alike)


def test_a_mask_typed_as_a_look_alike_covers_the_name_it_passes_for():
    assert _covers("aIice!*@*", "alice")          # a capital i: the real alice too
    assert _covers("rnallory!*@*", "mallory")
    assert not _covers("alice!*@*", "aiice")      # a small i is not an l
    assert not _covers("alice!*@*", "alicea")


def test_addresses_match_ignoring_case_but_not_look_alikes():
    assert _covers("*!*@2001:DB8::*", "x", address="2001:db8::7")
    assert not _covers("*!*@fc1::*", "x", address="fd::1")  # "cl" is "d" in a nick only


def test_masks_are_bounded_ascii_and_whole():
    assert Mask("a" * (MASK_MAX - 4) + "!*@*").text
    for bad in ("a" * MASK_MAX + "!*@*", "a!b", "a@b!c", "a!b!c@d", "a b!*@*", "!*@*",
                "аlice!*@*"):  # a Cyrillic a
        with pytest.raises(MaskError):
            Mask(bad)
    assert Mask("a***b!**@*").text == "a*b!*@*"  # runs of stars are one star
    assert Mask("Bob!*@*").key == Mask("bob!*@*").key


def test_covers_account_names_only_masks_that_name_someone():
    assert Mask("alice!*@*").covers_account("alice")
    assert Mask("*!alice@*").covers_account("aIice")
    assert Mask("a*!*@*").covers_account("alice")
    assert not Mask("*!*@192.0.2.*").covers_account("alice")  # an address names nobody
    assert not Mask("alice!bob@*").covers_account("alice")


def test_same_name_is_the_nick_tables_sameness():
    assert same_name("alice", "ALICE") and same_name("alice", "aIice")
    assert same_name("mallory", "rnallory") and not same_name("alice", "aiice")
