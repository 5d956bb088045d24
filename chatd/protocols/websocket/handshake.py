"""The HTTP side of a ``websocket`` listener, sans-IO: bytes in, what to answer out.

A connection speaks HTTP/1.1 until its upgrade: :class:`HttpSide` holds one h11
connection per socket and turns received bytes into :class:`Respond` (bytes to
send, and whether to close after) or one :class:`Upgrade` (the ``101`` response,
the bytes after it, the request's forwarding header).  The protocol
(:mod:`.protocol`) sends them; nothing here touches a socket or a timer.

Why h11 and not wsproto's own ``H11Handshake``: the listener also serves the page
(``GET /`` with ``ETag``, ``304`` and its security headers) and refuses everything
else with a plain status; ``H11Handshake`` knows only the upgrade.  The RFC 6455
accept key is two lines (:func:`accept_key`); the frames after the upgrade are
wsproto's.

Rules (docs/web.md):

* ``GET``/``HEAD`` of ``/`` or ``/index.html`` serves the page; of ``/NAME``, the
  file ``NAME`` beside it in ``static/`` (its JavaScript and CSS, if the page
  splits them); any other path 404, any other method 405.  Several requests may
  follow on one connection (keep-alive: h11 makes it free); an error response
  closes it.
* ``GET`` with ``Upgrade: websocket`` (at any path) is the upgrade: version 13
  (else ``426``), a 16-byte key (else ``400``), and an ``Origin`` this listener
  accepts (else ``403``): see :func:`origin_allowed`.  A request without
  ``Origin`` is no browser's (a bot, ``websocat``): no page of another site can
  make it, so it is let in.
* Limits: the request's head at most :data:`MAX_HEAD_BYTES` (else ``431``), at
  most :data:`MAX_HEADERS` header fields (else ``431``), no request body (else
  ``413``), at most :data:`MAX_PIPELINED` requests answered from one read (else
  ``429``: a flood of pipelined GETs would make a page per 40 bytes).  How long a
  request may take is the protocol's timer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

try:
    import h11
except ImportError:  # the [web] extra is missing: the listener's options say so first
    h11 = None  # type: ignore[assignment]

#: Most bytes of a request line and its headers (h11's limit for an incomplete event).
MAX_HEAD_BYTES = 8192
#: Most header fields in one request.
MAX_HEADERS = 64
#: Most requests answered from one read: pipelined requests beyond are answered 429 and
#: the connection closed (40 bytes asking for a whole page each, an amplifier; no
#: browser pipelines).
MAX_PIPELINED = 8
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_STATIC = Path(__file__).with_name("static")
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}
_SECURITY_HEADERS = [
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"X-Frame-Options", b"DENY"),
]
_INLINE = re.compile(rb"<(script|style)(\s[^>]*)?>(.*?)</\1\s*>", re.S | re.I)


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for the client's ``Sec-WebSocket-Key`` (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode()


def key_valid(key: str) -> bool:
    """Whether ``key`` is base64 of 16 bytes, as RFC 6455 requires."""
    try:
        return len(base64.b64decode(key.encode("ascii"), validate=True)) == 16
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return False


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _host_port(host: str, default: int) -> tuple[str, int] | None:
    """``host[:port]`` (a Host header, an origin's netloc) as a lowercase name and a port."""
    try:
        parts = urlsplit("//" + host.strip())
        return (parts.hostname or "").lower(), parts.port or default
    except ValueError:
        return None


def origin_allowed(origin: str | None, host: str | None, origins: tuple[str, ...]) -> bool:
    """Whether a browser page from ``origin`` may open a WebSocket here.

    No ``Origin``: not a browser (see the module docstring), allowed.  ``origins``
    empty (the default): only the listener's own site, the host and port the request's
    ``Host`` names (the scheme is not compared: behind a proxy that ends TLS the
    listener sees ``http`` while the page is ``https``; a ``Host`` without a port
    matches the name on either default port, 80 or 443).  Otherwise the origin must be
    one of ``origins`` (``https://chat.example.org``; ``*``: any).
    """
    if origin is None:
        return True
    origin = origin.strip().lower()
    if "*" in origins:
        return True
    if origins:
        return origin.rstrip("/") in {o.strip().lower().rstrip("/") for o in origins}
    if host is None or origin == "null":
        return False
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return False
    scheme = parts.scheme
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return False
    if "@" in parts.netloc or parts.path or parts.query or parts.fragment:
        return False  # an origin is scheme://host[:port]: no userinfo, no path (RFC 6454)
    own = _host_port(host, 0)
    if own is None or not own[0]:
        return False
    if own[1] == 0:  # Host names no port: the site's default one, whichever scheme
        return parts.hostname.lower() == own[0] and port in (None, 80, 443)
    return (parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]) == own


# -- the page ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StaticFile:
    """One file of the page, read once per process."""

    body: bytes
    content_type: str
    etag: bytes


class Page:
    """The page's files (``static/``), their ``ETag`` and the Content-Security-Policy.

    Read once, when the first request of the process asks (a running server serves
    what it started with: a changed file needs a restart, so an ETag is never stale).
    Inline ``<script>`` and ``<style>`` blocks of the HTML files are allowed by their
    SHA-256 in the policy; files beside it by ``'self'``.  Nothing else: no other
    origin, no ``eval``, no frames, no forms.
    """

    def __init__(self, folder: Path = _STATIC) -> None:
        self.files: dict[str, StaticFile] = {}
        hashes: list[str] = []
        for path in sorted(folder.iterdir()) if folder.is_dir() else ():
            kind = _TYPES.get(path.suffix)
            if kind is None or not path.is_file():
                continue
            body = path.read_bytes()
            etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'
            self.files["/" + path.name] = StaticFile(body, kind, etag)
            if path.suffix == ".html":
                hashes.extend(_inline_hashes(body))
        if "/index.html" in self.files:
            self.files["/"] = self.files["/index.html"]
        inline = "".join(f" '{h}'" for h in sorted(set(hashes)))
        self.csp = ("default-src 'none'; "
                    f"script-src 'self'{inline}; style-src 'self'{inline}; "
                    "img-src 'self' data:; connect-src 'self'; "
                    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'").encode()


def _inline_hashes(html: bytes) -> list[str]:
    """The CSP source of each inline script and style block of ``html``."""
    found = []
    for match in _INLINE.finditer(html):
        attributes = match.group(2) or b""
        if match.group(1).lower() == b"script" and b"src=" in attributes.lower():
            continue
        digest = base64.b64encode(hashlib.sha256(match.group(3)).digest()).decode()
        found.append(f"sha256-{digest}")
    return found


_PAGE: Page | None = None


def page() -> Page:
    """The process's page (read on first use)."""
    global _PAGE
    if _PAGE is None:
        _PAGE = Page()
    return _PAGE


# -- the HTTP connection ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Respond:
    """Send ``data``; then close the connection if ``close`` (``reason`` says why)."""

    data: bytes
    close: bool = False
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Upgrade:
    """The request is a valid upgrade: send ``response`` (the ``101``), then speak
    WebSocket; ``trailing`` is what the client sent after the request (frames
    already); ``forwarded_for`` the last hop of its ``X-Forwarded-For``, if any."""

    response: bytes
    trailing: bytes
    forwarded_for: str | None


_REASONS = {
    400: b"Bad Request", 403: b"Forbidden", 404: b"Not Found", 405: b"Method Not Allowed",
    408: b"Request Timeout", 413: b"Content Too Large", 426: b"Upgrade Required",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large", 503: b"Service Unavailable",
}


def plain_response(status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None,
                   ) -> bytes:
    """A complete ``Connection: close`` response with a short text body: what an
    error, or a refusal at the door (server full), looks like to a browser."""
    body = (text.rstrip("\n") + "\n").encode("utf-8", "replace")
    head = [b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Error")),
            b"Content-Type: text/plain; charset=utf-8",
            b"Content-Length: %d" % len(body),
            b"Connection: close",
            b"Cache-Control: no-store"]
    head.extend(name + b": " + value for name, value in (*_SECURITY_HEADERS, *(extra or ())))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def _header(request: Any, name: bytes) -> str | None:
    """The value of ``name`` (lowercase) in ``request``; several joined by commas."""
    values = [value for key, value in request.headers if key == name]
    if not values:
        return None
    return b", ".join(values).decode("latin-1")


def _tokens(value: str | None) -> set[str]:
    return {token.strip().lower() for token in (value or "").split(",")}


class HttpSide:
    """One socket's HTTP until the upgrade (see the module docstring)."""

    __slots__ = ("_conn", "origins")

    def __init__(self, *, origins: tuple[str, ...] = ()) -> None:
        if h11 is None:
            raise RuntimeError("the websocket protocol needs h11: pip install 'chatd[web]'")
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.origins = origins

    def receive(self, data: bytes) -> list[Respond | Upgrade]:
        """Feed bytes; the answers they call for, in order (an empty list: wait)."""
        conn = self._conn
        conn.receive_data(data)
        out: list[Respond | Upgrade] = []
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint if exc.error_status_hint != 400 else 400
                return [*out, Respond(plain_response(status, f"bad request: {exc}"), True,
                                      "bad HTTP request")]
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return out
            if isinstance(event, h11.ConnectionClosed):
                return [*out, Respond(b"", True, "connection closed by peer")]
            if isinstance(event, h11.Request):
                if len(out) == MAX_PIPELINED:
                    return [*out, self._fail(429, f"at most {MAX_PIPELINED} requests at once")]
                answer = self._request(event)
                out.append(answer)
                if isinstance(answer, Upgrade) or answer.close:
                    return out
            elif isinstance(event, h11.EndOfMessage) and conn.our_state is h11.DONE:
                conn.start_next_cycle()

    def _request(self, request: Any) -> Respond | Upgrade:
        """Answer one request (its head: a body is refused before it is read)."""
        if len(request.headers) > MAX_HEADERS:
            return self._fail(431, f"at most {MAX_HEADERS} header fields")
        # h11 holds an incomplete head to the limit; one that came whole in a read, here.
        size = len(request.target) + sum(len(k) + len(v) + 4 for k, v in request.headers)
        if size > MAX_HEAD_BYTES:
            return self._fail(431, f"request head over {MAX_HEAD_BYTES} bytes")
        if _header(request, b"content-length") not in (None, "0") \
                or _header(request, b"transfer-encoding") is not None:
            return self._fail(413, "no request body here")
        method = request.method.upper()
        upgrade = _header(request, b"upgrade")
        if upgrade is not None and "websocket" in _tokens(upgrade):
            return self._upgrade(request)
        if method not in (b"GET", b"HEAD"):
            return self._fail(405, "only GET here", [(b"Allow", b"GET, HEAD")])
        path = request.target.split(b"?", 1)[0].decode("latin-1")
        file = page().files.get(path)
        if file is None:
            return self._fail(404, "not found: the chat is at /")
        return self._serve(request, file, method == b"HEAD")

    def _serve(self, request: Any, file: StaticFile, head_only: bool) -> Respond:
        fresh = _header(request, b"if-none-match")
        headers = [
            (b"Content-Type", file.content_type.encode()),
            (b"ETag", file.etag),
            (b"Cache-Control", b"no-cache"),
            (b"Content-Security-Policy", page().csp),
            *_SECURITY_HEADERS,
        ]
        conn = self._conn
        if fresh is not None and (fresh.strip() == "*" or file.etag.decode() in
                                  {tag.strip().removeprefix("W/") for tag in fresh.split(",")}):
            data = conn.send(h11.Response(status_code=304, headers=headers))
        else:
            headers.append((b"Content-Length", b"%d" % len(file.body)))
            data = conn.send(h11.Response(status_code=200, headers=headers))
            if not head_only:
                data += conn.send(h11.Data(data=file.body))
        data += conn.send(h11.EndOfMessage())
        if conn.our_state is h11.MUST_CLOSE:
            return Respond(data, True, "HTTP request served")
        return Respond(data)

    def _upgrade(self, request: Any) -> Respond | Upgrade:
        if request.method.upper() != b"GET" or request.http_version != b"1.1":
            return self._fail(400, "a WebSocket upgrade is an HTTP/1.1 GET")
        if "upgrade" not in _tokens(_header(request, b"connection")):
            return self._fail(400, "a WebSocket upgrade needs Connection: Upgrade")
        if _header(request, b"sec-websocket-version") != "13":
            return self._fail(426, "WebSocket version 13 only",
                              [(b"Sec-WebSocket-Version", b"13")])
        key = _header(request, b"sec-websocket-key")
        if key is None or not key_valid(key.strip()):
            return self._fail(400, "Sec-WebSocket-Key must be base64 of 16 bytes")
        origin = _header(request, b"origin")
        if not origin_allowed(origin, _header(request, b"host"), self.origins):
            return self._fail(403, f"origin {origin} is not allowed on this listener")
        response = self._conn.send(h11.InformationalResponse(status_code=101, headers=[
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Accept", accept_key(key.strip()).encode()),
        ]))
        trailing = self._conn.trailing_data[0]
        forwarded = _header(request, b"x-forwarded-for")
        last = forwarded.rsplit(",", 1)[-1].strip() if forwarded else None
        return Upgrade(response, bytes(trailing), last or None)

    def _fail(self, status: int, text: str,
              extra: list[tuple[bytes, bytes]] | None = None) -> Respond:
        return Respond(plain_response(status, text, extra), True, f"HTTP {status}: {text}")


__all__ = [
    "MAX_HEADERS",
    "MAX_HEAD_BYTES",
    "MAX_PIPELINED",
    "HttpSide",
    "Page",
    "Respond",
    "Upgrade",
    "accept_key",
    "origin_allowed",
    "page",
    "plain_response",
]
