"""The built-in *accounts* plugin: registered nicks owned by a password.

/register, /identify [NICK], /password and /drop on real chatd processes; the
grace rename of an unidentified holder and the take-back by the owner; the
limits on failed attempts (per connection, per nick, per address) and on
registrations per address; the password rules; passwords never in the log nor
in clear in the database; accounts across a restart; /whois; config errors.
A few in-process tests cover hash_password and password_matches themselves.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chatd.builtin.accounts import hash_password, password_matches
from chatd.testing import write_config

PASSWORD = "correct-horse-1"
OTHER = "battery-staple-2"
REGISTERED = "*** {nick} is registered to you, and you are identified; next time, " \
             "/identify {nick} PASSWORD"
WRONG = "! wrong password"
CLOSED = "! too many failed password attempts; disconnecting"
NICK_LIMITED = "! too many failed attempts for that nick; try again later"
ADDRESS_LIMITED = "! too many failed attempts from your address; try again later"
REGISTRATIONS_LIMITED = "! too many nicks registered from your address; try again later"
ONE_WORD = "! a password is one word; usage: /register PASSWORD | /register #room"
BUSY = "! the server is busy checking passwords; try again in a moment"
FAST = 1024  # scrypt_n for the in-process tests: the smallest the plugin accepts


def grace_notice(nick: str, seconds: float, registered: str | None = None) -> str:
    """What the holder of a registered nick (or of a look-alike of ``registered``) is told."""
    what = f"{nick} is registered" if registered is None else \
        f"{nick} looks the same as the registered nick {registered}"
    return (f"*** {what}: /identify PASSWORD within {seconds:g} s, or you will be renamed; "
            f"until then you cannot speak as {nick}")


# -- helpers -------------------------------------------------------------------------------




def expect_exact(client, line: str, timeout: float | None = None) -> None:
    """Skip other lines (joins of other clients) until exactly ``line`` arrives."""
    client.expect(f"^{re.escape(line)}$", timeout=timeout)


def named(server, nick: str, **kwargs):
    """A connected client renamed to ``nick``; its own rename line is consumed."""
    client = server.client(**kwargs)
    old = client.nick
    client.send(f"/nick {nick}")
    expect_exact(client, f"*** {old} is now known as {nick}")
    client.nick = nick
    return client


def registered(server, nick: str, password: str = PASSWORD, **kwargs):
    """A client named ``nick`` that registered it (and so is identified for it)."""
    client = named(server, nick, **kwargs)
    client.send(f"/register {password}")
    expect_exact(client, REGISTERED.format(nick=nick))
    return client


def sync(client) -> list[str]:
    """Every line up to the reply of a /rooms round trip (which is not included)."""
    client.send("/rooms")
    lines = []
    while not re.match(r"^\*\*\* \d+ rooms?: ", line := client.recv_line()):
        lines.append(line)
    return lines


def whois(client, nick: str) -> list[str]:
    """The lines of ``/whois nick`` (and whatever else was queued before it)."""
    client.send(f"/whois {nick}")
    return sync(client)


def fail_identify(client, nick: str, times: int) -> None:
    """``times`` wrong passwords for ``nick``, each answered "wrong password"."""
    for attempt in range(times):
        client.send(f"/identify {nick} wrong-guess-{attempt}")
        expect_exact(client, WRONG)


def fail_until_closed(server, nick: str, **kwargs) -> None:
    """A fresh connection fails 5 times for ``nick`` and is closed for it."""
    client = server.client(**kwargs)
    fail_identify(client, nick, 4)
    client.send(f"/identify {nick} wrong-guess-last")
    assert client.expect_eof()[-1:] == [CLOSED]


def check_config(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatd", "--config", str(config), "--check-config"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )


# -- hashing (in process) ------------------------------------------------------------------


def test_a_hash_matches_its_password_and_no_other():
    """password_matches accepts the password a hash was made from and nothing else (not a
    near miss, not another case, not the stored value itself); the stored form says its
    scheme and parameters and does not contain the password."""
    stored = hash_password(PASSWORD, FAST)
    assert stored.startswith(f"scrypt${FAST}$8$1$")
    assert PASSWORD not in stored
    assert password_matches(PASSWORD, stored)
    for wrong in (OTHER, PASSWORD[:-1], PASSWORD.upper(), PASSWORD + " ", "", stored):
        assert not password_matches(wrong, stored), wrong


def test_a_hash_is_salted_two_hashes_of_one_password_differ():
    """Each hash has its own random salt: the same password hashed twice gives two
    different stored values (salts and digests), and both still match it."""
    first, second = hash_password(PASSWORD, FAST), hash_password(PASSWORD, FAST)
    assert first != second
    assert first.split("$")[4] != second.split("$")[4]  # the salts
    assert first.split("$")[5] != second.split("$")[5]  # the digests
    assert password_matches(PASSWORD, first) and password_matches(PASSWORD, second)


@pytest.mark.parametrize("stored", [
    "",
    PASSWORD,                                    # a password stored in clear
    "scrypt$1024$8$1$c2FsdA==",                  # a field missing
    "scrypt$1024$8$1$c2FsdA==$ZGln$extra",       # a field too many
    "md5$1024$8$1$c2FsdA==$ZGln",                # another scheme
    "scrypt$lots$8$1$c2FsdA==$ZGln",             # N not a number
    "scrypt$1000$8$1$c2FsdA==$ZGln",             # N not a power of two
    "scrypt$1024$8$1$!!not-base64!!$ZGln",       # salt not base64
    "scrypt$1024$8$1$c2FsdA==$!!not-base64!!",   # digest not base64
])
def test_a_malformed_stored_value_never_matches(stored):
    """A stored value that is not a well-formed scrypt hash matches no password (it
    returns False, it does not raise), not even a password equal to the value."""
    assert password_matches(PASSWORD, stored) is False
    assert password_matches(stored, stored) is False


# -- /register, /identify, /whois ----------------------------------------------------------


def test_register_identifies_and_whois_shows_the_account_only_when_identified(backend_server):
    """/register identifies its client at once; /whois says "X is identified as Y" for
    an identified client (also after a nick change: the account stays) and for nobody
    else: not a plain nick, not an unidentified holder of a registered nick, not the
    owner once it dropped the nick."""
    server = backend_server()
    alice = registered(server, "alice")
    assert "*** alice is identified as alice" in whois(alice, "alice")
    carol = named(server, "carol")
    assert not any("identified" in line for line in whois(alice, "carol"))
    alice.send("/nick alicia")
    expect_exact(alice, "*** alice is now known as alicia")
    assert "*** alicia is identified as alice" in whois(carol, "alicia")
    mallory = named(server, "alice")  # registered, not identified: within the grace
    expect_exact(mallory, grace_notice("alice", 60))
    lines = whois(carol, "alice")
    assert any(line.startswith("*** alice: in #lobby") for line in lines), lines
    assert not any("identified" in line for line in lines), lines
    alice.send(f"/drop {PASSWORD}")
    expect_exact(alice, "*** alice is no longer registered; anyone may use it")
    assert not any("identified" in line for line in whois(carol, "alicia"))


def test_register_refuses_a_guest_nick_a_registered_nick_and_a_second_time(backend_server):
    """Only a chosen nick can be registered, only once: a guest-N nick is refused, the
    owner registering again is told it is already its own, and someone else holding
    the registered nick is pointed to /identify."""
    server = backend_server()
    guest = server.client()
    guest.send(f"/register {PASSWORD}")
    expect_exact(guest, "! choose your nick first (/nick NAME), then /register PASSWORD")
    alice = registered(server, "alice")
    alice.send(f"/register {OTHER}")
    expect_exact(alice, "! alice is already registered to you")
    alice.send(f"/identify {PASSWORD}")
    expect_exact(alice, "! you are already identified as alice")
    alice.send("/nick alicia")
    expect_exact(alice, "*** alice is now known as alicia")
    mallory = named(server, "alice")
    mallory.send(f"/register {OTHER}")
    expect_exact(mallory, "! alice is already registered; /identify PASSWORD if it is yours")
    mallory.send(f"/identify {OTHER}")
    expect_exact(mallory, WRONG)
    nobody = server.client()
    nobody.send(f"/identify nobody {PASSWORD}")
    expect_exact(nobody, "! nobody is not registered")
    nobody.send(f"/identify {PASSWORD}")
    expect_exact(nobody, f"! {nobody.nick} is not registered (/register PASSWORD registers it)")


def test_password_rules_for_register_and_password(backend_server):
    """A password is one word of min_password_length (here 10) to 256 characters and is
    not the nick itself (in any case); /register and /password apply the same rules,
    and a refused password registers nothing."""
    server = backend_server(plugins={"accounts": {"min_password_length": 10}})
    nick = "longnickname"
    client = named(server, nick)
    for password, error in [
        ("ninechars", "! a password has at least 10 characters"),
        ("x" * 257, "! a password has at most 256 characters"),
        (nick, "! a password cannot be the nick itself"),
        (nick.upper(), "! a password cannot be the nick itself"),
        ("two words-here", ONE_WORD),
        ("", ONE_WORD),
    ]:
        client.send(f"/register {password}".rstrip())
        expect_exact(client, error)
    client.send(f"/identify {PASSWORD}")
    expect_exact(client, f"! {nick} is not registered (/register PASSWORD registers it)")
    client.send(f"/register {'x' * 256}")  # the longest allowed
    expect_exact(client, REGISTERED.format(nick=nick))
    for new, error in [
        ("ninechars", "! a password has at least 10 characters"),
        ("LongNickName", "! a password cannot be the nick itself"),
    ]:
        client.send(f"/password {'x' * 256} {new}")
        expect_exact(client, error)
    client.send(f"/password {'x' * 256} two words")
    expect_exact(client, "! usage: /password OLD NEW")
    client.send(f"/password {'x' * 256} tenchars10")
    expect_exact(client, f"*** the password of {nick} is changed")


# -- the grace rename and the take-back ----------------------------------------------------


def test_an_unidentified_holder_of_a_registered_nick_is_renamed_after_the_grace(backend_server):
    """Taking a registered nick without identifying gets a warning naming the grace;
    when grace_seconds have passed (not before) the holder is renamed to guest-N, and
    the room sees the rename."""
    server = backend_server(plugins={"accounts": {"grace_seconds": 0.5}})
    owner = registered(server, "alice")
    owner.send("/nick owner")
    expect_exact(owner, "*** alice is now known as owner")
    holder = named(server, "alice")
    warned = time.monotonic()
    expect_exact(holder, grace_notice("alice", 0.5))
    rename = holder.expect(r"^\*\*\* alice is now known as (guest-\d+)$")
    assert time.monotonic() - warned >= 0.3, "renamed before the grace was over"
    guest = rename.group(1)
    expect_exact(holder, f"*** you did not identify for alice; you are now {guest}")
    expect_exact(owner, f"*** alice is now known as {guest}")
    holder.expect_nothing(0.3)
    owner.send("/nick alice")  # the nick is free again
    expect_exact(owner, "*** owner is now known as alice")


def test_identifying_within_the_grace_keeps_the_nick(backend_server):
    """A holder that identifies before the grace is over keeps the nick: the timer is
    cancelled for good, so no rename comes after it, not even when the nick is dropped
    (and so no longer identified for) before the grace would have ended."""
    server = backend_server(plugins={"accounts": {"grace_seconds": 0.5}})
    owner = registered(server, "alice")
    owner.send("/nick owner")
    expect_exact(owner, "*** alice is now known as owner")
    second = named(server, "alice")  # the owner's second connection
    expect_exact(second, grace_notice("alice", 0.5))
    second.send(f"/identify {PASSWORD}")
    expect_exact(second, "*** you are identified as alice")
    second.send(f"/drop {PASSWORD}")
    expect_exact(second, "*** alice is no longer registered; anyone may use it")
    second.expect_nothing(1.0)  # twice the grace: no rename
    assert any(line.startswith("*** alice: in #lobby") for line in whois(owner, "alice"))


def test_identify_nick_password_takes_the_nick_back_from_an_unidentified_holder(backend_server):
    """/identify NICK PASSWORD from another nick renames the client to NICK; whoever held
    NICK without identifying becomes guest-N at once and is told why.  A holder that is
    itself identified for NICK keeps it."""
    server = backend_server()  # the shipped 60 s grace: only the take-back renames here
    owner = registered(server, "alice")
    owner.send("/nick owner")
    expect_exact(owner, "*** alice is now known as owner")
    holder = named(server, "alice")
    returning = server.client()  # the owner again, on a new connection
    old = returning.nick
    returning.send(f"/identify alice {PASSWORD}")
    expect_exact(returning, "*** you are identified as alice")
    guest = returning.expect(r"^\*\*\* alice is now known as (guest-\d+)$").group(1)
    expect_exact(returning, f"*** {old} is now known as alice")
    expect_exact(holder, f"*** alice is now known as {guest}")
    expect_exact(holder, f"*** the owner of alice identified; you are now {guest}")
    assert "*** alice is identified as alice" in whois(holder, "alice")
    third = server.client()
    third.send(f"/identify alice {PASSWORD}")
    expect_exact(third, "*** you are identified as alice")
    expect_exact(third, "*** alice is in use by another connection identified as alice")
    assert not any("known as" in line for line in sync(third) + sync(returning))


def test_an_identified_owner_under_another_nick_can_take_its_nick_back(backend_server):
    """The owner keeps its account when it changes nick; if someone then takes the nick
    unidentified, /identify NICK PASSWORD must still take it back at once (the module
    docstring's promise), not answer "you are already identified"."""
    server = backend_server()
    owner = registered(server, "alice")
    owner.send("/nick owner")
    expect_exact(owner, "*** alice is now known as owner")
    holder = named(server, "alice")
    owner.send(f"/identify alice {PASSWORD}")
    reply = owner.expect(r"^(! .*|\*\*\* owner is now known as alice)$").group(1)
    assert not reply.startswith("!"), f"the owner could not take its nick back: {reply!r}"
    holder.expect(r"^\*\*\* the owner of alice identified; you are now guest-\d+$")


# -- /password and /drop -------------------------------------------------------------------


def test_password_changes_the_password_and_needs_the_old_one(backend_server):
    """/password OLD NEW needs identification and the right OLD (a wrong one is a failed
    attempt); afterwards NEW identifies and OLD does not."""
    server = backend_server()
    stranger = named(server, "stranger")
    stranger.send(f"/password {PASSWORD} {OTHER}")
    expect_exact(stranger, "! identify first (/identify NICK PASSWORD)")
    alice = registered(server, "alice")
    alice.send(f"/password wrong-old-one {OTHER}")
    expect_exact(alice, WRONG)
    alice.send(f"/password {PASSWORD} {OTHER}")
    expect_exact(alice, "*** the password of alice is changed")
    later = server.client()
    later.send(f"/identify alice {PASSWORD}")
    expect_exact(later, WRONG)
    later.send(f"/identify alice {OTHER}")
    expect_exact(later, "*** you are identified as alice")


def test_drop_unregisters_the_nick_and_anyone_may_use_it(backend_server):
    """/drop PASSWORD needs identification and the right password; afterwards the nick is
    not registered (no warning for whoever takes it, /identify says so) and someone
    else may register it."""
    server = backend_server()
    stranger = named(server, "stranger")
    stranger.send(f"/drop {PASSWORD}")
    expect_exact(stranger, "! identify first: you can drop the nick you are identified as")
    alice = registered(server, "alice")
    alice.send("/drop wrong-password")
    expect_exact(alice, WRONG)
    alice.send(f"/drop {PASSWORD}")
    expect_exact(alice, "*** alice is no longer registered; anyone may use it")
    alice.send(f"/identify {PASSWORD}")
    expect_exact(alice, "! alice is not registered (/register PASSWORD registers it)")
    alice.send("/nick former")
    expect_exact(alice, "*** alice is now known as former")
    newcomer = named(server, "alice")
    assert not any("registered" in line for line in sync(newcomer))
    newcomer.send(f"/register {OTHER}")
    expect_exact(newcomer, REGISTERED.format(nick="alice"))


# -- failed attempts -----------------------------------------------------------------------


def test_drop_ends_the_account_on_every_connection_identified_as_it(backend_server):
    """After /drop, no other connection of the old owner still counts as identified
    for the nick (or it would be trusted as whoever registers it next)."""
    server = backend_server()
    first = registered(server, "alice")
    second = named(server, "second")
    second.send(f"/identify alice {PASSWORD}")
    expect_exact(second, "*** you are identified as alice")
    first.send(f"/drop {PASSWORD}")
    expect_exact(first, "*** alice is no longer registered; anyone may use it")
    lines = whois(second, "second")
    assert not any("is identified as" in line for line in lines), lines


def test_what_a_client_sends_after_identify_waits_for_the_answer(backend_server):
    """/identify is answered from a worker thread; a script's next command, sent in the
    same packet, must run after it (as the identified user), not before."""
    server = backend_server()
    owner = registered(server, "alice")
    owner.close()
    script = server.client()
    script.send_raw(f"/identify alice {PASSWORD}\n/whois alice\nhello\n".encode())
    expect_exact(script, "*** you are identified as alice")
    expect_exact(script, "*** alice is identified as alice")
    watcher = server.client()
    script.send("after")
    expect_exact(watcher, "<alice> after")


def test_a_pipe_that_identifies_and_closes_still_says_its_lines(backend_server):
    """``printf '/identify alice PW\\nhi\\n' | nc -N``: the FIN arrives while the password
    is being checked; the waiting line is still said (as alice), then the connection closes."""
    import socket

    server = backend_server()
    registered(server, "alice").close()
    watcher = server.client()
    script = server.client()
    script.send_raw(f"/identify alice {PASSWORD}\nhello from a pipe\n".encode())
    script.sock.shutdown(socket.SHUT_WR)
    expect_exact(watcher, "<alice> hello from a pipe")
    assert "*** you are identified as alice" in script.expect_eof()


def test_five_failed_attempts_close_the_connection(backend_server):
    """A connection that fails 5 times (/identify, /password, /drop alike, for any nick)
    is told why and closed; a new connection from the same address may try again."""
    server = backend_server()
    registered(server, "bob", OTHER)
    alice = registered(server, "alice")
    alice.send(f"/password wrong-one {OTHER}")
    expect_exact(alice, WRONG)
    alice.send("/drop wrong-two")
    expect_exact(alice, WRONG)
    fail_identify(alice, "bob", 2)
    alice.send("/identify bob wrong-five")
    assert alice.expect_eof()[-1:] == [CLOSED]
    again = server.client()
    again.send(f"/identify bob {OTHER}")
    expect_exact(again, "*** you are identified as bob")
    server.wait_for_log(r"failed /identify for bob by alice \(127\.0\.0\.1:\d+\): 5 on this "
                        r"connection")


def test_guesses_from_others_never_lock_the_owner_out(backend_server):
    """Issue 18 rule 8: 10 failures for a nick (5 each from two guessing addresses) put
    it under attack: the guessing addresses may not try it again, not even with the
    right password (other nicks they may); the owner, from an address that has not
    been guessing, identifies with the right password; a fresh address with a wrong
    password gets its one miss and is then refused too."""
    server = backend_server(plugins={"accounts": {"registrations_per_hour": 10}})
    registered(server, "alice")
    registered(server, "bob", OTHER)
    fail_until_closed(server, "alice", source="127.0.0.2")
    fail_until_closed(server, "alice", source="127.0.0.3")
    late = server.client(source="127.0.0.2")
    late.send(f"/identify alice {PASSWORD}")
    expect_exact(late, NICK_LIMITED)
    late.send(f"/identify bob {OTHER}")
    expect_exact(late, "*** you are identified as bob")
    owner = server.client(source="127.0.0.4")
    owner.send(f"/identify alice {PASSWORD}")
    expect_exact(owner, "*** you are identified as alice")
    fresh = server.client(source="127.0.0.5")
    fresh.send("/identify alice wrong-guess")
    expect_exact(fresh, WRONG)
    fresh.send(f"/identify alice {PASSWORD}")
    expect_exact(fresh, NICK_LIMITED)
    server.wait_for_log(r"password attempt for alice refused")


def test_five_failures_from_an_address_for_a_nick_refuse_that_address_for_it(backend_server):
    """Per source and nick: 5 failures from one address for one nick (on one
    connection, which is closed for them) refuse that address for that nick, even
    though the nick as a whole is not under attack; another nick it may still try."""
    server = backend_server()
    registered(server, "alice")
    registered(server, "bob", OTHER)
    fail_until_closed(server, "alice", source="127.0.0.2")
    again = server.client(source="127.0.0.2")
    again.send(f"/identify alice {PASSWORD}")
    expect_exact(again, NICK_LIMITED)
    again.send(f"/identify bob {OTHER}")
    expect_exact(again, "*** you are identified as bob")


def test_twenty_failures_from_an_address_refuse_it_and_only_it(backend_server):
    """After 20 failures from one address within the window (spread over nicks, so no
    nick reaches its own limit), that address may not try any nick; another address
    may."""
    server = backend_server(plugins={"accounts": {"registrations_per_hour": 10}})
    owner = registered(server, "nick1")
    for number in (2, 3, 4):
        owner.send(f"/nick nick{number}")
        owner.send(f"/register {PASSWORD}")
        expect_exact(owner, REGISTERED.format(nick=f"nick{number}"))
    for number in (1, 2, 3, 4):
        fail_until_closed(server, f"nick{number}")
    late = server.client()
    late.send(f"/identify nick1 {PASSWORD}")
    expect_exact(late, ADDRESS_LIMITED)
    elsewhere = server.client(source="127.0.0.2")
    elsewhere.send(f"/identify nick1 {PASSWORD}")
    expect_exact(elsewhere, "*** you are identified as nick1")


def test_concurrent_guesses_cannot_exceed_the_nick_limit(backend_server):
    """The limits bound the guesses a nick can get from one address: guesses sent
    together (before any is answered) on several connections must not get more than 5
    "wrong password" answers (the limit per address and nick); the rest are refused
    (or find the server busy: guesses from one address for one nick queue 3 deep)."""
    server = backend_server()
    owner = registered(server, "alice")
    owner.send("/nick owner")
    expect_exact(owner, "*** alice is now known as owner")
    guessers = [server.client() for _ in range(3)]
    for number, guesser in enumerate(guessers):
        for attempt in range(4):  # 4 each: no connection reaches its own limit of 5
            guesser.send(f"/identify alice guess-{number}-{attempt}")
    answers = [guesser.expect(r"^! .*$").group() for guesser in guessers for _ in range(4)]
    assert set(answers) <= {WRONG, NICK_LIMITED, BUSY}, answers
    assert answers.count(WRONG) <= 5, f"{answers.count(WRONG)} guesses checked for alice"


# -- registrations per address -------------------------------------------------------------


def test_the_fourth_registration_from_an_address_within_an_hour_is_refused(backend_server):
    """registrations_per_hour (3 by default) nicks may be registered from one address an
    hour; the 4th is refused (and not registered), another address may still register."""
    server = backend_server()
    for nick in ("first", "second", "third"):
        registered(server, nick)
    fourth = named(server, "fourth")
    fourth.send(f"/register {PASSWORD}")
    expect_exact(fourth, REGISTRATIONS_LIMITED)
    fourth.send(f"/identify {PASSWORD}")
    expect_exact(fourth, "! fourth is not registered (/register PASSWORD registers it)")
    registered(server, "fifth", source="127.0.0.2")


def test_concurrent_registrations_cannot_exceed_the_hourly_limit(backend_server):
    """registrations_per_hour holds for registrations sent together, before any is
    answered: of 5 at once from one address, at most 3 succeed."""
    server = backend_server()
    clients = [named(server, f"user{number}") for number in range(5)]
    for client in clients:
        client.send(f"/register {PASSWORD}")
    answers = [client.expect(r"^(! .*|\*\*\* user\d is registered to you.*)$").group(1)
               for client in clients]
    assert sum(answer.startswith("***") for answer in answers) <= 3, answers


# -- secrets, storage, restart -------------------------------------------------------------


def test_passwords_are_never_logged(backend_server):
    """With DEBUG logging and message logging on, no password given to /register,
    /identify (right or wrong), /password (old, new) or /drop reaches the log, while
    what happened does."""
    secrets = ["Reg1-secret-pw", "Wrong1-guess-pw", "New2-secret-pw", "Short7"]
    server = backend_server(logging={"level": "DEBUG"}, plugins={"log": {"messages": True}})
    alice = named(server, "alice")
    alice.send("/register Short7")
    expect_exact(alice, "! a password has at least 8 characters")
    alice.send("/register Reg1-secret-pw")
    expect_exact(alice, REGISTERED.format(nick="alice"))
    other = server.client()
    other.send("/identify alice Wrong1-guess-pw")
    expect_exact(other, WRONG)
    other.send("/identify alice Reg1-secret-pw")
    expect_exact(other, "*** you are identified as alice")
    alice.send("/password Reg1-secret-pw New2-secret-pw")
    expect_exact(alice, "*** the password of alice is changed")
    alice.send("/drop Wrong1-guess-pw")
    expect_exact(alice, WRONG)
    alice.send("/drop New2-secret-pw")
    expect_exact(alice, "*** alice is no longer registered; anyone may use it")
    alice.close()
    other.close()
    assert server.stop() == 0  # the log is queued: stopping flushes it
    log = server.log()
    for event in ("alice registered by", "failed /identify for alice", "identified as alice",
                  "password of alice changed", "failed /drop for alice", "alice dropped by"):
        assert event in log, event
    for secret in secrets:
        assert secret not in log, secret


def test_accounts_survive_a_restart_hashed_never_in_clear(chatd_server, tmp_path):
    """Accounts live in the SQLite file: after a restart on the same file the registered
    nick is still owned and its (changed) password still identifies, a dropped nick is
    still free; the file holds an scrypt hash, never the password."""
    config = write_config(tmp_path / "config.yaml", storage={"path": "data/chatd.sqlite3"})
    first = chatd_server(config)
    alice = registered(first, "alice")
    alice.send(f"/password {PASSWORD} {OTHER}")
    expect_exact(alice, "*** the password of alice is changed")
    carol = registered(first, "carol", "carols-password")
    carol.send("/drop carols-password")
    expect_exact(carol, "*** carol is no longer registered; anyone may use it")
    alice.close()
    carol.close()
    assert first.stop() == 0  # SIGTERM: every queued write is committed
    data = tmp_path / "data"
    with sqlite3.connect(f"file:{data / 'chatd.sqlite3'}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT key, nick, password FROM accounts").fetchall()
    assert [(key, nick) for key, nick, _ in rows] == [("alice", "alice")]
    assert rows[0][2].startswith("scrypt$16384$8$1$"), rows[0][2]
    assert password_matches(OTHER, rows[0][2])
    for path in data.iterdir():  # the database, and any journal beside it
        content = path.read_bytes()
        for secret in (PASSWORD, OTHER, "carols-password"):
            assert secret.encode() not in content, (path, secret)

    second = chatd_server(config)
    holder = named(second, "alice")
    expect_exact(holder, grace_notice("alice", 60))
    holder.send(f"/identify {PASSWORD}")
    expect_exact(holder, WRONG)
    holder.send(f"/identify {OTHER}")
    expect_exact(holder, "*** you are identified as alice")
    newcomer = named(second, "carol")
    assert not any("registered" in line for line in sync(newcomer))


# -- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value"), [
    ("scrypt_n", 1000),        # not a power of two
    ("scrypt_n", 512),         # a power of two, too small
    ("scrypt_n", 16384.0),     # not a whole number
    ("min_password_length", 0),
    ("min_password_length", 300),
    ("grace_seconds", 0),
    ("registrations_per_hour", -1),
    ("failures_per_address", 0),
    ("registration", 1),       # not a string
    ("registration", "maybe"),
    ("grace", 60),             # no such key
])
def test_a_bad_accounts_setting_is_a_config_error_naming_the_key(tmp_path, key, value):
    """A wrong plugins.accounts value stops --check-config with exit status 2 and one
    error line naming the file, the line and the key."""
    config = write_config(tmp_path / "config.yaml", plugins={"accounts": {key: value}})
    result = check_config(config)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.match(rf"^chatd: {re.escape(str(config))}:\d+: plugins\.accounts\.{key}: ",
                    lines[0]), lines[0]


def test_every_scrypt_n_the_config_accepts_can_hash(chatd_server, tmp_path):
    """A scrypt_n that --check-config accepts must work: 2**20 is a power of two above
    1024, so either the config check refuses it (naming the key) or a /register with it
    is answered and registers the nick."""
    config = write_config(tmp_path / "config.yaml", plugins={"accounts": {"scrypt_n": 2**20}})
    result = check_config(config)
    if result.returncode == 2:
        assert "plugins.accounts.scrypt_n" in result.stderr, result.stderr
        return
    assert result.returncode == 0, result
    server = chatd_server(config)
    alice = named(server, "alice")
    alice.send(f"/register {PASSWORD}")
    reply = alice.recv_line()
    assert reply == REGISTERED.format(nick="alice"), reply


# -- reads off the loop (PostgreSQL: a database that is slower than the loop's cut) ----------


def test_a_nick_check_waits_for_a_slow_database_and_holds_only_that_client(
        postgres_url, postgres, chatd_server):
    """Whether a nick is registered is read off the loop: while the database is frozen,
    taking a registered nick holds that client's later lines (another client chats on);
    once the database answers, the taker is held to the grace and its line refused --
    never let through because the read was slower than a cut on the loop."""
    server = chatd_server(storage={"url": postgres_url},
                          plugins={"accounts": {"scrypt_n": 1024}})
    registered(server, "slowname").close()
    other, watcher = server.client(), server.client()
    taker = server.client()
    old = taker.nick
    postgres.freeze()
    try:
        taker.send("/nick slowname")
        expect_exact(taker, f"*** {old} is now known as slowname")  # its check now waits
        taker.send("hello as slowname")
        other.send("still chatting")
        watcher.expect(r"still chatting")  # nobody else waits for the database
    finally:
        postgres.thaw()
    expect_exact(taker, grace_notice("slowname", 60))
    taker.expect(r"^! slowname is registered to someone else")
    other.send("the end")
    watcher.expect(r"the end")
    assert not any("hello as slowname" in line for line in watcher.history)


def test_password_and_drop_wait_for_a_slow_database_and_hold_only_their_client(
        postgres_url, postgres, chatd_server):
    """``/password`` and ``/drop`` read the account (before and after the password
    check) off the loop: while the database is frozen only their client waits, and
    once it answers they are done -- never "unavailable" because a read was slower
    than a cut on the loop."""
    server = chatd_server(storage={"url": postgres_url},
                          plugins={"accounts": {"scrypt_n": 1024}})
    owner = registered(server, "slowowner")
    other, watcher = server.client(), server.client()
    for command, done in ((f"/password {PASSWORD} {OTHER}",
                           "*** the password of slowowner is changed"),
                          (f"/drop {OTHER}",
                           "*** slowowner is no longer registered; anyone may use it")):
        postgres.freeze()
        try:
            owner.send(command)
            other.send(f"meanwhile {command.split()[0]}")
            watcher.expect(f"meanwhile {command.split()[0]}")  # nobody else waits
        finally:
            postgres.thaw()
        expect_exact(owner, done)
