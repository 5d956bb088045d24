"""The PROXY protocol: the real client behind a proxy drives admission, limits, bans, logs.

The parser in-process (v1 and v2, every shape the spec allows chatd to meet),
then real chatd processes behind headers written by the test: per-address
limits and bans by address apply to the client's address, not the proxy's;
spoofed headers from untrusted peers are refused; a trusted proxy must send a
header, in time; TLS behind a header; and a real HAProxy in front, where
installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import trustme

from chatd.testing import ChatClient, free_port, skip_unless_ci, write_config
from chatd.transport.proxy import HeaderError, parse_header, v1_header, v2_header

DESTINATION = ("127.0.0.1", 7788)


# -- the parser ----------------------------------------------------------------------------


def test_v1_and_v2_headers_name_the_client_and_say_how_long_they_are():
    header = v1_header(("203.0.113.9", 5555), DESTINATION)
    assert parse_header(header + b"hello\n") == (("203.0.113.9", 5555), len(header))
    six = v2_header(("2001:db8::7", 4444), ("::1", 7788))
    assert parse_header(six + b"x") == (("2001:db8::7", 4444), len(six))
    four = v2_header(("198.51.100.3", 1), DESTINATION)
    assert parse_header(four) == (("198.51.100.3", 1), 28)
    assert parse_header(v2_header(None)) == (None, 16)  # LOCAL: a health check
    assert parse_header(b"PROXY UNKNOWN\r\n") == (None, 15)


def test_a_header_cut_anywhere_asks_for_more():
    for header in (v1_header(("203.0.113.9", 5555), DESTINATION),
                   v2_header(("2001:db8::7", 4444), ("::1", 7788))):
        for cut in range(1, len(header)):
            assert parse_header(header[:cut]) is None, (header, cut)


@pytest.mark.parametrize("data", [
    b"hello world\r\n",
    b"PROXY TCP4 203.0.113.9 10.0.0.1 99999 7788\r\n",   # port out of range
    b"PROXY TCP4 2001:db8::1 10.0.0.1 1 7788\r\n",       # family and address disagree
    b"PROXY TCP4 not-an-ip 10.0.0.1 1 7788\r\n",
    b"PROXY TCP4 203.0.113.9 10.0.0.1 01 7788\r\n",      # leading zero
    b"PROXY UDP4 203.0.113.9 10.0.0.1 1 7788\r\n",
    b"PROXY " + b"x" * 120,                                # no CRLF within 107 bytes
    b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c" + bytes(12),  # version 3
    b"\r\n\r\n\x00\r\nQUIT\n\x2f\x11\x00\x0c" + bytes(12),  # command 15
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x31\x00\x00",              # AF_UNIX
])
def test_malformed_headers_are_errors(data):
    with pytest.raises(HeaderError):
        parse_header(data)


# -- real processes ------------------------------------------------------------------------


def _proxied(chatd_server, tmp_path, *, trusted=("127.0.0.1",), **sections):
    """A server whose second listener reads PROXY headers from ``trusted``."""
    config = write_config(tmp_path / "config.yaml", listen=[
        {"port": 0},
        {"port": 0, "proxy_protocol": True, "trusted_proxies": list(trusted)},
    ], **sections)
    return chatd_server(config)


def _through(server, header: bytes, *, welcome: bool = True) -> ChatClient:
    """A client whose first bytes are ``header``, as a proxy would send them."""
    client = ChatClient((server.host, server.ports[1]))
    client.send_raw(header)
    if welcome:
        client.welcome()
    return client


def test_the_real_address_is_the_one_logged(chatd_server, tmp_path):
    server = _proxied(chatd_server, tmp_path)
    client = _through(server, v1_header(("203.0.113.9", 5555), DESTINATION))
    client.send("hello")
    server.wait_for_log(r"connect id=1 nick=guest-1 peer=203\.0\.113\.9:5555")
    six = _through(server, v2_header(("2001:db8::7", 4444), ("::1", 7788)))
    six.send("hi")
    server.wait_for_log(r"connect id=2 nick=guest-2 peer=2001:db8::7:4444")


def test_per_address_limits_count_the_client_not_the_proxy(chatd_server, tmp_path):
    server = _proxied(chatd_server, tmp_path, per_ip={"max_connections": 2})
    # Two clients of one address behind the proxy: both in (kept open).
    kept = [_through(server, v1_header(("203.0.113.9", port), DESTINATION)) for port in (1, 2)]
    third = _through(server, v1_header(("203.0.113.9", 3), DESTINATION), welcome=False)
    assert third.expect_eof()[-1].startswith("! too many connections from your address")
    # Other addresses, all through the same proxy (one address, far more than 2): all in.
    kept += [_through(server, v2_header((f"198.51.100.{n + 1}", 1000), DESTINATION))
             for n in range(5)]
    kept[0].send("/who")
    kept[0].expect(r"^\*\*\* #lobby has 7 members")


def test_a_ban_by_address_applies_to_the_client_behind_the_proxy(chatd_server, tmp_path):
    server = _proxied(chatd_server, tmp_path, plugins={"oper": {"password": "oper-secret-1"}})
    op = server.client()
    op.send("/oper oper-secret-1")
    op.expect(r"you are now an operator")
    op.send("/join #dev")
    op.expect(r"joined #dev")
    op.send("/ban *!*@203.0.113.*")
    op.expect(r"banned \*!\*@203\.0\.113\.\* in #dev")
    banned = _through(server, v1_header(("203.0.113.9", 1), DESTINATION))
    banned.send("/join #dev")
    banned.expect(r"^! you are banned from #dev")
    other = _through(server, v1_header(("198.51.100.1", 1), DESTINATION))
    other.send("/join #dev")
    other.expect(r"^\*\*\* guest-\d+ joined #dev$")


def test_a_header_from_an_untrusted_peer_is_refused(chatd_server, tmp_path):
    server = _proxied(chatd_server, tmp_path, trusted=("10.9.9.9",))
    for header in (v1_header(("203.0.113.9", 1), DESTINATION),
                   v2_header(("203.0.113.9", 1), DESTINATION)):
        spoofer = _through(server, header, welcome=False)
        lines = spoofer.expect_eof()
        assert not any("joined" in line or "<" in line for line in lines), lines
    server.wait_for_log(r"not a trusted proxy")
    direct = server.client()  # the same listener's ordinary clients are welcome
    honest = ChatClient((server.host, server.ports[1]))
    honest.welcome()
    honest.send("hello")
    direct.expect(r"^<guest-\d+> hello$")


def test_a_trusted_proxy_must_send_a_header_and_in_time(chatd_server, tmp_path):
    server = _proxied(chatd_server, tmp_path, limits={"registration_timeout_seconds": 1.0})
    bare = ChatClient((server.host, server.ports[1]))
    bare.send("hello without a header")
    assert bare.expect_eof() == []
    server.wait_for_log(r"not a PROXY protocol header")
    slow = ChatClient((server.host, server.ports[1]))
    slow.send_raw(b"PROXY TCP4 203.0")  # and nothing more
    started = time.monotonic()
    assert slow.expect_eof(timeout=5) == []
    assert 0.8 <= time.monotonic() - started < 4
    server.wait_for_log(r"no PROXY header in time")
    watcher = server.client()
    watcher.send("/who")
    watcher.expect(r"^\*\*\* #lobby has 1 member")


def test_tls_behind_a_proxy_header(chatd_server, tmp_path):
    ca = trustme.CA()
    cert = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(cert))
    config = write_config(tmp_path / "config.yaml", listen=[
        {"port": 0},
        {"port": 0, "proxy_protocol": True, "trusted_proxies": ["127.0.0.0/8"],
         "tls": {"cert": str(cert), "key": str(cert)}},
    ])
    server = chatd_server(config)
    raw = socket.create_connection((server.host, server.ports[1]), timeout=5)
    raw.sendall(v2_header(("203.0.113.50", 6000), DESTINATION))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    tls = context.wrap_socket(raw, server_hostname="localhost")
    assert tls.recv(4096).startswith(b"*** Welcome to chatd")
    tls.sendall(b"hi\n")
    server.wait_for_log(r"peer=203\.0\.113\.50:6000")


DOCS = Path(__file__).resolve().parent.parent / "docs" / "tls.md"


def _snippet(language: str, front: int, back: int) -> str:
    """docs/tls.md's ``language`` block, its example ports replaced by the test's."""
    text = DOCS.read_text()
    block = text.split(f"```{language}\n", 1)[1].split("```", 1)[0]
    return block.replace("127.0.0.1:7789", f"127.0.0.1:{front}").replace(
        "127.0.0.1:7791", f"127.0.0.1:{back}")


def _needs(tool: str) -> None:
    if shutil.which(tool) is None:
        skip_unless_ci(f"{tool} is not installed (.ci/run installs it)")


def _connect_when_up(port: int) -> ChatClient:
    deadline = time.monotonic() + 10
    while True:
        try:
            client = ChatClient(("127.0.0.1", port))
            client.welcome()
            return client
        except (ConnectionRefusedError, ConnectionResetError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _through_a_real_proxy(server, front: int) -> None:
    first = _connect_when_up(front)
    first.send("through the proxy")
    direct = server.client()
    direct.send("/who")
    direct.expect(r"^\*\*\* #lobby has 2 members")
    # The client's own address and port, as the proxy saw them, are what chatd logs.
    port = first.sock.getsockname()[1]
    server.wait_for_log(rf"peer=127\.0\.0\.1:{port}\b")


def test_behind_a_real_haproxy_with_the_documented_config(chatd_server, tmp_path):
    _needs("haproxy")
    server = _proxied(chatd_server, tmp_path)
    front = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(_snippet("haproxy", front, server.ports[1]))
    proxy = subprocess.Popen(["haproxy", "-db", "-f", str(config)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _through_a_real_proxy(server, front)
    finally:
        proxy.terminate()
        proxy.wait(5)


def test_behind_a_real_nginx_with_the_documented_config(chatd_server, tmp_path):
    _needs("nginx")
    module = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
    server = _proxied(chatd_server, tmp_path)
    front = free_port()
    config = tmp_path / "nginx.conf"
    load = f"load_module {module};\n" if module.exists() else ""
    config.write_text(f"{load}pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
                      "events {}\n" + _snippet("nginx", front, server.ports[1]))
    proxy = subprocess.Popen(["nginx", "-p", str(tmp_path), "-c", str(config),
                              "-g", "daemon off;"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _through_a_real_proxy(server, front)
    finally:
        proxy.terminate()
        proxy.wait(5)
