"""Checking a built-in plugin's ``plugins.<name>`` section against its defaults.

Each built-in with settings describes them as a dict of defaults; the type of
each default is the type the value must have.  A wrong key or value stops the
server (and ``--check-config``) with the key and its line, before anything
listens.  Not part of the public API (a third-party plugin validates its own
section with ``server.config.error``); shared so the built-ins word their
errors alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from chatd import Server

#: Keys whose value must be above zero (a zero would mean "never" or "nothing").
_POSITIVE_SUFFIXES = ("_days", "_seconds", "max_lines", "_length")


def section_settings(server: Server, plugin: str, defaults: Mapping[str, Any],
                     *, nested: Iterable[str] = ()) -> dict[str, Any]:
    """``plugins.<plugin>`` merged over ``defaults``, every value checked.

    Keys in ``nested`` (sub-sections such as history's ``rooms``) are passed
    through unchecked for the plugin to check itself.
    """
    section = server.plugin_config(plugin)
    settings = dict(defaults)
    passthrough = frozenset(nested)
    for key, value in section.items():
        if key in passthrough:
            settings[key] = value
            continue
        if key not in defaults:
            known = ", ".join(sorted([*defaults, *passthrough]))
            raise server.config.error(f"plugins.{plugin}.{key}", f"unknown key; known: {known}")
        settings[key] = checked_value(server, f"plugins.{plugin}.{key}", defaults[key], value)
    return settings


def checked_value(server: Server, key: str, default: Any, value: Any) -> Any:
    """``value`` if it has the type of ``default`` (bool, whole number, number, string)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise server.config.error(key, f"expected true or false, got {value!r}")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise server.config.error(key, f"expected a string, got {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise server.config.error(key, f"expected a number, got {value!r}")
    if isinstance(default, int) and not isinstance(value, int):
        raise server.config.error(key, f"expected a whole number, got {value!r}")
    if value < 0 or (value == 0 and key.endswith(_POSITIVE_SUFFIXES)):
        raise server.config.error(key, f"expected a number above 0, got {value!r}")
    return value
