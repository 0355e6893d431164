"""Model-level check: a MambaVision network trains the same with ``chunked`` as with ``reference``."""
from __future__ import annotations

import torch

from mvlab.models import build_model


def _loss_and_grads(model, x, target, backend):
    model.set_scan_backend(backend)
    model.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x), target)
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()
                           if p.grad is not None}


def test_tiny_model_same_loss_and_grads_with_chunked_and_reference():
    torch.manual_seed(0)
    model = build_model("tiny", num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    target = torch.tensor([3, 8])
    loss_ref, grads_ref = _loss_and_grads(model, x, target, "reference")
    loss, grads = _loss_and_grads(model, x, target, "chunked")
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-6)
    assert grads.keys() == grads_ref.keys()
    scan_params = [n for n in grads if n.endswith(("A_log", "D", "dt_proj.weight", "x_proj.weight"))]
    assert scan_params, "the tiny preset should contain mixer blocks"
    for name, grad in grads.items():
        torch.testing.assert_close(grad, grads_ref[name], rtol=1e-4, atol=1e-6, msg=name)
