"""bench/run.py writes the config of each TLS, IRC, WebSocket and jsonl run afresh.

A results folder is reused from run to run (``bench/results/latest`` is the default,
and is in git), and a TLS run's certificate lives in that run's temporary folder.  A
derived config kept from an earlier run named a certificate that no longer existed,
and every chatd TLS run of the next full benchmark failed at startup; a listener
config kept from an earlier run would also miss any change to the base config.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from bench_modules import bench_module

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def bench_run() -> Iterator[ModuleType]:
    with bench_module("run.py", "bench_run") as module:
        yield module


def _context(bench_run: ModuleType, config: Path, workdir: Path) -> object:
    workdir.mkdir()
    (workdir / "bench-tls.pem").write_text("a run's certificate\n")  # no openssl needed
    return bench_run.Context(config, workdir, Path("loadgen"), bench_run.FULL_TIMING,
                             bench_run.Cores(None, None), REPO)


def _chatd(bench_run: ModuleType) -> object:
    return next(s for s in bench_run.SERVERS if s.name == "chatd")


def test_a_tls_run_names_its_own_certificate_not_an_earlier_runs(
    bench_run: ModuleType, tmp_path: Path,
) -> None:
    config = tmp_path / "chatd-bench.yaml"
    config.write_text(yaml.safe_dump({"listen": {"host": "127.0.0.1", "port": 0}}))
    first = bench_run.tls_server(_chatd(bench_run), _context(bench_run, config,
                                                             tmp_path / "run1"))
    second = bench_run.tls_server(_chatd(bench_run), _context(bench_run, config,
                                                              tmp_path / "run2"))
    assert first.config == second.config  # one file in the results folder
    tls = yaml.safe_load(second.config.read_text())["listen"]["tls"]
    assert tls == {"cert": str(tmp_path / "run2" / "bench-tls.pem"),
                   "key": str(tmp_path / "run2" / "bench-tls.pem")}


@pytest.mark.parametrize("protocol", ["irc", "websocket", "jsonl"])
def test_a_protocol_run_follows_the_base_config_of_its_own_run(
    bench_run: ModuleType, tmp_path: Path, protocol: str,
) -> None:
    config = tmp_path / "chatd-bench.yaml"
    ctx = _context(bench_run, config, tmp_path / "run")
    config.write_text(yaml.safe_dump({"listen": {"port": 0}, "limits": {"max_clients": 10}}))
    bench_run.protocol_server(_chatd(bench_run), ctx, protocol)
    config.write_text(yaml.safe_dump({"listen": {"port": 0}, "limits": {"max_clients": 20}}))
    spec = bench_run.protocol_server(_chatd(bench_run), ctx, protocol)
    data = yaml.safe_load(spec.config.read_text())
    assert data["limits"] == {"max_clients": 20}
    assert data["listen"] == {"host": "127.0.0.1", "port": 0, "protocol": protocol}
