"""The people chatd is for, as they are: a real nc, ncat or socat in a terminal.

Each test runs the real program on a pty (``server.terminal(...)``), so keys go
through the terminal's line discipline the way a person's do: Enter is CR made
LF by the terminal, DEL is erased by the terminal, Ctrl-H and escape keys reach
the program and so chatd.  Plain sockets stand in for the other people.
(telnet has its own file, tests/test_telnet.py: negotiation, Ctrl-C,
character mode.)
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

PROGRAMS = ["nc", "ncat", "socat"]


def sees(client, line: str) -> None:
    """``line``, exactly, arrives (other lines, such as joins, may come first)."""
    client.expect("^" + re.escape(line) + "$")


@pytest.fixture(params=PROGRAMS)
def program(request) -> str:
    return request.param


def test_rooms_can_be_told_apart_in_a_real_terminal(chatd_server, program):
    server = chatd_server()
    person = server.terminal(program)
    lobby, dev = server.client(), server.client()
    dev.send("/join #dev")
    dev.expect(r"also in #dev|you are the first in #dev")
    person.send("/join #dev")
    person.expect(rf"^\*\*\* also in #dev: {dev.nick}$")
    lobby.send("lunch?")
    dev.send("the build is green")
    sees(person, f"[#lobby] <{lobby.nick}> lunch?")
    sees(person, f"<{dev.nick}> the build is green")
    person.send("/switch #lobby")
    sees(person, "*** you are now talking in #lobby")
    person.send("on my way")
    sees(lobby, f"<{person.nick}> on my way")
    dev.send("see you")
    sees(person, f"[#dev] <{dev.nick}> see you")
    person.send("/rooms")
    person.expect(r"#dev \(2\) \+.*#lobby \(3\) \*")


def test_keys_in_a_real_terminal_leave_nothing_behind(chatd_server, program):
    server = chatd_server()
    person = server.terminal(program)
    other = server.client()
    # F1 (SS3), an arrow key (CSI), then a word typed with two Ctrl-H corrections.
    person.type(b"\x1bOP\x1b[Ahelo\x08\x08llo there")
    person.send("")
    sees(other, f"<{person.nick}> hello there")
    # DEL is the terminal's erase key: the terminal erases, chatd never sees it.
    person.type(b"typo\x7f\x7f\x7f\x7fright")
    person.send("")
    sees(other, f"<{person.nick}> right")
    other.send("a reply with \x1b]0;owned\x07 a title escape")
    sees(person, f"<{other.nick}> a reply with  a title escape")


def test_a_real_terminal_says_goodbye_and_the_room_hears_it(chatd_server, program):
    server = chatd_server()
    person = server.terminal(program)
    other = server.client()
    person.send("/quit see you")
    sees(person, "*** Goodbye.")
    sees(other, f"*** {person.nick} quit (Quit: see you)")


# -- returning to the shell ------------------------------------------------------------------
# nc and ncat wait for their stdin after the server's FIN (ncat never reads the socket
# again), so a person would sit at a dead prompt after /quit or a shutdown.  chatd
# resets the connection once the goodbye is acknowledged: they notice and exit, and
# the goodbye was printed first.  socat and telnet leave on a FIN already; they must
# still leave, and still print the goodbye, with the reset.

EVERY_TERMINAL = [*PROGRAMS, "telnet"]


def returns_to_the_shell(person) -> list[str]:
    """The program exits by itself (its pty closes); the lines it printed."""
    lines = person.expect_eof(timeout=5.0)
    person.child.wait()  # the pty closed: the program is gone or going
    assert not person.child.isalive()
    return lines


@pytest.mark.parametrize("program", EVERY_TERMINAL)
def test_after_quit_the_program_returns_to_the_shell(chatd_server, program):
    server = chatd_server()
    person = server.terminal(program)
    other = server.client()
    person.send("/quit see you")
    lines = returns_to_the_shell(person)
    assert "*** Goodbye." in lines, lines
    sees(other, f"*** {person.nick} quit (Quit: see you)")


def readme_shutdown_line() -> str:
    """The line the README says everyone reads on SIGTERM ("tells everyone `...`")."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    match = re.search(r"SIGTERM or SIGINT stops accepting, tells everyone `([^`]+)`", readme)
    assert match, "the README lost its shutdown sentence"
    return match.group(1)


@pytest.mark.parametrize("program", EVERY_TERMINAL)
def test_after_a_server_shutdown_the_program_returns_to_the_shell(chatd_server, program):
    server = chatd_server()
    person = server.terminal(program)
    server.signal(signal.SIGTERM)
    lines = returns_to_the_shell(person)
    assert readme_shutdown_line() in lines, lines  # the README's words, exactly
    assert server.proc.wait(10) == 0
    assert "shutting down: 1 client connected" in server.log()


def test_a_program_on_jsonl_still_gets_a_fin_after_its_quit(chatd_server):
    """Bots read to end of file: jsonl keeps the plain FIN ending (no reset)."""
    server = chatd_server(listen=[{"port": 0}, {"port": 0, "protocol": "jsonl"}])
    bot = server.json_client()
    bot.send(cmd="quit", reason="done")
    bot.expect(type="notice", text="Goodbye.")
    sock = bot.lines.sock
    sock.settimeout(5.0)
    while sock.recv(4096):  # to end of file; a reset raises ConnectionResetError here
        pass


@pytest.mark.parametrize("program", ["nc", "ncat"])
def test_a_refused_program_says_why_and_returns_to_the_shell(chatd_server, program):
    """A refusal (here the per-address limit) is a goodbye like any other: the line,
    then the reset nc and ncat notice."""
    server = chatd_server(per_ip={"max_connections": 1})
    holder = server.client()  # the address's one place
    person = server.terminal(program, welcome=False)
    lines = returns_to_the_shell(person)
    assert "! too many connections from your address (max 1)" in lines, lines
    holder.send("/who")
    holder.expect_line(f"*** #lobby has 1 member: {holder.nick}")
