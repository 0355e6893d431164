"""Data-parallel training under torchrun (gloo, CPU): two processes with half the batch each
train the same run as one process with the whole batch (mvlab/training/ddp.py), and a sweep
started under torchrun trains its trial on both processes."""
from __future__ import annotations

import json
import os
import runpy
import socket
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

# Trains the tiny model twice (SGD, then the default AdamW) on a few hundred built-in images and
# writes each run's per-epoch curve; rank "single" when started without torchrun. Under
# torchrun it then runs `mvlab sweep` on a one-trial study with the SGD settings.
SCRIPT = textwrap.dedent("""
    import json, os, sys
    from mvlab.data import DataConfig
    from mvlab.training.config import TrainConfig
    from mvlab.training.trainer import train

    out, study = sys.argv[1], sys.argv[2]
    data = DataConfig(dataset="builtin", resolution=16, per_class=24, val_per_class=5,
                      heldout_fraction=0.25)
    runs = {}
    for name, optimizer, lr, precise_bn in (("sgd", "sgd", 2e-2, 0), ("adamw", "adamw", 2e-3, 0),
                                            ("sgd_precise_bn", "sgd", 2e-2, 64)):
        cfg = TrainConfig(epochs=2, batch_size=32, warmup_epochs=0, device="cpu", threads=1,
                          optimizer=optimizer, lr=lr, precise_bn=precise_bn)
        result = train("tiny", data, cfg)
        assert result.status == "ok", result.reason
        runs[name] = {"history": result.history, "val_loss": result.val_loss,
                      "val_top1": result.val_top1}
    rank = os.environ.get("RANK", "single")
    with open(os.path.join(out, f"{rank}.json"), "w") as handle:
        json.dump(runs, handle)
    if rank != "single":
        from mvlab.cli import main
        sys.exit(main(["sweep", study, "--no-progress"]))
""")

STUDY = """\
name: ddp_sweep
model: tiny
data: {{dataset: builtin, resolution: 16, per_class: 24, val_per_class: 5,
        heldout_fraction: 0.25}}
train: {{epochs: 2, batch_size: 32, warmup_epochs: 0, device: cpu, threads: 1,
         optimizer: sgd, lr: 2.0e-2}}
study: {{kind: grid, seeds: [0]}}
space: {{}}
bench: {{batch_size: 4, warmup: 1, steps: 1, repeats: 1}}
tracking: {{uri: "sqlite:///{root}/mlflow.db"}}
workdir: "{root}/study"
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _untimed(runs: dict) -> dict:
    return {name: {**run, "history": [{k: v for k, v in epoch.items() if "time" not in k
                                       and "per_s" not in k} for epoch in run["history"]]}
            for name, run in runs.items()}


def _curve(run: dict, key: str) -> list[float]:
    return [epoch[key] for epoch in run["history"]]


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path, monkeypatch):
    script = tmp_path / "train_both.py"
    script.write_text(SCRIPT)
    study = tmp_path / "ddp_sweep.yaml"
    study.write_text(STUDY.format(root=tmp_path))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    # The one-process reference runs here (torch is imported already); the pair under torchrun.
    monkeypatch.setattr(sys, "argv", [str(script), str(tmp_path), str(study)])
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    runpy.run_path(str(script), run_name="__main__")
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script),
         str(tmp_path), str(study)], env=env, timeout=300, capture_output=True, text=True)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "terminate called" not in launched.stderr

    single = json.loads((tmp_path / "single.json").read_text())
    rank0 = json.loads((tmp_path / "0.json").read_text())
    rank1 = json.loads((tmp_path / "1.json").read_text())
    # identical weights on both ranks: identical evaluations (timings aside)
    assert _untimed(rank0) == _untimed(rank1)

    # Each step of the pair covers the same 32 images as the single process's step.
    for optimizer in ("sgd", "adamw"):
        assert _curve(rank0[optimizer], "steps") == _curve(single[optimizer], "steps")
        assert _curve(rank0[optimizer], "train_images") == _curve(single[optimizer],
                                                                  "train_images")
        assert _curve(rank0[optimizer], "train_loss") == pytest.approx(
            _curve(single[optimizer], "train_loss"), rel=1e-5)

    # SGD: everything agrees to rounding, held-out curve and the final val split included
    # (BatchNorm statistics span both ranks' shards).
    sgd, ref = rank0["sgd"], single["sgd"]
    assert _curve(sgd, "heldout_loss") == pytest.approx(_curve(ref, "heldout_loss"), rel=1e-5)
    assert _curve(sgd, "heldout_top1") == _curve(ref, "heldout_top1")
    assert sgd["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-5)

    # Precise BatchNorm statistics: each rank recomputes them on its shard of the same
    # regenerated batches, summed over both, so they equal the one process's to rounding.
    precise, ref = rank0["sgd_precise_bn"], single["sgd_precise_bn"]
    assert _curve(precise, "heldout_loss") == pytest.approx(_curve(ref, "heldout_loss"),
                                                            rel=1e-5)
    assert _curve(precise, "heldout_loss") != _curve(sgd, "heldout_loss")

    # AdamW: the training curve agrees as tightly; evaluation-mode losses within 1 %, because
    # biases right before a BatchNorm get only rounding-noise gradients (the norm removes them),
    # which Adam scales up to full-size steps whatever their sign: those biases random-walk
    # differently under any change of summation order and shift the running means a little.
    adam, ref = rank0["adamw"], single["adamw"]
    assert _curve(adam, "heldout_loss") == pytest.approx(_curve(ref, "heldout_loss"), rel=1e-2)
    assert adam["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-2)

    # The sweep under torchrun: its one trial trained on both ranks, exactly like one process.
    from mlflow import MlflowClient

    from mvlab.study import load_study
    from mvlab.study.locations import storage_url_for
    from mvlab.study.preparation import open_study

    config = load_study(study)
    trials = open_study(config, storage_url_for(config), create=False).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"]
    run = MlflowClient(config.tracking_uri).get_run(trials[0].user_attrs["mlflow_run_id"])
    assert run.data.params["ddp.world_size"] == "2" and run.data.params["ddp.backend"] == "gloo"
    history = MlflowClient(config.tracking_uri).get_metric_history(run.info.run_id,
                                                                   "heldout_loss")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(
        _curve(single["sgd"], "heldout_loss"), rel=1e-5)
    assert trials[0].values[0] == pytest.approx(single["sgd"]["history"][-1]["heldout_top1"])


def test_global_batch_must_split_evenly():
    from mvlab.errors import UserError
    from mvlab.training.ddp import DistContext, check_batch

    ctx = DistContext(rank=0, world_size=3, local_rank=0, backend="gloo")
    check_batch(33, ctx)
    with pytest.raises(UserError, match="multiple of 3"):
        check_batch(32, ctx)


SEQUENTIAL_STUDY = """\
name: ddp_sequential
model: tiny
data: {{dataset: builtin, resolution: 16, per_class: 12, val_per_class: 5,
        heldout_fraction: 0.25}}
train: {{epochs: 1, batch_size: 32, warmup_epochs: 0, device: cpu, threads: 1}}
study: {{kind: grid, seeds: [0, 1], sequential: {{step: 1, max_seeds: 3}}}}
space: {{pattern: [last_half, attn_only]}}
analysis: {{reference: {{pattern: last_half}}, equivalence_margin: 0.01}}
bench: {{batch_size: 4, warmup: 1, steps: 1, repeats: 1}}
tracking: {{uri: "sqlite:///{root}/mlflow.db"}}
workdir: "{root}/study"
"""


def test_a_sequential_sweep_under_torchrun_keeps_every_rank_to_the_last_stage(tmp_path):
    # The other ranks follow rank 0 until the whole sweep is over: a follower released after
    # the first stage left the next stage's first trial waiting for a rank that had gone.
    study = tmp_path / "ddp_sequential.yaml"
    study.write_text(SEQUENTIAL_STUDY.format(root=tmp_path))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "mvlab",
         "sweep", str(study), "--no-progress"],
        env=env, timeout=300, capture_output=True, text=True, cwd=tmp_path)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "terminate called" not in launched.stderr

    from mvlab.study import load_study
    from mvlab.study.locations import storage_url_for
    from mvlab.study.preparation import open_study

    config = load_study(study)
    trials = open_study(config, storage_url_for(config), create=False).get_trials()
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert len(trials) == 6, [t.params for t in trials]  # 2 x 2 planned, then seed 2 for both


FAILING_FOLLOWER = textwrap.dedent("""
    import os, torch
    import torch.distributed as dist
    from mvlab.training import ddp

    ddp.setup(torch.device("cpu"))
    if os.environ["RANK"] == "1":
        raise RuntimeError("a follower fails on its own")
    dist.all_reduce(torch.ones(1))  # rank 0 waits in a collective for the rank that failed
""")


def test_a_rank_that_fails_ends_the_run_instead_of_waiting_for_the_others(tmp_path):
    # Ranks meet before leaving only after success (ddp.finish): a failed rank that waited for
    # the others at exit would wait for rank 0, itself stuck in a collective with it.
    script = tmp_path / "fail.py"
    script.write_text(FAILING_FOLLOWER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script)],
        env=env, timeout=120, capture_output=True, text=True)
    assert launched.returncode != 0
    assert "a follower fails on its own" in launched.stderr
