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
and chatd's rules: :func:`isupport`), the MOTD (``375``/``372``/``376``, or ``422``).
Then every message goes to the command mapping (``commands.translate``) except
what this module serves itself: ``CAP`` (a ``REQ`` changes the renderer: one per
capability set, shared), ``PING``/``PONG``, and ``PASS``/``USER`` (``462``).  Every
answer, this module's and the mapping's, is an :class:`~chatd.requests.Answer`:
it goes through the flood gate with the requests, so each line costs what a line
costs whoever answers it (no storm of ``CAP LS`` or malformed lines is answered
at line rate), and comes in order.

Keepalive: after ``ping_seconds`` with no line from the client the server sends
``PING``; with still no line ``ping_timeout_seconds`` later, ``ERROR :Closing link:
Ping timeout`` and the connection closes.  Not while the server holds the client's
reading (the flood gate's backlog is full): its silence is then the server's doing.
Every limit that closes an IRC connection says why first, as ``ERROR`` (the
renderer's ``local_error``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ...framing import LineTooLong
from ...requests import Answer, Request, SessionRequest
from ...version import __version__
from ..base import ChatProtocol, ProtocolLimits, Renderer, Session
from . import caps as capabilities
from .commands import CHANMODES, MODES_MAX, TARGMAX, translate
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
from .render import renderer_for
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
        f"CHANNELLEN={CHANNELLEN}",
        "CHANTYPES=#",
        f"KICKLEN={KICKLEN}",
        f"MODES={MODES_MAX}",
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


class IrcProtocol(ChatProtocol):
    """One IRC client's connection (see the module docstring)."""

    renderer = _RendererSlot(renderer_for(capabilities.NONE, DEFAULT_SERVER_NAME))  # type: ignore[assignment]
    decode = staticmethod(decode_irc_line)  # type: ignore[assignment]
    #: IRC clients may be in no channel (PART, JOIN 0).
    keeps_a_room = False
    names_every_join = True
    #: Every IRC message names its channel: no "you are now talking in #x".
    has_current_room = False

    __slots__ = ("_held", "_pinged", "_registration", "_renderer", "_timer", "state")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        options = self.options
        server_name = options.get("server_name") or DEFAULT_SERVER_NAME
        self.state = IrcState(server_name, options.get("network") or DEFAULT_NETWORK)
        self._registration: Registration | None = Registration(self.state)
        self._renderer: Renderer = renderer_for(capabilities.NONE, server_name)
        self._timer: Any = None
        #: When the server's keepalive PING went out, unanswered (None: none out).
        self._pinged: float | None = None
        #: Lines read while a SASL login is checked (reading is held meanwhile).
        self._held: list[Any] = []

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
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        every = float(self.options.get("ping_seconds", 0) or 0)
        if every > 0:
            self._timer = self._door.call_later(every, self._keepalive)

    def _keepalive(self) -> None:
        """Quiet for ``ping_seconds``: PING; quiet ``ping_timeout_seconds`` after it: out."""
        self._timer = None
        if not self.transport.is_open or self.session is None:
            return
        options = self.options
        every = float(options.get("ping_seconds", 0) or 0)
        if self.input_held:
            # The server holds its reading (the flood gate's backlog is full): the
            # client's lines, a PONG among them, wait in the kernel; the silence is
            # the server's doing, not a dead peer.  Alive; asked again later.
            self._pinged = None
            self._timer = self._door.call_later(every, self._keepalive)
            return
        now = time.monotonic()
        pinged = self._pinged
        if pinged is not None:
            if self.last_input < pinged:
                timeout = float(options.get("ping_timeout_seconds", 0) or 0)
                self.close(f"Ping timeout: {timeout:g} seconds", "ping_timeout")
                return
            self._pinged = None
        quiet = now - self.last_input
        if quiet < every:
            self._timer = self._door.call_later(every - quiet, self._keepalive)
            return
        self._pinged = now
        self._send([Message("PING", (self.state.server_name,), self.state.server_name)])
        self._timer = self._door.call_later(
            float(options.get("ping_timeout_seconds", 0) or 0), self._keepalive)

    def connection_lost(self, reason: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
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
            command = message.command
            if command == "PING":  # a fence: answered after what came before it
                pending.append(Answer(self._encoded(
                    pong(state, message.params) if message.params else
                    state.reply("461", "PING", "Not enough parameters"))))
            elif command == "MOTD":  # this server's only (a target is another server)
                if motd is None:  # read and encoded once per read: a MOTD flood shares it
                    motd = Answer(b"".join(self._encoded(m) for m in self._motd()))
                pending.append(motd)
            elif command == "PONG":
                pass  # any line is a sign of life (last_input)
            elif command == "CAP":  # the capabilities change now, the answer in turn
                pending.append(answer(cap_command(message, state)))
                chosen = renderer_for(capabilities.rendered(state.caps), state.server_name)
                if self._renderer is not chosen:
                    old, self._renderer = self._renderer, chosen
                    if session is not None:  # the rooms' renderer counts follow
                        session.renderer_changed(old)
            elif command == "AUTHENTICATE":  # SASL is registration's: no relogin
                pending.append(answer([
                    state.reply(ERR_SASLALREADY, "You have already authenticated")
                    if state.account is not None else
                    state.reply(ERR_SASLFAIL, "SASL is for registration only; "
                                "/identify PASSWORD now")]))
            elif command in ("PASS", "USER"):
                pending.append(answer([state.reply(ERR_ALREADYREGISTERED,
                                                   "You may not reregister")]))
            else:
                for item in translate(message, state):
                    if item.__class__ is Message:  # in order with the requests before it
                        pending.append(Answer(self._encoded(item)))  # type: ignore[arg-type]
                    else:
                        pending.append(item)  # type: ignore[arg-type]
        return pending


__all__ = ["DEFAULT_NETWORK", "DEFAULT_SERVER_NAME", "NOT_UTF8", "IrcProtocol", "IrcState",
           "decode_irc_line", "isupport", "motd_lines"]
