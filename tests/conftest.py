"""Shared fixtures: one real local Ray for the whole session, small simworld datasets on disk."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # cheap ray.train.report in tests


@pytest.fixture(scope="session")
def ray_session():
    import ray

    # address="local": never join a stale or foreign cluster. 4 logical CPUs on 2 cores leave Ray Data
    # room beside two training workers (it starves silently otherwise).
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def ray_clean(ray_session):
    """Fails a test that leaves CPUs reserved (e.g. a leaked placement group), before it hangs the next one."""
    yield ray_session
    import time

    for _ in range(50):
        if ray_session.available_resources().get("CPU", 0) >= 4:
            return
        time.sleep(0.2)
    pytest.fail(f"Ray resources not released after the test: {ray_session.available_resources()}")


@pytest.fixture(scope="session")
def simworld(ray_session, tmp_path_factory):
    """{"synthetic": info, "real_val": info}: small labeled datasets, 64x128."""
    from rayda.simworld import generate

    root = tmp_path_factory.mktemp("simworld")
    return {
        "synthetic": generate("synthetic", 32, (64, 128), 0, root / "synthetic", rows_per_shard=16),
        "real_val": generate("real", 8, (64, 128), 2, root / "real_val"),
    }
