"""``workers: N`` on one host: real processes, a real redis-server.

The parent reserves the ports, starts the workers (each a cluster node
``<node_id>-w<k>`` listening with SO_REUSEPORT) and supervises them: a worker killed
with SIGKILL is started again in its slot (a new pid, the same node id) and its users'
quits are seen by the others; SIGHUP reloads every worker; SIGTERM drains them all
and the parent exits 0.  Which worker a client landed on is read from Redis (the
nicks each node holds), never guessed.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chatd.builtin.cluster.presence import process_token
from chatd.config import ConfigError, parse_config
from chatd.delivery import nick_key
from chatd.testing import wait_until
from chatd.testing.process import write_config
from chatd.workers import (
    WorkerRole,
    backoff,
    merge_stats,
    node_token,
    share,
    worker_node_id,
)

HEARTBEAT = 0.2
NODE_TIMEOUT = 1.0


# -- units: the worker's share and name, the merged counters, the config -----------------


def test_each_worker_enforces_its_share_rounded_up() -> None:
    assert share(1000, 2) == 500
    assert share(7, 2) == 4  # together never below the limit
    assert share(10, 3) == 4
    assert share(0, 4) == 0  # 0 = no limit stays no limit
    assert share(1, 4) == 1


def test_restarts_back_off_from_1_to_30_seconds_and_start_over_after_a_long_life() -> None:
    delay, waits = 1.0, []
    for _ in range(7):  # a worker that dies at once, again and again
        wait, delay = backoff(delay, lived=0.5)
        waits.append(wait)
    assert waits == [1, 2, 4, 8, 16, 30, 30]
    assert backoff(30.0, lived=60.0) == (1.0, 2.0)  # it lived a minute: mended fast
    assert backoff(30.0, lived=59.0) == (30.0, 30.0)


def test_a_slot_keeps_its_node_id_and_it_fits() -> None:
    assert worker_node_id("chat", 2) == "chat-w2"
    long = "n" * 64
    assert len(worker_node_id(long, 12)) == 64
    assert worker_node_id(long, 12).endswith("-w12")


def test_a_worker_runs_the_parents_ports_its_node_and_its_share() -> None:
    config = parse_config(
        "listen: [{port: 0}, {port: 0, protocol: jsonl}]\nworkers: 4\n"
        "limits: {max_clients: 10}\nper_ip: {max_connections: 5, connect_rate: 0}\n"
        "metrics: {enabled: true}\ncluster: {redis_url: 'redis://127.0.0.1:1/0', "
        "node_id: hub}\n")
    role = WorkerRole(3, (4001, 4002), "hub-w3", None)
    mine = role.apply(config)
    assert [item.port for item in mine.listen] == [4001, 4002]
    assert mine.server.node_id == mine.cluster.node_id == "hub-w3"
    assert mine.limits.max_clients == 3
    assert mine.per_ip.max_connections == 2 and mine.per_ip.connect_rate == 0
    assert not mine.metrics.enabled  # the parent serves the one /metrics


def test_the_servers_counters_are_the_workers_added_up() -> None:
    merged = merge_stats([
        {"clients": 3, "rooms": 2, "messages_in": 10, "storage_ok": 1,
         "rejected": {"full": 1}, "storage_problem": None},
        {"clients": 4, "rooms": 5, "messages_in": 1, "storage_ok": 0,
         "rejected": {"full": 2, "per_ip": 1}},
    ])
    assert merged["clients"] == 7 and merged["messages_in"] == 11
    assert merged["rooms"] == 5  # a room lives on every worker with members: not a sum
    assert merged["storage_ok"] == 0  # one worker's store failing is the server's
    assert merged["rejected"] == {"full": 3, "per_ip": 1}
    assert "storage_problem" not in merged


@pytest.mark.parametrize("text", ["workers: 2\n", "workers: auto\n"])
def test_workers_without_a_cluster_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match=r"workers: more than one worker needs a cluster"):
        parse_config(text)


@pytest.mark.parametrize("value", ["0", "257", "true", "1.5", "two"])
def test_a_bad_workers_value_is_a_clear_error(value: str) -> None:
    with pytest.raises(ConfigError, match=r"workers: expected a whole number 1 to 256, or auto"):
        parse_config(f"workers: {value}\ncluster: {{redis_url: 'redis://127.0.0.1:1/0'}}\n")


def test_auto_is_one_worker_per_core() -> None:
    config = parse_config("workers: auto\ncluster: {redis_url: 'redis://127.0.0.1:1/0'}\n")
    assert config.workers == min(os.cpu_count() or 1, 256)


def test_the_parent_knows_the_token_a_worker_writes_in_redis() -> None:
    # The parent deletes a dead worker's heartbeat key only if that worker holds it.
    assert node_token(os.getpid()) == process_token()


def test_check_config_passes_workers_with_a_cluster(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", workers=2,
                          cluster={"redis_url": "redis://127.0.0.1:1/0"})
    done = subprocess.run([sys.executable, "-m", "chatd", "--config", str(config),
                           "--check-config"], capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "config OK" in done.stdout


def test_one_worker_needs_nothing() -> None:
    assert parse_config("workers: 1\n").workers == 1
    assert parse_config("").workers == 1


def test_check_config_and_start_refuse_workers_without_a_cluster(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.yaml", workers=2)
    for extra in (["--check-config"], []):
        done = subprocess.run([sys.executable, "-m", "chatd", "--config", str(config), *extra],
                              capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 2, done
        assert "workers: more than one worker needs a cluster" in done.stderr


# -- real workers ----------------------------------------------------------------------


def cluster(redis_url: str, node_timeout: float = NODE_TIMEOUT) -> dict[str, Any]:
    return {"redis_url": redis_url, "node_id": "hub", "heartbeat_seconds": HEARTBEAT,
            "node_timeout_seconds": node_timeout}


def start(chatd_server: Any, redis_url: str, node_timeout: float = NODE_TIMEOUT,
          **sections: Any) -> Any:
    server = chatd_server(workers=2, cluster=cluster(redis_url, node_timeout), **sections)
    for node in ("hub-w1", "hub-w2"):
        server.wait_for_log(rf"cluster: node {node} registered")
    # The parent logs from its own thread, and after each "worker N started" line
    # (worker_pids reads them): the workers' own lines above do not say it is written.
    server.wait_for_log(r"workers: all 2 listening")
    return server


def worker_pids(server: Any) -> dict[int, list[int]]:
    """Slot -> every pid the parent started in it, in order (from its log)."""
    pids: dict[int, list[int]] = {}
    for slot, pid in re.findall(r"workers: worker (\d+) started \(pid (\d+)", server.log()):
        pids.setdefault(int(slot), []).append(int(pid))
    return pids


def node_of(redis_server: Any, redis_url: str, nick: str) -> str | None:
    """The node holding ``nick`` in Redis (the worker the client landed on)."""
    database = int(redis_url.rsplit("/", 1)[1])
    r = redis_server.client(database)
    for node in ("hub-w1", "hub-w2"):
        if f"k:{nick_key(nick)}" in r.smembers(f"chatd:nicks:{node}"):
            return node
    return None


def one_on_each(server: Any, redis_server: Any, redis_url: str) -> dict[str, Any]:
    """Connect until a client is on each worker (the kernel spreads them by a hash of
    the client's port): node -> that client; the others are closed."""
    found: dict[str, Any] = {}
    for _ in range(40):
        client = server.client()
        assert wait_until(
            lambda c=client: node_of(redis_server, redis_url, c.nick) is not None, 5.0)
        node = node_of(redis_server, redis_url, client.nick)
        if node in found:
            client.close()
            continue
        found[node] = client
        if len(found) == 2:
            return found
    raise AssertionError(f"40 clients all landed on {list(found)}")


def heard_by(redis_server: Any, channel: str, count: int) -> None:
    """Until ``count`` nodes subscribe to ``channel`` (a join subscribes a moment later)."""
    def subscribers() -> int:
        out = redis_server.cli("PUBSUB", "NUMSUB", channel).split()
        return int(out[1]) if len(out) > 1 else 0

    assert wait_until(lambda: subscribers() == count, 10.0), f"{channel}: {subscribers()}"


def in_dev(client: Any, nick: str) -> Any:
    client.send(f"/nick {nick}")
    client.expect(rf"You are now {nick}|now known as {nick}")
    client.send("/join #dev")
    client.expect(r"joined #dev|talking in #dev")
    return client


def make_pair(chatd_server: Any, redis_server: Any, redis_url: str,
              node_timeout: float = NODE_TIMEOUT) -> tuple[Any, Any, Any]:
    """A server of two workers; alice on worker 1 and bob on worker 2, both in #dev."""
    server = start(chatd_server, redis_url, node_timeout)
    on = one_on_each(server, redis_server, redis_url)
    alice, bob = in_dev(on["hub-w1"], "alice"), in_dev(on["hub-w2"], "bob")
    heard_by(redis_server, "chatd:room:#dev", 2)
    return server, alice, bob


@pytest.fixture
def pair(chatd_server: Any, redis_server: Any, redis_url: str) -> tuple[Any, Any, Any]:
    return make_pair(chatd_server, redis_server, redis_url)


def test_a_client_on_each_worker_chats_in_one_room(pair: tuple[Any, Any, Any]) -> None:
    _server, alice, bob = pair
    for n in range(20):
        alice.send(f"from alice {n}")
        bob.send(f"from bob {n}")
    for n in range(20):
        bob.expect(rf"^<alice> from alice {n}$")
        alice.expect(rf"^<bob> from bob {n}$")
    alice.expect_nothing(0.3)  # exactly once, no echo
    bob.expect_nothing(0.3)


def test_a_killed_worker_is_restarted_and_its_users_quit_everywhere(
        chatd_server: Any, redis_server: Any, redis_url: str) -> None:
    # A node timeout far past the waits below: the quits and the restart must come from
    # the parent telling Redis the worker is dead, not from its heartbeat expiring.
    server, alice, bob = make_pair(chatd_server, redis_server, redis_url, node_timeout=60)
    first = worker_pids(server)
    victim = first[2][-1]  # bob's worker
    carol = None
    # A second user on alice's worker must not be disconnected either.
    for _ in range(40):
        client = server.client()
        assert wait_until(lambda c=client: node_of(redis_server, redis_url, c.nick), 5.0)
        if node_of(redis_server, redis_url, client.nick) == "hub-w1":
            carol = in_dev(client, "carol")
            break
        client.close()
    assert carol is not None
    os.kill(victim, signal.SIGKILL)
    bob.expect_eof()  # his worker died with his connection
    alice.expect(r"^\*\*\* bob (quit|has quit)")
    carol.expect(r"^\*\*\* bob (quit|has quit)")
    assert wait_until(lambda: len(worker_pids(server).get(2, [])) == 2, 15.0), server.log()
    again = worker_pids(server)[2][-1]
    assert again != victim
    server.wait_for_log(r"cluster: node hub-w2 registered(?s:.*)cluster: node hub-w2 registered")
    # Nobody else was cut: alice and carol still chat, and the worker of slot 2 serves.
    alice.send("still here")
    carol.expect(r"^<alice> still here$")
    assert worker_pids(server)[1] == first[1]  # worker 1 was never restarted
    on = one_on_each(server, redis_server, redis_url)
    dave = in_dev(on["hub-w2"], "dave")
    heard_by(redis_server, "chatd:room:#dev", 2)
    dave.send("back on two")
    alice.expect(r"^<dave> back on two$")


def test_sighup_reloads_every_worker_and_keeps_their_ports(
        chatd_server: Any, redis_url: str) -> None:
    server = start(chatd_server, redis_url,
                   listen=[{"port": 0}, {"port": 0, "protocol": "jsonl"}])
    assert len(server.ports) == 2 and len(set(server.ports)) == 2  # both reserved, written
    server.signal(signal.SIGHUP)
    assert wait_until(lambda: len(re.findall(r"reloaded .*: plugins", server.log())) == 2,
                      15.0), server.log()[-3000:]
    # A worker's reload re-reads the file (port 0, no node id): it keeps its own.
    assert "take effect after a restart" not in server.log()
    for slot in (1, 2):  # each worker's lines say which it is
        assert re.search(rf"INFO w{slot} chatd\.server: reloaded ", server.log())
    assert server.proc.poll() is None
    client = server.client()
    client.send("/nick after")
    client.expect(r"now known as after|You are now after")
    bot = server.json_client()  # the second listener, on the workers too
    assert bot.nick


def test_sigterm_drains_every_worker_and_the_parent_exits_0(
        pair: tuple[Any, Any, Any]) -> None:
    server, alice, bob = pair
    pids = [pid for slot in worker_pids(server).values() for pid in slot]
    assert server.stop(timeout=30) == 0
    for client in (alice, bob):  # each told by its own worker, then closed
        assert any("shutting down" in line for line in client.expect_eof())
    assert all(gone(pid) for pid in pids)
    log = server.log()
    assert log.count("stopped: 0") == 2, log[-3000:]


def gone(pid: int) -> bool:
    """``pid`` is no running process (a zombie waiting for init counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def test_a_worker_that_cannot_start_stops_the_server_with_status_2(
        tmp_path: Path, redis_url: str) -> None:
    config = write_config(tmp_path / "config.yaml", workers=2, cluster=cluster(redis_url),
                          plugin_host={"modules": ["no_such_plugin_module"],
                                       "entry_points": False})
    done = subprocess.run([sys.executable, "-m", "chatd", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "no_such_plugin_module" in done.stderr
    assert "failed to start" in done.stderr
    assert len(re.findall(r"worker \d started", done.stderr)) == 2  # no restart loop


def test_a_killed_parent_takes_its_workers_along(chatd_server: Any, redis_url: str) -> None:
    server = start(chatd_server, redis_url)
    pids = [pid for slot in worker_pids(server).values() for pid in slot]
    folder = Path(re.search(r"--worker-stats (\S+)", Path(f"/proc/{pids[0]}/cmdline")
                            .read_text().replace("\0", " ")).group(1)).parent
    server.kill()
    assert wait_until(lambda: all(gone(pid) for pid in pids), 15.0)
    assert wait_until(lambda: not folder.exists(), 5.0), list(folder.iterdir())


def test_one_metrics_endpoint_counts_every_workers_clients(
        chatd_server: Any, redis_server: Any, redis_url: str) -> None:
    import urllib.request

    server = start(chatd_server, redis_url, metrics={"enabled": True, "port": 0})
    port = int(server.wait_for_log(r"metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1))
    one_on_each(server, redis_server, redis_url)  # one client left on each worker

    def clients() -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        found = re.search(r"^chatd_clients (\S+)$", text, re.M)
        return float(found.group(1)) if found else -1.0

    assert wait_until(lambda: clients() == 2.0, 10.0), clients()


def test_a_live_holder_of_the_node_id_is_not_marked_dead(
        chatd_server: Any, redis_server: Any, redis_url: str) -> None:
    """A worker that stops because another live process has its node id (here: a key
    written by someone else) is restarted, but that process's key is left alone."""
    database = int(redis_url.rsplit("/", 1)[1])
    r = redis_server.client(database)
    r.set("chatd:node:hub-w2", "elsewhere:1", px=60_000)
    r.sadd("chatd:nodes", "hub-w2")
    server = chatd_server(workers=2, cluster=cluster(redis_url))
    server.wait_for_log(r"cluster: node hub-w1 registered")
    server.wait_for_log(r"another live node already has the node id 'hub-w2'")
    server.wait_for_log(r"worker 2 \(pid \d+, node hub-w2\) exited with status 1")
    assert wait_until(lambda: len(worker_pids(server).get(2, [])) == 2, 15.0)  # restarted
    assert r.get("chatd:node:hub-w2") == "elsewhere:1"


def test_max_clients_is_the_servers_each_worker_takes_its_share(
        chatd_server: Any, redis_url: str) -> None:
    """``max_clients: 2`` over two workers: one each. Whichever worker the kernel picks,
    the server never holds more than 2, and a refused client is told the worker's share
    (a skewed spread can refuse a little early: documented)."""
    server = start(chatd_server, redis_url, limits={"max_clients": 2})
    welcomed, refused = [], []
    for _ in range(10):
        client = server.client(welcome=False)
        line = client.recv_line()
        if line.startswith("*** Welcome"):
            welcomed.append(client)
        else:
            assert line.startswith("! server full (max "), line  # the worker's share
            refused.append(client)
    assert 1 <= len(welcomed) <= 2 and len(refused) == 10 - len(welcomed)


def test_a_metrics_port_in_use_stops_the_start_with_status_2(
        tmp_path: Path, redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = write_config(tmp_path / "config.yaml", workers=2, cluster=cluster(redis_url),
                              metrics={"enabled": True, "port": taken.getsockname()[1]})
        done = subprocess.run([sys.executable, "-m", "chatd", "--config", str(config)],
                              capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "chatd: metrics:" in done.stderr
    assert "worker 1 started" not in done.stderr  # before any worker


def test_a_port_in_use_stops_the_start_with_status_2(tmp_path: Path, redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = write_config(tmp_path / "config.yaml", workers=2, cluster=cluster(redis_url),
                              listen={"host": "127.0.0.1", "port": taken.getsockname()[1]})
        done = subprocess.run([sys.executable, "-m", "chatd", "--config", str(config)],
                              capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr[-3000:]
    assert re.search(r"chatd: cannot listen on 127\.0\.0\.1:\d+: Address already in use",
                     done.stderr), done.stderr
