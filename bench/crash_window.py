"""How much history a ``kill -9`` loses under traffic (docs/persistence.md).

Starts chatd on a fresh SQLite file, has one client send numbered lines at
``--rate`` lines/s (0: as fast as the server takes them) to another, kills the
server with SIGKILL after about a second, and compares what the reader had
received (so the server had handled it, and queued its write) with what is in
the file: the lines heard but not stored, and how long before the kill the
first of them was heard.  Also checks that nothing stored is duplicated or out
of order.  Loopback only, a few seconds per run.

    python3 bench/crash_window.py --rate 10000 --runs 8
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_chatd import kill_under_traffic, start_chatd

CONFIG = """\
listen: {host: 127.0.0.1, port: 0}
flood: {lines_per_second: 0}
per_ip: {max_connections: 0, connect_rate: 0, max_unregistered: 0}
limits: {announce_after_seconds: 0}
storage: {path: data/chatd.sqlite3}
plugins: {history: {replay_lines: 0, retention_lines: 1000000000}}
plugin_host: {entry_points: false}
"""


def one_run(folder: Path, rate: int, seconds: float) -> dict[str, float]:
    proc, port = start_chatd(folder, CONFIG)
    run = kill_under_traffic(proc, port, rate, seconds)
    heard, sent, start, killed = run.heard, run.sent, run.start, run.killed
    with sqlite3.connect(folder / "data" / "chatd.sqlite3") as conn:
        stored = [text for (text,) in conn.execute("SELECT text FROM history ORDER BY seq")]
    if stored != sorted(set(stored)):
        raise AssertionError("stored history is duplicated or out of order")
    kept = set(stored)
    lost = [(when, text) for when, text in heard if text not in kept]
    return {
        "sent": sent, "heard": len(heard), "stored": len(stored), "lost": len(lost),
        "window_ms": (killed - lost[0][0]) * 1000 if lost else 0.0,
        "rate": len(heard) / (killed - start),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=10_000, help="lines/s (0: flat out)")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.0, help="traffic before the kill")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="chatd-crash-"))
    try:
        results = []
        for number in range(args.runs):
            folder = base / f"run{number}"
            folder.mkdir()
            # Kills land at different points of the batch cycle.
            result = one_run(folder, args.rate, args.seconds + number * 0.037)
            results.append(result)
            print(f"run {number}: heard {result['heard']:,}, stored {result['stored']:,}, "
                  f"heard but not stored {result['lost']:,} "
                  f"(the first {result['window_ms']:.1f} ms before the kill)", flush=True)
        rate = sum(r["rate"] for r in results) / len(results)
        print(f"at {rate:,.0f} lines/s: at most {max(r['lost'] for r in results):,} lines, "
              f"{max(r['window_ms'] for r in results):.1f} ms, lost; nothing duplicated or "
              "reordered")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
