"""Limits on input size and count, and what their messages say (results/hostile_inputs: B23, S22).

The YAML value limit is lowered here so a test writes hundreds of values, not 100,000 (composing
a 1.3 MB document takes PyYAML about 10 s); the counting is the same at any limit."""
from __future__ import annotations

import pytest
import torch

from mvlab.errors import StudyError, UserError
from mvlab.study import yamlsource
from mvlab.study.yamlsource import load_located, load_value
from mvlab.training.runtime import cpu_threads

LIMIT = 100


@pytest.fixture
def small_limit(monkeypatch):
    monkeypatch.setattr(yamlsource, "MAX_VALUES", LIMIT)


def _error(text: str) -> str:
    with pytest.raises(StudyError) as info:
        load_located(text, "s.yaml")
    return str(info.value)


def _seeds(n: int) -> str:
    return "name: t\nstudy:\n  seeds: [" + ", ".join(str(i) for i in range(n)) + "]\n"


def test_a_long_written_out_list_is_called_too_long_not_an_alias_bomb(small_limit):
    message = _error(_seeds(2 * LIMIT))
    assert message.startswith("s.yaml:3: the document has more than 100 values"), message
    assert "alias" not in message and "shorten it" in message


def test_aliases_that_expand_past_the_limit_are_still_refused_as_aliases(small_limit):
    text = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    message = _error(text)
    assert message.startswith("s.yaml:2: YAML aliases (*name) expand this document past 100 "
                              "values"), message
    assert "write the values out" not in message  # that gives just as many


def test_a_long_list_is_blamed_on_its_length_even_beside_an_alias(small_limit):
    text = _seeds(2 * LIMIT) + "a: &a [x]\nb: *a\n"
    assert "the document has more than 100 values" in _error(text)


def test_within_the_limit_written_values_and_aliases_both_load(small_limit):
    assert len(load_located(_seeds(LIMIT // 2), "s.yaml").value["study"]["seeds"]) == LIMIT // 2
    text = "a: &a [x, x, x, x, x]\nb: [*a, *a, *a]\n"
    assert load_located(text, "s.yaml").value["b"][2] == ["x"] * 5


def test_a_set_value_gets_the_same_messages(small_limit):
    with pytest.raises(StudyError, match=r"^--set study\.seeds: the document has more than 100"):
        load_value("[" + ", ".join(["1"] * 2 * LIMIT) + "]", "--set study.seeds")
    with pytest.raises(StudyError, match=r"^--set x: YAML aliases"):
        load_value("{a: &a [x, x, x, x, x, x, x, x, x, x], b: [*a, *a, *a, *a, *a, *a, *a, *a, "
                   "*a, *a]}", "--set x")


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_cpu_threads_refuses_what_is_not_a_positive_count(bad):
    before = torch.get_num_threads()
    with pytest.raises(UserError, match=rf"^threads={bad!r}: must be an integer of at least 1 "):
        with cpu_threads(bad):
            pass
    assert torch.get_num_threads() == before  # 0 used to mean "every core", silently


def test_cpu_threads_sets_and_restores_or_leaves_alone():
    before = torch.get_num_threads()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with cpu_threads(None):
        assert torch.get_num_threads() == before
