"""The jsonl protocol end to end: a real server with two listeners, a real ``nc`` beside a bot.

docs/protocols.md's example exchange is replayed here too, so the document
cannot drift from what the server sends.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from chatd.replies import ERROR_CODES, REPLY_TYPES
from chatd.testing import ChatClient, JsonClient, ServerProcess, skip_unless_ci

REPO = Path(__file__).resolve().parent.parent
LISTENERS = [{"port": 0}, {"port": 0, "protocol": "jsonl"}]


@pytest.fixture
def server(chatd_server) -> ServerProcess:
    return chatd_server(listen=LISTENERS)


class Netcat:
    """A real ``nc`` process: lines to its stdin, lines from its stdout (with timeouts)."""

    def __init__(self, port: int) -> None:
        nc = shutil.which("nc")
        if nc is None:
            skip_unless_ci("nc (netcat-openbsd) is not installed")
        self.proc = subprocess.Popen(
            [nc, "127.0.0.1", str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, bufsize=1,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, pattern: str, timeout: float = 5.0) -> re.Match[str]:
        regex = re.compile(pattern)
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    match = regex.search(line)
                    if match:
                        del self.lines[: self.lines.index(line) + 1]
                        return match
                seen = len(self.lines)
                if not self._cond.wait(timeout):
                    raise AssertionError(f"nc never got {pattern!r}; got {self.lines[-5:]}")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


def test_a_bot_and_an_nc_user_chat_in_the_same_room(server):
    assert len(server.ports) == 2
    person = Netcat(server.ports[0])
    try:
        person.expect(r"^\*\*\* Welcome to chatd, guest-1\.")
        bot = server.json_client()
        assert bot.nick == "guest-2"
        person.expect(r"^\*\*\* guest-2 joined #lobby$")
        bot.send(cmd="nick", nick="helperbot", id="n1")
        renamed = bot.expect(type="nick")
        assert (renamed["old"], renamed["new"], renamed["self"]) == ("guest-2", "helperbot", True)
        person.expect(r"^\*\*\* guest-2 is now known as helperbot$")
        person.send("hello bot")
        got = bot.expect(type="message")
        assert (got["from"], got["room"], got["text"]) == ("guest-1", "#lobby", "hello bot")
        assert isinstance(got["id"], int) and re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", got["time"])
        bot.send(cmd="say", text="hello human")
        person.expect(r"^<helperbot> hello human$")
        bot.send(cmd="me", text="beeps")
        person.expect(r"^\* helperbot beeps$")
        person.send("/msg helperbot psst")
        private = bot.expect(type="privmsg")
        assert (private["from"], private["to"], private["text"]) == ("guest-1", "helperbot", "psst")
        bot.send(cmd="roll", args="1d6")  # no such command without the dice plugin
        error = bot.expect(type="error")
        assert error["text"] == "unknown command /roll — try /help"
        bot.send(cmd="quit", reason="done")
        person.expect(r"^\*\*\* helperbot quit \(Quit: done\)$")
    finally:
        person.close()


def test_malformed_json_is_an_error_object_and_the_bot_stays(server):
    bot = server.json_client()
    bot.lines.send_raw(b"{not json\n")
    error = bot.expect(type="error")
    assert error["text"].startswith("not JSON")
    bot.send(cmd="who", id="w1")
    reply = bot.expect(type="names", re="w1")
    assert (reply["room"], reply["total"]) == ("#lobby", 1)
    assert [member["nick"] for member in reply["members"]] == ["guest-1"]


def _example_exchange(name: str = "example exchange") -> list[tuple[str, dict]]:
    """The ``>`` (sent) and ``<`` (received) lines of one of docs/protocols.md's examples."""
    text = (REPO / "docs" / "protocols.md").read_text()
    block = re.search(rf"<!-- {name} -->\n```\n(.*?)```", text, re.DOTALL)
    assert block, f"docs/protocols.md lost its {name}"
    exchange: list[tuple[str, dict]] = []
    for line in block.group(1).splitlines():
        if line[:2] in ("> ", "< "):
            exchange.append((line[0], json.loads(line[2:])))
        elif (said := re.match(r"^# guest-1 \(on nc\) types: (.*)$", line)):
            exchange.append(("nc", {"text": said.group(1)}))
    return exchange


def test_the_documented_example_exchange_is_what_the_server_does(server):
    exchange = _example_exchange()
    assert len(exchange) >= 10
    person = server.client()  # guest-1, a line user who says one thing
    bot = server.json_client(welcome=False)
    for direction, obj in exchange:
        if direction == "nc":
            person.send(obj["text"])
            continue
        if direction == ">":
            bot.send(obj)
            continue
        got = bot.recv()
        assert_documented(obj, got)


def _replay(exchange: list[tuple[str, dict]], person: ChatClient, bot: JsonClient) -> None:
    """Send what the exchange sends (the bot's requests, the person's lines); each
    object it shows received must be the bot's next one (:func:`assert_documented`)."""
    for direction, obj in exchange:
        if direction == "nc":
            person.send(obj["text"])
        elif direction == ">":
            bot.send(obj)
        else:
            assert_documented(obj, bot.recv())


def test_every_reply_kind_arrives_as_its_documented_object(chatd_server):
    """docs/protocols.md's example of every reply kind (names, rooms and a /list page,
    whois, room_topic, help of one command and of all, history's edges, bans) and of
    coded errors, replayed against a real server: the objects are exactly those."""
    server = chatd_server(listen=LISTENERS,
                          plugins={"oper": {"password": "correct-horse-battery"}})
    exchange = _example_exchange("reply examples")
    kinds = {obj["type"] for direction, obj in exchange if direction == "<"}
    assert kinds >= set(REPLY_TYPES) | {"error"}, "a reply kind without an example"
    person = server.client()
    bot = server.json_client()
    _replay(exchange, person, bot)


def test_the_documented_error_codes_are_the_servers_table():
    text = (REPO / "docs" / "protocols.md").read_text()
    documented = dict(re.findall(r"^\| `([a-z_]+)` \| (.+) \|$", text, re.MULTILINE))
    for code, meaning in ERROR_CODES.items():
        assert documented.get(code) == meaning, code


#: Fields whose value differs from run to run: the documented value shows their form.
VARYING = {
    "id": r"\d{16}",
    "time": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z",
    "connected_at": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z",
    "userhost": r"[^@\s]+@[0-9a-f]{12}\.cloak",
    "connected_to": r"\S+",
    "until": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z",
    "idle": r"\d+",
}


def assert_documented(documented: object, got: object, key: str = "") -> None:
    """``got`` is what ``documented`` shows: the same keys and values (objects and lists
    compared all through; a list documented as ending in ``"..."`` starts with the items
    shown), the :data:`VARYING` fields only of the documented form."""
    if key in VARYING:
        assert re.fullmatch(VARYING[key], str(got)), (key, got)
        assert type(got) is type(documented), (key, got)
    elif isinstance(documented, dict):
        assert isinstance(got, dict) and set(got) == set(documented), (documented, got)
        for name, value in documented.items():
            assert_documented(value, got[name], name)
    elif isinstance(documented, list) and documented[-1:] == ["..."]:
        assert isinstance(got, list) and len(got) >= len(documented) - 1, (documented, got)
        for shown, item in zip(documented[:-1], got, strict=False):
            assert_documented(shown, item, key)
    elif isinstance(documented, list):
        assert isinstance(got, list) and len(got) == len(documented), (documented, got)
        for shown, item in zip(documented, got, strict=True):
            assert_documented(shown, item, key)
    else:
        assert got == documented and type(got) is type(documented), (key, documented, got)
