"""Seeds added in stages (`study.sequential`): validated, planned in --check, and a real sweep
that adds seeds only to comparisons still undetermined and stops at a verdict or the cap."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from optuna.trial import TrialState

from mvlab.errors import StudyError
from mvlab.study import SweepOptions, build_report, load_study_text, run_sweep
from mvlab.study.locations import storage_url_for
from mvlab.study.plan import describe_plan
from mvlab.study.preparation import open_study

STUDY = """\
name: {name}
model: tiny
data: {{dataset: builtin, resolution: 16, per_class: 12, val_per_class: 5,
        heldout_fraction: 0.25}}
train: {{epochs: 1, batch_size: 32, warmup_epochs: 0, device: cpu}}
study:
  kind: grid
  seeds: [0, 1]
  sequential: {sequential}
space:
  pattern: [last_half, attn_only, mamba_only]
analysis:
  reference: {{pattern: last_half}}
  equivalence_margin: {margin}
bench: {{batch_size: 4, warmup: 1, steps: 2, repeats: 1}}
tracking: {{uri: "sqlite:///{root}/mlflow.db"}}
workdir: {root}/{name}
"""


def _config(root: Path, name: str = "seq", sequential: str = "{step: 1, max_seeds: 3}",
            margin: float = 0.01):
    text = STUDY.format(name=name, sequential=sequential, margin=margin, root=root)
    return load_study_text(text, f"{name}.yaml")


def test_sequential_settings_are_checked_and_planned(tmp_path):
    config = _config(tmp_path, sequential="{step: 2, max_seeds: 8}")
    assert (config.sequential.step, config.sequential.max_seeds) == (2, 8)
    assert config.analysis.looks == 4  # 2 seeds, then 4, 6, 8
    plan = describe_plan(config)
    assert "up to 8 seeds (at most 18 more trials)" in plan and "= 0.0125" in plan
    for sequential, message in [("{step: 0}", "at least 1"),
                                ("{max_seeds: 2}", "above the study's 2 seed"),
                                ("{max_seeds: 1000}", "at most 100"),
                                ("{steps: 2}", "steps")]:
        with pytest.raises(StudyError, match=message):
            _config(tmp_path, sequential=sequential)
    text = STUDY.format(name="x", sequential="{step: 1}", margin=0.5, root=tmp_path)
    with pytest.raises(StudyError, match="set analysis: reference"):
        load_study_text(text.replace("  reference: {pattern: last_half}\n", ""), "x.yaml")


@pytest.mark.slow  # a real sweep of up to 9 tiny trials
def test_seeds_go_only_to_undetermined_comparisons_until_a_verdict_or_the_cap(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path)
    summary = run_sweep(config, SweepOptions(progress=False))
    study = open_study(config, storage_url_for(config))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert summary.counts["COMPLETE"] == len(complete) and not summary.counts["WAITING"]

    seeds: dict[str, set[int]] = {}
    for trial in complete:
        seeds.setdefault(trial.params["pattern"], set()).add(trial.params["seed"])
    # the reference ran every seed any configuration ran: each new seed is a paired block
    assert seeds["last_half"] == set().union(*seeds.values())
    assert all(s <= {0, 1, 2} for s in seeds.values())

    # the stopping rule, judged by the report at the same level (alpha / 2 looks)
    out = tmp_path / "report"
    build_report(config.name, storage_url_for(config), out,
                 settings=__import__("dataclasses").asdict(config.analysis))
    verdicts = pd.read_csv(next(out.glob("verdicts*.csv")))
    for row in verdicts.itertuples(index=False):
        pattern = row.configuration
        assert row.verdict != "undetermined" or row.seeds == 3, (pattern, row.verdict)
    # a configuration decided at 2 seeds got no third: only undetermined ones were extended
    extended = {p for p, s in seeds.items() if 2 in s} - {"last_half"}
    assert extended  # at a 0.01-point margin two seeds decide nothing on this tiny proxy
    assert study.user_attrs["sequential_stages"] == 1  # looks = 2: one stage after the first
    assert len(complete) == 6 + len(extended) + (1 if extended else 0)
    assert "family-wise level 0.025 (0.05 over 2 looks" in (out / "README.md").read_text()


@pytest.mark.slow  # a real sweep of 6 tiny trials
def test_a_decided_study_adds_nothing(tmp_path, monkeypatch):
    # a 100-point margin: every comparison is shown equivalent at the first look
    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path, name="decided", margin=100.0)
    summary = run_sweep(config, SweepOptions(progress=False))
    assert summary.counts["COMPLETE"] == 6 and not summary.counts["WAITING"]


def test_a_knob_cannot_gain_a_value_once_the_study_started(tmp_path, monkeypatch):
    """Optuna fixes a categorical param's choices at the study's first trial: a grown space is
    one line before anything is queued; a narrowed or reordered one still resumes."""
    from mvlab.study.preparation import _check_space_fits
    from mvlab.study.space import suggest_point

    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path, name="grow")
    url = storage_url_for(config)
    Path(url.split(":", 1)[-1]).parent.mkdir(parents=True, exist_ok=True)
    study = open_study(config, url)
    study.enqueue_trial({"pattern": "attn_only", "seed": 1})
    trial = study.ask()
    assert suggest_point(trial, config) == {"pattern": "attn_only", "seed": 1}
    study.tell(trial, [50.0, 100.0])

    narrowed = load_study_text(
        STUDY.format(name="grow", sequential="{step: 1, max_seeds: 3}", margin=0.01,
                     root=tmp_path).replace("[last_half, attn_only, mamba_only]",
                                            "[mamba_only, last_half]"), "grow.yaml")
    _check_space_fits(study, narrowed, url)
    study.enqueue_trial({"pattern": "mamba_only", "seed": 0})
    trial = study.ask()
    assert suggest_point(trial, narrowed)["pattern"] == "mamba_only"  # stored choices used
    study.tell(trial, [50.0, 100.0])

    grown = load_study_text(
        STUDY.format(name="grow", sequential="{step: 1, max_seeds: 3}", margin=0.01,
                     root=tmp_path).replace("[last_half, attn_only, mamba_only]",
                                            "[last_half, attn_only, mamba_only, conv]"),
        "grow.yaml")
    with pytest.raises(StudyError, match=r"space.pattern adds \['conv'\].*--set name=grow_v2"):
        _check_space_fits(study, grown, url)
    more_seeds = _config(tmp_path, name="grow", sequential="{step: 1, max_seeds: 5}")
    with pytest.raises(StudyError, match=r"study.seeds/sequential adds \[3, 4\]"):
        _check_space_fits(study, more_seeds, url)


def test_a_study_stops_adding_after_its_planned_looks(tmp_path, monkeypatch):
    # the stage counter, not the verdicts, ends a study that has made its looks
    from mvlab import records
    from mvlab.study.sequential import next_points
    from mvlab.study.types import Prepared

    monkeypatch.chdir(tmp_path)
    config = _config(tmp_path, name="looks", sequential="{step: 1, max_seeds: 4}")
    assert config.analysis.looks == 3
    url = storage_url_for(config)
    Path(url.split(":", 1)[-1]).parent.mkdir(parents=True, exist_ok=True)
    study = open_study(config, url)
    study.set_user_attr(records.STUDY_STAGES, 2)
    prepared = Prepared(config, url, None, 6, 0)
    assert next_points(study, prepared) == ([], "all 3 planned looks made")
