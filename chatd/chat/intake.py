"""The per-client intake: what a client sent, on its way into the chat.

A protocol hands its client's requests to :meth:`Intake.handle`, one list per
read.  Before any of them means anything they pass here, in order:

1. **announce**: a client's first line tells its rooms it is here
   (:meth:`ChatDomain.announce <chatd.chat.domain.ChatDomain.announce>`);
2. **the flood gate** (:mod:`chatd.chat.flood`): requests pass now or wait
   (fakelag: delayed, never dropped, never reordered), released by a timer since
   under edge-triggering no new input would come back for them; a backlog over
   ``limits.recvq_max_bytes`` stops reading the client (backpressure); requests
   that still come while reading is held, past what a single read can add, cut it
   (excess flood: something is wrong); one read never does, whatever its requests
   weigh (an IRC ``PING`` weighs its ``PONG``);
3. **a pause** (``server.pause_requests``, e.g. while a password is checked off
   the loop): everything after the command that asked waits, in order, until
   ``resume_requests`` or the timeout; reading stops meanwhile;
4. **dispatch**: a chat line or a :class:`~chatd.requests.Say` becomes the
   domain's ``say``; an :class:`~chatd.requests.Invoke` runs its command (every
   ``chatd_command`` veto first, then the handler, both guarded); a line too long
   or a malformed request is an error for the sender alone.

What is said, where, and to whom (messages, rooms, nicks) is the domain's
(:mod:`chatd.chat.domain`); this module only decides *when* and *as what* a
request reaches it.  The intake imports the domain for its types only: the
domain makes the intake and hands it itself.

State.  Per client, one :class:`ClientIntake` record in ``client.intake``, made
when first needed (a flood gate on the first line under a flood limit, or a
pause) and never for a client that only listens: an idle connection costs one
slot.  Per server, what is being handled now: :attr:`Intake.speaking` (the
client whose command runs: what its plugin posts to a room is its speech) and
:attr:`Intake.replying` (the client whose tagged request is answered: a room
event made meanwhile reaches it as a reply) and :attr:`Intake.quiet` (the client
whose ``quiet`` request runs: IRC's NOTICE, whose errors it is not told), which
the domain reads.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from ..delivery import nick_key
from ..framing import CleanedLine, LineTooLong
from ..requests import Answer, Invoke, Malformed, Request, Say
from .errors import CommandError, UsageError
from .flood import FloodGate, TokenBucket

if TYPE_CHECKING:
    from .client import Client
    from .commands import Command
    from .domain import ChatDomain


@functools.lru_cache(maxsize=4)
def _exempt_keys(accounts: tuple[str, ...]) -> frozenset[str]:
    """``flood.exempt_accounts`` as nick keys (cached: the tuple is the config's)."""
    return frozenset(nick_key(account) for account in accounts)


def hard_backlog(limits: Any) -> int:
    """The most delayed input one client can have even with reading held: the limit,
    plus what one read pass and one unfinished line can add on top of it."""
    return limits.recvq_max_bytes + limits.read_budget_bytes + limits.max_line_bytes


class Paused:
    """A client whose requests wait (``server.pause_requests``, or a presence question
    of the domain's): what it sent meanwhile, in order, whether the peer closed its
    side, the timer that ends a ``pause_requests``, and how many waits hold it (the
    pause is one, each unanswered presence question one more): it goes on when the
    last ends."""

    __slots__ = ("eof", "holds", "requests", "timer")

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.eof = False
        self.timer: Any = None
        self.holds = 0


class ClientIntake:
    """The intake's record of one client (``client.intake``): its flood gate, made on
    its first line if there is a flood limit, and its pause, while one lasts.
    Owned by :class:`Intake`; nothing else reads or writes it."""

    __slots__ = ("gate", "paused")

    def __init__(self) -> None:
        self.gate: FloodGate | None = None
        #: While ``server.pause_requests`` holds the client: its waiting requests and
        #: the timer that ends the pause; None otherwise (nearly always).
        self.paused: Paused | None = None


def _record(client: Client) -> ClientIntake:
    """``client``'s intake record, made on first use."""
    record = client.intake
    if record is None:
        record = client.intake = ClientIntake()
    return record


class Intake:
    """The way in for every client's requests.  One per server, made by the domain."""

    def __init__(self, domain: ChatDomain) -> None:
        self._domain = domain
        #: The client whose command is running, and the command (None between commands):
        #: what its plugin posts to a room is that client's speech.
        self.speaking: tuple[Client, Command] | None = None
        #: The client whose tagged request (jsonl's "id") is being handled, if any: a
        #: room event made meanwhile reaches it as a reply.
        self.replying: Client | None = None
        #: That request's tag (the domain keeps it for an answer that comes later).
        self.tag: str | None = None
        #: The client whose ``quiet`` request (IRC's NOTICE) is being handled, if any:
        #: the errors it causes are not told to it (the domain's ``error``).
        self.quiet: Client | None = None

    # -- the way in --------------------------------------------------------------------

    def handle(self, client: Client, requests: list[Request]) -> None:
        """Requests from the client's protocol: pass them through the flood gate."""
        domain = self._domain
        if client.arrival is not None:
            domain.announce(client)  # its first line: the rooms hear it joined, then what it says
        record = client.intake
        gate = record.gate if record is not None else None
        if (gate is None or not gate.waiting) and self._flood_exempt(client):
            self._process(client, requests)  # nothing of its own waits: order is kept
            return
        if gate is None:
            flood = domain.config.flood
            # Made on the first line (starting full, as it would be by then anyway):
            # a client that only listens never needs one.
            gate = _record(client).gate = FloodGate(TokenBucket(
                flood.burst_lines, flood.lines_per_second, flood.bytes_per_token,
                domain.clock(),
            ))
        ready = gate.admit(requests, domain.clock())
        if ready:
            self._process(client, ready)
        if not gate.waiting:
            return
        limits = domain.config.limits
        if gate.backlog_bytes > limits.recvq_max_bytes:
            # Backpressure, not a kick: stop reading the client; its sender waits
            # (TCP) and the paste arrives complete, at the flood rate.  Only what one
            # read can add past the limit may get in; beyond that something is wrong.
            # One read is measured by what it was (the gate was not holding yet), not
            # by what its requests weigh: an IRC line may weigh more than its bytes
            # (a PING's PONG, one PRIVMSG to four channels), and is still one read.
            if gate.holding and gate.backlog_bytes > hard_backlog(limits):
                self._excess_flood(client, gate)
                return
            if not gate.holding:
                gate.holding = True
                client.link.hold_input()
        if gate.tell():
            client.notice(
                f"flood limit: your lines are delayed to {gate.rate:g} per second; "
                "the rest follow in order (nothing is lost)"
            )
        if gate.timer is None:
            self._schedule_release(client, gate)

    def half_closed(self, client: Client) -> bool:
        """The peer sent FIN: keep the client until its delayed lines are handled.

        ``printf 'many\\nlines\\n' | nc -N host port`` must deliver every line, even
        those the flood limit delayed (delayed, never dropped).
        """
        record = client.intake
        if record is None:
            return False
        if record.paused is not None:
            record.paused.eof = True  # closed once what waits is handled
            return True
        gate = record.gate
        if gate is not None and gate.waiting:
            gate.close_when_empty = True
            return True
        return False

    def forget(self, client: Client) -> None:
        """``client`` is gone: drop what waits for it and stop its timers."""
        record = client.intake
        if record is None:
            return
        client.intake = None
        if record.gate is not None:
            record.gate.clear()
        if record.paused is not None and record.paused.timer is not None:
            record.paused.timer.cancel()

    # -- pausing -------------------------------------------------------------------------

    def pause(self, client: Client, timeout: float) -> None:
        """Hold back ``client``'s requests (in order) until :meth:`resume`, or
        ``timeout`` seconds at most; reading its socket stops meanwhile."""
        paused = self.hold(client)
        if paused is None:
            return
        if paused.timer is not None:  # paused already: one pause at a time, as ever
            self.release(client)
            return
        paused.timer = self._domain.scheduler.call_later(timeout, self.resume, client)

    def resume(self, client: Client) -> None:
        """End the pause of :meth:`pause`: handle what ``client`` sent meanwhile, then
        read it again (unless a presence question still holds it)."""
        record = client.intake
        if record is None or record.paused is None or record.paused.timer is None:
            return
        record.paused.timer.cancel()
        record.paused.timer = None
        self.release(client)

    def hold(self, client: Client) -> Paused | None:
        """Hold back ``client``'s requests until a matching :meth:`release` (the domain,
        while a presence question of the client's is unanswered: it times out on its
        own); None if the client is leaving."""
        if not client.link.connected:
            return None
        record = _record(client)
        paused = record.paused
        if paused is None:
            paused = record.paused = Paused()
            client.link.hold_input()
        paused.holds += 1
        return paused

    def release(self, client: Client) -> None:
        """One hold of :meth:`hold` ends; the last one handles what waited, in order."""
        record = client.intake
        if record is None or record.paused is None:
            return
        record.paused.holds -= 1
        if record.paused.holds > 0:
            return
        paused, record.paused = record.paused, None
        if not client.link.connected:
            return
        gate = record.gate
        if gate is None or not gate.holding:
            client.link.resume_input()
        if paused.requests:
            self._process(client, paused.requests)
        if paused.eof and client.link.connected:
            again = record.paused
            if again is not None:
                again.eof = True  # paused again by what it sent: still waits
            elif not self.half_closed(client):
                client.link.close("connection closed by peer")

    # -- the flood gate ------------------------------------------------------------------

    def _flood_exempt(self, client: Client) -> bool:
        """No flood limit for this client: none is set, or it identified as one of
        ``flood.exempt_accounts`` (an account, never a nick someone could take)."""
        flood = self._domain.config.flood
        if flood.lines_per_second <= 0:
            return True
        account = client.account
        return account is not None and nick_key(account) in _exempt_keys(flood.exempt_accounts)

    def _schedule_release(self, client: Client, gate: FloodGate) -> None:
        domain = self._domain
        gate.timer = domain.scheduler.call_later(
            gate.wait(domain.clock()), self._release, client
        )

    def _release(self, client: Client) -> None:
        """Fakelag: the timer that releases delayed requests, with no new input needed.

        Under edge-triggering nothing else would ever come back for them.
        """
        record = client.intake
        gate = record.gate if record is not None else None
        if gate is None:
            return
        gate.timer = None
        if not client.link.connected:
            return
        domain = self._domain
        ready = gate.release(domain.clock())
        if ready:
            self._process(client, ready)
        if not client.link.connected:
            return
        if gate.holding and gate.backlog_bytes <= domain.config.limits.recvq_max_bytes // 2:
            gate.holding = False
            client.link.resume_input()  # read again: the kernel held the rest meanwhile
        if gate.waiting:
            self._schedule_release(client, gate)
            return
        if gate.close_when_empty:
            client.link.close("connection closed by peer")

    def _excess_flood(self, client: Client, gate: FloodGate) -> None:
        limit = hard_backlog(self._domain.config.limits)
        gate.clear()
        client.error(f"excess flood: more than {limit} bytes waiting; disconnecting",
                     code="excess_flood")
        client.link.close("excess flood", limit="excess_flood")

    # -- dispatch --------------------------------------------------------------------------

    def _process(self, client: Client, requests: list[Request]) -> None:
        link = client.link
        domain = self._domain
        for index, item in enumerate(requests):
            if not link.connected:
                return
            record = client.intake
            if record is not None and record.paused is not None:
                # A command before this one paused it: the rest waits, in order.
                record.paused.requests.extend(requests[index:])
                return
            cls = item.__class__
            if cls is str or cls is CleanedLine:
                if item and not item.isspace():  # type: ignore[union-attr]
                    domain.say(client, str(item))  # type: ignore[arg-type]
                continue
            tag = getattr(item, "tag", None)
            if tag is not None:
                link.replying_to(tag)
                self.replying = client
                self.tag = tag
            quiet = getattr(item, "quiet", False)
            if quiet:
                self.quiet = client
            try:
                if cls is Invoke:
                    self._command(client, item)  # type: ignore[arg-type]
                elif cls is Say:
                    self._say_to(client, item)  # type: ignore[arg-type]
                elif cls is LineTooLong:
                    client.error(
                        f"line too long (max {item.limit} bytes); it was not sent",  # type: ignore[union-attr]
                        code="line_too_long",
                    )
                elif cls is Malformed:
                    client.error(item.reason, code="malformed")  # type: ignore[union-attr]
                elif cls is Answer:
                    link.answer(item.payload)  # type: ignore[union-attr]
            finally:
                if tag is not None:
                    link.replying_to(None)
                    self.replying = None
                    self.tag = None
                if quiet:
                    self.quiet = None

    def _say_to(self, client: Client, say: Say) -> None:
        if not say.text or say.text.isspace():
            return
        room = None
        if say.room is not None:
            room = self._domain.rooms.get(say.room)
            if room is None or client not in room.members:
                client.error(f"you are not in {say.room}", code="not_in_room")
                return
        self._domain.say(client, say.text, room, action=say.action, notice=say.notice)

    def _command(self, client: Client, invoke: Invoke) -> None:
        domain = self._domain
        command = domain.commands.get(invoke.name)
        if command is None:
            client.error(f"unknown command /{invoke.name} — try /help", code="unknown_command")
            return
        if command.exact_args and invoke.cleaned:
            client.error(f"/{command.name}: control or invisible characters are not allowed here",
                         code="bad_characters")
            return
        hooks = domain.hooks
        try:
            for impl in hooks.implementations("chatd_command"):
                kwargs = {"client": client, "command": command, "args": invoke.args}
                hooks.run_guarded(
                    impl.plugin_name, "chatd_command", impl.function,
                    *impl.args(kwargs),
                    notify=client, passthrough=(CommandError,),
                )
            outer, self.speaking = self.speaking, (client, command)
            try:
                hooks.run_guarded(
                    command.plugin,
                    f"command /{command.name}",
                    command.handler,
                    client,
                    invoke.args,
                    notify=client,
                    passthrough=(CommandError,),
                )
            finally:
                self.speaking = outer
        except UsageError as exc:
            detail = f"{exc}; " if str(exc) else ""
            client.error(f"{detail}usage: {command.usage or '/' + command.name}", code=exc.code)
        except CommandError as exc:
            client.error(str(exc), code=exc.code)
