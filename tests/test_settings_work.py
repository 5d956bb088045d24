"""Settings that pass ``--check-config`` work (issue 18, rule 3).

Every number the config accepts ends somewhere with a ceiling of its own: a
timer in ``epoll_wait`` (int milliseconds), a socket option (a C int, kernel
maxima), an allocation, a SQL parameter (64 bits).  So the accepted range is
proved from both ends: a real chatd with *every* number at its ceiling, and one
with every number at its floor, starts, chats, reloads and stops with no error
logged.  A value the kernel still refuses while serving is logged once and
survived; plugin sections (the built-ins' and the examples') refuse nan, inf,
huge numbers and invisible characters exactly as the core does.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import signal
import socket
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest

from chatd import config as schema
from chatd.builtin import accounts, history
from chatd.config import NetConfig
from chatd.listeners import tune_socket
from chatd.reactor import Reactor
from chatd.testing import ServerProcess, unexpected_tracebacks, write_config

REPO = Path(__file__).resolve().parent.parent
#: The Config fields that are sections of numbers and strings.
_SECTIONS = {
    f.name: hint
    for f in dataclasses.fields(schema.Config)
    if isinstance(hint := typing.get_type_hints(schema.Config)[f.name], type)
    and dataclasses.is_dataclass(hint)
}


def _numbers(end: str) -> dict[str, dict[str, Any]]:
    """Every core number at its ceiling (``end="high"``) or floor (``"low"``)."""
    sections: dict[str, dict[str, Any]] = {}
    for name, cls in _SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = hints[f.name]
            if kind not in (int, float):
                continue
            bound = f.metadata["constraint"]
            if end == "high":
                value = bound.le
            elif bound.ge is not None:
                value = bound.ge
            else:  # "> 0": the smallest value a person would write
                value = bound.gt + 0.001
            sections.setdefault(name, {})[f.name] = kind(value)
    return sections


def _plugin_numbers(end: str) -> dict[str, dict[str, Any]]:
    """The built-ins' number settings at their ceiling or floor (their Range)."""
    out: dict[str, dict[str, Any]] = {}
    for plugin, module in (("history", history), ("accounts", accounts)):
        for key, allowed in module.RANGES.items():
            kind = type(module.DEFAULTS[key])
            value = allowed.high if end == "high" else allowed.low + (
                (1 if kind is int else 0.001) if allowed.above else 0)
            out.setdefault(plugin, {})[key] = kind(value)
    out["accounts"]["scrypt_n"] = 1024 if end == "low" else accounts.SCRYPT_N_MAX
    return out


def _serve_and_reload(server: ServerProcess, *, clients: int) -> None:
    people = [server.client() for _ in range(clients)]
    first = people[0]
    first.send("/help")
    first.expect(r"^\*\*\* Commands")
    if clients > 1:
        first.send("hello at the edge")
        people[1].expect("^" + re.escape(f"<{first.nick}> hello at the edge") + "$")
    first.send("/history")
    first.expect(r"^\*\*\* (no )?history")
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reloaded .*config\.yaml")
    first.send("/help")
    first.expect(r"^\*\*\* Commands")


def _quiet(log: str) -> None:
    assert unexpected_tracebacks(log) == [], log[-4000:]
    errors = [line for line in log.splitlines()
              if " ERROR " in line or " CRITICAL " in line or "the system refused" in line]
    assert errors == [], "\n".join(errors)


def test_every_number_at_its_ceiling_works(chatd_server: Any, tmp_path: Path) -> None:
    sections = _numbers("high")
    # The one ceiling that depends on the machine: a reserve at or above the process's
    # descriptor limit is refused by --check-config (tests/test_bounds.py).
    sections["limits"]["reserve_fds"] = 64
    del sections["metrics"]  # its port: 65535 may be taken; the bound is the port range
    sections["storage"]["path"] = str(tmp_path / "data" / "chatd.sqlite3")
    config = write_config(tmp_path / "config.yaml", **sections,
                          plugins=_plugin_numbers("high"))
    check = subprocess.run([sys.executable, "-m", "chatd", "--config", str(config),
                            "--check-config"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    server = chatd_server(config=config)
    _serve_and_reload(server, clients=2)
    _quiet(server.log())


def test_every_number_at_its_floor_works(chatd_server: Any, tmp_path: Path) -> None:
    sections = _numbers("low")
    del sections["metrics"]
    # A node is declared dead only after more than one missed heartbeat: the floor of
    # node_timeout_seconds is just above heartbeat_seconds, whatever that is.
    sections["cluster"]["node_timeout_seconds"] = sections["cluster"]["heartbeat_seconds"] * 2
    # At the floor one client is all the server takes (max_clients 1), its nick is one
    # byte long at most, lines are 16 bytes: it still welcomes, helps and reloads.
    sections["storage"]["path"] = str(tmp_path / "data" / "chatd.sqlite3")
    config = write_config(tmp_path / "config.yaml", **sections,
                          plugins=_plugin_numbers("low"))
    server = chatd_server(config=config)
    client = server.client()
    client.send("/nick x")
    client.expect(r"^\*\*\* \S+ is now known as x$")
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reloaded .*config\.yaml")
    client.send("/nick y")
    client.expect(r"^\*\*\* x is now known as y$")
    _quiet(server.log())


# -- plugin sections: the same rules as the core ---------------------------------------------


@pytest.mark.parametrize(
    ("plugins", "error"),
    [
        ({"history": {"replay_hours": float("nan")}},
         r"plugins\.history\.replay_hours: expected a number between 0 and \d+, got nan"),
        ({"history": {"retention_days": float("inf")}},
         r"plugins\.history\.retention_days: expected a number > 0 and <= \d+, got inf"),
        ({"history": {"retention_lines": 10**30}},
         r"plugins\.history\.retention_lines: expected an integer > 0 and <= 1000000000"),
        ({"history": {"rooms": {"#news": {"replay_lines": 10**6}}}},
         r"plugins\.history\.rooms\.#news\.replay_lines: expected an integer between 0"),
        ({"history": {"rooms": {"#a\u202eb": {"store": False}}}},
         r"plugins\.history\.rooms\.#a\\u202eb: holds U\+202E \(RIGHT-TO-LEFT OVERRIDE\)"),
        ({"accounts": {"grace_seconds": 1e300}},
         r"plugins\.accounts\.grace_seconds: expected a number > 0 and <= 86400"),
        ({"accounts": {"min_password_length": True}},
         r"plugins\.accounts\.min_password_length: expected an integer between 1 and 256"),
        ({"rooms": {"welcome": "Welcome {nick}\u200b"}},
         r"plugins\.rooms\.welcome: holds U\+200B \(ZERO WIDTH SPACE\)"),
        ({"greeter": {"rooms": {"#dev\u2066": "hi {nick}"}}},
         r"plugins\.greeter\.rooms\.#dev\\u2066: holds U\+2066"),
        ({"greeter": {"default": "hi {nick}\u202e"}},
         r"plugins\.greeter\.default: holds U\+202E"),
    ],
    ids=["nan", "inf", "huge-int", "room-override", "bidi-room", "huge-float", "bool",
         "welcome", "greeter-room", "greeter-text"],
)
def test_plugin_sections_refuse_what_the_core_refuses(
    tmp_path: Path, plugins: dict[str, Any], error: str
) -> None:
    config = write_config(tmp_path / "config.yaml", plugin_dirs=[str(REPO / "plugins")],
                          plugins=plugins)
    result = subprocess.run([sys.executable, "-m", "chatd", "--config", str(config),
                             "--check-config"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result
    assert re.search(error, result.stderr), result.stderr
    assert "Traceback" not in result.stderr


# -- a setting the system refuses while serving ------------------------------------------------


def test_a_socket_option_the_kernel_refuses_is_logged_once_and_survived(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Values the loader would refuse, handed straight to the socket layer (another
    kernel, a changed sysctl): each refused option is one warning, not one per
    connection, never an exception out of accept."""
    net = NetConfig(keepalive_count=1000, sndbuf_bytes=1 << 40)  # EINVAL; not a C int
    caplog.set_level(logging.WARNING, logger="chatd.listeners")
    for _ in range(3):
        with socket.socket() as sock:
            tune_socket(sock, net)  # type: ignore[arg-type]
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 10
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 2, refused
    assert any("TCP_KEEPCNT = 1000" in message for message in refused), refused
    assert any(f"SO_SNDBUF = {1 << 40}" in message for message in refused), refused


def test_a_timer_further_away_than_epoll_can_wait_does_not_stop_the_loop() -> None:
    """``epoll_wait`` takes int milliseconds (24.8 days); a plugin's call_later(1e12)
    must make the loop wake early, not raise OverflowError out of it."""
    reactor = Reactor()
    reactor.enable_threadsafe()
    try:
        woke: list[bool] = []
        reactor.call_later(1e12, woke.append, False)
        reactor.call_soon_threadsafe(woke.append, True)  # the loop has a reason to wake
        reactor.run_once()
        assert woke == [True]
    finally:
        reactor.close()
