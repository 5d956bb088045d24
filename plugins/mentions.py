"""Example plugin that adds a hook of its own: ``chatd_mention``.

When a chat line contains ``@nick`` and that nick is online, this plugin calls
``chatd_mention(sender, target, text)`` on every plugin that implements it.  It
finds the nick with the presence question ``server.ask_whois`` (every node of a
cluster); the hook is called for a client of this process only (its ``target``
is a :class:`~chatd.Client`, which a user of another node is not).
It also implements the hook itself: the mentioned user is told, even if they
are in another room.  Another plugin could implement ``chatd_mention`` to send
an e-mail, count mentions, or page someone.

How a plugin adds a hook:

1. declare the spec with ``chatd.hookspec`` in a namespace (here the class
   :class:`MentionSpec`);
2. register it from ``chatd_addhooks(pluginmanager)``;
3. call it with ``server.hooks.call("chatd_mention", ...)``, which gives it the
   same isolation as chatd's own hooks (a failing implementation is logged and
   skipped).
"""

from __future__ import annotations

import functools
import re

from chatd import Client, Event, Person, hookimpl, hookspec

_MENTION = re.compile(r"(?<![\w@])@([A-Za-z_\[\]\\^{}|`][\w\-\[\]\\^{}|`]*)")


class MentionSpec:
    """The hook this plugin offers to others."""

    @hookspec
    def chatd_mention(self, sender: Client, target: Client, text: str, room: str) -> None:
        """``sender`` mentioned ``target`` as ``@nick`` in the chat line ``text``, said
        in ``room`` (not always the sender's current room: a jsonl bot may name one).

        Called once per mentioned online user per message, after the message
        was accepted by the filters.  Return values are ignored; an exception
        is logged with the plugin's name and the other implementations still run.
        """


@hookimpl
def chatd_addhooks(pluginmanager) -> None:  # type: ignore[no-untyped-def]
    pluginmanager.add_hookspecs(MentionSpec)


@hookimpl
def chatd_message(client: Client, text: str, event: Event) -> None:
    if event.kind not in ("message", "action"):
        return  # a private message's target reads it anyway; topics and reasons are not chat
    if getattr(event, "notice", False):
        return  # a user's notice is never answered automatically (IRC's NOTICE rule)
    asked: set[str] = set()
    told: set[str] = set()  # the sessions already mentioned: once per person and line
    for nick in _MENTION.findall(text):
        if nick.lower() in asked:
            continue
        asked.add(nick.lower())
        # Who has the nick, on any node (the server's own question: the sender's next
        # lines do not wait for it); answered at once by the local backend.
        client.server.ask_whois(None, nick, functools.partial(
            _mentioned, client, text, event.target, told))


def _mentioned(sender: Client, text: str, room: str, told: set[str],
               person: Person | None) -> None:
    """Call ``chatd_mention`` for ``person``, if it is a client of this process: the
    hook hands implementations a :class:`~chatd.Client` to act on, which a user of
    another node is not (it is not told here)."""
    if person is None or not sender.connected:
        return
    target = sender.server.client_of(person)
    if target is None or target is sender or target.session in told:
        return
    told.add(str(target.session))
    sender.server.hooks.call(
        "chatd_mention", notify=sender, sender=sender, target=target, text=text, room=room,
    )


@hookimpl
def chatd_mention(sender: Client, target: Client, text: str, room: str) -> None:
    if room not in (r.name for r in target.rooms):  # else they saw the line
        target.notice(f"{sender.nick} mentioned you in {room}: {text}")
