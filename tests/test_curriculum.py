"""data.curriculum: a generated task's first epochs train on other knob values. Each stage is a
pool of its own with the same number of batches an epoch; the task's own held-out and val splits
are untouched; a curriculum that would fill every epoch is refused before anything trains."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mvlab.data import DataConfig, build_data
from mvlab.data.config import with_added_keys
from mvlab.data.loaders import CachedLoader, CurriculumLoader
from mvlab.errors import DataError, UserError
from mvlab.study import load_study_text

STAGE = {"epochs": 2, "contour_length": 2, "distractors": 0}


def _task(tmp_path, **extra) -> DataConfig:
    knobs = {"contour_length": 6, "distractors": 2, **extra}
    return DataConfig(dataset="pathfinder", per_class=24, val_per_class=8, heldout_fraction=0.25,
                      cache_dir=str(tmp_path), **knobs)


def _epoch(loader, epoch: int) -> list[torch.Tensor]:
    loader.set_epoch(epoch)
    return [x for x, _ in loader]


def test_stages_are_configs_of_the_same_task_with_other_knob_values():
    cfg = DataConfig(dataset="pathfinder", contour_length=6, distractors=2, seed=3,
                     curriculum=(STAGE, {"epochs": 1, "contour_length": 4}))
    (first_epochs, first), (second_epochs, second) = cfg.stages()
    assert (first_epochs, first.contour_length, first.distractors) == (2, 2, 0)
    assert (second_epochs, second.contour_length, second.distractors) == (1, 4, 2)
    assert first.seed == second.seed == 3 and first.curriculum == ()
    assert cfg.curriculum_epochs == 3
    assert DataConfig.from_dict(cfg.to_dict()).stages()[0][1] == first  # round trip
    assert DataConfig(dataset="pathfinder").stages() == []


@pytest.mark.parametrize("stage, message", [
    ({"contour_length": 2}, r"curriculum\[0\].epochs=None: every stage needs"),
    ({"epochs": 0}, r"epochs=0: every stage needs a whole number"),
    ({"epochs": True}, r"epochs=True"),
    ({"epochs": 1, "seed": 4}, r"seed cannot change between stages; a stage sets epochs and "
                               r"any of contour_length, distractors"),
    ({"epochs": 1, "contour_length": 1}, r"curriculum\[0\]: data.contour_length=1: must be an "
                                         r"integer >= 2"),
    ({"epochs": 1, "glyph_cells": 3}, r"glyph_cells cannot change"),
    ("contour_length=2", r"curriculum\[0\]='contour_length=2': a stage is a mapping"),
])
def test_a_bad_stage_is_one_line_naming_it(stage, message):
    with pytest.raises(DataError, match=message):
        DataConfig(dataset="pathfinder", curriculum=(stage,))


def test_a_curriculum_needs_a_generated_task_and_old_records_had_none():
    with pytest.raises(DataError, match=r"data.curriculum needs a generated task .* drop it for "
                                        r"data.dataset=builtin"):
        DataConfig(curriculum=(STAGE,))
    cfg = DataConfig(dataset="pathfinder", curriculum=(STAGE,))
    assert with_added_keys({"dataset": "pathfinder"}, cfg)["curriculum"] == ()


def _loader(images: np.ndarray, seed: int = 0) -> CachedLoader:
    labels = np.arange(len(images)) % 2
    return CachedLoader(images, labels, np.arange(len(images)), 4, train=True, resolution=8,
                        seed=seed, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0)


def test_the_curriculum_loader_serves_each_epoch_from_its_stage():
    stage_a = _loader(np.zeros((8, 8, 8, 3), np.uint8))
    stage_b = _loader(np.full((8, 8, 8, 3), 100, np.uint8))
    main = _loader(np.full((8, 8, 8, 3), 200, np.uint8))
    loader = CurriculumLoader([(2, stage_a), (1, stage_b)], main)
    assert len(loader) == 2 and loader.stage_epochs == 3 and loader.batch_size == 4
    seen = [round(float(_epoch(loader, epoch)[0].mean()), 2) for epoch in range(5)]
    a, b, m = (round(float(_epoch(x, 0)[0].mean()), 2) for x in (stage_a, stage_b, main))
    assert seen == [a, a, b, m, m]
    # Batches are the source's own for that epoch, and resume mid-epoch as the source does.
    for epoch, source in ((1, stage_a), (4, main)):
        assert all(torch.equal(x, y) for x, y in zip(
            _epoch(loader, epoch), _epoch(source, epoch), strict=True))
        assert torch.equal(next(loader.batches(epoch, start=1))[0],
                           next(source.batches(epoch, start=1))[0])
    # Iterating without set_epoch moves on, as the other loaders do.
    loader.set_epoch(2)
    assert float(next(iter(loader))[0].mean()) == pytest.approx(b, abs=0.01)
    assert float(next(iter(loader))[0].mean()) == pytest.approx(m, abs=0.01)


def test_stages_must_give_as_many_batches_as_the_task():
    with pytest.raises(DataError, match=r"its stages give \[1\] training batches an epoch and "
                                        r"the task 2"):
        CurriculumLoader([(1, _loader(np.zeros((4, 8, 8, 3), np.uint8)))],
                         _loader(np.zeros((8, 8, 8, 3), np.uint8)))


def test_build_data_trains_on_the_stage_pool_then_the_task_and_keeps_the_task_splits(tmp_path):
    plain = build_data(_task(tmp_path), batch_size=8)
    staged = build_data(_task(tmp_path, curriculum=(STAGE,)), batch_size=8)
    stage = build_data(_task(tmp_path, contour_length=2, distractors=0), batch_size=8)
    for epoch, source in ((0, stage), (1, stage), (2, plain), (3, plain)):
        assert all(torch.equal(x, y) for x, y in zip(
            _epoch(staged.train, epoch), _epoch(source.train, epoch), strict=True))
    assert not torch.equal(_epoch(stage.train, 0)[0], _epoch(plain.train, 0)[0])
    for split in ("heldout", "val"):
        assert all(torch.equal(x, y) for (x, _), (y, _) in zip(
            getattr(staged, split), getattr(plain, split), strict=True))
    [described] = staged.manifest["curriculum"]
    assert described["epochs"] == 2 and described["contour_length"] == 2
    assert described["root"] == stage.manifest["root"] != plain.manifest["root"]
    assert described["cache"] == stage.manifest["cache"]


def test_a_curriculum_that_fills_every_epoch_is_refused(tmp_path):
    from mvlab.training.config import TrainConfig
    from mvlab.training.trainer import train

    cfg = _task(tmp_path, curriculum=(STAGE,))
    with pytest.raises(DataError, match=r"stages take 2 epoch\(s\) and train.epochs=2: the "
                                        r"task's own images would never be trained on"):
        train("resnet18", cfg, TrainConfig(epochs=2, batch_size=8))
    assert not any(tmp_path.iterdir())  # refused before any pool was generated
    text = f"""
name: c
data: {{dataset: pathfinder, contour_length: 6, curriculum: [{STAGE}]}}
train: {{epochs: 2}}
space: {{pattern: [conv]}}
"""
    with pytest.raises(UserError, match=r"tiny.yaml:3: data.curriculum's stages take 2 "
                                        r"epoch\(s\) and train.epochs=2"):
        load_study_text(text, "tiny.yaml")
    assert load_study_text(text.replace("epochs: 2}", "epochs: 3}"), "tiny.yaml").data.stages()
    # Nor in any trial of a space over train.epochs, nor may early stopping judge a stage epoch.
    spaced = text.replace("epochs: 2}", "epochs: 4}").replace("[conv]", "[conv], train.epochs: [2, 4]")
    with pytest.raises(UserError, match=r"tiny.yaml:5: space.train.epochs: data.curriculum's "
                                        r"stages take 2 epoch\(s\) and train.epochs=2"):
        load_study_text(spaced, "tiny.yaml")
    with pytest.raises(UserError, match=r"early_stop.after_epoch: 2 falls inside "
                                        r"data.curriculum's 2 epoch\(s\)"):
        load_study_text(text.replace("epochs: 2}", "epochs: 4}") + "early_stop: {after_epoch: 2}\n",
                        "tiny.yaml")


def test_the_plan_names_what_each_stage_changes():
    from mvlab.study.plan import task_knobs

    cfg = DataConfig(dataset="pathfinder", contour_length=6, distractors=2,
                     curriculum=(STAGE, {"epochs": 1, "contour_length": 4}))
    assert task_knobs(cfg).endswith("contour_length=6 distractors=2 clearance=2.0 "
                                    "joints=centred shortest_contour=0 (epochs 1-2: "
                                    "contour_length=2 distractors=0) (epoch 3: contour_length=4)")


def test_a_sweep_with_a_curriculum_records_its_stage_epochs_and_reports_exits(tmp_path,
                                                                               monkeypatch):
    import optuna

    from mvlab.study import SweepOptions, build_report, run_sweep
    from mvlab.study.locations import storage_url_for
    from mvlab.study.preparation import open_study

    monkeypatch.chdir(tmp_path)
    config = load_study_text(f"""
name: staged
model: "stem=8 stem_stride=2 | depth=1 width=8 | depth=1 width=8 | depth=1 width=8
  pattern=last_half heads=1 | depth=1 width=8 pattern=last_half heads=1"
data: {{dataset: pathfinder, contour_length: 4, distractors: 1, per_class: 16,
        val_per_class: 8, heldout_fraction: 0.25, cache_dir: {tmp_path / 'cache'},
        curriculum: [{{epochs: 1, contour_length: 2, distractors: 0}}]}}
train: {{epochs: 2, batch_size: 8, warmup_epochs: 0, threads: 1}}
space: {{pattern: [conv]}}
objectives: {{heldout_top1: maximize}}
tracking: {{uri: "sqlite:///{tmp_path / 'mlflow.db'}"}}
""", "staged.yaml")
    assert run_sweep(config, SweepOptions(progress=False)).counts["COMPLETE"] == 1
    [trial] = open_study(config, storage_url_for(config)).get_trials(
        states=(optuna.trial.TrialState.COMPLETE,))
    assert trial.user_attrs["stage_epochs"] == 1 and len(trial.user_attrs["train_losses"]) == 2
    build_report(config.name, storage_url_for(config), tmp_path / "report")
    exits = (tmp_path / "report" / "configurations.csv").read_text()
    assert "seed 0: 2" in exits or "seed 0: never" in exits  # the stage epoch never counts
