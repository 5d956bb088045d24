"""A reload is all or nothing (issue 18, rule 3).

Each step where a SIGHUP (or an operator's /reload) can fail is made to fail in a
real chatd process: the config file, the machine's checks, a plugin's import, a
plugin's own config check, a plugin's ``chatd_startup`` and the certificates.
After each, the running config and plugins still serve, untouched, and the failure
is logged and told to operators.

The test plugin ``gen`` makes "untouched" visible: ``/gen`` answers with the
module's version, the greeting it reads from the config *now*, and how many times
this module was started and shut down.  ``/peek`` says which ``gen`` module
``sys.modules`` holds, which is what any code importing it by name gets.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import textwrap
from pathlib import Path
from typing import Any

import pytest
import trustme

from chatd.testing import (
    ChatClient,
    ServerProcess,
    fd_count,
    unexpected_tracebacks,
    write_config,
)

PASSWORD = "reload-secret-1"

GEN = '''
from chatd import Command, hookimpl

VERSION = "{version}"
STARTED = []
STOPPED = []


def gen(client, args):
    greeting = client.server.plugin_config("gen").get("greeting", "hello")
    client.notice(f"gen {{VERSION}}: {{greeting}}; started {{len(STARTED)}}, "
                  f"stopped {{len(STOPPED)}}")


@hookimpl
def chatd_startup(server):
    section = server.plugin_config("gen")
    server.config.check_text("plugins.gen.greeting", section.get("greeting", "hello"))
    if section.get("fail_for_real") and server.store.path is not None:
        # What only the real start meets (a dry run has a database in memory).
        raise RuntimeError("gen cannot open its table")
    STARTED.append(1)


@hookimpl
def chatd_shutdown():
    STOPPED.append(1)


@hookimpl
def chatd_commands():
    return [Command("gen", gen, "/gen", "this plugin's generation")]
'''

PEEK = '''
import sys

from chatd import Command, hookimpl


def peek(client, args):
    module = sys.modules.get("chatd_plugins.gen")
    client.notice(f"sys.modules has gen {getattr(module, 'VERSION', None)}")


@hookimpl
def chatd_commands():
    return [Command("peek", peek, "/peek", "which gen module sys.modules holds")]
'''

RUNNING = "gen v1: hello; started 1, stopped 0"


def _plugin(folder: Path, name: str, source: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(source))


def _merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` merged in, mapping by mapping."""
    out = dict(base)
    for key, value in changes.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merged(out[key], value) if both else value
    return out


def _write(config: Path, plugins_dir: Path, tmp_path: Path, **changes: Any) -> Path:
    sections: dict[str, Any] = {
        "plugin_dirs": [str(plugins_dir)],
        "storage": {"path": str(tmp_path / "data" / "chatd.sqlite3")},
        "plugins": {"oper": {"password": PASSWORD}, "gen": {"greeting": "hello"},
                    "history": {"replay_lines": 0}},
    }
    return write_config(config, **_merged(sections, changes))


def _start(chatd_server: Any, tmp_path: Path, **listen: Any
           ) -> tuple[ServerProcess, ChatClient, Path, Path]:
    plugins_dir = tmp_path / "plugins"
    _plugin(plugins_dir, "gen", GEN.format(version="v1"))
    _plugin(plugins_dir, "peek", PEEK)
    config = _write(tmp_path / "config.yaml", plugins_dir, tmp_path, **listen)
    server = chatd_server(config=config)
    op = server.client()
    op.send(f"/oper {PASSWORD}")
    op.expect(r"^\*\*\* you are now an operator$")
    assert _ask(op, "/gen") == RUNNING
    return server, op, config, plugins_dir


def _ask(client: ChatClient, command: str) -> str:
    client.send(command)
    plugin = command.removeprefix("/")  # each test plugin is named after its command
    return client.expect(rf"^\*\*\* \[{plugin}\] (.*)$").group(1)  # its marker


def _reload_fails(server: ServerProcess, op: ChatClient, why: str) -> None:
    """SIGHUP; the operator is told, the log says so, nothing else is logged as broken."""
    server.signal(signal.SIGHUP)
    op.expect(r"^\*\*\* \[oper\] reload failed, nothing changed: .*" + why)
    server.wait_for_log(r"reload failed, keeping the running config and plugins: .*" + why)
    assert unexpected_tracebacks(server.log()) == [], server.log()[-3000:]


def _still_serving(server: ServerProcess, op: ChatClient, *, gen: str = RUNNING,
                   module: str = "v1") -> None:
    assert _ask(op, "/gen") == gen
    assert _ask(op, "/peek") == f"sys.modules has gen {module}"
    other = server.client()
    other.send("/gen")
    other.expect_line(f"*** [gen] {gen}")
    other.send("still chatting")
    op.expect("^" + re.escape(f"<{other.nick}> still chatting") + "$")


# -- the config file and the machine's checks --------------------------------------------


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"limits": {"close_linger_seconds": float("nan")}},
         r"limits\.close_linger_seconds: expected a number > 0 and <= 1000000, got nan"),
        ({"server": {"name": "chat\u202ed"}}, r"server\.name: holds U\+202E"),
        ({"plugins": {"history": {"retention_lines": 10**30}}},
         r"plugins\.history\.retention_lines: expected an integer > 0"),
        ({"plugins": {"history": {"replay_hours": float("inf")}}},
         r"plugins\.history\.replay_hours: expected a number between 0"),
        ({"storage": {"path": "/proc/chatd-nowhere/chatd.sqlite3"}},
         r"storage\.path: cannot create a folder in /proc"),
    ],
    ids=["core-nan", "bidi-server-name", "plugin-huge-int", "plugin-inf", "storage"],
)
def test_a_config_the_checks_refuse_changes_nothing(
    chatd_server: Any, tmp_path: Path, change: dict[str, Any], why: str
) -> None:
    server, op, config, plugins_dir = _start(chatd_server, tmp_path)
    _plugin(plugins_dir, "gen", GEN.format(version="v2"))
    _write(config, plugins_dir, tmp_path,
           **_merged({"plugins": {"gen": {"greeting": "bonjour"}}}, change))
    _reload_fails(server, op, why)
    # The old plugins were not even shut down: nothing changed, not "changed back".
    _still_serving(server, op)


# -- a plugin's import ---------------------------------------------------------------------


def test_a_plugin_that_fails_to_import_changes_nothing_not_even_sys_modules(
    chatd_server: Any, tmp_path: Path
) -> None:
    server, op, config, plugins_dir = _start(chatd_server, tmp_path)
    _plugin(plugins_dir, "gen", GEN.format(version="v2"))  # imports fine, before...
    _plugin(plugins_dir, "zz_broken", "def broken(:\n")  # ... this one does not
    _write(config, plugins_dir, tmp_path, plugins={"gen": {"greeting": "bonjour"}})
    _reload_fails(server, op, r"zz_broken\.py failed to import: SyntaxError")
    _still_serving(server, op)


# -- a plugin's own config check -----------------------------------------------------------


def test_a_plugin_refusing_its_new_settings_changes_nothing(
    chatd_server: Any, tmp_path: Path
) -> None:
    server, op, config, plugins_dir = _start(chatd_server, tmp_path)
    _plugin(plugins_dir, "gen", GEN.format(version="v2"))
    _write(config, plugins_dir, tmp_path, plugins={"gen": {"greeting": "bon\u202ejour"}})
    _reload_fails(server, op, r"plugins\.gen\.greeting: holds U\+202E")
    _still_serving(server, op)


# -- a plugin's chatd_startup --------------------------------------------------------------


def test_a_startup_that_fails_for_real_brings_back_the_old_config_and_plugins(
    chatd_server: Any, tmp_path: Path
) -> None:
    """The dry run passes (a database in memory), the real start does not: the old
    generation is started again, under the old config."""
    server, op, config, plugins_dir = _start(chatd_server, tmp_path)
    _plugin(plugins_dir, "gen", GEN.format(version="v2"))
    _write(config, plugins_dir, tmp_path,
           plugins={"gen": {"greeting": "bonjour", "fail_for_real": True}})
    _reload_fails(server, op, r"plugin 'gen' failed in chatd_startup: RuntimeError: gen "
                              r"cannot open its table; the previous plugins run again")
    _still_serving(server, op, gen="gen v1: hello; started 2, stopped 1")


# -- the certificates ----------------------------------------------------------------------


def _pem(ca: trustme.CA, path: Path) -> Path:
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
        str(path))
    return path


def _served_certificate(port: int, ca: trustme.CA) -> bytes:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        cert = tls.getpeercert(binary_form=True)
        assert cert is not None
        return cert


def test_a_certificate_that_cannot_be_loaded_refuses_the_whole_reload(
    chatd_server: Any, tmp_path: Path
) -> None:
    """Before, the new config went into force with the old certificate: half a reload."""
    ca = trustme.CA()
    cert = _pem(ca, tmp_path / "server.pem")
    listen = [{"port": 0}, {"port": 0, "tls": {"cert": str(cert), "key": str(cert)}}]
    server, op, config, plugins_dir = _start(chatd_server, tmp_path, listen=listen)
    before = _served_certificate(server.ports[1], ca)
    _plugin(plugins_dir, "gen", GEN.format(version="v2"))
    _write(config, plugins_dir, tmp_path, listen=listen,
           plugins={"gen": {"greeting": "bonjour"}})
    cert.write_text("not a certificate\n")
    _reload_fails(server, op, r"listen\[1\]\.tls.*not a certificate")
    _still_serving(server, op)
    assert _served_certificate(server.ports[1], ca) == before


# -- and when nothing fails ----------------------------------------------------------------


def test_a_good_reload_swaps_config_and_plugins_once(chatd_server: Any, tmp_path: Path) -> None:
    server, op, config, plugins_dir = _start(chatd_server, tmp_path)
    _plugin(plugins_dir, "gen", GEN.format(version="v2"))
    _write(config, plugins_dir, tmp_path, plugins={"gen": {"greeting": "bonjour"}})
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reloaded .*config\.yaml")
    # The dry run started (and stopped) a module of its own: the one serving now was
    # started exactly once.
    _still_serving(server, op, gen="gen v2: bonjour; started 1, stopped 0", module="v2")
    assert "reload failed" not in server.log()


def test_failed_reloads_leave_no_descriptor_or_thread_behind(
    chatd_server: Any, tmp_path: Path
) -> None:
    """Each dry run opens a loop, a database in memory and its writer thread: a dry
    run that fails part way must release them, or every failed reload costs some."""
    server, op, config, plugins_dir = _start(chatd_server, tmp_path)
    fds, threads = fd_count(server.pid), _threads(server.pid)
    _write(config, plugins_dir, tmp_path, plugins={"gen": {"greeting": "bon\u202ejour"}})
    for _ in range(3):
        _reload_fails(server, op, r"plugins\.gen\.greeting: holds U\+202E")
    _still_serving(server, op)
    assert _threads(server.pid) == threads
    assert fd_count(server.pid) == fds + 1  # the client _still_serving connected


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))
