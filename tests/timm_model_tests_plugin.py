"""A pytest plugin that runs timm's own generic model tests on mvlab's ``mambavision_*`` models.

timm's ``tests/test_models.py`` is not in the wheel; it comes with the source distribution of
the installed version (docs/models.md has the whole command):

    cd timm-<version> && PYTHONPATH=<mvlab>/tests python -m pytest -p timm_model_tests_plugin \\
        tests/test_models.py -k "mambavision and not pretrained"

Loaded with ``-p`` it imports mvlab before timm's test module is collected, so the models are
registered when that module lists them. The cases that cannot apply to a model whose scan is a
custom op are skipped with the reason, as timm's EXCLUDE_*_FILTERS do for its own models.
"""
from __future__ import annotations

import pytest

import mvlab.models  # noqa: F401  (registers the mambavision_* models in timm)

_SCAN_NOT_SCRIPTABLE = (
    "TorchScript cannot compile the selective scan: it dispatches at run time to a compiled C "
    "library (ctypes), Triton kernels or Python loops; torch.jit.script itself is deprecated "
    "(torch 2.14 warns: switch to torch.compile or torch.export); torch.export is the "
    "deployment path (docs/models.md)")

# timm test function -> why it does not apply to mambavision_* (docs/models.md, "Exclusions")
EXCLUDED = {
    "test_model_forward_torchscript": _SCAN_NOT_SCRIPTABLE,
    "test_model_forward_fx_torchscript": _SCAN_NOT_SCRIPTABLE,
}


def pytest_collection_modifyitems(items):
    for item in items:
        reason = EXCLUDED.get(getattr(item, "originalname", ""))
        if reason and "[" in item.name and "mambavision" in item.name.split("[", 1)[1]:
            item.add_marker(pytest.mark.skip(reason=reason))
