"""Issue 18, the accounts' part, on real chatd processes.

* Rule 5: look-alikes are one name for registered nicks: registration, /identify,
  the grace, private messages to a holder, and a look-alike account from before
  that can never rename the real owner.
* Rule 6: an unidentified holder of a registered nick cannot speak as it (line and
  jsonl), is told why each time, and the grace rename still happens.
* Rule 8: a busy server's refusals are not failed attempts; one address's flood of
  password checks cannot starve someone else's /identify; /drop and /password at
  once cannot bring a dropped account back; a dropped nick's private history goes.
* Rule 10: ``plugins.accounts.registration``: open, operators, closed.

The guessing limits themselves are in tests/test_accounts.py, the fair queue's
order in-process in tests/test_account_limits.py.
"""

from __future__ import annotations

import re
import signal
import sqlite3
from pathlib import Path

from disks import DISK_PROBLEM, take_every_free_byte
from test_accounts import (  # the helpers of the accounts tests (tests/ is on sys.path)
    BUSY,
    OTHER,
    PASSWORD,
    REGISTERED,
    WRONG,
    check_config,
    expect_exact,
    grace_notice,
    named,
    registered,
    sync,
    whois,
)

from chatd.builtin.accounts import hash_password
from chatd.testing import QUICK_STOP, wait_until, write_config

SILENCED = ("! {nick} is registered to someone else: /identify PASSWORD to speak as {nick}, "
            "or /nick NAME to speak under another nick")
LOOKALIKE_TAKEN = "! {nick} looks the same as the registered nick {owner}; choose another nick"


OPER_PASSWORD = "oper-password-1"




def operator(server, nick: str = "op"):
    """A client logged in with /oper (the config must set plugins.oper.password)."""
    client = named(server, nick)
    client.send(f"/oper {OPER_PASSWORD}")
    expect_exact(client, "*** you are now an operator")
    return client


def silenced(nick: str) -> str:
    return SILENCED.format(nick=nick)


def away(client, nick: str = "away") -> None:
    """The owner steps off its nick (keeping its account), so someone else can take it."""
    old = client.nick
    client.send(f"/nick {nick}")
    expect_exact(client, f"*** {old} is now known as {nick}")
    client.nick = nick


# -- rule 5: look-alikes are one name -------------------------------------------------------


def test_a_look_alike_of_a_registered_nick_cannot_be_registered(backend_server):
    """With alice registered (and offline), "aIice" (capital i) can be taken for the
    grace only, with a notice naming alice, and cannot be registered; "ALICE" is the
    same nick in another case and is told it is registered."""
    server = backend_server()
    registered(server, "alice").close()
    mallory = named(server, "aIice")
    expect_exact(mallory, grace_notice("aIice", 60, registered="alice"))
    mallory.send(f"/register {OTHER}")
    expect_exact(mallory, LOOKALIKE_TAKEN.format(nick="aIice", owner="alice"))
    shouter = named(server, "ALICE")
    shouter.send(f"/register {OTHER}")
    expect_exact(shouter, "! ALICE is already registered; /identify PASSWORD if it is yours")


def test_identify_finds_the_account_by_a_look_alike(backend_server):
    """/identify matches by skeleton: holding "aIice", /identify PASSWORD is checked
    against alice's account; the right one identifies as alice and gives the nick as
    registered, a wrong one is a failed attempt for alice."""
    server = backend_server()
    registered(server, "alice").close()
    owner = named(server, "aIice")
    owner.send(f"/identify {OTHER}")
    expect_exact(owner, WRONG)
    owner.send(f"/identify {PASSWORD}")
    expect_exact(owner, "*** you are identified as alice")
    expect_exact(owner, "*** aIice is now known as alice")
    other = server.client()
    other.send("/identify a1ice wrong-password")  # digit one: alice's account again
    expect_exact(other, WRONG)
    server.wait_for_log(r"failed /identify for alice by guest-\d+")


def test_the_holder_of_a_look_alike_is_renamed_after_the_grace(backend_server):
    """The grace rename applies to whoever holds a nick whose skeleton is a registered
    account's: "aIice" is renamed to guest-N when the grace ends."""
    server = backend_server(plugins={"accounts": {"grace_seconds": 0.5}})
    registered(server, "alice").close()
    mallory = named(server, "aIice")
    expect_exact(mallory, grace_notice("aIice", 0.5, registered="alice"))
    guest = mallory.expect(r"^\*\*\* aIice is now known as (guest-\d+)$").group(1)
    expect_exact(mallory, f"*** you did not identify for aIice; you are now {guest}")


def test_changing_case_or_look_alike_does_not_restart_the_grace(backend_server):
    """Hopping between forms of one registered name (case, look-alikes) keeps the one
    grace running: the holder is renamed when the first grace ends, and is told once."""
    server = backend_server(plugins={"accounts": {"grace_seconds": 1.0}})
    registered(server, "alice").close()
    mallory = named(server, "alice")
    expect_exact(mallory, grace_notice("alice", 1))
    for nick in ("ALICE", "aIice", "Alice"):
        mallory.send(f"/nick {nick}")
        expect_exact(mallory, f"*** {mallory.nick} is now known as {nick}")
        mallory.nick = nick
    lines = []
    while not (line := mallory.recv_line()).startswith("*** you did not identify"):
        lines.append(line)
    assert lines[-1:] and re.match(r"^\*\*\* Alice is now known as guest-\d+$", lines[-1]), lines
    assert not any("/identify PASSWORD within" in line for line in lines), lines


def test_a_private_message_to_an_unidentified_holder_is_refused(backend_server):
    """With alice's owner offline, a private message to "alice" or "aIice" held by
    someone who has not identified does not reach them (it was meant for the owner):
    the sender is told, the holder reads nothing."""
    server = backend_server()
    registered(server, "alice").close()
    bob = named(server, "bob")
    for nick in ("alice", "aIice"):
        holder = named(server, nick)
        holder.send("/nick")  # any round trip: the grace notice came before its answer
        bob.send(f"/msg {nick} the launch code is 1234")
        expect_exact(bob, f"! {nick} is held by someone who has not identified for it, "
                          "not by its owner; not sent")
        assert not any("launch code" in line for line in sync(holder))
        holder.close()


def test_a_look_alike_account_from_before_never_renames_the_owner(chatd_server, tmp_path):
    """Two look-alike accounts registered before the rule (alice, then aIice; their
    look-alike forms not stored yet, as in a database from before): the older owns
    the name.  aIice's owner can identify as aIice but cannot take the
    nick from alice, even while alice is online unidentified (within her grace), nor
    hold "aIice" past the grace, nor speak as it; alice's owner takes the name back
    from a holder of "aIice" at once."""
    config = write_config(tmp_path / "config.yaml", storage={"path": "data/chatd.sqlite3"},
                          plugins={"accounts": {"grace_seconds": 60}})
    first = chatd_server(config)
    registered(first, "alice").close()
    assert first.stop() == 0
    with sqlite3.connect(tmp_path / "data" / "chatd.sqlite3") as db:
        db.execute("INSERT INTO accounts (key, nick, password, registered, seen) "
                   "SELECT 'aiice', 'aIice', ?, registered + 1, seen FROM accounts",
                   (hash_password(OTHER, 16384),))
        db.execute("UPDATE accounts SET look = NULL")  # as rows from before the look column
    server = chatd_server(config)
    alice = named(server, "alice")  # the owner, back, not identified yet
    expect_exact(alice, grace_notice("alice", 60))
    mallory = server.client()
    mallory.send(f"/identify aIice {OTHER}")
    expect_exact(mallory, "*** you are identified as aIice")
    expect_exact(mallory, "! aIice looks the same as alice, registered before it by someone "
                          "else: you cannot use that nick (/drop PASSWORD gives aIice up)")
    assert not any("known as" in line for line in sync(alice))
    alice.send(f"/identify {PASSWORD}")
    expect_exact(alice, "*** you are identified as alice")
    away(alice)
    mallory.send("/nick aIice")
    expect_exact(mallory, f"*** {mallory.nick} is now known as aIice")
    expect_exact(mallory, grace_notice("aIice", 60, registered="alice"))
    mallory.send("hello")
    expect_exact(mallory, silenced("aIice"))
    alice.send(f"/identify alice {PASSWORD}")  # the owner takes its name back at once
    expect_exact(alice, "*** away is now known as alice")
    mallory.expect(r"^\*\*\* the owner of alice identified; you are now guest-\d+$")


# -- rule 6: who is speaking is always clear ------------------------------------------------


def test_an_unidentified_holder_cannot_speak_as_the_nick(backend_server):
    """During the grace the holder's messages, actions, private messages and topics are
    refused, each with a "!" line saying to /identify or /nick; nobody sees any of
    them.  Under another nick it speaks again; the owner (identified) speaks as the
    nick."""
    server = backend_server()
    owner = registered(server, "alice")
    away(owner)
    watcher = named(server, "bob")
    mallory = named(server, "alice")
    expect_exact(mallory, grace_notice("alice", 60))
    said = ("hello, I am alice", "/me waves as alice", "/msg bob it is me, alice",
            "/topic alice was here", "//slash text")
    for line in said:
        mallory.send(line)
        expect_exact(mallory, silenced("alice"))
    lines = sync(watcher)
    for text in ("hello", "waves", "it is me", "was here", "slash text"):
        assert not any(text in line for line in lines), (text, lines)
    mallory.send("/nick mal")
    expect_exact(mallory, "*** alice is now known as mal")
    mallory.send("now I speak as myself")
    expect_exact(watcher, "<mal> now I speak as myself")
    owner.send(f"/identify alice {PASSWORD}")
    expect_exact(owner, "*** away is now known as alice")
    owner.send("the real alice")
    expect_exact(watcher, "<alice> the real alice")


def test_an_unidentified_holder_cannot_speak_over_jsonl_either(backend_server):
    """The same rule for a bot on the jsonl listener: say, me and msg get an error
    object saying why; the room hears nothing."""
    server = backend_server(listen=[{"port": 0}, {"port": 0, "protocol": "jsonl"}])
    registered(server, "alice").close()
    watcher = named(server, "bob")
    bot = server.json_client()
    bot.send(cmd="nick", nick="alice")
    bot.expect(type="notice", text=grace_notice("alice", 60)[4:])
    for request in ({"cmd": "say", "text": "hi"}, {"cmd": "me", "text": "waves"},
                    {"cmd": "msg", "to": "bob", "text": "psst"}):
        bot.send(request)
        bot.expect(type="error", text=silenced("alice")[2:])
    lines = sync(watcher)
    for text in ("hi", "waves", "psst"):
        assert not any(text in line for line in lines), (text, lines)


def test_an_unidentified_holder_cannot_post_through_a_plugin_command_either(backend_server,
                                                                            tmp_path):
    """A plugin command that posts to the room for its caller (``/roll``: "alice rolled
    1d6") is speech as the nick, as it is for a mute: refused for a holder in the
    grace, who is told why; the room sees nothing.  The owner's roll goes through."""
    dice = tmp_path / "dice-only"
    dice.mkdir()
    (dice / "dice.py").write_text((Path(__file__).parent.parent / "plugins" / "dice.py")
                                  .read_text())
    server = backend_server(plugin_dirs=[str(dice)])
    owner = registered(server, "alice")
    away(owner)
    watcher = named(server, "bob")
    mallory = named(server, "aIice")
    expect_exact(mallory, grace_notice("aIice", 60, registered="alice"))
    mallory.send("/roll")
    expect_exact(mallory, silenced("aIice") + "; /roll's post to #lobby was not sent")
    assert not any("rolled" in line for line in sync(watcher))
    owner.send(f"/identify alice {PASSWORD}")
    expect_exact(owner, "*** away is now known as alice")
    owner.send("/roll")
    watcher.expect(r"^\*\*\* \[dice\] alice rolled 1d6: [1-6]$")


def test_a_part_or_quit_reason_of_an_unidentified_holder_is_dropped(backend_server):
    """Part and quit reasons are speech too: the part and the quit happen, the reason
    is not shown."""
    server = backend_server()
    registered(server, "alice").close()
    watcher = named(server, "bob")
    watcher.send("/join #dev")
    expect_exact(watcher, "*** bob joined #dev")
    mallory = named(server, "alice")
    mallory.send("/join #dev")
    expect_exact(watcher, "*** alice joined #dev")
    mallory.send("/part #dev I am the real alice")
    mallory.expect(r"^! .*registered to someone else.*$")
    part = watcher.expect(r"^\*\*\* alice left #dev.*$").group()
    assert "real alice" not in part, part
    mallory.send("/quit the real alice says bye")
    quit_line = watcher.expect(r"^\*\*\* alice (quit|left).*$").group()
    assert "real alice" not in quit_line, quit_line


def test_a_reload_keeps_the_holder_silent_and_its_grace_running(chatd_server, tmp_path):
    """A reload replaces the plugins and cancels their timers: the holder of a
    registered nick must still be unable to speak afterwards, and still be renamed
    when its grace ends (the same deadline, not a fresh one)."""
    config = write_config(tmp_path / "config.yaml", storage={"path": "data/chatd.sqlite3"},
                          plugins={"accounts": {"grace_seconds": 1.5},
                                   "oper": {"password": OPER_PASSWORD}})
    server = chatd_server(config)
    registered(server, "alice").close()
    op = operator(server)
    mallory = named(server, "alice")
    expect_exact(mallory, grace_notice("alice", 1.5))
    op.send("/reload")
    expect_exact(op, "*** reloaded the config and the plugins")
    mallory.send("after the reload")
    expect_exact(mallory, silenced("alice"))
    guest = mallory.expect(r"^\*\*\* alice is now known as (guest-\d+)$").group(1)
    expect_exact(mallory, f"*** you did not identify for alice; you are now {guest}")


# -- rule 8: no lock-out, no starving, no resurrection ----------------------------------------


def test_busy_refusals_never_count_as_failed_attempts(backend_server):
    """Eight connections from one address guess alice's password at once: the fair
    queue takes 3 of them (one checking, two waiting), the rest are told the server
    is busy.  Only the 3 checked count: the same address (5 failures for a nick shut
    it out of that nick) may still identify with the right password.  (scrypt_n is
    doubled so that a check outlasts the eight lines' arrival on a loaded machine.)"""
    server = backend_server(plugins={"accounts": {"scrypt_n": 32768}})
    registered(server, "alice").close()
    guessers = [server.client() for _ in range(8)]
    for number, guesser in enumerate(guessers):
        guesser.send(f"/identify alice wrong-guess-{number}")
    answers = [guesser.expect(r"^! .*$").group() for guesser in guessers]
    assert set(answers) <= {WRONG, BUSY}, answers
    assert BUSY in answers and answers.count(WRONG) < 5, answers
    owner = server.client()
    owner.send(f"/identify alice {PASSWORD}")
    expect_exact(owner, "*** you are identified as alice")


def test_one_addresss_password_flood_cannot_starve_another_addresss_identify(backend_server):
    """Twenty connections of one user (one address, one account) send /password at
    once, more than the server checks at a time; then alice, from another address,
    sends /identify.  The flood is refused "busy" beyond its own lane; alice's
    check is queued and answered, not refused."""
    server = backend_server()
    registered(server, "alice").close()
    registered(server, "flood", OTHER).close()
    flood = []
    for _ in range(20):
        client = server.client()
        client.send(f"/identify flood {OTHER}")
        expect_exact(client, "*** you are identified as flood")
        flood.append(client)
    for client in flood:
        client.send(f"/password {OTHER} flood-password-2")
    victim = server.client(source="127.0.0.2")
    victim.send(f"/identify alice {PASSWORD}")
    expect_exact(victim, "*** you are identified as alice")
    answers = [client.expect(r"^(! .*|\*\*\* the password of flood is changed)$").group()
               for client in flood]
    assert BUSY in answers, answers


def test_drop_and_password_at_once_cannot_resurrect_the_account(chatd_server, tmp_path):
    """Two connections identified as alice send /password and /drop at the same moment
    (from two addresses, so both are checked at once): exactly one succeeds, the other
    is told the account changed meanwhile; a dropped account stays dropped (in memory,
    on disk), a changed one has the new password.  On one connection, both in one
    packet, they run in order."""
    config = write_config(tmp_path / "config.yaml", storage={"path": "data/chatd.sqlite3"})
    server = chatd_server(config)
    first = registered(server, "alice")
    second = server.client(source="127.0.0.2")
    second.send(f"/identify alice {PASSWORD}")
    expect_exact(second, "*** you are identified as alice")
    first.send(f"/password {PASSWORD} {OTHER}")
    second.send(f"/drop {PASSWORD}")
    changed = first.expect(r"^(! .*|\*\*\* the password of alice is changed)$").group()
    dropped = second.expect(r"^(! .*|\*\*\* alice is no longer registered.*)$").group()
    successes = [not line.startswith("!") for line in (changed, dropped)]
    assert successes.count(True) == 1, (changed, dropped)
    checker = server.client(source="127.0.0.3")
    checker.send(f"/identify alice {OTHER}")
    if successes[1]:  # dropped
        expect_exact(checker, "! alice is not registered")
    else:
        expect_exact(checker, "*** you are identified as alice")
    packet = registered(server, "carol", source="127.0.0.4")
    packet.send_raw(f"/drop {PASSWORD}\n/password {PASSWORD} {OTHER}\n".encode())
    expect_exact(packet, "*** carol is no longer registered; anyone may use it")
    expect_exact(packet, "! identify first (/identify NICK PASSWORD)")
    assert server.stop() == 0
    with sqlite3.connect(tmp_path / "data" / "chatd.sqlite3") as db:
        keys = [key for (key,) in db.execute("SELECT key FROM accounts ORDER BY key")]
    assert keys == ([] if successes[1] else ["alice"]), keys


def test_a_drop_not_on_disk_yet_outlives_a_reload(chatd_server, tmp_path, small_disk):
    """While the disk is full, a /drop is known in memory until the writer gets it on
    disk; a reload (a new copy of the plugin's state) must not forget it, or the
    dropped account comes back for everyone: its old password identifies again and
    takes the nick from whoever holds it now."""
    config = write_config(tmp_path / "config.yaml",
                          storage={"path": str(small_disk / "chatd.sqlite3")},
                          limits=QUICK_STOP)
    server = chatd_server(config)
    owner = registered(server, "alice")
    assert wait_until(lambda: owner_rows(small_disk) == ["alice"], 5)  # on disk first
    fill(small_disk, owner, server)
    owner.send(f"/drop {PASSWORD}")
    expect_exact(owner, "*** alice is no longer registered; anyone may use it")
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reloaded .*: plugins")
    other = named(server, "bob", source="127.0.0.2")
    other.send(f"/identify alice {PASSWORD}")
    expect_exact(other, "! alice is not registered")


def test_a_dropped_nicks_private_history_stays_gone_across_a_reload(chatd_server, tmp_path,
                                                                      small_disk):
    """The same for the private lines of a dropped nick: while their delete waits for
    a full disk, a reload must not let the next owner of the name read them."""
    config = write_config(tmp_path / "config.yaml", plugins={"history": {"private": True}},
                          storage={"path": str(small_disk / "chatd.sqlite3")},
                          limits=QUICK_STOP)
    server = chatd_server(config)
    alice = registered(server, "alice")
    bob = registered(server, "bob", OTHER)
    alice.send("/msg bob the old secret")
    expect_exact(bob, "*alice* the old secret")
    assert wait_until(lambda: owner_rows(small_disk) == ["alice", "bob"], 5)
    fill(small_disk, alice, server)
    alice.send(f"/drop {PASSWORD}")
    expect_exact(alice, "*** alice is no longer registered; anyone may use it")
    alice.close()
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reloaded .*: plugins")
    newcomer = named(server, "alice", source="127.0.0.2")
    newcomer.send("/register new-alice-password")
    expect_exact(newcomer, REGISTERED.format(nick="alice"))
    newcomer.send("/history bob")
    expect_exact(newcomer, "*** no private history with bob")


def owner_rows(folder: Path) -> list[str]:
    """The accounts on disk now."""
    with sqlite3.connect(folder / "chatd.sqlite3") as db:
        return [key for (key,) in db.execute("SELECT key FROM accounts ORDER BY key")]


def fill(disk: Path, talker, server) -> None:
    """Take every free byte of ``disk``, then have ``talker`` say what the writer can no
    longer commit: it waits and retries, and everything after it waits too."""
    take_every_free_byte(disk)
    for i in range(30):
        talker.send(f"filling {i} {'x' * 1000}")
    server.wait_for_log(DISK_PROBLEM, timeout=10)


def test_a_dropped_nick_takes_its_private_history_with_it(chatd_server, tmp_path):
    """alice and bob talk privately (kept: history.private); alice drops her nick; the
    next owner of "alice" reads nothing of it with /history bob, nor does bob with
    /history alice; after a restart the file holds none of it either."""
    config = write_config(tmp_path / "config.yaml", storage={"path": "data/chatd.sqlite3"},
                          plugins={"history": {"private": True}})
    server = chatd_server(config)
    alice = registered(server, "alice")
    bob = registered(server, "bob", OTHER)
    alice.send("/msg bob the old secret")
    expect_exact(bob, "*alice* the old secret")
    bob.send("/history alice")
    expect_exact(bob, "*** private history with alice: the last line")
    alice.send(f"/drop {PASSWORD}")
    expect_exact(alice, "*** alice is no longer registered; anyone may use it")
    alice.close()
    newcomer = named(server, "alice", source="127.0.0.2")
    newcomer.send("/register new-alice-password")
    expect_exact(newcomer, REGISTERED.format(nick="alice"))
    newcomer.send("/history bob")
    expect_exact(newcomer, "*** no private history with bob")
    bob.send("/history alice")
    expect_exact(bob, "*** no private history with alice")
    assert server.stop() == 0
    with sqlite3.connect(tmp_path / "data" / "chatd.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM history WHERE kind = 'privmsg'"
                          ).fetchone() == (0,)


# -- rule 10: who may register --------------------------------------------------------------


def test_registration_closed_refuses_everyone(backend_server):
    """registration: closed: nobody registers a nick, an operator neither (for itself
    or anyone); nothing is registered."""
    server = backend_server(plugins={"accounts": {"registration": "closed"},
                                   "oper": {"password": OPER_PASSWORD}})
    alice = named(server, "alice")
    alice.send(f"/register {PASSWORD}")
    expect_exact(alice, "! registering nicks is closed on this server")
    op = operator(server)
    for command in (f"/register {PASSWORD}", f"/register bob {PASSWORD}"):
        op.send(command)
        expect_exact(op, "! registering nicks is closed on this server")
    alice.send(f"/identify {PASSWORD}")
    expect_exact(alice, "! alice is not registered (/register PASSWORD registers it)")


def test_registration_by_operators_only(backend_server):
    """registration: operators: a user's /register is refused, pointing to an
    operator; an operator registers its own nick, and /register NICK PASSWORD for
    someone else, who then identifies with that password; a holder of NICK at that
    moment starts its grace."""
    server = backend_server(plugins={"accounts": {"registration": "operators"},
                                   "oper": {"password": OPER_PASSWORD}})
    bob = named(server, "bob")
    bob.send(f"/register {PASSWORD}")
    expect_exact(bob, "! only server operators register nicks on this server; ask one to "
                      "/register YOURNICK PASSWORD for you")
    op = operator(server)
    op.send(f"/register {OTHER}")
    expect_exact(op, REGISTERED.format(nick="op"))
    op.send(f"/register bob {PASSWORD}")
    expect_exact(op, "*** bob is registered; its owner identifies with /identify bob "
                     "PASSWORD and changes the password with /password")
    expect_exact(bob, grace_notice("bob", 60))
    bob.send(f"/identify {PASSWORD}")
    expect_exact(bob, "*** you are identified as bob")
    assert "*** bob is identified as bob" in whois(bob, "bob")


def test_a_user_cannot_register_for_someone_else(backend_server):
    """With registration open, /register NICK PASSWORD is for operators: anyone else
    is told a password is one word, and NICK is not registered."""
    server = backend_server()
    alice = named(server, "alice")
    alice.send(f"/register bob {PASSWORD}")
    alice.expect(r"^! a password is one word; usage: .*$")
    alice.send(f"/identify bob {PASSWORD}")
    expect_exact(alice, "! bob is not registered")


def test_a_bad_registration_mode_is_a_config_error(tmp_path):
    """--check-config refuses a registration mode that is not open, operators or
    closed, naming the key and the choices."""
    config = write_config(tmp_path / "config.yaml",
                          plugins={"accounts": {"registration": "invite-only"}})
    result = check_config(config)
    assert result.returncode == 2, result
    assert result.stderr.strip().endswith(
        "plugins.accounts.registration: expected one of open, operators, closed, "
        "got 'invite-only'"), result.stderr


def test_a_holder_may_speak_once_the_owner_drops_the_nick(backend_server):
    """The silence lasts while the nick is registered: when its owner drops it, the
    unidentified holder is told it may keep the nick, and speaks again."""
    server = backend_server()
    owner = registered(server, "alice")
    away(owner)
    mallory = named(server, "alice")
    expect_exact(mallory, grace_notice("alice", 60))
    owner.send(f"/drop {PASSWORD}")
    expect_exact(owner, "*** alice is no longer registered; anyone may use it")
    expect_exact(mallory, "*** alice is no longer registered; you may keep alice")
    mallory.send("hi, the nick is mine now")
    expect_exact(owner, "<alice> hi, the nick is mine now")
