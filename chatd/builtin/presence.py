"""Built-in plugin *presence*: /list, /whois, /ison, /userhost, /lusers, /away and
/setname — who is where, and who is here.

* ``/list [page]`` lists the rooms with their member counts and topics, 20 a
  page, so the reply stays small however many rooms there are.
* ``/whois NICK`` says which rooms a user is in, how long it has been
  connected and idle, the registered nick it identified as, and its away message
  (and, to a server operator, the address it connects from).
* ``/ison NICK...`` and ``/userhost NICK...`` say which of the nicks are online (and,
  for ``/userhost``, their ``user@host``, cloaked as ``/whois`` shows it): IRC's
  ISON and USERHOST, for clients' notify lists.
* ``/lusers`` counts who is here: users, operators, connections not yet a user,
  rooms, and the most users at once (IRC's LUSERS; an IRC client is sent it
  after registration, ``client.counts_at_start``).
* ``/away [message]`` marks you away (no message: back).  Someone who sends you
  a private message while you are away is told so, once per message (not for a
  notice: a notice is never answered automatically); ``/who`` shows away users
  with ``(away)``.
* ``/setname NAME`` sets your real name (IRC's ``SETNAME``; an IRC client gives one
  when it connects): shown by ``/whois`` and IRC's WHO, at most
  ``REALNAME_MAX`` characters, no control or invisible characters
  (``server.set_realname`` says why it refuses one).

``/list`` and ``/whois`` answer with typed replies (:mod:`chatd.replies`:
``RoomList``, ``Whois``), which each protocol words its own way.
Everything here goes through the public API (the presence questions
``server.ask_rooms`` and ``server.ask_whois``, which see every node of a
cluster; ``client.away``; ``chatd_message``), like any third-party plugin.  The
away reply to a private message reads the recipient's away message from the
event (``PrivateMessage.to_away``, filled in from the presence answer).
"""

from __future__ import annotations

import functools
import time

from chatd import (
    Client,
    Command,
    CommandError,
    Event,
    Person,
    RoomInfo,
    UsageError,
    hookimpl,
    plural,
)
from chatd.chat.identity import REALNAME_MAX
from chatd.events import PrivateMessage
from chatd.replies import (
    AwayStatus,
    Online,
    OnlineEntry,
    RoomList,
    ServerCounts,
    Whois,
    room_entries,
)

from .oper import is_operator, operators_online

PAGE = 20
AWAY_MAX = 200
#: Most nicks one /ison or /userhost asks about (IRC: USERHOST takes 5).
ISON_MAX = 32
USERHOST_MAX = 5


def cmd_list(client: Client, args: str) -> None:
    word = args.split()[0] if args else "1"
    if not word.isdigit() or int(word) < 1:
        raise UsageError(f"not a page number: {word}")
    client.server.ask_rooms(client, functools.partial(_list_answer, client, int(word)))


def _list_answer(client: Client, page: int, rooms: list[RoomInfo]) -> None:
    """A page of ``/list``: every room on any node, in name order."""
    rooms = sorted(rooms, key=lambda room: room.name.lower())
    pages = max(1, -(-len(rooms) // PAGE))
    if page > pages:
        verb = "is" if pages == 1 else "are"
        raise CommandError(f"there {verb} {plural(pages, 'page')} of rooms", code="not_found")
    shown = rooms[(page - 1) * PAGE : page * PAGE]
    client.reply(RoomList, rooms=room_entries(shown, client), total=len(rooms), page=page,
                 pages=pages, per_page=PAGE)


def cmd_whois(client: Client, args: str) -> None:
    nick = args.split()[0] if args else ""
    if not nick:
        raise UsageError()
    client.server.ask_whois(client, nick, functools.partial(_whois_answer, client, nick))


def _whois_answer(client: Client, nick: str, person: Person | None) -> None:
    """``/whois``: whoever has the nick, on any node (the address for operators only)."""
    if person is None:
        raise CommandError(f"no such nick: {nick}", code="no_such_nick")
    # Seconds idle, from the wall-clock time of its last line; rounded to the
    # millisecond first, so 5 s idle read back through a float is 5, not 4.
    idle = int(round(max(0.0, time.time() - person.idle_since), 3))
    client.reply(
        Whois, nick=person.nick, userhost=person.user, connected_to=person.node,
        rooms=person.rooms, connected_at=person.connected_at, idle=idle,
        identified_as=person.account, away=person.away,
        address=person.address if is_operator(client) else None, real_name=person.realname,
    )


def cmd_ison(client: Client, args: str) -> None:
    _online(client, args, "ison", ISON_MAX)


def cmd_userhost(client: Client, args: str) -> None:
    _online(client, args, "userhost", USERHOST_MAX)


def _online(client: Client, args: str, command: str, most: int) -> None:
    """``/ison`` and ``/userhost``: ask who has each nick (on any node); one reply once
    every answer is in, the connected ones in the order asked."""
    nicks = args.split()
    if not nicks:
        raise UsageError()
    if len(nicks) > most:
        raise UsageError(f"at most {most} nicks")
    answers: dict[int, Person | None] = {}

    def answered(index: int, person: Person | None) -> None:
        answers[index] = person
        if len(answers) < len(nicks):
            return
        found = (answers[i] for i in range(len(nicks)))
        client.reply(Online, command=command, asked=tuple(nicks), online=tuple(
            OnlineEntry(p.nick, p.user, p.away is not None) for p in found if p is not None))

    for index, nick in enumerate(nicks):
        client.server.ask_whois(client, nick, functools.partial(answered, index))


def cmd_lusers(client: Client, args: str) -> None:
    _counts(client)


def _counts(client: Client) -> None:
    """``/lusers``: how many are here, every number counted, none walked for (a
    registration burst of IRC clients asks once per client)."""
    server = client.server
    users = len(server.clients)
    client.reply(ServerCounts, users=users, invisible=0, operators=operators_online(server),
                 unknown=server.unregistered_connections, rooms=len(server.rooms),
                 most=max(server.most_clients, users), servers=1)


@hookimpl(tryfirst=True)
def chatd_client_connect(client: Client) -> None:
    """IRC's LUSERS after registration (``client.counts_at_start``): before the
    welcome and the first join (this plugin is newer than *rooms*, whose
    ``tryfirst`` implementation sends those)."""
    if client.counts_at_start:
        _counts(client)


def cmd_away(client: Client, args: str) -> None:
    if not args.strip():
        if client.away is None:
            raise CommandError("you are not away", code="not_found")
        client.server.set_away(client, "")  # back: told to whoever follows it (IRC)
        client.reply(AwayStatus, away=None)
        return
    if client.server.set_away(client, " ".join(args.split())[:AWAY_MAX]) is not None:
        client.reply(AwayStatus, away=client.away)


def cmd_setname(client: Client, args: str) -> None:
    if not args:
        raise UsageError()
    if client.server.set_realname(client, args) is None:  # its own copy told it otherwise
        client.notice(f"your real name is already {args}")


@hookimpl
def chatd_message(client: Client, event: Event) -> None:
    # The recipient's away message, as the presence answer that found it said (on
    # any node): carried by the event, no lookup here.
    if (isinstance(event, PrivateMessage) and event.to_away is not None
            and event.to_session != client.session and not event.notice):
        # Not for a notice: a notice is never answered automatically (RFC 2812 3.3.2,
        # the reason IRC servers send no 301 to a NOTICE).
        # After the message itself is delivered (this hook runs just before).
        client.server.call_soon(client.notice, f"{event.target} is away: {event.to_away}")


@hookimpl
def chatd_commands() -> list[Command]:
    return [
        Command(
            "list", cmd_list, "/list [page]", "list the rooms, their sizes and topics",
            f"{PAGE} rooms a page, in name order.",
        ),
        Command(
            "whois", cmd_whois, "/whois NICK", "who someone is: rooms, time online, idle, away",
        ),
        Command(
            "ison", cmd_ison, "/ison NICK...", "which of these nicks are online",
            f"At most {ISON_MAX} nicks (IRC's ISON).",
        ),
        Command(
            "userhost", cmd_userhost, "/userhost NICK...",
            "the user@host of each nick that is online",
            f"At most {USERHOST_MAX} nicks (IRC's USERHOST); the host is cloaked as in /whois.",
        ),
        Command(
            "lusers", cmd_lusers, "/lusers", "how many users, operators and rooms are here",
            "Counted by this server: users, server operators, connections not yet a\n"
            "user, rooms, and the most users at once since it started (IRC's LUSERS).",
        ),
        Command(
            "away", cmd_away, "/away [message]", "say you are away (alone: you are back)",
            "Private messages you get while away tell the sender your message;\n"
            "/who and /whois show it.",
        ),
        Command(
            "setname", cmd_setname, "/setname NAME", "set your real name (shown by /whois)",
            f"At most {REALNAME_MAX} characters; no control, colour or invisible characters.\n"
            "IRC clients give one when they connect (USER) and change it with SETNAME.",
        ),
    ]
