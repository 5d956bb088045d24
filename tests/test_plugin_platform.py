"""Plugin discovery paths, guard rails and reload, each exercised for real."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SHOUT_PLUGIN = """
from chatd import Command, hookimpl

def shout(client, args):
    client.notice(args.upper() + "{suffix}")

@hookimpl
def chatd_commands():
    return [Command("shout", shout, "/shout text", "say it louder")]
"""


def write(path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def chatd_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "chatd", *args],
        capture_output=True, text=True, timeout=30, env={**os.environ, **(env or {})},
    )


@pytest.fixture
def fake_distribution(tmp_path: Path) -> Path:
    """A distribution 'chatd-demo 1.2' with an entry point, importable via PYTHONPATH."""
    site = tmp_path / "site"
    write(site / "chatd_demo_plugin.py", SHOUT_PLUGIN.format(suffix=" (from a package)"))
    info = site / "chatd_demo-1.2.dist-info"
    write(info / "METADATA", "Metadata-Version: 2.1\nName: chatd-demo\nVersion: 1.2\n")
    write(info / "entry_points.txt", "[chatd]\ndemo = chatd_demo_plugin\n")
    return site


def test_entry_point_plugin_is_discovered(chatd_server, fake_distribution, tmp_path):
    env = {"PYTHONPATH": str(fake_distribution)}
    # The test kit leaves entry points off unless a test asks for them.
    server = chatd_server(env=env, plugin_host={"entry_points": True})
    alice = server.client()
    alice.send("/shout hi")
    alice.expect(r"^\*\*\* \[demo\] HI \(from a package\)$")
    config = tmp_path / "c.yaml"
    config.write_text("listen: {port: 0}\n")
    listing = chatd_cli("plugins", "--config", str(config), env=env)
    assert listing.returncode == 0, listing.stderr
    assert "demo 1.2" in listing.stdout
    assert "entry point chatd_demo_plugin in chatd-demo" in listing.stdout
    assert "commands: /shout" in listing.stdout


def test_entry_points_can_be_switched_off(chatd_server, fake_distribution):
    server = chatd_server(
        env={"PYTHONPATH": str(fake_distribution)}, plugin_host={"entry_points": False}
    )
    alice = server.client()
    alice.send("/shout hi")
    alice.expect_line("! unknown command /shout — try /help")


def test_config_listed_module_is_loaded(chatd_server, tmp_path):
    site = tmp_path / "lib"
    write(site / "acme" / "__init__.py", "")
    write(site / "acme" / "chatshout.py", SHOUT_PLUGIN.format(suffix=" (listed)"))
    server = chatd_server(
        env={"PYTHONPATH": str(site)}, plugin_host={"modules": ["acme.chatshout"]}
    )
    alice = server.client()
    alice.send("/help")
    alice.expect(r"^\*\*\* \[chatshout\]$")
    alice.send("/shout ok")
    alice.expect(r"^\*\*\* \[chatshout\] OK \(listed\)$")


def test_disabled_builtin_is_really_gone(chatd_server):
    server = chatd_server(plugin_host={"disable": ["oper", "log"]})
    alice = server.client()
    alice.send("/help")
    alice.expect(r"^\*\*\*   /set ")  # the last line of the last group, [settings]
    alice.send("/oper secret")
    alice.expect_line("! unknown command /oper — try /help")
    help_text = "\n".join(alice.history)
    assert "[oper]" not in help_text and "/oper" not in help_text.split("unknown")[0]
    assert "chatd.events" not in server.log()  # the log plugin wrote nothing


def test_disabling_an_unknown_plugin_is_a_startup_error(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("plugin_host:\n  disable: [lgo]\n")
    result = chatd_cli("--config", str(config), "--check-config")
    assert result.returncode == 2
    assert "plugin_host.disable: no plugin named 'lgo'" in result.stderr
    assert "log" in result.stderr  # the known names are listed


def test_a_plugin_config_error_names_file_key_and_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("plugins:\n  oper:\n    password: short\n")
    result = chatd_cli("--config", str(config), "--check-config")
    assert result.returncode == 2
    assert f"{config}:3: plugins.oper.password: must be a string" in result.stderr


def test_slow_hook_is_reported_with_plugin_and_time(chatd_server, tmp_path):
    write(
        tmp_path / "p" / "sleepy.py",
        """
        import time
        from chatd import hookimpl

        @hookimpl
        def chatd_message(client, text):
            if text == "slow":
                time.sleep(0.3)
        """,
    )
    server = chatd_server(plugin_dirs=[str(tmp_path / "p")], plugin_host={"slow_hook_seconds": 0.1})
    alice, bob = server.client(), server.client()
    alice.send("slow")
    alice.send("fast")
    bob.expect(r"<guest-1> slow")
    bob.expect(r"<guest-1> fast")
    server.wait_for_log(r"chatd_message in plugin 'sleepy' took 0\.[3-9]\d* s \(limit 0\.100 s\)")


def test_circuit_breaker_disables_a_failing_plugin(chatd_server, tmp_path):
    write(
        tmp_path / "p" / "flaky.py",
        """
        from chatd import hookimpl

        @hookimpl
        def chatd_message(client, text):
            raise RuntimeError("always")
        """,
    )
    server = chatd_server(
        plugin_dirs=[str(tmp_path / "p")],
        plugin_host={"max_failures": 3, "failure_window_seconds": 30},
    )
    alice, bob = server.client(), server.client()
    for i in range(6):
        alice.send(f"m{i}")
    for i in range(6):
        bob.expect_line(f"<{alice.nick}> m{i}")
    errors = []
    for _ in range(3):
        errors.append(alice.expect(r"^! internal error in plugin 'flaky'").group(0))
    alice.send("/nick alice")
    alice.expect_line("*** guest-1 is now known as alice")  # no 4th error line came before it
    server.wait_for_log(r"plugin 'flaky' disabled: 3 failures within 30 s")


def test_trace_hooks_logs_every_call(chatd_server):
    server = chatd_server(extra_args=["--trace-hooks"])
    alice = server.client()
    alice.send("/nick tracy")
    alice.expect(r"is now known as tracy")
    server.wait_for_log(r"chatd_client_connect in plugin 'rooms' -> None, finished in ")
    server.wait_for_log(r"command /nick in plugin 'commands' -> None, finished in ")


def test_sighup_reloads_a_changed_plugin_without_dropping_anyone(chatd_server, tmp_path):
    plugin = write(tmp_path / "p" / "shout.py", SHOUT_PLUGIN.format(suffix=" v1"))
    config = write(
        tmp_path / "chatd.yaml",
        f"""
        listen: {{host: 127.0.0.1, port: 0}}
        plugin_dirs: [{plugin.parent}]
        """,
    )
    server = chatd_server(config=config)
    alice, bob = server.client(), server.client()
    alice.send("/nick alice")
    alice.send("/join #dev")
    alice.expect(r"joined #dev")
    alice.send("/shout a")
    alice.expect(r"^\*\*\* \[shout\] A v1$")

    write(plugin, SHOUT_PLUGIN.format(suffix=" v2"))
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reloaded .*chatd\.yaml")
    alice.send("/shout b")
    alice.expect(r"^\*\*\* \[shout\] B v2$")
    alice.send("/who")
    alice.expect(r"^\*\*\* #dev has 1 member: alice")  # nick and room survived
    bob.send("/msg alice still here")
    alice.expect(r"^\*guest-2\* still here$")  # after bob's deferred join, if not yet seen

    write(plugin, "this is not python(\n")
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reload failed, keeping the running config and plugins: .*shout\.py")
    alice.send("/shout c")
    alice.expect(r"^\*\*\* \[shout\] C v2$")
    assert server.proc.poll() is None


def test_sighup_with_broken_config_keeps_the_old_one(chatd_server, tmp_path):
    config = write(tmp_path / "chatd.yaml", "listen: {host: 127.0.0.1, port: 0}\n")
    server = chatd_server(config=config)
    alice = server.client()
    config.write_text("listen: {host: 127.0.0.1, port: 0}\nlimits:\n  max_clients: -5\n")
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reload failed.*chatd\.yaml:3: limits\.max_clients")
    alice.send("/nick still")
    alice.expect_line("*** guest-1 is now known as still")
    server.client()  # new connections are still welcome
