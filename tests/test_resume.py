"""The exactly-once decisions of consumer/resume.py, one by one, without a server: where a consumer resumes, what a
run's stored state holds, which partitions lag, when a refused write means Redis lost acknowledged writes, and
which records are read for the first time. (tests/chaos runs them against killed consumers and servers.)"""

from __future__ import annotations

import pytest

from consumer.resume import first_delivery, held_by_state, lagging_partitions, lost_writes, resume_points


def test_a_partition_resumes_at_its_checkpoint_or_at_the_first_offset_a_stored_state_lacks_if_lower() -> None:
    checkpoints = {0: 100, 1: 50, 2: 7}
    lacking = {0: 40, 1: None, 2: 9}  # partition 2: a lag entry past the checkpoint is no reason to go back
    assert resume_points(checkpoints, lacking) == {0: 40, 1: 50, 2: 7}


def test_only_partitions_with_a_checkpoint_get_a_resume_point() -> None:
    assert resume_points({}, {3: 5}) == {}
    assert resume_points({1: 0}, {}) == {1: 0}


def test_a_state_holds_what_its_stateat_says_else_what_the_views_held_when_it_was_stored() -> None:
    assert held_by_state({0: 10}, {0: 8, 1: 3}, has_state=True) == {0: 8, 1: 3}
    assert held_by_state({0: 10}, {}, has_state=True) == {0: 10}  # stored before stateat existed
    assert held_by_state({0: 10}, {}, has_state=False) == {}  # a run whose state was never stored


def test_a_partition_lags_where_the_views_are_ahead_of_the_stored_state() -> None:
    assert lagging_partitions({0: 10, 1: 5, 2: 7}, {0: 10, 1: 4}) == {1, 2}
    assert lagging_partitions({0: 10}, {0: 12}) == set()  # a state ahead of the views (refolded, views pending)
    assert lagging_partitions({}, {}) == set()


@pytest.mark.parametrize(("expected_prev", "applied_now", "lost"), [
    (None, None, False),  # a new run: nothing to lose
    (None, 40, False),  # a new run another writer created first: refold on top
    (40, 40, False),  # not a conflict Redis would report, but no loss
    (40, 55, False),  # another writer went further: refold the batch on top
    (40, 39, True),  # Redis holds less than it acknowledged
    (40, None, True),  # Redis lost the run altogether
])
def test_a_conflict_is_lost_writes_only_when_redis_holds_less_than_the_write_was_built_on(
        expected_prev: int | None, applied_now: int | None, lost: bool) -> None:
    assert lost_writes(expected_prev, applied_now) is lost


def test_records_below_the_known_checkpoint_were_delivered_before() -> None:
    assert first_delivery(10, 10) and first_delivery(11, 10) and first_delivery(0, 0)
    assert not first_delivery(9, 10)
