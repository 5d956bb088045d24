"""Registered rooms and moderation: real chatd processes on real SQLite files.

Founders and the operators they name, kicks, bans (by nick, account or
address mask, with expiry), mutes, invite-only rooms and locked topics; what a
registered room keeps across a restart and while empty; that every action is
announced to the room and logged.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

from chatd.testing import QUICK_STOP, ChatClient, write_config

PASSWORD = "correct-horse"
OPER_PASSWORD = "oper-secret-1"
PLUGINS = {"accounts": {"registrations_per_hour": 100},
           "oper": {"password": OPER_PASSWORD}}




def _config(path: Path) -> Path:
    return write_config(path, storage={"path": "data/chatd.sqlite3"}, plugins=PLUGINS)


def _named(server, nick: str):
    client = server.client()
    client.send(f"/nick {nick}")
    client.expect(rf"is now known as {nick}$")
    return client


def _registered(server, nick: str):
    """A client with ``nick``, registered and identified."""
    client = _named(server, nick)
    client.send(f"/register {PASSWORD}")
    client.expect(rf"^\*\*\* {nick} is registered to you")
    return client


def _identified(server, nick: str):
    client = _named(server, nick)
    client.send(f"/identify {PASSWORD}")
    _see(client, f"*** you are identified as {nick}")
    return client


def _in(client, room: str) -> None:
    client.send(f"/join {room}")
    client.expect(rf"^\*\*\* (you are the first in|also in) {room}")


def _founded(server, nick: str, room: str):
    founder = _registered(server, nick)
    _in(founder, room)
    founder.send(f"/register {room}")
    _see(founder, f"*** {room} is registered; its founder is {nick}")
    return founder


def _see(client, line: str) -> None:
    """``line`` arrives (others' joins and renames in the lobby may come before it)."""
    client.expect("^" + re.escape(line) + "$")


def _sync(*clients) -> None:
    """A round trip on each client: everything sent before it was handled."""
    for client in clients:
        client.send("/rooms")
        client.expect(r"^\*\*\* \d+ rooms?:")


def test_registering_a_room_needs_an_identified_member(backend_server):
    server = backend_server(plugins=PLUGINS)
    bob = _named(server, "bob")
    _in(bob, "#dev")
    bob.send("/register #dev")
    _see(bob, "! identify first: a room is registered to your account")
    alice = _registered(server, "alice")
    alice.send("/register #dev")
    _see(alice, "! join #dev first: you register a room you are in")
    alice.send("/register #lobby")
    _see(alice, "! #lobby is the server's default room: its operators are the server "
                      "operators")
    _in(alice, "#dev")
    alice.send("/register #dev")
    _see(alice, "*** #dev is registered; its founder is alice")
    _see(bob, "*** #dev is registered; its founder is alice")
    alice.send("/register #dev")
    _see(alice, "! #dev is already registered")
    bob.send("/roomset #dev")
    _see(bob, "*** #dev: founder alice; operators: none")
    _see(bob, "*** #dev: topic-lock off, invite-only off")


def test_members_who_are_not_operators_cannot_moderate(backend_server):
    server = backend_server(plugins=PLUGINS)
    alice = _founded(server, "alice", "#dev")
    bob = _named(server, "bob")
    _in(bob, "#dev")
    for command in ("/kick alice", "/ban alice", "/mute alice",  # /invite: any member's
                    "/roomset topic-lock on", "/unban x!*@*"):  # (tests/test_mode_events.py)
        bob.send(command)
        _see(bob, "! permission denied: you are not an operator of #dev")
    bob.send("/op bob")
    _see(bob, "! permission denied: you are not an operator of #dev")
    _sync(alice)
    alice.expect_nothing(0.2)


def test_kick_puts_a_member_out_and_they_may_come_back(backend_server):
    server = backend_server(plugins=PLUGINS)
    alice = _founded(server, "alice", "#dev")
    bob = _named(server, "bob")
    _in(bob, "#dev")
    alice.expect(r"bob joined #dev")
    alice.send("/kick bob flooding")
    _see(bob, "*** you were kicked from #dev by alice: flooding")
    _see(alice, "*** bob left #dev (kicked by alice: flooding)")
    bob.send("/who #dev")
    _see(bob, "*** #dev has 1 member: alice")
    _in(bob, "#dev")
    server.wait_for_log(r"chatd\.moderation: alice kicked bob from #dev: flooding")


def test_a_ban_with_a_time_keeps_out_until_it_expires(backend_server):
    server = backend_server(plugins=PLUGINS)
    alice = _founded(server, "alice", "#dev")
    bob = _named(server, "bob")
    _in(bob, "#dev")
    alice.send("/ban bob!*@* 2s spamming")
    _see(alice, "*** alice banned bob!*@* in #dev for 2 s: spamming")
    _see(bob, "*** alice banned bob!*@* in #dev for 2 s: spamming")
    _see(bob, "*** you are banned from #dev: spamming")
    _see(alice, "*** bob left #dev (banned by alice: spamming)")
    banned_at = time.monotonic()
    bob.send("/join #dev")
    bob.expect(r"^! you are banned from #dev \(until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\): "
               r"spamming$")
    alice.send("/bans")
    alice.expect(r"^\*\*\* ban bob!\*@\* by alice, until .* UTC: spamming$")
    time.sleep(max(0.0, 2.2 - (time.monotonic() - banned_at)))
    _in(bob, "#dev")
    alice.send("/bans")
    _see(alice, "*** no bans or mutes in #dev")


def test_ban_by_account_follows_the_account_across_nicks(backend_server):
    server = backend_server(plugins=PLUGINS)
    alice = _founded(server, "alice", "#dev")
    mallory = _registered(server, "mallory")
    mallory.send("/nick notmallory")
    mallory.expect("is now known as notmallory")
    _in(mallory, "#dev")
    alice.send("/ban notmallory")  # identified: the ban is on the account
    _see(alice, "*** alice banned notmallory in #dev")
    # And on the address they came from, but alice (an operator) shares it: not that.
    _see(alice, "*** notmallory is banned in #dev as *!mallory@* (not by address: an "
                "operator is connected from it too)")
    _see(mallory, "*** alice banned notmallory in #dev")  # the room never sees an address
    _see(mallory, "*** you are banned from #dev")
    mallory.send("/nick someoneelse")
    mallory.send("/join #dev")
    _see(mallory, "! you are banned from #dev (until lifted)")
    # So an unidentified client of that address is not banned.
    carol = _named(server, "carol")
    _in(carol, "#dev")


def test_identifying_while_in_a_room_applies_an_account_ban(backend_server):
    server = backend_server(plugins=PLUGINS)
    alice = _founded(server, "alice", "#dev")
    first = _registered(server, "mallory")
    first.close()
    alice.send("/ban *!mallory@*")
    _see(alice, "*** alice banned *!mallory@* in #dev")
    sneaky = _named(server, "sneaky")
    _in(sneaky, "#dev")
    sneaky.send(f"/identify mallory {PASSWORD}")
    _see(sneaky, "*** you are banned from #dev (until lifted)")
    _see(alice, "*** sneaky left #dev (banned)")  # identified first, renamed after


def test_mute_lets_a_member_read_but_not_speak(backend_server):
    server = backend_server(plugins=PLUGINS)
    alice = _founded(server, "alice", "#dev")
    bob = _named(server, "bob")
    _in(bob, "#dev")
    alice.send("/mute bob!*@*")
    _see(alice, "*** alice muted bob!*@* in #dev")
    _see(bob, "*** alice muted bob!*@* in #dev")
    bob.send("can anyone hear me")
    _see(bob, "! you are muted in #dev; your line was not sent")
    bob.send("/me waves")
    _see(bob, "! you are muted in #dev; your line was not sent")
    alice.send("still here")
    _see(bob, "<alice> still here")
    alice.send("/unmute bob!*@*")
    _see(alice, "*** alice unmuted bob!*@* in #dev")
    _see(bob, "*** alice unmuted bob!*@* in #dev")
    bob.send("thanks")
    _see(alice, "<bob> thanks")


def test_a_mute_expires_on_time(backend_server):
    server = backend_server(plugins=PLUGINS)
    alice = _founded(server, "alice", "#dev")
    bob = _named(server, "bob")
    _in(bob, "#dev")
    alice.send("/mute bob!*@* 1s")
    _see(bob, "*** alice muted bob!*@* in #dev for 1 s")
    bob.send("quiet?")
    _see(bob, "! you are muted in #dev; your line was not sent")
    time.sleep(1.2)
    bob.send("free again")
    _see(alice, "<bob> free again")


def test_invite_only_lets_in_operators_and_the_invited_once(backend_server):
    server = backend_server(plugins=PLUGINS)
    alice = _founded(server, "alice", "#dev")
    alice.send("/roomset topic-lock")
    alice.expect(r"^! settings: topic-lock, invite-only; values: on, off; usage: ")
    alice.send("/roomset invite-only on")
    _see(alice, "*** alice set invite-only on in #dev")
    bob = _named(server, "bob")
    bob.send("/join #dev")
    bob.expect(r"^! #dev is invite-only: ask one of its operators to /invite you")
    alice.send("/invite bob")
    _see(bob, "*** alice invites you to #dev: /join #dev")
    _see(alice, "*** alice invited bob to #dev")
    _in(bob, "#dev")
    bob.send("/part #dev")
    bob.expect(r"you are now talking in #lobby")
    bob.send("/join #dev")  # the invite was for one join
    bob.expect(r"^! #dev is invite-only")


def test_an_invite_outlives_a_reload(backend_server):
    """Invites are kept in memory only; a reload (which re-reads the registered rooms
    from the store) must not forget one given before it."""
    server = backend_server(plugins=PLUGINS)
    alice = _founded(server, "alice", "#dev")
    alice.send("/roomset invite-only on")
    _see(alice, "*** alice set invite-only on in #dev")
    bob = _named(server, "bob")
    alice.send("/invite bob")
    _see(bob, "*** alice invites you to #dev: /join #dev")
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reloaded .*: plugins")
    _in(bob, "#dev")


def test_a_locked_topic_is_set_by_operators_only(backend_server):
    server = backend_server(plugins=PLUGINS)
    alice = _founded(server, "alice", "#dev")
    bob = _named(server, "bob")
    _in(bob, "#dev")
    bob.send("/topic anyone may")
    _see(alice, "*** bob set the topic of #dev to: anyone may")
    alice.send("/roomset topic-lock on")
    _see(bob, "*** alice set topic-lock on in #dev")
    bob.send("/topic mine now")
    _see(bob, "! the topic of #dev is locked: its operators set it")
    alice.send("/topic release on friday")
    _see(bob, "*** alice set the topic of #dev to: release on friday")


def test_the_founder_names_operators_who_can_moderate(backend_server):
    server = backend_server(plugins=PLUGINS)
    alice = _founded(server, "alice", "#dev")
    bob = _registered(server, "bob")
    _in(bob, "#dev")
    carol = _named(server, "carol")
    _in(carol, "#dev")
    alice.send("/op carol")
    _see(alice, "! carol is not identified: room operators are registered nicks")
    alice.send("/op bob")
    _see(alice, "*** alice made bob an operator of #dev")
    _see(bob, "*** alice made bob an operator of #dev")
    bob.send("/op carol")  # operators do not name operators
    _see(bob, "! permission denied: only the founder of #dev names its operators")
    bob.send("/kick carol enough")
    _see(carol, "*** you were kicked from #dev by bob: enough")
    bob.send("/kick alice")
    _see(bob, "! alice is an operator of #dev; /deop them first")
    alice.send("/deop bob")
    _see(alice, "*** alice removed bob as an operator of #dev")
    bob.send("/kick alice")
    _see(bob, "! permission denied: you are not an operator of #dev")


def test_a_registered_room_keeps_its_state_across_a_restart_and_while_empty(
        chatd_server, tmp_path):
    config = _config(tmp_path / "config.yaml")
    first = chatd_server(config)
    alice = _founded(first, "alice", "#dev")
    bob = _registered(first, "bob")
    alice.send("/op bob")
    _see(alice, "*** alice made bob an operator of #dev")
    alice.send("/topic the plan")
    alice.expect(r"set the topic of #dev to: the plan")
    alice.send("/roomset topic-lock on")
    alice.expect(r"set topic-lock on")
    alice.send("/ban mallory")
    _see(alice, "*** alice banned mallory in #dev")
    alice.send("/mute *!*@203.0.113.* 1w")
    _see(alice, "*** alice muted *!*@203.0.113.* in #dev for 1 w")
    alice.send("/part #dev")
    alice.expect(r"you are now talking in #lobby")
    # Empty now: the room is gone from /rooms, its rules are not.
    alice.send("/topic #dev")
    _see(alice, "! no such room: #dev")
    alice.close()
    bob.close()
    assert first.stop() == 0

    second = chatd_server(config)
    mallory = _named(second, "mallory")
    mallory.send("/join #dev")
    _see(mallory, "! you are banned from #dev (until lifted)")
    carol = _named(second, "carol")
    carol.send("/join #dev")
    _see(carol, "*** carol joined #dev")
    _see(carol, "*** topic of #dev: the plan")
    carol.send("/topic not the plan")
    _see(carol, "! the topic of #dev is locked: its operators set it")
    carol.send("/roomset")
    _see(carol, "*** #dev: founder alice; operators: bob")
    carol.send("/bans")
    _see(carol, "*** ban mallory by alice, until lifted")
    carol.expect(r"^\*\*\* mute \*!\*@203\.0\.113\.\* by alice, until \d{4}-")
    bob = _identified(second, "bob")
    _in(bob, "#dev")
    bob.send("/kick carol")
    _see(carol, "*** you were kicked from #dev by bob: no reason given")


def test_dropping_a_room_lets_go_of_its_rules(chatd_server, tmp_path):
    config = _config(tmp_path / "config.yaml")
    server = chatd_server(config)
    alice = _founded(server, "alice", "#dev")
    bob = _named(server, "bob")
    _in(bob, "#dev")
    bob.send("/drop #dev")
    _see(bob, "! permission denied: only the founder of #dev can drop it")
    alice.send("/drop #dev")
    _see(alice, "*** #dev is no longer registered")
    _see(bob, "*** #dev is no longer registered")
    alice.send("/roomset #dev")
    _see(alice, "*** #dev is not registered")
    server.stop()
    import sqlite3

    with sqlite3.connect(tmp_path / "data" / "chatd.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM rooms").fetchone() == (0,)


def test_server_operators_moderate_every_room_and_unregistered_bans_end_with_the_room(
        backend_server):
    server = backend_server(plugins=PLUGINS)
    op = _named(server, "op")
    op.send(f"/oper {OPER_PASSWORD}")
    _see(op, "*** you are now an operator")
    bob = _named(server, "bob")
    _in(bob, "#random")
    _in(op, "#random")
    op.send("/ban #random bob!*@* being rude")
    _see(bob, "*** you are banned from #random: being rude")
    bob.send("/join #random")
    bob.expect(r"^! you are banned from #random")
    op.send("/part #random")  # the room empties and goes, and its ban with it
    op.expect(r"you are now talking in")
    _in(bob, "#random")


def test_every_moderation_action_is_logged(backend_server):
    server = backend_server(plugins=PLUGINS)
    alice = _founded(server, "alice", "#dev")
    bob = _named(server, "bob")
    _in(bob, "#dev")
    for command, reply in (
        ("/mute bob!*@*", "muted"), ("/unmute bob!*@*", "unmuted"),
        ("/roomset invite-only on", "set invite-only"), ("/ban bob!*@* 1h", "banned"),
        ("/unban bob!*@*", "unbanned"),
    ):
        alice.send(command)
        alice.expect(rf"^\*\*\* alice {reply} ")
    log = server.wait_for_log(r"alice unbanned bob!\*@\* in #dev").string
    for text in ("#dev is registered; its founder is alice", "alice muted bob!*@* in #dev",
                 "alice unmuted bob!*@* in #dev", "alice set invite-only on in #dev",
                 "alice banned bob!*@* in #dev for 1 h"):
        assert f"chatd.moderation: {text}" in log, text


def test_a_bad_mask_or_time_is_a_clear_error(backend_server):
    server = backend_server(plugins=PLUGINS)
    alice = _founded(server, "alice", "#dev")
    alice.send("/ban a!b!c@d")
    _see(alice, "! not a mask: a!b!c@d (nick!account@address, with * and ?)")
    alice.send("/ban 9lives")
    _see(alice, "! not a nick or a mask: 9lives")
    alice.send("/unban nobody")
    _see(alice, "! no such ban in #dev: nobody (/bans lists its bans)")
    alice.send("/ban")
    alice.expect(r"^! usage: /ban \[#room\] WHO \[TIME\] \[reason\]$")
    alice.send("/ban #nowhere bob")
    _see(alice, "! no such room: #nowhere")


# -- the parts, in-process ---------------------------------------------------------------


def test_masks_match_literally_but_for_star_and_question_mark():
    from chatd.builtin.masks import Identity, Mask

    def matches(mask: str, who: str) -> bool:
        nick, _, rest = who.partition("!")
        account, _, address = rest.partition("@")
        return Mask(mask).covers(Identity.named(nick, account, address))

    assert matches("[bot]!*@*", "[bot]!!@10.0.0.1")  # brackets are nick characters here
    assert not matches("[bot]!*@*", "b!!@10.0.0.1")
    assert matches("*!*@203.0.113.*", "eve!!@203.0.113.9")
    assert not matches("*!*@203.0.113.*", "eve!!@203.0.1139")
    assert matches("ev?!*@*", "eve!!@::1")
    assert not matches("eve!*@*", "eve2!!@::1")  # the whole identity, not a prefix


def test_times_and_expiry():
    from chatd.builtin.moderation.commands import _duration
    from chatd.builtin.moderation.store import Entry

    words = ["2h", "flooding"]
    assert _duration(words) == 7200.0 and words == ["flooding"]
    words = ["flooding", "2h"]
    assert _duration(words) is None and words == ["flooding", "2h"]
    assert _duration(["1w"]) == 604800.0
    assert _duration(["1h30m"]) == 5400.0
    entry = Entry("*!*@*", "op", "", 100.0, 160.0)
    assert entry.active(159.9) and not entry.active(160.0)
    assert Entry("*!*@*", "op", "", 100.0, None).active(1e12)


def test_a_dropped_nick_keeps_no_power_in_rooms(chatd_server, tmp_path):
    """Whoever registers a dropped nick next is someone else: the rooms its old owner
    founded are unregistered and it is no room's operator any more."""
    server = chatd_server(_config(tmp_path / "config.yaml"))
    alice = _founded(server, "alice", "#dev")
    bob = _registered(server, "bob")
    _in(bob, "#dev")
    alice.send("/op bob")
    _see(bob, "*** alice made bob an operator of #dev")
    bob.send(f"/drop {PASSWORD}")
    _see(bob, "*** bob is no longer registered; anyone may use it")
    alice.send("/roomset")
    _see(alice, "*** #dev: founder alice; operators: none")
    alice.send(f"/drop {PASSWORD}")
    _see(bob, "*** #dev is no longer registered: its founder's nick was dropped")
    alice.close()
    heir = _registered(server, "alice")  # someone else takes the nick
    _in(heir, "#dev")
    heir.send("/ban bob")
    _see(heir, "! permission denied: you are not an operator of #dev")
    server.stop()
    import sqlite3

    with sqlite3.connect(tmp_path / "data" / "chatd.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM rooms").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM room_operators").fetchone() == (0,)


# -- masks that cannot stall, look-alikes, mutes everywhere, operators, the person ---------


def test_a_mask_of_many_stars_is_checked_at_once_and_nobody_waits(backend_server):
    """``*a*a*a...`` against a nick of 31 a's: as a regex, every way of placing 20
    a's among 31 is tried before the address fails (C(31, 20), some 84 million, on
    the loop: minutes with the whole server frozen); as a glob, one pass."""
    server = backend_server(plugins=PLUGINS)
    alice = _founded(server, "alice", "#dev")
    mask = "*a" * 20 + "!*@192.0.2.1"  # an address nobody here comes from
    alice.send(f"/ban {mask}")
    _see(alice, f"*** alice banned {mask} in #dev")
    carol, dave = _named(server, "carol"), _named(server, "dave")
    _sync(dave)
    long = _named(server, "a" * 31 + "b")
    long.send("/join #dev")  # checked against the mask (31 a's: it does not match)
    carol.send("still here")
    _see(dave, "<carol> still here")
    long.expect(r"^\*\*\* (you are the first in|also in) #dev")
    alice.send("/ban " + "*a" * 200 + "!*@*")  # longer than any identity: refused
    _see(alice, "! a mask is at most 128 characters")


def test_a_ban_on_a_nick_covers_its_look_alikes(backend_server):
    server = backend_server(plugins=PLUGINS)
    alice = _founded(server, "alice", "#dev")
    alice.send("/ban mallory")
    _see(alice, "*** alice banned mallory in #dev")
    for look_alike in ("rnallory", "MALL0RY", "maIlory"):
        fake = _named(server, look_alike)
        fake.send("/join #dev")
        _see(fake, "! you are banned from #dev (until lifted)")
        fake.close()
    _in(_named(server, "malory"), "#dev")  # one l fewer is another name


def test_a_room_may_not_pass_for_another(backend_server):
    server = backend_server(plugins=PLUGINS)
    bob = _named(server, "bob")
    for fake in ("#Iobby", "#l0bby", "#1obby"):
        bob.send(f"/join {fake}")
        _see(bob, f"! {fake} looks like #lobby: join #lobby, or choose a name that reads "
                  "differently")
    alice = _founded(server, "alice", "#hello")
    bob.send("/join #HELLO")  # another case is the same room, not a look-alike
    _see(bob, "*** also in #hello: alice")
    _see(alice, "*** bob joined #hello")
    alice.send("/part #hello")
    bob.send("/part #hello")
    bob.expect(r"you are now talking in #lobby")
    # #hello is empty and gone from /rooms, but registered: no twin beside it either.
    mallory = _named(server, "mallory")
    mallory.send("/join #he11o")
    _see(mallory, "! #he11o looks like #hello, a registered room: join #hello, or choose a "
                  "name that reads differently")
    _in(mallory, "#hello")


def _dice_dir(tmp_path: Path) -> str:
    """A plugin folder with the example dice plugin alone in it."""
    folder = tmp_path / "dice-only"
    folder.mkdir()
    source = Path(__file__).resolve().parent.parent / "plugins" / "dice.py"
    (folder / "dice.py").write_text(source.read_text())
    return str(folder)


def test_a_mute_silences_the_topic_reasons_and_plugin_posts(chatd_server, tmp_path):
    server = chatd_server(plugins=PLUGINS, plugin_dirs=[_dice_dir(tmp_path)])
    alice = _founded(server, "alice", "#dev")
    bob = _named(server, "bob")
    _in(bob, "#dev")
    _see(alice, "*** bob joined #dev")
    alice.send("/mute bob")
    _see(alice, "*** alice muted bob in #dev")
    _see(alice, "*** bob is muted in #dev as bob!*@* (not by address: an operator is "
                "connected from it too)")
    _see(bob, "*** alice muted bob in #dev")
    bob.send("/topic mine now")
    _see(bob, "! you are muted in #dev; your line was not sent")
    bob.send("/roll 2d6")
    _see(bob, "! you are muted in #dev; /roll's post to #dev was not sent")
    bob.send("/part #dev so long, and thanks")
    _see(bob, "! you are muted in #dev; left without the reason")
    # Nothing of the topic, the roll or the reason reached the room: the part is next.
    alice.expect_line("*** bob left #dev")
    _in(bob, "#dev")
    alice.expect_line("*** bob joined #dev")
    bob.send("/quit see you all")
    alice.expect_line("*** bob quit (Quit)")
    carol = _named(server, "carol")  # not muted: her roll is seen
    _in(carol, "#dev")
    carol.send("/roll")
    _see(alice, "*** carol joined #dev")
    alice.expect(r"^\*\*\* \[dice\] carol rolled 1d6: [1-6]$")


def test_operators_are_not_banned_or_muted_and_are_told_why(backend_server):
    server = backend_server(plugins=PLUGINS)
    alice = _founded(server, "alice", "#dev")
    bob = _registered(server, "bob")
    _in(bob, "#dev")
    alice.send("/op bob")
    _see(bob, "*** alice made bob an operator of #dev")
    op = _named(server, "op")
    op.send(f"/oper {OPER_PASSWORD}")
    _see(op, "*** you are now an operator")
    for sender, command, refusal in (
        (bob, "/ban alice", "alice is the founder of #dev; a founder cannot be banned"),
        (alice, "/mute bob", "bob is an operator of #dev; /deop them first"),
        (alice, "/ban op 1h", "op is a server operator; server operators cannot be banned"),
        (alice, "/ban *!*@127.0.0.1", "*!*@127.0.0.1 matches alice, who is the founder of "
                                      "#dev; a founder cannot be banned"),
        (op, "/mute #dev *!b?b@*", "*!b?b@* matches bob, who is an operator of #dev; "
                                   "/deop them first"),
    ):
        sender.send(command)
        _see(sender, f"! {refusal}")
    bob.close()
    _see(alice, "*** bob quit (connection closed by peer)")
    alice.send("/ban *!bob@*")  # bob is not connected: his account still names him
    _see(alice, "! *!bob@* names bob, who is an operator of #dev; /deop them first")
    alice.send("/bans")
    _see(alice, "*** no bans or mutes in #dev")


def test_a_ban_by_nick_covers_the_person_and_unban_lifts_all_of_it(chatd_server, tmp_path):
    """An identified user is banned by account *and* by the address they came from;
    ``/unban NICK`` lifts both, whoever is connected by then."""
    from chatd.testing import ChatClient
    from chatd.transport.proxy import v1_header

    config = write_config(tmp_path / "config.yaml", plugins=PLUGINS, listen=[
        {"port": 0}, {"port": 0, "proxy_protocol": True, "trusted_proxies": ["127.0.0.1"]},
    ])
    server = chatd_server(config)

    def from_address(address: str, nick: str):
        client = ChatClient((server.host, server.ports[1]))
        client.send_raw(v1_header((address, 4000), ("127.0.0.1", 7788)))
        client.welcome()
        client.send(f"/nick {nick}")
        client.expect(rf"is now known as {nick}$")
        return client

    alice = _founded(server, "alice", "#dev")
    mallory = from_address("203.0.113.9", "mallory")
    mallory.send(f"/register {PASSWORD}")
    mallory.expect(r"^\*\*\* mallory is registered to you")
    _in(mallory, "#dev")
    alice.send("/ban mallory 1h spam")
    _see(alice, "*** alice banned mallory in #dev for 1 h: spam")
    # A founder is no server operator: the address reads as its cloak (as in a /whois).
    cloaked = alice.expect(r"^\*\*\* mallory is banned in #dev as \*!mallory@\*, "
                                r"\*!\*@([0-9a-f]{12}\.cloak)$").group(1)
    _see(mallory, "*** alice banned mallory in #dev for 1 h: spam")  # no address for the room
    _see(mallory, "*** you are banned from #dev: spam")
    mallory.close()
    same_address = from_address("203.0.113.9", "someone")
    same_address.send("/join #dev")
    same_address.expect(r"^! you are banned from #dev \(until .* UTC\): spam$")
    same_account = from_address("198.51.100.1", "other")
    same_account.send(f"/identify mallory {PASSWORD}")
    _see(same_account, "*** you are identified as mallory")
    same_account.send("/join #dev")
    same_account.expect(r"^! you are banned from #dev")
    neighbour = from_address("198.51.100.7", "neighbour")
    _in(neighbour, "#dev")
    neighbour.send("/bans")  # not an operator: who, not their address
    neighbour.expect(r"^\*\*\* ban mallory by alice, until .* UTC: spam$")
    alice.send("/bans")
    alice.expect(rf"^\*\*\* ban mallory \(\*!mallory@\*, \*!\*@{re.escape(cloaked)}\) by alice")
    op = _named(server, "op")
    op.send(f"/oper {OPER_PASSWORD}")
    _see(op, "*** you are now an operator")
    op.send("/bans #dev")  # a server operator reads the address
    op.expect(r"^\*\*\* ban mallory \(\*!mallory@\*, \*!\*@203\.0\.113\.9\) by alice")
    alice.send("/unban mallory")
    _see(alice, "*** alice unbanned mallory in #dev")
    _see(alice, f"*** lifted: *!mallory@*, *!*@{cloaked}")
    _in(same_address, "#dev")
    _in(same_account, "#dev")


def test_unban_and_unmute_of_a_nick_lift_what_was_set_for_it(backend_server):
    """Set while bob was identified (a mask on his account), lifted by his nick once he
    is gone, or renamed: the entry remembers whom it was set for."""
    server = backend_server(plugins=PLUGINS)
    alice = _founded(server, "alice", "#dev")
    bob = _registered(server, "bob")
    _in(bob, "#dev")
    alice.send("/mute bob")
    _see(alice, "*** bob is muted in #dev as *!bob@* (not by address: an operator is "
                "connected from it too)")
    alice.send("/ban bob")
    _see(alice, "*** bob is banned in #dev as *!bob@* (not by address: an operator is "
                "connected from it too)")
    bob.close()
    for command, done in (("/unban bob", "unbanned"), ("/unmute BOB", "unmuted")):
        alice.send(command)
        _see(alice, f"*** alice {done} {command.split()[1]} in #dev")
        _see(alice, "*** lifted: *!bob@*")
    alice.send("/bans")
    _see(alice, "*** no bans or mutes in #dev")


def test_a_time_that_does_not_parse_is_an_error_never_a_ban_until_lifted(backend_server):
    server = backend_server(plugins=PLUGINS)
    alice = _founded(server, "alice", "#dev")
    bob = _named(server, "bob")
    _in(bob, "#dev")
    not_a_time = ("(30s, 10m, 2h, 7d, 1w or a sum such as 1h30m; a reason cannot start "
                  "with a digit)")
    for command, error in (
        ("/ban bob 10x spam", f"not a time: 10x {not_a_time}"),
        ("/ban bob 1.5h", f"not a time: 1.5h {not_a_time}"),
        ("/mute bob 5min", f"not a time: 5min {not_a_time}"),
        ("/mute bob -1h", f"not a time: -1h {not_a_time}"),
        ("/ban bob 0s", "a time is 1s or more"),
        ("/ban bob 999999w", "a time is at most 520w; leave it out for one that lasts "
                             "until lifted"),
    ):
        alice.send(command)
        _see(alice, f"! {error}")
    alice.send("/bans")
    _see(alice, "*** no bans or mutes in #dev")
    alice.send("/ban bob 1h30m flooding")
    _see(alice, "*** alice banned bob in #dev for 90 min: flooding")


def test_an_address_ban_covers_ipv4_clients_of_a_dual_stack_listener(backend_server):
    """On a listener bound to ``::`` (IPv6 and IPv4 on one socket), an IPv4 client
    connects as ``::ffff:127.0.0.7``: it is its IPv4 address everywhere chatd uses
    one, so the operator's ``*!*@127.0.0.7`` keeps it out, and a ban by nick is
    set (and shown, cloaks off: a founder reads a cloak otherwise) on the address the
    operator knows."""
    server = backend_server(plugins=PLUGINS, listen={"host": "::", "port": 0},
                          server={"cloak_addresses": False})
    alice = _founded(server, "alice", "#dev")
    mallory = ChatClient(("127.0.0.1", server.port), source="127.0.0.7")
    mallory.welcome()
    mallory.send("/nick mallory")
    _in(mallory, "#dev")
    alice.send("/ban *!*@127.0.0.7")
    _see(alice, "*** alice banned *!*@127.0.0.7 in #dev")
    _see(mallory, "*** you are banned from #dev")
    mallory.send("/join #dev")
    mallory.expect(r"^! you are banned from #dev")
    alice.send("/unban *!*@127.0.0.7")
    _see(alice, "*** alice unbanned *!*@127.0.0.7 in #dev")
    _in(mallory, "#dev")
    alice.send("/ban mallory")
    _see(alice, "*** mallory is banned in #dev as *!*@127.0.0.7")
    mallory.close()


def test_moderation_not_on_disk_yet_outlives_a_reload(chatd_server, tmp_path, small_disk):
    """While the disk is full, a ban and a /deop are in memory only (their writes wait);
    a reload must not put back what the store still has: the banned stays out, the
    operator taken off stays off."""
    from test_account_safety import fill

    config = write_config(tmp_path / "config.yaml", plugins=PLUGINS,
                          storage={"path": str(small_disk / "chatd.sqlite3")},
                          limits=QUICK_STOP)
    server = chatd_server(config)
    alice = _founded(server, "alice", "#dev")
    bob = _registered(server, "bob")
    alice.send("/op bob")
    _see(alice, "*** alice made bob an operator of #dev")
    mallory = _named(server, "mallory")
    _sync(alice, bob, mallory)
    fill(small_disk, alice, server)
    alice.send("/ban mallory!*@*")
    _see(alice, "*** alice banned mallory!*@* in #dev")
    alice.send("/deop bob")
    _see(alice, "*** alice removed bob as an operator of #dev")
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reloaded .*: plugins")
    mallory.send("/join #dev")
    mallory.expect(r"^! you are banned from #dev")
    _in(bob, "#dev")
    bob.send("/kick #dev alice")
    bob.expect(r"^! permission denied: you are not an operator of #dev$")


def test_a_ban_by_registered_nick_waits_for_a_slow_database_and_holds_only_the_operator(
        postgres_url, postgres, chatd_server):
    """``/ban NICK`` of a registered nick nobody has reads its account off the loop:
    while the database is frozen the operator's later lines wait (in order), everyone
    else chats on; once it answers the ban is set on the nick and on the account --
    never refused because the read was slower than a cut on the loop."""
    server = chatd_server(storage={"url": postgres_url}, plugins=PLUGINS)
    alice = _founded(server, "alice", "#dev")
    _registered(server, "mallory").close()
    bob = _named(server, "bob")
    _in(bob, "#dev")
    postgres.freeze()
    try:
        alice.send("/ban mallory")
        alice.send("said after the ban")
        bob.send("chatting meanwhile")
        _see(alice, "<bob> chatting meanwhile")  # nobody else waits for the database
    finally:
        postgres.thaw()
    _see(bob, "*** alice banned mallory in #dev")
    alice.expect(r"^\*\*\* mallory is banned in #dev as .*\*!mallory@\*")
    _see(bob, "<alice> said after the ban")  # her later line waited for the ban
