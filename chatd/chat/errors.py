"""The exceptions plugins raise to say no, and what the client is shown for each."""

from __future__ import annotations


class CommandError(Exception):
    """Raised by a command handler: the client is shown ``! <message>``."""


class UsageError(CommandError):
    """Raised by a command handler for bad arguments: the client is shown the usage line.

    An optional message is shown before it: ``! bad dice: 0d6; usage: /roll NdM``.
    """


class Reject(Exception):
    """Raised by ``chatd_filter_message`` to drop an event; the sender sees ``! <message>``."""


class NickError(CommandError):
    """A nick that is invalid or taken; the message says which."""


class RoomError(CommandError):
    """A room operation that cannot be done; the message says why."""
