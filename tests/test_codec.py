"""The event codec (issue 19, part 5): every event to a versioned dict and back.

A round trip of every kind is property-tested through real JSON text (what
history, jsonl and other nodes carry); what the codec refuses is refused with
a CodecError naming the key; jsonl's objects are the codec's public form.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatd import codec
from chatd.codec import CodecError, from_dict, to_dict
from chatd.events import (
    EVENT_TYPES,
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
from chatd.protocols.jsonl import RENDERER as JSONL

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
        assert obj[key] == public[key], key


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
