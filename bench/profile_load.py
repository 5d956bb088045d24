"""Where chatd's time goes under load: py-spy on the server while bench/run.py's load runs.

    python bench/profile_load.py                           # fanout-100, 10 s at 200 Hz
    python bench/profile_load.py --scenario turns-1000x50 --seconds 5
    python bench/profile_load.py --config-variant no-history
    python bench/profile_load.py --report RAW_FILE          # the tables again, from a raw file
    python bench/profile_load.py --cpu                      # per-thread CPU, no py-spy

chatd is started as ``bench/run.py`` starts it (its benchmark config, written by
:func:`run.write_chatd_config`; the server pinned to one core and the C load generator
to another), under the load of one of run.py's traffic scenarios (its load generator
arguments, :meth:`run.Scenario.loadgen_args`).  Once the server is busy (its CPU use
says the load is running) and ``--warmup`` seconds more have passed, ``py-spy record
--format raw --threads`` samples it for ``--seconds`` at ``--rate`` Hz.  The load
generator's report is checked as run.py checks it (a lost or misrouted line fails).

Printed: per thread (the event loop, the store's writer thread ``chatd-store``, ...),
the top functions by self share (samples whose innermost frame is the function) and
by inclusive share (samples with the function anywhere on the stack), line numbers
merged, and the raw file's path.  Only samples of running threads are counted (py-spy
leaves idle ones out: the loop waiting in ``epoll_wait``, the writer waiting for
rows), so the shares are of the thread's busy time; the samples count against the
expected ``seconds * rate`` says how busy it was.

``--cpu`` measures instead of sampling: each thread's user and system CPU over
``--seconds`` (/proc/PID/task/TID/stat, nothing attached to the server, so the load runs
at full speed), as a share of a core and in microseconds per message said (the load
generator's messages in per second, over its whole run).  py-spy counts a thread that waits inside
a C call without the GIL as idle, so its busy share says little about the writer
thread's cost; these numbers are what it costs the core.  Run it with
``--config-variant no-history`` too to see what history costs the loop and the writer.

Exit status: 0, 1 if the load run failed, 2 if py-spy is not installed and is needed
(not with ``--cpu``; the ``[bench]`` extra has it: ``pip install -e ".[bench]"``).

Run it alone: it takes both cores, like run.py.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import run  # beside this file (bench/ is sys.path[0]): the benchmark's servers and load

#: A frame as py-spy writes it in raw format: ``function (file:line)``.
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
#: The thread label ``--threads`` puts at the root of each stack.
_THREAD = re.compile(r"^thread \((?P<id>0x[0-9A-Fa-f]+)\)(?:: ?(?P<name>.*))?$|^thread ")


def find_py_spy() -> str | None:
    """py-spy beside this Python (a virtualenv's bin/), else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


# -- the raw file ---------------------------------------------------------------------------


def function_of(frame: str) -> str:
    """``func (file:line)`` -> ``func (file)``: line numbers merged."""
    m = _FRAME.match(frame)
    if m is None:
        return frame
    return f"{m['func']} ({m['file']})"


#: Innermost frames of a thread that waits (py-spy counts a wait with a timeout as
#: running): such samples are counted as waiting, not in the shares.
WAITING = frozenset({
    "Condition.wait (threading.py)", "Event.wait (threading.py)", "Queue.get (queue.py)",
    "Thread.join (threading.py)", "Lock.acquire (threading.py)",
})


@dataclass
class ThreadProfile:
    """One thread's samples: how many, and per function, self and inclusive counts."""

    name: str
    samples: int = 0
    waiting: int = 0
    own: collections.Counter[str] = field(default_factory=collections.Counter)
    inclusive: collections.Counter[str] = field(default_factory=collections.Counter)


def parse_raw(text: str) -> dict[str, ThreadProfile]:
    """py-spy's raw format (``frame;frame;...;leaf COUNT`` per line, root first; with
    ``--threads`` the root is the thread) -> per-thread profiles."""
    threads: dict[str, ThreadProfile] = {}
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        label = "?"
        while frames and (frames[0].startswith("thread ") or frames[0].startswith("process ")):
            head = frames.pop(0)
            if head.startswith("thread "):
                label = head
        profile = threads.get(label)
        if profile is None:
            profile = threads[label] = ThreadProfile(label)
        profile.samples += count
        if not frames:
            continue
        functions = [function_of(f) for f in frames]
        if functions[-1] in WAITING:
            profile.samples -= count
            profile.waiting += count
            continue
        profile.own[functions[-1]] += count
        for function in set(functions):
            profile.inclusive[function] += count
    return threads


def thread_names(pid: int) -> dict[int, str]:
    """Native thread id -> name (/proc), to tell the loop from the writer thread."""
    names: dict[int, str] = {}
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                names[int(task)] = Path(f"/proc/{pid}/task/{task}/comm").read_text().strip()
    return names


def report(threads: dict[str, ThreadProfile], top: int, expected: int | None) -> str:
    """Per thread, busiest first: the top functions by self and by inclusive share of the
    thread's busy samples.  Inclusive leaves out the functions on every busy sample (the
    thread's outer frames: ``Reactor.run``...), named once above the table."""
    out: list[str] = []
    for profile in sorted(threads.values(), key=lambda p: -p.samples):
        busy = f", {profile.samples / expected:.0%} of the expected samples (busy share)" \
            if expected else ""
        out.append(f"== {profile.name}: {profile.samples} busy samples{busy}; "
                   f"{profile.waiting} waiting (left out)")
        if not profile.samples:
            out.append("")
            continue
        out.append(f"   top {top} by self:")
        for function, count in profile.own.most_common(top):
            out.append(f"   {100 * count / profile.samples:6.1f}%  {function}")
        everywhere = [f for f, c in profile.inclusive.items() if c == profile.samples]
        inclusive = [(f, c) for f, c in profile.inclusive.most_common()
                     if c < profile.samples][:top]
        out.append(f"   top {top} by inclusive (on every sample, left out: "
                   f"{', '.join(sorted(everywhere)) or 'none'}):")
        for function, count in inclusive:
            out.append(f"   {100 * count / profile.samples:6.1f}%  {function}")
        out.append("")
    return "\n".join(out)


# -- the run --------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, tuple[str, float, float]]:
    """Per thread of ``pid``: native id -> (name, user seconds, system seconds).  The
    main thread (the event loop) is the one whose id is the process's; Python 3.11 does
    not give the others' names to the system (they are all "python")."""
    tick = os.sysconf("SC_CLK_TCK")
    threads: dict[int, tuple[str, float, float]] = {}
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                folder = Path(f"/proc/{pid}/task/{task}")
                fields = (folder / "stat").read_text().rpartition(")")[2].split()
                name = (folder / "comm").read_text().strip()
                threads[int(task)] = ("main thread" if int(task) == pid else name,
                                      int(fields[11]) / tick, int(fields[12]) / tick)
    return threads


def cpu_report(before: dict[int, tuple[str, float, float]],
               after: dict[int, tuple[str, float, float]], seconds: float,
               messages_per_s: float | None) -> str:
    """The CPU each thread used between two :func:`thread_cpu` readings, busiest first:
    its share of a core, and microseconds per message when the rate is known."""
    used = []
    for tid, (name, user, system) in after.items():
        if tid in before:
            used.append((name, tid, user - before[tid][1], system - before[tid][2]))
    lines = [f"per-thread CPU over {seconds:g} s"
             + (f", {messages_per_s:,.0f} messages/s:" if messages_per_s else ":")]
    for name, tid, user, system in sorted(used, key=lambda u: -(u[2] + u[3])):
        if not user + system:
            continue  # idle all along (a watchdog)
        line = (f"   {name} ({tid}): user {100 * user / seconds:5.1f}%  "
                f"system {100 * system / seconds:5.1f}% of a core")
        if messages_per_s:
            per = 1e6 / (messages_per_s * seconds)
            line += (f";  per message: user {user * per:.2f} us, system {system * per:.2f} us,"
                     f" together {(user + system) * per:.2f} us")
        lines.append(line)
    return "\n".join(lines)


def wait_busy(pid: int, timeout: float, share: float = 0.5, window: float = 0.5) -> bool:
    """Wait until the process uses ``share`` of a core over ``window`` (the load runs)."""
    deadline = time.monotonic() + timeout
    before = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = cpu_seconds(pid)
        if now - before >= share * window:
            return True
        before = now
    return False


def traffic_scenarios() -> dict[str, run.Scenario]:
    return {s.name: s for s in run.FULL_SCENARIOS + run.SMOKE_SCENARIOS if s.mode != "idle"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default="fanout-100", choices=sorted(traffic_scenarios()),
                   help="one of bench/run.py's traffic scenarios (default fanout-100)")
    p.add_argument("--config-variant", choices=("shipped", "no-history"), default="shipped",
                   help="run.py's chatd config (default) or its history-off variant")
    p.add_argument("--seconds", type=float, default=10.0, help="sampling time (default 10)")
    p.add_argument("--rate", type=int, default=200, help="samples per second (default 200)")
    p.add_argument("--warmup", type=float, default=2.0,
                   help="seconds of load before sampling starts (default 2)")
    p.add_argument("--top", type=int, default=15, help="functions listed per table (default 15)")
    p.add_argument("--out", type=Path, help="folder for the raw file and logs (default: a new "
                   "folder under bench/results/tmp/profile-*)")
    p.add_argument("--cpu", action="store_true",
                   help="measure each thread's CPU per message instead of sampling (no py-spy)")
    p.add_argument("--report", type=Path, metavar="RAW",
                   help="only print the tables of an existing raw file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report is not None:
        print(report(parse_raw(args.report.read_text()), args.top, None))
        return 0
    py_spy = find_py_spy()
    if py_spy is None and not args.cpu:
        print("bench/profile_load.py: py-spy is not installed (it is in the [bench] extra: "
              "pip install -e \".[bench]\"); nothing was run", file=sys.stderr)
        return 2
    scratch = run.BENCH / "results" / "tmp"  # git ignores it
    scratch.mkdir(parents=True, exist_ok=True)
    out = args.out or Path(tempfile.mkdtemp(prefix="profile-", dir=scratch))
    out.mkdir(parents=True, exist_ok=True)
    scenario = traffic_scenarios()[args.scenario]
    run.raise_fd_limit()
    loadgen = run.build_loadgen()
    config = out / "chatd-bench.yaml"
    spec = next(s for s in run.SERVERS if s.name == "chatd")
    if args.config_variant == "no-history":
        run.write_no_history_config(config, scenario.clients + 10)
    else:
        run.write_chatd_config(config, scenario.clients + 10)
    # The load lasts through the warm-up, the sampling and a margin.
    timing = run.Timing(duration=args.warmup + args.seconds + 3.0, warmup=0.5, quiet_ms=300,
                        drain_max=15.0)
    ctx = run.Context(config, out, loadgen, timing, run.Cores.pick(), run.REPO)
    if scenario.tls:
        spec = run.tls_server(spec, ctx)
    if scenario.irc:
        spec = run.irc_server(spec, ctx)
    if scenario.ws:
        spec = run.ws_server(spec, ctx)
    scenario = run.scenario_for(scenario, spec)
    raw = out / f"{args.scenario}-{args.config_variant}.raw"
    outcome: list[run.Run] = []
    with run.running_server(spec, ctx) as server:
        load = threading.Thread(
            target=lambda: outcome.append(run.run_traffic(scenario, server, loadgen, timing,
                                                          ctx.cores)), daemon=True)
        load.start()
        if not wait_busy(server.pid, scenario.setup_max_s + 10):
            print("bench/profile_load.py: the server never got busy; see " + str(server.log_path),
                  file=sys.stderr)
            load.join(timing.duration + scenario.setup_max_s + 60)
            return 1
        time.sleep(args.warmup)
        if args.cpu:
            return _measure_cpu(args, server.pid, load, outcome, timing,
                                scenario.setup_max_s)
        names = thread_names(server.pid)
        spied = subprocess.run(
            [py_spy, "record", "--pid", str(server.pid), "--rate", str(args.rate),
             "--duration", f"{args.seconds:g}", "--format", "raw", "--threads",
             "--output", str(raw)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            timeout=args.seconds + 60)
        load.join(timing.duration + timing.drain_max + scenario.setup_max_s + 60)
    if spied.returncode != 0 or not raw.exists():
        print(f"bench/profile_load.py: py-spy failed ({spied.returncode}):\n{spied.stdout}",
              file=sys.stderr)
        return 1
    threads = parse_raw(raw.read_text())
    for label, profile in threads.items():
        m = _THREAD.match(label)
        if m is not None and m.group("id"):
            name = names.get(int(m["id"], 16))
            if name and name not in label:
                profile.name = f"{label} {name}"
    print(f"chatd under {args.scenario} ({args.config_variant} config), py-spy "
          f"{args.seconds:g} s at {args.rate} Hz, after {args.warmup:g} s of load")
    print(report(threads, args.top, int(args.seconds * args.rate)))
    status = _load_status(outcome, "slowed by the sampling: not a benchmark figure")
    print(f"raw file: {raw}")
    return status


def _measure_cpu(args: argparse.Namespace, pid: int, load: threading.Thread,
                 outcome: list[run.Run], timing: run.Timing, setup_max_s: float) -> int:
    """``--cpu``: each thread's CPU over ``--seconds`` of the load, per message."""
    before, started = thread_cpu(pid), time.monotonic()
    time.sleep(args.seconds)
    after, seconds = thread_cpu(pid), time.monotonic() - started
    load.join(timing.duration + timing.drain_max + setup_max_s + 60)
    rate = outcome[0].metrics.get("messages_in_per_s") if outcome else None
    print(f"chatd under {args.scenario} ({args.config_variant} config), after "
          f"{args.warmup:g} s of load")
    print(cpu_report(before, after, seconds, rate))
    return _load_status(outcome, "the load's rate over its whole run")


def _load_status(outcome: list[run.Run], what: str) -> int:
    """Print how the load run went; 1 if it failed or never finished."""
    if outcome:
        result = outcome[0]
        print(f"load: {result.status}, {result.metrics.get('deliveries_per_s', 0):,.0f} "
              f"deliveries/s ({what})"
              + (f"; {'; '.join(result.problems)}" if result.problems else ""))
        return 1 if result.status == "FAILED" else 0
    print("load: the load generator did not finish")
    return 1


if __name__ == "__main__":
    sys.exit(main())
