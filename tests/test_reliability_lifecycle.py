"""RELIABILITY section F (signals and lifecycle), cases L1-L5: real chatd processes.

Already covered elsewhere and not repeated: tests/test_cli.py (SIGTERM/SIGINT tell
every client and exit 0 with idle clients; ``--check-config`` errors; the port in
use given with ``--port``), tests/test_plugins.py (a broken plugin under
``--check-config``), tests/test_plugin_platform.py and tests/test_oper.py (SIGHUP
and /reload swap plugins; a broken config or plugin keeps the old ones).  These
tests add what those do not: the flush deadline with a reader that never drains,
prompt wake-up and the forced second interrupt, limits re-applied by SIGHUP,
failures that must stop ``chatd`` before it binds its port, and log sinks that die
or stall.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from chatd.testing import ChatClient, ServerProcess, write_config

pytestmark = pytest.mark.timeout(90)

Start = Callable[..., ServerProcess]
PASSWORD = "correct-horse-battery"
OPER = {"oper": {"password": PASSWORD}}


# -- helpers ---------------------------------------------------------------------


def write_plugin(directory: Path, name: str, source: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


def operator(server: ServerProcess, **kwargs: Any) -> ChatClient:
    client = server.client(**kwargs)
    client.send(f"/oper {PASSWORD}")
    client.expect(r"^\*\*\* you are now an operator$")
    return client


def stats(op: ChatClient) -> str:
    """The operator's /stats report (ten notices), as one string."""
    op.send("/stats")
    op.expect(r"^\*\*\* clients \d+/\d+")
    lines = [op.history[-1]] + [op.recv_line() for _ in range(9)]
    assert lines[-1].startswith("*** rejected writes: "), lines
    return "\n".join(lines)


def stat_number(report: str, name: str) -> int:
    match = re.search(rf"{name} (\d+)", report)
    assert match, f"no {name!r} in /stats: {report}"
    return int(match.group(1))


@contextlib.contextmanager
def stopped_reader(port: int) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A client in another process that reads nothing once SIGSTOPped (SO_RCVBUF 4 KiB).

    Yields (process, nick); the process is stopped already.  At the end it is
    continued and killed.
    """
    code = textwrap.dedent(
        """
        import socket, sys
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", int(sys.argv[1])))
        welcome = b""
        while not welcome.endswith(b"\\n"):
            welcome += sock.recv(1)
        sys.stdout.write(welcome.decode())
        sys.stdout.flush()
        while sock.recv(65536):
            pass
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(port)], stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        assert ready, "the reader never connected"
        welcome = proc.stdout.readline().decode()
        match = re.match(r"^\*\*\* Welcome to chatd, (\S+)\.", welcome)
        assert match, welcome
        proc.send_signal(signal.SIGSTOP)
        yield proc, match.group(1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


def refused_soon(address: tuple[str, int], within: float) -> bool:
    """Whether connecting to ``address`` is refused at some point within ``within`` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            probe = socket.create_connection(address, timeout=1)
        except (ConnectionRefusedError, ConnectionResetError):
            # A reset: the handshake completed into the backlog of a listener that
            # closed before accepting it; the listener is gone either way.
            return True
        probe.close()
        time.sleep(0.01)
    return False


def assert_goodbye(lines: list[str]) -> None:
    """What a client reads after SIGTERM: the goodbye, last.  Probe connections made
    while the signal was on its way may come and go first."""
    assert lines and lines[-1] == "*** server shutting down", lines
    for line in lines[:-1]:
        assert re.match(r"^\*\*\* guest-\d+ (joined #lobby|quit \(.*\))$", line), lines


def big_line(i: int) -> str:
    return f"{i:05d} " + "x" * 994


def spawn(config: Path, workdir: Path, *, stdout: int | BinaryIO | None = None,
          stderr: int | BinaryIO | None = None, extra_args: list[str] | None = None,
          preexec_fn: Callable[[], None] | None = None,
          ) -> subprocess.Popen[bytes]:
    """``python -m chatd --config CONFIG --port-file`` with the given stdio."""
    return subprocess.Popen(
        [sys.executable, "-m", "chatd", "--config", str(config),
         "--port-file", str(workdir / "port"), *(extra_args or [])],
        stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, preexec_fn=preexec_fn,
    )


def wait_port(proc: subprocess.Popen[bytes], workdir: Path, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"chatd exited with {proc.returncode}"
        with contextlib.suppress(FileNotFoundError, ValueError):
            text = (workdir / "port").read_text()
            if text.endswith("\n"):
                return int(text.splitlines()[0])  # one line per listener: the first
        time.sleep(0.02)
    raise AssertionError("chatd did not start")


# -- L1: graceful SIGTERM with a flush deadline ------------------------------------------


def test_L1_sigterm_flushes_goodbyes_and_cuts_a_stalled_reader_at_the_deadline(
    chatd_server: Start,
) -> None:
    """L1: "The listener closes at once (new connects are refused). Normal clients
    receive `*** server shutting down`, then EOF. The process exits 0 within about
    3 s although one client never drains, and logs "1 connection cut with N bytes
    unsent"." (3 normal clients, 1 SIGSTOPped client with 1 MiB pending.)"""
    server = chatd_server(
        limits={
            "shutdown_timeout_seconds": 2.0,
            # The stalled reader must be able to hold 1 MiB without a limit cutting it.
            "max_output_bytes": 8 << 20,
            "output_soft_bytes": 4 << 20,
        },
        net={"sndbuf_bytes": 4096},
        plugins=OPER,
    )
    op = operator(server)
    bob = server.client()
    carol = server.client()
    with stopped_reader(server.port) as (_reader, stalled_nick):
        for client in (op, bob, carol):
            client.expect(rf"^\*\*\* {re.escape(stalled_nick)} joined #lobby$")
        count = 1100  # 1100 x 1001 bytes: over 1 MiB for the stalled reader
        op.send_raw("".join(big_line(i) + "\n" for i in range(count)).encode())
        for client in (bob, carol):
            for i in range(count):
                client.expect_line(f"<{op.nick}> {big_line(i)}", timeout=10)
        queued = stat_number(stats(op), "output queued")
        assert queued >= 1 << 20, f"only {queued} bytes queued for the stalled reader"

        server.signal(signal.SIGTERM)
        server.wait_for_log(r"received SIGTERM: shutting down")
        assert refused_soon(server.address, within=1.0), "the listener stayed open"
        for client in (bob, carol, op):
            assert_goodbye(client.expect_eof(timeout=5))
            client.close()  # our FIN: only the stalled reader keeps the server waiting
        assert server.proc.wait(6) == 0  # the 2 s deadline, not the stalled reader, decides
    log = server.log()
    match = re.search(r"(\d+) connections? cut at shutdown with (\d+) bytes unsent", log)
    assert match, log[-3000:]
    assert int(match.group(1)) == 1, match.group(0)
    assert int(match.group(2)) >= 1 << 20, match.group(0)
    assert "Traceback" not in log


# -- L2: prompt wake-up; double SIGINT -----------------------------------------------------


def test_L2_signals_wake_an_idle_loop_promptly(chatd_server: Start) -> None:
    """L2 (a): "an idle server (next timer 60 s away) gets SIGTERM [...] shutdown
    starts within 100 ms (wakeup fd in the epoll set)". The loop's own timers are
    at most 1 s apart, so each signal must be handled well within that; several
    signals in a row make a lucky timer implausible."""
    server = chatd_server(plugin_host={"entry_points": False})
    client = server.client()
    for round_ in range(1, 4):
        server.signal(signal.SIGHUP)
        deadline = time.monotonic() + 0.5
        while server.log().count("received SIGHUP") < round_:
            assert time.monotonic() < deadline, "SIGHUP was not handled within 0.5 s"
            time.sleep(0.005)
        server.wait_for_log(rf"(?s)(reloaded .*){{{round_}}}")
    server.signal(signal.SIGTERM)
    assert refused_soon(server.address, within=0.5), "SIGTERM was not handled within 0.5 s"
    assert_goodbye(client.expect_eof(timeout=5))
    client.close()
    assert server.proc.wait(10) == 0
    assert "Traceback" not in server.log()


def test_L2_second_sigint_exits_at_once_while_the_flush_is_blocked(
    chatd_server: Start,
) -> None:
    """L2 (b): "SIGINT twice within 1 s while the flush is blocked [...] immediate
    non-zero exit" (130, as a shell reports an interrupted command)."""
    server = chatd_server(
        limits={
            "shutdown_timeout_seconds": 60.0,
            "max_output_bytes": 8 << 20,
            "output_soft_bytes": 4 << 20,
        },
        net={"sndbuf_bytes": 4096},
    )
    alice = server.client()
    bob = server.client()
    with stopped_reader(server.port) as (reader, stalled_nick):
        bob.expect(rf"^\*\*\* {re.escape(stalled_nick)} joined #lobby$")
        count = 300
        alice.send_raw("".join(big_line(i) + "\n" for i in range(count)).encode())
        for i in range(count):
            bob.expect_line(f"<{alice.nick}> {big_line(i)}", timeout=10)
        server.signal(signal.SIGINT)
        for client in (alice, bob):
            lines = client.expect_eof(timeout=5)
            assert lines[-1] == "*** server shutting down", lines
            client.close()
        # The stalled reader holds the shutdown (its deadline is a minute away).
        time.sleep(0.3)
        assert server.proc.poll() is None, "the flush was not blocked"
        assert reader.poll() is None
        server.signal(signal.SIGINT)
        assert server.proc.wait(5) == 130
    log = server.log()
    assert "received SIGINT: shutting down" in log
    assert "Traceback" not in log


NAP_PLUGIN = """
import logging
import time

from chatd import hookimpl

log = logging.getLogger("nap")


@hookimpl
def chatd_message(client, text):
    if text == "nap":
        log.warning("napping")
        time.sleep(1.0)
        log.warning("woke up")
"""


def test_L2_sigint_during_a_plugin_hook_never_unwinds_through_it(
    chatd_server: Start, tmp_path: Path
) -> None:
    """L2: "KeyboardInterrupt never unwinds through a plugin." SIGINT arrives while
    a hook sleeps; the hook finishes, the message is delivered, then the server
    shuts down gracefully (exit 0, no plugin error)."""
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "nap", NAP_PLUGIN)
    server = chatd_server(plugin_dirs=[str(plugins)], plugin_host={"slow_hook_seconds": 5.0})
    alice = server.client()
    bob = server.client()
    alice.expect(rf"^\*\*\* {bob.nick} joined #lobby$")
    alice.send("nap")
    server.wait_for_log(r"WARNING nap: napping")
    server.signal(signal.SIGINT)
    lines = bob.expect_eof(timeout=10)
    assert lines == [f"<{alice.nick}> nap", "*** server shutting down"], lines
    bob.close()
    assert alice.expect_eof(timeout=10) == ["*** server shutting down"]
    alice.close()
    assert server.proc.wait(10) == 0
    log = server.log()
    assert "woke up" in log
    assert "KeyboardInterrupt" not in log and "Traceback" not in log
    assert "internal error" not in log and "plugin 'nap'" not in log


# -- L3: SIGHUP reload with rollback -------------------------------------------------------


def _config(path: Path, *, max_clients: int, per_ip: int) -> Path:
    return write_config(
        path,
        limits={"max_clients": max_clients},
        per_ip={"max_connections": per_ip},
        plugin_host={"entry_points": False},
    )


def _refused(server: ServerProcess, source: str) -> str:
    client = server.client(welcome=False, source=source)
    lines = client.expect_eof(timeout=5)
    assert len(lines) == 1, lines
    return lines[0]


def test_L3_sighup_applies_new_limits_to_new_connections_and_keeps_everyone(
    chatd_server: Start, tmp_path: Path
) -> None:
    """L3 (a): "lower `max_clients` and `per_ip_max` in config.yaml and send HUP
    [...] the new limits apply to *new* connections and existing clients are kept"."""
    config = _config(tmp_path / "config.yaml", max_clients=10, per_ip=5)
    server = chatd_server(config=config)
    crowd = [server.client(source="127.0.0.2") for _ in range(3)]
    other = server.client(source="127.0.0.3")
    everyone = [*crowd, other]
    for i, client in enumerate(everyone):
        for later in everyone[i + 1:]:
            client.expect_line(f"*** {later.nick} joined #lobby")

    _config(config, max_clients=5, per_ip=2)
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reloaded .*config\.yaml")
    # Existing clients: all kept, over the new per-address limit or not.
    crowd[0].send("still here after the reload")
    for client in everyone[1:]:
        client.expect_line(f"<{crowd[0].nick}> still here after the reload")
    # New connections: the new per-address limit (127.0.0.2 has 3 > 2) ...
    assert _refused(server, "127.0.0.2") == "! too many connections from your address (max 2)"
    # ... room for one more client in all (5) ...
    newcomer = server.client(source="127.0.0.4")
    for client in everyone:
        client.expect_line(f"*** {newcomer.nick} joined #lobby")
    # ... and then the new server-wide limit.
    assert _refused(server, "127.0.0.5") == "! server full (max 5 clients); try again later"
    newcomer.send("hello")
    for client in everyone:
        client.expect_line(f"<{newcomer.nick}> hello")
    assert server.proc.poll() is None
    assert "Traceback" not in server.log()


@pytest.mark.parametrize(
    ("good", "bad", "error"),
    [
        ("max_clients: 3", "max_clients: [unclosed", r"config\.yaml:\d+:"),
        ("max_clients: 3", "max_clients: -1", r"config\.yaml:\d+: limits\.max_clients: "),
        ("max_connections: 2", "max_connections: -3",
         r"config\.yaml:\d+: per_ip\.max_connections: "),
        ("max_clients: 3", "max_clientz: 1", r"config\.yaml:\d+: limits\.max_clientz: unknown key"),
    ],
    ids=["yaml-syntax", "negative-max-clients", "negative-per-ip", "unknown-key"],
)
def test_L3_sighup_with_a_broken_file_keeps_the_running_limits(
    chatd_server: Start, tmp_path: Path, good: str, bad: str, error: str
) -> None:
    """L3 (b): "write invalid YAML or a negative limit and send HUP [...] an error is
    logged, the old config stays in force, and the server keeps serving" -- the old
    *limits* included, not only the old plugins."""
    config = _config(tmp_path / "config.yaml", max_clients=3, per_ip=2)
    server = chatd_server(config=config)
    alice = server.client(source="127.0.0.2")
    bob = server.client(source="127.0.0.2")
    alice.expect_line(f"*** {bob.nick} joined #lobby")
    text = config.read_text()
    assert good in text
    config.write_text(text.replace(good, bad))
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reload failed, keeping the running config and plugins: .*" + error)
    # Still serving, with the limits from before the failed reload.
    alice.send("after the failed reload")
    bob.expect_line(f"<{alice.nick}> after the failed reload")
    assert _refused(server, "127.0.0.2") == "! too many connections from your address (max 2)"
    carol = server.client(source="127.0.0.3")
    alice.expect_line(f"*** {carol.nick} joined #lobby")
    assert _refused(server, "127.0.0.4") == "! server full (max 3 clients); try again later"
    assert server.proc.poll() is None
    assert "Traceback" not in server.log()


# -- L4: startup failures are clean and early ------------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something else listens on: a chatd that gets as far as binding says so."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def run_chatd_expecting_failure(
    config: Path, workdir: Path, *, preexec_fn: Callable[[], None] | None = None,
    wrapper: list[str] | None = None,
) -> str:
    """Run ``chatd --config`` (serve, not --check-config); it must fail cleanly.

    Returns the single stderr line.
    """
    port_file = workdir / "port"
    result = subprocess.run(
        [*(wrapper or []), sys.executable, "-m", "chatd", "--config", str(config),
         "--port-file", str(port_file)],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        preexec_fn=preexec_fn, cwd=workdir,
    )
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("chatd: "), lines[0]
    assert result.stdout == "", result.stdout
    assert not port_file.exists(), "chatd got as far as listening"
    return lines[0]


BROKEN_PLUGINS = {
    "import-error": ("import does_not_exist_anywhere\n", r"plugin.*broken.*ModuleNotFoundError"),
    "typo-hook": (
        "from chatd import hookimpl\n\n@hookimpl\ndef chatd_mesage(client, text):\n    pass\n",
        r"broken.*unknown hook 'chatd_mesage'",
    ),
    "bad-signature": (
        "from chatd import hookimpl\n\n@hookimpl\ndef chatd_message(client, txt):\n    pass\n",
        r"broken.*txt",
    ),
}


@pytest.mark.parametrize(
    ("sections", "error"),
    [
        ({}, r"cannot listen on 127\.0\.0\.1:{port}: Address already in use"),
        ({"limits": {"max_clientz": 5}},
         r"config\.yaml:\d+: limits\.max_clientz: unknown key \(did you mean 'max_clients'\?\)"),
        ({"limits": {"max_clients": -5}}, r"config\.yaml:\d+: limits\.max_clients: "),
        ({"limits": {"shutdown_timeout_seconds": -1.0}},
         r"config\.yaml:\d+: limits\.shutdown_timeout_seconds: "),
        ({"per_ip": {"max_connections": -1}}, r"config\.yaml:\d+: per_ip\.max_connections: "),
        ({"listen": {"port": 70000}}, r"config\.yaml:\d+: listen\.port: "),
    ],
    ids=["port-in-use", "unknown-key", "negative-max-clients", "negative-timeout",
         "negative-per-ip", "port-out-of-range"],
)
def test_L4_config_errors_stop_chatd_before_it_binds(
    tmp_path: Path, taken_port: int, sections: dict[str, Any], error: str
) -> None:
    """L4: "a non-zero exit (config errors: 2) with one clear line naming the key
    [...] before the port is bound." The configured port is taken: had chatd tried
    to bind first, the error would be "Address already in use" (the first case
    shows that line)."""
    listen = {"host": "127.0.0.1", "port": taken_port, **sections.pop("listen", {})}
    config = write_config(tmp_path / "config.yaml", listen=listen, **sections)
    line = run_chatd_expecting_failure(config, tmp_path)
    assert re.search(error.format(port=taken_port), line), line


def test_L4_python_yaml_tag_is_rejected_and_never_run(tmp_path: Path, taken_port: int) -> None:
    """L4: "A config containing `!!python/object/apply:os.system ["touch pwned"]`
    [...] The YAML tag is rejected (`yaml.safe_load`) and no file is created." """
    marker = tmp_path / "pwned"
    config = tmp_path / "config.yaml"
    config.write_text(
        f"listen: {{host: 127.0.0.1, port: {taken_port}}}\n"
        f"server: !!python/object/apply:os.system [\"touch {marker}\"]\n"
    )
    line = run_chatd_expecting_failure(config, tmp_path)
    assert re.search(r"config\.yaml:2: .*tag", line), line
    assert not marker.exists(), "the YAML tag ran a command"
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("case", sorted(BROKEN_PLUGINS))
def test_L4_broken_plugin_stops_chatd_before_it_binds(
    tmp_path: Path, taken_port: int, case: str
) -> None:
    """L4: "A plugin with a typo'd hook name, a bad hookimpl signature, or an import
    error [...] one clear line naming the [...] plugin, before the port is bound."
    (tests/test_plugins.py checks the same plugins under --check-config.)"""
    source, error = BROKEN_PLUGINS[case]
    plugins = tmp_path / "plugins"
    write_plugin(plugins, "broken", source)
    config = write_config(
        tmp_path / "config.yaml",
        listen={"host": "127.0.0.1", "port": taken_port},
        plugin_dirs=[str(plugins)],
    )
    line = run_chatd_expecting_failure(config, tmp_path)
    assert re.search(error, line), line


@pytest.mark.parametrize(
    ("nofile", "reserve", "how"),
    [(32, 32, "preexec"), (64, 100, "prlimit")],
    ids=["equal-to-reserve-preexec", "below-reserve-prlimit"],
)
def test_L4_fd_limit_below_the_reserve_stops_chatd_before_it_binds(
    tmp_path: Path, taken_port: int, nofile: int, reserve: int, how: str
) -> None:
    """L4: "`RLIMIT_NOFILE` below the reserve [...] a non-zero exit with one clear
    line [...] before the port is bound" (Redis adjustOpenFilesLimit)."""
    config = write_config(
        tmp_path / "config.yaml",
        listen={"host": "127.0.0.1", "port": taken_port},
        limits={"reserve_fds": reserve},
    )

    def lower_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    if how == "preexec":
        line = run_chatd_expecting_failure(config, tmp_path, preexec_fn=lower_limit)
    else:
        line = run_chatd_expecting_failure(
            config, tmp_path, wrapper=["prlimit", f"--nofile={nofile}:{nofile}", "--"]
        )
    assert re.search(
        rf"RLIMIT_NOFILE is {nofile}, not above the {reserve} descriptors reserved "
        r"\(limits\.reserve_fds\)", line,
    ), line


# -- L5: log sinks that fail never stop the chat ----------------------------------------------


L5_SECTIONS: dict[str, Any] = {
    # Lots of log records: every hook call (--trace-hooks) and every message.
    "logging": {"level": "DEBUG"},
    "plugins": {**OPER, "log": {"messages": True}},
}


@contextlib.contextmanager
def chatd_with_log_sink(
    tmp_path: Path, sink: str
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """chatd whose stdout and stderr go to ``sink``: "head" (a process that exits
    after one line) or "stuck" (a pipe nobody reads).  Yields (process, port)."""
    config = write_config(tmp_path / "config.yaml", **L5_SECTIONS)
    head: subprocess.Popen[bytes] | None = None
    if sink == "head":
        head = subprocess.Popen(
            ["head", "-n1"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
        )
        assert head.stdin is not None
        proc = spawn(config, tmp_path, stdout=head.stdin, stderr=head.stdin,
                     extra_args=["--trace-hooks"])
        head.stdin.close()  # chatd holds the only write end now
    else:
        proc = spawn(config, tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                     extra_args=["--trace-hooks"])
    try:
        port = wait_port(proc, tmp_path)
        if head is not None:
            assert head.wait(10) == 0  # the sink is gone: every later write is EPIPE
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()
        if head is not None and head.poll() is None:
            head.kill()
            head.wait(5)


def broadcast_and_check(port: int, *, lines: int, batch: int = 1000) -> ChatClient:
    """One sender, three readers, ``lines`` chat lines: every reader gets each line, in
    order.  Returns an operator client (connected first)."""
    address = ("127.0.0.1", port)
    op = ChatClient(address)
    op.welcome()
    op.send(f"/oper {PASSWORD}")
    op.expect(r"^\*\*\* you are now an operator$")
    sender = ChatClient(address)
    sender.welcome()
    readers = []
    for _ in range(3):
        reader = ChatClient(address)
        reader.welcome()
        readers.append(reader)
    for i, reader in enumerate(readers):
        for later in readers[i + 1:]:
            reader.expect_line(f"*** {later.nick} joined #lobby")
    for start in range(0, lines, batch):
        chunk = range(start, min(lines, start + batch))
        sender.send_raw("".join(f"line {i}\n" for i in chunk).encode())
        for reader in readers:
            for i in chunk:
                reader.expect_line(f"<{sender.nick}> line {i}", timeout=10)
    for client in (sender, *readers):
        client.close()
    return op


@pytest.mark.parametrize("sink", ["head", "stuck"])
def test_L5_a_dead_or_stuck_log_sink_never_stops_the_chat(tmp_path: Path, sink: str) -> None:
    """L5: "(a) stdout/stderr piped to a process that exits after 1 line; (b) stdout
    piped to a process that never reads; then 10,000 broadcasts [...] all clients
    keep receiving everything. Logging goes through a bounded `QueueHandler` [...]
    `BrokenPipeError` is swallowed [...] never raised into the loop." """
    with chatd_with_log_sink(tmp_path, sink) as (proc, port):
        op = broadcast_and_check(port, lines=10_000)
        report = stats(op)
        assert stat_number(report, "messages in") == 10_000
        # The loop is alive and well: a new client is welcomed and can talk.
        late = ChatClient(("127.0.0.1", port))
        late.welcome()
        late.send("/nick late")
        late.expect_line(f"*** {late.nick} is now known as late")
        assert proc.poll() is None
        if sink == "stuck":
            # The queue filled up: records were dropped and counted, not waited for.
            assert stat_number(report, "log records dropped") > 0, report
        op.close()
        late.close()


def test_L5_records_lost_to_a_dead_log_sink_are_counted(tmp_path: Path) -> None:
    """L5: "`BrokenPipeError` is swallowed and counted, never raised into the loop"
    -- a record written to a sink that is gone is lost, and /stats must say so."""
    with chatd_with_log_sink(tmp_path, "head") as (_proc, port):
        op = broadcast_and_check(port, lines=200, batch=200)
        report = stats(op)
        assert stat_number(report, "log records dropped") > 0, report
        op.close()


def test_L5_a_stuck_log_sink_does_not_block_shutdown(tmp_path: Path) -> None:
    """L1 with L5's stuck sink: "Logging is non-blocking" and "The process exits 0
    within about [shutdown_timeout]" -- SIGTERM while the log pipe is full and the
    log queue overflowing must still end the process cleanly."""
    with chatd_with_log_sink(tmp_path, "stuck") as (proc, port):
        op = broadcast_and_check(port, lines=10_000)
        report = stats(op)
        assert stat_number(report, "log records dropped") > 0, report
        proc.send_signal(signal.SIGTERM)
        assert op.expect_eof(timeout=5)[-1] == "*** server shutting down"
        op.close()
        try:
            status = proc.wait(10)  # shutdown_timeout is 10 s by default; all left already
        except subprocess.TimeoutExpired:
            status = None
        if status is None:
            # Show why it hangs: drain the pipe and let it finish.
            assert proc.stdout is not None
            output = bytearray()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                ready, _, _ = select.select([proc.stdout], [], [], 0.5)
                if ready:
                    chunk = os.read(proc.stdout.fileno(), 1 << 16)
                    if not chunk:
                        break
                    output += chunk
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            # The traceback's lines, picked out from between the queued log records.
            error = "\n".join(
                line for line in output.decode(errors="replace").splitlines()
                if line and not re.match(r"\d{4}-\d\d-\d\d ", line)
            )
            pytest.fail(
                "chatd did not exit within 10 s of SIGTERM with its log pipe full; once "
                f"the pipe was drained it exited with {proc.poll()}; traceback: {error}"
            )
        assert status == 0
