"""Built-in plugin *ignore*: /ignore and /unignore — stop seeing what someone says.

An ignored nick's messages, actions and private messages are not delivered to
you (their joins, quits and topics still are); they are not told.  The list
follows renames: ignore ``bob`` and you still ignore him as ``bob2``.  It lasts
as long as your connection.
"""

from __future__ import annotations

from chatd import Client, Command, CommandError, Server, hookimpl

MAX_IGNORED = 100


def cmd_ignore(client: Client, args: str) -> None:
    nick = args.split()[0] if args else ""
    if not nick:
        listing = ", ".join(sorted(client.ignoring)) or "nobody"
        client.notice(f"you ignore: {listing}")
        return
    if nick.lower() == client.nick.lower():
        raise CommandError("you cannot ignore yourself", code="not_allowed")
    if len(nick) > 64:
        raise CommandError("that is longer than any nick", code="erroneous_nick")
    if nick.lower() in client.ignoring:
        raise CommandError(f"you already ignore {nick}", code="no_change")
    if len(client.ignoring) >= MAX_IGNORED:
        raise CommandError(f"you ignore {MAX_IGNORED} nicks already; /unignore some first",
                           code="limit")
    client.ignore(nick)
    client.notice(f"you no longer see what {nick} says (/unignore {nick} to undo)")


def cmd_unignore(client: Client, args: str) -> None:
    nick = args.split()[0] if args else ""
    if not nick:
        raise CommandError("usage: /unignore NICK", code="usage")
    if not client.unignore(nick):
        raise CommandError(f"you do not ignore {nick}", code="not_found")
    client.notice(f"you see what {nick} says again")


@hookimpl
def chatd_nick_change(client: Client, old: str, new: str) -> None:
    server: Server = client.server
    for other in server.clients.values():
        if old.lower() in other.ignoring:
            other.unignore(old)
            other.ignore(new)


@hookimpl
def chatd_commands() -> list[Command]:
    return [
        Command(
            "ignore", cmd_ignore, "/ignore [NICK]", "stop seeing what NICK says (alone: list)",
            "Hides NICK's messages, actions and private messages from you; NICK is not\n"
            "told, and the ignore follows NICK's renames until you disconnect.",
        ),
        Command("unignore", cmd_unignore, "/unignore NICK", "see what NICK says again"),
    ]
