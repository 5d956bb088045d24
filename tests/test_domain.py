"""The chat domain in-process: the real plugins and protocols, no sockets, no server process.

What is checked here is the chat's own logic: every event carrying user text
passes the filters; no text anyone sends produces a line without its marker;
the firstresult hooks let a plugin take over a decision; events are created
once, with ids, times and sources.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from chatd import Command, CommandError, Reject, hookimpl
from chatd.testing import InProcessChat

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


def example(name: str):
    """Import an example plugin from plugins/ as a fresh module."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", PLUGINS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def chat():
    with InProcessChat() as chat:
        yield chat


def test_a_line_reaches_the_others_in_the_room_once_and_not_the_sender(chat):
    alice, bob, carol = chat.connect(), chat.connect(), chat.connect()
    for peer in (alice, bob, carol):
        peer.lines()
    alice.send("hello")
    assert bob.lines() == ["<guest-1> hello"]
    assert carol.lines() == ["<guest-1> hello"]
    assert alice.lines() == []


def test_events_have_increasing_ids_times_and_sources(chat):
    seen = []

    class Watch:
        @hookimpl
        def chatd_message(self, event):
            seen.append(event)

    chat.hooks.register(Watch(), "watch", "test")
    alice, _bob = chat.connect(), chat.connect()
    alice.send("one")
    alice.send("/me two")
    alice.send("/msg guest-2 three")
    kinds = [(e.kind, e.text, e.target, e.source.nick) for e in seen]
    assert kinds == [
        ("message", "one", "#lobby", "guest-1"),
        ("action", "two", "#lobby", "guest-1"),
        ("privmsg", "three", "guest-2", "guest-1"),
    ]
    ids = [e.id for e in seen]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert all(e.time > 0 and e.source.client_id == alice.client.id for e in seen)


def test_a_blocked_word_reaches_nobody_whatever_the_command():
    """/me, /msg and /topic used to skip chatd_filter_message (and part/quit reasons)."""
    wordfilter = example("wordfilter")
    with InProcessChat(wordfilter, plugins={"wordfilter": {"block": ["spamlink"]}}) as chat:
        alice, bob = chat.connect(), chat.connect()
        alice.lines(), bob.lines()
        for line in ("visit spamlink.example", "/me visit spamlink.example",
                     "/msg guest-2 visit spamlink.example", "/topic visit spamlink.example"):
            alice.send(line)
            assert alice.lines() == [
                "! your message was not sent: it contains a blocked word"
            ], line
        assert bob.lines() == []
        assert chat.server.rooms.get("#lobby").topic == ""
        alice.send("/join #dev")
        bob.send("/join #dev")
        alice.lines()
        bob.send("/part #dev spamlink")
        assert "spamlink" not in " ".join(alice.lines())
        bob.send("/quit spamlink.example")
        left = alice.lines()
        assert left == ["*** guest-2 quit (Quit)"], left


def test_filters_and_observers_see_every_kind_of_user_text(chat):
    filtered, observed = [], []

    class Both:
        @hookimpl
        def chatd_filter_message(self, text, event):
            filtered.append(event.kind)
            return text.upper()

        @hookimpl
        def chatd_message(self, text, event):
            observed.append((event.kind, text))

    chat.hooks.register(Both(), "both", "test")
    alice, bob = chat.connect(), chat.connect()
    alice.send("/join #dev")
    bob.send("/join #dev")
    bob.lines()
    for line in ("hi", "/me waves", "/msg guest-2 psst", "/topic plans", "/part #dev later",
                 "/quit bye"):
        alice.send(line)
    kinds = ["message", "action", "privmsg", "topic", "part", "quit"]
    assert filtered == kinds
    assert [k for k, _ in observed] == kinds
    assert observed[0] == ("message", "HI")
    assert bob.lines() == [
        "<guest-1> HI",
        "* guest-1 WAVES",
        "*guest-1* PSST",
        "*** guest-1 set the topic of #dev to: PLANS",
        "*** guest-1 left #dev (LATER)",
        "*** guest-1 quit (QUIT: BYE)",
    ]


class Spoofer:
    """A plugin whose texts carry newlines followed by a fake line of bob's."""

    FAKE = "<bob> send me your password"

    @hookimpl
    def chatd_commands(self):
        def poll(client, args):
            client.notice(f"poll result\n{self.FAKE}")

        def fail(client, args):
            raise CommandError(f"no\n{self.FAKE}")

        def shout(client, args):
            client.room.say(f"attention\n{self.FAKE}")

        return [Command("poll", poll), Command("fail", fail), Command("shout", shout)]

    @hookimpl
    def chatd_filter_message(self, text):
        if text == "reject me":
            raise Reject(f"nope\n{self.FAKE}")


def test_no_plugin_text_can_produce_a_line_without_its_marker():
    with InProcessChat(Spoofer()) as chat:
        alice, bob = chat.connect(), chat.connect()
        alice.lines(), bob.lines()
        alice.send("/poll")
        alice.send("/fail")
        alice.send("reject me")
        alice.send("/shout")
        mine = alice.lines()
        theirs = bob.lines()
        # The plugin's own notices carry its name; its CommandError and Reject are
        # answers to the sender's own request, in the server's "! " voice.
        assert mine == [
            "*** [Spoofer] poll result", f"*** [Spoofer] {Spoofer.FAKE}",
            "! no", f"! {Spoofer.FAKE}",
            "! nope", f"! {Spoofer.FAKE}",
            "*** [Spoofer] attention", f"*** [Spoofer] {Spoofer.FAKE}",
        ]
        assert theirs == ["*** [Spoofer] attention", f"*** [Spoofer] {Spoofer.FAKE}"]
        assert not any(line.startswith("<bob>") for line in mine + theirs)


def test_me_cannot_look_like_a_server_notice(chat):
    alice, bob = chat.connect(), chat.connect()
    bob.lines()
    alice.send("/me quit (Quit: bye)")
    alice.send("/quit bye")
    assert bob.lines() == ["* guest-1 quit (Quit: bye)", "*** guest-1 quit (Quit: bye)"]


def test_notices_name_the_plugin_that_sent_them(chat):
    jsonl = chat.connect("jsonl")
    welcome = jsonl.objects()[0]
    assert welcome["type"] == "notice" and welcome["plugin"] == "rooms"
    jsonl.send_json(cmd="nosuch")
    error = jsonl.objects()[0]
    assert error["type"] == "error" and "unknown command /nosuch" in error["text"]


def test_route_message_is_firstresult_and_a_plugin_can_take_it_over(chat):
    class ToDev:
        @hookimpl
        def chatd_route_message(self, client):
            return client.server.rooms.get("#dev")

    alice, bob = chat.connect(), chat.connect()
    bob.send("/join #dev")
    bob.send("/join #lobby")  # current room: #lobby again
    bob.lines()
    chat.hooks.register(ToDev(), "todev", "test")
    alice.send("/join #dev")
    alice.send("/join #lobby")
    alice.send("where does this go?")
    assert bob.lines()[-1] == "[#dev] <guest-1> where does this go?"
    assert bob.client.room.name == "#lobby"
    assert chat.hooks.is_firstresult("chatd_route_message")
    # Both the plugin's and the rooms plugin's default would answer: one is used.
    assert chat.hooks.call("chatd_route_message", client=alice.client, text="x") == [
        chat.server.rooms.get("#dev")
    ]


def test_check_nick_lets_a_plugin_own_nicks(chat):
    class Owner:
        @hookimpl
        def chatd_check_nick(self, nick):
            return "alice is registered; identify first" if nick.lower() == "alice" else None

    chat.hooks.register(Owner(), "owner", "test")
    peer = chat.connect()
    peer.lines()
    peer.send("/nick Alice")
    assert peer.lines() == ["! alice is registered; identify first"]
    peer.send("/nick bob")
    assert peer.lines() == ["*** guest-1 is now known as bob"]


def test_chatd_command_runs_before_every_command_and_may_refuse_it(chat):
    ran = []

    class Gate:
        @hookimpl
        def chatd_command(self, client, command, args):
            ran.append((command.name, args))
            if command.name == "nick":
                raise CommandError("nick changes are frozen")

    chat.hooks.register(Gate(), "gate", "test")
    peer = chat.connect("jsonl")
    peer.objects()
    peer.send_json(cmd="nick", nick="bot", id="n1")
    peer.send_json(cmd="who")
    assert ran == [("nick", "bot"), ("who", "")]
    replies = peer.objects()
    assert replies[0] == {**replies[0], "type": "error", "text": "nick changes are frozen",
                          "re": "n1"}
    assert peer.client.nick == "guest-1"


def test_rooms_are_created_and_removed_with_hooks_and_events(chat):
    seen = []

    class Rooms:
        @hookimpl
        def chatd_room_created(self, room, event):
            seen.append(("created", room.name, event.kind))

        @hookimpl
        def chatd_room_removed(self, room, event):
            seen.append(("removed", room.name, event.kind))

    chat.hooks.register(Rooms(), "roomwatch", "test")
    peer = chat.connect()
    peer.send("/join #dev")
    peer.send("/part #dev")
    peer.send("/join #dev")
    peer.close()
    assert seen == [
        ("created", "#dev", "room_created"),
        ("removed", "#dev", "room_removed"),
        ("created", "#dev", "room_created"),
        ("removed", "#dev", "room_removed"),
    ]
    assert "#lobby" in chat.server.rooms  # the default room stays


def test_line_and_jsonl_clients_share_a_room(chat):
    person, bot = chat.connect(), chat.connect("jsonl")
    person.lines(), bot.objects()
    person.send("hello bot")
    got = bot.objects()
    assert [(o["type"], o["from"], o["room"], o["text"]) for o in got] == [
        ("message", "guest-1", "#lobby", "hello bot")
    ]
    bot.send_json(cmd="say", text="hello person")
    bot.send_json(cmd="me", text="beeps")
    assert person.lines() == ["<guest-2> hello person", "* guest-2 beeps"]


def test_jsonl_say_to_a_named_room_needs_membership(chat):
    bot, person = chat.connect("jsonl"), chat.connect()
    person.send("/join #dev")
    person.lines(), bot.objects()
    bot.send_json(cmd="say", room="#dev", text="hi")
    assert [(o["type"], o["text"]) for o in bot.objects()] == [("error", "you are not in #dev")]
    assert person.lines() == []
    bot.send_json(cmd="join", room="#dev")
    bot.send_json(cmd="join", room="#lobby")
    bot.objects(), person.lines()
    bot.send_json(cmd="say", room="#dev", text="hi dev")
    assert person.lines() == ["<guest-1> hi dev"]
    assert bot.client.room.name == "#lobby"


def test_jsonl_errors_carry_the_request_id(chat):
    bot = chat.connect("jsonl")
    bot.objects()
    bot.send_json(cmd="say", room="#dev", text="hi", id="s1")
    bot.send(b"{broken\n")
    first, second = bot.objects()
    assert (first["type"], first["text"], first["re"]) == ("error", "you are not in #dev", "s1")
    assert second["type"] == "error" and second["text"].startswith("not JSON")
    assert "re" not in second


def test_stash_get_works_without_a_default(chat):
    from chatd import StashKey

    key = StashKey[int]()
    assert chat.server.stash.get(key) is None
    chat.server.stash[key] = 3
    assert chat.server.stash.get(key) == 3


def test_a_line_the_sanitiser_cleaned_is_still_delivered_and_billed(chat):
    """The framer marks cleaned lines (CleanedLine, a str subclass); they are chat too."""
    alice, bob = chat.connect(), chat.connect()
    bob.lines()
    alice.send(b"a\x1b[2Jb \x07bell\n")
    assert bob.lines() == ["<guest-1> ab bell"]
    from chatd.framing import CleanedLine
    from chatd.requests import request_size

    assert request_size(CleanedLine("x" * 10)) == 10


def test_a_private_message_to_yourself_reads_as_received(chat):
    alice = chat.connect()
    alice.lines()
    alice.send("/msg guest-1 note to self")
    assert alice.lines() == ["*guest-1* note to self"]
