"""The IRC renderer (chatd/protocols/irc/render.py) and the numerics table (numerics.py).

In-process: events and replies built as the chat domain builds them (the codec
tests' strategies for every kind, plus hostile fields a remote node could send),
rendered with every capability the renderer knows, and every byte parsed back
with the wire grammar's strict parser.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_codec import REPLY_CLASSES, events, replies

from chatd.delivery import Fanout
from chatd.events import (
    EVENT_TYPES,
    Action,
    Away,
    Error,
    Join,
    Message,
    NickChange,
    Notice,
    Part,
    PrivateMessage,
    Quit,
    Source,
    Topic,
)
from chatd.protocols.irc import numerics
from chatd.protocols.irc.render import IrcRenderer, renderer_for, split_text
from chatd.protocols.irc.wire import BODY_MAX, TAGS_MAX, parse
from chatd.protocols.irc.wire import Message as Line
from chatd.replies import (
    ERROR_CODES,
    AwayStatus,
    BanEntry,
    BanList,
    Help,
    HelpEntry,
    HistoryMarker,
    MemberEntry,
    Names,
    Online,
    OnlineEntry,
    RoomEntry,
    RoomList,
    RoomModes,
    RoomTopic,
    Whois,
)

ALL_CAPS = frozenset({
    "cap-notify", "message-tags", "server-time", "echo-message", "multi-prefix",
    "userhost-in-names", "away-notify", "account-tag", "extended-join", "invite-notify",
    "setname", "labeled-response", "batch", "draft/chathistory",
})
PLAIN = renderer_for(frozenset(), "irc.example")
FULL = renderer_for(ALL_CAPS, "irc.example")

BOB = Source("bob", 7, node="n1", ident="bob", host="abc.cloak", account="bob")
ME = Source("alice", 3, node="n1", ident="alice", host="def.cloak")
SERVER = Source("chatd", None, node="n1")
T = 1_796_119_200.25  # 2026-12-01T10:00:00.250Z


def lines_of(data: bytes) -> list[Line]:
    """Every message in ``data``, each checked as chatd must send it: CRLF-terminated
    UTF-8, strictly parsed, its body and its tags within IRC's limits."""
    assert data.endswith(b"\r\n"), data
    out = []
    for raw in data[:-2].split(b"\r\n"):
        assert b"\r" not in raw and b"\n" not in raw and b"\0" not in raw
        text = raw.decode("utf-8")  # strict: the renderer writes well-formed UTF-8
        message = parse(text, strict=True)
        body = raw.split(b" ", 1)[1] if raw.startswith(b"@") else raw
        assert len(body) + 2 <= BODY_MAX, (len(body), raw[:80])
        if raw.startswith(b"@"):
            assert len(raw.split(b" ", 1)[0]) + 1 <= TAGS_MAX
        out.append(message)
    return out


def only(data: bytes) -> Line:
    found = lines_of(data)
    assert len(found) == 1, found
    return found[0]


# -- the numerics table ---------------------------------------------------------------------


def test_every_error_code_has_a_numeric_or_is_a_notice_on_purpose():
    assert set(numerics.ERROR_NUMERICS) == set(ERROR_CODES)
    for code, numeric in numerics.ERROR_NUMERICS.items():
        assert numeric == numerics.AS_NOTICE or re.fullmatch(r"\d{3}", numeric) \
            or (numeric == numerics.AS_FAIL and code in numerics.FAILS), code


def test_the_numeric_agrees_with_the_codes_irc_annotation():
    """Where ERROR_CODES names IRC numerics for a code, the table sends one of them."""
    for code, meaning in ERROR_CODES.items():
        named = re.search(r"\(IRC ([\d, ]+)\)", meaning)
        if named:
            assert numerics.ERROR_NUMERICS[code] in re.findall(r"\d{3}", named.group(1)), code


# -- every kind, any content, every capability ------------------------------------------------

#: Text with what a remote node could put anywhere: line breaks, NUL, spaces, a leading
#: ':', IRC's control codes, multi-byte characters and lone surrogates (a list of
#: characters joined, so that hypothesis draws the odd ones as often as the others).
hostile_text = st.lists(
    st.characters(codec="utf-8")
    | st.sampled_from(["\r", "\n", "\0", " ", ":", "\x01", "\x03", "@", "!", "#", ";", "\\",
                       "é", "语", "😀", "\ud800", "\udcff"]),
    max_size=60,
).map("".join)
hostile_sources = st.builds(
    Source, hostile_text.filter(bool), st.none() | st.integers(0, 2**53 - 1), st.none(),
    st.none() | hostile_text, hostile_text, hostile_text, hostile_text,
    st.none() | hostile_text,
)
renderers = st.sampled_from([PLAIN, FULL, renderer_for(frozenset({"batch"}), "x"),
                             renderer_for(frozenset({"labeled-response", "server-time"}), "x")])
EVENT_CLASSES = sorted(EVENT_TYPES.values(), key=lambda c: c.kind)


def check_renders(renderer: IrcRenderer, event: Any) -> None:
    for data in (renderer.render(event),
                 renderer.render_for(event, event.source.session, "lbl1"),
                 renderer.render_for(event, "other:1", None)):
        if data:
            lines_of(data)


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda c: c.kind)
@given(data=st.data())
def test_every_event_kind_renders_as_strict_irc(cls, data):
    check_renders(data.draw(renderers), data.draw(events(cls)))


@pytest.mark.parametrize("cls", REPLY_CLASSES, ids=lambda c: c.kind)
@given(data=st.data())
def test_every_reply_kind_renders_as_strict_irc(cls, data):
    check_renders(data.draw(renderers), data.draw(replies(cls)))


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda c: c.kind)
@settings(max_examples=60)
@given(data=st.data())
def test_hostile_fields_never_make_a_line_of_their_own(cls, data):
    """CR, LF, NUL, spaces and a leading ':' in every field (another node's nick, room,
    ident, host, account, text): each message still parses, with the source's prefix."""
    extra: dict[str, Any] = {}
    if cls in (NickChange,):
        extra = {"old": data.draw(hostile_text), "new": data.draw(hostile_text)}
    event = cls(1, T, data.draw(hostile_sources), data.draw(hostile_text),
                data.draw(hostile_text), **extra)
    renderer = data.draw(renderers)
    rendered = renderer.render(event)
    if rendered:
        for line in lines_of(rendered):
            assert line.source is not None and " " not in line.source


def test_a_forged_line_in_a_nick_or_text_stays_inside_its_message():
    evil = Source("x\r\n:irc.example 001 alice :owned", 9, node="n2", ident="a b",
                  host=":h\0ost")
    data = PLAIN.render(Message(1, T, evil, "#dev\r\nQUIT", "hi\r\nPRIVMSG #dev :forged"))
    found = lines_of(data)
    assert [m.command for m in found] == ["PRIVMSG", "PRIVMSG"]  # the two lines of the text
    assert found[0].source == "x!a_b@_h" and found[0].params == ("#dev", "hi")
    assert found[1].params == ("#dev", "PRIVMSG #dev :forged")  # text, from the same source


def test_another_nodes_overlong_fields_still_fit_the_body():
    """Fields far beyond chatd's own limits (another node's) are clipped so that every
    message fits 512 bytes with room for text; the text itself is still split, not cut."""
    huge = Source("n" * 600, 5, node="n9", ident="i" * 600, host="h" * 600, account="a" * 600)
    room = "#" + "r" * 600
    text = "t" * 2000
    for event in (Message(1, T, huge, room, text), Topic(2, T, huge, room, text),
                  Part(3, T, huge, room, text), Quit(4, T, huge, "", text),
                  Join(5, T, huge, room, ""), Notice(6, T, SERVER, room, text)):
        for renderer in (PLAIN, FULL):
            found = lines_of(renderer.render(event))
            if event.__class__ in (Message, Notice):
                assert "".join(m.params[-1] for m in found) == text
            if event.__class__ in (Topic, Part, Quit):
                assert found[0].params[-1].endswith("…")  # said, not silent


def test_lone_surrogates_become_replacement_characters():
    """Another node's text or nick with a lone surrogate: valid UTF-8 out, never an
    exception in the middle of a fan-out."""
    odd = Source("bo\udcffb", 5, node="n9", ident="b", host="h")
    found = only(PLAIN.render(Message(1, T, odd, "#dev", "hi \ud800 there")))
    assert found.source.startswith("bo\ufffdb!") and found.params[1] == "hi \ufffd there"


# -- long text ------------------------------------------------------------------------------------


@given(st.text(st.sampled_from("aé语😀 "), min_size=1, max_size=900))
def test_long_text_is_split_never_cut(text):
    for cls, unwrap in ((Message, lambda t: t), (Action, lambda t: t[8:-1])):
        found = lines_of(PLAIN.render(cls(1, T, BOB, "#dev", text)))
        assert "".join(unwrap(m.params[1]) for m in found) == text
        if cls is Action:
            assert all(m.params[1].startswith("\x01ACTION ") for m in found)


def test_the_split_is_at_the_body_limit_exactly():
    prefix = b":bob!bob@abc.cloak PRIVMSG #dev :"
    room = BODY_MAX - len(prefix) - 2
    fits = "a" * (room % 2) + "é" * (room // 2)  # exactly room bytes
    assert len(fits.encode()) == room
    assert len(lines_of(PLAIN.render(Message(1, T, BOB, "#dev", fits)))) == 1
    split = lines_of(PLAIN.render(Message(1, T, BOB, "#dev", fits + "x")))
    assert len(split) == 2 and split[1].params[1] == "x"
    across = "a" * (room - 1) + "é"  # its two bytes straddle the limit: it goes whole
    found = lines_of(PLAIN.render(Message(1, T, BOB, "#dev", across)))
    assert [m.params[1] for m in found] == ["a" * (room - 1), "é"]


def test_a_split_prefers_a_space_near_the_end():
    pieces = split_text("word " * 40, 100)
    assert all(p.endswith(" ") for p in pieces[:-1]) and "".join(pieces) == "word " * 40


def test_a_plugins_notice_with_newlines_is_one_notice_per_line():
    source = Source("chatd", None, plugin="mentions", marker="mentions")
    found = lines_of(PLAIN.render(Notice(1, T, source, "#dev", "one\r\ntwo\n\nthree")))
    assert [m.params for m in found] == [("#dev", "[mentions] one"), ("#dev", "[mentions] two"),
                                         ("#dev", "[mentions] three")]
    assert {m.source for m in found} == {"irc.example"}


# -- events ---------------------------------------------------------------------------------------


def test_chat_events():
    assert PLAIN.render(Message(1, T, BOB, "#dev", "hi")) == \
        b":bob!bob@abc.cloak PRIVMSG #dev hi\r\n"
    assert only(PLAIN.render(Action(1, T, BOB, "#dev", "waves"))).params == \
        ("#dev", "\x01ACTION waves\x01")
    assert only(PLAIN.render(PrivateMessage(1, T, BOB, "alice", "psst"))).params == \
        ("alice", "psst")
    assert PLAIN.render(Notice(1, T, SERVER, "", "restarting")) == \
        b":irc.example NOTICE * restarting\r\n"
    assert only(PLAIN.render(Topic(1, T, BOB, "#dev", ""))).params == ("#dev", "")
    assert only(PLAIN.render(Topic(1, T, BOB, "#dev", "a\nb"))).params == ("#dev", "a b")


def test_presence_events():
    assert PLAIN.render(Join(1, T, BOB, "#dev", "")) == b":bob!bob@abc.cloak JOIN #dev\r\n"
    assert only(FULL.render(Join(1, T, BOB, "#dev", ""))).params == ("#dev", "bob", "bob")
    assert only(FULL.render(Join(1, T, ME, "#dev", ""))).params == ("#dev", "*", "alice")
    assert only(PLAIN.render(Part(1, T, BOB, "#dev", "kicked by carol: spam"))).params == \
        ("#dev", "kicked by carol: spam")
    assert only(PLAIN.render(Part(1, T, BOB, "#dev", ""))).params == ("#dev",)
    assert only(PLAIN.render(Quit(1, T, BOB, "", "Quit: bye", rooms=("#dev",)))).params == \
        ("Quit: bye",)
    nick = only(PLAIN.render(NickChange(1, T, BOB, "", "", old="bobby", new="bob")))
    assert nick.source == "bobby!bob@abc.cloak" and nick.params == ("bob",)


def test_away_only_with_away_notify():
    assert PLAIN.render(Away(1, T, BOB, "bob", "lunch")) == b""
    assert only(FULL.render(Away(1, T, BOB, "bob", "lunch"))).params == ("lunch",)
    assert only(FULL.render(Away(1, T, BOB, "bob", ""))).params == ()


def test_own_events_and_echo_message():
    mine = Message(1, T, ME, "#dev", "hi")
    assert PLAIN.render_for(mine, ME.session) == b""
    assert only(FULL.render_for(mine, ME.session)).params == ("#dev", "hi")
    sent = PrivateMessage(2, T, ME, "bob", "psst")
    assert PLAIN.render_for(sent, ME.session) == b""  # the sender's copy
    assert only(FULL.render_for(sent, ME.session)).params == ("bob", "psst")
    to_self = PrivateMessage(3, T, ME, "Alice", "note")
    assert only(PLAIN.render_for(to_self, ME.session)).params == ("Alice", "note")
    for own in (Join(4, T, ME, "#dev", "", quiet=True), Part(5, T, ME, "#dev", "", quiet=True),
                NickChange(6, T, ME, "", "", old="al", new="alice"), Topic(7, T, ME, "#dev", "x")):
        assert lines_of(PLAIN.render_for(own, ME.session)), own.kind  # IRC needs these
    assert PLAIN.render_for(Quit(8, T, ME, "", "bye"), ME.session) == b""
    other_node = Source("alice", 3, node="n2", ident="alice", host="x")
    assert PLAIN.render_for(Message(9, T, other_node, "#dev", "hi"), ME.session)


# -- capabilities -----------------------------------------------------------------------------


def test_tags_by_capability():
    event = Message(42, T, BOB, "#dev", "hi")
    assert only(PLAIN.render(event)).tags == {}
    assert only(FULL.render(event)).tags == {"time": "2026-12-01T10:00:00.250Z",
                                             "account": "bob", "msgid": "42"}
    only_time = renderer_for(frozenset({"server-time"}), "irc.example")
    assert only(only_time.render(event)).tags == {"time": "2026-12-01T10:00:00.250Z"}
    split = lines_of(FULL.render(Message(43, T, BOB, "#dev", "x " * 400)))
    assert [m.tags["msgid"] for m in split] == ["43", "43-1"]


def test_labeled_response():
    reply = RoomTopic(5, T, SERVER, "alice", room="#dev", topic="hello")
    assert only(FULL.render_for(reply, ME.session, "abc")).tags["label"] == "abc"
    assert "label" not in only(PLAIN.render_for(reply, ME.session, "abc")).tags
    names = Names(6, T, SERVER, "alice", room="#dev", total=1,
                  members=(MemberEntry("alice", "alice@def.cloak"),))
    found = lines_of(FULL.render_for(names, ME.session, "abc"))
    assert found[0].command == "BATCH" and found[0].tags["label"] == "abc"
    assert "msgid" not in found[0].tags and all("label" not in m.tags for m in found[1:])
    assert found[0].params[1] == "labeled-response"
    ref = found[0].params[0][1:]
    assert all(m.tags["batch"] == ref for m in found[1:-1])
    assert found[-1].params == (f"-{ref}",)


def test_names_with_prefixes_and_userhosts():
    members = (MemberEntry("alice", "alice@def.cloak", operator=True),
               MemberEntry("bob", "bob@abc.cloak"))
    reply = Names(6, T, SERVER, "alice", room="#dev", total=2, members=members,
                  topic="welcome", greeting=True)
    found = lines_of(PLAIN.render(reply))
    assert [m.command for m in found] == ["332", "353", "366"]
    assert found[1].params == ("alice", "=", "#dev", "@alice bob")
    with_hosts = lines_of(FULL.render(reply))
    assert with_hosts[1].params[-1] == "@alice!alice@def.cloak bob!bob@abc.cloak"
    many = Names(7, T, SERVER, "alice", room="#dev", total=100,
                 members=tuple(MemberEntry(f"nick{i:03d}xxxxxxxx") for i in range(100)))
    found = lines_of(PLAIN.render(many))
    assert len(found) > 3 and sum(len(m.params[-1].split()) for m in found[:-1]) == 100


def test_history_as_a_batch_and_nothing_without():
    start = HistoryMarker(1, T, SERVER, "alice", edge="start", count=1, room="#dev", live=True)
    end = HistoryMarker(3, T, SERVER, "alice", edge="end", count=1, room="#dev", live=True)
    old = Message(2, T - 60, Source("bob", 0, ident="bob", host="h"), "#dev", "earlier",
                  replay=True)
    assert PLAIN.render(start) == PLAIN.render(end) == b""
    assert only(PLAIN.render_for(old, ME.session)).params == ("#dev", "earlier")
    opened, line, closed = (only(FULL.render_for(e, ME.session)) for e in (start, old, end))
    assert opened.command == "BATCH" and opened.params[1:] == ("chathistory", "#dev")
    ref = opened.params[0][1:]
    assert line.tags["batch"] == ref and closed.params == (f"-{ref}",)
    replayed_join = Join(4, T, Source("bob", 0), "#dev", "", replay=True)
    assert FULL.render(replayed_join) == PLAIN.render(replayed_join) == b""


# -- replies and errors -------------------------------------------------------------------------


def test_replies_as_numerics():
    whois = Whois(1, T, SERVER, "alice", nick="bob", userhost="bob@abc.cloak",
                  connected_to="n1", rooms=("#dev", "#ops"), connected_at=T - 100, idle=5,
                  identified_as="bob", away="lunch", address="10.0.0.1")
    assert [m.command for m in lines_of(PLAIN.render(whois))] == \
        ["311", "312", "319", "317", "330", "301", "338", "318"]
    rooms = RoomList(2, T, SERVER, "alice", rooms=(RoomEntry("#dev", 3, "talk"),), total=1)
    assert [m.params for m in lines_of(PLAIN.render(rooms))] == [
        ("alice", "Channel", "Users  Name"), ("alice", "#dev", "3", "talk"),
        ("alice", "End of /LIST")]
    assert only(PLAIN.render(RoomTopic(3, T, SERVER, "alice", room="#dev", topic=""))
                ).command == "331"
    bans = BanList(4, T, SERVER, "alice", room="#dev", entries=(
        BanEntry("ban", "*!*@bad.host", "carol"), BanEntry("mute", "dave", "carol")))
    assert [(m.command, m.params[2:]) for m in lines_of(PLAIN.render(bans))] == [
        ("367", ("*!*@bad.host",)), ("368", ("End of channel ban list",)),
        ("728", ("q", "dave!*@*")), ("729", ("q", "End of channel quiet list"))]
    help_ = Help(5, T, SERVER, "alice", commands=(HelpEntry("roll", "/roll NdM", "dice"),),
                 command="roll", details="rolls dice\nsecond line")
    assert [m.command for m in lines_of(PLAIN.render(help_))] == ["704", "705", "705", "706"]


def test_who_ison_userhost_and_modes_as_numerics():
    """The replies IRC's WHO, ISON, USERHOST and MODE #room read (issue 20's commands)."""
    members = (MemberEntry("bob", "bob@abc.cloak", None, False, True),
               MemberEntry("carol", "", None, True, False))
    who = Names(1, T, SERVER, "alice", room="#dev", members=members, total=2, who=True)
    assert [(m.command, m.params) for m in lines_of(PLAIN.render(who))] == [
        ("352", ("alice", "#dev", "bob", "abc.cloak", "irc.example", "bob", "H@", "0 bob")),
        ("352", ("alice", "#dev", "carol", "*", "irc.example", "carol", "G", "0 carol")),
        ("315", ("alice", "#dev", "End of WHO list"))]
    names = Names(1, T, SERVER, "alice", room="#dev", members=members, total=2)
    assert [m.command for m in lines_of(PLAIN.render(names))] == ["353", "366"]
    online = (OnlineEntry("Bob", "bob@abc.cloak", False), OnlineEntry("carol", "c@x", True))
    ison = Online(2, T, SERVER, "alice", command="ison", asked=("bob", "carol", "zed"),
                  online=online)
    assert only(PLAIN.render(ison)).params == ("alice", "Bob carol")
    userhost = Online(3, T, SERVER, "alice", command="userhost", asked=("bob", "carol"),
                      online=online)
    assert only(PLAIN.render(userhost)).params == ("alice", "Bob=+bob@abc.cloak carol=-c@x")
    nobody = Online(4, T, SERVER, "alice", command="ison", asked=("zed",), online=())
    assert only(PLAIN.render(nobody)).params == ("alice", "")
    modes = RoomModes(5, T, SERVER, "alice", room="#dev", invite_only=True, topic_lock=True)
    assert only(PLAIN.render(modes)).params == ("alice", "#dev", "+it")
    bare = RoomModes(6, T, SERVER, "alice", room="#dev")
    assert only(PLAIN.render(bare)).params == ("alice", "#dev", "+")
    away = only(PLAIN.render(AwayStatus(7, T, SERVER, "alice", away="lunch")))
    back = only(PLAIN.render(AwayStatus(8, T, SERVER, "alice")))
    assert (away.command, back.command) == ("306", "305")


def test_every_reply_kind_has_an_irc_rendering():
    """A reply kind added to chatd.replies without IRC words would reach IRC users as
    nothing at all."""
    from chatd.protocols.irc.render import _LINES
    from chatd.replies import REPLY_TYPES
    assert set(REPLY_TYPES.values()) <= set(_LINES)


@pytest.mark.parametrize("code, text, expected", [
    ("no_such_nick", "no such nick: carol", ("401", "alice", "carol")),
    ("nick_in_use", "the nick bob is taken", ("433", "alice", "bob")),
    ("erroneous_nick", "the nick 'NickServ' is reserved", ("432", "alice", "NickServ")),
    ("not_in_room", "you are not in #dev", ("442", "alice", "#dev")),
    ("user_not_in_room", "bob is not in #dev", ("441", "alice", "bob", "#dev")),
    ("unknown_command", "unknown command /frob — try /help", ("421", "alice", "FROB")),
    ("not_operator", "only #dev's operators do that", ("482", "alice", "#dev")),
    ("not_operator", "for server operators", ("481", "alice")),
    ("muted", "you are muted", ("404", "alice", "*")),
    ("line_too_long", "line too long", ("417", "alice")),
])
def test_errors_as_numerics(code, text, expected):
    found = only(PLAIN.render(Error(1, T, SERVER, "alice", text, code=code)))
    assert (found.command, *found.params[:-1]) == expected
    assert found.params[-1] == text and found.source == "irc.example"


def test_an_error_irc_has_no_numeric_for_is_a_notice():
    found = only(PLAIN.render(Error(1, T, SERVER, "alice", "too weak", code="weak_password")))
    assert (found.command, found.params) == ("NOTICE", ("alice", "too weak"))
    plugin = Source("chatd", None, plugin="dice", marker="dice")
    found = only(PLAIN.render(Error(1, T, plugin, "alice", "too many dice", code="dice_x")))
    assert found.params == ("alice", "[dice] too many dice")


def test_a_local_error_is_one_error_line():
    assert PLAIN.local_error("server full\r\nPRIVMSG x :y", code="server_full") == \
        b"ERROR :server full PRIVMSG x :y\r\n"


# -- one renderer per capability set, and the fan-out ---------------------------------------------


def test_one_renderer_object_per_capability_set():
    assert renderer_for(frozenset({"batch", "server-time"}), "s") is \
        renderer_for(frozenset({"server-time", "batch"}), "s")
    assert renderer_for(frozenset({"batch"}), "s") is not renderer_for(frozenset(), "s")
    assert renderer_for(frozenset(), "s") is not renderer_for(frozenset(), "t")


class _Transport:
    def __init__(self) -> None:
        self.data = b""

    def write_now(self, data: bytes) -> None:
        self.data += data


class _Link:
    def __init__(self, renderer: IrcRenderer) -> None:
        self.renderer = renderer
        self.transport = _Transport()


class _Member:
    view = None

    def __init__(self, renderer: IrcRenderer, room: Any) -> None:
        self.link = _Link(renderer)
        self.room = room
        self.rooms = (room,)


class _Room:
    def __init__(self) -> None:
        self.name = "#dev"
        self.members: dict[Any, None] = {}
        self.renderers: dict[Any, int] = {}


def test_the_fanout_renders_once_per_capability_set(monkeypatch):
    room = _Room()
    caps_a, caps_b = frozenset({"server-time"}), frozenset({"server-time", "account-tag"})
    members = [_Member(renderer_for(caps, "irc.example"), room)
               for caps in (caps_a, caps_a, caps_a, caps_b, caps_b)]
    for member in members:
        room.members[member] = None
        renderer = member.link.renderer
        room.renderers[renderer] = room.renderers.get(renderer, 0) + 1
    assert len(room.renderers) == 2
    calls: list[IrcRenderer] = []
    for renderer in room.renderers:
        original = renderer.render
        monkeypatch.setattr(renderer, "render",
                            lambda e, r=renderer, o=original: calls.append(r) or o(e))
    fanout = Fanout()
    fanout.add(Message(1, T, BOB, "#dev", "hi"), (room,), None)
    fanout.flush()
    assert len(calls) == 2
    assert {m.link.transport.data for m in members[:3]} == {members[0].link.transport.data}
    assert only(members[3].link.transport.data).tags["account"] == "bob"
    assert "account" not in only(members[0].link.transport.data).tags


# -- through the real chat domain and delivery -----------------------------------------------


def _irc_peer(chat: Any, caps: frozenset[str], nick: str) -> Any:
    """A client whose input is the line protocol's (``/join``...) and whose output is this
    renderer's, made the way ``InProcessChat.connect`` makes one: the domain and the
    delivery backend drive the renderer exactly as they will drive an IRC listener's."""
    from chatd.protocols import ProtocolLimits
    from chatd.protocols.line import LineProtocol
    from chatd.requests import SessionRequest
    from chatd.testing.inprocess import MemoryTransport, Peer

    class Rendered(LineProtocol):
        renderer = renderer_for(caps, "irc.example")

    transport = MemoryTransport(("127.0.0.1", 40000 + len(chat.peers)))
    proto = Rendered(transport, ProtocolLimits())  # type: ignore[arg-type]
    proto.session = chat.domain.connect(proto, SessionRequest(nick=nick, user=nick))
    peer = Peer(chat, proto, transport)
    chat.peers.append(peer)
    chat.tick()
    return peer


def test_a_session_through_the_domain_is_strict_irc_from_first_byte_to_last():
    from chatd.testing import InProcessChat

    with InProcessChat() as chat:
        alice = _irc_peer(chat, frozenset(), "alice")
        carol = _irc_peer(chat, ALL_CAPS, "carol")
        bob = chat.connect("line")
        for line in ("/join #dev", "/topic #dev hello\r there", "/topic #dev", "/whois carol",
                     "/who", "/msg nobody hi", "/rooms", "/help", "/names #dev"):
            alice.send(line)
            chat.tick()
        carol.send("/join #dev")
        bob.send("/join #dev")
        bob.send("hi all " + "语" * 300)
        bob.send("/me waves")
        bob.send("/nick bobby")
        bob.send("/msg alice psst")
        alice.send("/msg bobby back")
        carol.send("/part #dev see you")
        bob.send("/quit bye")
        chat.tick()
        for peer in (alice, carol):
            found = lines_of(bytes(peer.transport.output))
            assert all(m.source for m in found)
        commands = [m.command for m in lines_of(bytes(alice.transport.output))]
        for expected in ("JOIN", "332", "353", "366", "TOPIC", "311", "318", "401", "321",
                         "323", "704", "706", "PRIVMSG", "NICK", "PART", "QUIT"):
            assert expected in commands, expected
        said = [m for m in lines_of(bytes(alice.transport.output))
                if m.command == "PRIVMSG" and m.params[0] == "#dev"]
        assert "".join(m.params[1] for m in said[:-1]) == "hi all " + "语" * 300
        assert said[-1].params[1] == "\x01ACTION waves\x01"
        private = [m.params for m in lines_of(bytes(alice.transport.output))
                   if m.command == "PRIVMSG" and m.params[0] == "alice"]
        assert private == [("alice", "psst")]  # its own "back" not echoed without the cap
        assert all("time" in m.tags for m in lines_of(bytes(carol.transport.output)))
