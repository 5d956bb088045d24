"""A toy wire format, registered from outside chatd's tree: the test of the protocol seam.

Loaded by path (``plugin_dirs``), as a deployment's own plugin would be, it adds the
protocol ``toy`` with the ``chatd_protocols`` hook and edits nothing in chatd.  It
makes the choices a real protocol such as IRC makes:

* listener options of its own (``server_tag``, ``max_line_bytes``), checked by
  chatd's config rules and read by the protocol as ``self.listener.options``;
* its own input limit (``max_line_bytes``, 512 by default: IRC's), not the
  server's ``limits.max_line_bytes``;
* raw lines: nothing sanitised on the way in, so a CTCP-style
  ``\\x01ACTION waves\\x01`` reaches ``parse`` whole and becomes an action (the
  line protocol's sanitiser would have removed the ``\\x01`` first);
* its own words for everything, refusals included: ``ERROR <code> :<text>``.

Wire format: a line in is a chat line, ``/command args``, ``PING`` (answered
``PONG <server_tag>``) or ``\\x01ACTION text\\x01``; a line out is
``<KIND> <nick> <target> :<text>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatd import hookimpl
from chatd.config_rules import MAX_BYTES, setting
from chatd.events import Event
from chatd.framing import LineTooLong, sanitize, utf8
from chatd.protocols import ChatProtocol, ProtocolLimits, ProtocolSpec, Renderer
from chatd.requests import Invoke, Request, Say


@dataclass(frozen=True, slots=True)
class ToyOptions:
    """The toy listener's own keys."""

    server_tag: str = setting("toy", "What PING is answered with.", pattern=r"[a-z]{1,16}",
                              describe="1 to 16 lowercase letters")
    max_line_bytes: int = setting(512, "The longest line a toy client may send, in bytes.",
                                  ge=16, le=MAX_BYTES)


class ToyRenderer(Renderer):
    name = "toy"

    def render(self, event: Event) -> bytes:
        text = sanitize(event.text.replace("\n", " "))
        return utf8(f"{event.kind.upper()} {event.source.nick} {event.target or '-'} :{text}\n")

    def local_error(self, text: str, *, code: str | None = None) -> bytes:
        return utf8(f"ERROR {code or '-'} :{sanitize(text)}\n")


def raw_line(data: bytes | bytearray | memoryview) -> str:
    """The toy's input sanitising: none (UTF-8, invalid bytes as U+FFFD, nothing removed)."""
    return str(data, "utf-8", "replace")


class ToyProtocol(ChatProtocol):
    renderer = ToyRenderer()
    decode = staticmethod(raw_line)
    __slots__ = ()

    @classmethod
    def input_limits(cls, server: ProtocolLimits, options: Any) -> ProtocolLimits:
        return ProtocolLimits(max_line_bytes=options["max_line_bytes"],
                              recvq_max=server.recvq_max)

    def parse(self, lines: list[Any]) -> list[Request]:
        requests: list[Request] = []
        for line in lines:
            if isinstance(line, LineTooLong):
                requests.append(line)
            elif line == "PING":
                tag = self.listener.options["server_tag"] if self.listener else "toy"
                self.transport.write(f"PONG {tag}\n".encode())
            elif line.startswith("\x01ACTION ") and line.endswith("\x01"):
                requests.append(Say(line[len("\x01ACTION "):-1], action=True))
            elif line.startswith("/"):
                name, _, args = line[1:].partition(" ")
                requests.append(Invoke(name.lower(), args.strip()))
            elif line:
                requests.append(line)
        return requests


@hookimpl
def chatd_protocols() -> list[ProtocolSpec]:
    return [ProtocolSpec("toy", ToyProtocol, "A toy protocol (tests/toyproto).", ToyOptions)]
