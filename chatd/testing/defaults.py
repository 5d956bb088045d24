"""The config sections every test starts from, where they differ from the shipped ones.

One place for :func:`chatd.testing.write_config` (real processes) and
:class:`chatd.testing.InProcessChat`, so both kinds of test see the same server.
"""

from __future__ import annotations

import copy
from typing import Any

#: Section -> settings a test gets unless it passes its own.
TEST_SECTIONS: dict[str, dict[str, Any]] = {
    # Tests send bursts; the flood limit (fakelag) would only slow them down.  A
    # test about flood control passes its own ``flood=`` section.
    "flood": {"lines_per_second": 0},
    # Tests connect many clients from 127.0.0.1 in quick succession.
    "per_ip": {"max_connections": 0, "connect_rate": 0, "max_unregistered": 0},
    # What happens to be pip-installed must not change a test's outcome.
    "plugin_host": {"entry_points": False},
    # Joins are announced at once, so a test need not wait for the room to hear of
    # a silent client; the tests of the delay itself set it.
    # A connection becomes a user at once, not after the greeting delay, so a test
    # need not wait a quarter of a second per client; the tests of the delay (and
    # of probes that must never become users) set it.
    "limits": {"announce_after_seconds": 0, "greeting_delay_seconds": 0},
    # History is not replayed on joining, so a client reads only what happens
    # after it came; the tests of history pass a history section of their own.
    "plugins": {"history": {"replay_lines": 0}},
}


def sections_for_test(sections: dict[str, Any], **base: Any) -> dict[str, Any]:
    """``base`` plus :data:`TEST_SECTIONS`, then ``sections`` on top: a mapping
    section is merged key by key (one level), anything else replaces."""
    data: dict[str, Any] = {**base, **copy.deepcopy(TEST_SECTIONS)}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data
