"""The README's transcript is what two real clients see on the shipped config:
once over plain sockets, once with two real ``nc`` processes in terminals."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MARKERS = re.compile(r"^(\*\*\* |\* |<\S+> |\*\S+\* |-> |! )")


def transcripts() -> dict[str, list[str]]:
    readme = (REPO / "README.md").read_text()
    found = {}
    for block in re.findall(r"```\n((?:alice|bob)\$ nc .*?)```", readme, re.DOTALL):
        lines = block.splitlines()
        found[lines[0].split("$")[0]] = lines[1:]
    assert set(found) == {"alice", "bob"}, found
    return found


def shipped_copy(folder: Path) -> Path:
    """The shipped config.yaml, unchanged, in a folder of its own with the example
    plugins beside it: its database (``data/`` next to the config) starts empty and
    stays out of the checkout."""
    (folder / "plugins").symlink_to(REPO / "plugins")
    config = folder / "config.yaml"
    config.write_text((REPO / "config.yaml").read_text())
    return config


@pytest.mark.parametrize("kind", ["socket", "nc"])
def test_the_readme_transcript_is_real(chatd_server, kind, tmp_path):
    views = transcripts()
    typed = {who: [line for line in lines if not MARKERS.match(line)]
             for who, lines in views.items()}
    shown = {who: [line for line in lines if MARKERS.match(line)]
             for who, lines in views.items()}
    # The order the two people typed in, as the transcript tells the story.
    order = ["alice", "bob", "alice", "bob", "alice", "alice", "alice", "bob", "bob", "alice",
             "alice"]
    assert sorted(order) == sorted(w for w, lines in typed.items() for _ in lines)
    server = chatd_server(shipped_copy(tmp_path), extra_args=["--port", "0"])

    def connect():
        return server.client(welcome=False) if kind == "socket" else server.terminal(
            kind, welcome=False)

    clients: dict = {}
    received: dict[str, list[str]] = {}
    for who in ("alice", "bob"):  # each welcomed (after the greeting delay) before the next
        clients[who] = connect()
        received[who] = [clients[who].recv_line(timeout=5)]
    queues = {who: list(lines) for who, lines in typed.items()}
    for who in order:
        clients[who].send(queues[who].pop(0))
        time.sleep(0.25)  # let every notice of this step arrive before the next one
    for who, expected in shown.items():
        got = received[who]
        while len(got) < len(expected):
            got.append(clients[who].recv_line(timeout=5))
        for want, line in zip(expected, got, strict=True):
            pattern = re.escape(want).replace(r"3\ \+\ 2\ =\ 5", r"\d+ \+ \d+ = \d+")
            assert re.fullmatch(pattern, line), (who, want, line)
