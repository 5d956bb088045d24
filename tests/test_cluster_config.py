"""The ``cluster:`` section: off by default, checked like every section, one node id for
the cluster and the events; a missing redis-py or password is a clear error, and the
URL's password is never shown."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from chatd.config import ConfigError, default_config, parse_config


def _cluster(text: str):
    return parse_config("cluster:\n" + text)


def test_off_by_default_and_nothing_imported():
    config = default_config()
    assert not config.cluster.enabled and config.cluster.redis_url is None
    code = ("import sys; from chatd.config import default_config; "
            "from chatd.testing import InProcessChat\n"
            "with InProcessChat() as chat:\n"
            "    assert type(chat.domain.backend).__name__ == 'LocalBackend'\n"
            "assert 'redis' not in sys.modules, 'redis imported without a cluster'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_defaults():
    cluster = _cluster("  redis_url: redis://localhost:6379/0\n").cluster
    assert cluster.enabled and cluster.prefix == "chatd"
    assert (cluster.heartbeat_seconds, cluster.node_timeout_seconds) == (1.0, 5.0)
    assert cluster.max_outbox == 10_000 and cluster.max_payload_bytes == 1 << 20
    assert cluster.connect_timeout_seconds == 2.0


@pytest.mark.parametrize("url", ["redis://h:6379/0", "rediss://:pw@h:6380/2", "REDIS://h"])
def test_redis_and_rediss_urls_are_accepted(url):
    assert _cluster(f"  redis_url: {url}\n").cluster.redis_url == url


@pytest.mark.parametrize("url", ["http://:topsecret@h/0", "topsecret", "postgresql://u:topsecret@h"])
def test_another_url_is_refused_and_its_password_not_shown(url):
    expected = r"expected a redis://, rediss:// or redis\+sentinel:// URL"
    with pytest.raises(ConfigError, match=expected) as refused:
        _cluster(f"  redis_url: '{url}'\n")
    assert "topsecret" not in str(refused.value)
    assert "cluster.redis_url" in str(refused.value)


@pytest.mark.parametrize("text, expected", [
    ("  password_env: X\n  password_file: f\n", "password_env or cluster.password_file, not both"),
    ("  heartbeat_seconds: 5\n  node_timeout_seconds: 5\n", "more than heartbeat_seconds"),
    ("  prefix: 'a b'\n", "cluster.prefix"),
    ("  prefix: ''\n", "cluster.prefix"),
    ("  node_id: 'x:y'\n", "cluster.node_id"),
    ("  max_outbox: 0\n", "cluster.max_outbox"),
    ("  max_payload_bytes: 10\n", "cluster.max_payload_bytes"),
    ("  heartbeat_seconds: 0\n", "cluster.heartbeat_seconds"),
    ("  connect_timeout_seconds: .nan\n", "cluster.connect_timeout_seconds"),
    ("  password_env: '1BAD'\n", "cluster.password_env"),
    ("  unknown_key: 1\n", "unknown_key"),
])
def test_bad_settings_are_clear_errors(text, expected):
    with pytest.raises(ConfigError, match=expected):
        _cluster("  redis_url: redis://h/0\n" + text)


def test_one_node_id_for_the_cluster_and_the_events():
    config = _cluster("  redis_url: redis://h/0\n  node_id: chat1\n")
    assert config.cluster.node_id == config.server.node_id == "chat1"
    config = parse_config("server: {node_id: chat2}\ncluster: {redis_url: 'redis://h/0'}\n")
    assert config.cluster.node_id == config.server.node_id == "chat2"
    config = parse_config("server: {node_id: chat3}\n"
                          "cluster: {redis_url: 'redis://h/0', node_id: chat3}\n")
    assert config.cluster.node_id == "chat3"
    with pytest.raises(ConfigError, match=r"differs from server\.node_id"):
        parse_config("server: {node_id: a}\ncluster: {redis_url: 'redis://h/0', node_id: b}\n")


def test_without_a_node_id_each_process_gets_a_unique_one():
    config = _cluster("  redis_url: redis://h/0\n")
    node = config.cluster.node_id
    assert node == config.server.node_id and node.endswith(f"-{os.getpid()}")
    assert len(node) <= 64
    # Off: server.node_id stays as it was (null: the host name at start).
    assert parse_config("cluster: {prefix: x}\n").server.node_id is None


def test_the_password_from_the_environment_or_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CHATD_TEST_REDIS_PW", "from-env")
    config = _cluster("  redis_url: redis://h/0\n  password_env: CHATD_TEST_REDIS_PW\n")
    assert config.cluster.password() == "from-env"
    (tmp_path / "pw").write_text("from-file\nignored\n")
    config = parse_config("cluster: {redis_url: 'redis://h/0', password_file: pw}\n",
                          source=tmp_path / "c.yaml")
    assert config.cluster.password() == "from-file"
    assert _cluster("  redis_url: redis://:inurl@h/0\n").cluster.password() is None
    monkeypatch.delenv("CHATD_TEST_REDIS_PW")
    with pytest.raises(ConfigError, match=r"password_env: .*CHATD_TEST_REDIS_PW.* not set"):
        _cluster("  redis_url: redis://h/0\n  password_env: CHATD_TEST_REDIS_PW\n"
                 ).cluster.password()
    config = parse_config("cluster: {redis_url: 'redis://h/0', password_file: nope}\n",
                          source=tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match=r"cluster\.password_file: cannot read"):
        config.cluster.password()


def _check(config: Path, *, block: str | None = None) -> subprocess.CompletedProcess[str]:
    prelude = f"sys.modules[{block!r}] = None; " if block else ""
    code = (f"import sys; {prelude}from chatd.cli import main; "
            f"sys.exit(main(['--config', {str(config)!r}, '--check-config']))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)


def test_check_config_names_the_missing_redis_py_and_an_unreadable_password(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("listen: {port: 0}\ncluster: {redis_url: 'redis://:s3cr3t@127.0.0.1:1/0'}\n")
    missing = _check(config, block="redis")
    assert missing.returncode == 2
    assert "pip install 'chatd[cluster]'" in missing.stderr
    no_parser = _check(config, block="hiredis")  # the loop's connections parse with it
    assert no_parser.returncode == 2 and "pip install 'chatd[cluster]'" in no_parser.stderr
    assert "s3cr3t" not in missing.stderr + missing.stdout
    config.write_text("listen: {port: 0}\n"
                      "cluster: {redis_url: 'redis://127.0.0.1:1/0', password_file: nope}\n")
    unreadable = _check(config)
    assert unreadable.returncode == 2 and "cluster.password_file" in unreadable.stderr


def test_a_server_without_redis_py_refuses_to_start_and_says_why(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("listen: {port: 0}\ncluster: {redis_url: 'redis://:s3cr3t@127.0.0.1:1/0'}\n")
    code = ("import sys; sys.modules['redis'] = None; from chatd.cli import main; "
            f"sys.exit(main(['--config', {str(config)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert "pip install 'chatd[cluster]'" in done.stderr
    assert "Traceback" not in done.stderr and "s3cr3t" not in done.stderr


@pytest.mark.parametrize("url", [
    "redis://:top/secret@127.0.0.1:6379/0",   # a password with / # ? not percent-encoded
    "redis://:top#secret@127.0.0.1:6379/0",
    "rediss://u:top?secret@127.0.0.1:6379/0",
    "redis://:topsecret@127.0.0.1:notaport/0",
    "redis://:topsecret@[::1:6379/0",
    "redis://:topsecret@127.0.0.1:6379/zero",
    "redis://:topsecret@127.0.0.1:99999/0",
])
def test_a_redis_url_that_does_not_parse_is_refused_without_its_password(url):
    with pytest.raises(ConfigError, match=r"cluster\.redis_url") as refused:
        _cluster(f"  redis_url: '{url}'\n")
    assert "secret" not in str(refused.value)


def test_check_config_refuses_a_password_with_a_slash_and_never_shows_it(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("listen: {port: 0}\n"
                      "cluster: {redis_url: 'redis://:s3cr/3t@127.0.0.1:1/0'}\n")
    checked = _check(config)
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert "s3cr" not in checked.stdout + checked.stderr
    assert "Traceback" not in checked.stderr


@pytest.mark.parametrize("query", ["ssl_ca_certs=/nonexistent/ca.pem", "socket_timeout=abc"])
def test_a_url_option_the_backend_cannot_use_stops_the_start(tmp_path, query):
    """Not a plugin failure after which the node runs alone, outside the cluster."""
    config = tmp_path / "c.yaml"
    config.write_text("listen: {port: 0}\n"
                      f"cluster: {{redis_url: 'rediss://:s3cr3t@127.0.0.1:1/0?{query}'}}\n")
    checked = _check(config)
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert "cluster.redis_url" in checked.stderr
    assert "s3cr3t" not in checked.stdout + checked.stderr
    assert "Traceback" not in checked.stderr
