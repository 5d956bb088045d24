"""IRC registration, sans-IO: the messages a connection sends before it is a user.

A connection registers with ``NICK`` and ``USER`` (and ``PASS`` where the listener
has a password), with ``CAP`` negotiation in between if the client starts one
(``CAP LS [302]``/``CAP REQ``: registration waits for ``CAP END``).  Meanwhile
``PING`` is answered, ``QUIT`` ends the connection, and anything else is
``451 ERR_NOTREGISTERED``.  When :meth:`Registration.ready`, the protocol asks the
chat domain for a session as that nick (``SessionRequest(nick_required=True)``);
a nick that is invalid or taken comes back as ``432``/``433`` and the connection
stays here until another ``NICK``.

:class:`IrcState` is a connection's IRC state, registered or not: its nick as the
numerics address it (``*`` before it has one), its capabilities, the server's
name, and what registration learned.  :func:`cap_command` serves ``CAP`` before and
after registration (``CAP REQ`` later changes the renderer: a new capability set).
Numerics are written as their three digits here, with their RFC names beside
them; nothing here writes bytes.
"""

from __future__ import annotations

import base64
import binascii

from . import caps as capabilities
from .numerics import (
    ERR_SASLABORTED,
    ERR_SASLALREADY,
    ERR_SASLFAIL,
    ERR_SASLTOOLONG,
    RPL_LOGGEDIN,
    RPL_SASLMECHS,
    RPL_SASLSUCCESS,
)
from .wire import Message

# The numerics registration sends (Modern IRC's names).
RPL_WELCOME = "001"
RPL_YOURHOST = "002"
RPL_CREATED = "003"
RPL_MYINFO = "004"
RPL_ISUPPORT = "005"
RPL_MOTDSTART = "375"
RPL_MOTD = "372"
RPL_ENDOFMOTD = "376"
ERR_UNKNOWNERROR = "400"
ERR_INVALIDCAPCMD = "410"
ERR_INPUTTOOLONG = "417"
ERR_NOMOTD = "422"
ERR_NONICKNAMEGIVEN = "431"
ERR_ERRONEUSNICKNAME = "432"
ERR_NICKNAMEINUSE = "433"
ERR_NOTREGISTERED = "451"
ERR_NEEDMOREPARAMS = "461"
ERR_ALREADYREGISTERED = "462"
ERR_PASSWDMISMATCH = "464"

#: The numeric of each reason the chat domain gives for refusing a session's nick
#: (:meth:`chatd.protocols.base.ChatProtocol.session_refused`); others are 432.
NICK_REFUSALS = {
    "erroneous_nick": ERR_ERRONEUSNICKNAME,
    "nick_in_use": ERR_NICKNAMEINUSE,
    "nick_registered": ERR_NICKNAMEINUSE,
}

#: Commands a connection may send before it is registered (the rest: 451).
BEFORE = frozenset({"AUTHENTICATE", "CAP", "NICK", "USER", "PASS", "PING", "PONG", "QUIT"})
#: SASL: the mechanisms offered, a chunk of ``AUTHENTICATE`` (a full one means more
#: follow), the most bytes of one PLAIN answer (authzid, authcid, password: 3 x 300),
#: and the failed logins after which the connection is closed (``/identify``'s 5).
SASL_MECHANISMS = ("PLAIN",)
SASL_CHUNK = 400
SASL_MAX = 1200
SASL_FAILURES_MAX = 5
#: Most messages before registration: a client needs a handful (CAP LS, REQ, END, PASS,
#: NICK, USER, a few NICKs more after 433); past this it is closed, not answered forever.
MESSAGES_MAX = 64


class IrcState:
    """One IRC connection's state (see the module docstring); the ``state`` that
    ``commands.translate`` reads (``nick``, ``caps``, ``server_name``)."""

    __slots__ = ("account", "cap_version", "caps", "negotiating", "network", "nick",
                 "password", "realname", "server_name", "user", "wished")

    def __init__(self, server_name: str, network: str) -> None:
        self.server_name = server_name
        self.network = network
        #: The nick numerics are addressed to: ``*`` until the session began.
        self.nick = "*"
        #: The nick ``NICK`` asked for, before the session (None: none yet, or refused).
        self.wished: str | None = None
        self.user: str | None = None
        self.realname: str | None = None
        self.password: str | None = None
        self.caps: frozenset[str] = capabilities.NONE
        #: ``CAP LS``'s version (0: the client never asked).
        self.cap_version = 0
        #: Inside CAP negotiation: registration waits for ``CAP END``.
        self.negotiating = False
        #: The account SASL logged in as (the session begins identified as it).
        self.account: str | None = None

    def reply(self, numeric: str, *params: str) -> Message:
        """A numeric (or server command) from the server, addressed to this client."""
        return Message(numeric, (self.nick, *params), self.server_name)


class Registration:
    """The pre-session state machine over an :class:`IrcState`."""

    __slots__ = ("failures", "login", "messages", "quit", "sasl", "state")

    def __init__(self, state: IrcState) -> None:
        self.state = state
        #: The SASL exchange's base64 so far (None: no exchange open).
        self.sasl: str | None = None
        #: A PLAIN answer to check (account, password): the protocol asks the server
        #: and answers with :meth:`logged_in` or :meth:`login_failed`.
        self.login: tuple[str, str] | None = None
        #: Failed SASL logins on this connection (:data:`SASL_FAILURES_MAX` closes it).
        self.failures = 0
        #: The client said ``QUIT`` (its reason): the protocol closes the connection.
        self.quit: str | None = None
        #: Messages handled so far (at most :data:`MESSAGES_MAX`).
        self.messages = 0

    @property
    def flooding(self) -> bool:
        """More than :data:`MESSAGES_MAX` messages and still not registered."""
        return self.messages > MESSAGES_MAX

    @property
    def ready(self) -> bool:
        """NICK and USER are in and no CAP negotiation is open: ask for the session."""
        state = self.state
        return state.wished is not None and state.user is not None and not state.negotiating

    def handle(self, message: Message) -> list[Message]:
        """One message before registration; the replies to write at once."""
        command = message.command
        state = self.state
        params = message.params
        self.messages += 1
        if command not in BEFORE:
            return [state.reply(ERR_NOTREGISTERED, "You have not registered")]
        if command == "CAP":
            return cap_command(message, state)
        if command == "PING":
            return [pong(state, params)] if params else [
                state.reply(ERR_NEEDMOREPARAMS, "PING", "Not enough parameters")]
        if command == "PONG":
            return []
        if command == "AUTHENTICATE":
            return self._authenticate(params)
        if command == "QUIT":
            self.quit = params[0] if params else ""
            return []
        if command == "NICK":
            if not params or not params[0]:
                return [state.reply(ERR_NONICKNAMEGIVEN, "No nickname given")]
            state.wished = params[0]
            return []
        if command == "USER":
            if len(params) < 4 or not params[0]:
                return [state.reply(ERR_NEEDMOREPARAMS, "USER", "Not enough parameters")]
            state.user, state.realname = params[0], params[3]
            return []
        # PASS
        if not params or not params[0]:
            return [state.reply(ERR_NEEDMOREPARAMS, "PASS", "Not enough parameters")]
        state.password = params[0]
        return []

    # -- SASL PLAIN ----------------------------------------------------------------------

    def _authenticate(self, params: tuple[str, ...]) -> list[Message]:
        """``AUTHENTICATE``: a mechanism opens the exchange (``+`` asks for the answer),
        then the base64 answer in chunks of 400 (``+``: an empty one, or the end after a
        full chunk); ``*`` aborts.  A full answer becomes :attr:`login`."""
        state = self.state
        reply = state.reply
        if "sasl" not in state.caps:
            return [reply(ERR_SASLFAIL, "SASL authentication failed: CAP REQ sasl first")]
        if state.account is not None:
            return [reply(ERR_SASLALREADY, "You have already authenticated using SASL")]
        if not params or not params[0]:
            return [reply(ERR_NEEDMOREPARAMS, "AUTHENTICATE", "Not enough parameters")]
        data = params[0]
        if data == "*":
            opened, self.sasl = self.sasl is not None, None
            return [reply(ERR_SASLABORTED, "SASL authentication aborted")] if opened else [
                reply(ERR_SASLFAIL, "SASL authentication failed: no exchange to abort")]
        if self.login is not None:  # a check is running: nothing more until its answer
            return [reply(ERR_SASLFAIL, "SASL authentication failed: a login is being checked")]
        if self.sasl is None:
            if data.upper() not in SASL_MECHANISMS:
                return [reply(RPL_SASLMECHS, ",".join(SASL_MECHANISMS),
                              "are available SASL mechanisms"),
                        reply(ERR_SASLFAIL, "SASL authentication failed")]
            self.sasl = ""
            return [Message("AUTHENTICATE", ("+",))]
        if len(data) > SASL_CHUNK:
            self.sasl = None
            return [reply(ERR_SASLTOOLONG, "SASL message too long")]
        if data != "+":
            self.sasl += data
        if len(self.sasl) > SASL_MAX * 4 // 3 + 4:
            self.sasl = None
            return [reply(ERR_SASLTOOLONG, "SASL message too long")]
        if len(data) == SASL_CHUNK:
            return []  # more follows
        answer, self.sasl = self.sasl, None
        plain = _plain(answer)
        if plain is None:
            return self._failed()
        self.login = plain
        return []

    def logged_in(self, account: str) -> list[Message]:
        """The server says the PLAIN answer was right: ``900`` and ``903``; the session
        begins identified as ``account``."""
        state = self.state
        self.login = None
        state.account = account
        mask = f"{state.wished or '*'}!{state.user or '*'}@*"
        return [state.reply(RPL_LOGGEDIN, mask, account, f"You are now logged in as {account}"),
                state.reply(RPL_SASLSUCCESS, "SASL authentication successful")]

    def login_failed(self, code: str | None) -> list[Message]:
        """The server says no (a wrong password, an unknown account, too many failures,
        the check unavailable): ``904``, counted."""
        self.login = None
        return self._failed(code)

    def _failed(self, code: str | None = None) -> list[Message]:
        self.failures += 1
        why = {"too_many_attempts": ": too many failed attempts; try again later",
               "unavailable": ": the server cannot check passwords now"}.get(code or "", "")
        return [self.state.reply(ERR_SASLFAIL, f"SASL authentication failed{why}")]

    @property
    def failed_too_often(self) -> bool:
        """:data:`SASL_FAILURES_MAX` failed logins: the connection is closed, as
        ``/identify``'s is after as many."""
        return self.failures >= SASL_FAILURES_MAX

    def refused(self, code: str, text: str) -> Message:
        """The chat domain would not begin the session as the wished nick: the numeric
        that says so (``432``/``433``); the client stays unregistered, nickless, and
        may send another ``NICK``."""
        state = self.state
        nick, state.wished = state.wished or "*", None
        if " " in nick or nick[0] == ":":  # ``NICK :a b``: no parameter can say it
            nick = "*"
        return state.reply(NICK_REFUSALS.get(code, ERR_ERRONEUSNICKNAME), nick, text)


def _plain(answer: str) -> tuple[str, str] | None:
    """A PLAIN answer (``authzid NUL authcid NUL password``, base64) as (account,
    password), or None if it is not one.  An authzid other than the authcid (acting as
    someone else) is refused."""
    try:
        text = base64.b64decode(answer, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    parts = text.split("\0")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        return None
    authzid, authcid, password = parts
    if authzid and authzid.lower() != authcid.lower():
        return None
    return authcid, password


def pong(state: IrcState, params: tuple[str, ...]) -> Message:
    """The answer to ``PING token``: ``:server PONG server :token``."""
    return Message("PONG", (state.server_name, params[-1]), state.server_name)


def cap_command(message: Message, state: IrcState) -> list[Message]:
    """``CAP LS [version]``, ``REQ``, ``END``, ``LIST``: the replies, and the state
    changed (``state.caps``, ``state.negotiating``).  The caller rechooses its renderer
    when ``state.caps`` changed."""
    params = message.params
    if not params:
        return [state.reply(ERR_NEEDMOREPARAMS, "CAP", "Not enough parameters")]
    sub = params[0].upper()
    if sub == "LS":
        version = params[1] if len(params) > 1 else ""
        state.cap_version = max(state.cap_version, int(version) if version.isdigit()
                                and len(version) < 6 else 0)
        if state.nick == "*":
            state.negotiating = True
        if state.cap_version >= 302:
            state.caps = state.caps | capabilities.STICKY
        return _cap_lines(state, "LS", capabilities.advertised(state.cap_version))
    if sub == "LIST":
        return _cap_lines(state, "LIST", sorted(state.caps))
    if sub == "REQ":
        asked = params[1] if len(params) > 1 else ""
        if state.nick == "*":
            state.negotiating = True
        changed = capabilities.request(state.caps, asked)
        if changed is None:
            return [Message("CAP", (state.nick, "NAK", asked[:400]), state.server_name)]
        state.caps = changed
        return [Message("CAP", (state.nick, "ACK", asked[:400]), state.server_name)]
    if sub == "END":
        state.negotiating = False
        return []
    return [state.reply(ERR_INVALIDCAPCMD, params[0][:64], "Invalid CAP command")]


def _cap_lines(state: IrcState, sub: str, names: list[str]) -> list[Message]:
    """``CAP nick LS|LIST [*] :names``, split over lines (``*`` marks all but the last,
    for clients that asked 302; older ones get one line: the list fits)."""
    pieces = capabilities.chunks(names) if state.cap_version >= 302 else [" ".join(names)]
    last = len(pieces) - 1
    return [
        Message("CAP", (state.nick, sub, "*", piece) if i < last
                else (state.nick, sub, piece), state.server_name)
        for i, piece in enumerate(pieces)
    ]


__all__ = ["BEFORE", "MESSAGES_MAX", "IrcState", "Registration", "cap_command", "pong"]
