"""The plugin host in-process: firstresult, plugin-owned timers, the breaker, shutdown, warnings.

Plugins here are small classes registered into an in-process chat
(chatd.testing.InProcessChat); nothing here needs a socket.
"""

from __future__ import annotations

import threading
import time

import pytest

from chatd import hookimpl, hookspec
from chatd.plugins import PluginHost, PluginLoadError
from chatd.testing import InProcessChat


def run_until(chat: InProcessChat, predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        chat.reactor.run_once(0.02)
        if predicate():
            return True
    return False


class Ticker:
    """Starts a repeating timer at startup; its callback may raise or stall."""

    def __init__(self, mode: str = "ok", interval: float = 0.01) -> None:
        self.mode = mode
        self.interval = interval
        self.fired = 0
        self.shutdowns = 0
        self.timer = None

    @hookimpl
    def chatd_startup(self, server):
        self.server = server
        self.timer = server.call_later(self.interval, self.tick)

    def tick(self):
        self.fired += 1
        self.timer = self.server.call_later(self.interval, self.tick)
        if self.mode == "raise":
            raise RuntimeError("timer boom")
        if self.mode == "stall":
            time.sleep(0.03)

    @hookimpl
    def chatd_shutdown(self):
        self.shutdowns += 1


def test_a_plugins_timer_is_owned_by_it():
    ticker = Ticker()
    with InProcessChat(ticker) as chat:
        assert ticker.timer.plugin == "Ticker"
        assert run_until(chat, lambda: ticker.fired >= 3)
        assert chat.hooks.timers("Ticker")


def test_a_raising_timer_is_logged_with_the_plugin_and_trips_the_breaker(caplog):
    ticker = Ticker("raise")
    with InProcessChat(ticker, plugin_host={"max_failures": 3}) as chat:
        assert run_until(chat, lambda: chat.hooks.infos["Ticker"].disabled is not None)
        fired = ticker.fired
        assert fired == 3
        assert "plugin 'Ticker' failed in timer Ticker.tick" in caplog.text
        assert "timer boom" in caplog.text
        # Disabled: its timers are cancelled, its shutdown ran once, nothing fires again.
        assert ticker.shutdowns == 1
        assert chat.hooks.timers("Ticker") == []
        run_until(chat, lambda: False, timeout=0.2)
        assert ticker.fired == fired


def test_a_stalling_timer_is_reported_with_the_plugin_and_counts_as_a_failure(caplog):
    ticker = Ticker("stall")
    with InProcessChat(ticker, plugin_host={"max_failures": 2, "slow_hook_seconds": 0.01}) as chat:
        assert run_until(chat, lambda: chat.hooks.infos["Ticker"].disabled is not None)
        assert "timer Ticker.tick in plugin 'Ticker' took" in caplog.text
        assert chat.hooks.slow_counts["Ticker"] >= 2
        assert ticker.shutdowns == 1


def test_shutdown_runs_once_per_plugin_and_cancels_every_timer():
    ticker = Ticker(interval=10.0)
    chat = InProcessChat(ticker)
    timer = ticker.timer
    chat.close()
    assert ticker.shutdowns == 1
    assert timer.cancelled
    chat.hooks.shutdown()  # idempotent
    assert ticker.shutdowns == 1


def test_call_soon_threadsafe_runs_on_the_loop_guarded():
    results: list[tuple[str, bool]] = []

    class Worker:
        @hookimpl
        def chatd_startup(self, server):
            def work():
                value = "done"  # the blocking part would go here
                server.call_soon_threadsafe(self.finish, value)

            threading.Thread(target=work).start()

        def finish(self, value):
            results.append((value, threading.current_thread() is threading.main_thread()))
            raise ValueError("after the result")

    with InProcessChat(Worker()) as chat:
        assert run_until(chat, lambda: bool(results))
        assert results == [("done", True)]
        assert chat.hooks.error_counts.get("Worker") == 1


def test_firstresult_is_honoured_for_a_plugins_own_hook():
    class Spec:
        @hookspec(firstresult=True)
        def chatd_pick(self, options):
            """Pick one of the options (test hook)."""

    class First:
        @hookimpl
        def chatd_addhooks(self, pluginmanager):
            pluginmanager.add_hookspecs(Spec)

        @hookimpl(trylast=True)
        def chatd_pick(self, options):
            return options[-1]

    class Second:
        @hookimpl
        def chatd_pick(self, options):
            return None  # no opinion: the next one answers

    class Third:
        @hookimpl(tryfirst=True)
        def chatd_pick(self, options):
            return options[0]

    with InProcessChat(First(), Second()) as chat:
        assert chat.hooks.call("chatd_pick", options=[1, 2]) == [2]
        assert chat.hooks.call_first("chatd_pick", options=[1, 2]) == 2
        chat.hooks.register(Third(), "third", "test")
        assert chat.hooks.call("chatd_pick", options=[1, 2]) == [1]


def test_system_exit_from_a_plugin_is_not_swallowed():
    class Quitter:
        @hookimpl
        def chatd_client_connect(self, client):
            raise SystemExit(3)

    with InProcessChat(Quitter()) as chat, pytest.raises(SystemExit):
        chat.connect()


def test_an_exception_in_one_implementation_does_not_stop_the_others(caplog):
    seen = []

    class Broken:
        @hookimpl(tryfirst=True)
        def chatd_client_connect(self, client):
            raise KeyError("oops")

    class Fine:
        @hookimpl
        def chatd_client_connect(self, client):
            seen.append(client.nick)

    with InProcessChat(Broken(), Fine()) as chat:
        peer = chat.connect()
        assert seen == ["guest-1"]
        assert "! internal error in plugin 'Broken'; the server goes on" in peer.lines()
        assert "plugin 'Broken' failed in chatd_client_connect" in caplog.text


def test_warnings_name_plugins_that_would_do_nothing():
    import types

    host = PluginHost()
    unmarked = types.ModuleType("unmarked")
    exec("def chatd_message(client, text):\n    pass\n", unmarked.__dict__)
    typo = types.ModuleType("typo")
    exec("def chatd_mesage(client, text):\n    pass\n", typo.__dict__)
    host.register(unmarked, "unmarked", "test")
    host.register(typo, "typo", "test")
    warnings = host.warnings()
    assert any("'unmarked': chatd_message is not marked @hookimpl" in w for w in warnings)
    assert any("'typo': chatd_mesage is not a hook (did you mean chatd_message?)" in w
               for w in warnings)
    assert any("plugin 'typo' (test) implements no hooks" in w for w in warnings)


def test_a_misspelt_marked_hook_is_a_load_error_with_a_suggestion():
    class Typo:
        @hookimpl
        def chatd_room_jion(self, client, room):
            pass

    host = PluginHost()
    host.register(Typo(), "typo", "test")
    with pytest.raises(PluginLoadError, match=r"did you mean chatd_room_join\?"):
        host.check()


def test_check_config_warns_about_plugins_that_would_do_nothing(tmp_path):
    import subprocess
    import sys

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "forgot.py").write_text(
        "def chatd_client_connect(client):\n    client.notice('hi')\n"
    )
    (plugins / "typo.py").write_text(
        "from chatd import hookimpl\n\n@hookimpl\ndef chatd_startup(server):\n    pass\n\n"
        "def chatd_mesage(client, text):\n    pass\n"
    )
    config = tmp_path / "config.yaml"
    config.write_text("plugin_dirs: [plugins]\nplugin_host: {entry_points: false}\n")
    result = subprocess.run(
        [sys.executable, "-m", "chatd", "--config", str(config), "--check-config"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout
    assert ("warning: plugin 'forgot': chatd_client_connect is not marked @hookimpl"
            in result.stderr)
    assert "warning: plugin 'forgot' (file " in result.stderr
    assert ("warning: plugin 'typo': chatd_mesage is not a hook (did you mean chatd_message?)"
            in result.stderr)


def test_a_failing_firstresult_hook_is_contained_like_any_other(caplog):
    class BadRoute:
        @hookimpl
        def chatd_client_connect(self, client):
            client.server.join(client, "#lobby")

        @hookimpl
        def chatd_route_message(self, client):
            raise RuntimeError("route boom")

    # Without the rooms plugin, this is the only implementation (the fast path).
    with InProcessChat(BadRoute(), builtins=["commands"]) as chat:
        assert len(chat.hooks.implementations("chatd_route_message")) == 1
        alice, bob = chat.connect(), chat.connect()
        alice.lines(), bob.lines()
        alice.send("hello?")
        assert alice.lines() == [
            "! internal error in plugin 'BadRoute'; the server goes on",
            "! you are not in a room; /join one first",
        ]
        assert bob.lines() == []
        assert "plugin 'BadRoute' failed in chatd_route_message" in caplog.text
        assert chat.hooks.error_counts["BadRoute"] == 1


# -- worker threads and callbacks from other threads ------------------------------------------


class Looker:
    """/look runs a blocking lookup on a worker thread and answers from the loop."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.loop_thread = threading.get_ident()
        self.callback_threads: list[int] = []
        self.task = None

    def lookup(self, what):
        self.started.set()
        assert self.release.wait(5), "the test never released the lookup"
        if what == "boom":
            raise LookupError("no such thing: boom")
        return what.upper()

    @hookimpl
    def chatd_commands(self):
        from chatd import Command

        def look(client, args):
            def answer(result):
                self.callback_threads.append(threading.get_ident())
                client.notice(f"found {result}")

            self.task = client.server.run_in_thread(self.lookup, args, callback=answer)

        return [Command("look", look)]


def test_run_in_thread_hands_the_result_back_on_the_loop_marked_as_the_plugins():
    looker = Looker()
    with InProcessChat(looker) as chat:
        alice = chat.connect()
        alice.lines()
        alice.send("/look moon")
        assert looker.started.wait(5)
        assert alice.lines() == []  # the loop went on meanwhile
        assert looker.task.plugin == "Looker" and not looker.task.done
        looker.release.set()
        chat.wait_for(lambda: looker.task.done)
        assert alice.lines() == ["*** [Looker] found MOON"]
        assert looker.callback_threads == [looker.loop_thread]
        assert chat.hooks.tasks("Looker") == []


def test_an_exception_in_a_worker_is_the_plugins_failure():
    looker = Looker()
    looker.release.set()
    with InProcessChat(looker) as chat:
        alice = chat.connect()
        alice.send("/look boom")
        chat.wait_for(lambda: chat.hooks.error_counts.get("Looker") == 1)
        assert looker.task.done and alice.lines()[-1:] != ["*** [Looker] found BOOM"]


def test_a_disabled_plugins_pending_work_is_dropped():
    looker = Looker()
    with InProcessChat(looker) as chat:
        alice = chat.connect()
        alice.lines()
        alice.send("/look moon")
        assert looker.started.wait(5)
        chat.hooks.disable("Looker", "test")
        assert looker.task.cancelled and chat.hooks.tasks("Looker") == []
        looker.release.set()
        # Its outcome would come back as a call on the loop: work queued on the same
        # pool after it tells when that moment has passed.
        later = threading.Event()
        chat.hooks.run_in_thread(later.set)
        assert later.wait(5)
        chat.wait_for(lambda: True)
        for _ in range(5):
            chat.reactor.run_once(0.02)
        assert not looker.task.done and looker.callback_threads == []
        assert alice.lines() == []


class Poster:
    """Hands work back from a thread of its own as a partial of a bound method."""

    def __init__(self) -> None:
        self.client = None

    @hookimpl
    def chatd_client_connect(self, client):
        self.client = client

    def post(self, callback):
        """The body of the plugin's own thread: hand ``callback`` to the loop."""
        self.client.server.call_soon_threadsafe(callback)

    def fail(self, why):
        raise RuntimeError(why)


def test_call_soon_threadsafe_keeps_the_plugins_name_for_partials_and_bound_methods():
    import functools

    poster = Poster()
    with InProcessChat(poster) as chat:
        alice = chat.connect()
        alice.lines()
        threads = [
            # A partial of the plugin's own method: attributed by what it wraps.
            threading.Thread(target=chat.server.call_soon_threadsafe,
                             args=(functools.partial(poster.fail, "from a partial"),)),
            # A partial of chatd's own method, handed in by the plugin's thread: by caller.
            threading.Thread(target=poster.post,
                             args=(functools.partial(poster.client.notice, "hello"),)),
        ]
        for thread in threads:
            thread.start()
            thread.join()
        chat.wait_for(lambda: chat.hooks.error_counts.get("Poster") == 1)
        assert "?" not in chat.hooks.error_counts
        assert alice.lines() == ["*** [Poster] hello"]


# -- chatd_delivered -------------------------------------------------------------------------


class Pong:
    """Answers "ping" once it was delivered, so the answer follows it for everyone."""

    def __init__(self) -> None:
        self.kinds: list[str] = []

    @hookimpl
    def chatd_delivered(self, server, event):
        self.kinds.append(event.kind)
        if event.kind == "message" and event.text == "ping":
            server.rooms.get(event.target).say("pong")


def test_chatd_delivered_runs_once_per_event_after_it_was_handed_to_delivery():
    pong = Pong()
    with InProcessChat(pong) as chat:
        alice, bob, carol = chat.connect(), chat.connect(), chat.connect()
        for peer in (alice, bob, carol):
            peer.lines()
        pong.kinds.clear()
        alice.send("ping")
        assert bob.lines() == ["<guest-1> ping", "*** [Pong] pong"]
        assert carol.lines() == ["<guest-1> ping", "*** [Pong] pong"]
        assert pong.kinds == ["message"]  # once, not once per recipient; not its notice
        bob.send("/nick bob")
        bob.send("/join #dev")
        bob.send("/part #dev")
        bob.send("/topic hello")
        bob.send("/msg guest-1 psst")
        carol.send("/quit")
        assert pong.kinds == ["message", "nick", "join", "part", "topic", "privmsg", "quit"]


def test_shutting_the_plugins_down_drops_their_pending_work():
    """What a reload does to the old plugins (and a stop to all)."""
    looker = Looker()
    chat = InProcessChat(looker)
    try:
        alice = chat.connect()
        alice.send("/look moon")
        assert looker.started.wait(5)
        chat.hooks.shutdown()
        assert looker.task.cancelled and chat.hooks.tasks("Looker") == []
        looker.release.set()
        for _ in range(5):
            chat.reactor.run_once(0.02)
        assert not looker.task.done and looker.callback_threads == []
    finally:
        looker.release.set()
        chat.domain.store.close()
        chat.reactor.close()


def test_loading_a_folder_stops_at_a_refused_plugin_before_importing_the_next(tmp_path):
    """The loader hands plugins over one at a time: a plugin the host refuses (here a
    name clash with a built-in) stops the loading before the next file's code runs."""
    from chatd.plugins import plugin_modules, restore_plugin_modules

    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "a_clash.py").write_text('PLUGIN_NAME = "rooms"\n')
    marker = tmp_path / "imported"
    (folder / "b_later.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
    )
    host = PluginHost()
    host.load_builtins(["rooms"])
    saved = plugin_modules()
    try:
        with pytest.raises(PluginLoadError, match=r"two plugins are named 'rooms'"):
            host.load_directory(folder)
    finally:
        restore_plugin_modules(saved)
    assert not marker.exists()
    assert list(host.infos) == ["rooms"]


def test_the_breaker_switches_a_plugin_off_but_never_a_builtin():
    """Built-ins are the server itself: their failures are counted, never switched off."""

    class Flaky:
        @hookimpl
        def chatd_message(self, text):
            raise RuntimeError("flaky")

    host = PluginHost(max_failures=2)
    host.register(Flaky(), "core", "builtin")
    host.register(Flaky(), "theirs", "test")
    for _ in range(3):
        assert host.call("chatd_message", text="hi") == []
    assert host.infos["theirs"].disabled == "2 failures within 60 s (plugin_host.max_failures is 2)"
    assert host.infos["core"].disabled is None
    assert host.error_counts == {"core": 3, "theirs": 2}


def test_a_timer_leaves_its_plugins_list_once_cancelled_or_run():
    ticker = Ticker(interval=10.0)
    with InProcessChat(ticker, fake_clock=True) as chat:
        first = ticker.timer
        assert chat.hooks.timers("Ticker") == [first]
        first.cancel()
        assert first.cancelled and chat.hooks.timers("Ticker") == []
        ticker.timer = chat.server.call_later(1.0, ticker.tick)  # as the plugin would
        chat.advance(1.0)  # it runs, and makes the next one
        assert ticker.fired == 1
        assert chat.hooks.timers("Ticker") == [ticker.timer]


def test_a_disabled_plugins_callbacks_posted_from_a_thread_never_run():
    ran: list[str] = []
    go = threading.Event()

    class Late:
        @hookimpl
        def chatd_startup(self, server):
            def work():
                go.wait(5)
                server.call_soon_threadsafe(self.finish)

            self.thread = threading.Thread(target=work)
            self.thread.start()

        def finish(self):
            ran.append("finish")

    late = Late()
    with InProcessChat(late) as chat:
        chat.hooks.disable("Late", "test")
        go.set()
        late.thread.join(5)
        assert not late.thread.is_alive()  # its callback is on the loop's queue now
        chat.tick()
        chat.tick()
        assert ran == []


def test_a_plugin_registered_late_owns_its_callbacks_too():
    """Which module is which plugin's is worked out once; a registration starts it over."""
    import types

    first, second = types.ModuleType("late_first"), types.ModuleType("late_second")
    exec("def tick():\n    pass\n", first.__dict__)
    exec("def tick():\n    pass\n", second.__dict__)
    host = PluginHost()
    host.register(first, "first", "test")
    assert host.owner_of(first.tick) == "first"
    assert host.owner_of(second.tick) is None
    host.register(second, "second", "test")
    assert host.owner_of(second.tick) == "second"
