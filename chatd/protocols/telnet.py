"""Telnet negotiation on the line protocol, sans-IO: strip it, answer it, never show it.

People connect with the real ``telnet`` client as often as with ``nc``.  telnet
puts negotiation in the byte stream (RFC 854: ``IAC`` = 0xFF, then a command),
and some of it waits for an answer: on Ctrl-C it sends ``IAC IP IAC DO
TIMING-MARK`` and discards everything the server sends until the server
answers the timing mark (RFC 860), so a server that ignores it leaves the
client deaf for good.  In character mode Enter is ``CR NUL`` (the NVT rule for
a bare carriage return), which no ``\\n``-framer would ever end a line at.

:class:`TelnetFilter` takes what ``recv`` returned and gives back the data with
every telnet command removed (``IAC IAC`` is a literal 0xFF) and ``CR NUL``
turned into ``CR LF``, plus the bytes to send back:

* ``DO TIMING-MARK`` -> ``WILL TIMING-MARK`` (the input before it is handled);
* ``DO x`` for any other option -> ``WONT x``; ``WILL x`` -> ``DONT x``
  (chatd enables no option: no server echo, no linemode; the client keeps
  its own line editing and echo);
* ``WONT``/``DONT`` need no answer (already off), so negotiation cannot loop;
* ``IP``, ``BRK``, ``AO``, ``AYT``, ``NOP``, ``GA``, ``DM``, ``EC``, ``EL``,
  RFC 1184's ``EOF``, ``SUSP``, ``ABORT``, ``EOR`` and subnegotiations
  (``SB ... SE``) are dropped silently -- except inside a UTF-8 sequence (below).

UTF-8 never contains 0xFF, so a client that is not telnet never trips this;
a 0xFF that is not followed by a command byte (a Latin-1 ``ÿ``) is data.

CJK text through Debian's telnet
--------------------------------
Debian's ``telnet`` (inetutils) in its default line mode compares each typed
byte with the terminal's special characters after stripping the eighth bit, so
a UTF-8 continuation byte whose low seven bits are one of them is sent as the
telnet command for that key, not as the byte (recorded from the real client on
a pty, with and without ``-8``: ``tests/test_telnet.py``):

====================  ==================  =====================================
byte typed            key it matches      on the wire
====================  ==================  =====================================
``0x83``              intr, ``^C``        ``IAC IP`` then ``IAC DO TIMING-MARK``
``0x9C``              quit, ``^\\``        ``IAC BRK`` (``IAC ABORT`` in linemode)
``0x8F``              discard, ``^O``     ``IAC AO`` then ``IAC DO TIMING-MARK``
``0x9A``              susp, ``^Z``        ``IAC SUSP`` then ``IAC DO TIMING-MARK``
====================  ==================  =====================================

So ``日本語`` (``E6 97 A5 E6 9C AC ...``) arrives as ``E6 97 A5 E6 IAC BRK IAC
DO TM AC ...`` and katakana (``E3 83 ..``) as ``E3 IAC IP ...``.  One of these
commands where a UTF-8 sequence still lacks continuation bytes cannot be a key
the person pressed (a key comes between characters), so it is turned back into
the byte it replaced; anywhere else it keeps its meaning (a real Ctrl-C is
dropped, its timing mark answered).  Two bytes cannot be repaired: ``0x85``
(``^E``) is dropped by the client without a trace, and ``0x9D`` (``^]``,
telnet's escape) opens the client's own ``telnet>`` prompt; such a character
arrives as U+FFFD.
"""

from __future__ import annotations

IAC = 0xFF
DONT, DO, WONT, WILL = 0xFE, 0xFD, 0xFC, 0xFB
SB, SE = 0xFA, 0xF0
AO, IP, BRK = 0xF5, 0xF4, 0xF3
ABORT, SUSP, EOF = 0xEE, 0xED, 0xEC  # RFC 1184 (linemode); EOR, 0xEF, is RFC 885
TIMING_MARK = 6
#: The lowest command byte after IAC (RFC 1184's EOF); below it, IAC was data.
_FIRST_COMMAND = EOF
#: The byte a command replaced when it sits inside a UTF-8 sequence (see above).
_STRIPPED_BYTE = {IP: 0x83, BRK: 0x9C, ABORT: 0x9C, AO: 0x8F, SUSP: 0x9A}

_DATA, _COMMAND, _OPTION, _SUB, _SUB_IAC = range(5)


def utf8_missing(data: bytes, missing: int = 0) -> int:
    """How many continuation bytes the UTF-8 sequence at the end of ``data`` still
    lacks; ``missing`` is what was lacking before ``data``."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if 0x80 <= byte <= 0xBF:
            continue  # a continuation byte: look further back for its lead
        length = 2 if 0xC2 <= byte <= 0xDF else 3 if 0xE0 <= byte <= 0xEF else \
            4 if 0xF0 <= byte <= 0xF4 else 1
        return max(0, length - back)
    return max(0, missing - len(data))  # continuation bytes only


class TelnetFilter:
    """Per connection: telnet commands out of the input, answers for the peer.

    ``before`` is the data already received on the current line, if any (its
    end may be a CR whose NUL comes now, or half of a UTF-8 sequence).
    """

    __slots__ = ("_after_cr", "_missing", "_state", "_verb", "seen")

    def __init__(self, before: bytes = b"") -> None:
        self._state = _DATA
        self._verb = 0
        #: The last data byte was CR (for CR NUL across reads).
        self._after_cr = before[-1:] == b"\r"
        #: Continuation bytes the last UTF-8 sequence still lacks (see the module
        #: docstring: a command there is a byte the client mangled).
        self._missing = utf8_missing(before)
        #: Whether any telnet command was seen (the peer is a telnet client).
        self.seen = False

    def feed(self, data: bytes | bytearray | memoryview) -> tuple[bytes, bytes]:
        """``(clean data, reply)`` for one chunk; either may be empty."""
        data = bytes(data)
        if self._state == _DATA and IAC not in data and 0 not in data:
            if data:
                self._after_cr = data[-1] == 0x0D
                self._missing = utf8_missing(data, self._missing)
            return data, b""  # the common case: plain text, untouched
        out = bytearray()
        reply = bytearray()
        i, end = 0, len(data)
        while i < end:
            state = self._state
            if state == _DATA:
                nxt = data.find(IAC, i)
                stop = end if nxt < 0 else nxt
                self._plain(data[i:stop], out)
                if nxt < 0:
                    break
                self._state = _COMMAND
                i = nxt + 1
                continue
            byte = data[i]
            i += 1
            if state == _COMMAND:
                if byte < _FIRST_COMMAND:
                    # Not a command: a stray 0xFF (a Latin-1 "ÿ", invalid UTF-8), so data.
                    self._state = _DATA
                    out.append(IAC)
                    self._after_cr = False
                    self._missing = 0
                    i -= 1
                    continue
                self.seen = True
                if byte == IAC:
                    out.append(IAC)  # IAC IAC: a literal 0xFF
                    self._after_cr = False
                    self._missing = 0
                    self._state = _DATA
                elif byte in (WILL, WONT, DO, DONT):
                    self._verb = byte
                    self._state = _OPTION
                elif byte == SB:
                    self._state = _SUB
                else:
                    self._state = _DATA
                    self._key(byte, out)
            elif state == _OPTION:
                self._state = _DATA
                verb = self._verb
                if verb == DO:
                    reply += bytes((IAC, WILL if byte == TIMING_MARK else WONT, byte))
                elif verb == WILL and byte != TIMING_MARK:
                    reply += bytes((IAC, DONT, byte))
            elif state == _SUB:
                if byte == IAC:
                    self._state = _SUB_IAC
            else:  # _SUB_IAC
                self._state = _DATA if byte == SE else _SUB
        return bytes(out), bytes(reply)

    def _key(self, command: int, out: bytearray) -> None:
        """A one-byte command (IP, BRK, AYT, NOP, ...): nothing, unless it stands for a
        byte of an unfinished UTF-8 sequence (the module docstring's table)."""
        byte = _STRIPPED_BYTE.get(command)
        if byte is not None and self._missing:
            out.append(byte)
            self._missing -= 1
            self._after_cr = False

    def _plain(self, chunk: bytes, out: bytearray) -> None:
        """Data bytes: ``CR NUL`` (even split across reads) ends a line like ``CR LF``."""
        if not chunk:
            return
        if self._after_cr and chunk[0] == 0:
            chunk = b"\n" + chunk[1:]
        if b"\r\x00" in chunk:
            chunk = chunk.replace(b"\r\x00", b"\r\n")
        out += chunk
        self._after_cr = chunk[-1] == 0x0D
        self._missing = utf8_missing(chunk, self._missing)
