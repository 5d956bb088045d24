"""ClusterBackend in-process: two chat domains joined by an in-memory bus in place of
Redis (the link's interface: publish_many, subscribe, unsubscribe), so the routing
rules are tested without timing: a private message goes to the node of the session
presence found, once; a node delivers nothing it sent itself; channels follow the
rooms that have local members."""

from __future__ import annotations

from typing import Any

from chatd.builtin.cluster.backend import ClusterBackend, LocalPresence
from chatd.delivery import person
from chatd.testing import InProcessChat


class Bus:
    """Redis' PUB/SUB in memory: what each node subscribes to, delivered at once."""

    def __init__(self) -> None:
        self.nodes: dict[str, Any] = {}
        self.published: list[tuple[str, bytes]] = []

    def link(self) -> Any:
        bus = self

        class Link:
            up = True

            def __init__(self) -> None:
                self.channels: set[str] = set()

            def subscribe(self, channel: str) -> None:
                self.channels.add(channel)

            def unsubscribe(self, channel: str) -> None:
                self.channels.discard(channel)

            def publish_many(self, items: list[tuple[str, bytes]]) -> None:
                for channel, data in items:
                    bus.published.append((channel, data))
                    for node in bus.nodes.values():
                        if channel in node.link.channels:
                            node.on_message(channel, data)

            def close(self) -> None:
                pass

        return Link()


class EveryNode(LocalPresence):
    """Presence across the bus's nodes: find_nick asks each node's local backend."""

    def __init__(self, local: Any, bus: Bus) -> None:
        super().__init__(local)
        self.bus = bus

    def find_nick(self, nick, then):
        for node in self.bus.nodes.values():
            holder = node.local.holder(nick)
            if holder is not None:
                return then(person(holder))
        return then(None)


def cluster(bus: Bus, name: str) -> InProcessChat:
    def factory(local, server, call_soon):
        backend = ClusterBackend(local, bus.link(), EveryNode(local, bus), name)
        bus.nodes[name] = backend
        backend.start()
        return backend

    return InProcessChat(backend=factory, server={"node_id": name})


def test_a_private_message_goes_to_the_holders_node_once():
    bus = Bus()
    a, b = cluster(bus, "a"), cluster(bus, "b")
    alice, bob = a.connect(), b.connect()
    alice.send("/nick alice")
    bob.send("/nick bob")
    a.tick(), b.tick()
    bus.published.clear()
    alice.send("/msg bob psst")
    a.tick(), b.tick()
    assert bob.lines()[-1] == "*alice* psst"
    assert [c for c, _ in bus.published] == ["chatd:node:b"]  # to b alone, once
    assert alice.lines()[-1] == "-> *bob* psst"


def test_a_private_message_to_nobody_is_refused_and_not_published():
    bus = Bus()
    a, _b = cluster(bus, "a"), cluster(bus, "b")
    alice = a.connect()
    bus.published.clear()
    alice.send("/msg nobody hi")
    a.tick()
    assert alice.lines()[-1] == "! no such nick: nobody"
    assert not [c for c, _ in bus.published if ":node:" in c]


def test_a_node_subscribes_to_a_room_while_it_has_members_there():
    bus = Bus()
    a = cluster(bus, "a")
    link = bus.nodes["a"].link
    assert {"chatd:all", "chatd:node:a"} <= link.channels
    alice, carol = a.connect(), a.connect()
    alice.send("/join #Dev")
    a.tick()
    assert "chatd:room:#dev" in link.channels
    carol.send("/join #dev")
    carol.send("/part #dev")
    a.tick()
    assert "chatd:room:#dev" in link.channels  # alice is still there
    alice.send("/part #dev")
    a.tick()
    assert "chatd:room:#dev" not in link.channels


def test_one_batch_per_channel_per_tick_and_nothing_back_to_the_sender():
    bus = Bus()
    a, b = cluster(bus, "a"), cluster(bus, "b")
    alice, carol, bob = a.connect(), a.connect(), b.connect()
    for client in (alice, carol, bob):
        client.send("/join #dev")
    a.tick(), b.tick()
    bus.published.clear()
    alice.lines(), carol.lines(), bob.lines()
    alice.protocol.data_received(b"one\ntwo\nthree\n")
    a.tick(), b.tick()
    assert [c for c, _ in bus.published] == ["chatd:room:#dev"]  # three lines, one batch
    assert [x for x in carol.lines() if "<guest" in x] == [
        "<guest-1> one", "<guest-1> two", "<guest-1> three"]  # once: no echo
    assert [x for x in bob.lines() if "<guest" in x] == [
        "<guest-1> one", "<guest-1> two", "<guest-1> three"]


def test_quits_from_two_nodes_with_the_same_event_id_are_both_shown():
    """Event ids are unique per node (unless node_number/node_count spread them): a
    receiver tells copies of one event apart from another node's event by both."""
    from chatd.builtin.cluster import wire
    from chatd.events import Quit, Source

    bus = Bus()
    a = cluster(bus, "a")
    alice = a.connect()
    alice.send("/join #dev")
    alice.send("/join #ops")
    a.tick()
    alice.lines()
    backend = bus.nodes["a"]
    for node, nick in (("b", "bob"), ("c", "carl")):
        quit = Quit(77, 1796119080.0, Source(nick, 1, node=node, ident=nick, host="h"), "",
                    "", rooms=("#dev", "#ops"))
        for channel in ("chatd:room:#dev", "chatd:room:#ops"):  # one copy per room
            backend.on_message(channel, wire.encode(node, 1, [quit]))
    a.tick()
    assert [x for x in alice.lines() if "quit" in x] == ["*** bob quit", "*** carl quit"]


def test_the_counters_count_bad_messages_gaps_and_batches():
    from chatd.builtin.cluster import wire
    from chatd.events import Message, Source

    bus = Bus()
    a = cluster(bus, "a")
    alice = a.connect()
    alice.send("/join #dev")
    a.tick()
    backend = bus.nodes["a"]
    bob = Source("bob", 1, node="b", ident="bob", host="h")
    for seq in (1, 2, 6):  # 3, 4 and 5 never came (events have ids of their own)
        line = Message(seq, 1796119080.0, bob, "#dev", "hi")
        backend.on_message("chatd:room:#dev", wire.encode("b", seq, [line]))
    backend.on_message("chatd:room:#dev", b"garbage")
    a.tick()
    stats = backend.stats()
    assert stats["cluster_gaps"] == 3 and stats["cluster_bad_messages"] == 1
    assert stats["cluster_batches_in"] == 3 and stats["cluster_up"] == 1
    assert [x for x in alice.lines() if x.startswith("<bob>")] == ["<bob> hi"] * 3


def test_an_event_from_an_ipv6_address_without_a_cloak_is_delivered():
    """A host that starts with ':' (``::1`` when cloaks are off) is a host, not a forgery;
    a nick with a space, or one that starts with ':', is refused."""
    from chatd.builtin.cluster import wire
    from chatd.events import Message, Source

    bus = Bus()
    a = cluster(bus, "a")
    alice = a.connect()
    alice.send("/join #dev")
    a.tick()
    backend = bus.nodes["a"]
    for seq, (nick, host) in enumerate((("bob", "::1"), ("b ob", "h"), (":bob", "h")), 1):
        source = Source(nick, 1, node="b", ident="bob", host=host)
        line = Message(seq, 1796119080.0, source, "#dev", f"line {seq}")
        backend.on_message("chatd:room:#dev", wire.encode("b", seq, [line]))
    a.tick()
    assert [x for x in alice.lines() if "line" in x] == ["<bob> line 1"]
    assert backend.stats()["cluster_bad_messages"] == 2


def test_a_gap_asks_the_history_for_the_origins_events_between_the_last_and_the_next():
    """The range is the origin's own event ids (a dead node's quit it announces in the
    same batch is numbered by another counter and does not count)."""
    from chatd.builtin.cluster import wire
    from chatd.events import Message, Quit, Source

    bus = Bus()
    a = cluster(bus, "a")
    alice = a.connect()
    alice.send("/join #dev")
    a.tick()
    backend = bus.nodes["a"]
    asked = []
    backend.recover = lambda *args: asked.append(args[:4])
    bob = Source("bob", 1, node="b", ident="bob", host="h")
    gone = Source("zed", 4, node="x", ident="zed", host="h")
    backend.on_message("chatd:room:#dev", wire.encode("b", 1, [Message(10, 1.0, bob, "#dev",
                                                                       "one")]))
    lost = Quit(5, 1.0, gone, "", "node lost", rooms=("#dev",))
    backend.on_message("chatd:room:#dev", wire.encode(
        "b", 4, [lost, Message(14, 1.0, bob, "#dev", "four")]))
    assert asked == [("#dev", "b", 10, 14)]
    assert backend.stats()["cluster_gaps"] == 2


def test_gaps_within_a_minute_are_all_counted_and_the_next_line_says_so(caplog):
    """A gap's log line is rate-limited per channel (a flapping link cannot flood the
    log), but no gap goes unreported: ``cluster_gaps`` counts each at once, and the
    next line a minute later says how many like it were held back."""
    from chatd.builtin.cluster import wire
    from chatd.events import Message, Source

    now = [100.0]
    bus = Bus()
    chat = InProcessChat(backend=lambda local, server, call_soon: _started(
        ClusterBackend(local, bus.link(), EveryNode(local, bus), "a", clock=lambda: now[0]),
        bus), server={"node_id": "a"})
    alice = chat.connect()
    alice.send("/join #dev")
    chat.tick()
    backend = bus.nodes["a"]
    bob = Source("bob", 1, node="b", ident="bob", host="h")

    def heard(seq: int) -> None:
        backend.on_message("chatd:room:#dev", wire.encode(
            "b", seq, [Message(seq, 1.0, bob, "#dev", f"line {seq}")]))

    with caplog.at_level("WARNING", logger="chatd.builtin.cluster.backend"):
        heard(1)
        heard(5)   # 3 missed: logged
        heard(10)  # 4 more, 10 s later: counted, the line held back
        now[0] += 10
        heard(12)
        now[0] += 60
        heard(20)  # a minute on: logged, with the one held back
    gaps = [r.getMessage() for r in caplog.records if "missed" in r.getMessage()]
    assert backend.stats()["cluster_gaps"] == 3 + 4 + 1 + 7
    assert gaps == [
        "cluster: missed 3 event(s) from b on chatd:room:#dev; 3 so far; not recoverable: "
        "history is not shared (storage.url)",
        "cluster: missed 7 event(s) from b on chatd:room:#dev; 15 so far; not recoverable: "
        "history is not shared (storage.url) (and 2 more like it in the last 60 s)"]


def _started(backend: ClusterBackend, bus: Bus) -> ClusterBackend:
    bus.nodes[backend.node] = backend
    backend.start()
    return backend
