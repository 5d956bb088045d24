"""Delivery backends for tests: presence answered later, or never.

A cluster's backend (Redis, later) answers presence questions when its reply
arrives, not inside the call as the local backend does.  These wrappers of the
:class:`~chatd.delivery.LocalBackend` let a test see the domain and the
commands under that condition without a cluster:

* :class:`DeferredBackend` answers every presence question after the call
  returns (the loop's ``call_soon``: later in the same loop pass, or the next),
  computing the answer then, from the local tables;
* :class:`SilentBackend` never answers (a backend that lost its server): the
  domain's timeout (``limits.presence_timeout_seconds``) must answer instead.

Delivery itself (``to_room``, ``to_client``...) and the fire-and-forget
presence facts (``release_nick``, ``joined``, ``parted``) go straight to the
local backend.  Use them from an in-process test::

    chat = InProcessChat(backend=DeferredBackend.factory)

(or ``backend=SilentBackend.factory``), or from a plugin's
``chatd_delivery_backend(server, local)`` hook for a real server process::

    return DeferredBackend(local, server.call_soon)

``silent`` may be switched at any time: a test connects its clients with a
deferred backend, then makes it silent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..delivery import LocalBackend, Member, Person, Place, Recipient, RoomInfo
from ..events import Event


class DeferredBackend:
    """The local backend, with every presence question answered after the call returns."""

    def __init__(self, local: LocalBackend, call_soon: Callable[..., Any]) -> None:
        self.local = local
        self._call_soon = call_soon
        #: True: questions are never answered (what :class:`SilentBackend` starts as).
        self.silent = False
        #: How many presence questions were asked.
        self.asked = 0
        #: The questions asked while silent, unanswered: :meth:`answer_late` answers them.
        self.unanswered: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    @classmethod
    def factory(cls, local: LocalBackend, server: Any, call_soon: Callable[..., Any]) -> Any:
        """What ``InProcessChat(backend=...)`` calls to make one."""
        return cls(local, call_soon)

    def _later(self, question: Callable[..., Any], *args: Any) -> None:
        self.asked += 1
        if self.silent:
            self.unanswered.append((question, args))
            return
        self._call_soon(question, *args)

    def answer_late(self) -> int:
        """Answer now, from the local tables, what was asked while silent (a reply that
        comes after the domain gave up); returns how many."""
        waiting, self.unanswered = self.unanswered, []
        for question, args in waiting:
            question(*args)
        return len(waiting)

    # presence questions: later (or never)

    def claim_nick(self, client: Recipient, nick: str, then: Callable[[bool], Any],
                   replacing: str | None = None) -> None:
        self._later(self.local.claim_nick, client, nick, then, replacing)

    def find_nick(self, nick: str, then: Callable[[Person | None], Any]) -> None:
        self._later(self.local.find_nick, nick, then)

    def members(self, room: str, then: Callable[[list[Member]], Any]) -> None:
        self._later(self.local.members, room, then)

    def room_list(self, then: Callable[[list[RoomInfo]], Any]) -> None:
        self._later(self.local.room_list, then)

    # presence facts and delivery: the local backend's, at once

    def release_nick(self, client: Recipient, nick: str) -> None:
        self.local.release_nick(client, nick)

    def joined(self, client: Recipient, room: Place) -> None:
        self.local.joined(client, room)

    def parted(self, client: Recipient, room: Place) -> None:
        self.local.parted(client, room)

    def to_room(self, event: Event, room: Place, exclude: Recipient | None = None) -> None:
        self.local.to_room(event, room, exclude)

    def to_rooms(self, event: Event, rooms: Iterable[Place],
                 exclude: Recipient | None = None) -> None:
        self.local.to_rooms(event, rooms, exclude)

    def to_client(self, event: Event, client: Recipient) -> None:
        self.local.to_client(event, client)

    def to_nick(self, event: Event, nick: str) -> bool:
        return self.local.to_nick(event, nick)

    def to_everyone(self, event: Event, exclude: Recipient | None = None) -> None:
        self.local.to_everyone(event, exclude)

    def flush(self) -> None:
        self.local.flush()


class SilentBackend(DeferredBackend):
    """The local backend, with presence questions never answered (until ``silent`` is
    set False)."""

    def __init__(self, local: LocalBackend, call_soon: Callable[..., Any]) -> None:
        super().__init__(local, call_soon)
        self.silent = True
