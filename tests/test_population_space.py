"""A population asks for n distinct points: a space that holds fewer is refused by ``--check``
with what is wrong (n against the space's size), not blamed on a band that may not exist."""
from __future__ import annotations

import pytest
from study_texts import TINY_GRID

from mvlab.errors import StudyError
from mvlab.study import load_study_text, population_points
from mvlab.study.space import space_size


def _population(n: int, space: str) -> str:
    head = TINY_GRID[:TINY_GRID.index("study:")]
    return head + f"study:\n  kind: population\n  n: {n}\n  seeds: [0]\nspace:\n{space}"


def test_n_above_the_size_of_a_finite_space_is_refused_at_check_with_both_numbers():
    with pytest.raises(StudyError, match=r"n=3 distinct samples .* holds 2 points"):
        load_study_text(_population(3, "  pattern: [last_half, attn_only]\n"))


def test_n_equal_to_the_space_draws_every_point_once():
    config = load_study_text(_population(4, "  pattern: [last_half, attn_only]\n"
                                            "  branch: [on, off]\n"))
    points = population_points(config)
    assert len({(p["pattern"], p["branch"]) for p in points}) == 4


def test_space_size_counts_steps_and_is_unbounded_for_a_continuous_range():
    config = load_study_text(_population(2, "  pattern: [last_half, attn_only]\n"
                                            "  s3.depth: {int: [2, 8], step: 2}\n"))
    assert space_size(config) == 2 * 4
    config = load_study_text(_population(2, "  train.lr: {float: [1.0e-4, 1.0e-2], log: true}\n"))
    assert space_size(config) is None
