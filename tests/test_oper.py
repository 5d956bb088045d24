"""The built-in *oper* plugin: /oper, its hardening, and the operator-only commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLUGINS = str(REPO / "plugins")
PASSWORD = "correct-horse"
OPER = {"oper": {"password": PASSWORD}}
DENIED = "! permission denied: this command is for operators (/oper)"


# -- helpers -------------------------------------------------------------------


def named(server, nick, **kwargs):
    """A connected client renamed to ``nick``; its own rename notice is consumed."""
    client = server.client(**kwargs)
    old = client.nick
    client.send(f"/nick {nick}")
    client.expect_line(f"*** {old} is now known as {nick}")
    client.nick = nick
    return client


def sync(*clients):
    """Skip everything already queued for each client (a /rooms round trip)."""
    for client in clients:
        client.send("/rooms")
        client.expect(r"^\*\*\* \d+ rooms?: ")


def operator(server, nick="op", password=PASSWORD, **kwargs):
    client = named(server, nick, **kwargs)
    client.send(f"/oper {password}")
    client.expect_line("*** you are now an operator")
    return client


def write_plugin(directory: Path, name: str, source: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


# -- /oper ----------------------------------------------------------------------


def test_oper_without_a_configured_password(chatd_server):
    server = chatd_server()
    alice = server.client()
    alice.send("/oper anything")
    alice.expect_line("! no operator password is configured on this server")
    alice.send("/reload")
    alice.expect_line(DENIED)


def test_wrong_passwords_close_the_connection_and_an_address_has_a_ceiling(chatd_server):
    """Three failures close that connection; a new one from the same address may try
    again (people share addresses behind NAT); ten failures from one address within a
    minute lock the address out; every attempt is logged, no password ever is."""
    server = chatd_server(plugins=OPER)
    mallory = server.client()
    mallory.send("/oper guess-one")
    mallory.expect_line("! wrong password")
    mallory.send("/oper guess-two")
    mallory.expect_line("! wrong password")
    mallory.send("/oper guess-three")
    assert mallory.expect_eof() == ["! too many failed /oper attempts; disconnecting"]
    # A colleague behind the same address is not locked out by mallory's three.
    colleague = server.client()
    colleague.send(f"/oper {PASSWORD}")
    colleague.expect_line("*** you are now an operator")
    # Past the address's ceiling (10 failures within a minute), nobody from it may try.
    for n in range(3):
        guesser = server.client()
        for _ in range(3 if n < 2 else 1):
            guesser.send("/oper nope-nope")
        if n < 2:
            guesser.expect_eof()
        else:
            guesser.expect_line("! wrong password")  # the 10th failure
    late = server.client()
    late.send(f"/oper {PASSWORD}")
    late.expect_line("! too many failed attempts from your address; try again later")
    late.send("/plugins")
    late.expect_line(DENIED)
    other = server.client(source="127.0.0.2")
    other.send(f"/oper {PASSWORD}")
    other.expect_line("*** you are now an operator")
    # The log is written off the loop: wait for the last lines, not only the first.
    log = server.wait_for_log(r"failed /oper by \S+ \(127\.0\.0\.1:\d+\): 3 on this connection")
    server.wait_for_log(r"10 from its address")
    server.wait_for_log(r"\(127\.0\.0\.2:\d+\) is now an operator")
    text = server.log()
    assert len(re.findall(r"WARNING chatd\.oper: failed /oper by", text)) == 10, text[-3000:]
    assert "/oper refused for" in text and "is now an operator" in text
    assert PASSWORD not in text and "guess-one" not in text and log


def test_right_password_makes_an_operator(chatd_server):
    server = chatd_server(plugins=OPER)
    alice = server.client()
    alice.send("/oper wrong-password")
    alice.expect_line("! wrong password")
    alice.send(f"/oper {PASSWORD}")
    alice.expect_line("*** you are now an operator")


def test_password_from_the_environment_is_never_logged(chatd_server):
    secret = "s3cret-pass"
    server = chatd_server(
        env={"CHATD_TEST_OPER": secret},
        logging={"level": "DEBUG"},
        plugins={"oper": {"password": "${CHATD_TEST_OPER}"}, "log": {"messages": True}},
    )
    alice = server.client()
    alice.send("/oper s3cret-pas")
    alice.expect_line("! wrong password")
    alice.send("/oper ${CHATD_TEST_OPER}")  # the reference itself is not the password
    alice.expect_line("! wrong password")
    bob = server.client(source="127.0.0.2")
    bob.send(f"/oper {secret}")
    bob.expect_line("*** you are now an operator")
    bob.send("/quit")
    bob.expect_eof()
    bob.close()
    alice.close()
    server.wait_for_log(r"disconnect id=1 ")
    assert server.stop() == 0  # the log is queued: stopping flushes it
    log = server.log()
    assert secret not in log
    assert "s3cret-pas" not in log  # nor a near miss


def test_too_short_a_password_is_a_config_error(tmp_path):
    config = tmp_path / "short.yaml"
    config.write_text(
        "listen: {host: 127.0.0.1, port: 0}\n"
        "plugins:\n"
        "  oper:\n"
        "    password: short\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "chatd", "--config", str(config), "--check-config"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"chatd: {config}:4: plugins.oper.password: "), lines[0]
    # The rejected value is a would-be secret: not echoed.
    assert "'short'" not in lines[0] and '"short"' not in lines[0], lines[0]


# -- operator commands ------------------------------------------------------------


def test_operator_commands_are_refused_to_others(chatd_server):
    server = chatd_server(plugins=OPER)
    alice = named(server, "alice")
    bob = named(server, "bob")
    sync(alice)
    for command in ("/reload", "/kill bob", "/plugins"):
        alice.send(command)
        alice.expect_line(DENIED)
    bob.expect_nothing(0.2)
    assert "reloaded" not in server.log()


def test_kill(chatd_server):
    server = chatd_server(plugins=OPER)
    op = operator(server)
    alice = named(server, "alice")
    bob = named(server, "bob")
    sync(op, alice)
    op.send("/kill bob spamming")
    assert bob.expect_eof() == ["*** you were disconnected by op: spamming"]
    op.expect_line("*** disconnected bob")
    op.expect_line("*** bob quit (killed by op: spamming)")
    alice.expect_line("*** bob quit (killed by op: spamming)")
    op.send("/kill bob again")
    op.expect_line("! no such nick: bob")
    op.send("/kill")
    op.expect_line("! usage: /kill NICK [reason]")


def test_plugins_lists_every_plugin_and_its_commands(chatd_server):
    server = chatd_server(plugin_dirs=[PLUGINS], plugins=OPER)
    op = operator(server)
    op.send("/plugins")
    op.send("/rooms")  # marks the end of the listing
    listing = []
    while not (line := op.recv_line()).startswith("*** 1 room"):
        listing.append(line)
    by_name = {line.split()[1]: line for line in listing}
    expected = {
        "rooms": "/join /switch /part /partall /rooms /who /names /topic",
        "commands": "/help /nick /msg /notice /me /quit",
        "log": "-",
        "oper": "/oper /reload /kill /plugins /stats",
        "dice": "/roll",
    }
    for name, commands in expected.items():
        assert name in by_name, listing
        assert by_name[name].endswith(f" commands: {commands}"), by_name[name]
    assert re.match(r"^\*\*\* rooms 0\.\d+\.\d+ \(builtin\) ", by_name["rooms"]), by_name["rooms"]
    assert f"(file {PLUGINS}/dice.py)" in by_name["dice"]
    assert all(line.startswith("*** ") for line in listing), listing


def test_operators_are_told_when_a_plugin_is_disabled(chatd_server, tmp_path):
    extra = tmp_path / "extra"
    write_plugin(
        extra,
        "flaky",
        """
        from chatd import hookimpl

        @hookimpl
        def chatd_message(client, text):
            raise ValueError("flaky " + text)
        """,
    )
    server = chatd_server(
        plugin_dirs=[str(extra)], plugin_host={"max_failures": 2}, plugins=OPER
    )
    op = operator(server)
    alice = named(server, "alice")
    bob = named(server, "bob")
    sync(op, alice)
    alice.send("one")
    alice.expect_line("! internal error in plugin 'flaky'; the server goes on")
    bob.expect_line("<alice> one")
    alice.send("two")
    alice.expect_line("! internal error in plugin 'flaky'; the server goes on")
    bob.expect_line("<alice> two")
    op.expect_line("<alice> one")
    op.expect_line("*** [oper] plugin 'flaky' was disabled: 2 failures within 60 s "
                   "(plugin_host.max_failures is 2)")
    op.expect_line("<alice> two")
    alice.send("three")
    bob.expect_line("<alice> three")
    op.expect_line("<alice> three")
    alice.expect_nothing(0.3)
    assert not any("[oper]" in line for line in alice.history + bob.history)


# -- /reload ------------------------------------------------------------------------


VER = """
from chatd import Command, hookimpl

def ver(client, args):
    client.notice("{version}")

@hookimpl
def chatd_commands():
    return [Command("ver", ver, "/ver", "show the plugin version")]
"""


def test_reload_swaps_plugins_and_keeps_everyone_connected(chatd_server, tmp_path):
    plugin_dir = tmp_path / "reloadable"
    write_plugin(plugin_dir, "ver", VER.format(version="v1"))
    config = tmp_path / "chatd.yaml"
    config.write_text(
        "listen: {host: 127.0.0.1, port: 0}\n"
        f"plugin_dirs: [{plugin_dir}]\n"
        "plugins:\n"
        "  oper:\n"
        f"    password: {PASSWORD}\n"
    )
    server = chatd_server(config=config)
    op = operator(server)
    watcher = named(server, "watcher")
    sync(op)
    op.send("/ver")
    op.expect_line("*** [ver] v1")

    write_plugin(plugin_dir, "ver", VER.format(version="v2"))
    op.send("/reload")
    op.expect_line("*** reloaded the config and the plugins")
    op.send("/ver")
    op.expect_line("*** [ver] v2")
    # Nobody was disconnected and nicks were kept.
    op.send("still here?")
    watcher.expect_line("<op> still here?")
    watcher.send("yes")
    op.expect_line("<watcher> yes")

    write_plugin(plugin_dir, "ver", VER.format(version="v3") + "\ndef broken(:\n")
    op.send("/reload")
    got = [op.recv_line(), op.recv_line()]
    assert any(
        line.startswith("*** [oper] reload failed, nothing changed: ") and "ver.py" in line
        for line in got
    ), got
    assert any(line.startswith("! reload failed") for line in got), got
    op.send("/ver")
    op.expect_line("*** [ver] v2")
    watcher.send("/ver")
    watcher.expect_line("*** [ver] v2")
    watcher.expect_nothing(0.2)
    server.wait_for_log(r"reload failed, keeping the running config and plugins")


def test_reload_picks_up_an_edit_made_within_the_same_second(chatd_server, tmp_path):
    # Python's bytecode cache (__pycache__) is keyed on the source's mtime in whole
    # seconds and its size; a same-size edit within the same second must still be
    # what /reload runs.  Bytecode writing is on, as it is for a normal deployment.
    plugin_dir = tmp_path / "reloadable"
    path = write_plugin(plugin_dir, "ver", VER.format(version="v1"))
    first = path.stat()
    config = tmp_path / "chatd.yaml"
    config.write_text(
        "listen: {host: 127.0.0.1, port: 0}\n"
        f"plugin_dirs: [{plugin_dir}]\n"
        "plugins:\n"
        "  oper:\n"
        f"    password: {PASSWORD}\n"
    )
    server = chatd_server(config=config, env={"PYTHONDONTWRITEBYTECODE": ""})
    op = operator(server)
    op.send("/ver")
    op.expect_line("*** [ver] v1")
    write_plugin(plugin_dir, "ver", VER.format(version="v2"))
    os.utime(path, ns=(first.st_atime_ns, first.st_mtime_ns))  # "the same second"
    op.send("/reload")
    op.expect_line("*** reloaded the config and the plugins")
    op.send("/ver")
    op.expect_line("*** [ver] v2")
