"""A small planted problem shared by the trainer, closed-form and evaluation tests."""

from __future__ import annotations

import pytest

from oripid.eval.synthetic import PlantedData, make_planted


@pytest.fixture(scope="session")
def planted() -> PlantedData:
    # 1000 training origins x 8 "sd2" generations in 256-d; 200 test origins + 1800 distractors.
    return make_planted(dim=256, n_train_origins=1000, generations_per_origin=8, seed=0)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The eval tests use small matrices: one thread is as fast and does not stall on a busy, shared CPU
    (two spinning OpenMP threads per test made the trainer test 10x slower under load)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
