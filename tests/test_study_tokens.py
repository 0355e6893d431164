"""The token-count warning: a study whose mixer/attention stages see fewer than 4x4 tokens is
told so (``mvlab sweep`` and ``--check``), and every shipped study asks its question where it
can be asked."""
from __future__ import annotations

from pathlib import Path

import pytest

from mvlab.study import load_study, load_study_text
from mvlab.study.tokens import few_token_warnings

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"

STUDY = """\
name: t
model: {model}
data:
  dataset: pathfinder
  resolution: {resolution}
train:
  epochs: 2
  batch_size: 8
study:
  kind: grid
  seeds: [0]
space:
  pattern: [last_half, attn_only]
"""
TINY_STRIDE_2 = ("'stem=8 stem_stride=2 drop_path=0 | depth=1 width=16 | depth=1 width=32 | "
                 "depth=2 width=64 pattern=last_half heads=2 | depth=2 width=128 pattern=last_half "
                 "heads=4'")


def _study(model: str = "tiny", resolution: int = 32, overrides=()):
    return load_study_text(STUDY.format(model=model, resolution=resolution), "study.yaml",
                           list(overrides))


def test_warns_for_each_token_stage_below_4x4_and_says_the_fix():
    lines = few_token_warnings(_study(resolution=32))
    assert len(lines) == 2  # stage 3 at 2x2, stage 4 at 1x1; once each, not once per point
    assert lines[0].startswith("stage 3 has mixer/attention blocks but sees 2x2 tokens at "
                               "data.resolution=32 (stem_stride=4)")
    assert "use data.resolution >= 64, or stem_stride=2 in the model" in lines[0]
    assert "1x1 tokens" in lines[1] and "data.resolution >= 128" in lines[1]


def test_no_warning_at_64px_with_stem_stride_2_or_at_128px():
    assert few_token_warnings(_study(model=TINY_STRIDE_2, resolution=64)) == []
    assert few_token_warnings(_study(resolution=128)) == []
    # conv-only stages never warn, whatever their map
    assert few_token_warnings(_study(resolution=32, overrides=["space.pattern=[conv]"])) == []


def test_small_windows_warn_too():
    lines = few_token_warnings(_study(resolution=128, overrides=["model=tiny"]))
    assert lines == []
    spec = TINY_STRIDE_2.replace("heads=4'", "heads=4 window=2'")
    (line,) = few_token_warnings(_study(model=spec, resolution=64))
    assert "stage 4" in line and "in windows of 2" in line and "use window >= 4 or none" in line


def test_check_prints_the_warning_and_still_succeeds(tmp_path, capsys):
    from mvlab.cli import main

    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(model="tiny", resolution=32))
    assert main(["sweep", str(path), "--check"]) == 0
    err = capsys.readouterr().err
    assert err.count("mvlab sweep: warning: stage") == 2


@pytest.mark.parametrize("path", sorted(EXPERIMENTS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_study_asks_its_question_where_it_can_be_asked(path):
    assert few_token_warnings(load_study(path)) == []


def test_a_population_is_checked_without_sampling_it(monkeypatch):
    # Sampling a population builds and measures every candidate (seconds for n in the
    # thousands); the warning probes each dimension's values instead, and still finds a probe
    # value that starves a stage.
    import mvlab.study.space as space

    def refuse(*args, **kwargs):
        raise AssertionError("the token check sampled the population")

    monkeypatch.setattr(space, "population_points", refuse)
    config = load_study(EXPERIMENTS / "design_space.yaml")
    assert config.kind == "population"
    assert few_token_warnings(config) == []
    starved = load_study(EXPERIMENTS / "design_space.yaml",
                         overrides=["data.resolution=32"])
    assert any("stage 4" in line for line in few_token_warnings(starved))
