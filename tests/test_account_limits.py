"""In process: the limits on password guessing and the fair queue of password checks.

:class:`chatd.builtin.attempts.GuessLimits` decides who may try a password for
which account (issue 18 rule 8: guesses from others never lock the owner out);
:class:`chatd.builtin.fairqueue.FairQueue` decides whose password check runs
next (one address's flood cannot starve everyone's ``/identify``).  Both are
plain objects driven with explicit times and jobs; the behaviour they give a
real server is tested in ``tests/test_account_safety.py``.
"""

from __future__ import annotations

from chatd.builtin.attempts import GuessLimits, source_of
from chatd.builtin.fairqueue import FairQueue


def limits() -> GuessLimits:
    return GuessLimits(per_source=20, per_account=10, per_pair=5, window=600.0)


# -- GuessLimits ------------------------------------------------------------------------------


def test_an_account_under_attack_still_lets_a_source_that_has_not_guessed_try():
    """10 failures for alice from two sources put alice under attack: those sources are
    refused for alice, a third source that never failed is let through, and after
    its own first failure it is refused too."""
    guesses = limits()
    for source in ("10.0.0.1", "10.0.0.2"):
        for _ in range(4):
            guesses.attempt(source, "alice", now=0.0)
    guesses.attempt("10.0.0.1", "alice", now=0.0)
    guesses.attempt("10.0.0.2", "alice", now=0.0)
    assert guesses.refusal("10.0.0.1", "alice", now=1.0) == "account"
    assert guesses.refusal("10.0.0.9", "alice", now=1.0) is None  # the owner, elsewhere
    guesses.attempt("10.0.0.9", "alice", now=1.0)
    assert guesses.refusal("10.0.0.9", "alice", now=1.0) == "account"
    assert guesses.refusal("10.0.0.1", "bob", now=1.0) is None


def test_a_source_is_limited_per_account_and_in_all():
    """5 failures from one source for one account refuse that source for it alone; 20
    failures from one source (over several accounts) refuse it for every account;
    the window forgets them."""
    guesses = limits()
    for _ in range(5):
        guesses.attempt("10.0.0.1", "alice", now=0.0)
    assert guesses.refusal("10.0.0.1", "alice", now=0.0) == "account"
    assert guesses.refusal("10.0.0.1", "bob", now=0.0) is None
    for account in ("bob", "carol", "dave"):
        for _ in range(5):
            guesses.attempt("10.0.0.1", account, now=0.0)
    assert guesses.refusal("10.0.0.1", "erin", now=0.0) == "source"
    assert guesses.refusal("10.0.0.2", "erin", now=0.0) is None
    assert guesses.refusal("10.0.0.1", "erin", now=601.0) is None


def test_a_success_forgives_its_own_attempt_and_the_sources_misses_for_that_account():
    """The owner mistyped twice, then got it right: its source may try again as often
    as before; a withdrawn attempt (never checked) is not a failure either."""
    guesses = limits()
    for _ in range(4):
        guesses.attempt("10.0.0.1", "alice")
    guesses.attempt("10.0.0.1", "alice")
    guesses.succeeded("10.0.0.1", "alice")
    assert guesses.count("10.0.0.1", "alice") == (4, 4, 0)
    guesses.attempt("10.0.0.2", "bob")
    guesses.withdraw("10.0.0.2", "bob")
    assert guesses.count("10.0.0.2", "bob") == (0, 0, 0)


def test_an_ipv6_source_is_its_slash_64():
    """A host has a whole /64: its addresses are one source (else 2**64 fresh starts);
    IPv4, IPv4-mapped IPv6 and other /64s are their own."""
    assert source_of("2001:db8:1:2::1") == source_of("2001:db8:1:2:ffff::9") == \
        "2001:db8:1:2::/64"
    assert source_of("2001:db8:1:3::1") != source_of("2001:db8:1:2::1")
    assert source_of("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_of("192.0.2.7") == "192.0.2.7"
    assert source_of("not an address") == "not an address"


# -- FairQueue ----------------------------------------------------------------------------------


def run_all(queue: FairQueue[str]) -> list[str]:
    """Every job in the order the queue hands them out, one finishing before the next."""
    order = []
    while (taken := queue.next()) is not None:
        lane, job = taken
        order.append(job)
        queue.done(lane)
    return order


def test_addresses_take_turns_whatever_one_of_them_queued():
    """A flood of 4 jobs from one address is served one job per turn, alternating with
    the jobs of two other addresses: the others wait for one flood job, not all."""
    queue: FairQueue[str] = FairQueue(workers=1, lane_max=10)
    for number in range(4):
        queue.put(("10.0.0.1", "flood"), f"flood{number}")
    queue.put(("10.0.0.2", "alice"), "alice")
    queue.put(("10.0.0.3", "bob"), "bob")
    assert run_all(queue) == ["flood0", "alice", "bob", "flood1", "flood2", "flood3"]


def test_accounts_behind_one_address_take_turns():
    """Behind one address (a team behind NAT) each account gets its turn: carol's
    /identify waits for one of dave's /password checks, not all of them."""
    queue: FairQueue[str] = FairQueue(workers=1, lane_max=10)
    for number in range(3):
        queue.put(("10.0.0.1", "dave"), f"dave{number}")
    queue.put(("10.0.0.1", "carol"), "carol")
    assert run_all(queue) == ["dave0", "carol", "dave1", "dave2"]


def test_one_check_per_lane_runs_at_once_and_workers_bound_the_rest():
    """With two workers a lane still runs one job at a time: the second worker goes to
    another lane, and nothing more runs until a job is done."""
    queue: FairQueue[str] = FairQueue(workers=2, lane_max=10)
    queue.put(("10.0.0.1", "flood"), "flood0")
    queue.put(("10.0.0.1", "flood"), "flood1")
    queue.put(("10.0.0.2", "alice"), "alice")
    queue.put(("10.0.0.3", "bob"), "bob")
    first, second = queue.next(), queue.next()
    assert first is not None and second is not None
    assert [first[1], second[1]] == ["flood0", "alice"]
    assert queue.next() is None  # both workers busy
    queue.done(first[0])
    third = queue.next()
    assert third is not None and third[1] == "bob"  # not flood1: bob had not had a turn


def test_a_full_lane_refuses_only_itself():
    """A lane with lane_max jobs waiting is full; other lanes are not; the whole queue
    refuses everyone only at total_max."""
    queue: FairQueue[str] = FairQueue(workers=1, lane_max=2, total_max=5)
    for number in range(2):
        queue.put(("10.0.0.1", "flood"), f"flood{number}")
    assert queue.full(("10.0.0.1", "flood"))
    assert not queue.full(("10.0.0.1", "carol"))
    assert not queue.full(("10.0.0.2", "alice"))
    for lane in (("10.0.0.2", "alice"), ("10.0.0.3", "bob"), ("10.0.0.4", "carol")):
        queue.put(lane, lane[1])
    assert queue.full(("10.0.0.5", "dave"))
    assert len(queue) == 5
    assert sorted(queue.clear()) == ["alice", "bob", "carol", "flood0", "flood1"]
    assert len(queue) == 0 and queue.next() is None


# -- checks that never ran --------------------------------------------------------------------


def test_checks_left_waiting_at_shutdown_say_so_without_claiming_a_reload(monkeypatch):
    """The plugins shut down for a reload and for a stop alike: the password checks
    still waiting are answered, and the answer must hold for both (a SIGTERM used
    to tell them 'the server is reloading its plugins')."""
    import threading

    from chatd.builtin.accounts import commands
    from chatd.testing import InProcessChat

    release = threading.Event()
    monkeypatch.setattr(commands, "password_matches", lambda *_: release.wait(5) and False)
    with InProcessChat(plugins={"accounts": {"scrypt_n": 1024}}) as chat:
        owner = chat.connect()
        owner.send("/nick alice")
        owner.send("/register correct-horse-1")
        chat.wait_for(lambda: any("registered to you" in line for line in owner.lines()))
        guessers = [chat.connect(address=f"10.0.0.{i}") for i in range(1, 5)]
        for peer in guessers:  # two checks run (and block), two wait for a thread
            peer.send("/identify alice correct-horse-1")
        chat.tick()
        chat.hooks.shutdown()
        release.set()
        said = [line for peer in guessers for line in peer.lines() if line.startswith("! ")]
        assert said == ["! your password was not checked: the server is reloading or "
                        "stopping; try again"] * 2, said
