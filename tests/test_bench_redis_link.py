"""bench/redis_link.py must keep working: a tiny run against a real redis-server.

The bench chose how chatd's loop talks to Redis (docs/cluster.md, "Design notes"); a
bench that silently lost batches, or mismeasured a way, would have chosen wrongly.  So
a seconds-long run of all three ways and the SIGSTOP freeze must exit 0 with every
batch delivered, and the two pieces the reactor way is built of are checked on their
own: the hand-written RESP that hiredis must read back, and the outbox bound that
keeps a frozen Redis from costing the loop unbounded memory.  It never asserts a time
or a speed (DESIGN.md section 6).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from chatd.testing.probes import skip_unless_ci

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench" / "redis_link.py"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def link():
    """bench/redis_link.py as a module; skips (fails in CI) without Redis's pieces."""
    if shutil.which("redis-server") is None:
        skip_unless_ci("redis-server is not installed")
    for module in ("redis", "hiredis"):
        if importlib.util.find_spec(module) is None:
            skip_unless_ci(f"{module} is not installed: pip install redis hiredis")
    spec = importlib.util.spec_from_file_location("bench_redis_link", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_redis_link"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_redis_link", None)


@pytest.fixture(scope="module")
def tiny(link, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("redis-link") / "result.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--rates", "300", "--channels", "1", "20",
         "--duration", "0.4", "--repeat", "1", "--freeze", "0.3", "--freeze-margin", "0.3",
         "--freeze-rate", "400", "--freeze-channels", "20", "--grace", "10",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=100,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(out.read_text()), done.stdout


def test_every_way_delivers_every_batch_at_every_channel_count(tiny):
    result, _ = tiny
    seen = {(r["way"], r["channels"]) for r in result["rows"]}
    assert seen == {(w, k) for w in ("thread", "reactor", "blocking") for k in (1, 20)}
    for row in result["rows"]:
        assert row["sent"] > 0 and not row["shed"] and not row["error"], row
        assert row["received"] == row["sent"], row
        assert 0 <= row["p50_ms"] <= row["p99_ms"], row
        for key in ("pub_loop_us", "pub_proc_us", "sub_loop_us", "sub_proc_us"):
            assert row[key] > 0, (key, row)


def test_a_frozen_redis_loses_nothing_once_thawed_and_only_the_io_ways_buffer(tiny):
    result, _ = tiny
    assert [r["way"] for r in result["freeze"]] == ["thread", "reactor", "blocking"]
    for row in result["freeze"]:
        assert row["received"] == row["sent"] > 0 and not row["shed"], row
    outbox = {r["way"]: r["peak_outbox"] for r in result["freeze"]}
    # The blocking floor has no outbox (its loop waited instead); the others queued.
    assert outbox["blocking"] == 0 and outbox["thread"] > 0 and outbox["reactor"] > 0


def test_the_table_names_every_way_and_the_freeze(tiny):
    _, stdout = tiny
    for label in ("A thread", "B reactor", "C blocking", "worst tick lag", "lost"):
        assert label in stdout


def test_hand_written_resp_reads_back_through_hiredis(link):
    import hiredis

    reader = hiredis.Reader()
    payload = b'{"t":1,"text":"a\r\nb $3 *2"}'
    wire = link.resp(b"PUBLISH", b"chatd:room:#x", payload) + link.resp(b"PING")
    for i in range(len(wire)):  # fed a byte at a time, as a socket may deliver it
        reader.feed(wire[i:i + 1])
    assert reader.gets() == [b"PUBLISH", b"chatd:room:#x", payload]
    assert reader.gets() == [b"PING"]
    assert reader.gets() is False


def test_the_reactor_publisher_sheds_past_its_outbox_bound_while_redis_is_frozen(link,
                                                                                 monkeypatch):
    from chatd.reactor import Reactor

    monkeypatch.setattr(link, "OUTBOX_LIMIT", 1 << 20)
    reactor = Reactor()
    try:
        with link.redis_server() as (server, port):
            stats = link.PubStats()
            publisher = link.ReactorPublisher(reactor, port, stats)
            os.kill(server.pid, signal.SIGSTOP)
            try:
                big = b"x" * 60_000
                for _ in range(400):  # 24 MB: past the kernel's buffers and the bound
                    publisher.publish([(b"chatd:room:#x", big)])
                    reactor.run_once(max_wait=0)
            finally:
                os.kill(server.pid, signal.SIGCONT)
            assert stats.shed > 0
            assert len(publisher.out) <= link.OUTBOX_LIMIT
            assert stats.peak_outbox <= link.OUTBOX_LIMIT
            publisher.sock.close()
    finally:
        reactor.close()
