"""Commands: the declaration plugins make, the table the server keeps, the parser.

A line that starts with ``/`` is a command; ``//text`` is the escape for a
message that starts with ``/`` (it is sent as ``/text``).  Parsing is sans-IO
and lives here so it can be tested alone; dispatch lives in the server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import Client

CommandHandler = Callable[["Client", str], Any]


class CommandError(Exception):
    """Raised by a command handler: the client is shown ``! <message>``."""


class UsageError(CommandError):
    """Raised by a command handler for bad arguments: the client is shown the usage line.

    An optional message is shown before it: ``! bad dice: 0d6 -- usage: /roll NdM``.
    """


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


@dataclass(frozen=True, slots=True)
class ParsedCommand:
    """``/name args`` split into its parts."""

    name: str
    args: str
    cleaned: bool = False  # the sanitiser removed control characters from the line


def parse_line(text: str) -> str | ParsedCommand:
    """Classify a received line: a message (``str``) or a command.

    ``//x`` is the message ``/x``; a lone ``/`` is a message too (it cannot name
    a command).
    """
    if not text.startswith("/"):
        return text
    if text.startswith("//"):
        return text[1:]
    name, _, args = text[1:].partition(" ")
    if not name:
        return text
    return ParsedCommand(name.lower(), args.strip(), text.__class__ is not str)
