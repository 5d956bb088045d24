"""The ``websocket`` listener against real chatd processes, with a real WebSocket client
library (``websockets``, its sync client: every receive has a timeout), raw sockets for
what a library will not send, and in-process unit tests of the HTTP side
(:mod:`chatd.protocols.websocket.handshake`)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.sync.client import connect

TIMEOUT = 5.0


@pytest.fixture
def ws_server(chatd_server):
    """``ws_server(**listener_options, limits=...)`` -> (server, ws:// URL of its
    websocket listener); listener 0 is a line listener, 1 the websocket one."""
    def start(limits: dict[str, Any] | None = None, **options: Any) -> Any:
        server = chatd_server(
            listen=[{"port": 0}, {"port": 0, "protocol": "websocket", **options}],
            **({"limits": limits} if limits else {}))
        return server, f"ws://{server.host}:{server.ports[1]}/"
    return start


def recv_json(ws: Any, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """One text frame: its jsonl lines, parsed (a frame holds one or more)."""
    frame = ws.recv(timeout=timeout)
    assert isinstance(frame, str) and frame.endswith("\n")
    return [json.loads(line) for line in frame.splitlines()]


def until(ws: Any, predicate: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
    """Read frames until an object satisfies ``predicate``; that object."""
    while True:
        for obj in recv_json(ws, timeout):
            if predicate(obj):
                return obj


def test_upgrade_begins_a_session_and_jsonl_crosses_both_ways(ws_server):
    server, url = ws_server()
    with connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        welcome = until(ws, lambda o: o["type"] == "join")
        assert welcome["room"] == "#lobby" and welcome.get("self") is True
        person = server.client()
        person.send("hello from nc")
        said = until(ws, lambda o: o["type"] == "message")
        assert (said["from"], said["text"]) == (person.nick, "hello from nc")
        ws.send(json.dumps({"cmd": "say", "text": "hello from a browser"}))
        person.expect(rf"^<{welcome['from']}> hello from a browser$")
