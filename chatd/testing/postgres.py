"""A throwaway PostgreSQL cluster for tests, made by the tests themselves.

One cluster per pytest process (so one per xdist worker: the ``postgres`` fixture is
session-scoped), made with Debian's own binaries: ``initdb`` into a fresh temporary
folder, then ``postgres`` on a free port of 127.0.0.1 only, its unix socket in the
same folder, ``fsync`` off (a test's rows need not survive a power cut).  Every test
that asks for ``postgres_url`` gets a fresh DATABASE (``CREATE DATABASE test_<n>``,
about a quarter of a second here), so no test sees another's rows, and the cluster's start-up
(initdb, about a second) is paid once per worker.

Every role needs its password (scram-sha-256, on TCP and on the socket alike): a
later test that checks "the password never appears in a log" has a real one, and a
wrong one is refused as a production server would refuse it.

PostgreSQL refuses to run as root, and CI runs the tests as root: then initdb and
the server run as an unprivileged system user (``postgres``, which Debian's package
creates, else ``nobody``), through :class:`subprocess.Popen`'s ``user``/``group``
(no shell, no ``runuser``), with the folder owned by that user.  As a normal user
they run as that user.

``PostgresCluster(ssl=True)`` serves TLS only (``ssl = on``, ``hostssl`` rules and a
``hostnossl ... reject``): a throwaway CA made with ``trustme`` (its certificate in
:attr:`PostgresCluster.ca_path`) signs the server's certificate for ``localhost`` and
127.0.0.1, so a client can check it with ``sslmode=verify-full``.

psycopg is imported only when a cluster starts, so ``chatd.testing`` itself does not
need the ``postgres`` extra; a missing PostgreSQL or psycopg skips the test on a
developer's machine and fails it in CI (:func:`~chatd.testing.probes.skip_unless_ci`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .probes import SERVERS_KEY, free_port, skip_unless_ci, wait_until

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
ADMIN_USER = "chatd"
UNPRIVILEGED_USERS = ("postgres", "nobody")

# Settings for speed and isolation, not durability: a test cluster dies with its tests.
_SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
    "shared_buffers": "16MB",
    "log_min_messages": "warning",
}


class PostgresMissing(RuntimeError):
    """No PostgreSQL server binaries (``initdb``, ``postgres``) on this machine."""


def find_bindir() -> Path:
    """The newest PostgreSQL's binaries: Debian keeps them off PATH, in
    ``/usr/lib/postgresql/<version>/bin``; else an ``initdb`` on PATH."""
    candidates = []
    for initdb in Path("/usr/lib/postgresql").glob("*/bin/initdb"):
        with contextlib.suppress(ValueError):
            candidates.append((float(initdb.parent.parent.name), initdb.parent))
    if candidates:
        return max(candidates)[1]
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise PostgresMissing("PostgreSQL is not installed (Debian: apt install postgresql)")


def run_as() -> tuple[int, int] | None:
    """The (uid, gid) to run PostgreSQL as when we are root, or ``None``: as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    raise PostgresMissing("running as root and no unprivileged user to run PostgreSQL as")


class PostgresCluster:
    """A running throwaway cluster: ``url``, ``admin`` connection, fresh databases.

    ``close()`` stops the server (fast shutdown, then SIGKILL) and removes its folder.
    """

    def __init__(self, bindir: Path | None = None, *, ssl: bool = False) -> None:
        self.ssl = ssl
        self.bindir = bindir if bindir is not None else find_bindir()
        self.host = "127.0.0.1"
        self.user = ADMIN_USER
        self.password = secrets.token_hex(16)
        self.folder = Path(tempfile.mkdtemp(prefix="chatd-pg-"))
        self.data = self.folder / "data"
        self.log_path = self.folder / "postgres.log"
        #: The CA that signed the server's certificate (``ssl=True`` only).
        self.ca_path = self.folder / "ca.pem"
        self.owner = run_as()
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._admin: Any = None
        self._numbers = itertools.count(1)

    # -- start and stop -------------------------------------------------------------

    def start(self) -> PostgresCluster:
        """initdb (the first time), then start the server and wait until it accepts
        connections.  After :meth:`stop`, starts the same cluster again, on the same
        port: the URLs handed out before work again."""
        try:
            if not self.data.exists():
                if self.owner is not None:
                    os.chown(self.folder, *self.owner)
                self._initdb()
                if self.ssl:
                    self._make_certificates()
            self._launch()
            self._wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def _run_options(self) -> dict[str, Any]:
        """Popen arguments that drop root for PostgreSQL (it refuses to run as root)."""
        options: dict[str, Any] = {"cwd": self.folder, "env": _child_env()}
        if self.owner is not None:
            options.update(user=self.owner[0], group=self.owner[1], extra_groups=[])
        return options

    def _initdb(self) -> None:
        pwfile = self.folder / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.owner is not None:
            os.chown(pwfile, *self.owner)
        pwfile.chmod(0o600)
        result = subprocess.run(
            [str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user,
             f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8",
             "--locale=C", "--no-sync", "--no-instructions"],
            capture_output=True, text=True, timeout=START_TIMEOUT, **self._run_options(),
        )
        pwfile.unlink()
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed ({result.returncode}): {result.stderr.strip()}")

    def _make_certificates(self) -> None:
        """A throwaway CA, the server's certificate and key signed by it (in the data
        folder, owned by the server's user, the key 0600 as PostgreSQL demands), and
        pg_hba rules that take TLS connections only: a plain one is refused."""
        import trustme  # the test extra: only a TLS cluster needs it

        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(self.ca_path))
        issued = ca.issue_cert("localhost", "127.0.0.1")
        crt, key = self.data / "server.crt", self.data / "server.key"
        issued.cert_chain_pems[0].write_to_path(str(crt))
        issued.private_key_pem.write_to_path(str(key))
        (self.data / "pg_hba.conf").write_text(
            "local all all scram-sha-256\n"
            "hostssl all all 127.0.0.1/32 scram-sha-256\n"
            "hostnossl all all 127.0.0.1/32 reject\n"
        )
        for path in (crt, key):
            path.chmod(0o600)
            if self.owner is not None:
                os.chown(path, *self.owner)

    def _launch(self) -> None:
        if not self.port:
            self.port = free_port(self.host)
        settings = dict(_SERVER_SETTINGS, port=str(self.port),
                        unix_socket_directories=str(self.folder))
        if self.ssl:
            settings.update(ssl="on", ssl_cert_file="server.crt", ssl_key_file="server.key")
        argv = [str(self.bindir / "postgres"), "-D", str(self.data)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        with open(self.log_path, "ab") as log:
            # Own session: a Ctrl-C in the terminal reaches pytest, whose teardown
            # stops the server, instead of killing it under a test.
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, **self._run_options(),
            )

    def _wait_ready(self) -> None:
        """Until an admin connection succeeds; a server that exits is an error at once."""
        psycopg = _psycopg()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.process.returncode}):\n{self.log()}")
            try:
                self._admin = psycopg.connect(self.url, autocommit=True, connect_timeout=2)
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (fast shutdown: every connection is cut), keeping its data;
        :meth:`start` brings it back on the same port."""
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.close()
            self._admin = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._kill()

    def freeze(self) -> None:
        """SIGSTOP the server and every process it has: connections stay open and
        nothing answers (a hung server, as a stalled disk or VM would leave it)."""
        for pid in [self.pid, *children(self.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT what :meth:`freeze` stopped (and any child made meanwhile)."""
        for pid in [self.pid, *children(self.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        """Stop the server (SIGINT: fast shutdown; SIGKILL if it lingers), remove the folder."""
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.close()
            self._admin = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._kill()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _kill(self) -> None:
        """SIGKILL the postmaster and every child it has: each child calls setsid(), so
        they are not in its process group, and one killed alone would leave them."""
        assert self.process is not None
        doomed = [*children(self.process.pid), self.process.pid]
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT)
        wait_until(lambda: not any(map(alive, doomed)), STOP_TIMEOUT, interval=0.01)

    # -- what tests use ----------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The postmaster's process id (its children: :func:`children`)."""
        assert self.process is not None
        return self.process.pid

    @property
    def admin(self) -> Any:
        """A psycopg connection (autocommit) as the cluster's superuser, to ``postgres``."""
        return self._admin

    @property
    def url(self) -> str:
        """The superuser's URL to the ``postgres`` database."""
        return self.url_for("postgres")

    def url_for(self, database: str, password: str | None = None) -> str:
        """``postgresql://user:password@127.0.0.1:port/database``."""
        secret = self.password if password is None else password
        return f"postgresql://{self.user}:{secret}@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database (``test_<n>``); its URL."""
        name = f"test_{next(self._numbers)}"
        self._admin.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by :meth:`create_database`, closing its connections."""
        name = url.rsplit("/", 1)[1]
        with contextlib.suppress(Exception):
            self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log(self) -> str:
        """The server's log so far."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (a postmaster's backends and helpers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead and waiting for its reaper, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _child_env() -> dict[str, str]:
    """The environment of initdb and postgres: ours, in the C locale, with no PG* variable
    of the developer's (PGDATA, PGPORT...) to point them elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C")
    return env


def _psycopg() -> Any:
    import psycopg  # optional (the postgres extra): imported only when a cluster starts

    return psycopg


def _require() -> Path:
    """The binaries and psycopg, or skip (fail in CI)."""
    try:
        _psycopg()
    except ImportError:
        skip_unless_ci("psycopg is not installed (pip install 'chatd[postgres]')")
    try:
        return find_bindir()
    except PostgresMissing as missing:
        skip_unless_ci(str(missing))
        raise


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """This worker's throwaway cluster (started once per session, removed at its end)."""
    cluster = PostgresCluster(_require()).start()
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def postgres_url(postgres: PostgresCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database's URL, with the password; dropped when the test ends, after
    the chatd processes the test started are stopped (a server whose database went
    first would spend its shutdown retrying to write to it)."""
    url = postgres.create_database()
    yield url
    for server in request.node.stash.get(SERVERS_KEY, []):
        with contextlib.suppress(Exception):
            server.close()
    postgres.drop_database(url)


#: The backends every store, history, accounts and moderation test runs on.
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The ``storage:`` config section for each backend in turn (a test using it runs
    twice): an SQLite file in the test's folder, then a fresh PostgreSQL database
    (``storage.url``; the cluster is started only for that run).  Pass it on:
    ``chatd_server(storage=storage)``, or ``storage_url(storage)`` for a bare Store."""
    if request.param == "sqlite":
        return {"path": str(tmp_path / "chatd.sqlite3")}
    url = request.getfixturevalue("postgres_url")
    return {"url": url}


@pytest.fixture
def backend_server(storage: dict[str, Any], chatd_server: Any) -> Any:
    """``chatd_server`` on each backend in turn (SQLite, then PostgreSQL): a test
    taking it runs twice, every server it starts on that run's ``storage`` unless
    it passes its own.  (``storage`` comes first: it is torn down after the
    servers stop, so a server never outlives its database.)"""
    def start(*args: Any, **sections: Any) -> Any:
        sections.setdefault("storage", storage)
        return chatd_server(*args, **sections)
    return start
