"""Built-in plugin *commands*: /help, /nick, /msg, /notice, /me, /quit.

``/help`` lists every command of every plugin, grouped by plugin, from the
server's command table, so a plugin's commands show up without any extra work.
It answers with a typed reply (:class:`chatd.replies.Help`) that each protocol
words its own way.
"""

from __future__ import annotations

from chatd import Client, Command, CommandError, UsageError, hookimpl
from chatd.replies import Help, HelpEntry


def _entry(command: Command) -> HelpEntry:
    return HelpEntry(command.name, command.usage or "/" + command.name, command.help,
                     command.plugin)


def cmd_help(client: Client, args: str) -> None:
    table = client.server.commands
    if args:
        name = args.split()[0].lstrip("/").lower()
        command = table.get(name)
        if command is None:
            raise CommandError(f"no such command /{name} — try /help", code="unknown_command")
        client.reply(Help, commands=(_entry(command),), command=command.name,
                     details=command.long_help)
        return
    by_plugin = sorted(table, key=lambda c: (c.plugin, c.name))
    client.reply(Help, commands=tuple(_entry(command) for command in by_plugin))


def cmd_nick(client: Client, args: str) -> None:
    if not args or len(args.split()) != 1:
        raise UsageError()
    client.server.rename(client, args)  # the rename event tells the client and its rooms


def cmd_msg(client: Client, args: str) -> None:
    target_nick, _, text = args.partition(" ")
    text = text.strip()
    if not target_nick or not text:
        raise UsageError()
    client.server.private_message(client, target_nick, text)


def cmd_notice(client: Client, args: str) -> None:
    """``/notice #room text`` (a room you are in) or ``/notice NICK text``: a message
    marked as a notice, which people's clients show apart and plugins never answer."""
    target, _, text = args.partition(" ")
    text = text.strip()
    if not target or not text:
        raise UsageError()
    server = client.server
    if not target.startswith("#"):
        server.private_message(client, target, text, notice=True)
        return
    room = server.rooms.get(target)
    if room is None or client not in room.members:
        raise CommandError(f"you are not in {target}", code="not_in_room")
    server.message(client, text, room, notice=True)


def cmd_me(client: Client, args: str) -> None:
    if not args:
        raise UsageError()
    if client.room is None:
        raise CommandError("you are not in a room", code="not_in_room")
    client.server.action(client, args)


def cmd_quit(client: Client, args: str) -> None:
    client.server.quit(client, args)


@hookimpl
def chatd_commands() -> list[Command]:
    return [
        Command(
            "help", cmd_help, "/help [command]", "list commands, or explain one",
            "Commands are grouped by the plugin that provides them.",
        ),
        Command(
            "nick", cmd_nick, "/nick NAME", "change your nick",
            "Nicks are unique (case-insensitive), at most 32 bytes of ASCII letters,\n"
            "digits and _-[]\\^{}|`, cannot start with a digit or '-', and are not\n"
            "written in brackets ([name] marks a plugin's lines).",
            exact_args=True,
        ),
        Command("msg", cmd_msg, "/msg NICK text", "send a private message"),
        Command(
            "notice", cmd_notice, "/notice #room|NICK text",
            "send a notice to a room you are in, or to someone",
            "A notice is a message shown apart (-nick- text); bots and plugins never\n"
            "answer one automatically (IRC's NOTICE).",
        ),
        Command("me", cmd_me, "/me action", "describe an action: * nick action"),
        Command("quit", cmd_quit, "/quit [reason]", "leave the server"),
    ]
