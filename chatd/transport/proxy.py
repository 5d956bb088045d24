"""The PROXY protocol (HAProxy's, versions 1 and 2): the real client behind a proxy.

Behind a TCP load balancer or a TLS terminator (HAProxy, nginx ``stream``, AWS
NLB) every connection comes from the proxy's address, so every per-address
limit, ban and log line would be about the proxy.  A proxy that speaks the
PROXY protocol sends one header before the client's bytes, naming the client's
address; chatd reads it on listeners with ``proxy_protocol: true`` from the
addresses in ``trusted_proxies``, and from then on the connection *is* the
client's address: admission, per-address limits, bans, logs, ``/whois``.

* From a trusted proxy the header is required: a connection without one, a
  malformed one, or one that does not arrive within the registration timeout
  is closed.  ``LOCAL`` (v2) and ``UNKNOWN`` (v1), the proxies' health checks,
  keep the proxy's own address.
* From anyone else a header is a spoofing attempt: refused and logged.  Other
  clients of such a listener connect directly, as on any listener.

:func:`parse_header` is the parser (pure, tested in-process);
:class:`HeaderReader` sits in front of a connection's protocol until the
header is read (chatd.listeners wires it).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Callable
from typing import Any

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
#: The longest v1 header (the spec's figure, CRLF included).
V1_MAX = 107
#: The longest v2 header chatd accepts (addresses plus a few TLVs).
V2_MAX = 16 + 2048


class HeaderError(ValueError):
    """A header that is not the PROXY protocol, or not one chatd can use."""


#: What a parsed header says: the client's (address, port), or None for "use the
#: connection's own" (LOCAL, UNKNOWN), and how many bytes the header took.
Parsed = tuple[tuple[str, int] | None, int]


def looks_like_header(data: bytes) -> bool:
    """Whether ``data`` is the start of a PROXY header's signature (too short to tell)."""
    return any(prefix.startswith(data) for prefix in (V1_PREFIX, V2_SIGNATURE))


def parse_header(data: bytes) -> Parsed | None:
    """Parse a header at the start of ``data``: None if more bytes are needed; raises
    HeaderError if it is not a valid one."""
    if data[:len(V2_SIGNATURE)] == V2_SIGNATURE[:len(data)]:
        if len(data) < 16:
            return None
        return _parse_v2(data)
    if data[:len(V1_PREFIX)] == V1_PREFIX[:len(data)]:
        return _parse_v1(data)
    raise HeaderError("not a PROXY protocol header")


def _parse_v1(data: bytes) -> Parsed | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise HeaderError("PROXY v1 header too long or without CRLF")
        return None
    fields = data[:end].decode("ascii", "replace").split(" ")
    if fields[1:2] == ["UNKNOWN"]:
        return None, end + 2
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise HeaderError(f"malformed PROXY v1 header: {data[:end]!r}")
    _, family, source, _destination, source_port, _destination_port = fields
    try:
        address = ipaddress.ip_address(source)
        port = int(source_port)
    except ValueError:
        raise HeaderError(f"malformed PROXY v1 address: {data[:end]!r}") from None
    if (address.version == 4) != (family == "TCP4") or not 0 <= port <= 65535 \
            or source_port != str(port):
        raise HeaderError(f"malformed PROXY v1 header: {data[:end]!r}")
    return (str(address), port), end + 2


def _parse_v2(data: bytes) -> Parsed | None:
    version_command, family, length = struct.unpack("!BBH", data[12:16])
    if version_command >> 4 != 2:
        raise HeaderError("PROXY v2 header with another version")
    if 16 + length > V2_MAX:
        raise HeaderError("PROXY v2 header too long")
    if len(data) < 16 + length:
        return None
    body = data[16:16 + length]
    command = version_command & 0x0F
    if command == 0:  # LOCAL: the proxy's own connection (a health check)
        return None, 16 + length
    if command != 1:
        raise HeaderError("PROXY v2 header with an unknown command")
    if family == 0x11 and length >= 12:  # TCP over IPv4
        source = socket.inet_ntop(socket.AF_INET, body[:4])
        (port,) = struct.unpack("!H", body[8:10])
    elif family == 0x21 and length >= 36:  # TCP over IPv6
        source = socket.inet_ntop(socket.AF_INET6, body[:16])
        (port,) = struct.unpack("!H", body[32:34])
    elif family == 0x00:  # UNSPEC: keep the connection's own address
        return None, 16 + length
    else:
        raise HeaderError(f"PROXY v2 header for an address family chatd does not serve "
                          f"({family:#x})")
    return (source, port), 16 + length


def v1_header(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """A v1 header (for tests and tools)."""
    family = "TCP6" if ":" in source[0] else "TCP4"
    return (f"PROXY {family} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n"
            .encode())


def v2_header(source: tuple[str, int] | None, destination: tuple[str, int] = ("0.0.0.0", 0)
              ) -> bytes:
    """A v2 header (for tests and tools); ``source`` None makes a LOCAL one."""
    if source is None:
        return V2_SIGNATURE + struct.pack("!BBH", 0x20, 0x00, 0)
    six = ":" in source[0]
    family = socket.AF_INET6 if six else socket.AF_INET
    body = (socket.inet_pton(family, source[0]) + socket.inet_pton(family, destination[0])
            + struct.pack("!HH", source[1], destination[1]))
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x21 if six else 0x11, len(body)) + body


class HeaderReader:
    """Stands in front of a connection's protocol until the PROXY header is read.

    ``on_header(source, rest)`` is called once with the client's address (None:
    keep the connection's) and the bytes after the header; ``on_error(why)``
    if the header is bad.  ``trusted`` False: any header is refused, anything
    else is passed on at once (``on_header(None, data)``).
    """

    __slots__ = ("_buffer", "done", "on_error", "on_header", "trusted")

    def __init__(self, trusted: bool, on_header: Callable[[tuple[str, int] | None, bytes], None],
                 on_error: Callable[[str], None]) -> None:
        self.trusted = trusted
        self.on_header = on_header
        self.on_error = on_error
        self._buffer = b""
        #: True once the header is handled (or, untrusted, the first bytes passed on).
        self.done = False

    def data_received(self, data: Any) -> None:
        if self.done:
            return
        self._buffer += bytes(data)
        buffer = self._buffer
        if not self.trusted:
            if buffer.startswith(V1_PREFIX) or buffer.startswith(V2_SIGNATURE):
                self.done = True
                self.on_error("a PROXY header from an address that is not a trusted proxy")
            elif not looks_like_header(buffer):  # an ordinary client: everything passes on
                self.done = True
                self.on_header(None, buffer)
            return  # else: too short to tell yet
        try:
            parsed = parse_header(buffer)
        except HeaderError as exc:
            self.done = True
            self.on_error(str(exc))
            return
        if parsed is None:
            return
        source, used = parsed
        self.done = True
        self.on_header(source, buffer[used:])

    def eof_received(self) -> bool:
        if not self.done:
            self.done = True
            self.on_error("closed before its PROXY header")
        return False

    def lines_skipped(self, count: int) -> None:
        pass

    def connection_made(self) -> None:  # the Protocol interface: a reader in front hears none
        pass

    def connection_lost(self, reason: str) -> None:
        self.done = True
