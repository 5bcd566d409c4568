"""The console's bounded memory: failed sign-ins per client address (sliding window, LRU cap)
and sessions (lifetimes, LRU cap)."""

from __future__ import annotations

import pytest

from gateway.console_sessions import Sessions, SignInAttempts, client_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def attempts(clock: Clock, **limits: int) -> SignInAttempts:
    settings = {"max_failures": 3, "max_clients": 100, **limits}
    return SignInAttempts(window_s=60.0, clock=clock, **settings)


def test_a_client_waits_after_too_many_failures_until_the_oldest_leaves_the_window() -> None:
    clock = Clock()
    limit = attempts(clock)
    for step in range(3):
        assert limit.wait_s("10.0.0.1") == 0.0
        limit.failed("10.0.0.1")
        clock.now += 10.0 if step < 2 else 0.0
    # failures at 1000, 1010, 1020; the first leaves the window at 1060
    assert limit.wait_s("10.0.0.1") == pytest.approx(40.0)
    assert limit.wait_s("10.0.0.2") == 0.0  # another client is not affected
    clock.now = 1059.9
    assert limit.wait_s("10.0.0.1") == pytest.approx(0.1)
    clock.now = 1060.0
    assert limit.wait_s("10.0.0.1") == 0.0
    limit.failed("10.0.0.1")  # three within the window again (1010, 1020, 1060)
    assert limit.wait_s("10.0.0.1") == pytest.approx(10.0)


def test_a_success_forgets_the_failures_and_old_failures_expire() -> None:
    clock = Clock()
    limit = attempts(clock)
    for _ in range(2):
        limit.failed("a")
    limit.succeeded("a")
    assert len(limit) == 0
    for _ in range(2):
        limit.failed("b")
    clock.now += 61.0
    limit.failed("b")  # the two old ones left the window: one failure only
    assert limit.wait_s("b") == 0.0
    clock.now += 61.0
    assert limit.wait_s("b") == 0.0 and len(limit) == 0  # forgotten once none is recent


def test_memory_is_bounded_by_clients_and_failures_per_client() -> None:
    clock = Clock()
    limit = attempts(clock, max_clients=5)
    for n in range(50):
        limit.failed(f"client-{n}")
    assert len(limit) == 5
    assert limit.wait_s("client-0") == 0.0  # the least recently failing went first
    for _ in range(1000):
        limit.failed("busy")
    assert len(limit._failures["busy"]) == 3  # a window holds at most max_failures times


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SignInAttempts(max_failures=0)
    with pytest.raises(ValueError):
        SignInAttempts(window_s=0)


@pytest.mark.parametrize(
    ("remote", "key"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        (None, "unknown"),
        ("", "unknown"),
    ],
)
def test_clients_are_counted_by_address_and_ipv6_by_its_64(remote: str | None, key: str) -> None:
    assert client_key(remote) == key


def test_sessions_expire_when_idle_or_old_and_are_capped() -> None:
    clock = Clock()
    sessions = Sessions(ttl_s=100.0, idle_s=10.0, max_sessions=2, clock=clock)
    first, _ = sessions.open("k1", "id1", "officer")
    clock.now += 5.0
    assert sessions.get(first) is not None
    clock.now += 10.0
    assert sessions.get(first) is None  # idle too long
    second, _ = sessions.open("k2", "id2", "officer")
    sessions.open("k3", "id3", "officer")
    sessions.open("k4", "id4", "officer")
    assert len(sessions) == 2 and sessions.get(second) is None  # least recently used, gone
