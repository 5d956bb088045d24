"""Example plugin: greet people when they enter a room, with per-room texts.

Configure it in config.yaml::

    plugins:
      greeter:
        default: "Welcome to {room}, {nick}!"   # rooms not listed below; null (default) = silent
        rooms:
          "#dev": "Welcome {nick}. Builds are at ci.example; be kind."

The greeting goes only to the person joining, as a notice.  Shows: a plugin
config section validated at startup (a bad value stops the server with the
file, key and line; a room name or greeting holding control, invisible or bidi
characters is refused, ``server.config.check_text``), and reacting to
``chatd_room_join``.
"""

from __future__ import annotations

from chatd import Client, Room, Server, StashKey, fill, hookimpl, template_problem

GREETINGS = StashKey["tuple[str | None, dict[str, str]]"]()


def _template(server: Server, key: str, value: object) -> str:
    if not isinstance(value, str):
        raise server.config.error(key, f"expected a text, got {value!r}")
    problem = template_problem(value, ("nick", "room"))  # {nick.__class__} is refused
    if problem:
        raise server.config.error(key, problem)
    return value


def _room(server: Server, key: str, room: object) -> str:
    if not isinstance(room, str) or not room.startswith("#"):
        raise server.config.error(key, f"expected a room name such as '#dev', got {room!r}")
    return server.config.check_text(key, room, kind="name")  # no invisible characters


@hookimpl
def chatd_startup(server: Server) -> None:
    section = server.plugin_config("greeter")
    default = section.get("default")
    if default is not None:
        default = _template(server, "plugins.greeter.default", default)
    rooms = section.get("rooms") or {}
    if not hasattr(rooms, "items"):
        raise server.config.error("plugins.greeter.rooms", "expected a mapping of room: text")
    per_room = {
        _room(server, f"plugins.greeter.rooms.{room}", room).lower():
            _template(server, f"plugins.greeter.rooms.{room}", text)
        for room, text in rooms.items()
    }
    server.stash[GREETINGS] = (default, per_room)


@hookimpl
def chatd_room_join(client: Client, room: Room) -> None:
    default, per_room = client.server.stash.get(GREETINGS, (None, {}))
    template = per_room.get(room.name.lower(), default)
    if template:
        client.notice(fill(template, nick=client.nick, room=room.name))
