"""The metrics endpoint (RELIABILITY "Introspection"): Prometheus text over HTTP.

Off by default, loopback only when on, and the counters it shows move with what
really happened: connections, messages, deliveries, refusals by reason, limit
disconnections by kind, plugin errors by plugin.  The operator's ``/stats``
shows the same counters.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from chatd.testing import ChatClient, ServerProcess, reset, write_config

pytestmark = pytest.mark.timeout(60)

Start = Callable[..., ServerProcess]
PASSWORD = "correct-horse-battery"
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")

FLAKY_PLUGIN = """
from chatd import hookimpl


@hookimpl
def chatd_message(client, text):
    if text.startswith("boom"):
        raise ValueError("flaky " + text)
"""


# -- helpers ---------------------------------------------------------------------


def metrics_url(server: ServerProcess) -> str:
    match = server.wait_for_log(r"metrics on (http://([\d.]+):(\d+)/metrics)")
    assert ipaddress.ip_address(match.group(2)).is_loopback, match.group(0)
    return match.group(1)


def scrape(url: str) -> dict[str, float]:
    """One GET of /metrics, as {'name{labels}': value}."""
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        body = response.read().decode("utf-8")
    samples: dict[str, float] = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample: {line!r}"
        samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


def scrape_until(url: str, expected: dict[str, float], timeout: float = 5.0) -> dict[str, float]:
    """Scrape until every ``expected`` sample has its value (counters are published
    once a second); return the last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        wrong = {k: samples.get(k) for k, v in expected.items() if samples.get(k) != v}
        if not wrong:
            return samples
        assert time.monotonic() < deadline, f"metrics never reached {expected}; got {wrong}"
        time.sleep(0.1)


def operator_stats(op: ChatClient) -> str:
    op.send("/stats")
    op.expect(r"^\*\*\* clients \d+/\d+")
    lines = [op.history[-1]] + [op.recv_line() for _ in range(9)]
    assert lines[-1].startswith("*** rejected writes: "), lines
    return "\n".join(lines)


def listening_ports(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every IPv4 TCP socket of ``pid`` in LISTEN state."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    with open(f"/proc/{pid}/net/tcp") as rows:
        next(rows)
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and fields[9] in inodes:
                hex_addr, hex_port = fields[1].split(":")
                addr = ipaddress.ip_address(bytes.fromhex(hex_addr)[::-1])
                found.add((str(addr), int(hex_port, 16)))
    return found


# -- tests ------------------------------------------------------------------------


def test_metrics_counters_move_and_match_operator_stats(
    chatd_server: Start, tmp_path: Path
) -> None:
    """The introspection the catalogue asks for ("Redis INFO"): `rejected_connections`,
    `qbuf_limit_disconnections`, `plugin_errors{plugin}` (excess flood no longer
    disconnects: a long backlog holds reading instead)
    and traffic counters, over /metrics (loopback HTTP) and the operator's /stats."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "flaky.py").write_text(textwrap.dedent(FLAKY_PLUGIN))
    server = chatd_server(
        metrics={"enabled": True, "port": 0},
        limits={"max_clients": 4, "max_line_bytes": 64, "recvq_max_bytes": 1024},
        flood={"burst_lines": 10, "lines_per_second": 2},
        plugin_dirs=[str(plugins)],
        plugins={"oper": {"password": PASSWORD}},
    )
    url = metrics_url(server)
    assert ("127.0.0.1", int(url.rsplit(":", 1)[1].split("/")[0])) in listening_ports(server.pid)
    before = scrape(url)
    assert before["chatd_connections_total"] == 0
    assert before["chatd_messages_in_total"] == 0

    op = server.client()
    op.send(f"/oper {PASSWORD}")
    op.expect(r"^\*\*\* you are now an operator$")
    alice = server.client()
    bob = server.client()
    op.expect_line(f"*** {alice.nick} joined #lobby")
    op.expect_line(f"*** {bob.nick} joined #lobby")
    alice.expect_line(f"*** {bob.nick} joined #lobby")
    joined = scrape_until(url, {"chatd_connections_total": 3, "chatd_clients": 3})

    # Messages and deliveries: 3 lines, each to the 2 others; 2 of them break a plugin.
    for text in ("hello", "boom 1", "boom 2"):
        alice.send(text)
        for other in (op, bob):
            other.expect(rf"^<{alice.nick}> {text}$")
    chatted = scrape_until(url, {
        "chatd_messages_in_total": joined["chatd_messages_in_total"] + 3,
        "chatd_deliveries_total": joined["chatd_deliveries_total"] + 6,
        'chatd_plugin_errors_total{plugin="flaky"}': 2,
    })
    assert chatted["chatd_bytes_in_total"] > joined["chatd_bytes_in_total"]
    assert chatted["chatd_bytes_out_total"] > joined["chatd_bytes_out_total"]

    # A line far past recvq_max with no newline: qbuf.
    victim = server.client()
    victim.send_raw(b"x" * 4096)
    assert victim.expect_eof()[-1] == "! input line far too long (excess flood); disconnecting"
    victim.close()
    scrape_until(url, {'chatd_limit_disconnections_total{kind="qbuf"}': 1, "chatd_clients": 3})

    # More queued lines than recvq_max under the flood limit: not a disconnection any
    # more (reading is held until the backlog drains); the flooder leaves by itself.
    flooder = server.client()
    flooder.send_raw(b"".join(b"flood line %03d\n" % i for i in range(200)))
    flooder.expect(r"^\*\*\* flood limit: your lines are delayed to 2 per second")
    reset(flooder.sock)
    scrape_until(url, {"chatd_clients": 3})
    assert 'chatd_limit_disconnections_total{kind="excess_flood"}' not in scrape(url)

    # A full server refuses: rejected by reason.
    filler = server.client()
    refused = server.client(welcome=False)
    assert refused.expect_eof() == ["! server full (max 4 clients); try again later"]
    scrape_until(url, {
        'chatd_rejected_connections_total{reason="server_full"}': 1,
        "chatd_connections_total": 6,  # op, alice, bob, victim, flooder, filler
        "chatd_clients": 4,
        "chatd_max_clients": 4,
    })

    # /stats says the same as /metrics.
    report = operator_stats(op)
    assert "refused: server_full 1" in report, report
    assert "limit disconnections: qbuf 1" in report, report
    assert "plugin errors: flaky 2" in report, report
    assert "clients 4/4, rooms 1, connections since start 6" in report, report
    assert "*** storage: ok\n" in report and "*** rejected writes: none" in report, report
    same = {}
    for name, metric in (("messages in", "chatd_messages_in_total"),
                         ("deliveries", "chatd_deliveries_total")):
        match = re.search(rf"{name} (\d+)", report)
        assert match, report
        same[metric] = float(match.group(1))
    final = scrape_until(url, same)
    # The flooder's first 10 lines (its burst) were chat before it was cut.
    assert final["chatd_messages_in_total"] == chatted["chatd_messages_in_total"] + 10
    filler.close()
    assert server.proc.poll() is None
    log = server.log()
    # The only tracebacks are the plugin's own errors, logged on purpose.
    assert log.count("Traceback") <= len(re.findall(r"(?m)^ValueError: flaky boom", log)), log


def test_metrics_are_off_by_default(chatd_server: Start) -> None:
    """Metrics are "off by default": no "metrics on" line, and the process listens on
    the chat port only (nothing on 9788 or anywhere else)."""
    server = chatd_server()
    server.client()
    server.wait_for_log(r"listening on 127\.0\.0\.1:")
    time.sleep(1.2)  # past the first stats publication, when an exporter would be up
    server.wait_for_log(r"connect id=1 ")  # logged after an exporter's line would be
    assert "metrics on" not in server.log()
    assert listening_ports(server.pid) == {("127.0.0.1", server.port)}


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::"])
def test_metrics_host_must_be_loopback(tmp_path: Path, host: str) -> None:
    """`metrics.host` "must be a loopback address": anything else is a config error
    (exit 2, one line naming the key) before anything listens."""
    config = write_config(tmp_path / "config.yaml", metrics={"enabled": True, "host": host})
    port_file = tmp_path / "port"
    result = subprocess.run(
        [sys.executable, "-m", "chatd", "--config", str(config), "--port-file", str(port_file)],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.match(r"^chatd: .*config\.yaml:\d+: metrics\.host: ", lines[0]), lines[0]
    assert "Traceback" not in result.stderr
    assert not port_file.exists()


def test_the_store_counters_are_exported_with_rejected_writes_by_owner() -> None:
    """What the store counts (issue 18 rule 2) reaches Prometheus: writer restarts,
    and bad writes in total and by the plugin that queued them."""
    from prometheus_client import CollectorRegistry, generate_latest

    from chatd.metrics import ChatdCollector

    registry = CollectorRegistry()
    registry.register(ChatdCollector(lambda: {
        "storage_rejected": 3, "storage_rejected_by": {"poison": 2, "history": 1},
        "storage_writer_restarts": 1, "storage_ok": 1,
    }))
    samples = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    assert samples["chatd_storage_rejected_total"] == 3
    assert samples['chatd_storage_rejected_by_owner_total{owner="poison"}'] == 2
    assert samples['chatd_storage_rejected_by_owner_total{owner="history"}'] == 1
    assert samples["chatd_storage_writer_restarts_total"] == 1
    assert samples["chatd_storage_ok"] == 1


def test_every_metric_is_listed_in_the_operations_guide() -> None:
    """docs/operations.md's metrics table names every metric the exporter serves."""
    from chatd import metrics

    guide = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text()
    listed = set(re.findall(r"`(chatd_[a-z_]+)(?:\{\w+\})?`", guide))
    served = {f"{name}_total" for name in (*metrics._COUNTERS, *metrics._LABELLED)}
    served |= set(metrics._GAUGES)
    assert served <= listed, f"not in docs/operations.md: {sorted(served - listed)}"
