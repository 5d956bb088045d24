"""Built-in plugin *log*: connections, departures, nick changes and user text to ``logging``.

Records go to the ``chatd.events`` logger (the core's handlers: stderr or the
core log file) and, if ``plugins.log.file`` is set, also to that file.  The
core routes all logging through a queue, so a slow disk never stalls the loop.

Every record is one line: user-supplied text is quoted and escaped with
``repr``-style escapes, so a message cannot forge a second log record
(CWE-117).  ``plugins.log.messages: "meta"`` logs that a message was sent
without its text; "messages" are every event carrying user text (chat lines,
actions, private messages, topics, part and quit reasons), logged with their
kind, id and target.  The default is not to log messages at all
(``plugins.log.messages: false``): a chat server should not keep what people
say unless its operator decides to, and one log record per message is also the
most expensive thing this plugin could do on the hot path.
"""

from __future__ import annotations

import logging
from pathlib import Path

from chatd import Client, Event, Server, StashKey, hookimpl
from chatd.logsetup import QueuedSink

log = logging.getLogger("chatd.events")

#: The plugin's own file sink, if ``plugins.log.file`` is set (per server).
FILE_SINK = StashKey[QueuedSink]()


def _quote(text: str) -> str:
    """User text as one safe token: quoted, backslash-escaped, no control characters."""
    return '"' + text.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


#: Whether messages are logged (True: with text, "meta": without, False: not at all).
LOG_MESSAGES = StashKey["bool | str"]()


@hookimpl
def chatd_startup(server: Server) -> None:
    section = server.plugin_config("log")
    messages = section.get("messages", False)
    if messages not in (True, False, "meta"):
        raise ValueError(f"plugins.log.messages must be true, false or meta, got {messages!r}")
    server.stash[LOG_MESSAGES] = messages
    filename = section.get("file")
    if filename:
        path = Path(str(filename))
        if not path.is_absolute() and server.config.source is not None:
            path = server.config.source.parent / path
        try:
            sink = QueuedSink(path, "%(asctime)s %(levelname)s %(message)s")
        except OSError as exc:
            raise ValueError(
                f"plugins.log.file: cannot open {str(path)!r}: {exc.strerror}"
            ) from exc
        server.stash[FILE_SINK] = sink
        log.addHandler(sink.handler)
    log.setLevel(logging.INFO)


@hookimpl
def chatd_shutdown(server: Server) -> None:
    sink = server.stash.get(FILE_SINK, None)
    if sink is not None:
        log.removeHandler(sink.handler)
        sink.stop()


@hookimpl
def chatd_client_ready(client: Client) -> None:
    # Logged once the connection is a chat client, not at connect: a port scan or an
    # HTTP probe is then only the listener's once-a-minute warning, not two records.
    log.info("connect id=%d nick=%s peer=%s:%d", client.id, client.nick, *client.peer)


@hookimpl
def chatd_client_disconnect(client: Client, reason: str) -> None:
    if client.announced:
        log.info("disconnect id=%d nick=%s reason=%s", client.id, client.nick, _quote(reason))


@hookimpl
def chatd_nick_change(client: Client, old: str, new: str) -> None:
    log.info("nick id=%d old=%s new=%s", client.id, old, new)


@hookimpl
def chatd_message(client: Client, text: str, event: Event) -> None:
    mode = client.server.stash.get(LOG_MESSAGES, False)
    if not mode or not log.isEnabledFor(logging.INFO):
        return
    target = event.target
    where = f"room={target}" if target.startswith("#") else f"to={target or '-'}"
    if mode is True:
        log.info(
            "%s id=%d nick=%s %s event=%d text=%s",
            event.kind, client.id, client.nick, where, event.id, _quote(text),
        )
    else:
        log.info("%s id=%d nick=%s %s event=%d", event.kind, client.id, client.nick, where,
                 event.id)
