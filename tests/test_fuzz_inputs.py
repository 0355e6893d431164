"""Bad input, fuzzed: mutated study files, broken YAML, ``--set`` overrides and grammar strings.

Every malformed input must end in one ``UserError`` line that says where (``file:line: key``,
``--set key``, ``global:`` / ``stage N:``), never another exception, and never reach training."""
from __future__ import annotations

import contextlib
import copy
import io
import os
import re
from pathlib import Path
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from spec_strategies import model_specs

from mvlab.errors import SpecError, StudyError, UserError
from mvlab.grammar import format_spec, parse_spec
from mvlab.study import load_study_text

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

BASE = {
    "name": "fuzz",
    "model": "tiny",
    "data": {"dataset": "builtin", "resolution": 16, "per_class": 10},
    "train": {"epochs": 2, "batch_size": 8, "lr": 1.0e-3},
    "study": {"kind": "grid", "seeds": [0, 1]},
    "space": {"pattern": ["last_half", "attn_only"], "branch": ["on", "off"],
              "s3.d_state": [4, 8], "train.lr": [1.0e-3, 2.0e-3]},
    "objectives": {"heldout_top1": "maximize", "throughput": "maximize"},
    "constraints": {"max_params": "5M"},
    "bench": {"batch_size": 4, "warmup": 1},
    "early_stop": False,
    "workdir": "studies/fuzz",
}
SOURCE = "study.yaml"
LOCATED = re.compile(r"^study\.yaml:\d+: ")

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
grammarish = st.sampled_from(["last_n:99", "every_k:0", "random:2,1", "interleave:Q", "MMQ",
                              "conv", "last_half", "5M", "0.3G", "1e999", "-1", "on", "maybe",
                              "regular", "gate", "none", "{int: [1, 2]}", "/proc/nope",
                              "sqlite:///x.db", "T", "tiny | x"])
weird = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True), text, grammarish,
    st.lists(st.one_of(st.integers(-3, 20), grammarish, st.none()), max_size=4),
    st.dictionaries(st.one_of(text, grammarish), st.one_of(st.integers(), grammarish),
                    max_size=2),
    st.fixed_dictionaries({"int": st.lists(st.integers(-5, 40), min_size=0, max_size=3)}),
    st.fixed_dictionaries({"float": st.lists(st.floats(-1, 1), max_size=3), "log": st.booleans()}),
)
keys = st.one_of(st.sampled_from(["name", "model", "data", "train", "study", "space", "kind",
                                  "seeds", "n", "n_trials", "band", "epochs", "lr", "pattern",
                                  "s3.pattern", "s9.depth", "train.lr", "train.nope", "depths",
                                  "max_macs", "max_flops", "after_epoch", "uri", "sampler",
                                  "storage", "resolution", "per_class", "seed", "threads"]), text)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


@st.composite
def mutated_studies(draw) -> dict:
    """BASE with 1-3 edits: a value replaced by something odd, a key deleted, a key added."""
    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from([p for p in _paths(doc) if p]))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(weird)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(keys)] = draw(weird)
    return doc


def _dump(doc: dict) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


def _assert_one_located_line(exc: BaseException, pattern: re.Pattern = LOCATED) -> None:
    message = str(exc)
    assert isinstance(exc, UserError), f"{type(exc).__name__}: {message}"
    assert "\n" not in message and message.strip(), repr(message)
    assert pattern.match(message), message


def _load(text_: str, overrides: tuple[str, ...] = ()) -> None:
    try:
        load_study_text(text_, SOURCE, list(overrides))
    except StudyError as exc:
        pattern = re.compile(r"^(study\.yaml:\d+: |--set \S+)") if overrides else LOCATED
        _assert_one_located_line(exc, pattern)


def test_the_base_study_is_valid():
    config = load_study_text(_dump(BASE), SOURCE)
    assert config.name == "fuzz" and config.kind == "grid"


@FUZZ
@given(mutated_studies())
def test_mutated_study_files_fail_with_one_located_line(doc):
    _load(_dump(doc))


@FUZZ
@given(st.data())
def test_broken_yaml_fails_with_the_line(data):
    source = _dump(BASE)
    position = data.draw(st.integers(0, len(source)))
    junk = data.draw(st.one_of(
        st.sampled_from([":", "[", "{", "}", "- ", "\t", "'", '"', "*a", "&a ", "? ", "\n  x: ",
                         "\n- ", "!!python/object/apply:os.system ['true']", "%YAML 9\n---\n",
                         "---\n", "name: again\n", "\x00", "\ufeff"]), text))
    _load(source[:position] + junk + source[position:])


@FUZZ
@given(st.lists(st.tuples(st.lists(keys, min_size=1, max_size=3),
                          st.sampled_from(["=", "", "=="]),
                          st.one_of(grammarish, text, st.sampled_from(
                              ["[", "null", "[last_half, 9]", "{int: [1, 2]}", "&a [*a]"]))),
                min_size=1, max_size=3))
def test_set_overrides_fail_with_the_key(parts):
    overrides = tuple(".".join(map(str, path)) + sep + value for path, sep, value in parts)
    assume(all("\n" not in item for item in overrides))
    _load(_dump(BASE), overrides)


# ------------------------------------------------------------------------------ grammar strings
@st.composite
def mutated_specs(draw) -> tuple[str, int]:
    """A valid canonical spec with one ``key=value`` word changed; returns the text and the
    segment the change is in (0 = global, N = stage N)."""
    segments = [segment.split(" ") for segment in format_spec(draw(model_specs())).split(" | ")]
    index = draw(st.integers(0, len(segments) - 1))
    words = segments[index]
    position = draw(st.integers(0, len(words) - 1))
    key, _, value = words[position].partition("=")
    word_text = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Cc"),
                                      blacklist_characters="|"), min_size=1, max_size=10)
    change = draw(st.sampled_from(["value", "key", "drop_value", "insert"]))
    if change == "value":
        words[position] = f"{key}={draw(st.one_of(grammarish, word_text))}"
    elif change == "key":
        words[position] = f"{draw(word_text)}={value}"
    elif change == "drop_value":
        words[position] = f"{key}="
    else:
        words.insert(position, f"{draw(st.sampled_from(['b0.', 'b99.', '']))}"
                               f"{draw(st.sampled_from(['d_state', 'conv1d', 'heads', 'x']))}="
                               f"{draw(st.one_of(grammarish, word_text))}")
    assume(all(w.strip() and " " not in w for w in words))
    return " | ".join(" ".join(words) for words in segments), index


@FUZZ
@given(mutated_specs())
def test_mutated_grammar_strings_name_their_segment(case):
    spec_text, segment = case
    try:
        parse_spec(spec_text)
    except SpecError as exc:
        where = "global: " if segment == 0 else f"stage {segment}: "
        _assert_one_located_line(exc, re.compile(re.escape(where)))
    except Exception as exc:  # noqa: BLE001 - anything else is the bug this test looks for
        pytest.fail(f"{type(exc).__name__} for {spec_text!r}: {exc}")


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutated_specs())
def test_grammar_strings_in_a_study_name_the_file_line_and_key(case):
    spec_text, _ = case
    doc = {**copy.deepcopy(BASE), "model": spec_text}
    doc["space"] = {"s3.pattern": [spec_text.split(" | ")[3].split(" ")[2].partition("=")[2]]}
    try:
        load_study_text(_dump(doc), SOURCE)
    except StudyError as exc:
        _assert_one_located_line(exc, re.compile(r"^study\.yaml:\d+: (model|space\.s3\.pattern)"))


# ----------------------------------------------------------------- the command, end to end
class _ReachedStorage(Exception):
    """The input was valid: the sweep got as far as opening its storage."""


@contextlib.contextmanager
def _inside(folder: Path):
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(mutated_studies())
def test_the_sweep_command_rejects_bad_files_before_training(fuzz_dir, doc):
    from mvlab.cli import main

    doc.setdefault("workdir", str(fuzz_dir / "studies"))
    path = fuzz_dir / "study.yaml"
    path.write_text(_dump(doc))

    def no_training(*args, **kwargs):
        raise AssertionError("training started for a study file that should have been rejected")

    err = io.StringIO()
    with mock.patch("mvlab.train.train", no_training), \
            mock.patch("mvlab.study.trial.run_trial", no_training), \
            mock.patch("mvlab.study.runner.open_study", side_effect=_ReachedStorage), \
            contextlib.redirect_stderr(err), _inside(fuzz_dir):
        try:
            code = main(["sweep", str(path), "--no-progress"])
        except _ReachedStorage:
            return  # a valid study: it would run (nothing trained here)
    lines = err.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1, err.getvalue()
    assert re.match(rf"^mvlab sweep: error: {re.escape(str(path))}(:\d+)?: ", lines[0]), lines[0]
