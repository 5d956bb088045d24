"""Issue 19, parts 7 and 6: one protocol registry, framing per protocol, refusals by
the protocol.

* A protocol registers once (name, class, listener options, doc); the config, the
  check at start-up and ``--check-config``, docs/config.md and the listener read it.
* A plugin outside the tree (``tests/toyproto``) registers a protocol with options
  of its own and serves real connections, chatd unedited.
* Each protocol chooses its framer, input limit and input sanitising.
* What a peer is told at the door (server full, another protocol's greeting, an
  endless line) is in the listener's protocol's format.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import signal
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest
import trustme

from chatd import hookimpl
from chatd.config import ConfigError, parse_config
from chatd.config_rules import setting
from chatd.plugins import PluginHost, PluginLoadError
from chatd.protocols import (
    BUILTIN_PROTOCOLS,
    ChatProtocol,
    JsonlProtocol,
    LineProtocol,
    ListenerOptions,
    ProtocolLimits,
    ProtocolRegistry,
    ProtocolSpec,
)
from chatd.protocols.irc import IrcProtocol
from chatd.protocols.websocket import WebSocketProtocol
from chatd.requests import Say
from chatd.server import collect_protocols
from chatd.testing import ChatClient, write_config
from chatd.testing.inprocess import MemoryTransport

TOY_DIR = Path(__file__).resolve().parent / "toyproto"


def _import_toy() -> types.ModuleType:
    """The toy plugin's module, for the in-memory tests (servers load it by path)."""
    spec = importlib.util.spec_from_file_location("toyproto_for_tests", TOY_DIR / "toyproto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as chatd's loader does: dataclasses look it up
    spec.loader.exec_module(module)
    return module


toyproto = _import_toy()


def _registry_with_toy() -> ProtocolRegistry:
    registry = ProtocolRegistry()
    registry.add(toyproto.chatd_protocols()[0], "toyproto")
    return registry


def _error(text: str, registry: ProtocolRegistry | None = None) -> ConfigError:
    config = parse_config(text)  # loads: the listener's own keys wait for the registry
    with pytest.raises(ConfigError) as info:
        (registry or ProtocolRegistry()).check_config(config)
    return info.value


# -- a protocol registers once ------------------------------------------------------------


def test_the_builtins_are_registered_with_their_classes_and_options():
    registry = ProtocolRegistry()
    assert registry.names == ["line", "jsonl", "irc", "websocket"]
    assert registry["websocket"].protocol is WebSocketProtocol
    assert registry["line"].protocol is LineProtocol
    assert registry["jsonl"].protocol is JsonlProtocol
    assert registry["irc"].protocol is IrcProtocol
    assert [spec.name for spec in BUILTIN_PROTOCOLS] == registry.names
    assert list(registry["line"].option_specs) == ["history_replay", "password", "password_file"]


def test_a_name_is_registered_once():
    registry = _registry_with_toy()
    with pytest.raises(ValueError, match=r"'toy' is already registered \(by plugin 'toyproto'\)"):
        registry.add(toyproto.chatd_protocols()[0], "another")
    with pytest.raises(ValueError, match=r"'line' is already registered \(built in\)"):
        registry.add(dataclasses.replace(BUILTIN_PROTOCOLS[0]), "impostor")
    with pytest.raises(TypeError, match="expected ProtocolSpec"):
        registry.add(toyproto.ToyProtocol, "careless")


def test_a_badly_declared_spec_fails_when_it_is_made():
    class Loose:  # not a dataclass
        history: bool = True

    @dataclasses.dataclass(frozen=True)
    class Clashing:
        port: int = setting(1, "A second port.", ge=0, le=65535)

    @dataclasses.dataclass(frozen=True)
    class Unbounded:
        size: int = setting(1, "No ceiling.", ge=0)

    toy = toyproto.ToyProtocol
    with pytest.raises(ValueError, match="protocol name 'Toy'"):
        ProtocolSpec("Toy", toy, "doc")
    with pytest.raises(TypeError, match="not a ChatProtocol subclass"):
        ProtocolSpec("toy", object, "doc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="its renderer is named 'toy'"):
        ProtocolSpec("toy2", toy, "doc")
    with pytest.raises(ValueError, match="a doc line is required"):
        ProtocolSpec("toy", toy, " ")
    with pytest.raises(TypeError, match="options must be a dataclass"):
        ProtocolSpec("toy", toy, "doc", Loose)
    with pytest.raises(ValueError, match="option 'port' is a key every listener has"):
        ProtocolSpec("toy", toy, "doc", Clashing)
    with pytest.raises(TypeError, match="needs an upper bound"):
        ProtocolSpec("toy", toy, "doc", Unbounded)


# -- the config reads the registry ---------------------------------------------------------


def test_a_listeners_options_are_checked_against_its_protocol_with_key_and_line():
    text = ("listen:\n  - {port: 0}\n  - port: 0\n    protocol: toy\n"
            "    max_line_bytes: 8\n")
    err = _error(text, _registry_with_toy())
    assert (err.key, err.line) == ("listen[1].max_line_bytes", 5)
    assert err.message == "expected an integer between 16 and 1073741824, got 8"
    err = _error("listen:\n  port: 0\n  protocol: toy\n")
    assert (err.key, err.line) == ("listen.protocol", 3)
    assert err.message == ("unknown protocol 'toy' (known: line, jsonl, irc, websocket; a "
                           "plugin adds one with chatd_protocols)")
    err = _error("listen:\n  - {port: 0}\n  - {port: 0, protocol: jsonl,\n"
                 "     history_replai: false}\n")
    assert (err.key, err.line, err.message) == (
        "listen[1].history_replai", 4, "unknown key (did you mean 'history_replay'?)")
    err = _error("listen:\n  port: 0\n  protocol: toy\n  history_replay: false\n",
                 _registry_with_toy())
    assert (err.key, err.line) == ("listen.history_replay", 4)
    assert err.message.startswith("not an option of protocol 'toy' (it is one of line, jsonl, irc, "
                               "websocket;")


class _LimitsRaise(toyproto.ToyProtocol):
    """A plugin's protocol whose input_limits breaks on its own options."""

    __slots__ = ()

    @classmethod
    def input_limits(cls, server, options):
        return ProtocolLimits(max_line_bytes=options["no such option"])


class _LimitsNonsense(toyproto.ToyProtocol):
    __slots__ = ()

    @classmethod
    def input_limits(cls, server, options):
        return 512  # not a ProtocolLimits


@pytest.mark.parametrize("protocol, why", [
    (_LimitsRaise, "its input_limits raised KeyError: 'no such option'"),
    (_LimitsNonsense, "its input_limits returned 512, not a ProtocolLimits with a positive "
                      "max_line_bytes"),
])
def test_a_protocol_whose_input_limits_fail_is_a_config_error_not_a_crash_at_start(
        protocol, why):
    """Asked once per listener when it is made: checked with the config (so
    ``--check-config`` and a reload's dry run say so, naming the listener and the
    plugin), never a traceback when the server binds its listeners."""
    registry = ProtocolRegistry()
    registry.add(ProtocolSpec("toy", protocol, "doc", toyproto.ToyOptions), "careless")
    err = _error("listen:\n  - {port: 0}\n  - {port: 0, protocol: toy}\n", registry)
    assert (err.key, err.line) == ("listen[1]", 3)
    assert err.message == f"protocol 'toy' (plugin 'careless') cannot serve it: {why}"


def test_each_listener_of_a_list_is_read_from_its_own_keys(tmp_path):
    """Regression: the reader caches a node's pairs by id(node), and the loader used to
    split ``tls`` off into a temporary node; the next listener's temporary node could
    reuse the freed one's id and be read as the previous listener (two TLS listeners
    were refused as "127.0.0.1:7001 is also listen[0]")."""
    for name in ("c.pem", "k.pem"):
        (tmp_path / name).touch()
    entries = "".join(f"  - {{port: {port}, tls: {{cert: c.pem, key: k.pem}}, "
                      f"history_replay: {str(port % 2 == 0).lower()}}}\n"
                      for port in (7001, 7002, 7003))
    config = parse_config(f"listen:\n{entries}", source=tmp_path / "chatd.yaml")
    assert [(listener.port, dict(listener.options)) for listener in config.listen] == [
        (7001, {"history_replay": False}), (7002, {"history_replay": True}),
        (7003, {"history_replay": False})]


def test_checked_options_are_complete_read_only_and_checking_again_changes_nothing():
    config = parse_config("listen:\n  - {port: 0, protocol: toy, server_tag: tiny}\n"
                          "  - {port: 0, protocol: jsonl, history_replay: false}\n"
                          "  - {port: 0}\n")
    assert dict(config.listen[0].options) == {"server_tag": "tiny"}  # as read: unchecked
    checked = _registry_with_toy().check_config(config)
    assert [dict(listener.options) for listener in checked.listen] == [
        {"server_tag": "tiny", "max_line_bytes": 512},
        {"history_replay": False, "password": None, "password_file": None},
        {"history_replay": True, "password": None, "password_file": None},
    ]
    with pytest.raises(TypeError):
        checked.listen[0].options["server_tag"] = "x"  # type: ignore[index]
    assert _registry_with_toy().check_config(checked) is checked


def test_plugins_protocols_are_collected_and_their_mistakes_name_the_plugin():
    class Duplicate:
        @staticmethod
        @hookimpl
        def chatd_protocols():
            return [dataclasses.replace(BUILTIN_PROTOCOLS[1])]

    class Broken:
        @staticmethod
        @hookimpl
        def chatd_protocols():
            raise RuntimeError("no wire today")

    def host(*plugins: object) -> PluginHost:
        made = PluginHost()
        for plugin in plugins:
            made.register(plugin, type(plugin).__name__.lower(), "test")
        return made

    registry = collect_protocols(host(toyproto))
    assert registry.names == ["line", "jsonl", "irc", "websocket", "toy"]
    with pytest.raises(PluginLoadError, match="plugin 'duplicate': chatd_protocols: protocol "
                       "'jsonl' is already registered"):
        collect_protocols(host(Duplicate()))
    with pytest.raises(PluginLoadError, match="plugin 'broken' failed in chatd_protocols: "
                       "RuntimeError: no wire today"):
        collect_protocols(host(Broken()))


def test_check_config_checks_a_plugins_protocol_with_the_plugin_loaded(tmp_path):
    config = tmp_path / "chatd.yaml"
    listen = ("listen:\n  - {port: 0}\n  - port: 0\n    protocol: toy\n"
              "    server_tag: TINY\n")
    config.write_text(f"plugin_dirs: [{TOY_DIR}]\n{listen}")
    result = _check(config)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"chatd: {config}:6: listen[1].server_tag: expected a string (1 to 16 lowercase "
        "letters), got 'TINY'")
    config.write_text(f"plugin_dirs: [{TOY_DIR}]\n{listen.replace('TINY', 'tiny')}")
    assert _check(config).returncode == 0
    config.write_text(listen.replace("TINY", "tiny"))  # no plugin: nobody registers toy
    result = _check(config)
    assert result.returncode == 2 and "listen[1].protocol: unknown protocol 'toy'" in \
        result.stderr


def _check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chatd", "--config", str(config),
                           "--check-config"], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)


# -- a plugin's protocol serves real connections -------------------------------------------


def test_a_protocol_from_outside_the_tree_serves_a_real_connection(chatd_server):
    server = chatd_server(
        plugin_dirs=[str(TOY_DIR)],
        listen=[{"port": 0},
                {"port": 0, "protocol": "toy", "server_tag": "tiny", "max_line_bytes": 64}],
    )
    person = server.client()
    with ChatClient((server.host, server.ports[1])) as toy:
        nick = toy.expect(r"^JOIN (guest-\d+) #lobby :$").group(1)
        person.expect(rf"^\*\*\* {nick} joined #lobby$")
        toy.send("PING")
        toy.expect(r"^PONG tiny$")  # its listener's option, read by the protocol
        person.send("hi toy")
        toy.expect(r"^MESSAGE guest-\d+ #lobby :hi toy$")
        # Raw lines: the \x01 reaches the protocol, which makes an action of it.
        toy.send_raw(b"\x01ACTION waves\x01\n")
        person.expect(rf"^\* {nick} waves$")
        # Its own input limit (64 bytes), not the server's (4096).
        toy.send("x" * 65)
        toy.expect(r"^ERROR \S+ \S+ :line too long \(max 64 bytes\); it was not sent$")
        toy.send("x" * 64)
        person.expect(rf"^<{nick}> x{{64}}$")


def test_a_reload_that_drops_a_protocol_in_use_is_refused_and_the_listener_goes_on(
        chatd_server, tmp_path):
    listen = [{"port": 0}, {"port": 0, "protocol": "toy"}]
    config = write_config(tmp_path / "chatd.yaml", plugin_dirs=[str(TOY_DIR)], listen=listen)
    server = chatd_server(config)
    write_config(config, listen=listen)  # the toy plugin gone, its listener still there
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reload failed, keeping the running config and plugins: .*"
                        r"listen\[1\]\.protocol: unknown protocol 'toy'")
    with ChatClient((server.host, server.ports[1])) as toy:
        toy.send("PING")
        toy.expect(r"^PONG toy$")


# -- framing per protocol, in memory ----------------------------------------------------------


def _connected(protocol: type[ChatProtocol], options: dict, *, max_line_bytes: int = 4096):
    class Session:
        def __init__(self) -> None:
            self.requests: list = []

        def requests_received(self, requests):
            self.requests.extend(requests)

        def eof_received(self):
            return False

        def output_skipped(self, count):
            pass

        def connection_lost(self, reason):
            pass

    transport = MemoryTransport(("127.0.0.1", 1))
    limits = protocol.input_limits(ProtocolLimits(max_line_bytes, 65536), options)
    proto = protocol(transport, limits)  # type: ignore[arg-type]
    proto.session = Session()  # type: ignore[assignment]
    return proto, transport


def test_each_protocol_chooses_its_input_limit_and_sanitising():
    toy, _ = _connected(toyproto.ToyProtocol, {"server_tag": "toy", "max_line_bytes": 512})
    line, _ = _connected(LineProtocol, {"history_replay": True})
    data = b"\x01ACTION waves\x01\r\n" + b"y" * 513 + b"\n" + b"\x02bold\x02 \xff\n"
    for proto in (toy, line):
        for i in range(len(data)):  # byte by byte: the same lines as whole
            proto.data_received(memoryview(data[i:i + 1]))
    too_long = toy.session.requests[1]
    assert toy.session.requests == [Say("waves", action=True), too_long, "\x02bold\x02 \ufffd"]
    assert too_long.limit == 512  # IRC's, the toy's own, not the server's 4096
    # The line protocol keeps today's rules: controls removed, the same line passes.
    assert line.session.requests == ["ACTION waves", "y" * 513, "bold \ufffd"]


def test_irc_formatting_is_removed_whole_for_terminals_and_programs():
    """What a netcat user (and a bot) sees of an IRC user's formatting, once an IRC
    listener passes it on raw: the words, colours' digits included gone; nc input rules
    are unchanged (a typed ^C-digits still leaves the digits, as before)."""
    from chatd.events import Message, Source
    from chatd.framing import decode_line

    text = "\x02bold\x02 \x0304,05red\x03 \x1ditalic\x1d \x0412ab34hex\x0f \x039,1x"
    event = Message(1, 0.0, Source(nick="ann", client_id=2), "#lobby", text)
    assert LineProtocol.renderer.render(event) == b"<ann> bold red italic hex x\n"
    assert json.loads(JsonlProtocol.renderer.render(event))["text"] == "bold red italic hex x"
    assert decode_line(b"\x0304red") == "04red"


def test_an_in_process_chat_speaks_a_plugins_protocol_with_its_limit():
    from chatd.testing import InProcessChat

    with InProcessChat(toyproto) as chat:
        peer = chat.connect("toy")
        peer.send("x" * 513)
        assert any("line too long (max 512 bytes)" in line for line in peer.lines())


def test_the_builtins_keep_the_servers_limits():
    server = ProtocolLimits(100, 1000)
    for spec in ProtocolRegistry():
        if spec.name == "irc":  # IRC's own: 512 bytes plus tags (tests/test_irc_session.py)
            continue
        assert spec.protocol.input_limits(server, {"history_replay": True}) is server


# -- refusals and limit messages in the protocol's words -----------------------------------------


def test_a_refusal_is_rendered_by_the_protocol():
    text = "server full (max 1 client); try again later"
    assert LineProtocol.refusal("server_full", text) == f"! {text}\n".encode()
    assert json.loads(JsonlProtocol.refusal("server_full", text)) == {
        "type": "error", "code": "server_full", "text": text}
    assert toyproto.ToyProtocol.refusal("per_ip", "too many") == b"ERROR per_ip :too many\n"


def test_another_protocols_greeting_and_an_endless_line_are_answered_in_jsonl():
    proto, transport = _connected(JsonlProtocol, {"history_replay": True})
    proto.data_received(memoryview(b"\x16\x03\x01\x02\x00"))
    assert json.loads(transport.output) == {
        "type": "error", "code": "foreign_tls", "text": "this port speaks plain text, not TLS"}
    assert transport.limit_hit == "foreign_tls" and not transport.is_open
    proto, transport = _connected(JsonlProtocol, {"history_replay": True}, max_line_bytes=16)
    proto.data_received(memoryview(b"{" * 70000))
    assert json.loads(transport.output)["code"] == "excess_flood"


def test_a_jsonl_peer_refused_at_the_door_reads_an_error_object(chatd_server):
    # The HTTP peer keeps its end open after the answer, so the server holds its slot
    # (lingering for the peer's FIN) and the third connection finds it full.
    server = chatd_server(listen=[{"port": 0, "protocol": "jsonl"}],
                          limits={"max_clients": 2, "close_linger_seconds": 30})
    with socket.create_connection(server.address, timeout=10) as first:
        assert b'"type":"notice"' in first.recv(4096)  # admitted: welcomed
        with socket.create_connection(server.address, timeout=10) as http:
            http.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            # (Its last line: the session still begins at accept, so it was welcomed.)
            answer = json.loads(_read_to_eof(http).splitlines()[-1])
            assert answer == {"type": "error", "code": "foreign_http",
                              "text": "this is not an HTTP server: chatd is a line chat, "
                                      "try nc HOST PORT"}
            with socket.create_connection(server.address, timeout=10) as third:
                refused = json.loads(_read_to_eof(third))
    assert refused == {"type": "error", "code": "server_full",
                       "text": "server full (max 2 clients); try again later"}


def _read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(4096):
            data += chunk
    return data


def test_plaintext_on_a_jsonl_tls_port_is_told_in_jsonl(chatd_server, tmp_path):
    cert = tmp_path / "server.pem"
    trustme.CA().issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(cert))
    server = chatd_server(listen=[
        {"port": 0, "protocol": "jsonl", "tls": {"cert": str(cert), "key": str(cert)}}])
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b'{"cmd": "who"}\n')
        answer = json.loads(_read_to_eof(sock))
    assert answer == {"type": "error", "code": "tls_plaintext",
                      "text": "this port speaks TLS: connect with ncat --ssl, openssl "
                              "s_client or socat OPENSSL:..."}


def test_listener_options_defaults_are_the_builtins_shared_options():
    assert ProtocolRegistry()["jsonl"].options is ListenerOptions
