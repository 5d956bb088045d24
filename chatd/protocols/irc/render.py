"""Events and replies as IRC messages: what an IRC client of chatd reads.

One :class:`IrcRenderer` per capability set and server name (:func:`renderer_for`
caches them), so the fan-out (:mod:`chatd.delivery`), which renders a room's
event once per renderer *object*, renders it once for all the IRC clients that
negotiated the same capabilities.  Everything a renderer writes is built as
:class:`~chatd.protocols.irc.wire.Message` and encoded by the wire grammar, so
it parses back strictly, whatever the fields held:

==========================  ====================================================
event / reply               IRC
==========================  ====================================================
message                     ``:nick!user@host PRIVMSG #room :text`` (a user's
                            notice: ``NOTICE #room :text``)
action (``/me``)            ``PRIVMSG #room :\\x01ACTION text\\x01``
private message             ``PRIVMSG nick :text`` (a notice: ``NOTICE nick :text``)
notice                      ``:server NOTICE <#room|nick|*> :text`` (a plugin that
                            is not a built-in: ``[name] text``)
error                       its numeric (:data:`numerics.ERROR_NUMERICS`), a
                            ``FAIL`` where IRCv3 says so (:data:`numerics.FAILS`),
                            or a ``NOTICE`` where IRC has none
join / part / quit / nick   ``JOIN`` (``extended-join``: account and real name),
                            ``PART``, ``QUIT``, ``NICK`` (from the old nick)
account                     ``ACCOUNT name`` / ``ACCOUNT *`` with ``account-notify``,
                            else nothing
realname                    ``SETNAME :name`` with ``setname``, else nothing
topic                       ``TOPIC #room :text``
mode change                 ``MODE #room +o nick`` (``op``), ``+b``/``+q`` with the
                            mask (``ban``/``mute``), ``+i``, ``+t``; several in one
away                        ``AWAY :text`` with ``away-notify``, else nothing
names (``/names``, a join)  ``332`` (a join's greeting), ``353``\\ s, ``366``
whois                       ``311 312 319 317 330 301 338 318``
rooms / list                ``321 322 323``
room topic                  ``332`` or ``331``
help                        ``704 705 706``
history markers             ``BATCH +ref chathistory target`` / ``BATCH -ref`` with
                            ``batch``; nothing without it
bans                        ``367``/``368`` (bans), ``728``/``729`` (mutes: ``q``)
server counts (``/lusers``) ``251``-``255`` (252-254 when not zero), ``265``, ``266``
==========================  ====================================================

Fields (nicks, idents, hosts, rooms) from another node are not checked here the
way local ones were, so every field is made writable: cut at a CR, LF or NUL,
a space written ``_``, a leading ``:`` written ``_``, clipped to a length that
leaves a message room for its text.  Text is never cut: a line longer than the
512-byte body allows is split into several messages on a UTF-8 boundary (at a
space where one is near), text with newlines (a plugin's notice) becomes one
message per line, and text inside a command (a topic, a reason) has its line
breaks written as spaces.  IRC formatting codes pass as they are.

Capabilities: ``server-time`` adds ``@time``, ``account-tag`` ``@account`` (the
source's), ``message-tags`` ``@msgid`` (the event id), ``echo-message`` shows a
client its own messages (when delivery hands them to it), ``userhost-in-names``
puts ``nick!user@host`` in ``353``, ``extended-join`` the account in ``JOIN``,
``away-notify`` shows ``AWAY``, ``account-notify`` ``ACCOUNT``, ``setname``
``SETNAME`` (the real name changed; WHO, WHOIS and extended-join show the real name
whatever the capabilities: the nick where there is none), ``batch`` wraps history in ``chathistory``
batches, ``labeled-response`` puts the request's label (``render_for``'s
``tag``) on the answer (a ``labeled-response`` batch when it is several lines).
``multi-prefix`` changes nothing: chatd's only prefix is ``@``.  Events replayed
from history show only what a client can take as history: messages, actions,
private messages and notices (a replayed ``JOIN`` or ``TOPIC`` would change the
client's idea of the room now).
"""

from __future__ import annotations

import functools
import hashlib
import re
import time
from collections.abc import Callable
from typing import Any

from ...events import (
    AccountChange,
    Action,
    Away,
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
from ...replies import (
    AwayStatus,
    BanEntry,
    BanList,
    Help,
    HistoryMarker,
    Names,
    Online,
    RoomList,
    RoomModes,
    RoomTopic,
    ServerCounts,
    Whois,
)
from ..base import Renderer
from . import numerics as n
from .commands import MODES_MAX
from .wire import BODY_MAX
from .wire import Message as Line

#: Longest nick, ident, host and room written (bytes), so that the fields of one
#: message always leave room for text: chatd's own are far shorter (nicks 32 bytes,
#: rooms 33, idents 32); another node's may be anything.
NICK_MAX = 64
IDENT_MAX = 32
HOST_MAX = 96
ROOM_MAX = 96
#: Longest tag value written (an account name from another node).
TAG_VALUE_MAX = 128
#: The fewest bytes of text a message carries after its fields (clipped to leave it).
TEXT_ROOM_MIN = 64

_BREAKS = re.compile(r"\r\n|[\r\n]")
_UNSAFE = re.compile(r"[\r\n\0]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")
_ROOM_IN_TEXT = re.compile(r"(?<![^\s(\"'])#[A-Za-z0-9_\-.]{1,32}")
_NICK_IN_TEXT = (
    re.compile(r"no such nick: (\S+)\Z"),
    re.compile(r"\bthe nick (\S+) is"),
    re.compile(r"\A(\S+) is (?:not|already) in #"),
)
_COMMAND_IN_TEXT = re.compile(r"(?:command|usage:) /([A-Za-z0-9_-]+)")


# -- making fields writable ------------------------------------------------------------------


def _well_formed(text: str) -> str:
    """``text`` without lone surrogates (another node's, a plugin's): U+FFFD instead, so
    the bytes are UTF-8 and encoding never raises in the middle of a fan-out."""
    if text.isascii():
        return text
    return _SURROGATES.sub("\ufffd", text)


def _clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` UTF-8 bytes on a character boundary (fields only)."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


def word(text: str, limit: int = NICK_MAX, forbidden: str = "") -> str:
    """A field as one IRC word: cut at a CR, LF or NUL, spaces (and ``forbidden``
    characters) written ``_``, a leading ``:`` written ``_``, clipped; ``*`` if empty."""
    found = _UNSAFE.search(text)
    if found is not None:
        text = text[:found.start()]
    if " " in text:
        text = text.replace(" ", "_")
    for c in forbidden:
        if c in text:
            text = text.replace(c, "_")
    if text.startswith(":"):
        text = "_" + text[1:]
    text = _clip(_well_formed(text), limit)
    return text or "*"


def inline(text: str) -> str:
    """Text inside a command (a topic, a part or quit reason): one line, line breaks
    written as spaces, NUL removed."""
    if _UNSAFE.search(text) is not None:
        text = _BREAKS.sub(" ", text).replace("\0", "")
    return _well_formed(text)


def text_lines(text: str) -> list[str]:
    """Text as the lines it holds (a plugin's notice may have several): each one a
    message of its own, CR and NUL removed, blank lines left out (one empty line at
    least)."""
    if _UNSAFE.search(text) is None:
        return [_well_formed(text)]
    lines = [line.replace("\0", "") for line in _BREAKS.split(text)]
    kept = [_well_formed(line) for line in lines if line.strip()]
    return kept or [""]


def split_text(text: str, room: int) -> list[str]:
    """``text`` in pieces of at most ``room`` UTF-8 bytes, cut on a character boundary,
    after a space where one is in the second half of the piece: nothing is lost, and
    the pieces joined are ``text``."""
    data = text.encode("utf-8")
    if len(data) <= room:
        return [text]
    room = max(room, 8)
    pieces: list[str] = []
    while len(data) > room:
        cut = room
        while cut > 0 and data[cut] & 0xC0 == 0x80:  # inside a character: back to its start
            cut -= 1
        space = data.rfind(b" ", room // 2, cut)
        if space > 0:
            cut = space + 1
        pieces.append(data[:cut].decode("utf-8"))
        data = data[cut:]
    pieces.append(data.decode("utf-8"))
    return pieces


@functools.lru_cache(maxsize=4096)
def client_prefix(nick: str, ident: str, host: str) -> str:
    """``nick!ident@host`` with each part made writable (``nick`` alone when the source
    has neither, a replayed line of long ago).  Cached: a room's talkers are few, and
    their prefixes are asked for on every line they say."""
    shown = word(nick, NICK_MAX, "!@")
    if not ident and not host:
        return shown
    return (f"{shown}!{word(ident or shown, IDENT_MAX, '!@')}"
            f"@{word(host, HOST_MAX, '!@') if host else '*'}")


def _room_bytes(*fields: str) -> int:
    """Bytes the body has left for a trailing text after ``fields`` (the source with its
    ``:``, the command, the middle parameters, the trailing ``:``, spaces, CRLF)."""
    used = sum(len(f.encode("utf-8")) for f in fields) + len(fields) + 1 + 2
    return BODY_MAX - used


# -- the renderer ----------------------------------------------------------------------------


class IrcRenderer(Renderer):
    """Events as IRC messages for clients with the capabilities ``caps`` (see the module
    docstring); ``server_name`` is the source of the server's own messages."""

    name = "irc"

    def __init__(self, caps: frozenset[str], server_name: str) -> None:
        self.caps = frozenset(caps)
        self.server_name = word(server_name, HOST_MAX, "!@")
        self.echo = "echo-message" in caps
        self.echoes_own = self.echo  # the domain sends the sender its copy (Renderer)
        self.server_time = "server-time" in caps
        self.account_tag = "account-tag" in caps
        self.msgid = "message-tags" in caps
        self.batch = "batch" in caps
        self.labeled = "labeled-response" in caps
        self.userhost_in_names = "userhost-in-names" in caps
        self.extended_join = "extended-join" in caps
        self.away_notify = "away-notify" in caps
        self.shows_away = self.away_notify  # the domain sends it Away events (Renderer)
        self.account_notify = "account-notify" in caps
        self.setname = "setname" in caps
        self.shows_invites = True  # INVITE to the invitee; to members with invite-notify
        self.notifies_invites = "invite-notify" in caps
        #: draft/chathistory: the client asks with CHATHISTORY; no replay on joining
        #: (the specification: no history played back automatically then).
        self.replays_history = "draft/chathistory" not in caps

    def __repr__(self) -> str:
        return f"IrcRenderer({sorted(self.caps)!r}, {self.server_name!r})"

    # -- the Renderer interface ----------------------------------------------------------

    def render(self, event: Event) -> bytes:
        return self._encode(self.lines(event), event)

    def render_for(self, event: Event, viewer: str | None, tag: str | None = None) -> bytes:
        """As :meth:`render`, but a client's own room messages and the copy of a private
        message it sent only with ``echo-message``; its own quit never (it is told
        ``ERROR`` as it goes); ``tag`` (the request's label) with ``labeled-response``."""
        if event.source.is_session(viewer):
            if event.__class__ is Invite:  # the inviter's own: RPL_INVITING
                return self._encode(self._inviting(event), event)
            if not event.replay and not self._shows_own(event):
                return b""  # history shows both sides of a conversation, echo or not
        lines = self.lines(event)
        if tag is not None and self.labeled and lines:
            return self._encode(self._labeled(lines, event, tag), event)
        return self._encode(lines, event)

    def local_error(self, text: str, *, code: str | None = None) -> bytes:
        """``ERROR :text``: what IRC servers say before they close a connection."""
        return Line("ERROR", (inline(text),)).encode()

    # -- what a client is shown ------------------------------------------------------------

    def _shows_own(self, event: Event) -> bool:
        cls = event.__class__
        if cls is Message or cls is Action:
            return self.echo
        if cls is PrivateMessage:  # to oneself it is also the message received
            return self.echo or event.target.lower() == event.source.nick.lower()
        return cls is not Quit

    def lines(self, event: Event) -> list[Line]:
        """The messages ``event`` is shown as (tags of the event added by :meth:`_encode`)."""
        if event.replay and event.__class__ not in _REPLAYED:
            return []
        make = _LINES.get(event.__class__)
        return make(self, event) if make is not None else []

    def _encode(self, lines: list[Line], event: Event) -> bytes:
        if not lines:
            return b""
        tags = self._tags(event)
        if not tags:
            return b"".join(line.encode() for line in lines)
        out = []
        for i, line in enumerate(lines):
            own = dict(tags)
            if line.command == "BATCH":  # a batch's own lines carry no message's tags
                own.pop("msgid", None)
                own.pop("batch", None)
            elif "msgid" in own and i:
                own["msgid"] = f"{own['msgid']}-{i}"  # each message of a split line its own
            own.update(line.tags)
            out.append(Line(line.command, line.params, line.source, own).encode())
        return b"".join(out)

    def _tags(self, event: Event) -> dict[str, str]:
        tags: dict[str, str] = {}
        if self.server_time:
            tags["time"] = _iso(event.time)
        source = event.source
        if self.account_tag and source.account and not source.is_server:
            tags["account"] = _tag_value(source.account)
        if self.msgid and event.__class__ in _WITH_MSGID:
            tags["msgid"] = str(event.id)
        if self.batch and event.replay:
            tags["batch"] = _history_ref(event.target)
        return tags

    def _labeled(self, lines: list[Line], event: Event, label: str) -> list[Line]:
        """The answer to a labelled request made of this one event (see :func:`labeled`)."""
        return labeled(lines, label, f"l{event.id}", self.server_name, batch=self.batch)

    # -- sources ---------------------------------------------------------------------------

    def source_of(self, event: Event, nick: str | None = None) -> str:
        """``nick!user@host`` of a client's event (``nick``: another than the source's,
        the old one of a nick change), the server's name for the server's."""
        source = event.source
        if source.is_server:
            return self.server_name
        return client_prefix(source.nick if nick is None else nick, source.ident, source.host)

    # -- chat --------------------------------------------------------------------------------

    def _said(self, event: Event, command: str, target: str, text: str,
              action: bool = False, marker: str = "") -> list[Line]:
        """``command`` (PRIVMSG, NOTICE) of ``text`` to ``target``: a message per line of
        the text, each split to fit the body."""
        source = self.source_of(event)
        target = word(target, ROOM_MAX)
        room = _room_bytes(":" + source, command, target)
        if action:
            room -= len("\x01ACTION \x01")
        room -= len(marker.encode("utf-8"))
        out = []
        for line in text_lines(text or event.text):
            for piece in split_text(line, room):
                body = f"\x01ACTION {piece}\x01" if action else marker + piece
                out.append(Line(command, (target, body), source))
        return out

    def _message(self, event: Message | PrivateMessage) -> list[Line]:
        """A message (to a room or a nick) as ``PRIVMSG``; a user's notice as ``NOTICE``."""
        return self._said(event, "NOTICE" if event.notice else "PRIVMSG", event.target, "")

    def _action(self, event: Event) -> list[Line]:
        return self._said(event, "PRIVMSG", event.target, "", action=True)

    def _notice(self, event: Event) -> list[Line]:
        marker = f"[{word(event.source.marker)}] " if event.source.marker else ""
        return self._said(event, "NOTICE", event.target or "*", "", marker=marker)

    def _join(self, event: Event) -> list[Line]:
        source = self.source_of(event)
        room = word(event.target, ROOM_MAX)
        if self.extended_join:
            account = word(event.source.account, NICK_MAX) if event.source.account else "*"
            realname = self._fitted(inline(event.source.realname or event.source.nick),
                                    ":" + source, "JOIN", room, account)
            return [Line("JOIN", (room, account, realname), source)]
        return [Line("JOIN", (room,), source)]

    def _part(self, event: Event) -> list[Line]:
        if event.kicked_by:  # type: ignore[attr-defined]
            return self._kick(event)
        params = (word(event.target, ROOM_MAX),)
        if event.text:
            params += (self._fitted(inline(event.text), ":" + self.source_of(event), "PART",
                                    *params),)
        return [Line("PART", params, self.source_of(event))]

    def _invite(self, event: Event) -> list[Line]:
        """``:inviter INVITE invitee #room`` (the domain chose who is sent it)."""
        return [Line("INVITE", (word(event.invitee, NICK_MAX),  # type: ignore[attr-defined]
                                word(event.target, ROOM_MAX)), self.source_of(event))]

    def _inviting(self, event: Event) -> list[Line]:
        """``341 inviter invitee #room``: the inviter is told its invitation went out."""
        return [Line(n.RPL_INVITING, (word(event.source.nick, NICK_MAX),
                                      word(event.invitee, NICK_MAX),  # type: ignore[attr-defined]
                                      word(event.target, ROOM_MAX)), self.server_name)]

    def _mode_change(self, event: ModeChange) -> list[Line]:
        """``:op!u@h MODE #room +ob-i bob bob!*@*``: the changes in order, as many to a
        line as ``MODES`` promises (a mode chatd does not map, a newer node's, is left
        out); a ban or mute by nick as the mask IRC lists it (``nick!*@*``)."""
        source = self.source_of(event)
        room = word(event.target, ROOM_MAX)
        out: list[Line] = []
        letters, args, sign = "", [], ""
        for item in event.changes:
            letter = _MODE_LETTERS.get(item.mode)
            if letter is None:
                continue
            arg = _mode_arg(item)
            if arg is not None and len(args) == MODES_PER_LINE:
                out.append(Line("MODE", (room, letters, *args), source))
                letters, args, sign = "", [], ""
            if sign != ("+" if item.on else "-"):
                sign = "+" if item.on else "-"
                letters += sign
            letters += letter
            if arg is not None:
                args.append(arg)
        if letters:
            out.append(Line("MODE", (room, letters, *args), source))
        return out

    def _kick(self, event: Event) -> list[Line]:
        """A kick (a part with ``kicked_by``): ``:op KICK #room nick :reason``, the reason
        without the "kicked by op: " the other protocols show (KICK says who)."""
        kicker = word(event.kicked_by, NICK_MAX, "!@")  # type: ignore[attr-defined]
        reason = event.text.removeprefix(f"kicked by {event.kicked_by}: ")  # type: ignore[attr-defined]
        params = (word(event.target, ROOM_MAX), word(event.source.nick, NICK_MAX))
        return [Line("KICK", (*params, self._fitted(inline(reason) or kicker, ":" + kicker,
                                                    "KICK", *params)), kicker)]

    def _quit(self, event: Event) -> list[Line]:
        source = self.source_of(event)
        return [Line("QUIT", (self._fitted(inline(event.text) or "Quit", ":" + source,
                                           "QUIT"),), source)]

    def _nick(self, event: NickChange) -> list[Line]:
        return [Line("NICK", (word(event.new or event.source.nick, NICK_MAX),),
                     self.source_of(event, event.old or event.source.nick))]

    def _topic(self, event: Event) -> list[Line]:
        source = self.source_of(event)
        room = word(event.target, ROOM_MAX)
        return [Line("TOPIC", (room, self._fitted(inline(event.text), ":" + source, "TOPIC",
                                                  room)), source)]

    def _away(self, event: Event) -> list[Line]:
        if not self.away_notify:
            return []
        source = self.source_of(event)
        if not event.text:
            return [Line("AWAY", (), source)]
        return [Line("AWAY", (self._fitted(inline(event.text), ":" + source, "AWAY"),), source)]

    def _account(self, event: AccountChange) -> list[Line]:
        """``account-notify``: ``:nick!user@host ACCOUNT name`` (logged in) or ``ACCOUNT *``
        (logged out), to the client itself and the members of its rooms."""
        if not self.account_notify:
            return []
        name = word(event.new, NICK_MAX) if event.new else "*"
        return [Line("ACCOUNT", (name,), self.source_of(event))]

    def _realname(self, event: RealnameChange) -> list[Line]:
        """``setname``: ``:nick!user@host SETNAME :real name``, to the client itself (its
        confirmation) and the members of its rooms."""
        if not self.setname:
            return []
        source = self.source_of(event)
        return [Line("SETNAME", (self._fitted(inline(event.text) or event.source.nick,
                                              ":" + source, "SETNAME"),), source)]

    def _fitted(self, text: str, *fields: str) -> str:
        """Text that must stay one parameter (a topic, a reason): what fits the body after
        ``fields``, with ``…`` where the rest was left out.  chatd's own limits (a
        topic's 300 characters) keep this from happening but for another node's fields."""
        room = _room_bytes(*fields)
        if len(text.encode("utf-8")) <= room:
            return text
        return _clip(text, max(room - 3, 0)) + "…"

    # -- errors ------------------------------------------------------------------------------

    def _error(self, event: Error) -> list[Line]:
        numeric = n.numeric_for(event.code)
        text = inline(event.text)
        if event.source.marker:
            text = f"[{word(event.source.marker)}] {text}"
        if numeric == n.ERR_CHANOPRIVSNEEDED and event.code == "not_operator" \
                and _ROOM_IN_TEXT.search(text) is None:
            numeric = n.ERR_NOPRIVILEGES
        if numeric == n.AS_NOTICE:
            return self._said(event, "NOTICE", event.target or "*", text)
        if numeric == n.AS_FAIL:  # IRCv3 standard replies: FAIL COMMAND CODE :text
            command, code = n.FAILS[event.code]
            return [Line("FAIL", (command, code, self._fitted(text, ":" + self.server_name,
                                                              "FAIL", command, code)),
                         self.server_name)]
        params = [self._me(event)]
        params.extend(_subject(kind, text) for kind in n.SUBJECTS.get(numeric, ()))
        return self._numeric(numeric, params, text)

    # -- replies -----------------------------------------------------------------------------

    def _me(self, event: Event) -> str:
        return word(event.target or "*", NICK_MAX)

    def _numeric(self, numeric: str, params: list[str], text: str | None = None) -> list[Line]:
        """One numeric from the server; ``text`` (the trailing parameter) fitted to it."""
        if text is None:
            return [Line(numeric, tuple(params), self.server_name)]
        text = self._fitted(inline(text), ":" + self.server_name, numeric, *params)
        return [Line(numeric, (*params, text), self.server_name)]

    def _packed(self, numeric: str, params: list[str], items: list[str]) -> list[Line]:
        """``items`` as few ``numeric`` lines as fit, space-separated (353, 319)."""
        room = _room_bytes(":" + self.server_name, numeric, *params)
        out: list[Line] = []
        current: list[str] = []
        used = 0
        for item in items:
            size = len(item.encode("utf-8")) + (1 if current else 0)
            if current and used + size > room:
                out.append(Line(numeric, (*params, " ".join(current)), self.server_name))
                current, used = [], 0
                size -= 1
            current.append(item)
            used += size
        if current:
            out.append(Line(numeric, (*params, " ".join(current)), self.server_name))
        return out

    def _names(self, event: Names) -> list[Line]:
        if event.who:
            return self._who(event)
        me, room = self._me(event), word(event.room, ROOM_MAX)
        out: list[Line] = []
        if event.greeting and event.topic:
            out += self._numeric(n.RPL_TOPIC, [me, room], inline(event.topic))
        names = []
        for member in event.members:
            nick = word(member.nick, NICK_MAX, "!@")
            if self.userhost_in_names and member.userhost:
                nick = f"{nick}!{_userhost(member.userhost)}"
            names.append("@" + nick if member.operator else nick)
        out += self._packed(n.RPL_NAMREPLY, [me, "=", room], names)
        out += self._numeric(n.RPL_ENDOFNAMES, [me, room], "End of /NAMES list")
        return out

    def _who(self, event: Names) -> list[Line]:
        """``/who #room`` as IRC's WHO: one 352 per member (flags ``H``ere or ``G``one,
        ``@`` for a room operator; hop count 0, then the real name, or the nick for a
        member that gave none), then 315."""
        me, room = self._me(event), word(event.room, ROOM_MAX)
        out: list[Line] = []
        for member in event.members:
            nick = word(member.nick, NICK_MAX, "!@")
            user, _, host = (member.userhost or f"{member.nick}@*").rpartition("@")
            flags = ("G" if member.away else "H") + ("@" if member.operator else "")
            out += self._numeric(n.RPL_WHOREPLY, [me, room, word(user or nick, IDENT_MAX, "!@"),
                                                  word(host, HOST_MAX, "!@"), self.server_name,
                                                  nick, flags],
                                 f"0 {member.real_name or member.nick}")
        out += self._numeric(n.RPL_ENDOFWHO, [me, room], "End of WHO list")
        return out

    def _online(self, event: Online) -> list[Line]:
        """``/ison`` as 303 (the nicks online, as asked) and ``/userhost`` as 302
        (``nick=+user@host``, ``-`` for away): one line each, more only if very long
        nicks would not fit 512 bytes (never a nick cut off)."""
        me = self._me(event)
        if event.command == "userhost":
            items = [f"{word(entry.nick, NICK_MAX, '!@=')}={'-' if entry.away else '+'}"
                     f"{_userhost(entry.userhost or entry.nick + '@*')}"
                     for entry in event.online]
            return self._packed(n.RPL_USERHOST, [me], items) or \
                [Line(n.RPL_USERHOST, (me, ""), self.server_name)]
        items = [word(entry.nick, NICK_MAX, "!@") for entry in event.online]
        return self._packed(n.RPL_ISON, [me], items) or \
            [Line(n.RPL_ISON, (me, ""), self.server_name)]

    def _away_status(self, event: AwayStatus) -> list[Line]:
        """``/away``'s answer as 306 (away now) or 305 (back)."""
        if event.away is None:
            return self._numeric(n.RPL_UNAWAY, [self._me(event)],
                                 "You are no longer marked as being away")
        return self._numeric(n.RPL_NOWAWAY, [self._me(event)],
                             "You have been marked as being away")

    def _counts(self, event: ServerCounts) -> list[Line]:
        """``/lusers`` (and the block after registration) as LUSERS: 251 and 255 always,
        252-254 when not zero (RFC 2812 3.4.2), 265/266 with the two numbers as
        parameters (as modern servers send them).  255 counts the servers linked to
        this one (none: the other ``servers`` counted is this one)."""
        me = self._me(event)
        users, most = str(event.users), str(event.most)
        out = self._numeric(n.RPL_LUSERCLIENT, [me],
                            f"There are {event.users} users and {event.invisible} invisible "
                            f"on {event.servers} servers")
        if event.operators:
            out += self._numeric(n.RPL_LUSEROP, [me, str(event.operators)],
                                 "operator(s) online")
        if event.unknown:
            out += self._numeric(n.RPL_LUSERUNKNOWN, [me, str(event.unknown)],
                                 "unknown connection(s)")
        if event.rooms:
            out += self._numeric(n.RPL_LUSERCHANNELS, [me, str(event.rooms)],
                                 "channels formed")
        out += self._numeric(n.RPL_LUSERME, [me], f"I have {event.users} clients and "
                                                  f"{max(event.servers - 1, 0)} servers")
        out += self._numeric(n.RPL_LOCALUSERS, [me, users, most],
                             f"Current local users {users}, max {most}")
        out += self._numeric(n.RPL_GLOBALUSERS, [me, users, most],
                             f"Current global users {users}, max {most}")
        return out

    def _modes(self, event: RoomModes) -> list[Line]:
        """``/modes #room`` as 324: ``+i`` invite-only, ``+t`` topic lock (``+`` alone
        when neither)."""
        modes = "+" + ("i" if event.invite_only else "") + ("t" if event.topic_lock else "")
        return [Line(n.RPL_CHANNELMODEIS, (self._me(event), word(event.room, ROOM_MAX), modes),
                     self.server_name)]

    def _rooms(self, event: RoomList) -> list[Line]:
        me = self._me(event)
        out = self._numeric(n.RPL_LISTSTART, [me, "Channel"], "Users  Name")
        for entry in event.rooms:
            out += self._numeric(n.RPL_LIST, [me, word(entry.name, ROOM_MAX), str(entry.members)],
                                 inline(entry.topic))
        out += self._numeric(n.RPL_LISTEND, [me], "End of /LIST")
        return out

    def _whois(self, event: Whois) -> list[Line]:
        me, nick = self._me(event), word(event.nick, NICK_MAX)
        user, _, host = event.userhost.rpartition("@")
        out = self._numeric(n.RPL_WHOISUSER, [me, nick, word(user or event.nick, IDENT_MAX),
                                              word(host, HOST_MAX), "*"],
                             event.real_name or event.nick)
        out += self._numeric(n.RPL_WHOISSERVER, [me, nick, self.server_name],
                             f"node {inline(event.connected_to)}")
        if event.rooms:
            out += self._packed(n.RPL_WHOISCHANNELS, [me, nick],
                                [word(r, ROOM_MAX) for r in event.rooms])
        out += self._numeric(n.RPL_WHOISIDLE, [me, nick, str(max(int(event.idle), 0)),
                                               str(max(int(event.connected_at), 0))],
                             "seconds idle, signon time")
        if event.identified_as is not None:
            out += self._numeric(n.RPL_WHOISACCOUNT,
                                 [me, nick, word(event.identified_as, NICK_MAX)],
                                 "is logged in as")
        if event.away is not None:
            out += self._numeric(n.RPL_AWAY, [me, nick], inline(event.away))
        if event.address is not None:
            out += self._numeric(n.RPL_WHOISACTUALLY, [me, nick, word(event.address, HOST_MAX)],
                                 "actually using host")
        out += self._numeric(n.RPL_ENDOFWHOIS, [me, nick], "End of /WHOIS list")
        return out

    def _room_topic(self, event: RoomTopic) -> list[Line]:
        me, room = self._me(event), word(event.room, ROOM_MAX)
        if event.topic:
            return self._numeric(n.RPL_TOPIC, [me, room], inline(event.topic))
        return self._numeric(n.RPL_NOTOPIC, [me, room], "No topic is set")

    def _help(self, event: Help) -> list[Line]:
        me = self._me(event)
        subject = word(event.command, NICK_MAX) if event.command else "index"
        if event.command:
            entry = event.commands[0] if event.commands else None
            first = f"{entry.usage} — {entry.help}" if entry is not None else "/" + event.command
            rest = event.details.splitlines()
        else:
            first = "Commands: any chatd command is an IRC command (REGISTER, HISTORY ...)"
            rest = [f"{e.usage} — {e.help}" if e.help else e.usage for e in event.commands]
        out = self._numeric(n.RPL_HELPSTART, [me, subject], inline(first))
        for line in rest:
            out += self._numeric(n.RPL_HELPTXT, [me, subject], inline(line) or " ")
        out += self._numeric(n.RPL_ENDOFHELP, [me, subject], "End of /HELP")
        return out

    def _history(self, event: HistoryMarker) -> list[Line]:
        if not self.batch:
            return []
        target = event.room or event.nick
        ref = _history_ref(target)
        if event.edge == "start":
            return [Line("BATCH", (f"+{ref}", "chathistory", word(target, ROOM_MAX)),
                         self.server_name)]
        return [Line("BATCH", (f"-{ref}",), self.server_name)]

    def _bans(self, event: BanList) -> list[Line]:
        me, room = self._me(event), word(event.room, ROOM_MAX)
        bans = [e for e in event.entries if e.kind != "mute"]
        mutes = [e for e in event.entries if e.kind == "mute"]
        out: list[Line] = []
        for entry in bans:
            out += self._numeric(n.RPL_BANLIST, [me, room, _mask(entry)])
        out += self._numeric(n.RPL_ENDOFBANLIST, [me, room], "End of channel ban list")
        for entry in mutes:
            out += self._numeric(n.RPL_QUIETLIST, [me, room, "q", _mask(entry)])
        out += self._numeric(n.RPL_ENDOFQUIETLIST, [me, room, "q"], "End of channel quiet list")
        return out


# -- helpers ---------------------------------------------------------------------------------------


def labeled(lines: list[Line], label: str, ref: str, server_name: str, *,
            batch: bool) -> list[Line]:
    """The whole answer to a request tagged ``@label`` (IRCv3 labeled-response): ``ACK``
    for no message, the label on its one message, or a ``labeled-response`` batch
    ``ref`` around its several (each message in it tagged ``batch=ref`` unless it is
    in a batch of its own already, as a ``chathistory`` batch's lines are; the edges
    of such a batch are in this one).  Without ``batch`` the label goes on the first
    of several (a client without batches cannot be sent one)."""
    label = _tag_value(label)
    if not lines:
        return [Line("ACK", (), server_name, {"label": label})]
    if len(lines) == 1 or not batch:
        first = lines[0]
        return [Line(first.command, first.params, first.source,
                     {**first.tags, "label": label}), *lines[1:]]
    return [
        Line("BATCH", (f"+{ref}", "labeled-response"), server_name, {"label": label}),
        *(line if "batch" in line.tags else
          Line(line.command, line.params, line.source, {**line.tags, "batch": ref})
          for line in lines),
        Line("BATCH", (f"-{ref}",), server_name),
    ]


def _iso(when: float) -> str:
    """``2026-12-07T01:45:00.123Z`` (IRCv3 server-time)."""
    millis = int(when * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{millis:03d}Z"


def _tag_value(value: str) -> str:
    """A tag value as the wire may write it (escaped there): no NUL, clipped."""
    return _clip(_well_formed(value.replace("\0", "")), TAG_VALUE_MAX)


def _history_ref(target: str) -> str:
    """The batch reference of the history of ``target`` (a room, or the private
    conversation the client is having): the same at both markers and on every line
    replayed between them, from the target alone (the renderer keeps no state)."""
    if not target.startswith("#"):
        return "hpriv"
    return "h" + hashlib.sha1(target.lower().encode("utf-8", "replace")).hexdigest()[:12]


def _userhost(userhost: str) -> str:
    user, _, host = userhost.rpartition("@")
    return f"{word(user or '*', IDENT_MAX, '!@')}@{word(host, HOST_MAX, '!@')}"


def _mask(entry: BanEntry) -> str:
    """A ban's subject as an IRC mask: a mask as it is, a nick as ``nick!*@*``."""
    subject = word(entry.subject, HOST_MAX)
    return subject if "!" in subject or "@" in subject else f"{subject}!*@*"


#: chatd's neutral mode names (:data:`chatd.events.MODES`) as IRC's channel mode letters.
_MODE_LETTERS = {"op": "o", "ban": "b", "mute": "q", "invite_only": "i", "topic_lock": "t"}
#: Mode changes with a parameter in one ``MODE`` line: ISUPPORT's ``MODES``.
MODES_PER_LINE = MODES_MAX


def _mode_arg(item: ModeItem) -> str | None:
    """The parameter of one change: the nick made (or no longer) an operator, the mask
    of a ban or mute (a nick as ``nick!*@*``, as ``367`` lists it); None for a setting."""
    if item.mode == "op":
        return word(item.nick or item.arg, NICK_MAX)
    if item.mode in ("ban", "mute"):
        subject = word(item.arg or "*", HOST_MAX)
        return subject if "!" in subject or "@" in subject else f"{subject}!*@*"
    return None


def _subject(kind: str, text: str) -> str:
    """The ``nick``, ``room`` or ``command`` an error's text names (chatd's wording), for
    the numeric's parameter; ``*`` when it names none."""
    if kind == "room":
        found = _ROOM_IN_TEXT.search(text)
        return found.group(0) if found else "*"
    if kind == "command":
        found = _COMMAND_IN_TEXT.search(text)
        return found.group(1).upper() if found else "*"
    for pattern in _NICK_IN_TEXT:
        hit = pattern.search(text)
        if hit:
            return word(hit.group(1).rstrip(".,;:").strip("'\""), NICK_MAX)  # not its quotes
    return "*"


_LINES: dict[type[Event], Callable[[IrcRenderer, Any], list[Line]]] = {
    Message: IrcRenderer._message,
    Action: IrcRenderer._action,
    PrivateMessage: IrcRenderer._message,
    Notice: IrcRenderer._notice,
    Error: IrcRenderer._error,
    Join: IrcRenderer._join,
    Part: IrcRenderer._part,
    Quit: IrcRenderer._quit,
    NickChange: IrcRenderer._nick,
    AccountChange: IrcRenderer._account,
    RealnameChange: IrcRenderer._realname,
    Topic: IrcRenderer._topic,
    Away: IrcRenderer._away,
    Invite: IrcRenderer._invite,
    ModeChange: IrcRenderer._mode_change,
    Names: IrcRenderer._names,
    RoomList: IrcRenderer._rooms,
    Whois: IrcRenderer._whois,
    RoomTopic: IrcRenderer._room_topic,
    Help: IrcRenderer._help,
    HistoryMarker: IrcRenderer._history,
    BanList: IrcRenderer._bans,
    Online: IrcRenderer._online,
    RoomModes: IrcRenderer._modes,
    AwayStatus: IrcRenderer._away_status,
    ServerCounts: IrcRenderer._counts,
}

#: Replayed events a client is shown: what it can take as history, not as now.
_REPLAYED = frozenset({Message, Action, PrivateMessage, Notice})
#: Events whose lines carry ``@msgid`` with ``message-tags``.
_WITH_MSGID = frozenset({Message, Action, PrivateMessage, Notice, Topic, Join, Part, Quit,
                         NickChange, ModeChange})

_RENDERERS: dict[tuple[frozenset[str], str], IrcRenderer] = {}


def renderer_for(caps: frozenset[str], server_name: str) -> IrcRenderer:
    """The renderer of every client with ``caps`` on a server named ``server_name``: one
    object per distinct set (cached), so the fan-out renders an event once for them."""
    key = (frozenset(caps), server_name)
    renderer = _RENDERERS.get(key)
    if renderer is None:
        renderer = _RENDERERS[key] = IrcRenderer(key[0], server_name)
    return renderer


__all__ = ["IrcRenderer", "inline", "labeled", "renderer_for", "split_text", "text_lines", "word"]
