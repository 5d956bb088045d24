"""docs/cluster.md's examples, run as written.

The walkthrough's node config, three times (the port and node id changed as the page
says), on a real redis-server with the password in a file and a real PostgreSQL:
three nodes, one room, every line on every node, and `/who` showing all three.

The HAProxy snippet: a real HAProxy in front of two real chatd nodes on one real
redis-server, with the PROXY protocol (v2).

Two clients connect to HAProxy's one address; round robin puts them on the two
nodes; each node sees its client's own address and port (not the proxy's), and the
two clients, on two nodes, chat in one room.  Then one node is stopped and the next
clients all land on the other: the snippet has no health checks (a check is a chat
session to chatd), ``retries`` and ``redispatch`` send a refused connection on.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from chatd.testing import ChatClient, free_port, skip_unless_ci, wait_until, write_config

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cluster.md"
WAIT = 10.0


def _snippet(front: int, backs: list[int]) -> str:
    """docs/cluster.md's ``haproxy`` block, its example ports replaced by the test's."""
    text = DOCS.read_text()
    block = text.split("```haproxy\n", 1)[1].split("```", 1)[0]
    block = block.replace("127.0.0.1:7788", f"127.0.0.1:{front}")
    for documented, real in zip(("7811", "7812"), backs, strict=True):
        block, found = re.subn(rf"127\.0\.0\.1:{documented}\b", f"127.0.0.1:{real}", block)
        assert found == 1, f"the snippet has no server on {documented}"
    return block


def _walkthrough_config(folder: Path, redis_url: str, password: str, postgres_url: str,
                        name: str) -> Path:
    """docs/cluster.md's node-a.yaml made node ``name``: its ports 0 (free ones), its
    Redis and PostgreSQL the test's, the Redis password in a file as documented."""
    text = DOCS.read_text()
    block = text.split("## Three nodes on one machine", 1)[1].split("```yaml\n", 1)[1]
    block = block.split("```", 1)[0]
    secret = folder / "redis-password"
    secret.write_text(password + "\n")
    without_password = re.sub(r"//:[^@]*@", "//", redis_url)
    swaps = {"port: 7801": "port: 0", "port: 7811": "port: 0",
             "postgresql://chatd@127.0.0.1:5432/chatd": postgres_url,
             "redis://127.0.0.1:6379/0": without_password,
             "/etc/chatd/redis-password": str(secret), "node_id: node-a": f"node_id: {name}"}
    for documented, real in swaps.items():
        assert block.count(documented) == 1, f"the walkthrough lost {documented!r}"
        block = block.replace(documented, real)
    config = folder / "config.yaml"
    config.write_text(block)
    return config


def test_the_walkthrough_runs_three_nodes_as_one_server(
        chatd_server, redis_server, redis_url, postgres_url, tmp_path):
    servers = []
    for name in ("node-a", "node-b", "node-c"):
        folder = tmp_path / name
        folder.mkdir()
        config = _walkthrough_config(folder, redis_url, redis_server.password, postgres_url,
                                     name)
        servers.append(chatd_server(config))
    clients = [server.client() for server in servers]
    assert wait_until(lambda: _subscribers(redis_server, "chatd:room:#lobby") == 3, WAIT)
    for index, sender in enumerate(clients):
        sender.send(f"hello from node {index}")
        for other in clients:
            if other is not sender:
                other.expect(rf"> hello from node {index}$")
    clients[2].send("/who")
    clients[2].expect(r"^\*\*\* #lobby has 3 members")
    for server in servers:
        server.wait_for_log(r"connected to Redis")  # the line a leaked URL would be in
        assert redis_server.password not in server.log()


def _node(chatd_server, tmp_path: Path, redis_url: str, name: str):
    """A cluster node whose second listener reads PROXY headers from 127.0.0.1."""
    folder = tmp_path / f"config-{name}"
    folder.mkdir()
    config = write_config(folder / "config.yaml", listen=[
        {"port": 0},
        {"port": 0, "proxy_protocol": True, "trusted_proxies": ["127.0.0.1"]},
    ], cluster={"redis_url": redis_url, "node_id": name, "connect_timeout_seconds": 0.5})
    return chatd_server(config)


def _through(front: int) -> ChatClient:
    """A line client through HAProxy (which may need a moment to listen)."""
    deadline = time.monotonic() + WAIT
    while True:
        try:
            client = ChatClient(("127.0.0.1", front))
            client.welcome()
            return client
        except (ConnectionRefusedError, ConnectionResetError, AssertionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _subscribers(redis_server, channel: str) -> int:
    out = redis_server.cli("PUBSUB", "NUMSUB", channel).split()
    return int(out[1]) if len(out) > 1 else 0


@pytest.fixture
def haproxy() -> str:
    found = shutil.which("haproxy")
    if found is None:
        skip_unless_ci("haproxy is not installed (.ci/run installs it)")
    return str(found)


def test_the_documented_haproxy_spreads_clients_over_nodes_with_their_addresses(
        haproxy, chatd_server, redis_server, redis_url, tmp_path):
    a = _node(chatd_server, tmp_path, redis_url, "node-a")
    b = _node(chatd_server, tmp_path, redis_url, "node-b")
    front = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(_snippet(front, [a.ports[1], b.ports[1]]))
    proxy = subprocess.Popen([haproxy, "-db", "-f", str(config)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        first, second = _through(front), _through(front)
        ports = [c.sock.getsockname()[1] for c in (first, second)]
        # Each client's own address and port, as HAProxy saw them, is what a node logs;
        # round robin put them on different nodes.
        where = {}
        for port in ports:
            pattern = rf"peer=127\.0\.0\.1:{port}\b"
            assert wait_until(lambda p=pattern: re.search(p, a.log() + b.log()), WAIT), port
            where[port] = "a" if re.search(pattern, a.log()) else "b"
        assert sorted(where.values()) == ["a", "b"], where
        # Both are in #lobby, on two nodes: lines cross through Redis.
        assert wait_until(lambda: _subscribers(redis_server, "chatd:room:#lobby") == 2, WAIT)
        first.send("hello from the first")
        second.expect(r"> hello from the first$")
        second.send("and from the second")
        first.expect(r"> and from the second$")
        # A stopped node refuses: HAProxy sends the next client on to the other
        # (retries + redispatch, no health check needed).
        dead, alive = (b, a) if where[ports[1]] == "b" else (a, b)
        dead.stop()
        for _ in range(2):  # round robin: one of the two tries the stopped node first
            third = ChatClient(("127.0.0.1", front))  # HAProxy listens: no retry here
            third.welcome()
            port = third.sock.getsockname()[1]
            alive.wait_for_log(rf"peer=127\.0\.0\.1:{port}\b")
            third.send("still here")
            first_alive = first if where[ports[0]] == ("a" if alive is a else "b") else second
            first_alive.expect(r"> still here$")
    finally:
        proxy.terminate()
        proxy.wait(5)
