"""The test kit itself: a failing test shows the server's log; installed plugins stay out."""

from __future__ import annotations

pytest_plugins = ["pytester"]


def test_a_failing_test_shows_the_servers_log(pytester):
    pytester.makeconftest('pytest_plugins = ["chatd.testing"]\n')
    pytester.makepyfile(
        """
        def test_fails(chatd_server):
            server = chatd_server()
            server.client().send("/nick x")
            server.wait_for_log("nick id=1 old=guest-1 new=x")
            assert False, "on purpose"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*chatd server 0 log*",
        "*INFO chatd.listeners: listening on 127.0.0.1:*",
        "*nick id=1 old=guest-1 new=x*",
    ])


def test_a_passing_test_prints_no_log(pytester):
    pytester.makeconftest('pytest_plugins = ["chatd.testing"]\n')
    pytester.makepyfile(
        """
        def test_passes(chatd_server):
            chatd_server().client()
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "chatd server 0 log" not in result.stdout.str()


def test_write_config_leaves_entry_point_plugins_out_unless_asked(tmp_path):
    import yaml

    from chatd.testing import write_config

    plain = yaml.safe_load(write_config(tmp_path / "a.yaml").read_text())
    assert plain["plugin_host"]["entry_points"] is False
    asked = yaml.safe_load(
        write_config(tmp_path / "b.yaml", plugin_host={"entry_points": True}).read_text()
    )
    assert asked["plugin_host"]["entry_points"] is True
