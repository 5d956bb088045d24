"""The netcat line protocol: what a person with ``nc host 7788`` reads and types.

Input: one line is one request.  ``/name args`` is a command, ``//text`` sends
the literal ``/text``, anything else is a chat line for the current room.

Output: every line starts with a marker that says what it is, and nothing a
user or a plugin sends can produce another line's marker (DESIGN.md section 1):

==================  =================================  ==========================
marker              meaning                            example
==================  =================================  ==========================
``<nick> ``         a chat message in the room         ``<bob> hi``
``* nick ``         an action (``/me``)                ``* bob waves``
``*nick* ``         a private message to you           ``*bob* psst``
``-> *nick* ``      a private message you sent         ``-> *bob* psst``
``-nick- ``         a notice from a user in the room   ``-bob- deploy at 5``
``-*nick*- ``       a private notice to you            ``-*bob*- build done``
``-> -*nick*- ``    a private notice you sent          ``-> -*bob*- build done``
``*** ``            a notice from the server           ``*** bob joined #dev``
``*** [name] ``     a notice from plugin *name*        ``*** [dice] bob rolled 7``
``! ``              an error, for you alone            ``! no such nick: carol``
``! [name] ``       an error from plugin *name*        ``! [dice] too many dice``
==================  =================================  ==========================

Plugins shipped with chatd (the built-ins) are the server and speak unmarked; any
other plugin's notices and errors carry its name, so text it passes on (a
mention quoting what a user wrote) can never read as the server's own sentence.

Input from the real ``telnet`` client works too: its negotiation is removed
and answered (:mod:`chatd.protocols.telnet`: Ctrl-C never deafens it), and
``CR NUL``, ``CR LF`` and ``LF`` all end a line.

The session (``guest-N``, the welcome, ``#lobby``) begins at the first line
typed, or once the connection has been quiet for ``limits.greeting_delay_seconds``
(a quarter of a second: at once, to a person), so an HTTP request or a TLS hello on
the port is refused before anyone is made of it.  On a listener with a password,
the server says ``*** This server asks for a password: ...`` and the first line
typed is the password (``! wrong password`` otherwise; the line after it is the
session's first).  A person at ``nc`` always has a current room
(:attr:`LineProtocol.keeps_a_room`): the last one cannot be left.

A line from a room other than the reader's current one starts with the room:
``[#lobby] <bob> lunch?``; lines from the current room have no tag.

A server notice (``*** ``) and an action (``* nick``) differ at a glance, so
``/me quit (Quit: bye)`` reads ``* alice quit (Quit: bye)`` and cannot pass for
the server's ``*** alice quit (Quit: bye)``.  Text with a newline (a plugin's
notice, a bot's message) becomes several lines that all carry the first one's
marker; text that belongs inside a sentence of the server's (a topic, a part or
quit reason) has its newlines turned into spaces.  Every line is sanitised for a
terminal: no control character or escape sequence, and IRC's formatting (which an
IRC listener will bring) removed whole, a colour's digits with its code, so
``\x02bold\x02 \x0304,05red`` reads ``bold red``.

Who someone is, changing: a nick change is a notice to the rooms; an account change
(someone identified or logged out) and a real name change (``/setname``) are not
shown to anyone else (identifying is routine, once per connection of every
registered user, and would only add noise: ``/whois`` tells both); the client that
set its real name reads ``*** your real name is now: NAME`` (the accounts plugin tells
the one that identified in its own words).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..events import (
    Action,
    Error,
    Event,
    Invite,
    Join,
    Message,
    ModeChange,
    ModeItem,
    NickChange,
    Notice,
    Part,
    PrivateMessage,
    Quit,
    RealnameChange,
    Topic,
)
from ..framing import LineTooLong, sanitize, strip_colour_codes, utf8
from ..replies import (
    AwayStatus,
    BanEntry,
    BanList,
    Help,
    HelpEntry,
    HistoryMarker,
    Names,
    Online,
    RoomEntry,
    RoomList,
    RoomModes,
    RoomTopic,
    ServerCounts,
    Whois,
)
from ..requests import Invoke, Request
from ..templates import how_long, plural
from .base import ChatProtocol, Renderer
from .telnet import TelnetFilter

NOTICE = "*** "
ERROR = "! "
#: What a person is told on connecting to a listener with a password.
PASSWORD_PROMPT = "This server asks for a password: type it and press Enter."


def parse_line(text: str) -> str | Invoke:
    """Classify one received line: a chat message (``str``) or a command.

    ``//x`` is the message ``/x``; a lone ``/`` is a message too (it names no command).
    """
    if not text.startswith("/"):
        return text
    if text.startswith("//"):
        return text[1:]
    name, _, args = text[1:].partition(" ")
    if not name:
        return text
    return Invoke(name.lower(), args.strip(), text.__class__ is not str)


def for_terminal(line: str) -> str:
    """One line as a terminal may show it: no IRC colour code (digits included), no
    control character or escape sequence (the output half of the module docstring)."""
    if line.isascii() and line.isprintable():
        return line  # the common case, as fast as sanitize's own
    return sanitize(strip_colour_codes(line))


def marked(marker: str, text: str) -> bytes:
    """``text`` as lines that all start with ``marker``, sanitised, encoded."""
    if "\n" not in text:
        return utf8(for_terminal(marker + text) + "\n")
    return utf8("".join(for_terminal(marker + line) + "\n" for line in text.split("\n")))


def inline(text: str) -> str:
    """User text that sits inside one of the server's sentences: one line, clean."""
    return for_terminal(text.replace("\n", " ")) if "\n" in text else for_terminal(text)


def _notice_line(text: str) -> bytes:
    return utf8(sanitize(NOTICE + text) + "\n")


def _plugin_marker(marker: str, event: Event) -> str:
    """``*** [mentions] `` for a line a plugin (not a built-in) made: whose words these
    are, so text it quotes (a user's ``alice set the topic to: x``) is not the server's."""
    plugin = event.source.marker
    return f"{marker}[{plugin}] " if plugin else marker


def _reason(text: str) -> str:
    return f" ({inline(text)})" if text else ""


def _join(e: Join) -> bytes:
    return _notice_line(f"{e.source.nick} joined {e.target}")


def _part(e: Part) -> bytes:
    return _notice_line(f"{e.source.nick} left {e.target}{_reason(e.text)}")


def _quit(e: Quit) -> bytes:
    return _notice_line(f"{e.source.nick} quit{_reason(e.text)}")


def _nick(e: NickChange) -> bytes:
    return _notice_line(f"{e.old} is now known as {e.new}")


def _topic(e: Topic) -> bytes:
    if not e.text:
        return _notice_line(f"{e.source.nick} cleared the topic of {e.target}")
    return _notice_line(f"{e.source.nick} set the topic of {e.target} to: {inline(e.text)}")


# -- replies: the sentences a netcat user always read -------------------------------------------


def _said(e: Event, *sentences: str) -> bytes:
    """``sentences`` as notice lines (``*** ``, with the plugin's marker if it is not a
    built-in): how every reply reads on the line protocol."""
    marker = _plugin_marker(NOTICE, e)
    return b"".join(marked(marker, sentence) for sentence in sentences)


def _ago(seconds: float) -> str:
    """``42 s``, ``5 min``, ``2 h 5 min``, ``3 d 4 h``."""
    seconds = int(max(0.0, seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def _names(e: Names) -> bytes:
    if e.greeting:
        return _greeting(e)
    nicks = [f"{m.nick} (away)" if m.away else m.nick for m in e.members]
    if e.total > len(e.members):
        nicks.append(f"and {e.total - len(e.members)} more")
    topic = f" — topic: {e.topic}" if e.topic else ""
    return _said(e, f"{e.room} has {plural(e.total, 'member')}: {', '.join(nicks)}{topic}")


def _greeting(e: Names) -> bytes:
    """The answer to one's own ``/join``: where, the topic, who else is there."""
    sentences = [f"{e.target} joined {e.room}"]
    if e.topic:
        sentences.append(f"topic of {e.room}: {e.topic}")
    others = [m.nick for m in e.members if m.nick != e.target]
    if others:
        hidden = e.total - 1 - len(others)
        more = f", and {hidden} more (/who)" if hidden > 0 else ""
        sentences.append(f"also in {e.room}: {', '.join(others)}{more}")
    else:
        sentences.append(f"you are the first in {e.room}")
    return _said(e, *sentences)


def _room_mark(entry: RoomEntry) -> str:
    return " *" if entry.current else " +" if entry.joined else ""


def _rooms(e: RoomList) -> bytes:
    if not e.page:  # /rooms: one line, the reader's own rooms marked
        listing = ", ".join(f"{r.name} ({r.members}){_room_mark(r)}" for r in e.rooms)
        hidden = e.total - len(e.rooms)
        more = f", and {hidden} more (/list)" if hidden > 0 else ""
        return _said(e, f"{plural(e.total, 'room')}: {listing}{more}  "
                        "(* = your current room, + = you are in it)")
    first = (e.page - 1) * e.per_page + 1
    more = f"; /list {e.page + 1} for more" if e.page < e.pages else ""
    return _said(e, f"rooms {first}-{first + len(e.rooms) - 1} of {e.total}{more}:",
                 *(f"  {r.name} ({r.members}){f' — {r.topic}' if r.topic else ''}"
                   for r in e.rooms))


def _whois(e: Whois) -> bytes:
    rooms = ", ".join(e.rooms) or "no room"
    since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(e.connected_at))
    sentences = [f"{e.nick}: in {rooms}; connected {_ago(e.time - e.connected_at)} ago "
                 f"(since {since}); idle {_ago(e.idle)}"]
    if e.real_name:
        sentences.append(f"{e.nick}'s real name: {e.real_name}")
    if e.identified_as is not None:  # an unidentified nick says nothing (the usual case)
        sentences.append(f"{e.nick} is identified as {e.identified_as}")
    if e.away is not None:
        sentences.append(f"{e.nick} is away: {e.away}")
    if e.address is not None:  # for operators only
        sentences.append(f"{e.nick} is connected from {e.address}")
    return _said(e, *sentences)


def _room_topic(e: RoomTopic) -> bytes:
    return _said(e, f"topic of {e.room}: {e.topic}" if e.topic else f"{e.room} has no topic")


def _help(e: Help) -> bytes:
    if e.command:  # /help NAME
        entry = e.commands[0] if e.commands else HelpEntry(e.command, "/" + e.command)
        return _said(e, f"{entry.usage} — {entry.help}",
                     *("  " + line for line in e.details.splitlines()))
    sentences = ["Commands (/help NAME for details; //text sends a line starting with /):"]
    plugin: str | None = None
    for entry in e.commands:
        if entry.plugin != plugin:
            plugin = entry.plugin
            sentences.append(f"[{plugin}]")
        sentences.append(f"  {entry.usage:<24} {entry.help}")
    return _said(e, *sentences)


def _history_marker(e: HistoryMarker) -> bytes:
    if e.edge != "start":
        if not e.count:
            return b""  # "no history" said it all
        return _said(e, "end of history; live chat follows" if e.live else "end of history")
    many = "the last line" if e.count == 1 else f"the last {e.count} lines"
    if e.nick:  # a private conversation
        return _said(e, f"private history with {e.nick}: {many}" if e.count
                     else f"no private history with {e.nick}")
    ignored = (f" ({plural(e.left_out, 'line')} from people you ignore left out)"
               if e.left_out else "")
    return _said(e, f"history of {e.room}: {many}{ignored}" if e.count
                 else f"no history in {e.room}{ignored}")


def _ban_entry(entry: BanEntry) -> str:
    subject = entry.subject
    if entry.masks:
        subject += f" ({', '.join(entry.masks)})"
    until = ("until lifted" if entry.until is None else
             "until " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(entry.until)))
    why = f": {entry.reason}" if entry.reason else ""
    return f"{entry.kind} {subject} by {entry.set_by}, {until}{why}"


def _bans(e: BanList) -> bytes:
    if not e.entries:
        return _said(e, f"no bans or mutes in {e.room}")
    return _said(e, *(_ban_entry(entry) for entry in e.entries))


def _online(e: Online) -> bytes:
    if e.command == "userhost":
        return _said(e, *(f"{o.nick} is {o.userhost}{' (away)' if o.away else ''}"
                          for o in e.online)) if e.online else _said(e, "none of them is online")
    here = {o.nick.lower() for o in e.online}
    away = [f"{o.nick} (away)" if o.away else o.nick for o in e.online]
    gone = [nick for nick in e.asked if nick.lower() not in here]
    sentences = [f"online: {', '.join(away)}"] if away else []
    if gone:
        sentences.append(f"not online: {', '.join(gone)}")
    return _said(e, *sentences)


def _away_status(e: AwayStatus) -> bytes:
    if e.away is None:
        return _said(e, "you are back")
    return _said(e, f"you are away: {e.away} (/away alone when you are back)")


def _counts(e: ServerCounts) -> bytes:
    """``/lusers``: one sentence of who is here, one of the rest."""
    operators = f" ({plural(e.operators, 'operator')})" if e.operators else ""
    return _said(e, f"{plural(e.users, 'user')} here{operators}, in "
                    f"{plural(e.rooms, 'room')}; at most {e.most} at once since the server "
                    "started",
                 f"{plural(e.unknown, 'connection')} not yet a user; "
                 f"{plural(e.servers, 'server')}")


def _room_modes(e: RoomModes) -> bytes:
    return _said(e, f"{e.room}: topic-lock {'on' if e.topic_lock else 'off'}, "
                    f"invite-only {'on' if e.invite_only else 'off'}")


def _mode_sentence(e: ModeChange, item: ModeItem) -> str:
    """One change as moderation always said it: ``alice banned bob in #dev for 1 h:
    spam``, ``alice made bob an operator of #dev``, ``alice set invite-only on in #dev``."""
    who, room, on = e.source.nick, e.target, item.on
    if item.mode == "op":
        return (f"{who} made {item.arg} an operator of {room}" if on
                else f"{who} removed {item.arg} as an operator of {room}")
    if item.mode in ("ban", "mute"):
        if not on:
            return f"{who} un{'banned' if item.mode == 'ban' else 'muted'} {item.arg} in {room}"
        why = f": {inline(e.text)}" if e.text else ""
        noun = "banned" if item.mode == "ban" else "muted"
        return f"{who} {noun} {item.arg} in {room}{how_long(e.seconds)}{why}"
    setting = item.mode.replace("_", "-")  # invite_only, topic_lock, a newer node's own
    value = "on" if on else "off"
    return f"{who} set {setting} {value} in {room}" + (f" ({item.arg})" if item.arg else "")


def _mode(e: ModeChange) -> bytes:
    """A sentence per change, each one line (names from another node may hold breaks)."""
    return _said(e, *(_mode_sentence(e, item).replace("\n", " ") for item in e.changes))


def _invite(e: Invite) -> bytes:
    """The invitee's invitation (the only one the line protocol is sent: the room is
    told in a notice of moderation's)."""
    return _notice_line(f"{e.source.nick} invites you to {e.target}: /join {e.target}")


def _message(e: Message) -> bytes:
    """``<nick> text``; a user's notice (``/notice``, IRC's NOTICE) ``-nick- text``."""
    if e.notice:
        return marked(f"-{e.source.nick}- ", e.text)
    return marked(f"<{e.source.nick}> ", e.text)


def _private(e: PrivateMessage) -> bytes:
    """``*nick* text``; a private notice ``-*nick*- text``."""
    if e.notice:
        return marked(f"-*{e.source.nick}*- ", e.text)
    return marked(f"*{e.source.nick}* ", e.text)


def _sent_copy(e: PrivateMessage) -> bytes:
    """The sender's copy of its private message (``-> *bob* text``) or notice
    (``-> -*bob*- text``)."""
    if e.notice:
        return marked(f"-> -*{e.target}*- ", e.text)
    return marked(f"-> *{e.target}* ", e.text)


_RENDER: dict[type[Event], Callable[..., bytes]] = {
    Message: _message,
    Action: lambda e: marked(f"* {e.source.nick} ", e.text),
    PrivateMessage: _private,
    Notice: lambda e: marked(_plugin_marker(NOTICE, e), e.text),
    Error: lambda e: marked(_plugin_marker(ERROR, e), e.text),
    Join: _join,
    Part: _part,
    Quit: _quit,
    NickChange: _nick,
    Topic: _topic,
    ModeChange: _mode,
    Invite: _invite,
    Names: _names,
    RoomList: _rooms,
    Whois: _whois,
    RoomTopic: _room_topic,
    Help: _help,
    HistoryMarker: _history_marker,
    BanList: _bans,
    Online: _online,
    RoomModes: _room_modes,
    AwayStatus: _away_status,
    ServerCounts: _counts,
}


class LineRenderer(Renderer):
    """Events as the marked lines in the table of the module docstring."""

    name = "line"
    shows_room = True

    def render(self, event: Event) -> bytes:
        render = _RENDER.get(event.__class__)
        return render(event) if render is not None else b""

    def render_elsewhere(self, event: Event, rendered: bytes) -> bytes:
        """``[#room] `` before each line of a room's event, for members talking elsewhere
        (not an invitation: it names the room, and its invitee is in none of it)."""
        data = rendered
        target = event.target
        if not data or not target.startswith("#") or event.__class__ is Invite:
            return data
        return _prefix_lines(utf8(f"[{sanitize(target)}] "), data)

    def render_for(self, event: Event, viewer: str | None, tag: str | None = None) -> bytes:
        if event.replay:
            return _prefix_lines(_history_stamp(event.time), self._replayed(event, viewer))
        if event.source.is_session(viewer):
            cls = event.__class__
            if cls is PrivateMessage and event.target.lower() != event.source.nick.lower():
                return _sent_copy(event)  # type: ignore[arg-type]
            if (cls is Join or cls is Part) and event.quiet:  # type: ignore[attr-defined]
                return b""  # the command that did it (/join) says it in its own words
            if cls is RealnameChange:  # others are not shown it (module docstring)
                return _notice_line(f"your real name is now: {inline(event.text)}")
        return self.render(event)

    def _replayed(self, event: Event, viewer: str | None) -> bytes:
        """A history line: a private message the viewer sent reads as it did then."""
        if event.__class__ is PrivateMessage and event.source.is_session(viewer):
            return _sent_copy(event)  # type: ignore[arg-type]
        return self.render(event)

    def render_stamped(self, event: Event, rendered: bytes) -> bytes:
        """``[12:34] `` (the server's local time of the event) before each line."""
        if event.replay:
            return rendered  # history carries its time already
        return _prefix_lines(time.strftime("[%H:%M] ", time.localtime(event.time)).encode(),
                             rendered)

    def local_error(self, text: str, *, code: str | None = None) -> bytes:
        """``! text``: a person reads the words; the code is for programs."""
        return marked(ERROR, text)


def _history_stamp(when: float) -> bytes:
    """``[12:34] `` for a replayed event of today, ``[2026-11-30 12:34] `` for older ones
    (the server's local time)."""
    moment = time.localtime(when)
    if moment[:3] == time.localtime()[:3]:
        return time.strftime("[%H:%M] ", moment).encode()
    return time.strftime("[%Y-%m-%d %H:%M] ", moment).encode()


def _prefix_lines(prefix: bytes, data: bytes) -> bytes:
    """``prefix`` before every line of ``data`` (an event may render as several)."""
    if data.count(b"\n") == 1:
        return prefix + data
    return b"".join(prefix + line for line in data.splitlines(keepends=True))


RENDERER = LineRenderer()


class LineProtocol(ChatProtocol):
    """``nc``'s (and ``telnet``'s) protocol: a line per request, marked lines out."""

    renderer = RENDERER
    #: People type here with nc and ncat, which return to the shell only on a reset.
    reset_after_goodbye = True
    #: A person at nc always talks somewhere: the last room cannot be left.
    keeps_a_room = True
    __slots__ = ("_telnet",)

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        # Made on the first telnet byte (0xFF) or NUL: most clients never need one.
        self._telnet: TelnetFilter | None = None

    def data_received(self, data: memoryview) -> None:
        raw = bytes(data)
        telnet = self._telnet
        if telnet is None:
            if b"\xff" not in raw and b"\x00" not in raw:
                super().data_received(raw)  # type: ignore[arg-type]
                return
            # The end of the previous read waits in the line buffer: a CR whose telnet
            # NUL may be the first byte of this one, or half of a UTF-8 sequence.
            telnet = self._telnet = TelnetFilter(
                self._framer.tail if self._framer is not None else b"")
        clean, reply = telnet.feed(raw)
        if reply:
            self.transport.write(reply)
        if clean:
            super().data_received(clean)  # type: ignore[arg-type]

    def ask_password(self) -> None:
        """The listener wants a password: the first line typed is it."""
        self.transport.write(marked(NOTICE, PASSWORD_PROMPT))

    def parse(self, lines: list[str | LineTooLong]) -> list[Request]:
        return [
            item if item.__class__ is LineTooLong else parse_line(item)  # type: ignore[arg-type]
            for item in lines
        ]
