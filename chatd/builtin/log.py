"""Built-in plugin *log*: connections, departures, nick changes and messages to ``logging``.

Records go to the ``chatd.events`` logger (the core's handlers: stderr or the
core log file) and, if ``plugins.log.file`` is set, also to that file.  The
core routes all logging through a queue, so a slow disk never stalls the loop.

Every record is one line: user-supplied text is quoted and escaped with
``repr``-style escapes, so a message cannot forge a second log record
(CWE-117).  ``plugins.log.messages: false`` logs that a message was sent
without its text.
"""

from __future__ import annotations

import logging
from pathlib import Path

from chatd import Client, Server, StashKey, hookimpl

log = logging.getLogger("chatd.events")

_FILE_HANDLER_MARK = "_chatd_log_plugin"


def _quote(text: str) -> str:
    """User text as one safe token: quoted, backslash-escaped, no control characters."""
    return '"' + text.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


#: Whether message text is logged; per server, set at startup.
LOG_MESSAGES = StashKey[bool]()


@hookimpl
def chatd_startup(server: Server) -> None:
    section = server.plugin_config("log")
    messages = section.get("messages", True)
    if not isinstance(messages, bool):
        raise ValueError(f"plugins.log.messages must be true or false, got {messages!r}")
    server.stash[LOG_MESSAGES] = messages
    filename = section.get("file")
    for handler in list(log.handlers):
        if getattr(handler, _FILE_HANDLER_MARK, False):
            log.removeHandler(handler)
            handler.close()
    if filename:
        path = Path(str(filename))
        if not path.is_absolute() and server.config.source is not None:
            path = server.config.source.parent / path
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        setattr(handler, _FILE_HANDLER_MARK, True)
        log.addHandler(handler)
    log.setLevel(logging.INFO)


@hookimpl
def chatd_shutdown() -> None:
    for handler in list(log.handlers):
        if getattr(handler, _FILE_HANDLER_MARK, False):
            handler.flush()


@hookimpl
def chatd_client_connect(client: Client) -> None:
    log.info("connect id=%d nick=%s peer=%s:%d", client.id, client.nick, *client.peer)


@hookimpl
def chatd_client_disconnect(client: Client, reason: str) -> None:
    log.info("disconnect id=%d nick=%s reason=%s", client.id, client.nick, _quote(reason))


@hookimpl
def chatd_nick_change(client: Client, old: str, new: str) -> None:
    log.info("nick id=%d old=%s new=%s", client.id, old, new)


@hookimpl
def chatd_message(client: Client, text: str) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    room = client.room.name if client.room is not None else "-"
    if client.server.stash.get(LOG_MESSAGES, True):
        log.info(
            "message id=%d nick=%s room=%s text=%s", client.id, client.nick, room, _quote(text)
        )
    else:
        log.info("message id=%d nick=%s room=%s", client.id, client.nick, room)
