"""The automatic batch size: about 10 steps an epoch, never above 256, never below the batch-norm floor."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bcu_gui.core.batching import MAX_BATCH, MIN_BATCH, MIN_STEPS, choose_batch_size, steps_per_epoch


def test_small_folder_gets_ten_steps_an_epoch() -> None:
    choice = choose_batch_size(400)
    assert choice.automatic and choice.size == 40
    assert steps_per_epoch(400, choice.size) == 10
    assert "40" in choice.reason and "automatically" in choice.reason


def test_paper_sized_set_keeps_the_papers_batch() -> None:
    choice = choose_batch_size(5000)
    assert choice.size == MAX_BATCH and steps_per_epoch(5000, MAX_BATCH) >= MIN_STEPS
    assert "paper" in choice.reason


def test_tiny_folder_stays_at_the_floor_and_says_so() -> None:
    choice = choose_batch_size(60)
    assert choice.size == MIN_BATCH and "consider more epochs" in choice.reason
    assert choose_batch_size(5).size == 5  # fewer images than the floor: one batch of all of them


def test_explicit_batch_size_wins() -> None:
    choice = choose_batch_size(400, requested=256)
    assert not choice.automatic and choice.size == 256 and "as requested" in choice.reason
    assert choose_batch_size(100, requested=256).size == 100


def test_a_last_batch_of_one_is_dropped() -> None:
    assert steps_per_epoch(65, 64) == 1
    assert steps_per_epoch(66, 64) == 2


@given(st.integers(2, 2_000_000))
def test_rule_holds_for_every_set_size(n: int) -> None:
    size = choose_batch_size(n).size
    assert 2 <= size <= MAX_BATCH and size <= n
    assert size >= min(MIN_BATCH, n)
    if MIN_BATCH * MIN_STEPS <= n:
        assert steps_per_epoch(n, size) >= MIN_STEPS


def test_needs_two_images() -> None:
    with pytest.raises(ValueError):
        choose_batch_size(1)
