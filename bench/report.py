"""Turning a benchmark result (``results.json``) into tables, ratios and a chart.

Kept apart from the runner so the report can be regenerated from a saved result
(``python bench/report.py bench/results/latest/results.json``) and so matplotlib
is imported only when a chart is drawn.
"""

from __future__ import annotations

import json
import os
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


def _find(result: dict[str, Any], scenario: str, server: str) -> dict[str, Any] | None:
    for run in result["runs"]:
        if run["scenario"] == scenario and run["server"] == server:
            return run
    return None


def ratios(
    result: dict[str, Any], targets: dict[str, float], reference: str
) -> list[dict[str, Any]]:
    """chatd / ``reference`` deliveries/s for each target scenario that ran."""
    rows = []
    for scenario, target in targets.items():
        ours, theirs = _find(result, scenario, "chatd"), _find(result, scenario, reference)
        if ours is None or theirs is None:
            continue
        a = ours["metrics"].get("deliveries_per_s") or 0.0
        b = theirs["metrics"].get("deliveries_per_s") or 0.0
        valid = ours["status"] == "ok" and theirs["status"] == "ok"
        ratio = a / b if b else None
        rows.append({
            "scenario": scenario, "chatd": a, "reference": b, "ratio": ratio,
            "target": target, "met": bool(valid and ratio is not None and ratio >= target),
            "valid": valid,
        })
    return rows


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
    out = [
        f"Run `{result['command'].strip()}` started {result['started']} "
        f"({result['wall_s']:.0f} s wall), chatd at `{commit}`.",
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
                f"| {run['scenario']} | {run['server']} | {_rate(x.get('deliveries_per_s'))} "
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
                f"| {run['scenario']} | {run['server']} | {x.get('connected', 0):,} "
                f"| {f'{setup:.1f}' if setup is not None else '–'} "
                f"| {x.get('rss_idle_mib', 0):.1f} | {x.get('rss_loaded_mib', 0):.1f} "
                f"| {f'{per:.1f}' if per is not None else '–'} "
                f"| {x.get('peak_rss_mib', 0):.1f} | {_status(run)} |"
            )
        out.append("")
    if result.get("ratios"):
        out += [
            "| scenario | chatd deliveries/s | asyncio-protocol-uvloop deliveries/s "
            "| chatd ÷ uvloop | target | met |",
            "|---|--:|--:|--:|--:|---|",
        ]
        for row in result["ratios"]:
            ratio = f"{row['ratio']:.2f}×" if row["ratio"] is not None else "–"
            met = ("yes" if row["met"] else "no") if row["valid"] else "n/a (run not ok)"
            out.append(
                f"| {row['scenario']} | {_rate(row['chatd'])} | {_rate(row['reference'])} "
                f"| {ratio} | {row['target']:g}× | {met} |"
            )
        out.append("")
    notes = [
        f"- {run['scenario']} / {run['server']}: {text}"
        for run in result["runs"]
        for text in run["problems"] + [n for n in run["notes"] if "\n" not in n]
    ]
    if notes:
        out += ["Notes:", "", *notes, ""]
    if chart_path:
        out += [f"![deliveries/s per scenario and server]({chart_path})", ""]
    return "\n".join(out)


# -- chart -------------------------------------------------------------------------------------


def chart(result: dict[str, Any], path: Path) -> Path | None:
    """A grouped bar chart of deliveries/s per traffic scenario and server (PNG)."""
    traffic = _runs(result, "traffic")
    if not traffic:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(dict.fromkeys(r["scenario"] for r in traffic))
    servers = list(dict.fromkeys(r["server"] for r in traffic))
    width = 0.8 / len(servers)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.9 * len(scenarios)), 5.2), dpi=110)
    for i, server in enumerate(servers):
        xs, ys, hatches = [], [], []
        for j, scenario in enumerate(scenarios):
            run = _find(result, scenario, server)
            if run is None or run["status"] == "FAILED":
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(run["metrics"].get("deliveries_per_s") or 0.0)
            hatches.append("//" if run["status"] != "ok" else "")
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
    ax.set_title(
        f"chatd {m['chatd_commit']} vs asyncio baselines — {m['nproc']} × {m['cpu_model']}, "
        f"Python {m['python']}\nhatched: INVALID run (load generator saturated); latency-1000 "
        "and rooms-5000x500 offer a fixed rate: a server that keeps up delivers exactly that",
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
    print(markdown(json.loads(saved.read_text()), chart_path="deliveries.png"))
