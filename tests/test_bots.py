"""Bots (issue 18, rule 11): what a bot author following docs/protocols.md meets.

* the documented example bot does not answer replayed history;
* a listener can turn the join replay off before it happens (``history_replay``);
* an event has one id, live and replayed, and ids keep increasing across a restart;
* everything sent while handling a request with an ``id`` carries it as ``re``.

Real servers and real sockets throughout; the example bot is the code block of
docs/protocols.md, run as it is written.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from chatd.testing import JsonClient

REPO = Path(__file__).resolve().parent.parent
LISTENERS = [{"port": 0}, {"port": 0, "protocol": "jsonl"}]


def _until_reply(bot: JsonClient, tag: str) -> list[dict]:
    """Everything ``bot`` receives up to the reply to its request ``tag`` (excluded).

    Requests are answered in order, so a ``rooms`` request sent after something
    marks the point where everything that something caused has arrived.  (The
    replay at connect is made in the tick after the welcome: a bot must have
    read its join before this marks the end of it.)
    """
    bot.send(cmd="rooms", id=tag)
    received = []
    while (obj := bot.recv()).get("re") != tag:
        received.append(obj)
    return received


# -- one id per event ---------------------------------------------------------------------


def test_an_event_has_one_id_live_and_replayed_and_ids_increase_across_a_restart(
        chatd_server, tmp_path):
    sections = {"listen": LISTENERS, "storage": {"path": str(tmp_path / "chatd.sqlite3")},
                "plugins": {"history": {"replay_lines": 20}}}
    server = chatd_server(**sections)
    person = server.client()
    watcher = server.json_client()
    person.send("first words")
    person.send("/topic #lobby plans")
    said = watcher.expect(type="message", text="first words")
    topic = watcher.expect(type="topic", text="plans")
    assert said["id"] < topic["id"] and "history" not in said
    late = server.json_client()
    replayed = [obj for obj in _until_reply(late, "sync") if obj.get("history")]
    assert [(o["type"], o["id"], o["time"]) for o in replayed] == [
        ("message", said["id"], said["time"]), ("topic", topic["id"], topic["time"])]
    assert server.stop() == 0

    again = chatd_server(**sections)  # the same file, a new process
    bot = again.json_client()
    received = [*bot.history, *_until_reply(bot, "sync")]
    replayed = [obj for obj in received if obj.get("history")]
    assert [(o["type"], o["id"]) for o in replayed] == [
        ("message", said["id"]), ("topic", topic["id"])]
    live = [obj["id"] for obj in received if not obj.get("history")]
    assert min(live) > topic["id"], received  # the new process's ids come after
    newcomer = again.client()
    newcomer.send("after the restart")
    assert bot.expect(type="message", text="after the restart")["id"] > max(live)


def test_ids_never_go_down_across_a_restart_even_for_events_history_does_not_keep(
        chatd_server, tmp_path):
    """Joins, notices and private messages are not stored, so the largest stored id is
    not the largest one a bot saw; a restart must still hand out larger ids (with a
    history file, and with none at all)."""
    for sections in ({"listen": LISTENERS},
                     {"listen": LISTENERS, "storage": {"path": str(tmp_path / "db")}}):
        server = chatd_server(**sections)
        bot = server.json_client()
        person = server.client()
        person.send("stored")
        bot.expect(type="message", text="stored")
        for i in range(20):  # events no history keeps: private messages
            person.send(f"/msg {bot.nick} psst {i}")
        seen = bot.expect(type="privmsg", text="psst 19")["id"]
        assert server.stop() == 0

        again = chatd_server(**sections)
        late = again.json_client()
        late.send(cmd="nick", nick="latebot", id="n")
        renamed = late.expect(type="nick", new="latebot")
        assert renamed["id"] > seen, (renamed, seen)


# -- turning the replay off before it happens ---------------------------------------------------


def test_a_listener_with_history_replay_false_replays_nothing_even_at_connect(chatd_server):
    server = chatd_server(
        listen=[*LISTENERS, {"port": 0, "protocol": "jsonl", "history_replay": False}],
        plugins={"history": {"replay_lines": 20}},
    )
    person = server.client()
    person.send("said before the bots came")
    person.send("/join #dev")
    person.send("said in #dev")
    person.expect(r"^\*\*\* you are the first in #dev")
    replaying = server.json_client(listener=1)
    quiet = server.json_client(listener=2)
    assert [o["text"] for o in _until_reply(replaying, "s") if o.get("history")] == [
        "said before the bots came"]
    assert [o["type"] for o in quiet.history] == ["notice", "join"]  # welcome, join
    assert _until_reply(quiet, "s") == []
    quiet.send(cmd="set", id="show")
    assert quiet.expect(type="notice", re="show")["text"].find("history off") >= 0
    # Asked for, history is still there; and a bot may turn the replay back on.
    quiet.send(cmd="history", id="h")
    assert quiet.expect(type="message", re="h")["text"] == "said before the bots came"
    quiet.send(cmd="set", args="history on", id="on")
    quiet.expect(type="notice", re="on")
    quiet.send(cmd="join", room="#dev", id="j")
    quiet.expect(type="join", re="j")
    replayed = [o for o in _until_reply(quiet, "s2") if o.get("history")]
    assert [o["text"] for o in replayed] == ["said in #dev"]


# -- "re" on everything a request causes --------------------------------------------------------


def test_replies_carry_re_for_topic_and_a_plugins_room_notice(chatd_server):
    server = chatd_server(listen=LISTENERS, plugin_dirs=["plugins"], plugins={"dice": {}})
    person = server.client()
    bot = server.json_client()
    bot.send(cmd="topic", text="release day", id="t1")
    topic = bot.expect(type="topic")
    assert (topic["re"], topic["self"], topic["text"]) == ("t1", True, "release day")
    person.expect(rf"^\*\*\* {bot.nick} set the topic of #lobby to: release day$")
    bot.send(cmd="topic", text="untagged")  # no id: still "self", and no "re"
    untagged = bot.expect(type="topic")
    assert untagged["self"] is True and "re" not in untagged
    bot.send(cmd="roll", args="1d6", id="r1")
    rolled = bot.expect(type="notice", plugin="dice")
    assert rolled["re"] == "r1" and rolled["room"] == "#lobby"
    assert rolled["text"].startswith(f"{bot.nick} rolled 1d6: ")
    person.expect(rf"^\*\*\* \[dice\] {bot.nick} rolled 1d6: [1-6]$")  # the room sees it once
    person.send("/roll")  # a line user's roll reaches the bot without anyone's "re"
    theirs = bot.expect(type="notice", plugin="dice")
    assert theirs["text"].startswith("guest-1 rolled") and "re" not in theirs
    person.send("/who")
    person.expect(r"^\*\*\* #lobby has 2 member")
    assert [line for line in person.history if "release day" in line] == [
        f"*** {bot.nick} set the topic of #lobby to: release day"]


# -- the documented example bot -----------------------------------------------------------------


def _example_bot(port: int) -> str:
    """docs/protocols.md's bot, connecting to ``port`` instead of 7790."""
    text = (REPO / "docs" / "protocols.md").read_text()
    block = re.search(r"### Writing a bot\n.*?```python\n(.*?)```", text, re.DOTALL)
    assert block, "docs/protocols.md lost its example bot"
    code = block.group(1)
    assert "7790" in code
    return code.replace("7790", str(port))


def test_the_documented_example_bot_answers_live_messages_not_replayed_history(chatd_server):
    server = chatd_server(listen=LISTENERS, plugins={"history": {"replay_lines": 20}})
    person = server.client()
    person.send("an old question")
    bot = subprocess.Popen([sys.executable, "-c", _example_bot(server.ports[1])],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        person.expect(r"^\*\*\* guest-2 is now known as echobot$")
        person.send("a live question")
        person.expect(r"^<echobot> guest-1 said a live question$")
        # The bot reads in order: an answer to the replayed line would have come first.
        answers = [line for line in person.history if line.startswith("<echobot>")]
        assert answers == ["<echobot> guest-1 said a live question"]
    finally:
        bot.kill()
        _, errors = bot.communicate(timeout=5)
    assert b"Traceback" not in errors, errors.decode()


def test_a_line_user_setting_the_topic_of_another_room_reads_it_as_before(chatd_server):
    """The setter's own copy of a topic comes directly now (for jsonl's ``self`` and
    ``re``); on the line protocol it still names the room when that is not the current one."""
    server = chatd_server()
    alice, bob = server.client(), server.client()
    for person in (alice, bob):
        person.send("/join #dev")
        person.expect(r"^\*\*\* you are now talking in #dev|joined #dev")
    alice.send("/switch #lobby")
    alice.expect(r"^\*\*\* you are now talking in #lobby$")
    alice.send("/topic #dev hello there")
    alice.expect_line("[#dev] *** guest-1 set the topic of #dev to: hello there")
    bob.expect(r"^\*\*\* guest-1 set the topic of #dev to: hello there$")
    alice.send("/topic hello lobby")
    alice.expect_line("*** guest-1 set the topic of #lobby to: hello lobby")
