import pytest

from runequeue.retry import Ack, Fail, Release, backoff_delay, decide


def test_success_is_acked() -> None:
    assert decide(1, 3, 0, None) == Ack()


def test_failure_with_tries_left_is_released_after_backoff() -> None:
    assert decide(1, 3, 10, RuntimeError()) == Release(10.0)


def test_failure_on_the_last_try_fails_for_good() -> None:
    decision = decide(3, 3, 10, RuntimeError())
    assert isinstance(decision, Fail)
    assert "3 attempts" in decision.reason


@pytest.mark.parametrize(("attempts", "expected"), [(1, 10.0), (2, 60.0), (3, 60.0), (9, 60.0)])
def test_backoff_list_is_indexed_by_attempt_and_repeats_its_last_entry(
    attempts: int, expected: float
) -> None:
    assert backoff_delay([10, 60], attempts) == expected


def test_empty_backoff_list_means_no_wait() -> None:
    assert backoff_delay([], 2) == 0.0
