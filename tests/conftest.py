import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle OpenMP threads must not spin on 2 cores
import random
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED_DATA = Path(os.environ.get("LEARNGENE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(autouse=True)
def _restore_rng():
    """Tests must not leak RNG state into each other (torchvision's habit)."""
    py_state = random.getstate()
    torch_state = torch.get_rng_state()
    yield
    random.setstate(py_state)
    torch.set_rng_state(torch_state)


@pytest.fixture
def omniglot_root() -> Path:
    root = SHARED_DATA / "omniglot"
    if not (root / "images_background_small1.zip").exists():
        pytest.skip(f"real Omniglot data not found at {root} (set LEARNGENE_DATA)")
    return root
