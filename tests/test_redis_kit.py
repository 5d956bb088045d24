"""The test kit's throwaway redis-server (chatd.testing.redis): what the cluster's tests stand on.

A server starts, every test gets its own empty logical database, the password is
required, it listens on 127.0.0.1 only, it can be stopped, restarted on the same port,
frozen and thawed, and nothing is left after it is closed: no process, no folder.
"""

from __future__ import annotations

import importlib
import os
import socket
import time
from pathlib import Path

import pytest
import redis  # the test extra has it: a missing redis-py fails the import, everywhere

from chatd.testing.redis import RedisServer

# Not `import chatd.testing.redis as ...`: chatd.testing's fixtures shadow module names.
redis_kit = importlib.import_module("chatd.testing.redis")


def _client(url: str, **options: object) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, decode_responses=True, **options)


@pytest.mark.parametrize("turn", ["first", "second"])
def test_each_test_gets_an_empty_database_of_its_own(redis_url, turn):
    """Run twice: had the second run got the first's keys, the marker would be there."""
    client = _client(redis_url)
    assert client.dbsize() == 0
    client.set("marker", turn)
    assert client.get("marker") == turn


def test_the_password_is_required_and_a_wrong_one_refused(redis_server, redis_url):
    assert f":{redis_server.password}@127.0.0.1:{redis_server.port}/" in redis_url
    anonymous = redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=2)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    with pytest.raises(redis.AuthenticationError):
        _client(redis_server.url_for(1, password="not-the-password")).ping()
    assert _client(redis_url).ping() is True


def test_it_listens_on_loopback_only(redis_server):
    listening = {line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                 if line.split()[3] == "0A"}  # state LISTEN
    own = {address for address in listening if int(address.split(":")[1], 16)
           == redis_server.port}
    assert own == {f"0100007F:{redis_server.port:04X}"}


def test_the_real_redis_cli_talks_to_it(redis_server, redis_url):
    database = redis_url.rsplit("/", 1)[1]
    assert redis_server.cli("-n", database, "SET", "greeting", "hi\r\nthere").strip() == "OK"
    assert _client(redis_url).get("greeting") == "hi\r\nthere"
    # a command Redis refuses is an answer a test can read, not an exception
    assert "ERR" in redis_server.cli("NO-SUCH-COMMAND")


def test_stop_then_start_comes_back_empty_on_the_same_port(redis_server, redis_url):
    client = _client(redis_url)
    client.set("before", "1")
    port = redis_server.port
    redis_server.stop()
    with pytest.raises(redis.ConnectionError):
        _client(redis_url).ping()
    redis_server.start()
    assert redis_server.port == port
    assert _client(redis_url).get("before") is None  # nothing is saved: a restart empties it


def test_restart_cuts_connections_and_the_same_url_works_again(redis_server, redis_url):
    pubsub = _client(redis_url).pubsub()
    pubsub.subscribe("chatd:test")
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"
    redis_server.restart()
    with pytest.raises(redis.ConnectionError):
        # redis-py reconnects a pub/sub connection by itself on the next read; the
        # cut itself shows as an error on a raw socket, so read the raw connection
        pubsub.connection.read_response()
    assert _client(redis_url).ping() is True


def test_a_frozen_server_answers_nothing_until_thawed(redis_server, redis_url):
    client = _client(redis_url)
    client.ping()
    redis_server.freeze()
    try:
        slow = redis.Redis.from_url(redis_url, socket_timeout=0.3, socket_connect_timeout=0.3)
        with pytest.raises(redis.TimeoutError):
            slow.ping()
    finally:
        redis_server.thaw()
    assert client.ping() is True


def test_a_test_leaving_it_stopped_or_frozen_does_not_harm_the_next(redis_server, redis_url):
    """What ``redis_url`` does before each test: start a stopped server, thaw a frozen one."""
    redis_server.stop()
    redis_server.ensure_running()
    assert _client(redis_url).ping() is True
    redis_server.freeze()
    redis_server.ensure_running()
    assert _client(redis_url).ping() is True


def test_close_leaves_no_process_and_no_folder():
    try:
        server = RedisServer().start()
    except redis_kit.RedisMissing as missing:  # the fixtures skip (fail in CI); so does this
        redis_kit.skip_unless_ci(str(missing))
    pid, folder = server.pid, server.folder
    assert _client(server.url).ping() is True
    server.freeze()
    server.close()  # a frozen one too
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{pid}")
    assert not folder.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
