"""What a person is told, in its own words: /part, counts ("1 client", not "1 clients"),
/history's count and the lines it leaves out, the flood notice.

In-process (the real domain, plugins and protocols, no sockets) for the line and
jsonl renderings; issue 18, rules 12 (/part) and 13.
"""

from __future__ import annotations

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
