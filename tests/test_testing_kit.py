"""The test kit itself: a failing test shows the server's log; installed plugins stay out."""

from __future__ import annotations

from chatd import Command, hookimpl
from chatd.testing import InProcessChat

pytest_plugins = ["pytester"]


def test_a_failing_test_shows_the_servers_log(pytester):
    pytester.makeconftest('pytest_plugins = ["chatd.testing"]\n')
    pytester.makepyfile(
        """
        def test_fails(chatd_server):
            server = chatd_server()
            server.client().send("/nick x")
            server.wait_for_log("nick id=1 old=guest-1 new=x")
            assert False, "on purpose"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*chatd server 0 log*",
        "*INFO chatd.listeners: listening on 127.0.0.1:*",
        "*nick id=1 old=guest-1 new=x*",
    ])


def test_a_passing_test_prints_no_log(pytester):
    pytester.makeconftest('pytest_plugins = ["chatd.testing"]\n')
    pytester.makepyfile(
        """
        def test_passes(chatd_server):
            chatd_server().client()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "chatd server 0 log" not in result.stdout.str()


def test_write_config_leaves_entry_point_plugins_out_unless_asked(tmp_path):
    import yaml

    from chatd.testing import write_config

    plain = yaml.safe_load(write_config(tmp_path / "a.yaml").read_text())
    assert plain["plugin_host"]["entry_points"] is False
    asked = yaml.safe_load(
        write_config(tmp_path / "b.yaml", plugin_host={"entry_points": True}).read_text()
    )
    assert asked["plugin_host"]["entry_points"] is True


# -- the fake clock of InProcessChat ----------------------------------------------------------


class Reminder:
    """/remind: a notice a minute later, timed with the server's clock."""

    def __init__(self) -> None:
        self.asked_at: float | None = None

    @hookimpl
    def chatd_commands(self):
        def remind(client, args):
            self.asked_at = client.server.clock()
            client.server.call_later(60, lambda: client.notice(
                f"reminder after {client.server.clock() - self.asked_at:g} s: {args}"
            ))

        return [Command("remind", remind)]


def test_advance_drives_timers_and_the_servers_clock_with_no_waiting():
    reminder = Reminder()
    with InProcessChat(reminder, fake_clock=True) as chat:
        alice = chat.connect()
        alice.lines()
        alice.send("/remind tea")
        chat.advance(59.5)
        assert alice.lines() == []
        chat.advance(0.5)
        assert alice.lines() == ["*** [Reminder] reminder after 60 s: tea"]
        # A long step runs each timer at its own time, not at the end of the step.
        alice.send("/remind cake")
        chat.advance(3600)
        assert alice.lines() == ["*** [Reminder] reminder after 60 s: cake"]


def test_advance_moves_the_flood_gate_too():
    with InProcessChat(fake_clock=True, flood={"lines_per_second": 1, "burst_lines": 1}) as chat:
        alice, bob = chat.connect(), chat.connect()
        bob.lines()
        for text in ("one", "two", "three"):
            alice.send(text)
        assert bob.lines() == ["<guest-1> one"]
        chat.advance(1)
        assert bob.lines() == ["<guest-1> two"]
        chat.advance(1)
        assert bob.lines() == ["<guest-1> three"]


# -- a running server's log: waited for, counted, read after the stop --------------------------


def test_wait_for_log_count_waits_for_at_least_count_and_gives_up_with_the_log(chatd_server):
    import pytest

    server = chatd_server()
    server.client()
    server.client()
    log = server.wait_for_log_count(r"connect id=\d+ ", 2)
    assert "connect id=1 " in log and "connect id=2 " in log
    with pytest.raises(AssertionError, match=r"log never matched .* 3 times"):
        server.wait_for_log_count(r"connect id=\d+ ", 3, timeout=0.2)
    server.close()
    assert "INFO chatd: stopped" in server.log()  # complete, and readable after close()


# -- restarting a real server on the same data -----------------------------------------------


def test_restart_starts_the_same_server_again_on_the_same_data(chatd_server):
    server = chatd_server(storage={"path": "chatd.sqlite3"},
                          plugins={"history": {"replay_lines": 5}})
    alice, witness = server.client(), server.client()
    alice.send("remember me")
    witness.expect(rf"<{alice.nick}> remember me$")  # said before the SIGTERM, for sure
    server.wait_for_log(r"connect id=2 ")  # the first run's log is not empty
    old_pid, old_log = server.pid, server.log()
    assert server.restart() == 0  # SIGTERM: a clean stop commits what is queued
    assert server.pid != old_pid and alice.sock.fileno() == -1
    bob = server.client()
    bob.expect(rf"<{alice.nick}> remember me$")
    assert server.log().startswith(old_log)  # one log, both runs


# -- docs/testing.md is the whole kit, and states the defaults it changes ------------------


def _doc() -> str:
    from pathlib import Path

    return (Path(__file__).resolve().parent.parent / "docs" / "testing.md").read_text()


def _section(heading: str) -> str:
    import re

    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", _doc(), re.M | re.S)
    assert match, f"docs/testing.md has no section '## {heading}'"
    return match.group(1)


def _documented(text: str) -> set[str]:
    import re

    return {re.split(r"[(\[ ]", cell, maxsplit=1)[0]
            for cell in re.findall(r"^\| `([^`]+)`", text, re.M)}


def _public(cls: type) -> set[str]:
    """Public names of ``cls``: its attributes and the ``self.x = ...`` of its code."""
    import ast
    import inspect

    names = {n for n in dir(cls) if not n.startswith("_")}
    for klass in cls.__mro__:
        if klass.__module__.startswith("chatd.testing"):
            for node in ast.walk(ast.parse(inspect.getsource(klass))):
                if (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                        and isinstance(node.value, ast.Name) and node.value.id == "self"
                        and not node.attr.startswith("_")):
                    names.add(node.attr)
    return names


def test_every_public_name_of_the_kit_is_in_docs_testing_md_and_nothing_stale():
    import chatd.testing as kit

    for heading, cls in {"ServerProcess": kit.ServerProcess, "ChatClient": kit.ChatClient,
                         "JsonClient": kit.JsonClient, "InProcessChat": kit.InProcessChat,
                         "Peer": kit.Peer, "PostgresCluster": kit.PostgresCluster}.items():
        documented, public = _documented(_section(heading)), _public(cls)
        assert documented == public, (heading, "undocumented:", public - documented,
                                      "stale:", documented - public)
    doc = _doc()
    for name in kit.__all__:
        assert f"`{name}" in doc, f"chatd.testing.{name} is not in docs/testing.md"


def test_docs_testing_md_states_every_default_the_kit_changes():
    import re

    import yaml

    from chatd.testing.defaults import TEST_SECTIONS

    def flat(prefix: str, value: object):
        if isinstance(value, dict):
            for key, inner in value.items():
                yield from flat(f"{prefix}.{key}" if prefix else key, inner)
        else:
            yield prefix, value

    table = _section("What the kit changes (the test defaults)")
    rows = dict(re.findall(r"^\| `([^`]+)` \| `([^`]+)`", table, re.M))
    for key, value in flat("", TEST_SECTIONS):
        assert key in rows, f"docs/testing.md does not say the kit sets {key}"
        assert rows[key] == yaml.safe_dump(value).strip().removesuffix("\n..."), (key, rows[key])
