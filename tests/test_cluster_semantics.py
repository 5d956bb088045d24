"""What a user sees across nodes: real chatd processes on one real redis-server.

Every protocol on each node sees every other's lines once, in its own form and
in per-sender order; a plugin that republishes what it hears causes no storm;
payloads forged with ``redis-cli`` are sanitised (no ESC byte reaches a
terminal) and can never speak for a local client; a gap is counted in ``/stats``
and ``/metrics`` and, with a shared history (PostgreSQL), recovered; ``/whois``
and ``/list`` of another node's user and room stay fresh.
"""

from __future__ import annotations

import contextlib
import json
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis  # noqa: F401  (the test extra has it: missing, this fails everywhere)

from chatd.testing import ChatClient, wait_until

WAIT = 10.0
PASSWORD = "op-secret-1"
IRC_LISTENERS = [{"port": 0}, {"port": 0, "protocol": "irc"}, {"port": 0, "protocol": "jsonl"}]


def start_node(chatd_server: Any, redis_url: str, node: str, **sections: Any) -> Any:
    """A chatd node of the cluster, registered in Redis before any client connects."""
    server = chatd_server(cluster={"redis_url": redis_url, "node_id": node,
                                   "heartbeat_seconds": 0.2, "node_timeout_seconds": 1.0,
                                   "connect_timeout_seconds": 0.5}, **sections)
    server.wait_for_log(rf"cluster: node {node} registered")
    return server


def heard_by(redis_server: Any, channel: str, count: int) -> None:
    """Until ``count`` nodes subscribe to ``channel``."""
    def subscribers() -> int:
        out = redis_server.cli("PUBSUB", "NUMSUB", channel).split()
        return int(out[1]) if len(out) > 1 else 0

    assert wait_until(lambda: subscribers() == count, WAIT), f"{channel}: {subscribers()}"


def chatter(server: Any, nick: str, room: str = "#dev") -> Any:
    client = server.client()
    client.send(f"/nick {nick}")
    client.expect(rf"is now known as {re.escape(nick)}$")
    client.send(f"/join {room}")
    client.expect(rf"joined {room}|talking in {room}")
    return client


def lines_until(client: Any, marker: str) -> list[str]:
    """Every line up to the one holding ``marker`` (excluded)."""
    seen: list[str] = []
    while True:
        line = client.recv_line(timeout=WAIT)
        if marker in line:
            return seen
        seen.append(line)


def batch(node: str, seq: int, *events: dict[str, Any], **extra: Any) -> str:
    """A batch as a node publishes it (wire.py), for ``redis-cli PUBLISH``."""
    return json.dumps({"v": 1, "node": node, "seq": seq, "events": list(events), **extra})


def message(text: str, *, nick: str = "mallory", node: str = "z", client: int = 3,
            event_id: int = 7, room: str = "#dev", **fields: Any) -> dict[str, Any]:
    """A codec dict of a room message (chatd.codec, internal form)."""
    return {"v": 1, "type": "message", "id": event_id, "time": 1.0, "from": nick,
            "node": node, "user": f"{nick}@h", "session": f"{node}:{client}",
            "client": client, "room": room, "text": text, **fields}


def stats_line(op: Any) -> dict[str, Any]:
    """``/stats``'s cluster line as numbers (and ``redis``: up/DOWN)."""
    op.send("/stats")
    line = op.expect(r"^\*\*\* cluster: redis (\w+), (.*)$")
    counts = {name: int(n) for name, n in re.findall(r"([a-z ]+?) (\d+)(?:,|$)",
                                                      line.group(2))}
    counts = {k.strip(): v for k, v in counts.items()}
    counts["redis"] = line.group(1)
    return counts


@pytest.fixture
def two(chatd_server: Any, redis_server: Any, redis_url: str) -> tuple[Any, Any, Any, Any]:
    """Node a with alice, node b with bob (an operator), both in #dev."""
    a = start_node(chatd_server, redis_url, "a")
    b = start_node(chatd_server, redis_url, "b", plugins={"oper": {"password": PASSWORD}})
    alice, bob = chatter(a, "alice"), chatter(b, "bob")
    bob.send(f"/oper {PASSWORD}")
    bob.expect(r"^\*\*\* you are now an operator$")
    heard_by(redis_server, "chatd:room:#dev", 2)
    return a, b, alice, bob


# -- counters: /stats and /metrics ------------------------------------------------------------


def test_stats_show_the_links_state_gaps_and_bad_messages(two: Any, redis_server: Any) -> None:
    _a, b, alice, bob = two
    before = stats_line(bob)
    assert before["redis"] == "up" and before["gaps"] == 0 and before["bad messages"] == 0
    redis_server.cli("PUBLISH", "chatd:room:#dev", "not json")
    redis_server.cli("PUBLISH", "chatd:room:#dev", batch("z", 1, message("one", event_id=1)))
    redis_server.cli("PUBLISH", "chatd:room:#dev", batch("z", 5, message("five", event_id=5)))
    bob.expect(r"^<mallory> five$")
    alice.send("counted")
    bob.expect(r"^<alice> counted$")
    after = stats_line(bob)
    assert after["gaps"] == 3 and after["bad messages"] == 1, after
    assert after["recovered"] == 0  # no shared history here (SQLite)
    assert after["handler errors"] == 0  # the forged payloads were refused, not raised
    assert after["batches in"] >= before["batches in"] + 3
    b.wait_for_log(r"missed 3 event\(s\) from z on chatd:room:#dev; 3 so far; not "
                   r"recoverable: history is not shared")


def _samples(snapshot: dict[str, Any]) -> dict[str, float]:
    from prometheus_client import CollectorRegistry, generate_latest

    from chatd.metrics import ChatdCollector

    registry = CollectorRegistry()
    registry.register(ChatdCollector(lambda: snapshot))
    samples = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_metrics_serve_the_cluster_counters_only_on_a_cluster_node() -> None:
    samples = _samples({"cluster_gaps": 4, "cluster_recovered": 3, "cluster_bad_messages": 2,
                        "cluster_dropped": 1, "cluster_up": 1, "cluster_batches_in": 9,
                        "cluster_batches_out": 8, "cluster_handler_errors": 5})
    assert samples["chatd_cluster_gaps_total"] == 4
    assert samples["chatd_cluster_handler_errors_total"] == 5
    assert samples["chatd_cluster_recovered_total"] == 3
    assert samples["chatd_cluster_bad_messages_total"] == 2
    assert samples["chatd_cluster_dropped_total"] == 1
    assert samples["chatd_cluster_batches_in_total"] == 9
    assert samples["chatd_cluster_up"] == 1
    alone = _samples({"clients": 1})
    assert not [name for name in alone if "cluster" in name]
    assert alone["chatd_clients"] == 1


# -- C5: forged payloads are display only, and sanitised --------------------------------------

ESC_TEXT = "hi \x1b[2J\x1b]0;owned\x07there\x07\x00\x9b31m"  # sanitised: "hi there"


def irc_member(server: Any, nick: str, room: str) -> Any:
    """A hand-driven IRC connection (raw lines: every byte chatd sends is seen)."""
    irc = ChatClient((server.host, server.ports[1]))
    irc.send(f"NICK {nick}")
    irc.send(f"USER {nick} 0 * :{nick}")
    irc.expect(r" 001 ")
    irc.send(f"JOIN {room}")
    irc.expect(rf"JOIN :?{room}")
    return irc


def test_escape_sequences_in_a_forged_payload_never_reach_a_client(
        chatd_server: Any, redis_server: Any, redis_url: str) -> None:
    """Text and nick fields with ESC sequences and control characters, published with
    redis-cli, reach each protocol sanitised: no ESC byte, no control character, no
    second IRC line."""
    b = start_node(chatd_server, redis_url, "b", listen=IRC_LISTENERS)
    line = chatter(b, "bob")
    irc = irc_member(b, "ircbob", "#dev")
    bot = b.json_client(listener=2)
    bot.send(cmd="join", room="#dev")
    bot.expect(type="join", room="#dev", self=True)
    heard_by(redis_server, "chatd:room:#dev", 1)
    redis_server.cli("PUBLISH", "chatd:room:#dev", batch(
        "z", 1, message(ESC_TEXT, event_id=11, realname="\x1b]0;x\x07", room="#DEV\x1b[K")))
    redis_server.cli("PUBLISH", "chatd:room:#dev", batch(  # a nick that is no nick: refused
        "z", 2, message("evil nick", nick="mal\x1b[31mlory\r\nQUIT :x", event_id=12)))
    redis_server.cli("PUBLISH", "chatd:room:#dev", batch(
        "z", 3, message("marker", event_id=13)))
    for client in (line, irc):
        seen = lines_until(client, "marker")
        text = "\n".join(x.rstrip("\r") for x in seen)
        assert "hi there" in text, seen
        assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", text), seen
        assert "evil nick" not in text and "QUIT" not in text, seen
    said = bot.expect(type="message", text="hi there")
    assert said["room"].lower() == "#dev", said
    assert not re.search(r"[\x00-\x1f\x7f-\x9f]", json.dumps(said, ensure_ascii=False))
    b.wait_for_log(r"dropped a bad message on chatd:room:#dev \(a source nick that is not a "
                   r"name\)")


def test_a_forged_event_cannot_speak_for_a_client_of_this_node(
        two: Any, redis_server: Any) -> None:
    """A payload claiming bob's own session on bob's node (bob is b's first client:
    ``b:1``) is refused whole and counted: bob never sees a forged rename as his own."""
    _a, b, alice, bob = two
    forged = {"v": 1, "type": "nick", "id": 21, "time": 1.0, "from": "mallory",
              "node": "b", "user": "bob@h", "session": "b:1", "client": 1,
              "old": "bob", "new": "mallory", "rooms": ["#dev"]}
    redis_server.cli("PUBLISH", "chatd:room:#dev", batch("z", 1, forged))
    alice.send("after the forgery")
    seen = lines_until(bob, "<alice> after the forgery")
    assert not [x for x in seen if "mallory" in x], seen
    b.wait_for_log(r"dropped a batch from z on chatd:room:#dev: an event claims a session "
                   r"of this node \(b:1\)")
    assert stats_line(bob)["bad messages"] == 1


# -- gaps: recovered from a shared history ------------------------------------------------------


def test_lines_lost_while_redis_restarts_are_recovered_from_the_shared_history(
        chatd_server: Any, redis_server: Any, redis_url: str, postgres_url: str) -> None:
    """With one PostgreSQL history for both nodes, what alice said while Redis was down
    reaches bob after all: once, marked as history (a time stamp), counted as gap and
    as recovered; nothing is shown twice."""
    storage = {"url": postgres_url}
    a = start_node(chatd_server, redis_url, "a", storage=storage)
    b = start_node(chatd_server, redis_url, "b", storage=storage,
                   plugins={"oper": {"password": PASSWORD}})
    alice, bob = chatter(a, "alice"), chatter(b, "bob")
    heard_by(redis_server, "chatd:room:#dev", 2)
    alice.send("before")
    bob.expect(r"^<alice> before$")
    redis_server.stop()
    a.wait_for_log(r"chatd-a: lost Redis")
    for i in range(3):
        alice.send(f"during {i}")  # published nowhere; written to the shared history
    redis_server.start()
    heard_by(redis_server, "chatd:room:#dev", 2)
    assert wait_until(lambda: "connected to Redis" in a.log().split("lost Redis")[-1], WAIT)
    alice.send("after")
    seen = lines_until(bob, "during 2")
    seen.append(bob.history[-1])
    assert "<alice> after" in seen, seen
    recovered = [x for x in seen if "during" in x]
    assert [re.sub(r"^\[[\d: -]+\] ", "", x) for x in recovered] == [
        f"<alice> during {i}" for i in range(3)], seen
    assert all(re.match(r"^\[[\d: -]+\] <alice>", x) for x in recovered), recovered
    bob.send(f"/oper {PASSWORD}")
    bob.expect(r"you are now an operator")
    counts = stats_line(bob)
    assert counts["gaps"] == 3 and counts["recovered"] == 3, counts
    b.wait_for_log(r"recovered 3 of 3 missed event\(s\) from a in #dev")
    alice.send("end")
    assert not [x for x in lines_until(bob, "<alice> end") if "during" in x]  # once only


# -- C4: every protocol, exactly once, per-sender order; a republishing plugin ------------------

REPUBLISHER = """
    import threading

    import redis

    from chatd import hookimpl

    URL = {url!r}


    def _republish() -> None:
        \"\"\"Every payload heard on a room channel is published again, once (its own
        copy, heard back, is not): Redis carries each batch twice.\"\"\"
        r = redis.Redis.from_url(URL)
        pubsub = r.pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe("chatd:room:*")
        done = set()
        for message in pubsub.listen():
            data = message["data"]
            if data not in done:
                done.add(data)
                r.publish(message["channel"], data)


    @hookimpl
    def chatd_startup(server) -> None:
        threading.Thread(target=_republish, daemon=True, name="republisher").start()
"""

SENT = 30


@pytest.fixture
def transcript() -> Iterator[Any]:
    from irc_transcript import Transcript

    kept = Transcript()
    yield kept
    kept.check()


def _said(lines: list[tuple[str, str]]) -> dict[str, list[str]]:
    """(sender, text) pairs grouped by sender, in arrival order."""
    by: dict[str, list[str]] = {}
    for sender, text in lines:
        by.setdefault(sender, []).append(text)
    return by


def _line_said(client: Any, done: set[str]) -> dict[str, list[str]]:
    """A line client's room lines until every sender in ``done`` said its last one, and
    any late copy (a republished batch comes a round trip later)."""
    got: list[tuple[str, str]] = []
    waiting = set(done)
    while waiting:
        match = re.match(r"^<(\S+)> (.*)$", client.recv_line(timeout=WAIT))
        if match:
            got.append((match.group(1), match.group(2)))
            if match.group(2) == f"{match.group(1)} {SENT - 1}":
                waiting.discard(match.group(1))
    client.expect_nothing(0.5)
    return _said(got)


def _json_said(bot: Any, done: set[str]) -> dict[str, list[str]]:
    got: list[tuple[str, str]] = []
    waiting = set(done)
    while waiting:
        obj = bot.recv(timeout=WAIT)
        if obj.get("type") == "message" and obj.get("room") == "#dev":
            got.append((obj["from"], obj["text"]))
            if obj["text"] == f"{obj['from']} {SENT - 1}":
                waiting.discard(obj["from"])
    bot.expect_nothing(0.5)
    return _said(got)


def _ws_until(ws: Any, predicate: Any) -> dict[str, Any]:
    """The next jsonl object a WebSocket client gets that satisfies ``predicate`` (a
    text frame holds one or more jsonl lines)."""
    pending: list[dict[str, Any]] = ws.__dict__.setdefault("chatd_pending", [])
    while True:
        while pending:
            obj = pending.pop(0)
            if predicate(obj):
                return obj
        pending.extend(json.loads(line) for line in ws.recv(timeout=WAIT).splitlines())


def _ws_said(ws: Any, done: set[str]) -> dict[str, list[str]]:
    got: list[tuple[str, str]] = []
    waiting = set(done)
    while waiting:
        obj = _ws_until(ws, lambda o: o.get("type") == "message" and o.get("room") == "#dev")
        got.append((obj["from"], obj["text"]))
        if obj["text"] == f"{obj['from']} {SENT - 1}":
            waiting.discard(obj["from"])
    return _said(got)


def _irc_said(irc: Any, done: set[str]) -> dict[str, list[str]]:
    got: list[tuple[str, str]] = []
    waiting = set(done)
    while waiting:
        event = irc.expect("pubmsg")
        sender, text = event.source.split("!")[0], event.arguments[0]
        got.append((sender, text))
        if text == f"{sender} {SENT - 1}":
            waiting.discard(sender)
    for event in irc.fence():
        if event.type == "pubmsg":
            got.append((event.source.split("!")[0], event.arguments[0]))
    return _said(got)


def test_every_protocol_on_each_node_sees_every_line_once_in_order_despite_a_republisher(
        chatd_server: Any, redis_server: Any, redis_url: str, tmp_path: Path,
        transcript: Any) -> None:
    """alice (line) and wendy (a browser's WebSocket, the websockets library) on A; bob
    (line), dan (IRC, the irc library) and a jsonl bot on B, where a plugin republishes
    every batch it hears: all five send numbered lines at once, and each sees every
    other's lines exactly once, in the order they were sent, in its own protocol; B
    counts the copies it dropped."""
    from test_irc_clients import LibClient
    from websockets.sync.client import connect

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "republisher.py").write_text(textwrap.dedent(REPUBLISHER.format(url=redis_url)))
    a = start_node(chatd_server, redis_url, "a",
                   listen=[{"port": 0}, {"port": 0, "protocol": "websocket"}])
    b = start_node(chatd_server, redis_url, "b", listen=IRC_LISTENERS,
                   plugin_dirs=[str(plugins)], plugins={"oper": {"password": PASSWORD}})
    assert wait_until(lambda: redis_server.cli("PUBSUB", "NUMPAT").strip() == "1", WAIT)
    alice, bob = chatter(a, "alice"), chatter(b, "bob")
    dan = LibClient(b, "dan", transcript)
    dan.conn.join("#dev")
    dan.expect("join")
    bot = b.json_client(listener=2)
    bot.send(cmd="nick", nick="botty", id="n")
    bot.expect(re="n")
    bot.send(cmd="join", room="#dev", id="j")
    bot.expect(type="join", room="#dev", self=True)
    browser = contextlib.ExitStack()
    wendy = browser.enter_context(
        connect(f"ws://{a.host}:{a.ports[1]}/", open_timeout=WAIT, close_timeout=WAIT))
    wendy.send(json.dumps({"cmd": "nick", "nick": "wendy", "id": "n"}))
    _ws_until(wendy, lambda o: o.get("re") == "n")
    wendy.send(json.dumps({"cmd": "join", "room": "#dev", "id": "j"}))
    _ws_until(wendy, lambda o: o.get("type") == "join" and o.get("room") == "#dev"
              and o.get("self") is True)
    heard_by(redis_server, "chatd:room:#dev", 2)  # and the republisher's pattern (NUMPAT)
    for i in range(SENT):
        alice.send(f"alice {i}")
        bob.send(f"bob {i}")
        dan.conn.privmsg("#dev", f"dan {i}")
        bot.send(cmd="say", room="#dev", text=f"botty {i}")
        wendy.send(json.dumps({"cmd": "say", "room": "#dev", "text": f"wendy {i}"}))
    everyone = {"alice", "bob", "dan", "botty", "wendy"}
    seen = {
        "alice": _line_said(alice, everyone - {"alice"}),
        "bob": _line_said(bob, everyone - {"bob"}),
        "dan": _irc_said(dan, everyone - {"dan"}),
        "botty": _json_said(bot, everyone - {"botty"}),
        "wendy": _ws_said(wendy, everyone - {"wendy"}),
    }
    browser.close()
    for viewer, said in seen.items():
        assert set(said) == everyone - {viewer}, (viewer, sorted(said))
        for sender, texts in said.items():
            assert texts == [f"{sender} {i}" for i in range(SENT)], (viewer, sender, texts)
    bob.send(f"/oper {PASSWORD}")
    bob.expect(r"you are now an operator")
    counts = stats_line(bob)
    assert counts["duplicates"] > 0 and counts["gaps"] == 0, counts


# -- what another node shows of a user and a room stays fresh ----------------------------------


def _shows(client: Any, command: str, pattern: str) -> bool:
    """Whether ``command``'s answer (read up to a fence: an unknown command's error) holds
    ``pattern``."""
    client.send(command)
    client.send("/fencepost")  # an unknown command: its error ends the answer
    answer = lines_until(client, "fencepost")
    return any(re.search(pattern, line) for line in answer)


def test_whois_and_who_on_another_node_follow_away_and_real_name_changes(
        two: Any) -> None:
    _a, _b, alice, bob = two
    bob.send("/away at lunch")
    bob.expect(r"you are away: at lunch")
    assert wait_until(lambda: _shows(alice, "/whois bob", r"bob is away: at lunch"), WAIT)
    assert _shows(alice, "/who #dev", r"bob \(away\)")
    bob.send("/setname Robert B")
    assert wait_until(lambda: _shows(alice, "/whois bob", r"bob's real name: Robert B"), WAIT)
    bob.send("/away")
    assert wait_until(lambda: not _shows(alice, "/whois bob", r"is away"), WAIT)
    assert not _shows(alice, "/who #dev", r"\(away\)")


def test_the_room_list_shows_a_topic_set_on_another_node(
        chatd_server: Any, redis_server: Any, redis_url: str) -> None:
    """bob on B is not in #ops (B has no member there): /list reads the topic from Redis,
    where alice's topic change on A was written."""
    a = start_node(chatd_server, redis_url, "a")
    b = start_node(chatd_server, redis_url, "b")
    alice, bob = chatter(a, "alice", "#ops"), chatter(b, "bob", "#dev")
    alice.send("/topic first plan")
    alice.expect(r"set the topic of #ops to: first plan")
    assert wait_until(lambda: _shows(bob, "/list", r"#ops \(1\) — first plan$"), WAIT)
    alice.send("/topic second plan")
    alice.expect(r"set the topic of #ops to: second plan")
    assert wait_until(lambda: _shows(bob, "/list", r"#ops \(1\) — second plan$"), WAIT)


def test_a_room_joined_on_another_node_shows_the_topic_set_before(
        chatd_server: Any, redis_server: Any, redis_url: str) -> None:
    """alice set #ops' topic on A while node B had nobody there: bob joining on B is
    greeted with it, and his join does not wipe it from the listing."""
    a = start_node(chatd_server, redis_url, "a")
    b = start_node(chatd_server, redis_url, "b")
    alice = chatter(a, "alice", "#ops")
    alice.send("/topic release friday")
    alice.expect(r"set the topic of #ops to: release friday")
    bob = chatter(b, "bob", "#dev")
    # the listing in Redis has the topic (what /list on B reads) before bob joins
    assert wait_until(lambda: _shows(bob, "/list", r"#ops \(1\) — release friday$"), WAIT)
    bob.send("/join #ops")
    bob.send("/fencepost")  # an unknown command: its error comes after the greeting
    greeting = lines_until(bob, "fencepost")
    assert [x for x in greeting if "release friday" in x], greeting
    bob.send("/topic")
    bob.expect(r"release friday")
    carol = chatter(a, "carol", "#dev")
    assert wait_until(lambda: _shows(carol, "/list", r"#ops \(2\) — release friday$"), WAIT)


def test_a_payload_over_the_cap_is_refused(two: Any, redis_server: Any) -> None:
    """1 MiB and one byte (past redis-cli's argument limit: published with redis-py)."""
    _a, b, alice, bob = two
    payload = batch("z", 1, message("x" * (1 << 20), event_id=9))
    redis_server.client().publish("chatd:room:#dev", payload)
    b.wait_for_log(r"dropped a bad message on chatd:room:#dev \(payload of \d+ bytes is over "
                   r"the cap of 1048576\)")
    alice.send("still fine")
    assert not [x for x in lines_until(bob, "<alice> still fine") if "xxxx" in x]


def test_a_join_on_one_node_replays_what_was_said_on_the_other(
        chatd_server: Any, redis_server: Any, redis_url: str, postgres_url: str) -> None:
    """With a shared history, a room's memory on node B (read once, at its first join
    there) also keeps the lines said on A since: carol's later join on B replays them."""
    shared = {"storage": {"url": postgres_url},
              "plugins": {"history": {"replay_lines": 20}}}
    a = start_node(chatd_server, redis_url, "a", **shared)
    b = start_node(chatd_server, redis_url, "b", **shared)
    alice, bob = chatter(a, "alice"), chatter(b, "bob")  # bob's join read #dev's history
    heard_by(redis_server, "chatd:room:#dev", 2)
    for i in range(3):
        alice.send(f"said on a {i}")
    bob.expect(r"^<alice> said on a 2$")
    bob.send("said on b")  # after alice's lines reached b (no order across nodes)
    alice.expect(r"^<bob> said on b$")
    carol = b.client()
    carol.send("/join #dev")
    seen = lines_until(carol, "end of history")
    assert [re.sub(r"^\[[\d: -]+\] ", "", x) for x in seen if "said on" in x] == [
        "<alice> said on a 0", "<alice> said on a 1", "<alice> said on a 2",
        "<bob> said on b"], seen


# -- /kick of a user on another node ------------------------------------------------------------


def test_a_kick_reaches_a_user_connected_to_another_node(
        chatd_server: Any, redis_server: Any, redis_url: str) -> None:
    """alice, a server operator on A, kicks bob (on B) out of #dev: B puts him out as a
    kick typed there would, bob is told why, and both nodes' members see the kick."""
    a = start_node(chatd_server, redis_url, "a", plugins={"oper": {"password": PASSWORD}})
    b = start_node(chatd_server, redis_url, "b")
    alice, bob, carol = chatter(a, "alice"), chatter(b, "bob"), chatter(b, "carol")
    heard_by(redis_server, "chatd:room:#dev", 2)
    alice.send(f"/oper {PASSWORD}")
    alice.expect(r"you are now an operator")
    bob.send("/kick #dev carol")  # bob may not: refused on his own node
    bob.expect(r"^! permission denied: you are not an operator of #dev")
    alice.send("/kick #dev bob spamming")
    bob.expect(r"^\*\*\* you were kicked from #dev by alice: spamming$")
    kicked = r"^\*\*\* bob left #dev \(kicked by alice: spamming\)$"
    carol.expect(kicked)
    alice.expect(kicked)
    b.wait_for_log(r"alice kicked bob from #dev \(from node a\): spamming")
    carol.send("/who #dev")
    carol.expect(r"^\*\*\* #dev has 2 members: alice, carol")
    alice.send("/kick #dev nobody")
    alice.expect(r"^! nobody is not in #dev")


def test_a_kill_reaches_a_user_connected_to_another_node(
        chatd_server: Any, redis_server: Any, redis_url: str) -> None:
    """alice, a server operator on A, /kills bob (on B): B disconnects him as a /kill typed
    there would, he is told why, and the room on both nodes sees him quit. A non-operator
    is refused on their own node, and a nick nobody has is no such nick."""
    a = start_node(chatd_server, redis_url, "a", plugins={"oper": {"password": PASSWORD}})
    b = start_node(chatd_server, redis_url, "b")
    alice, bob, carol = chatter(a, "alice"), chatter(b, "bob"), chatter(b, "carol")
    heard_by(redis_server, "chatd:room:#dev", 2)
    carol.send("/kill bob")
    carol.expect(r"^! permission denied")
    alice.send(f"/oper {PASSWORD}")
    alice.expect(r"you are now an operator")
    alice.send("/kill bob flooding")
    alice.expect(r"^\*\*\* disconnected bob$")
    bob.expect(r"you were disconnected by alice: flooding")
    bob.expect_eof()
    quit_line = r"^\*\*\* bob (has )?quit.*killed by alice: flooding"
    carol.expect(quit_line)
    alice.expect(quit_line)
    b.wait_for_log(r"alice \(on node a\) disconnected bob: flooding")
    alice.send("/kill nobody")
    alice.expect(r"^! no such nick: nobody$")
