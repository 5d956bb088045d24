"""Example plugin: ``/roll [NdM]`` rolls dice for the whole room to see.

This file doubles as the first step of the plugin tutorial (docs/plugins.md):
a module in a ``plugin_dirs`` folder, one hook (``chatd_commands``) and one
command handler.  Try it::

    /roll          -> *** alice rolled 1d6: 4
    /roll 3d20     -> *** alice rolled 3d20: 17 + 2 + 9 = 28
"""

from __future__ import annotations

import random
import re

from chatd import Client, Command, UsageError, hookimpl

_DICE = re.compile(r"(\d{1,2})d(\d{1,4})\Z", re.IGNORECASE)
_MAX_DICE = 20
_MAX_SIDES = 1000


def parse_dice(spec: str) -> tuple[int, int]:
    """``"2d6"`` -> ``(2, 6)``; raises UsageError for anything else."""
    match = _DICE.match(spec.strip() or "1d6")
    if not match:
        raise UsageError(f"not a dice spec: {spec!r}")
    count, sides = int(match.group(1)), int(match.group(2))
    if not 1 <= count <= _MAX_DICE or not 2 <= sides <= _MAX_SIDES:
        raise UsageError(f"1-{_MAX_DICE} dice of 2-{_MAX_SIDES} sides")
    return count, sides


def roll(client: Client, args: str) -> None:
    count, sides = parse_dice(args)
    rolls = [random.randint(1, sides) for _ in range(count)]
    detail = " + ".join(map(str, rolls)) + f" = {sum(rolls)}" if count > 1 else str(rolls[0])
    text = f"{client.nick} rolled {count}d{sides}: {detail}"
    if client.room is not None:
        client.room.say(text)  # a notice from this plugin, to everyone in the room
    else:
        client.notice(text)


@hookimpl
def chatd_commands() -> list[Command]:
    return [
        Command(
            "roll",
            roll,
            usage="/roll [NdM]",
            help="roll N dice with M sides for the room (default 1d6)",
            long_help="N is 1-20 and M is 2-1000; everyone in your room sees the result.",
        )
    ]
