"""What one chat line costs chatd, stage by stage: an in-process micro-benchmark.

    python bench/stages.py                  # the full run (~1 minute on 2 cores)
    python bench/stages.py --quick          # tiny counts: the CI check that it still works
    python bench/stages.py --json out.json  # the numbers, with the machine and commit

chatd is built in this process the way ``chatd/server.py`` builds it, on the config
``bench/run.py`` benchmarks (:func:`run.write_chatd_config`: the shipped config.yaml,
built-in plugins as shipped, history on, SQLite in memory, flood limits raised), so
every stage below is chatd's own object or function, called as the hot path calls it,
not a copy.  101 clients speak the line protocol over real TCP sockets on loopback
(chatd's ``Connection``, registered with its ``Reactor``): one sender and 100 members
of ``#lobby``; the members' peers are drained between timed blocks, outside the timing.

Each stage is timed as microseconds per line: the best of ``--repeat`` runs of a loop
of ``--lines`` lines, ``time.perf_counter_ns`` (wall) and ``time.process_time_ns``
(CPU of this process: the store's writer thread included, where it runs).  The stages
are what chatd does for one line in order; the ones marked "in" another are part of
it and are not added to the sum.  The table ends with the whole path (a 64-byte line
handed to the sender's protocol ``data_received``, then the loop's end-of-tick flush
that sends it to 100 members) and the sum of the stages beside it.

The writer thread's cost per history row is measured apart, as that thread's own CPU
time (``pthread_getcpuclockid``) per row committed, for batches of the sizes given by
``--rows-per-batch`` (what gathers in ``storage.batch_seconds`` at a given rate).

Hooks into chatd written here, not in chatd/: the stage "request/intake to say" runs
with ``ChatDomain.say`` replaced on the instance by a no-op (what intake does up to
the call); the fan-out stage calls the backend's ``to_room`` and ``flush`` and then the
reactor's dirty-connection flush (``Reactor._flush_dirty``, private: the end of a tick).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import run  # beside this file (bench/ is sys.path[0]): the benchmark's config and machine info

from chatd.builtin import history
from chatd.chat import ChatDomain, collect_commands
from chatd.config import Config, load_config
from chatd.events import Message
from chatd.framing import LineFramer, decode_line
from chatd.protocols import ProtocolLimits
from chatd.protocols.irc.render import renderer_for
from chatd.protocols.jsonl import RENDERER as JSONL_RENDERER
from chatd.protocols.line import RENDERER as LINE_RENDERER
from chatd.reactor import Reactor
from chatd.server import build_plugin_host, collect_protocols
from chatd.store import Store
from chatd.transport.connection import Connection, ConnectionContext, ConnectionLimits

MEMBERS = 100
ROOM = "#lobby"
#: A 64-byte line with its newline, as the load generator's are (plain ASCII).
LINE = (b"bench line 0000000 the quick brown fox jumps over the lazy dog." + b"\n")
assert len(LINE) == 64, len(LINE)
#: The same length in UTF-8 with non-ASCII letters (decode's slow path).
UTF8_LINE = "bänch line 0000000 thé quick brown fox jumps över the lazy dög.".encode()
#: Timed block for the stages that send: each member's peer receives ~80 bytes a line,
#: so a block stays well inside a loopback socket's buffers; drained after each block.
BLOCK = 200  # a multiple of every PER_TICK
#: Lines handled in one tick in the coalesced variants: under load a tick reads many
#: senders' lines (fanout-100: 10 senders, 16 lines in flight each), and the fan-out
#: sends each member one payload per tick, not per line.
PER_TICK = (10, 100)


@dataclass
class Result:
    """One stage's figures (µs per line)."""

    name: str
    wall_us: float
    cpu_us: float
    within: str | None = None  # the stage this one is part of (not added to the sum)
    note: str = ""


# -- building chatd as the server does ------------------------------------------------------


@dataclass
class Chat:
    """chatd's objects for one benchmark: the loop, plugins, store, domain and clients."""

    config: Config
    reactor: Reactor
    hooks: Any
    store: Store
    domain: ChatDomain
    sender: Any  # the sender's LineProtocol
    members: list[Any]  # the members' protocols
    peers: list[socket.socket]  # the far ends of every socket (sender's first)

    def drain(self) -> int:
        """Read everything the members' peers were sent (not timed); bytes read."""
        total = 0
        for sock in self.peers:
            while True:
                try:
                    data = sock.recv(1 << 20)
                except BlockingIOError:
                    break
                if not data:
                    break
                total += len(data)
        return total

    def tick(self) -> None:
        self.reactor.run_once(0)


def bench_config(folder: Path, variant: str = "shipped") -> Config:
    """bench/run.py's chatd config (history on, SQLite in memory; ``no-history``: its
    history-off variant), loaded as chatd loads it."""
    path = folder / "chatd-bench.yaml"
    if variant == "no-history":
        run.write_no_history_config(path, MEMBERS + 10)
    else:
        run.write_chatd_config(path, MEMBERS + 10)
    return load_config(path)


def _tcp_pair(listener: socket.socket) -> tuple[socket.socket, socket.socket]:
    """(server end, client end) of a loopback TCP connection."""
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    server.setblocking(False)
    client.setblocking(False)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return server, client


@contextlib.contextmanager
def built_chat(config: Config) -> Iterator[Chat]:
    """chatd as ``Server._build`` makes it (store, domain, plugins, startup) with 101
    line-protocol clients on real loopback sockets, every one in ``#lobby``."""
    reactor = Reactor()
    reactor.enable_threadsafe()
    hooks = build_plugin_host(config)
    protocols = collect_protocols(hooks)
    config = protocols.check_config(config)
    storage = config.storage
    store = Store(config.storage_path(), url=storage.url, batch_seconds=storage.batch_seconds,
                  batch_max=storage.batch_max, queue_max=storage.queue_max,
                  read_timeout=storage.read_timeout_seconds, synchronous=storage.synchronous,
                  post=reactor.call_soon_threadsafe, call_later=reactor.call_later,
                  owner=lambda: hooks.current_plugin, defer=reactor.call_soon)
    store.open()
    domain = ChatDomain(config, hooks, reactor, store=store)
    hooks.bind(domain.facade, reactor)
    domain.commands = collect_commands(hooks, domain.facade)
    hooks.call_strict("chatd_startup", server=domain.facade)
    reactor.add_before_flush(lambda: domain.backend.flush())
    limits = config.limits
    context = ConnectionContext(
        reactor, memoryview(bytearray(limits.read_budget_bytes or 65536)),
        ConnectionLimits(read_budget=limits.read_budget_bytes, hard=limits.max_output_bytes,
                         soft=limits.output_soft_bytes, linger=limits.close_linger_seconds))
    spec = protocols["line"]
    defaults = {name: setting.default for name, setting in spec.option_specs.items()}
    listener = socket.create_server(("127.0.0.1", 0))
    made: list[Any] = []
    peers: list[socket.socket] = []
    conns: list[Connection] = []
    try:
        for _ in range(MEMBERS + 1):
            ours, theirs = _tcp_pair(listener)
            conn = Connection(ours, context)
            proto = spec.protocol(conn, spec.protocol.input_limits(
                ProtocolLimits(limits.max_line_bytes, limits.recvq_max_bytes), defaults))
            conn.set_protocol(proto)
            conn.start()
            proto.session = domain.connect(proto, None)
            made.append(proto)
            peers.append(theirs)
            conns.append(conn)
        chat = Chat(config, reactor, hooks, store, domain, made[0], made[1:], peers)
        for proto in made:  # everyone says a first line (registers, announces the join)
            proto.data_received(memoryview(b"hello\n"))
            chat.tick()
            chat.drain()
        room = domain.rooms.get(ROOM)
        if room is None or len(room.members) != MEMBERS + 1:
            raise RuntimeError(f"expected {MEMBERS + 1} clients in {ROOM}, found "
                               f"{None if room is None else len(room.members)}")
        yield chat
    finally:
        for conn in conns:
            conn.abort("benchmark over")
        for sock in peers:
            sock.close()
        listener.close()
        hooks.shutdown()
        store.close()
        reactor.close()


# -- timing ---------------------------------------------------------------------------------


def best_of(repeat: int, lines: int, once: Callable[[int], tuple[int, int]]) -> tuple[float, float]:
    """The best of ``repeat`` runs of ``once(lines)`` (which returns its own wall and CPU
    nanoseconds), as µs per line."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        wall, cpu = once(lines)
        best_wall = min(best_wall, wall / lines / 1000)
        best_cpu = min(best_cpu, cpu / lines / 1000)
    return best_wall, best_cpu


def loop(body: Callable[[int], object]) -> Callable[[int], tuple[int, int]]:
    """A timed loop of ``body(i)`` for i in range(lines)."""

    def once(lines: int) -> tuple[int, int]:
        wall0, cpu0 = time.perf_counter_ns(), time.process_time_ns()
        for i in range(lines):
            body(i)
        return time.perf_counter_ns() - wall0, time.process_time_ns() - cpu0

    return once


def in_blocks(chat: Chat, body: Callable[[int], object], per_call: int = 1, *,
              before: Callable[[int], object] | None = None,
              after_block: Callable[[], object] | None = None,
              ) -> Callable[[int], tuple[int, int]]:
    """Like :func:`loop`, timed in blocks of :data:`BLOCK` lines with the members'
    peers drained between blocks (``after_block()`` first), outside the timing.
    ``body(i)`` handles lines ``i`` to ``i + per_call - 1`` (one tick of several
    lines); ``before(i)``, if given, runs first each time, untimed (each body call is
    then timed on its own: ~0.1 µs of clock reads more per call)."""

    def once(lines: int) -> tuple[int, int]:
        wall = cpu = 0
        clock, cpu_clock = time.perf_counter_ns, time.process_time_ns
        for start in range(0, lines, BLOCK):
            calls = range(start, min(lines, start + BLOCK) - per_call + 1, per_call)
            if before is None:
                wall0, cpu0 = clock(), cpu_clock()
                for i in calls:
                    body(i)
                wall += clock() - wall0
                cpu += cpu_clock() - cpu0
            else:
                for i in calls:
                    before(i)
                    wall0, cpu0 = clock(), cpu_clock()
                    body(i)
                    wall += clock() - wall0
                    cpu += cpu_clock() - cpu0
            if after_block is not None:
                after_block()
            chat.drain()
        return wall, cpu

    return once


# -- the stages -----------------------------------------------------------------------------


def numbered(line: bytes, i: int) -> bytes:
    """``line`` with ``i`` in its number field (every line different, as in a run)."""
    return line.replace(b"0000000", b"%07d" % (i % 10_000_000), 1)


def measure(chat: Chat, lines: int, repeat: int) -> list[Result]:
    """Every stage, in the order a line meets them."""
    domain = chat.domain
    hooks = chat.hooks
    sender = chat.sender
    client = sender.session
    room = domain.rooms.get(ROOM)
    results: list[Result] = []

    def add(name: str, once: Callable[[int], tuple[int, int]], within: str | None = None,
            note: str = "") -> None:
        wall, cpu = best_of(repeat, lines, once)
        results.append(Result(name, wall, cpu, within, note))

    raw = [numbered(LINE, i) for i in range(lines)]
    chunks = [memoryview(line) for line in raw]
    texts = [line[:-1].decode() for line in raw]

    # framing: one 64-byte line out of a chunk (decode left out: an identity decoder).
    framer = LineFramer(chat.config.limits.max_line_bytes, decode=lambda b: b)
    add("framing (LineFramer.feed, 64 B chunk)", loop(lambda i: framer.feed(chunks[i])))

    ascii_lines = [bytearray(line[:-1]) for line in raw]
    add("decode_line, ASCII", loop(lambda i: decode_line(ascii_lines[i])))
    utf8_lines = [bytearray(numbered(UTF8_LINE, i)) for i in range(lines)]
    add("decode_line, non-ASCII UTF-8", loop(lambda i: decode_line(utf8_lines[i])),
        within="(alternative)", note="instead of ASCII for such a line")

    # The protocol's request step and intake up to ChatDomain.say (say stubbed here).
    said: list[str] = []
    domain.say = lambda c, text, *a, **k: said.append(text)  # type: ignore[method-assign]
    try:
        add("parse + intake to ChatDomain.say",
            loop(lambda i: sender._lines_received([texts[i]])),
            note="LineProtocol._lines_received: parse, flood gate, Intake._process")
    finally:
        del domain.say  # the class's method again
    if len(said) < lines:
        raise RuntimeError("intake did not reach say: is the sender flood-limited?")

    source = client.source
    add("ChatDomain.new_event", loop(lambda i: domain.new_event(Message, source, ROOM, texts[i])),
        within="say")
    events = [domain.new_event(Message, source, ROOM, text) for text in texts]

    add("hook chatd_route_message (call_first)",
        loop(lambda i: hooks.call_first("chatd_route_message", notify=client, client=client,
                                        text=texts[i])), within="say")
    add("hook chatd_filter_message (ChatDomain._filtered)",
        loop(lambda i: domain._filtered(client, events[i])), within="say",
        note=f"{len(hooks.implementations('chatd_filter_message'))} implementations")
    add("hook chatd_message (call)",
        loop(lambda i: hooks.call("chatd_message", notify=client, client=client,
                                  text=texts[i], event=events[i])), within="say",
        note=f"{len(hooks.implementations('chatd_message'))} implementations, history's included")
    server = domain.facade
    # As inside its hook: the guard names the running plugin (else server.store looks
    # for the calling plugin up the stack, which a hook never pays).
    guard = hooks.guard
    guard.current_plugin = "history"
    try:
        add("history _record (on the loop)",
            loop(lambda i: history._record(server, events[i], "message", ROOM)),
            within="hook chatd_message (call)", note="the row queued for the writer, "
            "the room's memory")
    finally:
        guard.current_plugin = None

    def empty() -> None:
        return None

    add("one guarded call of an empty hook impl",
        loop(lambda i: hooks.guard.run("bench", "chatd_nothing", empty, (), client)),
        within="(for scale)")

    backend = domain.backend
    flush_dirty = chat.reactor._flush_dirty

    def end_of_tick(i: int = 0) -> None:
        backend.flush()
        flush_dirty()

    add("ChatDomain.say (hooks, event, to_room queued)",
        in_blocks(chat, lambda i: domain.say(client, texts[i]), after_block=end_of_tick),
        note="the fan-out it queues is flushed after each block, untimed")

    add("render line", loop(lambda i: LINE_RENDERER.render(events[i])), within="fan-out")
    add("render jsonl", loop(lambda i: JSONL_RENDERER.render(events[i])), within="(other protocol)")
    irc = renderer_for(frozenset(), chat.config.server.name)
    add("render IRC", loop(lambda i: irc.render(events[i])), within="(other protocol)")

    add(f"fan-out to {MEMBERS}: end-of-tick flush, real sockets",
        in_blocks(chat, end_of_tick,
                  before=lambda i: backend.to_room(events[i], room, exclude=client)),
        note="one line per tick: 100 send()s per line")

    for per_tick in PER_TICK:

        def queue_many(i: int, n: int = per_tick) -> None:
            for j in range(i, i + n):
                backend.to_room(events[j], room, exclude=client)

        add(f"fan-out to {MEMBERS}, {per_tick} lines a tick",
            in_blocks(chat, end_of_tick, per_tick, before=queue_many),
            within=f"(coalesced, {per_tick})",
            note=f"one send() per member for {per_tick} lines")

    payload = LINE_RENDERER.render(events[0])
    member_socks = [m.transport._sock for m in chat.members]

    def sends(i: int) -> None:
        for sock in member_socks:
            sock.send(payload)

    add(f"{MEMBERS} send() syscalls alone", in_blocks(chat, sends), within="fan-out",
        note="the kernel's share of the fan-out")

    add("BEFORE FAN-OUT: data_received -> to_room queued",
        in_blocks(chat, lambda i: sender.data_received(chunks[i]), after_block=end_of_tick),
        within="(check)",
        note="the Python a line costs before fan-out; queued fan-out flushed per block, untimed")

    reactor = chat.reactor
    add("the tick itself: Reactor.run_once(0), nothing due", loop(lambda i: reactor.run_once(0)),
        note="epoll_wait(0), timers, ready list")

    tick = chat.tick

    def whole(i: int) -> None:
        sender.data_received(chunks[i])
        tick()

    for per_tick in PER_TICK:

        def whole_many(i: int, n: int = per_tick) -> None:
            for j in range(i, i + n):
                sender.data_received(chunks[j])
            tick()

        add(f"WHOLE PATH, {per_tick} lines a tick", in_blocks(chat, whole_many, per_tick),
            within=f"(coalesced, {per_tick})",
            note=f"{per_tick} chunks of one line each, then one tick")
    add("WHOLE PATH: data_received -> sent to 100", in_blocks(chat, whole),
        note="one line per tick; Reactor.run_once(0) is the tick (an epoll_wait included)")
    return results


# -- the writer thread ------------------------------------------------------------------------


def writer_cost(chat: Chat, rows: int, per_batch: int) -> dict[str, float]:
    """The store's writer thread's CPU per history row, ``per_batch`` rows a commit: rows
    queued as ``_record`` queues them, then ``Store.flush`` (the commit at once)."""
    store = chat.store
    thread = store._thread
    if thread is None or thread.ident is None:
        raise RuntimeError("the store has no writer thread")
    clock = time.pthread_getcpuclockid(thread.ident)
    domain = chat.domain
    event = domain.new_event(Message, chat.sender.session.source, ROOM, "x" * 60)
    record = history._record_of(event, "message", ROOM, False)
    values = (ROOM, *record[1:])
    store.flush()
    batches = max(1, rows // per_batch)
    cpu0 = time.clock_gettime_ns(clock)
    wall0 = time.perf_counter_ns()
    for _ in range(batches):
        for _ in range(per_batch):
            store.insert("history", history._COLUMNS, values)
        if not store.flush():
            raise RuntimeError("the store did not commit")
    cpu = time.clock_gettime_ns(clock) - cpu0
    wall = time.perf_counter_ns() - wall0
    count = batches * per_batch
    return {"rows_per_batch": per_batch, "rows": count,
            "writer_cpu_us_per_row": cpu / count / 1000, "wall_us_per_row": wall / count / 1000}


# -- output ---------------------------------------------------------------------------------


def coalesced_sum(results: list[Result], per_tick: int) -> tuple[float, float]:
    """The stages' sum when ``per_tick`` lines share a tick: the per-line stages, the
    coalesced fan-out, and the tick itself shared by the lines."""
    wall = cpu = 0.0
    for r in results:
        if r.within is None and not r.name.startswith(("WHOLE", "fan-out")):
            share = 1 / per_tick if r.name.startswith("the tick") else 1.0
            wall += r.wall_us * share
            cpu += r.cpu_us * share
        elif r.within == f"(coalesced, {per_tick})" and r.name.startswith("fan-out"):
            wall += r.wall_us
            cpu += r.cpu_us
    return wall, cpu


def table(results: list[Result], writer: list[dict[str, float]]) -> tuple[str, dict[str, Any]]:
    """The printed table and the JSON numbers; shares are of the whole path at one line
    a tick (the coalesced rows have their own sums, below it)."""
    whole = next(r for r in results if r.name.startswith("WHOLE PATH:"))
    summed = [r for r in results if r.within is None and r is not whole]
    total = sum(r.wall_us for r in summed)
    total_cpu = sum(r.cpu_us for r in summed)
    out = [f"{'stage':60} {'µs/line':>9} {'cpu µs':>8} {'share':>6}  note", "-" * 104]
    for r in results:
        if r is whole or r.name.startswith("WHOLE"):
            continue
        name = r.name if r.within is None else f"  {r.name} [in {r.within}]"
        share = f"{100 * r.wall_us / whole.wall_us:5.1f}%"
        out.append(f"{name:60} {r.wall_us:9.3f} {r.cpu_us:8.3f} {share:>6}  {r.note}")
    out.append("-" * 104)
    before = [r for r in summed if not r.name.startswith(("fan-out", "the tick"))]
    out.append(f"{'sum of the stages before fan-out':60} {sum(r.wall_us for r in before):9.3f} "
               f"{sum(r.cpu_us for r in before):8.3f}         "
               "(against BEFORE FAN-OUT, measured whole)")
    out.append(f"{'sum of the stages (one line a tick)':60} {total:9.3f} {total_cpu:8.3f} "
               f"{100 * total / whole.wall_us:5.1f}%")
    out.append(f"{whole.name:60} {whole.wall_us:9.3f} {whole.cpu_us:8.3f} {100.0:5.1f}%  "
               f"{whole.note}")
    coalesced = []
    for per_tick in PER_TICK:
        sum_wall, sum_cpu = coalesced_sum(results, per_tick)
        row = next(r for r in results if r.name == f"WHOLE PATH, {per_tick} lines a tick")
        out.append(f"{f'sum of the stages ({per_tick} lines a tick)':60} {sum_wall:9.3f} "
                   f"{sum_cpu:8.3f}")
        out.append(f"{row.name:60} {row.wall_us:9.3f} {row.cpu_us:8.3f}         {row.note}")
        coalesced.append({"lines_per_tick": per_tick, "sum_of_stages_us": sum_wall,
                          "sum_of_stages_cpu_us": sum_cpu, "wall_us_per_line": row.wall_us,
                          "cpu_us_per_line": row.cpu_us})
    out.append("")
    out.append("cpu µs: the process's CPU (time.process_time), the store's writer thread "
               "included where it ran")
    if writer:
        out.append("store writer thread (its own CPU), per history row:")
    for w in writer:
        out.append(f"  {w['rows_per_batch']:5d} rows/commit: {w['writer_cpu_us_per_row']:8.3f} µs "
                   f"cpu/row ({w['rows']} rows)")
    numbers = {
        "stages": [{"name": r.name, "wall_us_per_line": r.wall_us, "cpu_us_per_line": r.cpu_us,
                    "within": r.within, "share_of_whole": r.wall_us / whole.wall_us,
                    "note": r.note} for r in results if not r.name.startswith("WHOLE")],
        "sum_of_stages_before_fanout_us": sum(r.wall_us for r in before),
        "sum_of_stages_us": total,
        "sum_of_stages_cpu_us": total_cpu,
        "whole_path": {"name": whole.name, "wall_us_per_line": whole.wall_us,
                       "cpu_us_per_line": whole.cpu_us, "members": MEMBERS,
                       "lines_per_tick": 1},
        "coalesced": coalesced,
        "writer_thread": writer,
    }
    return "\n".join(out), numbers


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lines", type=int, default=2000, help="lines per timed loop (default 2000)")
    p.add_argument("--repeat", type=int, default=7, help="runs per stage, best kept (default 7)")
    p.add_argument("--rows-per-batch", type=int, nargs="+", default=[5, 50, 1000],
                   help="history rows per commit for the writer's cost (default 5 50 1000)")
    p.add_argument("--config-variant", choices=("shipped", "no-history"), default="shipped",
                   help="bench/run.py's config (default) or its history-off variant")
    p.add_argument("--quick", action="store_true", help="tiny counts: checks that it works")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the numbers here")
    args = p.parse_args(argv)
    if args.quick:
        args.lines, args.repeat, args.rows_per_batch = 200, 2, [5, 100]
    if args.lines < 1 or args.repeat < 1:
        p.error("--lines and --repeat must be positive")
    # Whole blocks (each a whole number of every coalesced tick): every line is timed.
    args.lines = -(-args.lines // BLOCK) * BLOCK
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="chatd-stages-") as tmp:
        config = bench_config(Path(tmp), args.config_variant)
        with built_chat(config) as chat:
            results = measure(chat, args.lines, args.repeat)
            writer = [] if args.config_variant == "no-history" else [
                writer_cost(chat, max(n, args.lines), n) for n in args.rows_per_batch]
    text, numbers = table(results, writer)
    print(text)
    if args.json:
        cores = run.Cores(None, None)
        numbers = {"machine": {**run.machine_info(cores, 0, None),
                               "affinity": sorted(os.sched_getaffinity(0)),
                               "load_avg_at_start": os.getloadavg()[0]},
                   "args": {k: (str(v) if isinstance(v, Path) else v)
                            for k, v in vars(args).items()},
                   "threads_at_end": threading.active_count(),
                   **numbers}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(numbers, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
