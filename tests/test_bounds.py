"""Every resource and every string has a bound: each test pushes past one, and the
well-behaved clients in it still get everything, in order."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from chatd.framing import MAX_COMBINING, decode_line, sanitize, skeleton
from chatd.templates import fill, template_problem
from chatd.testing import InProcessChat


def check_config(path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatd", "--config", str(path), "--check-config"],
        capture_output=True, text=True, timeout=60,
    )


# -- rooms --------------------------------------------------------------------------


def test_rooms_per_client_and_in_total_are_capped():
    with InProcessChat(limits={"max_rooms_per_client": 5, "max_rooms": 8}) as chat:
        alice, bob = chat.connect(), chat.connect()
        for i in range(4):
            alice.send(f"/join #a{i}")
        alice.lines()
        alice.send("/join #a4")
        assert alice.lines() == ["! you are in 5 rooms, the most one may be in; /part one first"]
        alice.send("/join #a0")  # switching to one it is in is always fine
        assert alice.lines() == ["*** you are now talking in #a0"]
        for i in range(3):
            bob.send(f"/join #b{i}")
        bob.lines()
        bob.send("/join #b3")
        assert bob.lines() == [
            "! this server has 8 rooms, as many as it may; join one that exists (/list)"
        ]
        bob.send("/join #a1")  # an existing room is fine
        assert "*** guest-2 joined #a1" in bob.lines()
        bob.send("still talking")
        assert alice.lines()[-1] == "[#a1] <guest-2> still talking"


def test_listings_stay_short_however_big_the_server():
    with InProcessChat(limits={"max_rooms": 10000}) as chat:
        owner = chat.connect()
        for i in range(300):  # 300 rooms, each kept alive by a member
            member = chat.connect()
            member.send(f"/join #room{i:03d}")
            member.send("/part #lobby")
        for _ in range(150):
            chat.connect()
        owner.lines()
        owner.send("/rooms")
        rooms = owner.lines()
        assert len(rooms) == 1 and len(rooms[0]) < 1500, len(rooms[0])
        assert "and 271 more (/list)" in rooms[0]
        owner.send("/who")
        who = owner.lines()
        assert len(who) == 1 and "and 51 more" in who[0] and len(who[0]) < 2000
        owner.send("/list 15")
        assert len(owner.lines()) <= 21


def test_delivery_cost_does_not_grow_with_a_recipients_rooms():
    """A member of 25 rooms, two of them busy in one tick: it is counted once per
    busy room's member list, not by walking its 25 rooms for every line."""
    with InProcessChat() as chat:
        hub = chat.connect()
        for i in range(24):
            hub.send(f"/join #r{i}")
        a, b = chat.connect(), chat.connect()
        a.send("/join #r0")
        b.send("/join #r1")
        hub.send("/switch #lobby")
        hub.lines()
        a.protocol.data_received(memoryview(b"from r0\n"))
        b.protocol.data_received(memoryview(b"from r1\n"))
        chat.tick()
        assert hub.lines() == ["[#r0] <guest-2> from r0", "[#r1] <guest-3> from r1"]


# -- strings ------------------------------------------------------------------------


def test_look_alike_nicks_are_one_nick():
    assert skeleton("aIice") == skeleton("alice") == skeleton("ALICE".lower())
    assert skeleton("rnallory") == skeleton("mallory")
    assert skeleton("r00t") == "root"
    with InProcessChat() as chat:
        alice, mallory = chat.connect(), chat.connect()
        alice.send("/nick alice")
        mallory.lines()
        for fake in ("aIice", "ALICE", "a1ice"):
            mallory.send(f"/nick {fake}")
            assert mallory.lines() == [f"! the nick {fake} is taken"], fake
        mallory.send("/nick r00t")
        assert mallory.lines() == ["! the nick 'r00t' is reserved"]
        mallory.send("/msg aIice psst")  # the look-alike reaches the one alice
        assert alice.lines()[-1] == "*guest-2* psst"


@pytest.mark.parametrize(
    "text",
    [
        "z" + "\u0301\u0316\u0317\u0318\u0319\u031a\u031b\u031c" * 20 + "algo",
        "a\u200bb\u00adc\u2060d\u180ee\ufeff",
        "tags\U000e0041\U000e0042 hidden",
        "filler\u3164\u115fhere",
    ],
)
def test_zalgo_and_invisible_characters_are_bounded(text):
    clean = sanitize(text)
    run = 0
    for char in clean:
        run = run + 1 if 0x300 <= ord(char) <= 0x36F else 0
        assert run <= MAX_COMBINING
    for invisible in "\u200b\u00ad\u2060\u180e\ufeff\u3164\u115f":
        assert invisible not in clean
    assert not any(0xE0000 <= ord(c) <= 0xE007F for c in clean)


def test_zwj_stays_inside_emoji_and_goes_elsewhere():
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert sanitize(f"{family} a\u200db") == f"{family} ab"
    assert decode_line(f"{family}\n".encode()[:-1]) == family


def test_a_zalgo_line_reaches_the_room_bounded_and_the_next_line_clean():
    with InProcessChat() as chat:
        alice, bob = chat.connect(), chat.connect()
        bob.lines()
        alice.send(("he" + "\u0334" * 200 + "llo").encode() + b"\n")
        alice.send("next")
        got = bob.lines()
        assert got == [f"<guest-1> he{chr(0x334) * MAX_COMBINING}llo", "<guest-1> next"]


def test_the_wordfilter_matches_after_the_same_normalisation():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "plugins" / "wordfilter.py"
    spec = importlib.util.spec_from_file_location("wf_bounds", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with InProcessChat(module, plugins={"wordfilter": {"block": ["spamlink"]}}) as chat:
        alice, bob = chat.connect(), chat.connect()
        alice.lines(), bob.lines()
        for sneaky in ("spamIink", "spam1ink", "spam\u200blink", "SPAM\u00adLINK"):
            alice.send(sneaky)
            assert alice.lines() == ["! your message was not sent: it contains a blocked word"]
        assert bob.lines() == []


# -- config -------------------------------------------------------------------------


def test_an_oversized_or_non_regular_config_is_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 200_000)
    result = check_config(big)
    assert result.returncode == 2 and "too large" in result.stderr
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    result = check_config(fifo)  # would block forever if opened naively
    assert result.returncode == 2 and "not a regular file" in result.stderr


def test_a_limit_the_system_cannot_give_fails_check_config(tmp_path):
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    config = tmp_path / "c.yaml"
    config.write_text(f"limits: {{reserve_fds: {soft + 1000}}}\n")
    result = subprocess.run(
        [sys.executable, "-c",
         "import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)); "
         "from chatd.cli import main; "
         f"sys.exit(main(['--config', {str(config)!r}, '--check-config']))"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "limits.reserve_fds: RLIMIT_NOFILE is 256" in result.stderr


def test_a_plugin_folder_or_file_others_can_write_is_refused(tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "hello.py").write_text("")
    config = tmp_path / "c.yaml"
    config.write_text(f"plugin_dirs: [{folder}]\nplugin_host: {{entry_points: false}}\n")
    assert check_config(config).returncode == 0
    os.chmod(folder, 0o777)
    result = check_config(config)
    assert result.returncode == 2
    assert "is writable by other users (mode 0o777)" in result.stderr
    assert f"chmod go-w '{folder}'" in result.stderr
    os.chmod(folder, 0o755)
    os.chmod(folder / "hello.py", 0o666)
    result = check_config(config)
    assert result.returncode == 2 and "plugin file" in result.stderr


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("hi {nick.__class__}", "unknown field {nick.__class__}"),
        ("hi {room[0]}", "unknown field {room[0]}"),
        ("hi {nick:>99999999}", "{nick} takes no format"),
        ("hi {nick!r}", "{nick} takes no format"),
        ("hi {password}", "unknown field {password}"),
        ("hi {", "bad template"),
    ],
)
def test_templates_fill_only_their_documented_fields(template, problem):
    found = template_problem(template, ("nick", "room"))
    assert found is not None and problem in found, found
    assert template_problem("Welcome {nick} to {room} {{literally}}", ("nick", "room")) is None
    assert fill("Welcome {nick} to {room} {{x}}", nick="a", room="#b") == "Welcome a to #b {x}"


def test_a_dangerous_welcome_template_stops_the_server_with_the_key(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text('plugins:\n  rooms:\n    welcome: "{nick.__init__.__globals__}"\n')
    result = check_config(config)
    assert result.returncode == 2
    assert "plugins.rooms.welcome" in result.stderr and "unknown field" in result.stderr


# -- a mass disconnect --------------------------------------------------------------


def test_a_mass_disconnect_reaches_a_watcher_once_per_quit_and_in_order(chatd_server):
    """400 clients, each in the watcher's five rooms, drop at once (half with an RST).

    The watcher hears each quit once, not once per shared room, so the storm stays
    far inside its output limit; a line said after the storm arrives after it."""
    import socket

    from chatd.testing import reset

    server = chatd_server()
    rooms = [f"#m{i}" for i in range(5)]
    watcher = server.client()
    for room in rooms:
        watcher.send(f"/join {room}")
        watcher.expect(rf"also in {room}|you are the first in {room}")
    talker = server.client()
    talker.send("/join #m0")
    talker.expect(r"also in #m0")
    crowd: list[socket.socket] = []
    for i in range(400):
        sock = socket.create_connection(server.address, timeout=10)
        joins = "".join(f"/join {room}\n" for room in rooms)
        sock.sendall(f"{joins}/nick c{i}\n".encode())
        crowd.append(sock)
    watcher.expect(r"c399", timeout=30)  # the last newcomer has arrived
    for _ in range(3000):  # drain the joins, so only the storm follows
        try:
            watcher.recv_line(timeout=0.5)
        except AssertionError:  # nothing more within half a second
            break
    for i, sock in enumerate(crowd):
        reset(sock) if i % 2 else sock.close()
    quits: list[str] = []
    while len(quits) < 400:
        line = watcher.recv_line(timeout=30)
        assert "quit" in line, line
        quits.append(line)
    talker.send("after the storm")
    assert watcher.recv_line(timeout=30) == f"[#m0] <{talker.nick}> after the storm"
    watcher.expect_nothing()
    assert sorted(quits) == sorted(set(quits))  # each quit once
    assert {q.split()[1] for q in quits} == {f"c{i}" for i in range(400)}
