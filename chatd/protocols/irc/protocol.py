"""The IRC protocol: one connection of an ``irc`` listener, from registration to ``QUIT``.

Framing: lines end in CRLF (or LF); a line is at most 512 bytes, CRLF included,
plus its tags (``max_tag_bytes``, IRCv3's 8191).  A longer one is answered
``417 ERR_INPUTTOOLONG`` and dropped, never cut.  Lines are taken raw (no
sanitising: ``\\x01ACTION`` and formatting codes pass to the command mapping and
the renderers, which answer for them), and decoded as strict UTF-8: a line that is
not UTF-8 is refused with ``FAIL * INVALID_UTF8`` (the server says ``UTF8ONLY``),
never guessed at or repaired.  A line that is not an IRC message is answered
``400``.

Registration (:mod:`.registration`): ``CAP LS [302]``/``REQ``/``END``/``LIST``,
``PASS`` (the listener's password), ``NICK``, ``USER``; ``PING`` answered, ``QUIT``
honoured, anything else ``451``; past 64 lines before registration (a line that is
no message, answered ``400``/``417``/``FAIL``, counts too) the connection is closed
(``ERROR``).  Then the session is asked for as the nick the
client gave (``nick_required``): a nick that is invalid, reserved or taken is
``432``/``433`` and the connection stays in registration for another ``NICK``; a
wrong password is ``464`` and ``ERROR``, then the connection closes.  Registration
must end within ``limits.registration_timeout_seconds`` (for IRC always, not only
under pressure; 0: no limit), else ``ERROR :Closing link: registration timed out``.

On the session's start: ``001``-``004``, ``005`` (ISUPPORT, from the server's limits
and chatd's rules: :func:`isupport`), the MOTD (``375``/``372``/``376``, or ``422``),
then the chat domain's LUSERS (``counts_at_start``: the *presence* plugin's counts,
251-255 and 265/266, the first thing the session is sent).
Then every message goes to the command mapping (``commands.translate``) except
what this module serves itself: ``CAP`` (a ``REQ`` changes the renderer: one per
capability set, shared), ``PING``/``PONG``, and ``PASS``/``USER`` (``462``).  Every
answer, this module's and the mapping's, is an :class:`~chatd.requests.Answer`:
it goes through the flood gate with the requests, so each line costs what a line
costs whoever answers it (no storm of ``CAP LS`` or malformed lines is answered
at line rate), and comes in order.

labeled-response: after registration, a message with ``@label`` (from a client
with the capability) becomes requests tagged with a number of this connection's;
the domain brackets the handling of each (``replying_to``), and of each answer that
comes later (``replying_later`` counts those), and what is delivered meanwhile is
kept until the message's last request is answered, then written as one answer:
``ACK``, the one message labelled, or a ``labeled-response`` batch
(``render.labeled``).  A ``CHATHISTORY`` is gathered the same way, labelled or
not, so that a chatd error answering it is written as ``FAIL CHATHISTORY``.

Keepalive: after ``ping_seconds`` with no line from the client the server sends
``PING``; with still no line ``ping_timeout_seconds`` later, ``ERROR :Closing link:
Ping timeout`` and the connection closes.  Not while the server holds the client's
reading (the flood gate's backlog is full): its silence is then the server's doing.
Every limit that closes an IRC connection says why first, as ``ERROR`` (the
renderer's ``local_error``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ...events import Error
from ...framing import LineTooLong
from ...requests import Answer, Invoke, Request, SessionRequest
from ...version import __version__
from ..base import ChatProtocol, ProtocolLimits, Renderer, Session
from ..keepalive import Keepalive
from . import caps as capabilities
from .commands import CHANMODES, CHATHISTORY_MAX, MODES_MAX, MSGREFTYPES, TARGMAX, translate
from .numerics import ERR_SASLALREADY, ERR_SASLFAIL
from .registration import (
    ERR_ALREADYREGISTERED,
    ERR_INPUTTOOLONG,
    ERR_NOMOTD,
    ERR_PASSWDMISMATCH,
    ERR_UNKNOWNERROR,
    RPL_CREATED,
    RPL_ENDOFMOTD,
    RPL_ISUPPORT,
    RPL_MOTD,
    RPL_MOTDSTART,
    RPL_MYINFO,
    RPL_WELCOME,
    RPL_YOURHOST,
    IrcState,
    Registration,
    cap_command,
    pong,
)
from .render import labeled, renderer_for
from .wire import BODY_MAX, TAGS_MAX, Message, WireError, parse

#: The server's name in message sources when the listener names none.
DEFAULT_SERVER_NAME = "chatd.local"
#: The network's name (``NETWORK``) when the listener names none.
DEFAULT_NETWORK = "chatd"
#: Longest topic, away message and kick reason chatd keeps (chatd.chat.domain.TOPIC_MAX,
#: the presence plugin's AWAY_MAX, moderation's REASON_MAX: a test checks they agree).
TOPICLEN = 300
AWAYLEN = 200
KICKLEN = 200
#: A room name: '#' and 1 to 32 letters, digits or _-. (chatd.chat.rooms).
CHANNELLEN = 33
#: When this process started, for ``003``.
_STARTED = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
#: Codes of the listener password's refusals: ``464``, ``ERROR``, closed.
_PASSWORD_CODES = frozenset({"password_required", "wrong_password", "password_limit"})
#: Longest MOTD line written as one ``372`` (longer lines continue on the next).
_MOTD_WIDTH = 400
_MOTD_MAX_BYTES = 65536


def _one_line(text: str) -> str:
    """Server text as one IRC parameter: no CR, LF or NUL (they would end the line)."""
    return text.replace("\r", " ").replace("\n", " ").replace("\0", " ") or "-"


class NotUtf8:
    """What the framer makes of a line that is not UTF-8 (refused, never repaired)."""

    __slots__ = ()


NOT_UTF8 = NotUtf8()


def decode_irc_line(raw: bytes | bytearray | memoryview) -> str | NotUtf8:
    """A framed line as sent: strict UTF-8 text, or :data:`NOT_UTF8`."""
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return NOT_UTF8


def isupport(limits: Any, network: str) -> list[str]:
    """The ``005`` tokens: what this server is, said truthfully (docs/irc.md).

    Nicks are ASCII (chatd.chat.nicks) and compare by ``str.lower``: ``ascii``
    casemapping.  Lengths come from the server's limits and chatd's fixed maxima."""
    return [
        f"AWAYLEN={AWAYLEN}",
        "CASEMAPPING=ascii",
        f"CHANLIMIT=#:{limits.max_rooms_per_client}",
        f"CHANMODES={CHANMODES}",
        f"CHATHISTORY={CHATHISTORY_MAX}",
        "CLIENTTAGDENY=*",  # no client-only tag is relayed (TAGMSG carries nothing)
        f"CHANNELLEN={CHANNELLEN}",
        "CHANTYPES=#",
        f"KICKLEN={KICKLEN}",
        f"MODES={MODES_MAX}",
        "MSGREFTYPES=" + ",".join(MSGREFTYPES),
        f"NETWORK={network}",
        f"NICKLEN={limits.max_nick_bytes}",
        "PREFIX=(o)@",
        "TARGMAX=" + ",".join(f"{command}:{limit}" for command, limit in TARGMAX.items()),
        f"TOPICLEN={TOPICLEN}",
        "UTF8ONLY",
    ]


def motd_lines(options: Mapping[str, Any]) -> list[str] | None:
    """The MOTD's lines (``motd``, or the file ``motd_file``), or None for none; a file
    that cannot be read is no MOTD (``422``), never a failed registration."""
    text = options.get("motd")
    path = options.get("motd_file")
    if text is None and path is not None:
        try:
            with open(os.fspath(path), "rb") as handle:
                text = handle.read(_MOTD_MAX_BYTES).decode("utf-8", "replace")
        except OSError:
            return None
    if text is None:
        return None
    lines: list[str] = []
    for line in str(text).splitlines() or [""]:
        line = "".join(c if c >= " " or c in "\x02\x03\x0f\x1d\x1f" else " " for c in line)
        while len(line.encode()) > _MOTD_WIDTH:
            cut = _MOTD_WIDTH // 4  # characters: at most 4 bytes each
            lines.append(line[:cut])
            line = line[cut:]
        lines.append(line)
    return lines


class _RendererSlot:
    """``IrcProtocol.renderer``: the class's default renderer (refusals, the registry's
    name check) read from the class; the connection's own (per capability set) read
    from a connection."""

    __slots__ = ("default",)

    def __init__(self, default: Renderer) -> None:
        self.default = default

    def __get__(self, obj: IrcProtocol | None, cls: type | None = None) -> Renderer:
        return self.default if obj is None else obj._renderer

    def __set__(self, obj: IrcProtocol, value: Renderer) -> None:
        obj._renderer = value


#: A chatd error's code as the ``FAIL CHATHISTORY`` code it is (IRCv3 chathistory): the
#: rest are ``MESSAGE_ERROR``.
_HISTORY_FAILS = {
    "not_in_room": "INVALID_TARGET", "not_identified": "INVALID_TARGET",
    "no_such_nick": "INVALID_TARGET", "usage": "INVALID_PARAMS",
}


def _history_of(message: Message, items: list[Any]) -> tuple[str, str] | None:
    """``(subcommand, target)`` of a ``CHATHISTORY`` the command mapping passed on to the
    history plugin (None for any other message, or one refused already)."""
    if message.command != "CHATHISTORY" or len(message.params) < 2 or \
            not any(item.__class__ is Invoke for item in items):
        return None
    return message.params[0].upper(), message.params[1]


class _Response:
    """The answer to one labelled message (IRCv3 labeled-response), or to one
    ``CHATHISTORY``, gathered until its last request is answered: ``open`` counts the
    answers still to come (one per request the message became, one more per presence
    question that went out).  ``label``: the client's (None: a ``CHATHISTORY`` without
    one); ``history``: the ``CHATHISTORY`` subcommand and target, whose errors are
    ``FAIL CHATHISTORY`` replies rather than numerics."""

    __slots__ = ("data", "history", "label", "open")

    def __init__(self, label: str | None, requests: int,
                 history: tuple[str, str] | None = None) -> None:
        self.label = label
        self.open = requests
        self.history = history
        self.data: list[bytes] = []


class IrcProtocol(ChatProtocol):
    """One IRC client's connection (see the module docstring)."""

    renderer = _RendererSlot(renderer_for(capabilities.NONE, DEFAULT_SERVER_NAME))  # type: ignore[assignment]
    decode = staticmethod(decode_irc_line)  # type: ignore[assignment]
    #: IRC clients may be in no channel (PART, JOIN 0).
    keeps_a_room = False
    names_every_join = True
    #: Every IRC message names its channel: no "you are now talking in #x".
    has_current_room = False
    #: LUSERS (251-255, 265/266) after the MOTD, as servers send at registration.
    counts_at_start = True

    __slots__ = ("_answering", "_held", "_keepalive", "_labels", "_registration", "_renderer",
                 "_responses", "_timer", "state")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        options = self.options
        server_name = options.get("server_name") or DEFAULT_SERVER_NAME
        self.state = IrcState(server_name, options.get("network") or DEFAULT_NETWORK)
        self._registration: Registration | None = Registration(self.state)
        self._renderer: Renderer = renderer_for(capabilities.NONE, server_name)
        self._timer: Any = None
        #: When the server's keepalive PING went out, unanswered (None: none out).
        self._keepalive: Keepalive | None = None
        #: Lines read while a SASL login is checked (reading is held meanwhile).
        self._held: list[Any] = []
        #: labeled-response: the answers being gathered, by the tag their requests
        #: carry (a number of this connection's, never the client's label, which need
        #: not be unique); the one being answered now; the last tag given.
        self._responses: dict[str, _Response] = {}
        self._answering: _Response | None = None
        self._labels = 0

    @property
    def options(self) -> Mapping[str, Any]:
        """The listener's IRC options ({} for a protocol made with no listener)."""
        listener = self.listener
        return listener.options if listener is not None else {}

    @classmethod
    def input_limits(cls, server: ProtocolLimits, options: Mapping[str, Any]) -> ProtocolLimits:
        """IRC's own: 510 bytes of message (512 with CRLF) plus the tags allowance."""
        tags = int(options.get("max_tag_bytes", TAGS_MAX))
        return ProtocolLimits(max_line_bytes=BODY_MAX - 2 + tags, recvq_max=server.recvq_max)

    # -- writing -----------------------------------------------------------------------

    def _send(self, messages: Iterable[Message]) -> None:
        """Write ``messages``; one that cannot be written (a bug's CR in a field) is a
        ``400`` instead, never a broken line."""
        write = self.transport.write
        for message in messages:
            write(self._encoded(message))

    def _encoded(self, message: Message) -> bytes:
        try:
            return message.encode()
        except WireError as exc:
            return self.state.reply(ERR_UNKNOWNERROR, message.command,
                                    f"cannot say that: {exc}"[:200]).encode()

    def goodbye(self, reason: str) -> bytes:
        """IRC clients expect ``ERROR`` before the server closes: ``ERROR :Closing link:
        reason`` (a shutdown)."""
        return self.renderer.local_error(f"Closing link: {reason}"[:400])

    def close(self, reason: str, limit: str | None = None) -> None:
        """Every close the server decides says why first, as IRC clients expect:
        ``ERROR :Closing link: reason`` (a ``QUIT``, a limit, a kill), then the
        connection closes gracefully (queued output first)."""
        if self.transport.is_open:
            self.transport.write(self.renderer.local_error(f"Closing link: {reason}"[:400]))
        self.transport.close(reason, limit=limit)

    def tell(self, text: str, *, code: str | None = None) -> None:
        """An error about the connection itself: ``464`` and closing for the listener
        password, ``417`` for an over-long line, ``ERROR`` for an excess flood (the
        connection is cut next), a server ``NOTICE`` for the rest (a close that follows
        says ``ERROR`` itself: :meth:`close`)."""
        if code in _PASSWORD_CODES:
            self._send([self.state.reply(ERR_PASSWDMISMATCH, "Password incorrect")])
            self.close(text, code)
        elif code == "line_too_long":
            self._send([self.state.reply(ERR_INPUTTOOLONG, "Input line was too long")])
        elif code == "excess_flood":
            self.transport.write(self.renderer.local_error(text, code=code))
        else:
            self._send([Message("NOTICE", (self.state.nick, _one_line(text)),
                                self.state.server_name)])

    # -- labeled-response ----------------------------------------------------------------

    def deliver(self, event: Any, viewer: str | None, stamped: bool = False, *,
                elsewhere: bool = False) -> None:
        """As every protocol, but what answers a labelled request is kept for its
        response (written when the request's whole answer is in)."""
        response = self._answering
        if response is None:
            super().deliver(event, viewer, stamped, elsewhere=elsewhere)
            return
        if response.history is not None and event.__class__ is Error:
            data = self._history_fail(response.history, event)
        else:
            data = self.renderer.render_for(event, viewer, None)
        if data:
            response.data.append(data)

    def _history_fail(self, history: tuple[str, str], error: Error) -> bytes:
        """A chatd error answering ``CHATHISTORY`` as ``FAIL CHATHISTORY CODE sub target``:
        a room the client may not read (not in it) says no more than a name that is no
        room (both ``INVALID_TARGET``), so nothing of it is told."""
        code = _HISTORY_FAILS.get(error.code, "MESSAGE_ERROR")
        sub, target = history
        params = (sub,) if code == "INVALID_PARAMS" else (sub, target)
        return self._encoded(Message("FAIL", ("CHATHISTORY", code, *params,
                                              _one_line(error.text)[:300]),
                                     self.state.server_name))

    def answer(self, payload: bytes) -> None:
        response = self._answering
        if response is None:
            super().answer(payload)
        elif payload:
            response.data.append(payload)

    def replying_to(self, tag: str | None) -> None:
        """The domain answers the request tagged ``tag`` (one of this connection's
        labelled messages) from now on; None: that answer is over, and the response goes
        out once nothing more is to come."""
        if tag is not None:
            self._answering = self._responses.get(tag)
            return
        response, self._answering = self._answering, None
        if response is None:
            return
        response.open -= 1
        if response.open <= 0:
            self._responses = {k: r for k, r in self._responses.items() if r is not response}
            self._respond(response)

    def replying_later(self, tag: str) -> None:
        response = self._responses.get(tag)
        if response is not None:
            response.open += 1

    def _respond(self, response: _Response) -> None:
        """The labelled answer: ``ACK``, the one message labelled, or a batch."""
        if response.label is None:
            self.transport.write(b"".join(response.data))
            return
        lines = [parse(line.decode("utf-8", "surrogateescape"))
                 for line in b"".join(response.data).split(b"\r\n") if line]
        self._labels += 1
        self._send(labeled(lines, response.label, f"L{self._labels}", self.state.server_name,
                           batch="batch" in self.state.caps))

    def _label(self, message: Message) -> str | None:
        """The client's label on ``message``, if it negotiated labeled-response."""
        if not message.tags or "labeled-response" not in self.state.caps:
            return None
        return message.tags.get("label") or None

    def _labeled_requests(self, label: str | None, items: list[Any],
                          history: tuple[str, str] | None = None) -> list[Request]:
        """``items`` (requests and messages to write, in order) tagged as the answer to one
        labelled message (or ``CHATHISTORY``): gathered into one response; none at all:
        ``ACK`` now, in order."""
        if not items:
            if label is None:
                return []
            return [Answer(self._encoded(labeled([], label, "", self.state.server_name,
                                                 batch=False)[0]))]
        self._labels += 1
        tag = str(self._labels)
        self._responses[tag] = _Response(label, len(items), history)
        out: list[Request] = []
        for item in items:
            if item.__class__ is Message:
                out.append(Answer(self._encoded(item), tag))
            else:
                out.append(dataclasses.replace(item, tag=tag))
        return out

    # -- registration ------------------------------------------------------------------

    def connection_made(self) -> None:
        """IRC's own rule: no session until registration; its timer starts now."""
        timeout = self._door.server_limits.registration_timeout_seconds
        if timeout > 0:
            self._timer = self._door.call_later(timeout, self._registration_over)

    def _registration_over(self) -> None:
        self._timer = None
        if self.session is None and self.transport.is_open:
            self.close("registration timed out", "registration_timeout")

    def _first_line(self, line: Any) -> bool:
        return line.__class__ is not str or super()._first_line(line)

    def _before_session(self, lines: list[Any]) -> list[Any]:
        """Registration: each line until the session begins; the lines after it."""
        registration = self._registration
        if registration is None:  # pragma: no cover - a session exists then
            return lines
        for index, line in enumerate(lines):
            read = self._read(line)
            if read.__class__ is Message:
                self._send(registration.handle(read))  # type: ignore[arg-type]
            elif read:  # no message: answered, and counted like one
                registration.messages += 1
                self._send(read)  # type: ignore[arg-type]
            else:
                continue  # a blank line: nothing to answer, nothing to count
            if registration.login is not None:
                self._check_login(registration, lines[index + 1:])
                return []
            if registration.failed_too_often:
                self.close("too many failed SASL logins", "too_many_attempts")
                return []
            if registration.flooding:
                self.close("too many messages before registration", "excess_flood")
                return []
            if registration.quit is not None:
                self.close(f"Quit: {registration.quit}"[:400], None)
                return []
            if registration.ready and self._begin():
                return lines[index + 1:]
            if not self.transport.is_open:
                return []
        return []

    def _check_login(self, registration: Registration, rest: list[Any]) -> None:
        """A SASL PLAIN answer to check: the server's account check (``/identify``'s
        limits), the connection's reading held and the lines after it kept until the
        answer, so a pipelined ``CAP END`` registers identified or not, in order."""
        account, password = registration.login  # type: ignore[misc]
        self._held = rest
        self.transport.hold_reading()
        self._door.check_account(self, account, password, self._login_answered)

    def _login_answered(self, account: str | None, code: str | None) -> None:
        registration = self._registration
        if registration is None or not self.transport.is_open:
            return
        self._send(registration.logged_in(account) if account is not None
                   else registration.login_failed(code))
        if registration.failed_too_often:
            self.close("too many failed SASL logins", "too_many_attempts")
            return
        held, self._held = self._held, []
        self.transport.resume_reading()
        if held:
            self._lines_received(held)

    def _begin(self) -> bool:
        """Ask for the session as the nick registration learned."""
        state = self.state
        return self.begin_session(SessionRequest(
            nick=state.wished, user=state.user, realname=state.realname,
            password=state.password, account=state.account, nick_required=True))

    def session_refused(self, code: str, text: str) -> None:
        """The nick cannot be had: ``432``/``433``, and registration goes on."""
        self.session = None
        self.registered = False
        if self._registration is not None:
            self._send([self._registration.refused(code, text)])

    def session_started(self, session: Session) -> None:
        """The nick is had: the welcome burst, before chatd's own welcome and joins."""
        self.session = session
        state = self.state
        state.nick = nick = str(getattr(session, "nick", state.wished))
        state.password = None  # never kept past its use
        self._registration = None
        self._renderer = renderer_for(capabilities.rendered(state.caps), state.server_name)
        source = getattr(session, "source", None)
        mask = f"{nick}!{getattr(source, 'ident', '') or nick}@{getattr(source, 'host', '') or '*'}"
        self._send(self._welcome(mask))
        self._keepalive_from_now()

    def _welcome(self, mask: str) -> list[Message]:
        state = self.state
        reply = state.reply
        server = state.server_name
        version = f"chatd-{__version__}"
        burst = [
            reply(RPL_WELCOME, f"Welcome to the {state.network} IRC network, {mask}"),
            reply(RPL_YOURHOST, f"Your host is {server}, running version {version}"),
            reply(RPL_CREATED, f"This server was created {_STARTED}"),
            reply(RPL_MYINFO, server, version, "o", "biotq", "boq"),
        ]
        tokens = isupport(self._door.server_limits, state.network)
        for start in range(0, len(tokens), 12):
            burst.append(reply(RPL_ISUPPORT, *tokens[start:start + 12],
                               "are supported by this server"))
        return burst + self._motd()

    def _motd(self) -> list[Message]:
        """The MOTD (``375``/``372``/``376``) or ``422``: at registration and on ``MOTD``."""
        reply = self.state.reply
        motd = motd_lines(self.options)
        if motd is None:
            return [reply(ERR_NOMOTD, "MOTD File is missing")]
        return [reply(RPL_MOTDSTART, f"- {self.state.server_name} Message of the day - "),
                *(reply(RPL_MOTD, f"- {line}") for line in motd),
                reply(RPL_ENDOFMOTD, "End of /MOTD command.")]

    # -- keepalive ---------------------------------------------------------------------

    def _keepalive_from_now(self) -> None:
        """The session began: the registration timer gives way to the keepalive."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        options = self.options
        self._keepalive = Keepalive(
            self._door, float(options.get("ping_seconds", 0) or 0),
            float(options.get("ping_timeout_seconds", 0) or 0),
            heard=lambda: self.last_input, held=lambda: self.input_held,
            alive=lambda: self.transport.is_open and self.session is not None,
            ping=self._ping,
            give_up=lambda timeout: self.close(f"Ping timeout: {timeout:g} seconds",
                                               "ping_timeout"))
        self._keepalive.start()

    def _ping(self) -> None:
        self._send([Message("PING", (self.state.server_name,), self.state.server_name)])

    def connection_lost(self, reason: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._keepalive is not None:
            self._keepalive.stop()
        super().connection_lost(reason)

    # -- after registration --------------------------------------------------------------

    def _read(self, line: Any) -> Message | list[Message]:
        """A framed line as a message, or the answer to a line that is none (``417``,
        ``FAIL``, ``400``; nothing for a blank line).  The answer is not written here:
        before registration it counts toward :data:`MESSAGES_MAX` like any message,
        after it it waits in the flood gate like any answer (:meth:`parse`)."""
        cls = line.__class__
        if cls is LineTooLong:
            return [self._too_long()]
        if cls is NotUtf8:
            return [Message("FAIL", ("*", "INVALID_UTF8",
                                     "Message rejected: it is not UTF-8 (UTF8ONLY)"),
                            self.state.server_name)]
        if not line or line.isspace():
            return []
        body = line
        if line[0] == "@":
            tags, _, body = line.partition(" ")
            if len(tags.encode("utf-8")) + 1 > self._max_tag_bytes():  # with '@' and ' '
                return [self._too_long()]
        if len(body.encode("utf-8")) > BODY_MAX - 2:
            return [self._too_long()]
        try:
            return parse(line)
        except WireError as exc:
            return [self.state.reply(ERR_UNKNOWNERROR, "*", f"Malformed line: {exc}"[:300])]

    def _too_long(self) -> Message:
        return self.state.reply(ERR_INPUTTOOLONG, "Input line was too long")

    def _answer(self, messages: list[Message]) -> Answer:
        """``messages`` for this client, written in turn (after the requests before)."""
        return Answer(b"".join(self._encoded(m) for m in messages))

    def _max_tag_bytes(self) -> int:
        """The tags allowance of a line (IRCv3's 8191, ``@`` and the space included)."""
        return int(self.options.get("max_tag_bytes", TAGS_MAX))

    def parse(self, lines: list[Any]) -> list[Request]:
        """Registered: each message to the command mapping, in order; what this module
        serves itself (CAP, PING, PONG, PASS, USER, AUTHENTICATE, a line that is no
        message) served here.  Every answer is an :class:`~chatd.requests.Answer`, so
        it waits in the flood gate like a PING's (a storm of ``CAP LS`` or of
        malformed lines is a flood, delayed in order, never answered at line rate)."""
        session = self.session
        state = self.state
        if session is not None:
            state.nick = str(getattr(session, "nick", state.nick))
        pending: list[Request] = []
        answer = self._answer
        motd: Answer | None = None
        for line in lines:
            read = self._read(line)
            if read.__class__ is not Message:
                if read:
                    pending.append(answer(read))  # type: ignore[arg-type]
                continue
            message: Message = read  # type: ignore[assignment]
            label = self._label(message)
            if message.command == "MOTD" and label is None:  # a MOTD flood shares one answer
                if motd is None:  # read and encoded once per read
                    motd = answer(list(self._motd()))
                pending.append(motd)
                continue
            items = self._served(message, session)
            history = _history_of(message, items)
            if label is not None or history is not None:
                pending += self._labeled_requests(label, items, history)
                continue
            for item in items:
                if item.__class__ is Message:  # in order with the requests before it
                    pending.append(Answer(self._encoded(item)))
                else:
                    pending.append(item)
        return pending

    def _served(self, message: Message, session: Session | None) -> list[Any]:
        """What ``message`` stands for, in order: chatd requests, and messages to write to
        this client (answers of this module's or of the command mapping)."""
        state = self.state
        command = message.command
        if command == "PING":  # a fence: answered after what came before it
            return [pong(state, message.params) if message.params else
                    state.reply("461", "PING", "Not enough parameters")]
        if command == "MOTD":  # this server's only (a target is another server)
            return list(self._motd())
        if command == "PONG":
            return []  # any line is a sign of life (last_input)
        if command == "CAP":
            answer = cap_command(message, state)
            chosen = renderer_for(capabilities.rendered(state.caps), state.server_name)
            if self._renderer is not chosen:
                old, self._renderer = self._renderer, chosen
                if session is not None:  # the rooms' renderer counts follow
                    session.renderer_changed(old)
            return answer  # the capabilities change now, the answer waits its turn
        if command == "AUTHENTICATE":  # SASL is registration's: no relogin
            return [state.reply(ERR_SASLALREADY, "You have already authenticated")
                    if state.account is not None else
                    state.reply(ERR_SASLFAIL, "SASL is for registration only; "
                                "/identify PASSWORD now")]
        if command in ("PASS", "USER"):
            return [state.reply(ERR_ALREADYREGISTERED, "You may not reregister")]
        return translate(message, state)


__all__ = ["DEFAULT_NETWORK", "DEFAULT_SERVER_NAME", "NOT_UTF8", "IrcProtocol", "IrcState",
           "decode_irc_line", "isupport", "motd_lines"]
