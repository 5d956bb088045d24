"""bench/store_reads.py must keep working: a tiny run of it, on the kit's PostgreSQL
and on SQLite, that prints its table with every way and depth measured.

It never asserts a speed (DESIGN.md section 6): which way is faster is the bench's
question, answered in docs/persistence.md, not the test's.  The bench checks every
answer itself (the asked room's rows, or it exits 1), so a reactor connection that
mixes up its pipelined answers fails here too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench" / "store_reads.py"
DEPTHS = (1, 3)
WAYS = {"postgresql": ("thread", "reactor-pipe", "reactor-serial"), "sqlite": ("thread",)}


def expected_rows() -> set[tuple[str, str, int]]:
    rows = {(backend, way, depth) for backend, ways in WAYS.items()
            for way in ways for depth in DEPTHS}
    return rows | {("postgresql", "sync", 1), ("sqlite", "sync", 1)}


def table(stdout: str) -> dict[tuple[str, str, int], list[float]]:
    """The printed table: (backend, way, depth) -> its five numbers."""
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("backend"))
    assert lines[header].split()[3:] == ["reads/s", "p50", "ms", "p99", "ms", "loop",
                                         "us/read", "proc", "us/read"]
    rows = {}
    for line in lines[header + 1:]:
        backend, way, depth, *numbers = line.split()
        rows[(backend, way, int(depth))] = [float(n.replace(",", "")) for n in numbers]
    return rows


def test_the_read_bench_prints_every_way_and_depth(postgres_url: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--url", postgres_url, "--reads", "30", "--rows", "600",
         "--repeat", "1", "--depths", *map(str, DEPTHS)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, f"the bench failed:\n{done.stdout}\n{done.stderr[-4000:]}"
    rows = table(done.stdout)
    assert set(rows) == expected_rows(), done.stdout
    for key, numbers in rows.items():
        assert len(numbers) == 5, (key, numbers)
        assert numbers[0] > 0, f"{key}: no reads measured"
