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
* ``IP``, ``BRK``, ``AO``, ``AYT``, ``NOP``, ``GA``, ``DM``, ``EC``, ``EL``
  and subnegotiations (``SB ... SE``) are dropped silently.

UTF-8 never contains 0xFF, so a client that is not telnet never trips this;
a 0xFF that is not followed by a command byte (a Latin-1 ``ÿ``) is data.
"""

from __future__ import annotations

IAC = 0xFF
DONT, DO, WONT, WILL = 0xFE, 0xFD, 0xFC, 0xFB
SB, SE = 0xFA, 0xF0
TIMING_MARK = 6

_DATA, _COMMAND, _OPTION, _SUB, _SUB_IAC = range(5)


class TelnetFilter:
    """Per connection: telnet commands out of the input, answers for the peer."""

    __slots__ = ("_after_cr", "_state", "_verb", "seen")

    def __init__(self) -> None:
        self._state = _DATA
        self._verb = 0
        self._after_cr = False  # the last data byte was CR (for CR NUL across reads)
        #: Whether any telnet command was seen (the peer is a telnet client).
        self.seen = False

    def feed(self, data: bytes | bytearray | memoryview) -> tuple[bytes, bytes]:
        """``(clean data, reply)`` for one chunk; either may be empty."""
        data = bytes(data)
        if self._state == _DATA and IAC not in data and 0 not in data:
            if data:
                self._after_cr = data[-1] == 0x0D
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
                if byte < SE:
                    # Not a command: a stray 0xFF (a Latin-1 "ÿ", invalid UTF-8), so data.
                    self._state = _DATA
                    out.append(IAC)
                    i -= 1
                    continue
                self.seen = True
                if byte == IAC:
                    out.append(IAC)  # IAC IAC: a literal 0xFF
                    self._after_cr = False
                    self._state = _DATA
                elif byte in (WILL, WONT, DO, DONT):
                    self._verb = byte
                    self._state = _OPTION
                elif byte == SB:
                    self._state = _SUB
                else:
                    self._state = _DATA  # IP, BRK, AYT, NOP, GA, ...: nothing
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
