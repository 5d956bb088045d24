"""The user contract (DESIGN.md section 1), end to end: a real chatd, real sockets.

Each test starts its own ``chatd`` subprocess through the ``chatd_server``
fixture and talks to it the way ``nc`` would.  Every read has a timeout.
Where a line must *not* arrive, the tests prefer a sentinel (send something
afterwards and require it to be the very next line) over waiting, and use
``expect_nothing`` only where no sentinel exists (the sender's own echo).
"""

from __future__ import annotations

import re
import socket
import time

from chatd.testing import ChatClient, ServerProcess

WELCOME = "*** Welcome to chatd, {nick}. You are in #lobby. Type /help for commands."

#: Bytes that must never reach a terminal: C0 except LF, and DEL (0x0A = "\n" frames lines).
FORBIDDEN_BYTES = set(range(0x00, 0x09)) | set(range(0x0B, 0x20)) | {0x7F}
#: Code points that must never reach a terminal: C1 controls and bidi embeddings/overrides.
FORBIDDEN_CODE_POINTS = {chr(c) for c in range(0x80, 0xA0)} | {
    chr(c) for c in range(0x202A, 0x202F)
}

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # 👨‍👩‍👧, a ZWJ sequence


# -- helpers --------------------------------------------------------------------


class RawReader:
    """A bare socket that keeps exactly the bytes chatd sent (no decoding, no framing)."""

    def __init__(self, address: tuple[str, int], timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.timeout = timeout
        self.data = bytearray()

    def read_until(self, marker: bytes, timeout: float | None = None) -> bytes:
        """Read until ``marker`` is in the bytes received; return all bytes so far."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while marker not in self.data:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"never received {marker!r}; got {bytes(self.data)[-300:]!r}"
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            assert chunk, f"connection closed before {marker!r}; got {bytes(self.data)!r}"
            self.data += chunk
        return bytes(self.data)

    def close(self) -> None:
        self.sock.close()


def named(server: ServerProcess, nick: str, *watchers: ChatClient) -> ChatClient:
    """Connect a client and rename it to ``nick``; ``watchers`` consume the notices."""
    client = server.client()
    for watcher in watchers:
        watcher.expect_line(f"*** {client.nick} joined #lobby")
    old = client.nick
    client.send(f"/nick {nick}")
    client.expect_line(f"*** {old} is now known as {nick}")
    for watcher in watchers:
        watcher.expect_line(f"*** {old} is now known as {nick}")
    client.nick = nick
    return client


def sync(client: ChatClient) -> None:
    """Round-trip through the server and require its reply to be the very next line.

    Proves nothing else (an error, a stray notice) was queued for ``client`` before it.
    """
    client.send("/who #lobby")
    line = client.recv_line()
    assert line.startswith("*** #lobby has "), f"expected the /who reply first, got {line!r}"


def check_clean(raw: bytes) -> str:
    """Assert ``raw`` (what a terminal would get) is safe; return it decoded."""
    text = raw.decode("utf-8")  # strict: chatd must never send invalid UTF-8
    bad = sorted({b for b in raw if b in FORBIDDEN_BYTES})
    assert not bad, f"control bytes {[hex(b) for b in bad]} reached the client: {raw!r}"
    found = sorted({c for c in text if c in FORBIDDEN_CODE_POINTS})
    assert not found, f"code points {[f'U+{ord(c):04X}' for c in found]} reached the client"
    return text


# -- connecting -----------------------------------------------------------------


def test_welcome_lines_unique_guest_nicks_and_join_notice(chatd_server):
    server = chatd_server()
    first = server.client(welcome=False)
    first.expect_line(WELCOME.format(nick="guest-1"))
    second = server.client(welcome=False)
    second.expect_line(WELCOME.format(nick="guest-2"))
    first.expect_line("*** guest-2 joined #lobby")
    third = server.client()
    assert third.nick == "guest-3"
    first.expect_line("*** guest-3 joined #lobby")
    second.expect_line("*** guest-3 joined #lobby")
    # The newcomer is not told about its own join, and the room lists all three.
    third.send("/who")
    third.expect_line("*** #lobby has 3 members: guest-1, guest-2, guest-3")


# -- plain lines ----------------------------------------------------------------


def test_plain_line_goes_to_the_others_and_is_not_echoed(chatd_server):
    server = chatd_server()
    alice = named(server, "alice")
    bob = named(server, "bob", alice)
    carol = named(server, "carol", alice, bob)
    alice.send("hello everyone")
    bob.expect_line("<alice> hello everyone")
    carol.expect_line("<alice> hello everyone")
    alice.expect_nothing(0.3)
    bob.send("hi alice")
    alice.expect_line("<bob> hi alice")
    carol.expect_line("<bob> hi alice")
    bob.expect_nothing(0.2)


def test_double_slash_sends_a_literal_slash_line(chatd_server):
    server = chatd_server()
    alice = named(server, "alice")
    bob = named(server, "bob", alice)
    alice.send("//text with a slash")
    bob.expect_line("<alice> /text with a slash")
    alice.send("//nick mallory")  # not a command: the nick stays
    bob.expect_line("<alice> /nick mallory")
    alice.expect_nothing(0.2)


def test_crlf_lines_arrive_without_carriage_returns(chatd_server):
    server = chatd_server()
    bob = RawReader(server.address)
    try:
        bob.read_until(b"Type /help for commands.\n")
        alice = server.client()
        bob.read_until(f"*** {alice.nick} joined #lobby\n".encode())
        start = len(bob.data)
        alice.send_raw(b"hi\r\n")
        alice.send_raw(b"split crlf\r")
        time.sleep(0.05)
        alice.send_raw(b"\n")
        alice.send_raw(b"END\n")
        raw = bob.read_until(f"<{alice.nick}> END\n".encode())[start:]
    finally:
        bob.close()
    assert b"\r" not in raw
    assert raw == (f"<{alice.nick}> hi\n<{alice.nick}> split crlf\n<{alice.nick}> END\n".encode())


def test_empty_and_blank_lines_are_ignored(chatd_server):
    server = chatd_server()
    alice = server.client()
    bob = server.client()
    alice.expect_line(f"*** {bob.nick} joined #lobby")
    for blank in (b"\n", b"\r\n", b"   \n", b"\t\t\n", b" \t \r\n", b"\x1b[2J\n", b"\x07\n"):
        bob.send_raw(blank)
    bob.send("after the blanks")
    # The very next line alice gets is the real message: nothing was delivered before it.
    alice.expect_line(f"<{bob.nick}> after the blanks")
    # And bob got no error for them either.
    sync(bob)


def test_invalid_utf8_is_replaced_and_the_connection_stays_usable(chatd_server):
    server = chatd_server()
    bob = RawReader(server.address)
    try:
        bob.read_until(b"Type /help for commands.\n")
        alice = server.client()
        bob.read_until(f"*** {alice.nick} joined #lobby\n".encode())
        start = len(bob.data)
        # 0xFE, then 0xFF not followed by a telnet command byte: both invalid UTF-8.
        alice.send_raw(b"\xfe\xffbad\n")
        alice.send_raw(b"half \xc4")  # "ě" split across two segments
        time.sleep(0.05)
        alice.send_raw(b"\x9b whole\n")
        alice.send_raw(b"lone \x80 and truncated \xe2\x82\n")
        alice.send("still here")
        raw = bob.read_until(f"<{alice.nick}> still here\n".encode())[start:]
        # The sender is not punished for it: no error, and commands still work.
        alice.send("/who")
        alice.expect_line(f"*** #lobby has 2 members: guest-1, {alice.nick}")
    finally:
        bob.close()
    lines = check_clean(raw).split("\n")
    assert lines[-1] == ""
    nick = re.escape(alice.nick)
    assert re.fullmatch(rf"<{nick}> \ufffd+bad", lines[0]), lines[0]
    assert lines[1] == f"<{alice.nick}> half ě whole"
    assert re.fullmatch(rf"<{nick}> lone \ufffd+ and truncated \ufffd+", lines[2]), lines[2]
    assert lines[3:] == [f"<{alice.nick}> still here", ""]


def test_escape_sequences_and_controls_never_reach_a_terminal(chatd_server):
    server = chatd_server()
    bob = RawReader(server.address)
    cases: list[tuple[bytes, str | None]] = [
        (b"a\x1b[2Jb", "ab"),  # clear screen
        (b"t\x1b]0;pwned\x07u", "tu"),  # set the window title
        (b"c\x1b]52;c;cGF5bG9hZA==\x07d", "cd"),  # write the clipboard
        (b"x\x1b[31mred\x1b[0my", "xredy"),  # colours
        (b"g\x07h\x08i\x7fj", "gj"),  # BEL removed; BS and DEL erase the character before
        (b"q\x00r\x01s\x1ft\x0bu\x0cv", "qrstuv"),  # other C0
        (b"w\tx", "w x"),  # tab becomes a space
        ("k\u202al\u202bm\u202cn\u202do\u202ep".encode(), "klmnop"),  # bidi controls
        ("evil\u202etxt.exe".encode(), "eviltxt.exe"),  # Trojan Source / RLO
        (f"ě {FAMILY} ok".encode(), f"ě {FAMILY} ok"),  # real text survives intact
        (b"C1 \xc2\x9b2J done", None),  # C1 CSI (U+009B), checked below
        (b"C1 \xc2\x9d0;title\xc2\x9c done", None),  # C1 OSC ... ST
        (b"hi\r<admin> you are banned", None),  # a bare CR cannot start a fake line
    ]
    try:
        bob.read_until(b"Type /help for commands.\n")
        alice = server.client()
        bob.read_until(f"*** {alice.nick} joined #lobby\n".encode())
        start = len(bob.data)
        for payload, _ in cases:
            alice.send_raw(payload + b"\n")
        alice.send("END")
        raw = bob.read_until(f"<{alice.nick}> END\n".encode())[start:]
    finally:
        bob.close()
    text = check_clean(raw)
    assert FAMILY in text and "ě" in text
    lines = text.split("\n")
    assert lines[-2:] == [f"<{alice.nick}> END", ""], lines
    lines = lines[:-2]
    assert len(lines) == len(cases), f"one line per message expected, got {lines}"
    prefix = f"<{alice.nick}> "
    for (payload, expected), line in zip(cases, lines, strict=True):
        assert line.startswith(prefix), (payload, line)
        if expected is not None:
            assert line == prefix + expected, (payload, line)
    c1_csi, c1_osc, fake = lines[-3:]
    assert c1_csi.startswith(prefix + "C1 ") and c1_csi.endswith("done"), c1_csi
    assert c1_osc.startswith(prefix + "C1 ") and c1_osc.endswith("done"), c1_osc
    assert "title" not in c1_osc, c1_osc
    assert fake.startswith(prefix + "hi") and fake.endswith("<admin> you are banned"), fake


def test_overlong_line_is_refused_and_the_connection_kept(chatd_server):
    server = chatd_server(limits={"max_line_bytes": 64})
    alice = server.client()
    bob = server.client()
    alice.expect_line(f"*** {bob.nick} joined #lobby")
    refused = r"^! line too long \(max 64 bytes\)"
    # One chunk.
    bob.send("x" * 65)
    bob.expect(refused, timeout=2)
    # Many chunks, far past the limit: still exactly one error.
    bob.send_raw(b"y" * 100)
    time.sleep(0.05)
    bob.send_raw(b"y" * 100)
    time.sleep(0.05)
    bob.send_raw(b"y" * 100 + b"\n")
    bob.expect(refused, timeout=2)
    # The limit counts bytes, not characters: 33 x "ě" is 66 bytes.
    bob.send("ě" * 33)
    bob.expect(refused, timeout=2)
    bob.expect_nothing(0.2)  # no second error for any of them
    # Exactly at the limit is fine, with "\n" or "\r\n" (the ending does not count).
    bob.send("z" * 64)
    bob.send_raw(b"w" * 64 + b"\r\n")
    bob.send("ě" * 32)
    bob.send("next line works")
    # Nothing of the refused lines was delivered: these are alice's very next lines.
    alice.expect_line(f"<{bob.nick}> {'z' * 64}")
    alice.expect_line(f"<{bob.nick}> {'w' * 64}")
    alice.expect_line(f"<{bob.nick}> {'ě' * 32}")
    alice.expect_line(f"<{bob.nick}> next line works")


# -- commands ---------------------------------------------------------------------


def test_unknown_command(chatd_server):
    server = chatd_server()
    alice = server.client()
    bob = server.client()
    alice.expect_line(f"*** {bob.nick} joined #lobby")
    bob.send("/frobnicate now")
    bob.expect_line("! unknown command /frobnicate — try /help")
    bob.send("plain")
    alice.expect_line(f"<{bob.nick}> plain")  # the command was not delivered as text


def test_help_lists_every_command_grouped_by_plugin(chatd_server):
    server = chatd_server()
    alice = server.client()
    alice.send("/help")
    alice.send("/who")  # sentinel: the /help output ends before its reply
    lines = []
    while not (line := alice.recv_line()).startswith("*** #lobby has "):
        lines.append(line)
    assert lines[0].startswith("*** Commands"), lines
    groups: dict[str, list[str]] = {}
    current = None
    for line in lines[1:]:
        header = re.fullmatch(r"\*\*\* \[(\S+)\]", line)
        if header:
            current = header.group(1)
            groups[current] = []
            continue
        entry = re.fullmatch(r"\*\*\*   /(\S+).*\S", line)
        assert entry and current is not None, f"unexpected /help line {line!r}"
        groups[current].append(entry.group(1))
    assert sorted(groups["commands"]) == ["help", "me", "msg", "nick", "notice", "quit"], groups
    rooms = ["join", "names", "part", "partall", "rooms", "switch", "topic", "who"]
    assert sorted(groups["rooms"]) == rooms, groups

    alice.send("/help msg")
    alice.expect_line("*** /msg NICK text — send a private message")
    alice.send("/help /join")
    alice.expect_line("*** /join #room — join a room (created if new) and talk there")
    alice.expect(r"^\*\*\*   Joins #room")  # the long help follows, indented
    alice.send("/help nosuch")
    alice.expect(r"^! no such command /nosuch — try /help$")


def test_nick_change_is_announced_to_self_and_others(chatd_server):
    server = chatd_server()
    alice = server.client()
    bob = server.client()
    alice.expect_line(f"*** {bob.nick} joined #lobby")
    old = alice.nick
    alice.send("/nick alice")
    alice.expect_line(f"*** {old} is now known as alice")
    bob.expect_line(f"*** {old} is now known as alice")
    alice.send("hello")
    bob.expect_line("<alice> hello")
    # Someone who shares two rooms with alice is told once; someone in no room with
    # her is not told at all.
    carol = server.client()
    alice.expect_line(f"*** {carol.nick} joined #lobby")
    bob.expect_line(f"*** {carol.nick} joined #lobby")
    alice.send("/join #dev")
    alice.expect_line("*** alice joined #dev")
    alice.expect_line("*** you are the first in #dev")
    bob.send("/join #dev")
    bob.expect_line(f"*** {bob.nick} joined #dev")
    bob.expect_line("*** also in #dev: alice")
    alice.expect_line(f"*** {bob.nick} joined #dev")
    carol.send("/join #elsewhere")
    carol.expect_line(f"*** {carol.nick} joined #elsewhere")
    carol.expect_line("*** you are the first in #elsewhere")
    carol.send("/part #lobby")
    carol.expect_line(f"*** {carol.nick} left #lobby")  # told, as the room is
    carol.expect_line("*** you are now talking in #elsewhere")
    # alice and bob talk in #dev now: #lobby's lines name their room.
    alice.expect_line(f"[#lobby] *** {carol.nick} left #lobby")
    bob.expect_line(f"[#lobby] *** {carol.nick} left #lobby")
    alice.send("/nick alice2")
    alice.expect_line("*** alice is now known as alice2")
    bob.expect_line("*** alice is now known as alice2")
    alice.send("/msg " + carol.nick + " ping")  # sentinel for carol
    carol.expect_line("*alice2* ping")
    bob.send("/msg alice2 ping")  # sentinel for bob: no second rename notice
    bob.expect_line("-> *alice2* ping")


def test_nick_rejections_leave_the_nick_unchanged(chatd_server):
    server = chatd_server()
    alice = named(server, "alice")
    bob = server.client()
    alice.expect_line(f"*** {bob.nick} joined #lobby")
    guest = bob.nick
    bad = [
        "Alice",  # taken, case-insensitively
        "ALICE",
        "-x",
        "1abc",
        "<admin>",
        "#chan",
        "*alice*",
        "a" * 33,
        "server",
        "Server",
        "guest-99",
        "nické",
    ]
    for nick in bad:
        bob.send(f"/nick {nick}")
        line = bob.recv_line()
        assert line.startswith("! "), f"/nick {nick!r} was not refused: {line!r}"
    bob.send("/nick a b")
    bob.expect_line("! usage: /nick NAME")
    bob.send("/nick")
    bob.expect_line("! usage: /nick NAME")
    bob.send("/nick Alice")
    bob.expect(r"^! .*taken")
    # Nothing was announced to alice; bob still speaks as the guest.
    bob.send("still me")
    alice.expect_line(f"<{guest}> still me")
    bob.send("/who")
    bob.expect_line(f"*** #lobby has 2 members: alice, {guest}")
    # A nick of exactly 32 bytes is fine.
    long_nick = "b" * 32
    bob.send(f"/nick {long_nick}")
    bob.expect_line(f"*** {guest} is now known as {long_nick}")
    alice.expect_line(f"*** {guest} is now known as {long_nick}")


def test_join_part_rooms_who(chatd_server):
    server = chatd_server()
    alice = named(server, "alice")
    bob = named(server, "bob", alice)
    carol = named(server, "carol", alice, bob)

    alice.send("/join #dev")
    alice.expect_line("*** alice joined #dev")
    alice.expect_line("*** you are the first in #dev")
    bob.send("/join dev")  # the "#" is optional
    bob.expect_line("*** bob joined #dev")
    bob.expect_line("*** also in #dev: alice")
    alice.expect_line("*** bob joined #dev")

    # #dev chatter stays in #dev.
    alice.send("dev talk")
    bob.expect_line("<alice> dev talk")
    carol.send("lobby talk")
    # alice and bob are still in #lobby too, but talk in #dev: the line names its room.
    alice.expect_line("[#lobby] <carol> lobby talk")
    bob.expect_line("[#lobby] <carol> lobby talk")
    alice.send("/me nods in dev")
    bob.expect_line("* alice nods in dev")
    sync(carol)  # carol got neither the join notices nor the #dev lines

    alice.send("/rooms")
    listing = alice.expect(r"^\*\*\* 2 rooms: (.*)$").group(1)
    assert "#dev (2) *" in listing, listing  # * marks the current room
    assert "#lobby (3)" in listing and "#lobby (3) *" not in listing, listing
    alice.send("/who")
    alice.expect_line("*** #dev has 2 members: alice, bob")
    alice.send("/who #lobby")
    alice.expect_line("*** #lobby has 3 members: alice, bob, carol")
    alice.send("/who #nosuch")
    alice.expect(r"^! .*#nosuch")
    alice.send("/join #bad$name")
    alice.expect(r"^! ")
    alice.send("/join")
    alice.expect_line("! usage: /join #room")

    # Parting #dev: the others there are told, and alice talks in #lobby again.
    alice.send("/part #dev")
    alice.expect_line("*** alice left #dev")
    alice.expect_line("*** you are now talking in #lobby")
    bob.expect_line("*** alice left #dev")
    alice.send("back in the lobby")
    bob.expect_line("[#lobby] <alice> back in the lobby")  # bob still talks in #dev
    carol.expect_line("<alice> back in the lobby")
    alice.send("/part #dev")
    alice.expect(r"^! .*#dev")
    # The last room cannot be left.
    alice.send("/part")
    alice.expect(r"^! ")
    alice.send("/who")
    alice.expect_line("*** #lobby has 3 members: alice, bob, carol")
    # /part with a reason, and the empty room disappears.
    bob.send("/part #dev see you")
    bob.expect_line("*** bob left #dev (see you)")
    bob.expect_line("*** you are now talking in #lobby")
    bob.send("/rooms")
    bob.expect(r"^\*\*\* 1 room: #lobby \(3\) \*")


def test_topic_set_and_show(chatd_server):
    server = chatd_server()
    alice = named(server, "alice")
    bob = named(server, "bob", alice)
    alice.send("/topic")
    alice.expect_line("*** #lobby has no topic")
    alice.send("/topic release planning")
    alice.expect_line("*** alice set the topic of #lobby to: release planning")
    bob.expect_line("*** alice set the topic of #lobby to: release planning")
    bob.send("/topic")
    bob.expect_line("*** topic of #lobby: release planning")
    bob.send("/who")
    bob.expect_line("*** #lobby has 2 members: alice, bob — topic: release planning")
    # A topic for another room, and joining it shows the topic.
    bob.send("/join #dev")
    bob.expect_line("*** bob joined #dev")
    bob.expect_line("*** you are the first in #dev")
    bob.send("/topic #dev ship it")
    bob.expect_line("*** bob set the topic of #dev to: ship it")
    sync(alice)  # alice (not in #dev) got nothing of it
    alice.send("/topic #dev")
    alice.expect_line("*** topic of #dev: ship it")
    alice.send("/topic #dev hijack")
    alice.expect(r"^! ")
    alice.send("/join #dev")
    alice.expect_line("*** alice joined #dev")
    alice.expect_line("*** topic of #dev: ship it")
    alice.expect_line("*** also in #dev: bob")


def test_private_message(chatd_server):
    server = chatd_server()
    alice = named(server, "alice")
    bob = named(server, "bob", alice)
    carol = named(server, "carol", alice, bob)
    alice.send("/msg bob psst")
    bob.expect_line("*alice* psst")
    alice.expect_line("-> *bob* psst")
    alice.send("/msg BOB case does not matter")
    bob.expect_line("*alice* case does not matter")
    alice.expect_line("-> *bob* case does not matter")
    alice.send("/msg nobody hello")
    alice.expect(r"^! no such nick")
    alice.send("/msg bob")
    alice.expect_line("! usage: /msg NICK text")
    # Private means private: carol's next line is the one meant for her.
    bob.send("/msg carol just you")
    carol.expect_line("*bob* just you")


def test_me_action(chatd_server):
    server = chatd_server()
    alice = named(server, "alice")
    bob = named(server, "bob", alice)
    alice.send("/me waves")
    bob.expect_line("* alice waves")
    alice.expect_nothing(0.2)
    alice.send("/me")
    alice.expect_line("! usage: /me action")


def test_quit_says_goodbye_before_closing_and_tells_the_others(chatd_server):
    server = chatd_server()
    alice = named(server, "alice")
    bob = named(server, "bob", alice)
    carol = named(server, "carol", alice, bob)
    alice.send("/quit bye")
    assert alice.expect_eof() == ["*** Goodbye."]
    bob.expect_line("*** alice quit (Quit: bye)")
    carol.expect_line("*** alice quit (Quit: bye)")
    bob.send("/quit")
    assert bob.expect_eof() == ["*** Goodbye."]
    carol.expect_line("*** bob quit (Quit)")
    # Their nicks are free again.
    carol.send("/nick alice")
    carol.expect_line("*** carol is now known as alice")
    carol.send("/who")
    carol.expect_line("*** #lobby has 1 member: alice")


def test_closing_the_socket_is_announced_once(chatd_server):
    server = chatd_server()
    alice = server.client()
    bob = server.client()
    alice.expect_line(f"*** {bob.nick} joined #lobby")
    # bob shares two rooms with alice: still one notice.
    alice.send("/join #dev")
    alice.expect_line(f"*** {alice.nick} joined #dev")
    alice.expect_line("*** you are the first in #dev")
    bob.send("/join #dev")
    bob.expect_line(f"*** {bob.nick} joined #dev")
    bob.expect_line(f"*** also in #dev: {alice.nick}")
    alice.expect_line(f"*** {bob.nick} joined #dev")
    sync(bob)  # bob has read everything, so closing sends a FIN (not an RST)
    bob.close()
    alice.expect_line(f"*** {bob.nick} quit (connection closed by peer)")
    alice.send("/who #lobby")
    alice.expect_line(f"*** #lobby has 1 member: {alice.nick}")
