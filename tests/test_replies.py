"""What a person is told, in its own words: /part, counts ("1 client", not "1 clients"),
/history's count and the lines it leaves out, the flood notice.

In-process (the real domain, plugins and protocols, no sockets) for the line and
jsonl renderings; issue 18, rules 12 (/part) and 13.
"""

from __future__ import annotations

from chatd import plural
from chatd.admission import Admission, AdmissionRules
from chatd.testing import InProcessChat

# -- /part tells you that you left ----------------------------------------------------------


def test_part_tells_the_line_user_that_they_left_and_where_they_talk_now():
    with InProcessChat() as chat:
        alice, bob = chat.connect(), chat.connect()
        alice.send("/join #dev")
        bob.send("/join #dev")
        alice.lines(), bob.lines()
        alice.send("/part #dev off to lunch")
        assert alice.lines() == ["*** you left #dev", "*** you are now talking in #lobby"]
        assert bob.lines() == ["*** guest-1 left #dev (off to lunch)"]
        alice.send("/part")  # the last room: refused, and nothing claims it was left
        assert alice.lines() == ["! #lobby is your only room; /join another one first"]


def test_part_tells_the_jsonl_client_with_its_own_part_event_and_the_notice():
    with InProcessChat() as chat:
        bot = chat.connect("jsonl")
        bot.send_json(cmd="join", room="#dev")
        bot.objects()
        bot.send_json(cmd="part", room="#dev")
        got = bot.objects()
        parts = [o for o in got if o["type"] == "part"]
        assert len(parts) == 1 and parts[0]["room"] == "#dev" and parts[0]["self"] is True
        notices = [o["text"] for o in got if o["type"] == "notice"]
        assert notices == ["you left #dev", "you are now talking in #lobby"]


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
    assert Admission(rules).refusal_line("server_full") == \
        b"! server full (max 1 client); try again later\n"
