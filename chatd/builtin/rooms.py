"""Built-in plugin *rooms*: the default room, where lines go, /join /part /rooms /who /topic.

Policy, all of it replaceable (disable this plugin, or pre-empt its hooks):

* A new client is greeted with the welcome line (``plugins.rooms.welcome`` in
  config.yaml, with ``{nick}`` and ``{room}``) and put in the default room.
* Plain lines go to the client's current room (``chatd_route_message``, a
  ``trylast`` default any plugin can pre-empt); the server delivers them to the
  *other* members, with no echo to the sender.
* A client may be in several rooms; ``/join`` makes a room current and keeps
  the others, ``/switch`` changes the current room, ``/part`` leaves one, and
  the current room falls back to the latest other room.  Whether the last room
  can be left is the client's protocol's rule (``client.keeps_a_room``): not on
  the line protocol (a person at ``nc`` always talks somewhere); a jsonl program
  may leave every room, and is then in none.  Lines from a room other than
  the current one arrive tagged with it (the line protocol's ``[#room] ``).
  "you are now talking in #x" is said only where the protocol has a current
  room (``client.has_current_room``: line, jsonl; not IRC).

Joins, parts, quits and nick changes are events the server itself delivers to
the rooms concerned (each member told once); this plugin answers its own
commands with typed replies (:mod:`chatd.replies`: ``Names`` for ``/who`` and
the greeting of a ``/join``, ``RoomList`` for ``/rooms``, ``RoomTopic``), which
each protocol words its own way.  ``/who``, ``/rooms`` and the greeting ask the
delivery backend (``server.ask_members``, ``server.ask_rooms``), so in a cluster
they show every node; the answer may come a little later, and the client's next
requests wait for it.  A room only another node has shows no topic or operator
marks here (this process keeps those of its own rooms).
"""

from __future__ import annotations

import functools

from chatd import (
    Client,
    Command,
    CommandError,
    Member,
    Room,
    RoomError,
    RoomInfo,
    Server,
    UsageError,
    fill,
    hookimpl,
    template_problem,
)
from chatd.replies import Names, RoomList, RoomTopic, room_entries

DEFAULT_WELCOME = "Welcome to chatd, {nick}. You are in {room}. Type /help for commands."


def _welcome_template(server: Server) -> str:
    welcome = server.plugin_config("rooms").get("welcome", DEFAULT_WELCOME)
    return str(welcome)


@hookimpl
def chatd_startup(server: Server) -> None:
    problem = template_problem(_welcome_template(server), ("nick", "room"))
    if problem:
        raise server.config.error("plugins.rooms.welcome", problem)
    server.rooms.get_or_create(server.default_room)


@hookimpl(tryfirst=True)
def chatd_client_connect(client: Client) -> None:
    server = client.server
    # The welcome comes first, so anything said on joining (a greeter) follows it.
    client.notice(fill(_welcome_template(server), nick=client.nick, room=server.default_room))
    try:
        room = server.join(client, server.default_room, quiet=True)  # the welcome said where
    except RoomError as exc:  # banned from it (the moderation plugin), say
        client.error(f"{exc}; /join another room", code=exc.code)
        return
    if client.names_every_join:  # IRC builds its nick list from the join's names
        _greet_when_asked(client, room)


@hookimpl(trylast=True)
def chatd_route_message(client: Client, text: str) -> Room | None:
    return client.room


# -- commands ------------------------------------------------------------------

#: Most rooms /rooms names (your own always come first); /list pages through all.
ROOMS_SHOWN = 30
#: Most nicks /who names on its line.
WHO_SHOWN = 100


def _room_arg(client: Client, args: str) -> Room:
    """The room named in ``args``, or the current room when ``args`` is empty."""
    if not args:
        if client.room is None:
            raise CommandError("you are not in a room", code="not_in_room")
        return client.room
    room = client.server.rooms.get(args.split()[0])
    if room is None:
        raise CommandError(f"no such room: {args.split()[0]}", code="no_such_room")
    return room


def cmd_join(client: Client, args: str) -> None:
    name = args.split()[0] if args else ""
    if not name:
        raise UsageError()
    if not name.startswith("#"):
        name = "#" + name
    room = client.server.rooms.get(name)
    if room is not None and room in client.rooms:
        _switch(client, room)
        return
    _greet_when_asked(client, client.server.join(client, name, quiet=True))


def _greet_when_asked(client: Client, room: Room) -> None:
    """Greet ``client`` in ``room`` with its members on every node: asked, so it may
    come a little later (the client's next requests wait for it); with no answer in
    time, the members of this process are the best it can say (it did join)."""
    client.server.ask_members(client, room.name, functools.partial(_greet, client, room),
                              expired=lambda: _greet(client, room, None))


def _greet(client: Client, room: Room, members: list[Member] | None) -> None:
    """The greeting of a ``/join`` (a ``Names`` reply): the first WHO_SHOWN others and the
    joiner itself; ``members`` None: this process's (the backend did not answer)."""
    server = client.server
    everyone = server.names(room) if members is None else server.member_entries(room.name,
                                                                                members)
    others = [member for member in everyone if member.nick != client.nick][:WHO_SHOWN]
    shown = {member.nick for member in others} | {client.nick}
    client.reply(Names, room=room.name, topic=room.topic, total=len(everyone), greeting=True,
                 members=tuple(member for member in everyone if member.nick in shown))


def _switch(client: Client, room: Room) -> None:
    client.server.join(client, room.name)  # a room it is in: only made current
    if client.has_current_room:  # IRC has none: every message names its room
        client.notice(f"you are now talking in {room.name}")


def cmd_switch(client: Client, args: str) -> None:
    name = args.split()[0] if args else ""
    if not name:
        raise UsageError()
    room = client.server.rooms.get(name if name.startswith("#") else "#" + name)
    if room is None or room not in client.rooms:
        raise CommandError(f"you are not in {name}; /join it first", code="not_in_room")
    _switch(client, room)


def cmd_part(client: Client, args: str) -> None:
    parts = args.split(maxsplit=1)
    if parts and parts[0].startswith("#"):
        room = _room_arg(client, parts[0])
        reason = parts[1] if len(parts) > 1 else ""
    else:
        room = _room_arg(client, "")
        reason = args
    if room not in client.rooms:
        raise CommandError(f"you are not in {room.name}", code="not_in_room")
    if len(client.rooms) == 1 and client.keeps_a_room:  # the protocol's rule (line: yes)
        raise CommandError(f"{room.name} is your only room; /join another one first",
                           code="last_room")
    client.server.part(client, room, reason)  # its source sees the part event too
    if client.room is not None and client.has_current_room:
        client.notice(f"you are now talking in {client.room.name}")


def cmd_partall(client: Client, args: str) -> None:
    """``/partall [reason]``: leave every room (IRC's ``JOIN 0``); on a protocol that
    keeps a room (the line protocol) that cannot be, and nothing is left."""
    if not client.rooms:
        raise CommandError("you are not in a room", code="not_in_room")
    if client.keeps_a_room:
        raise CommandError("you keep one room at least; /part the others one by one",
                           code="last_room")
    for room in list(client.rooms):
        client.server.part(client, room, args.strip())


def cmd_rooms(client: Client, args: str) -> None:
    client.server.ask_rooms(client, functools.partial(_rooms_answer, client))


def _rooms_answer(client: Client, rooms: list[RoomInfo]) -> None:
    """``/rooms``: every room on any node, bounded (yours, then others, in name order)."""
    rooms = sorted(rooms, key=lambda room: room.name.lower())
    mine = {room.name.lower() for room in client.rooms}
    # Bounded, so the reply is short however many rooms exist: yours, then others.
    shown = [r for r in rooms if r.name.lower() in mine]
    shown += [r for r in rooms if r.name.lower() not in mine][: max(0, ROOMS_SHOWN - len(shown))]
    shown.sort(key=lambda room: room.name.lower())
    client.reply(RoomList, rooms=room_entries(shown, client), total=len(rooms))


def cmd_who(client: Client, args: str) -> None:
    _members(client, args, who=True)


def cmd_names(client: Client, args: str) -> None:
    _members(client, args, who=False)


def _members(client: Client, args: str, *, who: bool) -> None:
    """``/who`` and ``/names``: the same answer, marked with the command that asked (IRC
    words the two differently: WHO's 352/315, NAMES' 353/366)."""
    if args:
        name = args.split()[0]
        room = client.server.rooms.get(name)
        name = room.name if room is not None else name
    elif client.room is None:
        raise CommandError("you are not in a room", code="not_in_room")
    else:
        name = client.room.name
    client.server.ask_members(client, name, functools.partial(_who_answer, client, name, who))


def _who_answer(client: Client, name: str, who: bool, members: list[Member]) -> None:
    """``/who``: the members of the room named ``name`` on every node, marked."""
    server = client.server
    room = server.rooms.get(name)  # this process's, for its topic and operators
    if not members and room is None:
        raise CommandError(f"no such room: {name}", code="no_such_room")
    everyone = server.member_entries(name, members)
    client.reply(Names, room=name, members=tuple(everyone[:WHO_SHOWN]),
                 total=len(everyone), topic=room.topic if room is not None else "", who=who)


def cmd_topic(client: Client, args: str) -> None:
    first, _, rest = args.partition(" ")
    if first.startswith("#"):
        room = _room_arg(client, first)
        text = rest.strip()
    else:
        room = _room_arg(client, "")
        text = args
    if not text:
        client.reply(RoomTopic, room=room.name, topic=room.topic)
        return
    if room not in client.rooms:
        raise CommandError(f"join {room.name} to set its topic", code="not_in_room")
    client.server.set_topic(client, room, text)


@hookimpl
def chatd_commands() -> list[Command]:
    return [
        Command(
            "join", cmd_join, "/join #room", "join a room (created if new) and talk there",
            "Joins #room and makes it your current room; you stay in your other rooms.\n"
            "Plain lines go to the current room. Lines from your other rooms arrive\n"
            "tagged with their room: [#lobby] <bob> lunch?  /join of a room you are\n"
            "in switches to it, like /switch.",
        ),
        Command(
            "switch", cmd_switch, "/switch #room", "talk in another of your rooms",
            "Makes #room (one you are in) your current room: plain lines go there, and\n"
            "its lines arrive without a tag.",
        ),
        Command(
            "part", cmd_part, "/part [#room] [reason]", "leave a room (default: the current one)",
            "You stay in your other rooms; the most recently joined one becomes current.\n"
            "Your last room cannot be left.",
        ),
        Command(
            "partall", cmd_partall, "/partall [reason]", "leave every room you are in",
            "IRC's JOIN 0. Not on a connection that always keeps a room (the line\n"
            "protocol's): there, /part the rooms one by one.",
        ),
        Command(
            "rooms", cmd_rooms, "/rooms", "list the rooms and how many are in each",
            "* marks your current room, + the other rooms you are in.",
        ),
        Command(
            "who", cmd_who, "/who [#room]", "list the members of a room (default: current)",
            f"Names the first {WHO_SHOWN} (by name) and counts the rest; /names is the same.",
        ),
        Command("names", cmd_names, "/names [#room]", "the same as /who"),
        Command(
            "topic", cmd_topic, "/topic [#room] [text]", "show or set a room's topic",
            "Without text, shows the topic; with text, sets it for everyone in the room.",
        ),
    ]
