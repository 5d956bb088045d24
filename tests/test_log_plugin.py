"""The built-in log plugin: events to logging, optional file, escaped user text."""

from __future__ import annotations

import re
import time


def _wait_for(path, needle, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} never appeared in {path}")


def test_messages_are_not_logged_by_default(chatd_server):
    server = chatd_server()
    alice, bob = server.client(), server.client()
    alice.send("my secret plans")
    bob.expect(r"my secret plans")
    alice.send("/nick alice")
    alice.expect(r"is now known as alice")
    server.wait_for_log(r"nick id=1 old=guest-1 new=alice")
    assert "secret" not in server.log()
    assert "connect id=1 nick=guest-1 peer=127.0.0.1:" in server.log()


def test_log_file_with_escaped_message_text(chatd_server, tmp_path):
    log_file = tmp_path / "events.log"
    server = chatd_server(plugins={"log": {"file": str(log_file), "messages": True}})
    alice, bob = server.client(), server.client()
    # A line that tries to forge a second log record (CWE-117) and carries a quote.
    alice.send_raw(b'hi "there"\\n2026-01-01 INFO admin logged in\n')
    bob.expect(r"^<guest-1> hi")
    text = _wait_for(log_file, "message id=1")
    records = [line for line in text.splitlines() if "message id=1" in line]
    assert len(records) == 1
    assert re.search(r"message id=1 nick=guest-1 room=#lobby event=\d+ text=", records[0])
    assert 'text="hi \\"there\\"\\\\n2026-01-01 INFO admin logged in"' in records[0]
    alice.close()
    _wait_for(log_file, "disconnect id=1 nick=guest-1 reason=")


def test_meta_mode_logs_without_text(chatd_server):
    server = chatd_server(plugins={"log": {"messages": "meta"}})
    alice, bob = server.client(), server.client()
    alice.send("private words")
    bob.expect("private words")
    server.wait_for_log(r"message id=1 nick=guest-1 room=#lobby event=\d+\n")
    assert "private words" not in server.log()


def test_bad_log_setting_is_a_startup_error(tmp_path):
    import subprocess
    import sys

    config = tmp_path / "c.yaml"
    config.write_text("plugins:\n  log:\n    messages: sometimes\n")
    result = subprocess.run(
        [sys.executable, "-m", "chatd", "--config", str(config), "--check-config"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "plugin 'log' failed in chatd_startup" in result.stderr
    assert "plugins.log.messages must be true, false or meta" in result.stderr
