"""bench/cluster.py must keep working: a seconds-long run against a real redis-server.

The bench puts the cluster's cost on record (docs/cluster.md, "Sizing"); a bench that
lost lines without saying so, or measured a case that never crossed nodes, would
mislead.  So the quick run must exit 0 with a row per load and case, every line
delivered exactly once, the ``two`` case really split over two processes, and the
``workers`` case either measured or reported as not available.  It never asserts a
time or a speed (DESIGN.md section 6).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chatd.testing.probes import skip_unless_ci

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench" / "cluster.py"
pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    if shutil.which("redis-server") is None:
        skip_unless_ci("redis-server is not installed")
    for module in ("redis", "hiredis"):
        if importlib.util.find_spec(module) is None:
            skip_unless_ci(f"{module} is not installed: pip install 'chatd[cluster]'")
    out = tmp_path_factory.mktemp("bench-cluster") / "result.json"
    done = subprocess.run([sys.executable, str(BENCH), "--quick", "--workers", "--json",
                           str(out)], cwd=REPO, capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


def test_every_case_of_every_load_is_measured_without_loss(quick):
    result, _ = quick
    rows = result["rows"]
    cases = {"local", "node", "two"} | ({"workers"} if any(
        r["case"] == "workers" for r in rows) else set())
    assert {(r["load"], r["case"]) for r in rows} == {
        (load, case) for load in ("fanout", "chatters") for case in cases}
    for row in rows:
        assert row["sent"] > 0, row
        assert row["lost"] == 0, row
        assert row["duplicates"] == 0, row
        assert row["deliveries"] == row["expected"], row
        assert row["chatd_us_per_delivery"] >= 0
    # two nodes are two processes with a port each; the clients were split over both
    assert all(r["chatd_processes"] == 2 and r["ports"] == 2 for r in rows
               if r["case"] == "two")
    assert all(r["chatd_processes"] == 1 for r in rows if r["case"] in ("local", "node"))
    # the ratios are to the run without the cluster
    local = [r for r in rows if r["case"] == "local"]
    assert all(r["deliveries_per_s_x"] == 1.0 for r in local)


def test_the_workers_case_is_run_or_said_to_be_unavailable(quick):
    result, stdout = quick
    measured = any(r["case"] == "workers" for r in result["rows"])
    unavailable = "workers: not available in this build" in stdout
    assert measured != unavailable
    assert unavailable == ("workers: not available in this build" in result["notes"])


def test_the_table_names_every_row(quick):
    result, stdout = quick
    for row in result["rows"]:
        assert f"| {row['load']} | {row['case']} | {row['sent']} |" in stdout
