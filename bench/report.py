"""Turning a benchmark result (``results.json``) into tables, ratios and a chart.

Kept apart from the runner so the report can be regenerated from a saved result
(``python bench/report.py bench/results/latest/results.json``) and so matplotlib
is imported only when a chart is drawn.  matplotlib is the ``bench`` extra's, not
the tests' (``pip install -e ".[bench]"``): without it a run has no chart, and
says so.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

DOC_START = "<!-- bench:results:start -->"
DOC_END = "<!-- bench:results:end -->"


def _runs(result: dict[str, Any], mode: str | None = None) -> list[dict[str, Any]]:
    runs = result["runs"]
    if mode is None:
        return runs
    if mode == "idle":
        return [r for r in runs if r["mode"] == "idle"]
    return [r for r in runs if r["mode"] != "idle"]


def _pair(result: dict[str, Any], scenario: str, server: str) -> list[dict[str, Any]]:
    """Every run of one (scenario, server) pair: several with ``--repeat``."""
    return [r for r in result["runs"] if r["scenario"] == scenario and r["server"] == server]


def summary(
    result: dict[str, Any], scenario: str, server: str, metric: str = "deliveries_per_s"
) -> dict[str, Any] | None:
    """min / median / max of ``metric`` over the runs of one pair, and its worst status.

    FAILED runs count in the status but not in the numbers: what they measured is
    not the server's speed.  None when the pair did not run.
    """
    runs = _pair(result, scenario, server)
    if not runs:
        return None
    values = sorted(_metric(r, metric) for r in runs if r["status"] != "FAILED")
    status = next((s for s in ("FAILED", "INVALID") if any(r["status"] == s for r in runs)),
                  "ok")
    return {
        "runs": len(runs),
        "min": values[0] if values else None,
        "median": statistics.median(values) if values else None,
        "max": values[-1] if values else None,
        "status": status,
        "not_ok": sum(r["status"] != "ok" for r in runs),
        "noisy": any(n.startswith("noisy") for r in runs for n in r["notes"]),
    }


def _metric(run: dict[str, Any], metric: str) -> float:
    """A run's ``metric``; a dotted name reaches inside (``latency_us.p99``)."""
    value: Any = run["metrics"]
    for key in metric.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return float(value or 0.0)


def _scenarios(runs: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["scenario"] for r in runs))


def _servers(runs: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["server"] for r in runs))


def _kinds(result: dict[str, Any]) -> dict[str, str]:
    return result.get("server_kinds") or {}


def headline(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per traffic scenario: chatd beside the strongest baseline and the limit server.

    The strongest baseline is the one with the highest median deliveries/s *in this
    run*, so a ratio is never taken against a weak alternative; the limit is the C
    server that coalesces sends once per loop pass (what chatd's design can reach).
    """
    kinds = _kinds(result)
    rows = []
    for scenario in _scenarios(_runs(result, "traffic")):
        ours = summary(result, scenario, "chatd")
        if ours is None:
            continue
        baselines = [(name, summary(result, scenario, name)) for name, kind in kinds.items()
                     if kind == "baseline"]
        baselines = [(name, pair) for name, pair in baselines if pair and pair["median"]]
        best_name, best = max(baselines, key=lambda item: item[1]["median"],
                              default=(None, None))
        limit_name = next((n for n, k in kinds.items() if k == "limit"), None)
        limit = summary(result, scenario, limit_name) if limit_name else None

        def ratio(other: dict[str, Any] | None, ours: dict[str, Any] = ours) -> float | None:
            if other is None or not other["median"] or not ours["median"]:
                return None
            return ours["median"] / other["median"]

        rows.append({
            "scenario": scenario, "chatd": ours, "baseline": best_name, "best": best,
            "vs_baseline": ratio(best), "limit_server": limit_name, "limit": limit,
            "vs_limit": ratio(limit),
            "valid": all(p is None or p["status"] == "ok" for p in (ours, best, limit)),
        })
    return rows


def _verdict(met: bool, higher: bool, ours: str, theirs: str) -> str:
    """Whether a target is met, allowing for INVALID runs.

    An INVALID run (the load generator saturated) measured a lower bound of that
    server's throughput.  So for "chatd at least N× the other": an INVALID other
    side makes the measured ratio an upper bound (a miss is certain, a hit is not);
    an INVALID chatd makes it a lower bound (a hit is certain, a miss is not).
    """
    if "FAILED" in (ours, theirs):
        return "n/a (a run FAILED)"
    if ours == "ok" and theirs == "ok":
        return "yes" if met else "**no**"
    if higher and ours == "ok" and not met:
        return "**no** (the other side's figure is a lower bound)"
    if higher and theirs == "ok" and met:
        return "yes (chatd's figure is a lower bound)"
    return "unknown (load generator saturated)"


def _headline_status(row: dict[str, Any]) -> str:
    """ok, or which of the three figures came from a run that was not ok."""
    bad = [name for name, pair in (("chatd", row["chatd"]), (row["baseline"], row["best"]),
                                   (row["limit_server"], row["limit"]))
           if pair is not None and pair["status"] != "ok"]
    return "ok" if not bad else "not ok: " + ", ".join(f"{n} {p}" for n, p in zip(
        bad, [_status_of(row, n) for n in bad], strict=True))


def _status_of(row: dict[str, Any], name: str | None) -> str:
    pair = (row["chatd"] if name == "chatd" else row["best"] if name == row["baseline"]
            else row["limit"])
    return f"{pair['status']} {pair['not_ok']}/{pair['runs']}"


def targets(result: dict[str, Any], wanted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target of ``wanted`` (see bench/run.py TARGETS) checked on this run."""
    rows = []
    for target in wanted:
        scenario, metric = target["scenario"], target["metric"]
        ours = summary(result, scenario, "chatd", metric)
        if ours is None:
            continue
        against = target["against"]
        if against is None:
            theirs, other = None, float(target["value"])
        else:
            theirs = summary(result, scenario, against, metric)
            if theirs is None:
                continue
            other = theirs["median"] or 0.0
        mine = ours["median"] or 0.0
        bound = other * target["factor"]
        higher = target["better"] == "higher"
        met = mine >= bound if higher else mine <= bound
        rows.append({
            **target, "chatd": mine, "other": other, "bound": bound,
            "ratio": mine / other if other else None, "met": met,
            "verdict": _verdict(met, higher, ours["status"],
                                theirs["status"] if theirs else "ok"),
            "valid": ours["status"] == "ok" and (theirs is None or theirs["status"] == "ok"),
        })
    return rows


def comparison(result: dict[str, Any], current: str, other: str) -> list[dict[str, Any]]:
    """``current`` / ``other`` median deliveries/s for every traffic scenario both ran."""
    rows = []
    for scenario in _scenarios(_runs(result, "traffic")):
        a, b = summary(result, scenario, current), summary(result, scenario, other)
        if a is None or b is None:
            continue
        ratio = a["median"] / b["median"] if a["median"] and b["median"] else None
        rows.append({
            "scenario": scenario, "current": a, "other": b, "ratio": ratio,
            "valid": a["status"] == "ok" and b["status"] == "ok",
        })
    return rows


def comparison_text(result: dict[str, Any]) -> str:
    """``result["comparison"]`` as a plain-text table for the terminal (``--compare``)."""
    compare, rows = result["compare"], result.get("comparison") or []
    ref, repeat = compare["server"], result.get("repeat", 1)

    def rate(pair: dict[str, Any]) -> str:
        if pair["median"] is None:
            return "–"
        if pair["runs"] < 2:
            return f"{pair['median']:,.0f}"
        return f"{pair['median']:,.0f} ({pair['min']:,.0f}..{pair['max']:,.0f})"

    spread = ", median (min..max)" if repeat > 1 else ""
    table = [["scenario", f"chatd deliv/s{spread}", f"{ref} deliv/s{spread}",
              f"chatd / {ref}", "chatd status", f"{ref} status"]]
    for row in rows:
        table.append([
            row["scenario"], rate(row["current"]), rate(row["other"]),
            f"{row['ratio']:.3f}" if row["ratio"] is not None else "–",
            _pair_status(row["current"], bold=False), _pair_status(row["other"], bold=False),
        ])
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    right = {1, 2, 3}  # the numbers

    def fmt(line: list[str]) -> str:
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        return "  ".join(cells).rstrip()

    runs = f"{repeat} runs per pair, interleaved" if repeat > 1 else "1 run per pair"
    head = f"chatd (the run's chatd) vs {ref} (commit {compare['commit']}), {runs}:"
    lines = [head, fmt(table[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(line) for line in table[1:]] or ["(no traffic scenario ran)"]
    return "\n".join(lines)


# -- Markdown ----------------------------------------------------------------------------------


def _ms(us: float | None) -> str:
    if us is None:
        return "–"
    ms = us / 1000
    if ms < 1:
        return f"{ms:.3f}"
    if ms < 10:
        return f"{ms:.2f}"
    if ms < 100:
        return f"{ms:.1f}"
    return f"{ms:.0f}"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _value(metric: str, value: float | None) -> str:
    """A metric's value as the tables show it."""
    if metric == "deliveries_per_s":
        return _rate(value)
    if metric.startswith("latency_us."):
        return f"{_ms(value)} ms"
    if metric == "server_cpu":
        return _pct(value)
    if metric == "rss_per_conn_kib":
        return "–" if value is None else f"{value:.2f} KiB"
    return f"{value:g}" if value is not None else "–"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def _rate(value: float | None) -> str:
    if not value:
        return "–"
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    if value >= 1e3:
        return f"{value / 1e3:.1f} k"
    return f"{value:.0f}"


def _status(run: dict[str, Any]) -> str:
    status = run["status"]
    if status == "ok" and any(n.startswith("noisy") for n in run["notes"]):
        return "ok (noisy)"
    return status if status == "ok" else f"**{status}**"


def _pair_status(pair: dict[str, Any], bold: bool = True) -> str:
    """A pair's worst status; with several runs, how many were not ok."""
    status = pair["status"]
    if status == "ok":
        return "ok (noisy)" if pair["noisy"] else "ok"
    text = f"**{status}**" if bold else status
    return text + (f" ({pair['not_ok']} of {pair['runs']} runs)" if pair["runs"] > 1 else "")


def _server_label(result: dict[str, Any], run: dict[str, Any]) -> str:
    """The server, numbered by repetition when every pair ran several times."""
    if result.get("repeat", 1) > 1:
        return f"{run['server']} #{run.get('repeat', 1)}"
    return run["server"]


def _machine_line(result: dict[str, Any]) -> str:
    m = result["machine"]
    pinning = (
        f"server pinned to core {m['server_core']}, load generator to core {m['loadgen_core']}"
        if m.get("server_core") is not None
        else "not pinned (one core)"
    )
    return (
        f"{m['nproc']} × {m['cpu_model']}, {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}, uvloop {m['uvloop']}, {m['cc']}, fd limit {m['fd_limit']}; "
        f"{pinning}."
    )


def markdown(result: dict[str, Any], chart_path: str | None) -> str:
    """The results as Markdown: traffic table, idle table, ratios, notes, chart."""
    m = result["machine"]
    commit = m["chatd_commit"] + (" + uncommitted changes" if m.get("chatd_dirty") else "")
    timing = result["timing"]
    compare = result.get("compare")
    against = (f", {compare['server']} at `{compare['commit']}`" if compare else "")
    repeat = result.get("repeat", 1)
    out = [
        f"Run `{result['command'].strip()}` started {result['started']} "
        f"({result['wall_s']:.0f} s wall), chatd at `{commit}`{against}"
        + (f"; every (scenario, server) pair ran {repeat} times, interleaved." if repeat > 1
           else "."),
        "",
        f"Machine: {_machine_line(result)}",
        "",
        f"Each traffic run: fresh server, setup until quiet, {timing['warmup']:g} s warm-up, "
        f"{timing['duration']:g} s measured. Latency is send → receive at the load "
        "generator; CPU is the share of one core over the measured window (in brackets: "
        "the server's whole core, loopback softirq work included).",
        "",
    ]
    traffic = _runs(result, "traffic")
    if traffic:
        out += [
            "| scenario | server | deliveries/s | msgs in/s | p50 ms | p99 ms | p99.9 ms "
            "| max ms | server CPU | peak RSS MiB | loadgen CPU | status |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
        ]
        for run in traffic:
            x = run["metrics"]
            lat = x.get("latency_us") or {}
            core = x.get("server_core_busy")
            cpu = _pct(x.get("server_cpu")) + (f" ({core:.0%})" if core is not None else "")
            rss = x.get("peak_rss_mib")
            out.append(
                f"| {run['scenario']} | {_server_label(result, run)} "
                f"| {_rate(x.get('deliveries_per_s'))} "
                f"| {_rate(x.get('messages_in_per_s'))} | {_ms(lat.get('p50'))} "
                f"| {_ms(lat.get('p99'))} | {_ms(lat.get('p999'))} | {_ms(lat.get('max'))} "
                f"| {cpu} | {f'{rss:.0f}' if rss else '–'} | {_pct(x.get('loadgen_cpu'))} "
                f"| {_status(run)} |"
            )
        out.append("")
    idle = _runs(result, "idle")
    if idle:
        out += [
            "| scenario | server | connected | setup s | RSS idle MiB | RSS with clients MiB "
            "| KiB per connection | peak RSS MiB | status |",
            "|---|---|--:|--:|--:|--:|--:|--:|---|",
        ]
        for run in idle:
            x = run["metrics"]
            per = x.get("rss_per_conn_kib")
            setup = x.get("setup_s")
            out.append(
                f"| {run['scenario']} | {_server_label(result, run)} | {x.get('connected', 0):,} "
                f"| {f'{setup:.1f}' if setup is not None else '–'} "
                f"| {x.get('rss_idle_mib', 0):.1f} | {x.get('rss_loaded_mib', 0):.1f} "
                f"| {f'{per:.1f}' if per is not None else '–'} "
                f"| {x.get('peak_rss_mib', 0):.1f} | {_status(run)} |"
            )
        out.append("")
    if repeat > 1 and traffic:
        out += [
            f"Deliveries/s over the {repeat} runs of each pair (FAILED runs left out of the "
            "numbers):",
            "",
            "| scenario | server | min | median | max | status |",
            "|---|---|--:|--:|--:|---|",
        ]
        for scenario in _scenarios(traffic):
            for server in _servers(traffic):
                pair = summary(result, scenario, server)
                if pair is None:
                    continue
                out.append(
                    f"| {scenario} | {server} | {_rate(pair['min'])} | {_rate(pair['median'])} "
                    f"| {_rate(pair['max'])} | {_pair_status(pair)} |"
                )
        out.append("")
    if compare and result.get("comparison"):
        ref = compare["server"]
        out += [
            f"| scenario | chatd deliveries/s | {ref} deliveries/s | chatd ÷ {ref} "
            f"| chatd status | {ref} status |",
            "|---|--:|--:|--:|---|---|",
        ]
        for row in result["comparison"]:
            ratio = f"{row['ratio']:.3f}×" if row["ratio"] is not None else "–"
            out.append(
                f"| {row['scenario']} | {_rate(row['current']['median'])} "
                f"| {_rate(row['other']['median'])} | {ratio} "
                f"| {_pair_status(row['current'])} | {_pair_status(row['other'])} |"
            )
        out.append("")
    if result.get("headline"):
        out += [
            "Headline: chatd's median deliveries/s beside the strongest baseline of this run "
            "and the limit of its design (C, edge-triggered epoll, sends coalesced once per "
            "loop pass); the status names each pair with a run that was not ok:",
            "",
            "| scenario | chatd | strongest baseline | chatd ÷ baseline | limit (c-coalesce) "
            "| chatd ÷ limit | status |",
            "|---|--:|---|--:|--:|--:|---|",
        ]
        for row in result["headline"]:
            best = (f"{row['baseline']} {_rate(row['best']['median'])}" if row["best"]
                    else "–")
            limit = row["limit"]
            out.append(
                f"| {row['scenario']} | {_rate(row['chatd']['median'])} | {best} "
                f"| {_ratio(row['vs_baseline'])} "
                f"| {_rate(limit['median']) if limit else '–'} | {_ratio(row['vs_limit'])} "
                f"| {_headline_status(row)} |"
            )
        out.append("")
    if result.get("targets"):
        out += [
            "Targets (issue 10), on the medians of this run. A run the load generator "
            "could not keep up with (INVALID) measured a lower bound of its server, so "
            "a verdict says what such a figure still proves:",
            "",
            "| scenario | metric | chatd | compared with | target | measured | met |",
            "|---|---|--:|---|--:|--:|---|",
        ]
        for row in result["targets"]:
            sign = "≥" if row["better"] == "higher" else "≤"
            against = row["against"] or "a fixed bound"
            value = _value(row["metric"], row["other"])
            met = row["verdict"]
            target = (f"{sign} {row['factor']:g}×" if row["against"]
                      else f"{sign} {value}")
            measured = _ratio(row["ratio"]) if row["against"] else _value(
                row["metric"], row["chatd"])
            out.append(
                f"| {row['scenario']} | {row['metric']} | {_value(row['metric'], row['chatd'])} "
                f"| {against} {value if row['against'] else ''} | {target} | {measured} "
                f"| {met} |"
            )
        out.append("")
    notes = [
        f"- {run['scenario']} / {_server_label(result, run)}: {text}"
        for run in result["runs"]
        for text in run["problems"] + [n for n in run["notes"] if "\n" not in n]
    ]
    if notes:
        out += ["Notes:", "", *notes, ""]
    out += chart_lines(result, chart_path)
    return "\n".join(out)


# -- chart -------------------------------------------------------------------------------------


#: What a report says where the chart would be, when matplotlib is not installed.
NO_CHART = 'No chart: matplotlib is not installed (`pip install -e ".[bench]"`).'


def chart_lines(result: dict[str, Any], chart_path: str | None) -> list[str]:
    """The report's lines for the chart: the image, or why there is none."""
    if chart_path:
        return [f"![deliveries/s per scenario and server]({chart_path})", ""]
    if _runs(result, "traffic") and importlib.util.find_spec("matplotlib") is None:
        return [NO_CHART, ""]
    return []


def chart(result: dict[str, Any], path: Path) -> Path | None:
    """A grouped bar chart of deliveries/s per traffic scenario and server (PNG); None
    when there is no traffic run, or no matplotlib (the ``bench`` extra)."""
    traffic = _runs(result, "traffic")
    if not traffic:
        return None
    try:
        import matplotlib
    except ImportError:
        return None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios, servers = _scenarios(traffic), _servers(traffic)
    width = 0.8 / len(servers)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.9 * len(scenarios)), 5.2), dpi=110)
    for i, server in enumerate(servers):
        xs, ys, hatches = [], [], []
        for j, scenario in enumerate(scenarios):
            pair = summary(result, scenario, server)  # the median, with --repeat
            if pair is None or pair["median"] is None:
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(pair["median"])
            hatches.append("//" if pair["status"] != "ok" else "")
        bars = ax.bar(xs, ys, width, label=server)
        for bar, hatch, y in zip(bars, hatches, ys, strict=True):
            bar.set_hatch(hatch)
            ax.annotate(_rate(y), (bar.get_x() + bar.get_width() / 2, y), ha="center",
                        va="bottom", fontsize=7, rotation=90, xytext=(0, 2),
                        textcoords="offset points")
    ax.set_yscale("log")
    ax.set_xticks(range(len(scenarios)), scenarios, fontsize=9)
    ax.set_ylabel("deliveries/s (log scale; higher is better)")
    m = result["machine"]
    repeat = result.get("repeat", 1)
    medians = (f"\nbars: the median of {repeat} runs, hatched if one was not ok"
               if repeat > 1 else "")
    ax.set_title(
        f"chatd {m['chatd_commit']} vs baselines — {m['nproc']} × {m['cpu_model']}, "
        f"Python {m['python']}\nhatched: INVALID run (load generator saturated); latency-1000 "
        "and rooms-5000x500 offer a fixed rate: a server that keeps up delivers exactly that"
        + medians,
        fontsize=9,
    )
    ax.legend(fontsize=8, loc="upper right")
    ax.margins(y=0.25)
    ax.grid(axis="y", which="major", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# -- docs --------------------------------------------------------------------------------------


def update_docs(doc: Path, result: dict[str, Any], out: Path, chart_file: Path | None) -> None:
    """Replace the results section of docs/performance.md (between the markers)."""
    text = doc.read_text()
    start, end = text.find(DOC_START), text.find(DOC_END)
    if start < 0 or end < start:
        raise SystemExit(f"bench: {doc} has no {DOC_START} ... {DOC_END} section")
    rel = os.path.relpath(chart_file, doc.parent) if chart_file else None
    body = markdown(result, chart_path=rel)
    doc.write_text(text[: start + len(DOC_START)] + "\n" + body + text[end:])


if __name__ == "__main__":
    default = Path(__file__).parent / "results" / "latest" / "results.json"
    saved = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    loaded = json.loads(saved.read_text())
    # Re-derived, so a saved result is reported by the current rules.
    from run import TARGETS  # bench/run.py, beside this file

    loaded["headline"] = headline(loaded)
    loaded["targets"] = targets(loaded, TARGETS)
    print(markdown(loaded, chart_path="deliveries.png"))
