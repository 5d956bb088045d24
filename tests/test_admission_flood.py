"""Admission and the flood gate, sans-IO: the clock is passed in, nothing waits."""

from __future__ import annotations

from chatd.admission import Admission, AdmissionRules, address_group, plain_address
from chatd.chat.flood import FloodGate, TokenBucket
from chatd.framing import LineTooLong
from chatd.requests import Invoke


def rules(**changes):
    base = {"max_clients": 100, "per_ip_max": 0, "connect_rate": 0, "connect_window": 10.0,
            "max_unregistered": 0}
    return AdmissionRules(**{**base, **changes})


# -- admission -------------------------------------------------------------------------


def test_server_full_and_per_address_limits():
    adm = Admission(rules(max_clients=2, per_ip_max=1))
    assert adm.check("10.0.0.1", 0.0) is None
    adm.opened("10.0.0.1")
    assert adm.check("10.0.0.1", 0.0) == "per_ip"
    assert adm.check("10.0.0.2", 0.0) is None
    adm.opened("10.0.0.2")
    assert adm.check("10.0.0.3", 0.0) == "server_full"
    adm.closed("10.0.0.1", registered=False)
    assert adm.check("10.0.0.1", 0.0) is None
    assert adm.refusal_text("per_ip") == "too many connections from your address (max 1)"


def test_connect_rate_counts_every_attempt_within_the_window():
    adm = Admission(rules(connect_rate=3, connect_window=10.0))
    assert [adm.check("10.0.0.1", t) for t in (0.0, 1.0, 2.0, 3.0)] == [
        None, None, None, "connect_rate"
    ]
    assert adm.check("10.0.0.2", 3.0) is None  # another address is not affected
    assert adm.check("10.0.0.1", 12.5) is None  # the first attempts aged out
    adm.expire(100.0)
    assert adm.table_sizes()["connect_attempts"] == 0


def test_unregistered_limit_and_tables_shrink_back_to_empty():
    adm = Admission(rules(max_unregistered=1))
    adm.opened("10.0.0.1")
    assert adm.check("10.0.0.1", 0.0) == "unregistered"
    adm.registered("10.0.0.1")
    assert adm.check("10.0.0.1", 0.0) is None
    adm.closed("10.0.0.1", registered=True)
    assert adm.clients == 0
    assert adm.table_sizes() == {"per_address": 0, "unregistered": 0, "connect_attempts": 0,
                                 "password_failures": 0}


def test_an_ipv4_client_of_a_dual_stack_listener_is_its_ipv4_address():
    assert plain_address("::ffff:203.0.113.9") == "203.0.113.9"
    for address in ("203.0.113.9", "2001:db8::1", "::1", "::ffff:zz", "?"):
        assert plain_address(address) == address


def test_ipv6_addresses_count_per_slash_64():
    assert address_group("2001:db8::1") == address_group("2001:db8::ffff") == "2001:db8::/64"
    assert address_group("2001:db8:0:1::1") != address_group("2001:db8::1")
    assert address_group("::ffff:10.1.2.3") == "10.1.2.3"
    adm = Admission(rules(per_ip_max=1))
    adm.opened("2001:db8::1")
    assert adm.check("2001:db8::2", 0.0) == "per_ip"


# -- the flood gate -------------------------------------------------------------------------


def gate(burst=3, rate=2.0, bytes_per_token=100):
    return FloodGate(TokenBucket(burst, rate, bytes_per_token, now=0.0))


def test_a_burst_passes_and_the_rest_waits_in_order():
    flood = gate()
    lines = ["a", "b", "c", "d", Invoke("me", "e"), "f"]
    assert flood.admit(lines, 0.0) == ["a", "b", "c"]
    assert flood.waiting == 3
    assert flood.wait(0.0) == 0.5  # one token at 2 per second
    assert flood.release(0.2) == []
    assert flood.release(0.5) == ["d"]
    assert flood.release(1.5) == [Invoke("me", "e"), "f"]
    assert flood.waiting == 0 and flood.backlog_bytes == 0


def test_once_something_waits_everything_after_it_waits_too():
    flood = gate(burst=2, rate=1.0)
    assert flood.admit(["a", "b", "c"], 0.0) == ["a", "b"]
    # A second later a token is there, but "c" is first in line: "d" may not overtake it.
    assert flood.admit(["d"], 1.0) == []
    assert flood.release(1.0) == ["c"]
    assert flood.release(2.0) == ["d"]


def test_long_lines_cost_more_and_the_backlog_is_measured_in_bytes():
    flood = gate(burst=5, rate=1.0, bytes_per_token=10)
    assert flood.admit(["x" * 25], 0.0) == ["x" * 25]  # 1 + 25 // 10 = 3 tokens
    assert flood.admit(["y" * 25, LineTooLong(4096)], 0.0) == []
    assert flood.backlog_bytes == 25
    flood.clear()
    assert flood.waiting == 0 and flood.backlog_bytes == 0
