"""Accounts and moderation shared by several processes (issue 22, rule 4).

Two kinds of tests:

* **in process, on SQLite**: two :class:`InProcessChat` servers on one SQLite file
  stand for two processes on one database.  SQLite sends no change notices, so
  the test carries them: every ``store.listen`` callback is recorded, and
  :func:`carry` hands the notices one server queued (``store.notify``, recorded
  too) to the other's callbacks once its writes are committed — what PostgreSQL's
  ``NOTIFY`` does.  ``None`` is a lost and regained listening connection.
* **two chatd processes on one PostgreSQL** (below): the real thing.
"""

from __future__ import annotations

import calendar
import re
import time
from pathlib import Path
from typing import Any

import pytest

from chatd.chat import domain as domain_module
from chatd.store import Store
from chatd.testing import InProcessChat

FAST = {"accounts": {"scrypt_n": 1024, "grace_seconds": 30}}


class Bus:
    """The notices of :class:`Store` objects in this process, recorded: who listens
    to what, and what each store announced (carried by :meth:`carry`)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.listeners: list[tuple[Store, str, Any]] = []
        self.sent: dict[int, list[tuple[str, str]]] = {}
        listen, notify = Store.listen, Store.notify
        bus = self

        def recording_listen(store: Store, channel: str, callback: Any) -> None:
            bus.listeners.append((store, channel, callback))
            listen(store, channel, callback)

        def recording_notify(store: Store, channel: str, payload: str = "") -> int:
            bus.sent.setdefault(id(store), []).append((channel, payload))
            return notify(store, channel, payload)

        monkeypatch.setattr(Store, "listen", recording_listen)
        monkeypatch.setattr(Store, "notify", recording_notify)

    def carry(self, source: InProcessChat, target: InProcessChat) -> int:
        """Hand ``source``'s notices (once committed) to ``target``'s listeners."""
        store = source.domain.store
        assert store.flush(5.0)
        sent = self.sent.pop(id(store), [])
        for channel, payload in sent:
            self.deliver(target, channel, payload)
        return len(sent)

    def deliver(self, target: InProcessChat, channel: str | None,
                payload: str | None) -> None:
        """Call ``target``'s callbacks for ``channel`` (every channel when None)."""
        for store, listened, callback in self.listeners:
            if store is target.domain.store and channel in (None, listened):
                callback(payload)
        target.tick()


@pytest.fixture
def bus(monkeypatch: pytest.MonkeyPatch) -> Bus:
    return Bus(monkeypatch)


def on_file(monkeypatch: pytest.MonkeyPatch, path: Path) -> InProcessChat:
    """An :class:`InProcessChat` whose store is the SQLite file ``path``, answering
    ``ask`` on the loop as a server's does (an in-process chat's store is in memory
    and answers inline)."""
    loop: dict[str, Any] = {}
    early: list[Any] = []  # handed over before the chat (and its loop) exists

    def post(fn: Any) -> None:
        if "reactor" in loop:
            loop["reactor"].call_soon_threadsafe(fn)
        else:
            early.append(fn)

    def store(_path: None) -> Store:
        made = Store(path, post=post, call_later=lambda delay, fn: loop["reactor"].call_later(
            delay, fn) if "reactor" in loop else None)
        made.open()
        return made

    with monkeypatch.context() as patch:
        patch.setattr(domain_module, "Store", store)
        chat = InProcessChat(plugins=FAST)
    loop["reactor"] = chat.reactor
    for fn in early:
        chat.reactor.call_soon_threadsafe(fn)
    chat.wait_for(lambda: chat.server.stash[_moderation_state()].loaded)
    return chat


@pytest.fixture
def pair(tmp_path: Path, bus: Bus, monkeypatch: pytest.MonkeyPatch):
    """Two servers ("processes") on one SQLite file."""
    path = tmp_path / "shared.sqlite3"
    first = on_file(monkeypatch, path)
    second = on_file(monkeypatch, path)
    yield first, second
    first.close()
    second.close()


def said(chat: InProcessChat, peer: Any, pattern: str, timeout: float = 5.0) -> str:
    """Run ``chat``'s loop until ``peer`` has been sent a line matching ``pattern``."""
    seen: list[str] = []

    def found() -> bool:
        seen.extend(peer.lines())
        return any(re.search(pattern, line) for line in seen)

    try:
        chat.wait_for(found, timeout)
    except AssertionError:
        raise AssertionError(f"no line matching {pattern!r} in {seen!r}") from None
    return next(line for line in seen if re.search(pattern, line))


def registered(chat: InProcessChat, nick: str, password: str = "sesame-open") -> Any:
    peer = chat.connect()
    peer.send(f"/nick {nick}")
    peer.send(f"/register {password}")
    said(chat, peer, "is registered to you")
    return peer


def room_with_ban(chat: InProcessChat, founder: Any, room: str, mask: str) -> None:
    founder.send(f"/join {room}")
    founder.send(f"/register {room}")
    said(chat, founder, f"{room} is registered")
    founder.send(f"/ban {room} {mask}")
    said(chat, founder, r"banned|\+b")


# -- moderation -------------------------------------------------------------------------------


def test_a_ban_set_on_one_process_refuses_a_join_on_the_other(pair, bus):
    first, second = pair
    owner = registered(first, "founder")
    room_with_ban(first, owner, "#shared", "*!*@10.9.9.9")
    stranger = second.connect(address="10.9.9.9")
    assert bus.carry(first, second) >= 1
    rules = second.server.stash[_moderation_state()].rooms
    second.wait_for(lambda: "#shared" in rules and rules["#shared"].bans)
    stranger.send("/join #shared")
    said(second, stranger, "banned from #shared")


def test_a_ban_noticed_puts_out_a_member_it_matches(pair, bus):
    first, second = pair
    owner = registered(first, "founder")
    owner.send("/join #shared")
    owner.send("/register #shared")
    said(first, owner, "#shared is registered")
    bus.carry(first, second)
    member = second.connect(address="10.9.9.9")
    member.send("/join #shared")
    said(second, member, "#shared")
    owner.send("/ban #shared *!*@10.9.9.9")
    said(first, owner, r"banned|\+b")
    bus.carry(first, second)
    said(second, member, "you are banned from #shared")


def test_an_unban_on_one_process_lets_the_join_in_on_the_other(pair, bus):
    first, second = pair
    owner = registered(first, "founder")
    room_with_ban(first, owner, "#shared", "*!*@10.9.9.9")
    bus.carry(first, second)
    stranger = second.connect(address="10.9.9.9")
    stranger.send("/join #shared")
    said(second, stranger, "banned from #shared")
    owner.send("/unban #shared *!*@10.9.9.9")
    said(first, owner, r"unbanned|-b")
    bus.carry(first, second)
    rules = second.server.stash[_moderation_state()].rooms
    second.wait_for(lambda: not rules["#shared"].bans)
    stranger.send("/join #shared")
    said(second, stranger, r"joined #shared|you are in #shared|JOIN|#shared:")
    assert "#shared" in {room.name for room in second.server.rooms}


def test_a_reconnected_listener_reads_every_room_again(pair, bus):
    """No notice came (the listening connection was lost meanwhile): the None that
    follows a reconnection reads every registered room again."""
    first, second = pair
    owner = registered(first, "founder")
    room_with_ban(first, owner, "#shared", "*!*@10.9.9.9")
    assert first.domain.store.flush(5.0)
    bus.sent.clear()  # lost
    stranger = second.connect(address="10.9.9.9")
    bus.deliver(second, None, None)
    second.wait_for(lambda: not second.server.stash[_moderation_state()].reloading)
    stranger.send("/join #shared")
    said(second, stranger, "banned from #shared")


def test_a_room_dropped_on_one_process_is_unregistered_on_the_other(pair, bus):
    first, second = pair
    owner = registered(first, "founder")
    room_with_ban(first, owner, "#shared", "*!*@10.9.9.9")
    bus.carry(first, second)
    rules = second.server.stash[_moderation_state()].rooms
    second.wait_for(lambda: "#shared" in rules and rules["#shared"].registered)
    owner.send("/drop #shared")
    said(first, owner, "no longer registered")
    bus.carry(first, second)
    second.wait_for(lambda: "#shared" not in rules or not rules["#shared"].registered)


def test_a_notice_does_not_undo_a_change_not_yet_on_disk(pair, bus):
    """The second process banned someone and its write is still queued when a notice
    for the room comes: the room is read only once its own write is in, so the
    ban it just set is never forgotten."""
    first, second = pair
    owner = registered(first, "founder")
    room_with_ban(first, owner, "#shared", "*!*@10.9.9.9")
    bus.carry(first, second)
    state = second.server.stash[_moderation_state()]
    second.wait_for(lambda: "#shared" in state.rooms and state.rooms["#shared"].bans)
    # A write of the second's that is "not committed yet": its number is ahead.
    state.unsettled["#shared"] = second.domain.store.accepted + 1_000_000
    state.rooms["#shared"].bans.clear()
    bus.deliver(second, "chatd_moderation", "#shared")
    second.tick()
    assert not state.rooms["#shared"].bans  # not read: memory is ahead of the table
    assert not state.reloading


def test_an_invitation_is_kept_by_account_across_a_reconnection(tmp_path, monkeypatch):
    with on_file(monkeypatch, tmp_path / "one.sqlite3") as chat:
        owner = registered(chat, "founder")
        owner.send("/join #closed")
        owner.send("/register #closed")
        said(chat, owner, "#closed is registered")
        owner.send("/roomset #closed invite-only on")
        said(chat, owner, r"invite-only|\+i")
        guest = registered(chat, "guestling")
        owner.send("/invite guestling #closed")
        said(chat, owner, "invited guestling")
        guest.close()
        chat.tick()
        again = chat.connect()
        again.send("/identify guestling sesame-open")
        said(chat, again, "you are identified as guestling")
        again.send("/join #closed")
        line = said(chat, again, r"#closed")
        assert "invite-only" not in line


# -- accounts ---------------------------------------------------------------------------------


def test_a_nick_registered_on_one_process_holds_its_holder_on_the_other(pair, bus):
    first, second = pair
    holder = second.connect()
    holder.send("/nick sharedname")
    said(second, holder, "sharedname")
    registered(first, "sharedname")
    bus.carry(first, second)
    said(second, holder, "sharedname is registered: /identify")


def test_the_owner_identifies_on_the_other_process(pair, bus):
    first, second = pair
    registered(first, "sharedname")
    bus.carry(first, second)
    owner = second.connect()
    owner.send("/identify sharedname sesame-open")
    said(second, owner, "you are identified as sharedname")


def test_a_nick_dropped_on_one_process_unidentifies_it_on_the_other(pair, bus):
    first, second = pair
    mine = registered(first, "sharedname")
    bus.carry(first, second)
    there = second.connect()
    there.send("/identify sharedname sesame-open")
    said(second, there, "you are identified as sharedname")
    mine.send("/drop sesame-open")
    said(first, mine, "no longer registered")
    bus.carry(first, second)
    said(second, there, "no longer identified")
    assert all(client.account is None for client in second.server.clients.values())


def test_a_password_changed_on_one_process_is_the_password_on_the_other(pair, bus):
    first, second = pair
    mine = registered(first, "sharedname")
    mine.send("/password sesame-open sesame-new-1")
    said(first, mine, "is changed")
    bus.carry(first, second)
    there = second.connect()
    there.send("/identify sharedname sesame-open")
    said(second, there, "wrong password|not the password|incorrect")
    there.send("/identify sharedname sesame-new-1")
    said(second, there, "you are identified as sharedname")


def _moderation_state():
    from chatd.builtin.moderation.store import STATE
    return STATE


# -- two chatd processes on one PostgreSQL -----------------------------------------------------

PASSWORD = "correct-horse-1"
NEW_PASSWORD = "battery-staple-2"
REGISTERED = "*** {nick} is registered to you, and you are identified"
PG_FAST = {"accounts": {"scrypt_n": 1024}}


@pytest.fixture
def processes(postgres_url, chatd_server):
    """Two chatd processes sharing one PostgreSQL database (``postgres_url`` first: it
    is torn down after they stop)."""
    storage = {"url": postgres_url}
    servers = (chatd_server(storage=storage, plugins=PG_FAST),
               chatd_server(storage=storage, plugins=PG_FAST))
    for server in servers:  # past the look at everything once listening: from now on
        server.wait_for_log(r"reading every registered room again")  # only notices
        server.wait_for_log(r"looking at every client's nick again")  # carry changes
    return servers


def pg_named(server, nick: str, **kwargs):
    client = server.client(**kwargs)
    client.send(f"/nick {nick}")
    client.expect(rf"is now known as {nick}$")
    client.nick = nick
    return client


def pg_registered(server, nick: str, **kwargs):
    client = pg_named(server, nick, **kwargs)
    client.send(f"/register {PASSWORD}")
    client.expect(re.escape(REGISTERED.format(nick=nick)))
    return client


def pg_room(server, founder, room: str):
    founder.send(f"/join {room}")
    founder.send(f"/register {room}")
    founder.expect(rf"{room} is registered")


def test_pg_a_nick_registered_on_one_is_refused_to_a_stranger_on_the_other(processes):
    """Registered on the first; on the second a stranger taking it is held to the grace
    (cannot speak), and the owner can /identify there and take it back."""
    first, second = processes
    pg_registered(first, "sharedname")
    stranger = pg_named(second, "sharedname")
    stranger.expect(r"sharedname is registered: /identify PASSWORD within")
    stranger.send("hello")
    stranger.expect(r"^! sharedname is registered to someone else")
    owner = second.client()
    owner.send(f"/identify sharedname {PASSWORD}")
    owner.expect(r"you are identified as sharedname")
    stranger.expect(r"the owner of sharedname identified; you are now guest-")


def test_pg_a_holder_on_the_other_is_held_as_soon_as_the_nick_is_registered(processes):
    """The holder was there first, on the second process: the registration on the first
    reaches it through the notice (as a local registration would)."""
    first, second = processes
    holder = pg_named(second, "takenfirst")
    pg_registered(first, "takenfirst")
    holder.expect(r"takenfirst is registered: /identify PASSWORD within", timeout=5)


def test_pg_two_processes_registering_one_nick_at_once_exactly_one_wins(processes):
    first, second = processes
    one, two = pg_named(first, "contested"), pg_named(second, "contested")
    one.send(f"/register {PASSWORD}")
    two.send(f"/register {NEW_PASSWORD}")
    answers = [client.expect(r"is registered to you|registered by someone else|already "
                             r"registered").group(0) for client in (one, two)]
    assert answers.count("is registered to you") == 1, answers
    winner = PASSWORD if answers[0] == "is registered to you" else NEW_PASSWORD
    for server in (first, second):  # the same account on both, with the winner's password
        check = server.client()
        check.send(f"/identify contested {winner}")
        check.expect(r"you are identified as contested")


def test_pg_two_processes_registering_look_alikes_at_once_exactly_one_wins(processes):
    """alice on one process and aIice (capital i) on the other, registered at once:
    the names are one, so exactly one account is made; the loser is told, and the
    name is the winner's on both processes (the loser, holding its look-alike, is
    held to the winner's grace)."""
    first, second = processes
    one, two = pg_named(first, "alice"), pg_named(second, "aIice")
    one.send(f"/register {PASSWORD}")
    two.send(f"/register {NEW_PASSWORD}")
    answers = [client.expect(r"is registered to you|registered by someone else|looks the "
                             r"same as the registered nick").group(0) for client in (one, two)]
    assert answers.count("is registered to you") == 1, answers
    winner, loser = ("alice", two) if answers[0] == "is registered to you" else ("aIice", one)
    held = r"(looks the same as the registered nick \w+|is registered): /identify PASSWORD within"
    if not any(re.search(held, line) for line in loser.history):  # before or after its answer
        loser.expect(held)
    passwords = {"alice": PASSWORD, "aIice": NEW_PASSWORD}
    other = "aIice" if winner == "alice" else "alice"
    for server in (first, second):  # one account on both: the winner's
        check = server.client()
        check.send(f"/identify {winner} {passwords[winner]}")
        check.expect(r"you are identified as " + winner)
        stranger = server.client()  # the loser's name and password: the winner's account
        stranger.send(f"/identify {other} {passwords[other]}")
        stranger.expect(r"^! .*password")
        check.close()
        stranger.close()


def test_pg_a_ban_on_one_puts_out_and_refuses_on_the_other(processes):
    first, second = processes
    founder = pg_registered(first, "founder")
    pg_room(first, founder, "#shared")
    member = second.client(source="127.0.0.9")
    member.send("/join #shared")
    member.expect(r"joined #shared|first in #shared")
    asked = time.time()
    founder.send("/ban #shared *!*@127.0.0.9 1h")
    told = member.expect(r"you are banned from #shared \(until (.*) UTC\)", timeout=5)
    # Its end as the other process read it back: to the second (a 4-byte REAL would
    # round a time since the epoch to 128 s).
    until = calendar.timegm(time.strptime(told.group(1), "%Y-%m-%d %H:%M:%S"))
    assert asked + 3600 - 2 <= until <= time.time() + 3600 + 2, told.group(0)
    member.send("/join #shared")
    member.expect(r"^! you are banned from #shared")


def _join_when_let_in(client, room: str, within: float = 5.0) -> None:
    """Join ``room`` as soon as another process's change lets ``client`` in (nothing on
    this process signals it: ask again after each refusal, for ``within`` seconds)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        client.send(f"/join {room}")
        if not client.expect(rf"joined {room}|first in {room}|^! you are banned").group(0) \
                .startswith("!"):
            return
        client.send("/rooms")  # a round trip between attempts (no sleep)
        client.expect(r"^\*\*\* \d+ rooms?: ")
    raise AssertionError(f"still refused from {room}")


def test_pg_an_unban_on_one_lets_in_on_the_other(processes):
    first, second = processes
    founder = pg_registered(first, "founder")
    pg_room(first, founder, "#shared")
    member = second.client(source="127.0.0.9")
    member.send("/join #shared")
    member.expect(r"joined #shared|first in #shared")
    founder.send("/ban #shared *!*@127.0.0.9")
    member.expect(r"you are banned from #shared", timeout=5)
    founder.send("/unban #shared *!*@127.0.0.9")
    founder.expect(r"unbanned")
    _join_when_let_in(member, "#shared")


def test_pg_a_password_change_and_a_drop_on_one_hold_on_the_other(processes):
    first, second = processes
    mine = pg_registered(first, "sharedname")
    there = second.client()
    there.send(f"/identify sharedname {PASSWORD}")
    there.expect(r"you are identified as sharedname")
    mine.send(f"/password {PASSWORD} {NEW_PASSWORD}")
    mine.expect(r"the password of sharedname is changed")  # told once it is committed
    fresh = second.client()
    fresh.send(f"/identify sharedname {PASSWORD}")
    fresh.expect(r"^! wrong password")
    fresh.send(f"/identify sharedname {NEW_PASSWORD}")
    fresh.expect(r"you are identified as sharedname")
    mine.send(f"/drop {NEW_PASSWORD}")
    mine.expect(r"sharedname is no longer registered")
    there.expect(r"sharedname is no longer registered \(dropped on another server\)",
                 timeout=5)
    there.send(f"/password {NEW_PASSWORD} {PASSWORD}")
    there.expect(r"^! identify first")  # no longer identified as the dropped nick
    fresh.expect(r"no longer identified", timeout=5)


def test_pg_a_process_cut_from_the_database_reloads_and_sees_a_ban_made_meanwhile(
        processes, postgres, postgres_url):
    """The listening connections are killed (pg_terminate_backend) and may not come back
    while the ban is made, so its notice is missed; once they are back, the second
    process reads every room again and puts the banned member out."""
    first, second = processes
    founder = pg_registered(first, "founder")
    pg_room(first, founder, "#shared")
    member = second.client(source="127.0.0.9")
    member.send("/join #shared")
    member.expect(r"first in #shared")
    database = postgres_url.rsplit("/", 1)[1]
    admin = postgres.admin
    admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    try:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND (query LIKE 'LISTEN%%' OR query = 'SELECT 1')",
            (database,)).fetchone()[0]  # (the listener's probe between waits: SELECT 1)
        assert killed == 2  # each process's listener
        founder.send("/ban #shared *!*@127.0.0.9")
        founder.expect(r"banned")
        founder.send("/rooms")
        founder.expect(r"^\*\*\* \d+ rooms?: ")
        member.expect_nothing(0.5)  # its notice went nowhere: nobody listened
    finally:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
    member.expect(r"you are banned from #shared", timeout=10)
