"""Presence with continuations (issue 19, part 4): the backend answers presence
questions by calling back, at once (local) or later (a cluster's).

In-process with the test kit's backends (``chatd.testing.backends``): one that
answers after the call returns, and one that never answers.  A client waiting
for an answer holds only its own later requests, in order; nobody else waits;
no answer in time is an error for that client; a late answer is dropped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from chatd.delivery import LocalBackend, Person
from chatd.requests import SessionRequest
from chatd.testing import InProcessChat
from chatd.testing.backends import DeferredBackend, SilentBackend

TIMEOUT = "! the server did not answer in time; try again"
OPER_PASSWORD = "operator-password"


def _chat(**sections):
    return InProcessChat(backend=DeferredBackend.factory, fake_clock=True,
                         limits={"presence_timeout_seconds": 2}, **sections)


def _named(chat, nick, protocol="line"):
    peer = chat.connect(protocol)
    peer.send(f"/nick {nick}" if protocol == "line" else json.dumps({"cmd": "nick", "nick": nick}))
    assert peer.nick == nick
    peer.lines()
    return peer


def _feed(peer, *lines: str) -> None:
    """``lines`` in one read, with no tick after: what the protocol hands the intake."""
    peer.protocol.data_received(memoryview("".join(f"{line}\n" for line in lines).encode()))


# -- the local backend: the answer inside the call ---------------------------------------------


def test_the_local_backend_answers_every_question_before_the_call_returns():
    with InProcessChat() as chat:
        alice = chat.connect()
        alice.send("/nick alice")
        local = chat.domain.local
        assert isinstance(chat.backend, LocalBackend)
        answers: list[object] = []
        local.find_nick("ALICE", answers.append)
        local.find_nick("nobody", answers.append)
        local.members("#lobby", answers.append)
        local.room_list(answers.append)
        local.claim_nick(alice.client, "alice", answers.append)
        found, missing, members, rooms, claimed = answers
        assert isinstance(found, Person) and found.nick == "alice"
        assert found.session == alice.client.session and found.rooms == ("#lobby",)
        assert missing is None
        assert [m.nick for m in members] == ["alice"]
        assert [r.name for r in rooms] == ["#lobby"]
        assert claimed is True


def test_with_the_local_backend_nothing_waits_and_no_timer_is_made():
    with InProcessChat(fake_clock=True) as chat:
        alice = chat.connect()
        bob = chat.connect()
        timers = chat.reactor.next_timer()
        _feed(alice, "/nick alice", f"/msg {bob.nick} hi")
        assert alice.nick == "alice"  # before any tick: answered inside the call
        assert alice.client.intake is None  # nothing held, no record made
        assert chat.reactor.next_timer() == timers  # no timeout was set
        assert bob.lines()[-1] == "*alice* hi"


# -- answered later: in order, only the asker waits ----------------------------------------------


def test_nick_then_join_then_a_line_happen_in_order_when_answers_come_later():
    with _chat() as chat:
        bob = _named(chat, "bob")
        alice = chat.connect()
        guest = alice.nick
        bob.lines()
        _feed(alice, "/nick alice", "/join #dev", "hello")
        assert alice.nick == guest  # asked, not answered yet
        assert alice.transport.held  # its socket is not read meanwhile
        assert chat.backend.asked >= 1
        chat.tick()
        assert alice.nick == "alice"
        assert alice.client.room.name == "#dev"
        lines = alice.lines()
        assert lines.index(f"*** {guest} is now known as alice") < lines.index(
            "*** alice joined #dev")
        assert not alice.transport.held
        bob.send("/join #dev")
        bob.lines()
        alice.send("said in #dev")
        assert bob.lines()[-1] == "<alice> said in #dev"


def test_a_private_message_waits_for_the_lookup_and_the_next_one_waits_for_it():
    with _chat() as chat:
        bob = _named(chat, "bob")
        alice = _named(chat, "alice")
        bob.lines()
        before = len(bob.transport.output)
        _feed(alice, "/msg bob one", "/msg BOB two", "/msg nobody three")
        assert len(bob.transport.output) == before  # nothing yet: the lookup is out
        chat.tick()
        chat.tick()
        assert bob.lines() == ["*alice* one", "*alice* two"]
        assert alice.lines() == ["-> *bob* one", "-> *bob* two", "! no such nick: nobody"]


def test_another_client_is_never_held_while_one_waits():
    with _chat() as chat:
        bob = _named(chat, "bob")
        carol = _named(chat, "carol")
        alice = _named(chat, "alice")
        chat.backend.silent = True
        _feed(alice, "/nick alicia", "after")
        carol.send("hi all")  # carol's line is not held behind alice's question
        assert bob.lines()[-1] == "<carol> hi all"
        assert not carol.transport.held
        assert alice.transport.held


def test_the_answer_to_a_tagged_request_carries_its_re_tag():
    with _chat() as chat:
        bob = _named(chat, "bob")
        bot = _named(chat, "bot", "jsonl")
        bob.lines()
        bot.protocol.data_received(memoryview(
            b'{"cmd": "msg", "to": "bob", "text": "hi", "id": "m1"}\n'
            b'{"cmd": "nick", "nick": "robot", "id": "n2"}\n'
            b'{"cmd": "msg", "to": "nobody", "text": "x", "id": "m3"}\n'))
        chat.tick()
        chat.tick()
        chat.tick()
        replies = [obj for obj in bot.objects() if "re" in obj]
        assert [(obj["type"], obj["re"]) for obj in replies] == [
            ("privmsg", "m1"), ("nick", "n2"), ("error", "m3")]
        assert bob.lines() == ["*bot* hi", "*** bot is now known as robot"]


def test_the_re_tag_is_on_the_timeout_error_too():
    with _chat() as chat:
        bot = _named(chat, "bot", "jsonl")
        chat.backend.silent = True
        bot.protocol.data_received(memoryview(b'{"cmd": "nick", "nick": "robot", "id": "n1"}\n'))
        chat.advance(2)
        errors = [obj for obj in bot.objects() if obj["type"] == "error"]
        assert [(e["text"], e.get("re")) for e in errors] == [
            ("the server did not answer in time; try again", "n1")]


# -- never answered: a timeout error, and a late answer is dropped ---------------------------------


def test_no_answer_is_a_timeout_error_and_the_requests_after_it_go_on():
    with _chat() as chat:
        alice = _named(chat, "alice")
        chat.backend.silent = True
        _feed(alice, "/nick alicia", "/join #dev")
        chat.advance(1.5)
        assert alice.lines() == [] and alice.nick == "alice"  # still waiting
        chat.advance(0.5)
        assert alice.lines() == [TIMEOUT]
        assert alice.client.room.name == "#dev"  # the /join waited, then ran; its
        chat.advance(2)  # greeting asks for the members, and says what it knows here
        assert alice.lines() == ["*** alice joined #dev", "*** you are the first in #dev"]
        assert alice.nick == "alice" and not alice.transport.held
        # the old nick is still hers: a claim of it by another fails
        chat.backend.silent = False
        bob = chat.connect()
        bob.send("/nick alice")
        assert bob.lines()[-1] == "! the nick alice is taken"


def test_a_late_answer_after_the_timeout_is_dropped():
    with _chat() as chat:
        alice = _named(chat, "alice")
        bob = _named(chat, "bob")
        chat.backend.silent = True
        alice.lines()
        _feed(alice, "/nick alicia", "/msg bob late")
        chat.advance(2)  # /nick times out; /msg asks, and waits
        chat.advance(2)  # /msg times out
        assert alice.lines() == [TIMEOUT, TIMEOUT]
        chat.backend.silent = False  # the backend is back, and its answers come late
        assert chat.backend.answer_late() == 2  # /nick's claim, /msg's lookup
        chat.tick()
        assert alice.nick == "alice"  # the late "yes, alicia is yours" changed nothing
        assert alice.lines() == []
        assert bob.lines() == []  # and the late lookup sent nothing
        bob.send("/nick alice")  # the claim granted too late was undone: alice keeps hers
        assert bob.lines()[-1] == "! the nick alice is taken"
        bob.send("/nick alicia")  # and alicia is free again
        assert bob.nick == "alicia"


def test_a_client_that_disconnects_while_waiting_gets_nothing_and_nothing_breaks(caplog):
    with _chat() as chat:
        alice = _named(chat, "alice")
        bob = _named(chat, "bob")
        alice.lines()
        chat.backend.silent = True
        _feed(alice, "/msg bob are you there", "/nick alicia")
        alice.transport.close("connection reset")  # gone before the answer (not a FIN,
        chat.tick()  # which keeps it until what it sent is handled, as for any pause)
        chat.backend.silent = False
        with caplog.at_level(logging.ERROR):
            assert chat.backend.answer_late() == 1  # the lookup: its answer is dropped
            chat.tick()
            chat.advance(5)  # the timeout that would have been: nothing either
        assert bob.lines() == ["*** alice quit (connection reset)"]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert chat.server.find_client("alice") is None
        assert chat.server.find_client("alicia") is None
        assert alice.lines() == []


def test_a_connection_whose_guest_nick_claim_is_never_answered_is_closed():
    with InProcessChat(backend=SilentBackend.factory, fake_clock=True,
                       limits={"presence_timeout_seconds": 2}) as chat:
        peer = chat.connect()
        assert peer.connected and peer.lines() == []  # not welcomed, in no room
        assert chat.server.rooms.get("#lobby") is None or not chat.server.rooms.get(
            "#lobby").members
        chat.advance(2)
        assert peer.lines() == [TIMEOUT]
        assert not peer.connected


def test_a_connection_is_welcomed_once_its_guest_nick_claim_is_answered():
    with _chat() as chat:
        peer = chat.connect()
        assert peer.client.room is not None and peer.client.room.name == "#lobby"


# -- the facade's API, used by a command: /kick and /invite -------------------------------------


@pytest.mark.parametrize("backend", [None, DeferredBackend.factory])
def test_kick_finds_its_target_through_the_presence_api(backend):
    with InProcessChat(backend=backend, plugins={"oper": {"password": OPER_PASSWORD}}) as chat:
        op = _named(chat, "op")
        bob = _named(chat, "bob")
        op.send(f"/oper {OPER_PASSWORD}")
        op.lines()
        _feed(op, "/kick bob enough", "/kick nobody")
        for _ in range(4):
            chat.tick()
        lines = op.lines()
        assert lines[0] == "*** bob left #lobby (kicked by op: enough)"
        assert lines[1] == "! nobody is not in #lobby"
        assert lines[2:] == []
        assert "*** you were kicked from #lobby by op: enough" in bob.lines()


@pytest.mark.parametrize("backend", [None, DeferredBackend.factory])
def test_invite_finds_its_target_through_the_presence_api(backend):
    with InProcessChat(backend=backend, plugins={"oper": {"password": OPER_PASSWORD}}) as chat:
        op = _named(chat, "op")
        bob = _named(chat, "bob")
        op.send(f"/oper {OPER_PASSWORD}")
        op.send("/join #dev")
        op.lines()
        _feed(op, "/invite bob", "/invite nobody")
        chat.tick()
        chat.tick()
        assert op.lines() == ["*** op invited bob to #dev", "! no such nick: nobody"]
        assert bob.lines()[-1] == "*** op invites you to #dev: /join #dev"


def test_ask_whois_from_a_plugin_answers_a_person_and_client_of_finds_the_local_client():
    seen: list[object] = []
    with _chat() as chat:
        alice = _named(chat, "alice")
        server = chat.server
        server.ask_whois(None, "ALICE", seen.append)
        assert seen == []  # the deferred backend answers later
        chat.tick()
        (person,) = seen
        assert person.nick == "alice" and person.node == server.node
        assert server.client_of(person) is alice.client
        server.ask_members(None, "#lobby", seen.append)
        server.ask_rooms(None, seen.append)
        chat.tick()
        assert [m.nick for m in seen[1]] == ["alice"]
        assert [r.name for r in seen[2]] == ["#lobby"]


# -- a real server process with a backend plugin whose answers come later -----------------------

LATER = str(Path(__file__).resolve().parent / "laterpresence")


def test_a_real_server_with_later_presence_answers_keeps_each_clients_order(chatd_server):
    server = chatd_server(plugin_dirs=[LATER], plugins={"laterpresence": {}})
    bob = server.client()
    bob.send("/nick bob")
    bob.expect(r"is now known as bob$")
    bob.send("/join #dev")
    bob.expect(r"^\*\*\* bob joined #dev$")
    bob.expect_line("*** you are the first in #dev")
    alice = server.client()
    alice.send_raw(b"/nick alice\n/join #dev\nhello\n/msg bob psst\n")
    alice.expect(r"is now known as alice$")
    alice.expect_line("*** alice joined #dev")
    alice.expect_line("*** also in #dev: bob")
    alice.expect_line("-> *bob* psst")
    # in this order (expect skips bob's lobby lines, but never an earlier match)
    bob.expect(r"^\*\*\* alice joined #dev$")
    bob.expect(r"^<alice> hello$")
    bob.expect(r"^\*alice\* psst$")
    server.wait_for_log(r"delivery backend: DeferredBackend")


def test_a_real_server_whose_backend_never_answers_says_so_and_closes(chatd_server):
    server = chatd_server(plugin_dirs=[LATER], plugins={"laterpresence": {"silent": True}},
                          limits={"presence_timeout_seconds": 0.2})
    peer = server.client(welcome=False)
    peer.expect_line(TIMEOUT)  # its guest nick was never confirmed: no session
    with pytest.raises(AssertionError, match="connection closed"):
        peer.recv_line(timeout=2)


def test_the_presence_timeout_is_a_checked_setting():
    from chatd.config import ConfigError, parse_config

    assert parse_config("limits: {presence_timeout_seconds: 0.5}\n").limits \
        .presence_timeout_seconds == 0.5
    with pytest.raises(ConfigError, match="presence_timeout_seconds"):
        parse_config("limits: {presence_timeout_seconds: 0}\n")


@pytest.mark.parametrize("backend", [None, DeferredBackend.factory])
def test_a_refused_rename_keeps_the_old_nick_claimed(backend):
    with InProcessChat(backend=backend) as chat:
        alice = _named(chat, "alice")
        _named(chat, "bob")
        alice.send("/nick BOB")
        chat.tick()
        assert alice.lines()[-1] == "! the nick BOB is taken"
        carol = chat.connect()
        carol.send("/nick alice")
        chat.tick()
        assert carol.lines()[-1] == "! the nick alice is taken"
        alice.send("/nick Alice")  # a change of case: the same key, released and taken
        chat.tick()
        assert alice.nick == "Alice"
        carol.send("/nick alice")
        chat.tick()
        assert carol.lines()[-1] == "! the nick alice is taken"


def test_a_half_closed_client_waiting_for_an_answer_is_served_then_closed():
    """``printf '/msg bob hi\\n/nick x\\n' | nc -N``: every line handled, then the close."""
    with _chat() as chat:
        bob = _named(chat, "bob")
        alice = _named(chat, "alice")
        bob.lines()
        _feed(alice, "/msg bob hi", "/nick alicia")
        alice.close()  # FIN before any answer (close() runs the loop: the answers come)
        chat.tick()
        assert bob.lines()[:2] == ["*alice* hi", "*** alice is now known as alicia"]
        assert not alice.connected


def test_a_rename_answered_after_another_rename_of_the_client_is_undone():
    with _chat() as chat:
        alice = _named(chat, "alice")
        _feed(alice, "/nick alicia")  # asked...
        guest = chat.server.rename_to_guest(alice.client)  # ...and a plugin renames her too
        chat.tick()
        chat.tick()
        assert alice.nick == "alicia"  # the first answer won; the second came stale
        assert chat.server.find_client(guest) is None  # the stale claim was given up
        bob = chat.connect()
        bob.send("/nick alicia")  # and alicia is still held
        chat.tick()
        assert bob.lines()[-1] == "! the nick alicia is taken"


@pytest.mark.parametrize("backend", [None, DeferredBackend.factory])
def test_identify_takes_a_nick_back_from_its_holder_found_through_the_presence_api(backend):
    with InProcessChat(backend=backend, plugins={"accounts": {"scrypt_n": 1024}}) as chat:
        owner = _named(chat, "alice")
        owner.send("/register correct-horse-1")
        chat.wait_for(lambda: any("registered to you" in line for line in owner.lines()))
        owner.send("/nick owner")
        holder = chat.connect()
        holder.send("/nick alice")
        chat.tick()
        assert holder.nick == "alice"
        returning = chat.connect()
        returning.send("/identify alice correct-horse-1")
        chat.wait_for(lambda: returning.nick == "alice")
        chat.tick()
        assert holder.nick.startswith("guest-")
        assert f"*** the owner of alice identified; you are now {holder.nick}" in holder.lines()


@pytest.mark.parametrize("backend", [None, DeferredBackend.factory])
def test_op_finds_the_account_of_a_connected_nick_through_the_presence_api(backend):
    with InProcessChat(backend=backend, plugins={"accounts": {"scrypt_n": 1024}}) as chat:
        alice = _named(chat, "alice")
        bob = _named(chat, "bob")
        guest = chat.connect()
        for peer in (alice, bob):
            peer.send("/register correct-horse-1")
            chat.wait_for(lambda peer=peer: peer.client.account is not None)
        alice.send("/join #dev")
        alice.send("/register #dev")
        alice.lines()
        _feed(alice, "/op bob", f"/op {guest.nick}", "/op bob")
        chat.tick()
        chat.tick()
        assert alice.lines() == [
            "*** alice made bob an operator of #dev",
            f"! {guest.nick} is not identified: room operators are registered nicks",
            "! bob is already an operator of #dev",
        ]


def test_a_nick_claim_answered_after_its_asker_left_is_given_up():
    """The backend grants a claim (the wished nick at connect, a /nick) after the client
    that asked is gone: the domain drops the continuation and gives the nick up again,
    or nobody could ever take it (a departed client's nick, held forever)."""
    with _chat() as chat:
        bob = _named(chat, "bob")
        chat.backend.silent = True
        wisher = chat.connect(request=SessionRequest(nick="zed"))
        renamer = _named_while_answered(chat, "yan")
        for peer in (wisher, renamer):
            peer.transport.close("connection reset")
        chat.tick()
        chat.backend.silent = False
        assert chat.backend.answer_late() == 2  # both claims granted, too late
        chat.tick()
        for nick in ("zed", "yan"):
            bob.send(f"/nick {nick}")
            assert bob.nick == nick, bob.lines()


def _named_while_answered(chat, nick):
    """A client whose ``/nick nick`` is asked while the backend is silent."""
    chat.backend.silent = False
    peer = chat.connect()
    chat.backend.silent = True
    _feed(peer, f"/nick {nick}")
    return peer
