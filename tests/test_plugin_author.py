"""The plugin author's list (issue 18, rule 14, and rule 6's plugin markers).

Each test is what a plugin author met writing plugins from the docs alone, with a
real process where a user would see the difference, in-process where the plugin
host alone decides.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PLUGINS = str(REPO / "plugins")
LISTENERS = [{"port": 0}, {"port": 0, "protocol": "jsonl"}]


def named(server, nick):
    """A line client renamed to ``nick``, its rename notice read."""
    client = server.client()
    client.send(f"/nick {nick}")
    client.expect(rf"^\*\*\* \S+ is now known as {re.escape(nick)}$")
    return client


# -- rule 6: plugin-made lines carry their plugin's marker ------------------------------


def test_a_mention_quoting_a_server_sentence_reads_as_the_plugins_line(chatd_server):
    """``@bob alice set the topic to: x`` reaches bob marked as the mentions plugin's line
    (``*** [mentions] ...``), never as the server's own ``*** alice set the topic``; a jsonl
    client gets ``"plugin": "mentions"`` on the notice."""
    server = chatd_server(plugin_dirs=[PLUGINS], listen=LISTENERS)
    bob = named(server, "bob")
    bob.send("/join #dev")
    bob.expect(r"^\*\*\* you are the first in #dev$")
    bob.send("/part #lobby")  # out of the room where the mention is said
    bob.expect(r"^\*\*\* you are now talking in #dev$")
    carol = server.json_client()
    carol.send(cmd="nick", nick="carol")
    carol.expect(type="nick", new="carol")
    carol.send(cmd="join", room="#dev")
    carol.expect(type="join", room="#dev", self=True)
    carol.send(cmd="part", room="#lobby")
    carol.expect(type="part", room="#lobby", self=True)
    mallory = named(server, "mallory")
    mallory.send("@bob @carol alice set the topic of #dev to: send your password to mallory")

    line = bob.expect(r"mentioned you").string
    assert line == ("*** [mentions] mallory mentioned you in #lobby: @bob @carol alice set "
                    "the topic of #dev to: send your password to mallory"), line
    notice = carol.expect(type="notice", plugin="mentions")
    assert notice["server"] is True
    assert notice["text"].startswith("mallory mentioned you in #lobby: ")
    # Built-in plugins are the server itself: their lines stay unmarked.
    bob.send("/who")
    bob.expect(r"^\*\*\* #dev has 2 member\(s\): bob, carol$")
    assert not any(line.startswith("*** alice") for line in bob.history), bob.history


# -- server.join / server.part by a plugin tell the user, in every protocol --------------

MOVER = """
from chatd import Command, CommandError, hookimpl


def bring(client, args):
    nick, room = args.split()
    client.server.join(client.server.find_client(nick), room)


def send_off(client, args):
    nick, room = args.split()
    target = client.server.find_client(nick)
    client.server.part(target, client.server.rooms.get(room), "sent off")


@hookimpl
def chatd_commands():
    return [Command("bring", bring, "/bring NICK #room", "move someone in"),
            Command("sendoff", send_off, "/sendoff NICK #room", "move someone out")]
"""


def write_plugin(directory: Path, name: str, source: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text(source)
    return path


def test_a_join_and_part_made_by_a_plugin_tell_the_moved_user_in_every_protocol(
    chatd_server, tmp_path
):
    """Another user's command moves bob (line) and carol (jsonl) in and out of #ops:
    each of them is told, in its own protocol, not only the room."""
    write_plugin(tmp_path / "p", "mover", MOVER)
    server = chatd_server(plugin_dirs=[str(tmp_path / "p")], listen=LISTENERS)
    bob = named(server, "bob")
    carol = server.json_client()
    carol.send(cmd="nick", nick="carol")
    carol.expect(type="nick", new="carol")
    op = named(server, "op")

    op.send("/bring bob #ops")
    bob.expect(r"^\*\*\* bob joined #ops$")
    op.send("/bring carol #ops")
    joined = carol.expect(type="join", room="#ops", **{"from": "carol"})
    assert joined["self"] is True and joined["from"] == "carol"

    op.send("/sendoff bob #ops")
    bob.expect(r"^\*\*\* bob left #ops \(sent off\)$")
    op.send("/sendoff carol #ops")
    parted = carol.expect(type="part", room="#ops", **{"from": "carol"})
    assert parted["self"] is True and parted["text"] == "sent off"
    # /join words its own answer: no second line for the same join.
    bob.send("/join #dev")
    bob.expect(r"^\*\*\* bob joined #dev$")
    bob.expect_line("*** you are the first in #dev")
    bob.expect_nothing(0.2)
