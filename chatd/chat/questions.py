"""Presence questions asked on a client's behalf, answered by a continuation.

The delivery backend answers presence questions (is this nick free, who has
that nick, who is in a room, which rooms exist) by calling a continuation with
the answer (see "Presence" in :mod:`chatd.delivery`).  :func:`ask` is the one
helper the domain and the facade's ``ask_*`` methods use:

* **answered at once** (the local backend, always): ``then`` runs inside the
  call, before :func:`ask` returns, exactly as if the answer had been returned;
  an exception it raises (a ``CommandError``) reaches the command that asked.
  Nothing is held, no timer is made: one small object per question, and
  questions are per command, never per chat line.
* **answered later** (a networked backend): the client's later requests wait,
  in order (the intake's hold: ``server.pause_requests``' mechanism; nobody
  else waits, the loop never blocks).  When the answer comes, ``then`` runs on
  the loop as the plugin that asked, with the request's reply tag (jsonl's
  ``re``), speech context and quietness (IRC's NOTICE: told no error)
  restored; a ``CommandError`` it raises is told to the client as its error
  (unless quiet); then what the client sent meanwhile is handled.
* **never answered**: after ``limits.presence_timeout_seconds`` the client is
  told ``the server did not answer in time; try again`` (or ``expired`` runs)
  and its requests go on; a late answer is dropped.  A client that disconnects
  meanwhile: the answer is dropped.  Either way what the dropped answer did is
  undone (``late``: a nick granted to nobody is given up again).

``then`` runs at most once, whatever the backend does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import CommandError

if TYPE_CHECKING:
    from .client import Client
    from .commands import Command
    from .domain import ChatDomain

log = logging.getLogger("chatd.chat")

#: What a client is told when the backend does not answer in time.
TIMEOUT_TEXT = "the server did not answer in time; try again"
#: The stable error code of that answer (for the typed errors of the replies).
TIMEOUT_CODE = "timeout"

_ASKING, _WAITING, _DONE = 0, 1, 2


class Question:
    """One presence question in flight: who asked, what to run with the answer."""

    __slots__ = ("_domain", "client", "expired", "held", "late", "plugin", "quiet", "speaking",
                 "state", "tag", "then", "timer")

    def __init__(self, domain: ChatDomain, client: Client | None, then: Callable[[Any], Any],
                 expired: Callable[[], Any] | None,
                 late: Callable[[Any], Any] | None = None) -> None:
        self._domain = domain
        self.late = late
        self.client = client
        self.then = then
        self.expired = expired
        self.state = _ASKING
        self.timer: Any = None
        self.tag: str | None = None
        self.speaking: tuple[Client, Command] | None = None
        self.plugin: str | None = None
        self.held = False
        self.quiet = False

    def answer(self, value: Any) -> None:
        """The continuation handed to the backend: at most once, on the loop."""
        state = self.state
        if state == _ASKING:  # inside the call: as if returned
            self.state = _DONE
            self.then(value)
        elif state == _WAITING:
            self.state = _DONE
            self.timer.cancel()
            if self._gone():  # the asker left meanwhile: only undo what the answer did
                self._undo(value)
            else:
                self._finish(self.then, value)
        else:  # after the timeout: only undo what it did; a second answer: dropped
            self._undo(value)

    def _gone(self) -> bool:
        """The client that asked has left (its session is over)."""
        client = self.client
        return client is not None and self._domain.clients.get(client.id) is not client

    def _undo(self, value: Any) -> None:
        """Undo what an answer nobody waits for any more did (``late``: a nick the
        backend granted after the timeout, or to a client that is gone), once."""
        if self.late is None:
            return
        late, self.late = self.late, None
        try:
            late(value)
        except Exception:
            log.exception("undoing a late presence answer for %s failed", self.client)

    def wait(self) -> None:
        """Not answered inside the call: hold the client, keep its context, set the
        timeout."""
        domain = self._domain
        self.state = _WAITING
        client = self.client
        intake = domain.intake
        if client is not None:
            if intake.replying is client:
                self.tag = intake.tag
                if self.tag is not None:
                    client.link.replying_later(self.tag)  # its answer comes later
            self.quiet = intake.quiet is client
            speaking = intake.speaking
            if speaking is not None and speaking[0] is client:
                self.speaking = speaking
            self.held = intake.hold(client) is not None
        self.plugin = domain.hooks.current_plugin
        self.timer = domain.scheduler.call_later(
            domain.config.limits.presence_timeout_seconds, self._expire)

    def _expire(self) -> None:
        if self.state != _WAITING:
            return
        self.state = _DONE
        self._finish(self.expired if self.expired is not None else self._timed_out)

    def _timed_out(self) -> None:
        if self.client is not None:
            self.client.error(TIMEOUT_TEXT, code=TIMEOUT_CODE)

    def _finish(self, function: Callable[..., Any], *args: Any) -> None:
        """Run ``function(*args)`` for the client as its request would have, then let
        what it sent meanwhile go on."""
        client = self.client
        domain = self._domain
        if self._gone():
            return  # it left while waiting: nobody to answer (its hold went with it)
        try:
            self._run(function, *args)
        finally:
            if self.held:
                domain.intake.release(client)  # type: ignore[arg-type]

    def _run(self, function: Callable[..., Any], *args: Any) -> None:
        client = self.client
        domain = self._domain
        intake = domain.intake
        tag = self.tag
        outer = intake.replying, intake.tag, intake.speaking, intake.quiet
        if tag is not None:
            client.link.replying_to(tag)  # type: ignore[union-attr]
            intake.replying, intake.tag = client, tag
        intake.speaking = self.speaking
        intake.quiet = client if self.quiet else None
        try:
            if self.plugin is None:
                function(*args)
            else:
                domain.hooks.run_guarded(self.plugin, "a presence answer", function, *args,
                                         notify=client, passthrough=(CommandError,))
        except CommandError as exc:
            if client is not None:
                client.error(str(exc), code=exc.code)
        except Exception:
            log.exception("a presence answer for %s failed", client)
        finally:
            if tag is not None:
                client.link.replying_to(None)  # type: ignore[union-attr]
            intake.replying, intake.tag, intake.speaking, intake.quiet = outer


def ask(domain: ChatDomain, client: Client | None,
        question: Callable[[Callable[[Any], Any]], Any], then: Callable[[Any], Any],
        expired: Callable[[], Any] | None = None,
        late: Callable[[Any], Any] | None = None) -> None:
    """Ask the backend ``question(answer)`` on behalf of ``client`` and run ``then(answer)``
    with the reply: at once if it answers at once, else later (see the module
    docstring).  ``expired()`` runs instead at the timeout (default: the client is
    told to try again); ``late(answer)``, for an answer after it, undoes what the
    backend did (a nick claimed after the domain gave up).  ``client`` None: nobody
    is held or told."""
    asked = Question(domain, client, then, expired, late)
    question(asked.answer)
    if asked.state == _ASKING:
        asked.wait()
