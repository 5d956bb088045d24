"""The benchmark's verdicts: the strongest baseline is picked per scenario, and a
target judged against a run the load generator could not keep up with (INVALID)
claims only what such a lower bound proves.  Synthetic results, no servers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _report():
    spec = importlib.util.spec_from_file_location("bench_report", BENCH / "report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_report"] = module
    spec.loader.exec_module(module)
    return module


report = _report()

KINDS = {"chatd": "chatd", "slow": "baseline", "fast": "baseline", "limit": "limit"}


def result(*runs: tuple[str, str, float, str]) -> dict:
    return {
        "server_kinds": KINDS,
        "runs": [
            {"scenario": scenario, "server": server, "mode": "closed", "status": status,
             "notes": [], "problems": [], "metrics": {"deliveries_per_s": rate}}
            for scenario, server, rate, status in runs
        ],
    }


TARGET = [{"scenario": "s", "metric": "deliveries_per_s", "against": "limit", "factor": 0.9,
           "better": "higher"}]


def test_the_headline_takes_the_strongest_baseline_of_each_scenario():
    data = result(("s", "chatd", 900, "ok"), ("s", "slow", 100, "ok"),
                  ("s", "fast", 300, "ok"), ("s", "limit", 1000, "ok"),
                  ("t", "chatd", 50, "ok"), ("t", "slow", 100, "ok"), ("t", "fast", 10, "ok"))
    rows = {row["scenario"]: row for row in report.headline(data)}
    assert rows["s"]["baseline"] == "fast" and rows["s"]["vs_baseline"] == pytest.approx(3.0)
    assert rows["s"]["vs_limit"] == pytest.approx(0.9)
    assert rows["t"]["baseline"] == "slow" and rows["t"]["vs_baseline"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("chatd", "limit", "verdict"),
    [
        ((950, "ok"), (1000, "ok"), "yes"),
        ((800, "ok"), (1000, "ok"), "**no**"),
        # The limit's figure is a lower bound: a miss stays a miss, a hit proves nothing.
        ((800, "ok"), (1000, "INVALID"), "**no** (the other side's figure is a lower bound)"),
        ((950, "ok"), (1000, "INVALID"), "unknown (load generator saturated)"),
        # chatd's figure is a lower bound: a hit stays a hit, a miss proves nothing.
        ((950, "INVALID"), (1000, "ok"), "yes (chatd's figure is a lower bound)"),
        ((800, "INVALID"), (1000, "ok"), "unknown (load generator saturated)"),
        ((950, "ok"), (1000, "FAILED"), "n/a (a run FAILED)"),
    ],
)
def test_a_verdict_claims_only_what_its_runs_prove(chatd, limit, verdict):
    data = result(("s", "chatd", *chatd), ("s", "limit", *limit))
    (row,) = report.targets(data, TARGET)
    assert row["verdict"] == verdict


def test_a_lower_is_better_target_and_a_fixed_bound():
    data = {"server_kinds": KINDS, "runs": [
        {"scenario": "idle", "server": "chatd", "mode": "idle", "status": "ok", "notes": [],
         "problems": [], "metrics": {"rss_per_conn_kib": 1.2}},
    ]}
    wanted = [{"scenario": "idle", "metric": "rss_per_conn_kib", "against": None, "value": 1.0,
               "factor": 1.0, "better": "lower"}]
    (row,) = report.targets(data, wanted)
    assert row["verdict"] == "**no**" and row["chatd"] == pytest.approx(1.2)
    data["runs"][0]["metrics"]["rss_per_conn_kib"] = 0.9
    (row,) = report.targets(data, wanted)
    assert row["verdict"] == "yes"


def test_the_benchmark_configs_store_history_and_the_variant_does_not(tmp_path, monkeypatch):
    """chatd is benchmarked as shipped (history stored, not replayed, in memory);
    chatd-no-history differs only in plugins.history.store."""
    import yaml

    monkeypatch.syspath_prepend(str(BENCH))  # run.py imports its sibling report.py
    spec = importlib.util.spec_from_file_location("bench_run", BENCH / "run.py")
    run = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_run", run)
    spec.loader.exec_module(run)
    run.write_chatd_config(tmp_path / "with.yaml", 1000)
    run.write_no_history_config(tmp_path / "without.yaml", 1000)
    with_history = yaml.safe_load((tmp_path / "with.yaml").read_text())
    without = yaml.safe_load((tmp_path / "without.yaml").read_text())
    assert with_history["plugins"]["history"]["store"] is True
    assert with_history["plugins"]["history"]["replay_lines"] == 0
    assert with_history["storage"]["path"] is None
    assert without["plugins"]["history"]["store"] is False
    without["plugins"]["history"]["store"] = True
    assert without == with_history


def test_without_matplotlib_a_run_has_no_chart_and_says_how_to_get_one(tmp_path, monkeypatch):
    """matplotlib is the bench extra's, not the tests': a report made without it names
    the extra instead of failing (tests/test_bench_smoke.py runs on the test extra)."""
    traffic = result(("s", "chatd", 100.0, "OK"), ("s", "fast", 120.0, "OK"))
    for run in traffic["runs"]:
        run["mode"] = "closed"
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib: ImportError
    monkeypatch.setattr(report.importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else SPEC(name))
    assert report.chart(traffic, tmp_path / "deliveries.png") is None
    assert not (tmp_path / "deliveries.png").exists()
    assert report.chart_lines(traffic, chart_path=None) == [report.NO_CHART, ""]
    assert 'pip install -e ".[bench]"' in report.NO_CHART


SPEC = importlib.util.find_spec
