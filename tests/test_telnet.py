"""telnet and terminal keys: negotiation stripped and answered, CR NUL, escape keys, backspace.

Sans-IO tests of chatd.protocols.telnet and the framer's input editing, then
the real ``telnet`` client driven through a pty (pexpect): line mode, Ctrl-C
(IAC IP + DO TIMING-MARK: the client must not go deaf), character mode, F1
and backspace.
"""

from __future__ import annotations

import shutil

import pexpect
import pytest

from chatd.framing import LineFramer, decode_line
from chatd.protocols.telnet import (
    AO,
    BRK,
    DO,
    DONT,
    IAC,
    SB,
    SE,
    SUSP,
    TIMING_MARK,
    WILL,
    WONT,
    TelnetFilter,
)
from chatd.testing import InProcessChat, skip_unless_ci

IP, AYT, NOP = 0xF4, 0xF6, 0xF1
MARK = bytes((IAC, DO, TIMING_MARK))  # what telnet sends after IP, AO and SUSP
ECHO, SGA, NAWS, LINEMODE = 1, 3, 31, 34


def feed_all(chunks):
    telnet = TelnetFilter()
    data, reply = b"", b""
    for chunk in chunks:
        d, r = telnet.feed(chunk)
        data += d
        reply += r
    return data, reply


# -- sans-IO ---------------------------------------------------------------------------


def test_ctrl_c_is_answered_with_a_timing_mark_and_leaves_nothing_in_the_text():
    ctrl_c = bytes((IAC, IP, IAC, DO, TIMING_MARK))
    data, reply = feed_all([b"before " + ctrl_c + b"after\r\n"])
    assert data == b"before after\r\n"
    assert reply == bytes((IAC, WILL, TIMING_MARK))


def test_options_are_refused_and_refusals_need_no_answer():
    stream = bytes((IAC, DO, ECHO, IAC, WILL, NAWS, IAC, WILL, LINEMODE, IAC, DO, SGA,
                    IAC, WONT, ECHO, IAC, DONT, SGA))
    data, reply = feed_all([stream])
    assert data == b""
    assert reply == bytes((IAC, WONT, ECHO, IAC, DONT, NAWS, IAC, DONT, LINEMODE,
                           IAC, WONT, SGA))


def test_subnegotiation_and_simple_commands_vanish_and_iac_iac_is_a_literal_byte():
    stream = (b"a" + bytes((IAC, SB, NAWS, 0, 80, 0, 24, IAC, SE)) + b"b"
              + bytes((IAC, AYT, IAC, NOP, IAC, IAC)) + b"c\n")
    data, reply = feed_all([stream])
    assert data == b"ab\xffc\n"
    assert reply == b""


def test_every_split_of_a_negotiation_gives_the_same_result():
    stream = (b"hi" + bytes((IAC, IP, IAC, DO, TIMING_MARK, IAC, SB, 24, 1, IAC, SE))
              + b"there\r\x00ok\r\x00")
    whole = feed_all([stream])
    for cut in range(len(stream) + 1):
        assert feed_all([stream[:cut], stream[cut:]]) == whole, cut
    assert whole[0] == b"hithere\r\nok\r\n"


def test_cr_nul_ends_a_line_like_cr_lf():
    framer = LineFramer()
    data, _ = feed_all([b"one\r", b"\x00two\r\x00"])
    assert framer.feed(data) == ["one", "two"]


def test_a_stray_0xff_is_data_not_a_command():
    data, reply = feed_all([b"caf\xff\n"])
    assert data == b"caf\xff\n" and reply == b""
    assert decode_line(data[:-1]) == "caf\ufffd"


# What Debian's telnet (inetutils, line mode, with or without -8) put on the wire for
# CJK text, recorded from the real client on a pty against a listening socket: a UTF-8
# continuation byte whose low 7 bits are a terminal key (^C, ^\\, ^O, ^Z) goes out as
# that key's telnet command (see chatd/protocols/telnet.py).
MANGLED = [
    ("日本語", b"\xe6\x97\xa5\xe6" + bytes((IAC, BRK)) + MARK + b"\xac\xe8\xaa\x9e"),
    ("ピザ", b"\xe3" + bytes((IAC, IP)) + MARK + b"\x94\xe3\x82\xb6"),
    ("\u33c1", b"\xe3" + bytes((IAC, AO)) + MARK + b"\x81"),  # E3 8F 81
    ("\u3681", b"\xe3" + bytes((IAC, SUSP)) + MARK + b"\x81"),  # E3 9A 81
]


@pytest.mark.parametrize(("text", "wire"), MANGLED, ids=["kanji-brk", "katakana-ip", "ao", "susp"])
def test_a_key_command_inside_a_utf8_sequence_is_the_byte_it_replaced(text, wire):
    stream = wire + b"\r\n"
    whole = feed_all([stream])
    assert whole == ((text + "\r\n").encode(), bytes((IAC, WILL, TIMING_MARK)))
    for cut in range(len(stream) + 1):
        assert feed_all([stream[:cut], stream[cut:]]) == whole, cut


def test_ctrl_c_between_characters_keeps_its_meaning():
    ctrl_c = bytes((IAC, IP)) + MARK
    data, reply = feed_all([ctrl_c + "日本".encode() + ctrl_c + "語".encode() + ctrl_c + b"\r\n"])
    assert data == "日本語\r\n".encode()  # three Ctrl-C, none inside a character
    assert reply == bytes((IAC, WILL, TIMING_MARK)) * 3


def test_a_mangled_character_split_across_reads_before_telnet_is_seen():
    """The first read has half a character and no telnet byte yet: the filter is made on
    the second, and still knows the character is unfinished."""
    with InProcessChat() as chat:
        alice, bob = chat.connect(), chat.connect()
        alice.lines(), bob.lines()
        alice.send("日".encode() + b"\xe6")
        alice.send(bytes((IAC, BRK)) + MARK + b"\xac\r\n")
        assert bob.lines() == ["<guest-1> 日本"]


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        (b"\x1bOPhello", "hello"),  # F1 (SS3 P): nothing left behind
        (b"\x1bOQ\x1bOR\x1bOShi", "hi"),  # F2-F4
        (b"\x1b[15~hi\x1b[24~", "hi"),  # F5, F12
        (b"\x1b[A\x1b[1;5Dhi", "hi"),  # up arrow, Ctrl-left
        (b"\xc2\x8fPhi", "hi"),  # 8-bit SS3 F1
        (b"\x1b]0;title\x07hi", "hi"),  # OSC
        (b"helo\x08\x08lo", "helo"),  # Ctrl-H erases
        (b"teh\x7f\x7fhe", "the"),  # DEL erases
        (b"\x08\x08x", "x"),  # nothing to erase
        (b"ab\x07\x08c", "ac"),  # an erase takes back a visible character, not the BEL
    ],
)
def test_terminal_keys_are_removed_whole_and_backspace_erases(typed, meant):
    assert decode_line(typed) == meant


def test_a_telnet_client_in_process_chats_and_is_answered():
    with InProcessChat() as chat:
        alice, bob = chat.connect(), chat.connect()
        alice.lines(), bob.lines()
        alice.send(bytes((IAC, DO, SGA)) + b"hello" + bytes((IAC, IP, IAC, DO, TIMING_MARK))
                   + b"\r\x00")
        assert bob.lines() == ["<guest-1> hello"]
        out = bytes(alice.transport.output)
        assert bytes((IAC, WONT, SGA)) in out and bytes((IAC, WILL, TIMING_MARK)) in out


# -- the real telnet client --------------------------------------------------------------


def _telnet(server):
    path = shutil.which("telnet")
    if path is None:
        skip_unless_ci("telnet is not installed (apt install telnet)")
    child = pexpect.spawn(path, ["127.0.0.1", str(server.port)], timeout=10, encoding="utf-8")
    child.expect(r"\*\*\* Welcome to chatd, (\S+)\.")
    return child, child.match.group(1)


def test_real_telnet_line_mode_and_ctrl_c_does_not_deafen_it(chatd_server):
    server = chatd_server()
    watcher = server.client()
    child, nick = _telnet(server)
    try:
        watcher.expect(rf"^\*\*\* {nick} joined #lobby$")
        child.sendline("hello from telnet")
        watcher.expect_line(f"<{nick}> hello from telnet")
        child.sendcontrol("c")  # telnet: IAC IP, IAC DO TIMING-MARK, then waits for the mark
        # telnet discards what arrives until the server's answer to its mark; a line
        # typed after Ctrl-C is behind the mark, so once it is relayed, so was the answer.
        child.sendline("after ctrl-c")
        watcher.expect_line(f"<{nick}> after ctrl-c")
        watcher.send("can you still hear me?")
        child.expect(rf"<{watcher.nick}> can you still hear me\?")
        child.sendline("yes")
        watcher.expect_line(f"<{nick}> yes")
        assert "\ufffd" not in "".join(watcher.history)  # no negotiation bytes shown
    finally:
        child.terminate(force=True)


def test_real_telnet_character_mode_f1_and_backspace(chatd_server):
    server = chatd_server()
    watcher = server.client()
    child, nick = _telnet(server)
    try:
        watcher.expect(rf"^\*\*\* {nick} joined #lobby$")
        child.sendcontrol("]")
        child.expect("telnet>")
        child.sendline("mode character")
        child.send("\x1bOP")  # F1
        child.send("helo")
        child.send("\x08\x08")  # Ctrl-H twice: "he"
        child.send("llo chars")
        child.send("\r")  # Enter: CR NUL in character mode
        watcher.expect_line(f"<{nick}> hello chars")
        watcher.send("reply")
        child.expect(rf"<{watcher.nick}> reply")
    finally:
        child.terminate(force=True)


def test_real_telnet_sends_cjk_text_whole_and_ctrl_c_still_works(chatd_server):
    """日本語 and ピザ through Debian's telnet arrive with IAC BRK / IAC IP in place of a
    byte (the table in chatd/protocols/telnet.py); the room reads the text as typed."""
    server = chatd_server()
    watcher = server.client()
    child, nick = _telnet(server)
    try:
        watcher.expect(rf"^\*\*\* {nick} joined #lobby$")
        child.sendline("日本語 ピザ 中文")
        watcher.expect_line(f"<{nick}> 日本語 ピザ 中文")
        child.sendcontrol("c")  # a real Ctrl-C, between characters: no byte, no deafness
        child.sendline("まだ聞こえる?")
        watcher.expect_line(f"<{nick}> まだ聞こえる?")
        watcher.send("はい")
        child.expect(rf"<{watcher.nick}> はい")
        assert "\ufffd" not in "".join(watcher.history)
    finally:
        child.terminate(force=True)
