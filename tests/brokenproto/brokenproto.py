"""A protocol whose code raises, registered from outside chatd's tree (tests only).

A plugin's protocol is a plugin's code: a bug in it (an exception in any callback
the transport makes: ``connection_made``, ``data_received``, ``eof_received``,
``connection_lost``) must cost its own connection, never the server, the accept
loop or anyone else's connection.  The listener option ``fails_in`` says which
callback raises; the protocol ``brokenrefusal`` cannot word a refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatd import hookimpl
from chatd.config_rules import setting
from chatd.events import Event
from chatd.protocols import ChatProtocol, ProtocolSpec, Renderer
from chatd.requests import Request

CALLBACKS = ("__init__", "connection_made", "data_received", "eof_received",
             "connection_lost")


@dataclass(frozen=True, slots=True)
class BrokenOptions:
    fails_in: str = setting("data_received", "The callback that raises.",
                            pattern="|".join(CALLBACKS),
                            describe="a callback's name")


class BrokenRenderer(Renderer):
    name = "broken"

    def render(self, event: Event) -> bytes:
        return b""

    def local_error(self, text: str, *, code: str | None = None) -> bytes:
        return f"ERROR {code or '-'} :{text}\n".encode()


class BrokenProtocol(ChatProtocol):
    renderer = BrokenRenderer()
    __slots__ = ()

    def _maybe_fail(self, callback: str) -> None:
        if self.listener is not None and self.listener.options["fails_in"] == callback:
            raise RuntimeError(f"the broken protocol fails in {callback}")

    def __init__(self, transport: Any, door: Any = None) -> None:
        super().__init__(transport, door)
        self._maybe_fail("__init__")

    def connection_made(self) -> None:
        self._maybe_fail("connection_made")
        super().connection_made()

    def data_received(self, data: Any) -> None:
        self._maybe_fail("data_received")
        super().data_received(data)

    def eof_received(self) -> bool:
        self._maybe_fail("eof_received")
        return super().eof_received()

    def connection_lost(self, reason: str) -> None:
        self._maybe_fail("connection_lost")
        super().connection_lost(reason)

    def parse(self, lines: list[Any]) -> list[Request]:
        return [line for line in lines if isinstance(line, str) and line]


class RefusalRenderer(BrokenRenderer):
    name = "brokenrefusal"

    def local_error(self, text: str, *, code: str | None = None) -> bytes:
        raise RuntimeError("the broken protocol cannot word a refusal")


class RefusalProtocol(BrokenProtocol):
    """Serves like the other, but cannot word a refusal (server full, per address...)."""

    renderer = RefusalRenderer()
    __slots__ = ()


@hookimpl
def chatd_protocols() -> list[ProtocolSpec]:
    return [ProtocolSpec("broken", BrokenProtocol, "A protocol that raises (tests).",
                         BrokenOptions),
            ProtocolSpec("brokenrefusal", RefusalProtocol, "Refusals raise (tests).",
                         BrokenOptions)]
