"""Model weights files (mvlab.models.weights): strict round-trips in every accepted format, clear
errors on mismatches. A training run's resume state is mvlab.training.checkpoint, not this."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from mvlab import load_pretrained
from mvlab.errors import UserError
from mvlab.grammar import set_option
from mvlab.models import CheckpointError, build_model


@pytest.fixture(scope="module")
def trained():
    """A tiny model whose every tensor differs from a fresh init (so loading must work)."""
    torch.manual_seed(0)
    model = build_model("tiny", num_classes=10)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor) * 0.01)
    return model.eval()


def _outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("fmt", ["pth", "pth.tar", "module-prefix", "safetensors"])
def test_strict_round_trip_gives_identical_outputs(trained, tmp_path, fmt):
    state = trained.state_dict()
    path = tmp_path / f"weights.{fmt}"
    if fmt == "pth":
        torch.save(state, path)
    elif fmt == "pth.tar":  # the official release layout
        torch.save({"epoch": 310, "state_dict": state, "arch": "mambavision"}, path)
    elif fmt == "module-prefix":  # saved from DataParallel/DDP
        path = tmp_path / "weights.pth"
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    torch.manual_seed(123)
    fresh = build_model(trained.spec, num_classes=10)
    x = torch.randn(2, 3, 48, 48)
    assert not torch.allclose(_outputs(fresh, x), _outputs(trained, x))
    assert load_pretrained(fresh, path) is fresh
    assert torch.equal(_outputs(fresh, x), _outputs(trained, x))


def test_mismatched_checkpoint_names_keys_and_shapes(trained, tmp_path):
    path = tmp_path / "tiny.pth.tar"
    torch.save({"state_dict": trained.state_dict()}, path)
    other = build_model(set_option(set_option("tiny", "s4.width", 96), "s3.depth", 3),
                        num_classes=10)
    with pytest.raises(CheckpointError) as info:
        load_pretrained(other, path)
    message = str(info.value)
    # depth 3 makes block 1 a mixer (MMA) where the file has attention (MA)
    assert "missing: levels.2.blocks.1.mixer.A_log" in message
    assert "unexpected: levels.2.blocks.1.mixer.qkv.weight" in message
    assert "levels.3.blocks.0.mixer.in_proj.weight: file (128, 128) vs model (96, 96)" in message
    assert "strict=False" in message and isinstance(info.value, UserError)


def test_non_strict_skips_what_does_not_fit(trained, tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(trained.state_dict(), path)
    three_classes = build_model(trained.spec, num_classes=3)
    with pytest.warns(UserWarning, match="head.weight"):
        load_pretrained(three_classes, path, strict=False)
    assert torch.equal(three_classes.levels[2].blocks[0].mixer.A_log,
                       trained.levels[2].blocks[0].mixer.A_log)


def test_unreadable_files_are_user_errors(tmp_path):
    model = build_model("tiny")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pretrained(model, tmp_path / "nope.pth")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_pretrained(model, junk)
