"""Plugin discovery and isolation, end to end: real plugin files, a real server."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def write_plugin(directory: Path, name: str, source: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


def test_shipped_dice_plugin_is_listed_and_works(chatd_server):
    server = chatd_server(plugin_dirs=[str(REPO / "plugins")])
    alice = server.client()
    bob = server.client()
    alice.send("/help")
    alice.expect(r"^\*\*\* \[dice\]$")
    alice.expect(r"^\*\*\*   /roll \[NdM\] +roll N dice")
    alice.send("/roll 3d6")
    match = alice.expect(
        rf"^\*\*\* \[dice\] {alice.nick} rolled 3d6: (\d) \+ (\d) \+ (\d) = (\d+)$"
    )
    dice = [int(match.group(i)) for i in (1, 2, 3)]
    assert all(1 <= d <= 6 for d in dice) and sum(dice) == int(match.group(4))
    bob.expect(rf"^\*\*\* \[dice\] {alice.nick} rolled 3d6: ")
    alice.send("/roll 0d6")
    alice.expect(r"^! 1-20 dice of 2-1000 sides; usage: /roll \[NdM\]$")
    alice.send("/help roll")
    alice.expect(r"^\*\*\* /roll \[NdM\] — roll N dice")
    alice.expect(r"^\*\*\*   N is 1-20")


def test_plugin_dropped_into_a_plugin_dir_adds_a_command(chatd_server, tmp_path):
    plugin_dir = tmp_path / "myplugins"
    write_plugin(
        plugin_dir,
        "echo",
        """
        from chatd import Command, hookimpl

        def shout(client, args):
            client.notice(args.upper() + "!")

        @hookimpl
        def chatd_commands():
            return [Command("shout", shout, "/shout text", "say it louder")]
        """,
    )
    server = chatd_server(plugin_dirs=[str(plugin_dir)])
    alice = server.client()
    alice.send("/help")
    alice.expect(r"^\*\*\* \[echo\]$")
    alice.expect(r"^\*\*\*   /shout text +say it louder$")
    alice.send("/shout hello")
    alice.expect(r"^\*\*\* \[echo\] HELLO!$")


def test_a_raising_message_plugin_does_not_stop_the_broadcast(chatd_server, tmp_path):
    plugin_dir = tmp_path / "bad"
    write_plugin(
        plugin_dir,
        "badlog",
        """
        from chatd import hookimpl

        @hookimpl
        def chatd_message(client, text):
            raise ValueError("boom " + text)

        @hookimpl
        def chatd_client_connect(client):
            raise RuntimeError("a failing plugin must not be able to stop the server")
        """,
    )
    server = chatd_server(plugin_dirs=[str(plugin_dir)])
    alice = server.client()
    alice.expect(r"^! internal error in plugin 'badlog'")
    bob = server.client()
    for i in range(20):
        alice.send(f"line {i}")
    for i in range(20):
        bob.expect(rf"^<{alice.nick}> line {i}$")
    alice.expect(r"^! internal error in plugin 'badlog'")
    server.wait_for_log(r"ValueError: boom line 0")  # logging is asynchronous (a queue)
    log = server.log()
    assert "plugin 'badlog' failed in chatd_message" in log
    assert "ValueError: boom line 0" in log
    # Repeats are counted, not logged with a traceback each time.
    assert log.count("ValueError: boom") == 1
    assert server.proc.poll() is None


def test_a_plugin_hook_raising_systemexit_stops_the_server(chatd_server, tmp_path):
    """SystemExit is not a plugin failure to contain: it stops the server process."""
    plugin_dir = tmp_path / "exit"
    write_plugin(
        plugin_dir,
        "quitter",
        """
        from chatd import hookimpl

        @hookimpl
        def chatd_client_connect(client):
            raise SystemExit("quitter asked the server to stop")
        """,
    )
    server = chatd_server(plugin_dirs=[str(plugin_dir)])
    assert server.proc.poll() is None  # loading the plugin did not run the hook
    alice = server.client(welcome=False)
    alice.expect_eof(timeout=10)
    assert server.proc.wait(10) != 0  # SystemExit("message") exits with status 1
    assert "quitter asked the server to stop" in server.log()


def test_a_raising_command_handler_is_contained(chatd_server, tmp_path):
    plugin_dir = tmp_path / "p"
    write_plugin(
        plugin_dir,
        "crashy",
        """
        from chatd import Command, hookimpl

        def crash(client, args):
            return {}["missing"]

        @hookimpl
        def chatd_commands():
            return [Command("crash", crash, "/crash", "raise KeyError")]
        """,
    )
    server = chatd_server(plugin_dirs=[str(plugin_dir)])
    alice = server.client()
    alice.send("/crash")
    alice.expect(r"^! internal error in plugin 'crashy'")
    alice.send("/nick alice")
    alice.expect_line("*** guest-1 is now known as alice")
    server.wait_for_log(r"KeyError: 'missing'")  # logging is asynchronous (a queue)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("import does_not_exist_anywhere\n", "failed to import: ModuleNotFoundError"),
        (
            "from chatd import hookimpl\n\n@hookimpl\ndef chatd_mesage(client, text):\n    pass\n",
            "unknown hook 'chatd_mesage'",
        ),
        (
            "from chatd import hookimpl\n\n@hookimpl\ndef chatd_message(client, txt):\n    pass\n",
            "txt",
        ),
        (
            "from chatd import Command, hookimpl\n\n@hookimpl\ndef chatd_commands():\n"
            "    return [Command('help', lambda c, a: None)]\n",
            "command /help is provided by both plugin 'broken' and plugin 'commands'",
        ),
    ],
    ids=["import-error", "typo-hook", "bad-signature", "duplicate-command"],
)
def test_a_broken_plugin_is_a_clean_startup_error(tmp_path, source, message):
    import subprocess
    import sys

    write_plugin(tmp_path / "p", "broken", source)
    config = tmp_path / "c.yaml"
    config.write_text(f"listen: {{port: 0}}\nplugin_dirs: [{tmp_path / 'p'}]\n")
    result = subprocess.run(
        [sys.executable, "-m", "chatd", "--config", str(config), "--check-config"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2, result
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
