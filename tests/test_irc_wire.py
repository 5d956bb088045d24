"""The IRC message grammar (chatd/protocols/irc/wire.py): parsing what clients send,
checking what chatd sends (strict), and writing messages that parse back as they were."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatd.protocols.irc.wire import (
    BODY_MAX,
    Message,
    WireError,
    body_length,
    format_message,
    parse,
    tags_length,
    unescape_tag_value,
)

# -- examples from the specifications ---------------------------------------------------------


def test_the_modern_irc_examples_parse():
    m = parse(":irc.example.com CAP LS * :multi-prefix extended-join sasl", strict=True)
    assert m == Message("CAP", ("LS", "*", "multi-prefix extended-join sasl"),
                        "irc.example.com")
    m = parse("@id=234AB :dan!d@localhost PRIVMSG #chan :Hey what's up!", strict=True)
    assert m.tags == {"id": "234AB"} and m.source == "dan!d@localhost"
    assert m.params == ("#chan", "Hey what's up!")
    assert parse("CAP REQ :sasl").params == ("REQ", "sasl")
    assert parse("PING").params == ()
    assert parse("NICK :").params == ("",)  # an empty trailing parameter is one


def test_tag_values_are_unescaped_and_a_client_tag_keeps_its_plus():
    m = parse(r"@+example.com/draft=a\:b\sc\\d\re\nf\x\ :n PRIVMSG #a :x")
    assert m.tags == {"+example.com/draft": "a;b c\\d\re\nfx"}
    assert unescape_tag_value("plain") == "plain"
    assert parse("@a;b=;c=1 PING").tags == {"a": "", "b": "", "c": "1"}


def test_a_client_may_send_runs_of_spaces_a_server_may_not():
    assert parse("PRIVMSG   #a   :hi").params == ("#a", "hi")
    assert parse("privmsg #a hi  ").command == "PRIVMSG"  # a client's command, any case
    for line in ("PRIVMSG  #a :hi", "PRIVMSG #a :hi" + "", "PING x "):
        if line.endswith(" ") or "  " in line:
            with pytest.raises(WireError):
                parse(line, strict=True)


@pytest.mark.parametrize("line, why", [
    ("", "not a command"),
    ("@ PING", "empty tag list"),
    ("@a=1", "ends after the tags"),
    (": PING", "empty source"),
    (":src", "ends after the source"),
    ("PRIV-MSG #a", "not a command"),
    ("1234 x", "not a command"),
    ("PING a\0b", "CR, LF or NUL"),
    ("PING a\rb", "CR, LF or NUL"),
    ("@k$y=1 PING", "not a tag key"),
    ("PING " + " ".join("p" * 16), "at most 15"),
])
def test_what_is_not_a_message_is_refused_with_a_reason(line, why):
    with pytest.raises(WireError, match=why):
        parse(line)


def test_writing_refuses_what_would_change_the_message():
    with pytest.raises(WireError, match="CR, LF or NUL"):
        Message("PRIVMSG", ("#a", "hi\r\nQUIT :gotcha")).encode()
    with pytest.raises(WireError, match="middle parameter"):
        Message("PRIVMSG", ("#a b", "hi")).encode()
    with pytest.raises(WireError, match="middle parameter"):
        Message("PRIVMSG", (":#a", "hi")).encode()
    with pytest.raises(WireError, match="not a source"):
        Message("PRIVMSG", ("#a", "hi"), "a b").encode()
    with pytest.raises(WireError, match="not a command"):
        Message("PRIV MSG", ()).encode()
    with pytest.raises(WireError, match="NUL"):
        Message("PING", (), None, {"a": "x\0"}).encode()


def test_the_last_parameter_gets_its_colon_only_when_it_needs_one():
    assert Message("NICK", ("alice",)).encode() == b"NICK alice\r\n"
    assert Message("PRIVMSG", ("#a", "hi there")).encode() == b"PRIVMSG #a :hi there\r\n"
    assert Message("PRIVMSG", ("#a", ":)")).encode() == b"PRIVMSG #a ::)\r\n"
    assert Message("TOPIC", ("#a", "")).encode() == b"TOPIC #a :\r\n"


def test_lengths_count_bytes_of_the_body_and_of_the_tags_apart():
    m = Message("PRIVMSG", ("#a", "é" * 10), "n!u@h", {"time": "2026-12-07T00:00:00.000Z"})
    assert body_length(m) == len(b":n!u@h PRIVMSG #a ") + 20 + 2  # no space: no colon
    assert tags_length(m) == len("@time=2026-12-07T00:00:00.000Z ")
    assert body_length(Message("PING", ("x" * 600,))) > BODY_MAX


# -- round trips -----------------------------------------------------------------------------

_TEXT = st.text(st.characters(blacklist_characters="\r\n\0", blacklist_categories=("Cs",)))
_WORD = _TEXT.filter(lambda s: s and " " not in s and not s.startswith(":"))
_KEY = st.from_regex(r"\+?([a-z0-9.-]+/)?[A-Za-z0-9-]+", fullmatch=True)
_TAG_VALUE = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)))


@st.composite
def messages(draw: st.DrawFn) -> Message:
    middles = draw(st.lists(_WORD, max_size=14))
    last = draw(st.one_of(st.none(), _TEXT))
    params = tuple(middles) + (() if last is None else (last,))
    command = draw(st.one_of(st.from_regex(r"[A-Z]+", fullmatch=True),
                             st.from_regex(r"[0-9]{3}", fullmatch=True)))
    source = draw(st.one_of(st.none(), _WORD.filter(lambda s: not s.startswith("@"))))
    tags = draw(st.dictionaries(_KEY, _TAG_VALUE, max_size=4))
    return Message(command, params, source, tags)


@given(messages())
def test_every_message_written_parses_back_strictly_as_itself(message):
    line = message.encode()
    assert line.endswith(b"\r\n") and b"\r" not in line[:-2] and b"\n" not in line[:-2]
    assert parse(line[:-2].decode("utf-8"), strict=True) == message


@given(st.text(max_size=200))
def test_parsing_any_text_is_a_message_or_a_wire_error(text):
    try:
        message = parse(text)
    except WireError:
        return
    # What parses can be written again, and means the same.
    assert parse(format_message(message)) == message
