"""The exceptions plugins raise to say no, and what the client is shown for each.

Each carries a stable ``code`` beside its text (``CommandError("no such nick: carol",
code="no_such_nick")``): the text is for people (``! no such nick: carol`` on the line
protocol), the code for programs (jsonl's ``"code"``; an IRC listener's numeric).
:data:`chatd.replies.ERROR_CODES` lists chatd's codes; a plugin may use its own.
Without one, a class's default applies (``error``; ``usage`` for :class:`UsageError`,
``rejected`` for :class:`Reject`).
"""

from __future__ import annotations


class _Coded(Exception):
    """An exception with a ``code`` (the class's default unless one is given)."""

    code: str = "error"

    def __init__(self, *args: object, code: str | None = None) -> None:
        super().__init__(*args)
        if code is not None:
            self.code = code


class CommandError(_Coded):
    """Raised by a command handler: the client is shown ``! <message>`` (an ``error``
    event with this ``code``)."""


class UsageError(CommandError):
    """Raised by a command handler for bad arguments: the client is shown the usage line.

    An optional message is shown before it: ``! bad dice: 0d6; usage: /roll NdM``.
    """

    code = "usage"


class Reject(_Coded):
    """Raised by ``chatd_filter_message`` to drop an event; the sender sees ``! <message>``.

    Also what ``chatd_check_join``, ``chatd_check_nick`` and ``chatd_check_speak`` may
    return instead of a plain string, to give their refusal a code:
    ``return Reject("you are banned from #dev", code="banned")``.
    """

    code = "rejected"


class NickError(CommandError):
    """A nick that is invalid or taken; the message says which (the code too:
    ``erroneous_nick``, ``nick_in_use``...)."""


class RoomError(CommandError):
    """A room operation that cannot be done; the message says why (the code too:
    ``bad_room_name``, ``too_many_rooms``, ``banned``...)."""


def refusal_of(answer: object, default: str) -> tuple[str, str]:
    """A ``chatd_check_*`` hook's refusal as (text, code): a string has ``default``, a
    :class:`Reject` (or anything with a ``code``) its own."""
    code = getattr(answer, "code", None)
    return str(answer), code if isinstance(code, str) and code else default
