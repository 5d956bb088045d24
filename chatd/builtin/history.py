"""Built-in plugin *history*: a room remembers what was said in it.

* Every message, action and topic said in a room is stored (with joins, parts
  and quits too if ``joins: true``), with its server time, in the ``history``
  table of the store (``storage.path``, SQLite).
* Joining a room shows its last ``replay_lines`` lines (20; only those of the
  last ``replay_hours``, 24), each with its time, between two marker lines::

      *** history of #lobby: the last 2 lines
      [12:01] <bob> lunch?
      [12:02] * carol nods
      *** end of history; live chat follows

  ``/set history off`` turns that off for you (bots), and a listener with
  ``history_replay: false`` starts its clients with it off, before the join at
  connect; ``/history [N]`` and
  ``/history #room [N]`` show the last N lines of a room you are in (at most
  ``max_lines``, 200), whenever you ask; ``/history TARGET WHICH REF [REF] N``
  picks them around a point instead (IRCv3 ``CHATHISTORY``'s selectors:
  ``latest``, ``before``, ``after``, ``around``, ``between``; a point is
  ``msgid=ID``, an event id, or ``timestamp=2026-12-07T03:00:00.000Z``; ``*``
  after ``latest``: now).
* Old lines go: past ``retention_days`` (30) or past ``retention_lines`` (10,000)
  per room, deleted in the background every ``retention_interval_seconds``.
* Private messages are stored only with ``private: true``, and only between
  two identified users (registered nicks, the *accounts* plugin): ``/history
  NICK [N]`` shows your conversation with NICK, to the two of you alone.
* ``rooms: {"#ops": {store: false}}`` keeps a room out of history;
  ``replay_lines`` may be set per room too.  ``store: false`` at the top turns
  history off for the whole server.

The loop never waits for the disk: lines are written through the store's
queue, and a room's recent lines are kept in memory, so a join reads nothing.
Only ``/history`` beyond those reads the database, bounded by
``storage.read_timeout_seconds``.  Replayed lines are events with ``replay``
set: each protocol marks them its own way (times for ``nc``, ``"history":
true`` for jsonl), with the id the event had when it was live (stored with
the line; at startup the server's event ids are moved past the largest one
stored, so replayed and live ids are one increasing sequence across
restarts).  Everything here uses the public plugin API.
"""

from __future__ import annotations

import calendar
import dataclasses
import functools
import logging
import operator
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from chatd import (
    Client,
    Command,
    CommandError,
    Event,
    Person,
    Room,
    Server,
    Setting,
    StashKey,
    StoreUnavailable,
    UsageError,
    hookimpl,
)
from chatd.chat.nicks import nick_key
from chatd.codec import SCHEMA_VERSION, CodecError, from_dict
from chatd.events import Join, Part, PrivateMessage, Quit
from chatd.replies import HistoryMarker

from .sections import Range, checked_value, section_settings

log = logging.getLogger("chatd.history")

#: The schema, one step per version; shipped steps never change, new ones are appended.
SCHEMA = [
    """
    CREATE TABLE history (
        seq INTEGER PRIMARY KEY,   -- order of the events, unique across restarts
        room TEXT NOT NULL,        -- the room's key (lowercase name)
        time REAL NOT NULL,        -- server time, seconds since the epoch
        kind TEXT NOT NULL,        -- message, action, topic, join, part, quit
        nick TEXT NOT NULL,
        target TEXT NOT NULL,      -- the room's name as it was written
        text TEXT NOT NULL
    );
    CREATE INDEX history_by_room ON history (room, seq);
    """,
    """
    -- The event's id when it was live (jsonl's "id"), so a replayed line carries the
    -- same one; NULL in rows from before this step, whose seq stands in for it.
    ALTER TABLE history ADD COLUMN event INTEGER;
    """,
    """
    -- Who said it, beyond the nick: the event codec's node, user (ident@host: its two
    -- parts) and account of the source (chatd.codec).  host is a cloak, never an
    -- address (NULL when cloaks are off).  NULL in rows from before this step.
    ALTER TABLE history ADD COLUMN node TEXT;
    ALTER TABLE history ADD COLUMN ident TEXT;
    ALTER TABLE history ADD COLUMN host TEXT;
    ALTER TABLE history ADD COLUMN account TEXT;
    """,
    """
    -- 1 for a user's notice (a message or private message with the codec's "notice"),
    -- NULL otherwise and in rows from before this step.
    ALTER TABLE history ADD COLUMN notice INTEGER;
    """,
]

_SPOKEN = frozenset({"message", "action", "topic"})
#: What an ignore list hides (what someone says; not joins, quits or topics).
_IGNORABLE = frozenset({"message", "action"})
_PRESENCE = frozenset({"join", "part", "quit"})

DEFAULTS: dict[str, Any] = {
    "store": True,
    "joins": False,
    "private": False,
    "replay_lines": 20,
    "replay_hours": 24.0,
    "max_lines": 200,
    "retention_days": 30.0,
    "retention_lines": 10_000,
    "retention_interval_seconds": 600.0,
}

#: The values each number setting may take (a wrong one stops the server with its key):
#: the lines a room keeps in memory, times in the past that must stay dates, SQL
#: parameters that must fit 64 bits, and a timer.
RANGES = {
    "replay_lines": Range(0, 1000),
    "replay_hours": Range(0, 24 * 366 * 100),
    "max_lines": Range(0, 10_000, above=True),
    "retention_days": Range(0, 366 * 100, above=True),
    "retention_lines": Range(0, 1_000_000_000, above=True),
    "retention_interval_seconds": Range(0, 86400.0, above=True),
}

#: One stored line: (seq, time, kind, nick, target, text, event id, node, ident, host,
#: account, notice): the fields of the event codec's form (:mod:`chatd.codec`: ``type``,
#: ``from``, ``room``/``to``, ``id``, ``user`` as its two parts, ``notice``...) that
#: history keeps; read back with ``codec.from_dict``.
Record = tuple[int, float, str, str, str, str, int, str | None, str | None, str | None,
               str | None, int | None]

#: The columns of a Record, as read back (old rows have no event id: their seq stands in).
_READ = ("SELECT seq, time, kind, nick, target, text, coalesce(event, seq), node, ident, "
         "host, account, notice FROM history ")

#: How ``/history TARGET WHICH REF [REF] N`` picks lines (IRCv3 ``CHATHISTORY``'s names).
SELECTORS = frozenset({"latest", "before", "after", "around", "between"})

STATE: StashKey[HistoryState] = StashKey()
#: Set on a client that said ``/set history off`` (True) or ``on`` (False); absent: the
#: listener's ``history_replay`` decides.
OPT_OUT: StashKey[bool] = StashKey()


class RoomLines:
    """A room's recent lines in memory, oldest first: the newest ``keep``, and every
    line not yet on disk (so ``/history`` never shows a gap while the writer is
    behind or the disk is failing).

    ``loaded`` says whether older lines from the database were put in front
    yet (done on first need, so a restart does not read every room at once).
    """

    __slots__ = ("keep", "lines", "loaded", "written")

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.lines: deque[Record] = deque()
        #: The store's write number of each line in ``lines`` (0: loaded from disk).
        self.written: deque[int] = deque()
        self.loaded = False

    def add(self, record: Record, number: int, done: int) -> None:
        """Append a line written as store write ``number``; forget the oldest lines
        beyond ``keep`` that are on disk (``done``: the store's count of writes done)."""
        self.lines.append(record)
        self.written.append(number)
        lines, written = self.lines, self.written
        while len(lines) > self.keep and written[0] <= done:
            lines.popleft()
            written.popleft()

    def put_in_front(self, rows: list[Record]) -> None:
        """Lines read from disk, newest first, older than every line held."""
        for row in rows[: max(0, self.keep - len(self.lines))]:
            self.lines.appendleft(row)
            self.written.appendleft(0)


class HistoryState:
    """The plugin's state, kept in ``server.stash``."""

    def __init__(self, settings: Mapping[str, Any], next_seq: int) -> None:
        self.settings = settings
        self.next_seq = next_seq
        self.rooms: dict[str, RoomLines] = {}
        #: Dropped accounts whose private lines are not deleted on disk yet: the
        #: first seq after the drop, and the store's write number of the delete.
        self.dropped: dict[str, tuple[int, int]] = {}
        self.timer: Any = None
        #: Looked up per line, so worked out once: rooms kept out, and whether any is.
        self.stored = bool(settings["store"])
        self.joins = bool(settings["joins"])
        self.unstored = frozenset(key for key, overrides in settings["rooms"].items()
                                  if overrides.get("store") is False)
        self.keep_lines = self.keep()
        #: Whether the host part of a user is a cloak (``server.cloaks_addresses``): a
        #: real address is never stored (docs/persistence.md), only the ident before it.
        self.cloaked = True

    def room_setting(self, room_key: str, name: str) -> Any:
        per_room = self.settings["rooms"].get(room_key)
        if per_room is None or name not in per_room:
            return self.settings[name]
        return per_room[name]

    def keep(self) -> int:
        """How many lines each room keeps in memory: the most a join can show."""
        counts = [self.settings["replay_lines"]] + [
            overrides["replay_lines"] for overrides in self.settings["rooms"].values()
            if "replay_lines" in overrides
        ]
        return max(1, *counts)


# -- configuration ------------------------------------------------------------------------


def _settings(server: Server) -> dict[str, Any]:
    """``plugins.history``, checked: a wrong value stops the server with its key."""
    settings = section_settings(server, "history", DEFAULTS, RANGES, nested=("rooms",))
    rooms: dict[str, dict[str, Any]] = {}
    for name, overrides in (settings.get("rooms") or {}).items():
        where = f"plugins.history.rooms.{name}"
        if not isinstance(name, str) or not name.startswith("#"):
            raise server.config.error(where, "expected a room name starting with #")
        server.config.check_text(where, name, kind="name")
        if not isinstance(overrides, Mapping):
            raise server.config.error(where, "expected a mapping such as {store: false}")
        checked = {}
        for key, value in overrides.items():
            if key not in ("store", "replay_lines"):
                raise server.config.error(f"{where}.{key}", "a room may set store, replay_lines")
            checked[key] = checked_value(server, f"{where}.{key}", DEFAULTS[key], value,
                                         RANGES.get(key))
        rooms[name.lower()] = checked
    settings["rooms"] = rooms
    return settings


# -- startup and shutdown -----------------------------------------------------------------


@hookimpl
def chatd_startup(server: Server) -> None:
    settings = _settings(server)
    store = server.store
    store.migrate("history", SCHEMA)
    clock = int(time.time() * 1_000_000)
    try:
        rows = store.read("SELECT max(seq), max(coalesce(event, seq)) FROM history")
        last, last_event = rows[0][0] or 0, rows[0][1] or 0
    except StoreUnavailable:
        # Unknown: the clock (microseconds since the epoch) keeps clear of both.
        last = last_event = clock
    # Past the newest stored line: increasing across restarts.
    state = HistoryState(settings, max(last + 1, clock))
    state.cloaked = server.cloaks_addresses
    # The events of this run come after every one stored, so the ids of replayed
    # lines and of live ones are one increasing sequence.
    server.continue_event_ids(last_event)
    previous: HistoryState | None = server.stash.get(STATE)
    if previous is not None:  # a reload: a dropped nick's lines stay hidden until deleted
        state.dropped = previous.dropped
    server.stash[STATE] = state
    if settings["store"]:
        state.timer = server.call_later(1.0, _retention, server)


@hookimpl
def chatd_shutdown(server: Server) -> None:
    state = server.stash.get(STATE)
    if state is not None and state.timer is not None:
        state.timer.cancel()


def _retention(server: Server) -> None:
    """Delete what is past its age or past a room's line count (on the writer thread)."""
    state: HistoryState = server.stash[STATE]
    settings = state.settings
    cutoff = time.time() - settings["retention_days"] * 86400
    keep = settings["retention_lines"]

    def prune(conn: Any) -> None:
        # Lines are numbered in the order they were said, so the old ones are the
        # lowest numbers: found by walking from the oldest (no index on time to
        # keep up at every insert), deleted by number.
        conn.execute(
            "DELETE FROM history WHERE seq < coalesce((SELECT seq FROM history "
            "WHERE time >= ? ORDER BY seq LIMIT 1), 9223372036854775807)", (cutoff,),
        )
        crowded = conn.execute(
            "SELECT room FROM history GROUP BY room HAVING count(*) > ?", (keep,)
        ).fetchall()
        for (room,) in crowded:
            conn.execute(
                "DELETE FROM history WHERE room = ? AND seq <= (SELECT seq FROM history "
                "WHERE room = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)", (room, room, keep),
            )

    server.store.write(prune)
    state.timer = server.call_later(settings["retention_interval_seconds"], _retention, server)


# -- recording ----------------------------------------------------------------------------


_COLUMNS = ("seq", "room", "time", "kind", "nick", "target", "text", "event", "node",
            "ident", "host", "account", "notice")


def _record(server: Server, event: Event, kind: str, room_name: str) -> None:
    """Keep one line: in the room's memory at once, on disk through the store's queue.
    Runs for every line said in a room, so it does as little as it can."""
    state: HistoryState | None = server.stash.get(STATE)
    if state is None or not state.stored:
        return
    key = room_name.lower()
    if key in state.unstored:
        return
    seq = state.next_seq
    state.next_seq = seq + 1
    source = event.source
    # The codec's fields, read straight from the event: to_dict() would cost the loop
    # 0.7 us a line instead of 0.05 (measured), on the path of every line said.
    record = (seq, event.time, kind, source.nick, room_name, event.text, event.id,
              source.node or None, source.ident or None,
              source.host or None if state.cloaked else None, source.account,
              1 if kind == "message" and event.notice else None)  # type: ignore[attr-defined]
    lines = state.rooms.get(key)
    if lines is None:
        lines = state.rooms[key] = RoomLines(state.keep_lines)
    store = server.store
    number = store.insert("history", _COLUMNS, (seq, key, *record[1:]))
    lines.add(record, number, store.done)


@hookimpl
def chatd_message(client: Client, text: str, event: Event) -> None:
    kind = event.kind
    if kind in _SPOKEN and event.target.startswith("#"):
        _record(client.server, event, kind, event.target)
    elif isinstance(event, PrivateMessage) and client.account is not None:
        _record_private(client, event)


def _pair(one: str, other: str) -> str:
    """The history key of the conversation between two accounts (the same both ways)."""
    first, second = sorted((nick_key(one), nick_key(other)))
    return f"~{first}~{second}"


def _record_private(client: Client, event: PrivateMessage) -> None:
    """A private message between two identified users, if the server keeps them, under
    the two accounts' names: in memory only until it is on disk (``/history NICK``
    reads the file), so a conversation costs no memory once written."""
    server = client.server
    state: HistoryState | None = server.stash.get(STATE)
    if state is None or not state.stored or not state.settings["private"]:
        return
    # The recipient as the presence answer found it (another node's user included).
    to_account = event.to_account
    if to_account is None or event.to_session == client.session:
        return
    seq = state.next_seq
    state.next_seq = seq + 1
    assert client.account is not None
    key = _pair(client.account, to_account)
    source = event.source
    record = (seq, event.time, "privmsg", client.account, to_account, event.text,
              event.id, source.node or None, source.ident or None,
              source.host or None if state.cloaked else None, client.account,
              1 if event.notice else None)
    store = server.store
    number = store.insert("history", _COLUMNS, (seq, key, *record[1:]))
    _private_lines(state, key).add(record, number, store.done)


def _private_lines(state: HistoryState, key: str) -> RoomLines:
    lines = state.rooms.get(key)
    if lines is None:
        lines = state.rooms[key] = RoomLines(0)  # nothing kept but what is not on disk
        lines.loaded = True
    return lines


@hookimpl
def chatd_account_dropped(server: Server, account: str) -> None:
    """The private conversations of a dropped nick go with it: whoever registers the
    name next must read nothing of the old owner's (deleted from memory at once and
    on disk by the writer; ``/history NICK`` skips what the delete has not reached)."""
    state: HistoryState | None = server.stash.get(STATE)
    if state is None:
        return
    first, last = f"~{nick_key(account)}~", f"~{nick_key(account)}"  # see _pair
    for key in [key for key in state.rooms if key.startswith(first)
                or (key.startswith("~") and key.endswith(last))]:
        del state.rooms[key]
    number = server.store.write(
        "DELETE FROM history WHERE kind = 'privmsg' AND (substr(room, 1, ?) = ? "
        "OR substr(room, -?) = ?)", (len(first), first, len(last), last))
    state.dropped[nick_key(account)] = (state.next_seq, number)


def _after_drops(server: Server, state: HistoryState, accounts: tuple[str, str],
                 records: list[Record]) -> list[Record]:
    """``records`` of a private conversation without the lines from before either
    account was dropped, while the delete is not on disk yet."""
    done = server.store.done
    for key in [key for key, (_, number) in state.dropped.items() if 0 < number <= done]:
        del state.dropped[key]
    floor = max((state.dropped.get(nick_key(name), (0, 0))[0] for name in accounts),
                default=0)
    return [record for record in records if record[0] >= floor] if floor else records


@hookimpl
def chatd_room_part(client: Client, room: Room, reason: str, event: Part) -> None:
    if _joins_kept(client.server):
        _record(client.server, event, "part", room.name)


@hookimpl
def chatd_client_disconnect(client: Client, reason: str, event: Quit) -> None:
    if client.announced and _joins_kept(client.server):
        for name in event.rooms:
            _record(client.server, event, "quit", name)


def _joins_kept(server: Server) -> bool:
    state: HistoryState | None = server.stash.get(STATE)
    return state is not None and state.joins


# -- replay -------------------------------------------------------------------------------


@hookimpl(tryfirst=True)  # the snapshot comes before anything other join hooks say
def chatd_room_join(client: Client, room: Room, event: Join) -> None:
    server = client.server
    state: HistoryState | None = server.stash.get(STATE)
    if state is None:
        return
    key = room.name.lower()
    count = state.room_setting(key, "replay_lines")
    # What was said before this join, taken now: what is said after it arrives live.
    shown = [] if count <= 0 or _opted_out(client) else _recent(server, state, key, count)
    if state.joins:
        _record(server, event, "join", room.name)
    if shown:
        # After the command that joined has had its say ("joined #dev", the topic).
        server.call_soon(_show, client, room.name, shown, False)


def _recent(server: Server, state: HistoryState, key: str, count: int) -> list[Record]:
    """The last ``count`` lines of the room, newer than ``replay_hours``."""
    lines = _loaded(server, state, key)
    since = time.time() - state.settings["replay_hours"] * 3600
    return [record for record in list(lines.lines)[-count:] if record[1] >= since]


def _loaded(server: Server, state: HistoryState, key: str) -> RoomLines:
    """The room's lines in memory, with the older stored ones put in front once."""
    lines = state.rooms.get(key)
    if lines is None:
        lines = state.rooms[key] = RoomLines(state.keep_lines)
    if not lines.loaded:
        before = lines.lines[0][0] if lines.lines else state.next_seq
        try:
            rows = server.store.read(
                _READ + "WHERE room = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
                (key, before, lines.keep),
            )
        except StoreUnavailable:
            return lines  # this time without the stored ones; tried again next join
        lines.loaded = True
        lines.put_in_front(rows)
    return lines


def _show(client: Client, room_name: str, records: list[Record], asked: bool,
          left_out: int = 0) -> None:
    """``records`` between two markers (:class:`chatd.replies.HistoryMarker`);
    ``left_out``: lines from people the client ignores that are not among them (the
    first marker says how many).  Nothing at all when a replay on joining finds no
    line; ``/history`` is answered even then (the line protocol: ``no history in``)."""
    if not client.connected:
        return
    events = _events(records)
    if not events and not asked:
        return
    live = not asked
    client.reply(HistoryMarker, edge="start", room=room_name, count=len(events),
                 left_out=left_out, live=live)
    for event in events:
        client.deliver(event)
    client.reply(HistoryMarker, edge="end", room=room_name, count=len(events),
                 left_out=left_out, live=live)


def _events(records: list[Record]) -> list[Event]:
    """The stored lines as events; a row the codec cannot read is logged and left out
    (a damaged database costs that line, not the whole replay)."""
    events = []
    for record in records:
        try:
            events.append(_event(record))
        except CodecError as exc:
            log.warning("history line %s left out: %s", record[0], exc)
    return events


def _event(record: Record) -> Event:
    """The stored line as the event it was, with its id (``replay`` set; its session is
    over, so ``client`` is 0), read back through the event codec."""
    _seq, when, kind, nick, target, text, event_id, node, ident, host, account, notice = record
    data: dict[str, Any] = {"v": SCHEMA_VERSION, "type": kind, "id": event_id, "time": when,
                            "from": nick, "client": 0, "text": text, "history": True}
    if notice:
        data["notice"] = True
    if node is not None:
        data["node"] = node
    if ident is not None or host is not None:
        data["user"] = f"{ident or ''}@{host or ''}"
    if account is not None:
        data["account"] = account
    if kind == "quit":
        data["rooms"] = [target]  # one row per room the quit was announced in
    elif target:
        data["room" if target.startswith("#") else "to"] = target
    return from_dict(data)  # type: ignore[no-any-return]


# -- picking lines around a point (/history TARGET WHICH REF [REF] N) --------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Ref:
    """A point in a history: a line's event id (``msgid=ID``: the id jsonl shows and IRC's
    ``msgid``) or a time (``timestamp=``: seconds since the epoch here)."""

    kind: str  # "msgid" or "timestamp"
    value: float

    def bound(self, op: str) -> Bound:
        """``line op self`` as the SQL condition and the test of a line held in memory."""
        column, index = ("coalesce(event, seq)", 6) if self.kind == "msgid" else ("time", 1)
        compare = _OPS[op]
        value = self.value
        return Bound(f"{column} {op} ?", value, lambda record: compare(record[index], value))


@dataclasses.dataclass(frozen=True, slots=True)
class Bound:
    sql: str
    value: float
    test: Callable[[Record], bool]


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclasses.dataclass(frozen=True, slots=True)
class Query:
    """``WHICH REF [REF] N`` of ``/history TARGET WHICH ...`` (None as a ref: ``*``)."""

    which: str
    refs: tuple[Ref | None, ...]
    wanted: int


def _is_query(words: list[str]) -> bool:
    """Whether ``words`` (after the target) are ``WHICH REF [REF] N``."""
    return len(words) >= 3 and words[0].lower() in SELECTORS


def _parse_query(client: Client, state: HistoryState, words: list[str]) -> Query:
    """``WHICH REF [REF] N`` checked: refs ``msgid=ID``, ``timestamp=ISO``, ``*`` (latest
    only); ``between`` takes two refs; N as ``/history``'s."""
    which = words[0].lower()
    count = 3 if which == "between" else 2
    if len(words) != count + 1:
        raise UsageError(f"/history TARGET {which} " +
                         ("REF REF N" if which == "between" else "REF N"))
    refs = tuple(_parse_ref(word, star=which == "latest") for word in words[1:count])
    return Query(which, refs, _wanted(client, state, words[count:]))


def _parse_ref(word: str, *, star: bool) -> Ref | None:
    if word == "*" and star:
        return None
    kind, _, value = word.partition("=")
    kind = kind.lower()
    if kind == "msgid":
        value = value.partition("-")[0]  # IRC's id of a piece of a split line: its line's
    if kind == "msgid" and value.isascii() and value.isdigit() and len(value) < 19:
        return Ref("msgid", int(value))
    if kind == "timestamp":
        when = parse_timestamp(value)
        if when is not None:
            return Ref("timestamp", when)
    raise UsageError(f"not a point in history: {word[:40]} (msgid=ID, "
                     "timestamp=YYYY-MM-DDThh:mm:ss.sssZ" + (", or *)" if star else ")"))


def parse_timestamp(text: str) -> float | None:
    """``2026-12-07T03:00:00.000Z`` (IRCv3 server-time; the fraction optional) as seconds
    since the epoch, or None."""
    body = text[:-1] if text.endswith("Z") else None
    if body is None:
        return None
    whole, _, fraction = body.partition(".")
    if fraction and not (fraction.isascii() and fraction.isdigit() and len(fraction) <= 6):
        return None
    try:
        parsed = time.strptime(whole, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return None
    return calendar.timegm(parsed) + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def _selected(server: Server, lines: Iterable[Record], key: str, query: Query) -> list[Record]:
    """The lines of ``key`` ``query`` picks, oldest first (``lines``: those held in memory,
    the database for the rest; a line in both is one line)."""
    held = list(lines)
    which, refs, wanted = query.which, query.refs, query.wanted
    first = refs[0]
    if which == "latest":
        bounds = [] if first is None else [first.bound(">")]
        return _range(server, held, key, bounds, wanted, newest=True)
    assert first is not None
    if which == "before":
        return _range(server, held, key, [first.bound("<")], wanted, newest=True)
    if which == "after":
        return _range(server, held, key, [first.bound(">")], wanted, newest=False)
    if which == "around":  # the line at the point (if any) and those nearest it
        after = wanted // 2
        return (_range(server, held, key, [first.bound("<=")], wanted - after, newest=True)
                + _range(server, held, key, [first.bound(">")], after, newest=False))
    second = refs[1]
    assert second is not None
    if first.kind != second.kind or first.value <= second.value:  # forward from the first
        return _range(server, held, key, [first.bound(">"), second.bound("<")], wanted,
                      newest=False)
    return _range(server, held, key, [first.bound("<"), second.bound(">")], wanted,
                  newest=True)


def _range(server: Server, held: list[Record], key: str, bounds: list[Bound], wanted: int,
           *, newest: bool) -> list[Record]:
    """At most ``wanted`` lines of ``key`` within ``bounds``, the newest or the oldest of
    them, oldest first.  One bounded read (``wanted`` rows, the store's read timeout)."""
    if wanted <= 0:
        return []
    where = " AND ".join(["room = ?", *(bound.sql for bound in bounds)])
    rows = server.store.read(
        _READ + f"WHERE {where} ORDER BY seq {'DESC' if newest else 'ASC'} LIMIT ?",
        (key, *(bound.value for bound in bounds), wanted))
    merged = {row[0]: tuple(row) for row in rows}
    for record in held:
        if all(bound.test(record) for bound in bounds):
            merged[record[0]] = record
    ordered = sorted(merged.values())
    return ordered[-wanted:] if newest else ordered[:wanted]  # type: ignore[return-value]


def _unignored(records: list[Record], ignoring: frozenset[str]) -> tuple[list[Record], int]:
    """``records`` without the lines of people the client ignores, and how many went."""
    if not ignoring:
        return records, 0
    shown = [r for r in records if not (r[2] in _IGNORABLE and nick_key(r[3]) in ignoring)]
    return shown, len(records) - len(shown)


# -- commands and settings ----------------------------------------------------------------


def cmd_history(client: Client, args: str) -> None:
    server = client.server
    state: HistoryState | None = server.stash.get(STATE)
    if state is None or not state.settings["store"]:
        raise CommandError("history is turned off on this server", code="unavailable")
    words = args.split()
    if words and not words[0].startswith("#") and not _is_count(words[0]) \
            and not _is_query(words):
        _private_history(client, state, words)  # a nick never starts with a digit or -
        return
    room = client.room
    if words and words[0].startswith("#"):
        room = server.rooms.get(words.pop(0))
        if room is None or room not in client.rooms:
            raise CommandError("you can see the history of rooms you are in",
                               code="not_in_room")
    if room is None:
        raise CommandError("you are not in a room", code="not_in_room")
    key = room.name.lower()
    query = _parse_query(client, state, words) if _is_query(words) else None
    wanted = 0 if query is not None else _wanted(client, state, words)
    try:
        if query is not None:
            records, left_out = _unignored(
                _selected(server, _loaded(server, state, key).lines, key, query),
                client.ignoring)
        else:
            records, left_out = _visible(server, state, key, wanted, client.ignoring)
    except StoreUnavailable as exc:
        raise CommandError(f"history is unavailable right now ({exc})",
                           code="unavailable") from None
    _show(client, room.name, records, True, left_out)


def _is_count(word: str) -> bool:
    """Whether ``word`` is meant as the N of ``/history [N]`` (``5``, ``-1``, ``+3``)."""
    return word[:1].isdigit() or (word[:1] in "+-" and word[1:2].isdigit())


def _wanted(client: Client, state: HistoryState, words: list[str]) -> int:
    """The N of ``/history ... [N]``, clamped to ``max_lines`` (the client is told)."""
    if len(words) > 1:
        raise UsageError()
    most = state.settings["max_lines"]
    try:
        wanted = int(words[0]) if words else 20
    except ValueError:
        raise UsageError(f"not a number of lines: {words[0]}") from None
    if wanted < 1:
        raise UsageError("N is a number of lines, 1 or more")
    if wanted > most:
        client.notice(f"showing the last {most} lines (the most /history shows at once)")
        wanted = most
    return wanted


def _private_history(client: Client, state: HistoryState, words: list[str]) -> None:
    """``/history NICK [N]``: your private conversation with NICK, if the server keeps it."""
    if not state.settings["private"]:
        raise CommandError("private messages are not kept on this server", code="unavailable")
    if client.account is None:
        raise CommandError("identify first: a private history belongs to your account",
                           code="not_identified")
    nick = words.pop(0)
    wanted: int | Query = (_parse_query(client, state, words) if _is_query(words)
                           else _wanted(client, state, words))
    # Whoever has the nick now, on any node: its account names the conversation.
    client.server.ask_whois(client, nick, functools.partial(
        _private_history_of, client, state, nick, wanted))


def _private_history_of(client: Client, state: HistoryState, nick: str,
                        wanted: int | Query, other: Person | None) -> None:
    """``/history NICK``, once the presence answer says who has the nick (``other``; None:
    nobody now, and the conversation is the one with the account named ``nick``)."""
    if client.account is None:  # it logged out while the answer came
        raise CommandError("identify first: a private history belongs to your account",
                           code="not_identified")
    server = client.server
    account = other.account if other is not None and other.account is not None else nick
    key = _pair(client.account, account)
    held = _private_lines(state, key).lines
    try:
        records = (_selected(server, held, key, wanted) if isinstance(wanted, Query)
                   else _stored(server, state, key, wanted))
    except StoreUnavailable as exc:
        raise CommandError(f"history is unavailable right now ({exc})",
                           code="unavailable") from None
    records = _after_drops(server, state, (client.account, account), records)
    events = _events(records)
    client.reply(HistoryMarker, edge="start", nick=nick, count=len(events))
    me = nick_key(client.account)
    own = client.source
    for event in events:
        if nick_key(event.source.nick) == me:  # the copy of what it sent: "-> *bob* ..."
            source = dataclasses.replace(event.source, client_id=own.client_id, node=own.node)
            event = dataclasses.replace(event, source=source)
        client.deliver(event)
    client.reply(HistoryMarker, edge="end", nick=nick, count=len(events))


def _visible(server: Server, state: HistoryState, key: str, wanted: int,
             ignoring: frozenset[str]) -> tuple[list[Record], int]:
    """The last ``wanted`` lines of a room the client sees, and how many lines from people
    it ignores were left out on the way.

    An ignored person's lines would not be shown (the view hides them), so older ones
    are read in their place: ``/history 5`` shows five lines.  The look back is
    bounded (``wanted + max_lines`` lines, read in doubling steps) so that ignoring a
    prolific sender cannot make one command read the whole table.
    """
    if not ignoring:
        return _stored(server, state, key, wanted), 0
    limit = wanted + state.settings["max_lines"]
    scan = wanted
    while True:
        records = _stored(server, state, key, scan)
        shown = [r for r in records if not (r[2] in _IGNORABLE and nick_key(r[3]) in ignoring)]
        if len(shown) >= wanted:
            shown = shown[-wanted:]
            records = [r for r in records if r[0] >= shown[0][0]]  # older: not wanted anyway
        elif len(records) == scan and scan < limit:
            scan = min(limit, scan * 2)  # more history, and room to look further back
            continue
        return shown, len(records) - len(shown)


def _stored(server: Server, state: HistoryState, key: str, wanted: int) -> list[Record]:
    """The last ``wanted`` lines of a room: memory first, the database for the rest."""
    lines = list(_loaded(server, state, key).lines)
    if len(lines) >= wanted:
        return lines[-wanted:]
    before = lines[0][0] if lines else state.next_seq
    rows = server.store.read(
        _READ + "WHERE room = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
        (key, before, wanted - len(lines)),
    )
    return [*reversed(rows), *lines]


def _opted_out(client: Client) -> bool:
    """No replay on joining: the client said ``/set history off``, or its protocol asks
    for history itself (``client.replays_history``: IRC's ``draft/chathistory``), or it
    came through a listener with ``history_replay: false``, and it has not said
    ``/set history on``."""
    choice = client.stash.get(OPT_OUT)
    if choice is not None:
        return choice
    if not client.replays_history:
        return True  # IRC's draft/chathistory: the client asks for what it wants
    listener = client.listener
    # A listener option of line and jsonl (their registration); a protocol without it
    # replays, as they do by default.
    return listener is not None and not listener.options.get("history_replay", True)


def _set_history(client: Client, value: str) -> None:
    client.stash[OPT_OUT] = value == "off"


HISTORY_SETTING = Setting(
    "history", ("on", "off"), lambda client: "off" if _opted_out(client) else "on",
    _set_history, "the recent lines of a room when you join it",
)


@hookimpl
def chatd_settings() -> list[Setting]:
    return [HISTORY_SETTING]


@hookimpl
def chatd_commands() -> list[Command]:
    return [
        Command(
            "history", cmd_history, "/history [#room|NICK] [N]",
            "the last N lines of a room you are in (default 20)",
            "Shows what was said, with the time of each line, between two marker lines.\n"
            "/history TARGET WHICH REF [REF] N picks N lines around a point instead:\n"
            "WHICH is latest, before, after, around or between (two points), a point\n"
            "msgid=ID (a line's id) or timestamp=2026-12-07T03:00:00.000Z (UTC), or *\n"
            "after latest (now); TARGET a room you are in, or a NICK.\n"
            "Lines from people you /ignore are left out (the first line says how many)\n"
            "and older ones shown in their place.\n"
            "/set history off stops the lines shown when you join a room. /history NICK\n"
            "shows your private messages with NICK, if the server keeps them (both of\n"
            "you identified).",
        ),
    ]
