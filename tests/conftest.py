"""Fixtures shared by several test modules."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """One torch thread for the test: two OpenMP threads on a shared 2-core machine stall each
    other (20x slower steps seen here)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
