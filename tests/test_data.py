"""mvlab.data: subsets, the held-out split, folders with awkward files, the decoded cache, the
loaders' determinism, error messages, and the built-in dataset (offline)."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mvlab.cli import main as cli_main
from mvlab.data import DataConfig, build_data, select_subset
from mvlab.data.builtin import builtin_arrays, class_folder_names, materialize
from mvlab.data.cache import build_or_open
from mvlab.data.folders import BadImage, list_split, load_rgb, load_rgb_square
from mvlab.data.loaders import CachedLoader
from mvlab.data.subsets import cap_per_class, select_classes, shipped_lists, stratified_split
from mvlab.data.transforms import crop_flip_resize, sample_crop_boxes
from mvlab.errors import DataError

CLASSES = ["n01000001", "n01000002", "n01000003"]
TRAIN_PER_CLASS, VAL_PER_CLASS = 10, 4


def _image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    # Smooth content (not white noise) so JPEG round trips and resizes stay meaningful.
    base = rng.integers(0, 256, size=(height // 6 + 1, width // 6 + 1, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((width, height), Image.BILINEAR)


def make_tree(root: Path, awkward: bool = True) -> dict[str, Path]:
    """root/{train,val}/<wnid>/*.JPEG; with ``awkward`` also a corrupt file, a truncated JPEG,
    a CMYK JPEG and a grayscale PNG in train. Returns the awkward files by kind."""
    rng = np.random.default_rng(0)
    for split, n in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for cls in CLASSES:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                size = (48, 36) if i % 2 else (36, 48)
                _image(rng, *size).save(root / split / cls / f"{cls}_{i:03d}.JPEG", quality=92)
    if not awkward:
        return {}
    first = root / "train" / CLASSES[0]
    files = {"corrupt": first / "zz_corrupt.JPEG", "truncated": first / "zz_truncated.JPEG",
             "cmyk": root / "train" / CLASSES[1] / "zz_cmyk.JPEG",
             "gray": root / "train" / CLASSES[2] / "zz_gray.png"}
    files["corrupt"].write_bytes(b"not a JPEG at all " * 20)
    good = (first / f"{CLASSES[0]}_000.JPEG").read_bytes()
    files["truncated"].write_bytes(good[: len(good) // 3])
    Image.new("RGB", (40, 40), (200, 30, 30)).convert("CMYK").save(files["cmyk"], quality=95)
    Image.fromarray(np.tile((np.arange(40) * 6).astype(np.uint8), (40, 1))).save(files["gray"])
    return files


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("imagenet")
    return root, make_tree(root)


def folder_cfg(root: Path, cache_dir: Path, **kw) -> DataConfig:
    kw = {"dataset": "folder", "root": str(root), "cache_dir": str(cache_dir), "resolution": 16,
          "heldout_fraction": 0.25, **kw}
    return DataConfig(**kw)


# --- subsets -------------------------------------------------------------------------------------

AVAILABLE = [f"n{i:08d}" for i in range(50)]


def test_class_selection_is_deterministic_and_seeded():
    assert select_classes("all", AVAILABLE).ids == tuple(AVAILABLE)
    assert select_classes("first:5", AVAILABLE[::-1]).ids == tuple(AVAILABLE[:5])
    a = select_classes("random:7,3", AVAILABLE).ids
    assert a == select_classes("random:7,3", list(reversed(AVAILABLE))).ids
    assert a != select_classes("random:7,4", AVAILABLE).ids
    assert len(set(a)) == 7 and list(a) == sorted(a)
    assert select_classes("random:7", AVAILABLE).ids == select_classes("random:7,0", AVAILABLE).ids
    assert select_classes(["n00000003", "n00000001"], AVAILABLE).ids == ("n00000001", "n00000003")
    assert select_classes("n00000003,n00000001", AVAILABLE).ids == ("n00000001", "n00000003")


def test_shipped_lists_and_list_files(tmp_path):
    lists = shipped_lists()
    sizes = {name: len(select_classes(name, _ids(path)).ids) for name, path in lists.items()}
    assert sizes == {"imagenet100": 100, "imagenette": 10, "imagewoof": 10}
    sel = select_classes("imagenette", _ids(lists["imagenette"]) + AVAILABLE)
    assert sel.list_file == "imagenette" and len(sel.list_sha256) == 64
    custom = tmp_path / "mine.txt"
    custom.write_text("# two classes\nn00000002  # a comment\n\nn00000009\n")
    sel = select_classes(str(custom), AVAILABLE)
    assert sel.ids == ("n00000002", "n00000009") and sel.list_file == str(custom.resolve())


def _ids(path: Path) -> list[str]:
    return [line.split("#")[0].strip() for line in path.read_text().splitlines() if line.split("#")[0].strip()]


def test_config_errors_name_the_option():
    with pytest.raises(DataError, match="unknown data option.*bogus"):
        DataConfig.from_dict({"bogus": 1})
    with pytest.raises(DataError, match="needs data.root"):
        DataConfig(dataset="folder")
    assert DataConfig.from_dict({"scale": [0.3, 1.0]}).scale == (0.3, 1.0)


def test_class_selection_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match=r"2 of 3 requested classes.*n09999999, n08888888"):
        select_classes("n00000001,n09999999,n08888888", AVAILABLE)
    with pytest.raises(DataError, match="from imagenette"):
        select_classes("imagenette", AVAILABLE)
    with pytest.raises(DataError, match="between 1 and 50"):
        select_classes("first:51", AVAILABLE)
    with pytest.raises(DataError, match="not 'all'"):
        select_classes("bogus", AVAILABLE)


def test_per_class_cap_is_seeded_and_order_independent():
    files = {c: [f"{c}/{i}.JPEG" for i in range(30)] for c in AVAILABLE[:4]}
    shuffled = {c: list(reversed(v)) for c, v in files.items()}
    a = cap_per_class(files, 5, seed=1, salt="train")
    assert a == cap_per_class(shuffled, 5, seed=1, salt="train")
    assert a != cap_per_class(files, 5, seed=2, salt="train")
    assert all(len(v) == 5 and v == sorted(v) and set(v) <= set(files[c]) for c, v in a.items())
    assert cap_per_class(shuffled, 100, seed=1, salt="train") == {c: sorted(v) for c, v in files.items()}


def test_heldout_split_is_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(4), [40, 20, 10, 3])
    train, held = stratified_split(labels, 0.25, seed=0)
    assert np.intersect1d(train, held).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, held])), np.arange(labels.size))
    assert np.bincount(labels[held]).tolist() == [10, 5, 2, 1]  # round(0.25 n), at least one
    again_train, again_held = stratified_split(labels, 0.25, seed=0)
    assert np.array_equal(held, again_held) and np.array_equal(train, again_train)
    assert not np.array_equal(held, stratified_split(labels, 0.25, seed=1)[1])
    assert stratified_split(labels, 0.0, seed=0)[1].size == 0


# --- folders and awkward files ---------------------------------------------------------------------

def test_cmyk_and_grayscale_become_rgb(tree):
    _, files = tree
    cmyk = np.asarray(load_rgb(files["cmyk"]))
    assert cmyk.shape == (40, 40, 3)
    assert np.abs(cmyk.reshape(-1, 3).mean(0) - [200, 30, 30]).max() < 20  # still red, not inverted
    gray = np.asarray(load_rgb(files["gray"]))
    assert gray.shape == (40, 40, 3)
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 0], gray[..., 2])
    assert gray[0, 39, 0] == 39 * 6
    for kind in ("corrupt", "truncated"):
        with pytest.raises(BadImage):
            load_rgb(files[kind])


def test_flat_val_with_labels_file(tmp_path):
    make_tree(tmp_path, awkward=False)
    flat = tmp_path / "val"
    lines = []
    for cls in CLASSES:
        for f in sorted((flat / cls).iterdir()):
            f.rename(flat / f.name)
            lines.append(f"{Path(f.name).stem},{cls} 1 2 3 4")  # Kaggle LOC_val_solution.csv style
        (flat / cls).rmdir()
    (tmp_path / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(lines) + "\n")
    listing = list_split(tmp_path, "val")
    assert listing.layout == "flat+labels" and listing.classes == CLASSES
    assert all(len(v) == VAL_PER_CLASS for v in listing.files.values())
    other = tmp_path / "labels.txt"
    other.write_text("\n".join(f"{n.split(',')[0]}.JPEG {n.split(',')[1].split()[0]}" for n in lines))
    assert list_split(tmp_path, "val", other).files == listing.files


def test_layout_errors_say_which_path_and_layout(tmp_path):
    with pytest.raises(DataError, match=r"data root .*nowhere does not exist.*ROOT/train/<class_id>"):
        list_split(tmp_path / "nowhere", "train")
    (tmp_path / "train" / "n1").mkdir(parents=True)
    with pytest.raises(DataError, match=r"split folder .*val is missing"):
        list_split(tmp_path, "val")
    (tmp_path / "val").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "a.JPEG")
    with pytest.raises(DataError, match=r"flat .* no labels file"):
        list_split(tmp_path, "val")


def test_empty_class_folder_and_absent_classes_are_named(tmp_path):
    make_tree(tmp_path, awkward=False)
    (tmp_path / "train" / "n01000009").mkdir()
    cfg = folder_cfg(tmp_path, tmp_path / "cache")
    with pytest.raises(DataError, match=r"class folder\(s\) with no images in .*train: n01000009"):
        select_subset(cfg)
    cfg = folder_cfg(tmp_path, tmp_path / "cache", classes="n01000001,n01000077")
    with pytest.raises(DataError, match="n01000077"):
        select_subset(cfg)
    assert cli_main(["data", "info", "--root", str(tmp_path / "missing")]) == 2


# --- the decoded cache ---------------------------------------------------------------------------

def test_cache_round_trip_skips_bad_files_and_is_reused(tree, tmp_path):
    root, files = tree
    subset = select_subset(folder_cfg(root, tmp_path))
    entry = build_or_open(tmp_path, "t", root, subset.pool, side=20, progress=False)
    bad = {str(files[k].relative_to(root)) for k in ("corrupt", "truncated")}
    assert set(entry.skipped) == bad and entry.manifest["skipped"] == sorted(bad)
    assert len(entry) == len(subset.pool) - 2 and entry.images.shape[1:] == (20, 20, 3)
    for row in range(len(entry)):
        rel, label = subset.pool[entry.sources[row]]
        assert entry.labels[row] == label
        assert np.array_equal(entry.images[row], np.asarray(load_rgb_square(root / rel, 20)))
    again = build_or_open(tmp_path, "t", root, subset.pool, side=20, progress=False)
    assert not again.built and again.path == entry.path
    assert not [p for p in entry.path.parent.iterdir() if ".tmp-" in p.name]  # no leftovers
    other = build_or_open(tmp_path, "t", root, subset.pool, side=24, progress=False)
    assert other.path != entry.path


def test_a_half_written_cache_entry_is_never_used(tree, tmp_path):
    root, _ = tree
    subset = select_subset(folder_cfg(root, tmp_path))
    entry = build_or_open(tmp_path, "t", root, subset.pool, side=16, progress=False)
    (entry.path / "manifest.json").unlink()  # as if a writer died before finishing
    np.save(entry.path / "labels.npy", np.zeros(1, dtype=np.int64))
    rebuilt = build_or_open(tmp_path, "t", root, subset.pool, side=16, progress=False)
    assert rebuilt.built and len(rebuilt) == len(entry)
    assert json.loads((rebuilt.path / "manifest.json").read_text())["count"] == len(entry)


def test_build_data_reports_skipped_files_and_counts(tree, tmp_path):
    root, _ = tree
    bundle = build_data(folder_cfg(root, tmp_path, per_class=8), batch_size=4, progress=False)
    m = bundle.manifest
    assert bundle.num_classes == 3 and m["classes"] == CLASSES
    assert bundle.skipped == m["skipped"]["count"]
    assert m["counts"]["train"] + m["counts"]["heldout"] == 3 * 8 - bundle.skipped
    assert m["counts"]["val"] == 3 * VAL_PER_CLASS
    seen = sum(y.numel() for _, y in bundle.val)
    assert seen == 3 * VAL_PER_CLASS
    json.dumps(m)  # loggable


@pytest.mark.slow  # about 5 s
def test_direct_path_skips_corrupt_files_mid_epoch(tree, tmp_path):
    root, _ = tree
    bundle = build_data(folder_cfg(root, tmp_path, cache=False, heldout_fraction=0.0), batch_size=5,
                        progress=False)
    bundle.train.drop_last = False
    total = sum(y.numel() for _, y in bundle.train)
    assert bundle.skipped == 2 and total == len(bundle.train.dataset) - 2
    x, y = next(iter(bundle.val))
    assert x.shape == (5, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64


# --- loaders and transforms ----------------------------------------------------------------------

def _loader(train: bool = True, **kw) -> CachedLoader:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(37, 12, 12, 3), dtype=np.uint8)
    labels = np.arange(37) % 3
    args = dict(train=train, resolution=8, seed=5, **kw)
    return CachedLoader(images, labels, np.arange(37), 8, **args)


def test_epochs_are_pure_functions_of_seed_and_epoch():
    a, b = _loader(), _loader()
    a.set_epoch(3)
    b.set_epoch(3)
    first = list(a)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(first, b, strict=True))
    a.set_epoch(4)
    assert not torch.equal(next(iter(a))[0], first[0][0])
    resumed = list(_loader().batches(3, start=2))  # mid-epoch resume
    assert len(resumed) == len(first) - 2
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(first[2:], resumed, strict=True))
    assert len(first) == 37 // 8  # train drops the partial batch
    assert sum(y.numel() for _, y in _loader(train=False)) == 37


def test_identity_crop_and_flip_are_exact():
    images = torch.randint(0, 256, (4, 3, 10, 10), dtype=torch.uint8)
    full = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 4)
    flips = torch.tensor([False, True, False, True])
    out = crop_flip_resize(images, full, flips, 10)
    # Exact up to float rounding: a half-pixel error would blend neighbours (errors of ~100).
    assert torch.allclose(out[0], images[0].float(), atol=1e-3)
    assert torch.allclose(out[1], images[1].float().flip(-1), atol=1e-3)
    box = torch.tensor([[2.0, 3.0, 6.0, 6.0]] * 4)
    out = crop_flip_resize(images, box, torch.zeros(4, dtype=torch.bool), 6)
    assert torch.allclose(out, images[:, :, 3:9, 2:8].float(), atol=1e-3)


def test_crop_boxes_follow_scale_and_ratio():
    g = torch.Generator().manual_seed(0)
    boxes = sample_crop_boxes(2000, 50, 40, (0.2, 0.6), (0.75, 1.333), g)
    x0, y0, w, h = boxes.T
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= 40).all() and (y0 + h <= 50).all()
    area = w * h / 2000.0
    assert area.min() >= 0.18 and area.max() <= 0.62
    assert (w / h).min() >= 0.7 and (w / h).max() <= 1.4
    assert torch.equal(boxes, sample_crop_boxes(2000, 50, 40, (0.2, 0.6), (0.75, 1.333),
                                                torch.Generator().manual_seed(0)))


MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def test_eval_batches_are_normalised_center_crops():
    loader = _loader(train=False)
    x, y = next(iter(loader))
    raw = torch.from_numpy(loader.images[:8]).permute(0, 3, 1, 2)[:, :, 2:10, 2:10].float() / 255
    assert torch.allclose(x, (raw - MEAN) / STD, atol=1e-5)
    assert torch.equal(y, torch.as_tensor(np.arange(8) % 3))


# --- the built-in dataset ---------------------------------------------------------------------------

def test_builtin_dataset_loads_offline_through_the_folder_path(tmp_path, monkeypatch):
    monkeypatch.setenv("MVLAB_CACHE", str(tmp_path / "env-cache"))
    arrays = builtin_arrays()
    default = select_subset(DataConfig(cache_dir=str(tmp_path)))  # lists only, decodes nothing
    assert (len(default.pool), len(default.val)) == (6000, 1000)  # the sweep default: 5400 + 600
    # Decode a capped subset to keep the test fast; the code path is the default one.
    cfg = DataConfig(cache_dir=str(tmp_path), per_class=150, val_per_class=40)
    bundle = build_data(cfg, batch_size=64, progress=False)
    m = bundle.manifest
    assert bundle.num_classes == 10 and bundle.class_names[0] == "t-shirt"
    assert m["counts"] == {"train": 1350, "heldout": 150, "val": 400}
    assert m["val_layout"] == "class-folders" and m["skipped"]["count"] == 0
    root = Path(m["root"])
    assert root == materialize(tmp_path) and root.parent == tmp_path / "builtin"
    assert not (tmp_path / "env-cache").exists()  # cfg.cache_dir wins over $MVLAB_CACHE
    # The PNG tree holds the shipped pixels under the right labels.
    folders = class_folder_names(list(arrays["class_names"]))
    i = int(np.flatnonzero(arrays["train_labels"] == 3)[0])
    png = np.asarray(Image.open(root / "train" / folders[3] / f"{i:05d}.png"))
    assert np.array_equal(png, arrays["train_images"][i])
    x, y = next(iter(bundle.train))
    assert x.shape == (64, 3, 64, 64) and 0 <= int(y.min()) and int(y.max()) <= 9
    rgb = x * STD + MEAN
    assert torch.allclose(rgb[:, 0], rgb[:, 1], atol=1e-4)  # grayscale became RGB
    assert rgb.std() > 0.1


def test_direct_path_augmentation_is_seeded_and_leaves_global_rng_alone(tree, tmp_path):
    root, _ = tree
    cfg = folder_cfg(root, tmp_path, cache=False, heldout_fraction=0.0, classes="n01000002,n01000003")
    first, second = (build_data(cfg, batch_size=6, progress=False) for _ in range(2))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first.train.set_epoch(1)
    second.train.set_epoch(1)
    a, b = list(first.train), list(second.train)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True))
    second.train.set_epoch(2)
    assert not torch.equal(next(iter(second.train))[0], a[0][0])


def test_cli_cache_builds_then_reuses(tree, tmp_path, capsys):
    root, _ = tree
    args = ["data", "cache", "--root", str(root), "--cache-dir", str(tmp_path), "--resolution", "16"]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "built in" in out and "skipped 2 undecodable" in out
    assert cli_main(args) == 0
    assert capsys.readouterr().out.count("reused") == 2


# --- hostile inputs (results/hostile_inputs: S03-S05, M08-M10, S18, S20) ---------------------------

def _data_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "mvlab.data" and r.levelno >= logging.WARNING]


def _spoil(files) -> None:
    for path in files:
        path.write_bytes(b"not an image " * 10)


def test_many_undecodable_images_give_three_lines_and_one_summary(tmp_path, caplog):
    make_tree(tmp_path, awkward=False)
    bad = sorted((tmp_path / "train" / CLASSES[0]).iterdir())[:6]  # the class keeps 4 good ones
    _spoil(bad)
    with caplog.at_level(logging.WARNING, logger="mvlab.data"):
        bundle = build_data(folder_cfg(tmp_path, tmp_path / "cache"), batch_size=4, progress=False)
    assert bundle.skipped == 6
    lines = _data_warnings(caplog)
    assert len(lines) == 4, lines  # was one line per file
    assert all("skipped undecodable image" in line for line in lines[:3])
    assert re.search(rf"6 undecodable images skipped in .*train/{CLASSES[0]}, first: "
                     rf"train/{CLASSES[0]}/{bad[0].name} \(all listed in .*manifest\.json\)", lines[3])


def test_a_class_with_no_decodable_image_is_one_error_not_a_line_per_file(tmp_path, caplog, capsys):
    make_tree(tmp_path, awkward=False)
    _spoil((tmp_path / "train" / CLASSES[1]).iterdir())
    with caplog.at_level(logging.WARNING, logger="mvlab.data"), \
            pytest.raises(DataError, match=rf"no decodable image left of 1 class\(es\): {CLASSES[1]} "
                                            rf"\({TRAIN_PER_CLASS} file\(s\)"):
        build_data(folder_cfg(tmp_path, tmp_path / "cache"), batch_size=4, progress=False)
    assert _data_warnings(caplog) == []  # the error says it all, once
    caplog.clear()
    args = ["data", "cache", "--root", str(tmp_path), "--cache-dir", str(tmp_path / "c2"),
            "--resolution", "16"]
    with caplog.at_level(logging.WARNING, logger="mvlab.data"):
        assert cli_main(args) == 2
    assert _data_warnings(caplog) == []
    assert capsys.readouterr().err.count("\n") == 1


def test_direct_path_names_three_undecodable_images_then_sums_up(tmp_path, caplog):
    for k, cls in enumerate(("a", "b")):
        for i in range(4):
            path = tmp_path / "train" / cls / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (40 * k, 10 * i, 0)).save(path)
    from mvlab.data.loaders import DirectLoader
    items = [(f"train/{cls}/{i}.png", k) for k, cls in enumerate(("a", "b")) for i in range(4)]
    _spoil(tmp_path / rel for rel, _ in items[:5])
    loader = DirectLoader(tmp_path, items, 4, train=False, resolution=8, drop_last=False)
    with caplog.at_level(logging.WARNING, logger="mvlab.data"):
        assert sum(y.numel() for _, y in loader) == 3
        list(loader)  # a second epoch finds nothing new: no new line
    lines = _data_warnings(caplog)
    assert len(lines) == 4 and loader.skipped == 5, lines
    assert re.search(r"5 undecodable images skipped in .*train, first: train/a/0\.png$", lines[3])


def test_symlink_loops_and_broken_links_get_one_warning_each(tmp_path, caplog, capsys):
    make_tree(tmp_path, awkward=False)
    train = tmp_path / "train"
    (train / "itself").symlink_to("itself")                       # a class folder that loops
    (train / CLASSES[0] / "deeper").symlink_to(".")               # a folder inside itself
    (train / CLASSES[0] / "up").symlink_to("..")
    (train / CLASSES[0] / "sideways").symlink_to(f"../{CLASSES[1]}")  # no loop: not named
    (train / CLASSES[1] / "z.JPEG").symlink_to("missing.JPEG")
    (tmp_path / "val" / CLASSES[2] / "gone.JPEG").symlink_to("/nonexistent/x.JPEG")
    with caplog.at_level(logging.WARNING, logger="mvlab.data"):
        subset = select_subset(folder_cfg(tmp_path, tmp_path / "cache"))
    assert subset.classes == CLASSES and len(subset.pool) == 3 * TRAIN_PER_CLASS
    lines = _data_warnings(caplog)
    assert len(lines) == 2, lines  # was none
    assert re.search(r"3 symlink loop\(s\) skipped in .* \(first: train/itself\)", lines[0])
    assert re.search(rf"2 broken symlink\(s\) skipped in .* \(first: train/{CLASSES[1]}/z.JPEG -> "
                     rf"missing.JPEG\)", lines[1])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mvlab.data"):
        assert cli_main(["data", "info", "--root", str(tmp_path)]) == 0
    assert len(_data_warnings(caplog)) == 2


def test_a_one_class_dataset_is_an_error(tmp_path):
    make_tree(tmp_path, awkward=False)
    with pytest.raises(DataError, match=r"selects one class .*needs at least 2"):
        select_subset(folder_cfg(tmp_path, tmp_path / "cache", classes="first:1"))
    for split in ("train", "val"):
        for cls in CLASSES[1:]:
            for path in (tmp_path / split / cls).iterdir():
                path.unlink()
            (tmp_path / split / cls).rmdir()
    with pytest.raises(DataError, match=rf"train has 1 class folder\(s\) \({CLASSES[0]}\); "
                                        r"classification needs at least 2 classes"):
        select_subset(folder_cfg(tmp_path, tmp_path / "cache"))
    assert cli_main(["data", "info", "--root", str(tmp_path)]) == 2


def test_a_class_only_in_val_is_named(tmp_path, caplog):
    make_tree(tmp_path, awkward=False)
    (tmp_path / "val" / "n09999999").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "n09999999" / "a.JPEG")
    with caplog.at_level(logging.WARNING, logger="mvlab.data"):
        subset = select_subset(folder_cfg(tmp_path, tmp_path / "cache"))
    assert subset.classes == CLASSES and len(subset.val) == 3 * VAL_PER_CLASS
    lines = _data_warnings(caplog)
    assert len(lines) == 1 and re.search(r"1 class folder\(s\) in .*val have none in .*train and "
                                         r"are left out of val: n09999999", lines[0]), lines
