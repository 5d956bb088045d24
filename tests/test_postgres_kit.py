"""The test kit's throwaway PostgreSQL (chatd.testing.postgres): what later tests stand on.

A cluster starts, every test gets its own empty database, the password is required,
the server listens on 127.0.0.1 only and never as root, and nothing is left after the
session: no process, no folder.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
from pathlib import Path

import psycopg  # the test extra has it: a missing psycopg fails the import, everywhere
import pytest

from chatd.testing.postgres import PostgresCluster, children, run_as

pytest_plugins = ["pytester"]

# Not `import chatd.testing.postgres as ...`: chatd.testing's attribute `postgres` is the
# fixture, which shadows the module of the same name.
postgres_kit = importlib.import_module("chatd.testing.postgres")


def _user_tables(url: str) -> list[str]:
    with psycopg.connect(url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return [row[0] for row in rows]


def test_a_fresh_database_answers_with_the_urls_credentials(postgres_url, postgres):
    with psycopg.connect(postgres_url, connect_timeout=5) as conn:
        user, database = conn.execute("SELECT current_user, current_database()").fetchone()
    assert user == postgres.user
    assert postgres_url.endswith(f"/{database}") and database.startswith("test_")
    assert f":{postgres.password}@127.0.0.1:{postgres.port}/" in postgres_url


@pytest.mark.parametrize("turn", ["first", "second"])
def test_each_test_gets_an_empty_database_of_its_own(postgres_url, turn):
    """Run twice: had the second run got the first's database, its table would be there."""
    assert _user_tables(postgres_url) == []
    with psycopg.connect(postgres_url, connect_timeout=5) as conn:
        conn.execute("CREATE TABLE marker (turn text)")
        conn.execute("INSERT INTO marker VALUES (%s)", (turn,))
    assert _user_tables(postgres_url) == ["marker"]


def test_two_databases_do_not_see_each_others_tables(postgres):
    first, second = postgres.create_database(), postgres.create_database()
    try:
        assert first != second
        with psycopg.connect(first, connect_timeout=5) as conn:
            conn.execute("CREATE TABLE only_in_first (x int)")
        assert _user_tables(first) == ["only_in_first"]
        assert _user_tables(second) == []
    finally:
        postgres.drop_database(first)
        postgres.drop_database(second)


def test_a_wrong_password_is_refused(postgres, postgres_url):
    wrong = postgres_url.replace(f":{postgres.password}@", ":not-the-password@")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong, connect_timeout=5)


def test_no_password_is_refused_on_tcp_and_on_the_unix_socket(postgres, postgres_url):
    database = postgres_url.rsplit("/", 1)[1]
    for host in ("127.0.0.1", str(postgres.folder)):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(host=host, port=postgres.port, user=postgres.user,
                            dbname=database, password="", connect_timeout=5)


def test_it_listens_on_127_0_0_1_only(postgres):
    assert postgres.admin.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
    listening = _listening_addresses(postgres.port)
    assert listening == ["0100007F"], listening  # 127.0.0.1, little-endian hex, and nothing else


def _listening_addresses(port: int) -> list[str]:
    """Local addresses in LISTEN state on ``port``, from /proc/net/tcp and tcp6."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                local, state = line.split()[1], line.split()[3]
                address, _, hex_port = local.partition(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.append(address)
    return found


def test_it_never_runs_as_root(postgres):
    """As root (CI) the cluster runs as an unprivileged user owning its folder; else as us."""
    uid = _real_uid(postgres.pid)
    assert uid != 0
    if os.geteuid() == 0:
        expected = run_as()
        assert expected is not None
        assert uid == expected[0]
        assert postgres.data.stat().st_uid == expected[0]
    else:
        assert uid == os.geteuid()


def _real_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def test_closing_a_cluster_leaves_no_process_and_no_folder():
    cluster = PostgresCluster().start()
    with psycopg.connect(cluster.create_database(), connect_timeout=5) as conn:
        backend = conn.info.backend_pid  # an open session: a backend process
        processes = _identities([cluster.pid, *children(cluster.pid)])
        assert backend in children(cluster.pid)
        folder = cluster.folder
        cluster.close()
    assert _still_running(processes) == []
    assert not folder.exists()


def test_a_frozen_cluster_is_killed_with_every_child(monkeypatch):
    """Every process SIGSTOPped, the server cannot shut down: close() kills it and each
    child (each in a session of its own: killing the postmaster's group would miss them;
    frozen, they cannot notice that the postmaster died and leave on their own)."""
    monkeypatch.setattr(postgres_kit, "STOP_TIMEOUT", 0.5)
    cluster = PostgresCluster().start()
    conn = psycopg.connect(cluster.create_database(), connect_timeout=5)
    processes = _identities([cluster.pid, *children(cluster.pid)])
    assert conn.info.backend_pid in children(cluster.pid)
    for pid, _ in processes:
        os.kill(pid, signal.SIGSTOP)
    cluster.close()
    conn.close()
    assert _still_running(processes) == []
    assert not cluster.folder.exists()


def test_the_session_fixture_removes_its_cluster_when_the_session_ends(pytester):
    """A real pytest session that leaves a connection open; after it, nothing remains."""
    record = pytester.path / "cluster.json"
    pytester.makeconftest('pytest_plugins = ["chatd.testing"]\n')
    pytester.makepyfile(
        f"""
        import json, psycopg
        from pathlib import Path
        from chatd.testing.postgres import children

        def start_time(pid):
            return int(Path(f"/proc/{{pid}}/stat").read_text().rsplit(")", 1)[1].split()[19])

        def test_uses_postgres(postgres, postgres_url):
            conn = psycopg.connect(postgres_url)  # left open on purpose
            conn.execute("CREATE TABLE t (x int)")
            assert conn.info.backend_pid in children(postgres.pid)
            with open({str(record)!r}, "w") as out:
                pids = [postgres.pid, *children(postgres.pid)]
                json.dump({{"processes": [(pid, start_time(pid)) for pid in pids],
                           "folder": str(postgres.folder)}}, out)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    seen = json.loads(record.read_text())
    assert len(seen["processes"]) > 2  # the postmaster, its helpers, the test's backend
    assert _still_running([tuple(p) for p in seen["processes"]]) == []
    assert not Path(seen["folder"]).exists()


def _identities(pids: list[int]) -> list[tuple[int, int]]:
    """(pid, start time) of each process: a pid reused later is not the same process."""
    return [(pid, _start_time(pid)) for pid in pids]


def _start_time(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def _still_running(identities: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The processes of ``identities`` that still run (not a zombie, not a new one
    with a reused pid)."""
    alive = []
    for pid, started in identities:
        try:
            if _start_time(pid) == started and postgres_kit.alive(pid):
                alive.append((pid, started))
        except (OSError, IndexError):
            continue
    return alive
