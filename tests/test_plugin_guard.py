"""The plugin host's one guarded call (chatd/plugins/guard.py), alone and in the chat.

The unit tests drive :class:`chatd.plugins.Guard` with plain functions; the last
test checks, in-process, that every way into plugin code (each kind of hook call,
a filter, a command, a timer, a worker task's callback, a callback posted from a
thread) goes through that one helper.  No socket, no sleep, no wall-clock
assertion: an overrun is forced with a negative limit.
"""

from __future__ import annotations

import logging
import threading

import pytest

from chatd import Command, hookimpl
from chatd.plugins import Guard
from chatd.plugins.guard import TracingGuard
from chatd.testing import InProcessChat


class Someone:
    """The client a failure is told to; records what it was told, and by whom."""

    def __init__(self, guard: Guard, connected: bool = True) -> None:
        self.guard = guard
        self.connected = connected
        self.told: list[tuple[str, str | None]] = []

    def error(self, text: str, *, code: str = "error") -> None:
        self.told.append((text, self.guard.current_plugin))


def boom() -> None:
    raise RuntimeError("boom")


def test_a_failure_returns_none_is_counted_logged_and_told_and_the_caller_goes_on(caplog):
    guard = Guard()
    guard.current_plugin = "outer"  # a hook of another plugin is running around this call
    alice = Someone(guard)
    assert guard.run("p", "chatd_message", boom, (), alice) is None
    assert guard.error_counts == {"p": 1}
    # Told once, by the server (no plugin current while it speaks), not by "p".
    assert alice.told == [("internal error in plugin 'p'; the server goes on", None)]
    assert guard.current_plugin == "outer"
    assert "plugin 'p' failed in chatd_message (1 failure so far)" in caplog.text
    assert "RuntimeError: boom" in caplog.text


def test_the_plugin_is_current_while_its_code_runs_and_results_come_back():
    guard = Guard()
    assert guard.run("p", "x", lambda a, b: (guard.current_plugin, a + b), (1, 2)) == ("p", 3)
    assert guard.current_plugin is None


def test_api_exceptions_pass_through_uncounted():
    guard = Guard()

    def usage() -> None:
        raise KeyError("usage")

    with pytest.raises(KeyError):
        guard.run("p", "command /x", usage, (), None, (KeyError,))
    assert guard.error_counts == {}
    assert guard.current_plugin is None


@pytest.mark.parametrize("stop", [SystemExit, KeyboardInterrupt])
def test_system_exit_and_keyboard_interrupt_are_never_swallowed(stop, caplog):
    guard = Guard()

    def leave() -> None:
        raise stop()

    with pytest.raises(stop):
        guard.run("p", "chatd_message", leave, ())
    assert guard.current_plugin is None
    assert f"plugin 'p' raised {stop.__name__} in chatd_message: the server stops" in caplog.text


def test_overruns_are_counted_and_trip_the_breaker_of_a_breakable_plugin():
    tripped: list[tuple[str, str]] = []
    guard = Guard(slow_hook_seconds=-1.0, max_failures=2,  # every call counts as too slow
                  breakable=lambda name: name == "p", on_trip=lambda *why: tripped.append(why))
    guard.run("p", "chatd_message", lambda: None, ())
    assert tripped == [] and guard.slow_counts == {"p": 1}
    guard.run("p", "chatd_message", lambda: None, ())
    assert tripped == [("p", "2 failures within 60 s (plugin_host.max_failures is 2)")]


def test_a_plugin_that_is_not_breakable_is_reported_but_never_switched_off():
    tripped: list[tuple[str, str]] = []
    guard = Guard(max_failures=1, breakable=lambda name: False,
                  on_trip=lambda *why: tripped.append(why))
    for _ in range(3):
        guard.run("rooms", "chatd_message", boom, ())
    assert guard.error_counts == {"rooms": 3} and tripped == []


def test_tracing_logs_every_call_with_its_result_and_the_plain_guard_logs_nothing(caplog):
    caplog.set_level(logging.DEBUG, logger="chatd.plugins")
    Guard().run("p", "chatd_pick", lambda: 7, ())
    assert "chatd_pick" not in caplog.text
    traced = TracingGuard()
    assert traced.run("p", "chatd_pick", lambda: 7, ()) == 7
    traced.run("p", "timer tick", boom, ())
    assert "chatd_pick in plugin 'p' -> 7, finished in " in caplog.text
    assert "timer tick in plugin 'p' -> None, finished in " in caplog.text
    assert traced.error_counts == {"p": 1}


class Probe:
    """A plugin reached every way there is: hooks, a filter, a command, a timer, a
    worker task with a callback, and a callback posted from a thread of its own."""

    def __init__(self) -> None:
        self.posted = threading.Event()
        self.done = threading.Event()

    @hookimpl
    def chatd_startup(self, server):
        self.server = server

    @hookimpl
    def chatd_filter_message(self, text):
        return None

    @hookimpl
    def chatd_message(self, text):
        return None

    @hookimpl
    def chatd_commands(self):
        return [Command("probe", self.probe, help="start a timer, a task and a thread")]

    def probe(self, client, args):
        self.server.call_later(0, self.later)
        self.server.run_in_thread(self.work, callback=self.worked)
        threading.Thread(target=lambda: self.server.call_soon_threadsafe(self.from_thread)).start()

    def later(self):
        pass

    def work(self):
        return "result"

    def worked(self, result):
        self.done.set()

    def from_thread(self):
        self.posted.set()


def test_every_way_into_plugin_code_goes_through_the_one_guard():
    probe = Probe()
    with InProcessChat(probe, builtins=["rooms", "commands"]) as chat:
        guard = chat.hooks.guard
        seen: list[tuple[str | None, str]] = []

        class Recording(Guard):
            """The guard, recording each call.  A subclass, as --trace-hooks' guard
            is: the host's per-line hook loop runs Guard's rules inline only for the
            exact Guard (see test_the_hook_loop_keeps_the_guards_rules_inline)."""

            def run(self, plugin, label, function, args, notify=None, passthrough=()):
                seen.append((plugin, label))
                return super().run(plugin, label, function, args, notify, passthrough)

        guard.__class__ = Recording
        alice = chat.connect()
        alice.send("hello")
        alice.send("/probe")
        chat.wait_for(lambda: probe.done.is_set() and probe.posted.is_set())
        labels = set(seen)
    assert ("rooms", "chatd_client_connect") in labels  # a hook (call)
    assert ("rooms", "chatd_route_message") in labels  # a firstresult hook's only answer
    assert ("Probe", "chatd_filter_message") in labels  # a filter (run_guarded)
    assert ("Probe", "chatd_message") in labels
    assert ("Probe", "command /probe") in labels
    assert ("Probe", "timer Probe.later") in labels
    assert ("Probe", "run_in_thread Probe.work callback") in labels
    assert ("Probe", "call_soon_threadsafe Probe.from_thread") in labels


# -- the host's hook loop: Guard.run's rules, inline ----------------------------------


class Hooked:
    """A plugin whose chatd_message runs what the test gives it."""

    def __init__(self, body) -> None:
        self.body = body

    @hookimpl
    def chatd_message(self, client, text, event):
        return self.body()


def test_the_hook_loop_keeps_the_guards_rules_inline(caplog):
    """PluginHost.call runs several implementations per chat line with Guard.run's rules
    written into its loop: each is attributed while it runs, a failure is contained,
    counted, logged and told while the next implementations still run, an overrun is
    reported, SystemExit propagates, and the running plugin is put back every time."""
    from chatd.plugins.host import PluginHost

    host = PluginHost(max_failures=0)
    guard = host.guard
    assert guard.__class__ is Guard  # the inline loop, not run()
    seen: list[str | None] = []
    host.register(Hooked(lambda: seen.append(guard.current_plugin) or "first"), "first", "t")
    host.register(Hooked(boom), "failing", "t")
    host.register(Hooked(lambda: seen.append(guard.current_plugin) or "last"), "last", "t")
    guard.current_plugin = "outer"
    alice = Someone(guard)
    kwargs = {"client": None, "text": "hi", "event": None}
    assert sorted(host.call("chatd_message", notify=alice, **kwargs)) == ["first", "last"]
    assert sorted(seen) == ["first", "last"] and guard.current_plugin == "outer"
    assert guard.error_counts == {"failing": 1}
    assert alice.told == [("internal error in plugin 'failing'; the server goes on", None)]
    assert "plugin 'failing' failed in chatd_message (1 failure so far)" in caplog.text

    guard.slow_hook_seconds = -1.0  # every call is too slow now
    host.call("chatd_message", **kwargs)
    assert guard.slow_counts == {"first": 1, "failing": 1, "last": 1}
    assert "chatd_message in plugin 'last' took" in caplog.text

    def leave() -> None:
        raise SystemExit(3)

    host.register(Hooked(leave), "leaving", "t")
    with pytest.raises(SystemExit):
        host.call("chatd_message", **kwargs)
    assert guard.current_plugin == "outer"
    assert "plugin 'leaving' raised SystemExit in chatd_message: the server stops" in caplog.text
