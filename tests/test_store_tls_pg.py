"""chatd on PostgreSQL as docs/persistence.md tells an operator to run it: TLS to the
database, the role and database made with the docs' commands, a pg_dump backup
restored with the docs' commands.

The snippets are read from the docs themselves (as tests/test_web_proxies.py reads
the proxies' configurations), with only the example names swapped for the test's, so
a snippet that stops working turns a test red.  One TLS-only cluster for the module
(``PostgresCluster(ssl=True)``: a throwaway CA, ``hostssl`` rules, plain connections
refused); the "server without TLS" case uses the session's plain cluster.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import trustme
import yaml
from test_store_copy import PLUGINS, _check_target_serves, _fill

from chatd.testing import operator_stats, parked_operator, wait_until, write_config
from chatd.testing.postgres import PostgresCluster, find_bindir
from chatd.testing.probes import SERVERS_KEY

DOCS = Path(__file__).resolve().parent.parent / "docs" / "persistence.md"
OPER = "oper-secret"
#: A chatd whose database refuses it cannot commit at shutdown: do not wait long.
QUICK_STOP = {"shutdown_timeout_seconds": 0.5}
TIMEOUT = 30.0


def _section() -> str:
    """docs/persistence.md's PostgreSQL section."""
    text = DOCS.read_text()
    return text.split("## PostgreSQL: one database for several chatd processes\n", 1)[1] \
        .split("\n## ", 1)[0]


def _blocks(language: str) -> list[str]:
    """Every fenced block of the section in ``language`` ("" for none), in order."""
    found, body, fence = [], [], None
    for line in _section().splitlines():
        if fence is None and line.startswith("```"):
            fence, body = line[3:].strip(), []
        elif fence is not None and line.strip() == "```":
            if fence == language:
                found.append("\n".join(body) + "\n")
            fence = None
        elif fence is not None:
            body.append(line)
    return found


def _swap(text: str, replacements: dict[str, str]) -> str:
    """``text`` with the docs' example values replaced; each must be there (no drift)."""
    for old, new in replacements.items():
        assert old in text, f"docs/persistence.md's snippet no longer has {old!r}"
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[PostgresCluster]:
    """This module's cluster: TLS only, its certificate signed by ``ca_path``."""
    made = PostgresCluster(find_bindir(), ssl=True).start()
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def tls_database(tls_cluster: PostgresCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database's name on the TLS cluster; dropped after the test's chatd
    processes stop (as ``postgres_url`` does)."""
    url = tls_cluster.create_database()
    yield url.rsplit("/", 1)[1]
    for server in request.node.stash.get(SERVERS_KEY, []):
        with contextlib.suppress(Exception):
            server.close()
    tls_cluster.drop_database(url)


def _documented_url(cluster: PostgresCluster, database: str, ca: Path,
                    password: str | None = None) -> str:
    """The URL of the docs' ``storage:`` example, pointed at the test's cluster."""
    (snippet,) = [b for b in _blocks("yaml") if "storage:" in b]
    url = yaml.safe_load(snippet)["storage"]["url"]
    user = "chatd" if password is None else f"chatd:{password}"
    here = f"{user}@localhost:{cluster.port}/{database}?"
    return _swap(url, {"chatd@db.example.net:5432/chatd?": here,
                       "/etc/chatd/db-ca.pem": str(ca)})


def _chats(server) -> None:
    """Chat goes on: two clients, one line from one to the other."""
    alice, bob = server.client(), server.client()
    alice.send("/nick alice")
    alice.expect(r"is now known as alice$")
    alice.send("hello over whatever the database does")
    bob.expect(r"hello over whatever the database does$")


def _failing(server, reason: str, password: str) -> None:
    """The store's problem: logged and in operators' /stats, with the reason and
    without the password."""
    server.wait_for_log(reason, timeout=TIMEOUT)
    op = parked_operator(server, OPER)
    stats = operator_stats(op)
    assert stats["storage"].startswith("FAILING: cannot open postgresql://chatd:***@"), stats
    assert reason in stats["storage"], stats
    assert password not in stats["storage"] and password not in server.log()


def _tls_connections(cluster: PostgresCluster, database: str) -> list[bool]:
    """Whether each connection to ``database`` uses TLS."""
    rows = cluster.admin.execute(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
        "WHERE a.datname = %s", (database,)).fetchall()
    return [ssl for (ssl,) in rows]


def test_the_tls_cluster_refuses_a_plain_connection(tls_cluster, tls_database):
    url = tls_cluster.url_for(tls_database)
    refused = r"pg_hba\.conf rejects connection.*no encryption"  # the reject rule's words
    with pytest.raises(psycopg.OperationalError, match=refused):
        psycopg.connect(url + "?sslmode=disable", connect_timeout=5)
    with psycopg.connect(url + "?sslmode=require", connect_timeout=5) as conn:
        assert conn.pgconn.ssl_in_use


def test_the_documented_verify_full_url_works_over_tls(chatd_server, tls_cluster, tls_database):
    url = _documented_url(tls_cluster, tls_database, tls_cluster.ca_path)
    env = {"PGPASSWORD": tls_cluster.password}  # the docs' way to keep it out of the URL
    server = chatd_server(storage={"url": url}, plugins=PLUGINS, env=env)
    _fill(server)
    connections = _tls_connections(tls_cluster, tls_database)
    assert connections and all(connections), connections
    assert server.stop() == 0
    server = chatd_server(storage={"url": url}, plugins=PLUGINS, env=env)
    _check_target_serves(server)  # what the first one wrote, read back over TLS


def test_the_documented_pgpass_line_gives_chatd_its_password(chatd_server, tls_cluster,
                                                             tls_database, tmp_path):
    line = re.search(r"a line\s+`([^`]+)`", _section().replace("\n", " ")).group(1)
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(_swap(line, {"db.example.net:5432:chatd:chatd:SECRET":
                                   f"localhost:{tls_cluster.port}:{tls_database}:chatd:"
                                   f"{tls_cluster.password}"}) + "\n")
    pgpass.chmod(0o600)  # libpq ignores a file others can read
    url = _documented_url(tls_cluster, tls_database, tls_cluster.ca_path)
    server = chatd_server(storage={"url": url}, plugins=PLUGINS, env={"PGPASSFILE": str(pgpass)})
    _fill(server)  # registered, banned, said: written, so the password was taken
    assert server.stop() == 0
    assert "cannot open" not in server.log()


def test_a_server_certificate_from_another_ca_is_a_clear_problem_and_chat_goes_on(
        chatd_server, tls_cluster, tls_database, tmp_path):
    stranger = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(stranger))
    url = _documented_url(tls_cluster, tls_database, stranger, tls_cluster.password)
    server = chatd_server(storage={"url": url}, limits=QUICK_STOP,
                          plugins={**PLUGINS, "oper": {"password": OPER}})
    _chats(server)
    _failing(server, "certificate verify failed", tls_cluster.password)


def _check_config(url: str, folder: Path) -> subprocess.CompletedProcess[str]:
    config = write_config(folder / "config.yaml", storage={"url": url})
    return subprocess.run([sys.executable, "-m", "chatd", "--config", str(config),
                           "--check-config"], capture_output=True, text=True, timeout=TIMEOUT)


def test_check_config_warns_of_a_certificate_it_cannot_verify(tls_cluster, tls_database,
                                                               tmp_path):
    good = _check_config(_documented_url(tls_cluster, tls_database, tls_cluster.ca_path,
                                         tls_cluster.password), tmp_path)
    assert good.returncode == 0 and "warning" not in good.stderr, good.stderr
    stranger = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(stranger))
    bad = _check_config(_documented_url(tls_cluster, tls_database, stranger,
                                        tls_cluster.password), tmp_path)
    assert bad.returncode == 0, bad.stderr  # a warning: chatd starts without its database
    assert "warning: storage.url: cannot connect to postgresql://chatd:***@" in bad.stderr
    assert "certificate verify failed" in bad.stderr
    assert tls_cluster.password not in bad.stdout + bad.stderr


def test_require_against_a_server_without_tls_is_refused_clearly(chatd_server, postgres,
                                                                 postgres_url):
    server = chatd_server(storage={"url": postgres_url + "?sslmode=require"},
                          limits=QUICK_STOP, plugins={"oper": {"password": OPER}})
    _chats(server)
    _failing(server, "server does not support SSL", postgres.password)


def _shell(command: str, cluster: PostgresCluster, password: str, **env: str) -> str:
    """One of the docs' shell commands, run as the docs say but against ``cluster``:
    ``sudo -u postgres`` becomes the cluster's superuser through PG* variables, the
    binaries are the cluster's own."""
    command = command.replace("sudo -u postgres ", "")
    environment = {**os.environ, "PATH": f"{cluster.bindir}:{os.environ['PATH']}",
                   "PGHOST": "localhost", "PGPORT": str(cluster.port),
                   "PGUSER": cluster.user, "PGPASSWORD": cluster.password, **env}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", command], env=environment,
                            input=f"{password}\n{password}\n", capture_output=True, text=True,
                            timeout=TIMEOUT, start_new_session=True)  # no tty: prompts read stdin
    assert result.returncode == 0, f"{command}\n{result.stderr}"
    return result.stdout


def _role_commands() -> str:
    (snippet,) = [b for b in _blocks("sh") if "createuser" in b]
    return snippet


def _make_role_and_database(cluster: PostgresCluster, role: str, database: str,
                            password: str) -> None:
    """The docs' createuser/createdb lines, for ``role`` and ``database``."""
    snippet = _swap(_role_commands(), {
        "createuser --pwprompt chatd": f"createuser --pwprompt {role}",
        "createdb --owner chatd chatd": f"createdb --owner {role} {database}",
    })
    for line in filter(str.strip, snippet.splitlines()):
        _shell(line.split("#", 1)[0], cluster, password)


@contextlib.contextmanager
def _documented_hba(cluster: PostgresCluster, role: str, database: str) -> Iterator[None]:
    """While it runs, the cluster's TCP rules are the docs' pg_hba.conf line alone (for
    ``role`` and ``database`` from 127.0.0.1), reloaded as the docs say."""
    (snippet,) = [b for b in _blocks("") if "scram-sha-256" in b]
    rules = [line for line in snippet.splitlines() if line.strip() and not line.startswith("#")]
    line = _swap(rules[0], {"chatd     chatd": f"{database} {role}",
                            "10.0.0.0/24": "127.0.0.1/32"})
    hba = cluster.data / "pg_hba.conf"
    kept = hba.read_text()
    hba.write_text(f"local all all scram-sha-256\n{line}\n")
    try:
        cluster.admin.execute("SELECT pg_reload_conf()")
        assert wait_until(lambda: cluster.admin.execute(
            "SELECT count(*) FROM pg_hba_file_rules").fetchone()[0] == 2, 10)
        errors = cluster.admin.execute(
            "SELECT error FROM pg_hba_file_rules WHERE error IS NOT NULL").fetchall()
        assert not errors, errors
        yield
    finally:
        hba.write_text(kept)
        cluster.admin.execute("SELECT pg_reload_conf()")


def test_the_documented_role_and_database_commands_give_chatd_its_database(
        chatd_server, tls_cluster):
    password = "s3cret-of-the-docs"
    _make_role_and_database(tls_cluster, "docs_role", "docs_db", password)
    try:
        with _documented_hba(tls_cluster, "docs_role", "docs_db"):
            with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
                psycopg.connect(tls_cluster.url, connect_timeout=5)  # only the docs' rule
            plain = f"postgresql://docs_role:{password}@127.0.0.1:{tls_cluster.port}/docs_db"
            with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry"):
                psycopg.connect(plain + "?sslmode=disable", connect_timeout=5)  # hostssl
            rolsuper, createdb = tls_cluster.admin.execute(
                "SELECT rolsuper, rolcreatedb FROM pg_roles WHERE rolname = 'docs_role'"
            ).fetchone()
            assert (rolsuper, createdb) == (False, False)  # the role needs no other rights
            url = f"postgresql://docs_role:{password}@localhost:{tls_cluster.port}/docs_db"
            server = chatd_server(storage={"url": url}, plugins=PLUGINS)
            _fill(server)  # its tables made by chatd's migrations as that role
            assert server.stop() == 0
            server = chatd_server(storage={"url": url}, plugins=PLUGINS)
            _check_target_serves(server)
            assert server.stop() == 0
    finally:
        tls_cluster.admin.execute('DROP DATABASE IF EXISTS "docs_db" WITH (FORCE)')
        tls_cluster.admin.execute('DROP ROLE IF EXISTS "docs_role"')


def test_a_pg_dump_backup_restored_as_the_docs_say_serves_the_same_chat(
        chatd_server, tls_cluster, tmp_path):
    password = "backup-s3cret"
    _make_role_and_database(tls_cluster, "dump_role", "dump_db", password)
    try:
        source = _documented_url(tls_cluster, "dump_db", tls_cluster.ca_path)
        source = source.replace("chatd@", "dump_role@")
        env = {"PGPASSWORD": password}
        server = chatd_server(storage={"url": source}, plugins=PLUGINS, env=env)
        _fill(server)
        assert server.stop() == 0  # every queued write committed

        backups = tmp_path / "backups"
        backups.mkdir()
        (dump, restore) = [b for b in _blocks("sh") if "pg_dump" in b or "pg_restore" in b]
        docs_url = "postgresql://chatd@db.example.net/"
        here = f"postgresql://dump_role@localhost:{tls_cluster.port}/"
        _shell(_swap(dump, {"/backups/": f"{backups}/", f"{docs_url}chatd?": f"{here}dump_db?",
                            "/etc/chatd/db-ca.pem": str(tls_cluster.ca_path)}),
               tls_cluster, password, PGPASSWORD=password)
        (made,) = list(backups.iterdir())
        # restored elsewhere, by a role of its own (not the one that made the dump)
        tls_cluster.admin.execute(f"CREATE ROLE restore_role LOGIN PASSWORD '{password}'")
        restore = _swap(restore, {"createdb --owner chatd chatd_restored":
                                  "createdb --owner restore_role restored_db",
                                  f"{docs_url}chatd_restored":
                                  here.replace("dump_role@", "restore_role@") + "restored_db",
                                  "/etc/chatd/db-ca.pem": str(tls_cluster.ca_path),
                                  "/backups/chatd-2026-12-01.dump": str(made)})
        lines = restore.splitlines()
        _shell(lines[0], tls_cluster, password)  # as the superuser
        _shell("\n".join(lines[1:]), tls_cluster, password, PGPASSWORD=password)

        restored = source.replace("/dump_db?", "/restored_db?").replace(
            "dump_role@", "restore_role@")
        server = chatd_server(storage={"url": restored}, plugins=PLUGINS, env=env)
        _check_target_serves(server)
        assert server.stop() == 0
        with psycopg.connect(restored, password=password) as conn:
            owners = conn.execute("SELECT DISTINCT tableowner FROM pg_tables "
                                  "WHERE schemaname = 'public'").fetchall()
        assert owners == [("restore_role",)]
    finally:
        for database in ("dump_db", "restored_db"):
            tls_cluster.admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        for role in ("dump_role", "restore_role"):
            tls_cluster.admin.execute(f'DROP ROLE IF EXISTS "{role}"')
