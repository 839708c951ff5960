import os
import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_everything():
    """Every test starts from the same seeds, so failures reproduce."""
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002  (seeds legacy global users too)
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    # CI sets TF_REQUIRE_TORCH_CLUSTER=1: the torch-cluster comparisons must run there.
    if os.environ.get("TF_REQUIRE_TORCH_CLUSTER") == "1":
        return
    try:
        import torch_cluster  # noqa: F401
    except ImportError:
        skip = pytest.mark.skip(reason="torch-cluster not installed (make cluster)")
        for item in items:
            if "cluster" in item.keywords:
                item.add_marker(skip)
