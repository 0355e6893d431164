"""mvlab.data.procedural: the generated token-mixing tasks are deterministic per seed, balanced,
free of an ink shortcut, drawn from disjoint seed streams per split, and reach training through
the ordinary folder -> decoded cache -> loader path without a crop."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from mvlab.data import DataConfig, build_data
from mvlab.data.procedural import CHUNK, TASKS, definition, generate_split
from mvlab.data.procedural.same_different import _swap_cells
from mvlab.errors import DataError


def _spec(task: str, per_class: int = 40, seed: int = 0, resolution: int = 64, **knobs):
    return definition(DataConfig(dataset=task, per_class=per_class, val_per_class=per_class,
                                 seed=seed, resolution=resolution, **knobs))


@pytest.mark.parametrize("task", list(TASKS))
def test_generation_is_a_function_of_the_definition(task):
    images, labels = generate_split(_spec(task), "train")
    again, _ = generate_split(_spec(task), "train")
    other, _ = generate_split(_spec(task, seed=1), "train")
    assert images.shape == (80, 64, 64) and images.dtype == np.uint8
    assert np.array_equal(images, again)
    assert not np.array_equal(images, other)
    # Fixed chunks: a set of two chunks starts with the one-chunk set.
    one, _ = generate_split(_spec(task, per_class=CHUNK // 2), "train")
    two, _ = generate_split(_spec(task, per_class=CHUNK), "train")
    assert np.array_equal(two[:CHUNK], one)


@pytest.mark.parametrize("task", list(TASKS))
def test_labels_are_balanced_and_ink_does_not_give_them_away(task):
    images, labels = generate_split(_spec(task, per_class=150), "train")
    assert np.bincount(labels).tolist() == [150, 150]
    ink = images.reshape(len(images), -1).mean(1)
    assert ink.min() > 0  # something is drawn on every image
    if task == "same_different":  # swaps keep every glyph's ink: identical per image
        assert np.unique(ink).size == 1
    else:  # same contours, same marker distance: class means within sampling noise
        gap = abs(ink[labels == 1].mean() - ink[labels == 0].mean())
        assert gap < 3 * ink.std() / np.sqrt(150)


@pytest.mark.parametrize("task", list(TASKS))
def test_train_and_val_come_from_disjoint_seed_streams(task):
    spec = _spec(task)
    train, _ = generate_split(spec, "train")
    val, _ = generate_split(spec, "val")
    digests = {hashlib.sha256(img.tobytes()).hexdigest() for img in train}
    assert len(digests) == len(train)  # no duplicates inside a split either
    assert not digests & {hashlib.sha256(img.tobytes()).hexdigest() for img in val}


def test_different_glyphs_differ_by_exactly_the_swapped_cells():
    rng = np.random.default_rng(0)
    glyphs = rng.random((500, 16)).argsort(-1).argsort(-1) < 8
    changed = _swap_cells(rng, glyphs, 3)
    assert (changed.sum(-1) == 8).all()
    assert ((changed != glyphs).sum(-1) == 6).all()


def test_difficulty_knobs_change_the_images():
    base, _ = generate_split(_spec("pathfinder", distractors=0), "train")
    cluttered, _ = generate_split(_spec("pathfinder", distractors=6), "train")
    longer, _ = generate_split(_spec("pathfinder", distractors=0, contour_length=12), "train")
    assert cluttered.mean() > 2 * base.mean()
    assert longer.mean() > base.mean()


def test_procedural_config_defaults_and_errors():
    cfg = DataConfig(dataset="pathfinder")
    assert (cfg.crop_pct, cfg.scale, cfg.ratio) == (1.0, (1.0, 1.0), (1.0, 1.0))
    assert cfg.stored_side == cfg.resolution == 64
    assert DataConfig().crop_pct == 0.875 and DataConfig().scale == (0.08, 1.0)
    with pytest.raises(DataError, match="crop_pct"):
        DataConfig(dataset="pathfinder", crop_pct=0.875)
    with pytest.raises(DataError, match="data.root"):
        DataConfig(dataset="same_different", root="/data")
    with pytest.raises(DataError, match="data.distractors=40.*at most 14"):
        DataConfig(dataset="same_different", distractors=40)
    with pytest.raises(DataError, match="data.changed_cells"):
        DataConfig(dataset="same_different", changed_cells=9)
    with pytest.raises(DataError, match="data.contour_length"):
        DataConfig(dataset="pathfinder", contour_length=1)
    with pytest.raises(DataError, match="contour_length=60.*do not fit"):
        generate_split(_spec("pathfinder", contour_length=60, resolution=32, per_class=2), "train")
    for bad in (-1, 17, float("nan"), True):
        with pytest.raises(DataError, match="data.clearance"):
            DataConfig(dataset="pathfinder", clearance=bad)
    # Too short for the clearance: refused when the setting is read, not after a redraw loop.
    with pytest.raises(DataError, match="2-dash contours at 32 px reach 4.0 px, too short"):
        DataConfig(dataset="pathfinder", resolution=32, contour_length=2)
    with pytest.raises(DataError, match="data.clearance=5"):
        DataConfig(dataset="pathfinder", contour_length=2, clearance=5)
    for fits in (dict(contour_length=2), dict(contour_length=2, clearance=4),
                 dict(resolution=32, contour_length=2, clearance=0)):
        spec = _spec("pathfinder", per_class=8, **fits)  # accepted, and really drawn
        assert generate_split(spec, "train")[0].shape[0] == 16


@pytest.mark.parametrize("knobs", [dict(contour_length=2, distractors=0),
                                   dict(contour_length=6, distractors=2),
                                   dict(contour_length=10, distractors=4)])
def test_pathfinder_clearance_keeps_contours_and_markers_apart(knobs):
    """The first generator (clearance 0) let the second candidate contour touch the first and a
    contour run into a marker it does not carry, in many images: pixels that can say "joined"
    where the label says not. The default clearance leaves no such image."""
    from mvlab.data.procedural.pathfinder import layout, overlaps

    labels = np.arange(600) % 2
    first = overlaps(layout(np.random.default_rng(0), labels, 64, clearance=0, joints="forward",
                            **knobs), 64)
    assert (first["contours_touch"] | first["marker_touches_other"]).mean() > 0.2
    now = layout(np.random.default_rng(0), labels, 64, clearance=DataConfig().clearance,
                 joints=DataConfig().joints, **knobs)
    assert not any(hit.any() for hit in overlaps(now, 64).values())
    assert np.array_equal(now["labels"], labels)


def test_pathfinder_clearance_zero_is_the_first_generator():
    """Caches, studies and checkpoints made before the knobs keep their digest and pixels."""
    first = _spec("pathfinder", clearance=0, joints="forward", contour_length=6, distractors=2)
    # the definition (and the cache's digest) of before
    assert "clearance" not in first and "joints" not in first
    images, _ = generate_split(first, "train")
    # The pixels of mvlab before the knob (commit b5571d5) for this definition.
    assert hashlib.sha256(images.tobytes()).hexdigest() == (
        "b1c9e2202e2b7a26e9cb9509ffe89aeda4a1ba9393fee879eef74dd72b01c1af")
    clear = generate_split(_spec("pathfinder", contour_length=6, distractors=2), "train")[0]
    assert not np.array_equal(images, clear)
    from mvlab.data.config import with_added_keys
    now = DataConfig(dataset="pathfinder")
    recorded = with_added_keys({"dataset": "pathfinder"}, now)  # a study's record
    assert recorded["clearance"] == 0 and recorded["joints"] == "forward"
    other = with_added_keys({"dataset": "builtin"}, now)
    assert other["clearance"] == now.clearance and other["joints"] == now.joints
    assert DataConfig(dataset="pathfinder", clearance=2).clearance == 2.0  # one cache digest
    assert definition(DataConfig(dataset="pathfinder", clearance=2)) == definition(now)
    for bad in ("center", "", None):
        for dataset in ("pathfinder", "builtin"):
            with pytest.raises(DataError, match="data.joints.*centred, forward"):
                DataConfig(dataset=dataset, joints=bad)


def test_pathfinder_pixels_change_only_with_a_knob_value():
    """The generator of the clean probes (results/calibration/clearance/, commit cde2583) is
    clearance 2 with forward joints, and keeps its digest; the default since draws centred
    joints. A change of either's pixels must come with a new knob value, not silently."""
    probes = _spec("pathfinder", contour_length=6, distractors=2, per_class=300,
                   joints="forward")
    assert "joints" not in probes  # the digest of the caches the probes made
    images, _ = generate_split(probes, "train")
    assert hashlib.sha256(images.tobytes()).hexdigest() == (
        "9493174756b745aa2e420fdc34ae76229de3772d4d2cf6909447c4f0f68f46ac")
    images, _ = generate_split(_spec("pathfinder", contour_length=6, distractors=2,
                                     per_class=300), "train")
    assert hashlib.sha256(images.tobytes()).hexdigest() == (
        "f4bf6e5f27722ad580ebc4e2131c92f06f704c2e7bcee003e977d1057efa1889")


@pytest.mark.parametrize("joints", ["centred", "forward"])
def test_centred_joints_draw_a_contour_the_same_way_from_either_end(joints):
    """Which end of a contour a marker sits on must not show in the pixels next to it: label 1
    puts the second marker on A's end, label 0 on B's start. Read backwards (last dash first,
    directions reversed), a centred contour is again one its own rule draws; a forward one is
    not (its gaps run on along the dash before them)."""
    from mvlab.data.procedural.pathfinder import _shapes, geometry

    g = geometry(64)
    starts, dirs = _shapes(np.random.default_rng(0), 256, 8, g, joints)
    ends = starts + g["dash"] * dirs

    def gaps_follow_the_rule(starts, dirs, ends):
        hop = starts[:, 1:] - ends[:, :-1]  # from each dash's end to the next one's start
        gap = g["step"] - g["dash"]
        rule = (gap * dirs[:, :-1] if joints == "forward"
                else gap / 2 * (dirs[:, :-1] + dirs[:, 1:]))
        return np.allclose(hop, rule)

    assert gaps_follow_the_rule(starts, dirs, ends)
    backwards = gaps_follow_the_rule(ends[:, ::-1], -dirs[:, ::-1], starts[:, ::-1])
    assert backwards == (joints == "centred")


def test_mixed_lengths_give_both_images_of_a_pair_one_length_and_both_classes_the_same():
    """data.shortest_contour draws each pair's contour length from shortest..contour_length:
    ink (which grows with length) then varies a lot between pairs, hardly within one, and alike
    in both classes, so a length carries no label. One length is the control: pairs unrelated."""
    def pair_ink(**knobs):
        images, labels = generate_split(_spec("pathfinder", per_class=300, distractors=1,
                                              **knobs), "train")
        ink = images.reshape(len(images), -1).astype(float).sum(1)
        return ink, labels, np.corrcoef(ink[0::2], ink[1::2])[0, 1]

    ink, labels, together = pair_ink(contour_length=12, shortest_contour=2)
    fixed_ink, _, apart = pair_ink(contour_length=12)
    assert together > 0.9 and abs(apart) < 0.3
    assert ink.std() > 4 * fixed_ink.std() and ink.mean() < fixed_ink.mean()
    gap = abs(ink[labels == 1].mean() - ink[labels == 0].mean())
    assert gap < 3 * fixed_ink.std() / np.sqrt(300)  # within the noise of one length
    again, _, _ = pair_ink(contour_length=12, shortest_contour=2)
    assert np.array_equal(ink, again)


def test_shortest_contour_is_validated_and_one_length_is_one_definition():
    plain = definition(DataConfig(dataset="pathfinder", contour_length=8))
    assert "shortest_contour" not in plain  # the digest (and pixels) of every cache before
    # Another task's definition gains no Pathfinder key: its caches keep their digest too.
    assert set(definition(DataConfig(dataset="same_different"))) == {
        "task", "version", "seed", "side", "per_class", "val_per_class", "glyph_cells",
        "changed_cells", "distractors"}
    same = DataConfig(dataset="pathfinder", contour_length=8, shortest_contour=8)
    assert definition(same) == plain
    assert same.shortest_contour == 8  # kept as given: a grid over contour_length still mixes
    assert definition(DataConfig(dataset="pathfinder", contour_length=8,
                                 shortest_contour=4))["shortest_contour"] == 4
    for dataset, bad in (("pathfinder", 1), ("pathfinder", 9), ("pathfinder", True),
                         ("pathfinder", 4.5), ("builtin", 1), ("same_different", -3)):
        with pytest.raises(DataError, match=r"data.shortest_contour=.*from 2 to "
                                            r"data.contour_length"):
            DataConfig(dataset=dataset, contour_length=8, shortest_contour=bad)
    # The clearance refuses short contours: the shortest is the one to check, and to name.
    DataConfig(dataset="pathfinder", contour_length=10, clearance=5)
    with pytest.raises(DataError, match=r"^data.shortest_contour=2: data.clearance=5: 2-dash"):
        DataConfig(dataset="pathfinder", contour_length=10, shortest_contour=2, clearance=5)
    from mvlab.data.config import with_added_keys
    mixed = DataConfig(dataset="pathfinder", contour_length=8, shortest_contour=4)
    assert with_added_keys({"dataset": "pathfinder"}, mixed)["shortest_contour"] == 0
    assert with_added_keys({"dataset": "builtin"}, mixed)["shortest_contour"] == 4


def test_an_impossible_clearance_is_one_clear_error(monkeypatch):
    from mvlab.data.procedural import pathfinder

    monkeypatch.setattr(pathfinder, "PLACEMENT_ROUNDS", 3)  # the real bound takes ~30 s
    with pytest.raises(DataError, match="data.clearance=16.*no room for two 14-dash contours.*lower data.clearance"):
        generate_split(_spec("pathfinder", contour_length=14, clearance=16, per_class=2), "train")


@pytest.mark.parametrize("task", list(TASKS))
def test_tasks_load_through_the_folder_and_cache_path_without_a_crop(task, tmp_path):
    cfg = DataConfig(dataset=task, per_class=30, val_per_class=10, heldout_fraction=0.2,
                     cache_dir=str(tmp_path), resolution=64)
    bundle = build_data(cfg, batch_size=16)
    assert bundle.num_classes == 2 and bundle.class_names == list(TASKS[task].classes)
    assert bundle.manifest["counts"] == {"train": 48, "heldout": 12, "val": 20}
    assert bundle.caches["train"].built
    images, labels = generate_split(definition(cfg), "val")
    x, y = next(iter(bundle.val))  # eval: the stored square itself, normalised
    mean, std = torch.tensor(cfg.mean)[:, None, None], torch.tensor(cfg.std)[:, None, None]
    pixels = (x * std + mean) * 255
    order = np.argsort(labels, kind="stable")  # val files are listed class by class
    expected = torch.from_numpy(images[order][:16]).float()
    assert torch.allclose(pixels, expected[:, None].expand_as(pixels), atol=0.5)
    assert y.tolist() == labels[order][:16].tolist()
    again = build_data(cfg, batch_size=16)
    assert not again.caches["train"].built  # generated and decoded once


@pytest.mark.slow
def test_the_clearance_benchmark_measures_both_generators(tmp_path):
    import csv
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "overlaps.csv"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "pathfinder_clearance.py"
    subprocess.run([sys.executable, str(script), "--images", "64", "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 8
    assert all(float(r["either"]) == 0 for r in rows if float(r["clearance"]) == 2)
    assert all(float(r["either"]) > 0 for r in rows if float(r["clearance"]) == 0)
    # The local facing rule solves short contours and fades with length (a network must beat it).
    facing = {(r["contour_length"], r["clearance"]): float(r["facing_rule"]) for r in rows}
    assert facing[("2", "2.0")] > 0.95 and facing[("10", "2.0")] < 0.9


def test_the_patch_reader_sees_the_pixels_around_each_marker(import_script):
    from mvlab.data.procedural.pathfinder import draw, layout

    shortcuts = import_script("benchmarks/pathfinder_shortcuts.py")
    spec = layout(np.random.default_rng(0), np.arange(64) % 2, 64, contour_length=6,
                  distractors=2, clearance=2.0, joints="centred")
    images = draw(spec, 64)
    for marker in (0, 1):
        crops = shortcuts.patches(images, spec["markers"], marker)
        assert crops.shape == (64, 1, 17, 17)
        assert (crops[:, 0, 7:10, 7:10] == 1.0).all()  # the marker's disk (radius 2) mid-crop
        assert not (crops[:, 0] == 1.0).all(axis=(1, 2)).any()  # and not an ink-filled crop


@pytest.mark.slow
def test_the_shortcut_benchmark_reads_the_ends_and_the_markers_surroundings(tmp_path):
    import csv
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "shortcuts.csv"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "pathfinder_shortcuts.py"
    subprocess.run([sys.executable, str(script), "--images", "1024", "--steps", "300",
                    "--out", str(out)], check=True, capture_output=True, timeout=600)
    table = list(csv.DictReader(out.open()))
    assert {r["joints"] for r in table} == {"centred"}  # the default drawing
    rows = {r["contour_length"]: {k: float(v) for k, v in r.items() if k != "joints"}
            for r in table}
    assert sorted(rows) == ["10", "4", "6", "8"]
    # Reading the ends solves short contours (2 x 3 dashes cover a 4-dash contour) ...
    assert rows["4"]["facing_rule"] > 0.95 and rows["4"]["local_3"] > 0.95
    # ... and reads less of long ones.
    assert rows["10"]["facing_rule"] < rows["4"]["facing_rule"]
    # Marker 1 always sits on A's start, alike in both classes: its pixels alone say nothing
    # (512 scored images: chance is 0.5 +- 0.022, 1 sd). With centred joints (the default)
    # neither do marker 2's, whichever contour's end it sits on.
    assert all(row["patch_1"] < 0.6 and row["patch_2"] < 0.6 for row in rows.values())

