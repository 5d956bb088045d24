"""Checking a built-in plugin's ``plugins.<name>`` section against its defaults.

Each built-in with settings describes them as a dict of defaults (the type of
each default is the type the value must have) and, for every number, a
:class:`Range`: the values that work.  A number always ends somewhere with a
ceiling of its own (a timer, a SQL parameter, an allocation), so a number
setting without a range is a programming error, found the first time the
plugin starts.  A wrong key or value stops the server (and ``--check-config``,
and a reload) with the key and its line, before anything changes.  Not part of
the public API (a third-party plugin validates its own section with
``server.config.error``, ``server.config.check_number`` and
``server.config.check_text``, which this module uses too); shared so the
built-ins word their errors alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from chatd import Server


@dataclass(frozen=True, slots=True)
class Range:
    """The values a number setting may take: ``low`` to ``high``, both included, or
    above ``low`` with ``above`` (for settings where ``low`` would mean "never" or
    "nothing")."""

    low: float
    high: float
    above: bool = False


def section_settings(server: Server, plugin: str, defaults: Mapping[str, Any],
                     ranges: Mapping[str, Range], *,
                     nested: Iterable[str] = ()) -> dict[str, Any]:
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
        settings[key] = checked_value(server, f"plugins.{plugin}.{key}", defaults[key], value,
                                      ranges.get(key))
    return settings


def checked_value(server: Server, key: str, default: Any, value: Any,
                  allowed: Range | None = None) -> Any:
    """``value`` if it has the type of ``default`` (bool, whole number, number,
    string) and, for a number, lies within ``allowed``."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise server.config.error(key, f"expected true or false, got {value!r}")
        return value
    if isinstance(default, str):
        if not isinstance(value, str):
            raise server.config.error(key, f"expected a string, got {value!r}")
        return value
    if allowed is None:
        raise TypeError(f"{key}: a number setting needs a Range (the values that work)")
    bounds: dict[str, float] = {"gt" if allowed.above else "ge": allowed.low}
    return server.config.check_number(key, value, le=allowed.high,
                                      whole=isinstance(default, int), **bounds)
