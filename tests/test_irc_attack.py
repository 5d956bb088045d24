"""Issue 20, the outsider's ten minutes against the ``irc`` listener, and IRC's limits.

Real chatd processes with an ``irc`` listener beside a line and a jsonl listener,
driven by raw sockets that parse every line chatd sends with the strict wire parser
(tests/test_irc_session.py's ``IrcClient``).  Each test is an attack an outsider
can make with a socket: a field with CR/LF/NUL, a prefix or tags of its own, a
look-alike nick, junk before registration, a flood of lines the IRC layer answers
itself, oversized tags, a reader that stops reading.  The rule for all of them:
the attacker is answered (an IRC numeric, or ``ERROR`` before a close), nobody
else sees anything they did not send, and IRC clients are held to the same flood
gate (delayed, never kicked, nothing lost), output and per-address limits as
everyone.
"""

from __future__ import annotations

import base64
import select
import socket
import time
from typing import Any

import pytest
from test_accounts import PASSWORD, expect_exact, named
from test_irc_seams import registered
from test_irc_session import IrcClient

from chatd.protocols.base import PlainDoor
from chatd.protocols.irc import IrcProtocol
from chatd.protocols.irc.registration import MESSAGES_MAX
from chatd.protocols.irc.wire import BODY_MAX, TAGS_MAX, Message
from chatd.requests import SessionRequest
from chatd.testing import InProcessChat
from chatd.testing.inprocess import MemoryTransport

FLOOD_NOTICE = "flood limit: your lines are delayed"


@pytest.fixture
def three(chatd_server):
    """``three(**sections)`` -> (server, irc address): listeners line (0), irc (1), jsonl (2)."""
    def start(irc: dict[str, Any] | None = None, **sections: Any) -> Any:
        server = chatd_server(listen=[{"port": 0}, {"port": 0, "protocol": "irc", **(irc or {})},
                                      {"port": 0, "protocol": "jsonl"}], **sections)
        return server, (server.host, server.ports[1])
    return start


def fence(irc: IrcClient, token: str = "fence") -> list[Message]:
    """Everything ``irc`` is sent before the answer to a PING sent now."""
    irc.send(f"PING :{token}")
    seen = irc.until("PONG")
    assert seen[-1].params[-1] == token, seen
    return seen[:-1]


def said(messages: list[Message], command: str = "PRIVMSG") -> list[Message]:
    return [m for m in messages if m.command == command]


# -- forging: what a client sends is its own, for every viewer -----------------------------------


def test_a_clients_prefix_and_tags_are_ignored_for_every_protocols_viewers(three):
    server, address = three()
    watcher = IrcClient(address)
    watcher.register("watcher", "CAP LS 302", "CAP REQ :message-tags server-time account-tag",
                     "CAP END")
    person = named(server, "person")
    bot = server.json_client(listener=2)
    mallory = IrcClient(address)
    mallory.register("mallory")
    fence(watcher)
    mallory.send(":watcher!w@trusted.host PRIVMSG #lobby :first",
                 "@time=2000-01-01T00:00:00.000Z;msgid=forged;account=admin;+x=a\\r\\nb "
                 "PRIVMSG #lobby :second")
    expect_exact(person, "<mallory> first")  # then both were handled: the watcher has them
    person.expect_line("<mallory> second")
    first, second = said(fence(watcher, "after"))[-2:]
    for message in (first, second):
        assert message.source.startswith("mallory!"), message
    assert first.params == ("#lobby", "first") and second.params == ("#lobby", "second")
    assert second.tags["msgid"] != "forged" and not second.tags["time"].startswith("2000")
    assert "account" not in second.tags and "+x" not in second.tags  # not logged in: none
    assert bot.expect(type="message", text="first")["from"] == "mallory"
    got = bot.expect(type="message", text="second")
    assert got["from"] == "mallory" and got["id"] != "forged"
    assert not got["time"].startswith("2000")


@pytest.mark.parametrize("line", [
    b"PRIVMSG #lobby :one\x00:server NOTICE * :two",
    b"PRIVMSG #lobby :one\r:server NOTICE * :two",
    b"TOPIC #lobby :one\x00two",
    b"PART #lobby :one\rtwo",
    b"AWAY :one\x00two",
    b"@+x=a\x00b PRIVMSG #lobby :tagged",
    b"PRIVMSG watcher\x00x :hi",
])
def test_cr_or_nul_in_any_field_is_refused_and_nobody_sees_a_thing(three, line):
    server, address = three()
    watcher = IrcClient(address)
    watcher.register("watcher")
    person = named(server, "person")
    mallory = IrcClient(address)
    mallory.register("mallory")
    fence(watcher)
    mallory.send_raw(line + b"\r\n")
    assert mallory.expect("400").params[:2] == ("mallory", "*")
    assert fence(watcher, "after") == []
    person.send("/me checks")  # the next line the watcher is sent is this one
    assert watcher.recv().params == ("#lobby", "\x01ACTION checks\x01")


def test_text_that_looks_like_a_server_line_stays_the_senders_message(three):
    server, address = three()
    watcher = IrcClient(address)
    watcher.register("watcher")
    person = named(server, "person")
    mallory = IrcClient(address)
    mallory.register("mallory")
    fence(watcher)
    mallory.send("PRIVMSG #lobby :*** watcher has quit",
                 "PRIVMSG #lobby :\x01ACTION one\x01ACTION two\x01",
                 "PRIVMSG #lobby ::chatd.local 001 watcher :fake")
    expect_exact(person, "<mallory> *** watcher has quit")
    person.expect_line("* mallory oneACTION two")  # the inner CTCP delimiter is dropped
    person.expect_line("<mallory> :chatd.local 001 watcher :fake")
    texts = [(m.source.split("!")[0], m.params[-1]) for m in said(fence(watcher))]
    assert texts == [("mallory", "*** watcher has quit"),
                     ("mallory", "\x01ACTION oneACTION two\x01"),
                     ("mallory", ":chatd.local 001 watcher :fake")]


# -- nicks at registration -----------------------------------------------------------------------


def test_a_nick_with_a_space_at_registration_is_432_not_a_broken_reply(three):
    _, address = three()
    irc = IrcClient(address)
    irc.send("USER a 0 * :A", "NICK :a b")
    refused = irc.expect("432")
    assert refused.params[:2] == ("*", "*"), refused  # the nick is no parameter: '*'
    assert "400" not in [m.command for m in irc.seen]
    irc.send("NICK fine")
    assert irc.expect("001").params[0] == "fine"


@pytest.mark.parametrize(("nick", "numeric"), [
    ("w\u0430tcher", "432"),    # a Cyrillic a
    ("\uff57atcher", "432"),    # a full-width w
    ("wa\u0301tcher", "432"),   # a combining accent
    ("WATCHER", "433"),         # the case of a connected nick
    ("vvatcher", "433"),        # its skeleton ("vv" reads as "w")
    ("aIice", "grace"),         # a registered nick's skeleton: held only to /identify
    ("NickServ", "432"),
    ("Nick\u200bServ", "432"),  # a zero-width space
    ("chanserv", "432"),
    ("ChanServ_", None),        # not a look-alike: a name of its own
])
def test_look_alike_nicks_at_registration(three, nick, numeric):
    server, address = three()
    registered(server, "alice")
    holder = IrcClient(address)
    holder.register("watcher")
    irc = IrcClient(address)
    irc.send("USER a 0 * :A", f"NICK {nick}")
    if numeric != "432" and numeric != "433":
        assert irc.expect("001").params[0] == nick
        if numeric == "grace":  # the registered nick's rule, as on every protocol
            irc.until("366")
            assert "registered nick alice" in irc.expect("NOTICE").params[-1]
        return
    assert irc.expect(numeric).params[:2] == ("*", nick)
    irc.send("NICK someone")
    assert irc.expect("001").params[0] == "someone"


# -- junk before registration ------------------------------------------------------------------


@pytest.mark.parametrize("junk", [b"PRIVMSG #lobby :\x00", b"\xff\xfe", b"NICK " + b"x" * 600])
def test_lines_that_are_no_message_count_toward_the_registration_limit(three, junk):
    _, address = three()
    irc = IrcClient(address)
    irc.send_raw((junk + b"\r\n") * (MESSAGES_MAX + 1))
    rest = irc.expect_eof()
    assert rest[-1].command == "ERROR" and "before registration" in rest[-1].params[0], rest[-3:]
    assert len(rest) == MESSAGES_MAX + 2  # each answered, the one past the limit too; ERROR


# -- the flood gate: IRC-style delay, never a kick, nothing lost ----------------------------------


FLOOD = {"lines_per_second": 20, "burst_lines": 3}


def test_a_flood_is_delayed_not_kicked_and_no_line_is_lost(three):
    server, address = three(flood=FLOOD)
    person = named(server, "person")
    irc = IrcClient(address)
    irc.register("flooder")
    expect_exact(person, "*** flooder joined #lobby")
    irc.send(*[f"PRIVMSG #lobby :line {n:03d}" for n in range(60)])
    notice = irc.expect("NOTICE")
    assert notice.params[-1].startswith(FLOOD_NOTICE), notice
    for n in range(60):
        person.expect_line(f"<flooder> line {n:03d}")
    assert fence(irc) == []  # still connected, nothing else said


def test_a_ping_flood_is_a_flood_delayed_in_order(three):
    _, address = three(flood=FLOOD)
    irc = IrcClient(address)
    irc.register("pinger")
    irc.send(*[f"PING :p{n}" for n in range(30)])
    seen = irc.until("NOTICE")
    assert seen[-1].params[-1].startswith(FLOOD_NOTICE)
    assert len(said(seen, "PONG")) <= FLOOD["burst_lines"]
    pongs = said(seen, "PONG") + [irc.expect("PONG") for _ in range(30 - len(said(seen, "PONG")))]
    assert [m.params[-1] for m in pongs] == [f"p{n}" for n in range(30)]


@pytest.mark.parametrize(("line", "answer"), [
    ("CAP LS 302", "CAP"),
    ("CAP REQ :server-time", "CAP"),
    ("USER a 0 * :again", "462"),
    ("AUTHENTICATE PLAIN", "904"),
    ("PRIVMSG #lobby :\x00", "400"),
    ("PRIVMSG #lobby :" + "x" * 600, "417"),
])
def test_what_the_irc_layer_answers_itself_is_held_to_the_flood_gate(three, line, answer):
    """A line answered by the IRC layer (not the chat) costs what any line costs: a
    storm of ``CAP LS`` or of malformed lines is delayed like a PING flood, in order."""
    _, address = three(flood=FLOOD)
    irc = IrcClient(address)
    irc.register("stormer")
    irc.send_raw((line.encode() + b"\r\n") * 30)
    seen = irc.until("NOTICE")
    assert seen[-1].params[-1].startswith(FLOOD_NOTICE), seen[-1]
    before = len(said(seen, answer))
    assert before <= FLOOD["burst_lines"], before
    for _ in range(30 - before):
        irc.expect(answer)
    assert fence(irc) == []


#: One read pass of 8 KiB, a 1 KiB backlog: the most delayed input chatd keeps is small,
#: so a read whose requests weigh more than its bytes shows at once.
ONE_READ = {"recvq_max_bytes": 1024, "read_budget_bytes": 8192, "max_line_bytes": 256}


def test_a_ping_flood_in_one_read_is_delayed_not_kicked(three):
    """Each ``PING :n`` (10 bytes) is answered by a longer ``PONG``: a read of them
    weighs more in the flood gate than it took on the wire, which must not make the
    gate's backlog limit a kick."""
    _, address = three(flood={"lines_per_second": 1000, "burst_lines": 10}, limits=ONE_READ)
    irc = IrcClient(address)
    irc.register("pinger")
    irc.send(*[f"PING :{n:04d}" for n in range(800)])  # 8 KB: one read
    pongs = [m.params[-1] for m in irc.until("NOTICE") if m.command == "PONG"]
    while len(pongs) < 800:
        message = irc.recv()
        assert message is not None and message.command == "PONG", irc.seen[-3:]
        pongs.append(message.params[-1])
    assert pongs == [f"{n:04d}" for n in range(800)]


def test_a_paste_to_four_channels_in_one_read_is_delayed_not_kicked(three):
    server, address = three(flood={"lines_per_second": 1000, "burst_lines": 10}, limits=ONE_READ)
    person = named(server, "person")
    irc = IrcClient(address)
    irc.register("paster")
    irc.send("JOIN #a,#b,#c")
    for _ in range(3):
        irc.until("366")
    expect_exact(person, "*** paster joined #lobby")
    text = "m" * 470
    irc.send(*[f"PRIVMSG #lobby,#a,#b,#c :{n:02d} {text}" for n in range(16)])  # 8 KB, x4
    for n in range(16):
        person.expect_line(f"<paster> {n:02d} {text}")
    told = fence(irc)  # still connected; told once that its lines wait
    assert [m.params[-1][:len(FLOOD_NOTICE)] for m in told] == [FLOOD_NOTICE], told


def _answer_pings(irc: IrcClient) -> None:
    """Read what ``irc`` was sent (it is readable) and answer each PING, as a live client."""
    data = irc.sock.recv(65536)
    assert data, f"closed; seen {irc.seen[-3:]}"
    irc.buffer += data
    while b"\n" in irc.buffer:
        message = irc.recv()
        if message is not None and message.command == "PING":
            irc.send(f"PONG :{message.params[-1]}")


def test_a_client_held_by_the_flood_gate_is_not_cut_for_ping_timeout(three):
    """Reading a flooder is held (its sender waits, TCP): its PONG waits in the kernel
    with the rest, so the server's keepalive must not take the silence it made for a
    dead client."""
    server, address = three(flood=FLOOD, limits={"recvq_max_bytes": 1024},
                            irc={"ping_seconds": 0.2, "ping_timeout_seconds": 0.2})
    person = named(server, "person")
    irc = IrcClient(address)
    irc.register("flooder")
    expect_exact(person, "*** flooder joined #lobby")
    irc.send(*[f"PRIVMSG #lobby :line {n:03d} " + "y" * 40 for n in range(40)])  # ~2 s held
    got: list[str] = []
    while len(got) < 40:  # the room's lines, answering the server's PINGs meanwhile
        readable, _, _ = select.select([person.sock, irc.sock], [], [], 5)
        assert readable, f"nothing for 5 s; got {got[-3:]}"
        if irc.sock in readable:
            _answer_pings(irc)
        if person.sock in readable:
            person._fill(time.monotonic() + 1)
            while (line := person._pop_line()) is not None:
                got.append(line)
    assert got == [f"<flooder> line {n:03d} " + "y" * 40 for n in range(40)]
    irc.send("PRIVMSG #lobby :done")
    person.expect_line("<flooder> done")


# -- 417: the boundary in bytes, with multi-byte text and tags ------------------------------------


def test_417_counts_bytes_at_a_multibyte_boundary_and_tags_apart(three):
    server, address = three()
    person = named(server, "person")
    irc = IrcClient(address)
    irc.register("longer")
    head = "PRIVMSG #lobby :"
    text = "\u00e9" * ((BODY_MAX - 2 - len(head)) // 2)  # 2 bytes each: 510 bytes in all
    assert len((head + text).encode()) == BODY_MAX - 2
    irc.send(head + text)
    expect_exact(person, f"<longer> {text}")  # whole, never cut
    irc.send(head + text[:-1] + "\u20ac")  # a 3-byte last character: 511 bytes
    assert irc.expect("417").params == ("longer", "Input line was too long")
    tags = "@+x=" + "t" * (TAGS_MAX - 5)  # with its '@' and its space: 8191 bytes
    irc.send(f"{tags} {head}{text}")
    person.expect_line(f"<longer> {text}")
    irc.send(f"{tags}t PING :over")  # one tag byte over, however short the rest
    assert irc.expect("417").params[0] == "longer"
    assert said(fence(irc), "PONG") == []


# -- per-address limits and the output limit on an IRC listener ------------------------------------


def test_per_address_limits_say_error_on_an_irc_listener(three):
    _, address = three(per_ip={"max_connections": 2})
    first, second = IrcClient(address), IrcClient(address)
    first.register("one")
    second.register("two")
    third = IrcClient(address)
    assert [m.command for m in third.expect_eof()] == ["ERROR"]
    _, address = three(per_ip={"max_unregistered": 2})
    half = [IrcClient(address) for _ in range(2)]
    for n, irc in enumerate(half):
        irc.send(f"NICK half{n}")  # never USER: still unregistered
    refused = IrcClient(address).expect_eof()
    assert [m.command for m in refused] == ["ERROR"], refused
    _, address = three(per_ip={"connect_rate": 1})
    IrcClient(address).register("once")
    refused = IrcClient(address).expect_eof()
    assert [m.command for m in refused] == ["ERROR"]
    assert "connection attempts" in refused[0].params[0]


def test_a_slow_irc_reader_is_cut_and_the_others_lose_nothing(three):
    server, address = three(limits={"output_soft_bytes": 16 * 1024, "output_soft_seconds": 0.5},
                            net={"sndbuf_bytes": 4096})
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    slow.settimeout(5)
    slow.connect(address)
    slow.sendall(b"NICK slow\r\nUSER slow 0 * :never reads\r\n")
    watcher = IrcClient(address)
    watcher.register("watcher")
    talker = named(server, "talker")
    text = "z" * 300
    for n in range(300):  # 90 KB: past the soft limit and both kernel buffers
        talker.send(f"{n} {text}")
    quit_seen = watcher.expect("QUIT")  # cut by the sweep, output_soft_seconds later
    assert quit_seen is not None and quit_seen.source.startswith("slow!"), watcher.seen[-3:]
    assert "output" in quit_seen.params[-1] or "slow" in quit_seen.params[-1], quit_seen
    while len(said(watcher.seen)) < 300:
        watcher.expect("PRIVMSG")
    texts = [m.params[-1] for m in said(watcher.seen)]
    assert texts == [f"{n} {text}" for n in range(300)]  # every line, in order
    slow.close()


# -- SASL against /identify --------------------------------------------------------------------


def test_sasl_racing_identify_for_one_account_both_win_and_neither_takes_the_others_nick(three):
    """Both logins win, in either order; the nick goes to whichever session holds it
    first: SASL's session begun first keeps alice (the /identify is told it is in use);
    the /identify done first renames yves to alice and the SASL client's ``NICK alice``
    is refused with 433 at CAP END (it picks another).  Neither renames the other."""
    server, address = three()
    registered(server, "alice")
    other = named(server, "yves")
    irc = IrcClient(address)
    token = base64.b64encode(f"alice\0alice\0{PASSWORD}".encode()).decode()
    irc.send("CAP LS 302", "CAP REQ :sasl", "NICK alice", "USER a 0 * :A",
             "AUTHENTICATE PLAIN", f"AUTHENTICATE {token}", "CAP END")
    other.send(f"/identify alice {PASSWORD}")
    assert irc.expect("903")
    other.expect("you are identified as alice")
    answer = irc.until("001", "433")[-1]
    if answer.command == "433":  # the /identify came first: yves is alice now
        assert answer.params[1] == "alice", answer
        irc.send("NICK alice_")
        assert irc.expect("001").params[0] == "alice_"
        nicks = ("alice", "alice_")
    else:
        assert answer.params[0] == "alice", answer
        nicks = ("alice", "yves")
    for nick in nicks:  # both identified, each under its own nick
        irc.send(f"WHOIS {nick}")
        assert irc.expect("330").params[1:3] == (nick, "alice")


# -- ERROR before every close the server decides ------------------------------------------------


def test_a_kill_failed_logins_and_an_unfinished_line_each_end_with_error(three):
    server, address = three(limits={"partial_line_timeout_seconds": 0.5},
                            plugins={"oper": {"password": "oper-secret-1"},
                                     "history": {"replay_lines": 0}})
    registered(server, "alice")
    victim = IrcClient(address)
    victim.register("victim")
    oper = IrcClient(address)
    oper.register("oper")
    oper.send("OPER oper oper-secret-1", "KILL victim :bye now")
    rest = victim.expect_eof()
    assert rest[-1].command == "ERROR" and "killed by oper: bye now" in rest[-1].params[0], rest
    guesser = IrcClient(address)
    guesser.register("guesser")
    guesser.send(*[f"IDENTIFY alice wrong-guess-{n}" for n in range(5)])
    rest = guesser.expect_eof()
    assert rest[-1].command == "ERROR" and "failed password" in rest[-1].params[0], rest
    partial = IrcClient(address)
    partial.register("partial")
    partial.send_raw(b"PRIVMSG #lobby :no line end")
    rest = partial.expect_eof()
    assert rest[-1].command == "ERROR" and "unfinished line" in rest[-1].params[0], rest


# -- in-process: what one read of a flood holds ---------------------------------------------------


def test_a_motd_flood_in_one_read_shares_one_answer():
    """``MOTD`` is 6 bytes and its answer the whole MOTD (up to 64 KiB of ``motd_file``):
    the answers of one read are one object, read and encoded once, or a read of
    ``MOTD`` lines held in the flood gate would hold a copy of the MOTD per line."""
    proto = IrcProtocol(MemoryTransport(("127.0.0.1", 40000)), PlainDoor())
    proto.state.nick = "reader"
    answers = proto.parse(["MOTD"] * 100)
    assert len(answers) == 100 and len({id(answer) for answer in answers}) == 1
    assert answers[0].payload.startswith(b":chatd.local 422 reader ")


def test_requests_that_come_while_reading_is_held_past_the_hard_backlog_end_with_error():
    """The hard backlog is a guard (reading is held: nothing should come); should lines
    come all the same, the IRC client is cut with ``ERROR`` before the close."""
    with InProcessChat(fake_clock=True, flood={"lines_per_second": 1, "burst_lines": 1},
                       limits={"recvq_max_bytes": 1024}) as chat:
        irc = chat.connect("irc", request=SessionRequest(nick="holder", nick_required=True))
        irc.send(b"".join(b"PRIVMSG #lobby :%04d %s\r\n" % (n, b"h" * 100) for n in range(12)))
        assert irc.transport.reading_held and irc.connected  # held: delayed, not cut
        limits = chat.config.limits
        lines = (limits.read_budget_bytes + limits.max_line_bytes) // 100 + 1
        irc.send(b"".join(b"PRIVMSG #lobby :%s\r\n" % (b"x" * 100) for _ in range(lines)))
        said = bytes(irc.transport.output).decode().split("\r\n")
        assert said[-2] == "ERROR :Closing link: excess flood", said[-4:]
        assert not irc.connected
