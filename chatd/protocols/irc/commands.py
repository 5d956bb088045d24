"""IRC commands -> chatd requests: what a registered IRC client's line asks for.

After registration the IRC protocol hands each parsed line to :func:`translate`,
which returns, in order, the chatd requests (:mod:`chatd.requests`: ``Say`` and
``Invoke``) the line stands for and the IRC messages to write to that client at
once (``PONG``, and the errors that need no chat domain to know: 421, 461, 403
for a name that is no channel...).  Everything the domain answers (replies,
errors such as "no such nick") comes back as events, worded by the renderer.

The mapping (docs/irc.md has it as tables):

* channels are rooms: ``JOIN #a,#b`` is ``/join`` per room (keys are ignored:
  chatd has no channel keys), ``JOIN 0`` is ``/partall``, ``PART``, ``TOPIC``,
  ``NAMES``, ``WHO #room``, ``LIST`` (chatd's pages of 20), ``KICK``, ``INVITE``;
* ``PRIVMSG``/``NOTICE`` to ``#room`` is a :class:`~chatd.requests.Say` for that
  room (CTCP ``ACTION``: ``action=True``); to a nick, ``/msg`` (a CTCP to a nick,
  ``ACTION`` too, goes as it is, for the recipient's client to read); a CTCP other
  than ``ACTION`` to a room is refused (404: every client in it would answer it);
  ``NOTICE`` is the same with ``notice`` set (``Say(notice=True)``, ``/notice``),
  and ``quiet``: neither this module nor the chat domain answers a ``NOTICE``
  with an error (RFC 2812 3.3.2: a notice is never answered automatically);
* ``MODE #room`` ``+o/-o`` are ``/op``/``/deop``, ``+b/-b`` ``/ban``/``/unban``,
  ``+q/-q`` (the quiet list) ``/mute``/``/unmute``, ``+i/-i`` and ``+t/-t``
  ``/roomset invite-only|topic-lock on|off``; ``MODE #room`` alone is
  ``/modes #room`` (324) and ``MODE #room b`` (or ``q``) ``/bans #room``; user modes:
  chatd has none (``MODE yournick`` answers ``+``; setting one is 501);
* ``QUIT``, ``NICK``, ``AWAY``, ``OPER name password`` (the name is ignored: chatd's
  ``/oper`` has a password only), ``KILL``, ``WHOIS``, ``HELP``; ``VERSION`` and
  ``TIME`` are answered here; ``CHATHISTORY`` is ``/history TARGET WHICH REF [REF] N``;
  ``LUSERS`` is ``/lusers`` (its mask and server ignored); ``SETNAME`` is ``/setname``
  (the real name, checked by the domain);
* chatd's own commands: a command that is not IRC's runs as the chatd command of
  that name (irssi and WeeChat send an unknown ``/register pw`` as ``REGISTER pw``),
  and ``PRIVMSG NickServ|ChanServ :IDENTIFY pw`` (any chatd command) does the same,
  since clients identify through NickServ.  Anything else is 421.

Input is taken as the client sent it (the IRC protocol does not sanitise lines:
formatting codes and CTCP need their control characters); renderers sanitise what
they show.  A command whose argument must be exact (``Command.exact_args``: nicks,
passwords) is refused by the domain if the argument holds what the sanitiser
would remove (``Invoke.cleaned``).  CR, LF and NUL never arrive (the wire parser
refuses them); a parameter that must be one word and is not (a trailing one with
a space) is refused here, never split into two arguments.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Container
from typing import Protocol

from ...framing import sanitize
from ...requests import Invoke, Request, Say
from ...version import __version__
from .wire import Message

# Numerics (RFC 1459/2812, Modern IRC), defined here for this module; the lead
# unifies them with numerics.py at merge.
RPL_UMODEIS = "221"
RPL_ENDOFWHO = "315"
RPL_LISTEND = "323"
RPL_VERSION = "351"
RPL_ENDOFNAMES = "366"
RPL_TIME = "391"
ERR_NOSUCHNICK = "401"
ERR_NOSUCHCHANNEL = "403"
ERR_CANNOTSENDTOCHAN = "404"
ERR_TOOMANYTARGETS = "407"
ERR_NOORIGIN = "409"
ERR_NORECIPIENT = "411"
ERR_NOTEXTTOSEND = "412"
ERR_UNKNOWNCOMMAND = "421"
ERR_NONICKNAMEGIVEN = "431"
ERR_NEEDMOREPARAMS = "461"
ERR_ALREADYREGISTERED = "462"
ERR_UNKNOWNMODE = "472"
ERR_UMODEUNKNOWNFLAG = "501"
ERR_USERSDONTMATCH = "502"
ERR_INVALIDMODEPARAM = "696"

#: Most targets one command may name (ISUPPORT ``TARGMAX``; "" is no limit of this
#: module's: each room is one request, held to the flood gate and the room limits).
TARGMAX: dict[str, int | str] = {
    "PRIVMSG": 4, "NOTICE": 4, "NAMES": 4, "WHOIS": 4, "KICK": 4, "JOIN": "", "PART": "",
}
#: Mode changes with a parameter one MODE may carry (ISUPPORT ``MODES``): as many as
#: its parameters can (15 less the target and the mode string).
MODES_MAX = 13
#: The service nicks whose messages are chatd commands (case-insensitive).
SERVICES = ("NickServ", "ChanServ")
#: Commands the IRC protocol answers itself before this module sees a line (its
#: registration and capability state); reaching :func:`translate`, they are 421.
PROTOCOL_COMMANDS = frozenset({"CAP", "AUTHENTICATE"})
#: The longest word of the client's echoed in an error (a numeric stays within 512
#: bytes whatever it named).
ECHO_MAX = 64

Item = Request | Message


class State(Protocol):
    """What :func:`translate` reads of the connection (the protocol's ``IrcState``).

    ``commands`` (optional): the names of chatd's commands (the server's command
    table, which supports ``in``); with it an unknown command is 421 at once,
    without it the chat domain answers for the command (``unknown_command``)."""

    nick: str
    caps: frozenset[str]
    server_name: str


Handler = Callable[[Message, State], list[Item]]


def translate(message: Message, state: State) -> list[Item]:
    """The chat requests and the immediate answers ``message`` stands for, in order."""
    handler = _HANDLERS.get(message.command.upper())
    if handler is not None:
        return handler(message, state)
    return _chatd_command(message, state)


# -- small pieces -------------------------------------------------------------------------------


def _echo(word: str) -> str:
    """A word of the client's as a middle parameter of an answer: itself when it is one
    (bounded), ``*`` when it cannot be (empty, a space, a leading ``:``)."""
    if not word or " " in word or word[0] == ":":
        return "*"
    return word[:ECHO_MAX]


def _numeric(state: State, code: str, *params: str) -> Message:
    """``:server CODE nick params...``: the last parameter is the text, the others echo."""
    *words, text = params
    return Message(code, (state.nick, *(_echo(w) for w in words), text),
                   source=state.server_name)


def _more_params(state: State, command: str) -> list[Item]:
    return [_numeric(state, ERR_NEEDMOREPARAMS, command, "Not enough parameters")]


def _notice(state: State, text: str) -> Message:
    """A notice from the server to the client (what no numeric says)."""
    return Message("NOTICE", (state.nick, text), source=state.server_name)


def _is_word(text: str) -> bool:
    return bool(text) and " " not in text


def _is_room(text: str) -> bool:
    return text.startswith("#") and _is_word(text)


def _no_room(state: State, name: str) -> Message:
    return _numeric(state, ERR_NOSUCHCHANNEL, name, "No such channel")


def _invoke(name: str, args: str) -> Invoke:
    """``/name args``, marked ``cleaned`` if ``args`` holds what the sanitiser removes
    (a command needing exact text refuses it: see the module docstring)."""
    if args.isascii() and args.isprintable():
        return Invoke(name, args)
    return Invoke(name, args, cleaned=sanitize(args) != args)


def _targets(state: State, command: str, field: str) -> list[str] | Message:
    """``field`` split at commas (empty items dropped), or 407 past TARGMAX."""
    names = [name for name in field.split(",") if name]
    limit = TARGMAX.get(command)
    if isinstance(limit, int) and len(names) > limit:
        return _numeric(state, ERR_TOOMANYTARGETS, names[limit],
                        f"Too many targets: {command} names at most {limit}")
    return names


# -- registration leftovers, keepalive, server questions ----------------------------------------


def _ping(message: Message, state: State) -> list[Item]:
    if not message.params or not message.params[0]:
        return [_numeric(state, ERR_NOORIGIN, "No origin specified")]
    return [Message("PONG", (state.server_name, message.params[0]), source=state.server_name)]


def _pong(message: Message, state: State) -> list[Item]:
    return []  # any line is a sign of life; the protocol keeps the keepalive's time


def _already_registered(message: Message, state: State) -> list[Item]:
    return [_numeric(state, ERR_ALREADYREGISTERED, "You may not reregister")]


def _unknown(message: Message, state: State) -> list[Item]:
    return [_numeric(state, ERR_UNKNOWNCOMMAND, message.command, "Unknown command")]


def _version(message: Message, state: State) -> list[Item]:
    return [_numeric(state, RPL_VERSION, f"chatd-{__version__}", state.server_name,
                     "chatd, a line-protocol chat server")]


def _time(message: Message, state: State) -> list[Item]:
    now = time.strftime("%A %B %d %Y -- %H:%M:%S +00:00", time.gmtime())
    return [_numeric(state, RPL_TIME, state.server_name, now)]


def _lusers(message: Message, state: State) -> list[Item]:
    """``LUSERS [mask [server]]``: chatd's ``/lusers`` (this server's counts: the mask
    and server of RFC 2812 name nothing more here)."""
    return [Invoke("lusers", "")]


def _help(message: Message, state: State) -> list[Item]:
    return [_invoke("help", " ".join(message.params))]


# -- channels -----------------------------------------------------------------------------------


def _join(message: Message, state: State) -> list[Item]:
    if not message.params:
        return _more_params(state, "JOIN")
    names = _targets(state, "JOIN", message.params[0])
    if isinstance(names, Message):
        return [names]
    out: list[Item] = []
    for name in names:  # keys (params[1]) are ignored: chatd has no channel keys
        if name == "0":
            out.append(Invoke("partall", ""))
        elif _is_room(name):
            out.append(_invoke("join", name))
        else:
            out.append(_no_room(state, name))
    return out


def _part(message: Message, state: State) -> list[Item]:
    if not message.params:
        return _more_params(state, "PART")
    names = _targets(state, "PART", message.params[0])
    if isinstance(names, Message):
        return [names]
    reason = message.params[1] if len(message.params) > 1 else ""
    return [_invoke("part", f"{name} {reason}".rstrip()) if _is_room(name)
            else _no_room(state, name) for name in names]


def _topic(message: Message, state: State) -> list[Item]:
    if not message.params:
        return _more_params(state, "TOPIC")
    room = message.params[0]
    if not _is_room(room):
        return [_no_room(state, room)]
    if len(message.params) == 1:
        return [_invoke("topic", room)]
    text = message.params[1]
    if not text.strip():
        return [_notice(state, f"{room}: chatd does not clear a topic; set another one")]
    return [_invoke("topic", f"{room} {text}")]


def _names(message: Message, state: State) -> list[Item]:
    if not message.params:  # every channel: chatd lists a room at a time
        return [_numeric(state, RPL_ENDOFNAMES, "*", "End of /NAMES list")]
    names = _targets(state, "NAMES", message.params[0])
    if isinstance(names, Message):
        return [names]
    return [_invoke("names", name) if _is_room(name)
            else _numeric(state, RPL_ENDOFNAMES, name, "End of /NAMES list")
            for name in names]


def _who(message: Message, state: State) -> list[Item]:
    mask = message.params[0] if message.params else "*"
    if _is_room(mask):
        return [_invoke("who", mask)]
    # chatd's /who lists a room; a WHO of a nick or a mask matches nobody here.
    return [_numeric(state, RPL_ENDOFWHO, mask, "End of /WHO list")]


def _list(message: Message, state: State) -> list[Item]:
    if not message.params:
        return [Invoke("list", "")]
    first = message.params[0]
    if first.isdigit():  # chatd's extension: LIST 2 is the second page of /list
        return [Invoke("list", first)]
    return [_notice(state, "LIST of named channels or with conditions is not supported; "
                           "LIST alone lists the rooms (LIST 2: the second page)"),
            _numeric(state, RPL_LISTEND, "End of /LIST")]


def _kick(message: Message, state: State) -> list[Item]:
    if len(message.params) < 2:
        return _more_params(state, "KICK")
    rooms = [name for name in message.params[0].split(",") if name]
    nicks = _targets(state, "KICK", message.params[1])
    if isinstance(nicks, Message):
        return [nicks]
    if not rooms or not nicks or (len(rooms) > 1 and len(rooms) != len(nicks)):
        return _more_params(state, "KICK")
    reason = message.params[2] if len(message.params) > 2 else ""
    out: list[Item] = []
    for i, nick in enumerate(nicks):
        room = rooms[i] if len(rooms) > 1 else rooms[0]
        if not _is_room(room):
            out.append(_no_room(state, room))
        elif not _is_word(nick):
            out.append(_numeric(state, ERR_NOSUCHNICK, nick, "No such nick"))
        else:
            out.append(_invoke("kick", f"{room} {nick} {reason}".rstrip()))
    return out


def _invite(message: Message, state: State) -> list[Item]:
    if len(message.params) < 2:
        return _more_params(state, "INVITE")
    nick, room = message.params[0], message.params[1]
    if not _is_word(nick):
        return [_numeric(state, ERR_NOSUCHNICK, nick, "No such nick")]
    if not _is_room(room):
        return [_no_room(state, room)]
    return [_invoke("invite", f"{nick} {room}")]


# -- modes --------------------------------------------------------------------------------------

#: Channel modes with a parameter when set and unset: the chatd commands for + and -.
_LIST_MODES = {"b": ("ban", "unban"), "q": ("mute", "unmute")}
#: Channel modes that are a room setting (``/roomset``).
_SETTINGS = {"i": "invite-only", "t": "topic-lock"}


#: The channel modes this mapping knows, as ISUPPORT ``CHANMODES`` says them: list modes
#: (type A: a mask when set or unset, the list without one), none of types B and C,
#: settings (type D: no parameter).  ``o`` is ``PREFIX=(o)@``.
CHANMODES = f"{''.join(_LIST_MODES)},,,{''.join(_SETTINGS)}"


def _mode(message: Message, state: State) -> list[Item]:
    if not message.params:
        return _more_params(state, "MODE")
    target = message.params[0]
    if not target.startswith("#"):
        return _user_mode(message, state)
    if not _is_room(target):
        return [_no_room(state, target)]
    if len(message.params) == 1:
        return [_invoke("modes", target)]
    return _channel_modes(state, target, message.params[1], list(message.params[2:]))


def _channel_modes(state: State, room: str, modes: str, args: list[str]) -> list[Item]:
    """The changes (and list queries) of ``MODE #room modes args...``, in order."""
    out: list[Item] = []
    sign = ""
    listed = False
    for char in modes:
        if char in "+-":
            sign = char
            continue
        if char in _LIST_MODES:
            if not args and sign != "-":  # "b", "+b" alone: the list (bans and mutes)
                if not listed:
                    out.append(_invoke("bans", room))
                    listed = True
                continue
            if not args:
                out += _more_params(state, "MODE")
                continue
            mask = args.pop(0)
            if not _is_word(mask):
                out.append(_numeric(state, ERR_INVALIDMODEPARAM, room, char, mask,
                                    "A mask is one word"))
                continue
            name = _LIST_MODES[char][sign == "-"]
            out.append(_invoke(name, f"{room} {mask}"))
        elif char == "o":
            if not args:
                out += _more_params(state, "MODE")
                continue
            nick = args.pop(0)
            if not _is_word(nick):
                out.append(_numeric(state, ERR_NOSUCHNICK, nick, "No such nick"))
                continue
            out.append(_invoke("deop" if sign == "-" else "op", f"{room} {nick}"))
        elif char in _SETTINGS:
            value = "off" if sign == "-" else "on"
            out.append(_invoke("roomset", f"{room} {_SETTINGS[char]} {value}"))
        else:
            out.append(_numeric(state, ERR_UNKNOWNMODE, char,
                                f"is unknown mode char to me for {room}"))
    return out


def _user_mode(message: Message, state: State) -> list[Item]:
    """chatd has no user modes: the query answers ``+``, a change is 501."""
    target = message.params[0]
    if target.lower() != state.nick.lower():
        return [_numeric(state, ERR_USERSDONTMATCH, "Cant change mode for other users")]
    if len(message.params) == 1 or not message.params[1].strip("+-"):
        return [_numeric(state, RPL_UMODEIS, "+", "chatd has no user modes")]
    return [_numeric(state, ERR_UMODEUNKNOWNFLAG, "Unknown MODE flag")]


# -- messages -----------------------------------------------------------------------------------


def _privmsg(message: Message, state: State) -> list[Item]:
    return _message(message, state, notice=False)


def _notice_command(message: Message, state: State) -> list[Item]:
    return _message(message, state, notice=True)


def _ctcp(text: str) -> tuple[str, str] | None:
    """``(VERB, rest)`` of a CTCP (``\\x01VERB rest\\x01``, the closing one optional)."""
    if not text.startswith("\x01"):
        return None
    body = text[1:-1] if len(text) > 1 and text.endswith("\x01") else text[1:]
    verb, _, rest = body.partition(" ")
    return verb.upper(), rest


def _message(message: Message, state: State, *, notice: bool) -> list[Item]:
    """PRIVMSG/NOTICE to each target; a NOTICE gets no error of this module's."""
    command = "NOTICE" if notice else "PRIVMSG"
    out: list[Item] = []
    if not message.params or not message.params[0]:
        out.append(_numeric(state, ERR_NORECIPIENT, f"No recipient given ({command})"))
    elif len(message.params) < 2 or not message.params[1]:
        out.append(_numeric(state, ERR_NOTEXTTOSEND, "No text to send"))
    else:
        targets = _targets(state, command, message.params[0])
        if isinstance(targets, Message):
            out.append(targets)
        else:
            for target in targets:
                out += _to_target(state, target, message.params[1], notice)
    return [item for item in out if not isinstance(item, Message)] if notice else out


def _to_target(state: State, target: str, text: str, notice: bool) -> list[Item]:
    if target.lower() in _SERVICE_KEYS:
        return _service(state, _SERVICE_KEYS[target.lower()], text)
    ctcp = _ctcp(text)
    if not target.startswith("#"):
        if notice:  # a CTCP reply too: a NOTICE as it is, for its client
            return [Invoke("notice", f"{target} {text}", quiet=True)]
        return [_invoke("msg", f"{target} {text}")]  # a CTCP as it is, for its client
    if ctcp is None:
        if notice:
            return [Say(text, room=target, notice=True, quiet=True)]
        return [Say(text, room=target)]
    verb, rest = ctcp
    if verb != "ACTION":
        return [_numeric(state, ERR_CANNOTSENDTOCHAN, target,
                         f"CTCP {verb[:20] or '(empty)'} is not passed to a channel "
                         "(only ACTION)")]
    rest = rest.replace("\x01", "")  # a CTCP delimiter inside the action ends nothing
    if not rest.strip():
        return [_numeric(state, ERR_NOTEXTTOSEND, "No text to send")]
    return [Say(rest, room=target, action=True, quiet=notice)]


_SERVICE_KEYS = {name.lower(): name for name in SERVICES}


def _service(state: State, service: str, text: str) -> list[Item]:
    """``PRIVMSG NickServ :IDENTIFY pw``: the chatd command named by the first word."""
    verb, _, args = text.strip().partition(" ")
    name = verb.lower()
    if not name or not all((c.isalnum() and c.isascii()) or c in "-_" for c in name):
        return [_notice(state, f"{service}: not a command: {sanitize(verb)[:20]} "
                               "(HELP lists chatd's commands)")]
    args = args.strip()
    if name == "register" and len(args.split()) > 1 and not args.startswith("#"):
        # NickServ's REGISTER PASSWORD EMAIL: chatd keeps no e-mail, and two words
        # would be an operator's /register NICK PASSWORD.
        return [_notice(state, f"{service}: REGISTER PASSWORD (one word; chatd keeps no "
                               "e-mail address)")]
    if not _known(state, name):
        return [_notice(state, f"{service}: no such command: {name} "
                               "(HELP lists chatd's commands)")]
    return [_invoke(name, args)]


def _known(state: State, name: str) -> bool:
    """Whether ``name`` is a chatd command, as far as the state can tell."""
    commands: Container[str] | None = getattr(state, "commands", None)
    return commands is None or name in commands


# -- users --------------------------------------------------------------------------------------


def _nick(message: Message, state: State) -> list[Item]:
    if not message.params or not message.params[0]:
        return [_numeric(state, ERR_NONICKNAMEGIVEN, "No nickname given")]
    return [_invoke("nick", message.params[0])]


def _away(message: Message, state: State) -> list[Item]:
    text = message.params[0] if message.params else ""
    return [_invoke("away", text)]


def _quit(message: Message, state: State) -> list[Item]:
    return [_invoke("quit", message.params[0] if message.params else "")]


def _whois(message: Message, state: State) -> list[Item]:
    if not message.params or not message.params[-1]:
        return [_numeric(state, ERR_NONICKNAMEGIVEN, "No nickname given")]
    nicks = _targets(state, "WHOIS", message.params[-1])  # WHOIS [server] nick[,nick]
    if isinstance(nicks, Message):
        return [nicks]
    return [_invoke("whois", nick) if _is_word(nick)
            else _numeric(state, ERR_NOSUCHNICK, nick, "No such nick") for nick in nicks]


def _oper(message: Message, state: State) -> list[Item]:
    if not message.params:
        return _more_params(state, "OPER")
    return [_invoke("oper", message.params[-1])]  # OPER [name] password: no name in chatd


def _kill(message: Message, state: State) -> list[Item]:
    if not message.params or not message.params[0]:
        return _more_params(state, "KILL")
    nick = message.params[0]
    if not _is_word(nick):
        return [_numeric(state, ERR_NOSUCHNICK, nick, "No such nick")]
    reason = message.params[1] if len(message.params) > 1 else ""
    return [_invoke("kill", f"{nick} {reason}".rstrip())]


def _setname(message: Message, state: State) -> list[Item]:
    """``SETNAME :name``: chatd's ``/setname`` (the domain checks the name: ``FAIL SETNAME
    INVALID_REALNAME`` for a bad one; the ``SETNAME`` echo confirms a good one)."""
    if not message.params:
        return _more_params(state, "SETNAME")
    return [Invoke("setname", message.params[-1])]


#: Most lines one ``CHATHISTORY`` answers (ISUPPORT ``CHATHISTORY``): a larger limit is
#: read as this one (the history plugin's ``max_lines`` may cut further, and says so).
CHATHISTORY_MAX = 100
#: The message references ``CHATHISTORY`` takes, preferred first (ISUPPORT ``MSGREFTYPES``):
#: chatd's msgids are its event ids, one increasing sequence (history keeps them).
MSGREFTYPES = ("msgid", "timestamp")
#: ``CHATHISTORY`` subcommands and the references each takes.
_CHATHISTORY_REFS = {"LATEST": 1, "BEFORE": 1, "AFTER": 1, "AROUND": 1, "BETWEEN": 2}
_TIMESTAMP = re.compile(r"timestamp=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")
_MSGID = re.compile(r"msgid=\d{1,18}(-\d{1,4})?")  # "-1": a piece of a split line


def _fail(state: State, code: str, *params: str) -> Message:
    """``FAIL CHATHISTORY code params... :text`` (IRCv3 standard replies)."""
    *words, text = params
    return Message("FAIL", ("CHATHISTORY", code, *(_echo(w) for w in words), text),
                   source=state.server_name)


def _chathistory(message: Message, state: State) -> list[Item]:
    """``CHATHISTORY LATEST|BEFORE|AFTER|AROUND|BETWEEN target ref [ref] limit``: the
    history plugin's ``/history target which ref [ref] limit`` (IRCv3 draft/chathistory;
    its answer comes as a ``chathistory`` batch).  Refused here: what is not of the
    grammar (``INVALID_PARAMS``), a target that is no room or nick (``INVALID_TARGET``);
    ``TARGETS`` is not supported."""
    params = message.params
    if not params:
        return [_fail(state, "NEED_MORE_PARAMS", "*", "Missing parameters")]
    sub = params[0].upper()
    refs = _CHATHISTORY_REFS.get(sub)
    if refs is None:
        why = ("TARGETS is not supported" if sub == "TARGETS"
               else "Unknown subcommand: LATEST, BEFORE, AFTER, AROUND or BETWEEN")
        return [_fail(state, "INVALID_PARAMS", params[0], why)]
    if len(params) < refs + 3:
        return [_fail(state, "NEED_MORE_PARAMS", sub, "Missing parameters")]
    target, points, limit = params[1], params[2:2 + refs], params[2 + refs]
    if len(params) > refs + 3:
        return [_fail(state, "INVALID_PARAMS", sub, "Too many parameters")]
    if not _is_word(target) or target.startswith(":") or (
            not target.startswith("#") and not target.replace("-", "").replace("_", "").isalnum()):
        return [_fail(state, "INVALID_TARGET", sub, target, "Not a channel or a nick")]
    for point in points:
        if not (_MSGID.fullmatch(point) or _TIMESTAMP.fullmatch(point)
                or (point == "*" and sub == "LATEST")):
            return [_fail(state, "INVALID_PARAMS", sub, point,
                          "A reference is msgid=ID, timestamp=YYYY-MM-DDThh:mm:ss.sssZ"
                          + (" or *" if sub == "LATEST" else ""))]
    if not (limit.isascii() and limit.isdigit()) or int(limit) < 1:
        return [_fail(state, "INVALID_PARAMS", sub, limit, "The limit is a number, 1 or more")]
    wanted = min(int(limit), CHATHISTORY_MAX)
    return [_invoke("history", f"{target} {sub.lower()} {' '.join(points)} {wanted}")]


def _tagmsg(message: Message, state: State) -> list[Item]:
    """``TAGMSG``: nothing.  chatd relays no client-only tags (ISUPPORT
    ``CLIENTTAGDENY=*``), so a ``TAGMSG`` (``+typing``, ``+react``...) carries nothing
    anyone may be sent, and the message-tags specification says not to relay it; it
    is no error either (a client with ``message-tags`` may send one any time)."""
    return []


def _chatd_command(message: Message, state: State) -> list[Item]:
    """A command IRC does not have: chatd's command of that name, if it has one."""
    name = message.command.lower()
    if not name.isalpha() or not _known(state, name):
        return _unknown(message, state)
    return [_invoke(name, " ".join(message.params))]


_HANDLERS: dict[str, Handler] = {
    "PING": _ping, "PONG": _pong, "PASS": _already_registered, "USER": _already_registered,
    "CAP": _unknown, "AUTHENTICATE": _unknown,
    "VERSION": _version, "TIME": _time, "HELP": _help, "HELPOP": _help,
    "JOIN": _join, "PART": _part, "TOPIC": _topic, "NAMES": _names, "WHO": _who,
    "LIST": _list, "KICK": _kick, "INVITE": _invite, "MODE": _mode,
    "PRIVMSG": _privmsg, "NOTICE": _notice_command,
    "NICK": _nick, "AWAY": _away, "QUIT": _quit, "WHOIS": _whois, "OPER": _oper,
    "KILL": _kill, "SETNAME": _setname, "CHATHISTORY": _chathistory, "LUSERS": _lusers,
    "TAGMSG": _tagmsg,
}

__all__ = ["CHANMODES", "CHATHISTORY_MAX", "MODES_MAX", "MSGREFTYPES", "PROTOCOL_COMMANDS",
           "SERVICES", "TARGMAX", "State", "translate"]
