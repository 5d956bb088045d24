"""The commands that show presence ask the delivery backend (issue 19, part 4).

``/who``, ``/names``, ``/whois``, ``/rooms``, ``/list`` and the greeting of
``/join`` go through the presence questions (``server.ask_members``,
``ask_whois``, ``ask_rooms``), so with a cluster's backend they show every node;
answered later, they keep their order with the client's later requests (and
jsonl's ``re`` tag); never answered, the client gets a timeout error and nobody
else waits.  The line protocol's sentences stay what they were (the local
backend's answers are compared with the deferred backend's, byte for byte).

A private message carries its recipient as presence found it
(``PrivateMessage.to_account``, ``to_session``, ``to_away``), so the hooks that
see it (history, the accounts grace, the away reply) look nothing up: a test
backend with a user "of another node" shows they read the event, not this
process's clients.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from chatd import Member, Person, RoomInfo
from chatd.testing import InProcessChat
from chatd.testing.backends import DeferredBackend, SilentBackend

TIMEOUT = "! the server did not answer in time; try again"
OPER_PASSWORD = "operator-password"
LATER = str(Path(__file__).resolve().parent / "laterpresence")

#: What alice asks, then says: every presence command, and a line that must wait.
ASKED = ("/who", "/names #lobby", "/whois bob", "/rooms", "/list", "/who #nowhere",
         "/whois nobody", "/list 9", "hello")


def _named(chat: InProcessChat, nick: str, protocol: str = "line") -> Any:
    peer = chat.connect(protocol)
    peer.send(f"/nick {nick}" if protocol == "line" else json.dumps({"cmd": "nick", "nick": nick}))
    assert peer.nick == nick
    peer.lines()
    return peer


def _feed(peer: Any, *lines: str) -> None:
    """``lines`` in one read, with no tick after: what the protocol hands the intake."""
    peer.protocol.data_received(memoryview("".join(f"{line}\n" for line in lines).encode()))


def _settle(chat: InProcessChat, ticks: int = 12) -> None:
    for _ in range(ticks):
        chat.tick()


def _answers(backend: Any) -> tuple[list[str], list[str]]:
    """What alice and bob read when alice sends :data:`ASKED` at once."""
    with InProcessChat(backend=backend, fake_clock=True,
                       limits={"presence_timeout_seconds": 2}) as chat:
        bob = _named(chat, "bob")
        bob.send("/join #dev")
        bob.send("/switch #lobby")
        bob.send("/away lunch")
        alice = _named(chat, "alice")
        bob.lines()
        before = len(alice.transport.output), len(bob.transport.output)
        _feed(alice, *ASKED)
        if backend is not None:  # asked; nothing answered yet, and "hello" waits
            assert (len(alice.transport.output), len(bob.transport.output)) == before
            assert alice.transport.held
        _settle(chat)
        return alice.lines(), bob.lines()


# -- the same sentences, in order, answered at once or later --------------------------------------


def test_presence_commands_read_the_same_and_keep_their_order_when_answered_later():
    local_alice, local_bob = _answers(None)
    later_alice, later_bob = _answers(DeferredBackend.factory)
    assert later_alice == local_alice  # byte for byte, in the order asked
    assert later_bob == local_bob == ["<alice> hello"]
    assert local_alice[:3] == [
        "*** #lobby has 2 members: alice, bob (away)",
        "*** #lobby has 2 members: alice, bob (away)",
        local_alice[2],
    ]
    assert local_alice[2].startswith("*** bob: in #lobby, #dev; connected 0 s ago")
    assert local_alice[3:6] == [
        "*** bob is away: lunch",
        "*** 2 rooms: #dev (1), #lobby (2) *  (* = your current room, + = you are in it)",
        "*** rooms 1-2 of 2:",
    ]
    assert local_alice[-3:] == ["! no such room: #nowhere", "! no such nick: nobody",
                                "! there is 1 page of rooms"]


def test_join_greets_with_the_members_answered_later_before_the_next_line():
    with InProcessChat(backend=DeferredBackend.factory, fake_clock=True) as chat:
        bob = _named(chat, "bob")
        bob.send("/join #dev")
        _settle(chat)
        alice = _named(chat, "alice")
        bob.lines()
        before = len(alice.transport.output)
        _feed(alice, "/join #dev", "hi dev")
        assert alice.client.room.name == "#dev"  # joined at once; the greeting asks
        assert len(alice.transport.output) == before and alice.transport.held
        _settle(chat)
        assert alice.lines() == ["*** alice joined #dev", "*** also in #dev: bob"]
        assert bob.lines() == ["*** alice joined #dev", "<alice> hi dev"]


def test_the_answers_to_tagged_requests_carry_their_re_tags():
    with InProcessChat(backend=DeferredBackend.factory, fake_clock=True) as chat:
        _named(chat, "bob")
        bot = _named(chat, "bot", "jsonl")
        requests = [
            {"cmd": "who", "id": "w1"}, {"cmd": "names", "args": "#lobby", "id": "n2"},
            {"cmd": "whois", "args": "bob", "id": "i3"}, {"cmd": "rooms", "id": "r4"},
            {"cmd": "list", "id": "l5"}, {"cmd": "whois", "args": "nobody", "id": "e6"},
        ]
        _feed(bot, *(json.dumps(request) for request in requests))
        _settle(chat)
        tagged = [(obj["type"], obj["re"]) for obj in bot.objects() if "re" in obj]
        assert tagged == [("names", "w1"), ("names", "n2"), ("whois", "i3"),
                          ("rooms", "r4"), ("rooms", "l5"), ("error", "e6")]


# -- never answered: a timeout error for the asker, nobody else held ------------------------------


@pytest.mark.parametrize("command", ["/who", "/names #lobby", "/whois bob", "/rooms", "/list"])
def test_an_unanswered_presence_command_is_a_timeout_error_and_holds_nobody_else(command):
    with InProcessChat(backend=DeferredBackend.factory, fake_clock=True,
                       limits={"presence_timeout_seconds": 2}) as chat:
        bob = _named(chat, "bob")
        carol = _named(chat, "carol")
        alice = _named(chat, "alice")
        bob.lines()
        chat.backend.silent = True
        _feed(alice, command, "after")
        carol.send("meanwhile")  # carol is not held behind alice's question
        assert bob.lines() == ["<carol> meanwhile"]
        assert alice.transport.held and not carol.transport.held
        chat.advance(2)
        assert alice.lines() == ["<carol> meanwhile", TIMEOUT]
        assert bob.lines() == ["<alice> after"]  # then alice's next line went on
        assert not alice.transport.held


def test_the_timeout_error_of_a_tagged_who_carries_its_re_tag():
    with InProcessChat(backend=SilentBackend.factory, fake_clock=True,
                       limits={"presence_timeout_seconds": 2}) as chat:
        chat.backend.silent = False
        bot = _named(chat, "bot", "jsonl")
        chat.backend.silent = True
        _feed(bot, json.dumps({"cmd": "who", "id": "w1"}))
        chat.advance(2)
        errors = [(o["code"], o.get("re")) for o in bot.objects() if o["type"] == "error"]
        assert errors == [("timeout", "w1")]


def test_an_unanswered_join_greeting_lists_the_members_of_this_process():
    with InProcessChat(backend=DeferredBackend.factory, fake_clock=True,
                       limits={"presence_timeout_seconds": 2}) as chat:
        bob = _named(chat, "bob")
        bob.send("/join #dev")
        alice = _named(chat, "alice")
        chat.backend.silent = True
        _feed(alice, "/join #dev")
        chat.advance(2)  # it did join: told so, not "try again"
        assert alice.lines() == ["*** alice joined #dev", "*** also in #dev: bob"]


# -- a user of another node: answers, and what travels on the private message ---------------------

FAR = Person("faraway", "n2:7", "n2", "far@c0ffee.cloak", "faraway", "gone fishing",
             1000.0, 1000.0, ("#lobby",), "198.51.100.7")


class TwoNodes(DeferredBackend):
    """Deferred answers from the local tables, plus one user connected to node n2 (in
    #lobby, identified as ``faraway``, away) and a room only n2 has, ``#far``; a
    private message to that user is published (kept in ``published``)."""

    def __init__(self, local: Any, call_soon: Any) -> None:
        super().__init__(local, call_soon)
        self.published: list[Any] = []
        #: Who has the nick ``faraway`` on n2.
        self.far = FAR

    def find_nick(self, nick: str, then: Any) -> None:
        if nick.lower() == FAR.nick:
            self._later(then, self.far)
        else:
            super().find_nick(nick, then)

    def members(self, room: str, then: Any) -> None:
        far = [Member(FAR.nick, FAR.session, FAR.user, FAR.account, True)]
        def answer() -> None:
            self.local.members(room, lambda here: then(
                here + far if room.lower() in ("#lobby", "#far") else here))
        self._later(answer)

    def room_list(self, then: Any) -> None:
        self._later(self.local.room_list, lambda here: then(
            [RoomInfo("#far", 1, "over there"), *here]))

    def to_nick(self, event: Any, nick: str) -> bool:
        if nick.lower() == FAR.nick:
            self.published.append(event)
            return True
        return super().to_nick(event, nick)


def _two_nodes(**sections: Any) -> InProcessChat:
    return InProcessChat(backend=TwoNodes.factory, fake_clock=True, **sections)


def test_who_whois_rooms_and_list_show_a_user_and_a_room_of_another_node():
    with _two_nodes() as chat:
        alice = _named(chat, "alice")
        _feed(alice, "/who", "/whois FARAWAY", "/rooms", "/list", "/who #far")
        _settle(chat)
        lines = alice.lines()
        assert lines[0] == "*** #lobby has 2 members: alice, faraway (away)"
        assert lines[1].startswith("*** faraway: in #lobby; connected ")
        assert lines[2:4] == ["*** faraway is identified as faraway",
                              "*** faraway is away: gone fishing"]
        assert lines[4] == ("*** 2 rooms: #far (1), #lobby (1) *  "
                            "(* = your current room, + = you are in it)")
        assert lines[5:8] == ["*** rooms 1-2 of 2:", "***   #far (1) — over there",
                              "***   #lobby (1)"]
        assert lines[8] == "*** #far has 1 member: faraway (away)"
        assert "198.51.100.7" not in "\n".join(lines)  # the address: operators only


def test_whois_of_a_user_of_another_node_as_jsonl_names_its_node_and_address_for_operators():
    with _two_nodes(plugins={"oper": {"password": OPER_PASSWORD}}) as chat:
        bot = _named(chat, "bot", "jsonl")
        bot.send(json.dumps({"cmd": "oper", "args": OPER_PASSWORD}))
        _settle(chat)
        bot.objects()
        _feed(bot, json.dumps({"cmd": "whois", "args": "faraway", "id": "w"}))
        _settle(chat)
        (whois,) = [o for o in bot.objects() if o["type"] == "whois"]
        assert (whois["connected_to"], whois["userhost"], whois["address"], whois["re"]) == (
            "n2", "far@c0ffee.cloak", "198.51.100.7", "w")


def test_a_room_operator_of_another_node_is_marked_from_the_rooms_operators():
    with _two_nodes() as chat:
        bot = _named(chat, "bot", "jsonl")
        chat.server.set_room_operators(chat.server.rooms.get("#lobby"), ["FarAway"])
        _feed(bot, json.dumps({"cmd": "who"}))
        _settle(chat)
        (names,) = [o for o in bot.objects() if o["type"] == "names"]
        assert names["members"] == [
            {"nick": "bot", "userhost": bot.client.user},
            {"nick": "faraway", "userhost": "far@c0ffee.cloak", "account": "faraway",
             "away": True, "operator": True}]


def test_a_private_message_carries_its_recipient_as_presence_found_it():
    with _two_nodes() as chat:
        alice = _named(chat, "alice")
        bob = _named(chat, "bob")
        alice.lines()
        _feed(alice, "/msg faraway hi there", "/msg bob and you")
        _settle(chat)
        (sent,) = chat.backend.published
        assert (sent.target, sent.to_account, sent.to_session, sent.to_away) == (
            "faraway", "faraway", "n2:7", "gone fishing")
        # the away reply reads the event: the recipient is not a client of this process
        assert alice.lines() == ["-> *faraway* hi there", "*** faraway is away: gone fishing",
                                 "-> *bob* and you"]
        assert bob.lines() == ["*alice* and you"]


def test_mentions_find_the_nick_through_the_presence_api(chatd_server):
    plugins = str(Path(__file__).resolve().parent.parent / "plugins")
    server = chatd_server(plugin_dirs=[plugins, LATER], plugins={"laterpresence": {}})
    bob = server.client()
    bob.send("/nick bob")
    bob.expect(r"is now known as bob$")
    alice = server.client()
    alice.send_raw(b"/nick alice\n/join #dev\n/part #lobby\n@bob @BOB @nobody look\n")
    alice.expect(r"^\*\*\* you are now talking in #dev$")
    bob.expect(r"^\*\*\* \[mentions\] alice mentioned you in #dev: @bob @BOB @nobody look$")
    bob.expect_nothing(0.2)  # once, however often named
    server.wait_for_log(r"delivery backend: DeferredBackend")


def test_history_keeps_a_private_message_to_another_node_under_the_accounts(tmp_path):
    with _two_nodes(storage={"path": str(tmp_path / "chat.sqlite3")},
                    plugins={"history": {"private": True}}) as chat:
        alice = _named(chat, "alice")
        alice.send("/register alice-password-1")
        chat.wait_for(lambda: alice.client.account == "alice")
        alice.lines()
        chat.backend.far = dataclasses.replace(FAR, account="farwell")  # its account's
        _feed(alice, "/msg faraway kept", "/history FarAway")  # name is not its nick's
        _settle(chat)
        lines = alice.lines()
        assert lines[:2] == ["-> *faraway* kept", "*** faraway is away: gone fishing"]
        assert lines[2] == "*** private history with FarAway: the last line"
        # stored under the accounts (as for any private line): the recipient is "farwell"
        assert lines[3].endswith("-> *farwell* kept") and lines[4] == "*** end of history"


def test_a_private_message_to_an_unidentified_holder_on_another_node_is_refused():
    with _two_nodes() as chat:
        owner = _named(chat, "faraway")  # here, faraway registers the nick, then renames
        owner.send("/register faraway-password-1")
        chat.wait_for(lambda: owner.client.account == "faraway")
        owner.send("/nick owner")
        _settle(chat)
        chat.backend.far = dataclasses.replace(FAR, account=None)  # n2's holder: not it
        alice = _named(chat, "alice")
        _feed(alice, "/msg faraway for the owner")
        _settle(chat)
        assert alice.lines() == ["! faraway is held by someone who has not identified for it, "
                                 "not by its owner; not sent"]
        assert chat.backend.published == []
        chat.backend.far = FAR  # identified as the owner: sent
        alice.send("/msg faraway for the owner")
        _settle(chat)
        assert [event.text for event in chat.backend.published] == ["for the owner"]


# -- /ban NICK: whoever has the nick, on any node -------------------------------------------------


def test_ban_of_a_user_of_another_node_stands_for_its_account_and_address():
    with _two_nodes(plugins={"oper": {"password": OPER_PASSWORD}}) as chat:
        op = _named(chat, "op")
        op.send(f"/oper {OPER_PASSWORD}")
        op.send("/join #dev")
        _settle(chat)
        op.lines()
        _feed(op, "/ban faraway spam")
        _settle(chat)
        assert op.lines() == [
            "*** op banned faraway in #dev: spam",
            "*** faraway is banned in #dev as *!faraway@*, *!*@198.51.100.7"]


# -- a kick from the last room: the protocol's rule -----------------------------------------------


def test_a_kick_from_the_last_room_puts_a_line_client_back_in_the_lobby_but_not_a_jsonl_one():
    with InProcessChat(plugins={"oper": {"password": OPER_PASSWORD}}) as chat:
        op = _named(chat, "op")
        op.send(f"/oper {OPER_PASSWORD}")
        op.send("/join #dev")
        person = _named(chat, "person")
        person.send("/join #dev")
        person.send("/part #lobby")
        bot = _named(chat, "bot", "jsonl")
        bot.send(json.dumps({"cmd": "join", "room": "#dev"}))
        bot.send(json.dumps({"cmd": "part", "room": "#lobby"}))
        assert [r.name for r in person.client.rooms] == ["#dev"]
        assert [r.name for r in bot.client.rooms] == ["#dev"]
        op.send("/kick person bye")
        op.send("/kick bot bye")
        assert [r.name for r in person.client.rooms] == ["#lobby"]  # line: back in #lobby
        assert bot.client.rooms == () and bot.client.room is None  # jsonl: in no room


# -- a real server whose backend answers later ----------------------------------------------------


def test_a_real_server_with_later_answers_keeps_who_and_whois_in_order(chatd_server):
    server = chatd_server(plugin_dirs=[LATER], plugins={"laterpresence": {}})
    bob = server.client()
    bob.send("/nick bob")
    bob.expect(r"is now known as bob$")
    bob.send("/away lunch")
    bob.expect(r"^\*\*\* you are away: lunch")
    alice = server.client()
    alice.send_raw(b"/nick alice\n/who\n/whois bob\n/rooms\n/list\n/who #nowhere\nhello\n")
    alice.expect(r"is now known as alice$")
    alice.expect_line("*** #lobby has 2 members: alice, bob (away)")
    alice.expect(r"^\*\*\* bob: in #lobby; connected \d+ s ago")
    alice.expect_line("*** bob is away: lunch")
    alice.expect_line("*** 1 room: #lobby (2) *  (* = your current room, + = you are in it)")
    alice.expect_line("*** rooms 1-1 of 1:")
    alice.expect_line("***   #lobby (2)")
    alice.expect_line("! no such room: #nowhere")
    bob.expect(r"^<alice> hello$")
    server.wait_for_log(r"delivery backend: DeferredBackend")
