"""The chat in-process: the real domain, plugins and protocols, with no sockets.

For unit tests of the chat logic and of plugins, where a real server process is
more than the test needs::

    from chatd.testing import InProcessChat

    def test_roll():
        chat = InProcessChat(dice)
        alice = chat.connect()
        alice.send("/roll 2d6")
        assert alice.lines()[-1].startswith("*** guest-1 rolled 2d6")

:class:`InProcessChat` builds the same pieces the server does (a plugin host
with the built-ins and the given plugins, the chat domain, the delivery
backend) on a real reactor that never opens a socket of its own; each
:class:`Peer` is a real protocol object (line or jsonl) over an in-memory
transport that records what would have been sent.  :meth:`InProcessChat.tick`
runs what one loop pass would (due timers, the fan-out, departures).

Time: with ``InProcessChat(fake_clock=True)`` the loop's clock stands still until
the test moves it with :meth:`InProcessChat.advance` (timers, the flood gate, the
announce delay and ``server.clock()`` all follow it), so a test of a timed plugin
takes no time and cannot be flaky.  :meth:`InProcessChat.wait_for` runs the loop
until a condition holds, for results handed back from other threads
(``server.run_in_thread``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import yaml

from ..chat import ChatDomain, Client, collect_commands
from ..config import Config, parse_config
from ..plugins import PluginHost
from ..protocols import ChatProtocol, ProtocolLimits
from ..reactor import Reactor
from ..requests import SessionRequest
from ..server import collect_protocols
from .defaults import sections_for_test


class MemoryTransport:
    """A transport that keeps what it is given (the :class:`Transport` interface)."""

    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer
        self.output = bytearray()
        self.output_bytes = 0
        self.limit_hit: str | None = None
        self.close_reason: str | None = None
        self.writes = 0
        self.held = False
        self._open = True

    @property
    def is_open(self) -> bool:
        return self._open

    def write(self, data: bytes) -> None:
        if self._open:
            self.output += data
            self.writes += 1

    write_now = write

    def registered(self) -> None:
        """Nothing to count: there is no admission in memory."""

    def close(self, reason: str, *, limit: str | None = None) -> None:
        if self._open:
            self._open = False
            self.close_reason = reason
            if limit is not None:
                self.limit_hit = limit

    def hold_reading(self) -> None:
        self.held = True

    def resume_reading(self) -> None:
        self.held = False

    @property
    def reading_held(self) -> bool:
        return self.held

    def reject_foreign(self, kind: str, reply: bytes) -> None:
        self.limit_hit = f"foreign_{kind}"
        self.write(reply)
        self.close(f"spoke {kind}, not chat")


class Peer:
    """One connected client, driven by the test: ``send()`` lines, read ``lines()``."""

    def __init__(self, chat: InProcessChat, protocol: ChatProtocol,
                 transport: MemoryTransport) -> None:
        self.chat = chat
        self.protocol = protocol
        self.transport = transport
        self.client: Client = protocol.session  # type: ignore[assignment]
        self._read = 0
        self._lost = False

    @property
    def nick(self) -> str:
        return self.client.nick

    def send(self, line: str | bytes) -> None:
        """Send one line (``\\n`` added to text) and run a tick."""
        data = line if isinstance(line, bytes) else line.encode("utf-8") + b"\n"
        self.protocol.data_received(memoryview(data))
        self.chat.tick()

    def send_json(self, obj: dict[str, Any] | None = None, /, **fields: Any) -> None:
        self.send(json.dumps({**(obj or {}), **fields}))

    def lines(self) -> list[str]:
        """The lines received since the last call."""
        self.chat.tick()
        data = bytes(self.transport.output[self._read:])
        self._read = len(self.transport.output)
        return data.decode("utf-8").splitlines()

    def objects(self) -> list[dict[str, Any]]:
        """For a jsonl peer: the objects received since the last call."""
        return [json.loads(line) for line in self.lines()]

    @property
    def all_lines(self) -> list[str]:
        return bytes(self.transport.output).decode("utf-8").splitlines()

    def close(self) -> None:
        """The peer hangs up (FIN): the server handles the end of its stream."""
        if not self.protocol.eof_received():
            self.transport.close("connection closed by peer")
        self.chat.tick()

    @property
    def connected(self) -> bool:
        return self.transport.is_open


class FakeClock:
    """A monotonic clock that moves only when told (``InProcessChat(fake_clock=True)``)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def _config(config: Config | None, sections: dict[str, Any]) -> Config:
    if config is not None:
        return config
    data = sections_for_test(sections)
    return parse_config(yaml.safe_dump(data))


class InProcessChat:
    """The chat domain with the built-in plugins and ``plugins``, and no sockets.

    ``plugins`` are plugin objects (modules, classes' instances) registered
    after the built-ins, named by their ``PLUGIN_NAME``, ``__name__`` or class
    name; ``sections`` are config sections (as for ``chatd_server``, e.g.
    ``plugins={"wordfilter": {...}}``), on top of the test defaults
    (:data:`chatd.testing.defaults.TEST_SECTIONS`); ``config`` replaces both.
    ``builtins`` names the built-in plugins to load (default: all of them).
    ``fake_clock``: the loop's clock stands still until :meth:`advance`.
    ``backend``: ``backend(local, server, call_soon)`` makes the delivery backend
    (e.g. :meth:`chatd.testing.backends.DeferredBackend.factory`, whose presence
    answers come later); without it, a plugin's ``chatd_delivery_backend`` is asked,
    as the server does, and the local backend is the default.
    """

    def __init__(self, *plugins: object, config: Config | None = None,
                 builtins: Iterable[str] | None = None, fake_clock: bool = False,
                 backend: Callable[..., Any] | None = None,
                 **sections: Any) -> None:
        self.config = _config(config, sections)
        #: The fake clock (``fake_clock=True``), else None: real ``time.monotonic``.
        self.clock: FakeClock | None = FakeClock() if fake_clock else None
        self.reactor = Reactor(self.clock) if self.clock is not None else Reactor()
        self.reactor.enable_threadsafe()
        host = PluginHost.from_config(self.config.plugin_host)
        host.load_builtins(builtins)
        for plugin in plugins:
            name = getattr(plugin, "PLUGIN_NAME", None) or getattr(plugin, "__name__", None)
            name = (name or type(plugin).__name__).rpartition(".")[2]
            host.register(plugin, name, "test")
        host.check()
        self.hooks = host
        #: The protocols :meth:`connect` can speak: the built-ins and the plugins'.
        self.protocols = collect_protocols(host)
        self.config = self.protocols.check_config(self.config)
        self.domain = ChatDomain(self.config, host, self.reactor)
        #: What plugins receive as ``server``.
        self.server = self.domain.facade
        host.bind(self.server, self.reactor)
        self.domain.commands = collect_commands(host, self.server)
        host.call_strict("chatd_startup", server=self.server)
        if backend is not None:
            self.domain.backend = backend(self.domain.local, self.server, self.reactor.call_soon)
        else:
            chosen = host.call_first("chatd_delivery_backend", server=self.server,
                                     local=self.domain.local)
            if chosen is not None:
                self.domain.backend = chosen
        #: The delivery backend in use.
        self.backend = self.domain.backend
        self.reactor.add_before_flush(lambda: self.domain.backend.flush())
        self.peers: list[Peer] = []
        self._ports = iter(range(40000, 65536))

    def connect(self, protocol: str = "line", *, address: str = "127.0.0.1",
                request: SessionRequest | None = None) -> Peer:
        """A new client on ``protocol`` (``line``, ``jsonl`` or one a plugin registered),
        welcomed and in the room; its input limits are the protocol's with its options'
        defaults (there is no listener).  Its session begins at once (no greeting delay,
        no password), with ``request`` if given: what a protocol's own handshake would
        have learned (a nick wished for, a user name, an account)."""
        transport = MemoryTransport((address, next(self._ports)))
        limits = self.config.limits
        spec = self.protocols[protocol]
        defaults = {name: setting.default for name, setting in spec.option_specs.items()}
        proto = spec.protocol(
            transport,  # type: ignore[arg-type]
            spec.protocol.input_limits(
                ProtocolLimits(limits.max_line_bytes, limits.recvq_max_bytes), defaults),
        )
        proto.session = self.domain.connect(proto, request)
        peer = Peer(self, proto, transport)
        self.peers.append(peer)
        self.tick()
        return peer

    def tick(self) -> None:
        """One loop pass: due timers, the ready list, the fan-out; then departures."""
        self.reactor.run_once(0)
        for peer in self.peers:
            if not peer.transport.is_open and not peer._lost:
                peer._lost = True
                peer.protocol.connection_lost(peer.transport.close_reason or "closed")
        self.reactor.run_once(0)

    def advance(self, seconds: float) -> None:
        """Move the fake clock ``seconds`` forward, running every timer that falls due on
        the way at its own time, in order (and the ones those schedule), then a tick."""
        clock = self.clock
        if clock is None:
            raise RuntimeError("advance() needs InProcessChat(fake_clock=True)")
        if seconds < 0:
            raise ValueError("time only moves forward")
        target = clock.now + seconds
        while True:
            due = self.reactor.next_timer()
            if due is None or due > target:
                break
            clock.now = max(clock.now, due)
            self.tick()
        clock.now = target
        self.tick()

    def wait_for(self, condition: Callable[[], object], timeout: float = 5.0) -> None:
        """Run the loop until ``condition()`` is true (work handed back from another
        thread); AssertionError after ``timeout`` real seconds."""
        deadline = time.monotonic() + timeout
        self.tick()
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout} s")
            self.reactor.run_once(0.05)  # wakes at once when a thread hands work in
            self.tick()

    def close(self) -> None:
        self.hooks.shutdown()
        self.domain.store.close()
        self.reactor.close()

    def __enter__(self) -> InProcessChat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
