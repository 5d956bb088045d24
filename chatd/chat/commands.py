"""Commands: the declaration plugins make, and the table the server keeps.

How a client names a command is its protocol's business (``/name args`` on the
line protocol, ``{"cmd": "name"}`` in JSON); both arrive as a
:class:`chatd.requests.Invoke` and are dispatched through this table by the
chat domain (:mod:`chatd.chat.domain`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..plugins import PluginLoadError
from .errors import CommandError, UsageError

if TYPE_CHECKING:
    from ..plugins import PluginHost
    from .client import Client

CommandHandler = Callable[["Client", str], Any]


@dataclass(frozen=True, slots=True)
class Command:
    """A command a plugin provides (returned from ``chatd_commands``).

    :param name: what follows the ``/``, lowercase letters, digits, ``-`` and ``_``.
    :param handler: ``handler(client, args)``; ``args`` is the rest of the line, stripped.
    :param usage: the synopsis, e.g. ``"/msg NICK text"``.
    :param help: one line for the ``/help`` list.
    :param long_help: shown by ``/help NAME`` under the usage line; may span lines.
    :param exact_args: refuse the line if the sanitiser had to change it.
    """

    name: str
    handler: CommandHandler
    usage: str = ""
    help: str = ""
    long_help: str = ""
    plugin: str = field(default="", compare=False)
    #: Refuse the command when control characters had to be removed from its line,
    #: instead of running it on an altered argument (nicks, passwords).
    exact_args: bool = False

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_" for c in self.name):
            raise ValueError(f"invalid command name {self.name!r}")
        if self.name != self.name.lower():
            raise ValueError(f"command names are lowercase: {self.name!r}")


@dataclass(frozen=True, slots=True)
class Setting:
    """A per-client setting a plugin adds to ``/set`` (returned from ``chatd_settings``).

    :param name: the word after ``/set``, lowercase (``history``).
    :param values: the words it accepts (``("on", "off")``); ``/set NAME VALUE``
        with any other is refused with this list.
    :param get: ``get(client)``: the client's current value, one of ``values``.
    :param set: ``set(client, value)``: apply one of ``values`` (already checked).
    :param help: one line for ``/help set``.
    """

    name: str
    values: tuple[str, ...]
    get: Callable[[Client], str]
    set: Callable[[Client, str], None]
    help: str = ""

    def __post_init__(self) -> None:
        if not self.name or not self.name.isalnum() or self.name != self.name.lower():
            raise ValueError(f"invalid setting name {self.name!r}")
        if not self.values:
            raise ValueError(f"setting {self.name!r} accepts no values")


class DuplicateCommandError(Exception):
    """Two plugins declared the same command name."""


class CommandTable:
    """Every command the server knows, by name; built once at startup."""

    __slots__ = ("_commands",)

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def add(self, command: Command) -> None:
        existing = self._commands.get(command.name)
        if existing is not None:
            raise DuplicateCommandError(
                f"command /{command.name} is provided by both plugin "
                f"{existing.plugin!r} and plugin {command.plugin!r}"
            )
        self._commands[command.name] = command

    def remove_plugin(self, plugin: str) -> None:
        """Drop every command of ``plugin`` (it was disabled)."""
        for name in [n for n, c in self._commands.items() if c.plugin == plugin]:
            del self._commands[name]

    def get(self, name: str) -> Command | None:
        return self._commands.get(name.lower())

    def __iter__(self) -> Iterator[Command]:
        return iter(sorted(self._commands.values(), key=lambda c: c.name))

    def __len__(self) -> int:
        return len(self._commands)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._commands


def _declared_commands(plugin: str, declared: object) -> list[Command]:
    """What one ``chatd_commands`` returned, checked: a list (or other iterable) of
    :class:`Command` objects.  One bare ``Command`` is the usual slip; say so."""
    if declared is None:
        return []
    if isinstance(declared, Command):
        raise PluginLoadError(
            f"plugin {plugin!r}: chatd_commands returned one Command (/{declared.name}); "
            f"return a list of them: [Command(...)]"
        )
    if isinstance(declared, (str, bytes, dict)) or not hasattr(declared, "__iter__"):
        raise PluginLoadError(
            f"plugin {plugin!r}: chatd_commands must return a list of Command objects, "
            f"got {type(declared).__name__} {declared!r:.80}"
        )
    commands = list(declared)  # type: ignore[call-overload]
    for command in commands:
        if not isinstance(command, Command):
            raise PluginLoadError(
                f"plugin {plugin!r}: chatd_commands must return Command objects, "
                f"got {command!r:.80}"
            )
        _check_handler(plugin, command)
    return commands


def _check_handler(plugin: str, command: Command) -> None:
    """A handler chatd cannot call as ``handler(client, args)`` would fail at its first
    use, in front of a user: refuse it when the plugin loads instead."""
    handler = command.handler
    if not callable(handler):
        raise PluginLoadError(
            f"plugin {plugin!r}: the handler of /{command.name} is not callable: {handler!r:.80}"
        )
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return  # a builtin or C function: nothing to check here
    try:
        signature.bind(None, "")
    except TypeError as exc:
        name = getattr(handler, "__qualname__", None) or repr(handler)
        raise PluginLoadError(
            f"plugin {plugin!r}: the handler of /{command.name}, {name}{signature}, cannot "
            f"be called as handler(client, args): {exc}"
        ) from None


def collect_commands(hooks: PluginHost, server: object) -> CommandTable:
    """Ask every plugin for its commands (``chatd_commands``) and build the table.

    Called at startup and at every reload (for the new copies of the plugins), and by
    ``--check-config``.  Raises :class:`~chatd.plugins.PluginLoadError` naming the
    plugin for a hook that fails, a value that is not a list of :class:`Command`
    objects (one bare ``Command`` included), a handler that cannot be called as
    ``handler(client, args)``, or a name two plugins use.
    """
    table = CommandTable()
    for impl in hooks.implementations("chatd_commands"):
        plugin_name = impl.plugin_name
        kwargs = {"server": server}
        try:
            declared = impl.function(*impl.args(kwargs))
        except Exception as exc:
            raise PluginLoadError(
                f"plugin {plugin_name!r} failed in chatd_commands: {type(exc).__name__}: {exc}"
            ) from exc
        for command in _declared_commands(plugin_name, declared):
            if not command.plugin:
                object.__setattr__(command, "plugin", plugin_name)
            try:
                table.add(command)
            except DuplicateCommandError as exc:
                raise PluginLoadError(str(exc)) from exc
            info = hooks.infos.get(command.plugin)
            if info is not None and command.name not in info.commands:
                info.commands.append(command.name)
    return table


__all__ = [
    "Command",
    "CommandError",
    "CommandHandler",
    "CommandTable",
    "DuplicateCommandError",
    "Setting",
    "UsageError",
    "collect_commands",
]
