"""The NaN/inf loss check. On an accelerator the trainer keeps up to ``train.sync_every`` steps'
losses on the device and checks them together (one wait for the device instead of one a step);
a bad loss anywhere in such a batch must fail the run at its own step, also when the steps
after it are finite again (fp16's loss scaler skips a step with inf gradients, so training goes
on from intact weights) and also in the last, partial batch of an epoch. On the CPU every step
is checked (docs/training.md)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from faulty_data import Faulty

from mvlab.data import DataConfig, build_data
from mvlab.training.config import TrainConfig
from mvlab.training.trainer import LossNotFinite, check_losses, train

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("losses, bad", [
    ([NAN, 1.0, 2.0, 3.0], 0),
    ([1.0, NAN, 2.0, 3.0], 1),   # in the middle, finite after it
    ([1.0, 2.0, INF, 3.0], 2),
    ([1.0, 2.0, 3.0, -INF], 3),
    ([1.0, NAN, INF, NAN], 1),   # the first bad one is named
], ids=["first", "middle", "inf-middle", "last", "several"])
def test_a_bad_loss_anywhere_in_the_pending_batch_fails_at_its_step(losses, bad):
    # 4 pending losses ending at step 11 of epoch 3: they are steps 8..11, global steps 36..39
    run = SimpleNamespace(dist=None, global_step=40)
    with pytest.raises(LossNotFinite) as failed:
        check_losses(run, [torch.tensor(v) for v in losses], epoch=3, last_step=11)
    assert (failed.value.epoch, failed.value.step) == (3, 8 + bad)
    assert f"at epoch 3, step {8 + bad} (global step {36 + bad})" in failed.value.reason


def test_finite_pending_losses_give_their_sum():
    run = SimpleNamespace(dist=None, global_step=3)
    assert check_losses(run, [torch.tensor(v) for v in (0.5, 1.25, 2.0)], 0, 2) == 3.75


def _bundle(batch_size: int):
    # 10 classes x 14 images less the held-out ones: 8 full batches of 16
    return build_data(DataConfig(dataset="builtin", per_class=14, val_per_class=2,
                                 resolution=16), batch_size)


@pytest.mark.slow  # a tiny training run: 4-9 s
def test_on_the_cpu_every_step_is_checked_whatever_sync_every_says(one_thread):
    bundle = Faulty(_bundle(16), epoch=0, step=1)
    steps = len(bundle.train)
    assert steps > 4
    result = train("tiny", bundle, TrainConfig(epochs=1, batch_size=16, warmup_epochs=0,
                                               device="cpu", precision="fp32", sync_every=4))
    assert result.failure_kind == "nan" and (result.failure_epoch, result.failure_step) == (0, 1)
    assert "at epoch 0, step 1 " in result.reason
    assert bundle.train.yielded == 2  # stopped at the bad step, not at the end of a batch of 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the batched check runs on a GPU")
@pytest.mark.parametrize("step", [1, 7], ids=["middle-of-a-full-batch", "in-the-last-partial"])
def test_on_a_gpu_a_nan_inside_a_synced_batch_fails_the_run_at_its_step(step):
    bundle = Faulty(_bundle(16), epoch=0, step=step)
    steps = len(bundle.train)
    assert steps == 8  # checked in batches of 3: steps 0-2, 3-5, then 6-7 at the epoch's end
    result = train("tiny", bundle, TrainConfig(epochs=2, batch_size=16, warmup_epochs=0,
                                               device="cuda", precision="fp16", sync_every=3))
    assert result.status == "failed" and result.failure_kind == "nan", result.summary()
    assert (result.failure_epoch, result.failure_step) == (0, step)
    assert f"at epoch 0, step {step} " in result.reason
    # the check waits for the batch, no longer: the run ends at the batch's last step
    assert bundle.train.yielded == min(3 * math.ceil((step + 1) / 3), steps)
    assert result.epochs_completed == 0
