"""Built-in plugin *settings*: /set — how your own connection shows things.

``/set`` lists your settings, ``/set NAME VALUE`` changes one.  This plugin
brings one; any plugin adds its own with the ``chatd_settings`` hook (the
*history* plugin adds ``history on|off``).

``timestamps on|off``
    Every line you receive starts with its time, ``[12:34] <bob> hi`` (the
    server's clock).  Off by default.
"""

from __future__ import annotations

from chatd import Client, Command, CommandError, Server, Setting, UsageError, hookimpl

_ON_OFF = ("on", "off")
#: Words people type for on and off.
_SYNONYMS = {"yes": "on", "true": "on", "1": "on", "no": "off", "false": "off", "0": "off"}


def _set_timestamps(client: Client, value: str) -> None:
    client.timestamps = value == "on"


TIMESTAMPS = Setting(
    "timestamps", _ON_OFF, lambda client: "on" if client.timestamps else "off",
    _set_timestamps, "every line starts with its time, [12:34] <bob> hi",
)


def _settings(server: Server) -> dict[str, Setting]:
    """Every setting, this plugin's first, then the other plugins' in load order."""
    found = {TIMESTAMPS.name: TIMESTAMPS}
    for result in server.hooks.call("chatd_settings", server=server):
        for setting in result or ():
            found.setdefault(setting.name, setting)
    return found


def cmd_set(client: Client, args: str) -> None:
    settings = _settings(client.server)
    words = args.split()
    if not words:
        shown = "; ".join(f"{s.name} {s.get(client)}" for s in settings.values())
        client.notice(f"{shown}  (/set NAME VALUE)")
        return
    if len(words) != 2:
        raise UsageError()
    name, value = words[0].lower(), words[1].lower()
    setting = settings.get(name)
    if setting is None:
        raise CommandError(f"no setting {name!r}; settings: {', '.join(settings)}",
                           code="not_found")
    if value not in setting.values and setting.values == _ON_OFF:
        value = _SYNONYMS.get(value, value)
    if value not in setting.values:
        raise CommandError(f"{name} is {' or '.join(setting.values)}", code="bad_argument")
    setting.set(client, value)
    client.notice(f"{name} {setting.get(client)}")


@hookimpl
def chatd_commands() -> list[Command]:
    return [
        Command(
            "set", cmd_set, "/set [NAME VALUE]", "your settings (alone: list them)",
            "/set alone lists every setting with your value; plugins add their own.\n"
            "timestamps on|off: every line starts with its time, [12:34] <bob> hi.",
        ),
    ]
