"""Built-in plugin *settings*: /set — how your own connection shows things.

``/set`` lists your settings, ``/set NAME VALUE`` changes one.  Today:

``timestamps on|off``
    Every line you receive starts with its time, ``[12:34] <bob> hi`` (the
    server's clock).  Off by default.
"""

from __future__ import annotations

from chatd import Client, Command, CommandError, UsageError, hookimpl

_BOOLEANS = {"on": True, "yes": True, "true": True, "off": False, "no": False, "false": False}


def cmd_set(client: Client, args: str) -> None:
    words = args.split()
    if not words:
        client.notice(f"timestamps {'on' if client.timestamps else 'off'}  (/set NAME VALUE)")
        return
    if len(words) != 2:
        raise UsageError()
    name, value = words[0].lower(), words[1].lower()
    if name != "timestamps":
        raise CommandError(f"no setting {name!r}; settings: timestamps")
    if value not in _BOOLEANS:
        raise CommandError("timestamps is on or off")
    client.timestamps = _BOOLEANS[value]
    client.notice(f"timestamps {'on' if client.timestamps else 'off'}")


@hookimpl
def chatd_commands() -> list[Command]:
    return [
        Command(
            "set", cmd_set, "/set [NAME VALUE]", "your settings (alone: list them)",
            "timestamps on|off: every line starts with its time, [12:34] <bob> hi.",
        ),
    ]
