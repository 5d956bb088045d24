"""Identity that can cross nodes (issue 19, part 3).

A source names its node, a ``user@host`` identity (the address cloaked by
default) and its account; "is this my own event" compares sessions, so an
event from another node whose client number equals a local client's id is not
that client's; event ids and guest nicks are unique across nodes.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatd import codec
from chatd.config import ConfigError, default_config, parse_config
from chatd.events import Join, PrivateMessage, Source, first_event_id, next_event_id
from chatd.testing import InProcessChat

CLOAK = r"[0-9a-f]{12}\.cloak"


def _chat(**server: object) -> InProcessChat:
    return InProcessChat(server={"node_id": "n1", **server})


# -- what a client's source says ----------------------------------------------------------------


def test_a_clients_source_names_its_node_user_at_cloak_and_session():
    chat = _chat()
    alice = chat.connect(address="192.0.2.7")
    source = alice.client.source
    assert source.node == "n1"
    assert re.fullmatch(rf"guest-1@{CLOAK}", source.user)
    assert "192.0.2.7" not in source.user  # others see the cloak; operators the address
    assert alice.client.address == "192.0.2.7"
    assert alice.client.session == source.session == f"n1:{alice.client.id}"
    assert source.account is None


def test_the_user_stays_across_nick_changes_and_the_account_joins_the_source():
    chat = _chat()
    alice = chat.connect()
    user = alice.client.user
    alice.send("/nick alice")
    assert alice.client.source.nick == "alice" and alice.client.user == user
    chat.server.set_account(alice.client, "alice")
    alice.send("hello")
    said = alice.client.source
    assert said.account == "alice" and said.user == user
    assert codec.to_dict(chat.domain.new_event(PrivateMessage, said, "bob", "x"))["account"] \
        == "alice"


def test_cloaks_are_the_same_for_an_address_and_differ_between_addresses():
    chat = _chat()
    one, again, other = (chat.connect(address=a) for a in ("192.0.2.7", "192.0.2.7", "192.0.2.8"))
    host = one.client.source.host
    assert again.client.source.host == host
    assert other.client.source.host != host
    # The same string object: ten thousand idle clients from one address hold one cloak.
    assert again.client.source.host is host


def test_a_cloak_key_makes_cloaks_the_same_across_starts_and_without_it_they_differ():
    keyed = [_chat(cloak_key="s3cret").connect(address="192.0.2.7") for _ in range(2)]
    assert keyed[0].client.source.host == keyed[1].client.source.host
    unkeyed = [_chat().connect(address="192.0.2.7") for _ in range(2)]
    assert unkeyed[0].client.source.host != unkeyed[1].client.source.host


def test_without_cloaking_the_host_is_the_address():
    alice = _chat(cloak_addresses=False).connect(address="192.0.2.7")
    assert alice.client.user == "guest-1@192.0.2.7"


def test_server_sources_name_the_node_and_have_no_session():
    chat = _chat()
    source = chat.domain.server_source(None)
    assert source.node == "n1" and source.session is None and source.user == ""
    assert not source.is_session(None)


# -- "is this my own event" ---------------------------------------------------------------------


def _remote_twin(local: Source, nick: str = "mallory") -> Source:
    """A client of another node whose per-node number equals ``local``'s id."""
    return Source(nick, local.client_id, node="n2", ident=nick, host="ffff00000000.cloak")


def test_a_remote_event_whose_number_equals_a_local_id_is_not_rendered_as_its_own():
    chat = _chat()
    alice = chat.connect()
    bot = chat.connect("jsonl")
    alice.lines(), bot.lines()
    for peer in (alice, bot):
        mine = peer.client.source
        twin = _remote_twin(mine)
        assert twin.client_id == mine.client_id and twin.session != mine.session
        peer.client.deliver(chat.domain.new_event(PrivateMessage, twin, peer.nick, "psst"))
        peer.client.deliver(chat.domain.new_event(PrivateMessage, mine, "bob", "sent"))
    assert alice.lines() == ["*mallory* psst", "-> *bob* sent"]
    remote, own = bot.objects()
    assert "self" not in remote and remote["from"] == "mallory"
    assert own["self"] is True


def test_a_remote_quiet_join_is_shown_even_when_its_number_is_the_viewers():
    """A quiet join is hidden from its own client only (/join words it itself); taken
    for the viewer's own by its number, another node's join would vanish."""
    chat = _chat()
    alice = chat.connect()
    alice.lines()
    twin = _remote_twin(alice.client.source)
    alice.client.deliver(chat.domain.new_event(Join, twin, "#lobby", quiet=True))
    assert alice.lines() == ["*** mallory joined #lobby"]


def test_a_replayed_event_is_nobodys_own():
    chat = _chat()
    alice = chat.connect()
    alice.lines()
    mine = alice.client.source
    stored = codec.to_dict(chat.domain.new_event(PrivateMessage, mine, "bob", "then"))
    replayed = codec.from_dict({**stored, "client": 0, "session": None, "history": True})
    assert replayed.source.session is None
    alice.client.deliver(replayed)
    assert re.fullmatch(r"\[[^]]+\] \*guest-1\* then", alice.lines()[0])


# -- ids and guest nicks across nodes -----------------------------------------------------------


@given(st.integers(0, 2**52), st.integers(1, 1024), st.data())
def test_next_event_id_is_the_smallest_greater_id_of_the_node(after, count, data):
    number = data.draw(st.integers(0, count - 1))
    following = next_event_id(after, number, count)
    assert following > after and following % count == number
    assert following - count <= after  # the smallest such


def test_ids_start_at_the_clock_and_a_single_node_counts_one_by_one():
    assert first_event_id(0, 1, clock_us=1_000_000) == 1_000_000
    assert first_event_id(3, 4, clock_us=1_000_000) == 1_000_003
    assert first_event_id(0, 4, clock_us=1_000_001) == 1_000_004
    chat = _chat()
    ids = [chat.domain.new_event(PrivateMessage, chat.domain.server_source(None), "x").id
           for _ in range(3)]
    assert ids[1] == ids[0] + 1 and ids[2] == ids[1] + 1


def test_two_nodes_never_make_the_same_event_id_or_guest_nick():
    nodes = [_chat(node_id=f"n{k}", node_number=k, node_count=2) for k in (0, 1)]
    ids: list[set[int]] = []
    guests: list[set[str]] = []
    for k, chat in enumerate(nodes):
        peers = [chat.connect() for _ in range(3)]
        made = {chat.domain.new_event(PrivateMessage, peers[0].client.source, "x").id
                for _ in range(50)}
        assert all(i % 2 == k for i in made)
        ids.append(made)
        guests.append({p.nick for p in peers})
    assert not ids[0] & ids[1]
    assert guests == [{"guest-1", "guest-3", "guest-5"}, {"guest-2", "guest-4", "guest-6"}]


def test_continuing_past_stored_ids_keeps_the_nodes_numbers():
    chat = _chat(node_number=2, node_count=5)
    source = chat.domain.server_source(None)
    before = chat.domain.new_event(PrivateMessage, source, "x").id
    chat.server.continue_event_ids(before + 1_000_000)
    after = chat.domain.new_event(PrivateMessage, source, "x").id
    assert after > before + 1_000_000 and after % 5 == 2
    assert after - 5 <= before + 1_000_000


# -- configuration -----------------------------------------------------------------------------


def test_the_node_id_defaults_to_the_host_name_and_is_a_name():
    assert default_config().server.node() not in ("", None)
    with pytest.raises(ConfigError) as info:
        parse_config("server:\n  node_id: 'two words'\n")
    assert info.value.key == "server.node_id" and info.value.line == 2


def test_a_node_number_outside_node_count_names_its_key_and_line():
    with pytest.raises(ConfigError) as info:
        parse_config("server:\n  node_count: 4\n  node_number: 4\n")
    assert str(info.value) == (
        "line 3: server.node_number: expected a number below node_count (4), got 4")


def test_sessions_of_many_clients_are_distinct():
    chat = _chat()
    sessions = {chat.connect().client.session for _ in range(20)}
    assert len(sessions) == 20


def test_history_replays_are_nobodys_own_even_to_the_client_that_said_them():
    """A replayed line's session is over (client 0): after a restart its number may be
    a new client's, so a replay is never marked as the viewer's own."""
    chat = _chat()
    bot = chat.connect("jsonl")
    bot.send_json(cmd="say", text="one")
    bot.objects()
    bot.send_json(cmd="history", args="1")
    replayed = [obj for obj in bot.objects() if obj.get("history")]
    assert [obj["text"] for obj in replayed] == ["one"]
    assert "self" not in replayed[0]
