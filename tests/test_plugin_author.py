"""The plugin author's list (issue 18, rule 14, and rule 6's plugin markers).

Each test is what a plugin author met writing plugins from the docs alone, with a
real process where a user would see the difference, in-process where the plugin
host alone decides.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from chatd import hookimpl

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
    bob.expect(r"^\*\*\* #dev has 2 members: bob, carol$")
    assert not any(line.startswith("*** alice") for line in bob.history), bob.history


def test_a_nick_cannot_pass_for_a_plugins_marker(chatd_server):
    """``*** [name] `` marks a plugin's line: a nick written in brackets would make a
    user's own join, nick change and quit lines start with it (``*** [mentions] quit
    (Quit: bob mentioned you in #ops: ...)``).  Such a nick is refused on both
    protocols; brackets inside a nick stay allowed."""
    server = chatd_server(plugin_dirs=[PLUGINS], listen=LISTENERS)
    mallory = named(server, "mallory")
    mallory.send("/nick [mentions]")
    mallory.expect_line("! a nick cannot be written in brackets: *** [name] marks the "
                        "lines of the plugin name")
    bot = server.json_client()
    bot.send(cmd="nick", nick="[dice]", id="n")
    error = bot.expect(type="error", re="n")
    assert error["text"].startswith("a nick cannot be written in brackets"), error
    mallory.send("/nick [m]allory")
    mallory.expect(r"^\*\*\* mallory is now known as \[m\]allory$")


def test_a_mention_names_the_room_it_was_said_in_not_the_senders_current_one(chatd_server):
    """A jsonl bot says a line to one of its rooms that is not its current one
    (``"room": "#lobby"`` while it talks in #dev): who was not in #lobby is told it
    was said in #lobby; who was there read it and is not told again."""
    server = chatd_server(plugin_dirs=[PLUGINS], listen=LISTENERS)
    bob = named(server, "bob")  # in #lobby only
    carol = named(server, "carol")
    carol.send("/join #dev")
    carol.expect(r"^\*\*\* you are the first in #dev$")
    carol.send("/part #lobby")
    carol.expect(r"^\*\*\* you are now talking in #dev$")
    bot = server.json_client()
    bot.send(cmd="nick", nick="bot")
    bot.expect(type="nick", new="bot")
    bot.send(cmd="join", room="#dev")  # #dev is its current room now
    bot.expect(type="join", room="#dev", self=True)
    bot.send(cmd="say", room="#lobby", text="@carol @bob standup in 5")
    bob.expect(r"^<bot> @carol @bob standup in 5$")
    line = carol.expect(r"mentioned you").string
    assert line == "*** [mentions] bot mentioned you in #lobby: @carol @bob standup in 5"
    bob.send("/rooms")
    bob.expect(r"^\*\*\* 2 rooms: ")
    assert not any("mentioned" in line for line in bob.history), bob.history


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


# -- chatd_commands mistakes are caught when the plugin loads ------------------------------

ONE_COMMAND = """
from chatd import Command, hookimpl

def roll(client, args):
    client.notice("4")

@hookimpl
def chatd_commands():
    return Command("roll", roll, "/roll", "roll a die")
"""

WRONG_SIGNATURE = """
from chatd import Command, hookimpl

def roll(client):
    client.notice("4")

@hookimpl
def chatd_commands():
    return [Command("roll", roll, "/roll", "roll a die")]
"""

GOOD_ROLL = WRONG_SIGNATURE.replace("def roll(client):", "def roll(client, args):")


def check_config(tmp_path: Path, plugin_source: str) -> subprocess.CompletedProcess[str]:
    folder = tmp_path / "checked"
    write_plugin(folder, "roller", plugin_source)
    config = tmp_path / "check.yaml"
    config.write_text(f"listen: {{port: 0}}\nplugin_dirs: [{folder}]\n")
    return subprocess.run(
        [sys.executable, "-m", "chatd", "--config", str(config), "--check-config"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )


def test_check_config_names_the_plugin_that_returns_one_command_not_a_list(tmp_path):
    result = check_config(tmp_path, ONE_COMMAND)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "chatd: plugin 'roller': chatd_commands returned one Command (/roll); return a list "
        "of them: [Command(...)]"
    ), result.stderr


def test_check_config_names_a_handler_that_cannot_take_client_and_args(tmp_path):
    result = check_config(tmp_path, WRONG_SIGNATURE)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert line.startswith(
        "chatd: plugin 'roller': the handler of /roll, roll(client), cannot be called as "
        "handler(client, args): "
    ), line
    assert check_config(tmp_path, GOOD_ROLL).returncode == 0


def test_a_reload_to_a_plugin_with_a_bad_handler_keeps_the_old_one(chatd_server, tmp_path):
    folder = tmp_path / "p"
    write_plugin(folder, "roller", GOOD_ROLL)
    server = chatd_server(plugin_dirs=[str(folder)])
    alice = server.client()
    write_plugin(folder, "roller", WRONG_SIGNATURE)
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reload failed, keeping the running config and plugins: plugin "
                        r"'roller': the handler of /roll")
    alice.send("/roll")
    alice.expect_line("*** [roller] 4")


# -- state carried across a reload ---------------------------------------------------------

COUNTER = """
from chatd import Command, StashKey, hookimpl

SEEN = StashKey[int]()
state = {"count": 0}


def count(client, args):
    state["count"] += 1
    client.stash[SEEN] = client.stash.get(SEEN, 0) + 1
    client.notice(f"count {state['count']}, yours {client.stash[SEEN]} (VERSION)")


@hookimpl
def chatd_commands():
    return [Command("count", count)]


@hookimpl
def chatd_shutdown():
    state["count"] = -1000  # what a real plugin's shutdown does: let go of its state


@hookimpl
def chatd_reload_save(server):
    return {"count": state["count"], "seen": SEEN}


@hookimpl
def chatd_reload_restore(server, state):
    globals()["state"]["count"] = state["count"]
    for client in server.clients.values():  # move the values to this copy's key
        seen = client.stash.pop(state["seen"])
        if seen is not None:
            client.stash[SEEN] = seen
"""

FAILS_TO_START = """
import pytest

from chatd import hookimpl

@hookimpl
def chatd_startup(server):
    raise RuntimeError("not today")
"""


def test_a_plugin_carries_its_state_across_a_reload_and_back_when_it_fails(
    chatd_server, tmp_path
):
    folder = tmp_path / "p"
    write_plugin(folder, "counter", COUNTER.replace("VERSION", "v1"))
    server = chatd_server(plugin_dirs=[str(folder)])
    alice, bob = server.client(), server.client()
    for _ in range(2):
        alice.send("/count")
    alice.expect(r"^\*\*\* \[counter\] count 2, yours 2 \(v1\)$")
    bob.send("/count")
    bob.expect_line("*** [counter] count 3, yours 1 (v1)")

    write_plugin(folder, "counter", COUNTER.replace("VERSION", "v2"))
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reloaded .*: plugins .*counter")
    alice.send("/count")
    alice.expect(r"^\*\*\* \[counter\] count 4, yours 3 \(v2\)$")

    # A reload that fails after the old copy saved and shut down: it starts again
    # with its own state given back.
    write_plugin(folder, "zz_fails", FAILS_TO_START)
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reload failed, keeping the running config and plugins: .*zz_fails")
    bob.send("/count")
    bob.expect(r"^\*\*\* \[counter\] count 5, yours 2 \(v2\)$")


# -- the docs name every built-in ----------------------------------------------------------


def test_the_plugin_guide_and_the_readme_list_every_built_in_plugin():
    from chatd.plugins import BUILTIN_PLUGINS

    guide = (REPO / "docs" / "plugins.md").read_text()
    listed = guide.split("<!-- built-ins:", 1)[1].split("\n2. ", 1)[0]
    named = re.findall(r"`([a-z]+)`\s+\(", listed)
    assert named == list(BUILTIN_PLUGINS), named
    readme = (REPO / "README.md").read_text()
    row = re.search(r"^\| `chatd/builtin/` \| the built-in plugins: (.*) \|$", readme, re.M)
    assert row, "README's layout table lost its chatd/builtin/ row"
    assert re.findall(r"`([a-z]+)`", row.group(1)) == list(BUILTIN_PLUGINS)
    assert "--trace-hooks" in readme


# -- a flood exemption for trusted bots -------------------------------------------------------


def test_an_identified_exempt_account_is_never_delayed_but_its_nick_alone_is():
    from chatd.testing import InProcessChat

    flood = {"lines_per_second": 1, "burst_lines": 1, "exempt_accounts": ["RelayBot"]}
    with InProcessChat(fake_clock=True, flood=flood) as chat:
        bot, bob = chat.connect(), chat.connect()
        bot.send("/nick relaybot")
        chat.advance(10)  # the bucket is full again
        bob.lines()
        for i in range(3):
            bot.send(f"taken name {i}")
        assert bob.lines() == ["<relaybot> taken name 0"]  # the name alone is not trusted
        chat.advance(2)
        assert bob.lines() == ["<relaybot> taken name 1", "<relaybot> taken name 2"]
        chat.server.set_account(bot.client, "relaybot")  # what /identify does
        for i in range(5):
            bot.send(f"relayed {i}")
        assert bob.lines() == [f"<relaybot> relayed {i}" for i in range(5)]
        for i in range(3):  # everyone else is still limited
            bob.send(f"bob {i}")
        assert [line for line in bot.lines() if "bob " in line] == ["<guest-2> bob 0"]


# -- plugin tables cannot collide with built-in ones; bad writes are the plugin's ------------

SQUATTER = """
import pytest

from chatd import hookimpl

@hookimpl
def chatd_startup(server):
    server.store.migrate("squatter", ["CREATE TABLE IF NOT EXISTS accounts (nick TEXT)"])
"""


def test_a_plugin_migration_that_creates_a_built_in_table_is_refused_with_its_name(tmp_path):
    result = check_config(tmp_path, SQUATTER.replace('"squatter"', '"roller"'))
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert line.startswith("chatd: plugin 'roller' failed in chatd_startup: "), line
    assert ("plugin 'roller' may not touch 'accounts': a plugin's tables are named roller "
            "or roller_*") in line, line
    # Nor can it migrate under a built-in's name to get at its tables.
    result = check_config(tmp_path, SQUATTER.replace('"squatter"', '"accounts"'))
    assert result.returncode == 2, result
    assert "plugin 'roller' may migrate only its own tables" in result.stderr, result.stderr


class Vandal:
    """Has tables of its own, and writes where it should not."""

    @hookimpl
    def chatd_startup(self, server):
        server.store.migrate("Vandal", ["CREATE TABLE vandal_notes (text TEXT)"])

    @hookimpl
    def chatd_commands(self):
        from chatd import Command

        def note(client, args):
            if args == "schema":  # the versions of every plugin's tables, the built-ins'
                client.server.store.write("DELETE FROM chatd_schema")
            elif args == "typo":
                client.server.store.write("INSERT INTO vandal_notes VALUES (?, ?)", (1, 2))
            else:
                client.server.store.insert("vandal_notes", ("text",), (args,))

        return [Command("note", note)]

    def grab_store(self, server, found):
        """The body of a thread of the plugin's own."""
        found.append(server.store)


def test_a_bad_plugin_write_is_the_plugins_failure_and_trips_its_breaker():
    from chatd.testing import InProcessChat

    with InProcessChat(Vandal(), plugin_host={"max_failures": 2}) as chat:
        alice = chat.connect()
        store = chat.domain.store
        versions = store.read("SELECT owner, version FROM chatd_schema ORDER BY owner")
        assert ("Vandal", 1) in versions and any(owner == "accounts" for owner, _ in versions)
        alice.send("/note fine")
        alice.send("/note schema")
        chat.wait_for(lambda: chat.hooks.error_counts.get("Vandal") == 1)
        assert store.flush()
        assert store.read("SELECT owner, version FROM chatd_schema ORDER BY owner") == versions
        assert store.read("SELECT text FROM vandal_notes") == [("fine",)]
        assert store.rejected == 1
        alice.send("/note typo")
        chat.wait_for(lambda: chat.hooks.infos["Vandal"].disabled is not None)
        assert chat.hooks.error_counts == {"Vandal": 2}


class NamedLikeABuiltInTable:
    """A plugin whose name is the first word of built-in tables' names: ``room``
    (moderation's ``room_bans``, ``room_operators``), ``chatd`` (the store's
    ``chatd_schema``), ``accounts_by`` (the index ``accounts_by_look``).  It writes
    its own table, then runs ``statements`` on the built-in ones."""

    def __init__(self, name: str, statements: list[str]) -> None:
        self.__name__ = name  # the plugin's name (pluggy names an object by it)
        self.statements = statements

    @hookimpl
    def chatd_startup(self, server):
        server.store.migrate(self.__name__, [f"CREATE TABLE {self.__name__}_notes (t TEXT)"])

    @hookimpl
    def chatd_commands(self):
        from chatd import Command

        def wipe(client, args):
            store = client.server.store
            store.write(f"INSERT INTO {self.__name__}_notes VALUES ('mine')")
            for statement in self.statements:
                store.write(statement)

        return [Command("wipe", wipe)]


@pytest.mark.parametrize(("name", "statements", "kept"), ids=["room", "chatd", "accounts_by"],
                         argvalues=[
    ("room", ["DELETE FROM room_bans", "DELETE FROM room_operators"],
     "SELECT * FROM room_bans UNION ALL SELECT room, account, '', '', '', 0, 0, '' "
     "FROM room_operators"),
    ("chatd", ["DELETE FROM chatd_schema"], "SELECT * FROM chatd_schema"),
    ("accounts_by", ["DROP INDEX accounts_by_look"],
     "SELECT name FROM sqlite_master WHERE name = 'accounts_by_look'"),
])
def test_a_plugin_named_like_a_built_in_tables_prefix_cannot_touch_them(name, statements,
                                                                        kept):
    """A plugin owns the tables named after it, but not a built-in table that happens
    to start with its name: the statements are refused as its failure, its own table
    is written, the built-in rows stay."""
    from chatd.testing import InProcessChat

    with InProcessChat(NamedLikeABuiltInTable(name, statements)) as chat:
        store = chat.domain.store
        store.write("INSERT INTO room_bans (room, kind, mask, set_by, reason, set_at) "
                    "VALUES ('#dev', 'ban', 'x!*@*', 'alice', '', 0)")
        store.write("INSERT INTO room_operators VALUES ('#dev', 'bob', 'alice')")
        assert store.flush()
        before = store.read(kept)
        assert before
        chat.connect().send("/wipe")
        chat.wait_for(lambda: chat.hooks.error_counts.get(name) == len(statements))
        assert store.flush()
        assert store.read(f"SELECT t FROM {name}_notes") == [("mine",)]
        assert store.read(kept) == before


def test_every_table_a_built_in_creates_is_reserved_from_plugins():
    """What keeps the test above true for a table a built-in adds later."""
    import importlib

    from chatd.chat.tables import BUILT_IN_TABLES
    from chatd.plugins import BUILTIN_PLUGINS

    created = set()
    for module in BUILTIN_PLUGINS.values():
        for step in getattr(importlib.import_module(module), "SCHEMA", ()):
            # A step is SQL, or SQL per dialect (every dialect's tables count).
            for sql in step.values() if isinstance(step, dict) else (step,):
                created |= {name.lower() for name in re.findall(
                    r"CREATE\s+(?:UNIQUE\s+)?(?:TABLE|INDEX|VIEW|TRIGGER)\s+"
                    r"(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", sql, re.I)}
    assert created == BUILT_IN_TABLES


def test_a_plugins_own_thread_gets_its_own_store_whatever_runs_on_the_loop():
    import threading

    from chatd.chat.tables import PluginStore
    from chatd.testing import InProcessChat

    vandal = Vandal()
    with InProcessChat(vandal) as chat:
        chat.hooks.current_plugin = "history"  # the loop is in a built-in's hook meanwhile
        found: list[object] = []
        thread = threading.Thread(target=vandal.grab_store, args=(chat.server, found))
        thread.start()
        thread.join()
        chat.hooks.current_plugin = None
        assert isinstance(found[0], PluginStore), found
        assert found[0] is chat.server._plugin_stores["Vandal"]
