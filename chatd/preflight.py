"""What start-up, ``--check-config`` and a reload refuse before anything changes.

The config module checks each value alone; these checks need the machine: can
this user create and write the database where ``storage.path`` says, do the
certificates load, does the descriptor limit leave room for a client, is the
metrics package installed and its port free of a chat listener.  They run
first, in milliseconds, so a mistake found here is one line on stderr and exit
status 2 *at once*, the same line ``--check-config`` prints; before them,
start-up opened the database and started every plugin, and an unwritable
folder made the store retry for tens of seconds in silence (issue 18, rule 4).

Nothing here keeps a file: the storage check creates a probe file (or folder)
where the database would go and removes it at once: trying is the only honest
answer to "can I write there" (``os.access`` answers from permission bits, so
it says yes to root under ``/proc`` or ``/sys``, where nothing can be created,
and cannot see what a security module or a full quota refuses).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

from .admission import clamp_max_clients
from .config import Config, ConfigError
from .transport.tls import make_context

__all__ = ["problems", "storage_problems", "tls_problems"]

#: The first bytes of every SQLite database file.
_SQLITE_MAGIC = b"SQLite format 3\x00"


def problems(config: Config) -> list[str]:
    """Every problem the machine has with ``config``, one line each (empty: none)."""
    found = []
    limits = config.limits
    try:
        clamp_max_clients(limits.max_clients, limits.reserve_fds)
    except ValueError as exc:  # a limit the operating system cannot give
        found.append(f"limits.reserve_fds: {exc}")
    found += storage_problems(config)
    found += tls_problems(config)
    found += _metrics_problems(config)
    found += _cluster_problems(config)
    return found


def storage_problems(config: Config) -> list[str]:
    """A database this process can never create, open or write: a config mistake,
    found before start-up (a full or failing disk, by contrast, only degrades)."""
    if config.storage.url is not None:
        return _postgres_problems(config.storage.url)
    path = config.storage_path()
    if path is None:
        return []
    if path.is_dir():
        return [f"storage.path: {path} is a folder; name the database file inside it"]
    folder = path.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return [f"storage.path: cannot create {folder}: {existing} is not a folder"]
    problem = _probe_folder(existing, creating=existing != folder)
    if problem is None and path.exists():
        problem = _probe_database(path)
    return [] if problem is None else [f"storage.path: {problem}"]


def _postgres_problems(url: str) -> list[str]:
    """A URL needs psycopg (the postgres extra), and libpq must be able to read it
    (the reason shown without the password).  The server being down is not a
    config mistake: chatd starts without it and writes once it answers (see
    :func:`storage_reachable` for --check-config's look)."""
    try:
        import psycopg  # noqa: F401  (only to know it is there)
    except ImportError:
        return ["storage.url: PostgreSQL needs psycopg: pip install 'chatd[postgres]'"]
    from .store_postgres import parse_url

    try:
        parse_url(url)
    except ValueError as exc:
        return [str(exc)]
    return []


def storage_reachable(config: Config, timeout: float = 5.0) -> str | None:
    """For --check-config: why the PostgreSQL server of ``storage.url`` cannot be
    reached now (its URL shown without the password), or None (it answers, or the
    store is SQLite).  A warning, not an error: chatd starts without it."""
    url = config.storage.url
    if url is None:
        return None
    from .store_postgres import PostgresDialect

    dialect = PostgresDialect(url, connect_timeout=timeout)
    try:
        dialect.close(dialect.connect(reader=True))
    except Exception as exc:
        return f"storage.url: cannot connect to {dialect.where}: {dialect.describe_error(exc)}"
    return None


def _probe_folder(folder: Path, *, creating: bool) -> str | None:
    """Whether this user can create files in ``folder`` (SQLite's journal and WAL go
    beside the database), or folders if the database's folder is still to be made."""
    try:
        if creating:
            os.rmdir(tempfile.mkdtemp(prefix=".chatd-probe-", dir=folder))
        else:
            fd, name = tempfile.mkstemp(prefix=".chatd-probe-", dir=folder)
            os.close(fd)
            os.unlink(name)
    except OSError as exc:
        return (f"cannot {'create a folder' if creating else 'write'} in {folder} as this "
                f"user (uid {os.getuid()}): {exc.strerror or exc}; fix its owner or "
                "permissions, or choose another path")
    return None


def _probe_database(path: Path) -> str | None:
    """The database file can be opened for writing and is a database (or empty)."""
    try:
        with open(path, "r+b") as file:
            head = file.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        return (f"cannot open {path} for writing as this user (uid {os.getuid()}): "
                f"{exc.strerror or exc}; fix its owner or permissions, or choose another path")
    if head and head != _SQLITE_MAGIC:
        return f"{path} is not an SQLite database; move it away or choose another path"
    return None


def tls_problems(config: Config) -> list[str]:
    """Certificates that cannot be loaded (missing, unreadable, not matching their key,
    expired): found before anything listens."""
    found = []
    for index, listener in enumerate(config.listen):
        if listener.tls is not None:
            try:
                make_context(listener.tls)
            except ValueError as exc:
                found.append(f"listen[{index}].tls: {exc}")
    return found


def _metrics_problems(config: Config) -> list[str]:
    """The exporter's package is missing, or its port is a chat listener's."""
    metrics = config.metrics
    if not metrics.enabled:
        return []
    found = []
    if importlib.util.find_spec("prometheus_client") is None:
        found.append(
            "metrics.enabled needs the prometheus_client package: "
            "pip install 'chatd[metrics]' (or set metrics.enabled: false)"
        )
    if metrics.port:
        for i, listener in enumerate(config.listen):
            if listener.port == metrics.port and _same_interface(listener.host, metrics.host):
                key = "listen" if len(config.listen) == 1 else f"listen[{i}]"
                found.append(
                    f"metrics.port {metrics.port} is also {key}'s port on "
                    f"{listener.host}: give the metrics exporter a port of its own"
                )
    return found


def _cluster_problems(config: Config) -> list[str]:
    """The cluster's Redis client is missing, or its password cannot be read."""
    cluster = config.cluster
    if not cluster.enabled:
        return []
    found = []
    try:
        # Imported here, not merely found: the cluster plugin's hook then finds them
        # loaded (an import of redis-py takes ~0.1 s, which its hook must not spend),
        # and a broken install is named before start-up.
        importlib.import_module("redis")
        importlib.import_module("hiredis")
    except ImportError as missing:
        found.append(f"cluster.redis_url needs redis-py and hiredis ({missing}): "
                     "pip install 'chatd[cluster]' (or remove the cluster section)")
    try:
        cluster.password()
    except ConfigError as exc:
        found.append(str(exc))
    return found


def _same_interface(a: str, b: str) -> bool:
    """Whether two bind addresses can collide (the same one, or either is a wildcard)."""
    wildcards = {"", "0.0.0.0", "::"}
    return a == b or a in wildcards or b in wildcards or {a, b} == {"localhost", "127.0.0.1"}
