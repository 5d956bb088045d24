"""The event codec (issue 19, part 5): every event to a versioned dict and back.

A round trip of every kind is property-tested through real JSON text (what
history, jsonl and other nodes carry); what the codec refuses is refused with
a CodecError naming the key; jsonl's objects are the codec's public form.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatd import codec
from chatd.codec import CodecError, from_dict, to_dict
from chatd.events import (
    EVENT_TYPES,
    Error,
    Event,
    Join,
    Message,
    NickChange,
    Notice,
    Part,
    PrivateMessage,
    Quit,
    Source,
)
from chatd.framing import sanitize, strip_colour_codes
from chatd.protocols.jsonl import RENDERER as JSONL
from chatd.replies import RECORD_TYPES, REPLY_TYPES, MemberEntry, Names, Reply

# -- strategies ----------------------------------------------------------------------------------

words = st.text(min_size=1, max_size=12)
maybe = st.none() | words
#: The host part of ident@host: an address or a cloak, never holding "@".
hosts = st.text(min_size=1, max_size=20).filter(lambda h: "@" not in h)

client_sources = st.builds(
    Source, words, st.integers(0, 2**53 - 1), st.none(), st.none(),
    st.text(max_size=12), st.text(max_size=12), st.just("") | hosts, maybe,
)
server_sources = st.builds(Source, words, st.none(), maybe, maybe, st.text(max_size=12))
sources = client_sources | server_sources
room_names = st.text(max_size=12).map(lambda name: "#" + name)
nick_targets = st.text(min_size=1, max_size=12).filter(lambda t: not t.startswith("#"))
targets = st.just("") | room_names | nick_targets
room_tuples = st.lists(room_names, max_size=3).map(tuple)


@st.composite
def events(draw: Any, cls: type[Event]) -> Event:
    """Any event of ``cls``, with every field it has drawn."""
    extra: dict[str, Any] = {}
    if cls in (Join, Part):
        extra["quiet"] = draw(st.booleans())
    if cls in (Quit, NickChange):
        extra["rooms"] = draw(room_tuples)
    if cls is NickChange:
        extra["old"], extra["new"] = draw(st.text(max_size=12)), draw(st.text(max_size=12))
    if cls is PrivateMessage:
        extra.update(to_account=draw(maybe), to_session=draw(maybe), to_away=draw(maybe))
    return cls(
        draw(st.integers(0, 2**53 - 1)),
        draw(st.floats(0, codec.TIME_LIMIT, exclude_max=True)),
        draw(sources), draw(targets), draw(st.text(max_size=40)),
        replay=draw(st.booleans()), **extra,
    )


any_event = st.sampled_from(sorted(EVENT_TYPES.values(), key=lambda c: c.kind)).flatmap(events)

# -- the round trip ------------------------------------------------------------------------------


def test_the_codec_knows_every_event_kind():
    assert set(codec.KINDS) >= set(EVENT_TYPES)
    for kind, cls in EVENT_TYPES.items():
        assert codec.KINDS[kind].cls is cls


@pytest.mark.parametrize("cls", sorted(EVENT_TYPES.values(), key=lambda c: c.kind),
                         ids=lambda c: c.kind)
@given(data=st.data())
def test_every_kind_survives_a_round_trip_through_json_text(cls, data):
    event = data.draw(events(cls))
    text = codec.dumps(event)
    assert "\n" not in text  # one line: a history row, a bus message, a jsonl line
    back = codec.loads(text)
    assert back == event and back.__class__ is cls
    assert from_dict(to_dict(event)) == event


@given(any_event)
def test_the_dict_is_versioned_and_carries_the_identity(event):
    d = to_dict(event)
    assert d["v"] == codec.SCHEMA_VERSION and d["type"] == event.kind
    source = event.source
    assert d.get("node", "") == source.node
    assert d.get("user", "") == source.user
    assert d.get("account") == source.account
    assert d.get("session") == source.session
    assert d.get("client") == source.client_id
    assert d.get("server", False) is source.is_server
    assert d.get("history", False) is event.replay


@given(any_event)
def test_the_public_form_leaves_out_the_internal_fields(event):
    public = to_dict(event, internal=False)
    assert not set(public) & set(codec.INTERNAL_KEYS)
    internal = to_dict(event)
    assert {k: v for k, v in internal.items() if k not in codec.INTERNAL_KEYS} == public


@given(any_event)
def test_jsonl_renders_the_codecs_public_form(event):
    obj = json.loads(JSONL.render(event))
    public = to_dict(event, internal=False)
    if event.__class__ is not PrivateMessage:
        public.pop("to", None)  # a notice or error to you names no recipient on jsonl
    assert set(obj) == set(public)
    for key in set(public) - {"time", "text"}:  # jsonl words the time, sanitises text
        shown = public[key]  # and every name (clean ones, every local one, as they are)
        if isinstance(shown, str):
            shown = sanitize(strip_colour_codes(shown))
        elif isinstance(shown, list):
            shown = [sanitize(strip_colour_codes(item)) for item in shown]
        assert obj[key] == shown, key


#: What a hostile node could put in every name of an event: the codec reads names as
#: strings (a remote node's are not validated here), so the renderers must clean them.
HOSTILE = "x\x1b[2J\r<admin>\x07\u202eevil\x00\u200b\x9b31m"


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_names_of_a_remote_event_reach_no_program_with_controls_in_them(kind):
    d = {"v": 1, "type": kind, "id": 7, "time": 1.0, "from": HOSTILE, "client": 3,
         "node": "other", "text": HOSTILE, "old": HOSTILE, "new": HOSTILE, "code": HOSTILE,
         "rooms": ["#" + HOSTILE], "room": "#" + HOSTILE}
    rendered = JSONL.render(from_dict(d)).decode()
    assert rendered.endswith("\n") and rendered.count("\n") == 1
    shown = json.dumps(json.loads(rendered), ensure_ascii=False)
    assert not re.search(r"\\u00[01]|\\u007f|[\x80-\x9f\u202e\u200b]", shown), shown
    assert "<admin>" in shown  # the words stay; only what a terminal would obey goes


# -- what is refused -----------------------------------------------------------------------------

ALICE = Source("alice", 3, node="n1", ident="guest-3", host="ab12.cloak", account="alice")
GOOD = to_dict(Message(7, 1.5, ALICE, "#lobby", "hi"))


def _with(**changes: Any) -> dict[str, Any]:
    d = dict(GOOD)
    for key, value in changes.items():
        if value is _DROP:
            d.pop(key, None)
        else:
            d[key] = value
    return d


_DROP = object()


@pytest.mark.parametrize(("changes", "why"), [
    ({"v": 2}, "unknown schema version 'v': 2"),
    ({"v": _DROP}, "unknown schema version 'v': None"),
    ({"v": "1"}, "unknown schema version 'v': '1'"),
    ({"v": True}, "unknown schema version 'v': True"),
    ({"type": "telegram"}, "unknown 'type': 'telegram'"),
    ({"type": _DROP}, "unknown 'type': None"),
    ({"id": "7"}, "'id' must be a whole number"),
    ({"id": True}, "'id' must be a whole number"),
    ({"id": -1}, "'id' must be a whole number"),
    ({"id": 2**53}, "'id' must be a whole number"),
    ({"id": _DROP}, "'id' is missing"),
    ({"time": math.nan}, "'time' must be seconds since the epoch"),
    ({"time": math.inf}, "'time' must be seconds since the epoch"),
    ({"time": -1.0}, "'time' must be seconds since the epoch"),
    ({"time": codec.TIME_LIMIT}, "'time' must be seconds since the epoch"),
    ({"time": "noon"}, "'time' must be seconds since the epoch"),
    ({"from": 5}, "'from' must be a string"),
    ({"from": _DROP}, "'from' is missing"),
    ({"text": None}, "'text' must be a string"),
    ({"server": True}, "a source is the server"),
    ({"client": _DROP, "session": _DROP}, "a source is the server"),
    ({"session": "n2:3"}, "'session' 'n2:3' is not the session of its node and client"),
    ({"user": "nobody"}, "'user' must be ident@host"),
    ({"room": "lobby"}, "'room' must start with #"),
    ({"to": "bob"}, "an event has a 'room' or a 'to', not both"),
    ({"history": "yes"}, "'history' must be true or false"),
])
def test_a_dict_that_is_not_an_event_is_a_codec_error_naming_the_key(changes, why):
    with pytest.raises(CodecError) as info:
        from_dict(_with(**changes))
    assert why in str(info.value)


def test_the_kinds_own_fields_are_checked_too():
    quit_ = to_dict(Quit(8, 1.0, ALICE, "", "bye", rooms=("#a",)))
    with pytest.raises(CodecError, match="'rooms' must be a list of strings"):
        from_dict({**quit_, "rooms": "#a"})
    join = to_dict(Join(9, 1.0, ALICE, "#a", "", quiet=True))
    with pytest.raises(CodecError, match="'quiet' must be true or false"):
        from_dict({**join, "quiet": 1})


def test_what_is_not_json_or_not_an_object_is_a_codec_error():
    with pytest.raises(CodecError, match="not JSON"):
        codec.loads('{"v": 1,')
    with pytest.raises(CodecError, match="expected an object, not list"):
        codec.loads("[1]")
    # Nested past the parser's recursion limit (a hostile node's payload): still only a
    # CodecError, never a RecursionError for the caller (a bus reader) to die of.
    with pytest.raises(CodecError, match="not JSON"):
        codec.loads("[" * 100_000)
    with pytest.raises(CodecError, match="not JSON"):
        codec.loads('{"v": 1, "text": ' + "{" * 100_000)
    with pytest.raises(CodecError, match="no kind for str"):
        to_dict("hello")


def test_keys_a_reader_does_not_know_are_ignored():
    """A newer node may add a field within a version; an older one still reads the rest."""
    assert from_dict({**GOOD, "colour": "red"}) == from_dict(GOOD)


# -- the extension point -------------------------------------------------------------------------


@dataclass(frozen=True)
class Ping:
    """A toy kind, as part 2's typed replies will register theirs."""

    nonce: int


def test_a_new_kind_registers_once_and_round_trips():
    kind = codec.Kind("ping", Ping, lambda p, internal: {"v": 1, "type": "ping", "n": p.nonce},
                      lambda d: Ping(d["n"]))
    codec.register(kind)
    try:
        assert codec.loads(codec.dumps(Ping(5))) == Ping(5)
        with pytest.raises(ValueError, match="already has a kind 'ping'"):
            codec.register(kind)
        with pytest.raises(ValueError, match="already has a kind 'notice'"):
            codec.register(codec.event_kind(Notice))
    finally:
        codec.unregister("ping")
    with pytest.raises(CodecError, match="unknown 'type': 'ping'"):
        from_dict({"v": 1, "type": "ping", "n": 5})


def test_a_replayed_event_has_no_session():
    """History replays events with client 0: their session is over, so nobody's own."""
    replayed = replace(Message(7, 1.5, replace(ALICE, client_id=0), "#l", "x"), replay=True)
    d = to_dict(replayed)
    assert "session" not in d and d["client"] == 0
    assert from_dict(d).source.session is None


def test_the_documented_example_reads_back_and_jsonl_shows_its_public_form():
    """docs/protocols.md's codec example is a real event: it reads, writes back the same,
    and its public form is the message of the example exchange."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "protocols.md").read_text()
    block = re.search(r"<!-- codec example -->\n```json\n(.*?)\n```", text, re.DOTALL)
    assert block, "docs/protocols.md lost its codec example"
    documented = json.loads(block.group(1))
    event = from_dict(documented)
    assert to_dict(event) == documented
    assert event.source.session == documented["session"]
    shown = json.loads(JSONL.render(event))
    assert {k: v for k, v in shown.items() if k not in ("id", "time")} == {
        "type": "message", "from": "guest-1", "room": "#lobby",
        "text": "hi helperbot, what time is it?"}


# -- replies (issue 19, part 2): every reply kind round-trips too -------------------------------

REPLY_CLASSES = sorted(REPLY_TYPES.values(), key=lambda c: c.kind)
_COMMON = {f.name for f in dataclasses.fields(Event)}


def _values(annotation: str) -> st.SearchStrategy[Any]:
    """Any value of a reply field's annotation (the codec's own reading of it)."""
    simple: dict[str, st.SearchStrategy[Any]] = {
        "str": st.text(max_size=12),
        "int": st.integers(0, 2**53 - 1),
        "bool": st.booleans(),
        "float": st.floats(0, codec.TIME_LIMIT, exclude_max=True),
        "str | None": st.none() | st.text(max_size=12),
        "float | None": st.none() | st.floats(0, codec.TIME_LIMIT, exclude_max=True),
        "tuple[str, ...]": st.lists(st.text(max_size=8), max_size=3).map(tuple),
    }
    if annotation in simple:
        return simple[annotation]
    record = RECORD_TYPES[re.fullmatch(r"tuple\[(\w+), \.\.\.\]", annotation).group(1)]
    return st.lists(_records(record), max_size=3).map(tuple)


def _records(cls: type) -> st.SearchStrategy[Any]:
    return st.builds(cls, **{f.name: _values(codec._annotation(f.type))
                             for f in dataclasses.fields(cls)})


@st.composite
def replies(draw: Any, cls: type[Reply]) -> Reply:
    """Any reply of ``cls`` from the server to a nick, with every field drawn."""
    fields = {f.name: draw(_values(codec._annotation(f.type)))
              for f in dataclasses.fields(cls) if f.name not in _COMMON}
    return cls(draw(st.integers(0, 2**53 - 1)),
               draw(st.floats(0, codec.TIME_LIMIT, exclude_max=True)),
               draw(server_sources), draw(nick_targets), "", **fields)


def test_the_codec_knows_every_reply_kind():
    for kind, cls in REPLY_TYPES.items():
        assert codec.KINDS[kind].cls is cls


@pytest.mark.parametrize("cls", REPLY_CLASSES, ids=lambda c: c.kind)
@given(data=st.data())
def test_every_reply_kind_survives_a_round_trip_through_json_text(cls, data):
    reply = data.draw(replies(cls))
    text = codec.dumps(reply)
    assert "\n" not in text
    back = codec.loads(text)
    assert back == reply and back.__class__ is cls
    public = to_dict(reply, internal=False)
    assert public["type"] == cls.kind and not set(public) & set(codec.INTERNAL_KEYS)


@given(data=st.data())
def test_an_errors_code_survives_a_round_trip(data):
    error = Error(1, 2.0, ALICE, "alice", "no such nick: carol",
                  code=data.draw(st.text(min_size=1, max_size=20)))
    assert codec.loads(codec.dumps(error)) == error
    assert to_dict(Error(1, 2.0, ALICE, "alice", "why"))["code"] == "error"
    old = {k: v for k, v in to_dict(error).items() if k != "code"}  # an older writer's
    assert from_dict(old).code == "error"


def test_a_reply_field_is_left_out_while_it_has_its_default():
    names = Names(1, 2.0, Source("chatd", plugin="rooms"), "alice", room="#dev",
                  members=(MemberEntry("alice"), MemberEntry("bob", "b@h", "bob", True, True)),
                  total=2)
    d = to_dict(names, internal=False)
    assert "topic" not in d and "greeting" not in d  # defaults: left out
    assert d["total"] == 2 and d["room"] == "#dev"  # no default: always
    assert d["members"] == [{"nick": "alice"},
                            {"nick": "bob", "userhost": "b@h", "account": "bob",
                             "away": True, "operator": True}]


@pytest.mark.parametrize(("changes", "why"), [
    ({"total": "2"}, "'total' must be a whole number"),
    ({"room": None}, "'room' is missing"),
    ({"members": {}}, "'members' must be a list of objects"),
    ({"members": [5]}, r"'members'\[0\] must be an object"),
    ({"members": [{"nick": 5}]}, r"'members'\[0\]: 'nick' must be a string"),
    ({"members": [{"away": True}]}, r"'members'\[0\]: 'nick' is missing"),
])
def test_a_replys_own_fields_are_checked(changes, why):
    d = to_dict(Names(1, 2.0, Source("chatd"), "alice", room="#dev", members=(), total=0))
    d.update(changes)
    if d.get("room", 0) is None:
        del d["room"]
    with pytest.raises(CodecError, match=why):
        from_dict(d)


@dataclass(frozen=True, slots=True)
class Pong(Reply):
    """A plugin's own reply kind (the test's)."""

    seq: int = dataclasses.field(kw_only=True)
    peers: tuple[MemberEntry, ...] = dataclasses.field(default=(), kw_only=True)

    kind: ClassVar[str] = "pong"


def test_a_plugins_reply_kind_registers_from_its_fields_and_round_trips():
    codec.register(codec.reply_kind(Pong))
    try:
        pong = Pong(1, 2.0, Source("chatd", plugin="ping"), "alice", seq=7,
                    peers=(MemberEntry("bob", away=True),))
        assert codec.loads(codec.dumps(pong)) == pong
        assert to_dict(pong, internal=False)["peers"] == [{"nick": "bob", "away": True}]
    finally:
        codec.unregister("pong")


def test_a_reply_kind_the_codec_cannot_write_is_refused_when_registered():
    @dataclass(frozen=True, slots=True)
    class Clash(Reply):
        user: str = dataclasses.field(kw_only=True)  # the source's key in the dict
        kind: ClassVar[str] = "clash"

    @dataclass(frozen=True, slots=True)
    class Odd(Reply):
        when: dict = dataclasses.field(kw_only=True)  # type: ignore[type-arg]
        kind: ClassVar[str] = "odd"

    with pytest.raises(ValueError, match="may not be named user"):
        codec.reply_kind(Clash)
    with pytest.raises(TypeError, match=r"cannot write Odd\.when of type dict"):
        codec.reply_kind(Odd)


@pytest.mark.parametrize("cls", REPLY_CLASSES, ids=lambda c: c.kind)
@given(data=st.data())
def test_jsonl_renders_a_reply_as_the_codecs_public_form(cls, data):
    """The same keys, records included; times as ISO text, strings sanitised."""
    reply = data.draw(replies(cls))
    obj = json.loads(JSONL.render(reply))
    public = to_dict(reply, internal=False)
    public.pop("to", None)  # a reply is to you: no recipient named

    def same_shape(shown: Any, value: Any) -> None:
        if isinstance(value, dict):
            assert set(shown) == set(value)
            for key in value:
                if key in ("connected_at", "until", "time"):
                    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", shown[key])
                else:
                    same_shape(shown[key], value[key])
        elif isinstance(value, list):
            assert len(shown) == len(value)
            for item, original in zip(shown, value, strict=True):
                same_shape(item, original)
        elif isinstance(value, str):
            assert isinstance(shown, str)
        else:
            assert shown == value

    same_shape(obj, public)
