"""docs/api.md against the code, both ways: nothing public undocumented, nothing stale."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import chatd
from chatd import events
from chatd.chat import RoomTable
from chatd.plugins import PluginHost, PluginTask
from chatd.protocols import ChatProtocol, ProtocolSpec
from chatd.store import Store

API = (Path(__file__).resolve().parent.parent / "docs" / "api.md").read_text()

#: Section heading -> the class it documents, and whether every public name must appear.
SECTIONS = {
    "Server": (chatd.Server, True),
    "Client": (chatd.Client, True),
    "Room": (chatd.Room, True),
    "RoomTable": (RoomTable, True),
    "Event": (chatd.Event, True),
    "Source": (chatd.Source, True),
    "Timer": (chatd.Timer, True),
    "Task": (PluginTask, True),
    "Stash and StashKey": (chatd.Stash, True),
    "Command": (chatd.Command, True),
    "Setting": (chatd.Setting, True),
    "Store": (Store, True),
    "ProtocolSpec": (ProtocolSpec, True),
    "ChatProtocol": (ChatProtocol, False),
    "PluginHost": (PluginHost, False),
}


def section(heading: str) -> str:
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", API, re.M | re.S)
    assert match, f"docs/api.md has no section '## {heading}'"
    return match.group(1)


def documented_names(text: str) -> set[str]:
    """The names in the first table of a section (``| `name(args)` | what |`` rows)."""
    table = re.search(r"^\|.*?(?=\n\n|\Z)", text, re.M | re.S)
    assert table, "no table"
    names = set()
    for cell in re.findall(r"^\| `([^`]+)`", table.group(0), re.M):
        if cell.startswith("stash["):
            continue  # the mapping protocol row of Stash
        names.add(re.split(r"[(\[ ]", cell, maxsplit=1)[0])
    return names


def public_names(cls: type) -> set[str]:
    names = {n for n in dir(cls) if not n.startswith("_")}
    if cls is PluginHost:
        names |= {"infos", "error_counts", "slow_counts", "current_plugin"}  # instance attributes
    if cls is ChatProtocol:
        names |= {"renderer"}  # declared here, set by every subclass
    if cls is PluginTask:
        names |= {"plugin", "fn", "args", "callback", "on_error", "cancelled", "done"}
    return names


@pytest.mark.parametrize("heading", SECTIONS)
def test_every_public_name_is_documented_and_every_documented_name_exists(heading):
    cls, complete = SECTIONS[heading]
    documented = documented_names(section(heading))
    public = public_names(cls)
    missing = documented - public
    assert not missing, f"docs/api.md '{heading}' documents names {cls.__name__} lacks: {missing}"
    if complete:
        undocumented = public - documented
        assert not undocumented, f"{cls.__name__} has names docs/api.md lacks: {undocumented}"


def test_every_event_kind_is_in_the_reference():
    table = section("Event")
    for kind, cls in events.EVENT_TYPES.items():
        row = re.search(rf"^\| `{cls.__name__}` \| `{kind}` \| ([^|]+) \|", table, re.M)
        assert row, kind
        assert row.group(1).startswith("yes") == cls.carries_user_text, (kind, row.group(1))


def test_every_exception_and_export_named_here_is_importable_from_chatd():
    for name in documented_names(section("Exceptions")):
        assert hasattr(chatd, name), name
    for name in ("Client", "Room", "Server", "Event", "Source", "Timer", "Stash", "StashKey",
                 "Command", "Setting", "hookimpl", "hookspec", "events"):
        assert name in chatd.__all__, name


def test_the_tutorials_in_process_test_works_as_written(tmp_path, monkeypatch):
    """docs/plugins.md section 6: the InProcessChat example, run against step 1's plugin."""
    tutorial = (Path(__file__).resolve().parent.parent / "docs" / "plugins.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", tutorial, flags=re.DOTALL)
    (tmp_path / "hello.py").write_text(blocks[0])
    example = next(b for b in blocks if "InProcessChat(hello)" in b)
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace: dict = {}
    exec(compile(example, "docs/plugins.md", "exec"), namespace)
    namespace["test_hello_in_process"]()
