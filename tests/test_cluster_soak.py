"""The cluster's soak: three real nodes on one real redis-server, thousands of clients
across them, a few rooms, minutes of chat, and Redis restarted twice meanwhile.

At the end every line is accounted for, per receiving node: a line from a sender on
the same node reached every local member of its room; a line from another node
reached every local member, or none — and then it is counted in that node's gap
counter (``/stats``'s ``cluster:`` line): the node's missed lines and its counted
gaps are equal.  No client gets a line twice or out of its sender's order, nobody
is disconnected, nobody is reported to have quit.

Marked ``soak``: deselected by default (pyproject's ``-m "not soak"``); ``.ci/run``
runs it as its own step (``pytest -m soak``).  The size comes from the environment,
so it can be developed small:

    CHATD_SOAK_CLIENTS=300 CHATD_SOAK_SECONDS=30 .venv/bin/python -m pytest -m soak \\
        -n 0 tests/test_cluster_soak.py

Defaults (the issue's): 3,000 clients, 300 seconds, 10 rooms, one sender per node
per room, each sending a line every 2 seconds.  The clients are plain sockets on one
``selectors`` loop in the test process (3,000 threads or blocking clients would cost
more than the servers); every wait has a deadline, nothing sleeps for an event.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

import pytest
from cluster_nodes import counted_gaps

from chatd.testing import ChatClient, write_config

CLIENTS = int(os.environ.get("CHATD_SOAK_CLIENTS", "3000"))
SECONDS = float(os.environ.get("CHATD_SOAK_SECONDS", "300"))
ROOMS = int(os.environ.get("CHATD_SOAK_ROOMS", "10"))
#: Seconds between two lines of one sender.
INTERVAL = float(os.environ.get("CHATD_SOAK_INTERVAL", "2.0"))
RESTARTS = 2
NODES = ("a", "b", "c")
PASSWORD = "soak-oper"
#: How long the setup and the final delivery may take (deadlines, not sleeps).
SETTLE = 120.0 + CLIENTS / 10
LINE = re.compile(rb"^<[^>]*> soak (\d+) (\d+)\r?$")
READY = b"*** you are now talking in #soak"

pytestmark = [pytest.mark.soak, pytest.mark.timeout(SECONDS + 2 * SETTLE + 300)]


@dataclass(eq=False)
class Peer:
    """One client of the soak: a plain non-blocking socket and what it received."""

    index: int
    node: str
    room: int
    sock: socket.socket
    buf: bytes = b""
    ready: bool = False
    closed: bool = False
    #: sender index -> counts per line number (index n: how often line n came).
    counts: dict[int, bytearray] = field(default_factory=dict)
    #: sender index -> the last line number received (order).
    last: dict[int, int] = field(default_factory=dict)
    disorder: int = 0
    quits: int = 0


class Soak:
    """The clients, the senders' schedule and the accounting."""

    def __init__(self, servers: dict[str, object]) -> None:
        self.servers = servers
        self.selector = selectors.DefaultSelector()
        self.peers: list[Peer] = []
        self.senders: list[Peer] = []
        self.sent: dict[int, int] = {}  # sender index -> lines sent

    # -- connecting --------------------------------------------------------------------

    def connect_all(self) -> None:
        """CLIENTS clients, round robin over nodes and rooms, in waves (so a node's
        default room never holds many at once), each moved into its soak room."""
        wave = 100
        for start in range(0, CLIENTS, wave):
            for index in range(start, min(start + wave, CLIENTS)):
                node = NODES[index % len(NODES)]
                room = (index // len(NODES)) % ROOMS
                sock = socket.create_connection(self.servers[node].address, timeout=10)
                sock.setblocking(False)
                peer = Peer(index, node, room, sock)
                self.peers.append(peer)
                self.selector.register(sock, selectors.EVENT_READ, peer)
                sock.sendall(f"/join #soak{room}\n/part #lobby-{node}\n".encode())
            self.pump_until(lambda: all(p.ready for p in self.peers), SETTLE, "ready")
        # one sender per node per room: the first client of each (node, room)
        chosen: set[tuple[str, int]] = set()
        for peer in self.peers:
            if (peer.node, peer.room) not in chosen:
                chosen.add((peer.node, peer.room))
                self.senders.append(peer)
                self.sent[peer.index] = 0
        lines = int(SECONDS / INTERVAL) + 2
        for peer in self.peers:
            for sender in self.senders:
                if sender.room == peer.room and sender is not peer:
                    peer.counts[sender.index] = bytearray(lines + 1)

    # -- the loop ----------------------------------------------------------------------

    def pump(self, timeout: float) -> None:
        """Read what arrived (at most ``timeout`` seconds of waiting)."""
        for key, _ in self.selector.select(timeout):
            peer: Peer = key.data
            try:
                data = peer.sock.recv(262144)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                peer.closed = True
                self.selector.unregister(peer.sock)
                continue
            self.receive(peer, data)

    def receive(self, peer: Peer, data: bytes) -> None:
        lines = (peer.buf + data).split(b"\n")
        peer.buf = lines.pop()
        for line in lines:
            if b"> soak " in line:
                match = LINE.match(line)
                if match is None:
                    continue
                sender, number = int(match.group(1)), int(match.group(2))
                counts = peer.counts.get(sender)
                if counts is None or number >= len(counts):
                    peer.disorder += 1  # a line it should never have had
                    continue
                counts[number] = min(counts[number] + 1, 255)
                if number <= peer.last.get(sender, 0):
                    peer.disorder += 1
                peer.last[sender] = number
            elif line.startswith(READY):
                peer.ready = True
            elif b" has quit" in line:
                peer.quits += 1

    def pump_until(self, done, deadline: float, what: str) -> None:
        end = time.monotonic() + deadline
        while not done():
            if time.monotonic() > end:
                raise AssertionError(f"soak: {what} not reached in {deadline:.0f} s")
            self.pump(0.05)

    def chat(self, restart) -> None:
        """SECONDS of chat; ``restart()`` is called (on a thread, so the chat goes
        on meanwhile) at each of RESTARTS evenly spread moments."""
        started = time.monotonic()
        offsets = {s.index: INTERVAL * i / len(self.senders) for i, s in enumerate(self.senders)}
        restarts = [started + SECONDS * (k + 1) / (RESTARTS + 1) for k in range(RESTARTS)]
        threads: list[threading.Thread] = []
        while (now := time.monotonic()) < started + SECONDS:
            for sender in self.senders:
                due = started + offsets[sender.index] + self.sent[sender.index] * INTERVAL
                if now >= due:
                    number = self.sent[sender.index] + 1
                    sender.sock.sendall(f"soak {sender.index} {number}\n".encode())
                    self.sent[sender.index] = number
            if restarts and now >= restarts[0]:
                restarts.pop(0)
                thread = threading.Thread(target=restart, daemon=True)
                thread.start()
                threads.append(thread)
            self.pump(0.02)
        for thread in threads:
            thread.join(60)
            assert not thread.is_alive(), "a Redis restart hung"

    def everyone_has_the_last_lines(self) -> bool:
        """Every member has the last line of every sender of its room (the chat ends
        long after the last restart: those must arrive everywhere)."""
        return all(counts[self.sent[sender]] for peer in self.peers
                   for sender, counts in peer.counts.items())

    # -- the accounting ----------------------------------------------------------------

    def missed_by_node(self) -> dict[str, int]:
        """Per receiving node: the remote lines none of its members got.  A line that
        some members got and others not, or a local line not delivered to all, is a
        failure (raised), never a gap."""
        members: dict[tuple[str, int], list[Peer]] = {}
        for peer in self.peers:
            members.setdefault((peer.node, peer.room), []).append(peer)
        missed = dict.fromkeys(NODES, 0)
        for sender in self.senders:
            for node in NODES:
                receivers = [p for p in members[(node, sender.room)] if p is not sender]
                for number in range(1, self.sent[sender.index] + 1):
                    got = sum(1 for p in receivers if p.counts[sender.index][number])
                    if got == len(receivers):
                        continue
                    where = f"line {number} of sender {sender.index} (node {sender.node}) " \
                            f"on node {node}: {got} of {len(receivers)} members"
                    assert got == 0, f"partly delivered: {where}"
                    assert node != sender.node, f"a local line lost: {where}"
                    missed[node] += 1
        return missed


def operator(server, name: str) -> ChatClient:
    """An operator parked alone in #ops-<node>: /stats's replies are all it reads."""
    op = server.client()
    op.send(f"/oper {PASSWORD}")
    op.expect(r"^\*\*\* you are now an operator$")
    op.send(f"/join #ops-{name}")  # rooms are cluster-wide: one per node
    op.expect(rf"^\*\*\* you are the first in #ops-{name}$")
    op.send(f"/part #lobby-{name}")
    op.expect(rf"^\*\*\* you are now talking in #ops-{name}$")
    return op


def raise_descriptor_limit() -> None:
    """Enough descriptors for every client here (the nodes raise their own)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(CLIENTS + 500, 20000)
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.fail(f"RLIMIT_NOFILE hard limit {hard} < {want}: raise it to run the soak")
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def test_every_line_is_delivered_or_counted_through_two_redis_restarts(
        chatd_server, redis_server, redis_url, tmp_path):
    raise_descriptor_limit()
    per_node = CLIENTS // len(NODES) + 100
    servers = {}
    for name in NODES:
        folder = tmp_path / f"config-{name}"
        folder.mkdir()
        config = write_config(
            folder / "config.yaml",
            server={"default_room": f"#lobby-{name}"},
            limits={"max_clients": per_node, "announce_after_seconds": 3600},
            cluster={"redis_url": redis_url, "node_id": name,
                     "connect_timeout_seconds": 0.5},
            plugins={"oper": {"password": PASSWORD}})
        servers[name] = chatd_server(config)
    ops = {name: operator(server, name) for name, server in servers.items()}
    soak = Soak(servers)
    soak.connect_all()
    before = {name: counted_gaps(op) for name, op in ops.items()}

    soak.chat(redis_server.restart)
    soak.pump_until(soak.everyone_has_the_last_lines, SETTLE, "the last lines everywhere")

    after = {name: counted_gaps(op) for name, op in ops.items()}
    counted = {name: after[name] - before[name] for name in NODES}
    missed = soak.missed_by_node()
    sent = sum(soak.sent.values())
    print(f"soak: {len(soak.peers)} clients, {sent} lines sent, missed per node {missed}, "
          f"gaps counted per node {counted}")
    assert not [p.index for p in soak.peers if p.closed], "clients were disconnected"
    assert sum(p.disorder for p in soak.peers) == 0, "duplicates or lines out of order"
    assert sum(p.quits for p in soak.peers) == 0, "someone was reported to have quit"
    assert missed == counted, (missed, counted)
    for server in servers.values():
        assert "Traceback" not in server.log()
    with contextlib.suppress(Exception):
        for peer in soak.peers:
            peer.sock.close()
