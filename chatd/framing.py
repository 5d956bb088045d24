"""Sans-IO line framing and text sanitising: bytes in, clean lines out.

Nothing here touches a socket (the h11 habit), so every edge case can be tested
with bytes alone, and the property "any chunking of a stream yields the same
lines" can be checked exhaustively (tests/test_framing.py).

Framing rules
-------------
* A line ends at ``\\n``; a ``\\r`` right before it is dropped, so ``nc -C`` and
  telnet's ``\\r\\n`` work.
* A line longer than ``max_line_bytes`` (not counting the terminator) is not
  buffered: the framer reports one :class:`LineTooLong` and discards bytes up to
  the next ``\\n``.  Memory per connection is therefore bounded by
  ``max_line_bytes`` whatever the peer sends.
* The framer remembers where it stopped searching, so a line that arrives one
  byte at a time costs O(n), not O(n^2) (h11 ``_receivebuffer``).
* Each complete line is decoded as UTF-8 *per line* (so a code point split
  across two reads is intact), invalid sequences become U+FFFD, and the text is
  sanitised (below) — for people's protocols; a protocol for programs passes
  its own ``decode`` (jsonl refuses what is not UTF-8 and checks its values).

Sanitising
----------
:func:`sanitize` removes everything that can drive a terminal or fake the
layout of a line, and keeps everything that is text:

* whole escape sequences: CSI (``ESC [ ... final``: arrows, F5-F12), SS2/SS3
  with the character they shift (``ESC O P`` is F1: no ``P`` is left behind),
  OSC / DCS / SOS / PM / APC strings up to BEL or ST, other two-byte ``ESC x``
  sequences, and their C1 forms (U+009B CSI, U+008F SS3, U+009D OSC, ...);
* every remaining C0 control (tab becomes a space), DEL and C1 control;
* bidi embeddings, overrides and isolates (Trojan Source, CVE-2021-42574),
  LRM/RLM/ALM, the line and paragraph separators, and BOM / ZWNBSP.

On received lines only, backspace (BS, Ctrl-H) and DEL first erase the
character before them (:func:`apply_backspaces`), the way the typist meant,
once escape sequences are gone.

ZWJ and ZWNJ stay, so emoji sequences such as 👨‍👩‍👧 survive.  chatd applies
:func:`sanitize` to every line it receives *and* to every line it sends, so text
produced by plugins gets the same guard (CWE-150).

Output is sanitised by each renderer for its own clients.  IRC's formatting
codes (bold ``\\x02``, italics ``\\x1d``, underline ``\\x1f``, reverse ``\\x16``,
reset ``\\x0f``...) are C0 controls, so :func:`sanitize` removes them; a colour
code carries its colours as digits after it (``\\x0304,05red``), which would be
left on the screen as ``04,05red``, so the renderers for terminals and programs
remove colour codes whole first (:func:`strip_colour_codes`): a netcat user reads
an IRC user's coloured ``red`` as ``red``.  Input is not changed by this: the line
protocol's rules for what a person types stay :func:`decode_line`'s.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_ESCAPE_SEQUENCES = re.compile(
    r"""
      \x1b\[ [0-?]* [\ -/]* [@-~]?                  # CSI ... final byte (arrows, F5-F12)
    | \x1b[\]PX^_] .*? (?:\x07|\x1b\\|\x9c|$)        # OSC, DCS, SOS, PM, APC ... BEL/ST
    | \x1b[NO] [\ -~]?                             # SS2 / SS3 + the character they shift (F1-F4)
    | \x1b [\ -/]* [0-~]?                           # nF / Fp / Fe / Fs escapes, lone ESC
    | \x9b [0-?]* [\ -/]* [@-~]?                    # C1 CSI
    | [\x8e\x8f] [\ -~]?                             # C1 SS2 / SS3
    | [\x90\x98\x9d\x9e\x9f] .*? (?:\x07|\x1b\\|\x9c|$)  # C1 string commands
    """,
    re.VERBOSE | re.DOTALL,
)

_UNSAFE_CHARACTERS = re.compile(
    "["
    "\x00-\x1f\x7f-\x9f"  # C0 (tab is replaced before), DEL, C1
    "\u061c\u200e\u200f"  # ALM, LRM, RLM
    "\u202a-\u202e"  # LRE RLE PDF LRO RLO
    "\u2066-\u2069"  # LRI RLI FSI PDI
    "\u2028\u2029"  # line / paragraph separator
    "\ufeff"  # BOM / zero-width no-break space
    # Invisible characters that can hide text or fake look-alikes: soft hyphen, CGJ,
    # Hangul fillers, Mongolian vowel separator, zero-width space, word joiner and
    # invisible operators, tag characters.  ZWNJ stays (scripts need it); ZWJ is
    # kept only inside emoji sequences (sanitize below).
    "\u00ad\u034f\u115f\u1160\u180e\u200b\u2060-\u2064\u3164\uffa0"
    "\U000e0000-\U000e007f"
    "]"
)

#: Combining marks kept on one base character (more is "zalgo" text that smears
#: over the lines around it; real scripts need two or three at most).
MAX_COMBINING = 3


#: The unsafe characters but BS and DEL (which erase, see apply_backspaces).
_UNSAFE_BUT_ERASE = re.compile(
    _UNSAFE_CHARACTERS.pattern.replace("\x00-\x1f\x7f-\x9f", "\x00-\x07\x09-\x1f\x80-\x9f")
)

_HTTP_REQUEST = re.compile(
    rb"(GET|POST|HEAD|PUT|DELETE|OPTIONS|CONNECT|PATCH|TRACE|PRI) \S+ HTTP/\d"
)

#: What a client speaking another protocol is told before it is disconnected, by kind;
#: the listener's protocol words it (``! ...`` on the line protocol, an ``error`` object
#: with the code ``foreign_KIND`` on jsonl: ``ChatProtocol.refusal``).
FOREIGN_PROTOCOL_TEXTS = {
    "http": "this is not an HTTP server: chatd is a line chat, try nc HOST PORT",
    "tls": "this port speaks plain text, not TLS",
    "binary": "binary data is not chat; disconnecting",
}


def sniff_foreign_protocol(first_bytes: bytes | bytearray | memoryview) -> str | None:
    """Recognise a client that speaks something else: ``"http"``, ``"tls"``, ``"binary"``.

    Checked on the first bytes of a connection (and, for HTTP, its first line),
    so a browser tricked into POSTing to the chat port (Redis' "Host:" check), a
    TLS ClientHello or random junk is closed at once instead of being chatted
    or held until a timeout.
    """
    data = bytes(first_bytes[:512])
    if len(data) >= 3 and data[0] == 0x16 and data[1] == 0x03 and data[2] <= 0x04:
        return "tls"
    if _HTTP_REQUEST.match(data):
        return "http"
    # Binary: not UTF-8 *and* dense in control bytes.  Either alone is human:
    # a Latin-1 terminal sends invalid UTF-8, a paste can carry a stray NUL.
    controls = len(data) - len(data.translate(None, _BINARY_CONTROLS))
    if controls >= 4 and controls * 12 >= len(data) and not _is_utf8_prefix(data):
        return "binary"
    return None


_BINARY_CONTROLS = bytes(c for c in range(32) if c not in (9, 10, 13, 27))


def _is_utf8_prefix(data: bytes) -> bool:
    """Valid UTF-8, allowing a code point cut off at the end."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(data) - 3 and exc.reason == "unexpected end of data"
    return True


#: A UTF-16 surrogate code point.  Alone in a ``str`` (JSON's ``"\\ud800"`` escape, a
#: plugin's slicing of an emoji) it is not text: no UTF-8 can hold it, SQLite and every
#: encoder refuse it.
_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(text: str) -> int:
    """The position of the first lone surrogate in ``text``, or -1 if it is well-formed.

    A protocol that can receive one (jsonl's ``\\u`` escapes) refuses the value with
    this position in its error; UTF-8 input cannot carry one (it is decoded strictly
    or with U+FFFD).
    """
    if text.isascii():
        return -1
    found = _SURROGATE.search(text)
    return -1 if found is None else found.start()


def utf8(text: str) -> bytes:
    """``text`` encoded as UTF-8 for the wire, whatever it holds.

    Every renderer encodes through this: a lone surrogate that got past the
    checks at entry (a plugin's text) becomes U+FFFD instead of raising in the
    middle of a fan-out and costing other users their lines.  The common case
    is one ``encode``; the repair runs only when that fails.
    """
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text).encode("utf-8")


def sanitize(text: str) -> str:
    """Return ``text`` without terminal controls, escape sequences or bidi tricks.

    Plain printable ASCII (the common case) is returned as is without a regex
    pass.  The result is always a single line.
    """
    if text.isascii() and text.isprintable():
        return text
    if "\t" in text:
        text = text.replace("\t", " ")
    if "\x1b" in text or any(c in text for c in "\x8e\x8f\x90\x98\x9b\x9d\x9e\x9f"):
        text = _ESCAPE_SEQUENCES.sub("", text)
    text = _UNSAFE_CHARACTERS.sub("", text)
    if "\u200d" in text:
        text = _stray_joiners(text)
    if _COMBINING_RUN.search(text):
        text = _COMBINING_RUN.sub(lambda m: m.group(0)[:MAX_COMBINING], text)
    return text


#: An IRC colour code with its colours: ``\x03`` then up to two digits, optionally a
#: comma and up to two more; ``\x04`` then a hex colour, optionally a second.
_COLOUR_CODES = re.compile(
    r"\x03(?:[0-9]{1,2}(?:,[0-9]{1,2})?)?|\x04(?:[0-9a-fA-F]{6}(?:,[0-9a-fA-F]{6})?)?"
)


def strip_colour_codes(text: str) -> str:
    """``text`` without IRC colour codes, their digits included (see the module
    docstring); the other formatting codes are controls :func:`sanitize` removes."""
    if "\x03" not in text and "\x04" not in text:
        return text
    return _COLOUR_CODES.sub("", text)


def _emojiish(char: str) -> bool:
    code = ord(char)
    return code >= 0x1F000 or 0x2600 <= code <= 0x27BF or code == 0xFE0F or 0x2190 <= code <= 0x2BFF


def _stray_joiners(text: str) -> str:
    """ZWJ only between two emoji-like characters (👨‍👩‍👧); anywhere else it hides."""
    out = []
    last = len(text) - 1
    for i, char in enumerate(text):
        if char == "\u200d" and not (
            0 < i < last and _emojiish(text[i - 1]) and _emojiish(text[i + 1])
        ):
            continue
        out.append(char)
    return "".join(out)


#: A run of more than MAX_COMBINING combining marks from the blocks "zalgo" text is
#: made of (combining diacriticals and their supplements and extensions, Cyrillic,
#: Hebrew and Arabic marks, combining marks for symbols, half marks).  A fixed class,
#: not a scan of the Unicode database at import: chatd starts in milliseconds.
_COMBINING_RUN = re.compile(
    "[\u0300-\u036f\u0483-\u0489\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7"
    "\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06dc\u06df-\u06e4\u06e7\u06e8"
    "\u06ea-\u06ed\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]"
    f"{{{MAX_COMBINING + 1},}}"
)

# Confusable skeletons, in the spirit of Unicode TS #39 (and ergo's nick skeletons):
# characters and pairs that look alike map to one form, so "aIice" (capital i) is
# "alice", "r00t" is "root", "rnallory" is "mallory".  Applied before lowercasing,
# because "I" looks like "l" but "i" does not.
_CONFUSABLE_PAIRS = (("rn", "m"), ("vv", "w"), ("cl", "d"))
_CONFUSABLE_CHARS = str.maketrans({"I": "l", "|": "l", "1": "l", "0": "o", "O": "o"})

# Beyond ASCII (text, not nicks: nicks and room names are ASCII): NFKC first, which
# folds full-width forms ("ａｌｉｃｅ"), ligatures, Roman numerals and mathematical
# letters to plain ones; then combining marks go ("d̈arn", "zalgo"), after NFD;
# then the Cyrillic and Greek letters that read as Latin ones become those.  A fixed
# table of the common ones (a subset of TS #39's confusables.txt, which has
# thousands), not the Unicode data at import: chatd starts in milliseconds.
_LATIN_LOOK_ALIKES = str.maketrans({
    # Cyrillic
    "а": "a", "е": "e", "һ": "h", "і": "i", "ј": "j", "к": "k", "ӏ": "l",
    "о": "o", "р": "p", "ԛ": "q", "с": "c", "ѕ": "s", "у": "y", "ԝ": "w", "х": "x",
    "ԁ": "d", "ɡ": "g",
    "А": "A", "В": "B", "Е": "E", "Н": "H", "І": "I", "Ӏ": "I", "Ј": "J", "К": "K",
    "М": "M", "О": "O", "Р": "P", "Ԛ": "Q", "С": "C", "Ѕ": "S", "Т": "T", "У": "Y",
    "Ԝ": "W", "Х": "X",
    # Greek
    "α": "a", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "υ": "u", "χ": "x",
    "ϲ": "c", "ϳ": "j",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M",
    "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "Ϲ": "C", "Ϳ": "J",
    # Latin letters from other blocks
    "ɑ": "a", "ı": "i", "ɩ": "i", "ǀ": "l",
})


def skeleton(text: str) -> str:
    """The look-alike-insensitive form of ``text``: two strings that a reader cannot
    tell apart have the same skeleton (nicks are unique by it; filters match on it).

    ASCII text (every nick, every room name) takes the fast path: the five
    look-alike characters, lowercase, the pairs.  Other text is first folded
    to ASCII look-alikes where one exists (NFKC, no combining marks, Cyrillic
    and Greek letters that read as Latin).
    """
    if not text.isascii():
        text = _latin_look_alikes(text)
    folded = text.translate(_CONFUSABLE_CHARS).lower()
    for pair, single in _CONFUSABLE_PAIRS:
        if pair in folded:
            folded = folded.replace(pair, single)
    return folded


def _latin_look_alikes(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    if not text.isascii():
        decomposed = unicodedata.normalize("NFD", text)
        text = "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
        text = text.translate(_LATIN_LOOK_ALIKES)
    return text


class CleanedLine(str):
    """A received line from which the sanitiser had to remove something.

    Plain ``str`` otherwise; commands whose arguments must arrive exactly as
    typed (a nick, a password) refuse such a line rather than act on an altered
    value (see ``Command.exact_args``).
    """

    __slots__ = ()


def apply_backspaces(text: str) -> str:
    """Let BS (Ctrl-H) and DEL erase the character before them, as the typist meant.

    Raw terminals, ``telnet`` in character mode and some ``nc`` setups send the
    key itself instead of editing the line locally.  Run on received lines
    only, after escape sequences are gone (an erase never eats half of one).
    """
    out: list[str] = []
    for char in text:
        if char == "\b" or char == "\x7f":
            if out:
                out.pop()
        else:
            out.append(char)
    return "".join(out)


def decode_line(raw: bytes | bytearray | memoryview) -> str:
    """Decode one framed line (UTF-8, invalid bytes -> U+FFFD), apply its erases, sanitise.

    The result is a :class:`CleanedLine` if something had to be removed (an
    escape sequence, a control character); erasing with backspace is editing,
    not cleaning.
    """
    text = str(raw, "utf-8", "replace")
    if text.isascii() and text.isprintable():
        return text
    cleaned = False
    if "\t" in text:
        text = text.replace("\t", " ")  # first, as sanitize() does: a tab ends no escape
    if "\x1b" in text or any(c in text for c in "\x8e\x8f\x90\x98\x9b\x9d\x9e\x9f"):
        stripped = _ESCAPE_SEQUENCES.sub("", text)
        cleaned = stripped != text
        text = stripped
    if "\b" in text or "\x7f" in text:
        # An erase takes back a character the typist saw, not an invisible control.
        visible = _UNSAFE_BUT_ERASE.sub("", text)
        cleaned = cleaned or visible != text
        text = apply_backspaces(visible)
    clean = sanitize(text)
    if cleaned or clean != text:
        return CleanedLine(clean)
    return clean


@dataclass(frozen=True, slots=True)
class LineTooLong:
    """A line exceeded the limit and was discarded (reported once per line)."""

    limit: int


#: Turns one framed line (without its terminator) into what the framer returns for it.
LineDecoder = Callable[[bytes | bytearray | memoryview], Any]


class LineFramer:
    """Split a byte stream into lines; see the module docstring for the rules.

    ``feed()`` returns the decoded, sanitised lines completed by this chunk (and
    a :class:`LineTooLong` marker where an over-long line was dropped).  Empty
    lines are returned too; ignoring them is the caller's policy.

    ``decode`` turns each line's bytes into what is returned for it:
    :func:`decode_line` (text for people: U+FFFD, erases, sanitised) unless a
    protocol needs the line as sent (jsonl decodes strictly and checks the
    values inside the JSON instead).
    """

    __slots__ = ("_buffer", "_decode", "_discarding", "_scanned", "discarded", "max_line_bytes")

    def __init__(self, max_line_bytes: int = 4096, decode: LineDecoder = decode_line) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be positive")
        self.max_line_bytes = max_line_bytes
        self._decode = decode
        self._buffer = bytearray()
        self._scanned = 0  # bytes of _buffer already known to hold no b"\n"
        self._discarding = False  # inside an over-long line, waiting for its b"\n"
        #: Bytes of the current over-long line dropped so far (0 when not discarding),
        #: so the caller can cut a peer that streams an endless line.
        self.discarded = 0

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished line."""
        return len(self._buffer)

    @property
    def head(self) -> bytes:
        """The first bytes of the unfinished line held (at most 512): with a connection's
        next chunk, what :func:`sniff_foreign_protocol` reads of a greeting that came in
        pieces (a TLS hello whose first segment is one byte)."""
        return bytes(self._buffer[:512])

    @property
    def tail(self) -> bytes:
        """The last bytes of the unfinished line held (at most 3: half of a ``\\r\\n``
        or of a UTF-8 sequence), for a filter that starts in mid-line."""
        return bytes(self._buffer[-3:])

    def feed(self, data: bytes | bytearray | memoryview) -> list[Any]:
        """Consume ``data``; return the lines it completed, in order."""
        out: list[Any] = []
        if not data:
            return out
        buf = self._buffer
        if not buf and data[-1] == 0x0A and not self._discarding:
            # The common read: whole lines and nothing held from before.  Split in C,
            # nothing copied into the buffer and out again.
            limit = self.max_line_bytes
            decode = self._decode
            lines = bytes(data).split(b"\n")
            lines.pop()  # what follows the last b"\n": nothing
            for line in lines:
                if line[-1:] == b"\r":
                    line = line[:-1]
                out.append(LineTooLong(limit) if len(line) > limit else decode(line))
            return out
        buf += data
        limit = self.max_line_bytes
        start = 0
        while True:
            newline = buf.find(b"\n", max(start, self._scanned))
            if newline < 0:
                break
            if self._discarding:
                self._discarding = False
                self.discarded = 0
            else:
                end = newline
                if end > start and buf[end - 1] == 0x0D:  # b"\r"
                    end -= 1
                if end - start > limit:
                    out.append(LineTooLong(limit))
                else:
                    out.append(self._decode(buf[start:end]))
            start = newline + 1
            self._scanned = start
        if start:
            del buf[:start]
        # What is left has no b"\n" in it.  One spare byte allows a trailing
        # b"\r" that belongs to a b"\r\n" still in flight.
        if self._discarding:
            self.discarded += len(buf)
            buf.clear()
        elif len(buf) > limit + 1:
            out.append(LineTooLong(limit))
            self._discarding = True
            self.discarded = len(buf)
            buf.clear()
        self._scanned = len(buf)
        return out

    def finish(self) -> Any:
        """End of stream: return the unterminated trailing fragment, if any.

        chatd's documented choice is to deliver it as a last line (``printf
        'a\\nb\\nc' | nc -N`` sends ``a``, ``b`` and ``c``).
        """
        buf = self._buffer
        discarding = self._discarding
        self._buffer = bytearray()
        self._scanned = 0
        self._discarding = False
        self.discarded = 0
        if discarding or not buf:
            return None
        if buf[-1] == 0x0D:
            del buf[-1]
        if len(buf) > self.max_line_bytes:
            return LineTooLong(self.max_line_bytes)
        return self._decode(buf)
