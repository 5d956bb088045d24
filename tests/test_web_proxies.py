"""Real nginx and HAProxy in front of a real chatd ``websocket`` listener.

The proxies run the EXACT configurations docs/web.md shows ("Behind a reverse
proxy"; the test swaps only the example's ports and certificate paths for its
own, and fails if one of them is no longer in the docs), and chatd runs the
listener the docs' YAML shows.  Through each proxy: the page is served, the
upgrade passes (``wss://``: the proxy ends TLS), the browser's address is the one
chatd logs, and an ``X-Forwarded-For`` the browser wrote itself counts for
nothing.  The browser connects from 127.0.0.2, the proxy from 127.0.0.1, so the
two addresses are told apart on one machine.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from websockets.sync.client import connect

from chatd.testing import free_port, skip_unless_ci
from chatd.transport.proxy import v1_header

DOCS = Path(__file__).resolve().parent.parent / "docs" / "web.md"
TIMEOUT = 5.0
BROWSER = "127.0.0.2"  # the browser's address; the proxy connects from 127.0.0.1


def _section(title: str) -> str:
    """The text of docs/web.md's ``### title`` under "Behind a reverse proxy"."""
    text = DOCS.read_text()
    part = text.split("## Behind a reverse proxy\n", 1)[1].split("\n## ", 1)[0]
    return part.split(f"### {title}\n", 1)[1].split("\n### ", 1)[0]


def _block(section: str, language: str) -> str:
    return section.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def _swap(text: str, replacements: dict[str, str]) -> str:
    """``text`` with the docs' example values replaced; each must be there (no drift)."""
    for old, new in replacements.items():
        assert old in text, f"docs/web.md's snippet no longer has {old!r}"
        text = text.replace(old, new)
    return text


def _needs(tool: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}")
                                  else None)
    if path is None:
        skip_unless_ci(f"{tool} is not installed (.ci/run installs it)")
    return path  # type: ignore[return-value]


def _chatd(chatd_server: Any, section: str) -> Any:
    """chatd with the docs' listener (its port 0) beside a line listener (ports[0])."""
    documented = yaml.safe_load(_block(section, "yaml"))
    listener = dict(documented["listen"][0], port=0)
    sections = {key: value for key, value in documented.items() if key != "listen"}
    return chatd_server(listen=[{"port": 0}, listener], **sections)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A certificate for localhost (key and chain in one file) and a context trusting it."""
    ca = trustme.CA()
    pem = tmp_path / "chat.pem"
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(pem))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return pem, context


def _wait_listening(port: int, proxy: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        assert proxy.poll() is None, f"the proxy exited: {log.read_text()}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"the proxy never listened: {log.read_text()}"
            time.sleep(0.05)


def _stop(proxy: subprocess.Popen[bytes]) -> None:
    proxy.terminate()
    try:
        proxy.wait(5)
    except subprocess.TimeoutExpired:
        proxy.kill()
        proxy.wait(5)


def _from_the_browser() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((BROWSER, 0))
    sock.settimeout(TIMEOUT)
    return sock


def _page(port: int, context: ssl.SSLContext) -> None:
    """The page through the proxy: 200 with its headers, then 304 on its ETag."""
    conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=TIMEOUT)
    conn.request("GET", "/")
    response = conn.getresponse()
    body = response.read()
    assert response.status == 200 and b"<html" in body.lower()
    assert "default-src 'none'" in response.getheader("Content-Security-Policy", "")
    etag = response.getheader("ETag")
    assert etag
    conn.request("GET", "/", headers={"If-None-Match": etag})
    again = conn.getresponse()
    again.read()
    assert again.status == 304
    conn.close()


def _browser(port: int, context: ssl.SSLContext, *, forged: str | None = None) -> Any:
    """A WebSocket from 127.0.0.2 through the proxy, as a page on the proxy's site opens
    it (its Origin), optionally with an ``X-Forwarded-For`` of its own making."""
    sock = _from_the_browser()
    sock.connect(("127.0.0.1", port))
    headers = {"X-Forwarded-For": forged} if forged else None
    return connect(f"wss://localhost:{port}/", sock=sock, ssl=context,
                   server_hostname="localhost", origin=f"https://localhost:{port}",
                   additional_headers=headers, proxy=None, compression=None,
                   open_timeout=TIMEOUT, close_timeout=TIMEOUT)


def _nick(ws: Any) -> str:
    """The browser's guest nick, from its join of #lobby."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        for line in ws.recv(timeout=TIMEOUT).splitlines():
            obj = json.loads(line)
            if obj.get("type") == "join" and obj.get("self"):
                return str(obj["from"])
    raise AssertionError("no join of #lobby")


def _chats_through(server: Any, port: int, context: ssl.SSLContext) -> None:
    """The page and the upgrade pass; the browser's own address is the one chatd sees,
    even when it forged an X-Forwarded-For; it talks with an nc user."""
    _page(port, context)
    person = server.client()
    for forged in (None, "203.0.113.9"):
        with _browser(port, context, forged=forged) as ws:
            nick = _nick(ws)
            peer = server.wait_for_log(rf"connect id=\d+ nick={nick} peer=(\S+)").group(1)
            assert peer.rsplit(":", 1)[0] == BROWSER, (forged, peer)
            ws.send(json.dumps({"cmd": "say", "text": f"through the proxy {forged}"}))
            person.expect(rf"^<{nick}> through the proxy {forged}$")


def test_behind_nginx_with_the_documented_config(chatd_server, tmp_path, certificate):
    nginx = _needs("nginx")
    section = _section("nginx: TLS and `X-Forwarded-For`")
    server = _chatd(chatd_server, section)
    pem, context = certificate
    front = free_port()
    snippet = _swap(_block(section, "nginx"), {
        "listen 443 ssl;": f"listen 127.0.0.1:{front} ssl;",
        "127.0.0.1:8080": f"127.0.0.1:{server.ports[1]}",
        "/etc/ssl/chat/fullchain.pem": str(pem),
        "/etc/ssl/chat/privkey.pem": str(pem),
    })
    # The test's own files (nginx's compiled-in ones are the system's), nothing else.
    own = "".join(f"    {kind}_temp_path {tmp_path}/{kind};\n"
                  for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    snippet = snippet.replace("http {\n", f"http {{\n    access_log {tmp_path}/access.log;\n"
                              + own, 1)
    config = tmp_path / "nginx.conf"
    config.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
                      "events {}\n" + snippet)
    log = tmp_path / "error.log"
    log.touch()
    proxy = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(config),
                              "-g", "daemon off;"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(front, proxy, log)
        _chats_through(server, front, context)
    finally:
        _stop(proxy)


def test_behind_haproxy_with_the_documented_config(chatd_server, tmp_path, certificate):
    haproxy = _needs("haproxy")
    section = _section("HAProxy: TLS and the PROXY protocol")
    server = _chatd(chatd_server, section)
    pem, context = certificate
    front = free_port()
    snippet = _swap(_block(section, "haproxy"), {
        "bind :443 ssl": f"bind 127.0.0.1:{front} ssl",
        "127.0.0.1:8081": f"127.0.0.1:{server.ports[1]}",
        "/etc/ssl/chat/haproxy.pem": str(pem),
    })
    config = tmp_path / "haproxy.cfg"
    config.write_text(snippet)
    log = tmp_path / "haproxy.log"
    with log.open("wb") as out:
        proxy = subprocess.Popen([haproxy, "-db", "-f", str(config)],
                                 stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_listening(front, proxy, log)
        _chats_through(server, front, context)
    finally:
        _stop(proxy)


def test_x_forwarded_for_from_a_peer_not_trusted_is_ignored(chatd_server):
    """The nginx listener trusts 127.0.0.1 only: a browser at 127.0.0.2 connecting
    straight to chatd with its own header is seen at its own address."""
    server = _chatd(chatd_server, _section("nginx: TLS and `X-Forwarded-For`"))
    sock = _from_the_browser()
    sock.connect((server.host, server.ports[1]))
    with connect(f"ws://{server.host}:{server.ports[1]}/", sock=sock, proxy=None,
                 additional_headers={"X-Forwarded-For": "203.0.113.9"},
                 open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        nick = _nick(ws)
        peer = server.wait_for_log(rf"connect id=\d+ nick={nick} peer=(\S+)").group(1)
        assert peer.rsplit(":", 1)[0] == BROWSER


def test_behind_the_proxy_protocol_x_forwarded_for_is_not_read(chatd_server):
    """With the PROXY protocol the header names the browser; an X-Forwarded-For the
    browser wrote is not read, even when the browser's own address is inside
    trusted_proxies (an office network behind its proxy, 127.0.0.0/8 here)."""
    server = chatd_server(listen=[{"port": 0}, {
        "port": 0, "protocol": "websocket", "proxy_protocol": True,
        "trusted_proxies": ["127.0.0.0/8"]}])
    sock = socket.create_connection((server.host, server.ports[1]), timeout=TIMEOUT)
    sock.sendall(v1_header(("127.0.0.5", 4242), ("127.0.0.1", server.ports[1])))
    with connect(f"ws://{server.host}:{server.ports[1]}/", sock=sock, proxy=None,
                 additional_headers={"X-Forwarded-For": "203.0.113.9"},
                 open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
        nick = _nick(ws)
        peer = server.wait_for_log(rf"connect id=\d+ nick={nick} peer=(\S+)").group(1)
        assert peer == "127.0.0.5:4242"
