"""The calibration study (experiments/calibration.yaml) end to end at toy size: its positive
controls (conv vs the mixers, mamba_only vs attn_only, width x1 vs x2) run as real trials on the
generated Pathfinder proxy, through the same sweep as every study."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from optuna.trial import TrialState

from mvlab.study import SweepOptions, load_study, run_sweep
from mvlab.study.locations import storage_url_for
from mvlab.study.preparation import open_study
from mvlab.study.tokens import few_token_warnings

CALIBRATION = Path(__file__).resolve().parents[1] / "experiments" / "calibration.yaml"
TOY_MODEL = ("stem=8 stem_stride=1 drop_path=0 | depth=1 width=8 | depth=1 width=16 "
             "| depth=2 width=32 pattern=last_half heads=2 | depth=2 width=64 pattern=last_half "
             "heads=4")


EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.mark.slow
@pytest.mark.parametrize("name, points", [
    ("calibration", {(p, 24) for p in ("conv", "last_half", "mamba_only", "attn_only")}),
    ("calibration_width", {("last_half", 12), ("last_half", 24)}),
])
def test_a_toy_calibration_study_runs_every_control(tmp_path, monkeypatch, name, points):
    import dataclasses

    import pandas as pd

    from mvlab.study import build_report

    monkeypatch.chdir(tmp_path)
    config = load_study(EXPERIMENTS / f"{name}.yaml", [
        f"model={TOY_MODEL}", "study.seeds=[0, 1]",
        # 32 px: the pen and markers do not shrink below 64 px, so two 2-dash contours cannot
        # keep the default clearance; the toy tests the gate's machinery, not the generator.
        "data.resolution=32", "data.clearance=0", "data.per_class=16", "data.val_per_class=8",
        f"data.cache_dir={tmp_path / 'cache'}",
        "train.epochs=1", "train.warmup_epochs=0", "train.batch_size=16", "train.threads=1",
        "bench.batch_size=4", "bench.warmup=1", "bench.steps=1", "bench.repeats=1",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ])
    assert few_token_warnings(config) == []  # 32 px, stem_stride=1: stage 3 8x8, stage 4 4x4
    summary = run_sweep(config, SweepOptions(progress=False))
    assert summary.counts["COMPLETE"] == 2 * len(points)
    study = open_study(config, storage_url_for(config))
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert {(t.params["pattern"], t.params["dim"]) for t in trials} == points
    for trial in trials:
        top1, throughput = trial.values
        assert 0.0 <= top1 <= 100.0 and throughput > 0 and math.isfinite(throughput)
        spec = trial.user_attrs["spec"]
        assert "stem_stride=1" in spec and f"width={trial.params['dim'] * 4} " in spec
        conv_stages = spec.count("pattern=conv")  # stages 1-2 always; 3-4 for the control
        assert conv_stages == (4 if trial.params["pattern"] == "conv" else 2)
        assert trial.user_attrs["num_classes"] == 2  # the plateau check's ln K ...
        assert 0 < trial.user_attrs["train_loss"] < 5  # ... and the last epoch's loss
        losses = trial.user_attrs["train_losses"]  # every epoch's: when it left the plateau
        assert len(losses) == config.train.epochs and losses[-1] == pytest.approx(
            trial.user_attrs["train_loss"], abs=1e-6)
        assert trial.user_attrs["stage_epochs"] == 0  # no data.curriculum
    # the report judges the gate: every control, the band, reliability where asked
    build_report(config.name, storage_url_for(config), tmp_path / "report",
                 settings=dataclasses.asdict(config.analysis))
    gate = pd.read_csv(next((tmp_path / "report").glob("gate*.csv")))
    controls = [c.name for c in config.analysis.gate.controls]
    expected = controls + ["accuracy band", "every seed left the plateau"] + (
        ["split-half reliability"] if config.analysis.gate.reliability else [])
    assert gate["criterion"].tolist() == expected
    plateau = pd.read_csv(next((tmp_path / "report").glob("configurations*.csv")))["on_plateau"]
    assert plateau.between(0, 2).all()  # judged for every configuration: 0 to 2 of 2 seeds
    exits = pd.read_csv(next((tmp_path / "report").glob("configurations*.csv")))["plateau_exits"]
    assert exits.str.fullmatch(r"seed \d+: (\d+|never), seed \d+: (\d+|never)").all()
