"""A test kit for chatd and its plugins: real server processes, real sockets.

docs/testing.md is its reference (every name, and the config defaults a test
server gets instead of the shipped ones: no flood limit, no per-address
limits, joins announced at once, no history replay, entry points off, the
database in memory).

Use it from a ``conftest.py``::

    pytest_plugins = ["chatd.testing"]

    def test_roll(chatd_server):
        server = chatd_server(plugin_dirs=["plugins"])
        alice = server.client()
        alice.send("/roll 2d6")
        alice.expect(r"^\\*\\*\\* .* rolled 2d6")

Fixtures
--------
``chatd_server``
    A factory: ``chatd_server(config=None, **sections)`` writes a config file
    (port 0, loopback, the test defaults of :mod:`chatd.testing.defaults`
    under ``sections``; ``config``: a file of your own instead; ``extra_args``:
    more command-line arguments; ``env``: more environment variables), starts
    ``python -m chatd`` as a subprocess, waits until it listens and returns a
    :class:`ServerProcess` (``restart()`` starts it again on the same data).
    Every server is stopped
    (SIGTERM, then SIGKILL) when the test ends.  Plugins installed as
    packages (entry points) are not loaded unless the test asks with
    ``plugin_host={"entry_points": True}``, so what is installed on the machine
    cannot change a test's outcome.  When a test fails, the log of every server
    it started is shown in the report.

``postgres`` / ``postgres_url``
    A throwaway PostgreSQL cluster per worker (session), and a fresh database's
    URL per test (:mod:`chatd.testing.postgres`).

``redis_server`` / ``redis_url``
    A throwaway ``redis-server`` per worker (session, with a password), and the URL
    of an empty logical database per test (:mod:`chatd.testing.redis`).

``storage`` / ``backend_server``
    The ``storage:`` config section on each backend in turn (SQLite, PostgreSQL):
    a test that takes it runs once per backend; ``backend_server`` is
    ``chatd_server`` with that section already set.

Clients
-------
:class:`ChatClient` speaks the line protocol (``server.client()``);
:class:`JsonClient` speaks jsonl (``server.json_client()``, on a listener
with ``protocol: jsonl``); :class:`TerminalClient` is a real ``nc``, ``ncat``,
``socat`` or ``telnet`` on a pty (``server.terminal("nc")``, needs pexpect).
Every read has a timeout: a missing line is a red test, never a hang.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .inprocess import FakeClock, InProcessChat, Peer
from .postgres import PostgresCluster, backend_server, postgres, postgres_url, storage
from .probes import (
    SERVERS_KEY,
    cpu_seconds,
    fd_count,
    free_port,
    operator_stats,
    parked_operator,
    reset,
    rss_bytes,
    skip_unless_ci,
    unexpected_tracebacks,
    wait_until,
)
from .process import (
    DEFAULT_TIMEOUT,
    QUICK_STOP,
    ChatClient,
    JsonClient,
    ServerProcess,
    write_config,
)
from .redis import RedisSentinel, RedisServer, redis_server, redis_url
from .terminal import TerminalClient


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the log of every server a failed test started to its report."""
    report = yield
    if report.failed:
        for index, server in enumerate(item.stash.get(SERVERS_KEY, [])):
            with contextlib.suppress(OSError, ValueError):
                text = server.log()
                if len(text) > 20000:
                    text = "[...]\n" + text[-20000:]
                report.sections.append((f"chatd server {index} log ({server.log_path})", text))
    return report


@pytest.fixture
def chatd_server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ServerProcess]]:
    """Factory fixture: ``chatd_server(**config_sections)`` -> a running :class:`ServerProcess`."""
    servers: list[ServerProcess] = []
    request.node.stash[SERVERS_KEY] = servers
    counter = iter(range(1_000_000))

    def start(config: Path | None = None, *, extra_args: list[str] | None = None,
              env: dict[str, str] | None = None, **sections: Any) -> ServerProcess:
        workdir = tmp_path / f"server{next(counter)}"
        workdir.mkdir()
        if config is None:
            config = write_config(workdir / "config.yaml", **sections)
        server = ServerProcess(config, workdir, extra_args=extra_args, env=env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()



__all__ = [
    "DEFAULT_TIMEOUT",
    "QUICK_STOP",
    "ChatClient",
    "FakeClock",
    "InProcessChat",
    "JsonClient",
    "Peer",
    "PostgresCluster",
    "RedisSentinel",
    "RedisServer",
    "ServerProcess",
    "TerminalClient",
    "backend_server",
    "chatd_server",
    "cpu_seconds",
    "fd_count",
    "free_port",
    "operator_stats",
    "parked_operator",
    "postgres",
    "postgres_url",
    "redis_server",
    "redis_url",
    "reset",
    "rss_bytes",
    "skip_unless_ci",
    "storage",
    "unexpected_tracebacks",
    "wait_until",
    "write_config",
]
