"""What a person is told, in its own words: /part, counts ("1 client", not "1 clients"),
/history's count and the lines it leaves out, the flood notice.

In-process (the real domain, plugins and protocols, no sockets) for the line and
jsonl renderings; issue 18, rules 12 (/part) and 13.
"""

from __future__ import annotations

import time

from chatd import plural
from chatd.admission import Admission, AdmissionRules
from chatd.chat.flood import FloodGate, TokenBucket
from chatd.testing import InProcessChat

# -- /part tells you that you left ----------------------------------------------------------


def test_part_tells_the_line_user_that_they_left_and_where_they_talk_now():
    with InProcessChat() as chat:
        alice, bob = chat.connect(), chat.connect()
        alice.send("/join #dev")
        bob.send("/join #dev")
        alice.lines(), bob.lines()
        alice.send("/part #dev off to lunch")
        assert alice.lines() == ["*** guest-1 left #dev (off to lunch)",
                                 "*** you are now talking in #lobby"]
        assert bob.lines() == ["*** guest-1 left #dev (off to lunch)"]
        alice.send("/part")  # the last room: refused, and nothing claims it was left
        assert alice.lines() == ["! #lobby is your only room; /join another one first"]


def test_part_tells_the_jsonl_client_with_its_own_part_event():
    with InProcessChat() as chat:
        bot = chat.connect("jsonl")
        bot.send_json(cmd="join", room="#dev")
        bot.objects()
        bot.send_json(cmd="part", room="#dev")
        got = bot.objects()
        parts = [o for o in got if o["type"] == "part"]
        assert len(parts) == 1 and parts[0]["room"] == "#dev" and parts[0]["self"] is True
        notices = [o["text"] for o in got if o["type"] == "notice"]
        assert notices == ["you are now talking in #lobby"]


# -- counts read right: "1 client", never "1 clients" ---------------------------------------


def test_plural_words_a_count_as_a_person_does():
    assert [plural(n, "client") for n in (0, 1, 2)] == ["0 clients", "1 client", "2 clients"]
    assert plural(1, "reply", "replies") == "1 reply"
    assert plural(3, "reply", "replies") == "3 replies"


def test_counts_of_one_in_replies_read_right():
    with InProcessChat(limits={"max_rooms_per_client": 1}) as chat:
        alice = chat.connect()
        alice.lines()
        alice.send("/who")
        assert alice.lines() == ["*** #lobby has 1 member: guest-1"]
        alice.send("/rooms")
        assert alice.lines()[0].startswith("*** 1 room: #lobby (1) *")
        alice.send("/list 2")
        assert alice.lines() == ["! there is 1 page of rooms"]
        alice.send("/join #dev")
        assert alice.lines() == ["! you are in 1 room, the most one may be in; /part one first"]
        bob = chat.connect()
        alice.lines()
        alice.send("/who")
        assert alice.lines() == ["*** #lobby has 2 members: guest-1, guest-2"]
        assert bob.nick == "guest-2"


def test_the_server_full_refusal_reads_right_for_one_client():
    rules = AdmissionRules(max_clients=1, per_ip_max=0, connect_rate=0, connect_window=60.0,
                           max_unregistered=0)
    assert Admission(rules).refusal_text("server_full") == \
        "server full (max 1 client); try again later"


# -- the flood notice: once per flood, as docs/operations.md says -------------------------


def test_the_flood_gate_tells_once_per_flood_and_again_after_a_calm():
    gate = FloodGate(TokenBucket(burst=2, rate=1.0, bytes_per_token=512, now=0.0))
    assert gate.admit(["a", "b", "c"], 0.0) == ["a", "b"]
    assert gate.tell() is True
    assert gate.tell() is False  # the same backlog
    assert gate.release(1.0) == ["c"]
    assert gate.admit(["d"], 1.0) == []  # the backlog emptied, but the flood goes on
    assert gate.tell() is False
    assert gate.release(2.0) == ["d"]
    assert gate.admit(["e", "f", "g"], 10.0) == ["e", "f"]  # full again: a new flood
    assert gate.tell() is True


def _heard(chat, peer, count: int) -> list[str]:
    """The next ``count`` lines ``peer`` reads, running the loop while the flood gate's
    timer releases them (bounded: a missing line is a red test)."""
    deadline = time.monotonic() + 10
    lines: list[str] = []
    while len(lines) < count:
        assert time.monotonic() < deadline, lines
        chat.reactor.run_once(0.05)
        lines += peer.lines()
    return lines


def test_a_fast_typist_is_told_about_the_flood_limit_once():
    with InProcessChat(flood={"burst_lines": 2, "lines_per_second": 5}) as chat:
        alice, bob = chat.connect(), chat.connect()
        alice.lines(), bob.lines()
        for line in ("one", "two", "three", "four"):
            alice.send(line)  # two pass, two wait
        heard = _heard(chat, bob, 4)  # the gate's backlog is empty now...
        for line in ("five", "six"):
            alice.send(line)  # ...and fills again at once: the same flood
        heard += _heard(chat, bob, 2)
        assert heard == [f"<guest-1> {word}" for word in
                         ("one", "two", "three", "four", "five", "six")]
        notices = [line for line in alice.lines() if "flood limit" in line]
        assert notices == ["*** flood limit: your lines are delayed to 5 per second; "
                           "the rest follow in order (nothing is lost)"]


# -- /history N: a count, and what the people you ignore said ------------------------------


def _history(peer, command: str) -> list[str]:
    """What ``command`` (a /history) shows, history stamps cut off the lines."""
    peer.send(command)
    return [line.split("] ", 1)[1] if line.startswith("[") else line for line in peer.lines()]


def test_history_with_a_count_that_is_not_one_says_what_n_is():
    with InProcessChat() as chat:
        alice = chat.connect()
        alice.send("hello")
        alice.lines()
        usage = "; usage: /history [#room|NICK] [N]"
        for count in ("-1", "0", "-20"):
            assert alice.lines() == [] and _history(alice, f"/history {count}") == [
                f"! N is a number of lines, 1 or more{usage}"], count
        assert _history(alice, "/history #lobby -1") == [
            f"! N is a number of lines, 1 or more{usage}"]
        assert _history(alice, "/history 2x") == [f"! not a number of lines: 2x{usage}"]


def test_history_n_shows_n_lines_you_can_see_and_says_what_it_left_out():
    with InProcessChat() as chat:
        alice, bob, spam = chat.connect(), chat.connect(), chat.connect()
        alice.send("a1")
        for i in range(4):
            spam.send(f"spam{i}")
        bob.send("b1")
        spam.send("spam4")
        alice.send("a2")
        alice.lines(), bob.lines()
        bob.send(f"/ignore {spam.nick}")
        bob.lines()
        assert _history(bob, "/history 3") == [
            "*** history of #lobby: the last 3 lines (5 lines from people you ignore left out)",
            "<guest-1> a1", "<guest-2> b1", "<guest-1> a2",
            "*** end of history",
        ]
        assert _history(bob, "/history 1") == [
            "*** history of #lobby: the last line", "<guest-1> a2", "*** end of history"]
        assert _history(bob, "/history 20") == [  # all there is: five left out
            "*** history of #lobby: the last 3 lines (5 lines from people you ignore left out)",
            "<guest-1> a1", "<guest-2> b1", "<guest-1> a2",
            "*** end of history",
        ]
        assert _history(alice, "/history 3") == [  # alice ignores nobody
            "*** history of #lobby: the last 3 lines",
            "<guest-2> b1", "<guest-3> spam4", "<guest-1> a2",
            "*** end of history",
        ]


def test_history_looks_back_only_so_far_past_the_people_you_ignore():
    """Ignoring someone who said a lot costs /history a bounded look back
    (N + max_lines lines), not a read of the whole room."""
    with InProcessChat(plugins={"history": {"max_lines": 5, "replay_lines": 0}}) as chat:
        alice, bob, spam = chat.connect(), chat.connect(), chat.connect()
        alice.send("long ago")
        for i in range(20):
            spam.send(f"spam{i}")
        bob.send(f"/ignore {spam.nick}")
        bob.lines()
        assert _history(bob, "/history 3") == [
            "*** no history in #lobby (8 lines from people you ignore left out)"]
