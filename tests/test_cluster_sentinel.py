"""Redis Sentinel addressing: ``cluster.redis_url: redis+sentinel://...``.

The URL's form is checked (clear errors, passwords never shown); two real chatd
nodes find their Redis through a real Redis Sentinel (``redis-server --sentinel``)
and chat across; and a failover: the master is SIGKILLed, the sentinel promotes its
replica, both nodes ask the sentinel again, reconnect to the new master and chat
resumes, every line sent meanwhile delivered or counted in a gap.
"""

from __future__ import annotations

import re

import pytest
from cluster_nodes import chatter, gap, lines_until, subscribers

from chatd.config import ConfigError, parse_config, parse_sentinel_url
from chatd.testing import RedisSentinel, RedisServer, wait_until
from chatd.testing.redis import _require

WAIT = 10.0


# -- the URL --------------------------------------------------------------------------

def test_a_sentinel_url_names_the_sentinels_the_master_and_the_database():
    address = parse_sentinel_url(
        "redis+sentinel://:m%40ster@10.0.0.1:26380,sent2,[::1]:26381/mymaster/3"
        "?sentinel_password=s3nt")
    assert address.sentinels == (("10.0.0.1", 26380), ("sent2", 26379), ("::1", 26381))
    assert (address.master, address.db) == ("mymaster", 3)
    assert (address.username, address.password) == (None, "m@ster")
    assert address.sentinel_password == "s3nt"
    plain = parse_sentinel_url("redis+sentinel://h/m")
    assert (plain.db, plain.password, plain.sentinel_password) == (0, None, None)


def test_the_config_takes_a_sentinel_url():
    config = parse_config("cluster: {redis_url: 'redis+sentinel://h1:26379,h2/chat/2'}\n")
    assert config.cluster.enabled
    assert config.cluster.sentinel is not None
    assert config.cluster.sentinel.master == "chat"
    assert parse_config("cluster: {redis_url: 'redis://h/0'}\n").cluster.sentinel is None


@pytest.mark.parametrize(("url", "says"), [
    ("redis+sentinel://:pw1@h:26379", "master's name"),
    ("redis+sentinel://:pw1@h:26379/", "master's name"),
    ("redis+sentinel://:pw1@h:26379/m/x", "database number"),
    ("redis+sentinel://:pw1@h:26379/m/0/9", "master's name"),
    ("redis+sentinel://:pw1@h:99999/m", "port from 1 to 65535"),
    ("redis+sentinel://:pw1@h:26379,,h2/m", "host:port for each sentinel"),
    ("redis+sentinel://:pw1@h/m?sentinel_pasword=pw2", "unknown option"),
    ("rediss+sentinel://:pw1@h/m", "redis+sentinel://"),
])
def test_a_bad_sentinel_url_is_refused_clearly_without_its_passwords(url, says):
    with pytest.raises(ConfigError) as refused:
        parse_config(f"cluster: {{redis_url: '{url}'}}\n")
    text = str(refused.value)
    assert "cluster.redis_url" in text and says in text, text
    assert "pw1" not in text and "pw2" not in text, text


# -- real sentinels ---------------------------------------------------------------------

def node(chatd_server, url, name):
    return chatd_server(cluster={"redis_url": url, "node_id": name,
                                 "connect_timeout_seconds": 0.5,
                                 "health_check_seconds": 1.0})


@pytest.fixture
def sentinel(redis_server, redis_url):
    """A sentinel watching this worker's redis_server (the test's database in its URL)."""
    watcher = RedisSentinel(redis_server).start()
    try:
        yield watcher, int(redis_url.rsplit("/", 1)[1])
    finally:
        watcher.close()


def test_two_nodes_chat_through_a_sentinel(chatd_server, redis_server, sentinel):
    watcher, database = sentinel
    url = watcher.url_for(database)
    a, b = node(chatd_server, url, "a"), node(chatd_server, url, "b")
    alice, bob = chatter(a, "alice"), chatter(b, "bob")
    assert wait_until(lambda: subscribers(redis_server, "chatd:room:#dev") == 2, WAIT)
    alice.send("hello through the sentinel")
    bob.expect(r"^<alice> hello through the sentinel$")
    bob.send("/who #dev")
    bob.expect(r"alice")
    for server in (a, b):
        server.wait_for_log(rf"the sentinels name 127\.0\.0\.1:{redis_server.port} as the master")
        log = server.log()
        assert redis_server.password not in log and watcher.password not in log
        assert "Traceback" not in log
    # The nodes' keys are in the URL's database of the master the sentinel named.
    assert redis_server.client(database).sismember("chatd:nodes", "a")


def test_a_wrong_sentinel_password_is_retried_and_never_logged(chatd_server, redis_server,
                                                               sentinel):
    watcher, database = sentinel
    a = node(chatd_server, watcher.url_for(database).replace(watcher.password, "nottheone"),
             "a")
    a.wait_for_log(r"chatd-a: cannot reach Redis \(\w+\); retrying")
    alice = chatter(a, "alice")  # local chat goes on
    alice.send("/who")
    alice.expect(r"alice")
    assert "nottheone" not in a.log() and "connected to Redis" not in a.log()


def test_the_master_password_from_the_environment_wins(chatd_server, redis_server, sentinel):
    watcher, database = sentinel
    url = watcher.url_for(database).replace(f":{redis_server.password}@", "")
    a = chatd_server(cluster={"redis_url": url, "node_id": "a",
                              "password_env": "CHATD_TEST_MASTER_PW",
                              "connect_timeout_seconds": 0.5},
                     env={"CHATD_TEST_MASTER_PW": redis_server.password})
    a.wait_for_log(r"chatd-a: connected to Redis")
    assert redis_server.client(database).sismember("chatd:nodes", "a")


def test_the_workers_parent_reaches_the_master_through_the_sentinel(redis_server, sentinel):
    from chatd.builtin.cluster.link import redis_client

    watcher, database = sentinel
    redis_server.client(database).set("k", "v")
    client = redis_client(watcher.url_for(database), None, 2.0)
    try:
        assert client.get("k") == b"v"
    finally:
        client.close()


@pytest.fixture
def failover():
    """A master, its replica, a sentinel watching them (fails over within ~1 s)."""
    _require()
    master = RedisServer().start()
    replica = RedisServer(replica_of=master).start()
    watcher = RedisSentinel(master, down_after_ms=500, failover_timeout_ms=2000).start()
    try:
        watcher.wait_replicas(1)
        yield master, replica, watcher
    finally:
        for part in (watcher, replica, master):
            part.close()


def test_a_failover_moves_both_nodes_to_the_promoted_replica(chatd_server, failover):
    master, replica, watcher = failover
    url = watcher.url_for(1)
    a, b = node(chatd_server, url, "a"), node(chatd_server, url, "b")
    alice, bob = chatter(a, "alice"), chatter(b, "bob")
    assert wait_until(lambda: subscribers(master, "chatd:room:#dev") == 2, WAIT)
    alice.send("before")
    bob.expect(r"^<alice> before$")

    master.kill()
    a.wait_for_log(r"chatd-a: lost Redis")
    for i in range(5):
        alice.send(f"during {i}")  # while there is no master: counted, not lost silently
    watcher.wait_master(replica.port)
    for server in (a, b):
        server.wait_for_log(rf"the sentinels name 127\.0\.0\.1:{replica.port} as the master")
    assert wait_until(lambda: subscribers(replica, "chatd:room:#dev") == 2, WAIT), (
        a.log()[-2000:] + b.log()[-2000:])
    alice.send("after")
    seen = lines_until(bob, "<alice> after")
    delivered = len([x for x in seen if re.match(r"<alice> during \d+$", x)])
    assert wait_until(lambda: delivered + gap(b, "a", "chatd:room:#dev") == 5, WAIT), (
        delivered, gap(b, "a", "chatd:room:#dev"), seen)
    bob.send("and back")
    alice.expect(r"^<bob> and back$")
    bob.send("/who #dev")  # presence was re-registered on the new master
    bob.expect(r"alice")
    assert replica.client(1).sismember("chatd:nodes", "a")
    assert "Traceback" not in a.log() + b.log()
