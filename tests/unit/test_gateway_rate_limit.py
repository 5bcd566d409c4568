"""Per-key token buckets: burst, refill, the wait a refused request is told, eviction."""

from __future__ import annotations

import pytest

from gateway.rate_limit import TokenBuckets, retry_after_header


def test_a_fresh_key_gets_its_burst_then_is_refused() -> None:
    buckets = TokenBuckets(rate_per_s=2, burst=5, max_keys=10)
    assert [buckets.take("k", now=100.0) for _ in range(5)] == [0.0] * 5
    assert buckets.take("k", now=100.0) == pytest.approx(0.5)


def test_tokens_refill_at_the_rate_and_never_beyond_the_burst() -> None:
    buckets = TokenBuckets(rate_per_s=2, burst=3, max_keys=10)
    for _ in range(3):
        buckets.take("k", now=0.0)
    assert buckets.take("k", now=0.25) == pytest.approx(0.25)  # half a token so far
    assert buckets.take("k", now=0.5) == 0.0  # one token after 0.5 s at 2/s
    assert buckets.take("k", now=0.5) > 0
    # an hour idle refills to the burst, not to 7200 tokens
    assert [buckets.take("k", now=3600.0) for _ in range(3)] == [0.0] * 3
    assert buckets.take("k", now=3600.0) > 0


def test_retry_after_is_the_time_until_the_next_token() -> None:
    buckets = TokenBuckets(rate_per_s=0.1, burst=1, max_keys=10)
    assert buckets.take("k", now=0.0) == 0.0
    wait = buckets.take("k", now=3.0)
    assert wait == pytest.approx(7.0)
    # a client that waits exactly that long gets in
    assert buckets.take("k", now=3.0 + wait) == 0.0


def test_a_refused_request_takes_nothing() -> None:
    buckets = TokenBuckets(rate_per_s=1, burst=1, max_keys=10)
    buckets.take("k", now=0.0)
    for t in (0.1, 0.2, 0.3, 0.9):
        assert buckets.take("k", now=t) == pytest.approx(1.0 - t)
    assert buckets.take("k", now=1.0) == 0.0


def test_float_refills_do_not_refuse_a_client_that_waited_as_told() -> None:
    buckets = TokenBuckets(rate_per_s=10, burst=1, max_keys=10)
    now = 0.0
    for _ in range(1000):
        assert buckets.take("k", now=now) == 0.0
        wait = buckets.take("k", now=now)
        assert wait > 0
        now += wait


def test_retry_after_header_rounds_up_to_whole_seconds_and_at_least_one() -> None:
    assert retry_after_header(0.001) == "1"
    assert retry_after_header(1.0) == "1"
    assert retry_after_header(1.2) == "2"
    assert retry_after_header(7.0) == "7"


def test_keys_are_independent() -> None:
    buckets = TokenBuckets(rate_per_s=1, burst=1, max_keys=10)
    assert buckets.take("a", now=0.0) == 0.0
    assert buckets.take("a", now=0.0) > 0
    assert buckets.take("b", now=0.0) == 0.0


def test_memory_is_bounded_by_evicting_the_least_recently_used_key() -> None:
    buckets = TokenBuckets(rate_per_s=1, burst=1, max_keys=3)
    for key in ("a", "b", "c"):
        buckets.take(key, now=0.0)
    buckets.take("a", now=0.5)  # a is now more recent than b and c
    buckets.take("d", now=0.5)
    assert len(buckets) == 3
    assert "b" not in buckets
    assert {"a", "c", "d"} <= {k for k in ("a", "b", "c", "d") if k in buckets}
    # a kept its (empty) bucket; an evicted key starts again with a full one
    assert buckets.take("a", now=0.5) > 0
    assert buckets.take("b", now=0.5) == 0.0


def test_many_keys_never_grow_past_max_keys() -> None:
    buckets = TokenBuckets(rate_per_s=1, burst=2, max_keys=100)
    for i in range(10_000):
        buckets.take(f"key-{i}", now=float(i))
    assert len(buckets) == 100


def test_a_clock_stepping_back_does_not_drain_or_fill_the_bucket() -> None:
    buckets = TokenBuckets(rate_per_s=1, burst=2, max_keys=10)
    buckets.take("k", now=10.0)
    buckets.take("k", now=10.0)
    assert buckets.take("k", now=5.0) == pytest.approx(1.0)
    assert buckets.take("k", now=11.0) == 0.0


def test_the_default_clock_is_monotonic_time() -> None:
    buckets = TokenBuckets(rate_per_s=1, burst=1, max_keys=10)
    assert buckets.take("k") == 0.0
    assert 0 < buckets.take("k") <= 1.0


@pytest.mark.parametrize(
    ("rate", "burst", "max_keys"),
    [(0, 1, 1), (-1, 1, 1), (float("inf"), 1, 1), (float("nan"), 1, 1), (1, 0, 1), (1, 1, 0)],
)
def test_nonsense_settings_are_refused(rate: float, burst: int, max_keys: int) -> None:
    with pytest.raises(ValueError):
        TokenBuckets(rate, burst, max_keys)
