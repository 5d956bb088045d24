"""The example plugins in ``plugins/`` do what their docstrings say, end to end."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLUGINS = str(REPO / "plugins")


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


def check_config(tmp_path: Path, text: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    config = tmp_path / "check.yaml"
    config.write_text(textwrap.dedent(text).lstrip())
    result = subprocess.run(
        [sys.executable, "-m", "chatd", "--config", str(config), "--check-config"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    return config, result


def assert_config_error(config: Path, result, key: str, line: int) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith(f"chatd: {config}:{line}: {key}: "), lines[0]


def write_plugin(directory: Path, name: str, source: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


# -- wordfilter -----------------------------------------------------------------


def test_wordfilter_masks_whole_words_case_insensitively(chatd_server):
    server = chatd_server(plugin_dirs=[PLUGINS], plugins={"wordfilter": {"mask": ["darn"]}})
    alice = named(server, "alice")
    bob = named(server, "bob")
    sync(alice)
    alice.send("darn it")
    bob.expect_line("<alice> d**n it")
    alice.send("DARN it, Darn!")
    bob.expect_line("<alice> D**N it, D**n!")
    alice.send("darning socks is darnable")
    bob.expect_line("<alice> darning socks is darnable")
    alice.expect_nothing(0.2)


def test_wordfilter_blocks_a_message_for_everybody(chatd_server):
    server = chatd_server(
        plugin_dirs=[PLUGINS], plugins={"wordfilter": {"block": ["spamlink.example"]}}
    )
    alice = named(server, "alice")
    bob = named(server, "bob")
    sync(alice)
    alice.send("buy now at https://SpamLink.example/deal")
    alice.expect_line("! your message was not sent: it contains a blocked word")
    alice.send("sorry, wrong window")
    # The blocked line never reached bob: the follow-up is the very next line he gets.
    bob.expect_line("<alice> sorry, wrong window")
    alice.expect_nothing(0.2)


def test_wordfilter_filters_every_field_a_user_writes_in_any_look_alike_form(chatd_server):
    """Lines, actions, topics, private messages, /away, part and quit reasons, nicks
    and room names; full width, Cyrillic, capitals and combining marks alike."""
    from chatd import skeleton

    server = chatd_server(plugin_dirs=[PLUGINS],
                          plugins={"wordfilter": {"mask": ["darn"], "block": ["badword"]}})
    alice = named(server, "alice")
    bob = named(server, "bob")
    for client in (alice, bob):
        client.send("/join #dev")
        client.expect(r"^\*\*\* (you are the first in|also in) #dev")
    alice.expect(r"^\*\*\* bob joined #dev$")
    refused = "! your message was not sent: it contains a blocked word"
    for command in ("/me says ｂａｄｗｏｒｄ", "/topic all about b\u0430dword",  # a Cyrillic a
                    "/msg bob BADWORD", "/away off to bad\u0301word land", "hi BADW0RD"):
        alice.send(command)
        alice.expect_line(refused)
    alice.send("/away at ｄａｒｎ lunch")
    alice.expect_line("*** you are away: at ｄ**ｎ lunch (/away alone when you are back)")
    bob.send("/whois alice")
    bob.expect(r"^\*\*\* alice is away: at ｄ\*\*ｎ lunch$")
    alice.send("/nick badword_fan")
    alice.expect_line("! the nick badword_fan contains a blocked word")
    alice.send("/join #BADW0RD")
    alice.expect_line("! #BADW0RD contains a blocked word: no room may be called that")
    alice.send("/part #dev so long, badword")
    alice.expect(f"^{re.escape(refused)}; left without the reason$")
    bob.expect(r"^\*\*\* alice left #dev$")
    alice.send("/quit b\u0430dword forever")
    bob.expect(r"^\*\*\* alice quit \(Quit\)$")
    assert not any("badword" in skeleton(line.lower()) for line in bob.history), bob.history


def test_wordfilter_mask_must_be_a_list(tmp_path):
    config, result = check_config(
        tmp_path,
        f"""
        listen: {{host: 127.0.0.1, port: 0}}
        plugin_dirs: [{PLUGINS}]
        plugins:
          wordfilter:
            mask: darn
        """,
    )
    assert_config_error(config, result, "plugins.wordfilter.mask", 5)


def test_wordfilter_unknown_setting_is_named(tmp_path):
    config, result = check_config(
        tmp_path,
        f"""
        listen: {{host: 127.0.0.1, port: 0}}
        plugin_dirs: [{PLUGINS}]
        plugins:
          wordfilter:
            mask: [darn]
            blokc: [spamlink.example]
        """,
    )
    assert_config_error(config, result, "plugins.wordfilter.blokc", 6)


# -- greeter ----------------------------------------------------------------------


def test_greeter_greets_the_joiner_of_a_listed_room_only(chatd_server):
    server = chatd_server(
        plugin_dirs=[PLUGINS],
        plugins={"greeter": {"rooms": {"#dev": "Hi {nick}, this is {room}"}}},
    )
    bob = named(server, "bob")
    bob.send("/join #dev")
    bob.expect_line("*** [greeter] Hi bob, this is #dev")
    alice = named(server, "alice")
    sync(bob)
    alice.send("/join #dev")
    alice.expect_line("*** [greeter] Hi alice, this is #dev")
    alice.expect_line("*** alice joined #dev")
    alice.expect_line("*** also in #dev: bob")
    # Bob sees the join and nothing else: the greeting is for the joiner alone.
    bob.expect_line("*** alice joined #dev")
    bob.expect_nothing(0.3)


def test_greeter_is_silent_for_other_rooms_by_default(chatd_server):
    server = chatd_server(
        plugin_dirs=[PLUGINS],
        plugins={"greeter": {"default": None, "rooms": {"#dev": "Hi {nick}"}}},
    )
    alice = named(server, "alice")
    alice.send("/join #random")
    alice.expect_line("*** alice joined #random")
    alice.expect_line("*** you are the first in #random")
    alice.expect_nothing(0.3)


def test_greeter_default_greeting_follows_the_welcome_line(chatd_server):
    server = chatd_server(
        plugin_dirs=[PLUGINS], plugins={"greeter": {"default": "Welcome to {room}, {nick}!"}}
    )
    alice = server.client(welcome=False)
    first = alice.recv_line()
    assert re.match(r"^\*\*\* Welcome to chatd, guest-1\. ", first), first
    alice.expect_line("*** [greeter] Welcome to #lobby, guest-1!")
    alice.expect_nothing(0.2)
    alice.send("/join #other")
    alice.expect_line("*** [greeter] Welcome to #other, guest-1!")


def test_greeter_bad_default_template_is_a_config_error(tmp_path):
    config, result = check_config(
        tmp_path,
        f"""
        listen: {{host: 127.0.0.1, port: 0}}
        plugin_dirs: [{PLUGINS}]
        plugins:
          greeter:
            default: "{{nope}}"
        """,
    )
    assert_config_error(config, result, "plugins.greeter.default", 5)
    assert "unknown field {nope}; a template may use only {nick}, {room}" in result.stderr


def test_greeter_bad_room_template_is_a_config_error(tmp_path):
    config, result = check_config(
        tmp_path,
        f"""
        listen: {{host: 127.0.0.1, port: 0}}
        plugin_dirs: [{PLUGINS}]
        plugins:
          greeter:
            rooms:
              "#dev": "{{nope}}"
        """,
    )
    # The docstring promises "the file, key and line": the line of the "#dev" key.
    assert_config_error(config, result, "plugins.greeter.rooms.#dev", 6)


# -- mentions ---------------------------------------------------------------------


def lobby_and_dev(server):
    """alice in #lobby; bob moved to #dev (and out of #lobby)."""
    alice = named(server, "alice")
    bob = named(server, "bob")
    bob.send("/join #dev")
    bob.send("/part #lobby")
    bob.expect(r"^\*\*\* you are now talking in #dev$")
    sync(alice, bob)
    return alice, bob


def test_mention_tells_a_user_in_another_room(chatd_server):
    server = chatd_server(plugin_dirs=[PLUGINS])
    alice, bob = lobby_and_dev(server)
    alice.send("hey @bob look")
    bob.expect_line("*** [mentions] alice mentioned you in #lobby: hey @bob look")
    bob.expect_nothing(0.2)
    alice.expect_nothing(0.1)


def test_mention_in_the_same_room_is_just_the_message(chatd_server):
    server = chatd_server(plugin_dirs=[PLUGINS])
    alice = named(server, "alice")
    bob = named(server, "bob")
    sync(alice)
    alice.send("hey @bob look")
    bob.expect_line("<alice> hey @bob look")
    bob.expect_nothing(0.3)


def test_mention_of_a_room_member_talking_elsewhere_is_just_the_message(chatd_server):
    # /join does not leave #lobby: bob talks in #dev but still gets #lobby's lines,
    # so he already sees the mention and must not be told twice.
    server = chatd_server(plugin_dirs=[PLUGINS])
    alice = named(server, "alice")
    bob = named(server, "bob")
    bob.send("/join #dev")
    sync(alice, bob)
    alice.send("hey @bob look")
    bob.expect_line("[#lobby] <alice> hey @bob look")  # tagged: bob talks in #dev
    bob.expect_nothing(0.3)


def test_mention_of_an_offline_nick_does_nothing(chatd_server):
    server = chatd_server(plugin_dirs=[PLUGINS])
    alice, bob = lobby_and_dev(server)
    carol = named(server, "carol")
    sync(alice)
    alice.send("is @dave around?")
    carol.expect_line("<alice> is @dave around?")
    alice.expect_nothing(0.2)
    bob.expect_nothing(0.1)


def test_other_plugins_implement_chatd_mention_in_isolation(chatd_server, tmp_path):
    extra = tmp_path / "extra"
    write_plugin(
        extra,
        "mentionboom",
        """
        from chatd import hookimpl

        @hookimpl
        def chatd_mention(sender, target, text):
            raise RuntimeError("pager is down for " + target.nick)
        """,
    )
    write_plugin(
        extra,
        "mentionlog",
        """
        from chatd import hookimpl

        @hookimpl
        def chatd_mention(sender, target, text):
            sender.notice(f"recorded: {sender.nick} -> {target.nick}: {text}")
        """,
    )
    server = chatd_server(plugin_dirs=[PLUGINS, str(extra)])
    alice, bob = lobby_and_dev(server)
    alice.send("hey @bob and @Bob again")
    # The built-in implementation still ran: bob is told once.
    bob.expect_line("*** [mentions] alice mentioned you in #lobby: hey @bob and @Bob again")
    bob.expect_nothing(0.2)
    got = [alice.recv_line(), alice.recv_line()]
    assert sorted(got) == [
        "! internal error in plugin 'mentionboom'; the server goes on",
        "*** [mentionlog] recorded: alice -> bob: hey @bob and @Bob again",
    ], got
    alice.expect_nothing(0.2)
    log = server.wait_for_log(r"plugin 'mentionboom' failed in chatd_mention").string
    assert "RuntimeError: pager is down for bob" in log


# -- dice ---------------------------------------------------------------------------


def test_roll_without_arguments_is_one_d6(chatd_server):
    server = chatd_server(plugin_dirs=[PLUGINS])
    alice = named(server, "alice")
    bob = named(server, "bob")
    sync(alice)
    alice.send("/roll")
    value = int(alice.expect(r"^\*\*\* \[dice\] alice rolled 1d6: (\d+)$").group(1))
    assert 1 <= value <= 6
    bob.expect_line(f"*** [dice] alice rolled 1d6: {value}")


def test_roll_with_a_bad_spec_shows_the_usage(chatd_server):
    server = chatd_server(plugin_dirs=[PLUGINS])
    alice = named(server, "alice")
    bob = named(server, "bob")
    sync(alice)
    alice.send("/roll banana")
    line = alice.recv_line()
    assert line.startswith("! ") and line.endswith("usage: /roll [NdM]"), line
    bob.expect_nothing(0.2)


def test_roll_2d6_sums_stay_in_range(chatd_server):
    server = chatd_server(plugin_dirs=[PLUGINS])
    alice = named(server, "alice")
    for _ in range(30):
        alice.send("/roll 2d6")
    for _ in range(30):
        line = alice.recv_line()
        match = re.fullmatch(r"\*\*\* \[dice\] alice rolled 2d6: (\d+) \+ (\d+) = (\d+)", line)
        assert match, line
        a, b, total = (int(g) for g in match.groups())
        assert 1 <= a <= 6 and 1 <= b <= 6 and a + b == total, line
        assert 2 <= total <= 12
