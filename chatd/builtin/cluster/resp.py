"""RESP by hand: the few commands the link's loop-side connections send, and where to.

The publisher and the subscriber of :class:`~chatd.builtin.cluster.link.Link` are
non-blocking sockets on chatd's reactor; they write RESP themselves (this module)
and parse replies with ``hiredis.Reader`` (a sans-IO parser: bytes in, replies
out).  :func:`endpoint` reads the same ``redis://`` / ``rediss://`` URL redis-py
reads (its own ``parse_url``), so the command thread and the loop's connections
can never disagree about host, database, user or TLS options.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from typing import Any

#: Host names answered without a DNS look-up (which could block the loop).
LOCAL_NAMES = {"localhost": "127.0.0.1", "localhost6": "::1"}


def command(*args: bytes | str | int) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


@dataclass(frozen=True)
class Endpoint:
    """Where a connection goes and how it introduces itself."""

    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: ssl.SSLContext | None

    @property
    def needs_lookup(self) -> bool:
        """Whether ``host`` is a name that must be resolved (off the loop) first."""
        if self.host in LOCAL_NAMES:
            return False
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return True
        return False

    def address(self) -> str:
        """The host as an IP literal when it is one (or localhost)."""
        return LOCAL_NAMES.get(self.host, self.host)

    def hello(self, name: str) -> list[bytes]:
        """The commands a new connection sends first, pipelined: AUTH (with the user
        if one is named), SELECT when the database is not 0, CLIENT SETNAME."""
        first: list[bytes] = []
        if self.password is not None:
            if self.username:
                first.append(command(b"AUTH", self.username, self.password))
            else:
                first.append(command(b"AUTH", self.password))
        if self.db:
            first.append(command(b"SELECT", self.db))
        first.append(command(b"CLIENT", b"SETNAME", name))
        return first


def endpoint(url: str, password: str | None = None) -> Endpoint:
    """The :class:`Endpoint` of ``url`` (``password`` wins over the URL's)."""
    from redis.connection import SSLConnection, parse_url

    parts: dict[str, Any] = parse_url(url)
    tls = None
    if parts.get("connection_class") is SSLConnection:
        tls = tls_context(parts)
    host = parts.get("host") or "localhost"
    return Endpoint(host=host, port=int(parts.get("port") or 6379), db=int(parts.get("db") or 0),
                    username=parts.get("username") or None,
                    password=password if password is not None else parts.get("password"),
                    tls=tls)


def tls_context(parts: dict[str, Any]) -> ssl.SSLContext:
    """An SSL context from redis-py's URL options (``ssl_ca_certs``, ``ssl_certfile``,
    ``ssl_keyfile``, ``ssl_cert_reqs``, ``ssl_check_hostname``): the system's trust store
    and host name checks unless the URL says otherwise."""
    context = ssl.create_default_context(cafile=parts.get("ssl_ca_certs"))
    reqs = str(parts.get("ssl_cert_reqs") or "required").lower()
    check = str(parts.get("ssl_check_hostname", "true")).lower() not in ("false", "0", "no")
    if reqs in ("none", "cert_none"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.check_hostname = check
    if parts.get("ssl_certfile"):
        context.load_cert_chain(parts["ssl_certfile"], parts.get("ssl_keyfile"))
    return context
