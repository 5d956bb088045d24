"""Sans-IO tests of chatd.framing: the line framer and the sanitiser, bytes only.

The central property (DESIGN.md section 6, RELIABILITY.md F1/F2): any chunking
of a byte stream yields the same lines as feeding it whole, and both agree with
a small reference model written here from the documented rules.
"""

from __future__ import annotations

import itertools
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatd.framing import _COMBINING_RUN as _ZALGO
from chatd.framing import _ESCAPE_SEQUENCES as _ESCAPES
from chatd.framing import _UNSAFE_CHARACTERS as _UNSAFE
from chatd.framing import LineFramer, LineTooLong, sanitize

# -- helpers -------------------------------------------------------------------


def run(framer: LineFramer, chunks: list[bytes]) -> list[str | LineTooLong]:
    """Feed every chunk, then finish(); the whole output in order."""
    out: list[str | LineTooLong] = []
    for chunk in chunks:
        out.extend(framer.feed(chunk))
    tail = framer.finish()
    if tail is not None:
        out.append(tail)
    return out


def reference(stream: bytes, max_line_bytes: int) -> list[str | LineTooLong]:
    """The framing rules, written the obvious (slow) way.

    Split on b"\\n"; strip one trailing b"\\r"; longer than the limit ->
    LineTooLong; else decode UTF-8 with replacement, remove escape sequences,
    let each backspace (BS, DEL) erase the visible character before it, and sanitise.
    A non-empty unterminated tail is a last line (chatd's documented EOF policy).
    """
    *complete, tail = stream.split(b"\n")
    pieces = complete + ([tail] if tail else [])
    out: list[str | LineTooLong] = []
    for raw in pieces:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > max_line_bytes:
            out.append(LineTooLong(max_line_bytes))
        else:
            text = _ESCAPES.sub("", raw.decode("utf-8", "replace").replace("\t", " "))
            kept: list[str] = []
            for char in text:
                if char in "\b\x7f":
                    if kept:
                        kept.pop()  # an erase takes back the last visible character
                elif sanitize(char):
                    kept.append(char)
            out.append(sanitize("".join(kept)))
    return out


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# Bytes that make framing interesting: CR, invalid / partial UTF-8, a 4-byte
# emoji, escapes, C1 in UTF-8, plain ASCII.
_ATOMS = st.sampled_from(
    [
        b"a",
        b"Z",
        b" ",
        b"\r",
        b"\t",
        b"\x00",
        b"\x1b[",
        b"\x1b]0;",
        b"\x07",
        b"\xff",
        b"\xc3",
        b"\xc3\xa9",
        b"\xe2\x82",
        b"\xf0\x9f\x98\x83",
        b"\xc2\x9b",
        b"\xed\xa0\x80",
        b"\xe2\x80\xae",
    ]
)
_LINE = st.one_of(
    st.lists(_ATOMS, max_size=30).map(b"".join),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
)
_SEPARATOR = st.sampled_from([b"\n", b"\r\n"])


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    """Lines joined by \\n or \\r\\n, sometimes with an unterminated tail."""
    lines = draw(st.lists(st.tuples(_LINE, _SEPARATOR), max_size=12))
    data = b"".join(line + sep for line, sep in lines)
    if draw(st.booleans()):
        data += draw(_LINE)
    return data


# -- the chunking property -------------------------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), stream=streams(), max_line_bytes=st.integers(1, 48))
def test_any_chunking_yields_the_same_lines(
    data: st.DataObject, stream: bytes, max_line_bytes: int
) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=len(stream) + 1), "cuts")
    whole = run(LineFramer(max_line_bytes), [stream])
    pieces = run(LineFramer(max_line_bytes), chunked(stream, cuts))
    assert pieces == whole
    assert whole == reference(stream, max_line_bytes)


@settings(max_examples=150, deadline=None)
@given(stream=streams(), max_line_bytes=st.integers(1, 48))
def test_byte_at_a_time_matches_reference(stream: bytes, max_line_bytes: int) -> None:
    framer = LineFramer(max_line_bytes)
    assert run(framer, [stream[i : i + 1] for i in range(len(stream))]) == reference(
        stream, max_line_bytes
    )


@settings(max_examples=100, deadline=None)
@given(first=streams(), second=streams())
def test_framer_is_reusable_after_finish(first: bytes, second: bytes) -> None:
    framer = LineFramer(16)
    assert run(framer, [first]) == reference(first, 16)
    assert run(framer, [second]) == reference(second, 16)
    assert framer.buffered == 0


# -- examples --------------------------------------------------------------------


def test_byte_at_a_time_utf8() -> None:
    text = "hello wörld 😃"
    data = (text + "\n").encode()
    framer = LineFramer()
    out: list[str | LineTooLong] = []
    for i in range(len(data)):
        out.extend(framer.feed(data[i : i + 1]))
        if i < len(data) - 1:
            assert out == [], "no line before its newline"
    assert out == [text]
    assert framer.finish() is None


@pytest.mark.parametrize("split", [1, 2, 3])
def test_emoji_split_across_feeds(split: int) -> None:
    emoji = "😃".encode()
    assert len(emoji) == 4
    framer = LineFramer()
    assert framer.feed(b"x" + emoji[:split]) == []
    assert framer.feed(emoji[split:] + b"y\n") == ["x😃y"]


def test_crlf_and_lf() -> None:
    framer = LineFramer()
    assert framer.feed(b"one\r\ntwo\nthree\r") == ["one", "two"]
    assert framer.feed(b"\n") == ["three"]
    # Only one \r is the terminator's; any other is a control character.
    assert framer.feed(b"four\r\r\n") == ["four"]
    assert framer.feed(b"\r\n\n") == ["", ""]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    framer = LineFramer()
    lines = framer.feed(b"\xff\n\xc0\xaf\n\xed\xa0\x80\n\xf4\x90\x80\x80\n\xe2\x82\nok\n")
    assert lines[-1] == "ok"
    for line in lines[:-1]:
        assert isinstance(line, str)
        assert set(line) == {"\ufffd"}


def test_finish_returns_trailing_fragment() -> None:
    framer = LineFramer()
    assert framer.feed(b"a\nb\nc") == ["a", "b"]
    assert framer.buffered == 1
    assert framer.finish() == "c"
    assert framer.finish() is None
    assert framer.buffered == 0


def test_finish_strips_cr_of_fragment_and_ignores_nothing() -> None:
    framer = LineFramer()
    assert framer.finish() is None
    framer.feed(b"last\r")
    assert framer.finish() == "last"


def test_over_long_line_in_one_chunk_reported_once() -> None:
    framer = LineFramer(max_line_bytes=10)
    out = framer.feed(b"x" * 11 + b"\n" + b"next\n")
    assert out == [LineTooLong(10), "next"]
    assert framer.feed(b"exactly 10\n") == ["exactly 10"]
    assert framer.feed(b"exactly 10\r\n") == ["exactly 10"]


def test_over_long_line_over_many_chunks_reported_once() -> None:
    framer = LineFramer(max_line_bytes=10)
    out: list[str | LineTooLong] = []
    for _ in range(1000):
        out.extend(framer.feed(b"abcdefg"))
        assert framer.buffered <= 11
    out.extend(framer.feed(b"tail of the long line\nafter"))
    assert out == [LineTooLong(10)]
    assert framer.feed(b"\n") == ["after"]
    assert framer.finish() is None


def test_over_long_line_byte_at_a_time_reported_once() -> None:
    framer = LineFramer(max_line_bytes=5)
    out: list[str | LineTooLong] = []
    for byte in b"0123456789" * 5 + b"\nok\n":
        out.extend(framer.feed(bytes([byte])))
    assert out == [LineTooLong(5), "ok"]


def test_over_long_fragment_at_eof_reported_once() -> None:
    framer = LineFramer(max_line_bytes=4)
    assert framer.feed(b"abcde") == []  # limit + 1 may still be "abcd\r"
    assert framer.finish() == LineTooLong(4)
    framer = LineFramer(max_line_bytes=4)
    assert framer.feed(b"abcdef") == [LineTooLong(4)]
    assert framer.finish() is None


def test_memory_bounded_without_newline() -> None:
    limit = 4096
    framer = LineFramer(max_line_bytes=limit)
    chunk = b"z" * 65536
    reports = 0
    for _ in range(160):  # 10 MiB
        for item in framer.feed(chunk):
            assert item == LineTooLong(limit)
            reports += 1
        assert framer.buffered <= limit + 1
    assert reports == 1
    assert framer.feed(b"\nhello\n") == ["hello"]


def test_max_line_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LineFramer(0)


# -- no quadratic rescan (counted, never timed) ----------------------------------------


class _CountingBuffer(bytearray):
    """A bytearray that counts how many bytes ``find`` is asked to scan."""

    scanned = 0
    finds = 0

    def find(self, sub, start=0, *args):  # type: ignore[no-untyped-def,override]
        type(self).finds += 1
        type(self).scanned += max(0, len(self) - start)
        return super().find(sub, start, *args)


def test_byte_at_a_time_scans_each_byte_a_bounded_number_of_times() -> None:
    # White-box: the framer must remember where it stopped searching, so a
    # line arriving one byte at a time costs O(n) searching, not O(n^2).
    n = 20_000
    framer = LineFramer(max_line_bytes=n + 10)
    counter = _CountingBuffer()
    framer._buffer = counter  # the framer's own buffer, instrumented
    _CountingBuffer.scanned = _CountingBuffer.finds = 0
    for _ in range(n):
        assert framer.feed(b"q") == []
    assert framer.feed(b"\n") == ["q" * n]
    assert _CountingBuffer.finds >= n, "instrumentation did not see the searches"
    assert _CountingBuffer.scanned <= 3 * (n + 1), "the buffer was rescanned from its start"


def test_long_line_byte_at_a_time_completes() -> None:
    # Black-box guard: 200,000 single-byte feeds of one line below the limit,
    # and of lines above a small limit.  A rescan from the start of the buffer
    # on every feed would be ~2e10 byte comparisons; pytest-timeout catches it.
    n = 200_000
    framer = LineFramer(max_line_bytes=n)
    for _ in range(n):
        framer.feed(b"w")
    assert framer.buffered == n
    assert framer.feed(b"\n") == ["w" * n]

    framer = LineFramer(max_line_bytes=64)
    out: list[str | LineTooLong] = []
    line = b"v" * 99 + b"\n"
    for i in range(n):
        out.extend(framer.feed(line[i % 100 : i % 100 + 1]))
    assert out == [LineTooLong(64)] * (n // 100)


# -- sanitize ------------------------------------------------------------------------

_HOSTILE = [
    ("erase screen", "a\x1b[2Jb", "ab"),
    ("alternate screen", "a\x1b[?1049hb", "ab"),
    ("window ops", "a\x1b[21tb", "ab"),
    ("OSC title", "a\x1b]0;pwned\x07b", "ab"),
    ("OSC 52 clipboard", "a\x1b]52;c;cGF5bG9hZA==\x07b", "ab"),
    ("OSC 8 hyperlink", "\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\", "click"),
    ("DCS", "a\x1bPq#0;2;0;0;0\x1b\\b", "ab"),
    ("C1 CSI", "a\x9b2Jb", "ab"),
    ("C1 OSC", "a\x9d0;title\x07b", "ab"),
    ("BEL BS DEL", "a\x07b\x08c\x7fd", "abcd"),
    ("CR", "hi\r<admin> you are banned", "hi<admin> you are banned"),
    ("backspaces", "hi" + "\b" * 10 + "<admin> x", "hi<admin> x"),
    ("RLO/PDF", "\u202emoc.live\u202c", "moc.live"),
    ("isolates", "\u2066x\u2069\u2067y\u2069\u2068z\u2069", "xyz"),
    ("BOM", "\ufeffhello", "hello"),
    ("NUL", "a\x00b", "ab"),
    ("LRM RLM ALM", "a\u200eb\u200fc\u061cd", "abcd"),
]


@pytest.mark.parametrize(
    ("text", "expected"), [(t, e) for _, t, e in _HOSTILE], ids=[n for n, _, _ in _HOSTILE]
)
def test_sanitize_removes_controls(text: str, expected: str) -> None:
    assert sanitize(text) == expected


def test_sanitize_keeps_text() -> None:
    family = "👨\u200d👩\u200d👧"
    assert sanitize("ě") == "ě"
    assert sanitize(family) == family
    assert sanitize("a\u200cb") == "a\u200cb"  # ZWNJ stays
    assert sanitize("a\tb") == "a b"
    assert sanitize("plain ascii <nick> * !") == "plain ascii <nick> * !"
    mixed = "ě \x1b[31mred\x1b[0m " + family + "\x07"
    assert sanitize(mixed) == "ě red " + family


def test_framer_sanitizes_lines() -> None:
    framer = LineFramer()
    assert framer.feed("ě\x1b]0;x\x07 \x9b2J👨\u200d👩\u200d👧\r\n".encode()) == [
        "ě 👨\u200d👩\u200d👧"
    ]


_BIDI = {
    "\u061c",
    "\u200e",
    "\u200f",
    *map(chr, range(0x202A, 0x202F)),
    *map(chr, range(0x2066, 0x206A)),
}


def _forbidden(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F or char in _BIDI


_CONTROL_HEAVY = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(
            [
                "\x1b",
                "[",
                "]",
                "P",
                "\\",
                "\x07",
                "\x9b",
                "\x9c",
                "\x9d",
                "\x90",
                "\r",
                "\n",
                "\t",
                "\x7f",
                "\u202e",
                "\u2066",
                "\ufeff",
                "\u200d",
                ";",
                "0",
                "m",
            ]
        ),
    ),
    max_size=60,
)


@settings(max_examples=500)
@given(text=_CONTROL_HEAVY)
def test_sanitize_output_has_no_controls_and_is_idempotent(text: str) -> None:
    clean = sanitize(text)
    bad = [unicodedata.name(c, hex(ord(c))) for c in clean if _forbidden(c)]
    assert not bad, f"{text!r} -> {clean!r} keeps {bad}"
    assert "\n" not in clean and "\r" not in clean
    assert sanitize(clean) == clean


@settings(max_examples=200)
@given(text=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cc", "Cf"]))
       .filter(lambda t: not _UNSAFE.search(t) and not _ZALGO.search(t)))
def test_sanitize_keeps_ordinary_text(text: str) -> None:
    # Letters, marks, numbers, punctuation, symbols and spaces pass untouched: all
    # but the few characters sanitize exists to remove (invisible ones such as the
    # Hangul fillers and CGJ, line separators) and runs of over three combining marks.
    assert sanitize(text) == text
