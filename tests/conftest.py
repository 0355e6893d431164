"""Fixtures shared by several test modules."""
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def one_thread():
    """One torch thread for the test: two OpenMP threads on a shared 2-core machine stall each
    other (20x slower steps seen here)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _import_script(relative: str):
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a script's dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def import_script():
    """``import_script("benchmarks/x.py")``: a script of the repository (benchmarks/ and scripts/
    are not packages) imported as a module, to test its functions without a subprocess."""
    return _import_script
